"""The packet transform against PyWavelets, perfect reconstruction, state and latency."""

import numpy as np
import pytest
import pywt
import torch

from walloc_audio.wavelets import PacketTransform, freq_to_natural, packet_filters


@pytest.mark.parametrize("J", [1, 3, 6, 8])
def test_matches_pywavelets_on_periodic_crops(J, rng):
    # On a periodic signal the streaming transform, once warmed up, must equal
    # PyWavelets' periodized packet transform of one period (frequency order).
    n = 2**J
    period = n * 24
    crop = rng.standard_normal(period)
    wpt = PacketTransform(J, torch.float64)
    coef = wpt.analysis(torch.from_numpy(np.tile(crop, 3))[None, None])[0].numpy()
    wp = pywt.WaveletPacket(crop, "bior4.4", mode="periodization", maxlevel=J)
    ref = np.stack([node.data for node in wp.get_level(J, order="freq")])
    d = wpt.filters.analysis_delay
    np.testing.assert_allclose(coef[:, 24 + d : 48 + d], ref, atol=1e-10)


def test_frequency_order_is_gray_code():
    # Level-2 natural order is aa, ad, da, dd; by frequency it is aa, ad, dd, da.
    assert list(freq_to_natural(2)) == [0, 1, 3, 2]
    paths = [node.path for node in pywt.WaveletPacket(np.zeros(64), "bior4.4", maxlevel=3).get_level(3, order="freq")]
    natural = ["".join("ad"[int(b)] for b in format(i, "03b")) for i in freq_to_natural(3)]
    assert paths == natural


def test_shape_and_channel_layout(rng):
    wpt = PacketTransform(4)
    x = torch.from_numpy(rng.standard_normal((3, 2, 16 * 10)).astype(np.float32))
    c = wpt.analysis(x)
    assert c.shape == (3, 2 * 16, 10)
    # Channel-major: channel 1's subbands come from channel 1 alone.
    wpt.reset()
    x2 = x.clone()
    x2[:, 0] = 0
    c2 = wpt.analysis(x2)
    torch.testing.assert_close(c2[:, 16:], c[:, 16:])
    assert c2[:, :16].abs().max() == 0


@pytest.mark.parametrize("J", [2, 6, 8])
def test_perfect_reconstruction_float32(J, rng):
    wpt = PacketTransform(J)
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 2, 2**J * 30)).astype(np.float32))
    y = wpt.synthesis(wpt.analysis(x))
    d = wpt.delay_samples
    assert (y[..., d:] - x[..., : x.shape[-1] - d]).abs().max() <= 1e-5


@pytest.mark.parametrize("J", [3, 8])
def test_any_partition_into_frames_gives_the_same_coefficients(J, rng):
    n = 2**J
    x = torch.from_numpy(rng.standard_normal((1, 2, n * 40)).astype(np.float32))
    whole = PacketTransform(J).analysis(x)
    wpt = PacketTransform(J)
    parts, pos = [], 0
    for frames in [1, 7, 2, 13, 0, 17]:
        parts.append(wpt.analysis(x[..., pos : pos + frames * n]))
        pos += frames * n
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, rtol=0, atol=1e-5)


def test_frames_must_be_whole():
    with pytest.raises(AssertionError, match="whole number"):
        PacketTransform(3).analysis(torch.zeros(1, 1, 12))


@pytest.mark.parametrize("J", [1, 4, 6, 8])
def test_impulse_confirms_delay_and_latency(J):
    f = packet_filters(J)
    n = 2**J
    wpt = PacketTransform(J, torch.float64)
    for pos in [0, 1, n // 2, n - 1, 3 * n + 5]:
        wpt.reset()
        x = torch.zeros(1, 1, n * (f.analysis_delay + f.synthesis_delay + 8))
        x[..., pos] = 1.0
        y = wpt.synthesis(wpt.analysis(x.double()))[0, 0]
        assert int(y.abs().argmax()) == pos + f.delay_samples
        assert abs(float(y[pos + f.delay_samples]) - 1.0) < 1e-9
        # Processing whole frames, sample `pos` leaves once its output frame is
        # computed, i.e. when input frame (pos + delay) // n is complete.
        out_frame = (pos + f.delay_samples) // n
        available_at = (out_frame + 1) * n - 1
        assert available_at - pos <= f.latency_samples
    assert f.latency_samples == f.delay_samples + n - 1


def test_latency_figures():
    # The numbers the README quotes (44.1 kHz).
    assert packet_filters(8).latency_samples == 1791  # 40.6 ms
    assert packet_filters(6).latency_samples == 447  # 10.1 ms
    assert packet_filters(8).latency_samples >= 7 * (2**8 - 1)  # never below the theoretical floor


def test_the_built_in_filters_are_pywavelets_bior44():
    from walloc_audio import wavelets

    w = pywt.Wavelet("bior4.4")
    for ours, theirs in [(wavelets.DEC_LO, w.dec_lo), (wavelets.DEC_HI, w.dec_hi),
                         (wavelets.REC_LO, w.rec_lo), (wavelets.REC_HI, w.rec_hi)]:
        np.testing.assert_array_equal(np.array(ours), np.array(theirs))
