"""Stateful sample-rate conversion for streams, on top of libsoxr.

A live chain has three clocks that need not agree: the capture device (often 48 kHz), the codec's
model (44.1 kHz for the shipped models) and the playback device. :class:`StreamResampler` bridges
two of them one block at a time. It keeps the resampling filter's history between calls, so the
output does not depend on how the input was cut into blocks (the same samples, up to float
rounding; with libsoxr it is in fact bit-exact) — the streaming contract of DESIGN §3.

Why soxr: it is a small, fast, well-tested polyphase resampler with a streaming API
(``soxr.ResampleStream``); 'HQ' is a 20-bit-quality filter (~ -120 dB alias rejection), 'VHQ' 28-bit.

Timing: libsoxr removes its own filter delay, so sample 0 of the input lands on sample 0 of the
output (an impulse stays at t=0; a test checks it). What the filter costs is *hold-back*: soxr
keeps the last samples it has received until it has seen enough of the future to finish them.
:attr:`StreamResampler.delay_samples` reports that backlog (in output samples, straight from
``soxr.ResampleStream.delay()``); it varies with the block size and is about 730 output samples
(16.5 ms) for 48 kHz → 44.1 kHz at 'HQ' with 1024-sample blocks. :meth:`flush` releases it at the
end of a stream.
"""

from __future__ import annotations

import numpy as np

QUALITIES = ("HQ", "VHQ")


class StreamResampler:
    """Resample ``[C, n]`` float32 blocks from ``in_rate`` to ``out_rate``, keeping state.

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
        channels: number of channels ``C`` of every block.
        quality: libsoxr quality, ``'HQ'`` (default) or ``'VHQ'``.

    Shape:
        :meth:`process`: ``[C, n] -> [C, m]``; summed over a whole stream (including
        :meth:`flush`), ``m ≈ n · out_rate / in_rate`` (rounded).

    Equal rates take an identity fast path: blocks are passed through (as float32 copies) with
    no delay. After :meth:`flush` the resampler is reset and can start a new stream.
    """

    def __init__(self, in_rate: float, out_rate: float, channels: int, quality: str = "HQ"):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got in_rate={in_rate}, out_rate={out_rate}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self.quality = quality
        self._stream = None
        if in_rate != out_rate:
            import soxr  # lazy: the identity path and importers of this module do not need it

            self._stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=quality)

    @property
    def identity(self) -> bool:
        """True when the rates are equal and blocks pass through untouched."""
        return self._stream is None

    @property
    def delay_samples(self) -> float:
        """Output samples received but held back by the filter right now (0 on the identity path).

        Divide by ``out_rate`` for the latency, in seconds, this stage adds to a live chain.
        """
        return 0.0 if self._stream is None else float(self._stream.delay())

    def _check(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a block of shape [C={self.channels}, n], got {tuple(block.shape)}")
        return block

    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample one block ``[C, n]``; returns ``[C, m]`` float32 (m may be 0 for tiny blocks)."""
        block = self._check(block)
        if self._stream is None:
            return block.astype(np.float32, copy=True)
        if block.shape[1] == 0:
            return np.zeros((self.channels, 0), np.float32)
        # soxr works on interleaved [frames, channels] memory; ours is planar [C, n].
        y = self._stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32))
        return np.ascontiguousarray(y.reshape(-1, self.channels).T)

    def flush(self) -> np.ndarray:
        """End the stream: return the held-back tail ``[C, m]`` and reset the state."""
        if self._stream is None:
            return np.zeros((self.channels, 0), np.float32)
        tail = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        self.reset()
        return np.ascontiguousarray(tail.reshape(-1, self.channels).T)

    def reset(self) -> None:
        """Forget all history (start of a new, unrelated stream)."""
        if self._stream is not None:
            self._stream.clear()
