"""Aggregation of per-track figures into points, comparisons at equal kbps, and the tables, plots and JSON of a run."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from walloc_audio.fsutil import atomic_output
from walloc_audio.metrics import _ratio_db
from walloc_audio.tools.evaluation.baselines import Coded
from walloc_audio.tools.evaluation.tracks import Track

SPECTROGRAM_SECONDS = 10.0

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
