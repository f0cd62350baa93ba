"""Carry a ``.wlc`` stream -- header, packets, end packet -- over a file, a pipe, TCP or UDP.

The encoder produces a :class:`~walloc_audio.bitstream.StreamHeader`, then packets from
``pack_packet`` (sequence numbers 0, 1, 2, ..., each decodable on its own), then ``pack_end``.
A sender takes those bytes; a receiver gives back *events*::

    ("header", StreamHeader)              once, first
    ("packet", Packet)                    in sequence order
    ("lost", seq)                         a sequence number given up on (UDP only): conceal it
    ("end", (num_samples, source_samples))   last; nothing follows

URLs (``open_sender`` connects/writes to them, ``open_receiver`` binds/reads them)::

    udp://HOST:PORT   tcp://HOST:PORT     a listener may write udp://:PORT (binds 127.0.0.1;
                                          only an explicit host such as 0.0.0.0 binds wider)
                                          and port 0 (ephemeral; the bound port is ``.port``)
    PATH  file:PATH                       a .wlc file (or an open binary file object)
    -                                     stdout / stdin

Files, pipes and TCP carry the ``.wlc`` bytes verbatim (the container is already length-prefixed
and checksummed), so ``walloc-audio listen tcp://:9000 > x.wlc`` style plumbing yields a valid file,
and a receiver validates exactly as :class:`~walloc_audio.bitstream.BitstreamReader` does. Nothing
is lost there, so a gap, a bad checksum or a truncation is a :class:`BitstreamError`. A TCP peer
that disconnects mid-stream raises ``BitstreamError("...: connection closed mid-stream ...")``
(exit code 3, like a truncated file); after the end packet a TCP receiver does not wait for the
peer to close.

UDP (``transport_udp``) sends datagrams of at most 1200 bytes (fits any path MTU)::

    b"WLCU" | u8 version = 1 | u8 kind | u32 session (little-endian) | payload
    kind 0: header_bytes(header), resent every header_interval s so a listener can join late
    kind 1: one or more whole packets, concatenated      kind 2: the end packet (sent 3 times)

and the receiver reorders them in a bounded jitter buffer (``transport_jitter``): a missing packet
is declared lost once ``jitter_packets`` later packets are buffered or ``max_wait`` seconds after a
later one arrived; a packet more than ``4 * jitter_packets`` ahead makes the receiver *jump* to it
(resync, counted in ``stats["skipped"]``) rather than emit a loss per skipped packet.

Errors of the environment (bad URL, refused connection, bind failure, silence past ``timeout``)
raise :class:`TransportError` (exit code 7) with a one-line message.
"""

from __future__ import annotations

import sys

from walloc_audio.bitstream import StreamHeader

from .transport_base import (RECEIVER_STATS, Endpoint, Receiver, Sender, TransportError, packet_frames,
                             parse_url)
from .transport_stream import StreamReceiver, StreamSender, connect_tcp, open_file
from .transport_udp import UdpReceiver, UdpSender

__all__ = ["RECEIVER_STATS", "Endpoint", "Receiver", "Sender", "TransportError", "open_receiver", "open_sender",
           "packet_frames", "parse_url"]


def open_sender(url, header: StreamHeader, *, session: int | None = None, header_interval: float | None = 1.0,
                max_delay_packets: int = 0, connect_timeout: float = 5.0) -> Sender:
    """Start sending a stream to ``url`` (a URL string or an open binary file object).

    ``session``, ``header_interval`` and ``max_delay_packets`` (how many later packets a packet may
    wait for so they share a datagram; 0 sends each at once) only matter for UDP.
    """
    if hasattr(url, "write"):
        return StreamSender(getattr(url, "name", "<file>"), url, header, owns=False, flush_each=True)
    ep = parse_url(url)
    if ep.kind == "stdio":
        return StreamSender("<stdout>", sys.stdout.buffer, header, owns=False, flush_each=True)
    if ep.kind == "file":
        return StreamSender(ep.path, open_file(ep, "wb"), header, owns=True, flush_each=False)
    if ep.kind == "tcp":
        sock = connect_tcp(ep, connect_timeout)
        return StreamSender(url, sock.makefile("wb"), header, owns=True, flush_each=True, sock=sock)
    return UdpSender(ep, header, session=session, header_interval=header_interval,
                     max_delay_packets=max_delay_packets)


def open_receiver(url, *, jitter_packets: int = 4, max_wait: float = 0.2, timeout: float | None = None) -> Receiver:
    """Start receiving from ``url`` (a URL string or an open binary file object).

    A TCP or UDP receiver is bound when this returns (``.port`` is the bound port). ``timeout``:
    seconds of silence (no connection, no data) before :class:`TransportError`; None waits forever.
    ``jitter_packets`` and ``max_wait`` set the UDP jitter buffer (see ``transport_jitter``).
    """
    if hasattr(url, "read"):
        return StreamReceiver(getattr(url, "name", "<file>"), url, owns=False)
    ep = parse_url(url, listen=True)
    if ep.kind == "stdio":
        return StreamReceiver("<stdin>", sys.stdin.buffer, owns=False)
    if ep.kind == "file":
        return StreamReceiver(ep.path, open_file(ep, "rb"), owns=True)
    if ep.kind == "tcp":
        receiver = StreamReceiver(url, None, owns=False, timeout=timeout)
        receiver.listen(ep)
        return receiver
    return UdpReceiver(ep, jitter_packets=jitter_packets, max_wait=max_wait, timeout=timeout)
