"""Stateful FIR filtering in the frame domain: the one primitive every linear stage uses.

All linear parts of the codec (wavelet packet analysis and synthesis, the fused
analysis + encoder, the fused linear decoder) are *multirate* FIR filters. Once
the signal is cut into frames of ``N = 2**J`` samples, each becomes a plain
causal FIR filter over frames with matrix taps::

    y[k] = sum_{j=0}^{M-1} x[k - j] @ W[j]          x[k]: [..., D_in], W[j]: [D_in, D_out]

Frames are stored *frame-major* (``[frames, batch, D_in]``, contiguous), so the
``K`` consecutive frames ``x[k0-j : k0-j+K]`` are a zero-copy 2-D view
``[K*batch, D_in]`` for every tap ``j`` and the filter is ``M`` matrix products
accumulated in place. The state is the last ``M - 1`` input frames; it starts
at zero (a signal that was silent before ``t = 0``).

Determinism: the result of a call depends only on the input frames and the
shape of the call. Callers that need bit-identical output whatever the block
partition of their input (the encoder does) always call with the same number of
frames (see :mod:`walloc_audio.compress`).
"""

from __future__ import annotations

import torch


def fir_frames(buf: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Filter ``buf`` = ``[M-1+K, B, D_in]`` (history then new frames) -> ``[K, B, D_out]``.

    Differentiable in ``taps`` when autograd is on (no in-place updates then).
    """
    m, d_in, d_out = taps.shape
    k = buf.shape[0] - (m - 1)
    b = buf.shape[1]
    assert k >= 0 and buf.shape[2] == d_in, f"bad buffer {tuple(buf.shape)} for taps {tuple(taps.shape)}"
    view = lambda j: buf[m - 1 - j : m - 1 - j + k].reshape(k * b, d_in)  # noqa: E731
    if torch.is_grad_enabled() and (taps.requires_grad or buf.requires_grad):
        out = view(0) @ taps[0]
        for j in range(1, m):
            out = out + view(j) @ taps[j]
    else:
        out = torch.mm(view(0), taps[0])
        for j in range(1, m):
            out.addmm_(view(j), taps[j])
    return out.reshape(k, b, d_out)


class FrameFIR:
    """Causal matrix-tap FIR filter over frames, with state.

    Args:
        taps: ``[M, D_in, D_out]``; ``taps[j]`` multiplies the frame ``j`` steps back.

    Shape:
        ``process(x)``: ``[K, B, D_in] -> [K, B, D_out]`` for any ``K >= 0``; ``B``
        (independent signals) must stay the same until :meth:`reset`.
    """

    def __init__(self, taps: torch.Tensor):
        assert taps.dim() == 3, f"taps must be [M, D_in, D_out], got {tuple(taps.shape)}"
        self.taps = taps
        self.num_taps, self.d_in, self.d_out = taps.shape
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame is filtered as if preceded by silence."""
        self._history: torch.Tensor | None = None

    def process(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3 and x.shape[2] == self.d_in, (
            f"expected frames [K, B, {self.d_in}], got {tuple(x.shape)}"
        )
        if self._history is None:
            self._history = x.new_zeros(self.num_taps - 1, x.shape[1], self.d_in, dtype=self.taps.dtype)
        assert x.shape[1] == self._history.shape[1], "batch size changed without reset()"
        buf = torch.cat([self._history, x.to(self.taps.dtype)], dim=0)
        out = fir_frames(buf, self.taps)
        self._history = buf[buf.shape[0] - (self.num_taps - 1) :].detach().clone()
        return out
