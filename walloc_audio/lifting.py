"""The wavelet packet analysis by lifting steps: the encoder's fast path.

The fused frame-domain FIR of :mod:`walloc_audio.wavelets` costs ``M * L`` multiply-adds
per sample (864 at J = 8, 108 latents): every latent is a long filter of the input.
The same transform factors into the CDF 9/7 lifting steps of each level of the packet
tree (Daubechies & Sweldens): a level splits a band into its even samples ``s`` and odd
samples ``d`` and runs four predict/update steps in place::

    d[k] += a (s[k] + s[k+1]);   s[k] += b (d[k-1] + d[k])
    d[k] += c (s[k] + s[k+1]);   s[k] += e (d[k-1] + d[k])

then scales ``s`` by ``zeta`` and ``d`` by ``-1/zeta`` (PyWavelets' ``bior4.4`` signs and
normalisation). The full tree repeats that on every band of every level, about 4
multiply-adds per sample per level, ~32 at J = 8; the 1x1 encoder adds ``L`` per sample.

Two savings on top: the scalings are never applied -- a level is linear, so the product of
the scalings on a band's path multiplies its final coefficients and is folded into the
encoder's columns, together with the natural-to-frequency band order; and nothing is
computed outside the block: the edges of a block are extended by zeros, which only spoils
coefficients whose filters reach past the block -- the encoder keeps ``M - 1`` frames of
history, so the coefficients it uses are exactly the transform of the stream.

The encoder runs these steps in C (``walloc_audio/_kernels.c``, built at install; 3-4x the
NumPy path's speed, which makes a dozen passes over the signal per level): the same float32
operations in the same order with no fused multiply-add, so both paths give the same bits
(tests), and an install without a compiler runs the NumPy path.

Determinism: lifting is element-wise (no reductions), so each coefficient is the same
float32 function of the same samples whatever the block it was computed in; the encoder's
matrix product has a fixed shape (see :mod:`walloc_audio.codec_stream`). The result
equals the FIR's up to float32 rounding (tests: same symbols on all but latents within
rounding of a bin edge).
"""

from __future__ import annotations

import numpy as np

from . import native as _native

# CDF 9/7 lifting constants (Daubechies & Sweldens 1998, the JPEG 2000 irreversible transform).
ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
ZETA = 1.149604398860241
LOW_SCALE, HIGH_SCALE = ZETA, -1.0 / ZETA  # s and d of one level against PyWavelets' bior4.4
# The four step constants as float32 values (what the NumPy steps use), for the C kernels.
_STEPS_F32 = tuple(float(v) for v in np.array([ALPHA, BETA, GAMMA, DELTA], dtype=np.float32))


def band_scales(levels: int) -> np.ndarray:
    """Product of the per-level scalings on each band's path, natural (Paley) order: ``[2**J]``."""
    scale = np.ones(1)
    for _ in range(levels):
        scale = np.stack([scale * LOW_SCALE, scale * HIGH_SCALE], axis=1).reshape(-1)
    return scale


def _predict(target: np.ndarray, source: np.ndarray, coef: np.float32, tmp: np.ndarray) -> None:
    """``target[k] += coef * (source[k] + source[k+1])``, zero past the end (in place)."""
    np.add(source[..., :-1], source[..., 1:], out=tmp[..., :-1])
    tmp[..., -1] = source[..., -1]
    tmp *= coef
    target += tmp


def _update(target: np.ndarray, source: np.ndarray, coef: np.float32, tmp: np.ndarray) -> None:
    """``target[k] += coef * (source[k-1] + source[k])``, zero before the start (in place)."""
    np.add(source[..., :-1], source[..., 1:], out=tmp[..., 1:])
    tmp[..., 0] = source[..., 0]
    tmp *= coef
    target += tmp


def packet_lifting(x: np.ndarray, levels: int, native: bool | None = None) -> np.ndarray:
    """Unscaled packet coefficients of ``x`` ``[C, n]`` (``n`` a multiple of ``2**J``): ``[C, 2**J, n / 2**J]``.

    Bands in natural (Paley) order; multiply band ``p`` by ``band_scales(J)[p]`` for the
    PyWavelets ``bior4.4`` packet coefficients (what :func:`walloc_audio.wavelets.packet_filters`
    computes). Coefficient ``k`` of a band sits where sample ``k * 2**J`` does; samples
    outside ``x`` count as zero.

    Float32 input runs the C tree where it is built (``native``: None for
    :data:`walloc_audio.native.ENABLED`); it gives the same bits as the NumPy steps below, which
    run for float64 and without it.
    """
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    c, n = x.shape
    assert n % (1 << levels) == 0, f"length {n} is not a multiple of 2**{levels}"
    if native is None:
        native = _native.ENABLED
    if native and dtype == np.float32 and n > 0:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((c, 1 << levels, n >> levels), dtype=np.float32)
        _native.kernels.packet_tree(x, out, np.empty_like(x), levels, *_STEPS_F32)
        return out
    a, b, g, e = np.array([ALPHA, BETA, GAMMA, DELTA], dtype=dtype)
    cur = x.astype(dtype, copy=False).reshape(c, 1, n)
    tmp_all = np.empty(c * n // 2, dtype=dtype)
    for _ in range(levels):
        bands, m = cur.shape[1], cur.shape[2] // 2
        out = np.empty((c, bands, 2, m), dtype=dtype)
        out[:, :, 0] = cur[:, :, 0::2]
        out[:, :, 1] = cur[:, :, 1::2]
        s, d = out[:, :, 0], out[:, :, 1]
        tmp = tmp_all.reshape(c, bands, m)
        _predict(d, s, a, tmp)
        _update(s, d, b, tmp)
        _predict(d, s, g, tmp)
        _update(s, d, e, tmp)
        cur = out.reshape(c, 2 * bands, m)
    return cur


def packet_unlifting(coef: np.ndarray, native: bool | None = None) -> np.ndarray:
    """Inverse of :func:`packet_lifting`: unscaled bands ``[C, 2**J, m]`` (natural order) -> ``[C, m * 2**J]``.

    Each level undoes the four steps in reverse order (with the same zero edges) and
    interleaves a pair of sibling bands into their parent. The decoder's synthesis
    (:class:`walloc_audio.runtime.LiftingSynthesis`) runs it in C for float32 where built.
    """
    coef = np.asarray(coef)
    dtype = np.float64 if coef.dtype == np.float64 else np.float32
    c, p, m = coef.shape
    levels = p.bit_length() - 1
    assert p == 1 << levels and m >= 1, f"bad band array {coef.shape}"
    if native is None:
        native = _native.ENABLED
    if native and dtype == np.float32:
        coef = np.ascontiguousarray(coef, dtype=np.float32)
        out = np.empty((c, p * m), dtype=np.float32)
        _native.kernels.packet_untree(coef, out, np.empty_like(out), levels, *_STEPS_F32)
        return out
    a, b, g, e = np.array([ALPHA, BETA, GAMMA, DELTA], dtype=dtype)
    cur = coef.astype(dtype, copy=True)
    tmp_all = np.empty(c * p * m // 2, dtype=dtype)
    for _ in range(levels):
        bands, h = cur.shape[1] // 2, cur.shape[2]
        pair = cur.reshape(c, bands, 2, h)
        s, d = pair[:, :, 0], pair[:, :, 1]
        tmp = tmp_all.reshape(c, bands, h)
        _update(s, d, -e, tmp)
        _predict(d, s, -g, tmp)
        _update(s, d, -b, tmp)
        _predict(d, s, -a, tmp)
        out = np.empty((c, bands, h, 2), dtype=dtype)
        out[..., 0] = s
        out[..., 1] = d
        cur = out.reshape(c, bands, 2 * h)
    return cur.reshape(c, p * m)
