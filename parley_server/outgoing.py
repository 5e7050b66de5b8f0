"""Each client's bounded outgoing queue, and the flusher threads that drain them.

Fan-out must cost next to nothing per recipient, and a slow or stuck client must never delay
anyone else. So a producer (any handler thread fanning out a message) only appends bytes to the
recipient's queue under a short lock (the same bytes object for every recipient). A flusher
thread (each serves a share of the clients) writes each queue with one non-blocking, gathered
send of everything queued (write batching: one syscall per client per burst, not per message).
A client whose socket is full waits in a selector for writability while the flusher serves the
others; when its queued bytes pass the limit it is disconnected, as IRC servers do on
"SendQ exceeded".
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("parley.outgoing")
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

# flush() outcomes
DRAINED, MORE, BLOCKED, FAILED = range(4)
# what _append() did
_QUEUED, _WAKE, _REFUSED = object(), object(), object()


def fan_out(queues, data: bytes) -> int:
    """put() the same bytes on many queues, telling each flusher once about all of them.
    Returns how many queues took it.

    One wake-up per flusher, not one per recipient: the flusher starts on a whole broadcast
    instead of competing for the GIL with the thread still queueing it."""
    taken = 0
    wake: dict[Flusher, list[OutgoingQueue]] = {}
    for q in queues:
        state = q._append(data)
        if state is _REFUSED:
            continue
        taken += 1
        if state is _WAKE:
            wake.setdefault(q._flusher, []).append(q)
    for flusher, woken in wake.items():
        flusher.schedule_many(woken)
    return taken


class OutgoingQueue:
    def __init__(self, sock: socket.socket, limit_bytes: int, flusher: Flusher, *,
                 on_fail: Callable[[str, str], None],
                 transform: Callable[[bytes], bytes] | None = None) -> None:
        self.sock = sock
        # Applied by flush() to each batch as a whole (TLS encryption: one call per batch).
        # An empty item then still means something: "flush what the transform holds".
        self._transform = transform
        self._unsent: list = []  # buffers an earlier flush could not write; flusher thread only
        self._limit = limit_bytes
        self._flusher = flusher
        # (code, reason); called at most once, never under our lock, but possibly inside a
        # producer's fan-out or in a flusher: it must only schedule the close (see reaper.py).
        self._on_fail = on_fail
        self._items: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._scheduled = False  # in the flusher's ready list or its selector
        self._open = True
        self._failed = False
        # Nothing queued or in flight. A plain flag (not an Event: put() is on the fan-out path,
        # run a thousand times per message); close() makes a Condition when it has to wait.
        self._idle = True
        self._idle_changed: threading.Condition | None = None

    @property
    def closed_socket(self) -> bool:
        return self.sock.fileno() == -1

    @property
    def queued_bytes(self) -> int:
        return self._size

    def put(self, data: bytes) -> bool:
        """Queue data for the client; False if the queue is closed (or just overflowed)."""
        return self._scheduled_after(self._append(data))

    def put_all(self, parts: list) -> bool:
        """put() several buffers (bytes or memoryviews) as one: nothing lands between them."""
        return not parts or self._scheduled_after(self._append(parts[0], parts[1:]))

    def _scheduled_after(self, state: object) -> bool:
        if state is _WAKE:
            self._flusher.schedule(self)
        return state is not _REFUSED

    def _append(self, data, more: list | None = None) -> object:
        """Queue data (and more after it); say whether the flusher must be told (_WAKE) or
        not (_QUEUED), or whether the data was refused (_REFUSED)."""
        size = len(data) if not more else len(data) + sum(map(len, more))
        with self._lock:
            if not self._open:
                return _REFUSED
            if self._size + size > self._limit:
                self._open = False
                self._failed = True
                self._items.clear()
                # Nothing more will be written to a client that does not read: close() must
                # not wait for the flusher to notice (it may be parked on this very socket).
                self._set_idle()
                overflow = True
            else:
                overflow = False
                self._items.append(data)
                if more:
                    self._items.extend(more)
                self._size += size
                self._idle = False
                if self._scheduled:
                    return _QUEUED
                self._scheduled = True
        if overflow:
            self._on_fail("sendq_exceeded", "SendQ exceeded: the client is not reading")
            return _REFUSED
        return _WAKE

    def close(self, timeout: float = 1.0) -> None:
        """Accept nothing more; wait (bounded) until what is queued has been written."""
        with self._lock:
            self._open = False
            if self._idle:
                return
            if self._idle_changed is None:
                self._idle_changed = threading.Condition(self._lock)
            self._idle_changed.wait_for(lambda: self._idle, timeout)

    def _set_idle(self) -> None:
        """Called with self._lock held."""
        self._scheduled = False
        self._idle = True
        if self._idle_changed is not None:
            self._idle_changed.notify_all()

    def flush(self) -> int:
        """Write what is queued without blocking. Called by the flusher thread only."""
        with self._lock:
            if self._failed or not (self._items or self._unsent):
                self._set_idle()
                return DRAINED
            items, self._items = self._items, []
        try:
            if self._transform is not None and items:
                plain = items[0] if len(items) == 1 else b"".join(items)
                data = self._transform(plain)
                with self._lock:
                    self._size += len(data) - len(plain)
                items = [data] if data else []
            pending = self._unsent + items if self._unsent else items
            self._unsent = pending  # until the send says how much of it went
            sent, offered = _send_some(self.sock, pending)
        except (BlockingIOError, InterruptedError):
            sent, offered = 0, 1  # nothing went: wait until the socket takes more
        except OSError as exc:  # ssl.SSLError from the transform is one too
            with self._lock:
                already, self._failed, self._open = self._failed, True, False
                self._items.clear()
                self._set_idle()
            if not already:
                self._on_fail("write_failed", f"write failed: {exc}")
            return FAILED
        self._unsent = _without_first(self._unsent, sent) if offered else []
        with self._lock:
            self._size -= sent
            if sent < offered:
                return BLOCKED
            if self._items or self._unsent:
                return MORE
            self._set_idle()
            return DRAINED


# Gathered writes: the kernel reads each message from the one bytes object every recipient's
# queue shares, so a backlog costs a pointer per client, not a private joined copy per client.
_IOV_MAX = 1024  # buffers one sendmsg takes (POSIX minimum on Linux)
_HAVE_SENDMSG = hasattr(socket.socket, "sendmsg")  # not on Windows


def _send_some(sock: socket.socket, pending: list) -> tuple[int, int]:
    """Send from the front of pending without blocking: (bytes sent, bytes offered)."""
    if len(pending) > 1 and not _HAVE_SENDMSG:
        pending[:] = [b"".join(pending)]
    if len(pending) == 1:  # the common case (one message since the last flush): plain send
        return sock.send(pending[0], _DONTWAIT), len(pending[0])
    batch = pending if len(pending) <= _IOV_MAX else pending[:_IOV_MAX]
    offered = sum(map(len, batch))
    return (sock.sendmsg(batch, (), _DONTWAIT) if offered else 0), offered


def _without_first(buffers: list, count: int) -> list:
    """buffers with their first `count` bytes removed."""
    if not count:
        return buffers
    if len(buffers) == 1 and count == len(buffers[0]):
        return []
    i = 0
    while i < len(buffers) and count >= len(buffers[i]):
        count -= len(buffers[i])
        i += 1
    rest = buffers[i:]
    if count:
        rest[0] = memoryview(rest[0])[count:]
    return rest


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
        self.schedule_many((q,))

    def schedule_many(self, queues) -> None:
        with self._lock:
            self._ready.extend(queues)
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
                # Sleep only with nothing to do: a discard that arrived since the top of the
                # loop woke nobody (we were not sleeping when it came), so selecting now
                # would leave it, and every queue scheduled meanwhile, waiting a full timeout.
                sleep = self._sleeping = not batch and not self._discards
            if sleep:
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
                try:
                    outcome = q.flush()
                except Exception:  # a bug in one client's path must not stop everyone's output
                    log.exception("flushing a queue failed; that client is left to time out")
                    continue
                if outcome == MORE:
                    with self._lock:
                        self._ready.append(q)
                elif outcome == BLOCKED:
                    try:
                        sel.register(q.sock, selectors.EVENT_WRITE, q)
                    except (KeyError, ValueError, OSError):
                        q.flush()  # closed meanwhile, or already waiting: nothing to wait for
