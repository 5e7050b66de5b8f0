"""Byte layouts of Parley's LAN discovery datagrams (sans-IO; see docs/discovery.md).

A client sends a PROBE (to broadcast addresses or to given hosts) and every server that hears
it sends back one ANSWER saying where and what it is. Both start with the same 12-byte header
(big-endian):

    0  4s  MAGIC b"PRLD"
    4  u8  FORMAT_VERSION of this datagram layout (1); later versions only append fields
    5  u8  type: PROBE (1) or ANSWER (2)
    6  u16 flags (senders put 0, receivers ignore)
    8  u32 nonce chosen by the prober, echoed in the answer

A probe is padded to at least PROBE_SIZE bytes and an answer never exceeds PROBE_SIZE: a server
never sends more bytes than it received, so it is useless as a traffic amplifier.

Decoders return None for anything malformed instead of raising.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .version import PROTOCOL_VERSION

MAGIC = b"PRLD"
FORMAT_VERSION = 1
PROBE = 1
ANSWER = 2

DEFAULT_DISCOVERY_PORT = 5151  # UDP; 5150 is taken by the download service's UDP socket

PROBE_SIZE = 256          # probes are padded to this; smaller ones are not answered
MAX_PROBE_SIZE = 1024     # anything larger is not a probe of ours
MAX_ANSWER_SIZE = PROBE_SIZE
MAX_NAME_BYTES = 64
MAX_APP_VERSION_BYTES = 32
MAX_FINGERPRINT_BYTES = 128

HEADER = struct.Struct("!4sBBHI")
HEADER_SIZE = HEADER.size                  # 12
_PROBE = struct.Struct("!4sBBHIH")         # header, prober's protocol version; padding follows
_ANSWER_FIXED = struct.Struct("!4sBBHIHHI")  # header, tcp port, protocol version, users
_U8 = struct.Struct("!B")

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class Probe:
    nonce: int
    protocol_version: int   # the prober's; a server answers whatever it is


@dataclass(frozen=True)
class Answer:
    nonce: int
    name: str               # display name (the server's hostname), at most MAX_NAME_BYTES of UTF-8
    port: int               # the chat server's TCP port
    protocol_version: int   # the server's, so a client can show "incompatible"
    app_version: str
    users: int              # people online
    fingerprint: str | None = None  # TLS certificate fingerprint, when the server has one


def encode_probe(nonce: int, protocol_version: int = PROTOCOL_VERSION) -> bytes:
    head = _PROBE.pack(MAGIC, FORMAT_VERSION, PROBE, 0, nonce & _U32_MAX, protocol_version & _U16_MAX)
    return head + bytes(PROBE_SIZE - len(head))


def _header(data) -> tuple[int, int] | None:
    """(type, nonce) when data starts with our magic and a format version we can read."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, kind, _flags, nonce = HEADER.unpack_from(data)
    if magic != MAGIC or version < 1:
        return None
    return kind, nonce


def decode_probe(data) -> Probe | None:
    """The probe in data, or None if it is not one worth answering (including one too small)."""
    if not PROBE_SIZE <= len(data) <= MAX_PROBE_SIZE:
        return None
    head = _header(data)
    if head is None or head[0] != PROBE:
        return None
    protocol_version = _PROBE.unpack_from(data)[5]
    # Padding is not checked: a later format version may put fields there.
    return Probe(nonce=head[1], protocol_version=protocol_version)


def _printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in text)


def _clean_name(name: str) -> bytes:
    """The name as UTF-8, control characters blanked, cut to MAX_NAME_BYTES on a character boundary."""
    name = "".join(" " if c.isspace() or not c.isprintable() else c for c in name)
    raw = name.encode("utf-8", "replace")[:MAX_NAME_BYTES]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def encode_answer(answer: Answer) -> bytes:
    """The answer datagram, never longer than MAX_ANSWER_SIZE.

    The name is cleaned and shortened (it is only shown to people); the app version is
    shortened. A port or protocol version out of range, or a fingerprint that is not printable
    ASCII or too long to send whole, raises ValueError: those are the caller's bugs, and a cut
    fingerprint would be a wrong one.
    """
    if not 1 <= answer.port <= _U16_MAX:
        raise ValueError(f"port out of range: {answer.port}")
    if not 0 <= answer.protocol_version <= _U16_MAX:
        raise ValueError(f"protocol version out of range: {answer.protocol_version}")
    if not _printable_ascii(answer.app_version):
        raise ValueError("app version must be printable ASCII")
    fingerprint = (answer.fingerprint or "").encode("ascii", "replace")
    if answer.fingerprint is not None and (not _printable_ascii(answer.fingerprint)
                                           or not 0 < len(fingerprint) <= MAX_FINGERPRINT_BYTES):
        raise ValueError("fingerprint must be 1..128 printable ASCII characters")
    users = min(max(int(answer.users), 0), _U32_MAX)
    name = _clean_name(answer.name)
    app = answer.app_version.encode("ascii")[:MAX_APP_VERSION_BYTES]
    out = bytearray(_ANSWER_FIXED.pack(MAGIC, FORMAT_VERSION, ANSWER, 0, answer.nonce & _U32_MAX,
                                       answer.port, answer.protocol_version, users))
    for field in (name, app, fingerprint):
        out += _U8.pack(len(field)) + field
    assert len(out) <= MAX_ANSWER_SIZE  # 20 + 3 + 64 + 32 + 128 = 247
    return bytes(out)


def _read_field(data, offset: int, limit: int) -> tuple[bytes, int] | None:
    if offset >= len(data):
        return None
    size = data[offset]
    end = offset + 1 + size
    if size > limit or end > len(data):
        return None
    return bytes(data[offset + 1:end]), end


def decode_answer(data) -> Answer | None:
    """The answer in data, or None for anything that is not a well-formed answer.

    Bytes after the known fields are ignored: later format versions only append.
    """
    if not _ANSWER_FIXED.size <= len(data) <= MAX_ANSWER_SIZE:
        return None
    head = _header(data)
    if head is None or head[0] != ANSWER:
        return None
    port, protocol_version, users = _ANSWER_FIXED.unpack_from(data)[5:]
    if port == 0:
        return None
    fields: list[bytes] = []
    offset = _ANSWER_FIXED.size
    for limit in (MAX_NAME_BYTES, MAX_APP_VERSION_BYTES, MAX_FINGERPRINT_BYTES):
        got = _read_field(data, offset, limit)
        if got is None:
            return None
        value, offset = got
        fields.append(value)
    raw_name, raw_app, raw_fingerprint = fields
    try:
        name = raw_name.decode("utf-8")
        app = raw_app.decode("ascii")
        fingerprint = raw_fingerprint.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not name.isprintable() or not _printable_ascii(app) or not _printable_ascii(fingerprint):
        return None
    return Answer(nonce=head[1], name=name, port=port, protocol_version=protocol_version,
                  app_version=app, users=users, fingerprint=fingerprint or None)
