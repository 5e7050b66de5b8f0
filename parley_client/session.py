"""ClientSession: one chat connection to a Parley server, thread-safe, without any UI.

Threads, per connection (a Link, link.py):
  * a reader that feeds protocol.Connection, settles request futures and answers pings;
  * a writer (Link.write_loop) that owns socket.sendall. Callers (a Tk event handler, the
    reader answering a ping) only encode under the session lock and enqueue, so nobody but
    the writer ever blocks on a full socket buffer, and the wire order is the order in which
    requests were made.
Per session:
  * an EventDispatcher (dispatcher.py) that calls on_event, one event at a time and in order,
    so a slow or blocking callback (one that waits on a future, say) never stalls the reader;
  * while reconnecting, a reconnect thread.
"""

from __future__ import annotations

import itertools
import logging
import random
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

from parley_common.tlsbio import format_fingerprint
from protocol import PROTOCOL_VERSION, BadMessage, ConnectionClosed
from protocol import messages as m
from protocol.errors import LocalProtocolError, RemoteProtocolError

from .dispatcher import EventDispatcher
from .events import (
    Connected,
    Disconnected,
    LoggedIn,
    LoggedOut,
    Notice,
    Reconnected,
    Reconnecting,
    SessionError,
)
from .link import Link, open_socket, tls_handshake
from .requests import ChatRequests
from .trust_store import TrustStore

__all__ = ["ClientSession", "SessionError"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # bound on the replies the session itself waits for (login on reconnect)
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 10.0
JOIN_TIMEOUT = 2.0
# Bye codes after which coming back would only repeat the same refusal; logged_in_elsewhere
# too, or two clients of one user would keep knocking each other off.
NO_RECONNECT_CODES = frozenset({"kicked", "version_mismatch", "logged_in_elsewhere",
                                "password_reset"})
# Resume answers that no retry can change: the token (or the account) is no longer valid.
FINAL_RESUME_ERRORS = frozenset({"bad_token", "no_such_user", "invalid_username"})
# Connect failures that trying again cannot fix (and, for a changed certificate, must not).
FINAL_CONNECT_ERRORS = frozenset({"version_mismatch", "fingerprint_changed", "untrusted",
                                  "tls_failed"})

_FRIENDLY_LOCAL = {
    "not_authenticated": "log in first",
    "handshake_required": "the connection is not ready yet",
    "closed": "the connection is closed",
}


def settle(fut: Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Resolve a future that someone may have cancelled meanwhile (then there is no one to tell)."""
    if fut.done():
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except InvalidStateError:
        log.debug("future was cancelled while being settled")


def failed(code: str, message: str) -> Future:
    fut: Future = Future()
    fut.set_exception(SessionError(code, message))
    return fut


class ClientSession(ChatRequests):
    def __init__(self, on_event: Callable[[object], None], *, software: str = "parley",
                 auto_reconnect: bool = False, tls: bool = True, trust: TrustStore | None = None,
                 on_new_fingerprint: Callable[[str, int, str], bool] | None = None) -> None:
        """trust: the pinned certificates (default: in memory, for this session only).
        on_new_fingerprint(host, port, fingerprint) is asked, on the connecting thread, about
        a server not in trust; True accepts and remembers it. Default: accept."""
        self._tls = tls
        self._trust = trust if trust is not None else TrustStore()
        self._on_new_fingerprint = on_new_fingerprint
        self._fingerprint: str | None = None
        self._software = software
        self._auto_reconnect = auto_reconnect
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._link: Link | None = None
        self._host: str | None = None
        self._port: int | None = None
        self._server_info: dict | None = None
        self._user: str | None = None
        self._display: str | None = None
        # (username, resume_token) for the automatic re-login; the password is never kept.
        self._credentials: tuple[str, str] | None = None
        self._logged_out = False  # the user logged out: a lost connection is not worth restoring
        self._closing = threading.Event()  # replaced by each connect(); set by close()
        self._reconnecting = False
        self._connecting = False  # a connect() call is under way
        self._reconnect_thread: threading.Thread | None = None
        self._outbox: list[tuple[dict, Future]] = []
        self._uploads: dict[str, Any] = {}
        self._events = EventDispatcher(on_event)
        # Stored messages come again after a reconnect until acknowledged: show each once.
        self._delayed_seen: set[int] = set()

    # ------------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.live and not link.lost

    @property
    def reconnecting(self) -> bool:
        return self._reconnecting

    @property
    def user(self) -> str | None:
        return self._user

    @property
    def display(self) -> str | None:
        return self._display

    @property
    def host(self) -> str | None:
        return self._host

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def fingerprint(self) -> str | None:
        """The SHA-256 (64 hex digits) of the current (or last) server's certificate."""
        return self._fingerprint

    @property
    def trust(self) -> TrustStore:
        return self._trust

    @property
    def server_info(self) -> dict | None:
        """The hello result of the current (or last) connection."""
        return self._server_info

    # ------------------------------------------------------------------ connecting

    def connect(self, host: str, port: int, timeout: float = 5.0) -> dict:
        """TCP connect and hello; returns the hello result. Blocks up to ~2 x timeout."""
        with self._lock:
            if self._link is not None or self._reconnecting or self._connecting:
                raise SessionError("already_connected", "already connected; disconnect first")
            self._connecting = True
            self._closing = threading.Event()
            self._events.reopen()
            self._logged_out = False
            self._credentials = None
            self._user = self._display = None
        try:
            _link, info = self._establish(host, port, timeout, initial=True)
        finally:
            with self._lock:
                self._connecting = False
        return info

    def _establish(self, host: str, port: int, timeout: float, *, initial: bool,
                   closing: threading.Event | None = None) -> tuple[Link, dict]:
        # A reconnect thread passes the closing event of its own epoch: after close() and a
        # new connect(), a late attempt of the old epoch must not install its link.
        closing = closing or self._closing
        sock = open_socket(host, port, timeout)
        channel = early = None
        if self._tls:
            try:
                channel, early = tls_handshake(sock, host, port, timeout)
                self._check_pin(host, port, channel.peer_fingerprint() or "")
            except SessionError:
                sock.close()
                raise
        sock.settimeout(None)
        link = Link(sock, host, port)
        link.tls = channel
        if early:
            link.conn.receive_data(early)  # the reader takes the events with its first read
        with self._lock:
            if closing.is_set() or (self._link is not None and not self._link.lost):
                sock.close()
                raise SessionError("closed", "the session was closed")
            self._link = link
            link.reader = threading.Thread(target=self._read_loop, args=(link,),
                                           name="parley-reader", daemon=True)
            link.writer = threading.Thread(target=link.write_loop,
                                           args=(lambda why: self._lose(link, why, None),),
                                           name="parley-writer", daemon=True)
            link.reader.start()
            link.writer.start()
            hello: Future = Future()
            self._submit(link, m.Hello, {"version": PROTOCOL_VERSION,
                                         "software": self._software}, hello)
        try:
            info = hello.result(timeout)
        except TimeoutError:
            self._lose(link, "the server did not answer the handshake", None, reconnect=False)
            raise SessionError("timeout", f"{host}:{port} did not answer the handshake "
                               f"within {timeout:g} s") from None
        except SessionError as exc:
            self._lose(link, exc.message, exc.code, reconnect=False)
            if exc.code == "version_mismatch":
                raise
            if exc.code == "disconnected":
                hint = "" if self._tls else "; if it uses TLS, connect without --no-tls"
                raise SessionError("unreachable", f"{host}:{port} closed the connection during "
                                   f"the handshake (is it a Parley server{hint}?)") from None
            raise
        # The server says how often it pings; silence for three of those periods means the
        # link is dead even if TCP has not noticed (a half-open connection).
        keepalive = info.get("keepalive") if isinstance(info, dict) else None
        if isinstance(keepalive, int | float) and keepalive > 0:
            try:
                sock.settimeout(3 * keepalive)
            except OSError:
                log.debug("socket closed before the keepalive timeout could be set")
        with self._lock:
            self._host, self._port, self._server_info = host, port, info
            if initial and not link.lost:
                link.live = True
                self._events.emit(Connected(host, port, info))
        return link, info

    # ------------------------------------------------------------------ requests

    def request(self, msg_type: type[m.Request], **fields: Any) -> Future:
        """Send one request; the future resolves to the ok result or raises SessionError."""
        fut: Future = Future()
        with self._lock:
            link = self._link
            if link is None or not link.live or link.lost:
                if msg_type is m.Send and self._reconnecting and not self._closing.is_set():
                    self._outbox.append((fields, fut))
                    return fut
                what = "reconnecting" if self._reconnecting else "not connected to a server"
                fut.set_exception(SessionError("not_connected", what))
                return fut
            self._submit(link, msg_type, fields, fut)
        return fut

    def _submit(self, link: Link, msg_type: type[m.Request], fields: dict, fut: Future) -> None:
        """Encode and enqueue under the lock, so the wire order is the order of calls."""
        with self._lock:
            msg = msg_type(id=next(self._ids), **fields)
            if link.lost:
                settle(fut, exc=SessionError("disconnected", "the connection was lost"))
                return
            try:
                data = link.conn.send(msg)
            except LocalProtocolError as exc:
                text = _FRIENDLY_LOCAL.get(exc.code, str(exc))
                settle(fut, exc=SessionError(exc.code, text))
                return
            link.pending[msg.id] = (fut, msg)
            link.outq.put(data)

    def _send_untracked(self, link: Link, msg: m.Message) -> None:
        with self._lock:
            if link.lost:
                return
            try:
                data = link.conn.send(msg)
            except LocalProtocolError as exc:
                log.warning("could not send %s: %s", msg.TYPE, exc)
                return
            link.outq.put(data)

    # ------------------------------------------------------------------ files

    def download(self, name: str, dest_dir: Path, on_progress: Callable[[Any], None],
                 timeout: float = REQUEST_TIMEOUT):
        """Ask for an offer (resuming a partial file) and start the UDP download thread.

        Blocks until the offer arrives (call it from a worker thread in a GUI).
        """
        try:
            from .download import Download, resume_offset, suggested_block_size
        except ImportError as exc:
            raise SessionError("unavailable", f"downloads are not available: {exc}") from None
        if not name or Path(name).name != name or name in (".", ".."):
            raise SessionError("bad_path", f"{name!r} is not a plain file name")
        host = self._host
        if host is None or not self.connected:
            raise SessionError("not_connected", "not connected to a server")
        dest = Path(dest_dir) / name
        offset = resume_offset(dest)
        try:
            offer = self.request_download(name, offset, suggested_block_size(host)
                                          ).result(timeout)
        except TimeoutError:
            raise SessionError("timeout", "the server did not answer the download request") \
                from None
        thread = Download(offer, host, dest, on_progress=on_progress)
        thread.start()
        return thread

    def upload(self, path: Path, on_progress: Callable[[int, int], None] | None = None
               ) -> Future:
        """Upload a file over the chat connection; the future resolves to its library entry.

        future.cancel() or cancel_upload(upload_id) stops it (the server is told to discard it).
        The future gets an ``upload_id`` attribute once the server has accepted the upload.
        """
        from .upload import start_upload

        return start_upload(self, Path(path), on_progress)

    def cancel_upload(self, upload_id: str) -> bool:
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            return False
        upload.cancel()
        return True

    def _track_upload(self, upload_id: str, upload: Any | None) -> None:
        with self._lock:
            if upload is None:
                self._uploads.pop(upload_id, None)
            else:
                self._uploads[upload_id] = upload

    # ------------------------------------------------------------------ IO threads

    def _check_pin(self, host: str, port: int, fingerprint: str) -> None:
        """Trust on first use: a known server must show the certificate it showed before."""
        known = self._trust.get(host, port)
        if known is not None and known != fingerprint:
            raise SessionError(
                "fingerprint_changed",
                f"The server's certificate changed! {host}:{port} now shows "
                f"{format_fingerprint(fingerprint)} but showed {format_fingerprint(known)} "
                "before. If the administrator did not reinstall the server, someone may be "
                "intercepting the connection. Nothing was sent. Ask the administrator for the "
                "server's fingerprint or join code.")
        if known is None:
            ask = self._on_new_fingerprint
            if ask is not None and not ask(host, port, fingerprint):
                raise SessionError("untrusted", "The server's certificate was not accepted; "
                                   "nothing was sent.")
            self._trust.remember(host, port, fingerprint)
        self._fingerprint = fingerprint

    def _read_loop(self, link: Link) -> None:
        reason, code = "the server closed the connection", None
        try:
            while not link.lost:
                try:
                    data = link.sock.recv(65536)
                except TimeoutError:
                    reason = "the server stopped answering"
                    break
                except OSError as exc:
                    if not link.lost:
                        reason = f"connection lost: {exc.strerror or exc}"
                    break
                if link.tls is not None and data:
                    try:
                        plain = link.tls.feed_incoming(data)
                    except ssl.SSLError as exc:
                        reason = f"the server sent something unreadable (TLS: {exc.reason or exc})"
                        code = "protocol_error"
                        break
                    if link.tls.wants_write:
                        link.outq.put(b"")  # the writer sends what the TLS layer has waiting
                    if not plain and not link.tls.peer_closed:
                        continue  # a partial record
                    data = plain  # b"" after the server's close_notify: the end
                with self._lock:
                    link.conn.receive_data(data)
                    events = link.conn.events()
                for event in events:
                    self._handle(link, event)
                if link.delayed_upto > link.delayed_acked:
                    self._ack_delayed(link)
                if not data:
                    break
        except RemoteProtocolError as exc:
            reason, code = f"the server sent something unreadable: {exc}", "protocol_error"
        if link.bye is not None:
            reason, code = link.bye.reason or reason, link.bye.code
        self._lose(link, reason, code)

    def _handle(self, link: Link, event: object) -> None:
        if isinstance(event, m.Ok | m.Error) and event.id is not None:
            with self._lock:
                entry = link.pending.pop(event.id, None)
            if entry is None:
                log.warning("reply to unknown request id %s", event.id)
                return
            fut, request = entry
            if isinstance(event, m.Ok):
                self._apply_ok(link, request, event.result)
                settle(fut, event.result)
            else:
                settle(fut, exc=SessionError(event.code, event.message))
        elif isinstance(event, m.Ping):
            self._send_untracked(link, m.Pong(nonce=event.nonce))
        elif isinstance(event, m.Bye):
            link.bye = event
            self._events.emit(event)
        elif isinstance(event, m.Renamed):
            if event.user == self._user:
                self._display = event.display
            self._events.emit(event)
        elif isinstance(event, m.ChatMessage) and event.delayed:
            with self._lock:
                fresh = event.msg_id not in self._delayed_seen
                self._delayed_seen.add(event.msg_id)
                link.delayed_upto = max(link.delayed_upto, event.msg_id)
            if fresh:
                self._events.emit(event)
        elif isinstance(event, ConnectionClosed):
            return
        elif isinstance(event, BadMessage):
            # A newer server may send something we cannot parse; skip it, fail its request.
            entry = None
            if event.request_id is not None:
                with self._lock:
                    entry = link.pending.pop(event.request_id, None)
            if entry is not None:
                settle(entry[0], exc=SessionError(event.code, event.message))
            else:
                log.warning("skipped a message from the server: %s", event.message)
                self._events.emit(Notice(f"skipped a message from the server: {event.message}"))
        else:
            self._events.emit(event)

    def _ack_delayed(self, link: Link) -> None:
        """Tell the server that the stored messages read so far are queued for on_event (once
        per batch read), so that it forgets them; until then it keeps them and sends them
        again at the next login. Nobody waits for the reply: a lost ack means a copy later,
        which _handle drops, or which the app drops by msg_id after a restart."""
        link.delayed_acked = link.delayed_upto
        self._submit(link, m.AckDelayed, {"msg_id": link.delayed_upto}, Future())

    def _apply_ok(self, link: Link, request: m.Request, result: dict) -> None:
        """Update session state before the caller sees the result (so .user is already set)."""
        if isinstance(request, m.Hello):
            link.established = True
        elif isinstance(request, m.Login | m.Register | m.Resume):
            with self._lock:
                self._user = result.get("user", request.username)
                self._display = result.get("display", self._user)
                token = result.get("resume_token")
                self._credentials = (self._user, token) if isinstance(token, str) else None
                self._logged_out = False
                announce = link.live  # a re-login during reconnect is announced as Reconnected
            if announce:
                self._events.emit(LoggedIn(self._user, self._display, bool(result.get("new", False))))
        elif isinstance(request, m.Logout):
            with self._lock:
                self._user = self._display = None
                self._credentials = None
                self._logged_out = True
            self._events.emit(LoggedOut("logged out"))
        elif isinstance(request, m.Rename):
            self._display = result.get("display", request.display)
        elif isinstance(request, m.ChangePassword):
            token = result.get("resume_token")
            with self._lock:
                if self._user is not None and isinstance(token, str):
                    self._credentials = (self._user, token)

    # ------------------------------------------------------------------ losing and regaining

    def _lose(self, link: Link, reason: str, code: str | None, *, reconnect: bool = True
              ) -> None:
        with self._lock:
            if link.lost:
                return
            link.lost = True
            link.conn.close()
            if self._link is link:
                self._link = None
            pending, link.pending = link.pending, {}
            announce = link.live
            will_reconnect = (reconnect and announce and self._auto_reconnect
                              and not self._closing.is_set() and not self._logged_out
                              and code not in NO_RECONNECT_CODES)
            if will_reconnect:
                self._reconnecting = True
            elif announce:  # over for good: nobody is logged in anymore
                self._user = self._display = None
                self._credentials = None
        link.shutdown()
        for fut, _request in pending.values():
            settle(fut, exc=SessionError("disconnected", f"disconnected: {reason}"))
        with self._lock:  # so close() sees either no reconnect thread or a started one
            if announce:
                self._events.emit(Disconnected(reason, code, will_reconnect))
            if will_reconnect and not self._closing.is_set():
                thread = threading.Thread(target=self._reconnect_loop,
                                          args=(link.host, link.port, self._closing),
                                          name="parley-reconnect", daemon=True)
                self._reconnect_thread = thread
                thread.start()

    def _reconnect_loop(self, host: str, port: int, closing: threading.Event) -> None:
        delay = RECONNECT_FIRST_DELAY
        attempt = 0
        while not closing.is_set():
            attempt += 1
            wait = min(RECONNECT_MAX_DELAY, delay * random.uniform(0.8, 1.2))
            self._events.emit(Reconnecting(attempt, round(wait, 3)))
            if closing.wait(wait):
                break
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
            try:
                link, _info = self._establish(host, port, 5.0, initial=False, closing=closing)
            except SessionError as exc:
                if exc.code in FINAL_CONNECT_ERRORS:
                    self._give_up(exc.message, exc.code)
                    return
                log.info("reconnect attempt %d failed: %s", attempt, exc.message)
                continue
            refused: SessionError | None = None
            creds = self._credentials
            if creds is not None:
                login: Future = Future()
                self._submit(link, m.Resume, {"username": creds[0], "token": creds[1]}, login)
                try:
                    login.result(REQUEST_TIMEOUT)
                except TimeoutError:
                    self._lose(link, "re-login timed out", None, reconnect=False)
                    continue
                except SessionError as exc:
                    if exc.code not in FINAL_RESUME_ERRORS:
                        # e.g. already_logged_in: the server has not noticed the old link yet.
                        self._lose(link, exc.message, exc.code, reconnect=False)
                        continue
                    refused = exc
            if self._finish_reconnect(link, refused, closing):
                return
        self._fail_outbox()

    def _finish_reconnect(self, link: Link, refused: SessionError | None,
                          closing: threading.Event) -> bool:
        with self._lock:
            if link.lost or self._link is not link or closing.is_set():
                return False
            link.live = True
            self._reconnecting = False
            # Events are queued under the lock so Reconnected precedes the echoes of the
            # outbox messages flushed just below.
            if refused is not None:
                self._user = self._display = None
                self._credentials = None
                self._events.emit(LoggedOut(f"logging in again was refused: {refused.message}"))
            self._events.emit(Reconnected(self._user))
            outbox, self._outbox = self._outbox, []
            if refused is None:
                for fields, fut in outbox:
                    self._submit(link, m.Send, fields, fut)
                outbox = []
        for _fields, fut in outbox:
            settle(fut, exc=SessionError("not_sent", "not sent: you are no longer logged in"))
        return True

    def _give_up(self, reason: str, code: str | None) -> None:
        with self._lock:
            self._reconnecting = False
            self._user = self._display = None
            self._credentials = None
        self._fail_outbox()
        self._events.emit(Disconnected(reason, code, False))

    def _fail_outbox(self) -> None:
        with self._lock:
            outbox, self._outbox = self._outbox, []
        for _fields, fut in outbox:
            settle(fut, exc=SessionError("not_sent", "not sent: the connection was not restored"))

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the connection (sending nothing), stop reconnecting, and join the threads."""
        with self._lock:
            self._closing.set()
            link = self._link
            self._reconnecting = False
            reconnect_thread, self._reconnect_thread = self._reconnect_thread, None
        self._fail_outbox()
        me = threading.current_thread()
        if link is not None:
            # Let the writer flush what callers already queued, then cut the link.
            link.outq.put(None)
            if link.writer is not None and link.writer is not me:
                link.writer.join(JOIN_TIMEOUT)
            self._lose(link, "closed", None, reconnect=False)
            if link.reader is not None and link.reader is not me:
                link.reader.join(JOIN_TIMEOUT)
        if reconnect_thread is not None and reconnect_thread is not me:
            reconnect_thread.join(JOIN_TIMEOUT)
        with self._lock:
            self._user = self._display = None
            self._credentials = None
        self._events.stop(JOIN_TIMEOUT)
