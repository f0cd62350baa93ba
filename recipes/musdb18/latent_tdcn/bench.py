#!/usr/bin/env python3
"""Training throughput, latent vs waveform, side by side in one process (separation.bench).

    python bench.py --conf exp/TAG/conf.yml --exp exp/TAG [--set waveform.stride=256 ...]
    python bench.py --conf conf.yml --synthetic --device cuda      # compute only, no data needed

Prints examples/s per model (median of the rounds) and their ratio; --json writes them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from resolve_conf import apply_sets
from separation.bench import training_throughput
from separation.cache import open_cache
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, help="experiment folder holding cache/train (not needed with --synthetic)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--models", default="latent,waveform")
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
    model = load_model(conf["codec"]["model"])
    cache = None
    if "latent" in kinds and not args.synthetic:
        if args.exp is None:
            ap.error("--exp (with cache/train from stage 1) is needed unless --synthetic")
        cache = open_cache(args.exp / "cache" / "train", model)
    out = training_throughput(conf, kinds, model=model, cache=cache, data_root=conf["data"]["root"],
                              steps=args.steps, rounds=args.rounds, synthetic=args.synthetic, device=args.device)
    wf = conf["waveform"]
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {conf['training']['batch_size']}, "
          f"{conf['training']['segment_seconds']} s, {'synthetic' if args.synthetic else 'real'} data; "
          f"waveform L={wf['kernel_size']} stride={wf['stride']}")
    for kind in kinds:
        r = out[kind]
        rounds = " ".join(f"{v:.2f}" for v in r["rounds"])
        print(f"{kind:9s} {r['examples_per_second']:8.2f} examples/s  (rounds {rounds}; {r['parameters']:,} params)")
    if "ratio" in out:
        print(f"latent / waveform: {out['ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"conf": conf, "device": args.device, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
