"""Open-Unmix as the peer (a few real training steps), budgeted training with a learning curve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from separation.curve import fit, global_sdr, score_set
from separation.umx import UMXBaseline, input_stats, max_bin_for


def test_global_sdr_known_cases():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, 1000))
    assert global_sdr(s, s + 0.1 * rng.standard_normal(s.shape)) == pytest.approx(20.0, abs=0.5)
    assert global_sdr(s, np.zeros_like(s)) == pytest.approx(0.0, abs=1e-9)
    assert global_sdr(np.zeros_like(s), s) is None  # a silent reference has no SDR
    refs = [np.stack([s, s, s, np.zeros_like(s)])]
    out = score_set(refs, [np.stack([s, 0 * s, s + 0.1, s])])
    assert out["stems"]["vocals"] is None and out["stems"]["bass"] == pytest.approx(0.0)
    assert out["sdr"] == pytest.approx(np.mean([out["stems"][k] for k in ("drums", "bass", "other")]))


def test_max_bin_is_open_unmix_bandwidth():
    assert max_bin_for(16000) == 1487  # Open-Unmix's bins at 16 kHz, n_fft 4096, 44.1 kHz
    assert max_bin_for(22050) == 2049


@pytest.fixture(scope="module")
def tiny_umx():
    torch.manual_seed(0)
    mixes = [torch.randn(2, 44100) * 0.1 for _ in range(2)]
    mean, std = input_stats(mixes, UMXBaseline(hidden_size=8, nb_layers=1))
    assert mean.shape == std.shape == (2049,) and np.all(std > 0)
    return UMXBaseline(hidden_size=16, nb_layers=1, input_mean=mean, input_scale=std)


def test_open_unmix_trains_and_separates(tiny_umx):
    net = tiny_umx
    torch.manual_seed(1)
    t = 4096 * 8
    stems = torch.rand(2, 4, 2, 1) * torch.randn(2, 4, 2, t) * 0.1
    mix = stems.sum(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = net.loss(mix, stems)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    est = net(mix)
    assert est.shape[:4] == (2, 4, 2, 2049) and torch.all(est >= 0)  # magnitudes
    with torch.no_grad():
        audio = net.separator(niter=1)(mix[:1])
    assert audio.shape == (1, 4, 2, t)
    # Wiener filtering keeps the estimates inside the mixture: they sum to it closely.
    assert float(torch.mean((audio.sum(1) - mix[:1]) ** 2)) < 0.05 * float(torch.mean(mix[:1] ** 2))


def test_fit_writes_a_curve_and_weights_and_stops_on_budget(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Conv1d(3, 3, 1)
    target = torch.randn(3, 3)
    data = [(x, torch.einsum("ij,bjt->bit", target, x)) for x in torch.randn(20, 4, 3, 8)]
    calls = []

    def validate(model):
        with torch.no_grad():
            x, y = data[0]
            err = float(torch.mean((model(x) - y) ** 2))
        calls.append(err)
        return {"sdr": -10 * np.log10(err + 1e-12), "stems": {}}

    figures = fit(net, lambda m, x, y: torch.mean((m(x) - y) ** 2), lambda epoch: data, budget_seconds=60,
                  eval_every=1e9, validate=validate, out_dir=tmp_path, lr=0.05, max_steps=50, clock="wall",
                  log=lambda s: None)
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert figures["steps"] == 50 and figures["epochs"] == 3 and figures["examples"] == 200
    assert [r["steps"] for r in curve] == [0, 50] and curve[-1]["val_sdr"] > curve[0]["val_sdr"]
    assert figures["best_val_sdr"] == pytest.approx(curve[-1]["val_sdr"])
    best = load_file(str(tmp_path / "best.safetensors"))
    torch.testing.assert_close(best["weight"], net.weight.detach())
    # A zero budget trains nothing but still validates once and writes its figures.
    figures = fit(torch.nn.Conv1d(3, 3, 1), lambda m, x, y: torch.mean((m(x) - y) ** 2), lambda e: data,
                  budget_seconds=0, eval_every=1e9, validate=validate, out_dir=tmp_path / "zero", log=lambda s: None)
    assert figures["steps"] == 0 and (tmp_path / "zero" / "figures.json").exists()


def test_fit_resumes_a_longer_run_where_it_stopped(tmp_path):
    torch.manual_seed(0)
    data = [(x, 2 * x) for x in torch.randn(10, 4, 3, 8)]

    def run(steps):
        torch.manual_seed(0)
        return fit(torch.nn.Conv1d(3, 3, 1), lambda m, x, y: torch.mean((m(x) - y) ** 2), lambda e: data,
                   budget_seconds=60, eval_every=1e9, validate=lambda m: {"sdr": 0.0, "stems": {}},
                   out_dir=tmp_path, max_steps=steps, clock="wall", log=lambda s: None)

    assert run(6)["steps"] == 6
    figures = run(15)
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert figures["steps"] == 15 and figures["examples"] == 60
    assert [r["steps"] for r in curve] == [0, 6, 15]


def test_fit_halves_the_learning_rate_on_a_plateau_and_keeps_it_across_a_resume(tmp_path):
    data = [(x, 2 * x) for x in torch.randn(4, 4, 3, 8)]
    sdrs = iter([0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 1.0, 1.0])  # best at the 2nd and 7th validation

    def run(steps):
        torch.manual_seed(0)
        return fit(torch.nn.Conv1d(3, 3, 1), lambda m, x, y: torch.mean((m(x) - y) ** 2), lambda e: data,
                   budget_seconds=60, eval_every=1e9, validate=lambda m: {"sdr": next(sdrs), "stems": {}},
                   out_dir=tmp_path, lr=0.01, lr_patience=2, lr_factor=0.5, max_steps=steps, clock="wall",
                   log=lambda s: None)

    for steps in range(1, 9):  # one validation per run: each run resumes the last
        run(steps)
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert [r["val_sdr"] for r in curve] == [0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 1.0, 1.0]
    # Each row holds the rate its steps ran at. Two stale validations after the best at 1.0 halve it,
    # two more halve it again; a new best resets the count; the resumed optimiser carries the rate.
    assert [r["lr"] for r in curve] == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025, 0.0025])
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.00125)
