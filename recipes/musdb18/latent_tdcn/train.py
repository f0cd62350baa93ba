#!/usr/bin/env python3
"""Stage 2: train one model of the comparison (``--model latent`` or ``--model waveform``).

    python train.py --conf exp/TAG/conf.yml --exp exp/TAG --model latent [--devices 1 --strategy ddp ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from separation.cache import open_cache
from separation.train import train
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--model", choices=["latent", "waveform"], required=True)
    ap.add_argument("--devices", default="auto")
    ap.add_argument("--num-nodes", type=int, default=1)
    ap.add_argument("--strategy", default="auto")
    ap.add_argument("--accelerator", default="auto")
    args = ap.parse_args()
    conf = yaml.safe_load(args.conf.read_text())
    out = args.exp / args.model
    out.mkdir(parents=True, exist_ok=True)
    model = cache = None
    if args.model == "latent":
        model = load_model(conf["codec"]["model"])
        cache = open_cache(args.exp / "cache" / "train", model)
    figures = train(args.model, conf, out, model=model, cache=cache, data_root=conf["data"]["root"],
                    trainer_kwargs={"devices": args.devices, "num_nodes": args.num_nodes, "strategy": args.strategy,
                                    "accelerator": args.accelerator})
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
