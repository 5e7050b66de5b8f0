"""The only bridge from worker threads to Tk: a queue that the Tk thread drains with after().

Tk is not thread-safe, and a Tk call from another thread fails outright when no mainloop runs
(as in tests that pump update()). So reader, download and connect threads only ever call
put_event()/call() here, which do nothing but queue.put(); the Tk thread drains the queue
every INTERVAL_MS, bounded by a count and a time budget so a flood of messages or progress
reports can never stall the window.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL_MS = 30
MAX_ITEMS_PER_TICK = 400
BUDGET_S = 0.020  # leave most of each tick for redrawing and input


class UiQueue:
    def __init__(self, root, on_events: Callable[[list], None]) -> None:
        """on_events(events) runs on the Tk thread with the events drained in one tick."""
        self.root = root
        self._on_events = on_events
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._after_id: str | None = None
        self.running = False

    # ------------------------------------------------------------------ any thread

    def put_event(self, event: object) -> None:
        self._q.put((None, event))

    def call(self, fn: Callable, *args) -> None:
        """Run fn(*args) on the Tk thread soon."""
        self._q.put((fn, args))

    def when_done(self, future, on_ok: Callable[[dict], None],
                  on_error: Callable[[Exception], None]) -> None:
        """Route a Future's outcome to the Tk thread. The done-callback runs on whatever
        thread resolves the future, so it only queues."""
        future.add_done_callback(lambda f: self._q.put((_settle, (f, on_ok, on_error))))

    # ------------------------------------------------------------------ Tk thread

    def start(self) -> None:
        self.running = True
        self._schedule()

    def stop(self) -> None:
        self.running = False
        if self._after_id is not None:
            try:
                self.root.after_cancel(self._after_id)
            except Exception as exc:  # root already gone: nothing left to cancel
                log.debug("after_cancel: %s", exc)
            self._after_id = None

    def _schedule(self) -> None:
        self._after_id = self.root.after(INTERVAL_MS, self._tick)

    def _tick(self) -> None:
        self._after_id = None
        try:
            self.drain()
        finally:
            if self.running:
                self._schedule()

    def drain(self) -> int:
        deadline = time.perf_counter() + BUDGET_S
        events: list = []
        n = 0
        while n < MAX_ITEMS_PER_TICK and time.perf_counter() < deadline:
            try:
                fn, arg = self._q.get_nowait()
            except queue.Empty:
                break
            n += 1
            if fn is None:
                events.append(arg)
                continue
            if events:  # keep order: events queued before this call are handled first
                self._deliver(events)
                events = []
            try:
                fn(*arg)
            except Exception:
                log.exception("UI callback %r failed", fn)
        if events:
            self._deliver(events)
        return n

    def _deliver(self, events: list) -> None:
        try:
            self._on_events(events)
        except Exception:
            log.exception("handling %d session events failed", len(events))


def _settle(future, on_ok, on_error) -> None:
    try:
        result = future.result()
    except Exception as exc:
        on_error(exc)
        return
    on_ok(result if isinstance(result, dict) else {"value": result})
