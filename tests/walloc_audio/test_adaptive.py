"""Version 2: forward-adaptive side information, rate control, level invariance, v1 fixtures."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from walloc_audio.adaptive import E_MAX, E_MIN, S_LEVELS, band_scales, band_edges
from walloc_audio.audio import read_audio
from walloc_audio.bitstream import MAGIC, BitstreamReader, StreamHeader, read_header
from walloc_audio.compress import decode_stream, decompress_file
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.errors import BitstreamError
from walloc_audio.pretrained import load_model

from test_compress import encode_bytes

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def linear():
    return load_model("stereo-5x-linear")


@pytest.fixture(scope="module")
def demo():
    x, rate = sf.read(DEMO_CLIP, dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T), rate


def _snr(x, y) -> float:
    n = min(x.shape[1], y.shape[1])
    x, y = x[:, :n].astype(np.float64), y[:, :n].astype(np.float64)
    return 10 * np.log10((x**2).sum() / ((x - y) ** 2).sum())


def _roundtrip(model, x, rate, tmp_path, **kw) -> tuple[bytes, np.ndarray]:
    data = encode_bytes(model, x, rate, [65536], **kw)
    out = tmp_path / "rt.wav"
    decode_stream(io.BytesIO(data), str(out), model=model, overwrite=True, subtype="FLOAT")
    return data, read_audio(out)[0]


def test_side_information_round_trips(linear):
    ad = linear.adaptive
    rng = np.random.default_rng(1)
    L = linear.config.latent_dim
    for frames, bands, exponent in [(64, 16, 0), (2, 1, -40), (7, 5, 30), (1, 1, E_MIN), (3, 108, E_MAX)]:
        y = (rng.laplace(size=(L, frames)) * np.geomspace(1, 1e-3, L)[:, None] * 0.3).astype(np.float32)
        y[L // 2 :] = 0.0  # some bands all zero: they are not coded
        pk = ad.quantize(y, exponent, bands)
        payload = ad.encode(pk, bands)
        q, e, s = ad.decode(payload, frames, bands)
        assert e == (None if pk.silent else exponent) and np.array_equal(q, pk.symbols) and np.array_equal(s, pk.scales)
        assert np.array_equal(s, band_scales(q, band_edges(L, bands))) and s.max() < S_LEVELS
        if e is None:
            continue
        z = ad.dequantize(q, e, s, bands)
        assert z.dtype == np.float32 and z.shape == (L, frames)
        if np.abs(pk.symbols).max() < ad.max_symbol:  # (ideal lengths ignore the clipped tails)
            assert abs(8 * len(payload) - ad.bits(pk, bands)) < 64  # range coding ~ ideal code length
    with pytest.raises(BitstreamError):
        ad.decode(b"\xff" * 7, 4, 1)


def test_silence_costs_one_word_and_does_not_amplify_noise(linear, tmp_path):
    ad = linear.adaptive
    z = np.zeros((linear.config.latent_dim, 64), dtype=np.float32)
    payload = ad.encode(ad.quantize(z, 0, 16), 16)
    assert len(payload) == 4
    q, e, _ = ad.decode(payload, 64, 16)
    assert e is None and not q.any() and not ad.dequantize(q, e, np.zeros(16), 16).any()
    rate = 44100
    silence = np.zeros((2, 10 * rate), dtype=np.float32)
    data, y = _roundtrip(linear, silence, rate, tmp_path)
    assert not y.any() and 8 * len(data) / 10 / 1000 < 1.5  # kbps, header included
    noise = (np.random.default_rng(0).standard_normal((2, 10 * rate)) * 10 ** (-90 / 20)).astype(np.float32)
    data, y = _roundtrip(linear, noise, rate, tmp_path)
    assert 8 * len(data) / 10 / 1000 < 1.5
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) <= 2 * 10 ** (-90 / 20)  # not amplified
    one = np.full((2, 1), 0.5, dtype=np.float32)  # a 1-sample file is a correct tiny file
    data, y = _roundtrip(linear, one, rate, tmp_path)
    assert y.shape == (2, 1) and len(data) < 2000


@pytest.mark.slow
def test_quality_does_not_follow_the_input_level(linear, demo, tmp_path):
    x, rate = demo
    v2 = [_snr(x * g, _roundtrip(linear, x * g, rate, tmp_path)[1]) for g in (1.0, 0.1, 0.01)]
    v1 = [_snr(x * g, _roundtrip(linear, x * g, rate, tmp_path, version=1)[1]) for g in (1.0, 0.1, 0.01)]
    assert max(v2) - min(v2) < 1.5, v2  # 0, -20, -40 dB
    assert v1[0] - v1[2] > 10, v1  # what version 1 did
    assert v2[2] > v1[2] + 10


@pytest.mark.slow
def test_bitrate_is_met_at_any_level_and_bytes_do_not_depend_on_blocks(linear, demo):
    x, rate = demo
    x = np.ascontiguousarray(np.tile(x, 2)[:, : 14 * rate])  # 14 s
    for kbps in (16.0, 40.0):
        for gain in (1.0, 10 ** (-30 / 20)):
            data = encode_bytes(linear, x * gain, rate, [65536], kbps=kbps)
            got = 8 * len(data) / 14 / 1000
            assert abs(got / kbps - 1) < 0.03, (kbps, gain, got)
    a = encode_bytes(linear, x[:, : 5 * rate], rate, [1000, 7], kbps=24.0)
    b = encode_bytes(linear, x[:, : 5 * rate], rate, [8192], kbps=24.0)
    assert a == b


def test_quality_orders_rate(linear, demo):
    x, rate = demo
    x = x[:, : 3 * rate]
    sizes = [len(encode_bytes(linear, x, rate, [65536], quality=q)) for q in (2.0, 5.0, 8.0)]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize("name", ["v1-stereo-5x", "v1-stereo-5x-ll-linear", "v1-stereo-5x-s2-fpp2"])
def test_version_1_files_still_decode(name, tmp_path):
    src = FIXTURES / f"{name}.wlc"
    with open(src, "rb") as f:
        assert read_header(f).version == 1
    out = tmp_path / "out.wav"
    decompress_file(str(src), str(out), subtype="FLOAT")
    y = read_audio(out)[0]
    ref = read_audio(FIXTURES / f"{name}.decoded.flac")[0]
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1.01 / 32768  # the reference was written as 16-bit: one LSB of rounding
    source = read_audio(FIXTURES / "v1-source.flac")[0]
    assert _snr(source, y) > 10


def _header(**kw) -> StreamHeader:
    d = dict(model="m", model_sha256="a" * 64, sample_rate=44100, channels=2, J=8, latent_dim=108,
             frames_per_packet=64, source_sample_rate=44100, source_channels=2, quantizer="adaptive", bands=16,
             entropy_sha256="b" * 64)
    d.update(kw)
    return StreamHeader(**d)


def _raw(version: int, fields: dict) -> bytes:
    data = json.dumps({"format": "walloc-audio", **fields}).encode()
    return MAGIC + struct.pack("<HII", version, len(data), zlib.crc32(data)) + data


def test_headers_that_contradict_themselves_are_bitstream_errors():
    good = {k: v for k, v in _header().__dict__.items()}
    assert read_header(io.BytesIO(_raw(2, good))).bands == 16
    bad = [dict(channel_mode="native", source_channels=1), dict(channel_mode="mono", source_channels=2),
           dict(channel_mode="downmix", source_channels=2), dict(bands=0), dict(bands=200),
           dict(entropy_sha256="x"), dict(step_scale=2.0), dict(quantizer="magic"), dict(J="8"),
           dict(latent_dim=10**6), dict(channel_mode=["native"]), dict(model_sha256="A" * 64)]
    for change in bad:
        with pytest.raises(BitstreamError):
            read_header(io.BytesIO(_raw(2, {**good, **change})))
    with pytest.raises(BitstreamError, match="version"):  # an adaptive header in a version-1 file
        read_header(io.BytesIO(_raw(1, good)))
    v1 = {**good, "quantizer": "fixed", "bands": 0, "entropy_sha256": ""}
    with pytest.raises(BitstreamError, match="version"):
        read_header(io.BytesIO(_raw(2, v1)))
    with pytest.raises(BitstreamError, match="unsupported"):
        read_header(io.BytesIO(_raw(3, good)))


def test_fuzzed_headers_only_raise_bitstream_errors():
    rng = np.random.default_rng(7)
    good = _header().__dict__
    values = [0, 1, 2, -1, 16, 108, 10**9, 2.5, "native", "mono", "downmix", "", "a" * 64, None, [], {}, True]
    for _ in range(3000):
        d = dict(good)
        for key in rng.choice(list(d), size=rng.integers(1, 4), replace=False):
            d[key] = values[rng.integers(len(values))]
        try:
            read_header(io.BytesIO(_raw(int(rng.integers(1, 3)), d)))
        except BitstreamError:
            pass


def test_v2_stream_needs_the_matching_entropy_model(linear, demo, tmp_path):
    x, rate = demo
    data = encode_bytes(linear, x[:, :rate], rate, [65536])
    h = BitstreamReader(io.BytesIO(data)).header
    assert h.version == 2 and h.entropy_sha256 == linear.adaptive_sha256
    other = data.replace(linear.adaptive_sha256.encode(), b"0" * 64)
    n = struct.unpack_from("<I", other, 10)[0]  # re-seal the header's CRC so only the hash differs
    other = other[:14] + struct.pack("<I", zlib.crc32(other[18 : 18 + n])) + other[18:]
    with pytest.raises(BitstreamError, match="v2 entropy model"):
        decode_stream(io.BytesIO(other), str(tmp_path / "o.wav"), model=linear)


@pytest.mark.slow
def test_live_bitrate_holds_every_second_and_packets_fit_a_datagram(linear, demo):
    from streaming.processor import StreamEncoder

    x, rate = demo
    x = np.ascontiguousarray(np.tile(x, 2)[:, : 16 * rate])
    for kbps, gain in [(32.0, 1.0), (32.0, 0.01), (64.0, 1.0)]:
        enc = StreamEncoder(linear, 2, kbps=kbps)
        enc.prepare(rate, 2, 512)
        sizes = []
        for i in range(0, x.shape[1], 512):
            sizes += [len(p) for p in enc.process(x[:, i : i + 512] * gain)]
        assert max(sizes) <= 1200 - 10  # each packet fits a datagram with its prefix
        per_s = int(round(rate / (2 * linear.config.frame)))  # packets per second
        windows = [8 * sum(sizes[i : i + per_s]) / 1000 for i in range(2 * per_s, len(sizes) - per_s, per_s // 4)]
        assert all(abs(w / kbps - 1) < 0.10 for w in windows), (kbps, gain, min(windows), max(windows))


@pytest.mark.slow
def test_nonlinear_decoder_follows_the_level_and_streams_like_a_file(demo, tmp_path):
    from walloc_audio.codec_stream import PacketDecoder, PacketEncoder

    model = load_model("stereo-5x-ll")  # a trained Snake decoder net
    x, rate = demo
    x = np.ascontiguousarray(x[:, : 4 * rate])
    snr = [_snr(x * g, _roundtrip(model, x * g, rate, tmp_path)[1]) for g in (1.0, 0.01)]
    assert abs(snr[0] - snr[1]) < 0.5, snr  # its residual is scaled by each packet's step, not fixed
    enc = PacketEncoder(model, 2, rate=None)
    packets = enc.push(x * 0.1) + enc.flush()
    whole = np.concatenate(PacketDecoder(model, 2, enc.bands).decode_many(packets), axis=1)
    one = PacketDecoder(model, 2, enc.bands)
    pieces = np.concatenate([one.decode(f, p) for f, p in packets], axis=1)
    assert np.abs(whole - pieces).max() < 1e-5


def test_the_fit_sees_exactly_what_the_encoder_codes(linear):
    from walloc_audio.entropy import context_features
    from walloc_audio.tools.training.fit_adaptive import packet_symbols

    ad = linear.adaptive
    rng = np.random.default_rng(3)
    L, F, P = linear.config.latent_dim, 8, 5
    y = (rng.laplace(size=(L, F * P)) * np.geomspace(0.5, 1e-4, L)[:, None]).astype(np.float32)
    exponents = np.array([-20, -8, 0, 7, 30])
    q, _, s, b = packet_symbols(y, exponents, F, 3, ad.delta, ad.knee, ad.max_symbol)
    for i, e in enumerate(exponents):
        pk = ad.quantize(y[:, i * F : (i + 1) * F], int(e), 3)
        assert np.array_equal(q[:, i], pk.symbols) and np.array_equal(s[i], pk.scales)
        assert np.array_equal(b[:, i], ad.buckets(context_features(pk.symbols)))


def test_the_bucket_lookup_tables_are_the_thresholds():
    from walloc_audio.pretrained import load_model

    ad = load_model("stereo-5x").adaptive
    f = np.arange(-1, 4 * ad._lut_cap + 10)
    assert np.array_equal(ad._bucket_lut_from_minus1[np.minimum(f, ad._lut_cap) + 1], ad.buckets(f))
    assert np.array_equal(ad._bucket_lut[np.minimum(f[1:], ad._lut_cap)], ad.buckets(f[1:]))


def test_a_dead_zone_rounds_small_values_down_and_survives_save_and_load(linear, tmp_path):
    import shutil

    from walloc_audio.adaptive import AdaptiveCoder, round_symbols
    from walloc_audio.pretrained import PACKAGE_MODELS, save_adaptive
    from walloc_audio.tools.training.fit_adaptive import packet_symbols

    v = np.array([-1.6, -1.2, -0.6, -0.5, 0.4, 0.5, 0.69, 0.71, 1.5, 2.49], dtype=np.float32)
    assert np.array_equal(round_symbols(v, 0.0), np.rint(v))  # no dead zone: nearest, ties to even
    assert round_symbols(v, 0.2).tolist() == [-1, -1, 0, 0, 0, 0, 0, 1, 1, 2]  # edges at 0.7, 1.7, 2.7
    ad = linear.adaptive
    coder = AdaptiveCoder(ad.scales, ad.offsets, ad.side, delta=ad.delta, knee=ad.knee, max_symbol=ad.max_symbol,
                          reference_level=ad.reference_level, deadzone=0.25)
    rng = np.random.default_rng(5)
    y = (rng.laplace(size=(linear.config.latent_dim, 16)) * 0.05).astype(np.float32)
    plain, zoned = ad.quantize(y, 0, 2), coder.quantize(y, 0, 2)
    assert np.count_nonzero(zoned.symbols) < np.count_nonzero(plain.symbols)
    assert np.all(np.abs(zoned.symbols) <= np.abs(plain.symbols))
    q, _, _, _ = packet_symbols(y, np.array([0]), 16, 2, ad.delta, ad.knee, ad.max_symbol, 0.25)
    assert np.array_equal(q[:, 0], zoned.symbols)  # the fit sees what the encoder codes
    for name in ("stereo-5x-linear.json", "stereo-5x-linear.safetensors"):
        shutil.copy(PACKAGE_MODELS / name, tmp_path / name)
    save_adaptive(tmp_path, "stereo-5x-linear", coder)
    assert load_model("stereo-5x-linear", folder=tmp_path).adaptive.deadzone == 0.25
    with pytest.raises(ValueError, match="dead zone"):
        AdaptiveCoder(ad.scales, ad.offsets, ad.side, delta=ad.delta, knee=ad.knee, max_symbol=ad.max_symbol,
                      reference_level=ad.reference_level, deadzone=0.5)


def test_the_c_context_scales_are_the_numpy_ones():
    """The encoder's C kernel for a packet's scales gives exactly what the NumPy path gives, on packets
    with every band coded, some bands silent, one frame and loud symbols (the activity cap)."""
    from walloc_audio import native
    from walloc_audio.adaptive import bands_for
    from walloc_audio.pretrained import load_model

    assert native.kernels is not None, "walloc_audio._kernels was not built (make install compiles it)"
    ad = load_model("stereo-5x-linear").adaptive
    rng = np.random.default_rng(3)
    L = ad.channels
    for frames, spread in [(64, 1.5), (64, 40.0), (2, 3.0), (1, 3.0), (17, 0.3)]:
        bands = bands_for(frames, L)
        y = rng.laplace(0, spread, (L, frames)).astype(np.float32) * ad.delta
        y[: L // 3] = 0  # the first bands all zero: not coded
        pk = ad.quantize(y, 0, bands)
        a_c, s_c = ad._frame_scales(pk, bands, native=True)
        a_n, s_n = ad._frame_scales(pk, bands, native=False)
        assert np.array_equal(a_c, a_n) and s_c.shape == s_n.shape == (frames, int(a_n.sum()))
        assert np.array_equal(s_c, s_n)


def test_the_c_decoder_step_decodes_what_the_numpy_loop_decodes(monkeypatch):
    """Packets of real music decode to the same symbols with the C per-frame step and without it."""
    from walloc_audio import native
    from walloc_audio.adaptive import bands_for
    from walloc_audio.audio import read_audio
    from walloc_audio.demo import DEMO_CLIP
    from walloc_audio.pretrained import load_model

    assert native.kernels is not None, "walloc_audio._kernels was not built (make install compiles it)"
    m = load_model("stereo-5x-linear")
    ad = m.adaptive
    x, _ = read_audio(DEMO_CLIP)
    y = m.runtime.analyze(np.ascontiguousarray(x[:, : 6 * 64 * 256], dtype=np.float32))
    payloads = []
    for frames in (64, 2, 1):
        bands = bands_for(frames, ad.channels)
        for i in range(0, 6 * 64, 64):
            for e in (-8, 0, 24):  # fine, default-ish and coarse steps: every band coded, some not, silence
                payloads.append((frames, bands, ad.encode(ad.quantize(y[:, i : i + frames], e, bands), bands)))
    monkeypatch.setattr(native, "ENABLED", True)  # whatever WALLOC_AUDIO_NUMPY says
    c_path = [ad.decode(p, f, b) for f, b, p in payloads]
    monkeypatch.setattr(native, "ENABLED", False)
    numpy_path = [ad.decode(p, f, b) for f, b, p in payloads]
    for (qc, ec, sc), (qn, en, sn) in zip(c_path, numpy_path):
        assert ec == en and np.array_equal(sc, sn) and np.array_equal(qc, qn)
    assert any((s == 0).any() and s.any() for _, _, s in c_path)  # some packets with bands left out
