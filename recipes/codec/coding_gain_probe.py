#!/usr/bin/env python3
"""What is left to gain in coding the latents: a temporal transform, same-frame contexts, RDO and trellis quantization.

    python recipes/codec/coding_gain_probe.py --data $WALLOC_DATA/music [--model stereo-5x-linear]
        [--blocks 4,8,16] [--same-frame 3,5,7] [--quantizers 3,5,7]

Three questions about the version-2 coder of issue 10 (which asks for 0.75x the reference
scheme's rate at equal PSNR), each answered on float latents of the training tracks (fit) and of
the validation tracks (score), with 64-frame packets and the shipped level tracker:

``--blocks``: does a block DCT along time (each latent channel's N consecutive frames, orthonormal,
inside a packet) compact the latents? The blocks' coefficients become N times as many channels at
1/N the frame rate, the shipped entropy model (:func:`~walloc_audio.tools.training.fit_adaptive.fit_adaptive`,
Laplace per channel, band scale and context) is refitted on them, and the ideal code length at
Q = 2..8 is compared with the plain frames' at equal latent SNR (the DCT is orthonormal, so the
error is the same in either domain).

``--same-frame``: do the magnitudes of the neighbouring channels of the *same* frame add anything
to the shipped context (which sees earlier frames only, so a frame decodes in one vectorised call)?
Non-parametric histograms per cell, fitted on the training clips and scored as cross-entropy on the
validation clips, with and without the sum of the two neighbours' magnitudes in the cell. (A
checkerboard order -- even channels first, odd channels with both neighbours known -- would get
about half of what the full cell gets.)

``--quantizers``: what do rate-distortion optimised rounding (each symbol may move one step
towards zero when ``err^2 + lambda * bits`` is lower) and a 4-state trellis quantizer (dependent
quantization as in VVC: two interleaved reconstruction grids chosen by the parity of the previous
index, a Viterbi search per channel and packet) save against plain rounding? All three with bin
centroids (per channel and context bucket, fitted on the training clips, as the shipped decoder
has), histograms per cell (the trellis's grid in the cell), at equal mean latent SNR.
"""
from __future__ import annotations

import numpy as np
from scipy.fft import dct

from quantizer_probe import ALPHABET, cross_entropy, probe_arguments, probe_latents, ratio
from walloc_audio.adaptive import CONTEXT_BUCKETS, band_edges, band_scales, bands_for, expand
from walloc_audio.ratecontrol import LevelTracker
from walloc_audio.tools.training.fit_adaptive import (companded_packets, context_buckets, fit_adaptive, ideal_bits,
                                                     packet_exponents)

FRAMES = 64
QUALITIES = (2, 3, 4, 5, 6, 7, 8)


def fmt(c: np.ndarray, base: np.ndarray) -> str:
    grid, r = ratio(c, base)
    return " ".join(f"{v:.3f}@{g:.1f}dB" for g, v in zip(grid, r))


# ------------------------------------------------------------------------------------- time blocks
def time_blocks(y: np.ndarray, n: int) -> np.ndarray:
    """``[L, K] -> [L * n, K // n]``: channel ``c`` holds rows ``c * n .. c * n + n - 1`` (DCT-II of n frames)."""
    L, K = y.shape
    m = K // n
    z = dct(y[:, : m * n].reshape(L, m, n).astype(np.float64), type=2, norm="ortho", axis=2)
    return z.transpose(0, 2, 1).reshape(L * n, m).astype(np.float32)


def block_curve(ad, train, val, n: int, frame_seconds: float) -> np.ndarray:
    tr, va = [time_blocks(y, n) for y in train], [time_blocks(y, n) for y in val]
    f = FRAMES // n
    coder = fit_adaptive(tr, delta=ad.delta, knee=ad.knee, max_symbol=ad.max_symbol, frame_seconds=frame_seconds * n,
                         centroids=True, packet_frames=(f,))
    points = []
    for q in QUALITIES:
        bits = seconds = 0.0
        snrs = []
        for z in va:
            b, err, _ = ideal_bits(coder, z, f, q, frame_seconds * n)
            kept = z[:, : (z.shape[1] // f) * f].astype(np.float64)
            bits += b
            seconds += kept.shape[1] * frame_seconds * n
            snrs.append(10 * np.log10((kept ** 2).sum() / max(err, 1e-20)))
        points.append((bits / seconds / 1000, float(np.mean(snrs))))
    return np.array(points)


# ------------------------------------------------------------------------------ symbols and cells
def companded(ad, y: np.ndarray, quality: float, frame_seconds: float):
    """The encoder's companded values ``v`` ``[L, P, F]`` of whole packets, and each packet's step."""
    e = packet_exponents(y, FRAMES, quality, LevelTracker(ad.reference_level, FRAMES * frame_seconds))
    v, steps = companded_packets(y, e, FRAMES, ad.delta, ad.knee)
    return v.astype(np.float64), steps


def cell_rows(k: np.ndarray, grid: np.ndarray, extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``channel, band scale, bucket, grid, extra, symbol`` of the coded symbols, and a coded mask."""
    L = k.shape[0]
    edges = band_edges(L, bands_for(FRAMES, L))
    scale = np.broadcast_to(np.repeat(band_scales(k, edges), np.diff(edges), axis=0)[:, :, None], k.shape)
    coded = scale > 0  # a band of zeros is not coded
    ch = np.broadcast_to(np.arange(L)[:, None, None], k.shape)
    extra = np.zeros(k.shape, np.int64) if extra is None else extra
    rows = np.stack([ch[coded], scale[coded], context_buckets(k)[coded], grid[coded], extra[coded],
                     np.clip(k[coded], -ALPHABET, ALPHABET) + ALPHABET], axis=1).astype(np.int64)
    return rows, coded


# ----------------------------------------------------------------------------- same-frame context
def same_frame_probe(ad, train, val, qualities, frame_seconds: float) -> None:
    def rows(clips, q):
        out, odd = [], []
        for y in clips:
            k = np.rint(companded(ad, y, q, frame_seconds)[0]).astype(np.int64)
            a = np.abs(k)
            up = np.concatenate([a[1:2], a[:-1]])  # channel c - 1 (mirrored at the edge)
            down = np.concatenate([a[1:], a[-2:-1]])  # channel c + 1
            r, coded = cell_rows(k, np.zeros_like(k), np.clip(up + down, 0, 6))
            out.append(r)
            odd.append(np.broadcast_to((np.arange(k.shape[0]) % 2 == 1)[:, None, None], k.shape)[coded])
        return np.concatenate(out), np.concatenate(odd)

    n = sum((y.shape[1] // FRAMES) * FRAMES * y.shape[0] for y in val)
    for q in qualities:
        (t, _), (v, odd) = rows(train, q), rows(val, q)
        base, full = cross_entropy(t, v, [0, 1, 2]), cross_entropy(t, v, [0, 1, 2, 4])
        half = base - (cross_entropy(t, v[odd], [0, 1, 2]) - cross_entropy(t, v[odd], [0, 1, 2, 4]))
        print(f"Q{q:g}: bits/latent, histogram per shipped cell {base / n:.3f}; + same-frame neighbours "
              f"{full / n:.3f} ({full / base:.3f}x); checkerboard {half / n:.3f} ({half / base:.3f}x)", flush=True)


# ------------------------------------------------------------------------------------- quantizers
NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]])  # trellis state after an index of even / odd magnitude


def level(k: np.ndarray, grid) -> np.ndarray:
    """Trellis reconstruction: grid 0 at the integers, grid 1 at 0 and the odd multiples of 1/2."""
    return np.where(grid == 0, k, k - 0.5 * np.sign(k))


def index_bits(absk: np.ndarray, grid, table: np.ndarray) -> np.ndarray:
    return table[grid, np.minimum(absk, ALPHABET)] + (absk > 0)  # magnitude + sign


def rdo_round(v: np.ndarray, lam: float, table: np.ndarray) -> np.ndarray:
    k = np.rint(v)
    z = k - np.sign(k)
    keep = (v - k) ** 2 + lam * index_bits(np.abs(k).astype(np.int64), 0, table)
    down = (v - z) ** 2 + lam * index_bits(np.abs(z).astype(np.int64), 0, table)
    return np.where(down < keep, z, k).astype(np.int64)


def trellis(v: np.ndarray, lam: float, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi over each row of ``v`` ``[N, F]`` from state 0: indices and the grid each was read on."""
    n, frames = v.shape
    cost = np.full((n, 4), np.inf)
    cost[:, 0] = 0.0
    back_state = np.zeros((frames, n, 4), np.int8)
    back_k = np.zeros((frames, n, 4), np.int64)
    for t in range(frames):
        x = v[:, t]
        new = np.full((n, 4), np.inf)
        for s in range(4):
            grid = s // 2
            centre = np.rint(x) if grid == 0 else np.sign(x) * np.rint(np.abs(x) + 0.5)
            for dk in (-1, 0, 1):
                k = (centre + dk).astype(np.int64)
                c = cost[:, s] + (x - level(k, grid)) ** 2 + lam * index_bits(np.abs(k), grid, table)
                for parity in (0, 1):
                    nxt = NEXT[s, parity]
                    better = (np.abs(k) % 2 == parity) & (c < new[:, nxt])
                    new[better, nxt] = c[better]
                    back_state[t, better, nxt] = s
                    back_k[t, better, nxt] = k[better]
        cost = new
    state = cost.argmin(axis=1)
    k, grid = np.zeros((n, frames), np.int64), np.zeros((n, frames), np.int64)
    rows = np.arange(n)
    for t in range(frames - 1, -1, -1):
        k[:, t] = back_k[t, rows, state]
        state = back_state[t, rows, state]
        grid[:, t] = state // 2
    return k, grid


def quantize(mode: str, v: np.ndarray, lam: float, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if mode == "round":
        k = np.rint(v).astype(np.int64)
    elif mode == "rdo":
        k = rdo_round(v, lam, table)
    else:
        L, p, f = v.shape
        k, g = trellis(v.reshape(L * p, f), lam, table)
        return k.reshape(v.shape), g.reshape(v.shape)
    return k, np.zeros_like(k)


def quantizer_probe(ad, train, val, qualities, frame_seconds: float) -> None:
    n = sum((y.shape[1] // FRAMES) * FRAMES * y.shape[0] for y in val)
    ncell = ad.channels * (CONTEXT_BUCKETS + 1) * 2

    def run(clips, mode, q, lam, table, offsets=None):
        rows, err, sig, acc = [], [], [], np.zeros((2, ncell))
        for y in clips:
            v, steps = companded(ad, y, q, frame_seconds)
            k, grid = quantize(mode, v, lam, table)
            r, _ = cell_rows(k, grid)
            rows.append(r)
            cell = (np.arange(ad.channels)[:, None, None] * (CONTEXT_BUCKETS + 1) + context_buckets(k)) * 2 + grid
            rec = level(k, grid)
            nz = k != 0
            np.add.at(acc[0], cell[nz], (np.abs(rec) - np.abs(v))[nz])
            np.add.at(acc[1], cell[nz], 1)
            if offsets is not None:
                rec = rec - np.sign(rec) * offsets[cell]
            yhat = expand(rec.astype(np.float32), ad.knee) * steps[None, :, None]
            ref = y[:, : steps.size * FRAMES].reshape(v.shape).astype(np.float64)
            err.append(float(((yhat - ref) ** 2).sum()))
            sig.append(float((ref ** 2).sum()))
        return np.concatenate(rows), err, sig, np.clip(acc[0] / np.maximum(acc[1], 1), -0.5, 0.5)

    def fit_table(clips, mode, q, lam, table):
        """Magnitude histograms per grid from a first pass: the rates the search weighs."""
        h = np.ones((2, ALPHABET + 1))
        for y in clips[::4]:
            k, grid = quantize(mode, companded(ad, y, q, frame_seconds)[0], lam, table)
            for g in (0, 1):
                np.add.at(h[g], np.minimum(np.abs(k[grid == g]), ALPHABET), 1)
        return -np.log2(h / h.sum(axis=1, keepdims=True))

    start = np.tile(np.arange(ALPHABET + 1) + 0.5, (2, 1))  # a Laplace-like guess for the first pass
    variants = [("round", 0.0), ("rdo", 0.05), ("rdo", 0.1), ("trellis", 0.1), ("trellis", 0.2), ("trellis", 0.35)]
    curves = {}
    for mode, c in variants:
        points = []
        for q in qualities:
            lam = c if mode != "round" else 0.0
            table = start
            if mode != "round":
                table = fit_table(train, mode, q, lam, fit_table(train, mode, q, lam, start))
            t_rows, _, _, offsets = run(train, mode, q, lam, table)
            v_rows, err, sig, _ = run(val, mode, q, lam, table, offsets)
            bits = cross_entropy(t_rows, v_rows, [0, 1, 2, 3]) / n
            points.append((bits, float(np.mean([10 * np.log10(s / e) for s, e in zip(sig, err)]))))
        curves[(mode, c)] = np.array(points)
        print(f"{mode:8s} lambda {c:<5g} bits/latent / latent SNR at Q={','.join(map(str, qualities))}: "
              + " ".join(f"{b:.3f}/{s:.2f}" for b, s in points)
              + f"  rate / rounding's at equal SNR: {fmt(curves[(mode, c)], curves[('round', 0.0)])}", flush=True)


def main() -> None:
    ap = probe_arguments(__doc__)
    ap.add_argument("--blocks", default="4,8,16", help="DCT lengths along time ('' skips)")
    ap.add_argument("--same-frame", default="3,5,7", help="qualities for the same-frame context probe ('' skips)")
    ap.add_argument("--quantizers", default="3,5,7", help="qualities for the RDO / trellis probe ('' skips)")
    args = ap.parse_args()
    model, fs, train, val = probe_latents(args)
    ad = model.adaptive
    if args.blocks.strip():
        base = block_curve(ad, train, val, 1, fs)
        for n in (int(v) for v in args.blocks.split(",")):
            c = block_curve(ad, train, val, n, fs)
            print(f"DCT of {n:2d} frames: kbps / latent SNR " + " ".join(f"{k:.1f}/{s:.2f}" for k, s in c)
                  + f"  kbps / frames' at equal SNR: {fmt(c, base)}", flush=True)
    if args.same_frame.strip():
        same_frame_probe(ad, train, val, [float(v) for v in args.same_frame.split(",")], fs)
    if args.quantizers.strip():
        quantizer_probe(ad, train, val, [float(v) for v in args.quantizers.split(",")], fs)


if __name__ == "__main__":
    main()
