"""``walloc-audio eval``: rate and distortion of the codec on any folder of music, next to Opus.

A model's own figures (``walloc-audio models``) were measured on its
validation tracks; a listener's music is another matter. This module runs the
*real* file path on each track -- ``compress_file`` to an entropy-coded
``.wlc``, ``decompress_file`` back to audio -- so the bitrate is what a file
actually costs (headers and packet overhead included) and the distortion is
what a listener actually gets. The same tracks go through Opus (ffmpeg with
libopus) at several bitrates, which gives a reference curve, and through
16-bit FLAC, which gives the lossless bitrate.

Metrics (``x`` original, ``y`` decoded, float64 ``[C, T]``):

* SNR: energy of ``x`` over energy of ``y - x``. Per set (total energy over
  total error, so long tracks weigh more) and per track (then averaged).
* SI-SDR: scale-invariant SDR per channel after removing the mean; a gain
  error costs nothing, only the shape of the error counts.
* PSNR at full scale (peak 1.0) and the WaLLoC paper's PSNR (clip mean
  removed, peak scaled to 0.5), see :func:`walloc_audio.linear_fit.paper_psnr`.
* Spectral distances, closer to what the ear weighs: a multi-resolution STFT
  distance and a log-mel distance (0 for identical signals).

A model at bitrate ``k`` is compared with Opus *at the same bitrate* by
interpolating the Opus curve linearly in kbps; outside the measured Opus range
there is no comparison ("n/a") rather than an extrapolation.

Tracks are decoded once into temporary float WAVs at the model's rate, stereo
and cropped, so every codec sees the exact same samples and only one track
sits in memory at a time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from .audio import AudioReader, find_audio
from .compress import compress_file, decompress_file
from .errors import WallocError
from .fsutil import atomic_output
from .metrics import _energy, _ratio_db, paper_psnr, snr_db  # noqa: F401  (snr_db: re-exported)
from .pretrained import DEFAULT_MODEL, LoadedModel, list_models, load_model

OPUS_KBPS = (12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
FFT_SIZES = (512, 1024, 2048)
MIN_SECONDS = 1.0
SILENCE_PEAK = 1e-5  # about -100 dBFS: nothing a codec could be judged on
LOG_EPS = 1e-5
CHUNK = 1 << 20  # samples per channel per STFT call: bounded memory on long tracks
SPECTROGRAM_SECONDS = 10.0

Log = Callable[[str], None]


# ------------------------------------------------------------------ metrics


def si_sdr_db(x: np.ndarray, y: np.ndarray) -> float:
    """Scale-invariant SDR: per channel, zero-mean, ``y``'s best gain removed; mean over channels.

    Silent reference channels have no defined SI-SDR and are left out (NaN if all are).
    """
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    values = []
    for xc, yc in zip(x, y):
        xc, yc = xc - xc.mean(), yc - yc.mean()
        ref = _energy(xc)
        if ref <= 0:
            continue
        target = (np.dot(yc, xc) / ref) * xc
        values.append(_ratio_db(_energy(target), _energy(yc - target)))
    return float(np.mean(values)) if values else math.nan


def psnr_db(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR at full scale 1.0 (samples in [-1, 1]): ``-10 log10(mean((y - x)^2))``."""
    err = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    return _ratio_db(1.0, float(np.mean(np.square(err))))


def _chunks(x: torch.Tensor, y: torch.Tensor) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Pieces of ``[C, T]`` tensors, at most :data:`CHUNK` samples long (the last one merged if tiny)."""
    n = x.shape[-1]
    starts = list(range(0, n, CHUNK))
    if len(starts) > 1 and n - starts[-1] < CHUNK // 4:
        starts.pop()
    bounds = starts[1:] + [n]
    for a, b in zip(starts, bounds):
        yield x[..., a:b], y[..., a:b]


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.atleast_2d(np.asarray(a, np.float32)).copy())


def _magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft)
    return torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True).abs()


def mrstft_distance(x: np.ndarray, y: np.ndarray, sizes: Sequence[int] = FFT_SIZES) -> float:
    """Multi-resolution STFT distance: mean over FFT sizes of spectral convergence + log-magnitude L1.

    For each size (hop = size / 4, Hann window): ``||Y| - |X||_F / ||X||_F``
    plus ``mean |log(|Y| + eps) - log(|X| + eps)|``, summed over all channels
    and time. 0 for identical signals.
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    total = 0.0
    for n_fft in sizes:
        diff2 = ref2 = log_sum = 0.0
        count = 0
        for xc, yc in _chunks(xt, yt):
            mx, my = _magnitude(xc, n_fft), _magnitude(yc, n_fft)
            diff2 += float((my - mx).double().pow(2).sum())
            ref2 += float(mx.double().pow(2).sum())
            log_sum += float((torch.log(my + LOG_EPS) - torch.log(mx + LOG_EPS)).abs().double().sum())
            count += mx.numel()
        convergence = math.sqrt(diff2) / math.sqrt(ref2) if ref2 > 0 else (0.0 if diff2 == 0 else math.inf)
        total += convergence + log_sum / max(count, 1)
    return total / len(sizes)


@lru_cache(maxsize=4)
def _mel_transform(sample_rate: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=2048, hop_length=512, n_mels=80, power=1.0)


def mel_distance(x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    """Log-mel distance: ``mean |log mel(Y) - log mel(X)|`` (80 mels, n_fft 2048, hop 512). 0 if identical."""
    mel = _mel_transform(int(sample_rate))
    total, count = 0.0, 0
    for xc, yc in _chunks(_as_tensor(x), _as_tensor(y)):
        with torch.no_grad():
            d = torch.log(mel(yc) + LOG_EPS) - torch.log(mel(xc) + LOG_EPS)
        total += float(d.abs().double().sum())
        count += d.numel()
    return total / max(count, 1)


def track_metrics(x: np.ndarray, y: np.ndarray, sample_rate: int) -> dict:
    """Every per-track figure, plus the energies that the set SNR sums."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return {
        "energy": _energy(x64),
        "error": _energy(y64 - x64),
        "snr_db": snr_db(x64, y64),
        "si_sdr_db": si_sdr_db(x64, y64),
        "psnr_db": psnr_db(x64, y64),
        "psnr_paper_db": paper_psnr(x64, y64),
        "mrstft": mrstft_distance(x, y),
        "mel_distance": mel_distance(x, y, sample_rate),
    }


# ------------------------------------------------------------------ tracks


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


# ------------------------------------------------------------------ codecs


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

    @property
    def label(self) -> str:
        if self.version == 1:
            return f"v1 x{self.step_scale:g}"
        return f"Q{self.quality:g}" if self.kbps is None else f"{self.kbps:g}k"


def settings_for(model: LoadedModel, qualities: Sequence[float], step_scales: Sequence[float],
                 bitrates: Sequence[float] = ()) -> list[Setting]:
    """Version-2 settings where the model has a v2 entropy model, then any version-1 step scales."""
    out = []
    if model.adaptive is not None:
        out += [Setting(2, quality=q) for q in qualities] + [Setting(2, kbps=k) for k in bitrates]
    out += [Setting(1, step_scale=x) for x in step_scales]
    if not out:  # a model without a v2 entropy model: its own fixed step
        out = [Setting(1)]
    return out


def run_walloc(track: Track, model: LoadedModel, setting: Setting, workdir: str) -> Coded:
    """Real encode to ``.wlc`` and real decode back, through the file functions the CLI uses."""
    wlc, out = os.path.join(workdir, "point.wlc"), os.path.join(workdir, "point.decoded.wav")
    t0 = time.perf_counter()
    stats = compress_file(track.wav, wlc, model, overwrite=True, step_scale=setting.step_scale,
                          quality=setting.quality, kbps=setting.kbps, version=setting.version)
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
    linear analysis of ``model``; see :mod:`walloc_audio.reference_scheme`."""
    from . import reference_scheme

    c = reference_scheme.code(track.read(), model.runtime, sigma)
    return Coded(c.y, c.bytes, c.encode_s, c.decode_s)


def flac_bytes(track: Track, workdir: str) -> int:
    """Size of the track as 16-bit FLAC (the lossless reference)."""
    path = os.path.join(workdir, "point.flac")
    sf.write(path, track.read().T, track.sample_rate, subtype="PCM_16", format="FLAC")
    return os.path.getsize(path)


# ------------------------------------------------------------------ aggregation

_MEANS = ("snr_db", "si_sdr_db", "psnr_db", "psnr_paper_db", "mrstft", "mel_distance")


def _json_number(v: float | None, digits: int = 4) -> float | None:
    """A finite float rounded for JSON, else None (JSON has no inf or NaN)."""
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), digits)


@dataclass
class _Point:
    """Running sums for one (codec, setting) over the tracks."""

    kind: str
    model: str
    step_scale: float | None = None
    setting: str = ""
    gain_db: float = 0.0
    latent_dim: int | None = None
    target_kbps: float | None = None
    frame: int | None = None
    dimension_reduction: float | None = None
    bytes: int = 0
    samples: int = 0
    seconds: float = 0.0
    latents: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    energy: float = 0.0
    error: float = 0.0
    per_track: dict = field(default_factory=lambda: {k: [] for k in _MEANS})
    track_kbps: list = field(default_factory=list)
    visqol: list = field(default_factory=list)  # futures of (score | None, reason), one per track

    def add(self, track: Track, coded: Coded, metrics: dict | None, visqol=None) -> None:
        if visqol is not None:
            self.visqol.append(visqol)
        self.track_kbps.append(8 * coded.bytes / track.seconds / 1000)
        self.bytes += coded.bytes
        self.samples += track.samples
        self.seconds += track.seconds
        self.encode_s += coded.encode_s
        self.decode_s += coded.decode_s
        if self.frame:
            self.latents += math.ceil(track.samples / self.frame) * self.latent_dim
        if metrics:
            self.energy += metrics["energy"]
            self.error += metrics["error"]
            for k in _MEANS:
                self.per_track[k].append(metrics[k])

    def result(self, tracks: int) -> dict:
        def mean(k: str) -> float | None:
            values = [v for v in self.per_track[k] if math.isfinite(v)]
            return _json_number(float(np.mean(values))) if values else None

        lossy = self.kind != "flac"
        scored = [f.result() for f in self.visqol]
        scores = [v for v, _ in scored if v is not None]
        return {
            "kind": self.kind, "model": self.model, "step_scale": self.step_scale, "setting": self.setting,
            "gain_db": self.gain_db,
            "kbps": _json_number(8 * self.bytes / max(self.seconds, 1e-9) / 1000),
            "bits_per_latent": _json_number(8 * self.bytes / self.latents) if self.latents else None,
            "dimension_reduction": _json_number(self.dimension_reduction, 3),
            "snr_db": _json_number(_ratio_db(self.energy, self.error)) if lossy else None,
            "snr_db_mean": mean("snr_db"), "si_sdr_db": mean("si_sdr_db"), "psnr_db": mean("psnr_db"),
            "psnr_paper_db": mean("psnr_paper_db"), "mrstft": mean("mrstft"), "mel_distance": mean("mel_distance"),
            "encode_x_rt": _json_number(self.seconds / self.encode_s, 1) if self.encode_s > 0 else None,
            "decode_x_rt": _json_number(self.seconds / self.decode_s, 1) if self.decode_s > 0 else None,
            "visqol": _json_number(float(np.mean(scores)), 3) if scores else None,
            "visqol_tracks": len(scores) if scored else None,
            "visqol_skipped": sorted({r for v, r in scored if v is None}) if scored else None,
            "tracks": tracks, "seconds": _json_number(self.seconds, 3),
            "target_kbps": self.target_kbps,
            # rate control: the worst file's bitrate against the target, in percent
            "rate_error_max_pct": _json_number(max(abs(k / self.target_kbps - 1) for k in self.track_kbps) * 100, 2)
            if self.target_kbps and self.track_kbps else None,
        }


def compare_with_reference(points: list[dict]) -> None:
    """Add ``rate_vs_reference``: a codec point's kbps over the reference scheme's at the same
    paper-convention PSNR (its curve interpolated linearly in PSNR; None outside it)."""
    for p in points:
        if p["kind"] != "walloc":
            continue
        ref = sorted(((o["psnr_paper_db"], o["kbps"]) for o in points if o["kind"] == "reference"
                      and o.get("gain_db", 0.0) == p.get("gain_db", 0.0) and o.get("psnr_paper_db") is not None
                      and o.get("kbps")))
        v = p.get("psnr_paper_db")
        if len(ref) >= 2 and v is not None and ref[0][0] <= v <= ref[-1][0] and p.get("kbps"):
            p["rate_vs_reference"] = _json_number(p["kbps"] / float(np.interp(v, *zip(*ref))), 3)
        else:
            p["rate_vs_reference"] = None


def compare_with_opus(points: list[dict]) -> None:
    """Add ``delta_snr_vs_opus_db`` / ``delta_psnr_paper_vs_opus_db`` to each codec point.

    The Opus curve is interpolated linearly in kbps; a point outside the
    measured Opus range gets None ("n/a").
    """
    for p in points:
        if p["kind"] != "walloc":
            continue
        opus = sorted((o for o in points if o["kind"] == "opus" and o["kbps"] is not None
                       and o.get("gain_db", 0.0) == p.get("gain_db", 0.0)), key=lambda o: o["kbps"])
        for key, delta in (("snr_db", "delta_snr_vs_opus_db"), ("psnr_paper_db", "delta_psnr_paper_vs_opus_db"),
                           ("visqol", "delta_visqol_vs_opus")):
            curve = [(o["kbps"], o.get(key)) for o in opus if o.get(key) is not None]
            inside = len(curve) >= 2 and curve[0][0] <= p["kbps"] <= curve[-1][0] and p.get(key) is not None
            if inside:
                ref = float(np.interp(p["kbps"], [k for k, _ in curve], [v for _, v in curve]))
                p[delta] = _json_number(p[key] - ref)
            else:
                p[delta] = None


_KIND_ORDER = {"walloc": 0, "reference": 1, "opus": 2, "flac": 3}


def sort_points(points: list[dict]) -> list[dict]:
    return sorted(points, key=lambda p: (-p.get("gain_db", 0.0), _KIND_ORDER.get(p["kind"], 9), p["kbps"] or 0.0,
                                         p["model"]))


# ------------------------------------------------------------------ orchestration


def parse_numbers(spec: str, option: str, low: float, high: float) -> list[float]:
    """``"1,1.5,2"`` -> ``[1.0, 1.5, 2.0]``, each within [low, high], else a :class:`WallocError`."""
    try:
        values = [float(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise WallocError(f"{option}: expected numbers separated by commas, got {spec!r}") from None
    bad = [v for v in values if not (low <= v <= high)]
    if not values or bad:
        raise WallocError(f"{option}: values must be within {low:g}..{high:g}, got {spec!r}")
    return values


def _load_models(names: Sequence[str] | None) -> list[LoadedModel]:
    names = list(names) if names else [m["name"] for m in list_models()]
    if not names:
        raise WallocError("no models installed")
    models = [load_model(n) for n in dict.fromkeys(names)]
    for m in models:
        if m.config.channels != 2:
            raise WallocError(f"model {m.name!r} codes {m.config.channels} channels; eval compares stereo models")
        if m.config.sample_rate != models[0].config.sample_rate:
            raise WallocError("the models run at different sample rates; evaluate them in separate runs")
    return models


def _command(paths: Sequence[str], models: list[LoadedModel], step_scales: Sequence[float],
             opus_kbps: Sequence[float], seconds: float | None, opus: bool, qualities: Sequence[float] = (),
             gains: Sequence[float] = (0.0,), bitrates: Sequence[float] = (),
             visqol_seconds: float | None = None, jobs: int = 1, reference_sigmas: Sequence[float] = ()) -> str:
    """A command line that reproduces this run."""
    args = ["walloc-audio", "eval", *paths, "--models", ",".join(m.name for m in models)]
    for option, values in (("--qualities", qualities), ("--bitrates", bitrates), ("--step-scales", step_scales)):
        args += [option, ",".join(f"{v:g}" for v in values)] if values else []
    args += ["--gains", ",".join(f"{g:g}" for g in gains)] if list(gains) != [0.0] else []
    args += ["--opus-kbps", ",".join(f"{k:g}" for k in opus_kbps)] if opus else ["--no-opus"]
    args += ["--seconds", f"{seconds:g}"] if seconds is not None else []
    args += ["--visqol", "--visqol-seconds", f"{visqol_seconds:g}", "--jobs", str(jobs)] if visqol_seconds else []
    args += (["--reference-sigmas", ",".join(f"{v:g}" for v in reference_sigmas)] if reference_sigmas
             else ["--no-reference"])
    return shlex.join(args)


def _excerpt(x: np.ndarray, rate: int) -> slice:
    n = int(SPECTROGRAM_SECONDS * rate)
    start = max(0, (x.shape[1] - n) // 2)
    return slice(start, start + n)


def _progress(log: Log | None, label: str, i: int, n: int, track: Track, metrics: dict | None, kbps: float) -> None:
    if log:
        quality = f"SNR {metrics['snr_db']:.2f} dB, " if metrics else ""
        log(f"[{label}] {i + 1}/{n} {track.path}: {quality}{kbps:.1f} kbps")


def evaluate_paths(paths: Sequence[str], models: Sequence[str] | None = None, step_scales: Sequence[float] = (),
                   opus_kbps: Sequence[float] = OPUS_KBPS, seconds: float | None = None, opus: bool = True,
                   spectrogram_model: str | None = None, out_dir: str | os.PathLike | None = "eval-out",
                   log: Log | None = None, qualities: Sequence[float] = (5.0,), gains: Sequence[float] = (0.0,),
                   bitrates: Sequence[float] = (), visqol_seconds: float | None = None, jobs: int = 1,
                   reference_sigmas: Sequence[float] = ()) -> dict:
    """Evaluate models (and Opus, FLAC, the reference scheme) on the audio under ``paths``; write reports
    to ``out_dir``.

    ``reference_sigmas``: points of the reference WaLLoC scheme (:func:`run_reference`) at these
    compander spreads, on ``stereo-5x-linear``'s latents; each model point then carries its rate
    relative to that curve at equal paper-convention PSNR (``rate_vs_reference``).

    ``visqol_seconds``: also score ViSQOL (audio mode) on that long an excerpt of each track, in
    ``jobs`` worker processes (:mod:`walloc_audio.visqol`).

    Returns the dict written to ``results.json`` (``out_dir=None`` writes nothing).
    Raises :class:`WallocError` when nothing usable is found or an option is wrong.
    """
    loaded = _load_models(models)
    names = [m.name for m in loaded]
    spec_name = spectrogram_model or (DEFAULT_MODEL if DEFAULT_MODEL in names else names[0])
    if spec_name not in names:
        raise WallocError(f"--spectrogram-model {spec_name!r} is not among the evaluated models ({', '.join(names)})")
    files = find_audio(paths)
    rate = loaded[0].config.sample_rate
    notes: list[str] = []
    if opus and not has_libopus():
        notes.append("Opus baseline skipped: ffmpeg with libopus not found")
        opus = False
    from . import visqol

    if visqol_seconds and not visqol.available():
        notes.append("ViSQOL skipped: visqol-python is not installed (pip install 'walloc-audio[train]')")
        visqol_seconds = None
    ref_model = None
    if reference_sigmas:
        ref_model = next((m for m in loaded if m.name == REFERENCE_MODEL), None)
        try:
            ref_model = ref_model or load_model(REFERENCE_MODEL)
        except WallocError as exc:
            notes.append(f"reference scheme skipped: {exc}")
    t_start = time.perf_counter()
    scorer = visqol.Scorer(visqol_seconds, jobs) if visqol_seconds else None
    vq = (lambda x, y: scorer.submit(x, y, rate)) if scorer else (lambda x, y: None)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="walloc-eval-") as work:
        if scorer is not None:
            stack.callback(scorer.close)
        tracks, skipped = prepare_tracks(files, rate, seconds, work, log)
        if not tracks:
            where = ", ".join(paths) or "(no paths)"
            raise WallocError(f"no usable audio in {where} ({len(files)} files found, {len(skipped)} skipped)")
        points, excerpt = [], None
        for gain in gains:
            gtracks = [t.gained(gain, work) for t in tracks]
            at = "" if gain == 0 else f" @{gain:+g} dB"
            for model in loaded:
                cfg = model.config
                for k, setting in enumerate(settings_for(model, qualities, step_scales, bitrates)):
                    acc = _Point("walloc", model.name, setting.step_scale if setting.version == 1 else None,
                                 setting.label, gain, cfg.latent_dim, setting.kbps, cfg.frame,
                                 cfg.dimension_reduction)
                    for i, track in enumerate(gtracks):
                        x, coded = track.read(), run_walloc(track, model, setting, work)
                        y = _fit_length(coded.y, track.samples)
                        metrics = track_metrics(x, y, rate)
                        acc.add(track, coded, metrics, vq(x, y))
                        if i == 0 and k == 0 and gain == gains[0] and model.name == spec_name:
                            cut = _excerpt(x, rate)
                            excerpt = (x[:, cut].copy(), y[:, cut].copy(), cut.start / rate,
                                       f"{model.name} {setting.label}", track.path)
                        _progress(log, f"{model.name} {setting.label}{at}", i, len(tracks), track, metrics,
                                  8 * coded.bytes / track.seconds / 1000)
                    points.append(acc.result(len(tracks)))
            for sigma in reference_sigmas if ref_model is not None else ():
                rc = ref_model.config
                acc = _Point("reference", "reference (PCA + WebP)", setting=f"σ{sigma:g}", gain_db=gain,
                             latent_dim=rc.latent_dim, frame=rc.frame, dimension_reduction=rc.dimension_reduction)
                for i, track in enumerate(gtracks):
                    x, coded = track.read(), run_reference(track, ref_model, sigma)
                    metrics = track_metrics(x, _fit_length(coded.y, track.samples), rate)
                    acc.add(track, coded, metrics, vq(x, _fit_length(coded.y, track.samples)))
                    _progress(log, f"reference σ{sigma:g}{at}", i, len(tracks), track, metrics,
                              8 * coded.bytes / track.seconds / 1000)
                points.append(acc.result(len(tracks)))
            for kbps in opus_kbps if opus else ():
                acc = _Point("opus", "opus", setting=f"{kbps:g}k", gain_db=gain)
                for i, track in enumerate(gtracks):
                    x = track.read()
                    coded = run_opus(track, kbps, work)
                    y = align(x, coded.y)
                    metrics = track_metrics(x, y, rate)
                    acc.add(track, coded, metrics, vq(x, y))
                    rate_kbps = 8 * coded.bytes / track.seconds / 1000
                    _progress(log, f"opus {kbps:g}k{at}", i, len(tracks), track, metrics, rate_kbps)
                points.append(acc.result(len(tracks)))
        acc = _Point("flac", "flac 16-bit")
        for track in tracks:
            acc.add(track, Coded(np.empty((2, 0)), flac_bytes(track, work), 0.0, 0.0), None)
        points.append(acc.result(len(tracks)))
    compare_with_opus(points)
    compare_with_reference(points)
    for p in points:
        if p.get("visqol_skipped"):
            notes.append(f"ViSQOL: {p['visqol_tracks']} of {p['tracks']} tracks scored for {point_label(p)}; "
                         f"skipped: {'; '.join(p['visqol_skipped'])}")
    result = {
        "command": _command(paths, loaded, step_scales, opus_kbps, seconds, opus, qualities, gains, bitrates,
                            visqol_seconds, jobs, reference_sigmas if ref_model is not None else ()),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "tracks": [{"path": t.path, "seconds": round(t.seconds, 3)} for t in tracks],
        "total_seconds": round(sum(t.seconds for t in tracks), 3),
        "skipped": skipped,
        "notes": notes,
        "points": sort_points(points),
    }
    if out_dir is not None:
        result["outputs"] = write_reports(result, Path(out_dir), excerpt, rate)
    return result


# ------------------------------------------------------------------ reports

COLUMNS = [  # (header, key, format)
    ("kind", "kind", "{}"), ("model", "model", "{}"), ("setting", "setting", "{}"), ("gain", "gain_db", "{:g}"),
    ("kbps", "kbps", "{:.1f}"),
    ("bits/latent", "bits_per_latent", "{:.3f}"), ("DR", "dimension_reduction", "{:.2f}"),
    ("SNR set", "snr_db", "{:.2f}"), ("SNR mean", "snr_db_mean", "{:.2f}"), ("SI-SDR", "si_sdr_db", "{:.2f}"),
    ("PSNR", "psnr_db", "{:.2f}"), ("PSNR paper", "psnr_paper_db", "{:.2f}"), ("MR-STFT", "mrstft", "{:.3f}"),
    ("mel", "mel_distance", "{:.3f}"), ("ViSQOL", "visqol", "{:.2f}"),
    ("enc xRT", "encode_x_rt", "{:.0f}"), ("dec xRT", "decode_x_rt", "{:.0f}"),
    ("worst file vs target kbps (%)", "rate_error_max_pct", "{:.2f}"),
    ("ΔSNR vs Opus", "delta_snr_vs_opus_db", "{:+.2f}"),
    ("ΔPSNR-paper vs Opus", "delta_psnr_paper_vs_opus_db", "{:+.2f}"),
    ("ΔViSQOL vs Opus", "delta_visqol_vs_opus", "{:+.2f}"),
    ("kbps ÷ reference at equal PSNR-paper", "rate_vs_reference", "{:.2f}"),
]


POINT = [("point", "point", "{}")]
TERMINAL_KEYS = ("point", "kbps", "snr_db", "psnr_paper_db", "mel_distance", "visqol", "delta_snr_vs_opus_db",
                 "delta_psnr_paper_vs_opus_db", "delta_visqol_vs_opus", "rate_vs_reference")
_SHORT = {"SNR set": "SNR", "PSNR paper": "PSNR-p", "ΔSNR vs Opus": "ΔSNR", "ΔPSNR-paper vs Opus": "ΔPSNR-p",
          "ΔViSQOL vs Opus": "ΔViSQOL", "kbps ÷ reference at equal PSNR-paper": "÷ref"}


def point_label(p: dict) -> str:
    """``stereo-5x Q5``, ``stereo-5x v1 x1.5``, ``opus 32k @-20 dB``, ``flac 16-bit``: one short name per point."""
    label = p["model"] + (f" {p['setting']}" if p.get("setting") and p["kind"] in ("walloc", "reference") else "")
    gain = p.get("gain_db") or 0.0
    return label + (f" @{gain:+g} dB" if gain else "")


def table_rows(result: dict, keys: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells, one row per point (shared by the markdown and terminal tables).

    ``keys`` picks columns (with short headers, for a terminal); None gives them all.
    """
    columns = COLUMNS if keys is None else [(_SHORT.get(h, h), k, f) for h, k, f in POINT + COLUMNS if k in keys]
    rows = []
    for p in result["points"]:
        cells = []
        for _, key, fmt in columns:
            v = point_label(p) if key == "point" else p.get(key)
            missing = "n/a" if key.startswith("delta_") and p["kind"] == "walloc" else "-"
            cells.append(missing if v is None else fmt.format(v))
        rows.append(cells)
    return [h for h, _, _ in columns], rows


def summary_line(result: dict) -> str:
    n, skipped = len(result["tracks"]), len(result["skipped"])
    minutes = result["total_seconds"] / 60
    return f"{n} track{'s' * (n != 1)}, {minutes:.1f} minutes ({skipped} file{'s' * (skipped != 1)} skipped)"


def results_markdown(result: dict) -> str:
    """``results.md``: the set, the command, the table, the skipped files and notes."""
    headers, rows = table_rows(result)
    lines = ["# walloc-audio eval", "", f"Set: {summary_line(result)}, {result['date']}.", "",
             f"Command: `{result['command']}`", "",
             "SNR set = total energy / total error over the set; the other quality columns are per-track means "
             "(dB, except MR-STFT and mel: distances, lower is better). ΔSNR/ΔPSNR-paper: the model minus Opus "
             "interpolated at the same kbps (n/a outside the measured Opus range).", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if result["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- `{s['path']}`: {s['reason']}" for s in result["skipped"]]
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text(text)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rd(points: list[dict], path: Path) -> None:
    """``rd.png``: PSNR (paper) and SNR against kbps; one line per model, Opus as a line, FLAC's rate."""
    plt = _pyplot()
    panels = [("psnr_paper_db", "PSNR, paper convention (dB)"), ("snr_db", "SNR over the set (dB)")]
    if any(p.get("visqol") is not None for p in points):
        panels.append(("visqol", "ViSQOL v3 MOS-LQO (audio mode)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8))
    lossy = [p for p in points if p["kind"] != "flac" and p["kbps"] is not None]
    top = max((p["kbps"] for p in lossy), default=1.0)
    flac = next((p["kbps"] for p in points if p["kind"] == "flac"), None)
    for ax, (key, label) in zip(axes, panels):
        families: dict[tuple[str, str], list[dict]] = {}
        for p in lossy:
            if p.get("gain_db", 0.0) != 0.0:
                continue  # the RD plot is at the input's own level; the level sweep is in the tables
            v1 = p["kind"] == "walloc" and str(p.get("setting", "")).startswith("v1")
            families.setdefault((p["kind"], p["model"] + (" (v1)" if v1 else "")), []).append(p)
        for (kind, model), group in families.items():
            group = sorted((p for p in group if p.get(key) is not None), key=lambda p: p["kbps"])
            style = dict(color="black", linestyle="--", marker="s") if kind == "opus" else dict(marker="o")
            ax.plot([p["kbps"] for p in group], [p[key] for p in group], label="Opus (libopus)" if kind == "opus"
                    else model, **style)
            if kind == "walloc" and len(group) > 1:  # name the settings along a model's curve
                for p in group:
                    ax.annotate(str(p.get("setting", "")).replace("v1 ", ""), (p["kbps"], p[key]),
                                textcoords="offset points", xytext=(4, -10), fontsize=7)
        if flac is not None and flac <= 1.5 * top:
            ax.axvline(flac, color="grey", linestyle=":", label=f"FLAC 16-bit ({flac:.0f} kbps)")
        elif flac is not None:
            ax.plot([], [], color="grey", linestyle=":", label=f"FLAC 16-bit: {flac:.0f} kbps (off scale)")
        ax.set_xlabel("bitrate (kbps, measured file size)")
        ax.set_ylabel(label)
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("rate-distortion on the evaluation set")
    fig.tight_layout()
    _save_figure(fig, path)


def _log_spectrogram(x: np.ndarray, n_fft: int = 2048) -> np.ndarray:
    """dB magnitude of the mid signal ``(L + R) / 2``: ``[bins, frames]``."""
    mid = torch.from_numpy(np.asarray(x, np.float32).mean(axis=0).copy())
    mag = torch.stft(mid, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
    return (20 * torch.log10(mag + 1e-8)).numpy()


def plot_spectrograms(x: np.ndarray, y: np.ndarray, rate: int, path: Path, title: str, start: float = 0.0) -> None:
    """``spectrogram.png``: original, decoded and error spectrograms on one colour scale.

    ``start`` is the excerpt's position in its track (seconds), so the time axis reads as track time.
    """
    plt = _pyplot()
    specs = [_log_spectrogram(a) for a in (x, y, y - x)]
    vmax = float(specs[0].max())
    extent = (start, start + x.shape[1] / rate, 0.0, rate / 2000)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for ax, spec, name in zip(axes, specs, ("original", "decoded", "error (decoded - original)")):
        im = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, vmin=vmax - 100, vmax=vmax, cmap="magma")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("time in the track (s)")
    fig.colorbar(im, ax=axes, label="dB (mid channel)", shrink=0.8)
    fig.suptitle(title, fontsize=10)
    _save_figure(fig, path)


def write_reports(result: dict, out_dir: Path, excerpt: tuple | None, rate: int) -> dict:
    """Write results.json, results.md, rd.png and spectrogram.png (atomically); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("results.json", "results.md", "rd.png", "spectrogram.png")}
    outputs = {k: str(v) for k, v in paths.items()}
    _write_text(paths["results.json"], json.dumps({**result, "outputs": outputs}, indent=2) + "\n")
    _write_text(paths["results.md"], results_markdown(result))
    plot_rd(result["points"], paths["rd.png"])
    if excerpt is not None:
        x, y, start, label, track = excerpt
        plot_spectrograms(x, y, rate, paths["spectrogram.png"], f"{label} on {os.path.basename(track)}", start)
    return outputs
