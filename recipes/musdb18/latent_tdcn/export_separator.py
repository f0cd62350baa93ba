#!/usr/bin/env python3
"""Ship a trained latent separator: exp/TAG/MODEL/best.safetensors -> one separator file for `walloc-audio separate`.

    python export_separator.py --conf exp/TAG/conf.yml --exp exp/TAG [--model latent] [--weights best|last]
        [--out ../../../walloc_audio/models/separators/NAME.safetensors]
The file carries the network's config and the codec's name and sha256 (it refuses other codecs),
plus the run's training figures and validation SDR, and, once stage 3 has run, its test scores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from safetensors.torch import load_file

from separation.separator import DEFAULT_SEPARATOR, PACKAGE_SEPARATORS, save_separator
from separation.train import make_network
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--model", default="latent", choices=["latent", "latent-float"])
    ap.add_argument("--weights", default="best", choices=["best", "last"])
    ap.add_argument("--out", type=Path, default=PACKAGE_SEPARATORS / f"{DEFAULT_SEPARATOR}.safetensors")
    args = ap.parse_args()
    conf = yaml.safe_load(args.conf.read_text())
    codec = load_model(conf["codec"]["model"])
    run = args.exp / args.model
    net = make_network("latent", conf, codec)
    net.load_state_dict(load_file(str(run / f"{args.weights}.safetensors")))
    figures = json.loads((run / "figures.json").read_text())
    curve = json.loads((run / "curve.json").read_text())
    scores = run / "scores.json"
    extra = {"trained_on": f".wlc latents ({args.model})", "weights": args.weights,
             "training": {k: figures.get(k) for k in ("steps", "examples", "train_seconds", "clock", "threads",
                                                      "examples_per_second", "best_val_sdr", "init")},
             "weights_at": _weights_at(curve, args.weights, figures.get("init") or {}),
             "val_sdr_last": curve[-1]["val_sdr"] if curve else None,
             "test": json.loads(scores.read_text())["aggregate"] if scores.exists() else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_separator(args.out, net, codec, extra)
    print(f"{args.out}: {sum(p.numel() for p in net.parameters()):,} parameters, {args.out.stat().st_size / 1e6:.2f} MB")


def _weights_at(curve: list, which: str, init: dict) -> dict | None:
    """Training seconds and steps of the validation the exported weights were saved at, in this run and in
    total (with what an ``--init`` separator file had been trained for before)."""
    rows = [r for r in curve if r.get("val_sdr") is not None]
    if not rows:
        return None
    row = rows[-1] if which == "last" else max(rows, key=lambda r: r["val_sdr"])
    return {"train_seconds": row["train_seconds"], "steps": row["steps"], "val_sdr": row["val_sdr"],
            "total_train_seconds": row["train_seconds"] + (init.get("prior_train_seconds") or 0.0),
            "total_steps": row["steps"] + (init.get("prior_steps") or 0)}


if __name__ == "__main__":
    main()
