"""A bounded jitter buffer: packets in, in-order events out, losses declared on a deadline.

A datagram network may lose, duplicate and reorder packets. The decoder wants them in sequence
order, and it cannot wait forever for one that is never coming: live audio has a play-out clock.
The buffer turns arrivals into events

    ("packet", Packet)        the next packet in sequence order
    ("lost", seq)             a sequence number given up on (the decoder conceals it)
    ("end", (samples, source_samples))   the end packet; nothing follows

Policy, with ``next`` the sequence number the decoder needs next:

* ``next`` present -> deliver it at once (and any that follow it without a hole).
* ``next`` missing -> it is declared lost when ``jitter_packets`` later packets are buffered, or
  when ``max_wait`` seconds have passed since the earliest-arrived buffered packet came in. So a
  reordering of up to ``jitter_packets - 1`` places, or up to ``max_wait`` of delay, costs nothing.
* At most ``capacity = 4 * jitter_packets`` packets are held, and only sequence numbers in
  ``[next, next + capacity)`` are buffered. A packet further ahead is a **resync**: the network lost
  more than the buffer could bridge (an outage, or a listener that fell behind). The buffered
  packets are delivered (their holes declared lost -- at most ``capacity`` events) and ``next``
  *jumps* to the new packet. The skipped range is counted in ``stats["skipped"]`` but gets no
  ``lost`` events: concealing an outage packet by packet would only add latency to a live stream,
  and a hostile sequence number (say 4e9) must not make us emit billions of events.
* A packet below ``next`` is a duplicate if it was delivered recently, otherwise ``late`` (declared
  lost, skipped, or from before we joined); either way it is dropped.
* Start: if the first packet heard has ``seq < jitter_packets``, the stream is taken to start at 0
  (missing early packets are lost like any other); otherwise the listener *joined late*, starts at
  that packet, and ``stats["joined_late"] = 1``.
* The end packet (``frames == 0``, sequence number = number of data packets) is buffered like a
  packet, so a reordered end still waits for the stragglers before it under the same rules.

Sequence numbers are u32 and do not wrap in practice (86 packets/s lasts 1.5 years).
Everything is bounded: the buffer by ``capacity``, the duplicate window by ``window``, the events
produced by one arrival by ``2 * capacity + 1``.
"""

from __future__ import annotations

from collections import deque

from walloc_audio.bitstream import Packet, end_packet_samples

STAT_KEYS = ("received", "delivered", "lost", "reordered", "duplicates", "late", "skipped", "resyncs",
             "joined_late")


class JitterBuffer:
    """Reorders packets of one stream; see the module docstring for the policy.

    ``push(packet, now)`` and ``expire(now)`` append events to ``self.events`` (a deque the caller
    pops); ``deadline()`` says when ``expire`` next has something to do. Times are in seconds from
    any monotonic clock, so tests can drive it with made-up times.
    """

    def __init__(self, jitter_packets: int = 4, max_wait: float = 0.2, stats: dict | None = None):
        if jitter_packets < 1 or max_wait < 0:
            raise ValueError(f"need jitter_packets >= 1 and max_wait >= 0, got {jitter_packets}, {max_wait}")
        self.jitter_packets, self.max_wait = jitter_packets, max_wait
        self.capacity = 4 * jitter_packets
        self.stats = stats if stats is not None else {}
        for key in STAT_KEYS:
            self.stats.setdefault(key, 0)
        self.events: deque = deque()
        self.next: int | None = None
        self.highest = -1
        self.done = False
        self.buf: dict[int, tuple[Packet, float]] = {}  # seq -> (packet, arrival time)
        self.window = max(256, 4 * self.capacity)
        self._recent: deque[int] = deque()  # recently delivered seqs, oldest first
        self._recent_set: set[int] = set()

    def push(self, packet: Packet, now: float) -> None:
        if self.done:
            return
        st, seq = self.stats, packet.sequence
        st["received"] += 1
        if self.next is None:
            self.next = 0 if seq < self.jitter_packets else seq
            st["joined_late"] = int(self.next > 0)
        if seq < self.next:
            st["duplicates" if seq in self._recent_set else "late"] += 1
            return
        if seq in self.buf:
            st["duplicates"] += 1
            return
        if seq < self.highest:
            st["reordered"] += 1
        self.highest = max(self.highest, seq)
        if seq >= self.next + self.capacity:
            self._resync(seq)
            if self.done:
                return
        self.buf[seq] = (packet, now)
        self._drain(now)

    def expire(self, now: float) -> None:
        """Declare losses whose ``max_wait`` has run out."""
        if not self.done:
            self._drain(now)

    def deadline(self) -> float | None:
        """When the missing ``next`` times out, or None if nothing is waiting."""
        if self.done or not self.buf or self.next in self.buf:
            return None
        return min(t for _, t in self.buf.values()) + self.max_wait

    def _drain(self, now: float) -> None:
        while self.buf and not self.done:
            if self.next in self.buf:
                self._deliver(self.buf.pop(self.next)[0])
            elif len(self.buf) >= self.jitter_packets or now >= self.deadline():
                self._lose(self.next)
            else:
                return

    def _resync(self, seq: int) -> None:
        # Everything buffered is below next + capacity: flushing emits at most `capacity` losses.
        while self.buf and not self.done:
            if self.next in self.buf:
                self._deliver(self.buf.pop(self.next)[0])
            else:
                self._lose(self.next)
        if not self.done:
            self.stats["skipped"] += seq - self.next
            self.stats["resyncs"] += 1
            self.next = seq

    def _lose(self, seq: int) -> None:
        self.events.append(("lost", seq))
        self.stats["lost"] += 1
        self.next = seq + 1

    def _deliver(self, packet: Packet) -> None:
        self.next = packet.sequence + 1
        if packet.frames == 0:
            self.events.append(("end", end_packet_samples(packet)))
            self.done = True
            self.buf.clear()
            return
        self.events.append(("packet", packet))
        self.stats["delivered"] += 1
        self._recent.append(packet.sequence)
        self._recent_set.add(packet.sequence)
        if len(self._recent) > self.window:
            self._recent_set.discard(self._recent.popleft())
