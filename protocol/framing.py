"""Length-prefixed framing: a 4-byte big-endian length, then that many bytes of payload.

Framing knows nothing about JSON or message types, so it can be tested (and replaced) alone.
The size limit is checked on the length prefix, before any payload is buffered, so a peer
cannot make us hold more than ``max_frame`` bytes by announcing a huge frame.
"""

from __future__ import annotations

import struct

from .errors import LocalProtocolError, RemoteProtocolError

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise LocalProtocolError(
            f"frame of {len(payload)} bytes exceeds the {max_frame}-byte limit", "frame_too_large"
        )
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes and yields whole frame payloads."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read, once known
        self._error: RemoteProtocolError | None = None  # found after good frames; raised next

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every frame now complete. Raises RemoteProtocolError on an oversize
        prefix; frames completed before it in the same call are returned first, and the error is
        raised by check() or the next feed(), so the outcome never depends on how TCP split it."""
        self.check()
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        pos = 0
        while True:
            if self._need is None:
                if len(buf) - pos < HEADER.size:
                    break
                (length,) = HEADER.unpack_from(buf, pos)
                if length > self.max_frame:
                    error = RemoteProtocolError(
                        f"peer announced a {length}-byte frame; the limit is {self.max_frame}",
                        "frame_too_large",
                    )
                    del buf[:]
                    if not frames:
                        raise error
                    self._error = error
                    return frames
                self._need = length
                pos += HEADER.size
            if len(buf) - pos < self._need:
                break
            frames.append(bytes(buf[pos : pos + self._need]))
            pos += self._need
            self._need = None
        if pos:
            del buf[:pos]
        return frames

    def check(self) -> None:
        """Raise the error found after the frames the last feed() returned, if any."""
        if self._error is not None:
            raise self._error
