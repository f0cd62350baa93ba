"""Plugin-style processors: streamed == offline, exact latency, concealment without clicks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from helpers import make_model, tones
from streaming.processor import CodecProcessor, StreamDecoder, StreamEncoder
from walloc_audio.bitstream import BitstreamReader, unpack_packet
from walloc_audio.compress import encode_stream


class BlockSource:
    def __init__(self, x, rate):
        self.x, self.sample_rate, self.source_rate = x, rate, rate
        self.channels, self.name = x.shape[0], "<test>"

    def __iter__(self):
        yield self.x


def stream_bytes(model, x, sizes, fpp):
    enc = StreamEncoder(model, fpp)
    enc.prepare(44100, x.shape[0])
    out = [enc.header_bytes()]
    pos = i = 0
    while pos < x.shape[1]:
        n = sizes[i % len(sizes)]
        out += enc.process(x[:, pos : pos + n])
        pos, i = pos + n, i + 1
    return b"".join(out + enc.finish())


@pytest.fixture(scope="module")
def model():
    return make_model(J=4, step=2e-3)


def test_stream_equals_file_encoding_for_any_block_sizes(model):
    x = tones(0.25)
    buf = io.BytesIO()
    encode_stream(BlockSource(x, 44100), buf, model, frames_per_packet=3, group_packets=1)
    rng = np.random.default_rng(3)
    for sizes in ([1], [64], [65], [128], [8192], [8193], list(rng.integers(1, 3000, 50))):
        assert stream_bytes(model, x, sizes, 3) == buf.getvalue(), f"sizes {sizes[:5]}"


def test_codec_processor_latency_is_exact():
    m = make_model(J=4, latent_dim=32, step=1e-4)  # keeps every coefficient: near-perfect
    for fpp in (1, 3):
        proc = CodecProcessor(m, fpp)
        proc.prepare(44100, 2)
        for pos in (0, 5, 15, 16, 100):
            proc.reset()
            x = np.zeros((2, 2000), dtype=np.float32)
            x[:, pos] = 0.5
            y = np.concatenate([proc.process(x[:, i : i + 7]) for i in range(0, 2000, 7)], axis=1)
            assert y.shape == x.shape
            assert int(np.abs(y[0]).argmax()) == pos + proc.latency_samples
            assert abs(y[0, pos + proc.latency_samples] - 0.5) < 0.01
    assert CodecProcessor(m, 1).latency_samples == m.config.latency_samples


def test_codec_processor_equals_offline(model):
    x = tones(0.2)
    proc = CodecProcessor(model, 2)
    proc.prepare(44100, 2)
    sizes = [1, 100, 513, 4096]
    pieces, pos, i = [], 0, 0
    while pos < x.shape[1]:
        n = sizes[i % 4]
        pieces.append(proc.process(x[:, pos : pos + n]))
        pos, i = pos + n, i + 1
    y = np.concatenate(pieces, axis=1)
    c = model.config
    k = -(-x.shape[1] // c.frame)
    xt = torch.zeros(1, 2, k * c.frame)
    xt[0, :, : x.shape[1]] = torch.from_numpy(x)
    offline = model.codec.decode(model.codec.encode(xt))[0].numpy()
    shift = proc.latency_samples - c.delay_samples
    n = x.shape[1] - proc.latency_samples
    np.testing.assert_allclose(y[:, shift : shift + n], offline[:, :n], atol=1e-5)


def test_lost_packets_are_concealed_without_clicks(model):
    x = tones(0.5, freqs=(220.0, 220.0), amp=0.5)
    data = stream_bytes(model, x, [x.shape[1]], 4)
    reader = BitstreamReader(io.BytesIO(data))
    packets = list(reader)
    dec = StreamDecoder(model, 4)
    out = []
    for p in packets:
        if p.sequence % 5 == 2:
            continue  # lost in transit
        out.append(dec.process(p))
    y = np.concatenate(out, axis=1)
    assert y.shape[1] == sum(p.frames for p in packets) * model.config.frame
    lost = len([p for p in packets if p.sequence % 5 == 2 and p.sequence < packets[-1].sequence])
    assert dec.stats["lost_packets"] == lost and dec.stats["concealed_frames"] == 4 * lost
    # No click: the waveform never jumps more than the clean decode does, give or take.
    clean = StreamDecoder(model, 4)
    ref = np.concatenate([clean.process(p) for p in packets], axis=1)
    assert np.abs(np.diff(y, axis=1)).max() <= 1.5 * np.abs(np.diff(ref, axis=1)).max() + 1e-3
    assert np.isfinite(y).all()


def test_duplicates_and_late_packets_are_ignored(model):
    x = tones(0.1)
    header_len = len(StreamEncoder(model, 2).header_bytes())
    data = stream_bytes(model, x, [x.shape[1]], 2)
    reader = BitstreamReader(io.BytesIO(data))
    packets = list(reader)
    dec = StreamDecoder(model, 2)
    a = dec.process(packets[0])
    assert dec.process(packets[0]).shape[1] == 0
    assert a.shape[1] == 2 * model.config.frame and header_len > 0
    p, _ = unpack_packet(data, header_len, reader.header)
    assert p == packets[0]
