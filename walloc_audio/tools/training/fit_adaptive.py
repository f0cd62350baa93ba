"""Fitting the version-2 entropy model (:class:`~walloc_audio.adaptive.AdaptiveCoder`) from latents.

The fit runs the encoder's own decisions -- level envelope, step exponent,
rounding, band scales, contexts -- on float latents of training music, for
file packets (64 frames) and live packets (2 frames) and at several qualities,
all vectorised over packets. Each ``(channel, band scale, context bucket)``
cell gets the Laplace scale that minimises its code length (a grid search over
magnitude histograms) and the centroid offset of its nonzero bins; the side
model is a smoothed count of band scales given the previous band's.
"""

from __future__ import annotations


import numpy as np

from walloc_audio.adaptive import (CONTEXT_BUCKETS, S_LEVELS, S_ZERO, AdaptiveCoder, band_edges, band_scales, bands_for,
                       compand, expand, round_symbols, step_for)
from walloc_audio.bitstream import PACKET_HEADER_BYTES
from walloc_audio.entropy import _activity, context_thresholds, laplace_bin_probability
from walloc_audio.ratecontrol import LevelTracker, exponent_for

H = 64  # magnitudes >= H share a tail bin in the scale search


def reference_level(latents: list[np.ndarray], frames: int = 64) -> float:
    """Median packet RMS of (mastered) training music, ignoring packets 40 dB below the loudest."""
    levels = []
    for y in latents:
        p = y.shape[1] // frames
        if p:
            r = y[:, : p * frames].reshape(y.shape[0], p, frames).astype(np.float64)
            levels.append(np.sqrt((r * r).mean(axis=(0, 2))))
    lv = np.concatenate(levels)
    lv = lv[lv > lv.max() * 1e-2]
    return float(np.median(lv))


def packet_exponents(y: np.ndarray, frames: int, quality: float, tracker: LevelTracker) -> np.ndarray:
    """The encoder's step exponent of each whole packet of ``y`` ``[L, K]`` at constant quality."""
    p = y.shape[1] // frames
    r = y[:, : p * frames].reshape(y.shape[0], p, frames).astype(np.float64)
    rms = np.sqrt((r * r).mean(axis=(0, 2)))
    tracker.reset()
    out = np.empty(p, dtype=np.int64)
    for i in range(p):
        out[i] = exponent_for(tracker.advance(float(rms[i])), quality)
    return out


def packet_steps(delta: float, exponents: np.ndarray) -> np.ndarray:
    """The encoder's own float32 step of each packet, ``[P]``."""
    return np.array([step_for(delta, e) for e in exponents], dtype=np.float32)


def companded_packets(y: np.ndarray, exponents: np.ndarray, frames: int, delta: float, knee: float):
    """The encoder's companded values ``v`` ``[L, P, F]`` of the whole packets of ``y`` and their steps ``[P]``."""
    steps = packet_steps(delta, exponents)
    u = y[:, : exponents.size * frames].reshape(y.shape[0], exponents.size, frames).astype(np.float32)
    return compand(u / steps[None, :, None], knee), steps


def packet_symbols(y: np.ndarray, exponents: np.ndarray, frames: int, bands: int, delta: float, knee: float,
                   max_symbol: int, deadzone: float = 0.0):
    """Vectorised :func:`~walloc_audio.adaptive.quantize` over packets.

    Returns ``q, v`` ``[L, P, F]``, band scales ``[P, bands]`` and context buckets ``[L, P, F]``.
    """
    L = y.shape[0]
    v, _ = companded_packets(y, exponents, frames, delta, knee)
    q = np.clip(round_symbols(v, deadzone), -max_symbol, max_symbol).astype(np.int32)
    s = band_scales(q, band_edges(L, bands))  # [bands, P]
    return q, v, s.T, context_buckets(q)


def context_buckets(q: np.ndarray) -> np.ndarray:
    """The context bucket of every symbol of packets ``q`` ``[L, P, F]`` (bucket 0: a packet's first frame).

    :func:`walloc_audio.entropy.context_features` vectorised over packets.
    """
    a = np.abs(q).astype(np.int64)
    f = np.full(a.shape, -1, dtype=np.int64)
    for t in range(1, a.shape[2]):
        f[:, :, t] = _activity(a[:, :, t - 1], a[:, :, max(t - 2, 0)], a[:, :, max(t - 3, 0)])
    return np.where(f < 0, 0, np.searchsorted(context_thresholds(CONTEXT_BUCKETS), f, side="right") + 1)


class Accumulator:
    """Histograms of the fit, added to clip by clip."""

    def __init__(self, L: int):
        self.L = L
        self.cells = L * (S_LEVELS - 1) * CONTEXT_BUCKETS
        self.hist = np.zeros((self.cells, H + 1))
        self.tail = np.zeros(self.cells)
        self.off_sum = np.zeros(self.cells)
        self.off_n = np.zeros(self.cells)
        self.side = np.zeros((S_LEVELS + 1, S_LEVELS))

    def add(self, q, v, s, b, edges):
        L, p, F = q.shape
        sc = np.repeat(s.T, np.diff(edges), axis=0)  # [L, P] band scale of each channel
        active = np.broadcast_to((sc > 0)[:, :, None], q.shape)
        cell = ((np.arange(L)[:, None, None] * (S_LEVELS - 1) + (np.maximum(sc, 1) - 1)[:, :, None])
                * CONTEXT_BUCKETS + b)[active]
        a = np.abs(q)[active].astype(np.int64)
        self.hist += np.bincount(cell * (H + 1) + np.minimum(a, H), minlength=self.cells * (H + 1)).reshape(
            self.cells, H + 1)
        big = a >= H
        self.tail += np.bincount(cell[big], weights=a[big], minlength=self.cells)
        nz = a > 0
        self.off_sum += np.bincount(cell[nz], weights=(a - np.abs(v[active]))[nz], minlength=self.cells)
        self.off_n += np.bincount(cell[nz], minlength=self.cells)
        prev = np.concatenate([np.full((p, 1), S_LEVELS), s[:, :-1]], axis=1)
        np.add.at(self.side, (prev.ravel(), s.ravel()), 1)

    def solve(self, centroids: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        grid = np.exp(np.linspace(np.log(0.02), np.log(2000.0), 240))
        mags = np.arange(H + 1, dtype=np.float64)
        logp = -np.log(np.maximum(laplace_bin_probability(mags[None, :], grid[:, None]), 1e-300))  # [G, H+1]
        cost = self.hist[:, :H] @ logp[:, :H].T  # [cells, G]
        n_tail = self.hist[:, H]
        mean_tail = np.where(n_tail > 0, self.tail / np.maximum(n_tail, 1), H)
        cost += n_tail[:, None] * -np.log(np.maximum(laplace_bin_probability(mean_tail[:, None], grid[None, :]),
                                                     1e-300))
        scales = grid[cost.argmin(axis=1)].reshape(self.L, S_LEVELS - 1, CONTEXT_BUCKETS)
        seen = (self.hist.sum(axis=1) > 0).reshape(scales.shape)
        # Cells never seen borrow from the nearest seen cell of the same channel (band scale first,
        # then context), or, if the channel never had that band scale, from a Laplace whose mean
        # magnitude is the band scale's own.
        for c in range(self.L):
            for si in range(S_LEVELS - 1):
                row = seen[c, si]
                if row.all():
                    continue
                if row.any():
                    idx = np.flatnonzero(row)
                    for bk in np.flatnonzero(~row):
                        scales[c, si, bk] = scales[c, si, idx[np.abs(idx - bk).argmin()]]
                else:
                    scales[c, si, :] = max(2.0 ** ((si + 1 - S_ZERO) / 2.0), 0.02)
        offsets = np.zeros(self.cells)
        if centroids:
            offsets = np.clip(np.where(self.off_n > 0, self.off_sum / np.maximum(self.off_n, 1), 0.0), -0.5, 0.5)
        side = self.side + 0.5
        return scales.astype(np.float32), offsets.reshape(scales.shape).astype(np.float32), side / side.sum(1,
                                                                                                       keepdims=True)


def fit_adaptive(latents: list[np.ndarray], *, delta: float, knee: float, max_symbol: int, frame_seconds: float,
                 centroids: bool, qualities=(2.5, 5.0, 7.5), packet_frames=(64, 2), log=None,
                 deadzone: float = 0.0) -> AdaptiveCoder:
    """Fit an :class:`AdaptiveCoder` on float latents ``[L, K]`` of training clips."""
    L = latents[0].shape[0]
    ref = reference_level(latents)
    acc = Accumulator(L)
    for F in packet_frames:
        bands = bands_for(F, L)
        edges = band_edges(L, bands)
        tracker = LevelTracker(ref, F * frame_seconds)
        for qual in qualities:
            for y in latents:
                e = packet_exponents(y, F, qual, tracker)
                if e.size:
                    acc.add(*packet_symbols(y, e, F, bands, delta, knee, max_symbol, deadzone), edges)
        if log:
            log(f"  fitted packets of {F} frames ({bands} bands)")
    scales, offsets, side = acc.solve(centroids)
    return AdaptiveCoder(scales, offsets, side, delta=delta, knee=knee, max_symbol=max_symbol, reference_level=ref,
                         deadzone=deadzone)


def ideal_bits(coder: AdaptiveCoder, y: np.ndarray, frames: int, quality: float, frame_seconds: float,
               release_db_per_s: float | None = None) -> tuple[float, float, int]:
    """``(bits, squared latent error, latents)`` of coding ``y`` at constant quality (ideal code lengths)."""
    kw = {} if release_db_per_s is None else {"release_db_per_s": release_db_per_s}
    tracker = LevelTracker(coder.reference_level, frames * frame_seconds, **kw)
    e = packet_exponents(y, frames, quality, tracker)
    L = y.shape[0]
    bands = bands_for(frames, L)
    edges = band_edges(L, bands)
    q, v, s, b = packet_symbols(y, e, frames, bands, coder.delta, coder.knee, coder.max_symbol, coder.deadzone)
    sc = np.repeat(s.T, np.diff(edges), axis=0)
    active = np.broadcast_to((sc > 0)[:, :, None], q.shape)
    table = coder._scale64[np.arange(L)[:, None, None], (np.maximum(sc, 1) - 1)[:, :, None], b]
    p = laplace_bin_probability(q[active], table[active])
    bits = float(-np.log2(np.maximum(p, 1e-12)).sum())
    prev = np.concatenate([np.full((e.size, 1), S_LEVELS), s[:, :-1]], axis=1)
    bits += float(-np.log2(coder.side[prev, s]).sum()) + 8.0 * e.size
    steps = packet_steps(coder.delta, e)
    w = q.astype(np.float32)
    off = coder.offsets[np.arange(L)[:, None, None], (np.maximum(sc, 1) - 1)[:, :, None], b]
    w = w - np.sign(w) * off
    yhat = expand(w, coder.knee) * steps[None, :, None]
    err = float(((yhat.astype(np.float64) - y[:, : e.size * frames].reshape(q.shape)) ** 2).sum())
    return bits, err, q.size



def rate_curves(coder: AdaptiveCoder, latents: list[np.ndarray], frame_seconds: float,
                packet_frames=(64, 2), qualities=tuple(range(-4, 17)), framing_bytes: int = PACKET_HEADER_BYTES) -> dict:
    """``{F: [(Q, kbps)]}``: ideal code length plus container framing at each quality (music)."""
    out = {}
    for F in packet_frames:
        dur = sum((y.shape[1] // F) * F for y in latents) * frame_seconds
        packets = sum(y.shape[1] // F for y in latents)
        curve = []
        for q in qualities:
            bits = sum(ideal_bits(coder, y, F, q, frame_seconds)[0] for y in latents) + 8 * framing_bytes * packets
            curve.append((float(q), round(bits / dur / 1000, 3)))
        out[str(F)] = curve
    return out


def float_latents(codec, clips) -> list[np.ndarray]:
    """Float latents ``[L, K]`` of audio clips ``[C, T]`` (whole frames; empty clips dropped)."""
    import torch

    cfg = codec.config
    out = []
    with torch.no_grad():
        for x in clips:
            n = x.shape[-1] // cfg.frame * cfg.frame
            if n:
                xt = torch.as_tensor(np.ascontiguousarray(x[..., :n]), dtype=torch.float32)[None]
                out.append(codec.analyze(xt)[0].numpy())
    return out


def fit_codec_v2(codec, train_clips, val_clips, centroids: bool, log=None) -> tuple[AdaptiveCoder, dict]:
    """Fit the v2 entropy model of a codec (torch) from audio clips ``[C, T]``; returns it and its record."""
    cfg = codec.config
    bn = codec.bottleneck
    tr = float_latents(codec, train_clips)
    delta = float(bn.step().detach()[0])
    if not np.allclose(bn.step().detach().numpy(), delta):
        raise ValueError("the v2 quantizer needs one step for all latent channels")
    fs = cfg.frame / cfg.sample_rate
    coder = fit_adaptive(tr, delta=delta, knee=bn.knee, max_symbol=bn.max_symbol, frame_seconds=fs,
                         centroids=centroids, log=log)
    record = {"reference_level": round(coder.reference_level, 6),
              "fitted_on_seconds": round(sum(y.shape[1] for y in tr) * fs, 1)}
    if val_clips:
        record["rate_curves"] = rate_curves(coder, float_latents(codec, val_clips), fs)
        record["rate_curves_note"] = "kbps at Q=-4..16: ideal code length + 14-byte framing, validation music"
    return coder, record
