"""Separators: the fast gLN is asteroid's gLN, maskers and front ends have the documented shapes."""

from __future__ import annotations

import pytest
import torch
from asteroid.masknn.norms import GlobLN

from separation.bench import training_throughput
from separation.models import FastGlobLN, LatentSeparator, build_masker, waveform_baseline
from walloc_audio.pretrained import load_model

TINY = {"n_blocks": 2, "n_repeats": 1, "bn_chan": 16, "hid_chan": 32, "skip_chan": 16}


@pytest.mark.parametrize("shape", [(3, 8, 50), (2, 8, 5, 7)])  # TDConvNet [B, C, T]; DPRNN [B, C, chunk, chunks]
def test_fast_gln_is_asteroids_gln(shape):
    torch.manual_seed(0)
    ref, fast = GlobLN(8), FastGlobLN(8)
    with torch.no_grad():
        ref.gamma.uniform_(0.5, 1.5)
        ref.beta.normal_()
    fast.load_state_dict(ref.state_dict())
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(shape)
    y_ref, y_fast = ref(x), fast(x2)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    y_ref.backward(g)
    y_fast.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.gamma.grad, ref.gamma.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.beta.grad, ref.beta.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind, kwargs", [("tdcn", TINY), ("dprnn", {"bn_chan": 16, "hid_size": 16, "chunk_size": 10,
                                                                        "n_repeats": 1})])
def test_maskers_use_the_fast_gln_and_keep_asteroids_state_dict(kind, kwargs):
    net = build_masker(kind, 12, 4, "linear", **kwargs)
    norms = [m for m in net.modules() if isinstance(m, GlobLN)]
    assert norms and all(type(m) is FastGlobLN for m in norms)
    stock = build_masker(kind, 12, 4, "linear", norm_type="GlobLN", **kwargs)  # asteroid's own class, by name
    assert not any(type(m) is FastGlobLN for m in stock.modules())
    stock.load_state_dict(net.state_dict())  # same keys and shapes: checkpoints move either way
    x = torch.randn(2, 12, 40)
    with torch.no_grad():
        torch.testing.assert_close(net(x), stock(x), rtol=1e-4, atol=1e-5)
    other = build_masker(kind, 12, 4, "linear", norm_type="cLN", **kwargs)
    assert not any(isinstance(m, GlobLN) for m in other.modules())


def test_latent_separator_masks_the_mixture():
    torch.manual_seed(0)
    net = LatentSeparator(12, 4, output="mask", scale=0.5, **TINY)
    z = torch.randn(2, 12, 30)
    est = net(z)
    assert est.shape == (2, 4, 12, 30)
    with torch.no_grad():
        mask = net.masker(z / 0.5)
    torch.testing.assert_close(est, mask * z[:, None])
    assert LatentSeparator(12, 4, output="map", **TINY)(z).shape == (2, 4, 12, 30)
    with pytest.raises(AssertionError):
        net(torch.randn(2, 10, 30))


def test_waveform_baseline_uses_the_fast_gln():
    net = waveform_baseline(4, 44100, kernel_size=32, n_filters=16, stride=16, **TINY)
    assert any(type(m) is FastGlobLN for m in net.modules())
    assert net(torch.randn(2, 1, 1600)).shape[:2] == (2, 4)


def test_throughput_bench_runs_every_model_side_by_side():
    conf = {"masker": {"kind": "tdcn", "kwargs": TINY},
            "latent": {"output": "mask", "mask_act": "linear", "scale": 0.3},
            "waveform": {"kernel_size": 32, "n_filters": 16, "stride": 16, "mask_act": "relu"},
            "umx": {"hidden_size": 8, "nb_layers": 1, "bandwidth_hz": 16000},
            "training": {"segment_seconds": 0.2, "batch_size": 2, "lr": 1e-3, "seed": 0}}
    kinds = ("latent", "umx", "waveform")
    out = training_throughput(conf, kinds, model=load_model("stereo-5x-linear"), steps=2, rounds=2, warmup=1,
                              synthetic=True)
    for kind in kinds:
        assert len(out[kind]["rounds"]) == 2 and out[kind]["examples_per_second"] > 0
