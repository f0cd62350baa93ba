"""Signal figures every report uses (numpy only): SNR, SI-SDR, PSNR and the WaLLoC paper's PSNR.

The one place these are computed (eval, training records, benchmarks, separation).

An error-free decode has an infinite SNR (reports print it as such), a silent reference minus infinity."""

from __future__ import annotations

import math

import numpy as np


def _energy(a: np.ndarray) -> float:
    return float(np.sum(np.square(a, dtype=np.float64)))


def _ratio_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    """SNR of ``y`` against reference ``x``: ``10 log10(sum x^2 / sum (y - x)^2)``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return _ratio_db(_energy(x), _energy(y - x))


def paper_psnr(x: np.ndarray, y: np.ndarray) -> float:
    """WaLLoC paper's PSNR: remove the mean, scale the clip's peak to 0.5, -10 log10 MSE."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mean = x.mean()
    scale = 0.5 / max(np.abs(x - mean).max(), 1e-12)
    mse = np.mean(((y - mean) * scale - (x - mean) * scale) ** 2)
    return float(-10 * math.log10(max(mse, 1e-20)))


def si_sdr_db(x: np.ndarray, y: np.ndarray) -> float:
    """Scale-invariant SDR: per channel, zero-mean, ``y``'s best gain removed; mean over channels.

    Silent reference channels have no defined SI-SDR and are left out (NaN if all are).
    """
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    values = []
    for xc, yc in zip(x, y):
        xc, yc = xc - xc.mean(), yc - yc.mean()
        ref = _energy(xc)
        if ref <= 0:
            continue
        target = (np.dot(yc, xc) / ref) * xc
        values.append(_ratio_db(_energy(target), _energy(yc - target)))
    return float(np.mean(values)) if values else math.nan


def psnr_db(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR at full scale 1.0 (samples in [-1, 1]): ``-10 log10(mean((y - x)^2))``."""
    err = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    return _ratio_db(1.0, float(np.mean(np.square(err))))
