"""Where a trained model's gain comes from: each part switched off, measured through the bitstream.

    WALLOC_DATA=... python recipes/codec/ablation.py exp/codec/stereo-5x [--seconds 60]

For the run's exported model, on the validation tracks (first ``--seconds`` of
each), through the real encoder/decoder path (kbps include packet framing):

* ``full``: the shipped model;
* ``linear decoder + context``: the same encoder and step, the nonlinear part
  of the decoder switched off, context entropy model with centroid
  reconstruction (what the model would be without the trained decoder);
* ``linear decoder + static``: the same encoder and step with per-channel static
  tables and mid-point reconstruction (the codec core's linear codec at this step).

Prints a table and writes ``ablation.json`` into the run folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from walloc_audio.entropy import ContextCoder, EntropyCoder
from walloc_audio.pretrained import load_model
from walloc_audio.tools.training.config import TrainConfig
from walloc_audio.tools.training.data import list_tracks, load_tracks
from walloc_audio.tools.training.export import fit_entropy, measure


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a `walloc-audio train` output folder")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    cfg = TrainConfig.load(str(args.run / "config.yaml"))
    model = load_model(cfg.name, folder=args.run / "export")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    val = load_tracks(list_tracks(cfg.val), cfg, log)
    train = load_tracks(list_tracks(cfg.train), replace(cfg, max_track_seconds=cfg.entropy_seconds), log)

    linear = copy.deepcopy(model.codec)
    if linear.decoder.net is not None:
        with torch.no_grad():
            linear.decoder.net[-1].weight.zero_()
            linear.decoder.net[-1].bias.zero_()
    ctx = fit_entropy(linear, train, cfg, kind="context", centroids=True)["context"]
    static = fit_entropy(linear, train, cfg, kind="static")["probabilities"]
    max_symbol = model.codec.bottleneck.max_symbol
    variants = {
        "full": model,
        "linear decoder + context": replace(model, codec=linear, coder=ContextCoder(*ctx, max_symbol)),
        "linear decoder + static": replace(model, codec=linear, coder=EntropyCoder(static)),
    }
    rows = {}
    for name, m in variants.items():
        rows[name] = measure(m, val, args.seconds)
        print(f"{name:28s} {rows[name]['kbps']:7.2f} kbps  SNR {rows[name]['snr_db']:6.2f} dB  "
              f"PSNR(paper) {rows[name]['psnr_paper_db']:6.2f} dB  {rows[name]['bits_per_latent']:.3f} bits/latent",
              flush=True)
    (args.run / "ablation.json").write_text(json.dumps({"model": cfg.name, "seconds": args.seconds,
                                                        "variants": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
