"""One TCP (optionally TLS) connection of a ClientSession: opening it, and its writer thread.

A session replaces its Link wholesale on reconnect; nothing of a Link outlives its socket.
The session owns the locking: Link holds state, and runs the one loop that needs nothing
but the link itself, the writer.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from parley_common.tlsbio import TLSChannel
from protocol import Connection, Role
from protocol import messages as m

from .events import SessionError


class Link:
    """One connection and its protocol state."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self.sock = sock
        self.host = host
        self.port = port
        self.conn = Connection(Role.CLIENT)
        self.outq: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.pending: dict[int, tuple[Future, m.Request]] = {}
        self.established = False  # hello answered ok
        self.live = False  # announced to the user (Connected, or Reconnected after re-login)
        self.lost = False
        self.bye: m.Bye | None = None
        self.reader: threading.Thread | None = None
        self.writer: threading.Thread | None = None
        self.tls: TLSChannel | None = None  # None with tls=False: plain TCP
        self.delayed_upto = 0  # the newest stored (offline) message received on this link
        self.delayed_acked = 0  # ... and the newest acknowledged to the server

    def write_loop(self, on_error: Callable[[str], None]) -> None:
        """The writer thread: the only one that blocks on the socket's send buffer. Callers
        encode and enqueue; None in the queue ends the loop after what came before it."""
        while True:
            data = self.outq.get()
            if data is None:
                return
            last = False
            try:
                if self.tls is not None:
                    # Encrypt everything queued in one go: one TLS write, one sendall.
                    batch = [data]
                    while True:
                        try:
                            more = self.outq.get_nowait()
                        except queue.Empty:
                            break
                        if more is None:
                            last = True
                            break
                        batch.append(more)
                    data = self.tls.encrypt(b"".join(batch))
                if data:
                    self.sock.sendall(data)
            except OSError as exc:  # ssl.SSLError included
                on_error(f"connection lost while sending: {exc.strerror or exc}")
                return
            if last:
                return

    def shutdown(self) -> None:
        self.outq.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset by the peer; close() below is what matters
        self.sock.close()


def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SessionError("unreachable", f"cannot reach {host}:{port}: "
                           f"{exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client_context() -> ssl.SSLContext:
    # No CA and no host name check: the certificate is self-signed and the session pins its
    # fingerprint instead (ClientSession._check_pin), checked before anything is sent.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def tls_handshake(sock: socket.socket, host: str, port: int, timeout: float
                  ) -> tuple[TLSChannel, bytes]:
    """Run the TLS handshake on a fresh blocking socket (no other thread uses it yet).
    Returns the channel and any plaintext that arrived with the handshake's end."""
    channel = TLSChannel(client_context(), server_side=False)
    deadline = time.monotonic() + timeout
    raw = b""
    try:
        sock.sendall(channel.start())
        early = b""
        while not channel.established:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            raw = sock.recv(65536)
            if not raw:
                raise SessionError("unreachable", f"{host}:{port} closed the connection "
                                   "during the TLS handshake (is it a Parley server?)")
            early = channel.feed_incoming(raw)
            out = channel.pending_output()
            if out:
                sock.sendall(out)
    except TimeoutError:
        raise SessionError("timeout", f"{host}:{port} did not complete the TLS handshake "
                           f"within {timeout:g} s") from None
    except ssl.SSLError as exc:
        if len(raw) >= 5 and raw[4:5] == b"{":
            # A Parley frame (length prefix, then JSON): the server does not use TLS.
            raise SessionError("tls_failed", f"{host}:{port} does not use TLS (it was started "
                               "with --no-tls): anyone on the network could read this "
                               "connection. Connect with --no-tls only if you accept "
                               "that.") from None
        raise SessionError("tls_failed", f"TLS with {host}:{port} failed: "
                           f"{exc.reason or exc}") from None
    except OSError as exc:
        raise SessionError("unreachable", f"connection to {host}:{port} failed during the "
                           f"TLS handshake: {exc.strerror or exc}") from None
    return channel, early
