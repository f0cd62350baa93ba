"""Plugin-style streaming processors around the packet encoder and decoder.

Three processors, each with the plugin contract ``prepare(sample_rate, channels,
max_block)``, ``process(block)``, ``latency_samples`` and ``reset()``:

* :class:`StreamEncoder`: PCM blocks of any size (1 ... 8192 samples, varying
  from call to call) -> framed ``.wlc`` packets (bytes). The packets are
  byte-identical to ``walloc-audio encode --frames-per-packet F --group 1`` of
  the same audio: the same :class:`~walloc_audio.codec_stream.PacketEncoder`.
* :class:`StreamDecoder`: packets -> PCM; a missing packet is concealed (the
  last latent frame, fading out -- no click) and counted, and decoding resumes
  with the next good packet.
* :class:`CodecProcessor`: PCM -> PCM through encoder and decoder, the same
  number of samples out as in, delayed by exactly ``latency_samples``.

Latency. Packets of ``F`` frames of ``N = 2**J`` samples leave when their last
sample is in; decoded audio trails the input by the transform's pure delay
``D``. An input sample therefore waits at most ``D + F*N - 1`` samples
(``F = 1``: the model's algorithmic latency, 1791 samples = 40.6 ms at J = 8).
"""

from __future__ import annotations

import numpy as np

from walloc_audio.adaptive import bands_for
from walloc_audio.bitstream import PACKET_HEADER_BYTES, Packet, StreamHeader, header_bytes, pack_end, pack_packet
from walloc_audio.codec_stream import PacketDecoder, PacketEncoder, RateSpec
from walloc_audio.noisefill import FillSpec
from walloc_audio.compress import channel_mode_for, map_channels, stream_header
from walloc_audio.pretrained import LoadedModel


# A live packet's payload must leave room in a 1200-byte datagram for the datagram and packet framing.
MAX_STREAM_PAYLOAD = 1100


def packet_latency(model: LoadedModel, frames_per_packet: int) -> int:
    """Worst-case delay of a sample through encoder + decoder with ``F``-frame packets."""
    c = model.config
    return c.delay_samples + c.lookahead_frames * c.frame + frames_per_packet * c.frame - 1


class StreamEncoder:
    """PCM -> framed packets, one packet per ``F`` frames (computed one packet at a time).

    Args:
        model: the codec.
        frames_per_packet: ``F``; smaller is lower latency, larger has less overhead
            (14 bytes of framing per packet).
        fill: noise-fill levels in every packet (:mod:`walloc_audio.noisefill`). Off by default
            live: with 2-frame packets a block per packet costs several kbps.
    """

    def __init__(self, model: LoadedModel, frames_per_packet: int = 2, quality: float | None = None,
                 kbps: float | None = None, max_payload: int | None = MAX_STREAM_PAYLOAD,
                 framing_bytes: int = PACKET_HEADER_BYTES, fill: FillSpec | None = None):
        self.model = model
        self.frames_per_packet = frames_per_packet
        self.version = 2 if model.adaptive is not None else 1
        rate = RateSpec(quality, kbps, max_payload=max_payload, framing_bytes=framing_bytes) \
            if self.version == 2 else None
        self.fill = fill if self.version == 2 else None
        self._enc = PacketEncoder(model, frames_per_packet, group_packets=1, rate=rate, fill=self.fill)
        self._resampler = None
        self.sample_rate = model.config.sample_rate
        self.channels = model.config.channels
        self.channel_mode = "native"
        self.sequence = 0
        self.bytes_out = 0

    def prepare(self, sample_rate: int, channels: int, max_block: int = 8192, downmix: bool = False) -> None:
        """Set the input format; audio at another rate is resampled in the stream."""
        self.reset()
        self.sample_rate, self.channels, self.max_block = int(sample_rate), int(channels), int(max_block)
        self.channel_mode = channel_mode_for(channels, self.model.config.channels, downmix, "input")
        self._make_resampler()

    def _make_resampler(self) -> None:
        self._resampler = None
        if self.sample_rate != self.model.config.sample_rate:
            from .resample import StreamResampler

            self._resampler = StreamResampler(self.sample_rate, self.model.config.sample_rate, self.channels)

    def header(self) -> StreamHeader:
        return stream_header(self.model, self.frames_per_packet, self.sample_rate, self.channels, self.channel_mode,
                             self.version, {"group_packets": 1}, self.fill)

    def header_bytes(self) -> bytes:
        return header_bytes(self.header())

    @property
    def latency_samples(self) -> int:
        """Input-to-packet latency plus decoding, at the model's rate (resampling excluded)."""
        return packet_latency(self.model, self.frames_per_packet)

    @property
    def clipped(self) -> int:
        return self._enc.clipped

    @property
    def samples_in(self) -> int:
        return self._enc.samples_in

    def reset(self) -> None:
        self._enc.reset()
        self.sequence = 0
        self.bytes_out = 0
        if self._resampler is not None:
            self._make_resampler()

    def _frame(self, packets: list[tuple[int, bytes]]) -> list[bytes]:
        out = []
        for frames, payload in packets:
            out.append(pack_packet(self.sequence, frames, payload))
            self.sequence += 1
            self.bytes_out += len(out[-1])
        return out

    def process(self, block: np.ndarray) -> list[bytes]:
        """``[channels, n]`` float32 -> the framed packets completed by it (often none)."""
        block = np.asarray(block, dtype=np.float32)
        assert block.ndim == 2 and block.shape[0] == self.channels, f"expected [{self.channels}, n], got {block.shape}"
        if self._resampler is not None:
            block = self._resampler.process(block)
        return self._frame(self._enc.push(map_channels(block, self.model.config.channels, self.channel_mode)))

    def finish(self) -> list[bytes]:
        """Flush the last packets and the end packet: the stream is then complete."""
        tail = []
        if self._resampler is not None:
            tail = self._enc.push(map_channels(self._resampler.flush(), self.model.config.channels, self.channel_mode))
        out = self._frame(tail + self._enc.flush())
        n = self._enc.samples_in
        end = pack_end(self.sequence, n, round(n * self.sample_rate / self.model.config.sample_rate))
        self.sequence += 1
        self.bytes_out += len(end)
        return out + [end]


class StreamDecoder:
    """Packets -> PCM at the model's rate, with loss concealment.

    ``process(packet)`` returns the PCM of a packet; ``lost(frames)`` returns
    concealment for a missing one. Sequence gaps are detected here too, so a
    caller can just hand over packets as they come: ``process`` conceals the
    frames of any packets skipped before it (assuming full-size packets).
    """

    def __init__(self, model: LoadedModel, frames_per_packet: int | None = None, header: StreamHeader | None = None):
        self.model = model
        self.frames_per_packet = frames_per_packet or (header.frames_per_packet if header else 1)
        if header is not None:
            self._dec = PacketDecoder.for_header(model, header)
        else:  # what a StreamEncoder of the same model and packet size sends
            v2 = model.adaptive is not None
            self._dec = PacketDecoder(model, 2 if v2 else 1,
                                      bands_for(self.frames_per_packet, model.config.latent_dim) if v2 else 0)
        self.reset()

    def prepare(self, sample_rate: int, channels: int, max_block: int = 8192) -> None:
        self.reset()

    @property
    def latency_samples(self) -> int:
        return packet_latency(self.model, self.frames_per_packet)

    def reset(self) -> None:
        self._dec.reset()
        self.expected = 0
        self.stats = {"packets": 0, "lost_packets": 0, "concealed_frames": 0, "frames": 0}

    def lost(self, frames: int | None = None) -> np.ndarray:
        """Concealment PCM for one missing packet of ``frames`` frames (default: a full packet)."""
        frames = self.frames_per_packet if frames is None else frames
        self.stats["lost_packets"] += 1
        self.stats["concealed_frames"] += frames
        self.stats["frames"] += frames
        self.expected += 1
        return self._dec.conceal(frames)

    def process(self, packet: Packet) -> np.ndarray:
        """PCM ``[C, frames * N]`` for a packet (plus concealment for any skipped before it)."""
        pieces = []
        if packet.sequence > self.expected:
            gap = packet.sequence - self.expected
            for _ in range(min(gap, 64)):  # a long outage: conceal a little, then resync
                pieces.append(self.lost())
            self.expected = packet.sequence
        elif packet.sequence < self.expected:
            return np.zeros((self.model.config.channels, 0), dtype=np.float32)  # late or duplicate
        pieces.append(self._dec.decode(packet.frames, packet.payload))
        self.expected = packet.sequence + 1
        self.stats["packets"] += 1
        self.stats["frames"] += packet.frames
        return np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]


class CodecProcessor:
    """PCM -> PCM through the codec: ``n`` samples in, ``n`` samples out, delayed by
    exactly ``latency_samples`` (the output starts with silence). Runs at the
    model's rate and channel count, as an effect plugin would."""

    def __init__(self, model: LoadedModel, frames_per_packet: int = 1, quality: float | None = None):
        self.model = model
        self.frames_per_packet = frames_per_packet
        self.channels = model.config.channels
        version = 2 if model.adaptive is not None else 1
        self._enc = PacketEncoder(model, frames_per_packet, group_packets=1,
                                  rate=RateSpec(quality) if version == 2 else None)
        self._dec = PacketDecoder(model, version, self._enc.bands)
        self.reset()

    @property
    def latency_samples(self) -> int:
        return packet_latency(self.model, self.frames_per_packet)

    def prepare(self, sample_rate: int, channels: int, max_block: int = 8192) -> None:
        if sample_rate != self.model.config.sample_rate or channels != self.model.config.channels:
            raise ValueError(
                f"CodecProcessor runs at {self.model.config.sample_rate} Hz, {self.channels} channels "
                f"(got {sample_rate} Hz, {channels})"
            )
        self.reset()

    def reset(self) -> None:
        self._enc.reset()
        self._dec.reset()
        # Decoded audio trails the input by D; prime the output with the rest of
        # the latency so every call can return as many samples as it got.
        pad = self.latency_samples - self.model.config.delay_samples
        self._fifo = np.zeros((self.channels, pad), dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        pieces = [self._fifo]
        for frames, payload in self._enc.push(block):
            pieces.append(self._dec.decode(frames, payload))
        fifo = np.concatenate(pieces, axis=1) if len(pieces) > 1 else self._fifo
        n = block.shape[1]
        assert fifo.shape[1] >= n, "latency accounting broken"
        self._fifo = fifo[:, n:]
        return fifo[:, :n]
