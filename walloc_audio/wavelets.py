"""CDF 9/7 wavelet packet transform, as a stateful frame-domain filter bank.

The full packet tree of ``J`` levels splits every channel into ``P = 2**J``
subbands, each decimated by ``N = 2**J``: ``[B, C, T] -> [B, C*P, T/N]``.

Channel order: channel-major, then subbands in **frequency order**
(``index = c * P + f``, ``f = 0`` is the lowest band) -- the order of
``pywt.WaveletPacket(...).get_level(J, order="freq")``. Within the tree the
natural (Paley) index of frequency band ``f`` is its Gray code ``f ^ (f >> 1)``.

How it is built. The tree of two-channel filter banks is linear and invariant to
shifts by ``N`` samples, so it is exactly an FIR filter over frames of ``N``
samples with ``[N, P]`` matrix taps (its polyphase form). We read those taps off
PyWavelets itself (``pywt.dwt`` per level, mode ``'periodization'``) by
transforming impulses on a long periodic signal, then unwrap the circular
support. The result is the same transform as PyWavelets on a periodic signal,
computed causally on an unbounded stream:

    analysis:   c[k]  = sum_j  xf[k - j] @ A[j]       (coefficient frame k - D_a)
    synthesis:  yf[k] = sum_j  cf[k - j] @ S[j]       (signal frame k - D_a - D_s)

so analysis followed by synthesis is a pure delay of ``D = (D_a + D_s) * N``
samples. Processing whole frames at a time, the delay between a sample entering
and the same sample leaving is at most ``latency_samples = D + N - 1``; an
impulse test confirms it. Streaming, files and training crops all run through
these two filters (:class:`~walloc_audio.framefir.FrameFIR`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pywt
import torch

from .framefir import FrameFIR

WAVELET = "bior4.4"  # CDF 9/7, the JPEG 2000 lossy wavelet
_ZERO = 1e-12


def _dwt_tree(x: np.ndarray, levels: int) -> np.ndarray:
    """Full packet tree along the last axis, natural order: ``[..., L] -> [..., P, L/P]``."""
    nodes = [x]
    for _ in range(levels):
        nxt = []
        for node in nodes:
            a, d = pywt.dwt(node, WAVELET, mode="periodization", axis=-1)
            nxt += [a, d]
        nodes = nxt
    return np.stack(nodes, axis=-2)


def _idwt_tree(c: np.ndarray, levels: int) -> np.ndarray:
    """Inverse of :func:`_dwt_tree`: ``[..., P, L/P] -> [..., L]``."""
    nodes = [c[..., i, :] for i in range(c.shape[-2])]
    for _ in range(levels):
        nodes = [
            pywt.idwt(nodes[i], nodes[i + 1], WAVELET, mode="periodization", axis=-1)
            for i in range(0, len(nodes), 2)
        ]
    return nodes[0]


def freq_to_natural(levels: int) -> np.ndarray:
    """Natural tree index of each frequency-ordered band (the Gray code)."""
    f = np.arange(2**levels)
    return f ^ (f >> 1)


def _unwrap(x: np.ndarray, axis_frames: int, q: int) -> tuple[np.ndarray, int]:
    """Roll a circular frame axis so its support is contiguous; return (taps, first lag)."""
    x = np.moveaxis(x, axis_frames, 0)
    x = np.roll(x, q // 2, axis=0)  # lag d now sits at index d + q//2
    nz = np.nonzero(np.abs(x).reshape(q, -1).max(axis=1) > _ZERO)[0]
    lo, hi = nz[0], nz[-1]
    return x[lo : hi + 1], lo - q // 2


@dataclass(frozen=True)
class PacketFilters:
    """Polyphase taps of the ``J``-level transform for one channel (float64).

    ``analysis[j]``: ``[N, P]``; ``synthesis[j]``: ``[P, N]``; ``analysis_delay``
    (``D_a``) and ``synthesis_delay`` (``D_s``) in frames.
    """

    levels: int
    analysis: np.ndarray
    synthesis: np.ndarray
    analysis_delay: int
    synthesis_delay: int

    @property
    def frame(self) -> int:
        return 2**self.levels

    @property
    def delay_samples(self) -> int:
        """Pure delay of analysis followed by synthesis, in samples."""
        return (self.analysis_delay + self.synthesis_delay) * self.frame

    @property
    def latency_samples(self) -> int:
        """Worst-case delay from a sample entering to it leaving, framing included."""
        return self.delay_samples + self.frame - 1


@functools.lru_cache(maxsize=None)
def packet_filters(levels: int) -> PacketFilters:
    """Derive the polyphase taps from PyWavelets (cached; ~0.1 s for J=8)."""
    assert 1 <= levels <= 12, f"J must be in 1..12, got {levels}"
    n = 2**levels
    # The support of a level-J packet filter is < 9 * N samples; 4 frames of
    # margin on each side keep the circular wrap from touching it.
    q = 2 * (8 + 4)
    length = n * q
    order = freq_to_natural(levels)

    # Analysis: impulse at phase s of frame 0 -> coefficients[p, t]. By shift
    # invariance, c[p, t] = sum_{s,d} x[(t - d) * N + s] * imp[s, p, d].
    # Impulses go through in chunks so the peak memory stays small (a few MB).
    chunk = 16
    coef = np.empty((n, n, q))  # [N(s), P, Q(d)]
    for s0 in range(0, n, chunk):
        s1 = min(n, s0 + chunk)
        imp = np.zeros((s1 - s0, length))
        imp[np.arange(s1 - s0), np.arange(s0, s1)] = 1.0
        coef[s0:s1] = _dwt_tree(imp, levels)[:, order, :]
    a_taps, a_lag = _unwrap(coef, 2, q)  # [M_a, N, P]; tap i is lag a_lag + i

    # Synthesis: unit coefficient (p, frame 0) -> signal r_p; frame u of the
    # output = sum_{p,e} c[p, u - e] * r_p[e * N + s].
    sig = np.empty((n, length))  # [P (frequency order), L]
    for p0 in range(0, n, chunk):
        p1 = min(n, p0 + chunk)
        unit = np.zeros((p1 - p0, n, q))
        unit[np.arange(p1 - p0), order[p0:p1], 0] = 1.0
        sig[p0:p1] = _idwt_tree(unit, levels)
    s_taps, s_lag = _unwrap(sig.reshape(n, q, n), 1, q)  # [M_s, P, N]

    # Make both causal: analysis stream index k holds coefficient frame
    # k + a_lag (a_lag <= 0), synthesis stream frame holds signal frame shifted
    # by the synthesis lag as well.
    return PacketFilters(
        levels=levels,
        analysis=a_taps,
        synthesis=s_taps,
        analysis_delay=int(-a_lag),
        synthesis_delay=int(-s_lag),
    )


def frames_from_signal(x: torch.Tensor, frame: int) -> torch.Tensor:
    """``[B, C, T] -> [T/N, B, C*N]``: frame-major layout (``T`` a multiple of ``N``)."""
    b, c, t = x.shape
    assert t % frame == 0, f"length {t} is not a whole number of {frame}-sample frames"
    return x.reshape(b, c, t // frame, frame).permute(2, 0, 1, 3).reshape(t // frame, b, c * frame)


def signal_from_frames(f: torch.Tensor, channels: int) -> torch.Tensor:
    """``[K, B, C*N] -> [B, C, K*N]``, the inverse of :func:`frames_from_signal`."""
    k, b, _ = f.shape
    return f.reshape(k, b, channels, -1).permute(1, 2, 0, 3).reshape(b, channels, -1)


class PacketTransform:
    """Stateful analysis and synthesis of one or many channels.

    ``analysis`` and ``synthesis`` take whole frames; buffering arbitrary block
    sizes into frames belongs to the streaming layer. Both keep state across
    calls, so any partition of a signal into whole frames gives the same output
    as one call. Channels are independent signals (folded into the batch).

    Shape:
        ``analysis``: ``[B, C, K*N] -> [B, C*P, K]``; ``synthesis``: the inverse.
    """

    def __init__(self, levels: int, dtype: torch.dtype = torch.float32):
        self.filters = packet_filters(levels)
        self.levels = levels
        self.frame = 2**levels
        self._ana = FrameFIR(torch.from_numpy(self.filters.analysis).to(dtype))
        self._syn = FrameFIR(torch.from_numpy(self.filters.synthesis).to(dtype))

    @property
    def delay_samples(self) -> int:
        return self.filters.delay_samples

    @property
    def latency_samples(self) -> int:
        return self.filters.latency_samples

    def reset(self) -> None:
        self._ana.reset()
        self._syn.reset()

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3, f"expected [B, C, T], got {tuple(x.shape)}"
        b, c, t = x.shape
        frames = frames_from_signal(x.reshape(b * c, 1, t), self.frame)  # [K, B*C, N]
        coef = self._ana.process(frames)  # [K, B*C, P]
        return coef.permute(1, 2, 0).reshape(b, c * self.frame, -1)

    def synthesis(self, coef: torch.Tensor) -> torch.Tensor:
        assert coef.dim() == 3 and coef.shape[1] % self.frame == 0, (
            f"expected [B, C*{self.frame}, K], got {tuple(coef.shape)}"
        )
        b, cp, k = coef.shape
        c = cp // self.frame
        frames = coef.reshape(b * c, self.frame, k).permute(2, 0, 1)  # [K, B*C, P]
        out = self._syn.process(frames.contiguous())  # [K, B*C, N]
        return signal_from_frames(out, 1).reshape(b, c, -1)
