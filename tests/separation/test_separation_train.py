"""Separation training pieces (separation/train.py; named apart from tests/walloc_audio/tools/training/test_train.py): the Asteroid losses behind ``training.loss``."""

from __future__ import annotations

import pytest
import torch

from separation.train import LOSSES, make_loss


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
