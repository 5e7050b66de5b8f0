"""The outgoing queues and their flusher, on real socket pairs.

Where a test needs to control when writing happens it plays the flusher itself: the queue's
Flusher is never started, so only the test calls flush().
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from parley_server.outgoing import BLOCKED, DRAINED, MORE, Flusher, OutgoingQueue, fan_out


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def make_queue(sock, limit=4 << 20, flusher=None):
    failures = []
    q = OutgoingQueue(sock, limit, flusher or Flusher(), on_fail=lambda *a: failures.append(a))
    return q, failures


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(1 << 20, n - len(out)))
        assert chunk, "peer closed early"
        out += chunk
    return bytes(out)


def test_more_messages_than_one_gathered_send_takes_arrive_whole_and_in_order(pair):
    a, b = pair
    q, failures = make_queue(a)
    messages = [f"message {i:05d};".encode() for i in range(3000)]  # more than IOV_MAX
    for msg in messages:
        assert q.put(msg)
    expected = b"".join(messages)
    received = bytearray()
    for _ in range(100):  # bounded: each round sends up to 1024 buffers
        outcome = q.flush()
        b.setblocking(False)
        try:
            while True:
                received += b.recv(1 << 20)
        except BlockingIOError:
            pass
        if outcome == DRAINED:
            break
    assert bytes(received) == expected
    assert q.queued_bytes == 0
    assert failures == []


def test_a_peer_that_stops_reading_blocks_the_queue_and_gets_everything_once_it_reads(pair):
    a, b = pair
    q, failures = make_queue(a)
    block = bytes(range(256)) * 64  # 16 KiB, every byte position recognisable
    for _ in range(64):  # 1 MiB: far more than the socket buffers hold
        q.put(block)
    assert q.flush() == BLOCKED
    assert 0 < q.queued_bytes < 64 * len(block)
    received = bytearray()
    for _ in range(10_000):  # bounded: each round moves at least one buffer's worth
        received += b.recv(1 << 20)
        outcome = q.flush()
        if outcome == DRAINED:
            break
        assert outcome in (BLOCKED, MORE)
    b.settimeout(0.5)
    try:
        while len(received) < 64 * len(block):
            received += b.recv(1 << 20)
    except TimeoutError:
        pass
    assert bytes(received) == block * 64
    assert failures == []


def test_overflowing_the_sendq_refuses_the_message_and_reports_once(pair):
    a, _b = pair
    q, failures = make_queue(a, limit=1000)
    assert q.put(b"x" * 600)
    assert not q.put(b"y" * 600)
    assert not q.put(b"z")
    assert failures == [("sendq_exceeded", "SendQ exceeded: the client is not reading")]


def test_fan_out_counts_the_queues_that_took_the_message(pair):
    a, b = pair
    c, d = socket.socketpair()
    try:
        flusher = Flusher()
        q1, _ = make_queue(a, flusher=flusher)
        q2, _ = make_queue(c, flusher=flusher)
        q2.close(timeout=0)  # closed: takes nothing more
        assert fan_out([q1, q2], b"hello") == 1
        assert q1.flush() == DRAINED
        assert read_exactly(b, 5) == b"hello"
    finally:
        c.close()
        d.close()


def test_close_waits_until_a_running_flusher_has_written_everything(pair):
    a, b = pair
    flusher = Flusher()
    flusher.start()
    try:
        q, failures = make_queue(a, flusher=flusher)
        payload = b"p" * (256 << 10)  # more than the socket takes at once
        reader_done = threading.Event()
        got = []

        def read_all() -> None:
            got.append(read_exactly(b, len(payload)))
            reader_done.set()

        assert q.put(payload)
        threading.Thread(target=read_all, daemon=True).start()
        start = time.monotonic()
        q.close(timeout=10)
        assert time.monotonic() - start < 10
        assert q.queued_bytes == 0
        assert reader_done.wait(10)
        assert got == [payload]
        assert failures == []
    finally:
        flusher.stop()


def test_close_of_an_idle_queue_returns_at_once(pair):
    a, _b = pair
    q, _ = make_queue(a)
    start = time.monotonic()
    q.close(timeout=5)
    assert time.monotonic() - start < 1
    assert not q.put(b"late")
