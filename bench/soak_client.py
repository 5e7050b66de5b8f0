"""Client side of the soak test (bench/soak.py): worker processes that each drive many simulated
users, and a junk worker that throws broken connections at the server.

Each simulated user is a real ClientSession (plus the real Upload and Download code), not a
lighter raw-protocol client. The soak is meant to find what breaks in the software people run:
the session's reader/writer/dispatcher threads, its futures and timeouts, the upload window and
the UDP download thread, and whatever TLS the session speaks by default. The price is about four
threads per user (reader, writer, event dispatcher, the user's own action thread), i.e. ~200 per
process for 50 users; at one action every 2-10 s per user that is a few percent of a core per
process, which leaves the server most of the machine.

Every chat message carries a unique integer tag ("soak:<tag> ..."). A user records what it sent
(tag, kind, target, the server's ts, when the ok arrived, whether it was stored for an offline
recipient), every tag it received, and the time intervals in which it was logged in and a member
of each room. soak.py decides from those which deliveries were owed. The interval ends are
recorded conservatively: a login starts when its ok has been read; a session or membership ends
when the logout / leave / closing barrier request is about to be sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
import logging
import os
import queue
import random
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from array import array
from collections import Counter
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from parley_client.download import part_path, state_path  # noqa: E402
from parley_client.events import Disconnected, SessionError  # noqa: E402
from parley_client.session import ClientSession  # noqa: E402
from protocol import messages as m  # noqa: E402

PASSWORD = "soak-password"
TAG_PREFIX = "soak:"
REPLY_TIMEOUT = 30.0          # a reply slower than this counts as a timeout error
DOWNLOAD_TIMEOUT = 90.0
MAX_ROOMS_PER_USER = 3
# A session closed without logout must not be taken over by its own reconnect (the server
# would carry its room memberships over); the server notices a closed socket in milliseconds.
MIN_OFFLINE = 1.0
# What a user does, with weights: mostly chat, some room traffic, a little of everything else.
ACTIONS = {"public": 18, "direct": 30, "room": 22, "join": 8, "leave": 6, "read": 8,
           "reconnect": 4, "upload": 1, "download": 1, "edit": 3, "delete": 1, "search": 1}
SESSION_HAS_TLS = "tls" in inspect.signature(ClientSession.__init__).parameters
WORDS = ("lunch", "meeting", "build", "green", "coffee", "deploy", "review", "ticket", "later",
         "ok", "thanks", "printer", "again", "friday", "ÿes", "naïve", "👋", "日本", "done")


def tag_of(text: str) -> int | None:
    head = text.split(" ", 1)[0]
    if not head.startswith(TAG_PREFIX):
        return None
    try:
        return int(head[len(TAG_PREFIX):])
    except ValueError:
        return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class WorkerPlan:
    index: int
    host: str
    port: int
    tls: bool | None            # None: do not pass tls= (the session's default)
    users: list[str]
    all_users: list[str]
    rooms: list[str]
    files: dict[str, str]       # the server's shared files: name -> sha256
    scratch: str                # this worker's directory for upload sources and downloads
    seed: int
    min_gap: float = 2.0
    max_gap: float = 10.0
    download_slots: int = 1     # concurrent downloads per process (they are CPU-heavy)
    hard_deadline: float = 0.0  # time.time() after which the process exits whatever happens


@dataclass
class UserRecord:
    """Everything soak.py needs from one user; plain data so it pickles cheaply."""
    user: str
    sessions: list = field(default_factory=list)     # (start, end, graceful)
    memberships: list = field(default_factory=list)  # (room, start, end)
    sent: list = field(default_factory=list)         # (tag, kind, target, ts, ack, stored)
    unconfirmed: list = field(default_factory=list)  # tags whose send outcome is unknown
    received: array = field(default_factory=lambda: array("q"))
    delayed: int = 0
    foreign: int = 0                                 # message events without a soak tag
    counters: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # (what, code) -> count
    unexpected: list = field(default_factory=list)   # reasons of disconnects we did not cause
    fatal: str | None = None


class SimUser:
    def __init__(self, plan: WorkerPlan, name: str, tags, dl_slots: threading.Semaphore,
                 stop: threading.Event) -> None:
        self.plan, self.name, self.tags = plan, name, tags
        self.rng = random.Random(f"{plan.seed}-{name}")
        self.dl_slots, self.stop = dl_slots, stop
        self.rec = UserRecord(name)
        self.session: ClientSession | None = None
        self.logged_in = False
        self.session_start = 0.0
        self.token: str | None = None
        self.member: dict[str, float] = {}   # room -> join time (while logged in)
        self.want: list[str] = []           # rooms to be in again after a re-login
        self._closing = False
        self._lost: str | None = None
        self._generation = 0                # which session an event came from
        self.uploads = 0
        self.actions = 0
        # Stored messages come again at the next login until a session acknowledges them
        # (one that ends right after reading them may not have): that is a copy, not a
        # duplicate delivery, so it is counted apart.
        self.delayed_seen: set[int] = set()
        self.last_sent: tuple[int, str, int] | None = None  # (tag, kind, msg_id), for edit

    # ------------------------------------------------------------------ events

    def _on_event(self, ev: object, generation: int) -> None:
        if isinstance(ev, m.ChatMessage):
            tag = tag_of(ev.text)
            if tag is None:
                self.rec.foreign += 1
            elif ev.delayed and ev.msg_id in self.delayed_seen:
                self.rec.counters["delayed_again"] += 1
            else:
                self.rec.received.append(tag)
                if ev.delayed:
                    self.rec.delayed += 1
                    self.delayed_seen.add(ev.msg_id)
        elif isinstance(ev, m.Bye):
            self.rec.counters[f"bye_{ev.code}"] += 1
        elif isinstance(ev, m.UserTyping | m.MessageEdited | m.MessageDeleted):
            self.rec.counters[f"seen_{ev.TYPE}"] += 1
        elif (isinstance(ev, Disconnected) and not self._closing
              and generation == self._generation):
            self._lost = f"{ev.code or '-'}: {ev.reason}"

    # ------------------------------------------------------------------ helpers

    def _call(self, what: str, fut, timeout: float = REPLY_TIMEOUT) -> dict | None:
        try:
            return fut.result(timeout)
        except SessionError as exc:
            self.rec.errors[(what, exc.code)] += 1
        except (TimeoutError, FutureTimeout):
            self.rec.errors[(what, "timeout")] += 1
        return None

    def _new_session(self) -> None:
        kwargs: dict = {"software": "parley-soak", "auto_reconnect": False}
        if self.plan.tls is not None and SESSION_HAS_TLS:
            kwargs["tls"] = self.plan.tls
        self._generation += 1
        self._closing = False
        self._lost = None
        generation = self._generation
        session = ClientSession(lambda ev: self._on_event(ev, generation), **kwargs)
        session.connect(self.plan.host, self.plan.port, timeout=REPLY_TIMEOUT)
        self.session = session

    def log_in(self, *, register: bool = False, rejoin: bool = True) -> None:
        if self.session is None:
            self._new_session()
        s = self.session
        if register:
            how, fut = "register", s.register(self.name, PASSWORD)
        elif self.token and self.rng.random() < 0.5:
            how, fut = "resume", s.resume(self.name, self.token)
        else:
            how, fut = "login", s.login(self.name, PASSWORD)
        result = self._call(how, fut)
        if result is None and how != "login":  # e.g. name_taken on a rerun: log in instead
            how, result = "login", self._call("login", s.login(self.name, PASSWORD))
        if result is None:
            raise RuntimeError(f"{self.name}: could not log in")
        self.rec.counters[how] += 1
        if result.get("replaced"):
            self.rec.counters["takeover"] += 1
        self.token = result.get("resume_token")
        self.session_start = time.time()
        self.logged_in = True
        if rejoin:
            for room in list(self.want):
                self._join(room)

    def end_session(self, graceful: bool) -> None:
        """Log out, or (graceful=False) make sure everything sent to us arrived, then close."""
        s = self.session
        end = time.time()
        for room, start in self.member.items():
            self.rec.memberships.append((room, start, end))
        self.member.clear()
        self.rec.sessions.append((self.session_start, end, graceful))
        self.logged_in = False
        if graceful:
            self._call("logout", s.logout())
        else:
            # The barrier: events queued for us before the server read this are read before
            # its reply, so every message acknowledged before `end` has reached us.
            self._call("barrier", s.list_rooms())
            self._close()

    def _close(self) -> None:
        if self.session is not None:
            self._closing = True
            self.session.close()
            self.session = None

    def _recover_if_lost(self) -> None:
        """A disconnect we did not ask for: record it, end the session there, come back."""
        if self._lost is None and (self.session is None or self.session.connected):
            return
        self.rec.unexpected.append(self._lost or "connection gone")
        end = time.time()
        if self.logged_in:
            for room, start in self.member.items():
                self.rec.memberships.append((room, start, end))
            self.member.clear()
            self.rec.sessions.append((self.session_start, end, False))
            self.logged_in = False
        self._close()
        if not self.stop.wait(MIN_OFFLINE):
            self.log_in()

    # ------------------------------------------------------------------ actions

    def _join(self, room: str) -> None:
        if self._call("join", self.session.join_room(room)) is not None:
            self.member[room] = time.time()
            if room not in self.want:
                self.want.append(room)

    def _leave(self, room: str) -> None:
        start = self.member.pop(room, None)
        if start is not None:
            self.rec.memberships.append((room, start, time.time()))
        with contextlib.suppress(ValueError):
            self.want.remove(room)
        self._call("leave", self.session.leave_room(room))

    def _text(self, tag: int) -> str:
        words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 30)))
        return f"{TAG_PREFIX}{tag} {words}"

    def _send(self, kind: str, target: str) -> None:
        tag = next(self.tags)
        # As a person types before sending: the notice is not waited for, errors are counted.
        self.session.typing(kind, target).add_done_callback(self._count_typing_error)
        fut = self.session.send(kind, target, self._text(tag))
        try:
            result = fut.result(REPLY_TIMEOUT)
        except SessionError as exc:
            if exc.code in ("disconnected", "not_connected", "not_sent"):
                self.rec.unconfirmed.append(tag)  # it may or may not have gone out
            self.rec.errors[(f"send_{kind}", exc.code)] += 1
            return
        except (TimeoutError, FutureTimeout):
            self.rec.unconfirmed.append(tag)
            self.rec.errors[(f"send_{kind}", "timeout")] += 1
            return
        ack = time.time()
        self.rec.sent.append((tag, kind, target, float(result["ts"]), ack,
                              bool(result.get("stored"))))
        self.last_sent = (tag, kind, int(result["msg_id"]))

    def _count_typing_error(self, fut) -> None:
        exc = fut.exception()
        if exc is not None:
            self.rec.errors[("typing", getattr(exc, "code", type(exc).__name__))] += 1

    def _edit(self) -> None:
        """Correct one's last message; its tag stays first, so a stored copy delivered later
        (with the new text) is still counted as that message."""
        if self.last_sent is None:
            return self._read()
        tag, _kind, msg_id = self.last_sent
        self._call("edit", self.session.edit_message(msg_id, self._text(tag) + " (fixed)"))

    def _delete(self) -> None:
        """Delete one's last public message: everyone online got it when it was sent (and is
        judged on that), whereas a direct one might still wait for an offline recipient."""
        if self.last_sent is None or self.last_sent[1] != "public":
            return self._read()
        msg_id = self.last_sent[2]
        self.last_sent = None
        self._call("delete", self.session.delete_message(msg_id))

    def _read(self) -> None:
        s = self.session
        what, fut = self.rng.choice([
            ("history", lambda: s.history("public", "", 50)),
            ("list_online", s.list_online), ("list_rooms", s.list_rooms),
            ("list_files", s.list_files), ("list_users", s.list_users)])
        self._call(what, fut())

    def _reconnect(self) -> None:
        graceful = self.rng.random() < 0.5
        self.rec.counters["reconnect_graceful" if graceful else "reconnect_close"] += 1
        self.end_session(graceful)
        # Offline for a while, so direct messages to us are stored and delivered at login.
        if self.stop.wait(self.rng.uniform(max(MIN_OFFLINE, 3.0), 20.0)):
            return  # the final phase logs us in again
        self.log_in()

    def _upload(self) -> None:
        size = self.rng.randint(64 << 10, 1 << 20)
        self.uploads += 1
        path = Path(self.plan.scratch) / f"up-{self.name}-{self.uploads}.bin"
        data = self.rng.randbytes(size)
        path.write_bytes(data)
        try:
            entry = self._call("upload", self.session.upload(path), timeout=120.0)
            if entry is None:
                return
            if entry.get("size") != size or entry.get("sha256") != hashlib.sha256(data).hexdigest():
                self.rec.errors[("upload", "entry_mismatch")] += 1
            else:
                self.rec.counters["upload_ok"] += 1
                self.rec.counters["upload_bytes"] += size
        finally:
            path.unlink(missing_ok=True)

    def _download(self) -> None:
        if not self.dl_slots.acquire(blocking=False):
            self.rec.counters["download_deferred"] += 1
            self._read()
            return
        name = self.rng.choice(sorted(self.plan.files))
        dest = Path(self.plan.scratch) / f"dl-{self.name}" / name
        try:
            try:
                thread = self.session.download(name, dest.parent, on_progress=lambda p: None,
                                               timeout=REPLY_TIMEOUT)
            except SessionError as exc:
                self.rec.errors[("download", exc.code)] += 1
                return
            thread.join(DOWNLOAD_TIMEOUT)
            if thread.is_alive():
                thread.cancel()
                thread.join(5.0)
                self.rec.errors[("download", "stalled")] += 1
                return
            progress = thread.progress
            if progress is None or progress.state != "done":
                state = progress.state if progress else "no_progress"
                self.rec.errors[("download", state)] += 1
                return
            if sha256_file(dest) != self.plan.files[name]:
                self.rec.errors[("download", "hash_mismatch")] += 1
                return
            self.rec.counters["download_ok"] += 1
            self.rec.counters["download_bytes"] += progress.size
            self.rec.counters[f"download_via_{progress.transport}"] += 1
        finally:
            for p in (dest, part_path(dest), state_path(dest)):
                p.unlink(missing_ok=True)
            self.dl_slots.release()

    def act(self) -> None:
        self._recover_if_lost()
        if not self.logged_in:
            return
        action = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        if action == "room" and not self.member:
            action = "join"
        if action == "join" and len(self.member) >= MAX_ROOMS_PER_USER:
            action = "leave"
        if action == "leave" and not self.member:
            action = "read"
        self.rec.counters[f"action_{action}"] += 1
        self.actions += 1
        if action == "public":
            self._send("public", "")
        elif action == "direct":
            others = [u for u in self.plan.all_users if u != self.name]
            self._send("direct", self.rng.choice(others))
        elif action == "room":
            self._send("room", self.rng.choice(sorted(self.member)))
        elif action == "join":
            self._join(self.rng.choice([r for r in self.plan.rooms if r not in self.member]))
        elif action == "leave":
            self._leave(self.rng.choice(sorted(self.member)))
        elif action == "read":
            self._read()
        elif action == "reconnect":
            self._reconnect()
        elif action == "upload":
            self._upload()
        elif action == "download":
            self._download()
        elif action == "edit":
            self._edit()
        elif action == "delete":
            self._delete()
        elif action == "search":
            self._call("search", self.session.search(self.rng.choice(WORDS[:14])))

    # ------------------------------------------------------------------ phases

    def run(self, started: queue.Queue, go: threading.Event) -> None:
        try:
            self.log_in(register=True)
        except Exception as exc:  # reported to the coordinator, which gives up
            self.rec.fatal = f"login: {exc!r}"
            started.put(False)
            return
        started.put(True)
        go.wait()
        try:
            if self.stop.wait(self.rng.uniform(0, self.plan.max_gap)):  # spread the start
                return
            while True:
                self.act()
                if self.stop.wait(self.rng.uniform(self.plan.min_gap, self.plan.max_gap)):
                    return
        except Exception as exc:  # one user's crash is reported, the others go on
            logging.exception("user %s failed", self.name)
            self.rec.fatal = repr(exc)

    def finish(self) -> None:
        """After every sender has stopped: log in (flushing stored messages), make sure all
        that was sent to us arrived, then leave the way a user does."""
        try:
            if self._lost is not None or (self.session is not None and not self.session.connected):
                self._recover_if_lost()
            if not self.logged_in:
                self.log_in(rejoin=False)
            self.end_session(graceful=self.rng.random() < 0.5)
        except Exception as exc:
            logging.exception("user %s failed to finish", self.name)
            self.rec.fatal = f"finish: {exc!r}"
        finally:
            self._close()


def _arm_deadline(hard_deadline: float) -> None:
    """Whatever happens, a soak process does not outlive the run's hard deadline."""
    if hard_deadline:
        signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
        signal.alarm(max(1, int(hard_deadline - time.time())))


def worker_main(plan: WorkerPlan, control, go, stop, final, results, progress) -> None:
    """One client process: log in plan.users, run them until `stop`, finish them on `final`."""
    _arm_deadline(plan.hard_deadline)
    logging.basicConfig(level=logging.WARNING,
                        format=f"worker{plan.index} %(levelname)s %(name)s: %(message)s")
    Path(plan.scratch).mkdir(parents=True, exist_ok=True)
    tags = itertools.count((plan.index + 1) * 10**9)
    local_go, local_stop = threading.Event(), threading.Event()
    slots = threading.Semaphore(plan.download_slots)
    users = [SimUser(plan, name, tags, slots, local_stop) for name in plan.users]
    started: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=u.run, args=(started, local_go), name=f"user-{u.name}",
                                daemon=True) for u in users]
    for t in threads:
        t.start()
    ok = 0
    for _ in users:
        with contextlib.suppress(queue.Empty):
            ok += bool(started.get(timeout=max(1.0, plan.hard_deadline - time.time())))
    control.put(("ready", plan.index, ok))
    go.wait(max(1.0, plan.hard_deadline - time.time()))
    local_go.set()

    def report_progress() -> None:
        while not local_stop.wait(2.0):
            progress[plan.index] = sum(u.actions for u in users)

    threading.Thread(target=report_progress, daemon=True).start()
    stop.wait(max(1.0, plan.hard_deadline - time.time()))
    local_stop.set()
    for t in threads:
        t.join(max(0.1, min(DOWNLOAD_TIMEOUT + 10, plan.hard_deadline - time.time())))
    stuck = [u for u, t in zip(users, threads, strict=True) if t.is_alive()]
    for u in stuck:  # still inside an action: finishing it concurrently would garble its record
        u.rec.fatal = "still busy when the run ended"
    control.put(("quiesced", plan.index, len(stuck)))
    final.wait(max(1.0, plan.hard_deadline - time.time()))
    finishers = [threading.Thread(target=u.finish, daemon=True) for u in users if u not in stuck]
    for t in finishers:
        t.start()
    for t in finishers:
        t.join(max(0.1, min(60.0, plan.hard_deadline - time.time())))
    results.put(("records", plan.index, [u.rec for u in users]))


# ---------------------------------------------------------------------- junk connections


def _frame(obj) -> bytes:
    payload = json.dumps(obj).encode()
    return struct.pack(">I", len(payload)) + payload


def _wait_close(sock: socket.socket, timeout: float) -> bool:
    """True if the server closed the connection within timeout (we read and drop its bytes)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:  # reset, or a TLS alert: closed on us either way
            return True


def _junk_once(kind: str, host: str, port: int, tls: bool, rng: random.Random) -> str:
    raw = socket.create_connection((host, port), timeout=5)
    sock = raw
    try:
        if kind == "connect_close":
            return "we_closed"
        if kind == "random_bytes":
            raw.sendall(rng.randbytes(rng.randint(1, 4096)))
            return "server_closed" if _wait_close(raw, 3.0) else "we_closed"
        if kind == "oversize_prefix":
            raw.sendall(struct.pack(">I", rng.choice([(1 << 20) + 1, 1 << 31, 2**32 - 1])) + b"{}")
            return "server_closed" if _wait_close(raw, 3.0) else "we_closed"
        if kind == "half_frame":
            raw.sendall(struct.pack(">I", 200) + b'{"type":"hello","id":1,"ver')
            return "server_closed" if _wait_close(raw, rng.uniform(0.5, 3.0)) else "we_closed"
        if kind == "zero_length":
            raw.sendall(b"\0\0\0\0")
            return "server_closed" if _wait_close(raw, 3.0) else "we_closed"
        # The rest speak enough of the protocol to get past the handshake, so under TLS they
        # need a TLS layer (any certificate: this is junk, not a client).
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw, server_hostname=host)
        if kind == "no_hello":
            sock.sendall(_frame({"type": "login", "id": 1, "username": "x", "password": "y"}))
            return "server_closed" if _wait_close(sock, 3.0) else "we_closed"
        sock.sendall(_frame({"type": "hello", "id": 1, "version": 1, "software": "junk"}))
        sock.settimeout(5)
        sock.recv(65536)  # the hello ok (or whatever the server says)
        if kind == "hello_then_garbage":
            sock.sendall(struct.pack(">I", 7) + b"{nope!}")
            return "server_closed" if _wait_close(sock, 3.0) else "we_closed"
        # hello_then_bad_message: not fatal; the server answers an error and keeps going.
        sock.sendall(_frame({"type": "send", "id": "seven", "kind": 3}))
        sock.sendall(_frame({"type": "no_such_type", "id": 2}))
        return "server_closed" if _wait_close(sock, 0.5) else "we_closed"
    finally:
        sock.close()
        if sock is not raw:
            raw.close()


JUNK_KINDS = ("connect_close", "random_bytes", "oversize_prefix", "half_frame", "zero_length",
              "no_hello", "hello_then_garbage", "hello_then_bad_message")


def junk_main(host: str, port: int, tls: bool, seed: int, rate: float, stop, results,
              hard_deadline: float) -> None:
    """Open broken connections at about `rate` per second (three at a time at most)."""
    _arm_deadline(hard_deadline)
    counts: Counter = Counter()
    lock = threading.Lock()

    def loop(n: int) -> None:
        rng = random.Random(f"{seed}-junk-{n}")
        while not stop.wait(rng.expovariate(rate / 3)):
            kind = rng.choice(JUNK_KINDS)
            try:
                outcome = _junk_once(kind, host, port, tls, rng)
            except OSError as exc:  # refused, reset during connect...: worth seeing
                outcome = f"error_{type(exc).__name__}"
            with lock:
                counts[(kind, outcome)] += 1

    threads = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, hard_deadline - time.time()))
    results.put(("junk", -1, dict(counts)))
