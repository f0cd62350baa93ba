"""The ``.wlc`` container: a versioned header, then self-contained packets.

Layout (all integers little-endian)::

    magic     8 bytes   b"\\x89WLC\\r\\n\\x1a\\n"   (catches text-mode and 7-bit mangling)
    version   u16       1
    length    u32       header JSON length, <= 64 KiB
    crc32     u32       of the header JSON
    header    JSON object (see :class:`StreamHeader`)
    packets:  length u32 | sequence u32 | frames u16 | crc32 u32 | payload
              crc32 covers sequence, frames and payload
    end:      a packet with frames = 0 whose payload is <u64 samples, u64 source samples>

Every size read from the stream is checked against a limit derived from the
header before anything is allocated; every violation -- bad magic, unknown
version, truncation at any byte, a flipped bit, an absurd size, a missing end
packet, trailing bytes -- raises :class:`~walloc_audio.errors.BitstreamError`.
Nothing in a file is ever executed or unpickled.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Iterator

from .errors import BitstreamError

MAGIC = b"\x89WLC\r\n\x1a\n"
VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_FRAMES_PER_PACKET = 4096
MAX_PACKET_BYTES = 16 * 1024 * 1024
_PREFIX = struct.Struct("<8sHII")
_PACKET = struct.Struct("<IIHI")
_END = struct.Struct("<QQ")


@dataclass
class StreamHeader:
    """What a decoder needs to know before the first packet."""

    model: str
    model_sha256: str
    sample_rate: int
    channels: int
    J: int
    latent_dim: int
    frames_per_packet: int
    source_sample_rate: int
    source_channels: int
    channel_mode: str = "native"
    encoder_version: str = ""
    step_scale: float = 1.0  # quantizer step / the model's (the bitrate knob); absent in older files
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise BitstreamError(f"invalid header: {what}")

        check(isinstance(self.model, str) and 0 < len(self.model) <= 128, "model name")
        check(isinstance(self.model_sha256, str) and len(self.model_sha256) == 64, "model sha256")
        for name, lo, hi in [("sample_rate", 8000, 384000), ("channels", 1, 16), ("J", 1, 12),
                             ("frames_per_packet", 1, MAX_FRAMES_PER_PACKET),
                             ("source_sample_rate", 1000, 768000), ("source_channels", 1, 64)]:
            v = getattr(self, name)
            check(type(v) is int and lo <= v <= hi, f"{name}={v!r} outside {lo}..{hi}")
        check(type(self.latent_dim) is int and 1 <= self.latent_dim <= self.channels * 2**self.J,
              f"latent_dim={self.latent_dim!r}")
        check(type(self.step_scale) in (int, float) and 0.125 <= self.step_scale <= 8.0,
              f"step_scale={self.step_scale!r} outside 0.125..8")
        check(self.channel_mode in ("native", "mono", "downmix"), f"channel_mode={self.channel_mode!r}")
        check(isinstance(self.encoder_version, str) and isinstance(self.extra, dict), "types")

    @property
    def max_payload(self) -> int:
        # A range coder spends at most ~24 bits on a symbol whose probability is
        # quantized to >= 2**-24; allow 4 bytes per symbol plus slack.
        return min(MAX_PACKET_BYTES, 4 * self.frames_per_packet * self.latent_dim + 64)

    def to_json(self) -> bytes:
        return json.dumps({"format": "walloc-audio", **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "StreamHeader":
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BitstreamError(f"header is not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.pop("format", None) != "walloc-audio":
            raise BitstreamError("header is not a walloc-audio header")
        try:
            h = cls(**d)
        except TypeError as exc:
            raise BitstreamError(f"header fields do not match this version ({exc})") from None
        h.validate()
        return h


@dataclass(frozen=True)
class Packet:
    sequence: int
    frames: int
    payload: bytes


def read_exactly(f: BinaryIO, n: int, what: str) -> bytes:
    """Read ``n`` bytes or raise: truncation is an error, never a short read."""
    data = f.read(n)
    if data is None or len(data) != n:
        raise BitstreamError(f"truncated stream: expected {n} bytes of {what}, got {len(data or b'')}")
    return data


def pack_packet(sequence: int, frames: int, payload: bytes) -> bytes:
    body = struct.pack("<IH", sequence & 0xFFFFFFFF, frames) + payload
    return _PACKET.pack(len(payload), sequence & 0xFFFFFFFF, frames, zlib.crc32(body)) + payload


def read_header(f: BinaryIO) -> StreamHeader:
    magic, version, length, crc = _PREFIX.unpack(read_exactly(f, _PREFIX.size, "file prefix"))
    if magic != MAGIC:
        raise BitstreamError("not a .wlc file (bad magic)")
    if version != VERSION:
        raise BitstreamError(f"unsupported .wlc version {version} (this reader knows {VERSION})")
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise BitstreamError(f"header length {length} outside 2..{MAX_HEADER_BYTES}")
    data = read_exactly(f, length, "header")
    if zlib.crc32(data) != crc:
        raise BitstreamError("header checksum mismatch (corrupt file)")
    return StreamHeader.from_json(data)


def write_header(f: BinaryIO, header: StreamHeader) -> None:
    header.validate()
    data = header.to_json()
    if len(data) > MAX_HEADER_BYTES:
        raise BitstreamError("header too large")
    f.write(_PREFIX.pack(MAGIC, VERSION, len(data), zlib.crc32(data)) + data)


def packet_limits(header: StreamHeader, frames: int) -> int:
    """Largest payload a packet of ``frames`` frames may carry under ``header``."""
    return _END.size if frames == 0 else header.max_payload


def unpack_packet(data: bytes, offset: int, header: StreamHeader) -> tuple[Packet, int]:
    """Parse one packet from ``data[offset:]`` (a datagram, a buffer); return it and the next offset.

    Same checks as :func:`read_packet`; raises :class:`BitstreamError` on anything malformed.
    """
    if len(data) - offset < _PACKET.size:
        raise BitstreamError("truncated packet header")
    length, seq, frames, crc = _PACKET.unpack_from(data, offset)
    if frames > header.frames_per_packet or length > packet_limits(header, frames):
        raise BitstreamError(f"packet {seq}: {frames} frames / {length} bytes exceed the header's limits")
    start = offset + _PACKET.size
    if len(data) - start < length:
        raise BitstreamError(f"packet {seq}: truncated payload")
    payload = bytes(data[start : start + length])
    if zlib.crc32(struct.pack("<IH", seq, frames) + payload) != crc:
        raise BitstreamError(f"packet {seq}: checksum mismatch (corrupt data)")
    return Packet(seq, frames, payload), start + length


def end_packet_samples(packet: Packet) -> tuple[int, int]:
    """``(samples, source samples)`` carried by an end packet (``frames == 0``)."""
    if packet.frames != 0 or len(packet.payload) != _END.size:
        raise BitstreamError("malformed end packet")
    return _END.unpack(packet.payload)


def pack_end(sequence: int, num_samples: int, source_samples: int) -> bytes:
    return pack_packet(sequence, 0, _END.pack(num_samples, source_samples))


def header_bytes(header: StreamHeader) -> bytes:
    """The stream prefix (magic, version, header) as bytes -- what a late joiner needs first."""
    buf = io.BytesIO()
    write_header(buf, header)
    return buf.getvalue()


def read_packet(f: BinaryIO, header: StreamHeader) -> Packet:
    length, seq, frames, crc = _PACKET.unpack(read_exactly(f, _PACKET.size, "packet header"))
    limit = packet_limits(header, frames)
    if frames > header.frames_per_packet or length > limit:
        raise BitstreamError(
            f"packet {seq}: {frames} frames / {length} bytes exceed the header's limits "
            f"({header.frames_per_packet} frames / {limit} bytes)"
        )
    payload = read_exactly(f, length, f"packet {seq} payload")
    if zlib.crc32(struct.pack("<IH", seq, frames) + payload) != crc:
        raise BitstreamError(f"packet {seq}: checksum mismatch (corrupt data)")
    return Packet(seq, frames, payload)


class BitstreamWriter:
    """Writes a header, then packets with consecutive sequence numbers, then the end packet."""

    def __init__(self, f: BinaryIO, header: StreamHeader):
        self.f, self.header = f, header
        self.sequence = 0
        self.bytes_written = 0
        write_header(f, header)

    def write(self, frames: int, payload: bytes) -> bytes:
        assert 1 <= frames <= self.header.frames_per_packet, f"bad frame count {frames}"
        assert len(payload) <= self.header.max_payload, "payload over the header's limit"
        data = pack_packet(self.sequence, frames, payload)
        self.f.write(data)
        self.sequence += 1
        self.bytes_written += len(data)
        return data

    def close(self, num_samples: int, source_samples: int) -> None:
        self.f.write(pack_end(self.sequence, num_samples, source_samples))
        self.f.flush()


class BitstreamReader:
    """Iterates the packets of a complete ``.wlc`` stream, validating everything.

    After iteration, ``num_samples`` and ``source_samples`` hold the end packet's values.
    """

    def __init__(self, f: BinaryIO):
        self.f = f
        self.header = read_header(f)
        self.num_samples: int | None = None
        self.source_samples: int | None = None
        self.total_frames = 0

    def __iter__(self) -> Iterator[Packet]:
        expected = 0
        while True:
            packet = read_packet(self.f, self.header)
            if packet.sequence != expected:
                raise BitstreamError(f"packet {expected} missing (found {packet.sequence})")
            expected += 1
            if packet.frames == 0:
                self.num_samples, self.source_samples = end_packet_samples(packet)
                needed = self.total_frames * 2**self.header.J
                if self.num_samples > needed:
                    raise BitstreamError(f"end packet claims {self.num_samples} samples, packets hold {needed}")
                if self.f.read(1):
                    raise BitstreamError("unexpected data after the end packet")
                return
            self.total_frames += packet.frames
            yield packet
