"""Live I/O through real devices (the private PulseAudio daemon of tests/pulse.sh), the buffer
logic of the callbacks (called directly, no device), device errors and the status panel.

Device selection for the loop-back test: the monitor of the null sink is a PulseAudio source,
not a PortAudio device (Debian's PortAudio 19.6 has no PulseAudio host API), so it is reached
as ``device="pulse:nullsink.monitor"``: the ALSA ``pulse`` device, with PULSE_SOURCE set while
the stream opens. Timing is never asserted: the sine source delivers in bursts.
"""

import io
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from streaming.live import AudioInput, AudioOutput, DeviceError, list_devices, resolve_device
from streaming.panel import LivePanel, meter

DEADLINE_S = 10.0  # generous: only a hang should hit it


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / rate)[np.argmax(spectrum)])


def tone(freq: float, rate: int, start: int, n: int, channels: int = 2) -> np.ndarray:
    t = (start + np.arange(n)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


# --- real devices ------------------------------------------------------------------------------


def test_record_default_source_is_the_440_hz_sine(pulse):
    blocks, n = [], 0
    with AudioInput(channels=2, block_size=1024) as mic:
        rate = mic.sample_rate
        deadline = time.monotonic() + DEADLINE_S
        while n < rate and time.monotonic() < deadline:  # ~1 s of audio, however bursty
            block = mic.read(timeout=0.5)
            if block is not None:
                assert block.shape[0] == 2 and block.dtype == np.float32
                blocks.append(block)
                n += block.shape[1]
        level = mic.level_db
    assert n >= rate, f"got only {n} samples from the sine source"
    x = np.concatenate(blocks, axis=1)
    assert abs(peak_hz(x[0], rate) - 440) <= 5
    assert -20 < level <= 0.1  # a loud, unclipped tone (the sine source peaks at 0.5, -6 dBFS)


def test_loopback_through_null_sink_monitor(pulse):
    """Play 1 kHz into `nullsink`, record `nullsink.monitor`: audio crosses real devices both ways."""
    rate = 44100
    env_before = os.environ.get("PULSE_SOURCE")
    recorded, n, played = [], 0, 0
    with AudioOutput("pulse:nullsink", sample_rate=rate, block_size=1024) as speaker, \
            AudioInput("pulse:nullsink.monitor", sample_rate=rate, block_size=1024) as mic:
        assert os.environ.get("PULSE_SOURCE") == env_before  # routing is only set while opening
        deadline = time.monotonic() + DEADLINE_S
        while n < rate // 2 and time.monotonic() < deadline:
            while speaker.buffered_samples < rate // 5:  # keep ~200 ms queued
                assert speaker.write(tone(1000, rate, played, 1024))
                played += 1024
            block = mic.read(timeout=0.1)
            if block is not None and mic.level_db > -20:  # skip the silence before the tone arrives
                recorded.append(block)
                n += block.shape[1]
        assert speaker.stats["output_dropped"] == 0
    assert n >= rate // 2, f"recorded only {n} samples of tone from nullsink.monitor"
    x = np.concatenate(recorded, axis=1)
    assert abs(peak_hz(x[0], rate) - 1000) <= 5
    assert abs(peak_hz(x[1], rate) - 1000) <= 5


def test_drain_waits_until_played(pulse):
    with AudioOutput(sample_rate=44100) as speaker:
        speaker.write(tone(1000, 44100, 0, 4410))
        assert speaker.drain(timeout=DEADLINE_S)
        assert speaker.buffered_samples == 0
        assert speaker.stats["underflows"] == 0  # running dry after drain() is the end, not an xrun


def test_list_and_resolve_with_a_server(pulse):
    names = [d["name"] for d in list_devices()]
    assert "pulse" in names
    assert isinstance(resolve_device(None, "input"), int)
    assert resolve_device("pulse", "output") == resolve_device(names.index("pulse"), "output")


def test_unknown_pulse_source_is_a_device_error(pulse):
    with pytest.raises(DeviceError, match="cannot open audio input device 'pulse:no-such-source'"):
        with AudioInput("pulse:no-such-source"):
            pass


# --- device errors (need no server: with no device at all they are DeviceErrors too) -------------


def test_unknown_device_is_a_device_error():
    with pytest.raises(DeviceError, match="no-such-device-xyz|no audio input device"):
        with AudioInput("no-such-device-xyz"):
            pass
    with pytest.raises(DeviceError):
        resolve_device(9999, "output")
    assert DeviceError.exit_code == 8


def test_missing_portaudio_is_a_device_error(monkeypatch):
    class NoPortAudio:  # an import hook that fails the way sounddevice does without libportaudio
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError, match="install libportaudio2"):
        list_devices()


# --- callback buffer logic, driven by hand -----------------------------------------------------


def status(**flags):
    return SimpleNamespace(**{"input_overflow": False, "output_underflow": False, **flags})


def test_output_fifo_takes_any_block_sizes_and_counts_underflows():
    out = AudioOutput(sample_rate=1000, channels=2, block_size=5, queue_seconds=0.02)  # 20 samples
    buf = np.full((5, 2), 9.0, np.float32)
    out._callback(buf, 5, None, status())
    assert np.all(buf == 0) and out.underflows == 0  # silence before playback starts is not an xrun
    x = np.arange(2 * 14, dtype=np.float32).reshape(2, 14)
    for a, b in [(0, 3), (3, 13), (13, 14)]:
        assert out.write(x[:, a:b])
    assert out.buffered_samples == 14
    assert not out.write(np.zeros((2, 7), np.float32))  # 14 + 7 > 20: dropped, not blocking
    played = []
    for _ in range(3):
        out._callback(buf, 5, None, status())
        played.append(buf.T.copy())
    y = np.concatenate(played, axis=1)
    np.testing.assert_array_equal(y[:, :14], x)
    assert np.all(y[:, 14:] == 0)
    assert out.stats == {"underflows": 1, "device_underflows": 0, "output_dropped": 1}
    out._callback(buf, 5, None, status(output_underflow=True))  # still dry: same spell, one underflow
    assert out.stats == {"underflows": 1, "device_underflows": 1, "output_dropped": 1}
    out.write(x[:, :2])
    out.drain(timeout=0)  # the producer is done: running dry now is the end of the stream
    out._callback(buf, 5, None, status())
    assert out.underflows == 1 and out.buffered_samples == 0


def test_input_queue_drops_oldest_and_counts_overflows():
    mic = AudioInput(channels=2, queue_blocks=2)
    blocks = [np.full((4, 2), i, np.float32) for i in range(3)]  # PortAudio layout [n, C]
    for i, b in enumerate(blocks):
        mic._callback(b, 4, None, status(input_overflow=(i == 0)))
        b[:] = -1  # PortAudio reuses its buffer: the queue must hold copies
    assert mic.stats == {"overflows": 1, "input_dropped": 1}
    first = mic.read(timeout=0)
    assert first.shape == (2, 4) and np.all(first == 1)
    assert np.all(mic.read(timeout=0) == 2)
    assert mic.read(timeout=0.01) is None
    assert mic.level_db == pytest.approx(20 * np.log10(2))


# --- panel -------------------------------------------------------------------------------------


def test_panel_renders_fields():
    panel = LivePanel("test", disable=True)
    panel.update(in_db=-6.0, out_db=-80.0, kbps=5.5, algo_ms=40.0, buffer_ms=12.5, sent=10, lost=1,
                 xruns={"overflows": 0, "underflows": 2}, peer="udp://x")
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(panel.render())
    text = console.file.getvalue()
    for expected in ("-6.0 dB", "-80.0 dB", "5.5 kbps", "52.5 ms", "sent 10", "lost 1", "underflows 2", "udp://x"):
        assert expected in text, (expected, text)
    assert meter(0.0).plain.startswith("█" * 30) and meter(-60.0).plain.startswith("─")


def test_panel_draws_nothing_when_not_a_terminal():
    quiet = Console(file=io.StringIO())
    with LivePanel("test", console=quiet) as panel:  # auto: a StringIO is not a terminal
        panel.update(kbps=1.0)
    assert panel.disabled and quiet.file.getvalue() == ""
    tty = Console(file=io.StringIO(), force_terminal=True, width=80)
    with LivePanel("test", console=tty) as panel:
        for i in range(100):  # many updates, few redraws
            panel.update(kbps=float(i))
    assert "99.0 kbps" in tty.file.getvalue()
