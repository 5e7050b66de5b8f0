"""EventDispatcher: hands a session's events to the application on a thread of their own.

One event at a time and in order, so a slow or blocking callback (one that waits on a future,
say) never stalls the thread that reads the socket. The thread starts with the first event
and ends at stop(); after stop() events are dropped until reopen() (a new connect()).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_STOP = object()


class EventDispatcher:
    def __init__(self, on_event: Callable[[object], None], name: str = "parley-events") -> None:
        self._on_event = on_event
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def reopen(self) -> None:
        with self._lock:
            self._stopped = False

    def emit(self, event: object) -> None:
        with self._lock:
            if self._thread is None:
                if self._stopped:
                    log.debug("event after close dropped: %r", event)
                    return
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, args=(self._queue,),
                                                name=self._name, daemon=True)
                self._thread.start()
            assert self._queue is not None
            self._queue.put(event)

    def stop(self, timeout: float) -> None:
        """Deliver what is queued, then end the thread (joined unless we are on it)."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
            events, self._queue = self._queue, None
        if thread is not None and events is not None:
            events.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _run(self, events: queue.SimpleQueue) -> None:
        while True:
            event = events.get()
            if event is _STOP:
                return
            try:
                self._on_event(event)
            except Exception:
                log.exception("on_event callback failed for %r", event)
