"""The tracks an evaluation runs on: decoded once to float WAVs at the model's rate, stereo, cropped; and delay alignment."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from walloc_audio.audio import AudioReader
from walloc_audio.errors import WallocError
from walloc_audio.metrics import snr_db

MIN_SECONDS = 1.0
SILENCE_PEAK = 1e-5  # about -100 dBFS: nothing a codec could be judged on

Log = Callable[[str], None]

@dataclass
class Track:
    """One usable input, decoded to a float WAV at the evaluation rate, stereo and cropped."""

    path: str
    wav: str
    samples: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def read(self) -> np.ndarray:
        data, _ = sf.read(self.wav, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T)

    def gained(self, gain_db: float, workdir: str) -> "Track":
        """This track scaled by ``gain_db`` (a level sweep: the same music, quieter), as a new WAV."""
        if gain_db == 0:
            return self
        wav = f"{os.path.splitext(self.wav)[0]}.gain{gain_db:+g}.wav"
        if not os.path.exists(wav):
            sf.write(wav, (self.read() * np.float32(10 ** (gain_db / 20))).T, self.sample_rate, subtype="FLOAT")
        return Track(self.path, wav, self.samples, self.sample_rate)


class _Skip(Exception):
    """A file that cannot be evaluated; the message is the reason."""


def _load(path: str, rate: int, seconds: float | None) -> np.ndarray:
    """Stereo float32 ``[2, T]`` at ``rate``, at most ``seconds`` long; :class:`_Skip` if unusable."""
    limit = None if seconds is None else int(round(seconds * rate))
    blocks, n = [], 0
    try:
        with AudioReader(path, sample_rate=rate, block_frames=1 << 18) as reader:
            if reader.channels > 2:
                raise _Skip(f"{reader.channels} channels (eval takes mono or stereo)")
            for block in reader:
                blocks.append(block)
                n += block.shape[1]
                if limit is not None and n >= limit:
                    break
    except (WallocError, RuntimeError, OSError) as exc:
        raise _Skip(f"unreadable: {exc}") from None
    if not blocks:
        raise _Skip("no audio samples")
    x = np.concatenate(blocks, axis=1)[:, :limit]
    if x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    if x.shape[1] < MIN_SECONDS * rate:
        raise _Skip(f"too short ({x.shape[1] / rate:.2f} s < {MIN_SECONDS:g} s)")
    if float(np.abs(x).max()) <= SILENCE_PEAK:
        raise _Skip("silent")
    return x


def prepare_tracks(files: Sequence[str], rate: int, seconds: float | None, workdir: str,
                   log: Log | None = None) -> tuple[list[Track], list[dict]]:
    """Decode every file once into ``workdir``; returns the usable tracks and ``{path, reason}`` skips."""
    tracks, skipped = [], []
    for i, path in enumerate(files):
        try:
            x = _load(path, rate, seconds)
        except _Skip as exc:
            skipped.append({"path": path, "reason": str(exc)})
            if log:
                log(f"skip {path}: {exc}")
            continue
        wav = os.path.join(workdir, f"track{i:05d}.wav")
        sf.write(wav, x.T, rate, subtype="FLOAT")
        tracks.append(Track(path, wav, x.shape[1], rate))
    return tracks, skipped


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut or zero-padded to ``n`` samples."""
    if y.shape[1] >= n:
        return y[:, :n]
    return np.pad(y, ((0, 0), (0, n - y.shape[1])))


def estimate_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 4096, excerpt: int = 1 << 19) -> int:
    """Delay of ``y`` behind ``x`` in samples (cross-correlation of the channel sums, +-max_lag)."""
    mid = max(0, (x.shape[1] - excerpt) // 2)
    a = x[:, mid : mid + excerpt].sum(axis=0).astype(np.float64)
    b = y[:, mid : mid + excerpt].sum(axis=0).astype(np.float64)
    n = 1 << int(math.ceil(math.log2(a.size + b.size)))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lags = np.r_[corr[: max_lag + 1], corr[-max_lag:]]
    best = int(np.argmax(lags))
    return best if best <= max_lag else best - 2 * max_lag - 1


def align(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` at ``x``'s length, shifted by the cross-correlation lag when that raises the SNR."""
    y = _fit_length(y, x.shape[1])
    lag = estimate_lag(x, y)
    if lag == 0:
        return y
    shifted = _fit_length(y[:, lag:], x.shape[1]) if lag > 0 else np.pad(y, ((0, 0), (-lag, 0)))[:, : x.shape[1]]
    return shifted if snr_db(x, shifted) > snr_db(x, y) else y
