"""A child process's output as lines, read by a thread, with a bounded expect()."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time

WAIT = 10.0


class LineReader:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.history: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = WAIT) -> str:
        """The next line matching the regex (earlier lines are kept in history)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.history!r}") \
                    from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; got {self.history!r}")
            self.history.append(line)
            if re.search(pattern, line):
                return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
