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
from .bitstream import END_PACKET_BYTES, BitstreamReader, BitstreamWriter, StreamHeader, header_bytes
from .codec_stream import OutputTrim, PacketDecoder, PacketEncoder, RateSpec
from .errors import AudioError, BitstreamError
from .fsutil import STDIO, atomic_output
from .noisefill import FillSpec
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


def check_rate(model: LoadedModel, quality: float | None, kbps: float | None,
               frames_per_packet: int) -> tuple[float | None, float | None, str | None]:
    """Validate a quality or bitrate request; clamp a bitrate to what the model reaches.

    Returns ``(quality, kbps, warning)``; raises :class:`AudioError` for a bad value.
    """
    import math

    from .codec_stream import bitrate_limits
    from .ratecontrol import Q_MAX, Q_MIN

    if quality is not None and kbps is not None:
        raise AudioError("give --quality or --bitrate, not both")
    if quality is not None and not (math.isfinite(quality) and Q_MIN <= quality <= Q_MAX):
        raise AudioError(f"quality must be {Q_MIN:g}..{Q_MAX:g}, got {quality:g}")
    if kbps is None:
        return quality, None, None
    if not (math.isfinite(kbps) and kbps > 0):
        raise AudioError(f"bitrate must be a positive number of kbps, got {kbps:g}")
    limits = bitrate_limits(model, frames_per_packet)
    if limits is None:
        return None, kbps, None
    lo, hi = limits
    if kbps < lo or kbps > hi:
        clamped = min(max(kbps, lo), hi)
        why = "below what" if kbps < lo else "above what helps for"
        return None, clamped, (f"warning: {kbps:g} kbps is {why} {model.name} ({lo:.1f}..{hi:.1f} kbps at "
                               f"{frames_per_packet} frames per packet); using {clamped:.1f} kbps")
    return None, kbps, None


def stream_header(model: LoadedModel, frames_per_packet: int, source_rate: int, source_channels: int,
                  mode: str, version: int, extra: dict, fill: FillSpec | None = None) -> StreamHeader:
    """The header of a stream of ``model`` (version 2 names its v2 entropy model and band count)."""
    from .adaptive import bands_for

    cfg = model.config
    v2 = dict(quantizer="adaptive", bands=bands_for(frames_per_packet, cfg.latent_dim),
              entropy_sha256=model.adaptive_sha256) if version == 2 else {}
    return StreamHeader(
        model=model.name, model_sha256=model.sha256, sample_rate=cfg.sample_rate, channels=cfg.channels,
        J=cfg.J, latent_dim=cfg.latent_dim, frames_per_packet=frames_per_packet,
        source_sample_rate=int(source_rate), source_channels=source_channels, channel_mode=mode,
        encoder_version=__version__, step_scale=model.step_scale if version == 1 else 1.0, extra=extra,
        fill=fill.to_header() if fill is not None else {}, **v2)


def encode_stream(reader: AudioReader, out: BinaryIO, model: LoadedModel, frames_per_packet: int = 64,
                  downmix: bool = False, progress: Progress | None = None, group_packets: int = 4,
                  step_scale: float = 1.0, quality: float | None = None, kbps: float | None = None,
                  version: int | None = None, fill: bool | FillSpec = True) -> EncodeStats:
    """Encode everything ``reader`` yields into the ``.wlc`` stream ``out``.

    Version 2 (the default for models with a v2 entropy model): constant
    ``quality`` (0..10, default 5) or average ``kbps`` (header and framing
    included), and with ``fill`` the high-band energies for the decoder's noise
    fill (:mod:`walloc_audio.noisefill`; a :class:`~walloc_audio.noisefill.FillSpec` for other settings). Version 1: the fixed step times ``step_scale``. The bytes depend
    only on the audio, the model, these settings, ``frames_per_packet`` and
    ``group_packets`` -- not on how the reader cut the audio into blocks.
    """
    t0 = time.perf_counter()
    version = version or (2 if model.adaptive is not None else 1)
    if version == 1:
        if quality is not None or kbps is not None:
            raise AudioError("quality and bitrate need a version-2 stream (a model with a v2 entropy model)")
        model = model.with_step_scale(step_scale)
    elif step_scale != 1.0:
        raise AudioError("step scale is a version-1 setting; use quality or bitrate")
    cfg = model.config
    mode = channel_mode_for(reader.channels, cfg.channels, downmix, reader.name)
    spec = (fill if isinstance(fill, FillSpec) else FillSpec.for_frame(cfg.frame)) if fill and version == 2 else None
    header = stream_header(model, frames_per_packet, reader.source_rate or reader.sample_rate, reader.channels,
                           mode, version, {"group_packets": group_packets}, spec)
    rate = None
    if version == 2:
        rate = RateSpec(quality, kbps, fixed_bytes=len(header_bytes(header)) + END_PACKET_BYTES)
    writer = BitstreamWriter(out, header)
    enc = PacketEncoder(model, frames_per_packet, group_packets, rate=rate, version=version, fill=spec)
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
                  progress: Progress | None = None, group_packets: int = 4, step_scale: float = 1.0,
                  quality: float | None = None, kbps: float | None = None,
                  version: int | None = None, fill: bool = True) -> EncodeStats:
    """Encode audio file ``src`` (or ``-``) to ``dst`` (or ``-``) atomically (see :func:`encode_stream`)."""
    model = model or load_model()
    args = (model, frames_per_packet, downmix, progress, group_packets, step_scale, quality, kbps, version, fill)
    with AudioReader(src, sample_rate=model.config.sample_rate, block_frames=1 << 18) as reader:
        with atomic_output(dst, overwrite=overwrite, inputs=[src]) as tmp:
            if tmp == STDIO:
                return encode_stream(reader, sys.stdout.buffer, *args)
            with open(tmp, "wb") as f:
                return encode_stream(reader, f, *args)


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
    dec = PacketDecoder.for_header(model, h)
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
