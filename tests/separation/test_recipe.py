"""Smoke test: every stage of recipes/musdb18/latent_tdcn on a tiny set, so the recipe never rots."""

from __future__ import annotations

import hashlib
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
    from separation.stems import write_musdb_setup

    root = tmp_path / "musdb"
    make_musdb(root, {"Alpha - One": 4.0, "Beta - Two": 3.5, "Epsilon - Five": 3.0}, "train")
    make_musdb(root, {"Gamma - Three": 3.0, "Delta - Four": 2.5}, "test", silent_vocals=("Delta - Four",))
    write_musdb_setup(root, ["Alpha - One", "Beta - Two", "Epsilon - Five"])  # one validation track
    tag = "smoke"
    env = {**os.environ, "PYTHON": sys.executable}
    sets = ["training.budget_minutes=1", "training.max_steps=3", "training.samples_per_epoch=4",
            "training.batch_size=2", "training.segment_seconds=1.0", "training.eval_every_minutes=100",
            "masker.kwargs={n_blocks: 2, n_repeats: 1, bn_chan: 16, hid_chan: 32, skip_chan: 16}",
            "umx.hidden_size=16", "umx.nb_layers=1", "umx.stats_items=2", "shards.tracks_per_shard=1",
            "waveform.n_filters=32", "waveform.kernel_size=512", "waveform.stride=256", "data.eval_jobs=2",
            "data.val_seconds=2.0", "training.models=[latent, umx, waveform]"]
    exp = tmp_path / "exp" / tag
    cmd = ["bash", str(RECIPE / "run.sh"), "--stage", "0", "--tag", tag, "--root", str(root), "--exp-dir", str(exp)]
    for s in sets:
        cmd += ["--set", s]
    # Everything the recipe writes stays under tmp_path (--exp-dir).
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((exp / "results.json").read_text())
    assert set(results) == {"latent", "umx", "waveform", "codec ceiling", "floor: a quarter of the mixture"}
    oracle = results.pop("codec ceiling")
    floor = results.pop("floor: a quarter of the mixture")
    assert oracle["train"] is None and oracle["aggregate"]["avg"]["SDR"] > 5.0  # true stems, only coded
    assert floor["train"] is None and oracle["aggregate"]["avg"]["SDR"] > floor["aggregate"]["avg"]["SDR"]
    for name, m in results.items():
        assert m["train"]["steps"] == 3, name
        agg = m["aggregate"]
        assert agg["vocals"]["excluded_silent"] == 1  # the silent reference is not scored
        assert all(isinstance(agg[s]["SDR"], float) for s in ("drums", "bass", "other", "vocals"))
        curve = json.loads((exp / name / "curve.json").read_text())
        assert [c["steps"] for c in curve] == [0, 3] and all(c["val_sdr"] is not None for c in curve)
    text = (exp / "results.md").read_text()
    assert "not comparable to published MUSDB18" in text and (exp / "sdr.svg").exists()
    assert "polyline" in (exp / "curve.svg").read_text()
    report = json.loads((exp / "wlc" / "report.json").read_text())
    assert report["parts"]["train"]["tracks"] == 2 and report["parts"]["valid"]["tracks"] == 1
    assert report["parts"]["train"]["x_smaller_than_pcm16"] > 10
    flac = report["parts"]["train"]["flac_stem_bytes"]  # whole FLAC files: more than a header per stem
    assert flac > 8 * 4 * 1000 and report["parts"]["train"]["x_smaller_than_flac"] > 1
    # Rerunning a finished stage reuses its output instead of starting over.
    r = subprocess.run(cmd[:2] + ["--stage", "1", "--stop-stage", "1", "--tag", tag, "--exp-dir", str(exp)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "up to date" in r.stdout
    # A longer budget on the same tag resumes training where it stopped (step 3 -> 5).
    resume = cmd[:2] + ["--stage", "2", "--stop-stage", "2", "--tag", tag, "--root", str(root), "--exp-dir", str(exp)]
    for s in [x if x != "training.max_steps=3" else "training.max_steps=5" for x in sets]:
        resume += ["--set", s]
    r = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for kind in ("latent", "umx", "waveform"):
        figures = json.loads((exp / kind / "figures.json").read_text())
        assert figures["steps"] == 5, figures
    # --init starts a new run from trained weights: its first validation is theirs, and it says so.
    exp2 = tmp_path / "exp" / "init"
    exp2.mkdir()
    (exp2 / "conf.yml").write_text((exp / "conf.yml").read_text())
    (exp2 / "wlc").symlink_to(exp / "wlc")
    fit = [sys.executable, str(RECIPE / "fit.py"), "--conf", str(exp2 / "conf.yml"), "--exp", str(exp2),
           "--model", "latent", "--threads", "1"]
    # Weights of another network are refused in one line.
    r = subprocess.run(fit + ["--init", str(exp / "umx" / "last.safetensors")], capture_output=True, text=True,
                       env=env, cwd=RECIPE, timeout=600)
    assert r.returncode != 0 and "not weights of this network" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(fit + ["--init", str(exp / "latent" / "last.safetensors")], capture_output=True, text=True,
                       env=env, cwd=RECIPE, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    source = json.loads((exp / "latent" / "curve.json").read_text())[-1]
    first = json.loads((exp2 / "latent" / "curve.json").read_text())[0]
    assert first["steps"] == 0 and first["val_sdr"] == pytest.approx(source["val_sdr"], abs=1e-6)
    init = json.loads((exp2 / "latent" / "figures.json").read_text())["init"]
    assert init == {"file": "last.safetensors",
                    "sha256": hashlib.sha256((exp / "latent" / "last.safetensors").read_bytes()).hexdigest()}
    # Exported, a continued run's separator states its weights' total training, earlier runs included.
    def exported(run: Path) -> dict:
        from safetensors import safe_open

        out = tmp_path / f"{run.name}.safetensors"
        r = subprocess.run([sys.executable, str(RECIPE / "export_separator.py"), "--conf", str(run / "conf.yml"),
                            "--exp", str(run), "--out", str(out)], capture_output=True, text=True, env=env,
                           cwd=RECIPE, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        with safe_open(str(out), "np") as f:
            return json.loads(f.metadata()["extra"])["weights_at"]

    first_at = exported(exp2)
    assert first_at["total_steps"] == first_at["steps"]  # plain weights carry no history
    exp3 = tmp_path / "exp" / "again"
    exp3.mkdir()
    (exp3 / "conf.yml").write_text((exp / "conf.yml").read_text())
    (exp3 / "wlc").symlink_to(exp / "wlc")
    r = subprocess.run([sys.executable, str(RECIPE / "fit.py"), "--conf", str(exp3 / "conf.yml"), "--exp", str(exp3),
                        "--model", "latent", "--threads", "1", "--init", str(tmp_path / "init.safetensors")],
                       capture_output=True, text=True, env=env, cwd=RECIPE, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    init = json.loads((exp3 / "latent" / "figures.json").read_text())["init"]
    assert init["prior_steps"] == first_at["total_steps"]
    assert init["prior_train_seconds"] == pytest.approx(first_at["total_train_seconds"])
    again_at = exported(exp3)
    assert again_at["total_steps"] == again_at["steps"] + first_at["total_steps"]
