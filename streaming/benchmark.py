"""Streaming benchmarks that print figures: latency, CPU load, a lossy UDP soak.

    python -m streaming.benchmark                    # all three, stereo-5x and the low-latency stereo-5x-ll
    python -m streaming.benchmark --soak-minutes 10  # the 10-minute UDP soak at 20x real time

* Latency: the algorithmic latency (transform delay + packet buffering) of
  each model and packet size, confirmed by an impulse through the PCM -> PCM
  processor (the peak must come out exactly ``latency_samples`` later).
* CPU: encode + decode of 44.1 kHz stereo in 512-sample blocks, the way a live
  stream runs, as a share of one core (CPU time / audio time), one thread.
* Soak: packets of real music through a UDP relay on 127.0.0.1 that drops 5 %
  at random and delays each datagram by a random 0-30 ms (so packets also
  arrive out of order), into the real receiver, jitter buffer and decoder;
  the receiver's resident memory is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import threading
import time

import numpy as np
import torch

from walloc_audio.tools.benchmark import _music
from walloc_audio.pretrained import load_model

from .processor import CodecProcessor, StreamDecoder, StreamEncoder


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def latency(models: list[str]) -> None:
    print("algorithmic latency (samples at 44.1 kHz; impulse-confirmed through CodecProcessor):")
    for name in models:
        m = load_model(name)
        for fpp in (1, 2, 4):
            proc = CodecProcessor(m, fpp)
            x = np.zeros((2, 3 * proc.latency_samples + 4096), dtype=np.float32)
            x[:, 1000] = 0.9
            y = np.concatenate([proc.process(x[:, i : i + 333]) for i in range(0, x.shape[1], 333)], axis=1)
            lag = int(np.abs(y[0]).argmax()) - 1000
            print(f"  {name:22s} {fpp} frame(s)/packet: {proc.latency_samples:5d} samples = "
                  f"{1000 * proc.latency_samples / m.config.sample_rate:5.1f} ms; impulse peak after {lag} samples")


def cpu_load(name: str, seconds: float = 60.0, block: int = 512, fpp: int = 2) -> None:
    torch.set_num_threads(1)
    m = load_model(name)
    x = _music(seconds, m.config.sample_rate)
    enc, dec = StreamEncoder(m, fpp), StreamDecoder(m, fpp)
    enc.prepare(m.config.sample_rate, 2, block)
    header = enc.header()
    from walloc_audio.bitstream import unpack_packet

    t0 = time.process_time()
    for i in range(0, x.shape[1], block):
        for data in enc.process(x[:, i : i + block]):
            dec.process(unpack_packet(data, 0, header)[0])
    cpu = time.process_time() - t0
    print(f"  {name}: {block}-sample blocks, {fpp} frames/packet: {100 * cpu / seconds:.2f} % of one core "
          f"({cpu:.2f} s CPU for {seconds:.0f} s of audio; target <= 25 %)")


def _relay(rx: socket.socket, dst: tuple, loss: float, max_delay: float, stop: threading.Event, counts: dict) -> None:
    """Forward datagrams to ``dst``, dropping ``loss`` of them and delaying each by U(0, max_delay)."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pending: list[tuple[float, bytes]] = []
    rng = random.Random(1)
    rx.settimeout(0.002)
    while not stop.is_set() or pending:
        try:
            data = rx.recv(2048)
            counts["in"] += 1
            if rng.random() >= loss:
                pending.append((time.monotonic() + rng.uniform(0, max_delay), data))
            else:
                counts["dropped"] += 1
        except socket.timeout:
            pass
        now = time.monotonic()
        due = [p for p in pending if p[0] <= now]
        pending = [p for p in pending if p[0] > now]
        for _, data in sorted(due, key=lambda p: p[0]):
            tx.sendto(data, dst)
        if stop.is_set() and not due and pending and rx.gettimeout():
            time.sleep(0.001)
    tx.close()


def soak(name: str, minutes: float, speed: float = 20.0, loss: float = 0.05, fpp: int = 2) -> None:
    from .transport import open_receiver, open_sender

    m = load_model(name)
    rate = m.config.sample_rate
    music = _music(60.0, rate)
    relay_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay_in.bind(("127.0.0.1", 0))
    stop = threading.Event()
    counts = {"in": 0, "dropped": 0}
    # Network jitter of 0-30 ms and the receiver's 200 ms patience, in audio time:
    # at `speed` x real time both shrink by `speed` in wall time.
    rx = open_receiver("udp://127.0.0.1:0", jitter_packets=8, max_wait=0.2 / speed, timeout=30)
    relay = threading.Thread(target=_relay, args=(relay_in, ("127.0.0.1", rx.port), loss, 0.03 / speed, stop, counts),
                             daemon=True)
    relay.start()
    enc = StreamEncoder(m, fpp)
    enc.prepare(rate, 2)
    total = int(minutes * 60 * rate)
    block = 4096

    def send() -> None:
        with open_sender(f"udp://127.0.0.1:{relay_in.getsockname()[1]}", enc.header()) as tx:
            t0, sent = time.monotonic(), 0
            while sent < total:
                n = min(block, total - sent)
                pos = sent % music.shape[1]
                chunk = np.take(music, np.arange(pos, pos + n) % music.shape[1], axis=1)
                for data in enc.process(chunk):
                    tx.send(data)
                sent += n
                ahead = sent / rate / speed - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            *last, end = enc.finish()
            for data in last:
                tx.send(data)
            tx.finish(end)

    sender = threading.Thread(target=send, daemon=True)
    dec = None
    samples = 0
    rss_start = None
    t0 = time.monotonic()
    sender.start()
    for kind, value in rx:
        if kind == "header":
            dec = StreamDecoder(m, value.frames_per_packet)
            rss_start = _rss_mb()
        elif kind == "packet":
            samples += dec.process(value).shape[1]
        elif kind == "lost":
            samples += dec.lost().shape[1]
        elif kind == "end":
            break
    wall = time.monotonic() - t0
    sender.join(timeout=5)
    stop.set()
    relay.join(timeout=5)
    rx.close()
    st = rx.stats
    expected = enc.sequence - 1
    print(f"  {minutes:.0f} min of music at {speed:.0f}x real time through a UDP relay dropping {100 * loss:.0f} % and "
          f"delaying 0-30 ms (audio time) "
          f"({wall:.0f} s wall): {expected} packets sent, relay dropped {counts['dropped']}")
    print(f"  receiver: {st.get('delivered', 0)} delivered, {st.get('lost', 0)} declared lost, "
          f"{st.get('reordered', 0)} reordered, {st.get('late', 0)} late, {st.get('duplicates', 0)} duplicates; "
          f"decoder concealed {dec.stats['concealed_frames']} frames; output {samples / rate / 60:.2f} min "
          f"(input {total / rate / 60:.2f} min + flush)")
    print(f"  receiver RSS: {rss_start:.0f} MB at the start, {_rss_mb():.0f} MB at the end "
          f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="stereo-5x,stereo-5x-ll,stereo-5x-linear,stereo-5x-ll-linear")
    ap.add_argument("--soak-minutes", type=float, default=10.0)
    ap.add_argument("--speed", type=float, default=20.0, help="soak speed, x real time")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    print(f"{os.cpu_count()} CPU cores; torch {torch.__version__}")
    latency(models)
    print("CPU load of live encode + decode (one thread):")
    for name in models:
        cpu_load(name)
    if args.soak_minutes > 0:
        print("UDP soak:")
        soak(models[0], args.soak_minutes, args.speed)


if __name__ == "__main__":
    main()
