"""Per-channel static entropy model and range coding with constriction.

Each latent channel ``k`` has its own categorical distribution over the
alphabet ``[-A, A]``, fitted from symbol counts on training data and smoothed
(add-``alpha``) so that no symbol has zero probability: any symbol the
quantizer can emit is codable, just expensive. The tables are stored with the
model weights (``[L, 2A+1]`` float32) and turned into constriction models once.

A packet's payload is one range-coded message holding its ``F`` frames,
channel-major (all of channel 0, then channel 1, ...), so every packet decodes
on its own -- the property streaming, loss concealment and seeking need.
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from .errors import BitstreamError


def fit_probabilities(counts: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Smoothed probabilities from symbol counts ``[L, S]`` (add-``alpha``)."""
    counts = np.asarray(counts, dtype=np.float64)
    assert counts.ndim == 2, f"counts must be [L, S], got {counts.shape}"
    p = counts + alpha
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def count_symbols(symbols, max_symbol: int) -> np.ndarray:
    """Histogram of symbols ``[..., L, K]`` (numpy or a CPU tensor) per channel -> ``[L, 2A+1]`` int64."""
    s = np.asarray(symbols)
    s = np.moveaxis(s, -2, 0).reshape(s.shape[-2], -1) if s.ndim > 2 else s
    s = np.clip(s.astype(np.int64) + max_symbol, 0, 2 * max_symbol)
    size = 2 * max_symbol + 1
    flat = (np.arange(s.shape[0], dtype=np.int64)[:, None] * size + s).ravel()
    return np.bincount(flat, minlength=s.shape[0] * size).reshape(s.shape[0], size)


def _payload_words(payload: bytes) -> np.ndarray:
    """A packet payload as the 32-bit words constriction's range decoder reads."""
    if len(payload) % 4:
        raise BitstreamError("packet payload is not a whole number of 32-bit words")
    return np.frombuffer(payload, dtype=np.uint32).copy()


class EntropyCoder:
    """Range coder over per-channel categorical models.

    Args:
        probabilities: ``[L, S]`` float32, rows sum to 1, all entries > 0.
    """

    def __init__(self, probabilities: np.ndarray):
        probs = np.ascontiguousarray(probabilities, dtype=np.float32)
        assert probs.ndim == 2 and probs.shape[1] % 2 == 1, f"probabilities must be [L, 2A+1], got {probs.shape}"
        if not np.all(probs > 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("entropy model rows must be positive and sum to 1")
        self.probabilities = probs
        self.channels, self.alphabet = probs.shape
        self.max_symbol = self.alphabet // 2
        self._models = [constriction.stream.model.Categorical(row, perfect=False) for row in probs]

    def bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``[L, K]`` symbols under the model, in bits."""
        idx = np.asarray(symbols) + self.max_symbol
        rows = np.arange(self.channels)[:, None]
        return float(-np.log2(self.probabilities[rows, idx]).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        """Symbols ``[L, F]`` (int, in ``[-A, A]``) -> payload bytes."""
        assert symbols.ndim == 2 and symbols.shape[0] == self.channels, (
            f"expected symbols [{self.channels}, F], got {symbols.shape}"
        )
        idx = np.ascontiguousarray(symbols, dtype=np.int32) + self.max_symbol
        enc = constriction.stream.queue.RangeEncoder()
        for k, model in enumerate(self._models):
            enc.encode(idx[k], model)
        return enc.get_compressed().tobytes()

    def decode(self, payload: bytes, frames: int) -> np.ndarray:
        """Payload bytes -> symbols ``[L, frames]`` int32. Raises BitstreamError if malformed."""
        words = _payload_words(payload)
        out = np.empty((self.channels, frames), dtype=np.int32)
        try:
            dec = constriction.stream.queue.RangeDecoder(words)
            for k, model in enumerate(self._models):
                out[k] = dec.decode(model, frames)
        except Exception as exc:  # constriction raises plain errors on garbage
            raise BitstreamError(f"packet payload cannot be range-decoded ({exc})") from None
        return out - self.max_symbol


# -- step scaling of the static model ---------------------------------------------------------

def rebin_probabilities(probabilities: np.ndarray, step_scale: float) -> np.ndarray:
    """The static tables for a quantizer step ``step_scale`` times the fitted one.

    Symbol ``k`` at the new step covers ``[(k - 1/2) s, (k + 1/2) s]`` in units of
    the old step; its mass is read off the old table's CDF, taking mass uniform
    within each old bin. Only sequential float64 sums and linear interpolation
    are used, so encoder and decoder derive the same table bit for bit.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    L, S = p.shape
    A = S // 2
    edges_old = np.arange(-A - 0.5, A + 1.0)  # S + 1 bin edges
    cdf = np.concatenate([np.zeros((L, 1)), np.cumsum(p, axis=1)], axis=1)
    edges_new = np.clip(np.arange(-A - 0.5, A + 1.0) * float(step_scale), edges_old[0], edges_old[-1])
    out = np.empty_like(p)
    for k in range(L):
        c = np.interp(edges_new, edges_old, cdf[k])
        out[k] = np.diff(c)
    out = np.maximum(out, 1e-9)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


# -- context-adaptive model ---------------------------------------------------------------------

def context_thresholds(buckets: int) -> np.ndarray:
    """Feature thresholds of the context buckets ``1..buckets-1`` (geometric, factor 2**(2/3))."""
    t = np.unique(np.round(2.0 ** (np.arange(1, 4 * buckets) / 1.5)) - 1.0)
    return t[t > 0][: buckets - 2].astype(np.float64)


@functools.lru_cache(maxsize=None)
def _neighbours(L: int) -> tuple[np.ndarray, ...]:
    """Row indices of channels ``c-2, c-1, c+1, c+2`` for ``L`` channels, mirrored at the edges."""
    def mirror(i: np.ndarray) -> np.ndarray:
        if L == 1:
            return np.zeros_like(i)
        period = 2 * (L - 1)
        i = np.abs(i) % period
        return np.where(i >= L, period - i, i)

    c = np.arange(L)
    return tuple(mirror(c + d) for d in (-2, -1, 1, 2))


def _activity(a1: np.ndarray, a2: np.ndarray, a3: np.ndarray) -> np.ndarray:
    """``4|q[c,t-1]| + 2|q[c,t-2]| + |q[c,t-3]| + 2 (|q[c-1,t-1]| + |q[c+1,t-1]|) + |q[c-2,t-1]| + |q[c+2,t-1]|``.

    ``a1, a2, a3``: magnitudes ``[L, n]`` one, two and three frames back.
    Neighbour channels beyond the edges are mirrored (``c-1`` of channel 0 is
    channel 1). Integer arithmetic only.
    """
    m2, m1, p1, p2 = _neighbours(a1.shape[0])
    return 4 * a1 + 2 * a2 + a3 + 2 * (a1[m1] + a1[p1]) + a1[m2] + a1[p2]


def context_features(q: np.ndarray) -> np.ndarray:
    """Activity of each symbol's causal neighbourhood inside its packet, ``[L, F]`` int64.

    A weighted sum of the magnitudes of the same channel's three previous
    symbols and of the two channels on either side in the previous frame
    (:func:`_activity`); a missing frame repeats the oldest one present. Only
    earlier frames of the same packet are used: a whole frame's contexts are
    known before it is decoded (one vectorised call per frame) and every packet
    still decodes alone. ``t = 0`` has no history: feature -1.
    """
    a = np.abs(q.astype(np.int64))
    L, F = a.shape
    f = np.full((L, F), -1, dtype=np.int64)
    if F > 1:
        a1 = a[:, :-1]
        a2 = np.concatenate([a[:, :1], a[:, :-2]], axis=1)
        a3 = np.concatenate([a[:, :1], a[:, :1], a[:, :-3]], axis=1)[:, : F - 1]
        f[:, 1:] = _activity(a1, a2, a3)
    return f


def frame_features(history: np.ndarray) -> np.ndarray:
    """:func:`context_features` of the frame after ``history`` (``[L, n]``, ``1 <= n``, oldest first)."""
    a = np.abs(history[:, -3:].astype(np.int64))
    n = a.shape[1]
    a1 = a[:, n - 1 : n]
    a2 = a[:, max(n - 2, 0) : max(n - 2, 0) + 1]
    a3 = a[:, max(n - 3, 0) : max(n - 3, 0) + 1]
    return _activity(a1, a2, a3)[:, 0]


def laplace_bin_probability(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """P(round(x) = q) for x ~ Laplace(0, scale) (unclipped; for fitting and ideal code lengths)."""
    q = np.abs(np.asarray(q, dtype=np.float64))
    b = np.asarray(scale, dtype=np.float64)
    zero = 1.0 - np.exp(-0.5 / b)
    other = 0.5 * (np.exp(-(q - 0.5) / b) - np.exp(-(q + 0.5) / b))
    return np.where(q == 0, zero, other)


class ContextCoder:
    """Range coder over context-adaptive quantized Laplace models.

    Symbol ``q[c, t]`` is coded with a Laplace of scale ``scales[c, bucket]``,
    where ``bucket`` quantizes :func:`context_features` on ``thresholds``
    (bucket 0: the first frame of a packet, with no history). Music is loud and
    quiet in turns; the previous frames' magnitudes predict the current
    spread, which a static table cannot follow. ``offsets[c, bucket]`` is the
    decoder's reconstruction point inside a nonzero bin (the bin's centroid,
    measured on training data), a free gain at low rates.

    ``step_scale`` ``s``: the quantizer's step is ``s`` times the fitted one, so
    symbols shrink by ``1/s``; features are multiplied by ``s`` before
    bucketing and scales divided by it. Everything the decoder derives from
    the symbols uses integer or exactly rounded arithmetic.
    """

    def __init__(self, scales: np.ndarray, offsets: np.ndarray, thresholds: np.ndarray, max_symbol: int,
                 step_scale: float = 1.0):
        self.scales = np.ascontiguousarray(scales, dtype=np.float32)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.float32)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if self.scales.ndim != 2 or self.scales.shape != self.offsets.shape:
            raise ValueError("context scales/offsets must be [L, B] of the same shape")
        if self.scales.shape[1] != self.thresholds.size + 2:
            raise ValueError("context tables need len(thresholds) + 2 buckets")
        if not np.all(np.isfinite(self.scales)) or not np.all(self.scales > 0):
            raise ValueError("context scales must be positive and finite")
        if not np.all(np.diff(self.thresholds) > 0):
            raise ValueError("context thresholds must increase")
        self.channels = self.scales.shape[0]
        self.max_symbol = int(max_symbol)
        self.step_scale = float(step_scale)
        self._family = constriction.stream.model.QuantizedLaplace(-self.max_symbol, self.max_symbol)
        s = self.step_scale
        self._scale64 = np.maximum(self.scales.astype(np.float64) / s, 1e-3)
        self._rows = np.arange(self.channels)

    def scaled(self, step_scale: float) -> "ContextCoder":
        return ContextCoder(self.scales, self.offsets, self.thresholds, self.max_symbol, step_scale)

    def buckets(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features)
        fs = f * self.step_scale if self.step_scale != 1.0 else f
        b = np.searchsorted(self.thresholds, fs, side="right") + 1
        return np.where(f < 0, 0, b)

    def _params(self, buckets: np.ndarray) -> np.ndarray:
        return self._scale64[self._rows[:, None] if buckets.ndim == 2 else self._rows, buckets]

    def bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``[L, F]`` symbols (one packet) in bits."""
        sc = self._params(self.buckets(context_features(symbols)))
        return float(-np.log2(np.maximum(laplace_bin_probability(symbols, sc), 1e-12)).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        """Symbols ``[L, F]`` -> payload, coded frame by frame (the order the decoder needs)."""
        assert symbols.ndim == 2 and symbols.shape[0] == self.channels, (
            f"expected symbols [{self.channels}, F], got {symbols.shape}"
        )
        q = np.ascontiguousarray(symbols, dtype=np.int32)
        sc = self._params(self.buckets(context_features(q)))
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(np.ascontiguousarray(q.T).ravel(), self._family, np.zeros(q.size), np.ascontiguousarray(sc.T).ravel())
        return enc.get_compressed().tobytes()

    def decode(self, payload: bytes, frames: int) -> np.ndarray:
        words = _payload_words(payload)
        out = np.empty((self.channels, frames), dtype=np.int32)
        zeros = np.zeros(self.channels)
        try:
            dec = constriction.stream.queue.RangeDecoder(words)
            for t in range(frames):
                if t == 0:
                    b = np.zeros(self.channels, dtype=np.int64)
                else:
                    b = self.buckets(frame_features(out[:, max(0, t - 3) : t]))
                out[:, t] = dec.decode(self._family, zeros, self._scale64[self._rows, b])
        except Exception as exc:
            raise BitstreamError(f"packet payload cannot be range-decoded ({exc})") from None
        return out

    def reconstruct(self, symbols: np.ndarray) -> np.ndarray:
        """Reconstruction points (companded domain) of symbols ``[L, F]``: bin centroids."""
        q = np.asarray(symbols)
        off = self.offsets[self._rows[:, None], self.buckets(context_features(q))]
        return (q - np.sign(q) * off).astype(np.float32)


def fit_context_model(symbols: list[np.ndarray], values: list[np.ndarray], packet_frames: int = 64,
                      buckets: int = 16, max_symbol: int = 2047) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``(scales, offsets, thresholds)`` of a :class:`ContextCoder`.

    ``symbols``: ``[L, K]`` integer arrays of training clips; ``values``: their
    companded latents (before rounding), for the centroids. Clips are cut into
    packets of ``packet_frames`` as the coder sees them, plus 2-frame packets so
    live streams' first frames are represented too. Each ``(channel, bucket)``
    gets the Laplace scale minimising the code length of its magnitudes (a grid
    search over histograms), and the mean ``|q| - |v|`` of its nonzero symbols.
    """
    thresholds = context_thresholds(buckets)
    L = symbols[0].shape[0]
    H = 64  # magnitudes >= H are pooled into a tail bin for the scale search
    hist = np.zeros((L, buckets, H + 1))
    tail = np.zeros((L, buckets))
    off_sum = np.zeros((L, buckets))
    off_n = np.zeros((L, buckets))
    probe = ContextCoder(np.ones((L, buckets)), np.zeros((L, buckets)), thresholds, max_symbol)
    rows = np.arange(L)[:, None]
    cells = L * buckets
    for q, v in zip(symbols, values):
        for F in (packet_frames, 2):
            b = np.concatenate([probe.buckets(context_features(q[:, s : s + F])) for s in range(0, q.shape[1], F)],
                               axis=1)
            a = np.abs(q).astype(np.int64)
            cell = (rows * buckets + b).ravel()  # (channel, bucket) of every symbol
            hist += np.bincount(cell * (H + 1) + np.minimum(a, H).ravel(),
                                minlength=cells * (H + 1)).reshape(L, buckets, H + 1)
            big = (a >= H).ravel()
            tail += np.bincount(cell[big], weights=a.ravel()[big], minlength=cells).reshape(L, buckets)
            nz = (a > 0).ravel()
            off_sum += np.bincount(cell[nz], weights=(a - np.abs(v)).ravel()[nz], minlength=cells).reshape(L, buckets)
            off_n += np.bincount(cell[nz], minlength=cells).reshape(L, buckets)
    grid = np.exp(np.linspace(np.log(0.02), np.log(2000.0), 240))
    mags = np.arange(H + 1, dtype=np.float64)
    # -log p(k | b) for every grid scale and magnitude (k >= 1 counts both signs: + log 2 not needed,
    # it is the same for every scale); the tail bin's cost uses its mean magnitude.
    logp = -np.log(np.maximum(laplace_bin_probability(mags[None, :], grid[:, None]), 1e-300))  # [G, H+1]
    cost = np.einsum("lbh,gh->lbg", hist[..., :H], logp[:, :H])
    n_tail = hist[..., H]
    mean_tail = np.where(n_tail > 0, tail / np.maximum(n_tail, 1), H)
    tail_cost = n_tail[..., None] * -np.log(np.maximum(
        laplace_bin_probability(mean_tail[..., None], grid[None, None, :]), 1e-300))
    cost = cost + tail_cost
    scales = grid[cost.argmin(axis=-1)]
    empty = hist.sum(-1) == 0
    # Buckets never seen in training borrow the nearest seen bucket of the same channel.
    for c in range(L):
        seen = np.flatnonzero(~empty[c])
        if seen.size:
            for b in np.flatnonzero(empty[c]):
                scales[c, b] = scales[c, seen[np.abs(seen - b).argmin()]]
    offsets = np.clip(np.where(off_n > 0, off_sum / np.maximum(off_n, 1), 0.0), -0.5, 0.5)
    return scales.astype(np.float32), offsets.astype(np.float32), thresholds
