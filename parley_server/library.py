"""The shared-file library: what is in the shared folder, under safe names, with cached SHA-256.

Threads. `start()` scans once, then runs two threads:
- the watcher polls the folder every `scan_interval` seconds (the standard library has no
  portable change notification) and reports differences through `on_change`;
- the hasher hashes files bigger than `hash_inline_limit`, so a big file never stalls a scan or
  a client request. Until then such a file is listed with sha256=None.
Handler threads may call every public method at any time.

Hashes are cached in SQLite keyed by (path, size, mtime_ns), so a restart does not rehash the
folder. The connection uses WAL with synchronous=FULL: writes are rare (one batched transaction
per scan that found new files, one per upload), and an acknowledged upload's uploader should
survive a power cut just like the file, which is fsynced too.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from parley_server.filenames import (
    UnsafeName,
    is_listable_component,
    split_shared_name,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_HASH_CHUNK = 1 * MiB
_THREAD_JOIN_TIMEOUT = 5.0
_PRIVATE_FILE = 0o600


def _make_private(path: Path) -> None:
    try:
        os.chmod(path, _PRIVATE_FILE)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc)


def _under_any(name: str, unsure: set[str]) -> bool:
    """Is `name` one of `unsure`, or inside one of its folder prefixes ("sub/", "")?"""
    if not unsure:
        return False
    if name in unsure or "" in unsure:
        return True
    parts = name.split("/")
    return any("/".join(parts[:i]) + "/" in unsure for i in range(1, len(parts)))


class LibraryError(Exception):
    """A request the library refuses. `code` is for the wire: "bad_path", "not_found",
    "hash_pending" (hash not ready within the timeout) or "closed"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class FileEntry:
    name: str  # relative POSIX path, e.g. "handouts/syllabus.md"
    size: int
    mtime: float  # seconds since the epoch
    sha256: str | None  # None while a large file is still being hashed
    uploader: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OnChange = Callable[[list[FileEntry], list[str]], None]
HashCallback = Callable[["str | None", "LibraryError | None"], None]


@dataclasses.dataclass(eq=False)
class _HashWaiter:
    name: str
    callback: HashCallback
    deadline: float  # time.monotonic()


@dataclasses.dataclass(frozen=True)
class _Record:
    """What the library knows about one listed file: the entry plus where and which version."""

    entry: FileEntry
    path: str  # absolute path inside the folder (for a symlink: the link itself)
    mtime_ns: int

    @property
    def version(self) -> tuple[str, int, int]:
        return (self.path, self.entry.size, self.mtime_ns)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files_hashes (
    path TEXT PRIMARY KEY,          -- relative POSIX name; one row per name, newest version
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files_uploaders (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,          -- the version that was uploaded: a file later replaced by
    mtime_ns INTEGER NOT NULL,      -- hand under the same name is not credited to the uploader
    uploader TEXT NOT NULL,
    uploaded_at REAL NOT NULL
);
"""


class _IndexDB:
    """The SQLite side. One connection shared under a lock: every statement is tiny.

    The database is only a cache (hashes can be recomputed; uploaders are the one thing lost),
    so a damaged one never stops the server: it is moved aside, a warning logged, and a fresh
    one built by rehashing. The file and its -wal/-shm are the owner's alone (0600)."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._path = Path(db_path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        path = self._path
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, _PRIVATE_FILE))
        except OSError as exc:
            log.warning("cannot create %s: %s", path, exc)
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            # A small table: checking it costs milliseconds and finds damage now, not in a
            # handler thread in the middle of a download request.
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {result and result[0]}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        for suffix in ("", "-wal", "-shm"):  # SQLite copies the database's mode; made sure
            _make_private(Path(str(path) + suffix))
        return conn

    def _move_aside(self, exc: BaseException) -> None:
        """Keep the damaged file for whoever wants to look at it; start again without it."""
        aside = Path(f"{self._path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("the file library's hash cache %s is damaged (%s): moved it to %s and "
                    "starting a new one; shared files are hashed again and the record of "
                    "who uploaded them is lost", self._path, exc, aside.name)
        try:
            os.replace(self._path, aside)
        except OSError as move_exc:
            log.warning("cannot move %s aside (%s): deleting it", self._path, move_exc)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self._path}{suffix}")

    def _rebuild(self, exc: BaseException) -> None:
        """Damage found while running (caller holds the lock): a new, empty cache."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._move_aside(exc)
        self._conn = self._open()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LibraryError("closed", "the file library is closed")
        return self._conn

    def _call(self, job: Callable[[sqlite3.Connection], object], default: object = None,
              *, retry: bool = False) -> object:
        """Run job(connection) under the lock. Damage found on the way (not a busy or full
        disk: those are OperationalErrors and raise) rebuilds the cache; then the job runs
        again on the new one (retry) or `default` is the answer."""
        with self._lock:
            try:
                return job(self._db())
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:
                self._rebuild(exc)
                return job(self._db()) if retry else default

    def cached_hash(self, name: str, size: int, mtime_ns: int) -> str | None:
        row = self._call(lambda db: db.execute(
            "SELECT sha256 FROM files_hashes WHERE path=? AND size=? AND mtime_ns=?",
            (name, size, mtime_ns)).fetchone())
        return row[0] if row else None

    def uploader(self, name: str, size: int, mtime_ns: int) -> str | None:
        row = self._call(lambda db: db.execute(
            "SELECT uploader FROM files_uploaders WHERE path=? AND size=? AND mtime_ns=?",
            (name, size, mtime_ns)).fetchone())
        return row[0] if row else None

    def store(
        self,
        hashes: Iterable[tuple[str, int, int, str]] = (),
        uploaders: Iterable[tuple[str, int, int, str]] = (),
    ) -> None:
        """Write hash and uploader rows in one transaction (one fsync)."""
        hashes, uploaders = list(hashes), list(uploaders)
        if not hashes and not uploaders:
            return
        now = time.time()

        def job(db: sqlite3.Connection) -> None:
            with db:  # transaction: commit, or roll back on error
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO files_hashes VALUES (?,?,?,?)", hashes)
                db.executemany(
                    "INSERT OR REPLACE INTO files_uploaders VALUES (?,?,?,?,?)",
                    [(*row, now) for row in uploaders],
                )
        self._call(job, retry=True)

    def prune(self, keep: set[str]) -> None:
        """Forget rows for names no longer in the folder, so the tables do not grow forever."""
        def job(db: sqlite3.Connection) -> None:
            for table in ("files_hashes", "files_uploaders"):
                gone = [
                    (p,) for (p,) in db.execute(f"SELECT path FROM {table}") if p not in keep
                ]
                if gone:
                    with db:
                        db.execute("BEGIN")
                        db.executemany(f"DELETE FROM {table} WHERE path=?", gone)
        self._call(job)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class FileLibrary:
    def __init__(
        self,
        files_dir: Path,
        db_path: Path,
        *,
        exclude: Iterable[Path] = (),
        hash_inline_limit: int = 8 * MiB,
        scan_interval: float = 1.0,
        on_change: OnChange | None = None,
        max_hash_waiters: int = 256,
    ) -> None:
        Path(files_dir).mkdir(parents=True, exist_ok=True)
        # Every containment check compares real (symlink-free) paths against the real root.
        self.root = os.path.realpath(files_dir)
        self.files_dir = Path(self.root)
        self._excluded_dirs: list[str] = []
        for ex in exclude:
            real = os.path.realpath(ex)
            if self._strictly_inside(real, self.root):
                self._excluded_dirs.append(real)
            elif self._strictly_inside(self.root, real) or real == self.root:
                log.warning("excluded dir %s contains the shared folder; ignored", real)
        # The database may sit inside the folder by misconfiguration: never list or serve it.
        db_real = os.path.realpath(db_path)
        self._excluded_files = {db_real + s for s in ("", "-wal", "-shm", "-journal")}

        self._hash_inline_limit = hash_inline_limit
        self._scan_interval = scan_interval
        self._on_change = on_change
        self._db = _IndexDB(Path(db_path))

        self._lock = threading.Lock()  # guards _records and the hash queue
        self._changed = threading.Condition(self._lock)  # a hash became known / a job queued
        # Re-entrant, so an on_change listener that calls back into get()/refresh() in the same
        # thread does not deadlock against itself.
        self._notify_lock = threading.RLock()  # on_change calls never overlap and stay in order
        self._scan_lock = threading.RLock()  # one scan at a time (watcher vs. request path)
        self._records: dict[str, _Record] = {}
        self._hash_queue: collections.deque[str] = collections.deque()
        self._hash_jobs: dict[str, _Record] = {}
        self._max_hash_waiters = max_hash_waiters
        self._waiters: dict[int, _HashWaiter] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hash_count = 0
        self._case_warned: set[frozenset[str]] = set()

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Scan the folder once (synchronously), then start the watcher and hasher threads.

        The first scan is the baseline, not news: it is not reported through on_change.
        """
        if self._threads:
            raise RuntimeError("FileLibrary already started")
        self._scan(report=False)
        with self._lock:
            listed = set(self._records)
        self._db.prune(listed)
        for target, name in ((self._watch_loop, "watcher"), (self._hash_loop, "hasher")):
            thread = threading.Thread(target=target, name=f"library-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads (bounded: the hasher checks for stop between 1 MiB chunks)."""
        self._stop.set()
        with self._lock:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(_THREAD_JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, _THREAD_JOIN_TIMEOUT)
        self._settle_waiters()  # "closed" for whoever still waits
        self._db.close()

    def __enter__(self) -> FileLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def files_hashed(self) -> int:
        """How many files this instance has hashed (tests use it to prove the cache works)."""
        with self._lock:
            return self._hash_count

    # ----- queries ---------------------------------------------------------------------------

    def list(self) -> list[FileEntry]:
        """The current listing, sorted by name. Cheap: served from memory."""
        with self._lock:
            return [self._records[name].entry for name in sorted(self._records)]

    def resolve(self, name: str) -> Path:
        """The real path of the shared regular file `name`, guaranteed inside the folder."""
        try:
            parts = split_shared_name(name)
        except UnsafeName as exc:
            raise LibraryError("bad_path", str(exc)) from None
        real = os.path.realpath(os.path.join(self.root, *parts))
        if not self._servable(real):
            # Decided from the name and links alone, before any existence check, so the answer
            # does not reveal what exists outside the folder or in excluded dirs.
            raise LibraryError("bad_path", "that path is not in the shared folder")
        try:
            st = os.stat(real)
        except OSError:
            raise LibraryError("not_found", f"no such file: {name}") from None
        if not stat.S_ISREG(st.st_mode):
            raise LibraryError("not_found", f"not a file: {name}")
        return Path(real)

    def get(self, name: str) -> FileEntry:
        """The up-to-date entry for `name` (rescans first if it changed since the last scan)."""
        return self._current_record(name).entry

    def sha256_of(self, name: str, timeout: float) -> str:
        """The file's SHA-256, waiting up to `timeout` seconds if it is still being hashed."""
        deadline = time.monotonic() + timeout
        self._current_record(name)  # validates the name; rescans if the file is new or changed
        with self._lock:
            if name in self._hash_jobs:
                # Someone is waiting for this one: hash it before other queued big files.
                self._hash_queue.remove(name)
                self._hash_queue.appendleft(name)
            while True:
                current = self._records.get(name)
                if current is None:
                    raise LibraryError("not_found", f"no such file: {name}")
                if current.entry.sha256 is not None:
                    return current.entry.sha256
                remaining = deadline - time.monotonic()
                if self._stop.is_set():
                    raise LibraryError("closed", "the file library is closed")
                if remaining <= 0:
                    raise LibraryError("hash_pending", f"{name} is still being hashed")
                self._changed.wait(remaining)

    def when_hashed(self, name: str, callback: HashCallback, timeout: float) -> int:
        """Call callback(sha256, None) once `name` is hashed, or callback(None, LibraryError)
        if it is removed first, the library closes, or `timeout` seconds pass ("hash_pending").
        No thread waits: the callback runs on whichever library thread settles it (keep it
        short), or at once in this thread if the hash is already known. At most
        max_hash_waiters callbacks wait at any time; past that LibraryError("busy").
        Returns a handle for cancel_wait()."""
        self._current_record(name)  # validates the name; rescans if the file is new or changed
        with self._lock:
            if len(self._waiters) >= self._max_hash_waiters:
                raise LibraryError(
                    "busy", f"the server is already waiting for {self._max_hash_waiters} "
                    "files to be hashed; try again in a minute")
            if name in self._hash_jobs:
                # Someone is waiting for this one: hash it before other queued big files.
                self._hash_queue.remove(name)
                self._hash_queue.appendleft(name)
            waiter = _HashWaiter(name, callback, time.monotonic() + timeout)
            handle = id(waiter)
            self._waiters[handle] = waiter
        self._settle_waiters()
        return handle

    def cancel_wait(self, handle: int) -> bool:
        """Forget a when_hashed callback that has not run (its client went away)."""
        with self._lock:
            return self._waiters.pop(handle, None) is not None

    @property
    def hash_waiters(self) -> int:
        with self._lock:
            return len(self._waiters)

    def _settle_waiters(self) -> None:
        """Run the callbacks whose file is hashed, gone or out of time (outside every lock)."""
        now = time.monotonic()
        settled: list[tuple[_HashWaiter, str | None, LibraryError | None]] = []
        with self._lock:
            if not self._waiters:
                return
            for handle, w in list(self._waiters.items()):
                record = self._records.get(w.name)
                if record is not None and record.entry.sha256 is not None:
                    outcome = (record.entry.sha256, None)
                elif record is None:
                    outcome = (None, LibraryError("not_found", f"no such file: {w.name}"))
                elif self._stop.is_set():
                    outcome = (None, LibraryError("closed", "the file library is closed"))
                elif now >= w.deadline:
                    outcome = (None, LibraryError(
                        "hash_pending", f"{w.name} is still being hashed; try again later"))
                else:
                    continue
                del self._waiters[handle]
                settled.append((w, *outcome))
        for w, sha, error in settled:
            try:
                w.callback(sha, error)
            except Exception:
                log.exception("hash callback for %s failed", w.name)

    # ----- updates ---------------------------------------------------------------------------

    def set_uploader(self, name: str, user: str) -> FileEntry:
        """Record who uploaded the current version of `name` (stored in SQLite)."""
        record = self._current_record(name)
        self._db.store(uploaders=[(name, record.entry.size, record.mtime_ns, user)])
        return self._update_entry(record, uploader=user)

    def register_upload(self, name: str, sha256: str, uploader: str) -> FileEntry:
        """Called by UploadManager once an upload is in place under `name` (a top-level name).

        Primes the hash cache so the file is not hashed again, records the uploader, updates the
        listing and reports the new file through on_change at once (no wait for the next scan).
        """
        # The name is free in every letter case: UploadManager._claim_final_name saw to it.
        with self._scan_lock:
            path = str(self.resolve(name))
            st = os.stat(path)
            version = (name, st.st_size, st.st_mtime_ns)
            self._db.store(hashes=[(*version, sha256)], uploaders=[(*version, uploader)])
            entry = FileEntry(name, st.st_size, st.st_mtime, sha256, uploader)
            self._commit([_Record(entry, path, st.st_mtime_ns)], [], scan_base=None)
            return entry

    def refresh(self) -> tuple[list[FileEntry], list[str]]:
        """Scan now; returns (and reports through on_change) what was added/changed and removed."""
        return self._scan(report=True)

    def _scan(self, *, report: bool) -> tuple[list[FileEntry], list[str]]:
        with self._scan_lock:
            with self._lock:
                before = dict(self._records)
            found, unsure = self._walk()
            self._warn_case_clashes(found)
            changed: list[_Record] = []
            new_hashes: list[tuple[str, int, int, str]] = []
            for name, (path, st) in found.items():
                if self._stop.is_set():
                    return [], []  # shutting down: a partial scan must not report removals
                old = before.get(name)
                if old is not None and old.version == (path, st.st_size, st.st_mtime_ns):
                    continue  # unchanged: no hashing, no database access
                record, hash_row = self._make_record(name, path, st)
                changed.append(record)
                if hash_row is not None:
                    new_hashes.append(hash_row)
            self._db.store(hashes=new_hashes)
            # A folder or file that could not be read (out of descriptors, a disk error,
            # permissions) is not gone: what was listed under it stays listed.
            removed = [name for name in before
                       if name not in found and not _under_any(name, unsure)]
            if unsure:
                log.warning("could not read all of the shared folder (%s); what was listed "
                            "there stays listed until it can be read again",
                            ", ".join(sorted(unsure)[:5]) or "the folder itself")
            return self._commit(changed, removed, scan_base=before, report=report)

    # ----- internals -------------------------------------------------------------------------

    @staticmethod
    def _strictly_inside(path: str, directory: str) -> bool:
        try:
            return path != directory and os.path.commonpath([path, directory]) == directory
        except ValueError:  # Windows: different drives, so certainly not inside
            return False

    def _excluded(self, real: str) -> bool:
        if real in self._excluded_files:
            return True
        return any(
            real == ex or self._strictly_inside(real, ex) for ex in self._excluded_dirs
        )

    def _servable(self, real: str) -> bool:
        """May this real path be served: inside the folder, not excluded, no hidden component?

        The last test matters for symlinks: "notes.txt" -> ".secrets/key" stays refused.
        """
        if not self._strictly_inside(real, self.root) or self._excluded(real):
            return False
        relative = os.path.relpath(real, self.root)
        return all(is_listable_component(p) for p in relative.split(os.sep))

    def _walk(self) -> tuple[dict[str, tuple[str, os.stat_result]], set[str]]:
        """Every shareable regular file: name -> (path, stat), and the names and folder
        prefixes ("sub/", "" for the whole folder) that could not be read for a reason other
        than being gone. Symlinked dirs are not entered (that avoids loops and escapes);
        symlinked files are listed if their target is servable."""
        found: dict[str, tuple[str, os.stat_result]] = {}
        unsure: set[str] = set()
        stack = [("", self.root)]
        while stack:
            prefix, directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except FileNotFoundError:
                if prefix == "":
                    unsure.add("")  # the folder itself vanished (unmounted?): keep the list
                continue
            except OSError as exc:
                log.warning("cannot read %s: %s", directory, exc)
                unsure.add(prefix)
                continue
            for de in entries:
                if not is_listable_component(de.name):
                    continue
                try:
                    if de.is_symlink():
                        real = os.path.realpath(de.path)
                        if not self._servable(real):
                            continue
                        st = os.stat(real)
                    elif de.is_dir(follow_symlinks=False):
                        if not self._excluded(de.path):
                            stack.append((prefix + de.name + "/", de.path))
                        continue
                    else:
                        if de.path in self._excluded_files:
                            continue
                        st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted mid-scan: gone
                except OSError as exc:
                    # Unreadable for now (EMFILE, EIO, EACCES...): not the same as deleted.
                    log.debug("cannot stat %s: %s", de.path, exc)
                    unsure.add(prefix + de.name)
                    unsure.add(prefix + de.name + "/")
                    continue
                if stat.S_ISREG(st.st_mode):
                    found[prefix + de.name] = (de.path, st)
        return found, unsure

    def _warn_case_clashes(self, found: dict) -> None:
        """Files put in the folder by hand whose names differ only in letter case are all
        listed (each is a file of its own here, and each can be downloaded by its exact name;
        a client on a case-insensitive disk saves the second as "name (1).ext"). Said once
        per group in the log, so the administrator can rename one."""
        groups: dict[str, list[str]] = {}
        for name in found:
            groups.setdefault(name.casefold(), []).append(name)
        clashes = {frozenset(g) for g in groups.values() if len(g) > 1}
        for group in clashes - self._case_warned:
            log.warning("shared files whose names differ only in letter case: %s. All are "
                        "listed, but Windows and macOS treat them as one name; consider "
                        "renaming all but one", ", ".join(sorted(group)))
        self._case_warned = clashes

    def _make_record(
        self, name: str, path: str, st: os.stat_result
    ) -> tuple[_Record, tuple[str, int, int, str] | None]:
        """Build the record for a new or changed file; hashes it now if it is small."""
        size, mtime_ns = st.st_size, st.st_mtime_ns
        sha = self._db.cached_hash(name, size, mtime_ns)
        hash_row = None
        if sha is None and size <= self._hash_inline_limit:
            sha = self._hash_file(path, size, mtime_ns)
            if sha is not None:
                hash_row = (name, size, mtime_ns, sha)
        uploader = self._db.uploader(name, size, mtime_ns)
        entry = FileEntry(name, size, st.st_mtime, sha, uploader)
        return _Record(entry, path, mtime_ns), hash_row

    def _hash_file(self, path: str, size: int, mtime_ns: int) -> str | None:
        """SHA-256 of the file if it is still the version (size, mtime_ns) from start to end;
        None if it changed (the next scan sees the change), vanished or cannot be read."""
        digest = hashlib.sha256()
        buffer = bytearray(_HASH_CHUNK)
        view = memoryview(buffer)
        try:
            with open(path, "rb") as f:
                if self._version_of(f) != (size, mtime_ns):
                    return None
                while n := f.readinto(buffer):
                    if self._stop.is_set():
                        return None
                    digest.update(view[:n])
                if self._version_of(f) != (size, mtime_ns):
                    return None
        except OSError as exc:
            log.warning("cannot hash %s: %s", path, exc)
            return None
        with self._lock:
            self._hash_count += 1
        return digest.hexdigest()

    @staticmethod
    def _version_of(f) -> tuple[int, int]:
        st = os.fstat(f.fileno())
        return st.st_size, st.st_mtime_ns

    def _current_record(self, name: str) -> _Record:
        """The listed record for `name`, rescanning first if the file is new or changed."""
        path = self.resolve(name)
        with self._lock:
            record = self._records.get(name)
        if record is not None:
            try:
                st = os.stat(record.path)
            except OSError:
                st = None
            if st is not None and (st.st_size, st.st_mtime_ns) == record.version[1:]:
                return record
        self.refresh()
        with self._lock:
            record = self._records.get(name)
        if record is None:
            # e.g. a different spelling of a listed name on a case-insensitive disk.
            raise LibraryError("not_found", f"{name} is not listed (resolved to {path.name})")
        return record

    def _commit(
        self,
        changed: list[_Record],
        removed: list[str],
        *,
        scan_base: dict[str, _Record] | None,
        report: bool = True,
    ) -> tuple[list[FileEntry], list[str]]:
        """Apply changes to the listing and report the real differences through on_change.

        A scan passes the listing it started from (`scan_base`): anything updated since by
        another thread (an upload registered mid-scan) is newer than the scan and is kept.
        """
        with self._notify_lock:
            out_changed: list[FileEntry] = []
            out_removed: list[str] = []
            with self._lock:
                for record in changed:
                    name = record.entry.name
                    current = self._records.get(name)
                    if scan_base is not None:
                        if current is not None and current.version == record.version:
                            continue
                    elif current == record:
                        continue
                    self._records[name] = record
                    out_changed.append(record.entry)
                    self._set_hash_job(name, record if record.entry.sha256 is None else None)
                for name in removed:
                    if scan_base is not None and self._records.get(name) is not scan_base.get(name):
                        continue
                    if self._records.pop(name, None) is not None:
                        out_removed.append(name)
                        self._set_hash_job(name, None)
                self._changed.notify_all()
            if report:
                self._notify(out_changed, out_removed)
        self._settle_waiters()
        return out_changed, out_removed

    def _set_hash_job(self, name: str, record: _Record | None) -> None:
        """Queue `record` for the hasher (replacing an older version's job), or drop the job."""
        if record is None:
            if self._hash_jobs.pop(name, None) is not None:
                self._hash_queue.remove(name)
            return
        if name not in self._hash_jobs:
            self._hash_queue.append(name)
        self._hash_jobs[name] = record

    def _update_entry(self, record: _Record, **fields: object) -> FileEntry:
        """Change fields of a listed entry, if that version is still the listed one."""
        name = record.entry.name
        with self._notify_lock:
            with self._lock:
                current = self._records.get(name)
                if current is None or current.version != record.version:
                    return dataclasses.replace(record.entry, **fields)
                entry = dataclasses.replace(current.entry, **fields)
                new = dataclasses.replace(current, entry=entry)
                if new == current:
                    return current.entry
                self._records[name] = new
                self._changed.notify_all()
            self._notify([new.entry], [])
        self._settle_waiters()
        return new.entry

    def _notify(self, changed: list[FileEntry], removed: list[str]) -> None:
        if self._on_change is None or not (changed or removed):
            return
        try:
            self._on_change(changed, removed)
        except Exception:
            # A failing listener must not kill the watcher or the upload that triggered it.
            log.exception("on_change listener failed")

    def _watch_loop(self) -> None:
        while not self._stop.wait(self._scan_interval):
            try:
                self.refresh()
                self._settle_waiters()  # the ones out of time
            except LibraryError as exc:
                if exc.code == "closed":
                    return
                log.exception("scan failed")
            except Exception:
                # Keep watching: one failed scan (e.g. a transient disk error) must not end
                # change detection for the life of the server.
                log.exception("scan failed")

    def _hash_loop(self) -> None:
        while True:
            with self._lock:
                while not self._hash_queue and not self._stop.is_set():
                    self._changed.wait()
                if self._stop.is_set():
                    return
                name = self._hash_queue.popleft()
                record = self._hash_jobs.pop(name)
            sha = self._hash_file(record.path, record.entry.size, record.mtime_ns)
            if sha is None:
                continue
            try:
                self._db.store(hashes=[(name, record.entry.size, record.mtime_ns, sha)])
            except LibraryError:
                return  # closed under us
            self._update_entry(record, sha256=sha)
