"""Server side of uploads that arrive as chunks over the chat connection.

Each upload is written to a hidden temporary file inside the shared folder (same filesystem, so
putting it in place is atomic; hidden, so the library never lists or serves it). Only after the
size and SHA-256 check out and the data is fsynced does it get its final name, which is claimed
with os.link: that fails instead of overwriting, so two uploads of "report.pdf" at the same moment
end up as "report.pdf" and "report (1).pdf" and never as one clobbered file.

An upload whose connection goes away is parked, not deleted: the same user beginning the same
file again (name, size and SHA-256) carries on from the bytes already stored, for as long as
an idle upload is kept (stale_after).

Thread-safe: handler threads call everything at once. Lock order is upload lock, then manager
lock; code holding the manager lock never waits for an upload lock.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import threading
import time

from parley_server.filenames import UnsafeName, numbered_name, sanitize_upload_name
from parley_server.library import FileEntry, FileLibrary, MiB

log = logging.getLogger(__name__)

TEMP_PREFIX = ".parley-upload-"
TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"([0-9a-f]{32})" + re.escape(TEMP_SUFFIX))
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_MAX_NUMBERED_TRIES = 10_000
# What os.link raises where the filesystem has no hard links (EINVAL: FAT on Windows).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL})
# Free space kept by default for everything else on the disk (the database, logs).
DEFAULT_DISK_RESERVE = 64 * MiB


class UploadError(Exception):
    """A refused upload step; `code` goes on the wire: too_large, bad_size, bad_name, bad_hash,
    too_many_uploads, no_space, unknown_upload, bad_offset, size_exceeded, incomplete,
    hash_mismatch, io_error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Upload:
    """One upload in progress. Callers read the public attributes; the manager changes them."""

    def __init__(
        self, upload_id: str, user: str, filename: str, size: int, sha256: str | None
    ) -> None:
        self.upload_id = upload_id
        self.user = user
        self.filename = filename  # sanitised; the final name may get a " (n)" suffix
        self.size = size
        self.expected_sha256 = sha256
        self.received = 0
        self.temp_path = ""
        self.last_activity = time.monotonic()
        self.parked = False  # its connection went away: kept for resuming, file closed
        self._file = None
        self._digest = hashlib.sha256()
        self._lock = threading.Lock()
        self._closed = False


class UploadManager:
    def __init__(
        self,
        library: FileLibrary,
        *,
        max_upload: int = 100 * MiB,
        stale_after: float = 600.0,
        max_active_per_user: int = 4,
        disk_reserve: int = DEFAULT_DISK_RESERVE,
        reserve_idle: float = 30.0,
    ) -> None:
        self._library = library
        self._dir = library.root
        self._max_upload = max_upload
        self._stale_after = stale_after
        self._max_active_per_user = max_active_per_user
        self._disk_reserve = disk_reserve
        self._reserve_idle = reserve_idle
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self._last_sweep = time.monotonic()
        # Temp files left by a killed server can never be resumed (their uploads are gone).
        removed = self._remove_orphans(min_age=0.0)
        if removed:
            log.info("removed %d unfinished upload(s) left by an earlier run", removed)

    # ----- the upload steps ------------------------------------------------------------------

    def begin(self, user: str, filename: str, size: int, sha256: str | None = None) -> Upload:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UploadError("bad_size", "size must be a non-negative integer")
        if size > self._max_upload:
            raise UploadError(
                "too_large", f"{size} bytes is over the {self._max_upload}-byte upload limit"
            )
        if sha256 is not None:
            if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
                raise UploadError("bad_hash", "sha256 must be 64 hexadecimal digits")
            sha256 = sha256.lower()
        try:
            clean_name = sanitize_upload_name(filename)
        except UnsafeName as exc:
            raise UploadError("bad_name", str(exc)) from None

        if time.monotonic() - self._last_sweep > min(self._stale_after, 60.0):
            self.sweep()  # lazily, so hung clients' uploads go away without a timer thread

        if sha256 is not None:
            resumed = self._resume(user, clean_name, size, sha256)
            if resumed is not None:
                return resumed
        self._evict_parked(user)
        upload = Upload(secrets.token_hex(16), user, clean_name, size, sha256)
        upload.temp_path = os.path.join(self._dir, TEMP_PREFIX + upload.upload_id + TEMP_SUFFIX)
        with self._lock:
            mine = sum(1 for u in self._uploads.values() if u.user == user and not u.parked)
            if mine >= self._max_active_per_user:
                raise UploadError(
                    "too_many_uploads", f"at most {self._max_active_per_user} uploads at a time"
                )
            owed = self._owed_locked(time.monotonic())
            free = shutil.disk_usage(self._dir).free
            if free - owed - self._disk_reserve < size:
                raise UploadError(
                    "no_space", "the server does not have enough free disk space for this file")
            try:
                upload._file = open(upload.temp_path, "xb")  # noqa: SIM115 - lives across calls
            except OSError as exc:
                raise UploadError("io_error", f"cannot store the upload: {exc}") from exc
            self._uploads[upload.upload_id] = upload
        return upload

    def _owed_locked(self, now: float) -> int:
        """Space promised to uploads under way (what each has yet to send), counted as used so
        that several uploads cannot each pass the check and together fill the disk. Only
        uploads that are moving hold a promise: a parked one, or one silent for reserve_idle
        seconds, would otherwise keep everyone's uploads off the disk while sending nothing.
        Should it move again and the disk be full, it fails then with no_space."""
        return sum(u.size - u.received for u in self._uploads.values()
                   if not u.parked and now - u.last_activity < self._reserve_idle)

    def write(self, upload_id: str, offset: int, data: bytes, *, user: str | None = None) -> int:
        """Append a chunk; `offset` must equal the bytes received so far. Returns that count.

        A refused chunk (bad offset, too much data) leaves the upload as it was, so the client
        can carry on from `received`.
        """
        upload = self._get(upload_id, user)
        with upload._lock:
            if upload._closed or upload.parked:  # parked: only begin may take it up again
                raise UploadError("unknown_upload", "that upload was cancelled")
            if offset != upload.received:
                raise UploadError(
                    "bad_offset", f"expected offset {upload.received}, got {offset}"
                )
            if upload.received + len(data) > upload.size:
                raise UploadError(
                    "size_exceeded", f"more data than the declared {upload.size} bytes"
                )
            try:
                upload._file.write(data)
            except OSError as exc:  # e.g. the disk filled up after all
                self._discard_locked(upload)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise UploadError("no_space", "the server's disk is full; the upload "
                                      "was cancelled") from exc
                raise UploadError("io_error", f"cannot store the upload: {exc}") from exc
            upload._digest.update(data)
            upload.received += len(data)
            upload.last_activity = time.monotonic()
            return upload.received

    def finish(self, upload_id: str, *, user: str | None = None) -> FileEntry:
        """Check size and hash, make the data durable, give it a free name, list it."""
        upload = self._get(upload_id, user)
        with upload._lock:
            if upload._closed or upload.parked:  # parked: only begin may take it up again
                raise UploadError("unknown_upload", "that upload was cancelled")
            if upload.received != upload.size:
                self._discard_locked(upload)
                raise UploadError(
                    "incomplete", f"received {upload.received} of {upload.size} bytes"
                )
            sha = upload._digest.hexdigest()
            if upload.expected_sha256 is not None and sha != upload.expected_sha256:
                self._discard_locked(upload)
                raise UploadError("hash_mismatch", "the data does not match the declared SHA-256")
            try:
                upload._file.flush()
                os.fsync(upload._file.fileno())
                upload._file.close()
                final_name = self._claim_final_name(upload)
            except OSError as exc:
                self._discard_locked(upload)
                raise UploadError("io_error", f"cannot store the upload: {exc}") from exc
            try:
                _fsync_directory(self._dir)  # the new directory entry must survive a crash too
            except OSError as exc:
                # The file is in place and its data durable; only the name's durability is in
                # doubt. Reporting failure now would be a lie the other way round.
                log.warning("cannot fsync %s after upload: %s", self._dir, exc)
            upload._closed = True
            with self._lock:
                self._uploads.pop(upload.upload_id, None)
        return self._library.register_upload(final_name, sha, upload.user)

    def park(self, upload_id: str) -> bool:
        """The uploader's connection went away: keep what arrived (file closed, hash state in
        memory) so that the same user beginning the same file (name, size, SHA-256) again
        carries on from there. Parked uploads go after stale_after like idle ones, and at
        most max_active_per_user of them are kept per user. False if there was no such
        upload."""
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            return False
        with upload._lock:
            if upload._closed or upload.parked:
                return False
            if upload.expected_sha256 is None:  # nothing to recognise it by: cannot resume
                self._discard_locked(upload)
                return True
            try:
                upload._file.close()
            except OSError as exc:  # the buffered tail could not be written: start over
                log.warning("parking upload %s failed: %s", upload.upload_id, exc)
                self._discard_locked(upload)
                return True
            upload.parked = True
            upload.last_activity = time.monotonic()
        return True

    def _resume(self, user: str, filename: str, size: int, sha256: str) -> Upload | None:
        """The user's parked upload of this very file, reopened where it stopped."""
        with self._lock:
            candidates = [u for u in self._uploads.values()
                          if u.parked and u.user == user and u.filename == filename
                          and u.size == size and u.expected_sha256 == sha256]
        for upload in candidates:
            with upload._lock:
                if upload._closed or not upload.parked:
                    continue  # taken by a concurrent begin, or swept
                try:
                    f = open(upload.temp_path, "r+b")  # noqa: SIM115 - lives across calls
                except OSError as exc:
                    log.warning("cannot resume upload %s: %s", upload.upload_id, exc)
                    self._discard_locked(upload)
                    continue
                try:
                    f.truncate(upload.received)  # bytes past it were never acknowledged
                    f.seek(upload.received)
                except OSError as exc:
                    f.close()
                    log.warning("cannot resume upload %s: %s", upload.upload_id, exc)
                    self._discard_locked(upload)
                    continue
                upload._file = f
                upload.parked = False
                upload.last_activity = time.monotonic()
                return upload
        return None

    def _evict_parked(self, user: str) -> None:
        """Make room for one more parked upload of user's: the oldest ones go."""
        with self._lock:
            parked = sorted((u for u in self._uploads.values() if u.parked and u.user == user),
                            key=lambda u: u.last_activity)
        for upload in parked[:max(0, len(parked) - self._max_active_per_user + 1)]:
            self.abort(upload.upload_id)

    def abort(self, upload_id: str) -> bool:
        """Cancel an upload and delete its data. False if there was no such upload."""
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            return False
        with upload._lock:
            if upload._closed:
                return False
            self._discard_locked(upload)
        return True

    def abort_user(self, user: str) -> int:
        """Cancel all of a user's uploads (their connection closed). Returns how many."""
        with self._lock:
            theirs = [u.upload_id for u in self._uploads.values() if u.user == user]
        return sum(self.abort(upload_id) for upload_id in theirs)

    def close(self) -> None:
        """Server shutdown: cancel every upload in progress."""
        with self._lock:
            everything = list(self._uploads)
        for upload_id in everything:
            self.abort(upload_id)

    def sweep(self) -> int:
        """Cancel uploads idle for `stale_after` seconds and delete temp files nobody owns
        (older than that, so a temp file being created this instant is left alone)."""
        self._last_sweep = now = time.monotonic()
        with self._lock:
            stale = [
                u.upload_id
                for u in self._uploads.values()
                if now - u.last_activity > self._stale_after
            ]
        removed = sum(self.abort(upload_id) for upload_id in stale)
        return removed + self._remove_orphans(min_age=self._stale_after)

    def in_progress(self, user: str | None = None) -> list[Upload]:
        with self._lock:
            return [u for u in self._uploads.values() if user is None or u.user == user]

    # ----- internals -------------------------------------------------------------------------

    def _get(self, upload_id: str, user: str | None) -> Upload:
        with self._lock:
            upload = self._uploads.get(upload_id)
        # Someone else's upload id is treated as unknown: no hint that it exists.
        if upload is None or (user is not None and upload.user != user):
            raise UploadError("unknown_upload", "no such upload")
        return upload

    def _discard_locked(self, upload: Upload) -> None:
        """Drop an upload and its temp file. Caller holds upload._lock."""
        upload._closed = True
        with self._lock:
            self._uploads.pop(upload.upload_id, None)
        if upload._file is not None and not upload._file.closed:
            upload._file.close()
        try:
            os.unlink(upload.temp_path)
        except FileNotFoundError:
            pass  # already gone (finish may have moved it before failing)
        except OSError as exc:
            log.warning("cannot remove %s (sweep will retry): %s", upload.temp_path, exc)

    def _claim_final_name(self, upload: Upload) -> str:
        """Put the temp file in place under the first free "name", "name (1)", ... . Free
        means in any letter case too: "Report.PDF" beside "report.pdf" would collide on the
        Windows and macOS clients that download both (the link still refuses a race)."""
        try:
            taken = {n.casefold() for n in os.listdir(self._dir)}
        except OSError:
            taken = set()
        for n in range(_MAX_NUMBERED_TRIES):
            name = numbered_name(upload.filename, n)
            if name.casefold() in taken:
                continue
            if _place_exclusively(upload.temp_path, os.path.join(self._dir, name)):
                return name
        raise OSError(errno.EEXIST, f"no free name for {upload.filename}")

    def _remove_orphans(self, *, min_age: float) -> int:
        with self._lock:
            active = set(self._uploads)
        removed = 0
        now = time.time()
        with os.scandir(self._dir) as it:
            for de in it:
                match = _TEMP_NAME.fullmatch(de.name)
                if match is None or match.group(1) in active:
                    continue
                try:
                    if now - de.stat(follow_symlinks=False).st_mtime < min_age:
                        continue
                    os.unlink(de.path)
                    removed += 1
                except FileNotFoundError:
                    continue  # removed by a concurrent abort
                except OSError as exc:
                    log.warning("cannot remove leftover upload %s: %s", de.path, exc)
        return removed


def _place_exclusively(temp_path: str, target: str) -> bool:
    """Move temp_path to target unless target exists (then False). Never overwrites."""
    try:
        os.link(temp_path, target)  # atomic, and fails rather than replace an existing file
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        return _place_without_hard_link(temp_path, target)
    os.unlink(temp_path)
    return True


def _place_without_hard_link(temp_path: str, target: str) -> bool:
    """For filesystems without hard links (FAT, some network shares): reserve the name with an
    O_EXCL create, then replace our own empty placeholder with the data."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    os.replace(temp_path, target)
    return True


def _fsync_directory(directory: str) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory for fsync; NTFS journals the rename itself
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
