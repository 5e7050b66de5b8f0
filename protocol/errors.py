"""Protocol errors, split as h11 does: our own misuse versus garbage from the peer."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class. ``code`` is a stable machine-readable error code (see docs/protocol.md)."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids (a bug in our code, not the peer's)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes we cannot make sense of. The connection cannot continue."""
