#!/usr/bin/env python3
"""Fit a linear WaLLoC model (PCA of WPT coefficients) on real music and register it.

    python recipes/codec/prepare_data.py --out DATA          # Debian music, split by track
    python recipes/codec/fit_linear.py --data DATA --name stereo-5x-linear --latent-dim 108

Writes NAME.safetensors + NAME.json into --out (default: the package's models
folder), with validation figures measured on the held-out tracks.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from walloc_audio.tools.training import linear_fit as lf
from walloc_audio.entropy import EntropyCoder, fit_probabilities
from walloc_audio.config import CodecConfig
from walloc_audio.pretrained import PACKAGE_MODELS, save_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with train.txt and val.txt")
    ap.add_argument("--name", required=True)
    ap.add_argument("--J", type=int, default=8)
    ap.add_argument("--latent-dim", type=int, default=108)
    ap.add_argument("--latent-bits", type=int, default=12)
    ap.add_argument("--knee", type=float, default=512.0)
    ap.add_argument("--target-kbps", type=float, default=48.0, help="pick the step whose rate is closest")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="per training track")
    ap.add_argument("--min-step", type=float, default=5e-4)
    ap.add_argument("--max-step", type=float, default=2e-2)
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--emphasis", type=float, default=0.0,
                    help="PCA of coefficients weighted max(1, f / --emphasis-hz) ** E (0: plain PCA)")
    ap.add_argument("--emphasis-hz", type=float, default=1000.0)
    ap.add_argument("--out", type=Path, default=PACKAGE_MODELS)
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    cfg = CodecConfig(J=args.J, latent_dim=args.latent_dim, latent_bits=args.latent_bits, compand_knee=args.knee)
    skipped: dict[str, str] = {}
    train = list(lf.iter_clips(lf.read_list(args.data / "train.txt"), cfg.sample_rate, cfg.channels,
                               args.max_seconds, on_skip=skipped.__setitem__))
    val = list(lf.iter_clips(lf.read_list(args.data / "val.txt"), cfg.sample_rate, cfg.channels,
                             None, on_skip=skipped.__setitem__))
    minutes = lambda clips: sum(x.shape[1] for _, x in clips) / cfg.sample_rate / 60  # noqa: E731
    print(f"train {len(train)} tracks {minutes(train):.1f} min, val {len(val)} tracks {minutes(val):.1f} min, "
          f"skipped {len(skipped)}")
    cov, frames = lf.coefficient_covariance(train, cfg.J, cfg.channels)
    weights = lf.emphasis_weights(cfg, args.emphasis, args.emphasis_hz) if args.emphasis else None
    evals = np.sort(np.linalg.eigvalsh(cov))[::-1]
    kept = evals[: cfg.latent_dim].sum() / evals.sum()
    print(f"PCA on {frames} frames: top {cfg.latent_dim} components keep {100 * kept:.3f}% of the energy; "
          f"latent std from {evals[0] ** 0.5:.3g} (first) to {evals[cfg.latent_dim - 1] ** 0.5:.3g} (last kept)")

    # Choose the quantizer step on the training set (even tracks fit, odd tracks measure).
    fit_part, probe_part = train[::4], train[1::8]
    best = None
    for step in np.geomspace(args.min_step, args.max_step, args.steps):
        codec = lf.linear_codec(cfg, cov, float(step), weights)
        coder = EntropyCoder(fit_probabilities(lf.symbol_counts(codec, fit_part)))
        m = lf.evaluate(codec, coder, probe_part[:8])
        print(f"  step {step:.2e}: {m['kbps']:6.1f} kbps  SNR {m['snr_db']:5.1f} dB  PSNR(paper) {m['psnr_paper_db']:5.1f} dB")
        if best is None or abs(math.log(m["kbps"] / args.target_kbps)) < abs(math.log(best[1] / args.target_kbps)):
            best = (float(step), m["kbps"])
    step = best[0]
    codec = lf.linear_codec(cfg, cov, step, weights)
    probs = fit_probabilities(lf.symbol_counts(codec, train))
    margin = lf.saturation_margin(codec)
    print(f"worst-case full-scale latent / quantizer range: {margin:.3f} (< 1: nothing can saturate)")
    if margin >= 1:
        print("WARNING: loud input can saturate the quantizer; lower --knee or raise --latent-bits")
    metrics = lf.evaluate(codec, EntropyCoder(probs), val)
    print(f"chosen step {step:.3e}; validation ({len(val)} held-out tracks, {metrics['seconds'] / 60:.1f} min): "
          f"{metrics['kbps']:.1f} kbps, {metrics['bits_per_latent']:.3f} bits/latent, SNR {metrics['snr_db']:.2f} dB, "
          f"PSNR(paper) {metrics['psnr_paper_db']:.2f} dB")
    info = save_model(
        args.out, args.name, codec, probs,
        description=f"Linear WaLLoC (PCA of CDF 9/7 WPT coefficients), J={cfg.J}, {cfg.latent_dim} latents, "
                    f"fitted on {len(train)} Debian music tracks",
        extra={
            "kind": "linear",
            "training": {"tracks": len(train), "minutes": round(minutes(train), 1), "step": step,
                         "saturation_margin": round(margin, 4),
                         "energy_kept": float(kept),
                         **({"emphasis": args.emphasis, "emphasis_hz": args.emphasis_hz} if args.emphasis else {}),
                         "recipe": "recipes/codec/fit_linear.py",
                         "seconds": round(time.time() - t0, 1)},
            "validation": {"tracks": len(val), **{k: round(v, 3) for k, v in metrics.items()}},
        },
    )
    print(f"wrote {args.out / args.name}.safetensors ({info['weights_bytes'] / 1e6:.2f} MB, sha256 {info['sha256'][:16]}...)")


if __name__ == "__main__":
    main()
