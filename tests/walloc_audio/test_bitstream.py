"""The .wlc container: round trip, and every malformed input gives BitstreamError."""

import io
import struct
import zlib

import pytest

from walloc_audio.bitstream import (MAGIC, BitstreamReader, BitstreamWriter, StreamHeader, pack_packet,
                                    read_header)
from walloc_audio.errors import BitstreamError


def header(**kw):
    base = dict(model="test-model", model_sha256="ab" * 32, sample_rate=44100, channels=2, J=4, latent_dim=8,
                frames_per_packet=4, source_sample_rate=48000, source_channels=2)
    base.update(kw)
    return StreamHeader(**base)


def small_stream(packets=((4, b"abcd" * 3), (4, b"wxyz"), (2, b"1234" * 2)), num_samples=100) -> bytes:
    buf = io.BytesIO()
    w = BitstreamWriter(buf, header())
    for frames, payload in packets:
        w.write(frames, payload)
    w.close(num_samples, 109)
    return buf.getvalue()


def read_all(data: bytes):
    r = BitstreamReader(io.BytesIO(data))
    return r, [(p.sequence, p.frames, p.payload) for p in r]


def test_round_trip():
    r, packets = read_all(small_stream())
    assert r.header == header()
    assert packets == [(0, 4, b"abcd" * 3), (1, 4, b"wxyz"), (2, 2, b"1234" * 2)]
    assert (r.num_samples, r.source_samples, r.total_frames) == (100, 109, 10)


def test_truncation_at_every_byte_is_an_error():
    data = small_stream()
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            read_all(data[:cut])


def test_every_single_byte_flip_is_caught():
    data = small_stream()
    for i in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(BitstreamError):
                read_all(bytes(bad))


def test_trailing_garbage_and_missing_packets():
    data = small_stream()
    with pytest.raises(BitstreamError, match="after the end"):
        read_all(data + b"\0")
    # Drop packet 1 (a whole, valid packet): the sequence gap is reported.
    hdr_len = len(small_stream(packets=()) ) - len(pack_packet(0, 0, struct.pack("<QQ", 100, 109)))
    p0 = pack_packet(0, 4, b"abcd" * 3)
    p1 = pack_packet(1, 4, b"wxyz")
    gap = data[: hdr_len + len(p0)] + data[hdr_len + len(p0) + len(p1) :]
    with pytest.raises(BitstreamError, match="missing"):
        read_all(gap)


def test_wrong_magic_and_version():
    data = bytearray(small_stream())
    with pytest.raises(BitstreamError, match="magic"):
        read_all(b"RIFF" + bytes(data[4:]))
    data[8:10] = struct.pack("<H", 99)
    with pytest.raises(BitstreamError, match="version 99"):
        read_all(bytes(data))


def raw_header(obj: dict) -> bytes:
    js = __import__("json").dumps(obj).encode()
    return MAGIC + struct.pack("<HII", 1, len(js), zlib.crc32(js)) + js


def test_absurd_sizes_are_refused_before_allocating():
    # A header length of 4 GiB.
    with pytest.raises(BitstreamError, match="header length"):
        read_header(io.BytesIO(MAGIC + struct.pack("<HII", 1, 0xFFFFFFFF, 0)))
    # Header fields out of range.
    good = {"format": "walloc-audio", **header().__dict__}
    for key, value in [("frames_per_packet", 10**9), ("latent_dim", 10**6), ("sample_rate", 7), ("J", 40),
                       ("channels", 0), ("model_sha256", "x"), ("sample_rate", "44100")]:
        with pytest.raises(BitstreamError, match="invalid header"):
            read_header(io.BytesIO(raw_header({**good, key: value})))
    # A packet claiming a 4 GiB payload (valid CRC would not matter: size is checked first).
    data = raw_header(good) + struct.pack("<IIHI", 0xFFFFFFFF, 0, 4, 0)
    with pytest.raises(BitstreamError, match="exceed"):
        read_all(data)
    # More frames in a packet than the header allows.
    with pytest.raises(BitstreamError, match="exceed"):
        read_all(raw_header(good) + pack_packet(0, 5, b"abcd"))


def test_header_json_problems():
    for bad in [b"\xff\xfe", b"[1, 2]", b'{"format": "other"}', b'{"format": "walloc-audio", "bogus": 1}']:
        data = MAGIC + struct.pack("<HII", 1, len(bad), zlib.crc32(bad)) + bad
        with pytest.raises(BitstreamError):
            read_header(io.BytesIO(data))


def test_end_packet_cannot_claim_more_samples_than_packets_hold():
    data = small_stream(num_samples=10 * 16 + 1)
    with pytest.raises(BitstreamError, match="claims"):
        read_all(data)
