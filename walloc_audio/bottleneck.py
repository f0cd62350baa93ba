"""Compander and scalar quantizer between the linear encoder and the entropy coder.

Each latent channel ``k`` is divided by its step ``delta_k`` and companded::

    u = y / delta_k
    v = sign(u) * b * log(1 + |u| / b)        (b = knee; b = 0 means no companding)

Near zero ``v ~= u``, so small latents are quantized uniformly with step
``delta_k``; far from zero the step grows in proportion to the magnitude, so a
loud passage never saturates the alphabet (the fixed 8-bit Gaussian compander
of the original saturates above ~60 kbps). Symbols are ``round(v)`` clamped to
``[-A, A]`` with ``A = 2**(bits-1) - 1``.

Quantization modes (CompressAI's convention):
    ``noise``    v + U(-1/2, 1/2)   -- training proxy for rounding
    ``round``    round(v), straight-through gradient
    ``symbols``  integer symbols (int32), exact and deterministic

``symbols`` never rounds a transcendental function: the decision thresholds are
precomputed in the latent domain and found by binary search, so the symbol of a
latent depends only on comparisons and is identical on every machine.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """Per-channel step, compander and quantizer.

    Args:
        channels: number of latent channels.
        bits: alphabet of ``2**bits - 1`` symbols ``[-A, A]``.
        knee: compander knee ``b`` in steps (0 disables companding).

    Shape: latents ``[B, L, K]`` in and out; symbols ``[B, L, K]`` int32.
    """

    def __init__(self, channels: int, bits: int = 10, knee: float = 64.0):
        super().__init__()
        assert 2 <= bits <= 16, f"latent_bits must be in 2..16, got {bits}"
        self.channels, self.bits, self.knee = channels, bits, float(knee)
        self.max_symbol = 2 ** (bits - 1) - 1
        self.log_step = nn.Parameter(torch.zeros(channels))
        self._thresholds: torch.Tensor | None = None

    @property
    def alphabet_size(self) -> int:
        return 2 * self.max_symbol + 1

    def step(self) -> torch.Tensor:
        return self.log_step.exp()

    def compand(self, u: torch.Tensor) -> torch.Tensor:
        if self.knee <= 0:
            return u
        return torch.sign(u) * self.knee * torch.log1p(u.abs() / self.knee)

    def expand(self, v: torch.Tensor) -> torch.Tensor:
        if self.knee <= 0:
            return v
        return torch.sign(v) * self.knee * torch.expm1(v.abs() / self.knee)

    def forward(self, y: torch.Tensor, mode: str = "noise") -> torch.Tensor:
        """Quantize float latents ``y``; returns dequantized latents (or symbols)."""
        if mode == "symbols":
            return self.symbols(y)
        step = self.step()[:, None]
        v = self.compand(y / step)
        if mode == "noise":
            v = v + torch.empty_like(v).uniform_(-0.5, 0.5)
        elif mode == "round":
            v = v + (torch.round(v) - v).detach()
        else:
            raise ValueError(f"unknown quantization mode {mode!r} (noise | round | symbols)")
        v = v.clamp(-self.max_symbol - 0.5, self.max_symbol + 0.5)
        return self.expand(v) * step

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Symbols ``[..., L, K]`` -> latents (float32)."""
        return self.expand(q.to(torch.float32)) * self.step().detach()[:, None]

    # -- exact symbol decisions ------------------------------------------------------------
    def thresholds(self) -> torch.Tensor:
        """``[L, 2A]`` decision boundaries in the latent domain (cached until weights change)."""
        if self._thresholds is None:
            half = torch.arange(-self.max_symbol, self.max_symbol, dtype=torch.float64) + 0.5
            b = torch.as_tensor(self.knee, dtype=torch.float64)
            u = torch.sign(half) * b * torch.expm1(half.abs() / b) if self.knee > 0 else half
            step = self.log_step.detach().to(torch.float64).exp()[:, None]
            self._thresholds = (u[None, :] * step).to(torch.float32).contiguous()
        return self._thresholds

    def invalidate(self) -> None:
        """Call after changing ``log_step`` outside of training."""
        self._thresholds = None

    def symbols(self, y: torch.Tensor) -> torch.Tensor:
        """Integer symbols in ``[-A, A]`` for latents ``[L, K]`` or ``[B, L, K]``."""
        thr = self.thresholds()
        if y.dim() == 3:
            thr = thr.expand(y.shape[0], -1, -1)
        idx = torch.searchsorted(thr, y.detach().to(torch.float32).contiguous(), right=True)
        return (idx - self.max_symbol).to(torch.int32)
