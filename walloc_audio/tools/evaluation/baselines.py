"""Every codec an evaluation runs a track through: the model's real file path, Opus, the reference WaLLoC scheme, FLAC."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import soundfile as sf

from walloc_audio.compress import compress_file, decompress_file
from walloc_audio.errors import WallocError
from walloc_audio.pretrained import LoadedModel
from walloc_audio.tools.evaluation.tracks import Track

OPUS_KBPS = (12.0, 16.0, 24.0, 32.0, 48.0, 64.0)

@dataclass
class Coded:
    """One track through one codec: decoded audio, file size and wall-clock times."""

    y: np.ndarray
    bytes: int
    encode_s: float
    decode_s: float


@dataclass(frozen=True)
class Setting:
    """How a model is asked to code: version 2 at a quality or bitrate, or version 1 at a step scale."""

    version: int
    quality: float | None = None
    kbps: float | None = None
    step_scale: float = 1.0
    fill: bool = True  # version 2: the noise fill's side information (walloc_audio.noisefill)

    @property
    def label(self) -> str:
        if self.version == 1:
            return f"v1 x{self.step_scale:g}"
        return (f"Q{self.quality:g}" if self.kbps is None else f"{self.kbps:g}k") + ("" if self.fill else " no-fill")


def settings_for(model: LoadedModel, qualities: Sequence[float], step_scales: Sequence[float],
                 bitrates: Sequence[float] = (), fill: bool = True) -> list[Setting]:
    """Version-2 settings where the model has a v2 entropy model, then any version-1 step scales."""
    out = []
    if model.adaptive is not None:
        out += [Setting(2, quality=q, fill=fill) for q in qualities] + [Setting(2, kbps=k, fill=fill) for k in bitrates]
    out += [Setting(1, step_scale=x) for x in step_scales]
    if not out:  # a model without a v2 entropy model: its own fixed step
        out = [Setting(1)]
    return out


def run_walloc(track: Track, model: LoadedModel, setting: Setting, workdir: str) -> Coded:
    """Real encode to ``.wlc`` and real decode back, through the file functions the CLI uses."""
    wlc, out = os.path.join(workdir, "point.wlc"), os.path.join(workdir, "point.decoded.wav")
    t0 = time.perf_counter()
    stats = compress_file(track.wav, wlc, model, overwrite=True, step_scale=setting.step_scale,
                          quality=setting.quality, kbps=setting.kbps, version=setting.version,
                          fill=setting.fill and setting.version == 2)
    t1 = time.perf_counter()
    decompress_file(wlc, out, overwrite=True, model=model, subtype="FLOAT")
    t2 = time.perf_counter()
    y, _ = sf.read(out, dtype="float32", always_2d=True)
    return Coded(np.ascontiguousarray(y.T), stats.bytes, t1 - t0, t2 - t1)


@lru_cache(maxsize=None)
def has_libopus() -> bool:
    """Whether an ffmpeg with the libopus encoder is on the PATH."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
        return " libopus " in run.stdout
    return False


def _ffmpeg(args: list[str], what: str) -> None:
    base = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    run = subprocess.run(base + args, capture_output=True, stdin=subprocess.DEVNULL)
    if run.returncode != 0:
        lines = run.stderr.decode("utf-8", "replace").strip().splitlines()
        raise WallocError(f"ffmpeg failed on {what}: {lines[-1] if lines else run.returncode}")


def run_opus(track: Track, kbps: float, workdir: str) -> Coded:
    """Opus (libopus, 48 kHz stereo, VBR, ``-application audio``) and back to the track's rate.

    ffmpeg applies the Ogg pre-skip, so the decoded audio is already aligned;
    :func:`align` checks that with a cross-correlation and fixes it if not.
    """
    opus, out = os.path.join(workdir, "point.opus"), os.path.join(workdir, "point.opus.wav")
    t0 = time.perf_counter()
    _ffmpeg(["-i", track.wav, "-ac", "2", "-ar", "48000", "-c:a", "libopus", "-b:a", f"{kbps:g}k",
             "-vbr", "on", "-application", "audio", opus], track.path)
    t1 = time.perf_counter()
    _ffmpeg(["-i", opus, "-ar", str(track.sample_rate), "-c:a", "pcm_f32le", out], track.path)
    t2 = time.perf_counter()
    y, _ = sf.read(out, dtype="float32", always_2d=True)
    return Coded(np.ascontiguousarray(y.T), os.path.getsize(opus), t1 - t0, t2 - t1)


REFERENCE_MODEL = "stereo-5x-linear"  # whose linear analysis the reference scheme codes
REFERENCE_SIGMAS = (0.25, 0.5, 1.0, 2.0)


def run_reference(track: Track, model: LoadedModel, sigma: float) -> Coded:
    """The reference WaLLoC scheme (per-clip normalisation, 8-bit compander, lossless WebP) on the
    linear analysis of ``model``; see :mod:`walloc_audio.tools.evaluation.reference_scheme`."""
    from walloc_audio.tools.evaluation import reference_scheme

    c = reference_scheme.code(track.read(), model.runtime, sigma)
    return Coded(c.y, c.bytes, c.encode_s, c.decode_s)


def flac_bytes(track: Track, workdir: str) -> int:
    """Size of the track as 16-bit FLAC (the lossless reference)."""
    path = os.path.join(workdir, "point.flac")
    sf.write(path, track.read().T, track.sample_rate, subtype="PCM_16", format="FLAC")
    return os.path.getsize(path)
