"""Parley's wire protocol, sans-IO: bytes in, typed events out; typed messages in, bytes out."""

from .connection import BadMessage, Connection, ConnectionClosed, Role, State, encode_message
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from .version import APP_NAME, APP_VERSION, PROTOCOL_VERSION

__all__ = [
    "APP_NAME", "APP_VERSION", "DEFAULT_MAX_FRAME", "PROTOCOL_VERSION", "BadMessage", "Connection",
    "ConnectionClosed", "FrameDecoder", "LocalProtocolError", "ProtocolError",
    "RemoteProtocolError", "Role", "State", "encode_frame", "encode_message",
]
