"""Training losses in the codec's domains: per-clip normalised MSE, multi-resolution STFT, a Laplace rate term."""

from __future__ import annotations

import torch


def normalised_mse_db(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip error-to-signal ratio in dB, averaged over the batch.

    Averaging dB rather than errors weighs a quiet clip like a loud one -- the
    per-clip SNR and the paper's per-clip PSNR reward exactly that; a plain MSE
    would only train on the loudest clips of a batch.
    """
    err = (y - x).pow(2).mean(dim=(1, 2))
    return (10 * torch.log10((err + 1e-12) / (x.pow(2).mean(dim=(1, 2)) + 1e-9))).mean()

def mrstft_loss(y: torch.Tensor, x: torch.Tensor, sizes=(512, 1024, 2048)) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1, averaged over sizes."""
    y2, x2 = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
    total = y.new_zeros(())
    for n in sizes:
        win = torch.hann_window(n, device=y.device)
        Y = torch.stft(y2, n, n // 4, window=win, return_complex=True).abs()
        X = torch.stft(x2, n, n // 4, window=win, return_complex=True).abs()
        sc = torch.linalg.norm(Y - X) / (torch.linalg.norm(X) + 1e-7)
        total = total + sc + (torch.log(Y + 1e-5) - torch.log(X + 1e-5)).abs().mean()
    return total / len(sizes)

class LaplaceRate(torch.nn.Module):
    """Differentiable rate proxy: bits of noisy companded latents under a per-channel Laplace."""

    def __init__(self, channels: int):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b = self.log_scale.exp()[:, None]

        def cdf(t):
            return 0.5 + 0.5 * torch.sign(t) * (1 - torch.exp(-t.abs() / b))

        p = cdf(v + 0.5) - cdf(v - 0.5)
        return -torch.log2(p.clamp_min(1e-9)).mean()
