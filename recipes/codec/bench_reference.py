#!/usr/bin/env python3
"""Encoder speed side by side with the reference WaLLoC, in one process, on real music.

    make bench-reference                           # builds the side environment, then runs this
    python recipes/codec/bench_reference.py [--input song.flac] [--seconds 59] [--threads 1]

The reference is walloc 1.2.1's ``Codec1D`` (stereo, J = 8, 108 latents, the 1x1
"lightweight" encoder): its ``wavelet_analysis`` (PyTorch-Wavelets DWT per level) and
``encoder[0]`` (the 1x1 convolution) -- no quantization, no entropy coding. It needs walloc,
pytorch-wavelets, einops, diffusers and torchvision, which the project itself never imports:
``make bench-reference`` installs them into a side virtualenv on top of the full one.

This project, on the same samples and thread count:
* ``analysis``: the packet tree by lifting + the 1x1 encoder, in the encoder's groups of
  frames (``RuntimeCodec.analysis_frames``) -- the reference's scope;
* ``analysis (fused FIR)``: the previous encoder, the frame-domain FIR of the fused taps;
* ``encode``: the whole ``PacketEncoder`` (analysis, per-packet level and step, quantization,
  range coding) that ``walloc-audio encode`` runs -- more work than the reference does.

Each figure is the best of ``--repeats`` runs; samples are counted over both channels.
Timings on a shared machine move; the ratios, measured in one run, move much less.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, help="audio file (default: the shipped demo clip, tiled)")
    ap.add_argument("--seconds", type=float, default=59.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="stereo-5x")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy and torch load their BLAS

    import numpy as np
    import torch

    try:
        from walloc.walloc import Codec1D
    except ImportError as err:
        sys.exit(f"bench_reference: the reference walloc 1.2.1 is not importable ({err}); "
                 "run `make bench-reference`, which installs it in a side environment")
    from walloc_audio.audio import read_audio
    from walloc_audio.codec_stream import PacketEncoder
    from walloc_audio.demo import DEMO_CLIP
    from walloc_audio.pretrained import load_model
    from walloc_audio.runtime import fir_frames
    from walloc_audio.threads import set_threads
    from walloc_audio.wavelets import frames_from_signal

    set_threads(args.threads)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    c = model.config
    x, _ = read_audio(args.input or DEMO_CLIP, sample_rate=c.sample_rate)
    n = int(args.seconds * c.sample_rate) // c.frame * c.frame
    x = np.ascontiguousarray(np.tile(x, (1, math.ceil(n / x.shape[1])))[:, :n], dtype=np.float32)
    samples = x.size

    ref = Codec1D(channels=c.channels, J=c.J, Ne=None, Nd=c.latent_dim * 4, latent_dim=c.latent_dim,
                  latent_bits=8, lightweight_encode=True, post_filter=False).eval()
    xt = torch.from_numpy(x)[None]

    def reference():
        with torch.no_grad():
            return ref.encoder[0](ref.wavelet_analysis(xt, J=c.J))

    rt = model.runtime
    f, g = 64, 4  # the file encoder's packet and group sizes (walloc-audio encode)
    hist = rt.history_frames * c.frame
    span = f * g * c.frame
    padded = np.concatenate([np.zeros((c.channels, hist), np.float32), x,
                             np.zeros((c.channels, -n % span), np.float32)], axis=1)
    taps = rt.analysis_taps

    def lifting():
        return [rt.analysis_frames(padded[:, i : i + hist + span]) for i in range(0, n, span)]

    def fused_fir():
        return [fir_frames(frames_from_signal(padded[None, :, i : i + hist + span], c.frame), taps)
                for i in range(0, n, span)]

    def encode():
        enc = PacketEncoder(model, f, g)
        return enc.push(x) + enc.flush()

    rows = [("reference wavelet_analysis + 1x1 encoder (walloc 1.2.1)", reference),
            ("walloc-audio analysis: lifting tree + 1x1 encoder", lifting),
            ("walloc-audio analysis: fused frame FIR (before)", fused_fir),
            (f"walloc-audio encode: analysis + quantization + range coding ({model.name})", encode)]
    best = {name: math.inf for name, _ in rows}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every row alike
        for name, fn in rows:
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    base = best[rows[0][0]]
    print(f"{args.seconds:.0f} s of stereo {c.sample_rate} Hz ({args.input or 'demo clip, tiled'}), "
          f"{args.threads} thread(s), best of {args.repeats}:")
    print(f"{'':68s} {'seconds':>8s} {'M samples/s':>11s} {'x real time':>11s} {'vs reference':>12s}")
    for name, _ in rows:
        s = best[name]
        print(f"{name:68s} {s:8.3f} {samples / s / 1e6:11.1f} {args.seconds / s:11.0f} {base / s:11.2f}x")


if __name__ == "__main__":
    main()
