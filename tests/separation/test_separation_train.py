"""Separation training pieces (separation/train.py; named apart from tests/walloc_audio/tools/training/test_train.py): the Asteroid losses behind ``training.loss``."""

from __future__ import annotations

import pytest
import torch

from separation.train import LOSSES, make_loss, thresholded_neg_snr


def test_losses():
    torch.manual_seed(0)
    target = torch.randn(3, 4, 2, 100)  # [B, S, C, T] (or [B, S, L, K] latents)
    est = target + 0.1 * torch.randn_like(target)
    assert make_loss("mse")(est, target) == pytest.approx(torch.mean((est - target) ** 2).item(), rel=1e-6)
    # 0.1 noise on unit signals: ~20 dB SNR, so the negative SNR is ~-20 (SI-SDR: the same, give or take).
    assert make_loss("snr")(est, target).item() == pytest.approx(-20.0, abs=0.5)
    assert make_loss("sisdr")(est, target).item() == pytest.approx(-20.0, abs=0.5)
    assert make_loss("snr")(torch.zeros_like(target), target).item() == pytest.approx(0.0, abs=1e-3)
    for name in LOSSES:
        est.requires_grad_(True)
        make_loss(name)(est, target).backward()
        assert torch.isfinite(est.grad).all()
        est = est.detach()
    with pytest.raises(ValueError, match="mse | snr | sisdr"):
        make_loss("l1")


def test_thresholded_snr_counts_each_stem_and_bears_silent_ones():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 3, 500)
    target[:, 3] *= 0.01  # a quiet stem: 40 dB below the others
    est = target + 0.1 * target.std(-1, keepdim=True) * torch.randn_like(target)  # ~20 dB SNR on every stem
    per = thresholded_neg_snr(est.flatten(2), target.flatten(2))
    assert per.shape == (2, 4)
    # Per element: loud stems 1, errors 0.01, mixture ~3, so the floor is 3e-3 (30 dB below the mixture)
    # and a loud stem scores 10 log10(0.013 / 1.003) = -18.9 dB. The quiet stem (1e-4, error 1e-6) sits
    # under the floor: 10 log10(3.001e-3 / 3.1e-3) = -0.14 dB, so the loss asks nothing more of it.
    assert per[:, :3].mean().item() == pytest.approx(-18.9, abs=0.3)
    assert -0.5 < per[:, 3].mean().item() <= 0.0
    # The loss is the mean over stems and examples.
    assert make_loss("tsnr")(est, target).item() == pytest.approx(per.mean().item(), rel=1e-6)
    # A silent target: finite, 0 for a silent estimate, worse for a loud one, and a finite gradient.
    target[:, 3] = 0
    zero = target.clone()
    assert thresholded_neg_snr(zero.flatten(2), target.flatten(2))[:, 3].abs().max().item() < 1e-5
    loud = target.clone()
    loud[:, 3] = target[:, 0]
    assert thresholded_neg_snr(loud.flatten(2), target.flatten(2))[:, 3].min().item() > 20.0
    loud.requires_grad_(True)
    make_loss("tsnr")(loud, target).backward()
    assert torch.isfinite(loud.grad).all() and loud.grad[:, 3].abs().sum() > 0
    # An all-silent crop costs nothing and stays finite.
    silent = torch.zeros(1, 4, 2, 50, requires_grad=True)
    value = make_loss("tsnr")(silent, torch.zeros(1, 4, 2, 50))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(silent.grad).all()


def test_the_curve_runs_train_with_the_configured_loss():
    """fit.py's latent and waveform models use ``training.loss`` (it was MSE whatever the config said)."""
    from types import SimpleNamespace

    from separation.runs import network_and_loss

    conf = {"masker": {"kind": "tdcn", "kwargs": {"n_blocks": 2, "n_repeats": 1, "bn_chan": 8, "hid_chan": 16,
                                                  "skip_chan": 8}},
            "latent": {"output": "mask", "mask_act": "linear", "scale": 0.3, "consistency": True},
            "training": {"loss": "tsnr"}}
    codec = SimpleNamespace(config=SimpleNamespace(latent_dim=12))
    torch.manual_seed(0)
    net, loss = network_and_loss("latent", conf, codec)
    mix, stems = torch.randn(2, 12, 40), torch.randn(2, 4, 12, 40)
    assert net.consistency
    assert loss(net, mix, stems).item() == pytest.approx(make_loss("tsnr")(net(mix), stems).item(), rel=1e-6)
    conf["training"]["loss"] = "mse"
    net, loss = network_and_loss("latent", conf, codec)
    assert loss(net, mix, stems).item() == pytest.approx(torch.mean((net(mix) - stems) ** 2).item(), rel=1e-5)
