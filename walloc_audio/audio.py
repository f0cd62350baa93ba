"""Streaming audio input and output in bounded memory.

Audio is a float32 numpy array ``[C, T]`` (channels first, samples in [-1, 1])
and travels in blocks of ``[C, n]`` so that an hour of audio never sits in
memory at once. Two back ends share one interface:

* **soundfile** (libsndfile) for what it opens natively at the wanted rate
  (WAV, FLAC, OGG/Vorbis, AIFF, ...): exact lengths, no subprocess.
* **ffmpeg** as a subprocess for everything else (MP3, Opus, M4A, stdin) and
  for any resampling (soxr when this ffmpeg has it). To decode, ffmpeg writes
  a float32 WAV stream to a pipe; its header gives channels and rate (this is
  what makes stdin work: nothing has to be probed beforehand), then the data
  is read in fixed-size blocks. To encode, raw ``f32le`` goes to ffmpeg's
  stdin. A thread drains ffmpeg's stderr, keeping the last lines for error
  messages, so the child can never stall on a full stderr pipe.

Every user-caused failure is one line naming the file: :class:`AudioError` for
inputs, :class:`OutputError` for outputs. Readers and writers are context
managers that kill and reap their ffmpeg child when closed early, on error
and on ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from .errors import AudioError, OutputError
from .ffmpeg import AudioInfo, FFmpegProcess, probe, resample_args
from .fsutil import STDIO, output_error, path_suffix


# What a folder scan picks up (encode, eval, train): everything ffmpeg decodes that is usually audio.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".wma",
                            ".webm", ".mka", ".mp4"})


def find_audio(paths: Iterable[str], suffixes: Iterable[str] = AUDIO_SUFFIXES) -> list[str]:
    """Files as given; folders scanned recursively for files with ``suffixes`` (sorted)."""
    found: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found += sorted(str(q) for q in Path(p).rglob("*") if q.is_file() and q.suffix.lower() in suffixes)
        else:
            found.append(p)
    return found


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Describe an audio file without decoding it (soundfile, else ffprobe)."""
    path = _check_source(os.fspath(path))
    if path == STDIO:
        raise AudioError("<stdin>: cannot inspect stdin without reading it")
    try:
        i = sf.info(path)
    except (RuntimeError, OSError):
        return probe(path)
    return AudioInfo(i.samplerate, i.channels, i.frames, i.frames / i.samplerate, f"{i.format} ({i.subtype})")


def _check_source(path: str) -> str:
    if path != STDIO:
        if not os.path.exists(path):
            raise AudioError(f"{path}: no such file")
        if os.path.isdir(path):
            raise AudioError(f"{path}: is a directory, not an audio file")
    return path


# --------------------------------------------------------------------- reading


class AudioReader:
    """Iterate over an audio file (or stdin, ``"-"``) in float32 ``[C, n]`` blocks.

    Shape: every block is ``[channels, block_frames]`` except the last, which
    may be shorter. Use it as a context manager so that an early exit (break,
    error, Ctrl-C) closes the file and kills ffmpeg.

    Attributes:
        sample_rate: rate of the blocks (the requested rate, else the file's).
        source_rate: the file's own rate (None for resampled stdin).
        channels: number of channels C.
        num_frames: length at ``sample_rate``: exact when soundfile reads,
            the container's estimate when ffmpeg decodes, None if unknown.
        format: a description such as ``"WAV (PCM_16)"`` or ``"mp3 (mp3)"``.

    Raises :class:`AudioError` for a missing, unreadable, non-audio or empty
    input and for NaN/Inf samples (naming the time where they appear).
    """

    def __init__(self, source: str | os.PathLike, *, sample_rate: int | None = None, block_frames: int = 65536):
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self.source = _check_source(os.fspath(source))
        self.name = "<stdin>" if self.source == STDIO else self.source
        self.block_frames, self.frames_read = block_frames, 0
        self._sf: sf.SoundFile | None = None
        self._ff: FFmpegProcess | None = None
        self._closed = False
        try:
            if self.source != STDIO:
                with contextlib.suppress(RuntimeError, OSError):  # else ffmpeg will tell
                    self._sf = sf.SoundFile(self.source)
            if self._sf is not None and sample_rate in (None, self._sf.samplerate):
                self.sample_rate = self.source_rate = self._sf.samplerate
                self.channels, self.num_frames = self._sf.channels, self._sf.frames
                self.format = f"{self._sf.format} ({self._sf.subtype})"
                if self.num_frames == 0 or self.channels == 0:
                    raise AudioError(f"{self.name}: contains no audio samples")
            else:
                if self._sf is not None:
                    self._sf.close()
                    self._sf = None
                self._open_ffmpeg(sample_rate)
        except BaseException:
            self.close()
            raise

    def _open_ffmpeg(self, rate: int | None) -> None:
        info = None if self.source == STDIO else probe(self.source)
        if info is not None and rate == info.sample_rate:
            rate = None  # no resampling needed
        url = "pipe:0" if self.source == STDIO else f"file:{self.source}"
        args = ["-i", url, "-map", "0:a:0", "-map_metadata", "-1", "-fflags", "+bitexact",
                *resample_args(rate), "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]
        stdin = sys.stdin if self.source == STDIO else subprocess.DEVNULL
        self._ff = FFmpegProcess(args, url, self.name, AudioError, stdin=stdin)
        self.channels, self.sample_rate = self._read_wav_header()
        self.source_rate = info.sample_rate if info else (None if rate else self.sample_rate)
        self.format, self.num_frames = (info.format, info.frames) if info else ("ffmpeg stream", None)
        if self.num_frames is not None:
            self.num_frames = round(self.num_frames * self.sample_rate / info.sample_rate)

    def _read_exactly(self, n: int) -> bytes:
        data = self._ff.proc.stdout.read(n)
        if len(data) < n:  # ffmpeg stopped before a complete header: why?
            self._finish()
        return data

    def _read_wav_header(self) -> tuple[int, int]:
        """Parse ffmpeg's streamed WAV header up to the ``data`` chunk.

        RIFF layout: ``"RIFF" size "WAVE"``, then chunks ``id(4) size(4) body``
        padded to even sizes; ``fmt `` holds channels (u16 at 2) and rate (u32
        at 4). On a pipe ffmpeg cannot seek back to fill in the sizes, so the
        ``data`` size is bogus: the data is read until EOF instead.
        """
        if self._read_exactly(12)[8:12] != b"WAVE":
            raise AudioError(f"{self.name}: unexpected ffmpeg output (not a WAV stream)")
        channels = rate = 0
        while (chunk := struct.unpack("<4sI", self._read_exactly(8)))[0] != b"data":
            body = self._read_exactly(chunk[1] + (chunk[1] & 1))
            if chunk[0] == b"fmt ":
                channels, rate = struct.unpack("<HI", body[2:8])
        if channels == 0 or rate == 0:
            raise AudioError(f"{self.name}: audio has {channels} channels at {rate} Hz")
        return channels, rate

    def _read_block(self) -> np.ndarray | None:
        if self._sf is not None:
            data = self._sf.read(self.block_frames, dtype="float32", always_2d=True)  # [n, C]
            return np.ascontiguousarray(data.T) if len(data) else None
        frame_bytes = 4 * self.channels
        data = self._ff.proc.stdout.read(self.block_frames * frame_bytes)  # blocks until full or EOF
        n = len(data) // frame_bytes
        return np.frombuffer(data, "<f4", n * self.channels).reshape(n, -1).T.copy() if n else None

    def __next__(self) -> np.ndarray:
        """The next ``[C, n]`` float32 block; closes the reader at the end."""
        if self._closed:
            raise StopIteration
        try:
            block = self._read_block()
            if block is None:
                self._finish()
            finite = np.isfinite(block).all(axis=0)
            if not finite.all():
                at = (self.frames_read + int(np.argmin(finite))) / self.sample_rate
                raise AudioError(f"{self.name}: NaN or Inf sample at {at:.3f} s")
        except (RuntimeError, OSError) as e:  # libsndfile read errors, pipe errors
            self.close()
            raise AudioError(f"{self.name}: read error ({e})") from e
        except BaseException:
            self.close()
            raise
        self.frames_read += block.shape[1]
        return block

    def _finish(self) -> None:
        """At EOF: raise ffmpeg's error, or 'no audio', or StopIteration."""
        if self._ff is not None and self._ff.wait() != 0:
            raise AudioError(f"{self.name}: cannot decode audio ({self._ff.gist()})")
        if self.frames_read == 0:
            raise AudioError(f"{self.name}: contains no audio samples")
        raise StopIteration

    def __iter__(self) -> AudioReader:
        return self

    def close(self) -> None:
        """Release the file; kill and reap ffmpeg if it is still running."""
        if not self._closed:
            self._closed = True
            if self._sf is not None:
                self._sf.close()
            if self._ff is not None:
                self._ff.kill()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) is False:
            self.close()


def read_audio(source: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a whole (short) file: returns float32 ``[C, T]`` and its rate."""
    with AudioReader(source, sample_rate=sample_rate) as reader:
        return np.concatenate(list(reader), axis=1), reader.sample_rate


# --------------------------------------------------------------------- writing

# suffix -> ffmpeg muxer; the first four can also go through soundfile.
_MUXERS = {"wav": "wav", "flac": "flac", "ogg": "ogg", "aiff": "aiff", "mp3": "mp3", "opus": "opus",
           "m4a": "ipod", "aac": "adts", "mka": "matroska", "webm": "webm"}
_SF_DEFAULT = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "aiff": "PCM_16"}
# soundfile subtype -> ffmpeg options, for WAV/FLAC that ffmpeg writes (resampled, or stdout).
_FF_SUBTYPE = {("wav", "PCM_16"): ["-c:a", "pcm_s16le"], ("wav", "PCM_24"): ["-c:a", "pcm_s24le"],
               ("wav", "FLOAT"): ["-c:a", "pcm_f32le"], ("flac", "PCM_16"): ["-sample_fmt", "s16"],
               ("flac", "PCM_24"): ["-sample_fmt", "s32"]}


class AudioWriter:
    """Write float32 ``[C, n]`` blocks to a file, or WAV to stdout (``"-"``).

    The format comes from ``format`` (``"wav"``, ``"mp3"``, ...) or else from
    the suffix of ``path`` (an :func:`~walloc_audio.fsutil.atomic_output`
    temporary carries its output's). This class does no atomic
    renaming: wrap it. WAV, FLAC, OGG and AIFF at the input rate go through
    soundfile; other formats, ``out_rate != sample_rate`` and stdout through
    an ffmpeg child fed raw ``f32le``.

    ``subtype`` is soundfile's name: ``PCM_16`` (the WAV/FLAC default),
    ``PCM_24``, or ``FLOAT`` (lossless for a codec's float output). Except for
    float subtypes, samples are clipped to [-1, 1]; ``clipped`` counts them.
    ``name`` is the file named in error messages (default: ``path``).
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, *, out_rate: int | None = None,
                 subtype: str | None = None, format: str | None = None, name: str | None = None):
        self.path = os.fspath(path)
        self.name = name or ("<stdout>" if self.path == STDIO else self.path)
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.out_rate = int(out_rate or sample_rate)
        if self.sample_rate <= 0 or self.channels <= 0:
            raise ValueError(f"need a positive rate and channel count, got {sample_rate} Hz, {channels} ch")
        fmt = (format or ("wav" if self.path == STDIO else path_suffix(self.path)[1:])).lower()
        fmt = "aiff" if fmt == "aif" else fmt
        if fmt not in _MUXERS:
            raise OutputError(f"{self.name}: unknown audio format {fmt!r} (use {', '.join(_MUXERS)})")
        self.format, self.subtype, self.clipped = fmt, subtype and subtype.upper(), 0
        self._clip = self.subtype not in ("FLOAT", "DOUBLE")
        self._sf: sf.SoundFile | None = None
        self._ff: FFmpegProcess | None = None
        self._closed = False
        if fmt in _SF_DEFAULT and self.out_rate == self.sample_rate and self.path != STDIO:
            self.subtype = self.subtype or _SF_DEFAULT[fmt]
            if not sf.check_format(fmt.upper(), self.subtype):
                raise OutputError(f"{self.name}: subtype {self.subtype} is not valid for {fmt.upper()}")
            try:
                self._sf = sf.SoundFile(self.path, "w", self.sample_rate, self.channels, self.subtype,
                                        format=fmt.upper())
            except (RuntimeError, OSError) as e:
                raise self._error(e) from e
        else:
            self._open_ffmpeg(fmt)

    def _open_ffmpeg(self, fmt: str) -> None:
        if self.subtype is not None and (fmt, self.subtype) not in _FF_SUBTYPE:
            raise OutputError(f"{self.name}: subtype {self.subtype} is not supported for {fmt}")
        codec = _FF_SUBTYPE.get((fmt, self.subtype), [])
        dest = "pipe:1" if self.path == STDIO else f"file:{self.path}"
        args = ["-y", "-f", "f32le", "-ar", str(self.sample_rate), "-ac", str(self.channels), "-i", "pipe:0",
                *resample_args(None if self.out_rate == self.sample_rate else self.out_rate),
                *codec, "-f", _MUXERS[fmt], dest]
        if self.path == STDIO:
            sys.stdout.flush()  # our own buffered output must come first
        stdout = None if self.path == STDIO else subprocess.DEVNULL  # None: ffmpeg inherits our stdout
        fd = getattr(self.path, "fd", None)  # an unnamed temporary: ffmpeg opens /proc/self/fd/N, so it inherits N
        self._ff = FFmpegProcess(args, dest, self.name, OutputError, stdin=subprocess.PIPE, stdout=stdout,
                                 pass_fds=() if fd is None else (fd,))

    def _error(self, e: BaseException | None = None) -> OutputError:
        """The one-line error for a failed write; stops ffmpeg to read its log."""
        if isinstance(e, OSError) and output_error(e, self.name):
            return output_error(e, self.name)
        if self._ff is not None:
            self._ff.kill()
        gist = self._ff.gist() if self._ff is not None else getattr(e, "error_string", str(e))
        if "No space left" in gist:
            return OutputError(f"disk full writing {self.name}")
        return OutputError(f"cannot write {self.name} ({gist})")

    def write(self, block: np.ndarray) -> None:
        """Append a ``[C, n]`` block (any float dtype; converted to float32)."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [C={self.channels}, n] block, got shape {tuple(block.shape)}")
        if self._closed:
            raise ValueError(f"{self.name}: write after close")
        if self._clip and (over := int(np.count_nonzero(np.abs(block) > 1.0))):
            self.clipped += over
            block = np.clip(block, -1.0, 1.0)
        frames = np.ascontiguousarray(block.T)  # [n, C]: interleaved samples
        try:
            if self._sf is not None:
                self._sf.write(frames)
            else:
                self._ff.proc.stdin.write(frames.astype("<f4", copy=False).tobytes())
        except (RuntimeError, OSError) as e:  # a broken pipe: ffmpeg died, its log says why
            error = self._error(e)
            self.abort()
            raise error from e

    def close(self) -> None:
        """Finish the file (soundfile flushes, ffmpeg writes its trailer)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._sf is not None:
                self._sf.close()
            else:
                self._ff.proc.stdin.close()  # EOF: ffmpeg flushes and exits
                if self._ff.wait() != 0:
                    raise self._error()
        except (RuntimeError, OSError) as e:
            raise self._error(e) from e
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop at once without finishing; the caller discards the file."""
        self._closed = True
        if self._sf is not None:
            with contextlib.suppress(RuntimeError, OSError):
                self._sf.close()
        if self._ff is not None:
            self._ff.kill()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close() if exc_type is None else self.abort()
