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
  removed, peak scaled to 0.5), see :func:`walloc_audio.tools.training.linear_fit.paper_psnr`.
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
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from walloc_audio.audio import find_audio
from walloc_audio.errors import WallocError
from walloc_audio.pretrained import DEFAULT_MODEL, LoadedModel, list_models, load_model
from walloc_audio.tools.evaluation.baselines import (OPUS_KBPS, REFERENCE_MODEL, Coded, flac_bytes, has_libopus,
                                                    run_opus, run_reference, run_walloc, settings_for)
from walloc_audio.tools.evaluation.metrics import track_metrics
from walloc_audio.tools.evaluation.report import (SPECTROGRAM_SECONDS, _Point, compare_with_opus, compare_with_reference,
                                                 point_label, sort_points, write_reports)
from walloc_audio.tools.evaluation.tracks import Log, Track, _fit_length, align, prepare_tracks



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
             visqol_seconds: float | None = None, jobs: int = 1, reference_sigmas: Sequence[float] = (),
             fill: bool = True) -> str:
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
    args += [] if fill else ["--no-fill"]
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
                   reference_sigmas: Sequence[float] = (), fill: bool = True) -> dict:
    """Evaluate models (and Opus, FLAC, the reference scheme) on the audio under ``paths``; write reports
    to ``out_dir``.

    ``reference_sigmas``: points of the reference WaLLoC scheme (:func:`run_reference`) at these
    compander spreads, on ``stereo-5x-linear``'s latents; each model point then carries its rate
    relative to that curve at equal paper-convention PSNR (``rate_vs_reference``).

    ``visqol_seconds``: also score ViSQOL (audio mode) on that long an excerpt of each track, in
    ``jobs`` worker processes (:mod:`walloc_audio.tools.evaluation.visqol`).

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
    from walloc_audio.tools.evaluation import visqol

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
                for k, setting in enumerate(settings_for(model, qualities, step_scales, bitrates, fill)):
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
                            visqol_seconds, jobs, reference_sigmas if ref_model is not None else (), fill),
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
