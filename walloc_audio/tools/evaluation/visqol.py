"""ViSQOL v3 (audio mode) scores for ``walloc-audio eval``: perceptual quality next to SNR.

ViSQOL compares a reference and a degraded signal through a gammatone spectrogram and
maps their similarity to MOS-LQO, 1..5 (identical music scores ~4.73). The audio mode
works on one channel at 48 kHz, so each pair is reduced to its mid signal (the mean of
the channels), resampled with soxr and cut to an excerpt from the middle of the track
(the metric costs ~1 s of CPU per second of audio). ``visqol-python`` ships the SVR
model inside its wheel: nothing is downloaded.

Bad input gives a reason instead of a score (never a NaN): a clip shorter than
:data:`MIN_SECONDS`, a silent reference, a metric that fails on the signal.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future, ProcessPoolExecutor

import numpy as np

RATE = 48000
MIN_SECONDS = 2.0  # ViSQOL needs a few of its 0.5-s patches to align
SILENCE_RMS = 1e-5  # -100 dBFS: a reference this quiet has nothing to judge

_API = None


def available() -> bool:
    try:
        import visqol.api  # noqa: F401
    except ImportError:
        return False
    return True


def excerpt(x: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """The middle ``seconds`` of ``x`` ``[C, T]`` (all of it if shorter), as mono float64 at 48 kHz."""
    import soxr

    mono = np.asarray(x, np.float64).mean(axis=0)
    n = int(seconds * rate)
    if mono.size > n:
        start = (mono.size - n) // 2
        mono = mono[start : start + n]
    return soxr.resample(mono, rate, RATE) if rate != RATE else mono


def score(ref: np.ndarray, deg: np.ndarray) -> tuple[float | None, str]:
    """MOS-LQO of ``deg`` against ``ref`` (mono, 48 kHz, same length), or ``(None, reason)``."""
    global _API
    if ref.size < MIN_SECONDS * RATE:
        return None, f"shorter than {MIN_SECONDS:g} s"
    if float(np.sqrt(np.mean(ref**2))) < SILENCE_RMS:
        return None, "silent reference"
    if _API is None:
        from visqol.api import VisqolApi

        api = VisqolApi()
        api.create(mode="audio")
        _API = api
    try:
        mos = float(_API.measure_from_arrays(ref, deg, RATE).moslqo)
    except (ValueError, RuntimeError, FloatingPointError, IndexError) as exc:
        return None, f"ViSQOL failed ({exc})"
    if not np.isfinite(mos):
        return None, "ViSQOL gave no finite score"
    return mos, ""


class Scorer:
    """Scores pairs in ``jobs`` worker processes: ``submit(x, y, rate)`` returns a future of ``score``."""

    def __init__(self, seconds: float = 10.0, jobs: int = 1):
        self.seconds = seconds
        import multiprocessing

        # spawn, not fork: a fork of a process with BLAS or torch threads can deadlock in the child
        self._pool: Executor | None = ProcessPoolExecutor(max_workers=max(1, jobs),
                                                          mp_context=multiprocessing.get_context("spawn"))

    def submit(self, x: np.ndarray, y: np.ndarray, rate: int) -> Future:
        return self._pool.submit(score, excerpt(x, rate, self.seconds), excerpt(y, rate, self.seconds))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
