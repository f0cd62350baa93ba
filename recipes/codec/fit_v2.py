#!/usr/bin/env python3
"""Fit the version-2 (forward-adaptive) entropy model of installed models, without retraining them.

For each model: float latents of the first ``--train-seconds`` of every training track
(``train.txt`` of ``prepare_data.py``) fit the tables; the rate curve (kbps at Q = 0..10) is
measured on the validation tracks. Writes ``NAME.v2.safetensors`` next to the model and records
it in ``NAME.json``; the weights file (and so every version-1 file's model hash) is untouched.

    python recipes/codec/fit_v2.py --data $WALLOC_DATA/music --models stereo-5x,stereo-20x
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from walloc_audio.tools.training.fit_adaptive import fit_codec_v2
from walloc_audio.tools.training.linear_fit import iter_clips, read_list
from walloc_audio.pretrained import PACKAGE_MODELS, list_models, load_model, save_adaptive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with train.txt and val.txt")
    ap.add_argument("--models", default=None, help="comma-separated (default: every installed model)")
    ap.add_argument("--train-seconds", type=float, default=30.0)
    ap.add_argument("--val-seconds", type=float, default=60.0)
    ap.add_argument("--folder", type=Path, default=PACKAGE_MODELS, help="registry folder to write into")
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = args.models.split(",") if args.models else [m["name"] for m in list_models()]
    train, val = read_list(args.data / "train.txt"), read_list(args.data / "val.txt")
    for name in names:
        t0 = time.time()
        model = load_model(name, folder=args.folder)
        c = model.config
        tr = [x for _, x in iter_clips(train, c.sample_rate, c.channels, max_seconds=args.train_seconds)]
        va = [x for _, x in iter_clips(val, c.sample_rate, c.channels, max_seconds=args.val_seconds)]
        coder, record = fit_codec_v2(model.codec, tr, va, centroids=model.codec.decoder.net is None, log=print)
        info = save_adaptive(args.folder, name, coder, record)
        print(f"{name}: v2 entropy model {info['v2']['bytes']} bytes in {time.time() - t0:.0f} s; "
              f"rate curve (64-frame packets) {info['v2']['rate_curves']['64']}", flush=True)


if __name__ == "__main__":
    main()
