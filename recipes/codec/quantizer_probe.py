#!/usr/bin/env python3
"""Where the version-2 rate goes: the rounding dead zone and the level tracker's release.

    python recipes/codec/quantizer_probe.py --data $WALLOC_DATA/music [--model stereo-5x-linear]
        [--deadzones 0,0.1,0.2,0.3] [--releases 0.5,0] [--contexts 3,5]

Float latents of the first ``--train-seconds`` of every training track refit the entropy model
(:func:`~walloc_audio.tools.training.fit_adaptive.fit_adaptive`) once per dead zone; the first
``--val-seconds`` of every validation track are then coded at Q = 2..8 in 64-frame packets
(ideal code lengths, side information included, framing not). Quality is the mean over tracks of
each track's latent SNR (what the paper's per-clip PSNR averages, up to each clip's constant).
Each variant's kbps is divided by the dead-zone-0 fit's at equal quality, read off both curves
at five points; a release sets the tracker's fall in dB/s (the shipped 2 dB/s is the reference).

``--contexts`` asks what a richer entropy model could still find in the same symbols, at each
given quality: non-parametric histograms per cell, fitted on the training clips and scored as
cross-entropy (bits per latent) on the validation clips, for the shipped cell (channel, band
scale, context bucket) and for that cell refined by the previous frame's signed symbol (clipped
to -2..2) and the one before (-1..1), beside the shipped Laplace's ideal code length.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from walloc_audio.adaptive import bands_for
from walloc_audio.pretrained import load_model
from walloc_audio.ratecontrol import LevelTracker
from walloc_audio.tools.training.fit_adaptive import (fit_adaptive, float_latents, ideal_bits, packet_exponents,
                                                     packet_symbols)
from walloc_audio.tools.training.linear_fit import iter_clips, read_list

QUALITIES = (2, 3, 4, 5, 6, 7, 8)
FRAMES = 64


def latents(model, paths: list[str], seconds: float) -> list[np.ndarray]:
    cfg = model.config
    return float_latents(model.codec, (x for _, x in iter_clips(paths, cfg.sample_rate, cfg.channels,
                                                                    max_seconds=seconds)))


def curve(coder, val: list[np.ndarray], frame_seconds: float, release: float | None = None) -> np.ndarray:
    """``[(kbps, mean latent SNR dB)]`` at each quality."""
    points = []
    for q in QUALITIES:
        bits = seconds = 0.0
        snrs = []
        for y in val:
            b, err, _ = ideal_bits(coder, y, FRAMES, q, frame_seconds, release)
            kept = y[:, : (y.shape[1] // FRAMES) * FRAMES].astype(np.float64)
            bits += b
            seconds += kept.shape[1] * frame_seconds
            snrs.append(10 * np.log10((kept**2).sum() / max(err, 1e-20)))
        points.append((bits / seconds / 1000, float(np.mean(snrs))))
    return np.array(points)


def ratio(c: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kbps of ``c`` over ``base`` at five qualities both curves cover."""
    grid = np.linspace(max(c[:, 1].min(), base[:, 1].min()), min(c[:, 1].max(), base[:, 1].max()), 5)
    return grid, np.interp(grid, c[:, 1], c[:, 0]) / np.interp(grid, base[:, 1], base[:, 0])


ALPHABET = 24  # |symbol| clipped here in the context histograms


def cells(coder, clips: list[np.ndarray], quality: float, frame_seconds: float) -> np.ndarray:
    """One row per coded symbol: channel, band scale, bucket, previous two symbols (clipped), symbol."""
    L = coder.channels
    bands = bands_for(FRAMES, L)
    edges = coder.edges(bands)
    rows = []
    for y in clips:
        e = packet_exponents(y, FRAMES, quality, LevelTracker(coder.reference_level, FRAMES * frame_seconds))
        if not e.size:
            continue
        q, _, s, b = packet_symbols(y, e, FRAMES, bands, coder.delta, coder.knee, coder.max_symbol, coder.deadzone)
        scale = np.broadcast_to(np.repeat(s.T, np.diff(edges), axis=0)[:, :, None], q.shape)
        prev1 = np.concatenate([np.zeros_like(q[:, :, :1]), q[:, :, :-1]], axis=2)  # within the packet
        prev2 = np.concatenate([np.zeros_like(q[:, :, :2]), q[:, :, :-2]], axis=2)
        channel = np.broadcast_to(np.arange(L)[:, None, None], q.shape)
        coded = scale > 0  # bands of scale 0 are not coded
        rows.append(np.stack([channel[coded], scale[coded], b[coded], np.clip(prev1[coded], -2, 2) + 2,
                              np.clip(prev2[coded], -1, 1) + 1,
                              np.clip(q[coded], -ALPHABET, ALPHABET) + ALPHABET], axis=1))
    return np.concatenate(rows).astype(np.int64)


def cross_entropy(train: np.ndarray, val: np.ndarray, keys: list[int]) -> float:
    """Bits of ``val``'s symbols under histograms of ``train`` per cell ``keys`` (add-0.05 smoothing)."""
    dims = [int(max(train[:, k].max(), val[:, k].max())) + 1 for k in keys]
    cell_t = np.ravel_multi_index(tuple(train[:, k] for k in keys), dims)
    cell_v = np.ravel_multi_index(tuple(val[:, k] for k in keys), dims)
    used, cell_t = np.unique(cell_t, return_inverse=True)
    hist = np.full((used.size + 1, 2 * ALPHABET + 1), 0.05)  # the last row: cells never seen in training
    np.add.at(hist, (cell_t, train[:, 5]), 1.0)
    prob = hist / hist.sum(axis=1, keepdims=True)
    row = np.searchsorted(used, cell_v)
    seen = (row < used.size) & (used[np.minimum(row, used.size - 1)] == cell_v)
    return float(-np.log2(prob[np.where(seen, row, used.size), val[:, 5]]).sum())


def context_probe(coder, train: list[np.ndarray], val: list[np.ndarray], frame_seconds: float,
                  qualities: list[float]) -> None:
    latents = sum((y.shape[1] // FRAMES) * FRAMES * y.shape[0] for y in val)
    for q in qualities:
        t, v = cells(coder, train, q, frame_seconds), cells(coder, val, q, frame_seconds)
        laplace = sum(ideal_bits(coder, y, FRAMES, q, frame_seconds)[0] for y in val) / latents
        cell = cross_entropy(t, v, [0, 1, 2]) / latents
        one = cross_entropy(t, v, [0, 1, 2, 3]) / latents
        two = cross_entropy(t, v, [0, 1, 2, 3, 4]) / latents
        print(f"Q{q:g}: bits/latent  Laplace (shipped, side information included) {laplace:.3f}  "
              f"histogram per cell {cell:.3f}  + previous symbol {one:.3f} ({one / cell:.3f}x)  "
              f"+ previous two {two:.3f} ({two / cell:.3f}x)", flush=True)


def probe_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every probe of this folder takes: the data, the model, the seconds of each clip."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with train.txt and val.txt")
    ap.add_argument("--model", default="stereo-5x-linear")
    ap.add_argument("--train-seconds", type=float, default=15.0)
    ap.add_argument("--val-seconds", type=float, default=30.0)
    return ap


def probe_latents(args: argparse.Namespace):
    """``model, frame seconds, training latents, validation latents`` (one torch thread)."""
    torch.set_num_threads(1)
    model = load_model(args.model)
    train = latents(model, read_list(args.data / "train.txt"), args.train_seconds)
    val = latents(model, read_list(args.data / "val.txt"), args.val_seconds)
    print(f"{args.model}: {len(train)} training clips of {args.train_seconds:g} s, {len(val)} validation clips "
          f"of {args.val_seconds:g} s", flush=True)
    return model, model.config.frame / model.config.sample_rate, train, val


def main() -> None:
    ap = probe_arguments(__doc__)
    ap.add_argument("--deadzones", default="0,0.1,0.2,0.3")
    ap.add_argument("--releases", default="0.5,0", help="level tracker releases in dB/s (shipped: 2)")
    ap.add_argument("--contexts", default="", help="qualities for the context probe, e.g. 3,5 (default: none)")
    args = ap.parse_args()
    model, fs, train, val = probe_latents(args)
    ad = model.adaptive
    if args.contexts:
        context_probe(ad, train, val, fs, [float(v) for v in args.contexts.split(",")])
    if not args.deadzones.strip() and not args.releases.strip():
        return
    variants = {}
    for dz in sorted({0.0, *(float(v) for v in args.deadzones.split(",") if v.strip())}):
        coder = fit_adaptive(train, delta=ad.delta, knee=ad.knee, max_symbol=ad.max_symbol, frame_seconds=fs,
                             centroids=model.codec.decoder.net is None, deadzone=dz)
        if dz == 0.0:
            base_coder = coder
        variants[f"dead zone {dz:g}"] = curve(coder, val, fs)
    for rel in [float(v) for v in args.releases.split(",") if v.strip()]:
        variants[f"release {rel:g} dB/s"] = curve(base_coder, val, fs, rel)
    base = variants["dead zone 0"]
    print(f"{'variant':20s} kbps at Q={QUALITIES[0]}..{QUALITIES[-1]}  /  kbps ÷ dead zone 0 at equal latent SNR")
    for name, c in variants.items():
        grid, r = ratio(c, base)
        print(f"{name:20s} " + " ".join(f"{k:5.1f}" for k in c[:, 0]) + "  /  "
              + " ".join(f"{v:.3f}@{g:.1f}dB" for g, v in zip(grid, r)))


if __name__ == "__main__":
    main()
