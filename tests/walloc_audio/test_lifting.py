"""The lifting packet tree against the FIR transform and PyWavelets, and the encoder built on it."""

from __future__ import annotations

import numpy as np
import pytest
import pywt

from walloc_audio.audio import read_audio
from walloc_audio.codec_stream import PacketEncoder
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.lifting import band_scales, packet_lifting
from walloc_audio.pretrained import load_model
from walloc_audio.runtime import fir_frames
from walloc_audio.wavelets import freq_to_natural, frames_from_signal, packet_filters


@pytest.fixture(scope="module")
def music_4s():
    x, _ = read_audio(DEMO_CLIP)
    return np.ascontiguousarray(x[:, : 9 * 64 * 256], dtype=np.float32)


@pytest.mark.parametrize("J", [1, 3, 8])
def test_lifting_is_the_pywavelets_packet_tree_away_from_the_edges(J):
    rng = np.random.default_rng(J)
    n = 64 * 2**J
    x = rng.standard_normal(n)
    coef = packet_lifting(x[None], J)[0] * band_scales(J)[:, None]  # [P natural, n / 2**J]
    # PyWavelets' periodic tree equals the zero-extended one wherever the filters stay inside.
    wp = pywt.WaveletPacket(x, "bior4.4", mode="periodization", maxlevel=J)
    ref = np.stack([node.data for node in wp.get_level(J, order="natural")])
    inner = slice(16, -16)
    np.testing.assert_allclose(coef[:, inner], ref[:, inner], atol=1e-10)


@pytest.mark.parametrize("J", [2, 8])
def test_lifting_equals_the_causal_fir_at_its_delay(J):
    f = packet_filters(J)
    n, m = 2**J, f.analysis.shape[0]
    x = np.random.default_rng(0).standard_normal((1, 30 * n))
    fir = fir_frames(frames_from_signal(x[None], n), f.analysis)[:, 0, :].T  # [P freq, K]: history m - 1 frames
    lifted = (packet_lifting(x, J)[0] * band_scales(J)[:, None])[freq_to_natural(J)]
    off = m - 1 - f.analysis_delay
    np.testing.assert_allclose(lifted[:, off : off + fir.shape[1]], fir, atol=1e-10)


def test_float32_lifting_keeps_the_precision_of_the_fir():
    m = load_model("stereo-5x-linear")
    rt = m.runtime
    rng = np.random.default_rng(1)
    k = 40
    stream = (0.3 * rng.standard_normal((2, (rt.history_frames + k) * 256))).astype(np.float32)
    fir = fir_frames(frames_from_signal(stream[None], 256), rt.analysis_taps)[:, 0, :].T
    exact = fir_frames(frames_from_signal(stream[None].astype(np.float64), 256),
                       rt.analysis_taps.astype(np.float64))[:, 0, :].T
    got = rt.analysis_frames(stream)
    assert got.shape == fir.shape == (m.config.latent_dim, k) and got.dtype == np.float32
    # Both float32 paths sit within float32 rounding of the float64 result.
    scale = float(np.abs(exact).max())
    assert np.abs(got - exact).max() < 2e-6 * scale
    assert np.abs(fir - exact).max() < 2e-6 * scale


def test_the_lifting_encoder_gives_the_fir_symbols(music_4s):
    m = load_model("stereo-5x-linear")
    rt = m.runtime
    x = music_4s
    hist = np.zeros((2, rt.history_frames * 256), dtype=np.float32)
    stream = np.concatenate([hist, x], axis=1)
    fir = fir_frames(frames_from_signal(stream[None], 256), rt.analysis_taps)[:, 0, :].T
    q_fir, q = rt.quantizer.symbols(fir), rt.quantizer.symbols(rt.analysis_frames(stream))
    assert (q == q_fir).mean() >= 0.9999 and np.abs(q - q_fir).max() <= 1


def test_a_packet_depends_only_on_its_frames_and_the_history_before_them(music_4s):
    """Lifting spoils nothing the encoder keeps: after M - 1 frames, a different past changes no byte."""
    m = load_model("stereo-5x-linear")
    p = 64 * 256
    x = music_4s[:, : 8 * p]
    y = x.copy()
    y[:, : 4 * p] *= 0.5  # another first half; packet 4 still sees it through its history
    a, b = PacketEncoder(m, 64, 1, version=1), PacketEncoder(m, 64, 1, version=1)
    pa, pb = a.push(x), b.push(y)
    assert len(pa) == len(pb) == 8
    assert all(u != v for u, v in zip(pa[:5], pb[:5]))
    assert pa[5:] == pb[5:]


def test_the_c_tree_is_built_and_gives_the_numpy_bits():
    """The C packet tree (walloc_audio/_kernels.c) is what the encoder runs; it must equal the NumPy
    steps bit for bit (no fused multiply-add), at every depth and for the encoder's block shapes."""
    from walloc_audio import native

    assert native.kernels is not None, "walloc_audio._kernels was not built (make install compiles it)"
    rng = np.random.default_rng(7)
    for J, n in [(0, 8), (1, 2), (3, 40 * 8), (6, 7 * 64), (8, 256), (8, 65536 + 8 * 256)]:
        x = rng.standard_normal((2, n)).astype(np.float32) * 0.5
        c_tree = packet_lifting(x, J, native=True)
        ref = packet_lifting(x, J, native=False)
        assert c_tree.shape == ref.shape == (2, 2**J, n >> J) and c_tree.dtype == np.float32
        assert np.array_equal(c_tree, ref), f"J={J} n={n}"
    # a strided view is copied first, not misread
    x = rng.standard_normal((2, 2 * 512)).astype(np.float32)[:, ::2]
    assert np.array_equal(packet_lifting(x, 4, native=True), packet_lifting(x, 4, native=False))


def test_the_c_tree_refuses_bad_buffers():
    from walloc_audio import _kernels

    x = np.zeros((2, 64), dtype=np.float32)
    with pytest.raises(TypeError):
        _kernels.packet_tree(x.astype(np.float64), np.empty_like(x), np.empty_like(x), 3, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):  # 64 samples are not a multiple of 2**7
        _kernels.packet_tree(x, np.empty_like(x), np.empty_like(x), 7, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        _kernels.packet_tree(x, np.empty((2, 32), np.float32), np.empty_like(x), 3, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("J", [0, 1, 3, 8])
def test_unlifting_inverts_lifting_and_the_c_tree_gives_the_numpy_bits(J):
    from walloc_audio.lifting import packet_unlifting

    rng = np.random.default_rng(J)
    x = rng.standard_normal((2, 24 * 2**J))
    # perfect reconstruction, edges included (every step is undone with the same zero edges)
    np.testing.assert_allclose(packet_unlifting(packet_lifting(x, J)), x, atol=1e-12)
    c = packet_lifting(x.astype(np.float32), J)
    assert np.array_equal(packet_unlifting(c, native=True), packet_unlifting(c, native=False))


@pytest.mark.parametrize("J", [2, 8])
def test_lifting_synthesis_is_the_fir_synthesis_in_any_partition(J):
    """The decoder's inverse tree gives the FIR's PCM (float32 rounding) at the FIR's delay, call by call."""
    from walloc_audio.runtime import F32, FrameFIR, LiftingSynthesis
    from walloc_audio.wavelets import signal_from_frames

    x = np.random.default_rng(J).standard_normal((40, 2, 2**J)).astype(F32)
    fir = FrameFIR(np.ascontiguousarray(packet_filters(J).synthesis, dtype=F32))
    syn = LiftingSynthesis(J)
    a, b = [], []
    assert syn.process(x[:0]).shape == (2, 0)
    for i0, i1 in [(0, 1), (1, 9), (9, 33), (33, 40)]:
        a.append(signal_from_frames(fir.process(x[i0:i1]), 1)[:, 0])
        b.append(syn.process(x[i0:i1]))
        assert b[-1].shape == (2, (i1 - i0) * 2**J)
    a, b = np.concatenate(a, axis=1), np.concatenate(b, axis=1)
    assert np.abs(a).max() > 1.0 and np.abs(a - b).max() < 1e-5
    syn.reset()
    np.testing.assert_array_equal(syn.process(x), b)  # one call, after reset: the same samples
