"""The audit log: one JSON object per line in data/audit.log, fsynced, append-only.

An action is only done once its entry can be written: Moderation.perform opens the log
(``entry``) before acting, so a log that cannot be opened (a directory in its place, a
read-only data dir) stops the action instead of leaving it done but reported as failed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("parley.audit")


class AuditUnavailable(Exception):
    """The log cannot be opened; str() says why, in words."""


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditUnavailable(f"the audit log {self.path} cannot be written "
                                   f"({exc.strerror or exc})") from None

    def _write(self, fd: int, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            os.write(fd, line.encode())
            os.fsync(fd)

    @staticmethod
    def _entry(actor: str, action: str, target: str, details: dict) -> dict:
        entry = {"ts": round(time.time(), 3), "actor": actor, "action": action, "target": target}
        entry.update({k: v for k, v in details.items() if v is not None})
        return entry

    def record(self, actor: str, action: str, target: str = "", **details) -> dict:
        entry = self._entry(actor, action, target, details)
        fd = self._open()
        try:
            self._write(fd, entry)
        finally:
            os.close(fd)
        return entry

    @contextlib.contextmanager
    def entry(self, actor: str, action: str, target: str = "", **details):
        """Open the log (AuditUnavailable if it cannot be), run the action in the with-block,
        which puts its outcome in entry["result"], then write the entry. An action that
        raises is not written. The entry's "written" says whether the line made it to disk:
        once the action is done it is reported as done, the log's failure as well."""
        fd = self._open()
        try:
            entry = self._entry(actor, action, target, details)
            yield entry
            entry.setdefault("result", "")
            try:
                self._write(fd, {k: v for k, v in entry.items() if k != "written"})
                entry["written"] = True
            except OSError as exc:  # a full disk between the open and the write
                log.error("audit entry not written (%s): %s", exc, entry)
                entry["written"] = False
        finally:
            os.close(fd)

    def entries(self) -> list[dict]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
