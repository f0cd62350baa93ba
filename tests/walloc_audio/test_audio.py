"""Tests of walloc_audio.audio: round trips, resampling, streaming, errors.

Signals are synthetic with known answers (tones, noise); files go to tmp_path.
"""

import os
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from walloc_audio.audio import AUDIO_SUFFIXES, AudioReader, AudioWriter, audio_info, find_audio, read_audio
from walloc_audio.errors import AudioError, OutputError
from walloc_audio.fsutil import atomic_output


def tone(freq=1000.0, rate=48000, seconds=1.0, channels=2, amp=0.5):
    """A [C, T] float32 sine, channel c at freq * (c + 1)."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def peak_hz(x, rate):
    """Frequency of the largest FFT bin of a 1-D signal."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


def snr_db(ref, test):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - test) ** 2))


def write(path, x, rate=48000, **kw):
    with AudioWriter(path, rate, x.shape[0], **kw) as w:
        for i in range(0, x.shape[1], 10007):  # odd block size on purpose
            w.write(x[:, i : i + 10007])
    return w


@pytest.mark.parametrize(
    "name, subtype, tol",
    [("a.wav", None, 1 / 32768), ("a.wav", "PCM_24", 1 / 2**23), ("a.wav", "FLOAT", 0.0), ("a.flac", None, 1 / 32768)],
)
def test_lossless_round_trip(tmp_path, name, subtype, tol):
    x = tone(seconds=0.5) + np.random.default_rng(0).normal(0, 0.01, (2, 24000)).astype(np.float32)
    write(tmp_path / name, x, subtype=subtype)
    y, rate = read_audio(tmp_path / name)
    assert rate == 48000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol
    assert sf.info(str(tmp_path / name)).subtype == (subtype or "PCM_16")


@pytest.mark.parametrize("name, min_snr", [("a.ogg", 15), ("a.mp3", 10), ("a.opus", 10), ("a.m4a", 10)])
def test_lossy_round_trip(tmp_path, name, min_snr):
    x = tone(seconds=0.5)
    write(tmp_path / name, x)
    with AudioReader(tmp_path / name) as r:
        assert r.channels == 2 and r.sample_rate == 48000
        assert r.num_frames is not None and abs(r.num_frames - 24000) < 1100
        y = np.concatenate(list(r), axis=1)
    # Codecs add padding (encoder delay, last frame): allow up to ~1100 samples.
    assert abs(y.shape[1] - 24000) < 1100
    for c, f in enumerate([1000, 2000]):
        assert abs(peak_hz(y[c], 48000) - f) < 5
    if name in ("a.ogg", "a.mp3", "a.opus"):  # aligned, so a waveform SNR makes sense
        assert snr_db(x[:, :23000], y[:, :23000]) > min_snr


def test_resample_48k_to_44k_keeps_frequency_and_length(tmp_path):
    write(tmp_path / "a.wav", tone(1000, 48000, 1.0), subtype="FLOAT")
    with AudioReader(tmp_path / "a.wav", sample_rate=44100) as r:
        assert (r.sample_rate, r.source_rate, r.num_frames) == (44100, 48000, 44100)
        y = np.concatenate(list(r), axis=1)
    assert abs(y.shape[1] - 44100) <= 4
    assert abs(peak_hz(y[0], 44100) - 1000) < 2 and abs(peak_hz(y[1], 44100) - 2000) < 2
    mid = y[0, 2000:-2000]  # the amplitude survives too (no edge effects)
    assert abs(np.sqrt(2 * np.mean(mid**2)) - 0.5) < 0.01


def test_writer_out_rate_resamples(tmp_path):
    w = write(tmp_path / "a.flac", tone(1000, 48000, 1.0), out_rate=44100)
    assert w.clipped == 0
    info = audio_info(tmp_path / "a.flac")
    assert info.sample_rate == 44100 and abs(info.frames - 44100) <= 4
    y, _ = read_audio(tmp_path / "a.flac")
    assert abs(peak_hz(y[0], 44100) - 1000) < 2


@pytest.mark.parametrize("block", [1, 7, 4096, 65536])
@pytest.mark.parametrize("rate", [None, 44100])  # soundfile / ffmpeg back end
def test_blocks_concatenate_to_one_read(tmp_path, block, rate):
    x = np.random.default_rng(1).uniform(-0.9, 0.9, (2, 3000 if block == 1 else 30011)).astype(np.float32)
    write(tmp_path / "a.wav", x, subtype="FLOAT")
    whole, _ = read_audio(tmp_path / "a.wav", rate)
    with AudioReader(tmp_path / "a.wav", sample_rate=rate, block_frames=block) as r:
        blocks = list(r)
    assert all(b.shape[0] == 2 and 1 <= b.shape[1] <= block for b in blocks)
    assert all(b.shape[1] == block for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)
    if rate is None:
        np.testing.assert_array_equal(whole, x)


def test_read_stdin_from_a_pipe(tmp_path, monkeypatch):
    x = tone(seconds=0.3)
    write(tmp_path / "a.flac", x)
    data = (tmp_path / "a.flac").read_bytes()
    rfd, wfd = os.pipe()  # a real, non-seekable pipe, as in `cat a.flac | walloc-audio ...`

    def feed():
        with os.fdopen(wfd, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    with os.fdopen(rfd, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        with AudioReader("-", block_frames=5000) as r:
            assert (r.name, r.sample_rate, r.channels, r.num_frames) == ("<stdin>", 48000, 2, None)
            y = np.concatenate(list(r), axis=1)
    np.testing.assert_array_equal(y, read_audio(tmp_path / "a.flac")[0])


def test_not_audio_is_an_audio_error(tmp_path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(2).bytes(5000))
    (tmp_path / "notes.txt").write_text("this is not audio\n" * 50)
    for name in ("noise.wav", "notes.txt"):
        for call in (read_audio, audio_info):
            with pytest.raises(AudioError, match=name) as e:
                call(tmp_path / name)
            assert "\n" not in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        AudioReader(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="directory"):
        read_audio(tmp_path)


@pytest.mark.parametrize("rate", [None, 16000])
def test_empty_wav(tmp_path, rate):
    sf.write(tmp_path / "empty.wav", np.zeros((0, 2), np.float32), 48000)
    with pytest.raises(AudioError, match="empty.wav: contains no audio"):
        read_audio(tmp_path / "empty.wav", rate)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("block", [1000, 65536])
def test_non_finite_samples_name_the_time(tmp_path, bad, block):
    x = tone(seconds=1.0)
    x[1, 24000] = bad  # 0.5 s at 48 kHz
    sf.write(tmp_path / "nan.wav", x.T, 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav: NaN or Inf sample at 0\.500 s"):
        with AudioReader(tmp_path / "nan.wav", block_frames=block) as r:
            for _ in r:
                pass


def ffmpeg_reader(tmp_path):
    """A reader that certainly runs ffmpeg (resampling), mid-file."""
    write(tmp_path / "a.wav", tone(seconds=2.0))
    r = AudioReader(tmp_path / "a.wav", sample_rate=22050, block_frames=256)
    next(r)
    assert r._ff is not None and r._ff.proc.poll() is None  # still running
    return r, r._ff.proc


def assert_reaped(proc):
    assert proc.returncode is not None  # waited for, so no zombie is left...
    assert not os.path.exists(f"/proc/{proc.pid}/status") or "zombie" not in open(f"/proc/{proc.pid}/status").read()


def test_ffmpeg_reaped_on_early_close(tmp_path):
    r, proc = ffmpeg_reader(tmp_path)
    r.close()
    assert_reaped(proc)
    assert list(r) == []  # closed readers are exhausted, not broken


def test_ffmpeg_reaped_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ffmpeg_reader(tmp_path)[0] as r:
            proc = r._ff.proc
            raise KeyboardInterrupt
    assert_reaped(proc)


def test_writer_clips_integer_formats_only(tmp_path):
    x = np.array([[0.5, 1.5, -2.0, 1.0], [0.0, -1.0001, 0.2, 0.3]], np.float32)
    assert write(tmp_path / "a.wav", x).clipped == 2 + 1
    y, _ = read_audio(tmp_path / "a.wav")
    assert y.max() <= 1.0 and y.min() >= -1.0 and y[0, 2] == -1.0
    assert write(tmp_path / "b.wav", x, subtype="FLOAT").clipped == 0
    np.testing.assert_array_equal(read_audio(tmp_path / "b.wav")[0], x)


def test_writer_to_stdout(capfdbinary):
    x = tone(seconds=0.2)
    write("-", x, subtype="FLOAT")
    out = capfdbinary.readouterr().out
    assert out[:4] == b"RIFF" and out[8:12] == b"WAVE"
    y = np.frombuffer(out[-x.size * 4 :], "<f4").reshape(-1, 2).T  # the data chunk ends the stream
    np.testing.assert_array_equal(y, x)


def test_writer_errors(tmp_path):
    with pytest.raises(OutputError, match="unknown audio format 'xyz'"):
        AudioWriter(tmp_path / "a.xyz", 48000, 2)
    with pytest.raises(OutputError, match="subtype VORBIS is not valid for WAV"):
        AudioWriter(tmp_path / "a.wav", 48000, 2, subtype="vorbis")
    with pytest.raises(OutputError, match="subtype PCM_16 is not supported for mp3"):
        AudioWriter(tmp_path / "a.mp3", 48000, 2, subtype="PCM_16")
    with pytest.raises(OutputError, match="cannot write .*x.mp3"):
        write(tmp_path / "missing" / "x.mp3", tone(seconds=0.1))
    with pytest.raises(ValueError, match=r"\[C=2, n\] block"):
        with AudioWriter(tmp_path / "a.flac", 48000, 2) as w:
            w.write(np.zeros((3, 10)))


def test_writer_in_atomic_output_leaves_nothing_on_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "out.mp3") as tmp:
            with AudioWriter(tmp, 48000, 2, name="out.mp3") as w:
                w.write(tone(seconds=0.2))
                proc = w._ff.proc
                raise KeyboardInterrupt
    assert_reaped(proc)
    assert os.listdir(tmp_path) == []


def test_writer_format_argument_overrides_suffix(tmp_path):
    write(tmp_path / "a.bin", tone(seconds=0.2), format="flac")
    assert audio_info(tmp_path / "a.bin").format == "FLAC (PCM_16)"


def test_audio_info(tmp_path):
    write(tmp_path / "a.wav", tone(seconds=0.25))
    info = audio_info(tmp_path / "a.wav")
    assert (info.sample_rate, info.channels, info.frames, info.duration) == (48000, 2, 12000, 0.25)
    write(tmp_path / "a.m4a", tone(seconds=0.25))
    info = audio_info(tmp_path / "a.m4a")
    assert info.sample_rate == 48000 and info.channels == 2 and "aac" in info.format
    assert abs(info.duration - 0.25) < 0.03


def test_find_audio_scans_folders_with_one_suffix_set_and_keeps_files_as_given(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ("a.FLAC", "b/x.mka", "b/deep/y.wma", "b/notes.txt", "b/cover.jpg"):
        (tmp_path / name).write_bytes(b"")
    given = tmp_path / "readme.txt"
    given.write_bytes(b"")
    found = find_audio([str(tmp_path / "b"), str(tmp_path / "a.FLAC"), str(given)])
    assert found == [str(tmp_path / "b/deep/y.wma"), str(tmp_path / "b/x.mka"), str(tmp_path / "a.FLAC"), str(given)]
    assert {".mp4", ".aac", ".opus", ".wav"} <= AUDIO_SUFFIXES
    assert find_audio([str(tmp_path)], {".txt"}) == [str(tmp_path / "b/notes.txt"), str(given)]
