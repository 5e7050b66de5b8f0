"""Each client's bounded outgoing queue, and the flusher threads that drain them.

Fan-out must cost next to nothing per recipient, and a slow or stuck client must never delay
anyone else. So a producer (any handler thread fanning out a message) only appends bytes to the
recipient's queue under a short lock. A flusher thread (each serves a share of the clients)
writes each queue with a non-blocking
send of everything queued (write batching: one syscall per client per burst, not per message).
A client whose socket is full waits in a selector for writability while the flusher serves the
others; when its queued bytes pass the limit it is disconnected, as IRC servers do on
"SendQ exceeded".
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
from collections.abc import Callable

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

# flush() outcomes
DRAINED, MORE, BLOCKED, FAILED = range(4)


class OutgoingQueue:
    def __init__(self, sock: socket.socket, limit_bytes: int, flusher: Flusher, *,
                 on_fail: Callable[[str, str], None],
                 transform: Callable[[bytes], bytes] | None = None) -> None:
        self.sock = sock
        # Applied by flush() to each batch as a whole (TLS encryption: one call per batch).
        # An empty item then still means something: "flush what the transform holds".
        self._transform = transform
        self._unsent = b""  # output of an earlier flush the socket did not take; flusher only
        self._limit = limit_bytes
        self._flusher = flusher
        self._on_fail = on_fail  # (code, reason); called at most once, never under our lock
        self._items: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._scheduled = False  # in the flusher's ready list or its selector
        self._open = True
        self._failed = False
        self._drained = threading.Event()
        self._drained.set()

    @property
    def closed_socket(self) -> bool:
        return self.sock.fileno() == -1

    @property
    def queued_bytes(self) -> int:
        return self._size

    def put(self, data: bytes) -> bool:
        with self._lock:
            if not self._open:
                return False
            if self._size + len(data) > self._limit:
                self._open = False
                self._failed = True
                self._items.clear()
                overflow = True
            else:
                overflow = False
                self._items.append(data)
                self._size += len(data)
                self._drained.clear()
                if self._scheduled:
                    return True
                self._scheduled = True
        if overflow:
            self._on_fail("sendq_exceeded", "SendQ exceeded: the client is not reading")
            return False
        self._flusher.schedule(self)
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Accept nothing more; wait (bounded) until what is queued has been written."""
        with self._lock:
            self._open = False
        self._drained.wait(timeout)

    def flush(self) -> int:
        """Write what is queued without blocking. Called by the flusher thread only."""
        with self._lock:
            if self._failed or not (self._items or self._unsent):
                self._scheduled = False
                self._drained.set()
                return DRAINED
            items, self._items = self._items, []
        data = items[0] if len(items) == 1 else b"".join(items)
        try:
            if self._transform is not None and items:
                plain_len, data = len(data), self._transform(data)
                with self._lock:
                    self._size += len(data) - plain_len
            if self._unsent:
                data, self._unsent = self._unsent + data, b""
            sent = self.sock.send(data, _DONTWAIT) if data else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:  # ssl.SSLError from the transform is one too
            with self._lock:
                already, self._failed, self._open = self._failed, True, False
                self._items.clear()
                self._scheduled = False
                self._drained.set()
            if not already:
                self._on_fail("write_failed", f"write failed: {exc}")
            return FAILED
        with self._lock:
            self._size -= sent
            if sent < len(data):
                self._unsent = data[sent:]
                return BLOCKED
            if self._items:
                return MORE
            self._scheduled = False
            self._drained.set()
            return DRAINED


class Flusher:
    """A thread that writes the queues scheduled on it (the server runs a few, each serving
    its share of the clients); see the module docstring."""

    def __init__(self, name: str = "flusher") -> None:
        self._ready: collections.deque[OutgoingQueue] = collections.deque()
        self._discards: list[tuple[OutgoingQueue, threading.Event]] = []
        self._lock = threading.Lock()
        self._sleeping = False
        self._stop = False
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def schedule(self, q: OutgoingQueue) -> None:
        with self._lock:
            self._ready.append(q)
            wake, self._sleeping = self._sleeping, False
        if wake:
            self._wake_w.send(b"\0")

    def discard(self, q: OutgoingQueue, timeout: float = 1.0) -> None:
        """Forget q (stop waiting on its socket). Call before closing the socket, so the
        selector never holds a closed descriptor whose number a new client could reuse."""
        done = threading.Event()
        with self._lock:
            if self._stop or not self._thread.is_alive():
                return
            self._discards.append((q, done))
            wake, self._sleeping = self._sleeping, False
        if wake:
            self._wake_w.send(b"\0")
        if threading.current_thread() is not self._thread:
            done.wait(timeout)
        else:
            self._apply_discards()

    def _apply_discards(self) -> None:
        with self._lock:
            discards, self._discards = self._discards, []
        for q, done in discards:
            try:
                self._sel.unregister(q.sock)
            except (KeyError, ValueError):
                pass  # it was not waiting for writability
            done.set()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stop = True
        self._wake_w.send(b"\0")
        self._thread.join(timeout)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        sel = self._sel
        while True:
            if self._discards:
                self._apply_discards()
            with self._lock:
                if self._stop:
                    return
                batch = list(self._ready)
                self._ready.clear()
                self._sleeping = not batch and not self._discards
            if not batch:
                for key, _ in sel.select(timeout=1.0):
                    if key.data is None:
                        try:
                            self._wake_r.recv(4096)
                        except BlockingIOError:
                            pass  # another wake-up already drained it
                    else:
                        sel.unregister(key.fileobj)
                        batch.append(key.data)
            for q in batch:
                if q.closed_socket:
                    continue
                outcome = q.flush()
                if outcome == MORE:
                    with self._lock:
                        self._ready.append(q)
                elif outcome == BLOCKED:
                    try:
                        sel.register(q.sock, selectors.EVENT_WRITE, q)
                    except (KeyError, ValueError, OSError):
                        q.flush()  # closed meanwhile, or already waiting: nothing to wait for
