"""File-level transcoding: reproducible bytes, and every corrupted byte of a real stream caught."""

from __future__ import annotations

import io

import numpy as np
import pytest

from helpers import make_model, tones
from walloc_audio.audio import read_audio
from walloc_audio.compress import decode_stream, encode_stream
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.errors import BitstreamError
from walloc_audio.pretrained import load_model


class BlockSource:
    """Feeds fixed audio in blocks of the given sizes, with the attributes encode_stream reads."""

    def __init__(self, x: np.ndarray, rate: int, sizes: list[int]):
        self.x, self.sample_rate, self.source_rate, self.sizes = x, rate, rate, sizes
        self.channels, self.name = x.shape[0], "<test>"

    def __iter__(self):
        pos = i = 0
        while pos < self.x.shape[1]:
            n = self.sizes[i % len(self.sizes)]
            yield self.x[:, pos : pos + n]
            pos, i = pos + n, i + 1


def encode_bytes(model, x, rate, sizes, **kw) -> bytes:
    buf = io.BytesIO()
    encode_stream(BlockSource(x, rate, sizes), buf, model, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def shipped():
    return load_model("stereo-5x-linear")


@pytest.fixture(scope="module")
def music():
    return read_audio(DEMO_CLIP)


@pytest.mark.slow
def test_wlc_is_byte_identical_for_any_block_size(shipped, music):
    x, rate = music
    one_shot = encode_bytes(shipped, x, rate, [x.shape[1]])
    for size in (7, 256, 1000, 8192):
        assert encode_bytes(shipped, x, rate, [size]) == one_shot, f"block size {size}"
    short = np.ascontiguousarray(x[:, : rate // 2])  # one-sample blocks: half a second is plenty
    assert encode_bytes(shipped, short, rate, [1]) == encode_bytes(shipped, short, rate, [short.shape[1]])


def test_group_size_is_recorded_and_decodes_the_same(shipped, music, tmp_path):
    x, rate = music
    x = np.ascontiguousarray(x[:, : 3 * rate])
    outs = []
    for group in (1, 4):
        data = encode_bytes(shipped, x, rate, [4096], group_packets=group)
        assert b'"group_packets": %d' % group in data[:2000]
        out = tmp_path / f"g{group}.wav"
        decode_stream(io.BytesIO(data), str(out), model=shipped, subtype="FLOAT")
        outs.append(read_audio(out)[0])
    assert outs[0].shape == x.shape
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)


@pytest.fixture(scope="module")
def small_stream():
    model = make_model(J=4, step=3e-3)
    x = tones(0.05)
    return model, encode_bytes(model, x, 44100, [x.shape[1]], frames_per_packet=16)


def _decode_fails(model, data: bytes, out) -> None:
    with pytest.raises(BitstreamError):
        decode_stream(io.BytesIO(data), str(out), model=model, overwrite=True)
    assert not out.exists()
    assert not list(out.parent.glob(".*"))  # no temporary left behind


def test_truncation_at_every_byte_offset(small_stream, tmp_path):
    model, data = small_stream
    out = tmp_path / "o.wav"
    decode_stream(io.BytesIO(data), str(out), model=model)  # the whole stream decodes
    out.unlink()
    for cut in range(len(data)):
        _decode_fails(model, data[:cut], out)


def test_random_byte_flips_are_caught(small_stream, tmp_path):
    model, data = small_stream
    rng = np.random.default_rng(7)
    for pos in rng.integers(0, len(data), 300):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        _decode_fails(model, bytes(bad), tmp_path / "o.wav")


def _snr(x, y):
    return 10 * np.log10((x.astype(np.float64) ** 2).sum() / ((y - x).astype(np.float64) ** 2).sum())


def test_step_scale_trades_rate_for_quality_and_travels_in_the_header(shipped, music, tmp_path):
    x, rate = music
    x = np.ascontiguousarray(x[:, : 3 * rate])
    sizes, snrs = [], []
    for s in (0.5, 1.0, 2.0):  # version 1 (fixed step) is still written on request
        data = encode_bytes(shipped, x, rate, [8192], step_scale=s, version=1)
        assert b'"step_scale": %s' % str(s).encode() in data[:2000]
        out = tmp_path / f"s{s}.wav"
        decode_stream(io.BytesIO(data), str(out), model=shipped, subtype="FLOAT")  # the header sets the step
        sizes.append(len(data))
        snrs.append(_snr(x, read_audio(out)[0]))
    assert sizes[0] > sizes[1] > sizes[2]
    assert snrs[0] > snrs[1] > snrs[2] > 5.0
    with pytest.raises(Exception, match="step scale"):
        shipped.with_step_scale(100.0)
    # One variant per scale, derived from the base whatever model asks; the base is untouched.
    half = shipped.with_step_scale(0.5)
    assert half is shipped.with_step_scale(0.5) is shipped.with_step_scale(2.0).with_step_scale(0.5)
    assert half.with_step_scale(1.0) is shipped and shipped.step_scale == 1.0
    assert half.codec is not shipped.codec and half.coder is not shipped.coder


def test_context_coded_model_is_block_invariant_and_round_trips(tmp_path):
    model = make_model(J=4, step=2e-3, entropy="context", depth=1)
    x = tones(0.5, freqs=(110.0, 440.0))
    x[:, : x.shape[1] // 3] *= 0.05  # a quiet start: the contexts must follow loudness
    one = encode_bytes(model, x, 44100, [x.shape[1]], frames_per_packet=16)
    assert encode_bytes(model, x, 44100, [333], frames_per_packet=16) == one
    out = tmp_path / "ctx.wav"
    decode_stream(io.BytesIO(one), str(out), model=model, subtype="FLOAT")
    y = read_audio(out)[0]
    assert y.shape == x.shape and _snr(x, y) > 15.0
    # Scaled steps work for context models too.
    coarse = encode_bytes(model, x, 44100, [x.shape[1]], frames_per_packet=16, step_scale=3.0)
    assert len(coarse) < len(one)
    decode_stream(io.BytesIO(coarse), str(tmp_path / "c.wav"), model=model, subtype="FLOAT")
