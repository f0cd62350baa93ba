"""Version-2 quantization: forward-adaptive side information and its entropy model.

Version 1 quantized every latent with one absolute step, so quality and rate
fell with the input level (22 dB SNR at mastered level, 0 dB at -40 dB). In
version 2 every packet carries side information, computed by the encoder from
the latents it is about to code, and entropy-coded in front of them:

* a **step exponent** ``E`` (integer, 1/8 octave = 0.75 dB units): the packet's
  quantizer step is ``delta * 2**(E/8)``, ``delta`` the model's step. The
  encoder picks ``E`` from the signal level (:mod:`walloc_audio.ratecontrol`),
  so the step follows the level and quality does not; decoders only read it.
  ``E`` is coded as an index ``1..255`` (``E = index - E_BIAS``); index 0 marks a
  **silent packet** (every symbol zero) and nothing else follows -- silence
  costs one byte.
* a **band scale** ``S_b`` per band of latent channels (``bands`` contiguous
  groups, a header field): ``S = 0`` if every symbol of the band is zero (the
  band is then not coded at all), else ``S = clip(round(2 log2 mean|q|) + 13, 1,
  23)``, the band's mean magnitude in 3-dB classes. Coded with a categorical
  model conditioned on the previous band's ``S`` (neighbouring bands share
  their level).

The symbols themselves are ``q = round(compand(y / step))`` (the square-root
compander of :mod:`walloc_audio.tools.bottleneck`) clamped to ``[-A, A]``, coded frame
by frame with a quantized Laplace whose scale is read from a table indexed by
channel, band scale and a context bucket (the magnitudes of earlier symbols of
the same packet, :func:`walloc_audio.entropy.context_features`): the side
information says how loud this band of this packet is, the context where
inside it. Decoders reconstruct in absolute units: ``y = expand(q - sign(q) *
offset) * step`` with ``offset`` the bin centroid (zero for decoders trained
on the rounded symbols).

Every packet decodes on its own. Everything a decoder derives from the
payload is integer arithmetic or table lookups; only the encoder touches floats
before rounding (``u = y / step`` is one exactly rounded division, the
compander uses ``* / + - sqrt``), so symbols are a fixed function of the
float32 latents on a given machine.

Numpy and constriction only: no torch in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from . import native as _native
from .entropy import _neighbours, _payload_words, context_features, context_thresholds, laplace_bin_probability
from .errors import BitstreamError

E_UNITS = 8  # step exponent units per octave
E_BIAS = 160  # E = index - E_BIAS, index 1..255
E_MIN, E_MAX = 1 - E_BIAS, 255 - E_BIAS
SILENT = 0
S_LEVELS = 24  # band scales 0 (all zero) .. 23
S_ZERO = 13  # S for mean |q| == 1
MAX_BANDS = 64
CONTEXT_BUCKETS = 16

_UNIFORM_E = constriction.stream.model.Categorical(np.full(256, 1.0 / 256), perfect=False)
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def step_for(delta: float, exponent: int) -> np.float32:
    """The quantizer step ``delta * 2**(E/8)`` of a packet (float32, the same everywhere)."""
    return np.float32(np.float64(delta) * 2.0 ** (int(exponent) / E_UNITS))


def band_edges(channels: int, bands: int) -> np.ndarray:
    """First channel of each band and the end: ``bands`` contiguous groups, sizes differing by <= 1."""
    assert 1 <= bands <= channels, f"bands must be 1..{channels}, got {bands}"
    return np.round(np.linspace(0, channels, bands + 1)).astype(np.int64)


def bands_for(frames: int, channels: int) -> int:
    """Default band count for packets of ``frames`` frames: about 128 symbols a band, 1..16 bands."""
    return int(np.clip(frames * channels // 128, 1, min(16, channels)))


def compand(u: np.ndarray, knee: float) -> np.ndarray:
    if knee <= 0:
        return u
    b = np.float32(knee)
    return np.sign(u) * (b * (np.sqrt(np.float32(1.0) + np.abs(u) * (np.float32(2.0) / b)) - np.float32(1.0)))


def expand(v: np.ndarray, knee: float) -> np.ndarray:
    if knee <= 0:
        return v
    return v + np.sign(v) * (v * v) * np.float32(0.5 / knee)


def round_symbols(v: np.ndarray, deadzone: float = 0.0) -> np.ndarray:
    """Symbols of companded values ``v``: nearest integer, or with a dead zone ``0 <= deadzone < 0.5``
    (``sign(v) * floor(|v| + 0.5 - deadzone)``: every bin's lower edge moves ``deadzone`` outwards, so
    small values fall to a cheaper symbol; the decoder's bin centroids absorb the shift)."""
    if deadzone <= 0:
        return np.rint(v)
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5 - deadzone))


def band_scales(q: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band scale ``S`` of each band of symbols ``q`` (see the module docstring).

    ``[L, F] -> [bands]``; packets side by side, ``[L, P, F] -> [bands, P]``.
    """
    mag = np.abs(q).astype(np.int64).sum(axis=-1)
    sums = np.add.reduceat(mag, edges[:-1], axis=0)
    counts = np.diff(edges) * q.shape[-1]
    m = sums / counts.reshape((-1,) + (1,) * (sums.ndim - 1))
    s = np.zeros(sums.shape, dtype=np.int64)
    nz = sums > 0
    s[nz] = np.clip(np.rint(2.0 * np.log2(m[nz])) + S_ZERO, 1, S_LEVELS - 1)
    return s


@dataclass
class Quantized:
    """One packet's symbols and side information, before entropy coding."""

    exponent: int  # E; ignored when silent
    symbols: np.ndarray  # [L, F] int32
    scales: np.ndarray  # [bands] band scales S
    values: np.ndarray  # [L, F] companded latents before rounding (for fitting centroids)

    @property
    def silent(self) -> bool:
        return not self.scales.any()


def quantize(y: np.ndarray, delta: float, exponent: int, edges: np.ndarray, knee: float,
             max_symbol: int, deadzone: float = 0.0) -> Quantized:
    """Quantize latents ``y`` ``[L, F]`` with the step of ``exponent``."""
    step = step_for(delta, exponent)
    v = compand(np.asarray(y, dtype=np.float32) / step, knee)
    q = np.clip(round_symbols(v, deadzone), -max_symbol, max_symbol).astype(np.int32)
    return Quantized(int(exponent), q, band_scales(q, edges), v)


class AdaptiveCoder:
    """Side-information-conditioned range coder of version-2 packets.

    Args:
        scales: ``[L, S_LEVELS - 1, CONTEXT_BUCKETS]`` Laplace scales per channel, band
            scale ``1..23`` and context bucket.
        offsets: same shape, reconstruction offsets inside nonzero bins (centroids).
        side: ``[S_LEVELS + 1, S_LEVELS]`` probabilities of a band scale given the
            previous band's (row ``S_LEVELS``: the first band).
        delta, knee, max_symbol: the model's step, compander knee and alphabet.
        reference_level: latent RMS of mastered music (encoder side: what quality means).
        deadzone: the encoder's rounding dead zone (:func:`round_symbols`); the tables were fitted
            with it. Decoders never read it: the centroids in ``offsets`` carry its effect.
    """

    def __init__(self, scales: np.ndarray, offsets: np.ndarray, side: np.ndarray, *, delta: float,
                 knee: float, max_symbol: int, reference_level: float, deadzone: float = 0.0):
        self.scales = np.ascontiguousarray(scales, dtype=np.float32)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.float32)
        self.side = np.ascontiguousarray(side, dtype=np.float64)
        L = self.scales.shape[0]
        if self.scales.shape != (L, S_LEVELS - 1, CONTEXT_BUCKETS) or self.offsets.shape != self.scales.shape:
            raise ValueError(f"v2 scales/offsets must be [L, {S_LEVELS - 1}, {CONTEXT_BUCKETS}]")
        if not np.all(np.isfinite(self.scales)) or not np.all(self.scales > 0):
            raise ValueError("v2 scales must be positive and finite")
        if self.side.shape != (S_LEVELS + 1, S_LEVELS) or not np.all(self.side > 0):
            raise ValueError(f"v2 side model must be [{S_LEVELS + 1}, {S_LEVELS}] and positive")
        if not (np.isfinite(delta) and delta > 0 and np.isfinite(reference_level) and reference_level > 0):
            raise ValueError("v2 delta and reference level must be positive")
        self.side /= self.side.sum(axis=1, keepdims=True)
        self.channels = L
        self.delta, self.knee, self.max_symbol = float(delta), float(knee), int(max_symbol)
        self.reference_level = float(reference_level)
        if not 0.0 <= deadzone < 0.5:
            raise ValueError("v2 dead zone must be in [0, 0.5)")
        self.deadzone = float(deadzone)
        self.thresholds = context_thresholds(CONTEXT_BUCKETS)
        self._scale64 = np.maximum(self.scales.astype(np.float64), 1e-3)
        self._scale64_flat = self._scale64.ravel()
        self._family = constriction.stream.model.QuantizedLaplace(-self.max_symbol, self.max_symbol)
        self._rows = np.arange(L)
        self._centroids = bool(np.any(self.offsets))
        # Decoder speed-ups, exactly buckets() and the neighbour rows of entropy._activity.
        self._lut_cap = int(np.ceil(self.thresholds[-1])) + 1 if len(self.thresholds) else 1
        self._bucket_lut = self.buckets(np.arange(self._lut_cap + 1))
        self._bucket_lut_from_minus1 = np.concatenate([[0], self._bucket_lut])  # feature -1 (no history): 0
        self._neigh = _neighbours(L)
        self._neigh_rows = np.ascontiguousarray(np.stack(self._neigh), dtype=np.int64)  # [4, L]: c-2, c-1, c+1, c+2
        self._edges: dict[int, np.ndarray] = {}

    # -- helpers shared by encoder and decoder ------------------------------------------------
    def buckets(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features)
        return np.where(f < 0, 0, np.searchsorted(self.thresholds, f, side="right") + 1)

    def edges(self, bands: int) -> np.ndarray:
        e = self._edges.get(bands)
        if e is None:  # a few band counts per stream: computed once each
            e = self._edges[bands] = band_edges(self.channels, bands)
            e.flags.writeable = False
        return e

    def quantize(self, y: np.ndarray, exponent: int, bands: int) -> Quantized:
        return quantize(y, self.delta, exponent, self.edges(bands), self.knee, self.max_symbol, self.deadzone)

    def _channel_scale(self, s: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.repeat(s, np.diff(edges))

    def _symbol_scales(self, pk: Quantized, bands: int) -> tuple[np.ndarray, np.ndarray]:
        """Channels that are coded (their band is not all zero) and their Laplace scales ``[La, F]``."""
        sc = self._channel_scale(pk.scales, self.edges(bands))
        active = sc > 0
        b = self._bucket_lut_from_minus1[np.minimum(context_features(pk.symbols), self._lut_cap) + 1]  # = buckets()
        # scale64[c, sc - 1, b] as one flat gather
        row = (self._rows[active] * self._scale64.shape[1] + sc[active] - 1) * self._scale64.shape[2]
        return active, self._scale64_flat[row[:, None] + b[active]]

    def _frame_scales(self, pk: Quantized, bands: int, native: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_symbol_scales` frame-major, ``[F, La]`` -- the order the symbols are coded in; in C
        (walloc_audio/_kernels.c) where built, the same integers and scales."""
        if native is None:
            native = _native.ENABLED
        if not native:
            active, table = self._symbol_scales(pk, bands)
            return active, np.ascontiguousarray(table.T)
        sc = self._channel_scale(pk.scales, self.edges(bands))
        active = sc > 0
        rows = np.flatnonzero(active)
        table = np.ascontiguousarray(self._scale64[rows, sc[rows] - 1])  # [La, buckets]
        out = np.empty((pk.symbols.shape[1], rows.size))
        _native.kernels.context_scales(np.ascontiguousarray(pk.symbols, dtype=np.int32), rows, self._neigh_rows,
                                self._bucket_lut, table, out)
        return active, out

    # -- coding -----------------------------------------------------------------------------
    def encode(self, pk: Quantized, bands: int) -> bytes:
        """One packet's payload: E index, band scales, then the symbols of nonzero bands."""
        enc = constriction.stream.queue.RangeEncoder()
        if pk.silent:
            enc.encode(np.array([SILENT], dtype=np.int32), _UNIFORM_E)
            return enc.get_compressed().tobytes()
        if not E_MIN <= pk.exponent <= E_MAX:
            raise ValueError(f"step exponent {pk.exponent} outside {E_MIN}..{E_MAX}")
        enc.encode(np.array([pk.exponent + E_BIAS], dtype=np.int32), _UNIFORM_E)
        s = pk.scales.astype(np.int32)
        prev = np.concatenate([[S_LEVELS], s[:-1]])
        enc.encode(s, _CATEGORICAL, self.side[prev])
        active, scales = self._frame_scales(pk, bands)  # [F, La]
        qa = pk.symbols[active]
        enc.encode(np.ascontiguousarray(qa.T).ravel(), self._family, np.zeros(qa.size), scales.ravel())
        return enc.get_compressed().tobytes()

    def bits(self, pk: Quantized, bands: int) -> float:
        """Ideal code length of a packet (side information included), in bits."""
        if pk.silent:
            return 8.0
        s = pk.scales
        prev = np.concatenate([[S_LEVELS], s[:-1]])
        side = -np.log2(self.side[prev, s]).sum() + 8.0
        active, table = self._symbol_scales(pk, bands)
        p = laplace_bin_probability(pk.symbols[active], table)
        return float(side - np.log2(np.maximum(p, 1e-12)).sum())

    def decode(self, payload: bytes, frames: int, bands: int) -> tuple[np.ndarray, int | None, np.ndarray]:
        """Payload -> ``(symbols [L, frames] int32, E, band scales)``; E is None for a silent packet."""
        words = _payload_words(payload)
        L = self.channels
        edges = self.edges(bands)
        q = np.zeros((L, frames), dtype=np.int32)
        try:
            dec = constriction.stream.queue.RangeDecoder(words)
            index = int(dec.decode(_UNIFORM_E, 1)[0])
            if index == SILENT:
                return q, None, np.zeros(bands, dtype=np.int64)
            s = np.empty(bands, dtype=np.int64)
            prev = S_LEVELS
            for i in range(bands):
                s[i] = prev = int(dec.decode(_CATEGORICAL, self.side[prev : prev + 1])[0])
            sc = self._channel_scale(s, edges)
            active = np.flatnonzero(sc > 0)
            if active.size and _native.ENABLED:
                # The same contexts as below, one C call a frame (walloc_audio/_kernels.c: decoder_step).
                rows = np.ascontiguousarray(active, dtype=np.int64)
                table = np.ascontiguousarray(self._scale64[active, sc[active] - 1])  # [La, buckets]
                zeros = np.zeros(active.size)
                scales = np.ascontiguousarray(table[:, 0])  # the first frame: bucket 0
                mags = np.zeros((frames, L), dtype=np.int64)
                cols = []
                for t in range(frames):
                    qt = np.asarray(dec.decode(self._family, zeros, scales), dtype=np.int32)
                    cols.append(qt)
                    if t + 1 < frames:
                        scales = np.empty(active.size)
                        _native.kernels.decoder_step(qt, mags, t, rows, self._neigh_rows, self._bucket_lut, table, scales)
                q[active] = np.stack(cols, axis=1)
            elif active.size:
                # The context of frame t (entropy.context_features, one frame at a time): magnitudes
                # one, two and three frames back, rolled forward as frames are decoded.
                table = self._scale64[active, sc[active] - 1]  # [La, buckets]
                rows = np.arange(active.size)
                zeros = np.zeros(active.size)
                m2, m1, p1, p2 = self._neigh
                a1 = np.zeros(L, dtype=np.int64)
                a2 = a3 = a1
                for t in range(frames):
                    if t == 0:
                        scales = table[:, 0]
                    else:
                        f = 4 * a1 + 2 * a2 + a3 + 2 * (a1[m1] + a1[p1]) + a1[m2] + a1[p2]
                        scales = table[rows, self._bucket_lut[np.minimum(f[active], self._lut_cap)]]
                    qt = dec.decode(self._family, zeros, scales)
                    q[active, t] = qt
                    new = np.zeros(L, dtype=np.int64)
                    new[active] = np.abs(qt)
                    a3, a2, a1 = (a2, a1, new) if t else (new, new, new)
        except Exception as exc:  # constriction raises plain errors on garbage
            raise BitstreamError(f"packet payload cannot be range-decoded ({exc})") from None
        return q, index - E_BIAS, s

    def dequantize(self, q: np.ndarray, exponent: int | None, scales: np.ndarray, bands: int) -> np.ndarray:
        """Symbols and side information of one packet -> latents in absolute units ``[L, F]`` float32."""
        if exponent is None:
            return np.zeros(q.shape, dtype=np.float32)
        sc = self._channel_scale(np.asarray(scales), self.edges(bands))
        w = q.astype(np.float32)
        if self._centroids:
            b = self.buckets(context_features(q))
            off = self.offsets[self._rows[:, None], np.maximum(sc, 1)[:, None] - 1, b]
            w = w - np.sign(w) * off
        return expand(w, self.knee) * step_for(self.delta, exponent)

    def decode_latents(self, payload: bytes, frames: int, bands: int) -> np.ndarray:
        q, e, s = self.decode(payload, frames, bands)
        return self.dequantize(q, e, s, bands)
