"""A client's bounded outgoing queue and the writer thread that drains it.

Producers (any handler thread fanning out a message) only append bytes under a short lock, so a
slow or stuck client never delays anyone else. The writer sends everything queued in one call
(write batching: one syscall per burst, not per message). When the queued bytes pass the limit
the client is disconnected, as IRC servers do on "SendQ exceeded".
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class OutgoingQueue:
    def __init__(self, sock: socket.socket, limit_bytes: int, *, stall_timeout: float = 30.0,
                 on_fail: Callable[[str, str], None], name: str = "writer") -> None:
        self._sock = sock
        self._limit = limit_bytes
        self._stall_timeout = stall_timeout
        self._on_fail = on_fail  # (code, reason), called once, from whichever thread saw it
        self._items: list[bytes] = []
        self._size = 0
        self._cond = threading.Condition(threading.Lock())
        self._closing = False  # no more puts; drain what is queued, then stop
        self._failed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, data: bytes) -> bool:
        with self._cond:
            if self._closing or self._failed:
                return False
            if self._size + len(data) > self._limit:
                self._failed = True
                self._items.clear()
                self._cond.notify()
                overflow = True
            else:
                self._items.append(data)
                self._size += len(data)
                if len(self._items) == 1:
                    self._cond.notify()
                return True
        if overflow:
            self._on_fail("sendq_exceeded", "SendQ exceeded: the client is not reading")
        return False

    @property
    def queued_bytes(self) -> int:
        return self._size

    def close(self, timeout: float = 2.0) -> None:
        """Stop accepting; let the writer flush what is queued (bounded), then return."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing and not self._failed:
                    self._cond.wait()
                if self._failed or not self._items:
                    return
                items, self._items, self._size = self._items, [], 0
            data = items[0] if len(items) == 1 else b"".join(items)
            try:
                self._send_all(data)
            except OSError as exc:
                with self._cond:
                    already, self._failed = self._failed, True
                    self._items.clear()
                if not already and not self._closing:
                    self._on_fail("write_failed", f"write failed: {exc}")
                return

    def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self._stall_timeout
        while view:
            try:
                sent = self._sock.send(view)
            except TimeoutError:
                if time.monotonic() > deadline or self._failed:
                    raise
                continue
            view = view[sent:]
            deadline = time.monotonic() + self._stall_timeout
