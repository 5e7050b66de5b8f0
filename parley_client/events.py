"""Session-level events a ClientSession hands to its on_event callback, plus SessionError.

Wire events (protocol.messages.ChatMessage, Presence, ...) reach on_event unchanged; these
dataclasses describe what happened to the session itself (connected, lost, reconnected...).
"""

from __future__ import annotations

from dataclasses import dataclass


class SessionError(Exception):
    """A request or a connection attempt failed. ``code`` is stable; ``message`` is for people.

    Codes are the server's error codes (no_such_user, wrong_password, ...) plus the session's own:
    unreachable, version_mismatch, timeout, not_connected, disconnected, not_sent,
    not_authenticated, already_connected, cancelled, io_error, unavailable.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Connected:
    """connect() finished the handshake; server_info is the hello result."""

    host: str
    port: int
    server_info: dict


@dataclass(frozen=True)
class Disconnected:
    """The connection ended. code is the server's bye code when it said one, else None."""

    reason: str
    code: str | None
    will_reconnect: bool


@dataclass(frozen=True)
class Reconnecting:
    """The next reconnect attempt starts after ``delay`` seconds."""

    attempt: int
    delay: float


@dataclass(frozen=True)
class Reconnected:
    """A reconnect succeeded; user is who we are logged in as again (None if not logged in)."""

    user: str | None


@dataclass(frozen=True)
class LoggedIn:
    user: str
    display: str
    new: bool


@dataclass(frozen=True)
class LoggedOut:
    """We are no longer logged in but still connected: after logout(), or when the automatic
    re-login after a reconnect was refused (reason says why)."""

    reason: str


@dataclass(frozen=True)
class Notice:
    """Something the session noticed that no wire message describes (e.g. a malformed frame
    from the server that the session skipped). Informational only."""

    text: str
