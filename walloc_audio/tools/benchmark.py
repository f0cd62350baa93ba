"""Codec benchmarks that print figures: throughput, memory on a 1-hour file, held-out rate.

    python -m walloc_audio.tools.benchmark                      # throughput, 1 thread and all threads
    python -m walloc_audio.tools.benchmark --memory             # + 60-minute file through the CLI, peak RSS
    python -m walloc_audio.tools.benchmark --heldout VAL.txt    # + kbps, bits/latent, SNR on held-out tracks

Throughput is measured in memory on real music (the demo clip, tiled), through
the same ``PacketEncoder``/``PacketDecoder`` the files and streams use:
analysis (WPT + encoder), quantization and range coding for encode; range
decoding, dequantization, decoder and synthesis for decode. Samples are counted
over both channels (one second of 44.1 kHz stereo = 88,200 samples).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

from walloc_audio.audio import read_audio
from walloc_audio.bitstream import PACKET_HEADER_BYTES
from walloc_audio.codec_stream import PacketDecoder, PacketEncoder
from walloc_audio.compress import decode_stream, encode_stream
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.metrics import paper_psnr
from walloc_audio.noisefill import FillSpec
from walloc_audio.pretrained import DEFAULT_MODEL, load_model
from walloc_audio.threads import set_threads


def _music(seconds: float, rate: int) -> np.ndarray:
    x, r = read_audio(DEMO_CLIP, sample_rate=rate)
    reps = math.ceil(seconds * rate / x.shape[1])
    return np.ascontiguousarray(np.tile(x, reps)[:, : int(seconds * rate)])


def throughput(model_name: str, seconds: float, threads: int, fpp: int, repeats: int = 3,
               fill: bool = True) -> dict:
    """Best-of-``repeats`` in-memory encode and decode; version 2 with the noise fill (``fill``), as
    ``encode`` writes files."""
    set_threads(threads)
    model = load_model(model_name)
    spec = FillSpec.for_frame(model.config.frame) if fill and model.adaptive is not None else None
    x = _music(seconds, model.config.sample_rate)
    block = 65536
    best_enc = best_dec = float("inf")
    for _ in range(repeats):
        enc = PacketEncoder(model, fpp, group_packets=4, fill=spec)
        t0 = time.perf_counter()
        packets = []
        for i in range(0, x.shape[1], block):
            packets += enc.push(x[:, i : i + block])
        packets += enc.flush()
        best_enc = min(best_enc, time.perf_counter() - t0)
        dec = PacketDecoder(model, enc.version, enc.bands, fill=spec)
        t0 = time.perf_counter()
        for i in range(0, len(packets), 16):
            dec.decode_many(packets[i : i + 16])
        best_dec = min(best_dec, time.perf_counter() - t0)
    n = x.size
    return {"threads": threads, "samples": n, "fill": spec is not None, "enc_s": best_enc, "dec_s": best_dec,
            "enc_msps": n / best_enc / 1e6, "dec_msps": n / best_dec / 1e6,
            "enc_rt": seconds / best_enc, "dec_rt": seconds / best_dec,
            "kbps": 8 * sum(len(p) + PACKET_HEADER_BYTES for _, p in packets) / seconds / 1000}


def _watch_peak_rss(proc: subprocess.Popen) -> int:
    """Peak resident memory (KiB) of a running child, from its ``VmHWM``.

    ``ru_maxrss`` from ``wait4`` would also count the pages the child shared
    with this (large) parent before ``exec``; ``VmHWM`` belongs to the child's
    own address space only. Polled until exit (the value only grows).
    """
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    return peak


def write_long_file(path: str, minutes: float, rate: int = 44100) -> None:
    """A ``minutes``-long stereo FLAC of real music (the demo clip, tiled)."""
    music = _music(60.0, rate).T
    with sf.SoundFile(path, "w", rate, 2, "PCM_16") as f:
        whole, part = divmod(minutes, 1.0)
        for _ in range(int(whole)):
            f.write(music)
        f.write(music[: int(part * 60 * rate)])


def memory_run(model_name: str, src: str, tmp: str) -> dict:
    """Encode and decode ``src`` with the CLI in child processes: seconds and peak RSS of each."""
    out = {}
    wlc, dec = os.path.join(tmp, f"{model_name}.wlc"), os.path.join(tmp, f"{model_name}.out.flac")
    for verb, args in [("encode", [src, wlc, "--model", model_name]), ("decode", [wlc, dec])]:
        cmd = [sys.executable, "-m", "walloc_audio", verb, "-q", "-f", *args]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd)
        peak = _watch_peak_rss(proc)
        dt = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{verb} failed with exit code {proc.returncode}")
        out[f"{verb}_s"], out[f"{verb}_peak_mb"] = dt, peak / 1024
    out["decoded_samples"] = sf.info(dec).frames
    return out


def memory_check(model_name: str, minutes: float) -> None:
    """Encode and decode a long stereo file with the CLI in a child process; report peak RSS."""
    rate = 44100
    with tempfile.TemporaryDirectory(prefix="walloc-mem-") as tmp:
        src = os.path.join(tmp, "long.flac")
        t0 = time.perf_counter()
        write_long_file(src, minutes, rate)
        print(f"  wrote {minutes:.0f}-minute test file ({os.path.getsize(src) / 1e6:.0f} MB FLAC) "
              f"in {time.perf_counter() - t0:.0f} s")
        r = memory_run(model_name, src, tmp)
        for verb in ("encode", "decode"):
            dt = r[f"{verb}_s"]
            print(f"  {verb}: {dt:6.1f} s ({minutes * 60 / dt:5.0f}x real time), peak RSS {r[f'{verb}_peak_mb']:6.0f} MB")
        print(f"  decoded length {r['decoded_samples']} samples (input {int(minutes * 60 * rate)})")


def bench_models(names: list[str], seconds: float, minutes: float, fpp: int = 64, log=print,
                 fill: bool = True) -> list[dict]:
    """Throughput (1 thread and all), latency and peak memory of each model: ``walloc-audio bench``."""
    threads = sorted({1, os.cpu_count() or 1})
    rows = []
    with tempfile.TemporaryDirectory(prefix="walloc-bench-") as tmp:
        src = None
        if minutes > 0:
            src = os.path.join(tmp, "long.flac")
            write_long_file(src, minutes)
        for name in names:
            model = load_model(name)
            cfg = model.config
            row = {"model": name, "J": cfg.J, "latents": cfg.latent_dim, "parameters": model.num_parameters(),
                   "latency_ms": round(cfg.latency_ms, 2), "latency_samples": cfg.latency_samples}
            for t in threads:
                r = throughput(name, seconds, t, fpp, fill=fill)
                row["fill"] = r["fill"]
                row[f"encode_msps_{t}t"], row[f"encode_x_rt_{t}t"] = round(r["enc_msps"], 2), round(r["enc_rt"], 1)
                row[f"decode_msps_{t}t"], row[f"decode_x_rt_{t}t"] = round(r["dec_msps"], 2), round(r["dec_rt"], 1)
            if src:
                m = memory_run(name, src, tmp)
                row.update({"memory_minutes": minutes, "encode_peak_mb": round(m["encode_peak_mb"]),
                            "decode_peak_mb": round(m["decode_peak_mb"]),
                            "file_encode_x_rt": round(minutes * 60 / m["encode_s"], 1),
                            "file_decode_x_rt": round(minutes * 60 / m["decode_s"], 1)})
            set_threads(os.cpu_count() or 1)
            log(row)
            rows.append(row)
    return rows


def heldout(model_name: str, listing: str) -> None:
    """kbps, bits/latent, SNR and paper PSNR on each held-out track, through the real bitstream."""
    from walloc_audio.audio import AudioReader

    model = load_model(model_name)
    cfg = model.config
    total_bits = total_frames = total_s = 0.0
    snrs, psnrs = [], []
    paths = [p.strip() for p in open(listing) if p.strip()]
    for path in paths:
        buf = io.BytesIO()
        with AudioReader(path, sample_rate=cfg.sample_rate) as r:
            st = encode_stream(r, buf, model)
        buf.seek(0)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "y.wav")
            decode_stream(buf, out, model=model, subtype="FLOAT")
            y, _ = read_audio(out)
        x, _ = read_audio(path, sample_rate=cfg.sample_rate)
        frames = math.ceil(st.samples / cfg.frame)
        err = y.astype(np.float64) - x
        snr = 10 * math.log10((x.astype(np.float64) ** 2).sum() / max((err**2).sum(), 1e-20))
        ps = paper_psnr(x.astype(np.float64), y.astype(np.float64))
        snrs.append(snr)
        psnrs.append(ps)
        total_bits += 8 * st.bytes
        total_frames += frames
        total_s += st.duration
        print(f"  {os.path.basename(path)[:40]:40s} {st.duration:6.1f} s {st.kbps:6.1f} kbps  SNR {snr:5.1f} dB  PSNR {ps:5.1f} dB")
    print(f"  held-out mean over {len(paths)} tracks ({total_s / 60:.1f} min): {total_bits / total_s / 1000:.1f} kbps, "
          f"{total_bits / (total_frames * cfg.latent_dim):.3f} bits/latent (container included), "
          f"SNR {np.mean(snrs):.2f} dB, PSNR(paper) {np.mean(psnrs):.2f} dB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--seconds", type=float, default=120.0, help="audio per throughput run")
    ap.add_argument("--frames-per-packet", type=int, default=64)
    ap.add_argument("--memory", action="store_true", help="also run the 60-minute file through the CLI")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--heldout", help="a file listing held-out tracks (e.g. DATA/val.txt)")
    args = ap.parse_args(argv)
    cfg = load_model(args.model).config
    print(f"model {args.model}: J={cfg.J}, {cfg.latent_dim} latents, latency {cfg.latency_samples} samples "
          f"({cfg.latency_ms:.1f} ms); {os.cpu_count()} CPU cores; numpy {np.__version__}")
    print(f"throughput on {args.seconds:.0f} s of stereo music in memory, best of 3 "
          f"(M samples/s counts both channels; target >= 40):")
    print(f"  {'threads':>7} | {'encode M samples/s':>18} {'x real time':>11} | {'decode M samples/s':>18} {'x real time':>11}")
    for threads in sorted({1, os.cpu_count() or 1}):
        r = throughput(args.model, args.seconds, threads, args.frames_per_packet)
        print(f"  {threads:>7} | {r['enc_msps']:18.1f} {r['enc_rt']:11.0f} | {r['dec_msps']:18.1f} {r['dec_rt']:11.0f}")
    if args.memory:
        print(f"memory: {args.minutes:.0f}-minute stereo 44.1 kHz file through `walloc-audio encode/decode` (target < 1 GB):")
        memory_check(args.model, args.minutes)
    if args.heldout:
        print(f"held-out tracks from {args.heldout}:")
        heldout(args.model, args.heldout)


if __name__ == "__main__":
    main()
