"""Transports: file/pipe/TCP carry the .wlc bytes verbatim; UDP survives loss, reordering and hostile peers.

Real sockets on 127.0.0.1 with ephemeral ports. The "network" is a shim that reads the sender's
datagrams and forwards them dropped, swapped, duplicated or delayed, so every count is exact.
"""

import io
import socket
import sys
import time

import numpy as np
import pytest

from streaming.transport import Endpoint, TransportError, open_receiver, open_sender, parse_url
from streaming.transport_jitter import JitterBuffer
from streaming.transport_udp import (END, HEADER, NEXT_SEQUENCE, PACKETS, PREFIX, compact_packet, pack_datagram,
                                     unpack_compact)
from walloc_audio.bitstream import (BitstreamReader, Packet, StreamHeader, header_bytes, pack_end, pack_packet)
from walloc_audio.errors import BitstreamError

HEADER_ = StreamHeader(model="test", model_sha256="ab" * 32, sample_rate=44100, channels=2, J=8, latent_dim=108,
                       frames_per_packet=2, source_sample_rate=44100, source_channels=2)


def make_stream(n: int, seed: int = 0, max_payload: int = 600) -> tuple[list[bytes], bytes]:
    """``n`` packets with random frame counts and payloads, and the end packet."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(1, 3, n)
    packets = [pack_packet(i, int(f), rng.bytes(int(rng.integers(1, max_payload)))) for i, f in enumerate(frames)]
    return packets, pack_end(n, int(frames.sum()) * 256 - 7, int(frames.sum()) * 256 - 7)


def view(events) -> list:
    """Events as comparable tuples; packets as (seq, frames, payload)."""
    return [(k, (v.sequence, v.frames, v.payload)) if k == "packet" else (k, v) for k, v in events]


def expected_view(packets: list[bytes], end: bytes, lost=()) -> list:
    r = BitstreamReader(io.BytesIO(header_bytes(HEADER_) + b"".join(packets) + end))
    out = [("header", r.header)]
    out += [("lost", p.sequence) if p.sequence in lost else ("packet", (p.sequence, p.frames, p.payload)) for p in r]
    return out + [("end", (r.num_samples, r.source_samples))]


def drain(rx, seconds: float = 5.0) -> list:
    """All events up to the end, failing the test (not hanging) after ``seconds``."""
    events, stop = [], time.monotonic() + seconds
    while not rx.done:
        assert time.monotonic() < stop, f"stream did not end; got {len(events)} events, stats {rx.stats}"
        event = rx.next_event(timeout=0.1)
        if event is not None:
            events.append(event)
    return events


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_all(url: str, packets, end, **kw):
    with open_sender(url, HEADER_, **kw) as tx:
        for p in packets:
            tx.send(p)
        tx.finish(end)
    return tx


# --- URLs ------------------------------------------------------------------------------------------


def test_parse_url_forms():
    assert parse_url("udp://example.org:5004") == Endpoint("udp", "udp://example.org:5004", "example.org", 5004)
    assert parse_url("udp://:0", listen=True).host == "127.0.0.1"  # listeners stay local by default
    assert parse_url("tcp://:9000", listen=True).host == "127.0.0.1"
    assert parse_url("udp://0.0.0.0:9000", listen=True).host == "0.0.0.0"
    assert parse_url("tcp://[::1]:9000").host == "::1"
    assert parse_url("-").kind == "stdio"
    assert parse_url("out/x.wlc").path == parse_url("file:out/x.wlc").path == "out/x.wlc"
    assert parse_url("file:///tmp/x.wlc").path == "/tmp/x.wlc"


@pytest.mark.parametrize("url,listen", [
    ("", False), ("http://host:80", False), ("udp://host", False), ("udp://:5000", False), ("udp://h:0", False),
    ("tcp://h:65536", True), ("tcp://h:port", True), ("udp://h:1/path", True), ("tcp://::1:80", False),
    ("file:", False),
])
def test_bad_urls_give_one_line_transport_error(url, listen):
    with pytest.raises(TransportError) as info:
        open_receiver(url) if listen else open_sender(url, HEADER_)
    assert info.value.exit_code == 7 and "\n" not in str(info.value)


def test_listeners_bind_localhost_unless_told(tmp_path):
    for url in ("udp://:0", "tcp://:0"):
        with open_receiver(url) as rx:
            assert rx.address[0] == "127.0.0.1" and rx.port > 0
    with open_receiver("udp://0.0.0.0:0") as rx:
        assert rx.address[0] == "0.0.0.0"


# --- file, pipe, TCP -------------------------------------------------------------------------------


def test_file_round_trip_is_a_wlc_file(tmp_path):
    packets, end = make_stream(20)
    path = tmp_path / "x.wlc"
    tx = send_all(str(path), packets, end)
    data = path.read_bytes()
    assert data == header_bytes(HEADER_) + b"".join(packets) + end
    assert tx.stats["packets"] == 21 and tx.stats["bytes"] == len(data)
    for source in (str(path), f"file:{path}", io.BytesIO(data)):
        with open_receiver(source) as rx:
            assert view(drain(rx)) == expected_view(packets, end)
            assert rx.stats["delivered"] == 20 and rx.stats["lost"] == 0


def test_file_object_and_stdio(monkeypatch):
    packets, end = make_stream(5)
    buf = io.BytesIO()
    send_all(buf, packets, end)
    out = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", out)
    send_all("-", packets, end)
    assert out.buffer.getvalue() == buf.getvalue()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    assert view(drain(open_receiver("-"))) == expected_view(packets, end)


def test_truncated_file_is_a_bitstream_error(tmp_path):
    packets, end = make_stream(3)
    path = tmp_path / "x.wlc"
    path.write_bytes(header_bytes(HEADER_) + b"".join(packets) + end[:-1])
    with open_receiver(str(path)) as rx, pytest.raises(BitstreamError, match="truncated"):
        drain(rx)
    with pytest.raises(TransportError, match="cannot open"):
        open_receiver(str(tmp_path / "missing.wlc"))


def test_tcp_round_trip():
    packets, end = make_stream(30)
    with open_receiver("tcp://:0", timeout=5) as rx:
        tx = send_all(f"tcp://127.0.0.1:{rx.port}", packets, end)  # the kernel queues it until accept
        assert view(drain(rx)) == expected_view(packets, end)
    assert rx.stats["bytes"] == tx.stats["bytes"] == len(header_bytes(HEADER_) + b"".join(packets) + end)


def test_tcp_peer_disconnecting_mid_stream():
    packets, _ = make_stream(5)
    with open_receiver("tcp://:0", timeout=5) as rx:
        with open_sender(f"tcp://localhost:{rx.port}", HEADER_) as tx:
            for p in packets:
                tx.send(p)
        with pytest.raises(BitstreamError, match="connection closed mid-stream"):
            drain(rx)
        assert rx.stats["delivered"] == 5


def test_tcp_refused_and_bounded_waits():
    with pytest.raises(TransportError, match="refused") as info:
        open_sender(f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}", HEADER_)
    assert "\n" not in str(info.value)
    with open_receiver("tcp://:0", timeout=0.2) as rx, pytest.raises(TransportError, match="no connection on"):
        rx.next_event()
    packets, _ = make_stream(2)
    with open_receiver("tcp://:0", timeout=0.3) as rx:
        assert rx.next_event(timeout=0.05) is None  # nobody connected yet: not an error
        with open_sender(f"tcp://127.0.0.1:{rx.port}", HEADER_) as tx:
            assert rx.next_event(timeout=1) == ("header", HEADER_)
            assert rx.next_event(timeout=0.05) is None  # connected but idle
            tx.send(packets[0])
            assert rx.next_event(timeout=1)[1].sequence == 0
            with pytest.raises(TransportError, match=r"no data from tcp://127\.0\.0\.1:\d+ for 0\.3 s"):
                rx.next_event()


# --- UDP -------------------------------------------------------------------------------------------


def test_udp_in_order_and_bundled():
    packets, end = make_stream(40, max_payload=200)  # 4 packets fit a datagram
    for delay, datagrams in [(0, 1 + 40 + 3), (3, 1 + 10 + 3)]:
        with open_receiver("udp://:0", timeout=5, max_wait=0.05) as rx:
            tx = send_all(f"udp://127.0.0.1:{rx.port}", packets, end, max_delay_packets=delay)
            assert view(drain(rx)) == expected_view(packets, end)
        assert tx.stats["datagrams"] == datagrams and tx.stats["packets"] == 41
        assert rx.stats["delivered"] == 40 and rx.stats["lost"] == rx.stats["dropped_garbage"] == 0


def test_udp_packet_too_big_for_a_datagram():
    big = pack_packet(0, 2, bytes(900))
    wide = StreamHeader(**{**HEADER_.__dict__, "frames_per_packet": 8})
    with open_receiver("udp://:0") as rx, open_sender(f"udp://127.0.0.1:{rx.port}", wide) as tx:
        tx.send(big)
        with pytest.raises(TransportError, match="packet of 1214 bytes does not fit a 1200-byte datagram"):
            tx.send(pack_packet(1, 8, bytes(1200)))


def test_udp_lossy_network():
    """Every 7th packet dropped, pairs swapped, some duplicated, one held back until declared lost."""
    n = 60
    packets, end = make_stream(n, max_payload=300)
    dropped = {s for s in range(n) if s % 7 == 3}
    held = 20  # sent after packet 26: by then 4 later packets have arrived, so it is declared lost
    swaps = [s for s in range(0, n - 1, 6) if not {s, s + 1} & dropped]
    dups = [s for s in range(n) if s % 11 == 5 and s not in dropped]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as shim:
        shim.bind(("127.0.0.1", 0))
        shim.settimeout(2)
        send_all(f"udp://127.0.0.1:{shim.getsockname()[1]}", packets, end)
        grams = [shim.recv(2048) for _ in range(1 + n + 3)]
    # Compact framing: kind in the low nibble of byte 2, the sequence number's low 16 bits at byte 7.
    header, by_seq, ends = grams[0], {int.from_bytes(g[7:9], "little"): g for g in grams[1:-3]}, grams[-3:]
    assert header[2] & 0xF == HEADER and {g[2] & 0xF for g in by_seq.values()} == {PACKETS}
    assert ends[0][2] & 0xF == END
    order = [s for s in range(n) if s not in dropped and s != held]
    for s in swaps:
        i = order.index(s)
        order[i], order[i + 1] = order[i + 1], order[i]
    for s in dups:
        order.insert(order.index(s) + 1, s)
    order.insert(order.index(26) + 1, held)
    with open_receiver("udp://:0", timeout=5, max_wait=0.3) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as net:
        for g in [header] + [by_seq[s] for s in order] + ends:
            net.sendto(g, rx.address)
        events = drain(rx)
    assert view(events) == expected_view(packets, end, lost=dropped | {held})
    st = rx.stats
    assert (st["lost"], st["late"], st["duplicates"], st["reordered"]) == (len(dropped) + 1, 1, len(dups), len(swaps))
    assert st["delivered"] == n - len(dropped) - 1 and st["joined_late"] == 0


def test_udp_late_join():
    port = free_port()
    packets, end = make_stream(60, max_payload=200)
    with open_sender(f"udp://127.0.0.1:{port}", HEADER_, header_interval=0.03) as tx:
        for p in packets[:20]:  # nobody listens yet: these are lost to the world
            tx.send(p)
        with open_receiver(f"udp://:{port}", timeout=5) as rx:
            for p in packets[20:]:
                tx.send(p)
                time.sleep(0.003)
            tx.finish(end)
            events = drain(rx)
    seqs = [v.sequence for k, v in events if k == "packet"]
    assert events[0] == ("header", HEADER_) and events[-1][0] == "end" and seqs
    assert seqs == list(range(seqs[0], 60)) and seqs[0] >= 20  # joined at a header repeat, then gapless
    assert rx.stats["joined_late"] == 1 and rx.stats["lost"] == 0
    assert rx.stats["dropped_no_header"] == seqs[0] - 20  # packets heard before the header came round


def test_udp_hostile_peers_are_counted_and_ignored():
    rng = np.random.default_rng(7)
    packets, end = make_stream(30, max_payload=300)
    session, other = 0x1234, 0x5678
    good = compact_packet(pack_packet(5, 2, b"x" * 50), 2)
    corrupt = bytearray(good)
    corrupt[-1] ^= 1
    absurd = good[:2] + (0xFFF | 2 << 12).to_bytes(2, "little") + good[4:]
    short = good[:2] + (500 | 2 << 12).to_bytes(2, "little") + good[4:]
    too_many_frames = compact_packet(pack_packet(5, 3, b"x"), 2)
    wrong_seq = compact_packet(pack_packet(5 + 40000, 2, b"x" * 50), 2)  # outside the window: CRC rejects it
    wrong_header = NEXT_SEQUENCE.pack(0) + header_bytes(StreamHeader(**{**HEADER_.__dict__, "J": 6}))
    garbage = [rng.bytes(int(rng.integers(0, 1200))) for _ in range(20)] + [
        pack_datagram(PACKETS, session, bytes(corrupt)), pack_datagram(PACKETS, session, absurd),
        pack_datagram(PACKETS, session, short), pack_datagram(PACKETS, session, too_many_frames),
        pack_datagram(PACKETS, session, good + b"\x00"), pack_datagram(PACKETS, session, b""),
        pack_datagram(PACKETS, session, wrong_seq),
        pack_datagram(PACKETS, session, compact_packet(pack_end(5, 1, 1), 2)),
        pack_datagram(END, session, pack_packet(5, 2, b"x" * 50)),
        pack_datagram(9, session, good), b"WU\x12" + pack_datagram(PACKETS, session, good)[3:], b"WU\x21",
        b"WLCU\x01\x01" + bytes(4) + pack_packet(5, 2, b"x" * 50),  # a version-1 datagram
        pack_datagram(HEADER, session, wrong_header), pack_datagram(HEADER, session, b"not a header"),
        pack_datagram(HEADER, session, b"\x00"),
    ]
    oversize = [pack_datagram(PACKETS, session, good + bytes(1500)), rng.bytes(1500), rng.bytes(5000)]
    strangers = [pack_datagram(HEADER, other, NEXT_SEQUENCE.pack(0) + header_bytes(HEADER_))] + [
        pack_datagram(PACKETS, other, compact_packet(packets[i], 2)) for i in range(3)] + [
        pack_datagram(END, other, end)]
    events = []
    with open_receiver("udp://:0", timeout=5, max_wait=0.3) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as evil:
        evil.sendto(pack_datagram(PACKETS, session, compact_packet(packets[0], 2)), rx.address)  # before any header
        evil.sendto(rng.bytes(64), rx.address)
        with open_sender(f"udp://127.0.0.1:{rx.port}", HEADER_, session=session) as tx:
            assert rx.next_event(timeout=2) == ("header", HEADER_)  # locked onto our session
            for i, p in enumerate(packets):
                tx.send(p)
                for g in (garbage + oversize + strangers)[i::len(packets)]:
                    evil.sendto(g, rx.address)
                while (event := rx.next_event(timeout=0)) is not None:  # keep the socket queue short
                    events.append(event)
            tx.finish(end)
        events += drain(rx)
    assert view([("header", HEADER_)] + events) == expected_view(packets, end)
    st = rx.stats
    assert st["dropped_garbage"] == len(garbage) + 1 and st["dropped_oversize"] == len(oversize)
    assert st["dropped_session"] == len(strangers) and st["dropped_no_header"] == 1
    assert st["lost"] == st["late"] == st["duplicates"] == 0 and st["delivered"] == 30


def test_udp_far_ahead_sequence_numbers_resync_with_bounded_state():
    seqs = [0] + list(range(10**6, 10**6 + 1001))
    with open_receiver("udp://:0", timeout=5, max_wait=0.05) as rx:
        # A jump beyond the 16-bit window is only understood at a header repeat (it carries the
        # full next sequence number): here one before every datagram.
        with open_sender(f"udp://127.0.0.1:{rx.port}", HEADER_, header_interval=0.0) as tx:
            events = []
            for i, s in enumerate(seqs):
                tx.send(pack_packet(s, 1, b"p"))
                if i % 50 == 0:
                    while (event := rx.next_event(timeout=0)) is not None:
                        events.append(event)
                    assert len(rx.jitter.buf) <= rx.jitter.capacity and len(rx.jitter.events) <= 2
                    assert len(rx.jitter._recent_set) <= rx.jitter.window
            tx.finish(pack_end(seqs[-1] + 1, 0, 0))
        events += drain(rx)
    assert [v.sequence for k, v in events if k == "packet"] == seqs
    st = rx.stats
    assert (st["lost"], st["skipped"], st["resyncs"], st["delivered"]) == (0, 10**6 - 1, 1, len(seqs))


def test_udp_silence_times_out():
    with open_receiver("udp://:0", timeout=0.3) as rx:
        assert rx.next_event(timeout=0.05) is None  # a short wait is not an error
        with pytest.raises(TransportError, match=r"no data from udp://127\.0\.0\.1:\d+ for 0\.3 s"):
            rx.next_event()


# --- the jitter buffer alone, on a made-up clock ---------------------------------------------------


def pkt(seq: int) -> Packet:
    return Packet(seq, 1, b"")


def pop(jb: JitterBuffer) -> list:
    out = [(k, v.sequence if k == "packet" else v) for k, v in jb.events]
    jb.events.clear()
    return out


def test_jitter_buffer_deadline_count_rule_and_start():
    jb = JitterBuffer(jitter_packets=3, max_wait=0.2)
    jb.push(pkt(1), 0.0)  # seq < jitter_packets: the stream starts at 0, which is missing
    jb.push(pkt(3), 0.05)
    assert pop(jb) == [] and jb.deadline() == pytest.approx(0.2)
    jb.expire(0.19)
    assert pop(jb) == []
    jb.expire(0.2)  # 0 times out; 1 follows; 2 is missing but 3 arrived 0.15 s ago
    assert pop(jb) == [("lost", 0), ("packet", 1)] and jb.deadline() == pytest.approx(0.25)
    jb.push(pkt(0), 0.21)
    jb.push(pkt(1), 0.21)
    jb.push(pkt(5), 0.22)
    jb.push(pkt(6), 0.22)  # 3 later packets buffered: 2 is lost without waiting
    assert pop(jb) == [("lost", 2), ("packet", 3)]
    jb.push(pkt(4), 0.23)  # arrived before the deadline: reordered, not lost
    assert pop(jb) == [("packet", 4), ("packet", 5), ("packet", 6)]
    assert {k: jb.stats[k] for k in ("lost", "late", "duplicates", "reordered", "joined_late")} == \
        {"lost": 2, "late": 1, "duplicates": 1, "reordered": 1, "joined_late": 0}
    late = JitterBuffer(jitter_packets=3)
    late.push(pkt(500), 0.0)
    assert pop(late) == [("packet", 500)] and late.stats["joined_late"] == 1


def test_jitter_buffer_stays_bounded_under_random_sequence_numbers():
    rng = np.random.default_rng(3)
    jb = JitterBuffer(jitter_packets=4, max_wait=0.1)
    for i, s in enumerate(rng.integers(0, 2**32, 20000)):
        jb.push(pkt(int(s) if i % 3 else int(jb.next or 0) + int(rng.integers(-5, 20))), i * 1e-3)
        assert len(jb.buf) <= jb.capacity and len(jb.events) <= 2 * jb.capacity + 1
        assert len(jb._recent) == len(jb._recent_set) <= jb.window
        jb.events.clear()


def test_compact_framing_is_six_bytes_and_rebuilds_sequence_numbers():
    assert PREFIX.size == 7
    full = pack_packet(70000, 2, b"payload")
    c = compact_packet(full, 2)
    assert len(c) == len(full) - 8 == 6 + 7  # 6 bytes of framing instead of 14
    for anchor in (70000, 69990, 70000 + 32767, 70000 - 32767):  # the window: anchor - 32768 .. anchor + 32767
        packet, end = unpack_compact(c, 0, HEADER_, anchor)
        assert (packet.sequence, packet.frames, packet.payload, end) == (70000, 2, b"payload", len(c))
    with pytest.raises(BitstreamError, match="CRC"):
        unpack_compact(c, 0, HEADER_, 70000 + 40000)  # too far: a wrong guess is never delivered
    one = compact_packet(pack_packet(3, 1, b"ab"), 2)  # a short last packet says its frame count
    assert unpack_compact(one, 0, HEADER_, 0)[0].frames == 1
    big = StreamHeader(**{**HEADER_.__dict__, "frames_per_packet": 64})
    odd = compact_packet(pack_packet(9, 40, b"z"), 64)  # frames >= 15: an explicit u16
    assert len(odd) == 6 + 2 + 1 and unpack_compact(odd, 0, big, 9)[0].frames == 40
