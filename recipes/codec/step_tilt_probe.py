#!/usr/bin/env python3
"""Does static noise shaping across latents move ViSQOL? A probe through the real file path.

    python recipes/codec/step_tilt_probe.py [FILES...] [--model stereo-5x-linear]
        [--gammas 0,0.3,0.6] [--qualities 5] [--seconds 10]

Version 2 quantizes every latent channel of a packet with the same step, which is what
minimises MSE. Perceptual coders instead let the noise follow the signal: here latent
channel ``l`` is quantized with the step ``delta * w_l``, ``w_l = (sigma_l / g) ** gamma``
(``sigma_l`` the channel's RMS over the clips, ``g`` their geometric mean), so loud
channels get coarser steps and quiet ones finer. The probe patches the quantizer of this
process only (encoder divides by ``w``, decoder multiplies back; the entropy model's
tables are today's, fitted for ``gamma = 0``, so the rates of ``gamma > 0`` are slightly
pessimistic) and codes the middle ``--seconds`` of each file with ``encode_stream`` /
``decode_stream`` at each quality. Printed per (gamma, quality): mean kbps (real bytes),
ViSQOL v3, SNR and paper PSNR. Nothing it does reaches a file format.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from noise_fill_probe import code  # this folder is on sys.path when the probe runs as a script

from walloc_audio.adaptive import AdaptiveCoder
from walloc_audio.audio import read_audio
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.metrics import paper_psnr, snr_db
from walloc_audio.pretrained import load_model
from walloc_audio.tools.evaluation import visqol


class _Tilt:
    """Per-channel step weights patched into :class:`AdaptiveCoder` (None: today's quantizer)."""

    w: np.ndarray | None = None

    @classmethod
    def install(cls) -> None:
        quantize, dequantize = AdaptiveCoder.quantize, AdaptiveCoder.dequantize

        def q(self, y, exponent, bands):
            return quantize(self, y if cls.w is None else y / cls.w[:, None], exponent, bands)

        def dq(self, q, exponent, scales, bands):
            z = dequantize(self, q, exponent, scales, bands)
            return z if cls.w is None else z * cls.w[:, None]

        AdaptiveCoder.quantize, AdaptiveCoder.dequantize = q, dq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--model", default="stereo-5x-linear")
    ap.add_argument("--gammas", default="0,0.3,0.6")
    ap.add_argument("--qualities", default="5")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    _Tilt.install()
    model = load_model(args.model)
    rate, frame = model.config.sample_rate, model.config.frame
    clips = []
    for path in args.files or [Path(DEMO_CLIP)]:
        x, _ = read_audio(path, sample_rate=rate)
        n = min(int(args.seconds * rate), x.shape[1]) // frame * frame
        start = (x.shape[1] - n) // 2
        clips.append(np.ascontiguousarray(x[:, start : start + n], dtype=np.float32))
    lat = np.concatenate([model.runtime.analyze(c) for c in clips], axis=1).astype(np.float64)
    sigma = np.sqrt(np.mean(lat**2, axis=1)) + 1e-12
    print(f"{len(clips)} clips; latent RMS {sigma.max():.3g} .. {sigma.min():.3g}", flush=True)
    for gamma in (float(g) for g in args.gammas.split(",")):
        w = (sigma / np.exp(np.mean(np.log(sigma)))) ** gamma
        _Tilt.w = None if gamma == 0 else w.astype(np.float32)
        for quality in (float(q) for q in args.qualities.split(",")):
            rows = []
            for x in clips:
                x64 = x.astype(np.float64)
                with tempfile.TemporaryDirectory() as tmp:
                    y, kbps = code(x, model, rate, True, Path(tmp), quality=quality)
                v, _ = visqol.score(visqol.excerpt(x64, rate, args.seconds), visqol.excerpt(y, rate, args.seconds))
                rows.append((kbps, v, snr_db(x64, y), paper_psnr(x64, y)))
            m = np.mean(rows, axis=0)
            print(f"gamma {gamma:.2f} (steps x{w.min():.2f}..x{w.max():.2f}) Q {quality:g}: {m[0]:.1f} kbps  "
                  f"ViSQOL {m[1]:.3f}  SNR {m[2]:.2f} dB  PSNR-p {m[3]:.2f} dB", flush=True)


if __name__ == "__main__":
    main()
