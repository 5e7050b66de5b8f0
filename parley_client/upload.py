"""Uploading a file over the chat connection: upload_begin, windowed upload_chunk, upload_end.

At most WINDOW chunks await their replies at once, so the socket's queue never holds more than
a few hundred KiB of file data and a chat message sent meanwhile goes out right after them
instead of behind the whole file.

If the connection drops, the server keeps what arrived; once the session has reconnected (it
does so by itself when made with auto_reconnect) the upload begins again and the server
answers with the offset to carry on from. Starting the same upload again later does the same.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import messages as m

from .events import SessionError

if TYPE_CHECKING:
    from .session import ClientSession

log = logging.getLogger(__name__)

CHUNK_SIZE = 48 * 1024  # raw bytes per chunk; 64 KiB once base64-encoded
WINDOW = 4
REPLY_TIMEOUT = 30.0  # one reply taking longer than this means the server is stuck
POLL = 0.1  # how often a waiting upload looks at its cancel flag
RECONNECT_WAIT = 60.0  # how long an upload waits for a lost connection to come back
RESUME_ATTEMPTS = 5  # reconnections one upload lives through before it gives up
LINK_LOST = frozenset({"disconnected", "not_connected"})


def start_upload(session: ClientSession, path: Path,
                 on_progress: Callable[[int, int], None] | None) -> Future:
    """Start uploading in a thread; the future resolves to the file's library entry."""
    future: Future = Future()
    upload = Upload(session, path, on_progress, future)
    future.add_done_callback(lambda f: f.cancelled() and upload.cancel())
    upload.start()
    return future


class Upload(threading.Thread):
    def __init__(self, session: ClientSession, path: Path,
                 on_progress: Callable[[int, int], None] | None, future: Future) -> None:
        super().__init__(name=f"parley-upload-{path.name}", daemon=True)
        self.session = session
        self.path = path
        self.on_progress = on_progress
        self.future = future
        self.upload_id: str | None = None
        self._cancelled = threading.Event()
        self._slots = threading.Semaphore(WINDOW)
        self._lock = threading.Lock()
        self._acked = 0
        self._reported = -1
        self._failure: SessionError | None = None
        self._attempt = 0  # chunk replies of an earlier attempt (a lost link) are ignored

    def cancel(self) -> None:
        self._cancelled.set()

    # ------------------------------------------------------------------ the thread

    def run(self) -> None:
        from .session import settle

        outcome: dict | SessionError
        try:
            outcome = self._upload()
        except SessionError as exc:
            outcome = exc
        except OSError as exc:
            outcome = SessionError("io_error", f"cannot read {self.path}: {exc.strerror or exc}")
        if isinstance(outcome, SessionError):
            self._abort_on_server()
        # Forget the upload before settling, so whoever sees the result can't cancel it anymore.
        if self.upload_id is not None:
            self.session._track_upload(self.upload_id, None)
        if isinstance(outcome, SessionError):
            settle(self.future, exc=outcome)
        else:
            settle(self.future, outcome)

    def _upload(self) -> dict:
        size, digest = self._hash()
        for _ in range(RESUME_ATTEMPTS):
            try:
                return self._send_file(size, digest)
            except SessionError as exc:
                if exc.code not in LINK_LOST:
                    raise
                if not self._wait_for_reconnect():
                    raise SessionError(exc.code, f"{exc.message} (the server keeps what it "
                                                 "got: uploading the same file again carries "
                                                 "on from there)") from None
            log.info("connection back: resuming the upload of %s", self.path.name)
        raise SessionError("disconnected", "the connection kept dropping; upload stopped "
                                           "(starting it again carries on where it stopped)")

    def _send_file(self, size: int, digest: str) -> dict:
        """One attempt: begin (the server says where to carry on from), chunks, end."""
        with self._lock:
            self._attempt += 1
            attempt = self._attempt
            self._failure = None
            self._slots = threading.Semaphore(WINDOW)
        begin = self._call(m.UploadBegin, name=self.path.name, size=size, sha256=digest)
        self.upload_id = str(begin["upload_id"])
        self.future.upload_id = self.upload_id  # type: ignore[attr-defined]
        self.session._track_upload(self.upload_id, self)
        chunk_size = min(CHUNK_SIZE, int(begin.get("chunk_size") or CHUNK_SIZE))
        offset = int(begin.get("offset") or 0)
        if not 0 <= offset <= size:
            raise SessionError("bad_offset", f"the server wants to resume at {offset} of "
                                             f"{size} bytes")
        with self._lock:
            self._acked = offset
        self._report(offset, size)
        with open(self.path, "rb") as f:
            f.seek(offset)
            while offset < size:
                self._take_slot()
                data = f.read(min(chunk_size, size - offset))
                if not data:
                    raise SessionError("io_error", f"{self.path.name} shrank while uploading")
                fut = self.session.request(m.UploadChunk, upload_id=self.upload_id,
                                           offset=offset,
                                           data=base64.b64encode(data).decode("ascii"))
                fut.add_done_callback(functools.partial(self._chunk_done, length=len(data),
                                                        attempt=attempt))
                offset += len(data)
                self._report(self._acked, size)
        for _ in range(WINDOW):  # every slot back means every chunk was acknowledged
            self._take_slot()
        self._report(size, size)
        end = self._call(m.UploadEnd, upload_id=self.upload_id)
        return end.get("file", end)

    def _wait_for_reconnect(self) -> bool:
        """After a lost link: True once the session is back and logged in; False if it will
        not come back (no auto-reconnect, it gave up, or the upload was cancelled)."""
        waited = 0.0
        while waited < RECONNECT_WAIT:
            if self.session.connected and self.session.user is not None:
                return True
            if not (self.session.reconnecting or self.session.connected):
                return False
            if self._cancelled.wait(POLL):
                return False
            waited += POLL
        return False

    def _hash(self) -> tuple[int, str]:
        h = hashlib.sha256()
        size = 0
        with open(self.path, "rb") as f:
            while block := f.read(1 << 20):
                if self._cancelled.is_set():
                    raise SessionError("cancelled", "upload cancelled")
                h.update(block)
                size += len(block)
        return size, h.hexdigest()

    def _chunk_done(self, fut: Future, length: int, attempt: int) -> None:
        # Runs on the session's reader thread: only bookkeeping here, no user callbacks.
        exc = fut.exception() if not fut.cancelled() else SessionError("cancelled", "cancelled")
        with self._lock:
            if attempt != self._attempt:
                return  # a reply (or a failure) from before the connection was lost
            if exc is not None:
                if self._failure is None:
                    self._failure = exc if isinstance(exc, SessionError) else SessionError(
                        "internal", str(exc))
            else:
                self._acked += length
            slots = self._slots
        slots.release()

    def _take_slot(self) -> None:
        waited = 0.0
        while not self._slots.acquire(timeout=POLL):
            self._check()
            waited += POLL
            if waited > REPLY_TIMEOUT:
                raise SessionError("timeout", "the server stopped acknowledging the upload")
        self._check()

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise SessionError("cancelled", "upload cancelled")
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure

    def _call(self, msg_type: type[m.Request], **fields: Any) -> dict:
        fut = self.session.request(msg_type, **fields)
        waited = 0.0
        while True:
            if self._cancelled.is_set():
                raise SessionError("cancelled", "upload cancelled")
            try:
                return fut.result(timeout=POLL)
            except TimeoutError:
                waited += POLL
                if waited > REPLY_TIMEOUT:
                    raise SessionError("timeout", f"the server did not answer {msg_type.TYPE}") \
                        from None

    def _report(self, sent: int, total: int) -> None:
        if self.on_progress is None or sent == self._reported:
            return
        self._reported = sent
        try:
            self.on_progress(sent, total)
        except Exception:
            log.exception("upload progress callback failed")

    def _abort_on_server(self) -> None:
        if self.upload_id is None:
            return
        fut = self.session.request(m.UploadAbort, upload_id=self.upload_id)
        fut.add_done_callback(
            lambda f: f.exception() and log.info("upload_abort failed: %s", f.exception()))
