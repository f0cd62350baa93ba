"""Noise filling: side information round trip, the decoder's fill (null space, energy, silence), files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from walloc_audio.audio import read_audio
from walloc_audio.bitstream import StreamHeader
from walloc_audio.codec_stream import PacketDecoder, PacketEncoder
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.errors import BitstreamError
from walloc_audio.noisefill import (BAND_LIMITED, FLOOR_DB, MAX_LEVEL, SIX_GROUPS_HZ, STEP_DB, TABLE_SAMPLES, WHITE,
                                    FillSpec, NoiseFill, band_noise, decode_levels, encode_levels, measure,
                                    split_payload)
from walloc_audio.pretrained import load_model

FIXTURES = Path(__file__).parent / "fixtures"

@pytest.fixture(scope="module")
def model():
    return load_model("stereo-5x")


@pytest.fixture(scope="module")
def music():
    x, _ = read_audio(DEMO_CLIP)
    return np.ascontiguousarray(x[:, : x.shape[1] // (64 * 256) * 64 * 256], dtype=np.float32)


@pytest.mark.parametrize("planar,step_db", [(True, 3.0), (True, 1.5), (False, 1.5)])
def test_levels_round_trip_and_corruption_is_an_error(planar, step_db):
    rng = np.random.default_rng(0)
    for shape in [(1, 2, 7), (8, 2, 7), (3, 1, 1), (16, 2, 12)]:
        levels = rng.integers(0, MAX_LEVEL + 1, size=shape).astype(np.int32)
        levels.flat[0], levels.flat[-1] = 0, MAX_LEVEL
        if shape[0] > 2 and shape[2] > 1:  # the planar guess at its extreme: 63 + 63 - 0 for a 0
            levels[1, 0, :2], levels[2, 0, :2] = (0, 63), (63, 0)
        section = encode_levels(levels, planar, step_db)
        payload, body = split_payload(b"v2-payload" + section)
        assert payload == b"v2-payload"
        np.testing.assert_array_equal(decode_levels(body, *shape, planar, step_db), levels)
        if planar:  # the other predictor reads the same bytes as other levels (or as corrupt)
            try:
                other = decode_levels(body, *shape, False, step_db)
            except BitstreamError:
                continue
            assert not np.array_equal(other, levels)
    assert split_payload(encode_levels(np.zeros((2, 2, 7), np.int32))) == (b"", b"")
    assert not decode_levels(b"", 2, 2, 7).any()
    with pytest.raises(BitstreamError):
        split_payload(b"\x01")
    with pytest.raises(BitstreamError):
        split_payload(b"abcd" + (400).to_bytes(2, "little"))  # longer than its packet
    bad = encode_levels(np.full((2, 2, 7), 40, np.int32), planar, step_db)
    flipped = bytes([bad[0] ^ 0xFF]) + bad[1:-2]
    try:
        out = decode_levels(flipped, 2, 2, 7, planar, step_db)
    except BitstreamError:
        pass  # caught as corrupt, or decoded to some levels that stay in range:
    else:
        assert out.min() >= 0 and out.max() <= MAX_LEVEL


def test_planar_prediction_codes_smooth_levels_in_fewer_bytes():
    """Levels that follow a spectral tilt moving over time cost less predicted from both neighbours."""
    b, g = np.meshgrid(np.arange(16), np.arange(12), indexing="ij")
    rng = np.random.default_rng(4)
    tilt = 40 - 1.5 * g + 6 * np.sin(b / 3.0)[:, None] + rng.normal(0, 0.7, (16, 12))
    levels = np.clip(np.rint(np.stack([tilt, tilt - 3], axis=1)), 0, MAX_LEVEL).astype(np.int32)  # [16, 2, 12]
    assert len(encode_levels(levels, True)) < 0.9 * len(encode_levels(levels, False))


def test_measure_reads_the_mean_energy_of_each_group_in_steps():
    spec = FillSpec()
    groups = spec.groups(8, 44100)
    coef = np.zeros((2, 256, 10))
    coef[0, groups[2]] = 1e-3  # -60 dB per coefficient in the third group of channel 0
    levels = measure(coef, groups, 8)
    assert levels.shape == (2, 2, len(groups))
    want = round((-60 - FLOOR_DB) / STEP_DB)
    assert (levels[:, 0, 2] == want).all()
    assert levels.sum() == 2 * want  # everything else is below the floor: nothing to fill
    coarse = measure(coef, groups, 8, step_db=3.0)  # the same energy in 3-dB steps
    assert (coarse[:, 0, 2] == round((-60 - FLOOR_DB) / 3.0)).all() and coarse.sum() == 2 * coarse[0, 0, 2]


@pytest.mark.parametrize("noise", [BAND_LIMITED, WHITE])
@pytest.mark.parametrize("mid_side", [True, False])
def test_the_fill_stays_in_the_encoders_null_space_and_reaches_its_energy(model, mid_side, noise):
    c = model.config
    spec = FillSpec(block=8, fraction=1.0, mid_side=mid_side, noise=noise)
    nf = NoiseFill(spec, model.runtime._encoder, c.channels, c.J, c.sample_rate)
    n = 16
    coef = np.zeros((c.channels * 256, n), dtype=np.float32)
    levels = np.zeros((2, 2, len(nf.groups)), dtype=np.int32)
    levels[:, :, 3] = round((-70 - FLOOR_DB) / spec.step_db)  # the fourth group (7.1-8 kHz) at -70 dB, both channels
    nf.push(levels, n)
    out = nf.apply(coef.copy())
    enc = np.asarray(model.runtime._encoder).reshape(-1, c.channels * 256)
    assert np.abs(enc @ out).max() < 1e-4 * np.abs(out).max()  # the latents do not see it
    rows = [ch * 256 + b for ch in range(2) for b in nf.groups[3]]
    energy_db = 10 * np.log10(np.mean(out[rows] ** 2))
    assert energy_db == pytest.approx(FLOOR_DB + spec.step_db * levels[0, 0, 3], abs=0.8)  # -70 dB to the step
    # no levels, or a decode already loud enough: nothing is added
    nf.reset()
    nf.push(None, n)
    np.testing.assert_array_equal(nf.apply(coef.copy()), coef)
    nf.reset()
    loud = coef.copy()
    loud[rows[: len(rows) // 2]] = 1e-2  # left only, -40 dB: more than the target in L, R, mid and side
    if not mid_side:
        loud[rows[len(rows) // 2 :]] = 1e-2
    nf.push(levels, n)
    np.testing.assert_array_equal(nf.apply(loud.copy()), loud)


def _outside_db(coef: np.ndarray, lo: float, hi: float, channels: int) -> float:
    """Share of the energy more than 200 Hz outside ``[lo, hi)`` of periodic coefficient frames
    ``[C*P, L]`` (J = 8) once synthesized (the second period of two, past the filters' start)."""
    from walloc_audio.runtime import FrameFIR
    from walloc_audio.wavelets import packet_filters

    frames = np.tile(coef, 2).reshape(channels, 256, -1).transpose(2, 0, 1)
    y = FrameFIR(np.ascontiguousarray(packet_filters(8).synthesis, dtype=np.float32)).process(
        np.ascontiguousarray(frames, dtype=np.float32))  # [n, C, N]
    y = y.transpose(1, 0, 2).reshape(channels, -1)[:, TABLE_SAMPLES:]
    power = np.square(np.abs(np.fft.rfft(y))).sum(axis=0)
    f = np.fft.rfftfreq(y.shape[1], 1 / 44100)
    return float(power[(f < lo - 200) | (f >= hi + 200)].sum() / power.sum())


def test_band_limited_noise_stays_in_its_group_and_white_noise_does_not(model):
    """Synthesized, white noise in a group's coefficients spreads 20-30 % of its energy away from
    the 6.3-8 and 12.5-16 kHz groups (filter images that only a real signal's neighbouring bands
    cancel); the band-limited tables keep it in (none before the null-space projection, a few % after)."""
    c = model.config
    spec = FillSpec(edges_hz=SIX_GROUPS_HZ)
    table = band_noise(spec.edges_hz, c.sample_rate, c.J)  # [G, P, L], one period
    assert table.shape == (len(spec.edges_hz) - 1, 256, TABLE_SAMPLES // 256)
    noise, _, r = NoiseFill(spec, model.runtime._encoder, c.channels, c.J, c.sample_rate)._tables
    q, _ = NoiseFill(FillSpec(edges_hz=SIX_GROUPS_HZ, noise=WHITE), model.runtime._encoder, c.channels, c.J,
                     c.sample_rate)._projector
    nf = NoiseFill(spec, model.runtime._encoder, c.channels, c.J, c.sample_rate)
    rng = np.random.default_rng(3)
    for g in (1, 4):
        lo, hi = spec.edges_hz[g], spec.edges_hz[g + 1]
        assert _outside_db(table[g], lo, hi, 1) < 1e-4
        np.testing.assert_allclose(noise[g].T, table[g], atol=1e-5)  # the decoder's table, by frame
        placed = np.concatenate([table[g], np.zeros_like(table[g])])  # channel 0, then into the null space
        assert _outside_db(placed - r @ (r.T @ placed), lo, hi, 2) < 0.1
        sl = nf._pairs[g]  # channel 0, group g
        white = q[:, sl] @ rng.standard_normal((sl.stop - sl.start, table.shape[2]))
        assert _outside_db(white, lo, hi, 2) > 0.15


def test_the_noise_tables_repeat_without_a_seam(model):
    """Frame ``t`` and frame ``t + L`` get the same noise: a stream of any length wraps around the period."""
    c = model.config
    nf = NoiseFill(FillSpec(block=4), model.runtime._encoder, c.channels, c.J, c.sample_rate)
    period = TABLE_SAMPLES // 256
    rng = np.random.default_rng(2)
    coef = (1e-4 * rng.standard_normal((c.channels * 256, 16))).astype(np.float32)
    levels = rng.integers(20, 50, size=(4, 2, len(nf.groups))).astype(np.int32)
    outs = []
    for start in (period - 6, 2 * period - 6):  # each run crosses the end of the period
        nf.reset()
        nf.frame = start
        nf.push(levels, 16)
        outs.append(nf.apply(coef.copy()))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - coef).max() > 0


def test_a_mid_side_fill_is_as_correlated_as_the_original(model):
    """Mid at -70 dB and no side: the noise is the same in both channels (a mono high band stays mono);
    left/right levels of the same content fill each channel with its own noise."""
    c = model.config
    n = 64
    groups = FillSpec().groups(c.J, c.sample_rate)
    rng = np.random.default_rng(5)
    band = rng.standard_normal((len(groups[3]), n)) * 10 ** (-70 / 20)
    original = np.zeros((2, 256, n))
    original[:, groups[3]] = band  # the same high band in both channels
    corr = {}
    for mid_side in (True, False):
        spec = FillSpec(block=8, fraction=1.0, mid_side=mid_side, step_db=STEP_DB)  # fine steps: energy to 0.75 dB
        levels = measure(original, groups, 8, mid_side, spec.step_db)
        assert (levels[:, 1, 3] == 0).all() == mid_side  # mid/side: no side energy at all
        nf = NoiseFill(spec, model.runtime._encoder, c.channels, c.J, c.sample_rate)
        nf.push(levels, n)
        out = nf.apply(np.zeros((c.channels * 256, n), dtype=np.float32))
        left, right = out[groups[3]], out[256 + groups[3]]
        corr[mid_side] = float((left * right).sum() / np.sqrt((left**2).sum() * (right**2).sum()))
        # each channel gets the original's energy either way
        for ch in (left, right):
            assert 10 * np.log10(np.mean(ch**2)) == pytest.approx(-70, abs=1.0)
    assert corr[True] > 0.95 and abs(corr[False]) < 0.3, corr


def test_a_left_right_fill_file_of_the_previous_encoder_decodes_as_it_did(tmp_path):
    """Files written before the mid/side fill (no "channels" in the fill header) still decode the same."""
    from walloc_audio.bitstream import read_header
    from walloc_audio.compress import decompress_file

    src = FIXTURES / "v2-stereo-5x-linear-fill-lr.wlc"
    with open(src, "rb") as f:
        h = read_header(f)
    assert h.version == 2 and h.fill and "channels" not in h.fill and not h.fill_spec().mid_side
    assert "noise" not in h.fill and h.fill_spec().noise == WHITE  # written before the band-limited noise
    assert "levels" not in h.fill and not h.fill_spec().planar  # and before the planar level prediction
    decompress_file(str(src), str(tmp_path / "out.wav"), subtype="FLOAT")
    y = read_audio(tmp_path / "out.wav")[0]
    ref = read_audio(FIXTURES / "v2-stereo-5x-linear-fill-lr.decoded.flac")[0]
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1.01 / 32768  # the reference was written as 16-bit


def test_the_fill_does_not_depend_on_how_frames_arrive(model):
    c = model.config
    nf = NoiseFill(FillSpec(block=8), model.runtime._encoder, c.channels, c.J, c.sample_rate)
    rng = np.random.default_rng(1)
    coef = (1e-4 * rng.standard_normal((c.channels * 256, 24))).astype(np.float32)
    levels = rng.integers(10, 25, size=(3, 2, len(nf.groups))).astype(np.int32)  # -95..-50 dB in 3-dB steps
    nf.push(levels, 24)
    whole = nf.apply(coef.copy())
    nf.reset()
    nf.push(levels, 24)
    pieces = [nf.apply(coef[:, a:b].copy()) for a, b in [(0, 5), (5, 6), (6, 9), (9, 24)]]
    assert [p.shape[1] for p in pieces] == [0, 0, 8, 16]  # a block leaves when its last frame is in
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-7)


def test_a_filled_stream_brings_the_highs_back_and_streams_as_it_decodes(model, music):
    from scipy.signal import welch

    x = music
    out = {}
    for fill in (None, FillSpec()):
        enc = PacketEncoder(model, 64, 4, fill=fill)
        packets = enc.push(x) + enc.flush()
        y = np.concatenate(PacketDecoder(model, 2, enc.bands, fill).decode_many(packets), axis=1)
        live = PacketDecoder(model, 2, enc.bands, fill)
        y_live = np.concatenate([live.decode(f, p) for f, p in packets], axis=1)
        np.testing.assert_allclose(y_live, y, atol=1e-6)  # packet by packet == the whole file at once
        d = model.config.delay_samples
        out[fill is not None] = (y[:, d : d + x.shape[1] - d], sum(len(p) for _, p in packets))
    ref = x[:, : x.shape[1] - model.config.delay_samples]
    f, px = welch(ref.mean(0), 44100, nperseg=4096)
    high = (f > 8000) & (f < 16000)
    gap = {k: 10 * np.log10(welch(v[0].mean(0), 44100, nperseg=4096)[1][high].mean() / px[high].mean())
           for k, v in out.items()}
    # 8-16 kHz much closer to the original (half the missing energy comes back: -3 dB at most), not above it
    assert gap[False] < -6 and gap[False] + 4 < gap[True] < 0.5, gap
    err = {k: 10 * np.log10(np.sum(ref**2) / np.sum((v[0] - ref) ** 2)) for k, v in out.items()}
    assert err[True] > err[False] - 1.0, err  # a little SNR for it
    assert out[True][1] < 1.12 * out[False][1]  # and under an eighth of the bytes (twelve groups: 8.4 % here)


def test_silence_gets_no_noise_and_costs_two_bytes(model):
    x = np.zeros((2, 4 * 64 * 256), dtype=np.float32)
    out = {}
    for fill in (None, FillSpec()):
        enc = PacketEncoder(model, 64, 4, fill=fill)
        packets = enc.push(x) + enc.flush()
        out[fill is not None] = (np.concatenate(PacketDecoder(model, 2, enc.bands, fill).decode_many(packets), axis=1),
                                 [len(p) for _, p in packets])
    np.testing.assert_array_equal(out[True][0], out[False][0])  # the fill adds nothing to silence
    assert [b - a for a, b in zip(out[False][1], out[True][1])] == [2] * len(out[False][1])


def test_the_header_carries_the_fill_and_refuses_a_bad_one(model, music, tmp_path):
    from walloc_audio.compress import decode_stream, encode_stream
    from walloc_audio.audio import AudioReader
    import soundfile as sf

    sf.write(tmp_path / "x.wav", music.T, 44100, subtype="FLOAT")
    files = {}
    for fill in (True, False):
        buf = io.BytesIO()
        with AudioReader(str(tmp_path / "x.wav")) as r:
            encode_stream(r, buf, model, fill=fill)
        files[fill] = buf.getvalue()
    assert b'"fill"' in files[True] and b'"fill"' not in files[False]  # no field: the header as before
    for fill, data in files.items():
        decode_stream(io.BytesIO(data), str(tmp_path / f"y{fill}.wav"), model=model)
    h = dict(model=model.name, model_sha256="0" * 64, sample_rate=44100, channels=2, J=8, latent_dim=108,
             frames_per_packet=64, source_sample_rate=44100, source_channels=2, quantizer="adaptive", bands=8,
             entropy_sha256="0" * 64)
    StreamHeader(**h, fill=FillSpec().to_header()).validate()
    for bad in ({"edges_hz": [5000, 4000], "block": 8, "fraction": 0.5, "step_db": 1.5, "floor_db": -125.0},
                {**FillSpec().to_header(), "block": 0}, {**FillSpec().to_header(), "fraction": 2},
                {**FillSpec().to_header(), "step_db": 2.5}, {**FillSpec().to_header(), "edges_hz": list(range(1, 40))},
                {**FillSpec().to_header(), "other": 1}, {"edges_hz": "x"},
                {**FillSpec().to_header(), "channels": "left-right"}, {**FillSpec().to_header(), "channels": None},
                {**FillSpec().to_header(), "noise": "white"}, {**FillSpec().to_header(), "noise": "pink"},
                {**FillSpec().to_header(), "levels": "block"}, {**FillSpec().to_header(), "levels": 1},
                {**FillSpec().to_header(), "step_db": 2.0}, {**FillSpec().to_header(), "step_db": "3.0"}):
        with pytest.raises(BitstreamError, match="fill"):
            StreamHeader(**h, fill=bad).validate()
    with pytest.raises(BitstreamError, match="noise fill"):
        StreamHeader(**{**h, "quantizer": "fixed", "bands": 0, "entropy_sha256": ""}, fill=FillSpec().to_header()).validate()
    # mid/side is said in the header (absent: left/right, the files before it) and needs two channels
    ms = FillSpec(mid_side=True)
    assert ms.to_header()["channels"] == "mid-side" and "channels" not in FillSpec().to_header()
    for spec in (FillSpec(), ms, FillSpec(noise=WHITE), FillSpec(planar=False), FillSpec(step_db=1.5),
                 FillSpec(step_db=3.0)):
        assert StreamHeader(**h, fill=spec.to_header()).fill_spec() == spec
    assert FillSpec().to_header()["levels"] == "planar" and "levels" not in FillSpec(planar=False).to_header()
    # the noise too: band-limited is written, white is a header without the field (the files before it)
    assert FillSpec().to_header()["noise"] == BAND_LIMITED and "noise" not in FillSpec(noise=WHITE).to_header()
    with pytest.raises(BitstreamError, match="mid/side"):
        StreamHeader(**{**h, "channels": 1, "source_channels": 1}, fill=ms.to_header()).validate()


def test_the_default_block_is_the_same_time_at_every_J(tmp_path):
    assert FillSpec.for_frame(256).block == 4 and FillSpec.for_frame(64).block == 16  # 1024 samples
    assert FillSpec.for_frame(4096).block == 1
    assert not FillSpec.for_frame(256).mid_side  # left/right unless asked
    from walloc_audio.bitstream import read_header
    from walloc_audio.compress import compress_file

    for name, block in (("stereo-5x-linear", 4), ("stereo-5x-ll-linear", 16)):
        out = tmp_path / f"{name}.wlc"
        compress_file(DEMO_CLIP, str(out), load_model(name))
        with open(out, "rb") as f:
            assert read_header(f).fill_spec().block == block  # what encode writes by default
