"""The walloc-audio CLI end to end: real music round trip, formats, and every bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import make_model, tones
from walloc_audio.cli import run
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.pretrained import save_model

TINY = "tiny-test"


@pytest.fixture(autouse=True)
def tiny_model(tmp_path_factory, monkeypatch):
    """A small J=4 model in a private registry folder, searched before the shipped models."""
    folder = tmp_path_factory.getbasetemp() / "models"
    if not (folder / f"{TINY}.json").exists():
        m = make_model(J=4, step=3e-3)
        save_model(folder, TINY, m.codec, m.coder.probabilities)
    monkeypatch.setenv("WALLOC_AUDIO_MODELS", str(folder))
    return folder


def cli(capsys, *args) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("walloc-audio: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    return 10 * np.log10((x.astype(np.float64) ** 2).sum() / ((y - x).astype(np.float64) ** 2).sum())


def write(path: Path, x: np.ndarray, rate: int = 44100, subtype: str = "PCM_16") -> Path:
    sf.write(path, x.T, rate, subtype=subtype)
    return path


def test_real_music_round_trip_with_the_default_model(tmp_path, capsys):
    wlc, wav = tmp_path / "demo.wlc", tmp_path / "demo.wav"
    code, _, err = cli(capsys, "encode", DEMO_CLIP, wlc)
    assert code == 0, err
    assert "kbps" in err
    code, out, _ = cli(capsys, "info", wlc)
    assert code == 0 and "stereo-5x-linear " in out and "kbps" in out  # the default: the linear 5x model
    code, _, err = cli(capsys, "decode", wlc, wav, "--subtype", "FLOAT")
    assert code == 0, err
    x, rate = sf.read(DEMO_CLIP, dtype="float32")
    y, rate_y = sf.read(wav, dtype="float32")
    assert rate_y == rate and y.shape == x.shape
    # Dimension reduction 4.74 keeps ~98.5% of the energy of music: SNR is bounded by
    # that truncation (~18-20 dB); require a margin below the measured figure.
    assert snr_db(x, y) > 12
    kbps = 8 * wlc.stat().st_size / (x.shape[0] / rate) / 1000
    assert 10 < kbps < 120


def test_models_lists_shipped_and_extra(capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0 and "stereo-5x-linear" in out and TINY in out
    # The shipped separator's card gives its weights' whole training (a continued run's included).
    assert re.search(r"tdcn-stereo-5x-linear.*\d+\.\d\d dB.*\d+ min, \d+ steps", out)


def test_models_card_survives_odd_separator_metadata(tmp_path, monkeypatch, capsys):
    from safetensors.numpy import save_file

    odd = {"odd-list": "[1, 2]", "odd-types": json.dumps({"test": {"avg": {"SDR": "high"}}, "training": [],
                                                          "weights_at": {"total_train_seconds": "long"}}),
           "odd-nan": json.dumps({"test": {"avg": {"SDR": float("nan")}}, "training": {"train_seconds": 60}})}
    for name, extra in odd.items():
        save_file({"w": np.zeros(1, np.float32)}, str(tmp_path / f"{name}.safetensors"),
                  metadata={"codec": "stereo-5x-linear", "extra": extra})
    monkeypatch.setenv("WALLOC_AUDIO_SEPARATORS", str(tmp_path))
    code, out, err = cli(capsys, "models")
    assert code == 0 and "Traceback" not in err
    assert all(name in out for name in odd) and "1 min, ? steps" in out


def test_resampling_and_mono_are_restored(tmp_path, capsys):
    x = tones(0.5, rate=48000)[:1]  # mono, 48 kHz
    src = write(tmp_path / "mono48.wav", x, 48000)
    assert cli(capsys, "encode", "-m", TINY, src, tmp_path / "m.wlc")[0] == 0
    code, out, _ = cli(capsys, "info", tmp_path / "m.wlc")
    assert "48000 Hz, 1 ch, mode mono" in out
    assert cli(capsys, "decode", tmp_path / "m.wlc", tmp_path / "m.flac")[0] == 0
    y, rate = sf.read(tmp_path / "m.flac", dtype="float32", always_2d=True)
    assert rate == 48000 and y.shape[1] == 1
    assert abs(y.shape[0] - x.shape[1]) <= 2
    n = min(y.shape[0], x.shape[1])
    assert snr_db(x[0, 1000 : n - 1000], y[1000 : n - 1000, 0]) > 15


def test_multichannel_needs_downmix(tmp_path, capsys):
    x = np.concatenate([tones(0.2), tones(0.2)[:1]])  # 3 channels
    src = write(tmp_path / "three.wav", x)
    code, _, err = cli(capsys, "encode", "-m", TINY, src, tmp_path / "t.wlc")
    assert code == 4
    one_line_error(err, "3 channels", "--downmix")
    assert not (tmp_path / "t.wlc").exists()
    assert cli(capsys, "encode", "-m", TINY, "--downmix", src, tmp_path / "t.wlc")[0] == 0


def test_folder_with_jobs(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for i in range(3):
        write(tmp_path / "in" / f"s{i}.wav", tones(0.3, seed=i))
    code, _, err = cli(capsys, "encode", "-m", TINY, "-j", "2", tmp_path / "in", "--out-dir", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s0.wlc", "s1.wlc", "s2.wlc"]
    code, _, err = cli(capsys, "decode", "-j", "2", tmp_path / "out", "--out-dir", tmp_path / "out", "--format", "flac")
    assert code == 0, err
    assert len(list((tmp_path / "out").glob("*.flac"))) == 3


def test_stdin_and_stdout(tmp_path):
    exe = [sys.executable, "-m", "walloc_audio"]
    env = {**os.environ}
    src = write(tmp_path / "a.wav", tones(0.3))
    wlc = subprocess.run(exe + ["encode", "-m", TINY, "-", "-"], input=src.read_bytes(), capture_output=True,
                         env=env, check=True).stdout
    assert wlc[:4] == b"\x89WLC"
    wav = subprocess.run(exe + ["decode", "-", "-"], input=wlc, capture_output=True, env=env, check=True).stdout
    (tmp_path / "b.wav").write_bytes(wav)
    y, _ = sf.read(tmp_path / "b.wav", dtype="float32")
    x, _ = sf.read(src, dtype="float32")
    assert abs(len(y) - len(x)) <= 2 and snr_db(x[: len(y)], y[: len(x)]) > 15


def test_existing_output_and_input_protection(tmp_path, capsys):
    src = write(tmp_path / "a.wav", tones(0.2))
    out = tmp_path / "a.wlc"
    assert cli(capsys, "encode", "-m", TINY, src, out)[0] == 0
    before = out.read_bytes()
    code, _, err = cli(capsys, "encode", "-m", TINY, src, out)
    assert code == 6
    one_line_error(err, "exists", "-f")
    assert cli(capsys, "encode", "-m", TINY, "-f", src, out)[0] == 0
    assert out.read_bytes() == before  # deterministic
    code, _, err = cli(capsys, "encode", "-m", TINY, "-f", src, src)  # an audio name for a .wlc: refused first
    assert code == 2 and sf.read(src)[0].shape[0] > 0
    usage_error(err, "does not end in .wlc")
    odd = tmp_path / "odd.wlc"  # audio under a .wlc name, encoded onto itself
    odd.write_bytes(src.read_bytes())
    code, _, err = cli(capsys, "encode", "-m", TINY, "-f", odd, odd)
    assert code == 6 and odd.read_bytes() == src.read_bytes()
    one_line_error(err, "input")


def _patch_model_name(data: bytes, name: str) -> bytes:
    length = struct.unpack("<I", data[10:14])[0]
    header = data[18 : 18 + length].replace(b'"model": "tiny-test"', f'"model": "{name}"'.encode())
    return data[:10] + struct.pack("<II", len(header), zlib.crc32(header)) + header + data[18 + length :]


def test_model_not_installed(tmp_path, capsys):
    src = write(tmp_path / "a.wav", tones(0.2))
    assert cli(capsys, "encode", "-m", TINY, src, tmp_path / "a.wlc")[0] == 0
    (tmp_path / "b.wlc").write_bytes(_patch_model_name((tmp_path / "a.wlc").read_bytes(), "studio-9000"))
    code, _, err = cli(capsys, "decode", tmp_path / "b.wlc", tmp_path / "b.wav")
    assert code == 5
    one_line_error(err, "studio-9000", "not installed")
    # Same name, other weights: the hash is named.
    data = (tmp_path / "a.wlc").read_bytes()
    length = struct.unpack("<I", data[10:14])[0]
    header = data[18 : 18 + length]
    sha = header.split(b'"model_sha256": "')[1][:64]
    header = header.replace(sha, b"0" * 64)
    (tmp_path / "c.wlc").write_bytes(data[:10] + struct.pack("<II", len(header), zlib.crc32(header)) + header
                                     + data[18 + length :])
    code, _, err = cli(capsys, "decode", tmp_path / "c.wlc", tmp_path / "c.wav")
    assert code == 5
    one_line_error(err, "0000000000000000", TINY)
    assert not (tmp_path / "b.wav").exists() and not (tmp_path / "c.wav").exists()


@pytest.mark.parametrize("kind", ["text", "empty", "nan", "missing"])
def test_bad_audio_input(tmp_path, capsys, kind):
    src = tmp_path / "in.wav"
    if kind == "text":
        src = tmp_path / "notes.txt"
        src.write_text("this is not audio\n" * 50)
    elif kind == "empty":
        write(src, np.zeros((2, 0), dtype=np.float32))
    elif kind == "nan":
        x = tones(0.5)
        x[0, 11025] = np.nan
        write(src, x, subtype="FLOAT")
    code, _, err = cli(capsys, "encode", "-m", TINY, src, tmp_path / "o.wlc")
    assert code == 4
    one_line_error(err, *(["0.250"] if kind == "nan" else []))
    assert not (tmp_path / "o.wlc").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_clipping_input_is_clipped_and_reported(tmp_path, capsys):
    x = tones(0.3, amp=1.5)
    src = write(tmp_path / "loud.wav", x, subtype="FLOAT")
    code, _, err = cli(capsys, "encode", "-m", TINY, src, tmp_path / "l.wlc")
    assert code == 0 and "clipped" in err
    assert cli(capsys, "decode", tmp_path / "l.wlc", tmp_path / "l.wav", "--subtype", "FLOAT")[0] == 0
    y, _ = sf.read(tmp_path / "l.wav", dtype="float32")
    assert np.abs(y).max() < 1.1  # clipped to full scale, not wrapped around
    assert snr_db(np.clip(x, -1, 1).T, y) > 10


def test_bad_wlc_inputs(tmp_path, capsys):
    src = write(tmp_path / "a.wav", tones(0.2))
    assert cli(capsys, "encode", "-m", TINY, src, tmp_path / "a.wlc")[0] == 0
    data = (tmp_path / "a.wlc").read_bytes()
    cases = {"trunc.wlc": data[: len(data) // 2], "flip.wlc": data[:200] + bytes([data[200] ^ 1]) + data[201:],
             "magic.wlc": b"RIFF" + data[4:], "song.wlc": src.read_bytes()}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        code, _, err = cli(capsys, "decode", tmp_path / name, tmp_path / "out.wav")
        assert code == 3, (name, err)
        one_line_error(err)
        assert not (tmp_path / "out.wav").exists()
    code, _, err = cli(capsys, "info", tmp_path / "trunc.wlc")
    assert code == 3


def test_missing_folder_read_only_and_full_disk(tmp_path, capsys):
    src = write(tmp_path / "a.wav", tones(1.0))
    code, _, err = cli(capsys, "encode", "-m", TINY, src, tmp_path / "nope" / "a.wlc")
    assert code == 6
    one_line_error(err, "does not exist")
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    for opts, message in [("ro,size=1m", "not writable"), ("size=16k", "disk full")]:
        mnt = tmp_path / opts.split(",")[0].replace("=", "")
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)]).returncode:
            pytest.skip("cannot mount tmpfs here")
        try:
            code, _, err = cli(capsys, "encode", "-m", TINY, src, mnt / "a.wlc")
            assert code == 6, err
            one_line_error(err, message)
            assert list(mnt.iterdir()) == []  # no partial output, no temporary left
        finally:
            subprocess.run(["umount", str(mnt)])


def _wait_for_output_file(proc: subprocess.Popen, folder: Path, timeout: float = 60) -> None:
    """Until ``proc`` holds a file of ``folder`` open for writing (its unnamed temporary, or a .part file)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                if target.startswith(str(folder)) and ("(deleted)" in target or ".part" in target):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("the child never opened its output")


def _long_input(folder: Path) -> Path:
    """Two minutes of tones: long enough to interrupt an encode half-way."""
    src = folder / "long.wav"
    with sf.SoundFile(src, "w", 44100, 2, "PCM_16") as f:
        for _ in range(120):
            f.write(tones(1.0).T)
    return src


@pytest.mark.slow
def test_kill_9_leaves_no_file_at_all(tmp_path):
    """SIGKILL runs no handler: only an unnamed temporary (O_TMPFILE) leaves nothing."""
    src = _long_input(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "walloc_audio", "encode", "-m", TINY, str(src),
                             str(tmp_path / "long.wlc")], stderr=subprocess.DEVNULL)
    _wait_for_output_file(proc, tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_ctrl_c_leaves_no_partial_output(tmp_path):
    src = _long_input(tmp_path)
    out = tmp_path / "long.wlc"
    proc = subprocess.Popen([sys.executable, "-m", "walloc_audio", "encode", "-m", TINY, str(src), str(out)],
                            stderr=subprocess.PIPE, env=os.environ.copy(),
                            # A shell's background jobs ignore SIGINT, and Python keeps an
                            # ignored SIGINT ignored: restore the default like a terminal has.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_output_file(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"interrupted" in err and b"Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_bench_reports_every_figure(tmp_path, capsys):
    import json

    out = tmp_path / "bench.json"
    assert run(["bench", "--models", "stereo-5x-ll-linear", "--seconds", "1", "--minutes", "0.05",
                "--json", str(out)]) == 0
    row = json.loads(out.read_text())["models"][0]
    assert row["latency_samples"] == 447 and row["encode_msps_1t"] > 0 and row["decode_x_rt_1t"] > 1
    assert row["fill"]  # timed as `encode` writes files
    # A 3-s file: the CLI's start-up dominates, so no speed claim here (docs/benchmarks.md has the real runs).
    assert 20 < row["encode_peak_mb"] < 4000 and row["file_decode_x_rt"] > 0
    assert "stereo-5x-ll-linear" in capsys.readouterr().out
    assert run(["bench", "--models", "nope", "--minutes", "0"]) != 0


def test_encode_quality_and_bitrate_options(tmp_path, capsys):
    src = tmp_path / "a.wav"
    sf.write(src, tones(1.0).T, 44100)
    sizes = []
    for q in ("7", "3"):
        dst = tmp_path / f"a{q}.wlc"
        assert run(["encode", str(src), str(dst), "-Q", q, "-q"]) == 0
        assert run(["decode", str(dst), str(tmp_path / f"a{q}.wav"), "-q"]) == 0
        sizes.append(dst.stat().st_size)
    assert sizes[0] > sizes[1]
    capsys.readouterr()
    # Bad values and contradictions: one line each, no output file.
    for args, what in [(["-Q", "11"], "--quality"), (["-Q", "nan"], "--quality"), (["-b", "0"], "--bitrate"),
                       (["-b", "-3"], "--bitrate"), (["-Q", "5", "-b", "20"], "not both")]:
        assert run(["encode", str(src), str(tmp_path / "b.wlc"), *args]) != 0
        msg = capsys.readouterr().err.strip()
        assert what in msg and len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
        assert not (tmp_path / "b.wlc").exists()
    # An impossible target is clamped with a one-line warning, and the file is made.
    assert run(["encode", str(src), str(tmp_path / "c.wlc"), "-b", "1e9", "-q"]) == 0
    warning = capsys.readouterr().err.strip()
    assert "warning" in warning and "using" in warning and len(warning.splitlines()) == 1
    assert (tmp_path / "c.wlc").stat().st_size > 0


def usage_error(err: str, *needles: str) -> None:
    """A usage error: one error line, then one line that says where the usage is."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("walloc-audio: error:") and "--help" in lines[1], err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("args,needle", [
    (["decode"], "Missing argument"), (["encode", "--bogus", "x"], "--bogus"), (["frobnicate"], "frobnicate"),
    (["info"], "Missing argument"), (["encode", "-Q", "abc", "x.wav"], "--quality"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, args, needle):
    code, _, err = cli(capsys, *args)
    assert code == 2
    usage_error(err, needle)


def test_version_and_exit_codes_in_help(capsys):
    from walloc_audio import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"walloc-audio {__version__}"
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "Exit codes" in out and "130" in out


def test_encode_refuses_an_audio_name_for_its_output(tmp_path, capsys):
    a, b = write(tmp_path / "a.wav", tones(0.5)), write(tmp_path / "b.wav", tones(0.5, seed=1))
    before = b.read_bytes()
    code, _, err = cli(capsys, "encode", a, b, "-m", TINY, "-f")
    assert code == 2 and b.read_bytes() == before
    usage_error(err, "does not end in .wlc")


def test_decode_default_name_never_replaces_the_original(tmp_path, capsys):
    src = write(tmp_path / "song.wav", tones(0.5))
    before = src.read_bytes()
    assert cli(capsys, "encode", src, "-m", TINY)[0] == 0
    for extra in ([], ["-f"]):
        code, _, err = cli(capsys, "decode", tmp_path / "song.wlc", *extra)
        assert code == 2 and src.read_bytes() == before
        usage_error(err, "song.wav exists")
    code, _, err = cli(capsys, "decode", tmp_path / "song.wlc", tmp_path / "x.wlc")
    assert code == 2 and not (tmp_path / "x.wlc").exists()
    src.unlink()
    assert cli(capsys, "decode", tmp_path / "song.wlc")[0] == 0 and src.exists()  # nothing to replace: the default


def test_info_json_and_stdin(tmp_path):
    import json

    src = write(tmp_path / "a.wav", tones(1.0))
    env = dict(os.environ)
    assert subprocess.run([sys.executable, "-m", "walloc_audio", "encode", str(src), "-m", TINY], env=env).returncode == 0
    wlc = tmp_path / "a.wlc"
    r = subprocess.run([sys.executable, "-m", "walloc_audio", "info", "--json", "-"], input=wlc.read_bytes(),
                       capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["bytes"] == wlc.stat().st_size and d["samples"] == 44100 and d["header"]["model"] == TINY
    assert abs(d["kbps"] - 8 * wlc.stat().st_size / 1000) < 1e-6
    r = subprocess.run([sys.executable, "-m", "walloc_audio", "info", "-"], input=b"WLC-not-really", capture_output=True,
                       env=env)
    assert r.returncode == 3 and b"Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
