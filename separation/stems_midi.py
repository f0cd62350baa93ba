"""Split a General MIDI song into the four MUSDB stems (pure functions, no audio).

A GM song already says which instrument plays each note: channel 10 (index 9)
is the drum kit and every other channel plays the *program* (patch) last
selected on it.  So a stem is a subset of the song's notes; each subset is
rendered on its own and the mixture is defined as the sum of the renders.

The rule (shared/DATA.md, section 2):

* ``drums``  -- every note on channel index 9;
* ``bass``   -- notes played while the channel's program is 32-39 (GM "Bass");
* ``vocals`` -- notes under a voice-like program (52 Choir Aahs, 53 Voice Oohs,
  54 Synth Voice, 85 Lead 6 voice, 91 Pad 4 choir).  A song with (almost) none
  gets its lead melody *re-voiced* to program 53 instead: the highest-pitched,
  mostly monophonic melodic line, or failing one the top line of a chordal
  part, chosen by :func:`plan_stems`;
* ``other``  -- every remaining note.

A "line" (a *unit* below) is one ``(channel, program)`` pair: a channel that
changes program mid-song plays two units.  Each note is routed when it starts,
using the program in force at that moment, and its note-off follows it, so a
program change never splits a note between stems.  Every non-note message
(tempo, meta, controllers, pitch bend, program changes, sysex) is copied into
every stem, so all stems share tempo, volume, pan and length.
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import mido

from walloc_audio.errors import WallocError

STEM_NAMES = ("drums", "bass", "other", "vocals")  # musdb stem_ids 1..4 (0 is the mixture)
DRUM_CHANNEL = 9
BASS_PROGRAMS = frozenset(range(32, 40))
VOICE_PROGRAMS = frozenset({52, 53, 54, 85, 91})
REVOICE_PROGRAM = 53  # Voice Oohs
NON_MELODIC_PROGRAMS = frozenset(range(112, 128))  # GM percussive and sound effects
MIN_VOICE_NOTES = 16  # fewer voice-program notes than this: also re-voice a melody
MIN_MELODY_NOTES = 16  # a melody candidate's top line needs this many notes ...
MIN_MELODY_PITCH = 55  # ... and a mean pitch of G3 or higher (a singer's range)
MAX_MELODY_POLYPHONY = 0.25  # "mostly monophonic": two or more notes sound <= 25 % of the time
BANK_SELECT = (0, 32)  # controller numbers of bank select MSB / LSB


class StemSetError(WallocError):
    """A stem set cannot be built: bad MIDI, missing renderer or sound font, bad package."""


class Note(NamedTuple):
    start: int  # tick of the note-on
    end: int  # tick of its note-off (the song's end if never released)
    pitch: int
    key: int  # position of the note-on in :func:`timeline`, identifies the note


def polyphony(notes: list[Note]) -> float:
    """Share of the sounding time during which two or more of ``notes`` sound.

    A sweep over note starts (+1) and ends (-1), ends first at equal ticks so
    that legato notes touching end-to-start do not count as overlapping.
    """
    edges = sorted([(n.start, 1) for n in notes] + [(n.end, -1) for n in notes])
    sounding = poly = depth = 0
    last = edges[0][0] if edges else 0
    for tick, step in edges:
        sounding += (tick - last) * (depth >= 1)
        poly += (tick - last) * (depth >= 2)
        depth, last = depth + step, tick
    return poly / sounding if sounding else 0.0


def skyline(notes: list[Note], tolerance: int) -> list[Note]:
    """The top line of a part: notes with no higher note sounding at their onset.

    A higher note "covers" a later onset only if it still has more than
    ``tolerance`` ticks to sound, so the overlap of legato playing does not
    delete the next note of a melody.  On a monophonic line this keeps every
    note; on a chordal part it keeps the top voice, which is what a listener
    hears as the tune.
    """
    ordered = sorted(notes, key=lambda n: (n.start, -n.pitch))
    kept, sounding = [], []
    for n in ordered:
        sounding = [m for m in sounding if m.end - tolerance > n.start]
        if all(m.pitch < n.pitch for m in sounding):
            kept.append(n)
        sounding.append(n)
    return kept


def _mean_pitch(notes: list[Note]) -> float:
    return sum(n.pitch for n in notes) / max(len(notes), 1)


@dataclass
class StemPlan:
    """What :func:`split_midi_into_stems` will do with a song, decided up front.

    ``vocals_rule`` is ``"program"`` (voice-like programs), ``"melody"`` (a
    re-voiced lead line), ``"program+melody"`` (too few voice notes, a melody
    added) or ``"none"`` (no voice program and no usable melody: silent vocals).
    ``melody_keys`` are the :func:`timeline` positions of the re-voiced notes,
    so a plan only applies to the very ``MidiFile`` it was made from.
    """

    units: dict  # (channel, program) -> list[Note]; drums are (9, program)
    voice_units: list = field(default_factory=list)
    melody_unit: tuple | None = None
    melody_keys: frozenset = frozenset()
    vocals_rule: str = "none"
    note_counts: dict = field(default_factory=dict)  # stem -> notes

    @property
    def has_drums(self) -> bool:
        return self.note_counts["drums"] > 0

    @property
    def has_bass(self) -> bool:
        return self.note_counts["bass"] > 0

    def stem_of(self, channel: int, program: int, key: int = -1) -> str:
        """The stem of a note on ``channel`` under ``program`` (``key``: its position)."""
        if channel == DRUM_CHANNEL:
            return "drums"
        if program in BASS_PROGRAMS:
            return "bass"
        if program in VOICE_PROGRAMS or key in self.melody_keys:
            return "vocals"
        return "other"


def parse_midi(data: bytes) -> mido.MidiFile:
    """Parse a Standard MIDI File from bytes; any failure becomes a :class:`StemSetError`."""
    import io

    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except Exception as exc:  # mido raises OSError, EOFError, ValueError, KeyError, ...
        raise StemSetError(f"MIDI does not parse: {type(exc).__name__}: {exc}") from None
    if midi.type == 2:
        raise StemSetError("MIDI type 2 (independent sequences) is not supported")
    return midi


def timeline(midi: mido.MidiFile) -> list[tuple[int, int, mido.Message]]:
    """All events as ``(absolute_tick, track_index, message)`` in playing order.

    Ties keep track order, as a sequencer merging the tracks does.
    """
    events = []
    for index, track in enumerate(midi.tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            events.append((tick, index, msg))
    events.sort(key=lambda e: e[0])  # stable: equal ticks stay in track order
    return events


def _tempo_segments(midi: mido.MidiFile) -> list[tuple[int, float, int]]:
    """``(tick, seconds_at_tick, tempo_us_per_beat)`` at every tempo change (and tick 0)."""
    segments = [(0, 0.0, 500_000)]  # MIDI default: 120 beats per minute
    for tick, _, msg in timeline(midi):
        if msg.type == "set_tempo":
            t0, s0, tempo = segments[-1]
            seconds = s0 + (tick - t0) * tempo / (1e6 * midi.ticks_per_beat)
            segments.append((tick, seconds, msg.tempo))
    return segments


def seconds_to_tick(midi: mido.MidiFile, seconds: float) -> int:
    """First tick at or after ``seconds`` of playing time (tempo changes honoured)."""
    for t0, s0, tempo in reversed(_tempo_segments(midi)):
        if s0 <= seconds:
            return t0 + math.ceil((seconds - s0) * 1e6 * midi.ticks_per_beat / tempo - 1e-9)
    return 0


def truncate_midi(midi: mido.MidiFile, max_seconds: float) -> tuple[mido.MidiFile, bool]:
    """Keep the first ``max_seconds`` of a song; returns ``(midi, was_truncated)``.

    Events at or after the cut are dropped, every note still sounding is
    released at the cut (in its own track), and each track ends there.  The
    synthesiser's release tails run past the cut; the caller crops the audio.
    """
    cut = seconds_to_tick(midi, max_seconds)
    if cut >= max((sum(m.time for m in t) for t in midi.tracks), default=0):
        return midi, False
    out = mido.MidiFile(type=midi.type, ticks_per_beat=midi.ticks_per_beat)
    for track in midi.tracks:
        kept, sounding, tick = [], defaultdict(int), 0
        for msg in track:
            tick += msg.time
            if tick >= cut or msg.type == "end_of_track":
                continue
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[(msg.channel, msg.note)] += 1
            elif msg.type in ("note_off", "note_on") and sounding[(msg.channel, msg.note)]:
                sounding[(msg.channel, msg.note)] -= 1
            kept.append((tick, msg))
        for (channel, note), count in sorted(sounding.items()):
            kept += [(cut, mido.Message("note_off", channel=channel, note=note))] * count
        kept.append((cut, mido.MetaMessage("end_of_track")))
        out.tracks.append(_to_track(kept))
    return out, True


def _to_track(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
    """Absolute-tick events (in order) -> a track with delta times.

    Messages are shallow-copied and only ``time`` is set, bypassing mido's
    per-attribute validation (4x faster; the delta is a non-negative int by
    construction).  The copies matter: one message may go to several stems.
    """
    track, last = mido.MidiTrack(), 0
    for tick, msg in events:
        out = copy.copy(msg)
        vars(out)["time"] = tick - last
        track.append(out)
        last = tick
    return track


def is_note_on(msg) -> bool:
    """A note starts (a note-on with velocity 0 is a note-off by convention)."""
    return msg.type == "note_on" and msg.velocity > 0


def is_note_off(msg) -> bool:
    """A note ends: ``note_off`` or ``note_on`` with velocity 0."""
    return msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)


def plan_stems(midi: mido.MidiFile) -> StemPlan:
    """Collect every ``(channel, program)`` line and decide where the vocals come from.

    Voice-program notes are vocals.  With fewer than ``MIN_VOICE_NOTES`` of
    them a lead line is re-voiced as well.  Candidates are the melodic lines
    (not drums, bass, voice, nor GM programs 112-127 which are percussive or
    sound effects) whose top line (:func:`skyline`) has at least
    ``MIN_MELODY_NOTES`` notes with a mean pitch of at least
    ``MIN_MELODY_PITCH``.  Mostly monophonic lines (polyphony share <=
    ``MAX_MELODY_POLYPHONY``) beat chordal ones, then the highest mean pitch
    wins.  A candidate that would leave the ``other`` stem without a note is
    passed over: that would trade a silent vocals stem for a silent other.
    """
    program = defaultdict(int)
    units: dict = defaultdict(list)
    started = defaultdict(list)  # (channel, note) -> [(start_tick, unit, key)]
    events = timeline(midi)
    end = max((tick for tick, _, _ in events), default=0)
    for key, (tick, _, msg) in enumerate(events):
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        elif is_note_on(msg):
            started[(msg.channel, msg.note)].append((tick, (msg.channel, program[msg.channel]), key))
        elif is_note_off(msg) and started[(msg.channel, msg.note)]:
            start, unit, on_key = started[(msg.channel, msg.note)].pop(0)
            units[unit].append(Note(start, tick, msg.note, on_key))
    for (_, pitch), pending in started.items():  # notes never released sound to the end
        for start, unit, on_key in pending:
            units[unit].append(Note(start, end, pitch, on_key))

    plan = StemPlan(dict(units))
    plan.voice_units = sorted(u for u in units if plan.stem_of(*u) == "vocals")
    voice_notes = sum(len(units[u]) for u in plan.voice_units)
    others = {u: notes for u, notes in units.items() if plan.stem_of(*u) == "other"}
    other_total = sum(len(notes) for notes in others.values())
    best = None
    for unit, notes in sorted(others.items()):
        top = skyline(notes, midi.ticks_per_beat // 8)  # a 32nd note of legato overlap
        if (unit[1] in NON_MELODIC_PROGRAMS or len(top) < MIN_MELODY_NOTES
                or _mean_pitch(top) < MIN_MELODY_PITCH or len(top) == other_total):
            continue
        rank = (polyphony(notes) <= MAX_MELODY_POLYPHONY, _mean_pitch(top), len(top))
        if best is None or rank > best[0]:
            best = (rank, unit, top)
    if voice_notes < MIN_VOICE_NOTES and best is not None:
        plan.melody_unit, plan.melody_keys = best[1], frozenset(n.key for n in best[2])
    rules = {(True, False): "program", (False, True): "melody", (True, True): "program+melody"}
    plan.vocals_rule = rules.get((voice_notes > 0, plan.melody_unit is not None), "none")
    plan.note_counts = dict.fromkeys(STEM_NAMES, 0)
    for unit, notes in units.items():
        for n in notes:
            plan.note_counts[plan.stem_of(*unit, n.key)] += 1
    return plan


def split_midi_into_stems(midi: mido.MidiFile, plan: StemPlan | None = None) -> dict[str, mido.MidiFile]:
    """Write one MIDI file per stem (``drums bass other vocals``) from one song.

    Every stem keeps the song's track layout, tempo map, meta events and all
    non-note channel messages, so the stems play in lockstep and end together;
    only the notes are divided.  In the vocals stem the re-voiced melody's
    channel has every program change (and bank select) rewritten to program
    53, and a program change at tick 0 makes the voice patch sound from the
    first note.
    """
    plan = plan or plan_stems(midi)
    revoiced = plan.melody_unit[0] if plan.melody_unit else None
    per_stem = {s: [[] for _ in midi.tracks] for s in STEM_NAMES}
    if revoiced is not None:
        per_stem["vocals"][0].append((0, mido.Message("program_change", channel=revoiced,
                                                      program=REVOICE_PROGRAM)))
    program, routed = defaultdict(int), defaultdict(list)
    for key, (tick, index, msg) in enumerate(timeline(midi)):
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        if is_note_on(msg):
            stem = plan.stem_of(msg.channel, program[msg.channel], key)
            routed[(msg.channel, msg.note)].append(stem)
            targets = (stem,)
        elif is_note_off(msg) and routed[(msg.channel, msg.note)]:
            targets = (routed[(msg.channel, msg.note)].pop(0),)
        else:
            targets = STEM_NAMES
        for stem in targets:
            out = msg
            if stem == "vocals" and getattr(msg, "channel", None) == revoiced:
                if msg.type == "program_change":
                    out = msg.copy(program=REVOICE_PROGRAM)
                elif msg.type == "control_change" and msg.control in BANK_SELECT:
                    out = msg.copy(value=0)
            per_stem[stem][index].append((tick, out))
    return {s: assemble_tracks(midi, tracks) for s, tracks in per_stem.items()}


def assemble_tracks(like: mido.MidiFile, tracks: list) -> mido.MidiFile:
    """A MIDI file shaped like ``like`` from per-track lists of ``(abs_tick, msg)``."""
    out = mido.MidiFile(type=like.type, ticks_per_beat=like.ticks_per_beat)
    out.tracks.extend(_to_track(events) for events in tracks)
    return out


def count_notes(midi: mido.MidiFile) -> int:
    """Number of sounding note-ons in a MIDI file."""
    return sum(is_note_on(m) for track in midi.tracks for m in track)
