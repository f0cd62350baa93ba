"""Smoke test: every stage of recipes/musdb18/latent_tdcn on a tiny set, so the recipe never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_musdb

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "musdb18" / "latent_tdcn"


@pytest.mark.slow
def test_all_stages_on_a_tiny_set(tmp_path):
    root = tmp_path / "musdb"
    make_musdb(root, {"Alpha - One": 4.0, "Beta - Two": 3.5}, "train")
    make_musdb(root, {"Gamma - Three": 3.0, "Delta - Four": 2.5}, "test", silent_vocals=("Delta - Four",))
    tag = "smoke"
    env = {**os.environ, "PYTHON": sys.executable}
    sets = ["training.budget_minutes=1", "training.max_steps=3", "training.samples_per_epoch=4",
            "training.batch_size=2", "training.segment_seconds=1.0", "training.progress=false",
            "masker.kwargs={n_blocks: 2, n_repeats: 1, bn_chan: 16, hid_chan: 32, skip_chan: 16}",
            "waveform.n_filters=32", "data.eval_jobs=2"]
    exp = tmp_path / "exp" / tag
    cmd = ["bash", str(RECIPE / "run.sh"), "--stage", "0", "--tag", tag, "--root", str(root), "--exp-dir", str(exp)]
    for s in sets:
        cmd += ["--set", s]
    # Everything the recipe writes stays under tmp_path (--exp-dir).
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((exp / "results.json").read_text())
    assert set(results) == {"latent", "waveform", "codec ceiling"}
    oracle = results.pop("codec ceiling")
    assert oracle["train"] is None and oracle["aggregate"]["avg"]["SDR"] > 5.0  # true stems, only coded
    for m in results.values():
        assert m["train"]["steps"] == 3
        agg = m["aggregate"]
        assert agg["vocals"]["excluded_silent"] == 1  # the silent reference is not scored
        assert all(isinstance(agg[s]["SDR"], float) for s in ("drums", "bass", "other", "vocals"))
    text = (exp / "results.md").read_text()
    assert "not comparable to published MUSDB18" in text and (exp / "sdr.svg").exists()
    assert (exp / "conf.yml").exists() and (exp / "cache" / "train" / "index.json").exists()
    # Rerunning a finished stage resumes instead of starting over.
    r = subprocess.run(cmd[:2] + ["--stage", "1", "--stop-stage", "1", "--tag", tag, "--exp-dir", str(exp)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "up to date" in r.stdout
    # A longer budget on the same tag resumes training from checkpoints/last.ckpt (step 3 -> 5).
    resume = cmd[:2] + ["--stage", "2", "--stop-stage", "2", "--tag", tag, "--root", str(root), "--exp-dir", str(exp)]
    for s in sets[:1] + ["training.max_steps=5"] + sets[2:]:
        resume += ["--set", s]
    r = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for kind in ("latent", "waveform"):
        figures = json.loads(next(exp.rglob(f"{kind}*/train_figures.json")).read_text())
        assert figures["steps"] == 5, figures
