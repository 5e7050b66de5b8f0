"""Byte layouts of Parley's UDP download datagrams and of the TCP fallback request (sans-IO).

Every datagram starts with the same 12-byte header (big-endian, see docs/transfer.md):

    0  u8   MAGIC (0xA7)   -- junk without it is dropped after one byte compare
    1  u8   VERSION (1)
    2  u8   type
    3  u8   flags (0, reserved)
    4  u64  transfer id

Decoders return None for anything malformed instead of raising: a bad datagram is dropped,
it never ends a transfer.
"""

from __future__ import annotations

import struct

MAGIC = 0xA7
VERSION = 1

START = 1      # client -> server: token, receive window
DATA = 2       # server -> client: block number, payload
ACK = 3        # client -> server: cumulative ack, window, selective-ack ranges
END = 4        # server -> client: all blocks acknowledged
END_ACK = 5    # client -> server: END seen
ABORT = 6      # either way: give up now (reason text)
TCP_REQUEST = 16  # TCP fallback: client -> server
TCP_REPLY = 17    # TCP fallback: server -> client

HEADER = struct.Struct("!BBBBQ")
HEADER_SIZE = HEADER.size  # 12
TOKEN_SIZE = 16

_START = struct.Struct("!BBBBQ16sI")          # header, token, window (blocks)
_DATA_HEADER = struct.Struct("!BBBBQI")       # header, block number; payload follows
DATA_HEADER_SIZE = _DATA_HEADER.size          # 16
_ACK_FIXED = struct.Struct("!BBBBQIIIH2x")    # header, cum, window, ack number, range count
ACK_FIXED_SIZE = _ACK_FIXED.size              # 26 + 2 padding = 28
_END = struct.Struct("!BBBBQI")               # header, block count
_ABORT = struct.Struct("!BBBBQH")             # header, reason code; utf-8 reason text follows
_TCP_REQUEST = struct.Struct("!BBBBQ16sQ")    # header, token, byte offset wanted
TCP_REQUEST_SIZE = _TCP_REQUEST.size          # 36
_TCP_REPLY = struct.Struct("!BBBBQQ")         # header (flags = status), byte count that follows
TCP_REPLY_SIZE = _TCP_REPLY.size              # 20

# An ACK with this many ranges is 28 + 8 * 170 = 1388 bytes: no larger than a 1400-byte DATA
# datagram, so it fits every path DATA fits.
MAX_ACK_RANGES = 170
ACK_PARTIAL = 0x01   # ACK flag: more ranges exist than fit; the span between the last two
                     # ranges is not described (its blocks may or may not have arrived)
MAX_ABORT_TEXT = 200
MAX_BLOCK_SIZE = 65507 - DATA_HEADER_SIZE     # largest UDP payload over IPv4, minus our header

TCP_OK = 0
TCP_REFUSED = 1


def peek(datagram) -> tuple[int, int] | None:
    """(type, transfer id) of a datagram with our magic and version, else None."""
    if len(datagram) < HEADER_SIZE or datagram[0] != MAGIC or datagram[1] != VERSION:
        return None
    _m, _v, kind, _f, tid = HEADER.unpack_from(datagram)
    return kind, tid


def encode_start(tid: int, token: bytes, window: int) -> bytes:
    return _START.pack(MAGIC, VERSION, START, 0, tid, token, window)


def decode_start(datagram) -> tuple[bytes, int] | None:
    """(token, window) of a START, or None if it is not a well-formed one."""
    if len(datagram) != _START.size:
        return None
    _m, _v, _k, _f, _tid, token, window = _START.unpack_from(datagram)
    return token, window


def pack_data_header(buf, pos: int, tid: int, seq: int) -> None:
    """Write a DATA header into buf at pos (the payload goes right after it)."""
    _DATA_HEADER.pack_into(buf, pos, MAGIC, VERSION, DATA, 0, tid, seq)


def encode_data_header(tid: int, seq: int) -> bytes:
    """The 16 bytes in front of a DATA payload."""
    return _DATA_HEADER.pack(MAGIC, VERSION, DATA, 0, tid, seq)


def encode_data(tid: int, seq: int, payload) -> bytes:
    return _DATA_HEADER.pack(MAGIC, VERSION, DATA, 0, tid, seq) + bytes(payload)


_DATA_SPLIT = struct.Struct("!12sI")


def data_prefix(tid: int) -> bytes:
    """The first 12 bytes every DATA datagram of transfer tid starts with."""
    return HEADER.pack(MAGIC, VERSION, DATA, 0, tid)


def split_data(datagram) -> tuple[bytes, int]:
    """(first 12 bytes, block number) of a datagram of at least 16 bytes: one C call for the
    receiver's hot path."""
    return _DATA_SPLIT.unpack_from(datagram)


def data_seq(datagram) -> int:
    """Block number of a DATA datagram (caller has checked the header)."""
    return int.from_bytes(datagram[12:16], "big")


def encode_ack(tid: int, cum: int, window: int, ack_no: int, ranges,
               partial: bool = False) -> bytes:
    """ranges: (start, end) block-number pairs, end exclusive, all above cum. partial: the
    receiver left out ranges between the last two (sets the ACK_PARTIAL flag)."""
    count = len(ranges)
    out = bytearray(ACK_FIXED_SIZE + 8 * count)
    _ACK_FIXED.pack_into(out, 0, MAGIC, VERSION, ACK, ACK_PARTIAL if partial else 0, tid, cum,
                         window, ack_no, count)
    if count:
        flat = [v for pair in ranges for v in pair]
        struct.pack_into(f"!{2 * count}I", out, ACK_FIXED_SIZE, *flat)
    return bytes(out)


def decode_ack(datagram) -> tuple[int, int, int, tuple[int, ...], bool] | None:
    """(cum, window, ack number, flat ranges start0, end0, start1, end1, ..., partial) or None.
    partial is True only for an ACK with the ACK_PARTIAL flag and at least two ranges."""
    if len(datagram) < ACK_FIXED_SIZE:
        return None
    _m, _v, _k, flags, _tid, cum, window, ack_no, count = _ACK_FIXED.unpack_from(datagram)
    if count > MAX_ACK_RANGES or len(datagram) != ACK_FIXED_SIZE + 8 * count:
        return None
    flat = struct.unpack_from(f"!{2 * count}I", datagram, ACK_FIXED_SIZE) if count else ()
    return cum, window, ack_no, flat, bool(flags & ACK_PARTIAL) and count >= 2


def encode_end(tid: int, nblocks: int) -> bytes:
    return _END.pack(MAGIC, VERSION, END, 0, tid, nblocks)


def decode_end(datagram) -> int | None:
    if len(datagram) != _END.size:
        return None
    return _END.unpack_from(datagram)[5]


def encode_end_ack(tid: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, END_ACK, 0, tid)


def encode_abort(tid: int, code: int, reason: str) -> bytes:
    text = reason.encode("utf-8", "replace")[:MAX_ABORT_TEXT]
    return _ABORT.pack(MAGIC, VERSION, ABORT, 0, tid, code) + text


def decode_abort(datagram) -> tuple[int, str] | None:
    if len(datagram) < _ABORT.size or len(datagram) > _ABORT.size + MAX_ABORT_TEXT:
        return None
    code = _ABORT.unpack_from(datagram)[5]
    return code, bytes(datagram[_ABORT.size:]).decode("utf-8", "replace")


def encode_tcp_request(tid: int, token: bytes, offset: int) -> bytes:
    return _TCP_REQUEST.pack(MAGIC, VERSION, TCP_REQUEST, 0, tid, token, offset)


def decode_tcp_request(raw) -> tuple[int, bytes, int] | None:
    """(transfer id, token, byte offset) or None."""
    if len(raw) != TCP_REQUEST_SIZE:
        return None
    magic, version, kind, _f, tid, token, offset = _TCP_REQUEST.unpack_from(raw)
    if magic != MAGIC or version != VERSION or kind != TCP_REQUEST:
        return None
    return tid, token, offset


def encode_tcp_reply(tid: int, status: int, length: int) -> bytes:
    return _TCP_REPLY.pack(MAGIC, VERSION, TCP_REPLY, status, tid, length)


def decode_tcp_reply(raw) -> tuple[int, int, int] | None:
    """(transfer id, status, byte count) or None."""
    if len(raw) != TCP_REPLY_SIZE:
        return None
    magic, version, kind, status, tid, length = _TCP_REPLY.unpack_from(raw)
    if magic != MAGIC or version != VERSION or kind != TCP_REPLY:
        return None
    return tid, status, length
