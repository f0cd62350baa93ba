"""The ``.wlc`` container: a versioned header, then self-contained packets.

Layout (all integers little-endian)::

    magic     8 bytes   b"\\x89WLC\\r\\n\\x1a\\n"   (catches text-mode and 7-bit mangling)
    version   u16       2 (1: fixed-step files, still read)
    length    u32       header JSON length, <= 64 KiB
    crc32     u32       of the header JSON
    header    JSON object (see :class:`StreamHeader`)
    packets:  length u32 | sequence u32 | frames u16 | crc32 u32 | payload
              crc32 covers sequence, frames and payload
    end:      a packet with frames = 0 whose payload is <u64 samples, u64 source samples>

Version 2 (``quantizer: "adaptive"``) keeps this framing and changes what a
payload holds: side information first -- the packet's step exponent (or a
silent-packet mark) and one scale per band of latent channels (``bands`` in
the header) -- then the symbols of the bands that are not all zero, coded
conditioned on it (:mod:`walloc_audio.adaptive`). The header names the v2
entropy model by ``entropy_sha256`` beside the weights' ``model_sha256``, and
``step_scale`` is 1 (the step travels in each packet). A v2 header with a ``fill``
field (:mod:`walloc_audio.noisefill`) adds the high-band energies after each payload,
their byte length in the payload's last two bytes. Version 1
(``quantizer: "fixed"``): one absolute step for the whole stream, ``step_scale``
times the model's.

A header must agree with itself: ``channel_mode`` native means as many source
channels as coded ones, mono means one, downmix more; version and quantizer go
together; ``bands`` fits the latents.

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
VERSION = 2
VERSIONS = (1, 2)
MAX_BANDS = 64
MAX_HEADER_BYTES = 64 * 1024
MAX_FRAMES_PER_PACKET = 4096
MAX_PACKET_BYTES = 16 * 1024 * 1024
_PREFIX = struct.Struct("<8sHII")
_PACKET = struct.Struct("<IIHI")
_END = struct.Struct("<QQ")
PACKET_HEADER_BYTES = _PACKET.size  # container bytes each packet costs beside its payload
END_PACKET_BYTES = _PACKET.size + _END.size


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
    step_scale: float = 1.0  # v1: quantizer step / the model's (the bitrate knob); v2: always 1
    quantizer: str = "fixed"  # v1 "fixed"; v2 "adaptive"
    bands: int = 0  # v2: band scales per packet
    entropy_sha256: str = ""  # v2: sha256 of the model's v2 entropy model
    extra: dict = field(default_factory=dict)
    fill: dict = field(default_factory=dict)  # v2: noise-fill levels after each payload (noisefill.FillSpec)

    @property
    def version(self) -> int:
        return 2 if self.quantizer == "adaptive" else 1

    def validate(self) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise BitstreamError(f"invalid header: {what}")

        def is_hex64(v) -> bool:
            return isinstance(v, str) and len(v) == 64 and all(ch in "0123456789abcdef" for ch in v)

        check(isinstance(self.model, str) and 0 < len(self.model) <= 128, "model name")
        check(is_hex64(self.model_sha256), "model sha256")
        for name, lo, hi in [("sample_rate", 8000, 384000), ("channels", 1, 16), ("J", 1, 12),
                             ("frames_per_packet", 1, MAX_FRAMES_PER_PACKET),
                             ("source_sample_rate", 1000, 768000), ("source_channels", 1, 64)]:
            v = getattr(self, name)
            check(type(v) is int and lo <= v <= hi, f"{name}={v!r} outside {lo}..{hi}")
        check(type(self.latent_dim) is int and 1 <= self.latent_dim <= self.channels * 2**self.J,
              f"latent_dim={self.latent_dim!r}")
        check(type(self.step_scale) in (int, float) and 0.125 <= self.step_scale <= 8.0,
              f"step_scale={self.step_scale!r} outside 0.125..8")
        check(isinstance(self.channel_mode, str) and self.channel_mode in ("native", "mono", "downmix"),
              f"channel_mode={self.channel_mode!r}")
        check(isinstance(self.encoder_version, str) and isinstance(self.extra, dict), "types")
        # A header that contradicts itself is as corrupt as one that fails its checksum.
        mode, src, ch = self.channel_mode, self.source_channels, self.channels
        check(mode != "native" or src == ch, f"channel_mode native with {src} source channels for {ch} coded")
        check(mode != "mono" or (src == 1 and ch > 1), f"channel_mode mono with {src} source / {ch} coded channels")
        check(mode != "downmix" or src > ch, f"channel_mode downmix from {src} to {ch} channels")
        check(isinstance(self.quantizer, str) and self.quantizer in ("fixed", "adaptive"),
              f"quantizer={self.quantizer!r}")
        if self.quantizer == "adaptive":
            check(type(self.bands) is int and 1 <= self.bands <= min(MAX_BANDS, self.latent_dim),
                  f"bands={self.bands!r} outside 1..{min(MAX_BANDS, self.latent_dim)}")
            check(is_hex64(self.entropy_sha256), "entropy sha256")
            check(self.step_scale == 1, f"step_scale={self.step_scale!r} in an adaptive stream")
        else:
            check(self.bands == 0 and self.entropy_sha256 == "", "bands / entropy sha256 in a fixed-step stream")
        check(isinstance(self.fill, dict), "types")
        if self.fill:
            check(self.quantizer == "adaptive", "noise fill in a fixed-step stream")
            check(not self.fill_spec().mid_side or self.channels == 2,  # fill_spec raises on a bad field
                  f"a mid/side noise fill in a {self.channels}-channel stream")

    def fill_spec(self):
        """The stream's :class:`~walloc_audio.noisefill.FillSpec`, or None."""
        from .noisefill import FillSpec

        return FillSpec.from_header(self.fill, self.sample_rate) if self.fill else None

    @property
    def max_payload(self) -> int:
        # A range coder spends at most ~24 bits on a symbol whose probability is
        # quantized to >= 2**-24; allow 4 bytes per symbol plus slack (side information included).
        fill = 0
        if self.fill:  # at most 4 bytes per level, plus the section's words and length
            spec = self.fill_spec()
            fill = 4 * -(-self.frames_per_packet // spec.block) * self.channels * (len(spec.edges_hz) - 1) + 16
        return min(MAX_PACKET_BYTES, 4 * self.frames_per_packet * self.latent_dim + 64 + 4 * self.bands + fill)

    def to_json(self) -> bytes:
        d = asdict(self)
        if self.quantizer == "fixed":  # byte-for-byte the version-1 header
            for k in ("quantizer", "bands", "entropy_sha256"):
                d.pop(k)
        if not self.fill:  # streams without noise fill keep the header they always had
            d.pop("fill")
        return json.dumps({"format": "walloc-audio", **d}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, version: int = VERSION) -> "StreamHeader":
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
        if h.version != version:
            raise BitstreamError(f"header of a version-{h.version} stream in a version-{version} file")
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
    if version not in VERSIONS:
        raise BitstreamError(f"unsupported .wlc version {version} (this reader knows {', '.join(map(str, VERSIONS))})")
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise BitstreamError(f"header length {length} outside 2..{MAX_HEADER_BYTES}")
    data = read_exactly(f, length, "header")
    if zlib.crc32(data) != crc:
        raise BitstreamError("header checksum mismatch (corrupt file)")
    return StreamHeader.from_json(data, version)


def write_header(f: BinaryIO, header: StreamHeader) -> None:
    header.validate()
    data = header.to_json()
    if len(data) > MAX_HEADER_BYTES:
        raise BitstreamError("header too large")
    f.write(_PREFIX.pack(MAGIC, header.version, len(data), zlib.crc32(data)) + data)


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
        prefix = header_bytes(header)
        f.write(prefix)
        self.bytes_written = len(prefix)  # everything written: header, packets, end packet

    def write(self, frames: int, payload: bytes) -> bytes:
        assert 1 <= frames <= self.header.frames_per_packet, f"bad frame count {frames}"
        assert len(payload) <= self.header.max_payload, "payload over the header's limit"
        data = pack_packet(self.sequence, frames, payload)
        self.f.write(data)
        self.sequence += 1
        self.bytes_written += len(data)
        return data

    def close(self, num_samples: int, source_samples: int) -> None:
        end = pack_end(self.sequence, num_samples, source_samples)
        self.f.write(end)
        self.bytes_written += len(end)
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
