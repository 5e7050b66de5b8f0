"""The reaper: one thread that closes connections on behalf of threads that must not.

A client is dropped from the middle of other work: its SendQ overflows while someone's
broadcast (or the presence flush, which holds the presence lock) is queueing to everyone, or
its socket fails inside a flusher. Closing it there would run the logout path (leave notices,
a presence notice, room bookkeeping) inside that fan-out: it re-enters locks the fan-out holds
(a deadlock that stopped every login) and stalls the sender for each dropped client. So those
threads only hand the connection to the reaper, which closes it a moment later on its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("parley.reaper")
_STOP = object()


class Reaper:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (the server does at start). Raises RuntimeError where no thread
        can be had; a later call tries again."""
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True

    def later(self, job: Callable[[], None]) -> None:
        """Run job on the reaper thread, never in the caller's. Never raises: callers are
        flushers and fan-outs, which must survive anything (should the thread still be
        missing and none be had now, the job waits for the next call that can start it)."""
        self._jobs.put(job)
        try:
            self.start()
        except RuntimeError as exc:
            log.error("cannot start the reaper thread yet (%s): a dropped connection waits", exc)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            started = self._started
        if started:
            self._jobs.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                job()
            except Exception:  # one connection's fault must not end the reaper for everyone
                log.exception("closing a connection failed")
