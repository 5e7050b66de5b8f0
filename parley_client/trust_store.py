"""Which certificate each server showed the first time (trust on first use).

known_servers.json in the client's config folder maps "host:port" to the SHA-256 of the
server's certificate (64 hex digits). A server whose certificate later differs is refused:
either it was reinstalled, or someone is in between. TrustStore() without a path keeps the
pins in memory only (a library user that has no config folder, and tests).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from .settings import config_dir

log = logging.getLogger(__name__)

FILE_NAME = "known_servers.json"


def server_key(host: str, port: int) -> str:
    host = host.strip().lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TrustStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._pins: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None = None) -> TrustStore:
        """The store in the config folder (or at path). A damaged file counts as empty, with
        a warning: the worst outcome is being asked again."""
        store = cls(path or config_dir() / FILE_NAME)
        try:
            raw = json.loads(store.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return store
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", store.path, exc)
            return store
        if isinstance(raw, dict):
            store._pins = {k: v.lower() for k, v in raw.items()
                           if isinstance(k, str) and isinstance(v, str) and len(v) == 64}
        return store

    def get(self, host: str, port: int) -> str | None:
        with self._lock:
            return self._pins.get(server_key(host, port))

    def remember(self, host: str, port: int, fingerprint: str) -> None:
        with self._lock:
            self._pins[server_key(host, port)] = fingerprint.lower()
            pins = dict(self._pins)
        self._save(pins)

    def forget(self, host: str, port: int) -> None:
        with self._lock:
            self._pins.pop(server_key(host, port), None)
            pins = dict(self._pins)
        self._save(pins)

    def _save(self, pins: dict[str, str]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(pins, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            # The pin still holds for this run; next time the user is asked again.
            log.warning("could not save %s: %s", self.path, exc)
