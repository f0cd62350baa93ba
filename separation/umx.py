"""Open-Unmix as the peer: the spectrogram model people pick for MUSDB-style separation.

``openunmix`` (PyPI) ships the model classes but not its training script, so
this module trains them the way Open-Unmix does: one :class:`OpenUnmix` per
target, each mapping the mixture's magnitude STFT (4096-point, hop 1024, the
non-centred training STFT) to the target's, with MSE on magnitudes; inputs
normalised by the training set's per-bin mean and standard deviation
(:func:`input_stats`); the LSTM sees bins up to 16 kHz (``max_bin``).
Inference is ``openunmix.model.Separator`` (mixture phase, Wiener filtering
with ``niter`` iterations), the same as ``umx`` on the command line.

:class:`UMXBaseline` holds the four targets in one module, so one optimiser
step trains all of them on the same batch, at one wall-clock budget.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import STEMS

N_FFT, N_HOP = 4096, 1024


def max_bin_for(bandwidth_hz: float, sample_rate: int = 44100, n_fft: int = N_FFT) -> int:
    """The number of STFT bins up to ``bandwidth_hz`` (Open-Unmix's ``bandwidth`` option)."""
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth_hz)[0])) + 1


class UMXBaseline(nn.Module):
    """Mixture audio ``[B, C, T]`` -> magnitude estimates ``[B, S, C, bins, frames]`` (training),
    or -> audio ``[B, S, C, T]`` through :meth:`separator` (inference).

    Args:
        hidden_size, nb_layers: Open-Unmix's (512 and 3 in the published model).
        bandwidth_hz: the LSTM's input band (16 kHz in Open-Unmix).
        input_mean / input_scale: per-bin statistics of training mixtures (:func:`input_stats`).
    """

    def __init__(self, nb_channels: int = 2, hidden_size: int = 512, nb_layers: int = 3,
                 bandwidth_hz: float = 16000.0, sample_rate: int = 44100, input_mean: np.ndarray | None = None,
                 input_scale: np.ndarray | None = None, targets=STEMS):
        super().__init__()
        from openunmix.model import OpenUnmix
        from openunmix.transforms import ComplexNorm, make_filterbanks

        self.targets = tuple(targets)
        self.nb_bins = N_FFT // 2 + 1
        self.max_bin = max_bin_for(bandwidth_hz, sample_rate)
        self.stft, _ = make_filterbanks(n_fft=N_FFT, n_hop=N_HOP, center=False, sample_rate=sample_rate)
        self.norm = ComplexNorm(mono=nb_channels == 1)
        self.models = nn.ModuleDict({
            t: OpenUnmix(nb_bins=self.nb_bins, nb_channels=nb_channels, hidden_size=hidden_size,
                         nb_layers=nb_layers, max_bin=self.max_bin, input_mean=input_mean, input_scale=input_scale)
            for t in self.targets})
        self.config = {"nb_channels": nb_channels, "hidden_size": hidden_size, "nb_layers": nb_layers,
                       "bandwidth_hz": bandwidth_hz, "sample_rate": sample_rate}
        self.sample_rate = sample_rate

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C, T]`` audio -> ``[..., C, bins, frames]`` magnitudes (the training STFT)."""
        lead = x.shape[:-2]
        m = self.norm(self.stft(x.reshape(-1, *x.shape[-2:])))
        return m.reshape(*lead, *m.shape[1:])

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        X = self.magnitude(mix)
        return torch.stack([self.models[t](X) for t in self.targets], dim=1)

    def loss(self, mix: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
        """Open-Unmix's training loss: MSE of magnitudes, summed over targets (each target's own loss)."""
        est = self(mix)
        with torch.no_grad():
            ref = self.magnitude(stems)
        return ((est - ref) ** 2).mean(dim=(0, 2, 3, 4)).sum()

    def separator(self, niter: int = 1):
        """``openunmix.model.Separator`` over the trained targets: audio in, audio out ``[B, S, C, T]``."""
        from openunmix.model import Separator

        return Separator(dict(self.models), niter=niter, sample_rate=self.sample_rate, n_fft=N_FFT, n_hop=N_HOP,
                         nb_channels=self.config["nb_channels"]).eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def input_stats(mixtures, stft_model: UMXBaseline) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and standard deviation of mixture magnitudes (both channels), as Open-Unmix's
    training script computes them before training; ``mixtures``: an iterable of ``[C, T]`` tensors."""
    total = total_sq = None
    count = 0
    with torch.no_grad():
        for x in mixtures:
            m = stft_model.magnitude(x[None])[0]  # [C, bins, frames]
            m = m.permute(1, 0, 2).reshape(m.shape[1], -1).double()  # [bins, C*frames]
            s, s2 = m.sum(1), (m**2).sum(1)
            total = s if total is None else total + s
            total_sq = s2 if total_sq is None else total_sq + s2
            count += m.shape[1]
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean**2, min=1e-16))
    return mean.float().numpy(), np.maximum(std.float().numpy(), 1e-4)
