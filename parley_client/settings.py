"""The desktop client's remembered preferences: recent servers, theme, last user, download folder.

Stored as one small JSON file in the user's config folder:
- $PARLEY_CONFIG_DIR if set (tests point it at a temporary folder),
- Windows: %APPDATA%\\Parley,
- elsewhere: $XDG_CONFIG_HOME/parley, else ~/.config/parley.

A missing or damaged file is not an error: the client starts with defaults, because losing a
list of recent servers must never stop anyone from chatting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "settings.json"
MAX_RECENT_SERVERS = 8
DEFAULT_PORT = 5150
THEMES = ("light", "dark")


def config_dir() -> Path:
    override = os.environ.get("PARLEY_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("APPDATA")
        return Path(base) / "Parley" if base else Path.home() / "AppData" / "Roaming" / "Parley"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "parley"


def default_download_dir() -> Path:
    return Path.home() / "Downloads"


@dataclass
class Settings:
    servers: list[tuple[str, int]] = field(default_factory=list)  # most recent first
    theme: str = "light"
    last_user: str = ""
    download_dir: str = ""
    path: Path | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ persistence

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        path = path or config_dir() / FILE_NAME
        settings = cls(path=path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return settings
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings %s: %s", path, exc)
            return settings
        if not isinstance(raw, dict):
            return settings
        for entry in raw.get("servers", []):
            if (isinstance(entry, list | tuple) and len(entry) == 2
                    and isinstance(entry[0], str) and isinstance(entry[1], int)):
                settings.servers.append((entry[0], entry[1]))
        settings.servers = settings.servers[:MAX_RECENT_SERVERS]
        if raw.get("theme") in THEMES:
            settings.theme = raw["theme"]
        if isinstance(raw.get("last_user"), str):
            settings.last_user = raw["last_user"]
        if isinstance(raw.get("download_dir"), str):
            settings.download_dir = raw["download_dir"]
        return settings

    def save(self) -> None:
        """Write atomically (temp file + replace) so a crash never leaves half a file."""
        path = self.path or config_dir() / FILE_NAME
        data = asdict(self)
        data.pop("path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            # Preferences are a convenience: report, keep running.
            log.warning("could not save settings to %s: %s", path, exc)

    # ------------------------------------------------------------------ helpers

    def remember_server(self, host: str, port: int) -> None:
        entry = (host.strip(), int(port))
        self.servers = [entry] + [s for s in self.servers if s != entry]
        del self.servers[MAX_RECENT_SERVERS:]

    def downloads(self) -> Path:
        return Path(self.download_dir) if self.download_dir else default_download_dir()


def format_server(host: str, port: int) -> str:
    return host if port == DEFAULT_PORT else f"{host}:{port}"


def parse_server(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address -> (host, port).

    Raises ValueError with a sentence a person can act on.
    """
    text = text.strip()
    if not text:
        raise ValueError("Enter a server address, e.g. 192.168.1.20 or chat.local:5150.")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("Missing ']' after the IPv6 address.")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("Write the port after the address as [addr]:port.")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError("The server address is missing its host name.")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"Port must be a number from 1 to 65535, not {port_text!r}.")
    return host, int(port_text)
