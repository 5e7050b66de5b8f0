"""Every message on the chat connection, as a frozen dataclass, and its JSON mapping.

A frame's payload is one UTF-8 JSON object whose ``type`` field names the message. Requests
(client to server) carry an ``id`` that the server echoes in its ``ok`` or ``error`` reply.
Events (server to client) have no id. docs/protocol.md documents each field; keep them in step.

Decoding validates field types from the annotations, so a handler never sees a wrong type.
Unknown extra fields are ignored, so a newer peer can add fields without breaking an older one.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import RemoteProtocolError

MAX_ID = 2**53 - 1  # largest integer a JSON peer in any language reads exactly
_COUNTS = frozenset({"id", "nonce", "offset", "size", "limit", "msg_id", "before", "block_size",
                     "minutes"})


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Request(Message):
    """A client message that the server answers with Ok or Error carrying the same id."""

    id: int


# ---------------------------------------------------------------- client -> server requests


@dataclass(frozen=True)
class Hello(Request):
    TYPE: ClassVar[str] = "hello"
    version: int
    software: str = ""


@dataclass(frozen=True)
class Register(Request):
    TYPE: ClassVar[str] = "register"
    username: str
    password: str


@dataclass(frozen=True)
class Login(Request):
    TYPE: ClassVar[str] = "login"
    username: str
    password: str


@dataclass(frozen=True)
class Resume(Request):
    """Log in again with the resume_token from an earlier login or register reply."""

    TYPE: ClassVar[str] = "resume"
    username: str
    token: str


@dataclass(frozen=True)
class Logout(Request):
    TYPE: ClassVar[str] = "logout"


@dataclass(frozen=True)
class Send(Request):
    """kind is "public" (target ignored, send ""), "direct" (target: username) or "room" (target: room)."""

    TYPE: ClassVar[str] = "send"
    kind: str
    target: str
    text: str


@dataclass(frozen=True)
class ListUsers(Request):
    TYPE: ClassVar[str] = "list_users"


@dataclass(frozen=True)
class ListOnline(Request):
    TYPE: ClassVar[str] = "list_online"


@dataclass(frozen=True)
class ListRooms(Request):
    TYPE: ClassVar[str] = "list_rooms"


@dataclass(frozen=True)
class RoomMembers(Request):
    TYPE: ClassVar[str] = "room_members"
    room: str


@dataclass(frozen=True)
class JoinRoom(Request):
    TYPE: ClassVar[str] = "join_room"
    room: str


@dataclass(frozen=True)
class LeaveRoom(Request):
    TYPE: ClassVar[str] = "leave_room"
    room: str


@dataclass(frozen=True)
class CloseRoom(Request):
    TYPE: ClassVar[str] = "close_room"
    room: str


@dataclass(frozen=True)
class OpenSession(Request):
    TYPE: ClassVar[str] = "open_session"
    user: str


@dataclass(frozen=True)
class CloseSession(Request):
    TYPE: ClassVar[str] = "close_session"


@dataclass(frozen=True)
class Rename(Request):
    TYPE: ClassVar[str] = "rename"
    display: str


@dataclass(frozen=True)
class ChangePassword(Request):
    """Set a new password; the old one proves it is the account's owner at the keyboard."""

    TYPE: ClassVar[str] = "change_password"
    old_password: str
    new_password: str


@dataclass(frozen=True)
class DeleteMessage(Request):
    """Delete one message for everyone: one's own, or anyone's by an administrator."""

    TYPE: ClassVar[str] = "delete_message"
    msg_id: int


@dataclass(frozen=True)
class EditMessage(Request):
    """Replace the text of one's own message, for everyone and in history."""

    TYPE: ClassVar[str] = "edit_message"
    msg_id: int
    text: str


@dataclass(frozen=True)
class Typing(Request):
    """I am typing in this conversation (sent at most every few seconds while typing)."""

    TYPE: ClassVar[str] = "typing"
    kind: str
    target: str = ""


@dataclass(frozen=True)
class Search(Request):
    """Messages containing `text`, among those one can read, newest first."""

    TYPE: ClassVar[str] = "search"
    text: str
    limit: int = 50


@dataclass(frozen=True)
class History(Request):
    TYPE: ClassVar[str] = "history"
    kind: str
    target: str
    limit: int = 50
    before: int | None = None


@dataclass(frozen=True)
class AckDelayed(Request):
    """The client has taken in every delayed (stored offline) message up to msg_id; until it
    says so, the server keeps them and sends them again at the next login."""

    TYPE: ClassVar[str] = "ack_delayed"
    msg_id: int


@dataclass(frozen=True)
class ListFiles(Request):
    TYPE: ClassVar[str] = "list_files"


@dataclass(frozen=True)
class Download(Request):
    TYPE: ClassVar[str] = "download"
    name: str
    offset: int = 0
    block_size: int | None = None


@dataclass(frozen=True)
class UploadBegin(Request):
    TYPE: ClassVar[str] = "upload_begin"
    name: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class UploadChunk(Request):
    TYPE: ClassVar[str] = "upload_chunk"
    upload_id: str
    offset: int
    data: str  # base64 (RFC 4648, standard alphabet, padded)


@dataclass(frozen=True)
class UploadEnd(Request):
    TYPE: ClassVar[str] = "upload_end"
    upload_id: str


@dataclass(frozen=True)
class UploadAbort(Request):
    TYPE: ClassVar[str] = "upload_abort"
    upload_id: str


@dataclass(frozen=True)
class Moderate(Request):
    """An administrator's action: kick, ban, unban, mute, unmute, announce, remove_file, purge,
    op, deop. target is a username, an IP address (ban/unban), a file name or a conversation."""

    TYPE: ClassVar[str] = "moderate"
    action: str
    target: str = ""
    minutes: int | None = None
    text: str = ""


@dataclass(frozen=True)
class Pong(Message):
    """The client's answer to a server Ping. Not a request: no reply."""

    TYPE: ClassVar[str] = "pong"
    nonce: int


# ---------------------------------------------------------------- server -> client


@dataclass(frozen=True)
class Ok(Message):
    TYPE: ClassVar[str] = "ok"
    id: int
    result: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Message):
    """id is the failed request's id, or None for an error not tied to a request."""

    TYPE: ClassVar[str] = "error"
    id: int | None
    code: str
    message: str


@dataclass(frozen=True)
class ChatMessage(Message):
    TYPE: ClassVar[str] = "message"
    msg_id: int
    ts: float
    sender: str
    sender_display: str
    kind: str
    target: str
    text: str
    delayed: bool = False


@dataclass(frozen=True)
class Presence(Message):
    TYPE: ClassVar[str] = "presence"
    user: str
    display: str
    online: bool


@dataclass(frozen=True)
class Renamed(Message):
    TYPE: ClassVar[str] = "renamed"
    user: str
    old_display: str
    display: str


@dataclass(frozen=True)
class RoomEvent(Message):
    """event is "joined", "left" or "closed"; user is who did it."""

    TYPE: ClassVar[str] = "room"
    room: str
    event: str
    user: str
    display: str


@dataclass(frozen=True)
class FileAdded(Message):
    TYPE: ClassVar[str] = "file_added"
    file: dict
    by: str | None = None


@dataclass(frozen=True)
class FileRemoved(Message):
    TYPE: ClassVar[str] = "file_removed"
    name: str


@dataclass(frozen=True)
class Ping(Message):
    TYPE: ClassVar[str] = "ping"
    nonce: int


@dataclass(frozen=True)
class MessageDeleted(Message):
    """A message was deleted (by its sender, or by an administrator: by says who). Sent to
    whoever could see it; the other fields locate its conversation as in `message`."""

    TYPE: ClassVar[str] = "message_deleted"
    msg_id: int
    sender: str
    kind: str
    target: str
    by: str


@dataclass(frozen=True)
class MessageEdited(Message):
    """Its sender changed a message's text (at server time `edited`). Sent to whoever could
    see it; the other fields locate its conversation as in `message`."""

    TYPE: ClassVar[str] = "message_edited"
    msg_id: int
    sender: str
    kind: str
    target: str
    text: str
    edited: float


@dataclass(frozen=True)
class UserTyping(Message):
    """Someone is typing in a conversation you are in. For a direct conversation target is
    you (as in `message`); show it for a few seconds, or until their message arrives."""

    TYPE: ClassVar[str] = "user_typing"
    user: str
    display: str
    kind: str
    target: str


@dataclass(frozen=True)
class PolicyChanged(Message):
    """An administrator changed a policy while the server runs: the whole policy as in the
    hello reply, so a client shows or hides what it allows."""

    TYPE: ClassVar[str] = "policy"
    policy: dict


@dataclass(frozen=True)
class AccountStatus(Message):
    """Your own account changed while you were logged in (an administrator made you one, or
    took it back), so a client can show or hide what depends on it without a new login."""

    TYPE: ClassVar[str] = "account"
    admin: bool


@dataclass(frozen=True)
class Bye(Message):
    """Sent just before the server closes the connection."""

    TYPE: ClassVar[str] = "bye"
    code: str
    reason: str


CLIENT_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello, Register, Login, Resume, Logout, Send, ListUsers, ListOnline, ListRooms, RoomMembers,
        JoinRoom, LeaveRoom, CloseRoom, OpenSession, CloseSession, Rename, ChangePassword, History,
        AckDelayed, DeleteMessage, EditMessage, Typing, Search,
        ListFiles, Download, UploadBegin, UploadChunk, UploadEnd, UploadAbort, Moderate, Pong,
    )
}
SERVER_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Ok, Error, ChatMessage, Presence, Renamed, RoomEvent, FileAdded, FileRemoved, Ping,
        MessageDeleted, MessageEdited, UserTyping, PolicyChanged, AccountStatus, Bye,
    )
}


# ---------------------------------------------------------------- JSON mapping

_SCALARS = {str: str, int: int, float: (int, float), bool: bool, dict: dict, list: list}


def _spec(cls: type[Message]) -> tuple[tuple[str, tuple, bool, Any], ...]:
    """(name, accepted python types, nullable, default-or-MISSING) per field, computed once."""
    cached = cls.__dict__.get("_wire_spec")
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    spec = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        nullable = False
        if isinstance(hint, types.UnionType):
            args = [a for a in hint.__args__ if a is not type(None)]
            nullable = len(args) != len(hint.__args__)
            hint = args[0]
        base = typing.get_origin(hint) or hint
        accepted = _SCALARS[base]
        if not isinstance(accepted, tuple):
            accepted = (accepted,)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        else:
            default = dataclasses.MISSING
        spec.append((f.name, accepted, nullable, default))
    result = tuple(spec)
    cls._wire_spec = result  # type: ignore[attr-defined]
    return result


def message_to_dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"type": msg.TYPE}
    for name, _accepted, _nullable, _default in _spec(type(msg)):
        out[name] = getattr(msg, name)
    return out


def encode_payload(msg: Message) -> bytes:
    """Raises ValueError for NaN/Infinity and UnicodeEncodeError for lone surrogates."""
    return json.dumps(message_to_dict(msg), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class InvalidMessage(Exception):
    """A well-framed JSON object that is not a valid message. Recoverable: answer with an error."""

    def __init__(self, code: str, message: str, request_id: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def _request_id(obj: dict) -> int | None:
    rid = obj.get("id")
    if type(rid) is int and 0 <= rid <= MAX_ID:
        return rid
    return None


def parse_payload(payload: bytes) -> dict:
    """Bytes of one frame to a JSON object. Garbage here means the stream is broken: remote error."""
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"frame is not UTF-8 JSON: {exc}", "bad_frame") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("frame is not a JSON object", "bad_frame")
    return obj


def _encodable(text: str) -> bool:
    """False for strings holding lone surrogates (JSON escapes can produce them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_from_dict(obj: dict, registry: dict[str, type[Message]]) -> Message:
    """Build the typed message; raises InvalidMessage for an unknown type or a bad field."""
    rid = _request_id(obj)
    type_name = obj.get("type")
    cls = registry.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise InvalidMessage("unknown_type", f"unknown message type {type_name!r}", rid)
    kwargs = {}
    for name, accepted, nullable, default in _spec(cls):
        if name not in obj:
            if default is dataclasses.MISSING:
                raise InvalidMessage("bad_message", f"{cls.TYPE}: missing field {name!r}", rid)
            continue
        value = obj[name]
        if value is None:
            if not nullable:
                raise InvalidMessage("bad_message", f"{cls.TYPE}: field {name!r} is null", rid)
        elif not isinstance(value, accepted) or (type(value) is bool and bool not in accepted):
            raise InvalidMessage(
                "bad_message", f"{cls.TYPE}: field {name!r} has the wrong type", rid
            )
        elif type(value) is int and name in _COUNTS and not 0 <= value <= MAX_ID:
            raise InvalidMessage("bad_message", f"{cls.TYPE}: field {name!r} out of range", rid)
        elif type(value) is str and not _encodable(value):
            raise InvalidMessage("bad_message", f"{cls.TYPE}: field {name!r} is not valid text", rid)
        kwargs[name] = value
    return cls(**kwargs)
