#!/usr/bin/env python3
"""Measure every installed model's card the same way: real packets on the held-out tracks.

kbps (container framing included), bits/latent, SNR, PSNR (paper convention) and ViSQOL (audio
mode, the middle ``--visqol-seconds`` of each excerpt) of the first
``--seconds`` of each validation track, encoded as ``walloc-audio encode`` writes files (the model's
default bitstream and quality, the noise fill on version 2) and decoded back (``walloc_audio.tools.training.measure``, the function ``walloc-audio train`` uses at export).
Writes ``validation`` into each ``NAME.json``; weights and their hashes are untouched.

    python recipes/codec/measure_models.py --data $WALLOC_DATA/music
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from walloc_audio.tools.training.linear_fit import iter_clips, read_list
from walloc_audio.pretrained import PACKAGE_MODELS, list_models, load_model
from walloc_audio.threads import set_threads
from walloc_audio.tools.training.export import measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with val.txt (recipes/codec/prepare_data.py)")
    ap.add_argument("--models", default=None, help="comma-separated (default: every installed model)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--visqol-seconds", type=float, default=10.0, help="ViSQOL excerpt per track (0: no ViSQOL)")
    ap.add_argument("--jobs", type=int, default=2, help="ViSQOL worker processes")
    ap.add_argument("--folder", type=Path, default=PACKAGE_MODELS, help="registry folder to write into")
    args = ap.parse_args()
    set_threads(2)
    names = args.models.split(",") if args.models else [m["name"] for m in list_models()]
    val = read_list(args.data / "val.txt")
    for name in names:
        t0 = time.time()
        model = load_model(name, folder=args.folder)
        c = model.config
        tracks = [x for _, x in iter_clips(val, c.sample_rate, c.channels, max_seconds=args.seconds)]
        record = measure(model, tracks, args.seconds, args.visqol_seconds or None, args.jobs)
        record["method"] = (f"recipes/codec/measure_models.py: first {args.seconds:g} s of each of {len(tracks)} "
                            "held-out tracks, real packets (encode -> bytes -> decode), framing counted"
                            + ("; noise fill on, as encode writes files" if record.get("fill") else ""))
        meta = args.folder / f"{name}.json"
        info = json.loads(meta.read_text())
        info["validation"] = record
        meta.write_text(json.dumps(info, indent=2) + "\n")
        print(f"{name}: {record} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
