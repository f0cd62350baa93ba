#!/usr/bin/env python3
"""Prepare the stereo music corpus used to train and validate the codec.

The music comes from freely licensed Debian game-music packages (see
shared/DATA.md, section 1).  The recipe

1. fetches each package with ``apt-get download`` into ``OUT/debs/`` (running
   ``apt-get update`` once, only if a download fails) and unpacks it with
   ``dpkg -x`` into ``OUT/root/PKG/``;
2. collects Ogg Vorbis / Opus files, including those stored inside ``.pk3``
   (zip) archives, whose members are extracted to ``OUT/extracted/PKG/``;
3. keeps files that soundfile can decode, that are stereo and longer than
   60 s, and counts the rest by reason (unreadable, mono, multichannel, short);
4. splits by *track* using a hash of each file's path relative to ``OUT``, so
   a rerun (or a run with ``--max-tracks``) puts every track in the same split
   (the demo clip's track is always in the validation split);
5. writes ``OUT/train.txt``, ``OUT/val.txt`` (absolute paths) and
   ``OUT/manifest.json``.

Every step is idempotent.  ``--demo-clip PATH`` also re-creates the
repository's demo clip (``walloc_audio/data/demo.flac``) from fixed offsets
of a fixed track.  Only the standard library, numpy and soundfile are used.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from itertools import zip_longest
from pathlib import Path

import numpy as np
import soundfile as sf

DEFAULT_PACKAGES = ("wesnoth-1.16-music", "supertux-data", "nexuiz-music")
# Licence notes, package level, as summarised in shared/DATA.md; the exact
# per-file terms are in OUT/root/PKG/usr/share/doc/PKG/copyright.
_GPL2, _GPL_CCBYSA = "GPL-2+", "GPL / CC-BY-SA"
LICENCES = {
    "ufoai-music": "GPL-2+, CC-BY(-SA)-3.0, PD", "warzone2100-music": "GPL-2+ / CC-BY-SA-3.0",
    "naev-data": "GPL / CC-BY(-SA)-3.0", "wesnoth-1.16-music": _GPL2, "supertux-data": _GPL2,
    "nexuiz-music": _GPL2, "freedroidrpg-data": _GPL2, "hyperrogue-music": _GPL_CCBYSA,
    "frozen-bubble-data": _GPL_CCBYSA, "extremetuxracer-data": _GPL_CCBYSA,
    "pushover-data": _GPL_CCBYSA,
}
AUDIO_EXTS = {".ogg", ".oga", ".opus"}
MIN_SECONDS = 60.0

# The demo clip: a fixed passage of one GPL-2+ track (see DEMO_LICENSE.md).
# Its track is always put in the validation split, so demos use held-out music.
DEMO_PACKAGE = "supertux-data"
DEMO_FILE = "usr/share/games/supertux2/music/castle/darkforestkeep.ogg"
DEMO_REL = f"root/{DEMO_PACKAGE}/{DEMO_FILE}"
DEMO_START_S, DEMO_END_S, DEMO_RATE = 110.95, 119.95, 44100
DEMO_FADE_S = 0.01  # raised-cosine fade in/out, avoids clicks at the cut points


def log(msg: str) -> None:
    print(msg, flush=True)


class AptFetcher:
    """Download .deb files with apt-get, refreshing the package lists at most once."""

    def __init__(self) -> None:
        self.updated = False

    def fetch(self, pkg: str, debs: Path) -> Path:
        """Return the .deb of ``pkg`` in ``debs``, downloading it if it is not there."""
        debs.mkdir(parents=True, exist_ok=True)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if found:
            return found[-1]
        cmd = ["apt-get", "download", pkg]
        res = subprocess.run(cmd, cwd=debs, capture_output=True, text=True)
        if res.returncode != 0 and not self.updated:
            # Most often the package lists are missing or stale: refresh them once.
            log(f"  apt-get download {pkg} failed; running apt-get update")
            subprocess.run(["apt-get", "update"], check=True, capture_output=True)
            self.updated = True
            res = subprocess.run(cmd, cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if res.returncode != 0 or not found:
            raise RuntimeError(f"cannot download {pkg}: {res.stderr.strip()}")
        return found[-1]


def unpack(deb: Path, dest: Path) -> None:
    """``dpkg -x`` the package into ``dest`` unless that exact .deb was unpacked already."""
    stamp = dest / ".unpacked-from"
    if stamp.is_file() and stamp.read_text().strip() == deb.name:
        return
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True)
    stamp.write_text(deb.name + "\n")


def extract_pk3(pk3: Path, dest: Path) -> list[Path]:
    """Extract the audio members of a .pk3 (zip) archive to ``dest``.

    Members already on disk with the right size are not extracted again.  A
    member (or a whole archive) that cannot be extracted is still returned, so
    that the probe counts it as unreadable instead of it vanishing silently.
    """
    try:
        zf = zipfile.ZipFile(pk3)
    except (zipfile.BadZipFile, OSError) as err:
        log(f"  warning: cannot open {pk3}: {err}")
        return [pk3]
    out = []
    with zf:
        for info in zf.infolist():
            if info.is_dir() or Path(info.filename).suffix.lower() not in AUDIO_EXTS:
                continue
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                continue  # refuse path traversal ("../") in member names
            out.append(target)
            if target.is_file() and target.stat().st_size == info.file_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            try:
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.replace(tmp, target)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                log(f"  warning: cannot extract {info.filename} from {pk3}: {err}")
                tmp.unlink(missing_ok=True)
    return out


def find_audio(pkg_root: Path, extract_root: Path) -> list[Path]:
    """All audio files of one unpacked package, .pk3 members included."""
    files = []
    for path in sorted(pkg_root.rglob("*")):
        if not path.is_file():
            continue
        ext = path.suffix.lower()
        if ext in AUDIO_EXTS:
            files.append(path)
        elif ext == ".pk3":
            files += extract_pk3(path, extract_root / path.stem)
    return sorted(files)


def probe(path: Path) -> tuple[str | None, dict]:
    """Check one file; return (skip reason or None, audio facts).

    The first and the last second are decoded too, which catches truncated files
    whose header alone looks fine.
    """
    try:
        info = sf.info(str(path))
        if info.frames <= 0 or info.samplerate <= 0:
            return "unreadable", {}
        facts = {"duration_s": round(info.frames / info.samplerate, 3),
                 "sample_rate": info.samplerate, "channels": info.channels,
                 "format": f"{info.format}/{info.subtype}"}
        if info.channels == 1:
            return "mono", facts
        if info.channels != 2:
            return "multichannel", facts
        if info.frames / info.samplerate <= MIN_SECONDS:
            return "short", facts
        with sf.SoundFile(str(path)) as f:
            f.read(info.samplerate, dtype="float32")
            f.seek(max(0, info.frames - info.samplerate))
            tail = f.read(dtype="float32")
        if len(tail) == 0:
            return "unreadable", facts
        return None, facts
    except Exception as err:  # soundfile raises several types; never crash on one file
        return "unreadable", {"error": str(err)[:200]}


def split_of(rel: str, val_fraction: float) -> str:
    """Deterministic train/val assignment from the SHA-1 of a relative path."""
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 2**32
    return "val" if h < val_fraction else "train"


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare(out: Path, packages: list[str], val_fraction: float, max_tracks: int | None) -> dict:
    """Fetch, unpack, scan, filter and split; write the lists and manifest."""
    out = out.resolve()
    fetcher = AptFetcher()
    per_pkg: dict[str, list[dict]] = {}
    skipped: dict[str, list[str]] = defaultdict(list)  # reason -> relative paths
    debs_info = {}
    for pkg in packages:
        deb = fetcher.fetch(pkg, out / "debs")
        debs_info[pkg] = {"deb": deb.name, "deb_bytes": deb.stat().st_size}
        log(f"[{pkg}] {deb.name} ({deb.stat().st_size / 1e6:.0f} MB)")
        unpack(deb, out / "root" / pkg)
        kept = []
        for path in find_audio(out / "root" / pkg, out / "extracted" / pkg):
            rel = path.relative_to(out).as_posix()
            reason, facts = probe(path)
            if reason:
                skipped[reason].append(rel)
                continue
            split = "val" if rel == DEMO_REL else split_of(rel, val_fraction)
            kept.append({"path": str(path), "relpath": rel, "package": pkg,
                         "licence": LICENCES.get(pkg, "see copyright file"),
                         "copyright_file": f"root/{pkg}/usr/share/doc/{pkg}/copyright",
                         **facts, "split": split})
        per_pkg[pkg] = kept
        log(f"  {len(kept)} usable tracks")

    # --max-tracks: take tracks round-robin over packages so a small run still
    # covers every package; each kept track keeps its hash-based split.
    interleaved = [t for group in zip_longest(*per_pkg.values()) for t in group if t]
    tracks = sorted(interleaved[:max_tracks], key=lambda t: t["relpath"])

    for split in ("train", "val"):
        paths = [t["path"] for t in tracks if t["split"] == split]
        write_text(out / f"{split}.txt", "".join(p + "\n" for p in paths))
    manifest = {"source": "Debian packages, see shared/DATA.md section 1",
                "min_seconds": MIN_SECONDS, "val_fraction": val_fraction,
                "max_tracks": max_tracks, "packages": debs_info,
                "skipped": {k: len(v) for k, v in sorted(skipped.items())},
                "skipped_files": {k: sorted(v) for k, v in sorted(skipped.items())},
                "tracks": tracks}
    write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    if tracks and not any(t["split"] == "val" for t in tracks):
        log("warning: the validation split is empty (too few tracks or --val-fraction 0)")
    summarize(tracks, skipped, out)
    return manifest


def summarize(tracks: list[dict], skipped: dict[str, list[str]], out: Path) -> None:
    """Print tracks and minutes per split and per package."""
    table: dict = defaultdict(lambda: [0, 0.0])
    for t in tracks:
        for key in ((t["package"], t["split"]), ("ALL", t["split"])):
            table[key][0] += 1
            table[key][1] += t["duration_s"] / 60
    log(f"\n{'package':<22}{'train':>16}{'val':>16}")
    for pkg in sorted({t["package"] for t in tracks}) + ["ALL"]:
        cells = [f"{n:3d} / {m:6.1f} min" for n, m in (table[(pkg, "train")], table[(pkg, "val")])]
        log(f"{pkg:<22}{cells[0]:>16}{cells[1]:>16}")
    log("skipped: " + (", ".join(f"{k} {len(v)}" for k, v in sorted(skipped.items())) or "none"))
    log(f"wrote {out / 'train.txt'}, {out / 'val.txt'}, {out / 'manifest.json'}")


def make_demo_clip(out: Path, dest: Path) -> None:
    """Cut the fixed demo passage and save it as 44.1 kHz stereo 16-bit FLAC.

    The cut gets short fades; the float decode is converted to 16 bit by
    rounding with clipping (no dither), so the result is reproducible given
    the same libvorbis decoder.
    """
    out = out.resolve()
    deb = AptFetcher().fetch(DEMO_PACKAGE, out / "debs")
    unpack(deb, out / "root" / DEMO_PACKAGE)
    src = out / "root" / DEMO_PACKAGE / DEMO_FILE
    info = sf.info(str(src))
    if info.samplerate != DEMO_RATE or info.channels != 2:
        raise RuntimeError(f"{src}: expected 44.1 kHz stereo, got {info}")
    start, stop = round(DEMO_START_S * DEMO_RATE), round(DEMO_END_S * DEMO_RATE)
    audio, _ = sf.read(str(src), start=start, stop=stop, dtype="float64", always_2d=True)
    fade = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, round(DEMO_FADE_S * DEMO_RATE)))
    audio[: len(fade)] *= fade[:, None]
    audio[-len(fade):] *= fade[::-1, None]
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dest), pcm, DEMO_RATE, format="FLAC", subtype="PCM_16",
             compression_level=1.0)
    digest = hashlib.md5(pcm.tobytes()).hexdigest()
    log(f"demo clip: {src.name} {DEMO_START_S}-{DEMO_END_S} s -> {dest} "
        f"({dest.stat().st_size / 1e3:.0f} kB, PCM md5 {digest})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="data directory (outside the repo)")
    ap.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                    help="comma-separated Debian packages (default: %(default)s)")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--max-tracks", type=int, default=None,
                    help="keep at most N tracks in total (round-robin over packages)")
    ap.add_argument("--demo-clip", type=Path, default=None,
                    help="also (re)write the demo clip to this path")
    args = ap.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        ap.error("--val-fraction must be in [0, 1)")
    packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    try:
        prepare(args.out, packages, args.val_fraction, args.max_tracks)
        if args.demo_clip:
            make_demo_clip(args.out, args.demo_clip)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
