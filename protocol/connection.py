"""One peer's view of a chat connection, sans-IO (in the manner of h11 and wsproto).

Feed received bytes with ``receive_data``, collect typed messages with ``events()``, and turn
messages into bytes with ``send``. No sockets, no threads, no clocks: the caller does the IO.

State machine (both roles track it the same way):

    HANDSHAKE --hello ok--> CONNECTED --login/register ok--> AUTHENTICATED --logout ok--> CONNECTED
    any state --EOF, remote error or close()--> CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import messages as m
from .errors import LocalProtocolError, RemoteProtocolError
from .framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTED = "connected"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


@dataclass(frozen=True)
class BadMessage:
    """Not a wire message: the peer sent a well-framed but invalid message. Answer with an error."""

    request_id: int | None
    code: str
    message: str


@dataclass(frozen=True)
class ConnectionClosed:
    """Not a wire message: the peer closed its side (EOF)."""


# Requests that a client may send before logging in; everything else needs AUTHENTICATED.
PRE_AUTH_REQUESTS = frozenset({"hello", "register", "login", "resume", "pong"})
_AUTH_GRANTING = frozenset({"login", "register", "resume"})


def encode_message(msg: m.Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One message to one frame, with no state checks: for fan-out of a pre-encoded event."""
    try:
        payload = m.encode_payload(msg)
    except (ValueError, UnicodeEncodeError) as exc:  # NaN, or a lone surrogate in a str
        raise LocalProtocolError(f"cannot encode {msg.TYPE}: {exc}", "bad_message") from None
    return encode_frame(payload, max_frame)


class Connection:
    def __init__(self, role: Role, max_frame: int = DEFAULT_MAX_FRAME,
                 pre_auth_max_frame: int | None = None) -> None:
        """pre_auth_max_frame: the largest frame accepted from the peer until it has logged
        in (a server sets it: hello and login are small, and a thousand strangers must not
        each make it hold a megabyte of a frame that never completes)."""
        self.role = role
        self.state = State.HANDSHAKE
        self.max_frame = max_frame
        self._pre_auth_max_frame = pre_auth_max_frame or max_frame
        self._decoder = FrameDecoder(min(max_frame, self._pre_auth_max_frame))
        self._events: list[object] = []
        self._pending: dict[int, str] = {}  # request id -> request type, awaiting a reply
        self._hello_seen = False  # server: a hello arrived (its reply may not be sent yet)
        if role is Role.CLIENT:
            self._incoming, self._outgoing = m.SERVER_MESSAGES, m.CLIENT_MESSAGES
        else:
            self._incoming, self._outgoing = m.CLIENT_MESSAGES, m.SERVER_MESSAGES

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; b"" means the peer closed. Raises RemoteProtocolError."""
        if self.state is State.CLOSED:
            return
        if not data:
            self.state = State.CLOSED
            self._events.append(ConnectionClosed())
            return
        try:
            frames = self._decoder.feed(data)
            for payload in frames:
                self._receive_payload(payload)
            self._decoder.check()
        except RemoteProtocolError:
            self.state = State.CLOSED
            raise

    def _receive_payload(self, payload: bytes) -> None:
        obj = m.parse_payload(payload)
        try:
            msg = m.message_from_dict(obj, self._incoming)
        except m.InvalidMessage as exc:
            self._events.append(BadMessage(exc.request_id, exc.code, str(exc)))
            return
        if self.role is Role.SERVER:
            if isinstance(msg, m.Hello):
                self._hello_seen = True
            elif self.state is State.HANDSHAKE and not self._hello_seen:
                # A client may pipeline requests after its hello; only a missing hello is wrong.
                self._events.append(
                    BadMessage(getattr(msg, "id", None), "handshake_required",
                               "the first message must be hello")
                )
                return
            if isinstance(msg, m.Request):
                self._pending[msg.id] = msg.TYPE
        else:
            self._track_reply(msg)
        self._events.append(msg)

    def events(self) -> list[object]:
        """Every message (or BadMessage / ConnectionClosed) received since the last call."""
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ sending

    def send(self, msg: m.Message) -> bytes:
        """Bytes to write for ``msg``. Raises LocalProtocolError if we may not send it now."""
        if self.state is State.CLOSED:
            raise LocalProtocolError("connection is closed", "closed")
        if self._outgoing.get(msg.TYPE) is not type(msg):
            raise LocalProtocolError(f"a {self.role.value} cannot send {msg.TYPE!r}", "wrong_role")
        if self.role is Role.CLIENT:
            self._check_client_send(msg)
        data = encode_message(msg, self.max_frame)  # may raise: change no state before it
        if self.role is Role.CLIENT:
            if isinstance(msg, m.Request):
                self._pending[msg.id] = msg.TYPE
        else:
            self._track_reply(msg)
        return data

    def _check_client_send(self, msg: m.Message) -> None:
        if self.state is State.HANDSHAKE and not isinstance(msg, m.Hello):
            raise LocalProtocolError("send hello first", "handshake_required")
        if self.state is not State.AUTHENTICATED and msg.TYPE not in PRE_AUTH_REQUESTS:
            raise LocalProtocolError(f"{msg.TYPE!r} needs a logged-in connection",
                                     "not_authenticated")
        if isinstance(msg, m.Request) and msg.id in self._pending:
            raise LocalProtocolError(f"request id {msg.id} is already in use", "bad_message")

    def _track_reply(self, msg: m.Message) -> None:
        """Advance the state machine when a reply settles a request (either side sees the same)."""
        if isinstance(msg, m.Ok | m.Error) and msg.id is not None:
            request_type = self._pending.pop(msg.id, None)
            if isinstance(msg, m.Ok):
                if request_type == "hello":
                    self.state = State.CONNECTED
                elif request_type in _AUTH_GRANTING:
                    self.state = State.AUTHENTICATED
                    self._decoder.max_frame = self.max_frame
                elif request_type == "logout":
                    self.state = State.CONNECTED
                    self._decoder.max_frame = min(self.max_frame, self._pre_auth_max_frame)

    def close(self) -> None:
        self.state = State.CLOSED

    @property
    def pending_requests(self) -> dict[int, str]:
        return dict(self._pending)
