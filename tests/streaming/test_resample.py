"""StreamResampler: frequency kept, length ≈ n·out/in, chunked == one-shot, identity path."""

import numpy as np
import pytest

from streaming.resample import StreamResampler


def run(resampler: StreamResampler, x: np.ndarray, block: int) -> np.ndarray:
    """Feed ``x`` [C, T] in blocks of ``block`` samples, then flush; returns all output [C, m]."""
    out = [resampler.process(x[:, i:i + block]) for i in range(0, x.shape[1], block)]
    out.append(resampler.flush())
    return np.concatenate(out, axis=1)


def peak_hz(x: np.ndarray, rate: int) -> float:
    """Frequency of the largest FFT bin of a mono signal (Hann window against leakage)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("in_rate, out_rate", [(48000, 44100), (44100, 48000), (16000, 44100)])
def test_tone_frequency_and_length(in_rate, out_rate):
    t = np.arange(in_rate) / in_rate  # 1 s
    x = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 3000 * t)]).astype(np.float32)
    y = run(StreamResampler(in_rate, out_rate, 2), x, 1024)
    assert y.dtype == np.float32 and y.shape[0] == 2
    assert abs(y.shape[1] - x.shape[1] * out_rate / in_rate) <= 2, y.shape
    # 1 s at out_rate: FFT bins are 1 Hz apart.
    assert abs(peak_hz(y[0], out_rate) - 1000) <= 1
    assert abs(peak_hz(y[1], out_rate) - 3000) <= 1
    # A pass-band tone keeps its amplitude (away from the edges of the signal).
    mid = y[0, out_rate // 4: 3 * out_rate // 4]
    assert np.max(np.abs(mid)) == pytest.approx(0.5, abs=0.01)


def test_length_of_odd_sizes():
    x = np.random.default_rng(0).standard_normal((1, 12345)).astype(np.float32)
    y = run(StreamResampler(48000, 44100, 1), x, 1000)
    assert abs(y.shape[1] - 12345 * 44100 / 48000) <= 1, y.shape


@pytest.mark.parametrize("quality", ["HQ", "VHQ"])
@pytest.mark.parametrize("block", [1, 7, 1024, 8193])
def test_chunked_equals_one_shot(block, quality, rng):
    x = rng.standard_normal((2, 20000)).astype(np.float32) * 0.3
    ref = run(StreamResampler(48000, 44100, 2, quality), x, x.shape[1])
    y = run(StreamResampler(48000, 44100, 2, quality), x, block)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_impulse_stays_at_time_zero_and_delay_is_reported():
    # soxr trims its own filter delay: an impulse at input sample 480 (10 ms) comes out at 10 ms.
    x = np.zeros((1, 4800), np.float32)
    x[0, 480] = 1.0
    r = StreamResampler(48000, 44100, 1)
    first = r.process(x)
    assert r.delay_samples > 0  # the held-back tail, released by flush()
    assert first.shape[1] + r.delay_samples == pytest.approx(4410, abs=1)
    y = np.concatenate([first, r.flush()], axis=1)
    assert int(np.argmax(y[0])) == round(480 * 44100 / 48000)
    assert r.delay_samples == 0  # flush() resets


def test_reusable_after_flush(rng):
    x = rng.standard_normal((2, 5000)).astype(np.float32)
    r = StreamResampler(44100, 48000, 2)
    np.testing.assert_array_equal(run(r, x, 512), run(r, x, 512))


def test_identity_path(rng):
    x = rng.standard_normal((2, 1000)).astype(np.float32)
    r = StreamResampler(44100, 44100, 2)
    assert r.identity and r.delay_samples == 0
    y = r.process(x)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    assert r.flush().shape == (2, 0)


def test_rejects_wrong_shape():
    r = StreamResampler(48000, 44100, 2)
    with pytest.raises(ValueError, match=r"\[C=2, n\]"):
        r.process(np.zeros((1000, 2), np.float32))
    with pytest.raises(ValueError):
        StreamResampler(48000, 44100, 2, quality="LQ")
