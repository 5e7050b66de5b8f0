"""The threaded chat server, in the shape of socketserver: one handler per client, the shared
state on this object behind one lock, and a clean shutdown().

Shared state (all guarded by ``self.lock``):
  clients   {user key: ClientHandler}   the {username: connection} registry (logged-in only)
  handlers  every open connection, logged in or not
  rooms     {room key: Room}
  sessions  {user key: target user}     the open one-to-one sessions, for the console's ls
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from parley_common.addresses import plain_ip
from protocol import encode_message
from protocol import messages as m

from .accounts import Accounts
from .config import ServerConfig
from .handler import ClientHandler
from .limits import RateLimiter
from .memory import trim_heap
from .moderation import Moderation
from .outgoing import Flusher, fan_out
from .reaper import Reaper
from .store import Store
from .tls_setup import load_server_tls

log = logging.getLogger("parley.server")
FLUSHERS = 1  # writer threads shared by all clients (see outgoing.py)
PRESENCE_GATHER = 0.05  # seconds presence notices wait to be sent together
# During a burst (a class logging in) they wait longer: each flush writes to everyone online.
PRESENCE_BURST, PRESENCE_BURST_GATHER = 20, 0.25
ACCEPT_BACKOFF = 0.05  # seconds the accept loop pauses after a failure (no busy loop)
SEARCHES_PER_SECOND, SEARCH_BURST = 20.0, 40  # server-wide, see search_rate
# New connections one address may open: per second, and at once (a class behind one NAT
# address logging in together, a client reconnecting after a network change, stay far under).
NEW_CONNECTIONS_PER_ADDRESS = (20.0, 60)
HEAP_TRIM_INTERVAL = 30.0  # seconds between giving freed C heap back (memory.trim_heap)


def _outside(view: memoryview, spans: list[tuple[int, int]]) -> list[memoryview]:
    """The parts of view outside the given (start, end) spans, which are in order."""
    parts, at = [], 0
    for start, end in spans:
        if start > at:
            parts.append(view[at:start])
        at = end
    if at < len(view):
        parts.append(view[at:])
    return parts


@dataclass
class Room:
    name: str
    creator: str
    members: dict[str, str] = field(default_factory=dict)  # user key -> username
    creator_ip: str = ""  # where it was made from: rooms one address may hold are counted


class ChatServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # None with --no-tls; else the context every connection's TLSChannel is made from.
        self.tls = load_server_tls(config.tls, config.data_dir, config.tls_cert, config.tls_key)
        self.store = Store(config.data_dir / "parley.sqlite3")
        self.accounts = Accounts(self.store, scrypt_n=config.scrypt_n)
        self.moderation = Moderation(self)
        limits = config.policy.limits
        self.message_rate = RateLimiter(limits.message_rate, limits.message_burst)
        # Searches share the store's few reader connections with everyone's history: one at a
        # time, and a server-wide rate, so many searchers never slow others' history.
        self.search_slot = threading.Lock()
        self.new_connections = RateLimiter(*NEW_CONNECTIONS_PER_ADDRESS)
        self.search_rate = RateLimiter(SEARCHES_PER_SECOND, SEARCH_BURST)
        self.lock = threading.RLock()
        self.clients: dict[str, ClientHandler] = {}
        self.handlers: set[ClientHandler] = set()
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, str] = {}
        self.files = None  # the file-sharing service, attached by attach_files()
        self.hello_facts: dict | None = None  # the hello reply, built by the first hello
        # More than one flusher overlaps one's system calls with another's Python work; with
        # the GIL that trades saturated throughput for latency (measured both ways; see FLUSHERS).
        self.flushers = [Flusher(f"flusher-{i}") for i in range(FLUSHERS)]
        self._next_flusher = itertools.count()
        self.reaper = Reaper()  # closes connections dropped inside a fan-out (reaper.py)
        self._presence: list[tuple[bytes, ClientHandler | None]] = []
        self._presence_lock = threading.Lock()
        self._presence_ready = threading.Event()
        self._shutdown_requested = threading.Event()
        self._stopped = threading.Event()
        self._listener = self._bind(config.host, config.port)
        self._accept_thread: threading.Thread | None = None
        self.started_at = time.time()
        self.connection_cap = config.connection_cap()

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", "::0"):
            # "every address" means IPv4 too (peers then show as ::ffff:a.b.c.d: see accept)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        # A class logging in at once: a short queue overflows, and each dropped SYN costs
        # its client a 1 s retransmission (seen as ListenOverflows in nstat).
        sock.listen(socket.SOMAXCONN)
        return sock

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    def start(self) -> None:
        """Serve in a background thread."""
        self._accept_thread = threading.Thread(target=self.serve_forever, name="accept",
                                               daemon=True)
        self._accept_thread.start()

    def _admit(self, sock: socket.socket, addr) -> bool:
        """Refuse banned addresses and more than the per-address limit of connections.
        Refused connections are closed at once: nothing has been negotiated to say why."""
        ip = addr[0]
        limits = self.config.policy.limits
        with self.lock:
            total = len(self.handlers)
        if total >= self.connection_cap:
            log.warning("refused a connection from %s: %d connections open, the most this "
                        "server takes (--max-connections)", ip, total)
            sock.close()
            return False
        count, over = 0, False
        if not (limits.exempt_loopback and ipaddress.ip_address(ip).is_loopback):
            if self.new_connections.allow(ip):
                # Faster than any client reconnects: refused before it costs a thread, so
                # one address cycling connections cannot keep the accept loop from others.
                log.debug("refused a connection from %s: connecting too often", ip)
                sock.close()
                return False
            with self.lock:  # counted only when it matters: this is O(connections)
                count = sum(1 for h in self.handlers if h.ip == ip)
            over = count >= limits.connections_per_address
        if over or self.moderation.address_banned(ip):
            log.info("refused a connection from %s (%d open)", ip, count)
            sock.close()
            return False
        return True

    def _housekeeping(self) -> None:
        """Keepalive for everyone: ping the silent, drop the dead (readers block in recv);
        and apply the history retention policy every retention_interval."""
        next_trim = 0.0
        next_heap_trim = time.monotonic() + HEAP_TRIM_INTERVAL
        while not self._shutdown_requested.wait(self.config.poll_interval):
            with self.lock:
                handlers = list(self.handlers)
            for h in handlers:
                h.check_idle()
            if time.monotonic() >= next_heap_trim:
                next_heap_trim = time.monotonic() + HEAP_TRIM_INTERVAL
                trim_heap()
            if time.monotonic() >= next_trim:
                next_trim = time.monotonic() + self.config.retention_interval
                self._apply_retention()

    def _apply_retention(self) -> None:
        """History kept as documented: at most history_keep messages per conversation, and
        none older than the policy's history_days (when set). A failure (a full disk) is
        logged and tried again at the next round; it never ends housekeeping."""
        try:
            days = self.config.policy.history_days
            if days:
                self.store.delete_older_than(time.time() - days * 86400)
            if self.config.history_keep:
                removed = self.store.trim_history(self.config.history_keep)
                if removed:
                    log.info("retention: removed %d old message(s)", removed)
        except Exception:
            log.exception("retention failed; trying again in %g s",
                          self.config.retention_interval)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        for flusher in self.flushers:
            flusher.start()
        self.reaper.start()
        threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True).start()
        threading.Thread(target=self._presence_loop, name="presence", daemon=True).start()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self._listener, selectors.EVENT_READ)
                while not self._shutdown_requested.is_set():
                    if not sel.select(poll_interval):
                        continue
                    try:
                        sock, addr = self._listener.accept()
                        addr = (plain_ip(addr[0]), addr[1])
                    except OSError as exc:
                        # Out of descriptors (EMFILE/ENFILE) the pending connection stays
                        # queued and select() says "readable" at once: pause instead of
                        # spinning a core, and let closing connections free some.
                        log.warning("accept failed: %s", exc)
                        self._shutdown_requested.wait(ACCEPT_BACKOFF)
                        continue
                    try:
                        if self._admit(sock, addr):
                            self._start_handler(sock, addr)
                    except Exception:
                        # One connection's failure (no thread to be had, a socket option
                        # refused) ends that connection, never the accept loop.
                        log.exception("could not serve a connection from %s", addr[0])
                        self._abandon(sock)
                        self._shutdown_requested.wait(ACCEPT_BACKOFF)
        finally:
            self._stopped.set()

    def pick_flusher(self) -> Flusher:
        return self.flushers[next(self._next_flusher) % len(self.flushers)]

    def _start_handler(self, sock: socket.socket, addr) -> None:
        handler = ClientHandler(self, sock, addr)
        with self.lock:
            self.handlers.add(handler)
        try:
            handler.start()
        except BaseException:  # RuntimeError: can't start new thread
            with self.lock:
                self.handlers.discard(handler)
            raise

    @staticmethod
    def _abandon(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.close()

    def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Stop accepting, tell every client, flush, close storage. Safe to call twice."""
        if self._shutdown_requested.is_set():
            self._stopped.wait(5)
            return
        self._shutdown_requested.set()
        if self._accept_thread is not None:
            self._stopped.wait(5)
        self._listener.close()
        with self.lock:
            handlers = list(self.handlers)
        for h in handlers:
            h.disconnect("shutdown", reason)
        for h in handlers:
            h.join(timeout=3)
        self.reaper.stop()
        for flusher in self.flushers:
            flusher.stop()
        if self.files is not None:
            self.files.close()
        self.store.close()

    # ------------------------------------------------------------ registry

    def online(self) -> list[ClientHandler]:
        with self.lock:
            return list(self.clients.values())

    def get_client(self, user: str) -> ClientHandler | None:
        with self.lock:
            return self.clients.get(user.lower())

    def forget(self, handler: ClientHandler) -> None:
        """Remove a closed connection from every structure, with leave notices."""
        with self.lock:
            self.handlers.discard(handler)
        self.log_out(handler)

    def log_out(self, handler: ClientHandler) -> None:
        """Take a connection's user out of the registry, rooms and sessions, with notices."""
        if self.files is not None:
            self.files.forget_client(handler)
        with self.lock:
            user = handler.user
            if user is None or self.clients.get(user.lower()) is not handler:
                return
            del self.clients[user.lower()]
            self.sessions.pop(user.lower(), None)
            left_rooms = self._remove_from_rooms(user)
        for room, members in left_rooms:
            self.send_to(members, m.RoomEvent(room.name, "left", user, handler.display))
        self.announce_presence(m.Presence(user, handler.display, False))

    def _remove_from_rooms(self, user: str) -> list[tuple[Room, list[str]]]:
        out = []
        for key, room in list(self.rooms.items()):
            if room.members.pop(user.lower(), None) is not None:
                if room.members:
                    out.append((room, list(room.members)))
                else:
                    del self.rooms[key]  # an empty room disappears; its history stays
        return out

    # ------------------------------------------------------------ delivery

    def announce_presence(self, msg: m.Message, exclude: ClientHandler | None = None) -> None:
        """Queue a presence change for everyone, gathered for PRESENCE_GATHER seconds (longer
        during a burst: PRESENCE_BURST_GATHER).

        When a class logs in at once, every login would otherwise cost one write to every
        client (a thousand logins, a million writes); gathered, a burst costs one write per
        client. Chat messages flush what is gathered first, so nobody sees a message from a
        user before the notice that the user came online.
        """
        data = encode_message(msg, self.config.max_frame)
        with self._presence_lock:
            self._presence.append((data, exclude))
        self._presence_ready.set()

    def flush_presence(self) -> int:
        """Send the gathered presence notices now; returns how many there were."""
        if not self._presence:  # the common case, on every message: skip the lock
            return 0
        with self._presence_lock:  # held while queueing, so batches keep their order
            batch, self._presence = self._presence, []
            self._presence_ready.clear()
            if not batch:
                return 0
            everything = b"".join(data for data, _ in batch)
            # A client is not told about its own login: it gets the batch around its own
            # notices, as views of the one joined batch. (A private copy each would cost, for
            # a class logging in at once, hundreds of clients times the whole batch.)
            own: dict[ClientHandler, list[tuple[int, int]]] = {}
            start = 0
            for data, ex in batch:
                if ex is not None:
                    own.setdefault(ex, []).append((start, start + len(data)))
                start += len(data)
            online = self.online()
            view = memoryview(everything)
            for h in online:
                spans = own.get(h)
                if spans is not None:
                    h.out.put_all(_outside(view, spans))
            fan_out([h.out for h in online if h not in own], everything)
        return len(batch)

    def _presence_loop(self) -> None:
        gather = PRESENCE_GATHER
        while not self._shutdown_requested.is_set():
            if self._presence_ready.wait(0.5):
                self._shutdown_requested.wait(gather)  # let the burst gather
                self._presence_ready.clear()  # before flushing: a later notice sets it again
                sent = self.flush_presence()
                gather = PRESENCE_BURST_GATHER if sent >= PRESENCE_BURST else PRESENCE_GATHER

    def broadcast(self, msg: m.Message, exclude: ClientHandler | None = None) -> int:
        """Encode once, queue for every logged-in client. Returns how many it was queued for."""
        self.flush_presence()
        data = encode_message(msg, self.config.max_frame)
        return fan_out([h.out for h in self.online() if h is not exclude], data)

    def send_to(self, user_keys: list[str], msg: m.Message) -> int:
        self.flush_presence()  # as broadcast(): "online" before anything the user says
        data = encode_message(msg, self.config.max_frame)
        with self.lock:
            targets = [self.clients.get(k.lower()) for k in user_keys]
        return fan_out([h.out for h in targets if h is not None], data)
