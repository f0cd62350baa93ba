#!/usr/bin/env python3
"""Noise fill on and off through the real file path: ViSQOL, SNR, PSNR, spectrum, kbps.

    python recipes/codec/noise_fill_probe.py [FILES...] [--model stereo-5x] [--seconds 10]
        [--block N] [--fraction F] [--mid-side] [--edges HZ,HZ,...] [--noise band-limited|white] [--step-db DB]
        [--baseline none|default|white]

For each file (default: the demo clip, in the validation split of the codec corpus) the
middle ``--seconds`` are coded twice with ``encode_stream`` / ``decode_stream`` -- with the
fill the options describe (the energies of :mod:`walloc_audio.noisefill`) and with the
baseline: no fill (``fill=False``, the default), the default fill (``--baseline default``,
to compare a setting with what ``encode`` does today on the same clips) or the default fill
with white noise (``--baseline white``, what files written before 2026-12-07 decode to)
-- and both decodes are scored against the original: ViSQOL v3 (audio mode), SNR, paper
PSNR, the mean Welch spectrum error per band up to 16 kHz, and the file's kbps (headers and
the fill's side information included).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import welch

from walloc_audio.audio import AudioReader, read_audio
from walloc_audio.compress import decode_stream, encode_stream
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.metrics import paper_psnr, snr_db
from walloc_audio.noisefill import BAND_LIMITED, STEPS_DB, WHITE, FillSpec
from walloc_audio.pretrained import load_model
from walloc_audio.tools.evaluation import visqol



def band_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    fr, p = welch(x.mean(axis=0), rate, nperseg=4096)
    edges = [0, 250, 500, 1000, 2000, 3000, 4000, 5000, 6300, 8000, 10000, 12500, 16000]
    return np.array(edges[1:]), np.array([10 * np.log10(p[(fr >= a) & (fr < b)].mean() + 1e-20)
                                          for a, b in zip(edges[:-1], edges[1:])])


def code(x: np.ndarray, model, rate: int, fill, tmp: Path, name: str = "y",
         quality: float | None = None) -> tuple[np.ndarray, float]:
    """``x`` through encode_stream/decode_stream (``quality``: None for the default): the decode
    (float64, cropped) and the kbps."""
    src, dst = tmp / "x.wav", tmp / f"{name}.wav"
    sf.write(src, x.T, rate, subtype="FLOAT")
    buf = io.BytesIO()
    with AudioReader(str(src), sample_rate=rate) as reader:
        encode_stream(reader, buf, model, quality=quality, fill=fill)
    kbps = 8 * buf.getbuffer().nbytes / (x.shape[1] / rate) / 1000
    buf.seek(0)
    decode_stream(buf, str(dst), model=model, subtype="FLOAT")
    y, _ = read_audio(dst)
    return np.ascontiguousarray(y[:, : x.shape[1]], dtype=np.float64), kbps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--model", default="stereo-5x")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--block", type=int, default=FillSpec.block, help="frames per fill block")
    ap.add_argument("--fraction", type=float, default=FillSpec.fraction, help="share of the missing energy filled")
    ap.add_argument("--mid-side", action="store_true", help="measure and fill mid and side (default: left and right)")
    ap.add_argument("--edges", type=lambda s: tuple(int(v) for v in s.split(",")), default=FillSpec.edges_hz,
                    help="band group edges in Hz, comma-separated (default: %(default)s)")
    ap.add_argument("--noise", choices=(BAND_LIMITED, WHITE), default=BAND_LIMITED, help="what the fill adds")
    ap.add_argument("--step-db", type=float, choices=STEPS_DB, default=FillSpec.step_db, help="level step in dB")
    ap.add_argument("--baseline", choices=("none", "default", WHITE), default="none",
                    help="what the fill is compared with: no fill, the default fill, or the default with white noise")
    args = ap.parse_args()
    spec = FillSpec(edges_hz=args.edges, block=args.block, fraction=args.fraction, mid_side=args.mid_side,
                    noise=args.noise, step_db=args.step_db)
    base = {"none": False, "default": FillSpec(), WHITE: FillSpec(noise=WHITE)}[args.baseline]
    model = load_model(args.model)
    rate = model.config.sample_rate
    rows = []
    for path in args.files or [Path(DEMO_CLIP)]:
        x, _ = read_audio(path, sample_rate=rate)
        n = min(int(args.seconds * rate), x.shape[1]) // model.config.frame * model.config.frame
        start = max(0, (x.shape[1] - n) // 2)
        x = np.ascontiguousarray(x[:, start : start + n], dtype=np.float32)
        x64 = x.astype(np.float64)
        with tempfile.TemporaryDirectory() as tmp:
            y, ky = code(x, model, rate, base, Path(tmp), "baseline")
            z, kz = code(x, model, rate, spec, Path(tmp), "filled")
        _, bx = band_db(x64, rate)
        edges, by = band_db(y, rate)
        _, bz = band_db(z, rate)
        vy, _ = visqol.score(visqol.excerpt(x64, rate, args.seconds), visqol.excerpt(y, rate, args.seconds))
        vz, _ = visqol.score(visqol.excerpt(x64, rate, args.seconds), visqol.excerpt(z, rate, args.seconds))
        rows.append((path.name, ky, kz, vy, vz, snr_db(x64, y), snr_db(x64, z), paper_psnr(x64, y),
                     paper_psnr(x64, z), by - bx, bz - bx))
        print(f"{path.name}: {ky:.1f} -> {kz:.1f} kbps  ViSQOL {vy:.2f} -> {vz:.2f}  "
              f"SNR {rows[-1][5]:.2f} -> {rows[-1][6]:.2f} dB  PSNR-p {rows[-1][7]:.2f} -> {rows[-1][8]:.2f} dB",
              flush=True)
    dy = np.mean([r[9] for r in rows], axis=0)
    dz = np.mean([r[10] for r in rows], axis=0)
    print(f"\n{len(rows)} clips, {args.model}, {'no fill' if base is False else f'the default fill ({base.noise})'}"
          f" -> fill (edges {','.join(map(str, spec.edges_hz))} Hz, block {spec.block}, fraction {spec.fraction:g}, "
          f"{'mid/side' if spec.mid_side else 'left/right'}, {spec.noise} noise)")
    print("band upper edge Hz : " + " ".join(f"{e:6d}" for e in edges))
    print("baseline - orig dB : " + " ".join(f"{v:6.1f}" for v in dy))
    print("filled - orig   dB : " + " ".join(f"{v:6.1f}" for v in dz))
    mean = lambda i: float(np.mean([r[i] for r in rows]))  # noqa: E731
    print(f"mean ViSQOL {mean(3):.2f} -> {mean(4):.2f}; SNR {mean(5):.2f} -> {mean(6):.2f} dB; "
          f"paper PSNR {mean(7):.2f} -> {mean(8):.2f} dB; kbps {mean(1):.1f} -> {mean(2):.1f}")


if __name__ == "__main__":
    main()
