"""UDP transport: ``.wlc`` packets in small datagrams with 6-byte framing, a session id, a repeated header.

Datagram format, version 2 (integers little-endian, like the ``.wlc`` container)::

    offset 0   2 bytes  magic b"WU"
           2   u8       version << 4 | kind: kind 0 header, 1 packets, 2 end
           3   u32      session id: random per sender, so a listener can tell streams apart
           7   payload  kind 0: u32 next sequence number, then header_bytes(header)
                        kind 1: one or more compact packets, concatenated
                        kind 2: exactly one end packet from pack_end (full framing)

    compact packet   u16  sequence number, low 16 bits
                     u16  payload length (low 12 bits) | frame code << 12
                          (0: the header's frames_per_packet; 1..14: that many; 15: a u16 follows)
                     u16  CRC: low 16 bits of the packet's CRC-32 in the file format, which covers
                          the *full* 32-bit sequence number, the frame count and the payload
                     [u16 frames, frame code 15 only]   payload

A packet costs 6 bytes of framing (14 in a file) and a datagram 7 more: 13 bytes per packet
when each packet goes alone, against 24 in version 1 -- at J=8 and two frames per packet
(86 packets/s) 9.0 kbps of framing instead of 16.5. The receiver rebuilds the full sequence number as the one nearest to
the next it expects (a window of +-32767 packets, minutes of audio), and the CRC over the full
number rejects a wrong guess: a packet is never delivered under another number. The header
datagram carries the sender's next sequence number, so a late listener, or one that lost more
than the window, re-anchors at the next header repeat.

A datagram is at most 1200 bytes: under the IPv6 minimum MTU (1280) less IP/UDP headers, so it is
never fragmented (a lost fragment would lose the whole datagram). Each packet is checked like a
file's (size limits against the header, CRC); a packet too big for one datagram is refused at
the sender.

Sender: the header datagram goes out at open and again before the next datagram once
``header_interval`` seconds have passed (a live stream sends several datagrams a second, so a
late listener waits about that long). Packets go out at once by default; ``max_delay_packets=k``
lets a packet wait for up to k later ones so they share a datagram (fewer datagrams, more
latency). The end datagram is sent three times, as a lost end would leave a listener waiting.
A refused datagram (ICMP port unreachable: nobody listens yet) is counted, not an error.

Receiver: it binds, waits for a header datagram, locks onto that session and ignores other
sessions. Every datagram is classified exactly once in ``stats``: over 1200 bytes ->
``dropped_oversize``; bad magic/version/kind/size, a bad header, or any packet in it failing
its checks (size limits, CRC) -> ``dropped_garbage`` (the whole datagram: all or nothing);
packets before any header -> ``dropped_no_header``; another session -> ``dropped_session``;
otherwise its packets go to the :class:`~streaming.transport_jitter.JitterBuffer`. Memory is
bounded whatever a peer sends: one 2048-byte receive buffer, the jitter buffer's capacity, and
a constant number of events per datagram.
"""

from __future__ import annotations

import io
import math
import secrets
import socket
import struct
import time

from walloc_audio.bitstream import (PACKET_HEADER_BYTES, Packet, StreamHeader, end_packet_samples, header_bytes,
                                    packet_limits, read_header, unpack_packet)
from walloc_audio.errors import BitstreamError

from .transport_base import Endpoint, Receiver, Sender, TransportError, resolve
from .transport_jitter import JitterBuffer

MAGIC = b"WU"
VERSION = 2
HEADER, PACKETS, END = 0, 1, 2
MAX_DATAGRAM = 1200
RECV_BUFFER = 2048  # anything read that is longer than MAX_DATAGRAM is counted oversize
PREFIX = struct.Struct("<2sBI")
COMPACT = struct.Struct("<HHH")
FULL_PACKET = struct.Struct("<IIHI")  # the file format's packet framing (walloc_audio.bitstream)
NEXT_SEQUENCE = struct.Struct("<I")
MAX_BODY = MAX_DATAGRAM - PREFIX.size
END_REPEATS = 3
MAX_COMPACT_PAYLOAD = 0xFFF
EXPLICIT_FRAMES = 15
PACKET_FRAMING_BYTES = COMPACT.size  # what a packet costs on the wire beside its payload (plus PREFIX per datagram)


def pack_datagram(kind: int, session: int, payload: bytes) -> bytes:
    return PREFIX.pack(MAGIC, VERSION << 4 | kind, session) + payload


def parse_prefix(data: bytes) -> tuple[int, int] | None:
    """``(kind, session)`` of a datagram, or None if it is not one of ours."""
    if len(data) < PREFIX.size:
        return None
    magic, vk, session = PREFIX.unpack_from(data)
    return (vk & 0xF, session) if magic == MAGIC and vk >> 4 == VERSION else None


def compact_packet(packet: bytes, frames_per_packet: int) -> bytes:
    """A file-format packet (``pack_packet``) in the 6-byte datagram framing."""
    length, seq, frames, crc = FULL_PACKET.unpack_from(packet)
    if length > MAX_COMPACT_PAYLOAD:
        raise TransportError(f"packet of {length} bytes does not fit a {MAX_DATAGRAM}-byte datagram; "
                             "use fewer frames per packet")
    code = 0 if frames == frames_per_packet else frames if 1 <= frames < EXPLICIT_FRAMES else EXPLICIT_FRAMES
    out = COMPACT.pack(seq & 0xFFFF, length | code << 12, crc & 0xFFFF)
    if code == EXPLICIT_FRAMES:
        out += struct.pack("<H", frames)
    return out + packet[FULL_PACKET.size:]


def unpack_compact(data: bytes, offset: int, header: StreamHeader, anchor: int) -> tuple[Packet, int]:
    """One compact packet from ``data[offset:]``, its sequence number rebuilt near ``anchor``."""
    import zlib

    if len(data) - offset < COMPACT.size:
        raise BitstreamError("truncated packet framing")
    lo, word, crc16 = COMPACT.unpack_from(data, offset)
    offset += COMPACT.size
    length, code = word & 0xFFF, word >> 12
    if code == EXPLICIT_FRAMES:
        if len(data) - offset < 2:
            raise BitstreamError("truncated packet framing")
        frames = int.from_bytes(data[offset : offset + 2], "little")
        offset += 2
    else:
        frames = code or header.frames_per_packet
    if not 1 <= frames <= header.frames_per_packet or length > packet_limits(header, frames):
        raise BitstreamError(f"packet: {frames} frames / {length} bytes exceed the header's limits")
    if len(data) - offset < length:
        raise BitstreamError("truncated payload")
    payload = bytes(data[offset : offset + length])
    delta = (lo - anchor) & 0xFFFF
    seq = anchor + (delta - 0x10000 if delta >= 0x8000 else delta)
    if not 0 <= seq < 2**32 or zlib.crc32(struct.pack("<IH", seq, frames) + payload) & 0xFFFF != crc16:
        raise BitstreamError("packet CRC mismatch")
    return Packet(seq, frames, payload), offset + length


class UdpSender(Sender):
    """Sends one stream as datagrams to ``udp://HOST:PORT``; ``self.session`` is its id.

    Extra ``stats``: ``headers`` (header datagrams sent), ``refused`` (datagrams the OS reported
    unreachable).
    """

    def __init__(self, ep: Endpoint, header: StreamHeader, *, session: int | None = None,
                 header_interval: float | None = 1.0, max_delay_packets: int = 0):
        super().__init__(ep.url)
        if session is not None and not 0 <= session < 2**32:
            raise ValueError(f"session must be a u32, got {session}")
        if max_delay_packets < 0:
            raise ValueError(f"max_delay_packets must be >= 0, got {max_delay_packets}")
        self.session = secrets.randbits(32) if session is None else session
        self.header_interval, self.max_delay_packets = header_interval, max_delay_packets
        hb = header_bytes(header)
        if len(hb) > MAX_BODY:
            raise TransportError(f"stream header of {len(hb)} bytes does not fit a {MAX_DATAGRAM}-byte datagram")
        self._header_bytes = hb
        self._frames_per_packet = header.frames_per_packet
        self._next_sequence = 0
        family, self._addr = resolve(ep, socket.SOCK_DGRAM)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.stats.update(headers=0, refused=0)
        self._queue: list[bytes] = []
        self._queued = 0
        self._last_header = -math.inf
        self._send_header()

    def _send(self, packet: bytes) -> None:
        if len(packet) - PACKET_HEADER_BYTES + COMPACT.size > MAX_BODY:
            raise TransportError(f"packet of {len(packet)} bytes does not fit a {MAX_DATAGRAM}-byte datagram; "
                                 "use fewer frames per packet")
        self._next_sequence = FULL_PACKET.unpack_from(packet)[1] + 1
        packet = compact_packet(packet, self._frames_per_packet)
        if self._queued + len(packet) > MAX_BODY:
            self.flush()
        self._queue.append(packet)
        self._queued += len(packet)
        if len(self._queue) > self.max_delay_packets:
            self.flush()

    def flush(self) -> None:
        """Send the queued packets now (only needed with ``max_delay_packets > 0``)."""
        if self._queue:
            self._maybe_header()
            self._sendto(pack_datagram(PACKETS, self.session, b"".join(self._queue)))
            self._queue.clear()
            self._queued = 0

    def _finish(self, end_packet: bytes) -> None:
        self.flush()
        self._maybe_header()
        datagram = pack_datagram(END, self.session, end_packet)
        for _ in range(END_REPEATS):
            self._sendto(datagram)

    def _close(self) -> None:
        try:
            self.flush()
        finally:
            self.sock.close()

    def _maybe_header(self) -> None:
        if self.header_interval is not None and time.monotonic() - self._last_header >= self.header_interval:
            self._send_header()

    def _send_header(self) -> None:
        self._sendto(pack_datagram(HEADER, self.session, NEXT_SEQUENCE.pack(self._next_sequence & 0xFFFFFFFF)
                                   + self._header_bytes))
        self.stats["headers"] += 1
        self._last_header = time.monotonic()

    def _sendto(self, datagram: bytes) -> None:
        try:
            self.sock.sendto(datagram, self._addr)
        except ConnectionRefusedError:
            self.stats["refused"] += 1
            return
        except OSError as exc:
            raise TransportError(f"cannot send to {self.url}: {exc.strerror or exc}") from None
        self.stats["datagrams"] += 1
        self.stats["bytes"] += len(datagram)


class UdpReceiver(Receiver):
    """Listens on ``udp://HOST:PORT`` for one stream; see the module docstring."""

    def __init__(self, ep: Endpoint, *, jitter_packets: int = 4, max_wait: float = 0.2,
                 timeout: float | None = None):
        super().__init__(ep.url)
        self.jitter = JitterBuffer(jitter_packets, max_wait, self.stats)
        family, addr = resolve(ep, socket.SOCK_DGRAM)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # ride out bursts
        except OSError:
            pass
        try:
            self.sock.bind(addr)
        except OSError as exc:
            self.sock.close()
            raise TransportError(f"cannot bind {ep.url}: {exc.strerror or exc}") from None
        self.address = self.sock.getsockname()[:2]
        self.port = self.address[1]
        self.url = f"udp://{self.address[0]}:{self.port}"
        self.timeout = timeout
        self.session: int | None = None
        self._header_payload = b""
        self._anchor = 0  # the sequence number the next packet is expected near
        self._end_seen = False
        self._last_data = time.monotonic()

    def next_event(self, timeout: float | None = None) -> tuple[str, object] | None:
        # Wait for a datagram no longer than the nearest of: the caller's timeout, the jitter
        # buffer's deadline, the silence timeout. timeout=0 polls: it reads what is queued.
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self.jitter.expire(now)
            if self.jitter.events:
                event = self.jitter.events.popleft()
                self.done = event[0] == "end"
                return event
            if self.done:
                return None
            silent_until = None if self.timeout is None else self._last_data + self.timeout
            last_try = give_up is not None and now >= give_up
            waits = [t - now for t in (give_up, silent_until, self.jitter.deadline()) if t is not None]
            self.sock.settimeout(0.0 if last_try else max(min(waits), 1e-4) if waits else None)
            try:
                data = self.sock.recv(RECV_BUFFER)
            except (TimeoutError, BlockingIOError, ConnectionRefusedError):
                if silent_until is not None and time.monotonic() >= silent_until:
                    raise TransportError(f"no data from {self.url} for {self.timeout:g} s") from None
                if last_try:
                    return None
                continue
            except OSError as exc:
                raise TransportError(f"cannot receive on {self.url}: {exc.strerror or exc}") from None
            self._last_data = time.monotonic()
            self._handle(data, self._last_data)

    def _handle(self, data: bytes, now: float) -> None:
        st = self.stats
        st["datagrams"] += 1
        st["bytes"] += len(data)
        if len(data) > MAX_DATAGRAM:
            st["dropped_oversize"] += 1
            return
        prefix = parse_prefix(data)
        if prefix is None:
            st["dropped_garbage"] += 1
            return
        kind, session = prefix
        if kind == HEADER:
            self._on_header(session, data[PREFIX.size:])
        elif self.session is None:
            st["dropped_no_header"] += 1
        elif session != self.session:
            st["dropped_session"] += 1
        else:
            try:
                packets = self._parse(kind, data)
            except BitstreamError:
                st["dropped_garbage"] += 1
                return
            for packet in packets:
                self.jitter.push(packet, now)

    def _on_header(self, session: int, payload: bytes) -> None:
        if len(payload) < NEXT_SEQUENCE.size:
            self.stats["dropped_garbage"] += 1
            return
        next_sequence, body = NEXT_SEQUENCE.unpack_from(payload)[0], payload[NEXT_SEQUENCE.size:]
        if self.session is None:
            f = io.BytesIO(body)
            try:
                header = read_header(f)
                if f.read(1):
                    raise BitstreamError("trailing bytes after the header")
            except BitstreamError:
                self.stats["dropped_garbage"] += 1
                return
            self.session, self.header, self._header_payload = session, header, body
            self._anchor = next_sequence
            self.jitter.events.append(("header", header))
        elif session != self.session:
            self.stats["dropped_session"] += 1
        elif body != self._header_payload:
            self.stats["dropped_garbage"] += 1  # same session, different header: not a repeat
        else:  # the periodic repeat of our header: re-anchor the sequence numbers
            self._anchor = next_sequence

    def _parse(self, kind: int, data: bytes) -> list:
        offset, packets = PREFIX.size, []
        if kind == PACKETS:
            anchor = self._anchor
            while offset < len(data):
                packet, offset = unpack_compact(data, offset, self.header, anchor)
                anchor = max(anchor, packet.sequence + 1)
                packets.append(packet)
            if not packets:
                raise BitstreamError("empty packet datagram")
            self._anchor = anchor  # only a datagram that passed every check moves the anchor
        elif kind == END:
            packet, offset = unpack_packet(data, offset, self.header)
            if packet.frames != 0 or offset != len(data):
                raise BitstreamError("malformed end datagram")
            end_packet_samples(packet)  # checks the payload
            if not self._end_seen:  # the end is sent three times; keep the first
                self._end_seen = True
                packets.append(packet)
        else:
            raise BitstreamError(f"unknown datagram kind {kind}")
        return packets

    def close(self) -> None:
        self.sock.close()
