"""A small blocking client speaking the real protocol, for server tests that need to control
every byte (junk, oversize frames, a client that stops reading)."""

from __future__ import annotations

import contextlib
import itertools
import socket
import time

from serverutil import open_socket

from protocol import Connection, ConnectionClosed, Role
from protocol import messages as m
from protocol.version import PROTOCOL_VERSION


class ReplyError(Exception):
    def __init__(self, error: m.Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.message = error.message


class WireClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0, *, tls: bool = True,
                 source: str | None = None) -> None:
        # A blocking SSLSocket is fine here: this client uses its socket from one thread.
        self.sock = open_socket(host, port, tls=tls, timeout=timeout, source=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Connection(Role.CLIENT)
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.inbox: list[object] = []   # events received, not yet taken
        self.closed = False
        self.user: str | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _pump(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(1 << 20)
        self.conn.receive_data(data)
        for ev in self.conn.events():
            if isinstance(ev, ConnectionClosed):
                self.closed = True
            elif isinstance(ev, m.Ping):
                self.sock.sendall(self.conn.send(m.Pong(ev.nonce)))
            self.inbox.append(ev)
        if not data:
            self.closed = True

    def call(self, cls: type[m.Request], **fields) -> dict:
        rid = next(self.ids)
        self.sock.sendall(self.conn.send(cls(id=rid, **fields)))
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self.inbox):
                if isinstance(ev, m.Ok | m.Error) and ev.id == rid:
                    del self.inbox[i]
                    if isinstance(ev, m.Error):
                        raise ReplyError(ev)
                    return ev.result
            if self.closed:
                raise ConnectionError("server closed the connection")
            self._pump(deadline)

    def wait_for(self, predicate, timeout: float | None = None):
        """The first received event matching predicate (removed from the inbox)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self.inbox):
                if predicate(ev):
                    del self.inbox[i]
                    return ev
            if self.closed:
                raise ConnectionError("server closed the connection")
            if time.monotonic() > deadline:
                raise TimeoutError("no matching event")
            try:
                self._pump(deadline)
            except TimeoutError:
                continue

    def hello(self) -> dict:
        if self.conn.state.value != "handshake":
            return {}
        return self.call(m.Hello, version=PROTOCOL_VERSION, software="tests")

    def register(self, user: str, password: str = "secret-pw") -> dict:
        self.hello()
        r = self.call(m.Register, username=user, password=password)
        self.user = user
        return r

    def login(self, user: str, password: str = "secret-pw") -> dict:
        self.hello()
        r = self.call(m.Login, username=user, password=password)
        self.user = user
        return r

    def messages(self) -> list[m.ChatMessage]:
        out = [e for e in self.inbox if isinstance(e, m.ChatMessage)]
        self.inbox = [e for e in self.inbox if not isinstance(e, m.ChatMessage)]
        return out


@contextlib.contextmanager
def registered_clients(srv, *names: str):
    """{name: WireClient} for a RunningServer, each registered (so logged in); all closed at
    the end."""
    clients: dict[str, WireClient] = {}
    try:
        for name in names:
            clients[name] = WireClient(srv.host, srv.port)
            clients[name].register(name)
        yield clients
    finally:
        for c in clients.values():
            c.close()
