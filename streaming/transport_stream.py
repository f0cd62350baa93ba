"""Stream transports -- a file, a pipe, a TCP connection -- carrying the ``.wlc`` bytes verbatim.

The container is already length-prefixed and checksummed, so nothing is added: what a TCP sender
writes is a valid ``.wlc`` file, and a receiver validates it exactly as ``BitstreamReader`` does.
Nothing is lost on these transports, so a gap, a bad checksum or a truncation is a
:class:`~walloc_audio.errors.BitstreamError`. A TCP peer that disconnects mid-stream raises
``BitstreamError("<url>: connection closed mid-stream (...)")`` -- exit code 3, like a truncated
file -- rather than ending with an error event: the stream cannot continue, and the caller
handles it like any other broken input. After the end packet a TCP receiver does not wait for
the peer to close (a file, however, must end there).
"""

from __future__ import annotations

import select
import socket
import time
from typing import BinaryIO, Iterator

from walloc_audio.bitstream import StreamHeader, end_packet_samples, header_bytes, read_header, read_packet
from walloc_audio.errors import BitstreamError

from .transport_base import Endpoint, Receiver, Sender, TransportError, resolve


class StreamSender(Sender):
    """File, pipe or TCP: the ``.wlc`` bytes verbatim, flushed per packet unless writing a file."""

    def __init__(self, url: str, f: BinaryIO, header: StreamHeader, *, owns: bool, flush_each: bool,
                 sock: socket.socket | None = None):
        super().__init__(url)
        self._f, self._owns, self._flush_each, self._sock = f, owns, flush_each, sock
        self._write(header_bytes(header))

    def _write(self, data: bytes) -> None:
        try:
            self._f.write(data)
            if self._flush_each:
                self._f.flush()
        except OSError as exc:  # broken pipe, reset connection, full disk
            raise TransportError(f"cannot write to {self.url}: {exc.strerror or exc}") from None
        self.stats["bytes"] += len(data)

    _send = _write

    def _finish(self, end_packet: bytes) -> None:
        self._write(end_packet)
        try:
            self._f.flush()
        except OSError as exc:
            raise TransportError(f"cannot write to {self.url}: {exc.strerror or exc}") from None

    def _close(self) -> None:
        try:
            if self._owns:
                self._f.close()
            else:
                self._f.flush()
        except OSError:
            pass  # closing after a broken pipe: the error was reported by the write
        if self._sock is not None:
            self._sock.close()


class _CountingReader:
    """Counts bytes and remembers a short read (end of file / closed connection)."""

    def __init__(self, f: BinaryIO, stats: dict):
        self.f, self.stats, self.eof = f, stats, False

    def ready(self, timeout: float | None) -> bool:
        return True  # a file or pipe read just blocks

    def read(self, n: int) -> bytes:
        data = self.f.read(n) or b""
        self.stats["bytes"] += len(data)
        self.eof |= len(data) < n
        return data


class _SocketReader(_CountingReader):
    """Buffered socket reads that can also wait, with a timeout, for the next byte to arrive.

    Waiting happens only *between* events (nothing is half-read then), so a caller's timeout
    never leaves the stream in an inconsistent state. ``n`` is bounded by the header's limits
    before it is asked for, so the buffer is too.
    """

    def __init__(self, sock: socket.socket, stats: dict):
        super().__init__(None, stats)
        self.sock, self.buf = sock, bytearray()

    def ready(self, timeout: float | None) -> bool:
        return bool(self.buf) or self.eof or bool(select.select([self.sock], [], [], timeout)[0])

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and not self.eof:
            chunk = self.sock.recv(1 << 16)  # the socket's own timeout bounds a stall mid-packet
            self.eof = not chunk
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        self.stats["bytes"] += len(data)
        return data


class StreamReceiver(Receiver):
    """File, pipe or TCP. For TCP, ``next_event(timeout)`` returns None if no connection or no
    next event starts within ``timeout``; the receiver's ``timeout`` (silence before a
    :class:`TransportError`) bounds the wait for a connection, between events and within a read.
    A file or pipe read blocks until the next event."""

    def __init__(self, url: str, f: BinaryIO | None, *, owns: bool, timeout: float | None = None):
        super().__init__(url)
        self._f, self._owns, self.timeout = f, owns, timeout
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._events: Iterator | None = None
        self._reader = None if f is None else _CountingReader(f, self.stats)
        self._heard = time.monotonic()  # when the peer last gave us something

    def listen(self, ep: Endpoint) -> None:
        family, addr = resolve(ep, socket.SOCK_STREAM)
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(addr)
            self._listener.listen(1)
        except OSError as exc:
            self._listener.close()
            raise TransportError(f"cannot listen on {ep.url}: {exc.strerror or exc}") from None
        self.address = self._listener.getsockname()[:2]
        self.port = self.address[1]
        self.url = f"tcp://{self.address[0]}:{self.port}"

    def _wait(self, timeout: float | None, ready, what: str) -> bool:
        """Wait for ``ready(seconds)``: False when the caller's timeout passes, raise on silence."""
        silent_left = None if self.timeout is None else self._heard + self.timeout - time.monotonic()
        waits = [t for t in (timeout, silent_left) if t is not None]
        if ready(max(0.0, min(waits)) if waits else None):
            return True
        if silent_left is not None and time.monotonic() >= self._heard + self.timeout:
            raise TransportError(f"{what} {self.url} for {self.timeout:g} s")
        return False

    def next_event(self, timeout: float | None = None) -> tuple[str, object] | None:
        if self.done:
            return None
        try:
            if self._reader is None:  # a TCP listener: one connection, accepted on first use
                if not self._wait(timeout, lambda t: select.select([self._listener], [], [], t)[0], "no connection on"):
                    return None
                self._conn, _ = self._listener.accept()
                self._listener.close()
                self._conn.settimeout(self.timeout)
                self._reader = _SocketReader(self._conn, self.stats)
                self._heard = time.monotonic()
            if not self._wait(timeout, self._reader.ready, "no data from"):
                return None
            if self._events is None:
                self._events = self._read_events(self._reader)
            event = next(self._events)
        except TransportError:
            self.done = True
            raise
        except TimeoutError:
            self.done = True
            raise TransportError(f"no data from {self.url} for {self.timeout:g} s (stalled mid-packet)") from None
        except (ConnectionError, BitstreamError) as exc:
            self.done = True
            if self._conn is not None and (isinstance(exc, ConnectionError) or self._reader.eof):
                raise BitstreamError(f"{self.url}: connection closed mid-stream ({exc})") from None
            raise
        self._heard = time.monotonic()
        self.done = event[0] == "end"
        return event

    def _read_events(self, f: _CountingReader) -> Iterator[tuple[str, object]]:
        # The same checks as BitstreamReader, one event at a time.
        self.header = header = read_header(f)
        yield "header", header
        expected = frames = 0
        while True:
            packet = read_packet(f, header)
            if packet.sequence != expected:
                raise BitstreamError(f"packet {expected} missing (found {packet.sequence})")
            expected += 1
            self.stats["received"] += 1
            if packet.frames == 0:
                num_samples, source_samples = end_packet_samples(packet)
                held = frames * 2**header.J
                if num_samples > held:
                    raise BitstreamError(f"end packet claims {num_samples} samples, packets hold {held}")
                if self._conn is None and f.read(1):  # a file must end here; a socket need not close yet
                    raise BitstreamError("unexpected data after the end packet")
                yield "end", (num_samples, source_samples)
                return
            frames += packet.frames
            self.stats["delivered"] += 1
            yield "packet", packet

    def close(self) -> None:
        for thing in (self._f if self._owns else None, self._conn, self._listener):
            if thing is not None:
                thing.close()


def open_file(ep: Endpoint, mode: str) -> BinaryIO:
    try:
        return open(ep.path, mode)
    except OSError as exc:
        raise TransportError(f"cannot open {ep.path}: {exc.strerror or exc}") from None


def connect_tcp(ep: Endpoint, connect_timeout: float | None) -> socket.socket:
    """A connected TCP socket with Nagle off (a packet goes out when written), blocking sends."""
    try:
        sock = socket.create_connection((ep.host, ep.port), timeout=connect_timeout)
    except ConnectionRefusedError:
        raise TransportError(f"connection refused by {ep.url} (is a listener running?)") from None
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve host {ep.host!r} in {ep.url!r} ({exc.strerror})") from None
    except OSError as exc:
        raise TransportError(f"cannot connect to {ep.url}: {exc.strerror or exc}") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
