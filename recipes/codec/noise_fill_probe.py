#!/usr/bin/env python3
"""Probe for issue 11: does decoder-side noise filling of the discarded subspace bring the highs back?

    python recipes/codec/noise_fill_probe.py [FILES...] [--model stereo-5x] [--seconds 10]

For each file (default: the demo clip, in the validation split of the codec corpus):

1. code it through the real file path (``encode_stream`` / ``decode_stream``) -> ``y``;
2. in the WPT domain, measure per channel, per block of ``--block`` frames and per high band
   group (4-5, 5-6.3, 6.3-8, 8-10, 10-12.5, 12.5-16, 16-22 kHz) the energy of the original
   (quantized to 1.5-dB steps: what a side channel would carry) and of the decode;
3. add white noise in every group's bands where the decode falls short, projected onto the
   null space of the encoder (the latents do not see it), scaled to the missing energy;
4. report ViSQOL v3 (audio mode), SNR, paper PSNR and the mean band spectrum error
   (Welch, 1/3-octave-ish bands up to 16 kHz), without and with the fill, and the side
   information's raw size (4 bits per value, before entropy coding).

A probe, not the codec: the fill runs offline on the decoded file, with the original's
energies in hand; what it measures is whether the idea is worth a bitstream change.
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import welch

from walloc_audio.audio import AudioReader, read_audio
from walloc_audio.compress import decode_stream, encode_stream
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.lifting import band_scales, packet_lifting
from walloc_audio.metrics import paper_psnr, snr_db
from walloc_audio.pretrained import load_model
from walloc_audio.runtime import FrameFIR
from walloc_audio.tools.evaluation import visqol
from walloc_audio.wavelets import freq_to_natural, packet_filters, signal_from_frames

GROUP_HZ = (4000, 5000, 6300, 8000, 10000, 12500, 16000, 22050)
STEP_DB = 1.5


def wpt(x: np.ndarray, J: int) -> np.ndarray:
    """``[C, T]`` -> coefficients ``[C, P (frequency order), T / N]`` (zero-extended edges)."""
    c = packet_lifting(x.astype(np.float64), J) * band_scales(J)[None, :, None]
    return c[:, freq_to_natural(J)]


def iwpt_aligned(coef: np.ndarray, J: int, n: int) -> np.ndarray:
    """Inverse of :func:`wpt` for coefficients laid out as it returns them, as PCM ``[C, n]``."""
    f = packet_filters(J)
    frames = np.ascontiguousarray(coef.transpose(2, 0, 1))  # [K, C, P]
    pad = np.zeros((f.synthesis.shape[0], coef.shape[0], coef.shape[1]))
    out = signal_from_frames(FrameFIR(f.synthesis).process(np.concatenate([frames, pad])), 1)[:, 0]
    d = f.synthesis_delay * f.frame
    return out[:, d : d + n]


def band_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    fr, p = welch(x.mean(axis=0), rate, nperseg=4096)
    edges = [0, 250, 500, 1000, 2000, 3000, 4000, 5000, 6300, 8000, 10000, 12500, 16000]
    return np.array(edges[1:]), np.array([10 * np.log10(p[(fr >= a) & (fr < b)].mean() + 1e-20)
                                          for a, b in zip(edges[:-1], edges[1:])])


def fill(x: np.ndarray, y: np.ndarray, model, block: int, rng: np.random.Generator,
         fraction: float = 1.0) -> tuple[np.ndarray, int]:
    c = model.config
    J, P = c.J, c.frame
    X, Y = wpt(x, J), wpt(y, J)
    back = iwpt_aligned(X, J, x.shape[1])  # the pair is a perfect reconstruction away from the edges
    assert np.abs(back - x)[:, 4096:-4096].max() < 1e-6 * max(np.abs(x).max(), 1e-9), "WPT pair misaligned"
    K = X.shape[2]
    band_hz = (np.arange(P) + 0.5) * c.sample_rate / 2 / P
    groups = [np.nonzero((band_hz >= a) & (band_hz < b))[0] for a, b in zip(GROUP_HZ[:-1], GROUP_HZ[1:])]
    groups = [g for g in groups if g.size]
    enc = np.asarray(model.runtime._encoder, dtype=np.float64).reshape(-1, c.channels * P)  # [L, C*P]
    null = np.eye(enc.shape[1]) - np.linalg.pinv(enc) @ enc
    noise = np.zeros_like(X)
    values = 0
    for k0 in range(0, K, block):
        sl = slice(k0, min(K, k0 + block))
        n = rng.standard_normal((c.channels, P, sl.stop - sl.start))
        mask = np.zeros((c.channels, P, 1))
        for g in groups:
            mask[:, g] = 1.0
        n = (null @ (n * mask).reshape(c.channels * P, -1)).reshape(n.shape)
        for g in groups:
            for ch in range(c.channels):
                ex = np.sum(X[ch, g, sl] ** 2)
                values += 1
                if ex <= 0:
                    continue
                ex = 10 ** (STEP_DB * np.round(10 * np.log10(ex) / STEP_DB) / 10)  # what the side channel carries
                deficit = fraction * (ex - np.sum(Y[ch, g, sl] ** 2))
                en = np.sum(n[ch, g] ** 2)
                if deficit > 0 and en > 0:
                    noise[ch, g, sl] = n[ch, g] * math.sqrt(deficit / en)
    return y + iwpt_aligned(noise, J, y.shape[1]), values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--model", default="stereo-5x")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--block", type=int, default=16, help="frames per side-information block (16: 93 ms)")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the missing energy filled")
    args = ap.parse_args()
    model = load_model(args.model)
    rate = model.config.sample_rate
    rng = np.random.default_rng(0)
    rows = []
    for path in args.files or [Path(DEMO_CLIP)]:
        x, _ = read_audio(path, sample_rate=rate)
        n = min(int(args.seconds * rate), x.shape[1]) // model.config.frame * model.config.frame
        start = max(0, (x.shape[1] - n) // 2)
        x = np.ascontiguousarray(x[:, start : start + n], dtype=np.float32)
        buf = io.BytesIO()
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "x.wav"
            sf.write(src, x.T, rate, subtype="FLOAT")
            with AudioReader(str(src), sample_rate=rate) as reader:
                encode_stream(reader, buf, model)
            buf.seek(0)
            decode_stream(buf, str(Path(tmp) / "y.wav"), model=model, subtype="FLOAT")
            y, _ = read_audio(Path(tmp) / "y.wav")
        y = np.ascontiguousarray(y[:, : x.shape[1]], dtype=np.float64)
        x64 = x.astype(np.float64)
        z, values = fill(x64, y, model, args.block, rng, args.fraction)
        kbps = 8 * buf.getbuffer().nbytes / (x.shape[1] / rate) / 1000
        side_kbps = 4 * values / (x.shape[1] / rate) / 1000
        _, bx = band_db(x64, rate)
        edges, by = band_db(y, rate)
        _, bz = band_db(z, rate)
        vy, _ = visqol.score(visqol.excerpt(x64, rate, args.seconds), visqol.excerpt(y, rate, args.seconds))
        vz, _ = visqol.score(visqol.excerpt(x64, rate, args.seconds), visqol.excerpt(z, rate, args.seconds))
        rows.append((path.name, kbps, side_kbps, vy, vz, snr_db(x64, y), snr_db(x64, z), paper_psnr(x64, y),
                     paper_psnr(x64, z), by - bx, bz - bx))
        print(f"{path.name}: {kbps:.1f} kbps (+{side_kbps:.2f} side, raw) ViSQOL {vy:.2f} -> {vz:.2f}  "
              f"SNR {rows[-1][5]:.2f} -> {rows[-1][6]:.2f} dB  PSNR-p {rows[-1][7]:.2f} -> {rows[-1][8]:.2f} dB",
              flush=True)
    dy = np.mean([r[9] for r in rows], axis=0)
    dz = np.mean([r[10] for r in rows], axis=0)
    print(f"\n{len(rows)} clips, {args.model}, block {args.block} frames, fraction {args.fraction:g}")
    print("band upper edge Hz : " + " ".join(f"{e:6d}" for e in edges))
    print("decode - orig  dB  : " + " ".join(f"{v:6.1f}" for v in dy))
    print("filled - orig  dB  : " + " ".join(f"{v:6.1f}" for v in dz))
    mean = lambda i: float(np.mean([r[i] for r in rows]))  # noqa: E731
    print(f"mean ViSQOL {mean(3):.2f} -> {mean(4):.2f}; SNR {mean(5):.2f} -> {mean(6):.2f} dB; "
          f"paper PSNR {mean(7):.2f} -> {mean(8):.2f} dB; kbps {mean(1):.1f} + side {mean(2):.2f} (raw)")


if __name__ == "__main__":
    main()
