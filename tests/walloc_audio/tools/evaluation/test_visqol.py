"""ViSQOL in eval: known cases of the metric and the inputs it cannot judge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from walloc_audio.tools.evaluation import visqol
from walloc_audio.audio import read_audio
from walloc_audio.cli import run
from walloc_audio.demo import DEMO_CLIP

pytestmark = pytest.mark.skipif(not visqol.available(), reason="visqol-python is not installed")


@pytest.fixture(scope="module")
def clip():
    x, rate = read_audio(DEMO_CLIP)
    return x[:, : 4 * rate].astype(np.float64), rate


def _lowpass(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x, axis=1)
    spec[:, np.fft.rfftfreq(x.shape[1], 1 / rate) > cutoff] = 0
    return np.fft.irfft(spec, n=x.shape[1], axis=1)


@pytest.mark.slow
def test_identical_music_scores_near_the_top_and_a_lowpass_scores_lower(clip):
    x, rate = clip
    same, reason = visqol.score(visqol.excerpt(x, rate, 3), visqol.excerpt(x, rate, 3))
    assert reason == "" and same > 4.5
    dull, _ = visqol.score(visqol.excerpt(x, rate, 3), visqol.excerpt(_lowpass(x, rate, 3000.0), rate, 3))
    assert dull < same - 0.5, (same, dull)


def test_inputs_it_cannot_judge_give_a_reason_not_a_number(clip):
    x, rate = clip
    short = visqol.excerpt(x[:, : rate // 4], rate, 10)
    assert visqol.score(short, short) == (None, "shorter than 2 s")
    silent = np.zeros(3 * visqol.RATE)
    assert visqol.score(silent, silent) == (None, "silent reference")
    mono_8k = visqol.excerpt(x[:1, ::5], rate // 5, 2)  # mono, 8.8 kHz: resampled to 48 kHz first
    assert mono_8k.size == 2 * visqol.RATE


@pytest.mark.slow
def test_eval_reports_visqol_and_counts_skipped_clips(tmp_path, capsys):
    x, rate = read_audio(DEMO_CLIP)
    src = tmp_path / "music"
    src.mkdir()
    sf.write(src / "a.flac", x[:, rate : 4 * rate].T, rate)
    sf.write(src / "tiny.wav", x[:, : 3 * rate // 2].T, rate)  # too short for ViSQOL, fine for the rest
    out = tmp_path / "report"
    code = run(["eval", str(src), "--models", "stereo-5x-linear", "--no-opus", "--visqol", "--visqol-seconds", "3",
                "--jobs", "2", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    point = next(p for p in result["points"] if p["kind"] == "walloc")
    assert point["visqol_tracks"] == 1 and point["visqol_skipped"] == ["shorter than 2 s"]
    assert 1.0 <= point["visqol"] <= 5.0
    assert "ViSQOL" in (out / "results.md").read_text() and "--visqol" in result["command"]
    assert any("ViSQOL: 1 of 2 tracks" in n for n in result["notes"])
