"""The sans-IO Sender/Receiver pair through a simulated channel (loss, duplication, reordering,
delay, corruption), driven by simulated time: no sockets, no clocks."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import transfer_wire as wire
from protocol.transfer import ACK_DELAY, INITIAL_WINDOW, Receiver, Sender

CLIENT = ("10.0.0.2", 40000)
TOKEN = bytes(range(16))
TID = 0x1234_5678_9ABC_DEF0


@dataclass
class Channel:
    loss: float = 0.0
    dup: float = 0.0
    jitter: float = 0.0        # uniform extra delay: reorders datagrams sent close together
    delay: float = 0.002
    corrupt_seq: int | None = None   # flip one payload byte of the first DATA with this number
    seed: int = 0


@dataclass
class Result:
    data: bytes
    sender: Sender
    receiver: Receiver
    datagrams_to_client: int
    elapsed: float


def run(payload: bytes, block_size: int, channel: Channel, *, offset: int = 0,
        window: int = 512, max_events: int = 2_000_000) -> Result:
    rng = random.Random(channel.seed)
    sender = Sender(TID, TOKEN, len(payload), offset, block_size, CLIENT[0], expires_at=30.0)
    receiver = Receiver(TID, TOKEN, len(payload), offset, block_size, window=window)
    out = bytearray(payload[:offset]) + bytearray(len(payload) - offset)
    queue: list = []
    counter = itertools.count()
    sent_to_client = 0
    corrupt_pending = channel.corrupt_seq

    def read(off: int, length: int) -> bytes:
        return payload[off:off + length]

    def transmit(to_server: bool, datagram: bytes, now: float) -> None:
        nonlocal corrupt_pending
        if rng.random() < channel.loss:
            return
        if (not to_server and corrupt_pending is not None and wire.peek(datagram)[0] == wire.DATA
                and wire.data_seq(datagram) == corrupt_pending and len(datagram) > 16):
            datagram = datagram[:-1] + bytes([datagram[-1] ^ 0xFF])
            corrupt_pending = None
        for _ in range(2 if rng.random() < channel.dup else 1):
            at = now + channel.delay + rng.random() * channel.jitter
            heapq.heappush(queue, (at, next(counter), to_server, datagram))

    def pump(now: float) -> None:
        nonlocal sent_to_client
        for d in sender.data_datagrams(now, read) + sender.poll():
            sent_to_client += 1
            transmit(False, d, now)
        for d in receiver.poll(now, drained=True):
            transmit(True, d, now)

    now = 0.0
    receiver.start(now)
    pump(now)
    for _ in range(max_events):
        if receiver.state in ("done", "failed") and sender.state in ("done", "failed"):
            break
        times = [t for t in (sender.next_deadline(), receiver.next_deadline()) if t is not None]
        if queue:
            times.append(queue[0][0])
        assert times, "deadlock: nothing queued and no timer"
        now = max(now, min(times))
        while queue and queue[0][0] <= now:
            _at, _n, to_server, d = heapq.heappop(queue)
            if to_server:
                sender.on_datagram(d, CLIENT, now)
            else:
                block = receiver.on_datagram(d, now)
                if block is not None:
                    out[block.offset:block.offset + len(block.payload)] = block.payload
        for machine in (sender, receiver):
            deadline = machine.next_deadline()
            if deadline is not None and deadline <= now:
                machine.handle_timeout(now)
        pump(now)
    else:
        pytest.fail("simulation did not finish")
    return Result(bytes(out), sender, receiver, sent_to_client, now)


def assert_moved(payload: bytes, result: Result) -> None:
    assert result.receiver.state == "done", result.receiver.reason
    assert result.sender.state == "done", result.sender.reason
    assert hashlib.sha256(result.data).digest() == hashlib.sha256(payload).digest()
    assert result.data == payload


channels = st.builds(
    Channel,
    loss=st.sampled_from([0.0, 0.05, 0.3]),
    dup=st.sampled_from([0.0, 0.05]),
    jitter=st.sampled_from([0.0, 0.001, 0.01]),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=channels, size_kind=st.sampled_from(["zero", "one", "exact", "multi", "random"]),
       block_size=st.sampled_from([64, 1400, 4096]), data=st.data())
def test_random_files_arrive_byte_identical(channel, size_kind, block_size, data):
    size = {"zero": 0, "one": 1, "exact": block_size, "multi": 7 * block_size,
            "random": data.draw(st.integers(2, 300 * block_size))}[size_kind]
    payload = random.Random(channel.seed).randbytes(size)
    assert_moved(payload, run(payload, block_size, channel))


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.3])
def test_exact_multiple_of_block_size_under_loss(loss):
    payload = random.Random(7).randbytes(1400 * 500)
    result = run(payload, 1400, Channel(loss=loss, seed=3))
    assert_moved(payload, result)
    if loss == 0.0:
        assert result.sender.retransmissions == 0
    else:
        assert result.sender.retransmissions >= 500 * loss / 2


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_fifty_mib_file(loss):
    payload = random.Random(50).randbytes(50 * 1024 * 1024)
    result = run(payload, 60000, Channel(loss=loss, jitter=0.0005, seed=11), window=128)
    assert_moved(payload, result)


def test_resume_from_offset_sends_only_the_rest():
    payload = random.Random(5).randbytes(100_000)
    result = run(payload, 1000, Channel(loss=0.05, seed=9), offset=40_000)
    assert_moved(payload, result)
    assert result.sender.nblocks == 60


def test_random_loss_does_not_collapse_the_window():
    # Isolated 5% loss must be repaired, not treated as congestion (design point 7).
    payload = random.Random(1).randbytes(1400 * 20_000)
    lossless = run(payload, 1400, Channel(loss=0.0, seed=2))
    lossy = run(payload, 1400, Channel(loss=0.05, seed=2))
    assert_moved(payload, lossy)
    assert lossy.elapsed < 2 * lossless.elapsed


def test_corrupted_block_is_caught_by_the_hash():
    payload = random.Random(3).randbytes(50_000)
    result = run(payload, 1400, Channel(corrupt_seq=10, seed=4))
    assert result.receiver.state == "done"
    assert hashlib.sha256(result.data).hexdigest() != hashlib.sha256(payload).hexdigest()


def started_sender(size: int = 1400 * 1000) -> Sender:
    sender = Sender(TID, TOKEN, size, 0, 1400, CLIENT[0], expires_at=30.0)
    sender.on_datagram(wire.encode_start(TID, TOKEN, 512), CLIENT, 1.0)
    assert sender.state == "sending"
    return sender


def test_no_more_than_the_initial_window_before_the_first_ack():
    sender = started_sender()
    sent = len(sender.next_blocks(1.0))
    now = 1.0
    for _ in range(100):                      # timers firing must not add anything
        deadline = sender.next_deadline()
        now = max(now + 0.01, deadline if deadline is not None else now)
        if now >= 4.9:
            break
        sender.handle_timeout(now)
        sent += len(sender.next_blocks(now))
    assert sent == INITIAL_WINDOW
    sender.on_datagram(wire.encode_ack(TID, 1, 512, 1, []), CLIENT, now)
    assert sender.next_blocks(now), "an ACK opens the window"


@pytest.mark.parametrize("junk", [
    b"", b"\x00", b"hello world", bytes(12), bytes([wire.MAGIC, 99]) + bytes(30),
    bytes([wire.MAGIC, wire.VERSION, 3]) + bytes(9) + bytes(16),
    bytes([wire.MAGIC, wire.VERSION, 77]) + TID.to_bytes(8, "big"),
    wire.encode_ack(TID, 10**6, 512, 1, []),                  # ack beyond the file
    wire.encode_ack(TID, 0, 512, 1, [(5, 3)]),               # inverted range
    wire.encode_ack(TID, 0, 512, 1, [(5, 9), (7, 12)]),      # overlapping ranges
    wire.encode_ack(TID, 0, 512, 1, [(5, 9)])[:-3],          # truncated
    wire.encode_start(TID, TOKEN, 512)[:-1],
])
def test_junk_datagrams_are_ignored(junk):
    sender = started_sender()
    first = sender.next_blocks(1.0)
    sender.on_datagram(junk, CLIENT, 1.1)
    assert sender.state == "sending" and sender.cum == 0 and not sender.got_ack
    assert len(sender.inflight) == len(first)
    receiver = Receiver(TID, TOKEN, 10_000, 0, 1400)
    receiver.start(0.0)
    receiver.poll(0.0)
    assert receiver.on_datagram(junk, 0.1) is None
    assert receiver.state == "starting" and receiver.poll(0.1) == []


def test_receiver_rejects_data_of_wrong_length_or_transfer():
    receiver = Receiver(TID, TOKEN, 3000, 0, 1400)
    receiver.start(0.0)
    assert receiver.on_datagram(wire.encode_data(TID, 0, b"x" * 100), 0.1) is None
    assert receiver.on_datagram(wire.encode_data(TID + 1, 0, b"x" * 1400), 0.1) is None
    assert receiver.on_datagram(wire.encode_data(TID, 3, b"x" * 200), 0.1) is None
    block = receiver.on_datagram(wire.encode_data(TID, 2, b"y" * 200), 0.1)
    assert block is not None and block.offset == 2800 and bytes(block.payload) == b"y" * 200


@pytest.mark.parametrize("case", ["wrong token", "expired", "other ip", "other transfer"])
def test_bad_start_is_refused(case):
    sender = Sender(TID, TOKEN, 10_000, 0, 1400, CLIENT[0], expires_at=30.0)
    token, now, addr, tid = TOKEN, 1.0, CLIENT, TID
    if case == "wrong token":
        token = bytes(16)
    elif case == "expired":
        now = 30.5
    elif case == "other ip":
        addr = ("10.0.0.99", 40000)
    else:
        tid = TID + 1
    sender.on_datagram(wire.encode_start(tid, token, 512), addr, now)
    assert sender.state == "waiting" and sender.peer is None
    assert sender.next_blocks(now) == [] and sender.poll() == []
    sender.handle_timeout(31.0)
    assert sender.state == "failed" and "expired" in sender.reason


def test_only_the_validated_address_is_served():
    sender = started_sender()
    sender.next_blocks(1.0)
    intruder = (CLIENT[0], 40001)               # same IP, other port: not the one that started
    sender.on_datagram(wire.encode_ack(TID, 32, 512, 1, []), intruder, 1.1)
    sender.on_datagram(wire.encode_start(TID, TOKEN, 512), intruder, 1.1)
    assert sender.cum == 0 and sender.peer == CLIENT
    sender.on_datagram(wire.encode_ack(TID, 32, 512, 1, []), CLIENT, 1.1)
    assert sender.cum == 32


def test_rtt_sample_comes_from_the_newest_never_retransmitted_block():
    sender = started_sender()
    sender.next_blocks(1.0)                                        # blocks 0..31 at t=1.0
    sender.on_datagram(wire.encode_ack(TID, 1, 512, 1, []), CLIENT, 1.010)
    later = sender.next_blocks(1.5)                                # new blocks at t=1.5
    # One ACK covering old and new blocks: the sample must use the newest (0.01 s), not the
    # cumulative point sent at t=1.0 (0.51 s).
    sender.on_datagram(wire.encode_ack(TID, later[-1] + 1, 512, 2, []), CLIENT, 1.510)
    assert sender.srtt is not None and sender.srtt < 0.02


def test_rto_backoff_is_cleared_by_new_acks():
    sender = started_sender()
    sender.next_blocks(1.0)
    sender.on_datagram(wire.encode_ack(TID, 1, 512, 1, []), CLIENT, 1.01)
    now = 1.01
    for _ in range(3):
        now = sender.next_deadline()
        sender.handle_timeout(now)
        sender.next_blocks(now)
    assert sender.backoff == 8
    sender.on_datagram(wire.encode_ack(TID, 5, 512, 2, []), CLIENT, now + 0.001)
    assert sender.backoff == 1


def test_receiver_gives_up_after_bounded_starts():
    receiver = Receiver(TID, TOKEN, 10_000, 0, 1400)
    receiver.start(0.0)
    starts = len(receiver.poll(0.0))
    for _ in range(100):
        deadline = receiver.next_deadline()
        if deadline is None:
            break
        receiver.handle_timeout(deadline)
        starts += len(receiver.poll(deadline))
    assert receiver.state == "failed" and starts == 25


def test_accept_gives_the_file_offset_of_a_block_and_minus_one_otherwise():
    receiver = Receiver(TID, TOKEN, 10_000, 600, 1400)
    receiver.start(0.0)
    assert receiver.accept(wire.encode_data(TID, 1, b"z" * 1400), 0.1) == 600 + 1400
    assert receiver.accept(wire.encode_data(TID, 1, b"z" * 1400), 0.1) == -1    # duplicate
    assert receiver.accept(wire.encode_data(TID, 0, b"z" * 10), 0.1) == -1      # bad length
    assert receiver.accept(b"junk" * 8, 0.1) == -1


def in_order_receiver(blocks: int) -> Receiver:
    receiver = Receiver(TID, TOKEN, 100 * 1400, 0, 1400, window=512)   # k = 32
    receiver.start(0.0)
    receiver.poll(0.0)                                                # the START
    for seq in range(blocks):
        assert receiver.accept(wire.encode_data(TID, seq, b"d" * 1400), 1.0) >= 0
    return receiver


def test_a_drained_socket_does_not_ack_in_order_blocks_before_the_ack_delay():
    receiver = in_order_receiver(3)
    assert receiver.poll(1.0, drained=True) == []
    assert receiver.next_deadline() == pytest.approx(1.0 + ACK_DELAY)
    receiver.handle_timeout(1.0 + ACK_DELAY)
    acks = receiver.poll(1.0 + ACK_DELAY)
    assert [wire.peek(a)[0] for a in acks] == [wire.ACK]
    assert wire.decode_ack(acks[0])[0] == 3                          # cum covers all three
    assert receiver.poll(1.0 + 2 * ACK_DELAY, drained=True) == []    # nothing new to ack


def test_k_in_order_blocks_are_acked_without_waiting():
    receiver = in_order_receiver(32)
    acks = receiver.poll(1.0)
    assert len(acks) == 1 and wire.decode_ack(acks[0])[0] == 32


def test_a_hole_is_acked_as_soon_as_the_socket_drains():
    receiver = in_order_receiver(3)
    receiver.accept(wire.encode_data(TID, 5, b"d" * 1400), 1.0)      # gap: acked at once
    first = receiver.poll(1.0)
    assert wire.decode_ack(first[0])[3] == (5, 6)
    receiver.accept(wire.encode_data(TID, 6, b"d" * 1400), 1.0)      # in order after the gap
    acks = receiver.poll(1.0, drained=True)
    assert len(acks) == 1 and wire.decode_ack(acks[0])[:1] == (3,)
    assert wire.decode_ack(acks[0])[3] == (5, 7)


def wide_open_pair(nblocks: int) -> tuple[Sender, Receiver]:
    """A sender with nblocks in flight (one window, no ACK yet) and a fresh receiver."""
    size = 1400 * nblocks
    sender = Sender(TID, TOKEN, size, 0, 1400, CLIENT[0], expires_at=30.0,
                    initial_window=nblocks)
    sender.on_datagram(wire.encode_start(TID, TOKEN, 4096), CLIENT, 1.0)
    assert sender.next_blocks(1.0) == list(range(nblocks))
    receiver = Receiver(TID, TOKEN, size, 0, 1400, window=4096)
    receiver.start(1.0)
    receiver.poll(1.0)                                                # the START
    return sender, receiver


def deliver(receiver: Receiver, seqs, now: float) -> bytes:
    for seq in seqs:
        assert receiver.accept(wire.encode_data(TID, seq, b"d" * 1400), now) >= 0
    acks = receiver.poll(now, drained=True)
    assert acks
    return acks[-1]


def test_blocks_an_ack_could_not_describe_are_not_called_lost():
    # 400 holes (every odd block below 800) are more than one ACK can list: it lists the
    # lowest ranges and the topmost, and flags the span between them as not described.
    sender, receiver = wide_open_pair(2000)
    holes = set(range(1, 800, 2))
    received = set(range(2000)) - holes
    ack = deliver(receiver, sorted(received), 1.005)
    _cum, _win, _no, flat, partial = wire.decode_ack(ack)
    assert partial and len(flat) == 2 * wire.MAX_ACK_RANGES
    lo, hi = flat[-3], flat[-2]                  # end of the last-but-one range, start of the last
    assert (lo, hi) == (2 * wire.MAX_ACK_RANGES - 1, 800)
    sender.on_datagram(ack, CLIENT, 1.01)
    # Lost = exactly the holes the ACK described; the received blocks in the span (342, 344,
    # ...) were called lost before, and resent for nothing.
    assert set(sender.lost) == {h for h in holes if h < lo}
    assert not set(sender.lost) & received
    assert set(sender.undescribed) == set(range(lo, hi))
    assert sender.next_blocks(1.01) == sorted(h for h in holes if h < lo)
    # Holes below 600 filled: the next ACK describes everything, and only the blocks still
    # missing in the former span are called lost now.
    ack = deliver(receiver, sorted(h for h in holes if h < 600), 1.015)
    assert wire.decode_ack(ack)[4] is False
    sender.on_datagram(ack, CLIENT, 1.02)
    assert not sender.undescribed
    assert set(sender.lost) == {h for h in holes if h > 600}
    assert sender.retransmissions == len({h for h in holes if h < lo})


def test_a_timeout_resends_one_probe_not_the_whole_flight():
    sender, _receiver = wide_open_pair(100)
    sender.on_datagram(wire.encode_ack(TID, 10, 4096, 1, []), CLIENT, 1.004)   # RTT sample
    deadline = sender.next_deadline()
    assert deadline is not None and deadline < 1.1
    sender.handle_timeout(deadline)           # the receiver is slow: silence, no evidence
    assert sender.next_blocks(deadline) == [10]
    # Then the originals arrive and are acked: the probe's ACK must not make blocks sent
    # before it look lost, and nothing else is resent.
    sender.on_datagram(wire.encode_ack(TID, 50, 4096, 2, []), CLIENT, deadline + 0.001)
    assert not sender.lost and sender.next_blocks(deadline + 0.001) == []
    sender.on_datagram(wire.encode_ack(TID, 100, 4096, 3, []), CLIENT, deadline + 0.002)
    assert sender.cum == 100 and sender.retransmissions == 1
