"""File-level transcoding in bounded memory: audio file <-> ``.wlc``.

Both directions stream: the input is read in blocks, pushed through
:class:`~walloc_audio.codec_stream.PacketEncoder` / ``PacketDecoder`` (the same
code path live streams use) and written as it goes, so memory does not grow
with the length of the file. Outputs are written atomically: a temporary file
in the output's folder, renamed only on success; Ctrl-C, a full disk or an
error leave nothing behind and never touch an existing file unless asked.

Channel mapping (explicit, recorded in the header as ``channel_mode``):
    * same channel count as the model: ``native``;
    * mono into a stereo model: duplicated to both channels (``mono``); decoding
      averages them back to mono;
    * more channels than the model: refused unless ``downmix=True``, which
      averages them to the model's channels (``downmix``); decoding then yields
      the model's channel count.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

import numpy as np

from . import __version__
from .audio import AudioReader, AudioWriter
from .bitstream import BitstreamReader, BitstreamWriter, StreamHeader
from .codec_stream import OutputTrim, PacketDecoder, PacketEncoder
from .errors import AudioError, BitstreamError
from .fsutil import STDIO, atomic_output
from .pretrained import LoadedModel, load_model

Progress = Callable[[float], None]  # called with the seconds of audio just processed


@dataclass
class EncodeStats:
    samples: int
    source_samples: int
    sample_rate: int
    bytes: int
    packets: int
    clipped: int
    seconds: float

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    @property
    def kbps(self) -> float:
        return 8 * self.bytes / max(self.duration, 1e-9) / 1000


def map_channels(block: np.ndarray, model_channels: int, mode: str) -> np.ndarray:
    if mode == "native":
        return block
    if mode == "mono":
        return np.repeat(block, model_channels, axis=0)
    # downmix: average groups of input channels onto the model's channels
    groups = np.array_split(np.arange(block.shape[0]), model_channels)
    return np.stack([block[g].mean(axis=0) for g in groups])


def channel_mode_for(source_channels: int, model_channels: int, downmix: bool, name: str) -> str:
    if source_channels == model_channels:
        return "native"
    if source_channels == 1:
        return "mono"
    if source_channels > model_channels and downmix:
        return "downmix"
    raise AudioError(
        f"{name}: {source_channels} channels, the model codes {model_channels} "
        "(use --downmix to average them down)"
    )


def encode_stream(reader: AudioReader, out: BinaryIO, model: LoadedModel, frames_per_packet: int = 64,
                  downmix: bool = False, progress: Progress | None = None, group_packets: int = 4,
                  step_scale: float = 1.0) -> EncodeStats:
    """Encode everything ``reader`` yields into the ``.wlc`` stream ``out``.

    The bytes depend only on the audio, the model, ``frames_per_packet`` and
    ``group_packets`` -- not on how the reader cut the audio into blocks.
    """
    t0 = time.perf_counter()
    model = model.with_step_scale(step_scale)
    cfg = model.config
    mode = channel_mode_for(reader.channels, cfg.channels, downmix, reader.name)
    header = StreamHeader(
        model=model.name, model_sha256=model.sha256, sample_rate=cfg.sample_rate, channels=cfg.channels,
        J=cfg.J, latent_dim=cfg.latent_dim, frames_per_packet=frames_per_packet,
        source_sample_rate=int(reader.source_rate or reader.sample_rate), source_channels=reader.channels,
        channel_mode=mode, encoder_version=__version__, step_scale=model.step_scale,
        extra={"group_packets": group_packets},
    )
    writer = BitstreamWriter(out, header)
    enc = PacketEncoder(model, frames_per_packet, group_packets)
    produced = 0
    for block in reader:
        produced += block.shape[1]
        for frames, payload in enc.push(map_channels(block, cfg.channels, mode)):
            writer.write(frames, payload)
        if progress:
            progress(block.shape[1] / cfg.sample_rate)
    if produced == 0:
        raise AudioError(f"{reader.name}: contains no audio samples")
    for frames, payload in enc.flush():
        writer.write(frames, payload)
    src_rate = header.source_sample_rate
    source_samples = round(produced * src_rate / cfg.sample_rate)
    writer.close(produced, source_samples)
    return EncodeStats(produced, source_samples, cfg.sample_rate, writer.bytes_written, writer.sequence,
                       enc.clipped, time.perf_counter() - t0)


def compress_file(src: str, dst: str, model: LoadedModel | None = None, *, overwrite: bool = False,
                  frames_per_packet: int = 64, downmix: bool = False,
                  progress: Progress | None = None, group_packets: int = 4, step_scale: float = 1.0) -> EncodeStats:
    """Encode audio file ``src`` (or ``-``) to ``dst`` (or ``-``) atomically."""
    model = model or load_model()
    with AudioReader(src, sample_rate=model.config.sample_rate, block_frames=1 << 18) as reader:
        with atomic_output(dst, overwrite=overwrite, inputs=[src]) as tmp:
            if tmp == STDIO:
                buf = sys.stdout.buffer
                return encode_stream(reader, buf, model, frames_per_packet, downmix, progress, group_packets,
                                     step_scale)
            with open(tmp, "wb") as f:
                return encode_stream(reader, f, model, frames_per_packet, downmix, progress, group_packets,
                                     step_scale)


@dataclass
class DecodeStats:
    samples: int
    sample_rate: int
    channels: int
    seconds: float


def decode_stream(f: BinaryIO, dst: str, *, overwrite: bool = False, inputs: tuple = (),
                  model: LoadedModel | None = None, subtype: str | None = None,
                  progress: Progress | None = None) -> DecodeStats:
    """Decode the ``.wlc`` stream ``f`` into the audio file ``dst`` (format from its suffix)."""
    t0 = time.perf_counter()
    reader = BitstreamReader(f)
    h = reader.header
    if model is None or model.name != h.model or model.sha256 != h.model_sha256:
        model = load_model(h.model, expected_sha256=h.model_sha256)
    model = model.with_step_scale(h.step_scale)
    cfg = model.config
    if (cfg.sample_rate, cfg.channels, cfg.J, cfg.latent_dim) != (h.sample_rate, h.channels, h.J, h.latent_dim):
        raise BitstreamError(f"header does not match model {h.model!r} (rate/channels/J/latent_dim)")
    out_channels = h.source_channels if h.channel_mode != "downmix" else cfg.channels
    if h.channel_mode == "mono":
        out_channels = 1
    dec = PacketDecoder(model)
    trim = OutputTrim.for_stream(cfg, h.frames_per_packet, out_channels)
    with atomic_output(dst, overwrite=overwrite, inputs=list(inputs)) as tmp:
        with AudioWriter(tmp, cfg.sample_rate, out_channels, out_rate=h.source_sample_rate, subtype=subtype,
                         name=dst) as w:
            for group in _groups(reader, 16):
                for pcm in dec.decode_many(group):
                    pcm = trim.align(pcm)
                    if h.channel_mode == "mono":
                        pcm = pcm.mean(axis=0, keepdims=True)
                    out = trim.release(pcm)
                    if out.shape[1]:
                        w.write(out)
                if progress:
                    progress(sum(frames for frames, _ in group) * cfg.frame / cfg.sample_rate)
            rest = trim.finish(reader.num_samples)
            if rest.shape[1]:
                w.write(rest)
    written = trim.written
    return DecodeStats(written, cfg.sample_rate, out_channels, time.perf_counter() - t0)


def _groups(reader: BitstreamReader, n: int):
    """Packets as ``(frames, payload)`` lists of up to ``n``."""
    group = []
    for packet in reader:
        group.append((packet.frames, packet.payload))
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def decompress_file(src: str, dst: str, *, overwrite: bool = False, model: LoadedModel | None = None,
                    subtype: str | None = None, progress: Progress | None = None) -> DecodeStats:
    """Decode ``src`` (``.wlc`` path or ``-``) into ``dst`` (audio path or ``-``) atomically."""
    if src == STDIO:
        return decode_stream(sys.stdin.buffer, dst, overwrite=overwrite, model=model, subtype=subtype,
                             progress=progress)
    try:
        f = open(src, "rb")
    except OSError as exc:
        raise BitstreamError(f"cannot open {src}: {exc.strerror}") from None
    with f:
        return decode_stream(io.BufferedReader(f, 1 << 20), dst, overwrite=overwrite, inputs=(src,),
                             model=model, subtype=subtype, progress=progress)
