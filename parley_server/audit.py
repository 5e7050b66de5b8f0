"""The audit log: one JSON object per line in data/audit.log, fsynced, append-only."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, actor: str, action: str, target: str = "", **details) -> dict:
        entry = {"ts": round(time.time(), 3), "actor": actor, "action": action, "target": target}
        entry.update({k: v for k, v in details.items() if v is not None})
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def entries(self) -> list[dict]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
