"""``walloc-audio stream`` and ``walloc-audio listen``: live capture, send, receive, play.

Threads: sounddevice callbacks only move buffers through bounded queues
(:mod:`streaming.live`); this module's loop -- a worker apart from the audio
callbacks -- encodes, sends, decodes and draws the panel. Ctrl-C ends the loop,
and the stream is finished properly: the last packets and the end packet are
written, so a ``.wlc`` being recorded is complete and decodable.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Optional

from walloc_audio.bitstream import PACKET_HEADER_BYTES, unpack_packet
from walloc_audio.codec_stream import OutputTrim
from walloc_audio.errors import WallocError
from walloc_audio.fsutil import STDIO, atomic_output
from walloc_audio.pretrained import DEFAULT_MODEL, load_model

from .processor import StreamDecoder, StreamEncoder


class _FileSink:
    """A ``.wlc`` being recorded: header, packets, end packet; renamed into place at the end."""

    def __init__(self, stack: contextlib.ExitStack, path: str, force: bool, header: bytes):
        if path == STDIO:
            self.f = sys.stdout.buffer
        else:
            tmp = stack.enter_context(atomic_output(path, overwrite=force))
            self.f = stack.enter_context(open(tmp, "wb"))
        self.f.write(header)

    def send(self, data: bytes) -> None:
        self.f.write(data)

    def finish(self, end: bytes) -> None:
        self.f.write(end)
        self.f.flush()


@contextlib.contextmanager
def _ctrl_c_sets(flag: threading.Event):
    """While active, Ctrl-C sets ``flag`` instead of raising mid-packet.

    The loop checks the flag between packets, so a stream is never cut inside a
    write or between a sequence number and its packet; it then finishes properly.
    (Only the main thread may install signal handlers; elsewhere Ctrl-C stays as is.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, lambda *_: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _ms(samples: int, rate: int) -> float:
    return 1000.0 * samples / rate


def _one_thread() -> None:
    """Live blocks are small: one thread computes them faster than two, and idle
    BLAS workers would spin between blocks, burning a core for nothing."""
    from walloc_audio.threads import set_threads

    set_threads(1)


def run_stream(model_name: Optional[str], out: Optional[str], send: Optional[str], monitor: bool,
               input_device, output_device, block_size: int, seconds: Optional[float],
               frames_per_packet: int, rate: Optional[int], channels: int, force: bool, quiet: bool,
               quality: Optional[float] = None, kbps: Optional[float] = None, warn=None) -> dict:
    """Microphone -> encoder -> file / network / stdout (and optionally -> decoder -> speaker)."""
    from walloc_audio.compress import check_rate

    from .transport_udp import PACKET_FRAMING_BYTES, PREFIX as DATAGRAM_PREFIX
    from .live import AudioInput, AudioOutput
    from .panel import LivePanel

    if not (out or send or monitor):
        raise WallocError("nothing to do: give --out FILE.wlc, --send URL, - (stdout) or --monitor")
    _one_thread()
    model = load_model(model_name or DEFAULT_MODEL)
    cfg = model.config
    quality, kbps, warning = check_rate(model, quality, kbps, frames_per_packet)
    if warning and warn:
        warn(warning)
    # --bitrate counts what goes on the wire: packet framing (6 bytes over UDP, 14 in files and over TCP),
    # plus the datagram prefix over UDP.
    udp = bool(send and send.startswith("udp:"))
    framing = PACKET_FRAMING_BYTES + DATAGRAM_PREFIX.size if udp else PACKET_HEADER_BYTES
    enc = StreamEncoder(model, frames_per_packet, quality=quality, kbps=kbps, framing_bytes=framing)
    stats = {"packets": 0, "bytes": 0, "samples": 0}
    with contextlib.ExitStack() as stack:
        mic = stack.enter_context(AudioInput(input_device, rate or cfg.sample_rate, channels, block_size))
        enc.prepare(mic.sample_rate, mic.channels, block_size)
        header = enc.header()
        sinks = []
        if out:
            sinks.append(_FileSink(stack, out, force, enc.header_bytes()))
        if send:
            from .transport import open_sender

            sinks.append(stack.enter_context(open_sender(send, header)))
        speaker = dec = None
        if monitor:
            speaker = stack.enter_context(AudioOutput(output_device, cfg.sample_rate, cfg.channels, block_size))
            dec = StreamDecoder(model, frames_per_packet, header=header)
        panel = stack.enter_context(LivePanel(f"walloc-audio stream ({model.name})", disable=True if quiet else None))
        algo_ms = _ms(enc.latency_samples, cfg.sample_rate)
        limit = None if seconds is None else int(seconds * mic.sample_rate)
        t0 = time.monotonic()
        stop = threading.Event()
        with _ctrl_c_sets(stop):
            while not stop.is_set() and (limit is None or stats["samples"] < limit):
                block = mic.read(timeout=0.5)
                if block is None:
                    continue
                if limit is not None:
                    block = block[:, : limit - stats["samples"]]
                stats["samples"] += block.shape[1]
                for data in enc.process(block):
                    for sink in sinks:
                        sink.send(data)
                    stats["packets"] += 1
                    stats["bytes"] += len(data)
                    if dec is not None:
                        speaker.write(dec.process(unpack_packet(data, 0, header)[0]))
                elapsed = max(time.monotonic() - t0, 1e-3)
                buffer_ms = _ms(mic.queued_blocks * block_size, mic.sample_rate)
                if speaker is not None:
                    buffer_ms += _ms(speaker.buffered_samples, cfg.sample_rate)
                panel.update(in_db=mic.level_db, out_db=speaker.level_db if speaker else None,
                             kbps=8 * stats["bytes"] / elapsed / 1000, algo_ms=algo_ms, buffer_ms=buffer_ms,
                             sent=stats["packets"], xruns={**mic.stats, **(speaker.stats if speaker else {})},
                             clipped=enc.clipped)
        interrupted = stop.is_set()
        # Finish properly whatever stopped us: the last packets, then the end packet.
        *last, end = enc.finish()
        for data in last:
            for sink in sinks:
                sink.send(data)
            stats["packets"] += 1
            stats["bytes"] += len(data)
        for sink in sinks:
            sink.finish(end)
        stats.update(xruns={**mic.stats, **(speaker.stats if speaker else {})})
    stats.update(interrupted=interrupted, clipped=enc.clipped, latency_ms=algo_ms,
                 seconds=stats["samples"] / mic.sample_rate)
    return stats


def run_listen(url: str, out: Optional[str], play: bool, output_device, block_size: int, jitter_packets: int,
               timeout: Optional[float], force: bool, quiet: bool, seconds: Optional[float] = None) -> dict:
    """Network / file / stdin -> decoder -> speaker and/or an audio file."""
    from walloc_audio.audio import AudioWriter

    from .live import AudioOutput, peak_db
    from .panel import LivePanel
    from .transport import open_receiver

    if not (play or out):
        raise WallocError("nothing to do: play to a device (default) or give --out FILE")
    _one_thread()
    stats = {"packets": 0, "lost": 0, "samples": 0, "bytes": 0}
    with contextlib.ExitStack() as stack:
        rx = stack.enter_context(open_receiver(url, jitter_packets=jitter_packets, timeout=timeout))
        event = None
        while event is None and not rx.done:
            event = rx.next_event()  # blocks; the receiver's own `timeout` bounds a silent peer
        kind, header = event if event is not None else ("none", None)
        if kind != "header":
            raise WallocError(f"{url}: stream did not start with a header")
        model = load_model(header.model, expected_sha256=header.model_sha256).with_step_scale(header.step_scale)
        cfg = model.config
        dec = StreamDecoder(model, header.frames_per_packet, header=header)
        channels = 1 if header.channel_mode == "mono" else cfg.channels
        writer = speaker = None
        if out:
            tmp = stack.enter_context(atomic_output(out, overwrite=force))
            writer = stack.enter_context(AudioWriter(tmp, cfg.sample_rate, channels, name=out))
        if play:
            speaker = stack.enter_context(AudioOutput(output_device, cfg.sample_rate, channels, block_size))
        panel = stack.enter_context(LivePanel(f"walloc-audio listen ({model.name})", disable=True if quiet else None))
        trim = OutputTrim.for_stream(cfg, header.frames_per_packet, channels)
        limit = None if seconds is None else int(seconds * cfg.sample_rate)
        algo_ms = _ms(dec.latency_samples, cfg.sample_rate)
        t0 = time.monotonic()
        end = None
        stop = threading.Event()
        with _ctrl_c_sets(stop):
            while not stop.is_set():
                event = rx.next_event(0.2)
                if event is None:
                    if rx.done:
                        break
                    continue
                kind, value = event
                if kind == "packet":
                    pcm = dec.process(value)
                    stats["packets"] += 1
                    stats["bytes"] += len(value.payload) + PACKET_HEADER_BYTES
                elif kind == "lost":
                    pcm = dec.lost()
                    stats["lost"] += 1
                elif kind == "end":
                    end = value
                    break
                else:
                    continue
                pcm = trim.align(pcm)
                if channels == 1:
                    pcm = pcm.mean(axis=0, keepdims=True)
                if end is None and limit is not None:
                    pcm = pcm[:, : max(0, limit - stats["samples"])]
                stats["samples"] += pcm.shape[1]
                if writer is not None and pcm.shape[1]:
                    out = trim.release(pcm)
                    if out.shape[1]:
                        writer.write(out)
                if speaker is not None and pcm.shape[1]:
                    # A file arrives faster than real time: pace it to the device.
                    while speaker.buffered_samples > cfg.sample_rate // 4 and not stop.is_set():
                        time.sleep(0.01)
                    speaker.write(pcm)
                elapsed = max(time.monotonic() - t0, 1e-3)
                buffer_ms = _ms(jitter_packets * header.frames_per_packet * cfg.frame, cfg.sample_rate)
                if speaker is not None:
                    buffer_ms += _ms(speaker.buffered_samples, cfg.sample_rate)
                panel.update(out_db=peak_db(pcm),
                             kbps=8 * stats["bytes"] / elapsed / 1000, algo_ms=algo_ms, buffer_ms=buffer_ms,
                             received=stats["packets"], lost=stats["lost"], concealed=dec.stats["concealed_frames"],
                             xruns=speaker.stats if speaker else 0)
                if limit is not None and stats["samples"] >= limit:
                    break
        interrupted = stop.is_set()
        if writer is not None:
            writer.write(trim.finish(None if end is None else end[0], strict=False))
            stats["samples"] = trim.written
        if speaker is not None and not interrupted:
            speaker.drain(timeout=5.0)
        stats.update(transport=dict(getattr(rx, "stats", {})))
    stats.update(interrupted=interrupted, concealed_frames=dec.stats["concealed_frames"], latency_ms=algo_ms,
                 ended=end is not None)
    return stats
