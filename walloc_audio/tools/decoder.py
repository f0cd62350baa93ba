"""Shallow nonlinear decoder: latent frames -> wavelet packet coefficients.

Oobleck-style residual units (Snake -> dilated conv -> Snake -> 1x1 conv, plus
the skip) on the latent frame sequence, on top of a linear path. The output is
``linear(latents) + net(latents)``; the net's last layer starts at zero, so a
fresh decoder *is* the linear decoder and training only adds to it.

Causality: every convolution is padded on the left only, except that the first
``lookahead_frames`` frames of future context are granted by shifting the input
(``lookahead_frames = 0`` is strictly causal). ``receptive_field`` says how many
past frames an output depends on, so a chunked decoder knows how much context
to carry. ``depth = 0`` is a purely linear decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Snake(nn.Module):
    """``x + sin^2(alpha * x) / alpha`` with a learned ``alpha`` per channel (shape ``[B, C, T]``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return x + torch.sin(a * x).pow(2) / (a + 1e-9)


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left so output ``t`` sees inputs ``<= t`` (same length)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.kernel_size[0] - 1) * self.dilation[0]
        return super().forward(F.pad(x, (pad, 0)))


class ResidualUnit(nn.Module):
    def __init__(self, width: int, kernel: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(width),
            CausalConv1d(width, width, kernel, dilation=dilation),
            Snake(width),
            nn.Conv1d(width, width, 1),
        )
        self.context = (kernel - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Decoder(nn.Module):
    """Latents ``[B, L, K]`` -> packet coefficients ``[B, D, K]``.

    Args:
        latent_dim, out_dim: ``L`` and ``D = C * 2**J``.
        width, depth, kernel: residual stack (``depth = 0``: linear only).
        lookahead_frames: future latent frames each output may use.
    """

    def __init__(self, latent_dim: int, out_dim: int, width: int = 0, depth: int = 0,
                 kernel: int = 3, lookahead_frames: int = 0):
        super().__init__()
        self.linear = nn.Parameter(torch.zeros(out_dim, latent_dim))
        self.lookahead_frames = lookahead_frames
        self.depth = depth
        if depth > 0:
            assert width > 0, "a nonlinear decoder needs width > 0"
            units = [ResidualUnit(width, kernel, 3**i) for i in range(depth)]
            self.net = nn.Sequential(
                nn.Conv1d(latent_dim, width, 1), *units, Snake(width), nn.Conv1d(width, out_dim, 1)
            )
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
            self.receptive_field = 1 + sum(u.context for u in units)
        else:
            self.net = None
            self.receptive_field = 1

    def forward(self, z: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        """``gain`` ``[B, 1, K]`` (or broadcastable): see :class:`walloc_audio.runtime.NetStream` (the streaming twin)."""
        assert z.dim() == 3 and z.shape[1] == self.linear.shape[1], f"expected [B, L, K], got {tuple(z.shape)}"
        out = torch.einsum("dl,blk->bdk", self.linear, z)
        if self.net is not None:
            la = self.lookahead_frames
            zn = z if gain is None else z / gain
            # Output k may see latents up to k + la: shift the input left by la frames.
            shifted = F.pad(zn, (0, la))[..., la:] if la else zn
            residual = self.net(shifted)
            out = out + (residual if gain is None else residual * gain)
        return out
