"""Tests of the MIDI stem-set builder (separation/stems*.py) on synthetic songs.

Everything here is built in the test: a WAD file, small General MIDI songs
made with mido, random "stems".  Only the last test renders audio, and only
where fluidsynth and the FluidR3 GM sound font are already on the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from separation.stems import build_from_songs, plan_song, write_track
from separation.stems_midi import (Note, StemSetError, parse_midi, plan_stems, polyphony, skyline,
                                   split_midi_into_stems, truncate_midi)
from separation.stems_render import INT16_SCALE, mix_to_int16, split_drum_kit
from separation.stems_sources import SongSource, read_wad_directory, wad_midi_lumps

TPB = 480  # ticks per beat; at the default 120 bpm one beat is 0.5 s


def song(parts, tempo_changes=((0, 500_000),), beats: int = 8) -> mido.MidiFile:
    """A type-1 song: track 0 holds tempo and meta, one track per part.

    ``parts`` are ``(channel, program, notes)`` with ``notes`` a list of
    ``(start_beat, length_beats, pitch)``.
    """
    midi = mido.MidiFile(type=1, ticks_per_beat=TPB)
    meta = [(t, mido.MetaMessage("set_tempo", tempo=v)) for t, v in tempo_changes]
    meta += [(0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
             (0, mido.MetaMessage("track_name", name="conductor")), (beats * TPB, mido.MetaMessage("end_of_track"))]
    tracks = [meta]
    for channel, program, notes in parts:
        events = [(0, mido.Message("program_change", channel=channel, program=program)),
                  (0, mido.Message("control_change", channel=channel, control=7, value=100))]
        for start, length, pitch in notes:
            events.append((int(start * TPB), mido.Message("note_on", channel=channel, note=pitch, velocity=90)))
            events.append((int((start + length) * TPB), mido.Message("note_off", channel=channel, note=pitch)))
        tracks.append(events)
    for events in tracks:
        events.sort(key=lambda e: e[0])
        track, last = mido.MidiTrack(), 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - last))
            last = tick
        midi.tracks.append(track)
    return midi


DRUMS = (9, 0, [(b / 2, 0.25, 36 if b % 2 == 0 else 42) for b in range(16)])
BASS = (1, 33, [(b, 1, 40) for b in range(8)])
CHORDS = (3, 0, [(b / 2, 0.5, p) for b in range(16) for p in (60, 64, 67)])
FLUTE = (2, 73, [(b / 2, 0.5, 76 + (b % 3)) for b in range(16)])


def notes_of(midi: mido.MidiFile) -> list[tuple[int, int]]:
    return sorted((m.channel, m.note) for t in midi.tracks for m in t if m.type == "note_on" and m.velocity)


def metas_of(midi: mido.MidiFile) -> list[str]:
    return [str(m) for t in midi.tracks for m in t if m.is_meta]


def test_wad_directory_and_music_lumps():
    midi_bytes = b"MThd" + bytes(10)
    mus_bytes = b"MUS\x1a" + bytes(12)
    lumps = [(b"PLAYPAL", bytes(32)), (b"D_E1M1", midi_bytes), (b"D_E1M2", mus_bytes)]
    body, entries, offset = b"", [], 12
    for name, data in lumps:
        entries.append(struct.pack("<ii8s", offset + len(body), len(data), name))
        body += data
    wad = struct.pack("<4sii", b"IWAD", len(lumps), 12 + len(body)) + body + b"".join(entries)

    directory = read_wad_directory(wad)
    assert [(lump.name, lump.size) for lump in directory] == [("PLAYPAL", 32), ("D_E1M1", 14), ("D_E1M2", 16)]
    assert wad_midi_lumps(wad) == [("D_E1M1", midi_bytes)]  # the MUS lump is not MIDI
    with pytest.raises(StemSetError, match="magic"):
        read_wad_directory(b"XWAD" + wad[4:])
    with pytest.raises(StemSetError, match="out of bounds"):
        read_wad_directory(wad[:-8])  # directory cut short


def test_split_by_channel_and_program_keeps_meta_everywhere():
    voice = (4, 53, [(b / 2, 0.5, 72) for b in range(16)])
    midi = song([DRUMS, BASS, CHORDS, voice])
    plan = plan_stems(midi)
    stems = split_midi_into_stems(midi, plan)

    assert plan.vocals_rule == "program" and plan.melody_unit is None
    assert {c for c, _ in notes_of(stems["drums"])} == {9}
    assert {c for c, _ in notes_of(stems["bass"])} == {1}
    assert {c for c, _ in notes_of(stems["vocals"])} == {4}
    assert {c for c, _ in notes_of(stems["other"])} == {3}
    assert sorted(sum((notes_of(s) for s in stems.values()), [])) == notes_of(midi)  # a partition
    for stem in stems.values():  # same tempo map, meta events and length in every stem
        assert metas_of(stem) == metas_of(midi)
        assert stem.length == pytest.approx(midi.length)
        assert sum(m.type == "control_change" for t in stem.tracks for m in t) == 4  # one per part


def test_song_without_voice_gets_its_melody_revoiced():
    midi = song([DRUMS, BASS, CHORDS, FLUTE])
    plan = plan_stems(midi)
    stems = split_midi_into_stems(midi, plan)

    assert plan.vocals_rule == "melody" and plan.melody_unit == (2, 73)
    assert notes_of(stems["vocals"]) == sorted((2, n) for _, _, n in FLUTE[2])
    programs = {(m.channel, m.program) for t in stems["vocals"].tracks for m in t if m.type == "program_change"}
    assert (2, 53) in programs and (2, 73) not in programs  # re-voiced to Voice Oohs
    assert {c for c, _ in notes_of(stems["other"])} == {3}  # the chords stay in "other"
    assert all(metas_of(s) == metas_of(midi) for s in stems.values())


def test_chordal_part_gives_its_top_line_and_other_never_empties():
    # Only chords and a bass: the top voice of the chords becomes the vocals.
    plan = plan_stems(song([DRUMS, BASS, CHORDS, (5, 48, [(b, 2, 55) for b in range(0, 8, 2)])]))
    assert plan.vocals_rule == "melody" and plan.melody_unit == (3, 0)
    assert plan.note_counts["vocals"] == 16 and plan.note_counts["other"] == 2 * 16 + 4
    # A single melodic line is never taken: "other" would be left silent.
    plan = plan_stems(song([DRUMS, BASS, FLUTE]))
    assert plan.vocals_rule == "none" and plan.note_counts["other"] == 16


def test_skyline_and_polyphony():
    legato = [Note(0, 500, 72, 0), Note(480, 960, 70, 1)]  # 20 ticks of overlap, falling
    assert skyline(legato, tolerance=60) == legato
    chord = [Note(0, 960, p, k) for k, p in enumerate((60, 64, 67))]
    assert skyline(chord, tolerance=60) == [chord[2]]
    assert polyphony(chord) == 1.0 and polyphony([Note(0, 10, 60, 0), Note(10, 20, 62, 1)]) == 0.0


def test_note_follows_its_stem_across_a_program_change():
    midi = song([DRUMS])
    track = mido.MidiTrack([
        mido.Message("program_change", channel=1, program=33),
        mido.Message("note_on", channel=1, note=40, velocity=90),
        mido.Message("program_change", channel=1, program=0, time=TPB),  # while the note sounds
        mido.Message("note_off", channel=1, note=40, time=TPB),
        mido.Message("note_on", channel=1, note=60, velocity=90),
        mido.Message("note_off", channel=1, note=60, time=TPB)])
    midi.tracks.append(track)
    stems = split_midi_into_stems(midi)
    bass = [(m.type, m.note) for t in stems["bass"].tracks for m in t if m.type.startswith("note")]
    assert bass == [("note_on", 40), ("note_off", 40)]
    assert notes_of(stems["other"]) == [(1, 60)]


def test_truncate_honours_tempo_changes_and_releases_notes():
    # 120 bpm for 4 beats (2 s), then 60 bpm: 3 s is beat 5.
    midi = song([BASS], tempo_changes=((0, 500_000), (4 * TPB, 1_000_000)))
    cut, truncated = truncate_midi(midi, 3.0)
    assert truncated and cut.length == pytest.approx(3.0)
    ons = sum(m.type == "note_on" for t in cut.tracks for m in t)
    offs = sum(m.type == "note_off" for t in cut.tracks for m in t)
    assert ons == offs == 5  # the note sounding at the cut is released there
    assert truncate_midi(midi, 100.0) == (midi, False)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(StemSetError, match="does not parse"):
        parse_midi(b"MThd garbage")
    no_drums = song([BASS, FLUTE, CHORDS])
    data = _to_bytes(no_drums)
    with pytest.raises(StemSetError, match="no drums"):
        plan_song(SongSource("X - y", "train", "pkg", "1", "y.mid", "MIT", data), 60.0)


def _to_bytes(midi: mido.MidiFile) -> bytes:
    import io

    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def test_drum_kit_split_maps_keys_and_keeps_non_acoustic_kits():
    drums = song([(9, 0, [(0, 0.5, 36), (1, 0.5, 50), (2, 0.5, 76)])])
    kit, gm = split_drum_kit(drums)
    assert notes_of(kit) == [(0, 36), (0, 45)]  # kick stays, high tom -> the kit's rack tom
    assert notes_of(gm) == [(9, 76)]  # high wood block: no such piece in the kit
    assert metas_of(kit) == metas_of(gm) == metas_of(drums)
    kit, gm = split_drum_kit(song([(9, 25, [(0, 0.5, 36)])]))  # TR-808: not an acoustic kit
    assert notes_of(kit) == [] and notes_of(gm) == [(9, 36)]


def test_mixture_is_exactly_the_sum_of_16_bit_stems(tmp_path, rng):
    stems = {name: (level * rng.standard_normal((44100, 2))).astype(np.float32)
             for name, level in [("drums", 0.5), ("bass", 0.3), ("other", 0.2), ("vocals", 1e-3)]}
    q, mixture, gain = mix_to_int16(stems)
    assert np.abs(mixture).max() / INT16_SCALE == pytest.approx(0.9, abs=1e-3)
    assert np.array_equal(mixture.astype(np.int32), sum(v.astype(np.int32) for v in q.values()))
    # Quantizing the float mixture by itself instead would miss the sum by up to 2 LSB here.
    naive = np.round(sum(stems.values()).astype(np.float64) * gain * INT16_SCALE)
    assert np.abs(naive - mixture).max() >= 1

    error = write_track(tmp_path / "Artist - Song", q, mixture)
    read = {n: sf.read(tmp_path / "Artist - Song" / f"{n}.wav", dtype="float32")[0]
            for n in ("mixture", *stems)}
    assert error <= 1e-6
    assert np.abs(read["mixture"] - sum(read[n] for n in stems)).max() <= 1e-4
    assert sf.info(tmp_path / "Artist - Song" / "mixture.wav").subtype == "PCM_16"
    assert not (tmp_path / "Artist - Song.partial").exists()


def test_unusable_songs_are_skipped_and_counted(tmp_path):
    songs = [SongSource("Bad - Bytes", "train", "p", "1", "a.mid", "MIT", b"not a midi file"),
             SongSource("No - Drums", "test", "p", "1", "b.mid", "MIT", _to_bytes(song([BASS, FLUTE, CHORDS])))]
    font = tmp_path / "unused.sf2"
    font.write_bytes(b"")  # never opened: no song gets as far as rendering
    summary = build_from_songs(tmp_path / "set", songs, font, [], fluidsynth="/nonexistent", log=lambda *a: None)
    assert summary["splits"] == {"train": {"tracks": 0, "minutes": 0.0}, "test": {"tracks": 0, "minutes": 0.0}}
    assert summary["skipped"] == {"MIDI does not parse": ["Bad - Bytes"], "no drums in the song": ["No - Drums"]}
    assert json.loads((tmp_path / "set" / "manifest.json").read_text())["tracks"] == []
    with pytest.raises(StemSetError, match="sound font not found"):
        build_from_songs(tmp_path / "set", songs, tmp_path / "missing.sf2", [])


def _gm_font() -> Path | None:
    """FluidR3_GM.sf2 if this machine has it: $WALLOC_GM_SF2, system paths, or the recipe's cache."""
    candidates = [os.environ.get("WALLOC_GM_SF2", ""), "/usr/share/sounds/sf2/FluidR3_GM.sf2",
                  "/usr/share/soundfonts/FluidR3_GM.sf2",
                  "~/walloc-data/musdb-local/cache/root/fluid-soundfont-gm/usr/share/sounds/sf2/FluidR3_GM.sf2"]
    for c in candidates:
        if c and Path(c).expanduser().is_file():
            return Path(c).expanduser()
    return None


@pytest.mark.slow
def test_two_second_song_end_to_end_opens_in_musdb(tmp_path):
    font = _gm_font()
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth binary not installed (apt-get install fluidsynth)")
    if font is None:
        pytest.skip("FluidR3_GM.sf2 not found (set WALLOC_GM_SF2, or run recipes/musdb18/prepare_stems.py)")
    if shutil.which("ffmpeg") is None:
        pytest.skip("musdb decodes WAV through the ffmpeg binary, which is missing")
    musdb = pytest.importorskip("musdb")
    parts = (DRUMS, BASS, CHORDS, (4, 54, [(b, 1, 72) for b in range(4)]))  # 54: Synth Voice
    short = [(c, p, [n for n in notes if n[0] + n[1] <= 4]) for c, p, notes in parts]
    data = _to_bytes(song(short, beats=4))  # 4 beats at 120 bpm: 2 s
    songs = [SongSource("Synth - Train", "train", "test", "0", "a.mid", "MIT", data),
             SongSource("Synth - Test", "test", "test", "0", "b.mid", "MIT", data),
             SongSource("Synth - Broken", "test", "test", "0", "c.mid", "MIT", b"MThd nonsense"),
             SongSource("Synth - Instrumental", "train", "test", "0", "d.mid", "MIT", _to_bytes(song(short[:3], beats=4)))]
    summary = build_from_songs(tmp_path, songs, font, [], max_seconds=60.0, workers=2, log=lambda *a: None)

    assert {split: v["tracks"] for split, v in summary["splits"].items()} == {"train": 2, "test": 1}
    assert summary["silent_stems"] == {"Synth - Instrumental": ["vocals"]}
    assert list(summary["skipped"]) == ["MIDI does not parse"]
    db = musdb.DB(root=str(tmp_path), is_wav=True, subsets="train")
    assert [t.name for t in db.tracks] == ["Synth - Instrumental", "Synth - Train"]
    stems = db.tracks[1].stems  # [mixture, drums, bass, other, vocals], each [T, 2]
    assert stems.shape[0] == 5 and stems.shape[2] == 2
    assert 2.0 <= stems.shape[1] / 44100 <= 5.0  # 2 s of notes and the release tails
    assert np.abs(stems[0] - stems[1:].sum(0)).max() <= 1e-4
    assert all(np.abs(s).max() > 1e-3 for s in stems)  # no silent stem in this song
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    tracks = {t["name"]: t for t in manifest["tracks"]}
    assert tracks["Synth - Train"]["vocals_rule"] == "program" and tracks["Synth - Train"]["silent_stems"] == []
    assert tracks["Synth - Instrumental"]["vocals_rule"] == "none"
    assert tracks["Synth - Instrumental"]["stem_rms_dbfs"]["vocals"] is None  # digital silence
    # A rerun reuses the finished tracks and leaves identical files.
    before = (tmp_path / "train" / "Synth - Train" / "mixture.wav").read_bytes()
    again = build_from_songs(tmp_path, songs, font, [], max_seconds=60.0, log=lambda *a: None)
    assert again["reused"] == 3
    assert (tmp_path / "train" / "Synth - Train" / "mixture.wav").read_bytes() == before
    # A test split cut shorter than train: only the test track is rendered again, and it is cut.
    cut = build_from_songs(tmp_path, songs, font, [], max_seconds=60.0, test_max_seconds=1.0, log=lambda *a: None)
    assert cut["reused"] == 2
    assert (tmp_path / "train" / "Synth - Train" / "mixture.wav").read_bytes() == before
    test_mix = musdb.DB(root=str(tmp_path), is_wav=True, subsets="test").tracks[0].audio
    assert test_mix.shape[0] <= 1.0 * 44100 + 1
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"]["test_max_seconds"] == 1.0
