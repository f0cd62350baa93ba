"""Shared pieces of the transports: the error type, URL parsing, the Sender and Receiver interfaces.

See :mod:`streaming.transport` for the overview; this module holds what every transport builds on.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Iterator

from walloc_audio.bitstream import PACKET_HEADER_BYTES, StreamHeader
from walloc_audio.errors import WallocError

from .transport_jitter import STAT_KEYS

RECEIVER_STATS = ("datagrams", "bytes", *STAT_KEYS, "dropped_oversize", "dropped_session", "dropped_garbage",
                  "dropped_no_header")
_URL_HELP = "use udp://HOST:PORT, tcp://HOST:PORT, a file path, file:PATH or -"


class TransportError(WallocError):
    """A stream cannot be sent or received: bad URL, refused connection, bind failure, silence."""

    exit_code = 7


@dataclass(frozen=True)
class Endpoint:
    """A parsed URL: ``kind`` is ``"udp"``, ``"tcp"``, ``"file"`` or ``"stdio"``."""

    kind: str
    url: str
    host: str = ""
    port: int = 0
    path: str = ""


def parse_url(url: str, *, listen: bool = False) -> Endpoint:
    """Parse a transport URL (see :mod:`streaming.transport`); ``listen`` allows ``:PORT`` and port 0."""
    if not isinstance(url, str) or not url.strip():
        raise TransportError(f"empty transport URL: {_URL_HELP}")
    if url == "-":
        return Endpoint("stdio", url)
    if url.startswith("file:"):
        path = url[7:] if url.startswith("file://") else url[5:]
        if not path:
            raise TransportError(f"{url!r} names no file")
        return Endpoint("file", url, path=path)
    if "://" not in url:
        return Endpoint("file", url, path=url)
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in ("udp", "tcp"):
        raise TransportError(f"unsupported transport {scheme!r} in {url!r}: {_URL_HELP}")
    rest = rest[:-1] if rest.endswith("/") else rest
    if rest.startswith("["):  # [IPv6]:PORT
        host, sep, port = rest[1:].partition("]")
        if not sep or not port.startswith(":"):
            raise TransportError(f"bad address in {url!r}: expected [IPV6]:PORT")
        port = port[1:]
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise TransportError(f"{url!r} has no port: expected {scheme}://HOST:PORT")
    if any(c in host for c in "/?#@[]") or (":" in host and not rest.startswith("[")):
        raise TransportError(f"bad host {host!r} in {url!r}")
    if not port.isdigit() or not (0 if listen else 1) <= int(port) <= 65535:
        raise TransportError(f"bad port {port!r} in {url!r}: expected {'0' if listen else '1'}..65535")
    if not host:
        if not listen:
            raise TransportError(f"{url!r} has no host: a sender needs {scheme}://HOST:PORT")
        host = "127.0.0.1"  # listeners stay local unless told otherwise
    return Endpoint(scheme.lower(), url, host=host, port=int(port))


def resolve(ep: Endpoint, socktype: int) -> tuple[int, tuple]:
    """``(family, sockaddr)`` for an endpoint, preferring IPv4 (``localhost`` must meet ``127.0.0.1``)."""
    try:
        infos = socket.getaddrinfo(ep.host, ep.port, 0, socktype)
    except socket.gaierror as exc:
        raise TransportError(f"cannot resolve host {ep.host!r} in {ep.url!r} ({exc.strerror})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos[0][0], infos[0][4]


def packet_frames(data: bytes) -> int:
    """Frame count of one whole packet from ``pack_packet``/``pack_end`` (checks its length prefix)."""
    ok = isinstance(data, (bytes, bytearray)) and len(data) >= PACKET_HEADER_BYTES
    if not ok or int.from_bytes(data[:4], "little") != len(data) - PACKET_HEADER_BYTES:
        raise ValueError("expected exactly one packet as produced by pack_packet / pack_end")
    return int.from_bytes(data[8:10], "little")


class Sender:
    """Sends one stream: the header (at open), packets via :meth:`send`, then :meth:`finish`.

    ``stats``: ``packets`` (accepted, the end packet included), ``bytes`` (on the wire, framing
    included), ``datagrams`` (UDP only). Closing without ``finish`` leaves a truncated stream, which
    a file/TCP reader reports as an error -- on purpose.
    """

    def __init__(self, url: str):
        self.url = url
        self.stats = {"packets": 0, "bytes": 0, "datagrams": 0}
        self.finished = self.closed = False

    def send(self, packet: bytes) -> None:
        if self.closed or self.finished:
            raise ValueError("send() after finish() or close()")
        if packet_frames(packet) == 0:
            raise ValueError("send() takes data packets; pass the end packet to finish()")
        self._send(packet)
        self.stats["packets"] += 1

    def finish(self, end_packet: bytes) -> None:
        if self.closed or self.finished:
            raise ValueError("finish() after finish() or close()")
        if packet_frames(end_packet) != 0:
            raise ValueError("finish() takes the end packet from pack_end")
        self._finish(end_packet)
        self.stats["packets"] += 1
        self.finished = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, packet: bytes) -> None:
        raise NotImplementedError

    def _finish(self, end_packet: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class Receiver:
    """Yields events (see :mod:`streaming.transport`) by iteration or :meth:`next_event`.

    ``stats`` (all transports, zeros where a key cannot happen): ``datagrams``, ``bytes``,
    ``received`` (valid packets, end and duplicates included), ``delivered`` (packet events),
    ``lost`` (lost events), ``reordered``, ``duplicates``, ``late``, ``skipped``/``resyncs``
    (jumps over a gap too long to bridge), ``joined_late``, ``dropped_oversize``,
    ``dropped_session``, ``dropped_garbage``, ``dropped_no_header``.
    """

    port: int | None = None
    address: tuple | None = None

    def __init__(self, url: str):
        self.url = url
        self.header: StreamHeader | None = None
        self.done = False
        self.stats = dict.fromkeys(RECEIVER_STATS, 0)

    def next_event(self, timeout: float | None = None) -> tuple[str, object] | None:
        """The next event, or None if ``timeout`` seconds pass first or the stream has ended."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[str, object]]:
        while not self.done:
            event = self.next_event()
            if event is not None:
                yield event

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
