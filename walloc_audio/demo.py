"""``make demo``: transcode the shipped music clip with the default model and report.

    python -m walloc_audio.demo [--model NAME] [--input FILE] [--out-dir DIR]

Encodes the clip to ``.wlc``, decodes it back to WAV through the same library
calls the CLI uses, and prints sizes, bitrate, SNR/PSNR and speed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .audio import read_audio
from .compress import compress_file, decompress_file
from .errors import WallocError
from .metrics import paper_psnr
from .pretrained import DEFAULT_MODEL, load_model

DEMO_CLIP = Path(__file__).parent / "data" / "demo.flac"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--input", type=Path, default=DEMO_CLIP)
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the outputs here (default: a temp folder)")
    args = ap.parse_args(argv)
    con = Console()
    try:
        model = load_model(args.model)
        out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="walloc-demo-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        wlc, wav = out_dir / (args.input.stem + ".wlc"), out_dir / (args.input.stem + ".decoded.wav")
        t0 = time.perf_counter()
        enc = compress_file(str(args.input), str(wlc), model, overwrite=True)
        t1 = time.perf_counter()
        decompress_file(str(wlc), str(wav), overwrite=True, model=model, subtype="FLOAT")
        t2 = time.perf_counter()
        x, rate = read_audio(args.input)
        y, _ = read_audio(wav)
    except WallocError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    n = min(x.shape[1], y.shape[1])
    err = y[:, :n].astype(np.float64) - x[:, :n]
    snr = 10 * math.log10(float((x[:, :n].astype(np.float64) ** 2).sum()) / max(float((err**2).sum()), 1e-20))
    cfg = model.config
    dur = x.shape[1] / rate
    t = Table(title=f"walloc-audio demo: {args.input.name} through {model.name}", show_header=False)
    rows = [
        ("input", f"{args.input} ({dur:.2f} s, {rate} Hz, {x.shape[0]} ch, {os.path.getsize(args.input):,} bytes)"),
        ("model", f"{model.name}: J={cfg.J}, {cfg.latent_dim} latents (DR {cfg.dimension_reduction:.2f}), "
                  f"latency {cfg.latency_ms:.1f} ms"),
        ("16-bit PCM size", f"{x.shape[1] * x.shape[0] * 2:,} bytes (1411.2 kbps at 44.1 kHz stereo)"),
        (".wlc size", f"{os.path.getsize(wlc):,} bytes, {enc.kbps:.1f} kbps, "
                      f"{8 * os.path.getsize(wlc) / (math.ceil(enc.samples / cfg.frame) * cfg.latent_dim):.2f} bits/latent"),
        ("SNR", f"{snr:.2f} dB"),
        ("PSNR (WaLLoC paper convention)", f"{paper_psnr(x[:, :n].astype(np.float64), y[:, :n].astype(np.float64)):.2f} dB"),
        ("encode time", f"{t1 - t0:.2f} s ({dur / (t1 - t0):.0f}x real time, file I/O included)"),
        ("decode time", f"{t2 - t1:.2f} s ({dur / (t2 - t1):.0f}x real time, file I/O included)"),
        ("outputs", f"{wlc}\n{wav}"),
    ]
    for k, v in rows:
        t.add_row(f"[bold]{k}[/bold]", v)
    con.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
