"""Answers LAN discovery probes on a UDP port so clients can list this server (docs/discovery.md).

Discovery is best-effort: people can always type the address by hand. Anyone can send a probe
with a forged source address, so the responder is built not to be worth abusing: it answers
only probes of at least PROBE_SIZE bytes with at most that many bytes, only to the probe's
source, only to unprivileged source ports, and at a bounded rate per source IP and in total.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol import discovery as wire
from protocol.version import APP_VERSION, PROTOCOL_VERSION

log = logging.getLogger(__name__)

RECV_BUFFER = wire.MAX_PROBE_SIZE + 1  # one byte more, so an oversize datagram shows as such
LOWEST_SOURCE_PORT = 1024  # a real prober sends from an ephemeral port; below are services to reflect at


class RateLimiter:
    """Token buckets per key (source IP) plus one for everyone, with a bounded table.

    A key may spend `burst` answers at once, then `rate` per second. The table holds at most
    `max_keys` sources; when full, buckets that have refilled (idle sources) are forgotten, and
    if none have, new sources are refused until some do: a flood of forged sources costs us
    memory for max_keys entries and nothing more.
    """

    def __init__(self, rate: float, burst: float, *, total_rate: float, total_burst: float,
                 max_keys: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self.total_rate, self.total_burst = total_rate, total_burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of last update)
        self._total = (total_burst, clock())

    @staticmethod
    def _refill(bucket: tuple[float, float], rate: float, burst: float, now: float) -> float:
        tokens, then = bucket
        return min(burst, tokens + max(0.0, now - then) * rate)

    def _prune(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if self._refill(bucket, self.rate, self.burst, now) >= self.burst:
                del self._buckets[key]

    def allow(self, key: str) -> bool:
        now = self.clock()
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._prune(now)
            if len(self._buckets) >= self.max_keys:
                return False
        tokens = self._refill(self._buckets.get(key, (self.burst, now)), self.rate, self.burst, now)
        total = self._refill(self._total, self.total_rate, self.total_burst, now)
        if tokens < 1.0 or total < 1.0:
            self._buckets[key] = (tokens, now)
            self._total = (total, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        self._total = (total - 1.0, now)
        return True


@dataclass
class DiscoveryStats:
    """What the responder did with the datagrams it received (for tests and logs)."""
    received: int = 0      # every datagram, whatever it was
    answered: int = 0
    ignored: int = 0       # not a probe, too small, too large, or from a privileged port
    rate_limited: int = 0
    failed: int = 0        # info() raised or gave unusable values, or sendto failed


class DiscoveryResponder:
    """Answers discovery probes on UDP `port` (0: any free port; see .port after start()).

    `info()` is called for each probe that will be answered and returns a dict with:
      port (int, required): the chat server's TCP port
      name (str): shown in clients' lists; default this machine's hostname
      users (int): people online; default 0
      protocol_version (int), app_version (str): default this program's
      fingerprint (str | None): TLS certificate fingerprint, when there is one
    """

    def __init__(self, info: Callable[[], dict], *, port: int = wire.DEFAULT_DISCOVERY_PORT,
                 bind: str = "0.0.0.0", rate: float = 10.0, burst: float = 10.0,
                 total_rate: float = 200.0, total_burst: float = 200.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.info = info
        self.bind = bind
        self.stats = DiscoveryStats()
        self._port = port
        self._limiter = RateLimiter(rate, burst, total_rate=total_rate, total_burst=total_burst,
                                    clock=clock)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # stats are read by other threads

    @property
    def port(self) -> int:
        """The UDP port answered on (the real one once started, when 0 was asked for)."""
        return self._port

    def start(self) -> DiscoveryResponder:
        """Bind and start answering. Raises OSError when the port cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if hasattr(socket, "SIO_UDP_CONNRESET"):
                # Windows: an ICMP "port unreachable" for an earlier answer would otherwise
                # make the next recvfrom fail with ConnectionResetError.
                sock.ioctl(socket.SIO_UDP_CONNRESET, False)
            sock.bind((self.bind, self._port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.5)  # bounds how long close() can take even if the wake-up is lost
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="discovery", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop answering and release the port. Safe to call more than once."""
        self._stop.set()
        sock, thread = self._sock, self._thread
        if sock is None or thread is None:
            return
        if thread.is_alive():
            self._wake(sock)
            thread.join(timeout=5)
        sock.close()
        self._sock = None

    def __enter__(self) -> DiscoveryResponder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _wake(self, sock: socket.socket) -> None:
        """Unblock the serving thread's recvfrom with a datagram it will drop."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\0", (host, self._port))
        except OSError as exc:
            log.debug("discovery wake-up not sent (%s); the receive timeout ends the thread", exc)

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(RECV_BUFFER)
            except TimeoutError:
                continue
            except OSError as exc:
                # Windows reports an oversize datagram (WSAEMSGSIZE) this way; one bad datagram
                # must not end discovery.
                if self._stop.is_set():
                    break
                log.debug("discovery receive error: %s", exc)
                self._count("received")
                self._count("ignored")
                continue
            if self._stop.is_set():
                break
            self._count("received")
            self._handle(sock, data, addr)

    def _handle(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        probe = wire.decode_probe(data)
        if probe is None or addr[1] < LOWEST_SOURCE_PORT:
            self._count("ignored")
            return
        if not self._limiter.allow(addr[0]):
            self._count("rate_limited")
            return
        answer = self._answer_for(probe)
        if answer is None:
            self._count("failed")
            return
        # Holds by construction (probe >= PROBE_SIZE >= answer); checked because it is the
        # property that keeps us from amplifying forged traffic.
        if len(answer) > len(data):
            self._count("failed")
            return
        try:
            sock.sendto(answer, addr)
        except OSError as exc:
            log.debug("discovery answer to %s not sent: %s", addr, exc)
            self._count("failed")
            return
        self._count("answered")

    def _answer_for(self, probe: wire.Probe) -> bytes | None:
        try:
            info = self.info()
            return wire.encode_answer(wire.Answer(
                nonce=probe.nonce,
                name=str(info.get("name") or socket.gethostname()),
                port=int(info["port"]),
                protocol_version=int(info.get("protocol_version", PROTOCOL_VERSION)),
                app_version=str(info.get("app_version", APP_VERSION)),
                users=int(info.get("users", 0)),
                fingerprint=info.get("fingerprint") or None,
            ))
        except Exception:
            # A bug in info() must cost one answer, not the responder thread.
            log.exception("discovery: cannot build an answer")
            return None
