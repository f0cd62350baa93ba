"""Distances between an original and its decode, per track: the signal figures of
:mod:`walloc_audio.metrics` (SNR, SI-SDR, PSNR, paper PSNR) and the spectral ones
computed here with torch (multi-resolution STFT, log-mel)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import torch

from walloc_audio.metrics import _energy, paper_psnr, psnr_db, si_sdr_db, snr_db

FFT_SIZES = (512, 1024, 2048)
LOG_EPS = 1e-5
CHUNK = 1 << 20  # samples per channel per STFT call: bounded memory on long tracks

def _chunks(x: torch.Tensor, y: torch.Tensor) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Pieces of ``[C, T]`` tensors, at most :data:`CHUNK` samples long (the last one merged if tiny)."""
    n = x.shape[-1]
    starts = list(range(0, n, CHUNK))
    if len(starts) > 1 and n - starts[-1] < CHUNK // 4:
        starts.pop()
    bounds = starts[1:] + [n]
    for a, b in zip(starts, bounds):
        yield x[..., a:b], y[..., a:b]


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.atleast_2d(np.asarray(a, np.float32)).copy())


def _magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft)
    return torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True).abs()


def mrstft_distance(x: np.ndarray, y: np.ndarray, sizes: Sequence[int] = FFT_SIZES) -> float:
    """Multi-resolution STFT distance: mean over FFT sizes of spectral convergence + log-magnitude L1.

    For each size (hop = size / 4, Hann window): ``||Y| - |X||_F / ||X||_F``
    plus ``mean |log(|Y| + eps) - log(|X| + eps)|``, summed over all channels
    and time. 0 for identical signals.
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    total = 0.0
    for n_fft in sizes:
        diff2 = ref2 = log_sum = 0.0
        count = 0
        for xc, yc in _chunks(xt, yt):
            mx, my = _magnitude(xc, n_fft), _magnitude(yc, n_fft)
            diff2 += float((my - mx).double().pow(2).sum())
            ref2 += float(mx.double().pow(2).sum())
            log_sum += float((torch.log(my + LOG_EPS) - torch.log(mx + LOG_EPS)).abs().double().sum())
            count += mx.numel()
        convergence = math.sqrt(diff2) / math.sqrt(ref2) if ref2 > 0 else (0.0 if diff2 == 0 else math.inf)
        total += convergence + log_sum / max(count, 1)
    return total / len(sizes)


@lru_cache(maxsize=4)
def _mel_transform(sample_rate: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=2048, hop_length=512, n_mels=80, power=1.0)


def mel_distance(x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """Log-mel distance: ``mean |log mel(Y) - log mel(X)|`` (80 mels, n_fft 2048, hop 512). 0 if identical."""
    mel = _mel_transform(int(sample_rate))
    total, count = 0.0, 0
    for xc, yc in _chunks(_as_tensor(x), _as_tensor(y)):
        with torch.no_grad():
            d = torch.log(mel(yc) + LOG_EPS) - torch.log(mel(xc) + LOG_EPS)
        total += float(d.abs().double().sum())
        count += d.numel()
    return total / max(count, 1)


def track_metrics(x: np.ndarray, y: np.ndarray, sample_rate: int) -> dict:
    """Every per-track figure, plus the energies that the set SNR sums."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return {
        "energy": _energy(x64),
        "error": _energy(y64 - x64),
        "snr_db": snr_db(x64, y64),
        "si_sdr_db": si_sdr_db(x64, y64),
        "psnr_db": psnr_db(x64, y64),
        "psnr_paper_db": paper_psnr(x64, y64),
        "mrstft": mrstft_distance(x, y),
        "mel_distance": mel_distance(x, y, sample_rate),
    }
