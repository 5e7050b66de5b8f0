"""One connected client: a reader thread that decodes requests and answers them, and an
outgoing queue with its own writer thread (see outgoing.py)."""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

from parley_common.tlsbio import TLSChannel
from protocol import (
    BadMessage,
    Connection,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    encode_message,
)
from protocol import messages as m
from protocol.connection import PRE_AUTH_REQUESTS, State

from .commands import COMMANDS, DEFERRED, CommandError
from .outgoing import OutgoingQueue
from .store import StoreError

if TYPE_CHECKING:
    from .chat_server import ChatServer

log = logging.getLogger("parley.handler")
SMALL_RECV, LARGE_RECV = 4096, 65536
TLS_HANDSHAKE_TIMEOUT = 10.0  # checked by check_idle, so the drop comes within a poll after


class ClientHandler:
    def __init__(self, server: ChatServer, sock: socket.socket, address) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.ip = address[0]
        self.user: str | None = None
        self.display: str = ""
        # The newest stored (offline) message sent since this login: ack_delayed never clears
        # beyond it, so an acknowledgement covers only what this connection was really sent.
        self.delayed_sent_upto = 0
        self.conn = Connection(Role.SERVER, max_frame=server.config.max_frame,
                               pre_auth_max_frame=server.config.pre_login_max_frame)
        self.uploads: set[str] = set()
        self.typing_told: dict[str, float] = {}  # conversation key -> when last passed on
        self.searched_at = -1e9  # monotonic time of the last search (one every SEARCH_EVERY)
        self.connected_at = time.time()
        self._last_heard = time.monotonic()
        self._anonymous_since: float | None = self._last_heard  # not logged in since then
        self._ping_nonce: int | None = None
        self._after_reply = None  # set by a command that must act once its reply is queued
        self._reply_lock = threading.Lock()
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # A fixed kernel send buffer (no autotuning to 4 MiB): a stuck client then reaches its
        # SendQ limit after a bounded amount of memory, and a LAN needs no more than this.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server.config.socket_sndbuf)
        # With TLS the socket stays plain: this reader decrypts, the flusher encrypts.
        self.tls = TLSChannel(server.tls.context, server_side=True) if server.tls else None
        self.flusher = server.pick_flusher()
        self.out = OutgoingQueue(sock, server.config.sendq_limit, self.flusher,
                                 on_fail=self.disconnect_soon,
                                 transform=self.tls.encrypt if self.tls else None)
        self._reader = threading.Thread(target=self._run, name=f"reader-{address[0]}:{address[1]}",
                                        daemon=True)

    def __repr__(self) -> str:
        return f"<ClientHandler {self.user or '-'} {self.ip}:{self.address[1]}>"

    def start(self) -> None:
        self._reader.start()

    def join(self, timeout: float) -> None:
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout)

    # ------------------------------------------------------------ output

    def enqueue(self, data: bytes) -> bool:
        return self.out.put(data)

    def send_event(self, msg: m.Message) -> bool:
        return self.out.put(encode_message(msg, self.server.config.max_frame))

    def send_delayed(self, msg: m.ChatMessage) -> bool:
        """Send a stored direct message (delayed=True) and remember that it was sent. Two
        threads may race here (our login, a sender's late delivery); losing an update only
        makes an acknowledgement clear less, and the rest comes again at the next login."""
        if not self.send_event(msg):
            return False
        self.delayed_sent_upto = max(self.delayed_sent_upto, msg.msg_id)
        return True

    def _reply(self, msg: m.Message) -> None:
        # Replies go through our Connection so its state machine follows logins and logouts.
        # The lock is for replies that a worker thread sends later (see DEFERRED).
        with self._reply_lock:
            try:
                data = self.conn.send(msg)
            except LocalProtocolError as exc:
                log.warning("%r: could not send %s: %s", self, msg.TYPE, exc)
                return
            self.out.put(data)

    def reply_later(self, msg: m.Ok | m.Error) -> None:
        """Answer a request whose command returned DEFERRED, from any thread."""
        if not self._closed.is_set():
            self._reply(msg)

    def disconnect_soon(self, code: str, reason: str) -> None:
        """disconnect() on the server's reaper thread: for callers inside a fan-out or a
        flusher, which must neither run the logout path nor wait (see reaper.py)."""
        self.server.reaper.later(lambda: self.disconnect(code, reason))

    def disconnect(self, code: str, reason: str) -> None:
        """Say bye (best effort), flush, close. Safe from any thread, any number of times."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self.send_event(m.Bye(code, reason))
        self.out.close(timeout=1.0)
        self.flusher.discard(self.out)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone: nothing left to tell the peer
        self.sock.close()
        self.server.forget(self)
        log.info("%r disconnected: %s (%s)", self, code, reason)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # ------------------------------------------------------------ input

    def _run(self) -> None:
        # recv(n) holds an n-byte buffer while it blocks. An idle chat client (a thousand of
        # them wait at once) waits in a 1-byte peek instead, then reads what came; a client
        # that streams (an upload) reads large blocks straight away.
        size = SMALL_RECV
        try:
            while not self._closed.is_set():
                try:
                    if size == SMALL_RECV and not self.sock.recv(1, socket.MSG_PEEK):
                        data = b""
                    else:
                        data = self.sock.recv(size)
                except OSError:
                    break
                size = LARGE_RECV if len(data) == size else SMALL_RECV
                self._last_heard = time.monotonic()
                self._ping_nonce = None
                if self.tls is not None:
                    data = self._decrypt(data)
                    if data is None:
                        continue
                try:
                    self.conn.receive_data(data)
                except RemoteProtocolError as exc:
                    self.send_event(m.Error(None, exc.code, str(exc)))
                    self.disconnect("protocol_error", str(exc))
                    return
                for event in self.conn.events():
                    if isinstance(event, ConnectionClosed):
                        self.disconnect("closed", "the client closed the connection")
                        return
                    self._dispatch(event)
                    if self._closed.is_set():
                        return
        finally:
            self.disconnect("closed", "connection lost")

    def _decrypt(self, raw: bytes) -> bytes | None:
        """Plaintext for the protocol (b"" at the end of the stream), or None when these bytes
        completed nothing readable yet (handshake, partial record)."""
        if not raw:
            return b""
        try:
            plain = self.tls.feed_incoming(raw)
        except ssl.SSLError as exc:
            # Not TLS (a plain client, a port scanner) or a damaged record: nothing we could
            # say would be readable, so just close.
            log.info("%r: TLS failed: %s", self, exc)
            return b""
        if self.tls.wants_write:
            self.out.put(b"")  # handshake replies and alerts leave through the flusher
        if plain or not self.tls.peer_closed:
            return plain or None
        return b""

    def check_idle(self) -> None:
        """Called periodically by the server's housekeeping thread."""
        if self._closed.is_set():
            return
        if (self.tls is not None and not self.tls.established
                and time.time() - self.connected_at >= TLS_HANDSHAKE_TIMEOUT):
            self.disconnect("timeout", "no TLS handshake")
            return
        now = time.monotonic()
        if self.conn.state is State.AUTHENTICATED:
            self._anonymous_since = None
        elif self._anonymous_since is None:  # logged out: the deadline starts again
            self._anonymous_since = now
        elif now - self._anonymous_since >= self.server.config.login_deadline:
            # A stranger who trickles a byte now and then still holds a thread and a
            # descriptor: without a deadline, enough of them fill the connection cap.
            self.disconnect("timeout", "not logged in within "
                            f"{self.server.config.login_deadline:.0f} s")
            return
        silent = now - self._last_heard
        if silent >= self.server.config.dead_after:
            self.disconnect("timeout", f"no answer for {silent:.0f} s")
        elif silent >= self.server.config.keepalive_after and self._ping_nonce is None:
            self._ping_nonce = secrets.randbelow(2**31)
            self.send_event(m.Ping(self._ping_nonce))

    def _dispatch(self, event: object) -> None:
        if isinstance(event, BadMessage):
            self.send_event(m.Error(event.request_id, event.code, event.message))
            if event.code == "handshake_required":
                self.disconnect("protocol_error", event.message)
            return
        if isinstance(event, m.Pong):
            return  # hearing anything already counted as alive
        assert isinstance(event, m.Request)
        if self.user is None and event.TYPE not in PRE_AUTH_REQUESTS:
            self._reply(m.Error(event.id, "not_authenticated", "log in first"))
            return
        command = COMMANDS.get(event.TYPE)
        if command is None:
            self._reply(m.Error(event.id, "unknown_type", f"{event.TYPE!r} is not supported"))
            return
        try:
            result = command(self, event)
        except (CommandError, StoreError) as exc:
            # A store failure (a full disk) refuses this request in words; the connection,
            # and everyone else's, carry on.
            self._reply(m.Error(event.id, exc.code, exc.message))
            if exc.disconnect:
                self.disconnect(exc.code, exc.message)
            return
        except Exception:
            log.exception("%r: %s failed", self, event.TYPE)
            self._reply(m.Error(event.id, "internal", "the server failed to handle that request"))
            return
        if result is DEFERRED:
            return  # a worker thread answers later with reply_later()
        self._reply(m.Ok(event.id, result or {}))
        after = self._after_reply
        if after is not None:
            self._after_reply = None
            after()
