#!/usr/bin/env python3
"""Build a MUSDB18-HQ-style stem set from General MIDI songs rendered with fluidsynth.

    prepare_stems.py --root DIR [--max-seconds 60] [--test-max-seconds S] [--max-tracks N] [--workers 2]

Fetches Debian packages (freedoom -> train; openttd-openmsx and
planetblupi-music-midi -> test; FluidR3 GM and AVL drum-kit sound fonts) into
DIR/cache, renders drums/bass/other/vocals per song and writes
DIR/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav, DIR/manifest.json
and DIR/setup.yaml, then opens the result with musdb to prove it reads.
See separation/stems.py for the method and shared/DATA.md section 2.

Synthesised stems are cleaner than recordings: separation scores on this
set are not comparable with published MUSDB18 numbers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from separation.stems import build_stem_set, check_musdb
from walloc_audio.errors import WallocError


def print_summary(summary: dict) -> None:
    print(f"\nstem set in {summary['root']}")
    for split, counts in summary["splits"].items():
        print(f"  {split:5s}: {counts['tracks']:3d} tracks, {counts['minutes']:6.1f} min")
    print(f"  built in {summary['seconds']:.0f} s ({summary['reused']} tracks reused), "
          f"{summary['bytes'] / 1e9:.2f} GB of WAV")
    print("  vocals from: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["vocals_rules"].items())))
    for reason, names in sorted(summary["skipped"].items()):
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        print(f"  skipped, {reason}: {shown}")
    silent = summary["silent_stems"]
    print(f"  tracks with a silent stem (museval cannot score it): {len(silent)}")
    for name, stems in sorted(silent.items()):
        print(f"    {name}: {', '.join(stems)}")
    for note in summary["notes"]:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="output folder (outside the repository)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="cut every song here (default: 60)")
    ap.add_argument("--test-max-seconds", type=float, default=None,
                    help="cut test songs here instead (default: --max-seconds)")
    ap.add_argument("--max-tracks", type=int, default=None, help="at most N tracks per split")
    ap.add_argument("--workers", type=int, default=2, help="songs rendered in parallel (default: 2)")
    ap.add_argument("--cache", type=Path, default=None, help="package cache (default: ROOT/cache)")
    ap.add_argument("--gm-drums", action="store_true", help="render drums with the GM font only")
    ap.add_argument("-f", "--force", action="store_true", help="re-render tracks a previous run finished")
    ap.add_argument("--no-check", action="store_true", help="skip opening the result with musdb")
    args = ap.parse_args(argv)
    if args.max_seconds <= 0 or (args.test_max_seconds is not None and args.test_max_seconds <= 0) or (args.max_tracks is not None and args.max_tracks < 0) or args.workers < 1:
        ap.error("--max-seconds and --test-max-seconds must be > 0, --max-tracks >= 0, --workers >= 1")
    try:
        summary = build_stem_set(args.root, max_seconds=args.max_seconds, test_max_seconds=args.test_max_seconds, max_tracks=args.max_tracks,
                                 workers=args.workers, cache=args.cache, drum_kits=not args.gm_drums,
                                 force=args.force)
    except WallocError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print_summary(summary)
    if not args.no_check:
        try:
            for subset, info in check_musdb(args.root).items():
                print(f"  musdb.DB(is_wav=True, subsets={subset!r}): {info}")
        except ImportError:
            print("  musdb not installed: check skipped (pip install '.[separation]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
