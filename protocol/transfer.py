"""Sans-IO state machines of Parley's UDP download: the server's Sender and the client's Receiver.

No sockets, threads or clocks here: callers pass datagrams and the current time (float seconds)
in, and take datagrams to send (plus blocks to write) out. Each machine has next_deadline() and
handle_timeout(now). docs/transfer.md describes the protocol; transfer_wire.py the byte layouts.
"""

from __future__ import annotations

import hmac
import operator
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import compress, repeat
from typing import NamedTuple

from . import transfer_wire as wire

DEFAULT_BLOCK_SIZE = 1400      # payload bytes: with 16 + 28 header bytes it fits a 1500 MTU
INITIAL_WINDOW = 32            # blocks the sender may send before the first ACK
MIN_WINDOW = 4
MAX_WINDOW = 4096
REORDER_THRESHOLD = 3          # a block is lost once one sent 3 transmissions later is acked
# Anti-amplification: blocks the sender sends in total before the peer's first ACK. The first
# START gets the initial window; each repeated START (the client heard nothing) gets only
# REPEAT_START_BLOCKS more, up to PRE_ACK_EXTRA in all. A START is 32 bytes, so a peer that
# never ACKs can draw at most initial window + 16 blocks (48 x 1416 bytes at 1400-byte blocks)
# to the one (IP, port) it bound; then the transfer waits silently for its idle limit.
PRE_ACK_EXTRA = 16
REPEAT_START_BLOCKS = 4
# The sender keeps one byte per block only for the blocks between the cumulative ack and the
# highest block sent (at most 4 windows: see next_blocks), so a 1 GiB file at 512-byte blocks
# costs no 2 MiB per offer. The acknowledged prefix is dropped once it is this long.
ACKED_COMPACT = 4096
# The RTO only resends a probe block (see handle_timeout), so a short floor costs little.
MIN_RTO, MAX_RTO, INITIAL_RTO = 0.01, 2.0, 0.5
IDLE_LIMIT = 5.0               # either side gives up after this long without hearing the peer
START_INTERVAL, MAX_STARTS = 0.2, 25
KEEPALIVE = 0.05               # receiver re-sends its ACK after this long without data
ACK_DELAY = 0.001              # longest an in-order block waits for its ACK (short of k blocks)
END_TRIES = 8
TARGET_DELAY = 0.025           # queueing delay the window controller tolerates
HEAVY_LOSS = 0.2               # loss ratio in one round trip that counts as congestion
LINGER = 1.0                   # receiver waits this long for END once it has every block


def block_count(size: int, offset: int, block_size: int) -> int:
    return max(0, -(-(size - offset) // block_size))


class Block(NamedTuple):
    """A DATA payload the receiver's caller must write at `offset` of the file."""
    offset: int
    payload: memoryview


class Sender:
    """Server side of one transfer. States: waiting -> sending -> ending -> done | failed."""

    def __init__(self, transfer_id: int, token: bytes, size: int, offset: int, block_size: int,
                 client_ip: str, expires_at: float, *, initial_window: int = INITIAL_WINDOW,
                 max_window: int = MAX_WINDOW, idle_limit: float = IDLE_LIMIT) -> None:
        if not 0 <= offset <= size or not 0 < block_size <= wire.MAX_BLOCK_SIZE:
            raise ValueError("bad offset or block size")
        self.tid, self.token, self.size, self.offset = transfer_id, token, size, offset
        self.block_size, self.client_ip, self.expires_at = block_size, client_ip, expires_at
        self.nblocks = block_count(size, offset, block_size)
        if self.nblocks > 0xFFFFFFFF:
            raise ValueError("file too large for 32-bit block numbers at this block size")
        self.initial_window, self.max_window = initial_window, max_window
        self.idle_limit = idle_limit
        self.state = "waiting"
        self.reason = ""
        self.peer: tuple | None = None
        # 1 once covered by the cumulative ack or a SACK, for blocks [_base, next_new) only:
        # blocks below _base are all acked, blocks from next_new up were never sent (an ACK
        # naming one is dropped), so the state is bounded by the flight, not the file size.
        self._acked = bytearray()
        self._base = 0
        self.cum = 0                           # every block below this is acked
        self.next_new = 0                      # lowest never-sent block
        self.inflight: dict[int, tuple[int, float]] = {}   # seq -> (transmission no, sent at)
        self.order: deque[tuple[int, int, float]] = deque()  # (xmit no, seq, sent at), send order
        self.lost: deque[int] = deque()        # blocks to retransmit
        # Blocks past the packet threshold that the newest ACK did not describe (it had more
        # ranges than fit): neither in flight nor lost until an ACK says which they are.
        self.undescribed: dict[int, tuple[int, float]] = {}   # seq -> (xmit no, sent at)
        self._undescribed_heap: list[tuple[int, int]] = []   # (seq, xmit no), lowest first
        self.unknown_span = (0, 0)             # [lo, hi) the newest ACK left out; empty if lo >= hi
        self.retransmitted: set[int] = set()   # Karn: never take an RTT sample from these
        # Blocks resent by the timeout probe: their originals may well arrive, so an ACK of
        # one must not move largest_acked_xmit (it would call everything sent before lost).
        self.probes: set[int] = set()
        self.xmit_no = 0
        self.largest_acked_xmit = 0
        self.ack_no = -1
        self.got_ack = False
        self.pre_ack_budget = initial_window   # anti-amplification: sends left before first ACK
        self.pre_ack_limit = initial_window + PRE_ACK_EXTRA   # ... and in total, all STARTs
        self.pre_ack_sent = 0
        self.acks_rejected = 0                 # ACKs dropped for naming blocks never sent
        self.starts_ignored = 0                # STARTs with the token from another address
        self.starts_seen = 0
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = INITIAL_RTO
        self.backoff = 1
        self.cwnd = float(initial_window)
        self.ssthresh = float(max_window)
        self.rwnd = initial_window
        self.base_rtt = float("inf")
        self._round_end = 0
        self._round_acked = self._round_lost = 0
        self._round_min_rtt = float("inf")
        self.last_heard = 0.0
        self.end_sent_at = 0.0
        self.end_tries = 0
        self.retransmissions = 0
        self._outbox: list[bytes] = []

    # ---- input ---------------------------------------------------------------------------
    def on_datagram(self, datagram, addr, now: float) -> None:
        head = wire.peek(datagram)
        if head is None or head[1] != self.tid or self.state in ("done", "failed"):
            return
        kind = head[0]
        if kind == wire.START:
            self._on_start(datagram, addr, now)
        elif addr != self.peer:
            return                              # only the address that proved the token counts
        elif kind == wire.ACK:
            self._on_ack(datagram, now)
        elif kind == wire.END_ACK and self.state == "ending":
            self.last_heard = now
            self.state = "done"
        elif kind == wire.ABORT:
            parsed = wire.decode_abort(datagram)
            if parsed is not None:
                self._fail("receiver aborted: " + parsed[1])

    def _on_start(self, datagram, addr, now: float) -> None:
        parsed = wire.decode_start(datagram)
        if parsed is None or not hmac.compare_digest(parsed[0], self.token):
            return
        if self.state == "waiting":
            if now > self.expires_at or addr[0] != self.client_ip:
                self.starts_ignored += 1
                return
            # The first valid START binds the transfer to its (IP, port): nothing is ever
            # sent to another port of that IP, whatever later STARTs say.
            self.peer, self.state, self.last_heard = addr, "sending", now
            self.rwnd = max(MIN_WINDOW, min(parsed[1], self.max_window))
            self.starts_seen = 1
            if self.nblocks == 0:
                self._send_end(now)
        elif addr != self.peer:
            self.starts_ignored += 1
        elif not self.got_ack and self.starts_seen <= MAX_STARTS:
            # A repeated START means nothing arrived: resend the first few blocks, within the
            # total allowed before any ACK (a peer that never ACKs gets no more than that).
            self.starts_seen += 1
            self.last_heard = now
            self.pre_ack_budget = min(REPEAT_START_BLOCKS,
                                      max(0, self.pre_ack_limit - self.pre_ack_sent))
            for seq in self.inflight:
                self.lost.append(seq)
            self.inflight.clear()
            self.order.clear()
            if self.state == "ending":
                self._outbox.append(wire.encode_end(self.tid, self.nblocks))

    def _on_ack(self, datagram, now: float) -> None:
        parsed = wire.decode_ack(datagram)
        if parsed is None or self.state not in ("sending", "ending"):
            return
        cum, window, ack_no, flat, partial = parsed
        starts, ends = flat[0::2], flat[1::2]
        # Nothing can be acknowledged that was never sent: an ACK claiming more (cum or a
        # range beyond next_new) is hostile or corrupt and dropped whole. So an ACK's work is
        # bounded by the blocks sent and not yet acked (at most 4 windows), never by nblocks.
        sent = self.next_new
        if cum > sent or not self._ranges_ok(cum, starts, ends, sent):
            self.acks_rejected += 1
            return
        self.last_heard = now
        self.got_ack = True
        if ack_no > self.ack_no:           # a reordered older ACK must not shrink the window
            self.ack_no = ack_no
            self.rwnd = max(MIN_WINDOW, min(window, self.max_window))
            # A reordered older ACK describes less, so only the newest one sets the span
            # whose blocks must not be called lost (their fate is unknown).
            self.unknown_span = (ends[-2], starts[-1]) if partial else (0, 0)
        newly: list[int] = []
        acked, base = self._acked, self._base
        if cum > self.cum:
            self._collect(self.cum - base, cum - base, newly)
            self.cum = cum
        if starts:
            # Indexes into _acked; a range of an old ACK below _base is clamped to nothing.
            los = list(map(max, map(operator.sub, starts, repeat(base)), repeat(0)))
            his = list(map(max, map(operator.sub, ends, repeat(base)), repeat(0)))
            # One C-level find per range; Python work only for ranges that hold unacked blocks.
            found = list(map(acked.find, repeat(0), los, his))
            for i in compress(range(len(found)), map(operator.le, repeat(0), found)):
                self._collect(found[i], his[i], newly)
        if newly:
            self._account_acks(newly, now)
        i = self.cum - base
        if i < len(acked) and acked[i]:
            nxt = acked.find(0, i)
            self.cum = base + (len(acked) if nxt < 0 else nxt)
        drop = self.cum - base
        if drop >= ACKED_COMPACT and 2 * drop >= len(acked):
            del acked[:drop]               # the acked prefix: O(1) amortised in CPython
            self._base = self.cum
        self._detect_losses()
        if self.cum >= self.nblocks and self.state == "sending":
            self._send_end(now)

    @staticmethod
    def _ranges_ok(cum: int, starts, ends, limit: int) -> bool:
        # cum <= start0 < end0 <= start1 < end1 ... <= limit, checked by C-level map().
        if not starts:
            return True
        return (cum <= starts[0] and ends[-1] <= limit
                and not any(map(operator.ge, starts, ends))
                and not any(map(operator.gt, ends, starts[1:])))

    def _collect(self, start: int, end: int, newly: list[int]) -> None:
        # start, end: indexes into _acked. Only the zero bytes (blocks not yet acked) cost
        # Python work: O(new information).
        acked, base = self._acked, self._base
        i = acked.find(0, start, end)
        if i < 0:
            return
        start = i
        while i >= 0:
            newly.append(base + i)
            i = acked.find(0, i + 1, end)
        acked[start:end] = b"\x01" * (end - start)

    def is_acked(self, seq: int) -> bool:
        """Has block seq been acknowledged (cumulatively or selectively)?"""
        i = seq - self._base
        return i < 0 or (i < len(self._acked) and self._acked[i] == 1)

    def state_bytes(self) -> int:
        """Bytes of per-block acknowledgement state held now (bounded by the flight)."""
        return len(self._acked)

    def _account_acks(self, newly: list[int], now: float) -> None:
        inflight, retx, undescribed = self.inflight, self.retransmitted, self.undescribed
        probes = self.probes
        sample_xmit, sample_sent = 0, 0.0
        largest = self.largest_acked_xmit
        for seq in newly:
            rec = inflight.pop(seq, None)
            if rec is None:
                # Not in flight: lost (a late arrival) or undescribed (it arrived some ACKs
                # ago, so its timing says nothing about the RTT).
                if undescribed:
                    undescribed.pop(seq, None)
                retx.discard(seq)
                probes.discard(seq)
                continue
            xmit = rec[0]
            if seq in retx:
                retx.discard(seq)
                if seq in probes:
                    probes.discard(seq)
                    continue
            elif xmit > sample_xmit:
                sample_xmit, sample_sent = xmit, rec[1]
            if xmit > largest:
                largest = xmit
        self.largest_acked_xmit = largest
        self.backoff = 1                     # new data acked: forget the RTO backoff
        rtt = now - sample_sent if sample_xmit else None
        if rtt is not None:
            self._rtt_sample(rtt)
        self._window_on_ack(len(newly), rtt)

    def _rtt_sample(self, rtt: float) -> None:
        # RFC 6298 section 2, with a LAN-sized floor instead of its 1 s minimum.
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + 4 * self.rttvar + ACK_DELAY))
        if rtt < self.base_rtt:
            self.base_rtt = rtt
        if rtt < self._round_min_rtt:
            self._round_min_rtt = rtt

    # ---- window control ------------------------------------------------------------------
    def _window_on_ack(self, count: int, rtt: float | None) -> None:
        self._round_acked += count
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + count, float(min(self.max_window, self.rwnd)))
        if self.largest_acked_xmit >= self._round_end:
            self._end_round()

    def _end_round(self) -> None:
        # Once per round trip: cut on heavy loss or a standing queue; isolated random loss is
        # only repaired, never punished, so it cannot collapse the rate as with loss-based TCP.
        total = self._round_acked + self._round_lost
        queueing = self._round_min_rtt - self.base_rtt
        if total and self._round_lost / total > HEAVY_LOSS:
            self.cwnd = max(float(MIN_WINDOW), self.cwnd * 0.7)
            self.ssthresh = self.cwnd
        elif queueing > TARGET_DELAY and self._round_min_rtt != float("inf"):
            self.cwnd = max(float(MIN_WINDOW), self.cwnd * 0.85)
            self.ssthresh = self.cwnd
        elif self.cwnd >= self.ssthresh:
            self.cwnd = min(float(min(self.max_window, self.rwnd)), self.cwnd * 1.125 + 1)
        self._round_end = self.xmit_no
        self._round_acked = self._round_lost = 0
        self._round_min_rtt = float("inf")

    def _detect_losses(self) -> None:
        # Packet threshold, on evidence only: a block is lost when one sent REORDER_THRESHOLD
        # transmissions later has been acked AND an ACK described the block as missing. One
        # inside the span the newest ACK left out waits (not in flight) for an ACK that says.
        order, inflight = self.order, self.inflight
        limit = self.largest_acked_xmit - REORDER_THRESHOLD
        lo, hi = self.unknown_span
        while order:
            xmit, seq, _sent = order[0]
            rec = inflight.get(seq)
            if rec is None or rec[0] != xmit:
                order.popleft()             # acked or re-sent since: stale entry
            elif xmit <= limit:
                order.popleft()
                del inflight[seq]
                if lo <= seq < hi:
                    self.undescribed[seq] = rec
                    heappush(self._undescribed_heap, (seq, xmit))
                else:
                    self.lost.append(seq)
                    self._round_lost += 1
            else:
                break
        heap = self._undescribed_heap
        # Blocks at or above the span's high end lie in the topmost range, i.e. are acked:
        # so only entries below its low end (or all, once an ACK describes everything) can
        # have become described. A heap finds them; each entry is looked at once.
        while heap and (heap[0][0] < lo or lo >= hi):
            seq, xmit = heappop(heap)
            rec = self.undescribed.get(seq)
            if rec is not None and rec[0] == xmit:
                del self.undescribed[seq]
                self.lost.append(seq)
                self._round_lost += 1

    # ---- output --------------------------------------------------------------------------
    def poll(self) -> list[bytes]:
        """Control datagrams (END, ABORT) to send to self.peer."""
        out, self._outbox = self._outbox, []
        return out

    def next_blocks(self, now: float, limit: int = 1 << 30) -> list[int]:
        """Block numbers to send now (retransmissions first); they are counted as sent."""
        if self.state != "sending":
            return []
        budget = min(int(self.cwnd), self.rwnd) - len(self.inflight)
        if not self.got_ack:
            budget = min(budget, self.pre_ack_budget)
        budget = min(budget, limit)
        if budget <= 0:
            return []
        out: list[int] = []
        acked, inflight, order, lost = self._acked, self.inflight, self.order, self.lost
        base = self._base
        while lost and len(out) < budget:
            seq = lost.popleft()
            if seq < base or acked[seq - base] or seq in inflight:
                continue
            self.xmit_no += 1
            inflight[seq] = (self.xmit_no, now)
            order.append((self.xmit_no, seq, now))
            self.retransmitted.add(seq)
            self.retransmissions += 1
            out.append(seq)
        # Flow window: never run more than 4 receive windows ahead of the cumulative ack.
        stop = min(self.nblocks, self.cum + 4 * self.rwnd, self.next_new + budget - len(out))
        xmit = self.xmit_no
        for seq in range(self.next_new, stop):
            xmit += 1
            inflight[seq] = (xmit, now)
            order.append((xmit, seq, now))
            out.append(seq)
        if stop > self.next_new:
            acked.extend(bytes(stop - self.next_new))
            self.next_new = stop
        self.xmit_no = xmit
        if not self.got_ack:
            self.pre_ack_budget -= len(out)
            self.pre_ack_sent += len(out)
        return out

    def block_span(self, seq: int) -> tuple[int, int]:
        """(file offset, length) of block seq."""
        start = self.offset + seq * self.block_size
        return start, min(self.block_size, self.size - start)

    def data_datagrams(self, now: float, read: Callable[[int, int], bytes],
                       limit: int = 1 << 30) -> list[bytes]:
        """next_blocks() encoded as DATA datagrams, payload fetched with read(offset, length)."""
        return [wire.encode_data(self.tid, seq, read(*self.block_span(seq)))
                for seq in self.next_blocks(now, limit)]

    def abort(self, reason: str) -> list[bytes]:
        """Give up; returns the ABORT datagram to send to the peer (if there is one)."""
        self._fail(reason)
        return [wire.encode_abort(self.tid, 1, reason)] if self.peer else []

    # ---- timers --------------------------------------------------------------------------
    def _current_rto(self) -> float:
        return min(MAX_RTO, self.rto * self.backoff)

    def _oldest_inflight(self) -> tuple[int, int, float] | None:
        order, inflight = self.order, self.inflight
        while order:
            entry = order[0]
            rec = inflight.get(entry[1])
            if rec is not None and rec[0] == entry[0]:
                return entry
            order.popleft()
        return None

    def next_deadline(self) -> float | None:
        if self.state == "waiting":
            return self.expires_at
        if self.state in ("done", "failed"):
            return None
        deadline = self.last_heard + self.idle_limit
        if self.state == "ending":
            return min(deadline, self.end_sent_at + self._current_rto())
        if self.got_ack:                    # no RTO resend before the first ACK (amplification)
            oldest = self._oldest_inflight()
            if oldest is not None:
                deadline = min(deadline, oldest[2] + self._current_rto())
        return deadline

    def handle_timeout(self, now: float) -> None:
        if self.state == "waiting":
            if now > self.expires_at:
                self._fail("token expired unused")
            return
        if self.state not in ("sending", "ending"):
            return
        rto = self._current_rto()
        if self.state == "ending":
            if now - self.last_heard >= self.idle_limit:
                self.state = "done"         # every block was acknowledged: END_ACK is a courtesy
            elif now >= self.end_sent_at + rto:
                if self.end_tries >= END_TRIES:
                    self.state = "done"
                else:
                    self._send_end(now)
                    self.backoff = min(self.backoff * 2, 64)
            return
        if now - self.last_heard >= self.idle_limit:
            self._fail("receiver idle")
            return
        if not self.got_ack:
            return
        oldest = self._oldest_inflight()
        if oldest is not None and oldest[2] + rto <= now:
            # Lost: the oldest block (resent as a probe) and any sent before the newest acked
            # block (fewer than REORDER_THRESHOLD before it, else already called lost). Silence
            # says nothing about the rest: the receiver may just be slow to ACK, and calling
            # the whole flight lost resent entire windows that had arrived. The ACK the probe
            # brings back lets the packet threshold find every block really lost.
            self.probes.add(oldest[1])
            probe = True
            while oldest is not None and (probe or oldest[0] < self.largest_acked_xmit):
                probe = False
                self.order.popleft()
                del self.inflight[oldest[1]]
                self.lost.append(oldest[1])
                oldest = self._oldest_inflight()
            # No window cut: a timeout alone does not show congestion (a slow or lost ACK
            # looks the same); what the probe reveals lost counts in the round's loss ratio.
            self.backoff = min(self.backoff * 2, 64)

    def _send_end(self, now: float) -> None:
        self.state = "ending"
        self.end_sent_at = now
        self.end_tries += 1
        self._outbox.append(wire.encode_end(self.tid, self.nblocks))

    def _fail(self, reason: str) -> None:
        if self.state not in ("done", "failed"):
            self.state, self.reason = "failed", reason


class Receiver:
    """Client side of one transfer. States: idle -> starting -> receiving -> complete -> done,
    or failed."""

    def __init__(self, transfer_id: int, token: bytes, size: int, offset: int, block_size: int,
                 *, window: int = 512, idle_limit: float = IDLE_LIMIT,
                 start_interval: float = START_INTERVAL, max_starts: int = MAX_STARTS) -> None:
        if not 0 <= offset <= size or not 0 < block_size <= wire.MAX_BLOCK_SIZE:
            raise ValueError("bad offset or block size")
        self.tid, self.token, self.size, self.offset = transfer_id, token, size, offset
        self.block_size = block_size
        self.nblocks = block_count(size, offset, block_size)
        self.last_len = size - offset - (self.nblocks - 1) * block_size if self.nblocks else 0
        self.window = max(MIN_WINDOW, min(window, MAX_WINDOW))
        self.ack_every = max(1, min(32, self.window // 4))
        self.idle_limit = idle_limit
        self.start_interval, self.max_starts = start_interval, max_starts
        self.have = bytearray(self.nblocks)
        self.cum = 0
        self.highest = -1
        self.received = 0                  # distinct blocks received
        self.unacked = 0
        self.unacked_since = 0.0           # when the oldest unacknowledged block arrived
        self.ack_due = False
        self.ack_no = 0
        self.state = "idle"
        self.reason = ""
        self.got_data = False
        self.first_start_at = 0.0
        self.starts_sent = 0
        self.next_start_at = 0.0
        self.last_heard = 0.0
        self.last_ack_at = 0.0
        self.keepalive = KEEPALIVE
        self.complete_at = 0.0
        self._outbox: list[bytes] = []
        self._data_prefix = wire.data_prefix(transfer_id)

    @property
    def prefix_end(self) -> int:
        """File offset up to which every byte has been received (contiguously)."""
        return min(self.size, self.offset + self.cum * self.block_size)

    @property
    def received_bytes(self) -> int:
        return min(self.size - self.offset, self.received * self.block_size)

    def start(self, now: float) -> None:
        self.state = "starting"
        self.first_start_at = now
        self._send_start(now)

    def _send_start(self, now: float) -> None:
        self.starts_sent += 1
        self.next_start_at = now + self.start_interval
        self._outbox.append(wire.encode_start(self.tid, self.token, self.window))

    def on_datagram(self, datagram, now: float) -> Block | None:
        """Feed one datagram from the server; returns a Block to write, or None."""
        offset = self.accept(datagram, now)
        if offset < 0:
            return None
        mv = memoryview(datagram) if not isinstance(datagram, memoryview) else datagram
        return Block(offset, mv[wire.DATA_HEADER_SIZE:])

    def accept(self, datagram, now: float) -> int:
        """Feed one datagram from the server; returns the file offset at which its payload
        (datagram[16:]) must be written, or -1 when there is nothing to write. The lean form
        of on_datagram() for the client's hot loop: no objects are made per block."""
        if len(datagram) > wire.DATA_HEADER_SIZE:
            prefix, seq = wire.split_data(datagram)
            if prefix == self._data_prefix:
                if self.state in ("starting", "receiving", "complete"):
                    return self._on_data(datagram, seq, now)
                return -1
        self._on_control(datagram, now)
        return -1

    def _on_control(self, datagram, now: float) -> None:
        head = wire.peek(datagram)
        if head is None or head[1] != self.tid or self.state in ("idle", "done", "failed"):
            return
        kind = head[0]
        if kind == wire.END:
            if wire.decode_end(datagram) == self.nblocks and self.cum == self.nblocks:
                self.last_heard = now
                self.state = "done"
                self._outbox.append(wire.encode_end_ack(self.tid))
        elif kind == wire.ABORT:
            parsed = wire.decode_abort(datagram)
            if parsed is not None:
                self._fail("sender aborted: " + parsed[1])

    def _on_data(self, datagram, seq: int, now: float) -> int:
        if seq >= self.nblocks:
            return -1
        length = len(datagram) - wire.DATA_HEADER_SIZE
        if length != (self.block_size if seq != self.nblocks - 1 else self.last_len):
            return -1
        self.last_heard = now
        self.keepalive = KEEPALIVE
        if not self.got_data:
            self.got_data = True
            self.state = "receiving"
        have = self.have
        if have[seq]:
            self.ack_due = True           # a duplicate: the sender missed an ACK
            return -1
        have[seq] = 1
        self.received += 1
        if seq == self.cum:
            nxt = have.find(0, seq + 1)
            self.cum = self.nblocks if nxt < 0 else nxt
            if seq < self.highest:
                self.ack_due = True       # a hole was filled
        elif seq > self.highest + 1:
            self.ack_due = True           # a new gap: tell the sender at once (fast retransmit)
        if seq > self.highest:
            self.highest = seq
        if not self.unacked:
            self.unacked_since = now
        self.unacked += 1
        if self.unacked >= self.ack_every:
            self.ack_due = True
        if self.cum == self.nblocks and self.state == "receiving":
            self.state = "complete"
            self.complete_at = now
            self.ack_due = True
        return self.offset + seq * self.block_size

    def poll(self, now: float, drained: bool = False) -> list[bytes]:
        """Datagrams to send to the server. drained=True when the caller's socket is empty:
        then unacknowledged blocks are acknowledged at once if there is a hole (the sender
        needs the SACK ranges to repair it), else once they have waited ACK_DELAY
        (next_deadline() covers that too). Not on every drain: a receiver faster than its
        sender drains after every few blocks, and such ACKs cost both ends more than they
        tell (measured: 4x the ACKs, 15 % less throughput at 60 KB blocks). No stall can
        come of it: a sender whose window is full and all delivered gets its ACK from the
        count k, or at the latest ACK_DELAY later."""
        if self.state in ("receiving", "complete") and (self.ack_due or (
                drained and self.unacked and (self.cum <= self.highest
                                              or now >= self.unacked_since + ACK_DELAY))):
            self._outbox.append(self._make_ack(now))
        out, self._outbox = self._outbox, []
        return out

    def _make_ack(self, now: float) -> bytes:
        have, top = self.have, self.highest + 1
        ranges: list[tuple[int, int]] = []
        partial = False
        pos = self.cum
        while pos < top:
            s = have.find(1, pos, top)
            if s < 0:
                break
            e = have.find(0, s, top)
            if e < 0:
                e = top
            if len(ranges) == wire.MAX_ACK_RANGES:
                # Too many holes: keep the lowest ranges and the topmost one, which carries
                # the newest RTT sample, and flag the span between them as not described.
                ranges[-1] = (have.rfind(0, s, top) + 1, top)
                partial = True
                break
            ranges.append((s, e))
            pos = e
        self.ack_no += 1
        self.unacked = 0
        self.ack_due = False
        self.last_ack_at = now
        return wire.encode_ack(self.tid, self.cum, self.window, self.ack_no & 0xFFFFFFFF, ranges,
                               partial)

    def next_deadline(self) -> float | None:
        if self.state == "starting":
            return self.next_start_at
        if self.state == "receiving":
            deadline = min(self.last_heard + self.idle_limit,
                           max(self.last_heard, self.last_ack_at) + self.keepalive)
        elif self.state == "complete":
            deadline = min(self.complete_at + LINGER, max(self.last_heard, self.last_ack_at)
                           + self.keepalive)
        else:
            return None
        if self.unacked:
            deadline = min(deadline, self.unacked_since + ACK_DELAY)
        return deadline

    def handle_timeout(self, now: float) -> None:
        if self.state == "starting":
            if now >= self.next_start_at:
                if self.starts_sent >= self.max_starts:
                    self._fail("no answer from the server")
                else:
                    self._send_start(now)
            return
        if self.state == "complete" and now >= self.complete_at + LINGER:
            self.state = "done"           # every block is here; END only confirms it
            return
        if self.state == "receiving" and now - self.last_heard >= self.idle_limit:
            self._fail("sender idle")
            return
        if self.unacked and now >= self.unacked_since + ACK_DELAY:
            self.ack_due = True           # poll() sends it
        if self.state in ("receiving", "complete") and \
                now >= max(self.last_heard, self.last_ack_at) + self.keepalive:
            self._outbox.append(self._make_ack(now))
            self.keepalive = min(self.keepalive * 2, 0.4)

    def abort(self, reason: str) -> list[bytes]:
        """Give up (e.g. cancelled); returns the ABORT datagram to send to the server."""
        self._fail(reason)
        return [wire.encode_abort(self.tid, 1, reason)]

    def _fail(self, reason: str) -> None:
        if self.state not in ("done", "failed"):
            self.state, self.reason = "failed", reason
