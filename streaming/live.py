"""Live audio I/O with sounddevice: device lookup, a capture queue and a playback FIFO.

The rule of real-time audio: the device callback runs on PortAudio's thread under a deadline of
one block (23 ms for 1024 samples at 44.1 kHz) and must never wait for the codec. So the callbacks
here only *move buffers*: :class:`AudioInput` copies each captured block into a bounded queue,
:class:`AudioOutput` copies samples out of a bounded FIFO. Encoding, decoding, level meters and
everything else happen in the caller's worker thread (``read()`` / ``write()``). When a side
falls behind, nothing blocks: the input drops its oldest block, the output plays zeros, and
both count it, so xruns are visible (``stats``) instead of silent.

Blocks are ``[C, n]`` float32 like the rest of the package (PortAudio's are ``[n, C]``).

Device specs (``device=`` and :func:`resolve_device`):

- ``None``: the system default for that direction;
- an ``int`` (or a string of digits): a PortAudio device index, see :func:`list_devices`;
- a string: an exact device name, else a unique case-insensitive substring of one;
- ``"pulse:NAME"``: the PulseAudio source/sink ``NAME`` (e.g. ``pulse:nullsink.monitor``), opened
  through PortAudio's ALSA ``pulse`` device. Debian's PortAudio 19.6 has no PulseAudio host API,
  so PulseAudio's own sources (monitors included) are not PortAudio devices; the ALSA pulse plugin
  however connects to whatever ``PULSE_SOURCE`` / ``PULSE_SINK`` names when the stream is opened.
  We set that variable only while the stream is being created, then restore it (so open
  streams from one thread at a time). (Setting
  ``PULSE_SOURCE`` in the environment of the whole process does the same for every stream.)

Device problems (no PortAudio, no device, unknown name, a stream that will not open) raise
:class:`DeviceError` with a one-line message; the CLI turns it into exit code 8.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import queue
import threading
import time

import numpy as np

from walloc_audio.errors import WallocError

KINDS = ("input", "output")
PULSE_PREFIX = "pulse:"


class DeviceError(WallocError):
    """An audio device is missing, unknown, or cannot be opened (or PortAudio is not installed)."""

    exit_code = 8


def _sd():
    """Import sounddevice lazily: importing it loads PortAudio, which may be missing (OSError)."""
    try:
        import sounddevice
    except OSError as e:
        raise DeviceError("PortAudio library not found (install libportaudio2)") from e
    return sounddevice


def peak_db(block: np.ndarray) -> float:
    """Peak level of a block in dBFS (full scale = 1.0), floored at -120 dB for silence."""
    peak = float(np.max(np.abs(block))) if block.size else 0.0
    return 20.0 * math.log10(max(peak, 1e-6))


def list_devices() -> list[dict]:
    """All PortAudio devices as dicts: index, name, hostapi, in/out channels, default rate and flags."""
    sd = _sd()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except sd.PortAudioError as e:
        raise DeviceError(f"cannot list audio devices: {e}") from e
    return [
        {"index": d["index"], "name": d["name"], "hostapi": hostapis[d["hostapi"]]["name"],
         "max_input_channels": d["max_input_channels"], "max_output_channels": d["max_output_channels"],
         "default_samplerate": d["default_samplerate"],
         "default_input": d["index"] == default_in, "default_output": d["index"] == default_out}
        for d in devices
    ]


def resolve_device(spec: int | str | None, kind: str) -> int:
    """Turn a device spec (see the module docstring) into a PortAudio index for ``kind``.

    ``kind`` is ``'input'`` or ``'output'``; the device must have channels in that direction.
    A ``pulse:NAME`` spec resolves to the ALSA ``pulse`` device (the caller routes it to ``NAME``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    channels_key = f"max_{kind}_channels"
    devices = [d for d in list_devices() if d[channels_key] > 0]
    if not devices:
        raise DeviceError(f"no audio {kind} device found (is a sound server such as PulseAudio running?)")
    if isinstance(spec, str) and spec.startswith(PULSE_PREFIX):
        pulse = [d for d in devices if d["name"] == "pulse"]
        if not pulse:
            raise DeviceError(f"{spec!r} needs the ALSA 'pulse' {kind} device, which PortAudio does not list")
        return pulse[0]["index"]
    if spec is None:
        default = [d for d in devices if d[f"default_{kind}"]]
        if not default:
            raise DeviceError(f"no default audio {kind} device; choose one with --list-devices")
        return default[0]["index"]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        for d in devices:
            if d["index"] == index:
                return index
        raise DeviceError(f"no audio {kind} device with index {index}")
    exact = [d for d in devices if d["name"] == spec]
    matches = exact or [d for d in devices if spec.lower() in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]["index"]
    if not matches:
        raise DeviceError(f"no audio {kind} device matches {spec!r}")
    raise DeviceError(f"audio {kind} device {spec!r} is ambiguous: {', '.join(repr(d['name']) for d in matches)}")


@contextlib.contextmanager
def _pulse_route(spec, kind: str):
    """While opening a stream for a ``pulse:NAME`` spec, point PULSE_SOURCE/PULSE_SINK at NAME."""
    if not (isinstance(spec, str) and spec.startswith(PULSE_PREFIX)):
        yield
        return
    var = "PULSE_SOURCE" if kind == "input" else "PULSE_SINK"
    old = os.environ.get(var)
    os.environ[var] = spec[len(PULSE_PREFIX):]
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old


class _Stream:
    """What both directions share: device resolution, opening, closing, the context manager."""

    kind = "input"

    def __init__(self, device, sample_rate, channels: int, block_size: int):
        if channels < 1 or block_size < 1:
            raise ValueError(f"channels and block_size must be >= 1, got {channels}, {block_size}")
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_size = block_size
        self.level_db = -120.0
        self._stream = None

    def _open(self, stream_class) -> None:
        sd = _sd()
        index = resolve_device(self.device, self.kind)
        if self.sample_rate is None:
            self.sample_rate = int(sd.query_devices(index)["default_samplerate"])
        self._prepare()
        try:
            with _pulse_route(self.device, self.kind):
                self._stream = stream_class(samplerate=self.sample_rate, blocksize=self.block_size, device=index,
                                            channels=self.channels, dtype="float32", callback=self._callback)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            self.close()
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            name = "(default)" if self.device is None else repr(self.device)
            if isinstance(self.device, str) and self.device.startswith(PULSE_PREFIX):
                what = "sources" if self.kind == "input" else "sinks"
                message += f" (names of PulseAudio {what}: `pactl list short {what}`)"
            raise DeviceError(f"cannot open audio {self.kind} device {name}: {message}") from e

    def _prepare(self) -> None:
        """Hook: size buffers once the sample rate is known."""

    def close(self) -> None:
        """Stop and close the device stream (idempotent)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)  # stop + close; never raises while unwinding

    @property
    def active(self) -> bool:
        """True while the device stream runs."""
        return self._stream is not None and self._stream.active

    @property
    def device_latency(self) -> float:
        """Seconds of latency inside the device/driver, as PortAudio reports it (0 when closed)."""
        return float(self._stream.latency) if self._stream is not None else 0.0

    def __exit__(self, *exc) -> None:
        self.close()


class AudioInput(_Stream):
    """Capture from a device; ``read()`` returns ``[C, n]`` float32 blocks in order.

    The callback copies each block into a queue of at most ``queue_blocks`` blocks; when the
    reader falls that far behind the oldest block is dropped (``dropped``), so what is read stays
    close to real time. ``overflows`` counts the device's own input-overflow flags (samples lost
    before they reached us). ``level_db`` is the peak of the block most recently read.
    """

    kind = "input"

    def __init__(self, device=None, sample_rate: int | None = None, channels: int = 2, block_size: int = 1024,
                 queue_blocks: int = 64):
        super().__init__(device, sample_rate, channels, block_size)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_blocks)
        self.overflows = 0
        self.dropped = 0

    def __enter__(self) -> "AudioInput":
        self._open(_sd().InputStream)
        return self

    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        block = indata.T.copy()  # [n, C] -> [C, n]; PortAudio reuses indata after we return
        while True:
            try:
                self._queue.put_nowait(block)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # drop the oldest: stay close to real time
                    self.dropped += 1
                except queue.Empty:
                    pass

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """Next captured block ``[C, n]``, or None if none arrives within ``timeout`` seconds."""
        try:
            block = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self.level_db = peak_db(block)
        return block

    @property
    def queued_blocks(self) -> int:
        """Blocks captured but not read yet."""
        return self._queue.qsize()

    @property
    def stats(self) -> dict:
        """xrun counters; keys differ from AudioOutput's, so ``{**mic.stats, **speaker.stats}`` keeps all."""
        return {"overflows": self.overflows, "input_dropped": self.dropped}


class AudioOutput(_Stream):
    """Play ``[C, n]`` blocks of any size through a bounded FIFO.

    ``write()`` never blocks: a block that does not fit in ``queue_seconds`` of buffer is dropped
    and counted (``dropped``). The callback copies samples out of the FIFO; when it runs dry after
    playback has started it plays zeros and counts one ``underflow`` per dry spell. ``drain()``
    tells it the producer is done, so running dry at the end is not an underflow.
    ``device_underflows`` counts PortAudio's own output-underflow flags.
    """

    kind = "output"

    def __init__(self, device=None, sample_rate: int | None = None, channels: int = 2, block_size: int = 1024,
                 queue_seconds: float = 0.5):
        super().__init__(device, sample_rate, channels, block_size)
        self.queue_seconds = queue_seconds
        self.capacity = 0  # samples; set by _prepare once the rate is known
        self._fifo: collections.deque = collections.deque()  # of [n, C] arrays (device layout)
        self._head = 0  # samples of _fifo[0] already played
        self._buffered = 0
        self._lock = threading.Lock()
        self._playing = False  # armed by write(), disarmed by a dry spell or drain()
        self.underflows = 0
        self.device_underflows = 0
        self.dropped = 0
        if sample_rate is not None:
            self._prepare()

    def __enter__(self) -> "AudioOutput":
        self._open(_sd().OutputStream)
        return self

    def _prepare(self) -> None:
        self.capacity = max(self.block_size, int(self.queue_seconds * self.sample_rate))

    def write(self, block: np.ndarray) -> bool:
        """Queue ``[C, n]`` samples for playback; returns False (and counts) if the buffer is full."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a block of shape [C={self.channels}, n], got {tuple(block.shape)}")
        if self.capacity == 0:
            raise RuntimeError("AudioOutput.write() before the sample rate is known: open it first")
        n = block.shape[1]
        if n == 0:
            return True
        self.level_db = peak_db(block)
        frames = np.ascontiguousarray(block.T)
        with self._lock:
            if self._buffered + n > self.capacity:
                self.dropped += 1
                return False
            self._fifo.append(frames)
            self._buffered += n
            self._playing = True
        return True

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.device_underflows += 1
        filled = 0
        with self._lock:
            while filled < frames and self._fifo:
                head = self._fifo[0]
                take = min(frames - filled, head.shape[0] - self._head)
                outdata[filled:filled + take] = head[self._head:self._head + take]
                filled += take
                self._head += take
                if self._head == head.shape[0]:
                    self._fifo.popleft()
                    self._head = 0
            self._buffered -= filled
            if filled < frames and self._playing:
                self.underflows += 1
                self._playing = False
        outdata[filled:] = 0.0

    @property
    def buffered_samples(self) -> int:
        """Samples written but not yet handed to the device (add ``device_latency`` for the total)."""
        return self._buffered

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything written has been played; True if it was, False on timeout."""
        self._playing = False
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._buffered > 0 and self.active:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        # The FIFO is empty; the device still holds up to its own latency of audio.
        tail = self.device_latency if self.active else 0.0
        if deadline is not None:
            tail = min(tail, max(0.0, deadline - time.monotonic()))
        time.sleep(tail)
        return self._buffered == 0

    @property
    def stats(self) -> dict:
        """xrun counters (keys distinct from AudioInput's)."""
        return {"underflows": self.underflows, "device_underflows": self.device_underflows,
                "output_dropped": self.dropped}
