"""Compander and scalar quantizer between the linear encoder and the entropy coder.

Each latent channel ``k`` is divided by its step ``delta_k`` and companded by a
square-root law with knee ``b`` (in steps)::

    u = y / delta_k
    v = sign(u) * b * (sqrt(1 + 2|u|/b) - 1)        inverse:  u = v + sign(v) v^2 / (2b)

Near zero ``v ~= u`` (slope 1), so ordinary latents are quantized uniformly with
step ``delta_k`` -- what rate-distortion theory asks of an orthonormal transform
coder; far out the step grows like ``sqrt(|u|/b)``, so a loud passage widens the
step instead of saturating the alphabet (the fixed 8-bit Gaussian compander of
the original saturates above ~60 kbps). Symbols are ``round(v)`` clamped to
``[-A, A]`` with ``A = 2**(bits-1) - 1``.

Determinism: the compander uses only ``* / + - sqrt``, which IEEE 754 rounds
exactly, so a symbol is a fixed function of its float32 latent on every
machine and for every vector width (a transcendental compander such as
``log1p`` or ``erf`` would not be: SIMD and scalar versions differ in the last
bit, which can flip a rounding).

Quantization modes (CompressAI's convention):
    ``noise``    v + U(-1/2, 1/2)   -- training proxy for rounding
    ``round``    round(v), straight-through gradient
    ``symbols``  integer symbols (int32)
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """Per-channel step, compander and quantizer.

    Args:
        channels: number of latent channels ``L``.
        bits: alphabet of ``2**bits - 1`` symbols ``[-A, A]``.
        knee: compander knee ``b`` in steps (0 disables companding).

    Shape: latents ``[B, L, K]`` (or ``[L, K]``) in and out; symbols int32.
    """

    def __init__(self, channels: int, bits: int = 12, knee: float = 512.0):
        super().__init__()
        assert 2 <= bits <= 16, f"latent_bits must be in 2..16, got {bits}"
        self.channels, self.bits, self.knee = channels, bits, float(knee)
        self.max_symbol = 2 ** (bits - 1) - 1
        self.log_step = nn.Parameter(torch.zeros(channels))

    @property
    def alphabet_size(self) -> int:
        return 2 * self.max_symbol + 1

    def step(self) -> torch.Tensor:
        return self.log_step.exp()

    def compand(self, u: torch.Tensor) -> torch.Tensor:
        if self.knee <= 0:
            return u
        b = self.knee
        return torch.sign(u) * (b * (torch.sqrt(1.0 + u.abs() * (2.0 / b)) - 1.0))

    def expand(self, v: torch.Tensor) -> torch.Tensor:
        if self.knee <= 0:
            return v
        return v + torch.sign(v) * (v * v) * (0.5 / self.knee)

    def _scaled(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.step()
        step = step[:, None] if y.dim() >= 2 else step
        return y / step, step

    def companded(self, y: torch.Tensor) -> torch.Tensor:
        """Latents in symbol units before rounding: ``compand(y / step)`` (differentiable)."""
        return self.compand(self._scaled(y)[0])

    def forward(self, y: torch.Tensor, mode: str = "noise") -> torch.Tensor:
        """Quantize float latents ``y``; returns dequantized latents (or symbols)."""
        if mode == "symbols":
            return self.symbols(y)
        u, step = self._scaled(y)
        v = self.compand(u)
        if mode == "noise":
            v = v + torch.empty_like(v).uniform_(-0.5, 0.5)
        elif mode == "round":
            v = v + (torch.round(v) - v).detach()
        else:
            raise ValueError(f"unknown quantization mode {mode!r} (noise | round | symbols)")
        v = v.clamp(-self.max_symbol - 0.5, self.max_symbol + 0.5)
        return self.expand(v) * step

    @torch.no_grad()
    def symbols(self, y: torch.Tensor) -> torch.Tensor:
        """Integer symbols in ``[-A, A]`` for latents ``[L, K]`` or ``[B, L, K]``."""
        assert y.shape[-2] == self.channels, f"expected [..., {self.channels}, K], got {tuple(y.shape)}"
        v = self.companded(y.detach().to(torch.float32))
        return torch.round(v).clamp_(-self.max_symbol, self.max_symbol).to(torch.int32)

    @torch.no_grad()
    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Symbols (or reconstruction points in symbol units) ``[..., L, K]`` -> latents (float32)."""
        return self.expand(q.to(torch.float32)) * self.step().detach()[:, None]
