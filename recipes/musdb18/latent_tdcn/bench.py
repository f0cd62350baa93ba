#!/usr/bin/env python3
"""Training throughput of every model, side by side in one process (separation.bench).

    python bench.py --conf exp/TAG/conf.yml --exp exp/TAG [--models latent,latent-float,umx] [--threads 1]
    python bench.py --conf conf.yml --synthetic --device cuda      # compute only, no data needed

Prints examples/s per model (median of the rounds) against the first; --json writes them.
``latent`` against ``latent-float`` is what reading .wlc shards costs against the float16 cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from resolve_conf import apply_sets
from separation.bench import training_throughput
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, help="experiment folder holding cache/train (not needed with --synthetic)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--models", default="latent,latent-float,umx",
                    help="comma-separated kinds (latent, latent-float, umx, waveform)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    conf = apply_sets(yaml.safe_load(args.conf.read_text()), args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = args.models.split(",")
    if args.exp is None and not args.synthetic:
        ap.error("--exp (with stage 1's wlc/ and cache/) is needed unless --synthetic")
    model = load_model(conf["codec"]["model"])
    out = training_throughput(conf, kinds, exp=args.exp, model=model, steps=args.steps, rounds=args.rounds,
                              synthetic=args.synthetic, device=args.device)
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {conf['training']['batch_size']}, "
          f"{conf['training']['segment_seconds']} s, {'synthetic' if args.synthetic else 'real'} data")
    base = out[kinds[0]]["examples_per_second"]
    for kind in kinds:
        r = out[kind]
        rounds = " ".join(f"{v:.2f}" for v in r["rounds"])
        print(f"{kind:13s} {r['examples_per_second']:8.2f} examples/s  {base / r['examples_per_second']:5.2f}x "
              f"slower than {kinds[0]}  (rounds {rounds}; {r['parameters']:,} params)")
    if args.json:
        args.json.write_text(json.dumps({"conf": conf, "device": args.device, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
