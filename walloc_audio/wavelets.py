"""CDF 9/7 wavelet packet transform, as a stateful frame-domain filter bank.

The full packet tree of ``J`` levels splits every channel into ``P = 2**J``
subbands, each decimated by ``N = 2**J``: ``[B, C, T] -> [B, C*P, T/N]``.

Channel order: channel-major, then subbands in **frequency order**
(``index = c * P + f``, ``f = 0`` is the lowest band) -- the order of
``pywt.WaveletPacket(...).get_level(J, order="freq")``. Within the tree the
natural (Paley) index of frequency band ``f`` is its Gray code ``f ^ (f >> 1)``.

How it is built. The tree of two-channel filter banks is linear and invariant to
shifts by ``N`` samples, so it is exactly an FIR filter over frames of ``N``
samples with ``[N, P]`` matrix taps (its polyphase form). Each node of the tree
is one equivalent filter, the cascade ``h_1(z) h_2(z^2) ... h_J(z^(2^(J-1)))`` of
the two-channel filters on its path, followed by decimation by ``N``; the taps are
read off those filters. The result is the transform PyWavelets computes
(``pywt.dwt`` per level, wavelet ``bior4.4``, mode ``'periodization'``) on a
periodic signal -- the tests check it against PyWavelets -- computed causally on
an unbounded stream:

    analysis:   c[k]  = sum_j  xf[k - j] @ A[j]       (coefficient frame k - D_a)
    synthesis:  yf[k] = sum_j  cf[k - j] @ S[j]       (signal frame k - D_a - D_s)

so analysis followed by synthesis is a pure delay of ``D = (D_a + D_s) * N``
samples. Processing whole frames at a time, the delay between a sample entering
and the same sample leaving is at most ``latency_samples = D + N - 1``; an
impulse test confirms it. Streaming, files and training crops all run through
these two filters (:class:`~walloc_audio.tools.framefir.FrameFIR`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

WAVELET = "bior4.4"  # CDF 9/7, the JPEG 2000 lossy wavelet
_ZERO = 1e-12

# The CDF 9/7 filters in PyWavelets' bior4.4 layout (10 taps, decomposition low/high,
# reconstruction low/high). In PyWavelets' 'periodization' mode one level computes
# a[k] = sum_j dec[j] x[(2k + 5 - j) mod L] and x[n] = sum_k a[k] rec[n - 2k + 4] + ...
DEC_LO = (0.0, 0.03782845550726404, -0.023849465019556843, -0.11062440441843718, 0.37740285561283066,
          0.8526986790088938, 0.37740285561283066, -0.11062440441843718, -0.023849465019556843, 0.03782845550726404)
DEC_HI = (0.0, -0.06453888262869706, 0.04068941760916406, 0.41809227322161724, -0.7884856164055829,
          0.41809227322161724, 0.04068941760916406, -0.06453888262869706, 0.0, 0.0)
REC_LO = (0.0, -0.06453888262869706, -0.04068941760916406, 0.41809227322161724, 0.7884856164055829,
          0.41809227322161724, -0.04068941760916406, -0.06453888262869706, 0.0, 0.0)
REC_HI = (0.0, -0.03782845550726404, -0.023849465019556843, 0.11062440441843718, 0.37740285561283066,
          -0.8526986790088938, 0.37740285561283066, 0.11062440441843718, -0.023849465019556843, -0.03782845550726404)
DEC_SHIFT, REC_SHIFT = 5, 4


def _equivalent_filters(filters: tuple[tuple[float, ...], ...], levels: int) -> np.ndarray:
    """The filter of every node of the full tree, natural (Paley) order: ``[P, 9 * (N - 1) + 1]``.

    Node filters of level ``l + 1`` are those of level ``l`` convolved with each
    two-channel filter upsampled by ``2**l`` (shifted adds, no convolution calls).
    """
    nodes = np.ones((1, 1))
    for level in range(levels):
        k, taps = 2**level, len(filters[0])
        out = np.zeros((nodes.shape[0], len(filters), nodes.shape[1] + (taps - 1) * k))
        for b, h in enumerate(filters):
            for j, hj in enumerate(h):
                if hj:
                    out[:, b, j * k : j * k + nodes.shape[1]] += hj * nodes
        nodes = out.reshape(-1, out.shape[2])
    return nodes


def subband_centres_hz(levels: int, sample_rate: float) -> np.ndarray:
    """Centre frequency of each frequency-ordered subband of a ``levels``-deep packet tree, Hz."""
    p = 2**levels
    return (np.arange(p) + 0.5) * sample_rate / 2 / p


def freq_to_natural(levels: int) -> np.ndarray:
    """Natural tree index of each frequency-ordered band (the Gray code)."""
    f = np.arange(2**levels)
    return f ^ (f >> 1)


def _polyphase(g: np.ndarray, frame: int, index) -> tuple[np.ndarray, int]:
    """Taps ``[M, ...]`` of ``g[:, index(lag, phase)]`` over the lags where they are not all zero, and the first lag."""
    span = g.shape[1] // frame + 2
    lags = np.arange(-span - 1, span + 2)
    m = index(lags[:, None], np.arange(frame)[None, :])  # [lags, N]
    inside = (m >= 0) & (m < g.shape[1])
    taps = np.where(inside[None], g[:, np.clip(m, 0, g.shape[1] - 1)], 0.0)  # [P, lags, N]
    nz = np.nonzero(np.abs(taps).max(axis=(0, 2)) > _ZERO)[0]
    return taps[:, nz[0] : nz[-1] + 1], int(lags[nz[0]])


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
    """The polyphase taps of the ``J``-level tree (cached; a few ms for J = 8)."""
    assert 1 <= levels <= 12, f"J must be in 1..12, got {levels}"
    n = 2**levels
    order = freq_to_natural(levels)
    # Analysis: coefficient c_p[t] = sum_n x[n] g_p[N t + C - n] with C = 5 (N - 1); input
    # sample n = N u + s of frame u feeds coefficient frame t = u + lag with weight g_p[N lag + C - s].
    g = _equivalent_filters((DEC_LO, DEC_HI), levels)[order]
    a, a_lag = _polyphase(g, n, lambda lag, s: n * lag + DEC_SHIFT * (n - 1) - s)  # [P, M_a, N]
    # Synthesis: coefficient (p, frame 0) adds r_p[n] = h_p[n + 4 (N - 1)] to the signal; sample
    # s of frame lag gets h_p[N lag + s + D].
    h = _equivalent_filters((REC_LO, REC_HI), levels)[order]
    syn, s_lag = _polyphase(h, n, lambda lag, s: n * lag + s + REC_SHIFT * (n - 1))  # [P, M_s, N]
    # Both made causal: analysis stream index k holds coefficient frame k + a_lag (a_lag <= 0), and the
    # synthesis output is shifted by its lag as well.
    return PacketFilters(
        levels=levels,
        analysis=np.ascontiguousarray(a.transpose(1, 2, 0)),  # [M_a, N, P]
        synthesis=np.ascontiguousarray(syn.transpose(1, 0, 2)),  # [M_s, P, N]
        analysis_delay=int(-a_lag),
        synthesis_delay=int(-s_lag),
    )


def _permute(x, dims: tuple[int, ...]):
    """``x`` with its axes reordered: torch tensors and numpy arrays alike."""
    return x.permute(*dims) if hasattr(x, "permute") else x.transpose(dims)


def frames_from_signal(x, frame: int):
    """``[B, C, T] -> [T/N, B, C*N]``: frame-major layout (``T`` a multiple of ``N``; torch or numpy)."""
    b, c, t = x.shape
    assert t % frame == 0, f"length {t} is not a whole number of {frame}-sample frames"
    return _permute(x.reshape(b, c, t // frame, frame), (2, 0, 1, 3)).reshape(t // frame, b, c * frame)


def signal_from_frames(f, channels: int):
    """``[K, B, C*N] -> [B, C, K*N]``, the inverse of :func:`frames_from_signal` (torch or numpy)."""
    k, b, _ = f.shape
    return _permute(f.reshape(k, b, channels, -1), (1, 2, 0, 3)).reshape(b, channels, -1)


class PacketTransform:
    """Stateful analysis and synthesis of one or many channels.

    ``analysis`` and ``synthesis`` take whole frames; buffering arbitrary block
    sizes into frames belongs to the streaming layer. Both keep state across
    calls, so any partition of a signal into whole frames gives the same output
    as one call. Channels are independent signals (folded into the batch).

    Shape:
        ``analysis``: ``[B, C, K*N] -> [B, C*P, K]``; ``synthesis``: the inverse.
    """

    def __init__(self, levels: int, dtype=None):
        import torch  # training and analysis tooling only; the codec runtime filters in numpy

        from walloc_audio.tools.framefir import FrameFIR

        dtype = dtype or torch.float32
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

    def analysis(self, x):
        assert x.dim() == 3, f"expected [B, C, T], got {tuple(x.shape)}"
        b, c, t = x.shape
        frames = frames_from_signal(x.reshape(b * c, 1, t), self.frame)  # [K, B*C, N]
        coef = self._ana.process(frames)  # [K, B*C, P]
        return coef.permute(1, 2, 0).reshape(b, c * self.frame, -1)

    def synthesis(self, coef):
        assert coef.dim() == 3 and coef.shape[1] % self.frame == 0, (
            f"expected [B, C*{self.frame}, K], got {tuple(coef.shape)}"
        )
        b, cp, k = coef.shape
        c = cp // self.frame
        frames = coef.reshape(b * c, self.frame, k).permute(2, 0, 1)  # [K, B*C, P]
        out = self._syn.process(frames.contiguous())  # [K, B*C, N]
        return signal_from_frames(out, 1).reshape(b, c, -1)
