"""``walloc-audio eval``: the metrics against known answers, track screening, and a real run on a small folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from helpers import tones
from walloc_audio.tools.evaluation import run as evaluation
from walloc_audio.cli import run
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.metrics import psnr_db, si_sdr_db, snr_db
from walloc_audio.tools.evaluation.baselines import has_libopus
from walloc_audio.tools.evaluation.metrics import mel_distance, mrstft_distance
from walloc_audio.tools.evaluation.report import compare_with_opus
from walloc_audio.tools.evaluation.tracks import align, prepare_tracks
from walloc_audio.tools.training.linear_fit import paper_psnr

RATE = 44100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def music(seconds: float, start: float = 0.0) -> np.ndarray:
    """A stereo excerpt of the shipped demo clip, ``[2, T]`` float32."""
    x, rate = sf.read(DEMO_CLIP, dtype="float32", always_2d=True)
    a = int(start * rate)
    return np.ascontiguousarray(x[a : a + int(seconds * rate)].T)


def write(path, x: np.ndarray, rate: int = RATE) -> str:
    sf.write(path, np.asarray(x).T, rate, subtype="PCM_16")
    return str(path)


# ------------------------------------------------------------------ metrics


def test_snr_matches_the_noise_power(rng):
    x = tones(5.0).astype(np.float64)
    sigma = 0.02
    y = x + sigma * rng.standard_normal(x.shape)
    expected = 10 * math.log10(np.mean(x**2) / sigma**2)
    assert abs(snr_db(x, y) - expected) < 0.1
    assert snr_db(x, x) == math.inf


def test_si_sdr_ignores_gain_but_not_noise(rng):
    x = tones(2.0).astype(np.float64)
    y = x + 0.03 * rng.standard_normal(x.shape)
    base = si_sdr_db(x, y)
    assert si_sdr_db(x, 0.5 * y) == pytest.approx(base, abs=1e-9)
    assert si_sdr_db(x, 0.5 * x) > 200  # a pure gain is no distortion at all (rounding error only)
    assert snr_db(x, 0.5 * x) == pytest.approx(10 * math.log10(4), abs=1e-9)  # while SNR counts it
    assert abs(base - snr_db(x, y)) < 0.5  # zero-mean signals: SI-SDR ~ SNR for small white noise
    assert si_sdr_db(x, x + 0.1 * rng.standard_normal(x.shape)) < base - 10


def test_psnr_full_scale_and_the_paper_convention():
    x = tones(1.0).astype(np.float64)
    y = x + 0.01  # MSE exactly 1e-4
    assert psnr_db(x, y) == pytest.approx(40.0, abs=1e-9)
    # the paper scales the zero-mean clip's peak to 0.5, so the error by 0.5 / peak too
    peak = np.abs(x - x.mean()).max()
    assert paper_psnr(x, y) == pytest.approx(psnr_db(x, y) - 20 * math.log10(0.5 / peak), abs=1e-6)


def test_spectral_distances_are_zero_for_identical_signals_and_grow_with_noise(rng):
    x = music(2.0, start=3.0)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    assert mrstft_distance(x, x) == 0.0
    assert mel_distance(x, x, RATE) == 0.0
    small, large = x + 0.003 * noise, x + 0.03 * noise
    assert 0 < mrstft_distance(x, small) < mrstft_distance(x, large)
    assert 0 < mel_distance(x, small, RATE) < mel_distance(x, large, RATE)


def test_align_undoes_a_known_delay():
    x = music(2.0, start=1.0)
    late = np.pad(x, ((0, 0), (37, 0)))[:, : x.shape[1]]
    y = align(x, late)
    assert y.shape == x.shape
    assert snr_db(x[:, :-100], y[:, :-100]) > 60
    assert align(x, x[:, :-5]).shape == x.shape  # a short decode is padded, not shifted


def test_matched_bitrate_interpolates_opus_and_refuses_to_extrapolate():
    opus = [{"kind": "opus", "model": "opus", "kbps": k, "snr_db": s, "psnr_paper_db": s + 20}
            for k, s in ((20.0, 10.0), (40.0, 14.0))]
    inside = {"kind": "walloc", "model": "m", "kbps": 30.0, "snr_db": 15.0, "psnr_paper_db": 33.0}
    outside = {"kind": "walloc", "model": "m", "kbps": 50.0, "snr_db": 15.0, "psnr_paper_db": 33.0}
    compare_with_opus(opus + [inside, outside])
    assert inside["delta_snr_vs_opus_db"] == pytest.approx(3.0)  # Opus at 30 kbps: 12 dB
    assert inside["delta_psnr_paper_vs_opus_db"] == pytest.approx(1.0)
    assert outside["delta_snr_vs_opus_db"] is None and outside["delta_psnr_paper_vs_opus_db"] is None


def test_tracks_are_screened_with_reasons(tmp_path):
    files = [
        write(tmp_path / "mono.wav", music(1.5)[:1]),
        write(tmp_path / "short.wav", music(0.5)),
        write(tmp_path / "silent.wav", np.zeros((2, RATE * 2))),
        write(tmp_path / "three.wav", np.concatenate([music(1.2), music(1.2)[:1]])),
        str(tmp_path / "missing.wav"),
        write(tmp_path / "long.wav", music(3.0)),
    ]
    work = tmp_path / "work"
    work.mkdir()
    tracks, skipped = prepare_tracks(files, RATE, 2.0, str(work))
    assert [t.path for t in tracks] == [files[0], files[-1]]
    mono = tracks[0].read()
    assert mono.shape == (2, int(1.5 * RATE)) and np.array_equal(mono[0], mono[1])
    assert tracks[1].samples == 2 * RATE  # cropped by --seconds
    reasons = {s["path"]: s["reason"] for s in skipped}
    assert "too short" in reasons[files[1]]
    assert reasons[files[2]] == "silent"
    assert "3 channels" in reasons[files[3]]
    assert "unreadable" in reasons[files[4]]


# ------------------------------------------------------------------ end to end


def test_eval_on_a_small_folder(tmp_path, capsys):
    src = tmp_path / "music"
    (src / "sub").mkdir(parents=True)
    write(src / "a.wav", music(2.5, start=0.5))
    write(src / "sub" / "b.flac", music(2.0, start=5.0))
    (src / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    write(src / "quiet.wav", np.zeros((2, 2 * RATE)))
    out = tmp_path / "report"
    code = run(["eval", str(src), "--models", "stereo-5x-linear", "--opus-kbps", "32,64", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "stereo-5x-linear" in stdout and "kbps" in stdout
    result = json.loads((out / "results.json").read_text())
    assert len(result["tracks"]) == 2
    assert {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in result["skipped"]}.keys() == {"broken.wav", "quiet.wav"}
    assert all(s["reason"] for s in result["skipped"])
    assert result["total_seconds"] == pytest.approx(4.5, abs=0.01)
    codec = [p for p in result["points"] if p["kind"] == "walloc"]
    assert len(codec) == 1 and codec[0]["model"] == "stereo-5x-linear" and codec[0]["tracks"] == 2
    assert codec[0]["kbps"] > 0 and codec[0]["snr_db"] > 5 and codec[0]["bits_per_latent"] > 0
    assert codec[0]["dimension_reduction"] == pytest.approx(4.741, abs=0.01)
    flac = [p for p in result["points"] if p["kind"] == "flac"]
    assert len(flac) == 1 and flac[0]["kbps"] > codec[0]["kbps"]
    # The reference scheme (compander + WebP on the same PCA latents) is in by default, four spreads.
    reference = [p for p in result["points"] if p["kind"] == "reference"]
    assert [p["setting"] for p in reference] == ["σ2", "σ1", "σ0.5", "σ0.25"]  # sorted by kbps
    assert all(p["kbps"] > 0 and p["psnr_paper_db"] > 20 for p in reference)
    assert "rate_vs_reference" in codec[0] and "--reference-sigmas" in result["command"]
    opus = [p for p in result["points"] if p["kind"] == "opus"]
    if has_libopus():
        assert len(opus) == 2
        assert all(p["kbps"] > 0 for p in opus)
        assert max(opus, key=lambda p: p["kbps"])["snr_db"] > 10  # aligned: no delay left
        assert "delta_snr_vs_opus_db" in codec[0]
    else:
        assert not opus and result["notes"]
    md = (out / "results.md").read_text()
    assert "2 tracks" in md and "vs Opus" in md and "walloc-audio eval" in md
    for name in ("rd.png", "spectrogram.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_eval_with_nothing_usable_fails_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["eval", str(empty), "--models", "stereo-5x-linear", "--out", str(tmp_path / "o")]) != 0
    assert "no usable audio" in capsys.readouterr().err
    write(empty / "quiet.wav", np.zeros((2, 2 * RATE)))
    assert run(["eval", str(empty), "--models", "stereo-5x-linear", "--no-opus", "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "no usable audio" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_step_scales_trade_rate_for_quality(tmp_path, capsys):
    write(tmp_path / "a.wav", music(1.5, start=2.0))
    args = ["eval", str(tmp_path / "a.wav"), "--models", "stereo-5x-linear", "--step-scales", "1,2", "--no-opus",
            "--out", str(tmp_path / "o")]
    code = run(args)
    err = capsys.readouterr().err
    assert code == 0, err
    points = json.loads((tmp_path / "o" / "results.json").read_text())["points"]
    v1 = [p for p in points if p["kind"] == "walloc" and p["setting"].startswith("v1")]
    assert [p["setting"] for p in points if p["kind"] == "walloc" and p not in v1] == ["Q5"]  # v2 by default
    fine, coarse = sorted(v1, key=lambda p: p["step_scale"])
    assert (fine["step_scale"], coarse["step_scale"]) == (1.0, 2.0)
    assert coarse["kbps"] < fine["kbps"] and coarse["snr_db"] < fine["snr_db"]
    assert coarse["delta_snr_vs_opus_db"] is None  # no Opus curve: nothing to compare with


def test_no_fill_codes_without_the_noise_fill_side_information(tmp_path, capsys):
    write(tmp_path / "a.wav", music(1.5, start=2.0))
    points = {}
    for flag in ("--fill", "--no-fill"):
        out = tmp_path / flag.strip("-")
        assert run(["eval", str(tmp_path / "a.wav"), "--models", "stereo-5x", "--no-opus", "--no-reference",
                    flag, "--out", str(out)]) == 0, capsys.readouterr().err
        result = json.loads((out / "results.json").read_text())
        (points[flag],) = [p for p in result["points"] if p["kind"] == "walloc"]
        assert ("--no-fill" in result["command"]) == (flag == "--no-fill")
    assert points["--fill"]["setting"] == "Q5" and points["--no-fill"]["setting"] == "Q5 no-fill"
    assert points["--no-fill"]["kbps"] < points["--fill"]["kbps"]  # the fill's levels cost bits


def test_missing_libopus_is_a_note_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "has_libopus", lambda: False)
    write(tmp_path / "a.wav", music(1.2))
    result = evaluation.evaluate_paths([str(tmp_path)], ["stereo-5x-linear"], out_dir=None)
    assert [p["kind"] for p in result["points"]] == ["walloc", "flac"]
    assert "libopus" in result["notes"][0] and "--no-opus" in result["command"]
    assert result["points"][0]["delta_snr_vs_opus_db"] is None
