"""Scoring separation with museval, aggregated the MUSDB18 way.

For each test track: the whole mixture goes through the model, museval computes
BSS-eval v4 metrics on 1-second windows (as ``museval.eval_mus_track`` does), and the scores are aggregated
as SiSEC 2018 does: **median over frames, then median over tracks**, per stem, and
the mean of the four stem medians as the average. A stem whose reference is
silent (a synthesised song without vocals, say) cannot be scored -- BSS-eval
divides by its energy -- so it is excluded from the aggregate and reported.

Scores on the local synthesised set are not comparable to published MUSDB18
numbers (:data:`DISCLAIMER`): rendered MIDI stems are cleaner and more regular
than real recordings.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

STEMS = ("drums", "bass", "other", "vocals")
DISCLAIMER = ("SDR on the locally synthesised MUSDB-style set (General MIDI rendered per stem) is not "
              "comparable to published MUSDB18 numbers.")
SILENCE_RMS = 1e-4

Separate = Callable[[np.ndarray], dict]  # [T, C] mixture -> {stem: [T, C]}


def latent_separate(front, separator, chunk_frames: int = 4096) -> Separate:
    """Whole-track separation through the frozen codec and a latent separator (in chunks)."""

    @torch.no_grad()
    def run(mix: np.ndarray) -> dict:
        x = torch.from_numpy(np.ascontiguousarray(mix.T, dtype=np.float32))[None]
        z = front.encode(x)  # [1, L, K]
        parts = [separator(z[..., i : i + chunk_frames]) for i in range(0, z.shape[-1], chunk_frames)]
        est = front.decode(torch.cat(parts, dim=-1), mix.shape[0])[0]  # [S, C, T]
        return {s: est[i].T.numpy().astype(np.float64) for i, s in enumerate(STEMS)}

    return run


def waveform_separate(model, chunk_samples: int = 44100 * 10) -> Separate:
    """Whole-track separation with a waveform model ``[B, C, T] -> [B, S, C, T]`` (in chunks)."""

    @torch.no_grad()
    def run(mix: np.ndarray) -> dict:
        x = torch.from_numpy(np.ascontiguousarray(mix.T, dtype=np.float32))[None]  # [1, C, T]
        parts = [model(x[..., i : i + chunk_samples]) for i in range(0, x.shape[-1], chunk_samples)]
        est = torch.cat(parts, dim=-1)[0, ..., : mix.shape[0]]  # [S, C, T]
        return {s: est[i].T.numpy().astype(np.float64) for i, s in enumerate(STEMS)}

    return run


def silent_stems(track) -> list[str]:
    return [s for s in STEMS if float(np.sqrt(np.mean(track.targets[s].audio ** 2))) < SILENCE_RMS]


def codec_oracle(front, track) -> dict:
    """Each reference stem through the codec alone (encode, decode): ``{stem: [T, C]}``.

    The best any latent-domain separator on this codec can do -- exact latents
    of every stem -- so its SDR is the ceiling the codec puts on latent learning.
    """
    refs = np.stack([track.targets[s].audio.T for s in STEMS]).astype(np.float32)  # [S, C, T]
    with torch.no_grad():
        z = front.encode(torch.from_numpy(refs))  # [S, L, K]
        y = front.decode(z[None], refs.shape[-1])[0]  # [S, C, T]
    return {s: y[i].T.numpy().astype(np.float64) for i, s in enumerate(STEMS)}


def ideal_ratio_masks(stems: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """The latent-domain ideal ratio mask applied to a mixture: ``[S, L, K], [L, K] -> [S, L, K]``.

    Stem ``i`` gets ``mixture * stems[i]**2 / sum_j stems[j]**2`` per latent
    coefficient (a quarter each where every stem is zero), so the estimates add
    up to the mixture exactly. With the true stems' latents it is the best a
    masker whose masks lie in ``[0, 1]`` and sum to one can do on that mixture
    (a signed, unbounded mask -- the shipped masker's -- can in principle go
    further): the masker's own ceiling, beside the codec's.
    """
    power = np.square(stems, dtype=np.float64)
    total = power.sum(axis=0)
    masks = np.where(total > 0, power / np.where(total > 0, total, 1.0), 1.0 / stems.shape[0])
    return (masks * mixture[None]).astype(stems.dtype)


def packet_ratio_masks(front, stems: np.ndarray, mixture: np.ndarray, length: int) -> np.ndarray:
    """The ideal ratio mask on the wavelet packets instead of the latents: audio ``[S, C, length]``.

    The coded latents of the stems and of the mixture go through the codec's
    decoder to its ``C * 2**J`` packet coefficients per frame (before the
    encoder's dimension reduction mixes them), are masked there as in
    :func:`ideal_ratio_masks`, and are synthesised. What a masker with masks in
    ``[0, 1]`` on the packets could reach from the same coded files.
    """
    codec = front.model.codec
    with torch.no_grad():
        coef = codec.decoder(torch.from_numpy(np.concatenate([stems, mixture[None]]).astype(np.float32))).numpy()
        return front.decode_packets(torch.from_numpy(ideal_ratio_masks(coef[:-1], coef[-1])), length).numpy()


def score_track(track, separate: Separate, win_seconds: float = 1.0) -> dict:
    """museval (BSS-eval v4, 1 s windows) of one track separated by ``separate``; see :func:`score_estimates`."""
    return score_estimates(track, separate(track.audio), win_seconds)


def score_estimates(track, estimates: dict, win_seconds: float = 1.0) -> dict:
    """museval (BSS-eval v4, 1 s windows) of estimates ``{stem: [T, C]}``: ``{stem: median over frames}``.

    Silent reference stems are left out of the evaluation itself (museval
    refuses them) and listed in ``"silent"``. BSS-eval v4 also leaves out
    every window in which some reference is silent; a stem with no window
    left (a song whose drums play in 14 of 60 s, the other seconds missing
    vocals or other) has no score and is listed in ``"unscorable"`` instead
    of carrying a NaN.
    """
    import museval

    silent = silent_stems(track)
    scored = [s for s in STEMS if s not in silent]
    out = {"track": track.name, "silent": silent, "unscorable": [], "stems": {}}
    if not scored:
        return out
    refs = np.stack([track.targets[s].audio for s in scored])
    ests = np.stack([estimates[s][: refs.shape[1]] for s in scored])
    win = int(win_seconds * track.rate)
    sdr, isr, sir, sar = museval.evaluate(refs, ests, win=win, hop=win, mode="v4", padding=True)
    for i, stem in enumerate(scored):
        if np.isnan(sdr[i]).all():
            out["unscorable"].append(stem)
            continue
        out["stems"][stem] = {"SDR": _nanmedian(sdr[i]), "ISR": _nanmedian(isr[i]), "SIR": _nanmedian(sir[i]),
                              "SAR": _nanmedian(sar[i]), "windows": int((~np.isnan(sdr[i])).sum())}
    return out


def _nanmedian(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def aggregate(track_scores: list[dict]) -> dict:
    """Median over tracks of the per-track medians, per stem; ``avg`` = mean over stems."""
    result = {}
    for stem in STEMS:
        vals = [t["stems"][stem]["SDR"] for t in track_scores
                if stem in t["stems"] and math.isfinite(t["stems"][stem]["SDR"])]
        result[stem] = {"SDR": _nanmedian(vals), "tracks": len(vals),
                        "excluded_silent": sum(stem in t["silent"] for t in track_scores),
                        "excluded_unscorable": sum(stem in t.get("unscorable", ()) or
                                                   not math.isfinite(t["stems"].get(stem, {}).get("SDR", 0.0))
                                                   for t in track_scores)}
    sdrs = [result[s]["SDR"] for s in STEMS if math.isfinite(result[s]["SDR"])]
    result["avg"] = {"SDR": float(np.mean(sdrs)) if sdrs else float("nan")}
    return result


def markdown_table(rows: dict[str, dict]) -> str:
    """``{model: aggregate(...) + extra keys}`` -> a markdown table with the disclaimer."""
    head = "| model | " + " | ".join(STEMS) + " | avg SDR |\n|---|" + "---|" * (len(STEMS) + 1) + "\n"
    lines = []
    for name, agg in rows.items():
        cells = [f"{agg[s]['SDR']:.2f}" for s in STEMS] + [f"{agg['avg']['SDR']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + f"\n\nSDR in dB, median over frames then tracks. {DISCLAIMER}\n"
