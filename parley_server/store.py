"""SQLite persistence for accounts, message history and stored (offline) direct messages.

One connection, used by one writer thread that commits in groups: every caller waits until its
write is durable (synchronous=FULL in WAL mode), so whatever the server acknowledges survives a
kill -9, while a burst of messages shares one fsync instead of paying one each.
Reads use a small pool of connections (WAL lets readers run beside the writer); a connection
per handler thread would cost each of a thousand clients its own page cache. What every login
needs (the accounts, and who has messages waiting) is also kept in memory, changed only by the
writer after its commits, so the server must be the only program writing the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path

log = logging.getLogger("parley.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name_key TEXT PRIMARY KEY,          -- lower-cased: names are unique case-insensitively
    name TEXT NOT NULL,
    display TEXT NOT NULL,
    pw_hash BLOB NOT NULL,
    pw_salt BLOB NOT NULL,
    pw_params TEXT NOT NULL,            -- "scrypt:n:r:p", so the cost can be raised later
    resume_hash BLOB,                   -- SHA-256 of the reconnect token, never the token itself
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_display ON users(lower(display));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    sender TEXT NOT NULL,
    sender_display TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    conv TEXT NOT NULL,                 -- conversation key, see conversation_key()
    text TEXT NOT NULL,
    edited REAL                         -- when its sender last changed the text; NULL: never
);
CREATE INDEX IF NOT EXISTS messages_conv ON messages(conv, id);
CREATE TABLE IF NOT EXISTS admins (name_key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS temporary_passwords (name_key TEXT PRIMARY KEY);  -- set by a reset
CREATE TABLE IF NOT EXISTS bans (       -- kind "user" (value: name key) or "address" (an IP)
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    until REAL,                         -- epoch seconds; NULL = until lifted
    reason TEXT NOT NULL,
    by TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS mutes (name_key TEXT PRIMARY KEY, until REAL, by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (    -- direct messages waiting for an offline recipient
    user_key TEXT NOT NULL,
    msg_id INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (user_key, msg_id)
);
"""


# Columns added since the first release: (table, column, declaration). CREATE TABLE IF NOT
# EXISTS leaves an older database's tables as they were, so they are added here.
ADDED_COLUMNS = (("messages", "edited", "REAL"),)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, decl in ADDED_COLUMNS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


# Search: a trigram full-text index kept in step with messages by triggers, so a search
# reads the postings of its words instead of every message ever sent. SQLite uses it for
# LIKE patterns with a run of 3+ characters; shorter searches scan only the newest
# SHORT_SEARCH_SPAN messages. Without FTS5 (an SQLite built without it) searches scan.
SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text, content='messages', content_rowid='id', tokenize='trigram');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
END;
"""
SHORT_SEARCH_SPAN = 20_000


def _add_search_index(db: sqlite3.Connection) -> bool:
    """Make the search index (filled from the messages already there) unless it exists;
    False where this SQLite has no FTS5 trigram tokenizer."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone():
        return True
    try:
        db.execute("BEGIN IMMEDIATE")
        for statement in _statements(SEARCH_SCHEMA):
            db.execute(statement)
        db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
        db.execute("COMMIT")
        return True
    except sqlite3.OperationalError as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if "fts5" in str(exc) or "tokenize" in str(exc) or "no such module" in str(exc):
            log.warning("this SQLite has no FTS5 trigram index: searches read every message")
            return False
        raise


def _statements(script: str) -> list[str]:
    """The statements of script, triggers kept whole (sqlite3.complete_statement)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out


def _trim_conversation(db: sqlite3.Connection, conv: str, keep: int, batch: int) -> int:
    """One batch of trim_history for one conversation (uses the messages_conv index)."""
    row = db.execute("SELECT id FROM messages WHERE conv = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                     (conv, keep)).fetchone()
    if row is None:
        return 0
    return db.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE conv = ? AND id <= ?"
        " AND id NOT IN (SELECT msg_id FROM pending) ORDER BY id LIMIT ?)",
        (conv, row[0], batch)).rowcount


def conversation_key(kind: str, sender: str, target: str) -> str:
    """One key per conversation: both sides of a direct chat map to the same key."""
    if kind == "public":
        return "public"
    if kind == "room":
        return "room:" + target.lower()
    a, b = sorted((sender.lower(), target.lower()))
    return f"direct:{a}:{b}"


@dataclasses.dataclass(frozen=True)
class UserRecord:
    name: str
    display: str
    pw_hash: bytes
    pw_salt: bytes
    pw_params: str
    resume_hash: bytes | None


@dataclasses.dataclass(frozen=True)
class StoredMessage:
    msg_id: int
    ts: float
    sender: str
    sender_display: str
    kind: str
    target: str
    text: str
    edited: float | None = None

    def to_dict(self) -> dict:
        return {
            "msg_id": self.msg_id, "ts": self.ts, "sender": self.sender,
            "sender_display": self.sender_display, "kind": self.kind, "target": self.target,
            "text": self.text, "edited": self.edited,
        }


READER_POOL = 3
PAGE_CACHE_KIB = 512


class NameTaken(Exception):
    pass


class StoreError(Exception):
    """A store failure worth telling the person who asked. `code` and `message` have the
    shape of a CommandError's, so the command layer can put them on the wire as they are."""

    code = "storage_error"
    disconnect = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StorageFull(StoreError):
    """The disk holding the database is full: this write was not saved (nothing acknowledged
    before it is lost, and writes work again by themselves once there is space)."""

    code = "storage_full"


class StoreDamaged(StoreError):
    """The database file cannot be used: the server must not start on it."""

    code = "storage_damaged"


FULL_MESSAGE = ("The server's disk is full; this was not saved. Try again later "
                "(the server's administrator needs to free some disk space).")
WRITE_FAILED_MESSAGE = "The server could not save this ({}); try again later."

PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def _is_full(exc: BaseException) -> bool:
    return (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "disk is full" in str(exc))


def _as_store_error(exc: BaseException) -> BaseException:
    """What a job's caller gets for an exception: sqlite errors become StoreErrors in words
    (StorageFull for a full disk); the job's own exceptions (NameTaken...) stay as they are."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        err = StorageFull(FULL_MESSAGE) if _is_full(exc) else \
            StoreError(WRITE_FAILED_MESSAGE.format(exc))
        err.__cause__ = exc
        return err
    return exc


def _rollback(db: sqlite3.Connection) -> None:
    """ROLLBACK that cannot fail: after SQLITE_FULL SQLite may have rolled back already."""
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("store writer: rollback failed: %s", exc)


def make_private(path: Path, mode: int) -> None:
    """chmod, whatever the umask was when path was made; a path that is not ours (chmod
    refused) only gets a warning."""
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private (mode %o): %s", path, mode, exc)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The data dir holds password hashes, private messages and the TLS key: the owner's
        # alone, which also covers files other parts of the server create in it.
        make_private(path.parent, PRIVATE_DIR)
        self._create_private(path)
        connections: list[sqlite3.Connection] = []
        try:
            db = self._connect()
            connections.append(db)
            db.executescript(SCHEMA)
            _add_missing_columns(db)
            self.indexed_search = _add_search_index(db)
            db.commit()
            for _ in range(READER_POOL - 1):
                connections.append(self._connect())
            self._load(db)
        except sqlite3.Error as exc:
            for c in connections:
                c.close()
            if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_NOTADB,
                                                          sqlite3.SQLITE_CORRUPT):
                raise StoreDamaged(
                    f"{path} is damaged ({exc}): restore it from a backup, or move it aside "
                    "to start with an empty one (its accounts and history are then gone)"
                ) from exc
            if _is_full(exc):
                raise StorageFull(f"cannot start: the disk holding {path} is full") from exc
            raise StoreError(f"cannot open {path}: {exc}") from exc
        for suffix in ("-wal", "-shm"):  # SQLite copies the database's mode; made sure here
            make_private(path.with_name(path.name + suffix), PRIVATE_FILE)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        for c in connections:
            self._readers.put(c)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    @staticmethod
    def _create_private(path: Path) -> None:
        """Make the database file 0600 before SQLite opens it (SQLite gives the -wal and -shm
        files the same mode). An existing empty file is refused: SQLite would silently treat
        it as a new database, and an empty parley.sqlite3 means something went wrong."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
            except FileExistsError:
                pass  # made this instant by someone else: checked by SQLite below
            except OSError as exc:
                raise StoreError(f"cannot create {path}: {exc.strerror}") from exc
        else:
            if size == 0 and not path.with_name(path.name + "-wal").exists():
                raise StoreDamaged(
                    f"{path} is empty (0 bytes), so it holds no accounts or history: "
                    "delete it to start fresh, or restore it from a backup")
        make_private(path, PRIVATE_FILE)

    def _load(self, db: sqlite3.Connection) -> None:
        """What is kept in memory, read once at start."""
        # Who has stored direct messages waiting, so a login (a thousand at the start of a
        # class) looks them up only when there are some. Changed by the writer thread alone,
        # after the commit, in commit order (see _on_commit).
        self._pending_users = {key for (key,) in db.execute("SELECT DISTINCT user_key FROM pending")}
        self._on_commit: list = []  # callables a job adds, run once its batch is committed
        # Every account, in memory: each login (a class logs in at once) and each direct
        # message looks one up. Loaded here; changed by the writer thread after commits.
        self._users = {row[0].lower(): UserRecord(*row) for row in db.execute(
            "SELECT name, display, pw_hash, pw_salt, pw_params, resume_hash FROM users")}
        # Accounts whose password an administrator reset: their owner should choose a new one.
        self._temporary = {key for (key,) in db.execute("SELECT name_key FROM temporary_passwords")}

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # 512 KiB of page cache per connection, not SQLite's 2 MiB: four connections would
        # otherwise grow by 8 MiB as the history grows, and the OS caches the file anyway.
        db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        return db

    @contextlib.contextmanager
    def _reader(self):
        db = self._readers.get()
        try:
            yield db
        finally:
            self._readers.put(db)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._reader() as db:
            return db.execute(sql, args).fetchall()

    # ------------------------------------------------------------ group-committing writer

    def _write(self, fn) -> object:
        """Run fn(db) inside the writer's next transaction; return its result once committed."""
        fut: Future = Future()
        self._jobs.put((fn, fut))
        return fut.result()

    def _write_loop(self) -> None:
        """The writer thread. It must outlive every failure: a dead writer would leave every
        later write (sends, logins, registrations) waiting forever."""
        db = self._connect()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < 500:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            try:
                results = self._run_batch(db, batch)
            except BaseException as exc:  # a bug here must not end the thread; fail the batch
                log.exception("store writer: a batch failed")
                self._on_commit.clear()
                _rollback(db)
                results = [(fut, None, _as_store_error(exc)) for _fn, fut in batch]
            for fut, value, exc in results:
                if fut.done():
                    continue
                if exc is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(exc)
        db.close()

    def _run_batch(self, db: sqlite3.Connection, batch: list) -> list:
        """Run the jobs in one transaction: (future, result, exception) for each. A job's
        exception fails that job alone (its savepoint is rolled back); a failure that ends
        the whole transaction (a full disk while writing, a failed COMMIT) fails every job
        whose writes it took along, so nothing is acknowledged that was not saved."""
        results: list = []
        done: list = []  # jobs of the open transaction that succeeded: (future, result, hooks)
        for fn, fut in batch:
            if not db.in_transaction:
                try:
                    db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    results.append((fut, None, _as_store_error(exc)))
                    continue
            db.execute("SAVEPOINT job")
            hooks_before = len(self._on_commit)
            try:
                value = fn(db)
                db.execute("RELEASE job")
            except Exception as exc:  # handed to the caller, who reports it
                del self._on_commit[hooks_before:]
                results.append((fut, None, _as_store_error(exc)))
                try:
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                except sqlite3.Error:
                    pass  # SQLite ended the transaction itself (a full disk, an I/O error)
                if not db.in_transaction:  # the jobs before this one were rolled back too
                    lost = _as_store_error(exc)
                    results += [(f, None, lost) for f, _v in done]
                    done.clear()
                    self._on_commit.clear()
                continue
            done.append((fut, value))
        if db.in_transaction:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                lost = _as_store_error(exc)
                results += [(f, None, lost) for f, _v in done]
                done.clear()
                self._on_commit.clear()
                if isinstance(lost, StorageFull):
                    log.warning("the disk holding %s is full: %d write(s) refused",
                                self.path, len(batch))
                else:
                    log.error("cannot commit to %s: %s", self.path, exc)
        hooks, self._on_commit = self._on_commit, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("store writer: an after-commit step failed")
        results += [(f, v, None) for f, v in done]
        return results

    def close(self) -> None:
        self._jobs.put(None)
        self._writer.join(timeout=10)
        for _ in range(READER_POOL):
            self._readers.get(timeout=5).close()

    # ------------------------------------------------------------ accounts

    def create_user(self, name: str, pw_hash: bytes, salt: bytes, params: str) -> None:
        def fn(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO users(name_key, name, display, pw_hash, pw_salt, pw_params, created)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (name.lower(), name, name, pw_hash, salt, params, time.time()),
                )
            except sqlite3.IntegrityError:
                raise NameTaken(name) from None
            record = UserRecord(name, name, pw_hash, salt, params, None)
            self._on_commit.append(lambda: self._users.__setitem__(name.lower(), record))

        self._write(fn)

    def get_user(self, name: str) -> UserRecord | None:
        return self._users.get(name.lower())

    def _update_user(self, name: str, **changes) -> None:
        """Writer thread, after a commit: the in-memory copy follows the table."""
        key = name.lower()
        if key in self._users:
            self._users[key] = dataclasses.replace(self._users[key], **changes)

    def set_display(self, name: str, display: str) -> None:
        def fn(db: sqlite3.Connection) -> None:
            try:
                db.execute("UPDATE users SET display = ? WHERE name_key = ?", (display, name.lower()))
            except sqlite3.IntegrityError:
                raise NameTaken(display) from None
            self._on_commit.append(lambda: self._update_user(name, display=display))

        self._write(fn)

    def set_resume_hash(self, name: str, resume_hash: bytes) -> None:
        def fn(db: sqlite3.Connection) -> None:
            db.execute("UPDATE users SET resume_hash = ? WHERE name_key = ?",
                       (resume_hash, name.lower()))
            self._on_commit.append(lambda: self._update_user(name, resume_hash=resume_hash))

        self._write(fn)

    def set_password(self, name: str, pw_hash: bytes, salt: bytes, params: str,
                     temporary: bool = False) -> None:
        """A new password also voids the reconnect token: whoever held it must log in again.
        temporary: an administrator's reset, which its owner should replace."""
        key = name.lower()

        def fn(db: sqlite3.Connection) -> None:
            db.execute("UPDATE users SET pw_hash = ?, pw_salt = ?, pw_params = ?, resume_hash = NULL"
                       " WHERE name_key = ?", (pw_hash, salt, params, key))
            db.execute("INSERT OR IGNORE INTO temporary_passwords(name_key) VALUES (?)" if temporary
                       else "DELETE FROM temporary_passwords WHERE name_key = ?", (key,))
            self._on_commit.append(lambda: self._update_user(
                name, pw_hash=pw_hash, pw_salt=salt, pw_params=params, resume_hash=None))
            self._on_commit.append(lambda: (self._temporary.add if temporary
                                            else self._temporary.discard)(key))

        self._write(fn)

    def has_temporary_password(self, name: str) -> bool:
        return name.lower() in self._temporary

    def all_users(self) -> list[tuple[str, str]]:
        return self._read("SELECT name, display FROM users ORDER BY name_key")

    # ------------------------------------------------------------ messages

    def add_message(self, ts: float, sender: str, sender_display: str, kind: str, target: str,
                    text: str, pending_for: str | None = None) -> StoredMessage:
        conv = conversation_key(kind, sender, target)

        def fn(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO messages(ts, sender, sender_display, kind, target, conv, text)"
                " VALUES (?,?,?,?,?,?,?)", (ts, sender, sender_display, kind, target, conv, text))
            if pending_for is not None:
                db.execute("INSERT INTO pending(user_key, msg_id) VALUES (?,?)",
                           (pending_for.lower(), cur.lastrowid))
                self._on_commit.append(lambda: self._pending_users.add(pending_for.lower()))
            return cur.lastrowid

        msg_id = self._write(fn)
        return StoredMessage(msg_id, ts, sender, sender_display, kind, target, text)

    def history(self, conv: str, limit: int, before: int | None) -> list[StoredMessage]:
        rows = self._read(
            "SELECT id, ts, sender, sender_display, kind, target, text, edited FROM messages"
            " WHERE conv = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (conv, before if before is not None else 2**62, limit))
        return [StoredMessage(*r) for r in reversed(rows)]

    def search(self, words: str, user: str, rooms: list[str], limit: int) -> list[StoredMessage]:
        """Messages containing words (case-insensitive for ASCII letters), newest first, among
        what user can read: public, those rooms (conversation keys), their direct ones."""
        pattern = "%" + words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        key = user.lower()
        marks = ",".join("?" * len(rooms))
        readable = ("(m.conv = 'public'" + (f" OR m.conv IN ({marks})" if rooms else "")
                    + " OR (m.kind = 'direct' AND (lower(m.sender) = ? OR lower(m.target) = ?)))")
        columns = "m.id, m.ts, m.sender, m.sender_display, m.kind, m.target, m.text, m.edited"
        if self.indexed_search and len(words) >= 3:
            # The index finds the candidates newest first (a phrase of trigrams matches any
            # substring, in any case); LIKE keeps the exact meaning: a literal substring, ASCII
            # letters in either case. (LIKE ... ESCAPE on the index itself would scan it.)
            sql = (f"SELECT {columns} FROM messages_fts f JOIN messages m ON m.id = f.rowid"
                   " WHERE messages_fts MATCH ? AND m.text LIKE ? ESCAPE '\\' AND "
                   + readable + " ORDER BY f.rowid DESC LIMIT ?")
            phrase = '"' + words.replace('"', '""') + '"'  # one literal phrase, no operators
            args: tuple = (phrase, pattern, *rooms, key, key, limit)
        else:
            sql = (f"SELECT {columns} FROM messages m WHERE m.id > (SELECT coalesce(max(id), 0)"
                   " FROM messages) - ? AND m.text LIKE ? ESCAPE '\\' AND " + readable
                   + " ORDER BY m.id DESC LIMIT ?")
            span = SHORT_SEARCH_SPAN if self.indexed_search else 2**62
            args = (span, pattern, *rooms, key, key, limit)
        return [StoredMessage(*r) for r in self._read(sql, args)]

    def pending_for(self, user: str) -> list[StoredMessage]:
        """Stored direct messages for user, oldest first. Kept until clear_pending (the client's
        acknowledgement)."""
        if user.lower() not in self._pending_users:
            return []
        rows = self._read(
            "SELECT m.id, m.ts, m.sender, m.sender_display, m.kind, m.target, m.text, m.edited"
            " FROM pending p JOIN messages m ON m.id = p.msg_id WHERE p.user_key = ?"
            " ORDER BY m.id", (user.lower(),))
        return [StoredMessage(*r) for r in rows]

    def clear_pending(self, user: str, upto_msg_id: int) -> None:
        """Forget user's stored messages up to upto_msg_id (the client has them)."""
        key = user.lower()
        if key not in self._pending_users:
            return  # nothing stored: no write

        def fn(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM pending WHERE user_key = ? AND msg_id <= ?", (key, upto_msg_id))
            if db.execute("SELECT 1 FROM pending WHERE user_key = ? LIMIT 1", (key,)).fetchone() is None:
                self._on_commit.append(lambda: self._pending_users.discard(key))

        self._write(fn)

    def get_message(self, msg_id: int) -> StoredMessage | None:
        rows = self._read("SELECT id, ts, sender, sender_display, kind, target, text, edited"
                          " FROM messages WHERE id = ?", (msg_id,))
        return StoredMessage(*rows[0]) if rows else None

    def edit_message(self, msg_id: int, text: str, edited: float) -> bool:
        return bool(self._write(lambda db: db.execute(
            "UPDATE messages SET text = ?, edited = ? WHERE id = ?",
            (text, edited, msg_id)).rowcount))

    def delete_message(self, msg_id: int) -> bool:
        """Delete one message, and its copy waiting for an offline recipient (who then never
        gets it). False if there was no such message."""
        def fn(db: sqlite3.Connection) -> bool:
            waiting = [k for (k,) in db.execute("SELECT user_key FROM pending WHERE msg_id = ?",
                                                (msg_id,))]
            db.execute("DELETE FROM pending WHERE msg_id = ?", (msg_id,))
            for key in waiting:
                if db.execute("SELECT 1 FROM pending WHERE user_key = ? LIMIT 1",
                              (key,)).fetchone() is None:
                    self._on_commit.append(lambda key=key: self._pending_users.discard(key))
            return db.execute("DELETE FROM messages WHERE id = ?", (msg_id,)).rowcount > 0

        return bool(self._write(fn))

    def purge_conversation(self, conv: str) -> int:
        """Delete a conversation's history (stored undelivered messages stay deliverable)."""
        return self._write(lambda db: db.execute(
            "DELETE FROM messages WHERE conv = ? AND id NOT IN (SELECT msg_id FROM pending)",
            (conv,)).rowcount)

    def delete_older_than(self, cutoff_ts: float) -> int:
        return self._write(lambda db: db.execute(
            "DELETE FROM messages WHERE ts < ? AND id NOT IN (SELECT msg_id FROM pending)",
            (cutoff_ts,)).rowcount)

    # ------------------------------------------------------------ moderation state

    def set_admin(self, name: str, admin: bool) -> None:
        sql = ("INSERT OR IGNORE INTO admins(name_key) VALUES (?)" if admin
               else "DELETE FROM admins WHERE name_key = ?")
        self._write(lambda db: db.execute(sql, (name.lower(),)))

    def admins(self) -> set[str]:
        """Every admin's name key."""
        return {key for (key,) in self._read("SELECT name_key FROM admins")}

    def set_ban(self, kind: str, value: str, until: float | None, reason: str, by: str) -> None:
        self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO bans(kind, value, until, reason, by) VALUES (?,?,?,?,?)",
            (kind, value.lower(), until, reason, by)))

    def lift_ban(self, kind: str, value: str) -> bool:
        return bool(self._write(lambda db: db.execute(
            "DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value.lower())).rowcount))

    def active_bans(self, now: float) -> list[tuple[str, str, float | None, str, str]]:
        return self._read("SELECT kind, value, until, reason, by FROM bans"
                          " WHERE until IS NULL OR until > ? ORDER BY kind, value", (now,))

    def set_mute(self, name: str, until: float | None, by: str) -> None:
        self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO mutes(name_key, until, by) VALUES (?,?,?)",
            (name.lower(), until, by)))

    def lift_mute(self, name: str) -> bool:
        return bool(self._write(lambda db: db.execute(
            "DELETE FROM mutes WHERE name_key = ?", (name.lower(),)).rowcount))

    def active_mutes(self, now: float) -> list[tuple[str, float | None]]:
        return self._read("SELECT name_key, until FROM mutes WHERE until IS NULL OR until > ?",
                          (now,))

    def trim_history(self, keep_per_conversation: int, batch: int = 2000) -> int:
        """Delete all but the newest keep_per_conversation messages of every conversation
        (a message still waiting for an offline recipient stays until delivered); returns
        how many went. Done as many small write jobs, so sends queue behind the trim for a
        few milliseconds at a time, never for the whole of it."""
        if keep_per_conversation < 1:
            raise ValueError("keep at least one message per conversation")
        convs = [c for (c,) in self._read("SELECT DISTINCT conv FROM messages")]
        removed = 0
        for conv in convs:
            for _ in range(1_000_000):  # bounded: each round removes a full batch or ends
                n = self._write(lambda db, conv=conv: _trim_conversation(
                    db, conv, keep_per_conversation, batch))
                removed += n
                if n < batch:
                    break
        return removed
