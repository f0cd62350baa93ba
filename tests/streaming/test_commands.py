"""`walloc-audio stream` / `listen` end to end, through real PulseAudio devices and sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from walloc_audio.audio import read_audio

EXE = [sys.executable, "-m", "walloc_audio"]


def run(*args, timeout=60, **kw):
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def peak_hz(x: np.ndarray, rate: int) -> float:
    mono = x.mean(axis=0) if x.ndim == 2 else x
    spec = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return float(np.fft.rfftfreq(mono.size, 1 / rate)[spec.argmax()])


def tone_snr(x: np.ndarray, rate: int, freq: float, window: int = 2048) -> float:
    """Median over windows of (sine fit energy / residual energy), in dB.

    PulseAudio's sine source delivers in bursts, so the phase jumps now and then:
    each window gets its own least-squares sine, and the median ignores the few
    windows that straddle a jump.
    """
    t = np.arange(window) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    snrs = []
    for ch in np.atleast_2d(x):
        for i in range(0, ch.size - window, window):
            seg = ch[i : i + window]
            coef, *_ = np.linalg.lstsq(basis, seg, rcond=None)
            fit = basis @ coef
            snrs.append(10 * np.log10((fit**2).sum() / max(((seg - fit) ** 2).sum(), 1e-20)))
    return float(np.median(snrs))


def test_stream_records_the_sine_source_through_the_codec(pulse, tmp_path):
    wlc = tmp_path / "mic.wlc"
    r = run("stream", "--seconds", 2, "--out", wlc, "-q")
    assert r.returncode == 0, r.stderr
    assert run("decode", wlc, tmp_path / "mic.wav", "--subtype", "FLOAT").returncode == 0
    y, rate = read_audio(tmp_path / "mic.wav")
    assert abs(y.shape[1] - 2 * rate) <= 1
    body = y[:, rate // 4 :]  # skip the source's start-up and the transform's warm-up
    assert abs(peak_hz(body, rate) - 440) < 3
    # PulseAudio's sine source is a pure 440 Hz tone; the codec keeps it to within:
    assert tone_snr(body, rate, 440.0) > 20


def test_loopback_through_the_null_sink_monitor(pulse, tmp_path):
    # A 1 kHz tone file -> .wlc -> `listen` plays it into the null sink while
    # `stream` records the sink's monitor: real devices in both directions.
    rate = 44100
    t = np.arange(4 * rate) / rate
    sf.write(tmp_path / "tone.wav", np.stack([0.4 * np.sin(2 * np.pi * 1000 * t)] * 2, axis=1), rate)
    assert run("encode", tmp_path / "tone.wav", tmp_path / "tone.wlc", "-q").returncode == 0
    rec = subprocess.Popen(EXE + ["stream", "--input-device", "pulse:nullsink.monitor", "--seconds", "3",
                                  "--out", str(tmp_path / "loop.wlc"), "-q"], stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    play = run("listen", tmp_path / "tone.wlc", "--output-device", "pulse:nullsink", "-q")
    assert play.returncode == 0, play.stderr
    _, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    assert run("decode", tmp_path / "loop.wlc", tmp_path / "loop.wav").returncode == 0
    y, rate = read_audio(tmp_path / "loop.wav")
    assert np.abs(y).max() > 0.05, "nothing came back through the monitor"
    assert abs(peak_hz(y, rate) - 1000) < 5  # silence around the tone adds no energy


def test_stream_over_udp_to_listen(pulse, tmp_path):
    port = 47000 + os.getpid() % 1000
    out = tmp_path / "rx.wav"
    rx = subprocess.Popen(EXE + ["listen", f"udp://:{port}", "--no-play", "--out", str(out), "--timeout", "20", "-q"],
                          stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    tx = run("stream", "--seconds", 2, "--send", f"udp://127.0.0.1:{port}", "-q")
    assert tx.returncode == 0, tx.stderr
    _, err = rx.communicate(timeout=60)
    assert rx.returncode == 0, err
    y, rate = read_audio(out)
    assert abs(y.shape[1] - 2 * rate) <= 1
    assert abs(peak_hz(y[:, rate // 4 :], rate) - 440) < 3


def test_ctrl_c_finishes_the_recording(pulse, tmp_path):
    wlc = tmp_path / "live.wlc"
    proc = subprocess.Popen(EXE + ["stream", "--out", str(wlc), "-q"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 30
    while time.time() < deadline and not [p for p in tmp_path.iterdir() if p.stat().st_size > 2000]:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    r = run("decode", wlc, tmp_path / "live.wav")
    assert r.returncode == 0, r.stderr
    y, rate = read_audio(tmp_path / "live.wav")
    assert y.shape[1] > 0 and abs(peak_hz(y, rate) - 440) < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.wav", "live.wlc"]


def test_missing_device_is_one_line(pulse, tmp_path):
    r = run("stream", "--seconds", 1, "--out", tmp_path / "x.wlc", "--input-device", "no-such-microphone")
    assert r.returncode == 8
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("walloc-audio")]
    assert len(lines) == 1 and "no-such-microphone" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "x.wlc").exists()


def test_list_devices(pulse):
    r = run("stream", "--list-devices")
    assert r.returncode == 0 and "pulse" in r.stdout


def test_streamed_packets_equal_walloc_audio_encode(tmp_path):
    # `stream` reading a file-like source is not possible (it reads a device), so compare the
    # processor the stream command uses with the CLI encoder at the same settings.
    from streaming.processor import StreamEncoder
    from walloc_audio.pretrained import DEFAULT_MODEL, load_model

    rate = 44100
    x = (0.3 * np.sin(2 * np.pi * 330 * np.arange(rate) / rate)).astype(np.float32)
    sf.write(tmp_path / "a.wav", np.stack([x, x[::-1]], axis=1), rate, subtype="FLOAT")
    from walloc_audio.noisefill import FillSpec

    for flag, fill in (("--no-fill", None), ("--fill", FillSpec())):
        r = run("encode", tmp_path / "a.wav", tmp_path / "a.wlc", "--frames-per-packet", 2, "--group-packets", 1,
                flag, "-q", "-f")
        assert r.returncode == 0, r.stderr
        enc = StreamEncoder(load_model(DEFAULT_MODEL), 2, fill=fill)  # what `encode` used
        enc.prepare(rate, 2)
        y = np.stack([x, x[::-1]])
        parts = [enc.header_bytes()]
        for i in range(0, rate, 777):
            parts += enc.process(y[:, i : i + 777])
        parts += enc.finish()
        assert b"".join(parts) == (tmp_path / "a.wlc").read_bytes(), flag

