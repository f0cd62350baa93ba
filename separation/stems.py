"""Build a MUSDB18-HQ-style separation set from General MIDI songs.

``build_stem_set(root)`` turns freely licensed Debian MIDI music into::

    ROOT/train/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav   (Freedoom)
    ROOT/test/<Artist - Title>/...                  (OpenMSX, Planet Blupi)
    ROOT/manifest.json     per track: source, licence, duration, rules, levels
    ROOT/setup.yaml        musdb setup whose validation_tracks are ours
    ROOT/cache/            downloaded .deb files and their unpacked trees

The WAVs are 44.1 kHz stereo 16-bit PCM like MUSDB18-HQ, and the mixture
is exactly the sum of the four stems (:func:`~separation.stems_render.mix_to_int16`
explains why the stems are quantized first).  ``musdb.DB(root=ROOT,
is_wav=True)`` reads the set; ``musdb.DB(..., subsets="train", split="valid",
setup_file="setup.yaml")`` gives a validation split.  musdb decodes WAVs
through ffmpeg to 16-bit anyway, so float files would gain nothing there.

Steps: fetch packages and sound fonts; parse, cut to ``max_seconds`` and plan
every song (:mod:`separation.stems_midi`); skip songs without drums or bass
in that window; keep ``max_tracks`` per split (chosen by a hash of the name,
so sources mix and the choice is stable); render and mix the rest in
``workers`` threads; write the manifest.  Output is deterministic: a rerun
with the same settings reuses finished tracks and writes identical files.

Synthesised stems are cleaner than recordings: scores on this set are not
comparable with published MUSDB18 numbers.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from .stems_midi import (STEM_NAMES, StemPlan, StemSetError, count_notes, parse_midi, plan_stems,
                         split_midi_into_stems, truncate_midi)
from .stems_render import (FADE_SECONDS, PEAK, SAMPLE_RATE, SILENT_DBFS, fade_out, find_fluidsynth, fit_length,
                           mix_to_int16, render_midi, rms_dbfs, split_drum_kit)
from .stems_sources import DRUM_FONTS, GM_FONT, SongSource, collect_songs, fetch_soundfonts

__all__ = ["StemSetError", "build_stem_set", "build_from_songs", "render_song", "write_track", "check_musdb"]

FORMAT = "walloc-audio midi stems v1"  # bump when the output of a song changes
SPLITS = ("train", "test")
SUM_TOLERANCE = 1e-4  # max |mixture - sum(stems)| on the files as read back
VALID_FRACTION = 0.15  # share of train tracks listed as validation in setup.yaml
TAIL_LEVEL = 1e-4  # render tails below this level (-80 dB, before the song gain) are cut


@dataclass
class PlannedSong:
    """A song cut to length and analysed, ready to render."""

    song: SongSource
    midi: mido.MidiFile
    truncated: bool
    plan: StemPlan


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def plan_song(song: SongSource, max_seconds: float) -> PlannedSong:
    """Parse, cut and plan one song; a song that cannot make a track raises StemSetError."""
    midi, truncated = truncate_midi(parse_midi(song.data), max_seconds)
    plan = plan_stems(midi)
    window = f"in the first {max_seconds:g} s" if truncated else "in the song"
    if not plan.has_drums:
        raise StemSetError(f"no drums {window}")
    if not plan.has_bass:
        raise StemSetError(f"no bass {window}")
    return PlannedSong(song, midi, truncated, plan)


def _audible_length(audio: np.ndarray) -> int:
    """Samples up to and including the last one above ``TAIL_LEVEL``."""
    loud = np.flatnonzero(np.abs(audio).max(axis=1) > TAIL_LEVEL)
    return int(loud[-1]) + 1 if loud.size else 0


def render_song(item: PlannedSong, gm_font: Path, kit_font: Path | None, *, fluidsynth: str,
                max_seconds: float) -> tuple[dict, np.ndarray, float]:
    """Render the four stems of a planned song; returns ``(int16_stems, int16_mixture, gain)``.

    All renders are padded to the longest (release tails) and cropped to
    ``max_seconds``; a song cut short gets a ``FADE_SECONDS`` fade on every
    stem, which keeps the sum exact because it is the same linear map.
    """
    midis = split_midi_into_stems(item.midi, item.plan)
    renders: dict[str, list[np.ndarray]] = {name: [] for name in STEM_NAMES}
    jobs = []
    if kit_font is not None:
        kit, gm = split_drum_kit(midis.pop("drums"))
        jobs += [("drums", kit, kit_font), ("drums", gm, gm_font)]
    jobs += [(name, midi, gm_font) for name, midi in midis.items()]
    for name, midi, font in jobs:
        if count_notes(midi):
            renders[name].append(render_midi(midi, font, fluidsynth=fluidsynth))
    # fluidsynth keeps rendering until every voice is inaudible to *it*; drop
    # the common tail below TAIL_LEVEL (-80 dB before the gain) as well.
    cap = int(round(max_seconds * SAMPLE_RATE))
    longest = max(_audible_length(a) for parts in renders.values() for a in parts)
    length = min(longest, cap)
    stems = {}
    for name in STEM_NAMES:
        audio = np.zeros((length, 2), np.float32)
        for part in renders[name]:
            audio += fit_length(part, length)
        stems[name] = fade_out(audio, int(FADE_SECONDS * SAMPLE_RATE)) if item.truncated or longest > cap else audio
    return mix_to_int16(stems, PEAK)


def write_track(folder: Path, stems: dict, mixture: np.ndarray) -> float:
    """Write a track folder atomically and check the sum; returns max |mixture - sum|.

    Files go to ``<folder>.partial`` first and the folder is renamed into
    place, so an interrupted build never leaves a half-written track that a
    rerun would trust.
    """
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, audio in [("mixture", mixture), *stems.items()]:
        sf.write(partial / f"{name}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    read = {name: sf.read(partial / f"{name}.wav", dtype="float32")[0] for name in ("mixture", *STEM_NAMES)}
    error = float(np.abs(read["mixture"] - sum(read[n] for n in STEM_NAMES)).max())
    if error > SUM_TOLERANCE:
        raise StemSetError(f"mixture differs from the sum of stems by {error:.2e}")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return error


def _fingerprint(item: PlannedSong, max_seconds: float, fonts: list[str]) -> str:
    return _hash(json.dumps([FORMAT, item.song.sha1, max_seconds, PEAK, fonts]))


def _track_entry(item: PlannedSong, stems: dict, gain: float, kit: str, fingerprint: str, error: float) -> dict:
    # JSON has no -inf: digital silence is written as null (and is silent).
    levels = {name: round(float(rms_dbfs(audio)), 2) if np.any(audio) else None for name, audio in stems.items()}
    plan, song = item.plan, item.song
    return {
        "name": song.name, "split": song.split, "package": song.package,
        "package_version": song.package_version, "midi": song.origin, "midi_sha1": song.sha1,
        "licence": song.licence, "duration_s": round(len(stems["drums"]) / SAMPLE_RATE, 3),
        "truncated": item.truncated, "gain": round(float(gain), 6), "drum_kit": kit,
        "vocals_rule": plan.vocals_rule, "voice_units": [list(u) for u in plan.voice_units],
        "melody_unit": list(plan.melody_unit) if plan.melody_unit else None,
        "note_counts": plan.note_counts, "stem_rms_dbfs": levels,
        "silent_stems": [n for n in STEM_NAMES if levels[n] is None or levels[n] < SILENT_DBFS],
        "max_sum_error": error, "fingerprint": fingerprint,
    }


def _load_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def write_musdb_setup(root: Path, train_names: list[str]) -> Path | None:
    """``ROOT/setup.yaml``: musdb's own setup with ``validation_tracks`` set to ours.

    musdb's ``split="valid"`` looks tracks up by name in its setup file, and
    the default one lists real MUSDB18 songs.  The validation tracks are the
    ``VALID_FRACTION`` of train tracks with the smallest name hash.
    """
    try:
        import musdb
        import yaml
    except ImportError:
        return None
    setup = yaml.safe_load((Path(musdb.__file__).parent / "configs" / "mus.yaml").read_text())
    count = max(1, round(VALID_FRACTION * len(train_names))) if train_names else 0
    setup["validation_tracks"] = sorted(sorted(train_names, key=_hash)[:count])
    path = root / "setup.yaml"
    path.write_text(yaml.safe_dump(setup, sort_keys=False))
    return path


def build_stem_set(root, *, max_seconds: float = 60.0, max_tracks: int | None = None, workers: int = 2,
                   cache=None, drum_kits: bool = True, force: bool = False, log=print,
                   test_max_seconds: float | None = None) -> dict:
    """Fetch the Debian songs and sound fonts, then build the set under ``root``.

    ``max_seconds`` cuts every song, ``test_max_seconds`` (default: the
    same) those of the test split; ``max_tracks`` caps each split; ``cache`` defaults to ``ROOT/cache``;
    ``drum_kits=False`` renders drums with the GM font only; ``force``
    re-renders tracks that a previous run finished.  Returns the summary of
    :func:`build_from_songs`.  A missing renderer or GM sound font is a
    :class:`StemSetError` before any work; a song that fails is skipped.
    """
    started = time.monotonic()
    root = Path(root).expanduser().resolve()
    cache = Path(cache).expanduser().resolve() if cache else root / "cache"
    fluidsynth = find_fluidsynth()
    gm_font, kits, notes = fetch_soundfonts(cache, drum_kits)
    songs, skipped = collect_songs(cache)
    return build_from_songs(root, songs, gm_font, kits, max_seconds=max_seconds, max_tracks=max_tracks,
                            test_max_seconds=test_max_seconds, workers=workers, force=force, fluidsynth=fluidsynth,
                            log=log, started=started,
                            skipped=[{"name": o, "split": None, "reason": r} for o, r in skipped], notes=notes)


def build_from_songs(root, songs: list[SongSource], gm_font: Path, kits: list[Path], *, max_seconds: float = 60.0,
                     max_tracks: int | None = None, workers: int = 2, force: bool = False,
                     fluidsynth: str = "fluidsynth", log=print, started: float | None = None,
                     skipped: list | None = None, notes: list | None = None,
                     test_max_seconds: float | None = None) -> dict:
    """Build the set under ``root`` from given songs and fonts; returns a summary dict.

    Train songs are cut at ``max_seconds``, test songs at ``test_max_seconds``
    (default: the same), so a run can train on whole songs and still score on
    a test set of fixed length.

    Songs that cannot make a track (a MIDI that does not parse, no drums or
    no bass in the window, a failed render) are skipped and listed with
    their reason in the manifest and the summary.
    """
    started = time.monotonic() if started is None else started
    caps = {split: max_seconds for split in SPLITS}
    caps["test"] = max_seconds if test_max_seconds is None else test_max_seconds
    for font in [gm_font, *kits]:
        if not Path(font).is_file():
            raise StemSetError(f"sound font not found: {font}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    skipped, notes = list(skipped or []), list(notes or [])
    for leftover in [p for split in SPLITS for p in (root / split).glob("*.partial")]:
        shutil.rmtree(leftover)  # an interrupted write; musdb would take it for a track
    planned: dict[str, list[PlannedSong]] = {s: [] for s in SPLITS}
    for song in songs:
        try:
            planned[song.split].append(plan_song(song, caps[song.split]))
        except StemSetError as exc:
            skipped.append({"name": song.name, "split": song.split, "reason": str(exc)})
    for split in SPLITS:
        chosen = sorted(planned[split], key=lambda p: _hash(p.song.name))
        for item in chosen[max_tracks:] if max_tracks is not None else []:
            skipped.append({"name": item.song.name, "split": split, "reason": "not selected (--max-tracks)"})
        planned[split] = sorted(chosen[:max_tracks], key=lambda p: p.song.name)

    old = {t["name"]: t for t in _load_manifest(root / "manifest.json").get("tracks", [])}
    fonts = [gm_font.name] + [k.name for k in kits]

    def make(item: PlannedSong) -> dict:
        song = item.song
        folder = root / song.split / song.name
        kit = kits[int(_hash(song.name)[:8], 16) % len(kits)] if kits else None
        fingerprint = _fingerprint(item, caps[song.split], fonts)
        previous = old.get(song.name)
        if (not force and previous and previous.get("fingerprint") == fingerprint
                and all((folder / f"{n}.wav").is_file() for n in ("mixture", *STEM_NAMES))):
            return dict(previous, reused=True)
        stems, mixture, gain = render_song(item, gm_font, kit, fluidsynth=fluidsynth, max_seconds=caps[song.split])
        error = write_track(folder, stems, mixture)
        log(f"  {song.split}/{song.name}: {len(mixture) / SAMPLE_RATE:.1f} s, vocals by {item.plan.vocals_rule}")
        drum_font = kit.name if kit else gm_font.name
        return _track_entry(item, stems, gain, drum_font, fingerprint, error)

    def attempt(item: PlannedSong):
        try:
            return make(item)
        except StemSetError as exc:
            return {"name": item.song.name, "split": item.song.split, "reason": str(exc)}

    items = [item for split in SPLITS for item in planned[split]]
    log(f"rendering {len(items)} tracks with {workers} worker(s) into {root}")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(attempt, items))
    tracks = [r for r in results if "reason" not in r]
    skipped += [r for r in results if "reason" in r]

    keep = {(t["split"], t["name"]) for t in tracks}
    for name, entry in old.items():  # tracks of an earlier, larger build
        if (entry.get("split"), name) not in keep and entry.get("split") in SPLITS:
            shutil.rmtree(root / entry["split"] / name, ignore_errors=True)
    reused = sum(bool(t.pop("reused", False)) for t in tracks)
    manifest = {
        "format": FORMAT, "sample_rate": SAMPLE_RATE, "subtype": "PCM_16",
        "settings": {"max_seconds": max_seconds, "test_max_seconds": caps["test"], "max_tracks": max_tracks,
                     "peak": PEAK,
                     "fade_seconds": FADE_SECONDS, "silent_below_dbfs": SILENT_DBFS},
        "soundfonts": {"gm": {"file": gm_font.name, "package": GM_FONT[0], "licence": GM_FONT[2]},
                       "drum_kits": {"files": [k.name for k in kits], "package": DRUM_FONTS[0],
                                     "licence": DRUM_FONTS[2]}},
        "notes": notes, "tracks": tracks, "skipped": skipped,
    }
    _write_json(root / "manifest.json", manifest)
    write_musdb_setup(root, [t["name"] for t in tracks if t["split"] == "train"])
    return summarize(manifest, root, time.monotonic() - started, reused)


def summarize(manifest: dict, root: Path, seconds: float, reused: int = 0) -> dict:
    """Counts for people: tracks and minutes per split, skips by reason, silent stems."""
    splits = {s: {"tracks": 0, "minutes": 0.0} for s in SPLITS}
    for t in manifest["tracks"]:
        splits[t["split"]]["tracks"] += 1
        splits[t["split"]]["minutes"] += t["duration_s"] / 60
    skipped: dict[str, list[str]] = {}
    for s in manifest["skipped"]:
        reason = s["reason"].split(":")[0]
        skipped.setdefault(reason, []).append(s["name"])
    rules: dict[str, int] = {}
    for t in manifest["tracks"]:
        rules[t["vocals_rule"]] = rules.get(t["vocals_rule"], 0) + 1
    size = sum(f.stat().st_size for s in SPLITS for f in (root / s).rglob("*.wav")) if root.exists() else 0
    return {
        "root": str(root), "splits": {s: {"tracks": v["tracks"], "minutes": round(v["minutes"], 1)}
                                      for s, v in splits.items()},
        "skipped": skipped, "silent_stems": {t["name"]: t["silent_stems"] for t in manifest["tracks"]
                                             if t["silent_stems"]},
        "vocals_rules": rules, "reused": reused, "seconds": round(seconds, 1), "bytes": size,
        "notes": manifest.get("notes", []),
    }


def check_musdb(root) -> dict:
    """Open the set with ``musdb.DB(is_wav=True)``; tracks per subset and one loaded shape.

    musdb decodes even WAV files through the ``ffmpeg`` binary (via stempeg),
    so this also proves ffmpeg is there.  Raises ImportError without musdb.
    """
    import musdb

    out = {}
    for subset in SPLITS:
        db = musdb.DB(root=str(root), is_wav=True, subsets=subset)
        out[subset] = {"tracks": len(db.tracks)}
        if db.tracks:
            track = db.tracks[0]
            stems = track.stems
            error = float(np.abs(stems[0] - stems[1:].sum(0)).max())
            out[subset].update(first=track.name, stems_shape=list(stems.shape), rate=track.rate,
                               max_sum_error=error)
    return out
