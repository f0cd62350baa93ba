"""The reference WaLLoC scheme as a baseline: float latents coded as a lossless WebP image.

What the published WaLLoC does with its latents (``walloc`` 1.2.1 on PyPI), applied to the
linear analysis of a model here (``stereo-5x-linear``: the same kind of 108-latent PCA
encoder), so that ``walloc-audio eval`` compares our entropy model with a generic image
coder on the same latents:

1. each clip's latents ``z [L, K]`` are normalised: the mean removed, then scaled so the
   largest magnitude is 0.5 (two float32 side values per clip);
2. an 8-bit Gaussian-CDF compander ``u = 2 M (Phi(z / sigma) - 1/2)`` with ``M = 127.5``,
   rounded and clipped to -128..127, +128 as uint8; the decoder inverts it
   (``sigma * Phi^-1(u / 2M + 1/2)``, clamped inside (0, 1));
3. the frames are laid out as ``(L, K / 256, 256)`` and the ``L = 3 * n^2`` latents tiled
   ``n x n`` into one RGB image (channel ``c * n^2 + i * n + j`` goes to tile ``(i, j)``,
   colour ``c``), coded by Pillow as lossless WebP (effort ``method=4``: on music latents the
   same bytes as the slowest ``method=6``, measured, in an eighth of the time).

``sigma`` (the compander's spread on the normalised latents) is the rate knob: the
reference has one fixed value per trained model; here a few values trace a curve.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass

import numpy as np

ROW = 256          # frames per image row
LEVELS_HALF = 127.5
SIDE_BYTES = 8     # mean and scale per clip, float32
SIGMAS = (0.02, 0.04, 0.08)


def compand(z: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised latents -> uint8 symbols (the 8-bit Gaussian-CDF compander, rounded)."""
    from scipy.special import ndtr  # the standard normal CDF

    u = np.round(2 * LEVELS_HALF * (ndtr(np.asarray(z, np.float64) / sigma) - 0.5))
    return (np.clip(u, -128, 127) + 128).astype(np.uint8)


def expand(q: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 symbols -> normalised latents (the inverse compander)."""
    from scipy.special import ndtri  # its inverse

    p = np.clip((q.astype(np.float64) - 128) / (2 * LEVELS_HALF) + 0.5, 1e-4, 1 - 1e-4)
    return sigma * ndtri(p)


def tile(q: np.ndarray) -> np.ndarray:
    """``[L, h, w]`` uint8 with ``L = 3 n^2`` -> an RGB image ``[n h, n w, 3]``."""
    L, h, w = q.shape
    n = math.isqrt(L // 3)
    if 3 * n * n != L:
        raise ValueError(f"{L} latents are not 3 * n^2 (the reference tiles RGB n x n)")
    return q.reshape(3, n, n, h, w).transpose(1, 3, 2, 4, 0).reshape(n * h, n * w, 3)


def untile(img: np.ndarray, L: int) -> np.ndarray:
    n = math.isqrt(L // 3)
    H, W, _ = img.shape
    h, w = H // n, W // n
    return img.reshape(n, h, n, w, 3).transpose(4, 0, 2, 1, 3).reshape(L, h, w)


@dataclass
class Coded:
    y: np.ndarray     # decoded PCM [C, T]
    bytes: int        # WebP bytes + side values
    encode_s: float
    decode_s: float


def code(x: np.ndarray, runtime, sigma: float) -> Coded:
    """Audio ``[C, T]`` through the reference scheme with the linear codec ``runtime``; back to PCM."""
    from PIL import Image

    cfg = runtime.config
    t0 = time.perf_counter()
    T = x.shape[1]
    pad = (-T) % cfg.frame + cfg.flush_frames * cfg.frame
    z = runtime.analyze(np.pad(x, ((0, 0), (0, pad))))  # [L, K]
    L, K = z.shape
    mean = float(z.mean())
    peak = float(np.max(np.abs(z - mean))) or 1.0
    scale = 0.5 / peak
    q = compand((z - mean) * scale, sigma)
    rows = -(-K // ROW)
    q = np.pad(q, ((0, 0), (0, rows * ROW - K)), constant_values=128).reshape(L, rows, ROW)
    buf = io.BytesIO()
    Image.fromarray(tile(q), mode="RGB").save(buf, format="WEBP", lossless=True, quality=100, method=4)
    data = buf.getvalue()
    t1 = time.perf_counter()
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    zq = expand(untile(img, L).reshape(L, -1)[:, :K], sigma) / scale + mean
    y = runtime.synthesize(zq.astype(np.float32))
    d = cfg.delay_samples
    y = y[:, d : d + T]
    return Coded(np.ascontiguousarray(y), len(data) + SIDE_BYTES, t1 - t0, time.perf_counter() - t1)
