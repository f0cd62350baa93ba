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
        """``gain`` ``[B, 1, K]`` (or broadcastable): see :meth:`NetStream.process`."""
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


class NetStream:
    """Incremental evaluation of a causal decoder net (``lookahead_frames = 0``).

    Every dilated convolution keeps the last ``(kernel - 1) * dilation`` frames of
    its input; the 1x1 convolutions and Snakes are pointwise in time. Feeding
    frames in any partition gives the offline net's output frame for frame (up to
    float rounding), and each frame is computed once. The convolutions run as
    matrix products with weights flattened once: a live stream decodes a couple
    of frames per packet, where ``conv1d``'s per-call overhead dominated.
    """

    def __init__(self, decoder: Decoder):
        assert decoder.net is not None and decoder.lookahead_frames == 0, "NetStream needs a causal nonlinear net"
        self.decoder = decoder
        net = decoder.net
        with torch.no_grad():
            flat = lambda conv: conv.weight.detach().reshape(conv.weight.shape[0], -1).contiguous()  # noqa: E731
            bias = lambda conv: conv.bias.detach()[:, None].contiguous()  # noqa: E731
            self._in = (flat(net[0]), bias(net[0]))
            self._units = []
            for unit in net[1:-2]:
                snake1, conv, snake2, pointwise = unit.block
                self._units.append((snake1, flat(conv), bias(conv), conv.kernel_size[0], conv.dilation[0],
                                    unit.context, snake2, flat(pointwise), bias(pointwise)))
            self._snake_out = net[-2]
            self._out = (flat(net[-1]), bias(net[-1]))
            self._linear = decoder.linear.detach().contiguous()
        self.reset()

    def reset(self) -> None:
        self._state: list[torch.Tensor | None] = [None] * len(self._units)

    @torch.no_grad()
    def process(self, z: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        """Latent frames ``[L, n]`` -> decoder output ``[D, n]`` (linear path + net).

        ``gain`` ``[n]``: each frame's level relative to the level the net was trained at;
        the net then sees ``z / gain`` and its residual is scaled back by ``gain``
        (``L z + gain * net(z / gain)``), so its contribution follows the signal level
        (version-2 streams pass the packets' step, see :class:`~walloc_audio.codec_stream.PacketDecoder`).
        """
        n = z.shape[-1]
        zn = z if gain is None else z / gain[None, :]
        h = torch.addmm(self._in[1], self._in[0], zn)
        for i, (snake1, w, b, k, d, ctx, snake2, pw, pb) in enumerate(self._units):
            a = snake1(h[None])[0]
            prev = self._state[i]
            if prev is None:
                prev = a.new_zeros(a.shape[0], ctx)
            x = torch.cat([prev, a], dim=-1)
            self._state[i] = x[:, x.shape[-1] - ctx :]
            taps = torch.stack([x[:, j * d : j * d + n] for j in range(k)], dim=1)  # [C, k, n] ~ weight [O, C, k]
            y = torch.addmm(b, w, taps.reshape(-1, n))
            h = h + torch.addmm(pb, pw, snake2(y[None])[0])
        out = torch.addmm(self._out[1], self._out[0], self._snake_out(h[None])[0])
        if gain is not None:
            out = out * gain[None, :]
        return torch.addmm(out, self._linear, z)
