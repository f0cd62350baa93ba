"""Codec model: linearity, quantizer modes, decoder causality and look-ahead, streaming == offline."""

import numpy as np
import pytest
import torch

from helpers import make_model, tones
from walloc_audio.codec_stream import PacketDecoder, PacketEncoder
from walloc_audio.config import CodecConfig
from walloc_audio.tools.model import WallocCodec
from walloc_audio.wavelets import PacketTransform


def test_config_validation_and_round_trip():
    cfg = CodecConfig()
    assert cfg.dimension_reduction == pytest.approx(512 / 108)
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        CodecConfig(latent_dim=600)
    with pytest.raises(ValueError):
        CodecConfig.from_dict({**cfg.to_dict(), "surprise": 1})


def test_analyze_is_linear_and_equals_wpt_then_encoder(rng):
    m = make_model(J=4, latent_dim=20)
    a = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 2, 16 * 50)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 2, 16 * 50)).astype(np.float32))
    za, zb, zab = m.codec.analyze(a), m.codec.analyze(b), m.codec.analyze(a + b)
    torch.testing.assert_close(zab, za + zb, atol=1e-5, rtol=0)
    coef = PacketTransform(4).analysis(a)  # [1, 32, K]
    torch.testing.assert_close(za, torch.einsum("ld,bdk->blk", m.codec.encoder, coef), atol=1e-5, rtol=0)


def test_quantizer_modes():
    m = make_model(J=3)
    y = torch.randn(1, m.config.latent_dim, 50) * 0.01
    bn = m.codec.bottleneck
    q = bn(y, "symbols")
    assert q.dtype == torch.int32 and q.abs().max() <= bn.max_symbol
    r = bn(y, "round")
    torch.testing.assert_close(r, bn.dequantize(q[0])[None])
    n = bn(y, "noise")
    step = bn.step()[:, None]
    # Near zero the compander is ~identity: noise of about half a step; further out the step widens.
    widen = 1 + (y / step).abs() / bn.knee
    assert ((n - y).abs() <= step * 0.5 * widen * 1.01 + 1e-7).all()
    with pytest.raises(ValueError):
        bn(y, "bogus")


def test_loud_latents_do_not_wrap():
    m = make_model(J=3)
    y = torch.full((1, m.config.latent_dim, 4), 1e6)
    q = m.codec.bottleneck(y, "symbols")
    assert (q == m.codec.bottleneck.max_symbol).all()  # saturate at the top, never wrap around


def test_round_trip_quality_on_tones():
    m = make_model(J=4, step=2e-4)
    x = torch.from_numpy(tones(0.5)[:, : 16 * 1300])[None]
    c = m.config
    pad = torch.nn.functional.pad(x, (0, c.flush_frames * c.frame))
    y = m.codec.decode(m.codec.encode(pad))[..., c.delay_samples : c.delay_samples + x.shape[-1]]
    snr = 10 * torch.log10(x.pow(2).sum() / (y - x).pow(2).sum())
    assert snr > 25, f"SNR {snr:.1f} dB"


@pytest.mark.parametrize("lookahead", [0, 2])
def test_decoder_is_causal_up_to_its_lookahead(lookahead):
    cfg = CodecConfig(J=3, latent_dim=8, decoder_width=8, decoder_depth=3, lookahead_frames=lookahead)
    dec = WallocCodec(cfg).decoder
    torch.nn.init.normal_(dec.net[-1].weight)
    z = torch.randn(1, 8, 40)
    z2 = z.clone()
    z2[..., 25:] += 1.0
    a, b = dec(z), dec(z2)
    torch.testing.assert_close(a[..., : 25 - lookahead], b[..., : 25 - lookahead])
    assert not torch.allclose(a[..., 25 - lookahead], b[..., 25 - lookahead])


def test_fresh_nonlinear_decoder_equals_linear_decoder():
    lin = make_model(J=4)
    nl = make_model(J=4, depth=2)
    torch.nn.init.zeros_(nl.codec.decoder.net[-1].weight)
    z = torch.randn(1, lin.config.latent_dim, 10)
    torch.testing.assert_close(lin.codec.synthesize(z), nl.codec.synthesize(z), atol=1e-6, rtol=0)


def _stream(model, x, block_sizes, fpp, group=1):
    enc = PacketEncoder(model, fpp, group)
    packets, pos, i = [], 0, 0
    while pos < x.shape[1]:
        n = block_sizes[i % len(block_sizes)]
        packets += enc.push(x[:, pos : pos + n])
        pos, i = pos + n, i + 1
    packets += enc.flush()
    return packets, enc


def test_packets_are_bit_identical_for_any_block_partition():
    m = make_model(J=4)
    x = tones(0.3)
    for group in (1, 3):
        ref, _ = _stream(m, x, [x.shape[1]], 8, group)
        for sizes in ([1], [7], [256], [1000], [8192], [1, 64, 65, 128, 8193, 3]):
            got, _ = _stream(m, x, sizes, 8, group)
            assert got == ref, f"block sizes {sizes}, group {group}"
    # The grouping changes only how frames are batched through the filter.
    one = [p for _, p in _stream(m, x, [x.shape[1]], 8, 1)[0]]
    three = [p for _, p in _stream(m, x, [x.shape[1]], 8, 3)[0]]
    assert len(one) == len(three)


@pytest.mark.parametrize("depth,lookahead,post", [(0, 0, 0), (2, 0, 0), (2, 3, 0), (0, 0, 5), (2, 1, 9)])
def test_packet_decoder_equals_offline_decode(depth, lookahead, post):
    m = make_model(J=3, depth=depth, lookahead=lookahead, post_filter=post)
    x = tones(0.1)
    packets, enc = _stream(m, x, [333], 5)
    dec = PacketDecoder(m)
    streamed = np.concatenate([dec.decode(f, p) for f, p in packets], axis=1)
    c = m.config
    frames = sum(f for f, _ in packets)
    xt = torch.zeros(1, 2, frames * c.frame)
    xt[0, :, : x.shape[1]] = torch.from_numpy(x)
    offline = m.codec.decode(m.codec.encode(xt))[0].numpy()
    usable = (frames - lookahead) * c.frame
    np.testing.assert_allclose(streamed[:, :usable], offline[:, :usable], atol=1e-5)
    if not post:  # (the test's post filter is a deliberate low-pass)
        d = c.delay_samples
        err = streamed[:, d : d + x.shape[1]] - x
        assert 10 * np.log10((x**2).sum() / (err**2).sum()) > 15


def test_post_filter_starts_as_identity_and_is_causal():
    cfg = CodecConfig(J=3, latent_dim=8, post_filter_taps=4)
    codec = WallocCodec(cfg)
    x = torch.randn(1, 2, 64)
    torch.testing.assert_close(codec.apply_post_filter(x), x)
    with torch.no_grad():
        codec.post_filter.normal_()
    y = codec.apply_post_filter(x)
    x2 = x.clone()
    x2[..., 40:] += 1
    torch.testing.assert_close(codec.apply_post_filter(x2)[..., :40], y[..., :40])


def test_clipping_is_counted_not_wrapped():
    m = make_model(J=3)
    enc = PacketEncoder(m, 4)
    x = np.zeros((2, 100), dtype=np.float32)
    x[0, 10] = 3.0
    x[1, 20] = -2.0
    enc.push(x)
    assert enc.clipped == 2
