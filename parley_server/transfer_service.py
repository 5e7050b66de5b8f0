"""Server side of Parley's file downloads: one UDP socket and one thread serve every transfer
(protocol/transfer.py decides what to send), plus a TCP listener on the same port number for
clients whose UDP path is blocked (docs/transfer.md).

The chat server calls offer() when a client asks for a download and passes the returned dict
to that client; nothing is sent until a client presents the offer's token from the offer's IP.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import select
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from parley_common.addresses import plain_ip
from protocol import transfer_wire as wire
from protocol.transfer import DEFAULT_BLOCK_SIZE, IDLE_LIMIT, Sender

log = logging.getLogger(__name__)

SOCKET_BUFFER = 4 * 1024 * 1024          # design point 2: the window must fit the buffers
MAX_LOOPBACK_BLOCK = wire.MAX_BLOCK_SIZE  # large blocks only where nothing fragments them
MIN_BLOCK = 512
SOL_UDP = 17
UDP_SEGMENT = 103                        # Linux GSO: one sendmsg, many datagrams
UDP_CORK = 1
PAGE = 4096
SPLICE_PAGES = 16                        # what one sendfile moves through its pipe at once
GSO_MAX_SEGMENTS = 64
MAX_TCP_WORKERS = 16
TCP_REQUEST_TIMEOUT = 3.0                # a whole TCP fallback request must arrive within this
ACCEPT_PAUSE = 0.2                       # listener left alone after accept() failed
MAX_TCP_PENDING = 64                     # connections whose request has not arrived yet
TCP_MIN_PROGRESS = 64 * 1024             # bytes a TCP reader must take per idle_limit
TCP_SEND_CHUNK = 1 << 20
MAX_OFFERS = 256                         # offers and transfers at once, in all
MAX_OFFERS_PER_USER = 16                 # ... and per user
READS_PER_WAKEUP = 256


def _family_of(host: str) -> int:
    """AF_INET6 for an IPv6 literal (or a name that only resolves to IPv6), else AF_INET."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host.split("%", 1)[0]).version == 6 \
            else socket.AF_INET
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host or None, None, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0,
                                   socket.AI_PASSIVE)
    except OSError:
        return socket.AF_INET
    families = {info[0] for info in infos}
    return socket.AF_INET if socket.AF_INET in families or not families else socket.AF_INET6


def _socket(family: int, kind: int, host: str) -> socket.socket:
    sock = socket.socket(family, kind)
    if family == socket.AF_INET6:
        # "::" means every address, IPv4 ones included; any other IPv6 host is IPv6 only.
        dual = host.split("%", 1)[0] in ("::", "")
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        except OSError as exc:
            log.info("cannot set IPV6_V6ONLY on the transfer socket: %s", exc)
    return sock


class OfferRefused(Exception):
    """offer() says no: `code` for the wire ("too_many_downloads", "busy"), str() in words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Transfer:
    """An offer, then a transfer. The file is opened only when the transfer starts (a valid
    START or a TCP claim) and closed when it ends: an offer nobody takes costs no descriptor."""
    sender: Sender
    path: Path
    version: tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns) when offered
    offer_offset: int
    owner: str | None
    fd: int = -1
    tcp_claimed: bool = False


class TransferService:
    """UDP download service. API: start(), shutdown(), port, tcp_port, offer(), active_count()."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0, *, token_ttl: float = 30.0,
                 idle_limit: float = IDLE_LIMIT, use_gso: bool = True,
                 use_splice: bool = True, max_offers: int = MAX_OFFERS,
                 max_offers_per_user: int = MAX_OFFERS_PER_USER,
                 tcp_request_timeout: float = TCP_REQUEST_TIMEOUT) -> None:
        self._host, self._want_port = host, port
        self.token_ttl, self.idle_limit = token_ttl, idle_limit
        self.max_offers, self.max_offers_per_user = max_offers, max_offers_per_user
        self.tcp_request_timeout = tcp_request_timeout
        self._gso = use_gso and hasattr(socket.socket, "sendmsg")
        self._splice = use_splice and hasattr(os, "sendfile") and hasattr(socket, "MSG_MORE")
        self._lock = threading.Lock()
        self._transfers: dict[int, _Transfer] = {}
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: dict[threading.Thread, socket.socket] = {}
        self._pending: dict[socket.socket, _PendingTcp] = {}   # service thread only
        self._accept_paused_until = 0.0                        # service thread only
        self._sel = selectors.DefaultSelector()
        self.port = 0
        self.tcp_port = 0
        self.family = socket.AF_INET
        self.gso_used = False
        self.splice_used = False
        self.retransmissions = 0         # summed over finished transfers (for benchmarks)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Bind the UDP socket and the TCP fallback listener to host, in its address family:
        IPv6 for an IPv6 host, and for "::" both IPv6 and IPv4 (IPV6_V6ONLY off)."""
        family = self.family = _family_of(self._host)
        udp = _socket(family, socket.SOCK_DGRAM, self._host)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                udp.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            udp.bind((self._host, self._want_port))
        except BaseException:
            udp.close()
            raise
        self.port = udp.getsockname()[1]
        tcp = _socket(family, socket.SOCK_STREAM, self._host)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((self._host, self.port))
        except OSError:
            try:
                tcp.bind((self._host, 0))   # the number is taken for TCP: use any other
            except BaseException:
                tcp.close()
                udp.close()
                raise
        tcp.listen(MAX_TCP_PENDING)
        tcp.setblocking(False)
        self.tcp_port = tcp.getsockname()[1]
        self._udp, self._tcp = udp, tcp
        self._thread = threading.Thread(target=self._run, name="transfer-service", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving: aborts live transfers, joins every thread, closes every socket."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            workers = list(self._workers.items())
        for _thread, conn in workers:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread, _conn in workers:
            thread.join(timeout)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        with self._lock:
            for entry in self._transfers.values():
                _close_file(entry)
            self._transfers.clear()

    def active_count(self) -> int:
        """Offers and transfers not yet finished, expired or cleaned up."""
        with self._lock:
            return len(self._transfers)

    # ---- offers --------------------------------------------------------------------------
    def offer(self, path: Path, size: int, sha256: str, client_ip: str, *, offset: int = 0,
              block_size: int | None = None, owner: str | None = None) -> dict:
        """Prepare a download of `path` (size bytes, hex sha256) for the client at client_ip,
        starting at byte `offset`. block_size above 1400 is granted on loopback only.

        At most max_offers_per_user offers and transfers per owner, and max_offers in all,
        exist at once (OfferRefused past that). The file is not opened here."""
        client_ip = plain_ip(client_ip)
        if not 0 <= offset <= size:
            raise ValueError(f"offset {offset} outside 0..{size}")
        bs = DEFAULT_BLOCK_SIZE
        if block_size is not None:
            top = MAX_LOOPBACK_BLOCK if ipaddress.ip_address(client_ip).is_loopback \
                else DEFAULT_BLOCK_SIZE
            bs = max(MIN_BLOCK, min(int(block_size), top))
        token = secrets.token_bytes(wire.TOKEN_SIZE)
        st = os.stat(path)
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if len(self._transfers) >= self.max_offers:
                raise OfferRefused(
                    "busy", f"the server is already serving {self.max_offers} downloads, its "
                    "limit; try again in a minute")
            if owner is not None and sum(1 for e in self._transfers.values()
                                         if e.owner == owner) >= self.max_offers_per_user:
                raise OfferRefused(
                    "too_many_downloads",
                    f"you already have {self.max_offers_per_user} downloads offered or "
                    "running, the most one person may have; wait for one to finish (an offer "
                    f"not taken up lapses after {self.token_ttl:.0f} seconds)")
            tid = secrets.randbits(52) or 1  # exact in every JSON reader
            while tid in self._transfers:
                tid = secrets.randbits(52) or 1  # exact in every JSON reader
            # The Sender compares the IP as this socket reports it (an IPv4 client of a
            # dual-stack socket as ::ffff:a.b.c.d); the TCP side compares normalised IPs.
            sender = Sender(tid, token, size, offset, bs, self._socket_ip(client_ip),
                            time.monotonic() + self.token_ttl, idle_limit=self.idle_limit)
            self._transfers[tid] = _Transfer(sender, Path(path), version, offset, owner)
        return {"transfer_id": tid, "token": token.hex(), "size": size, "sha256": sha256,
                "block_size": bs, "offset": offset, "udp_port": self.port,
                "tcp_port": self.tcp_port, "expires_in": self.token_ttl}

    def _socket_ip(self, ip: str) -> str:
        """`ip` (normalised) as recvfrom on our UDP socket spells it."""
        if self.family == socket.AF_INET6 and \
                isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address):
            return "::ffff:" + ip
        return ip

    def open_files(self) -> int:
        """How many offered files are open now (only transfers under way hold one)."""
        with self._lock:
            return sum(1 for e in self._transfers.values() if e.fd >= 0)

    @staticmethod
    def _open_file(entry: _Transfer) -> None:
        """Open the offered file for its transfer; OSError in words if it cannot be read or
        is no longer the version that was offered (its SHA-256 would not match)."""
        if entry.fd >= 0:
            return
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if (st.st_ino, st.st_size, st.st_mtime_ns) != entry.version:
                raise OSError("the file changed since it was offered; ask for it again")
        except BaseException:
            os.close(fd)
            raise
        entry.fd = fd

    # ---- the service thread --------------------------------------------------------------
    def _run(self) -> None:
        assert self._udp is not None and self._tcp is not None
        sel = self._sel
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "tcp")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        buf = bytearray(65536)
        self._sendbuf = bytearray(65536 + 64)
        try:
            while not self._stopping.is_set():
                timeout = self._timeout(time.monotonic())
                for key, _mask in sel.select(timeout):
                    if key.data == "udp":
                        self._read_udp(buf)
                    elif key.data == "tcp":
                        self._accept_tcp()
                    elif key.data == "tcp-request":
                        self._read_tcp_request(key.fileobj)
                    else:
                        self._wake_r.recv(64)
                now = time.monotonic()
                self._service(now)
                if self._pending:
                    self._expire_pending(now)
                if self._accept_paused_until and now >= self._accept_paused_until:
                    self._accept_paused_until = 0.0
                    sel.register(self._tcp, selectors.EVENT_READ, "tcp")
        except Exception:
            log.exception("transfer service loop crashed")
            raise
        finally:
            for conn in list(self._pending):
                self._drop_pending(conn)
            sel.close()
            self._abort_all("server shutting down")

    def _timeout(self, now: float) -> float:
        with self._lock:
            entries = list(self._transfers.values())
        timeout = 0.5
        if self._accept_paused_until:
            timeout = min(timeout, self._accept_paused_until - now)
        for pending in self._pending.values():
            timeout = min(timeout, pending.deadline - now)
        for entry in entries:
            deadline = entry.sender.next_deadline()
            if deadline is not None and deadline - now < timeout:
                timeout = deadline - now
        return max(0.0, timeout)

    def _read_udp(self, buf: bytearray) -> None:
        udp, mv = self._udp, memoryview(buf)
        transfers = self._transfers
        now = time.monotonic()
        for _ in range(READS_PER_WAKEUP):
            try:
                n, addr = udp.recvfrom_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:            # e.g. ICMP port unreachable from a gone client
                log.debug("udp receive error: %s", exc)
                continue
            head = wire.peek(mv[:n])
            if head is None:
                continue
            entry = transfers.get(head[1])
            if entry is not None and not entry.tcp_claimed:
                entry.sender.on_datagram(mv[:n], addr, now)
                if entry.sender.state in ("sending", "ending"):
                    if entry.fd < 0 and not self._start_file(entry):
                        continue
                    self._pump(entry, now)

    def _service(self, now: float) -> None:
        with self._lock:
            entries = list(self._transfers.items())
        finished = []
        for tid, entry in entries:
            sender = entry.sender
            deadline = sender.next_deadline()
            if deadline is not None and deadline <= now:
                sender.handle_timeout(now)
            if sender.state in ("sending", "ending") and not entry.tcp_claimed and (
                    entry.fd >= 0 or self._start_file(entry)):
                self._pump(entry, now)
            if sender.state in ("done", "failed") or entry.tcp_claimed:
                finished.append(tid)
                if sender.state == "failed":
                    log.info("transfer %x failed: %s", tid, sender.reason)
        if finished:
            with self._lock:
                for tid in finished:
                    entry = self._transfers.pop(tid, None)
                    if entry is not None:
                        self.retransmissions += entry.sender.retransmissions
                        if not entry.tcp_claimed:
                            _close_file(entry)

    def _start_file(self, entry: _Transfer) -> bool:
        """The transfer has started: open its file, or abort it in words."""
        try:
            self._open_file(entry)
            return True
        except OSError as exc:
            reason = exc.strerror or str(exc)
            sender = entry.sender
            for datagram in sender.abort(f"server cannot read the file: {reason}"):
                self._sendto(datagram, sender.peer)
            return False

    def _pump(self, entry: _Transfer, now: float) -> None:
        sender = entry.sender
        for datagram in sender.poll():
            self._sendto(datagram, sender.peer)
        seqs = sender.next_blocks(now)
        if seqs:
            try:
                self._send_blocks(entry, seqs)
            except OSError as exc:
                # Reading the file failed (it shrank or vanished): nothing sane left to send.
                for datagram in sender.abort(f"server cannot read the file: {exc}"):
                    self._sendto(datagram, sender.peer)

    def _sendto(self, datagram: bytes, peer) -> None:
        try:
            self._udp.sendto(datagram, peer)
        except OSError as exc:            # a lost datagram is recovered by the protocol
            log.debug("udp send to %s failed: %s", peer, exc)

    def _send_blocks(self, entry: _Transfer, seqs: list[int]) -> None:
        seg = wire.DATA_HEADER_SIZE + entry.sender.block_size
        per_batch = min(GSO_MAX_SEGMENTS, 65000 // seg) if self._gso else 1
        if per_batch <= 1 and self._splice:
            self._splice_blocks(entry, seqs)
        else:
            self._copy_blocks(entry, seqs, max(per_batch, 1))

    def _copy_blocks(self, entry: _Transfer, seqs: list[int], per_batch: int) -> None:
        """Send blocks read into our buffer, up to per_batch of them in one GSO sendmsg."""
        sender = entry.sender
        bs, tid, fd = sender.block_size, sender.tid, entry.fd
        seg = wire.DATA_HEADER_SIZE + bs
        last = sender.nblocks - 1
        short_last = sender.block_span(last)[1] < bs if last >= 0 else False
        buf = self._sendbuf
        if len(buf) < seg:
            buf = self._sendbuf = bytearray(seg)
        mv = memoryview(buf)
        peer = sender.peer
        i, count = 0, len(seqs)
        while i < count:
            pos, nseg = 0, 0
            run_off, iov = 0, []
            prev = -2
            while i < count and nseg < per_batch:
                seq = seqs[i]
                file_off, length = sender.block_span(seq)
                wire.pack_data_header(buf, pos, tid, seq)
                if seq != prev + 1 and iov:
                    self._read_into(fd, iov, run_off)
                    iov = []
                if not iov:
                    run_off = file_off
                iov.append(mv[pos + wire.DATA_HEADER_SIZE:pos + wire.DATA_HEADER_SIZE + length])
                pos += wire.DATA_HEADER_SIZE + length
                prev = seq
                nseg += 1
                i += 1
                if seq == last and short_last:
                    break                  # GSO: only the final segment may be short
            self._read_into(fd, iov, run_off)
            self._send_batch(mv[:pos], nseg, seg, peer)

    def _splice_blocks(self, entry: _Transfer, seqs: list[int]) -> None:
        """Send each block as its header, corked with MSG_MORE, plus the file bytes spliced in
        by sendfile: the payload is never copied into this process (the sender measured
        ~2x faster at 60 KB blocks). Blocks that cannot be spliced are copied, in order:
        sending out of order would make the receiver report gaps that are not losses."""
        sender = entry.sender
        udp, peer, fd, tid = self._udp, sender.peer, entry.fd, sender.tid
        ufd, more = udp.fileno(), socket.MSG_MORE
        base, bs, size = sender.offset, sender.block_size, sender.size
        # A one-segment GSO send: the kernel then leaves the UDP checksum to the device
        # (none on loopback) instead of summing 60 KB in software.
        cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", wire.DATA_HEADER_SIZE + bs))]
        pack = wire.encode_data_header
        for i, seq in enumerate(seqs):
            if not self._splice:
                self._copy_blocks(entry, seqs[i:], 1)
                return
            start = base + seq * bs
            length = min(bs, size - start)
            if (start | length) & 1 or (start % PAGE + length + PAGE - 1) // PAGE > SPLICE_PAGES:
                # Odd pieces: Linux (6.18 measured) sums spliced data of odd length or
                # position into a wrong checksum when it sums in software, and the receiver
                # drops the datagram. Over 16 pages: sendfile stops after one pipe load.
                self._copy_blocks(entry, [seq], 1)
                continue
            try:
                udp.sendmsg([pack(tid, seq)], cmsg, more, peer)
            except OSError as exc:
                if not self.splice_used:
                    self._stop_splicing(exc)
                    self._copy_blocks(entry, [seq], 1)
                else:                     # nothing is corked; the block stays in flight
                    log.debug("udp send to %s failed: %s", peer, exc)
                continue
            try:
                sent = os.sendfile(ufd, fd, start, length)
            except OSError as exc:
                self._uncork()
                if not self.splice_used:
                    self._stop_splicing(exc)
                # The copying path reports a file error as such, or sends the block.
                self._copy_blocks(entry, [seq], 1)
                continue
            if sent != length:
                self._uncork()
                if os.fstat(fd).st_size < start + length:
                    raise OSError(f"short read at {start}: {sent} of {length} bytes")
                self._stop_splicing(f"sendfile sent {sent} of {length} bytes")
                self._copy_blocks(entry, [seq], 1)
                continue
            self.splice_used = True

    def _stop_splicing(self, why) -> None:
        log.info("splicing file data into UDP does not work here (%s): copying instead", why)
        self._splice = False

    def _uncork(self) -> None:
        # Push out whatever a failed splice left corked: a truncated DATA, which every
        # receiver drops for its length, rather than a prefix glued to the next datagram.
        try:
            self._udp.setsockopt(SOL_UDP, UDP_CORK, 0)
        except OSError as exc:
            log.debug("udp uncork failed: %s", exc)

    @staticmethod
    def _read_into(fd: int, iov: list, offset: int) -> None:
        want = sum(len(v) for v in iov)
        got = os.preadv(fd, iov, offset)
        if got != want:
            raise OSError(f"short read at {offset}: {got} of {want} bytes")

    def _send_batch(self, data: memoryview, nseg: int, seg: int, peer) -> None:
        udp = self._udp
        try:
            if nseg > 1:
                try:
                    udp.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))], 0, peer)
                    self.gso_used = True
                    return
                except OSError as exc:
                    if self.gso_used:
                        raise
                    log.info("UDP GSO unavailable (%s): sending datagrams one by one", exc)
                    self._gso = False
                for start in range(0, len(data), seg):
                    udp.sendto(data[start:start + seg], peer)
            else:
                udp.sendto(data, peer)
        except OSError as exc:            # the blocks stay in flight and are resent if lost
            log.debug("udp send to %s failed: %s", peer, exc)

    def _abort_all(self, reason: str) -> None:
        with self._lock:
            entries = list(self._transfers.values())
        for entry in entries:
            if entry.sender.state in ("sending", "ending") and entry.sender.peer:
                for datagram in entry.sender.abort(reason):
                    self._sendto(datagram, entry.sender.peer)

    # ---- TCP fallback --------------------------------------------------------------------
    # A connection's request is read here, on the service thread, without blocking: it must
    # arrive whole within tcp_request_timeout, and at most MAX_TCP_PENDING wait for theirs
    # (the oldest goes first). Only a request that names a live offer with its token gets a
    # worker thread, which sends the file and gives up on a reader slower than
    # TCP_MIN_PROGRESS bytes per idle_limit. A fault in one connection ends only that one.
    def _accept_tcp(self) -> None:
        for _ in range(16):
            try:
                conn, addr = self._tcp.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # e.g. EMFILE: the connection waits in the backlog. The listener stays
                # readable, so it is left out of the selector for a moment: no busy loop.
                log.warning("tcp fallback cannot accept (%s): pausing for %.1f s", exc,
                            ACCEPT_PAUSE)
                self._sel.unregister(self._tcp)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            conn.setblocking(False)
            if len(self._pending) >= MAX_TCP_PENDING:
                oldest = min(self._pending.values(), key=lambda p: p.deadline)
                self._drop_pending(oldest.conn)
            self._pending[conn] = _PendingTcp(conn, addr,
                                              time.monotonic() + self.tcp_request_timeout)
            self._sel.register(conn, selectors.EVENT_READ, "tcp-request")

    def _drop_pending(self, conn: socket.socket) -> None:
        if self._pending.pop(conn, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn)
        conn.close()

    def _expire_pending(self, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            log.debug("tcp fallback request from %s did not arrive in time", pending.addr)
            self._drop_pending(pending.conn)

    def _read_tcp_request(self, conn: socket.socket) -> None:
        pending = self._pending.get(conn)
        if pending is None:
            return
        try:
            chunk = conn.recv(wire.TCP_REQUEST_SIZE - len(pending.data))
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("tcp fallback request from %s failed: %s", pending.addr, exc)
            chunk = b""
        if not chunk:
            self._drop_pending(conn)
            return
        pending.data += chunk
        if len(pending.data) < wire.TCP_REQUEST_SIZE:
            return
        self._pending.pop(conn)
        self._sel.unregister(conn)
        request = wire.decode_tcp_request(bytes(pending.data))
        with self._lock:
            busy = len(self._workers) >= MAX_TCP_WORKERS
        claimed = None if busy else self._claim_for_tcp(request, plain_ip(pending.addr[0]))
        if claimed is None:
            tid = request[0] if request else 0
            with contextlib.suppress(OSError):  # 20 bytes: the empty send buffer takes them
                conn.send(wire.encode_tcp_reply(tid, wire.TCP_REFUSED, 0))
            conn.close()
            return
        entry, start = claimed
        worker = threading.Thread(target=self._serve_tcp, args=(conn, pending.addr, entry, start),
                                  daemon=True, name="transfer-tcp")
        with self._lock:
            self._workers[worker] = conn
        try:
            worker.start()
        except RuntimeError as exc:          # out of threads: this one download fails
            log.warning("cannot start a TCP fallback worker: %s", exc)
            with self._lock:
                self._workers.pop(worker, None)
            conn.close()

    def _serve_tcp(self, conn: socket.socket, addr, entry: _Transfer, start: int) -> None:
        try:
            try:
                self._open_file(entry)
            except OSError as exc:
                log.info("tcp fallback to %s: cannot read %s: %s", addr, entry.path, exc)
                self._send_bounded(conn, wire.encode_tcp_reply(entry.sender.tid,
                                                               wire.TCP_REFUSED, 0), -1, 0, 0)
                return
            count = entry.sender.size - start
            self._send_bounded(conn, wire.encode_tcp_reply(entry.sender.tid, wire.TCP_OK, count),
                               entry.fd, start, count)
        except TimeoutError as exc:
            log.info("tcp fallback to %s ended: %s", addr, exc)
            # Reset rather than close: what the kernel still buffers for this reader goes now.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as exc:
            log.info("tcp fallback to %s ended: %s", addr, exc)
        finally:
            conn.close()
            _close_file(entry)
            with self._lock:
                self._workers.pop(threading.current_thread(), None)

    def _send_bounded(self, conn: socket.socket, head: bytes, fd: int, start: int,
                      count: int) -> None:
        """Send head, then count bytes of fd from start, to a non-blocking socket. Raises
        TimeoutError when the reader takes less than TCP_MIN_PROGRESS bytes in idle_limit
        seconds (or everything left, if less), and on shutdown."""
        poller = select.poll()
        poller.register(conn, select.POLLOUT)
        head_left, pos, end = memoryview(head), start, start + count
        left = len(head) + count               # bytes still to send
        mark_time, mark_left = time.monotonic(), left
        while left:
            if self._stopping.is_set():
                raise OSError("server shutting down")
            now = time.monotonic()
            if now - mark_time >= self.idle_limit:
                if mark_left - left < min(TCP_MIN_PROGRESS, mark_left):
                    raise TimeoutError(f"the reader took {mark_left - left} bytes in "
                                       f"{self.idle_limit:.0f} s: too slow, given up")
                mark_time, mark_left = now, left
            if not poller.poll(min(0.5, max(0.0, mark_time + self.idle_limit - now)) * 1000):
                continue
            try:
                if head_left:
                    n = conn.send(head_left)
                    head_left = head_left[n:]
                else:
                    n = os.sendfile(conn.fileno(), fd, pos, min(end - pos, TCP_SEND_CHUNK))
                    if n == 0:
                        raise OSError(f"the file ended early at byte {pos}")
                    pos += n
            except BlockingIOError:
                continue
            left -= n

    def _claim_for_tcp(self, request, ip: str) -> tuple[_Transfer, int] | None:
        if request is None:
            return None
        tid, token, start = request
        now = time.monotonic()
        with self._lock:
            entry = self._transfers.get(tid)
            if entry is None or entry.tcp_claimed:
                return None
            sender = entry.sender
            if (not hmac.compare_digest(token, sender.token)
                    or ip != plain_ip(sender.client_ip)
                    or not entry.offer_offset <= start <= sender.size
                    or sender.state in ("done", "failed")
                    or (sender.state == "waiting" and now > sender.expires_at)):
                return None
            entry.tcp_claimed = True      # the UDP side stops; the loop drops the entry
            self._transfers.pop(tid)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        return entry, start


@dataclass(eq=False)
class _PendingTcp:
    """A TCP fallback connection whose request has not arrived whole yet."""
    conn: socket.socket
    addr: tuple
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def _close_file(entry: _Transfer) -> None:
    if entry.fd >= 0:
        os.close(entry.fd)
        entry.fd = -1
