"""ffmpeg and ffprobe as subprocesses: probing, resampling options, a supervised child.

Used by :mod:`walloc_audio.audio` for formats soundfile cannot open, for
stdin and for resampling. The child's stderr is drained by a thread into a
bounded buffer (it can never stall on a full pipe), and errors are condensed
to one short line for messages that already name the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import subprocess
import threading
from collections import deque
from functools import lru_cache

from .errors import AudioError


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a CLI says about a file: ``44100 Hz, 2 ch, 3.20 s, WAV (PCM_16)``."""

    sample_rate: int
    channels: int
    frames: int | None  # None when the container does not say
    duration: float | None  # seconds
    format: str  # container (codec), e.g. "mp3 (mp3)", "WAV (PCM_16)"


@lru_cache(maxsize=None)
def has_soxr() -> bool:
    """Whether this ffmpeg build has the soxr resampler (better than its default)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return "--enable-libsoxr" in subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return False


def resample_args(rate: int | None) -> list[str]:
    """ffmpeg options to resample to ``rate`` (none when rate is None)."""
    soxr = ["-af", "aresample=resampler=soxr"] if rate and has_soxr() else []
    return soxr + (["-ar", str(int(rate))] if rate else [])


class FFmpegProcess:
    """An ffmpeg child with a drained stderr and a reliable kill-and-reap."""

    def __init__(self, args: list[str], path: str, name: str, error: type, *, stdin=None, stdout=subprocess.PIPE,
                 pass_fds: tuple[int, ...] = ()):
        self.path, self.tail = path, deque(maxlen=30)  # the last stderr lines: bounded memory
        base = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
        try:
            self.proc = subprocess.Popen(base + args, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                         pass_fds=pass_fds)
        except FileNotFoundError:
            raise error(f"{name}: ffmpeg is not installed (needed for this format)") from None
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.tail.append(line.decode("utf-8", "replace").strip())

    def wait(self) -> int:
        """Wait for a normal exit (after EOF, or after closing its stdin)."""
        code = self.proc.wait()
        self._thread.join(timeout=5)
        return code

    def gist(self) -> str:
        """ffmpeg's last error line, without the path it names (we name it)."""
        lines = [line for line in self.tail if line]
        return _gist(lines, self.path) if lines else f"ffmpeg exit status {self.proc.returncode}"

    def kill(self) -> None:
        """Stop the child now, reap it (no zombie) and close our pipe ends."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, AttributeError):  # None, or a broken flush
                pipe.close()
        self._thread.join(timeout=5)


def _gist(lines: list[str], path: str) -> str:
    """One short line from an ffmpeg log, for an error message that already
    names the file: the last line without its ``path: `` or ``[demuxer @ 0x..]``
    prefix, after the line before it when the last is a bare ``strerror``
    (``Unable to find a suitable output format for 'x.xyz': Invalid argument``)."""
    out = []
    for line in lines[-2:]:
        line = re.sub(r"^\[[^\]]*\] ", "", line)
        for prefix in (f"{path}: ", "pipe:0: ", "pipe:1: "):
            line = line.removeprefix(prefix)
        out.append(line)
    return (f"{out[0]}: {out[1]}" if len(out) == 2 and len(out[1]) < 30 else out[-1])[:200]


def probe(path: str) -> AudioInfo:
    """Read rate, channels, length and codec of the first audio stream with ffprobe."""
    entries = "stream=codec_type,codec_name,sample_rate,channels,duration:format=format_name,duration"
    args = ["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", f"file:{path}"]
    try:  # ffprobe reads headers only: its output is small, capturing it is safe
        run = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    except FileNotFoundError:
        raise AudioError(f"{path}: ffprobe is not installed (needed for this format)") from None
    except subprocess.TimeoutExpired:
        raise AudioError(f"{path}: ffprobe timed out (a pipe or a stalled network file?)") from None
    err = run.stderr.decode("utf-8", "replace").strip().splitlines()
    if run.returncode != 0:
        gist = _gist(err, f"file:{path}") if err else f"ffprobe exit status {run.returncode}"
        raise AudioError(f"{path}: not a readable audio file ({gist})")
    info = json.loads(run.stdout or b"{}")
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError(f"{path}: no audio stream (not an audio file?)")
    s, fmt = streams[0], info.get("format", {})
    rate, channels = int(s.get("sample_rate") or 0), int(s.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise AudioError(f"{path}: unusable audio stream ({channels} channels at {rate} Hz)")
    duration = float(s.get("duration") or fmt.get("duration") or "nan")
    duration = duration if math.isfinite(duration) else None
    frames = round(duration * rate) if duration is not None else None
    return AudioInfo(rate, channels, frames, duration, f"{fmt.get('format_name', '?')} ({s.get('codec_name', '?')})")
