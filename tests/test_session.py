"""ClientSession against a real Parley server on 127.0.0.1: requests, events, keepalive,
reconnect with outbox, uploads and downloads."""

from __future__ import annotations

import hashlib
import importlib.util
import queue
import socket
import threading
import time
from concurrent.futures import CancelledError

import pytest
from serverutil import free_port, running_server
from wireclient import WireClient

import parley_client.session as session_module
from parley_client.events import (
    Connected,
    Disconnected,
    LoggedIn,
    LoggedOut,
    Reconnected,
    Reconnecting,
    SessionError,
)
from parley_client.session import ClientSession
from protocol import messages as m

WAIT = 10.0
HAVE_FILE_SHARING = importlib.util.find_spec("parley_server.transfer_service") is not None
HAVE_DOWNLOAD = importlib.util.find_spec("parley_client.download") is not None


class Recorder:
    """Collects on_event deliveries; wait_for pulls the first match (bounded)."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.seen: list[object] = []
        self.threads: set[str] = set()

    def __call__(self, event: object) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.put(event)

    def wait_for(self, predicate, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.seen):
            if predicate(ev):
                return self.seen.pop(i)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event; seen {self.seen!r}")
            try:
                ev = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(ev):
                return ev
            self.seen.append(ev)

    def wait_type(self, cls, timeout: float = WAIT):
        return self.wait_for(lambda e: isinstance(e, cls), timeout)


@pytest.fixture
def sessions():
    made: list[ClientSession] = []

    def make(**kwargs) -> tuple[ClientSession, Recorder]:
        rec = Recorder()
        s = ClientSession(rec, **kwargs)
        made.append(s)
        return s, rec

    yield make
    for s in made:
        s.close()


def logged_in(make, srv, name: str, **kwargs) -> tuple[ClientSession, Recorder]:
    s, rec = make(**kwargs)
    s.connect(srv.host, srv.port)
    s.register(name, "password-" + name).result(WAIT)
    return s, rec


def test_connect_register_and_state(tmp_path, sessions):
    with running_server(tmp_path, files=False) as srv:
        s, rec = sessions(software="parley-test/1")
        info = s.connect(srv.host, srv.port)
        assert info["server"] == "Parley" and info["version"] == 1
        assert s.connected and s.user is None
        assert rec.wait_type(Connected) == Connected(srv.host, srv.port, info)
        result = s.register("alice", "password-alice").result(WAIT)
        assert result["user"] == "alice" and result["new"] is True
        assert s.user == "alice" and s.display == "alice"  # set before the caller sees result
        assert rec.wait_type(LoggedIn) == LoggedIn("alice", "alice", True)
        assert s.rename("Alice W").result(WAIT) == {"display": "Alice W"}
        assert s.display == "Alice W"
        s.logout().result(WAIT)
        assert s.user is None
        assert rec.wait_type(LoggedOut).reason == "logged out"
        with pytest.raises(SessionError) as err:
            s.list_users().result(WAIT)
        assert err.value.code == "not_authenticated"
        assert s.login("alice", "password-alice").result(WAIT)["display"] == "Alice W"
        with pytest.raises(SessionError) as err:
            s.connect(srv.host, srv.port)
        assert err.value.code == "already_connected"
        # Every callback ran on the one dispatcher thread, never the caller's.
        assert rec.threads == {"parley-events"}


def test_messages_and_events_between_two_sessions(tmp_path, sessions):
    with running_server(tmp_path, files=False) as srv:
        alice, arec = logged_in(sessions, srv, "alice")
        bob, brec = logged_in(sessions, srv, "bob")
        p = arec.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "bob")
        assert p.online is True

        reply = alice.send("public", "", "hello all").result(WAIT)
        assert isinstance(reply["msg_id"], int)
        got = brec.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "hello all")
        assert (got.sender, got.kind, got.msg_id) == ("alice", "public", reply["msg_id"])

        bob.send("direct", "alice", "psst").result(WAIT)
        dm = arec.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "psst")
        assert (dm.kind, dm.sender, dm.target) == ("direct", "bob", "alice")

        joined = alice.join_room("lab").result(WAIT)
        assert joined["created"] is True
        bob.join_room("lab").result(WAIT)
        ev = arec.wait_for(lambda e: isinstance(e, m.RoomEvent) and e.user == "bob")
        assert (ev.room.lower(), ev.event) == ("lab", "joined")
        members = alice.room_members("lab").result(WAIT)["members"]
        assert {u["name"] for u in members} == {"alice", "bob"}
        bob.send("room", "lab", "in the lab").result(WAIT)
        rm = arec.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "in the lab")
        assert rm.kind == "room"

        hist = alice.history("public", "").result(WAIT)["messages"]
        assert [h["text"] for h in hist] == ["hello all"]
        online = {u["name"] for u in alice.list_online().result(WAIT)["users"]}
        assert online == {"alice", "bob"}

        with pytest.raises(SessionError) as err:
            alice.send("direct", "nobody", "x").result(WAIT)
        assert err.value.code == "no_such_user" and "nobody" in err.value.message

        bob.close()
        gone = arec.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "bob")
        assert gone.online is False
        assert brec.wait_type(Disconnected) == Disconnected("closed", None, False)
        assert not bob.connected
        with pytest.raises(SessionError) as err:
            bob.send("public", "", "after close").result(WAIT)
        assert err.value.code == "not_connected"


def test_connect_failures(tmp_path, sessions, monkeypatch):
    s, rec = sessions()
    with pytest.raises(SessionError) as err:
        s.connect("127.0.0.1", free_port(), timeout=2)
    assert err.value.code == "unreachable"
    assert not s.connected
    with running_server(tmp_path, files=False) as srv:
        monkeypatch.setattr(session_module, "PROTOCOL_VERSION", 99)
        with pytest.raises(SessionError) as err:
            s.connect(srv.host, srv.port)
        assert err.value.code == "version_mismatch"
        assert not s.connected
        monkeypatch.setattr(session_module, "PROTOCOL_VERSION", 1)
        assert s.connect(srv.host, srv.port)["version"] == 1  # the failure left no residue
    assert rec.wait_type(Connected).port == srv.port


def test_ping_is_answered_while_silent_clients_are_dropped(tmp_path, sessions):
    with running_server(tmp_path, files=False, keepalive_after=0.2, dead_after=1.0,
                       poll_interval=0.05) as srv:
        s, rec = logged_in(sessions, srv, "alice")
        # A bare client that connected after the session and never answers pings is dropped;
        # by then the session has been silent at least as long, so only its pongs kept it.
        with WireClient(srv.host, srv.port) as mute:
            mute.hello()
            mute.sock.settimeout(WAIT)
            frames = b""
            while chunk := mute.sock.recv(65536):
                frames += chunk
            assert b'"ping"' in frames and b'"bye"' in frames
        assert s.connected
        assert s.list_users().result(WAIT)["users"][0]["name"] == "alice"
        assert all(not isinstance(e, Disconnected) for e in rec.seen)
        assert rec.events.empty() or all(
            not isinstance(e, Disconnected) for e in list(rec.events.queue))


def test_pending_futures_fail_on_disconnect_and_resume_logs_back_in(tmp_path, sessions):
    with running_server(tmp_path, files=False) as srv:
        s, rec = logged_in(sessions, srv, "alice", auto_reconnect=True)
        watcher, wrec = logged_in(sessions, srv, "bob")
        # Holding the server's lock keeps list_users unanswered: it is surely pending when
        # the network "fails" (we cut our own socket, as a dropped link would).
        with srv.server.lock:
            pending = s.list_users()
            s._link.sock.shutdown(socket.SHUT_RDWR)
            with pytest.raises(SessionError) as err:
                pending.result(WAIT)
            assert err.value.code == "disconnected"
        lost = rec.wait_type(Disconnected)
        assert lost.will_reconnect is True
        assert rec.wait_type(Reconnecting).attempt == 1
        assert rec.wait_type(Reconnected) == Reconnected("alice")
        assert s.connected and s.user == "alice"
        s.send("public", "", "back again").result(WAIT)
        got = wrec.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "back again")
        assert got.sender == "alice"


def test_reconnect_after_server_restart_flushes_outbox(tmp_path, sessions):
    port = free_port()
    data_dir = tmp_path / "data"
    with running_server(tmp_path, files=False, port=port, data_dir=data_dir) as srv:
        s, rec = logged_in(sessions, srv, "alice", auto_reconnect=True)
        logged_in(sessions, srv, "bob")[0].close()  # bob exists, offline
        srv.stop()
        lost = rec.wait_type(Disconnected)
        assert lost.will_reconnect is True and lost.code == "shutdown"
        assert not s.connected and s.reconnecting
        queued = s.send("direct", "bob", "sent while away")
        queued_public = s.send("public", "", "second")
        other = s.list_users()
        with pytest.raises(SessionError) as err:
            other.result(WAIT)
        assert err.value.code == "not_connected"
        assert not queued.done()
        rec.wait_type(Reconnecting)  # at least one attempt failed or is scheduled
    with running_server(tmp_path, files=False, port=port, data_dir=data_dir) as srv:
        assert rec.wait_for(lambda e: isinstance(e, Reconnected), timeout=20) == \
            Reconnected("alice")
        assert queued.result(WAIT)["stored"] is True  # bob is offline: kept for him
        second = queued_public.result(WAIT)
        assert second["msg_id"] > 0
        bob, brec = sessions()
        bob.connect(srv.host, srv.port)
        bob.login("bob", "password-bob").result(WAIT)
        late = brec.wait_for(lambda e: isinstance(e, m.ChatMessage))
        assert (late.text, late.delayed) == ("sent while away", True)


def test_session_acknowledges_stored_messages_so_they_come_once(tmp_path, sessions):
    with running_server(tmp_path, files=False) as srv:
        bob, _ = logged_in(sessions, srv, "bob")
        bob.close()
        alice, _ = logged_in(sessions, srv, "alice")
        for text in ("one", "two"):
            assert alice.send("direct", "bob", text).result(WAIT)["stored"]
        assert len(srv.server.store.pending_for("bob")) == 2
        bob, rec = sessions()
        bob.connect(srv.host, srv.port)
        bob.login("bob", "password-bob").result(WAIT)
        got = [rec.wait_for(lambda e: isinstance(e, m.ChatMessage)) for _ in range(2)]
        assert [(e.text, e.delayed) for e in got] == [("one", True), ("two", True)]
        deadline = time.monotonic() + WAIT
        while srv.server.store.pending_for("bob"):  # the acknowledgement follows the batch
            assert time.monotonic() < deadline, "the session never acknowledged"
            time.sleep(0.02)  # polling interval of a bounded wait


def test_refused_resume_leaves_session_connected_but_logged_out(tmp_path, sessions):
    port = free_port()
    with running_server(tmp_path / "one", files=False, port=port) as srv:
        s, rec = logged_in(sessions, srv, "alice", auto_reconnect=True)
        assert s.resume_token
    assert rec.wait_type(Disconnected).will_reconnect is True
    queued = s.send("public", "", "to a server that forgot me")
    # A different server (fresh data dir) on the same port does not know alice's token.
    # It keeps the first one's certificate: another certificate would be refused (the pin).
    tls = srv.server.tls
    with running_server(tmp_path / "two", files=False, port=port, tls_cert=tls.cert_path,
                        tls_key=tls.key_path):
        assert rec.wait_type(LoggedOut).reason.startswith("logging in again was refused")
        assert rec.wait_type(Reconnected) == Reconnected(None)
        with pytest.raises(SessionError) as err:
            queued.result(WAIT)
        assert err.value.code == "not_sent"
        assert s.connected and s.user is None
        s.register("alice", "another-pass").result(WAIT)
        assert s.user == "alice"


def test_outbox_fails_when_closed_before_reconnect(tmp_path, sessions):
    with running_server(tmp_path, files=False) as srv:
        s, rec = logged_in(sessions, srv, "alice", auto_reconnect=True)
    assert rec.wait_type(Disconnected).will_reconnect is True
    queued = s.send("public", "", "never")
    s.close()
    with pytest.raises(SessionError) as err:
        queued.result(WAIT)
    assert err.value.code == "not_sent"
    assert not s.reconnecting and not s.connected


def test_no_reconnect_without_auto_or_after_logout(tmp_path, sessions):
    with running_server(tmp_path, files=False) as srv:
        plain, prec = logged_in(sessions, srv, "alice")
        out, orec = logged_in(sessions, srv, "bob", auto_reconnect=True)
        out.logout().result(WAIT)
        out._link.sock.shutdown(socket.SHUT_RDWR)  # the link drops after the user logged out
        assert orec.wait_type(Disconnected).will_reconnect is False
        assert not out.reconnecting
    assert prec.wait_type(Disconnected).will_reconnect is False
    assert plain.user is None and not plain.connected


@pytest.mark.skipif(not HAVE_FILE_SHARING, reason="server file sharing not written yet")
def test_upload_interleaves_chat_and_lands_in_library(tmp_path, sessions):
    with running_server(tmp_path) as srv:
        s, rec = logged_in(sessions, srv, "alice")
        data = bytes(range(256)) * (8 * 4096)  # 8 MiB
        path = tmp_path / "big.bin"
        path.write_bytes(data)
        progress: list[tuple[int, int]] = []
        first = threading.Event()
        sent_reply_at: list[float] = []

        def on_progress(sent: int, total: int) -> None:
            progress.append((sent, total))
            if sent > 0:
                first.set()

        fut = s.upload(path, on_progress)
        assert first.wait(WAIT)
        chat = s.send("public", "", "during upload")
        chat.add_done_callback(lambda f: sent_reply_at.append(time.monotonic()))
        entry = fut.result(30)
        done_at = time.monotonic()
        assert chat.result(WAIT)["msg_id"] > 0
        assert sent_reply_at[0] <= done_at
        assert entry["name"] == "big.bin" and entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert (srv.files_dir / "big.bin").read_bytes() == data
        assert progress[-1] == (len(data), len(data))
        assert [p[0] for p in progress] == sorted(p[0] for p in progress)
        added = rec.wait_for(lambda e: isinstance(e, m.FileAdded))
        assert added.file["name"] == "big.bin"
        names = [f["name"] for f in s.list_files().result(WAIT)["files"]]
        assert "big.bin" in names


@pytest.mark.skipif(not HAVE_FILE_SHARING, reason="server file sharing not written yet")
def test_upload_cancel_leaves_nothing(tmp_path, sessions):
    with running_server(tmp_path) as srv:
        s, _rec = logged_in(sessions, srv, "alice")
        path = tmp_path / "big.bin"
        path.write_bytes(b"z" * (16 << 20))
        started = threading.Event()
        fut = s.upload(path, lambda sent, total: sent and started.set())
        assert started.wait(WAIT)
        assert fut.cancel()
        with pytest.raises(CancelledError):
            fut.result(WAIT)
        # The chat connection still works and the library never shows the file.
        names = [f["name"] for f in s.list_files().result(WAIT)["files"]]
        assert "big.bin" not in names
        assert not (srv.files_dir / "big.bin").exists()

        again = threading.Event()
        fut = s.upload(path, lambda sent, total: sent and again.set())
        assert again.wait(WAIT)
        assert s.cancel_upload(fut.upload_id)
        with pytest.raises(SessionError) as err:
            fut.result(WAIT)
        assert err.value.code == "cancelled"
        assert not s.cancel_upload(fut.upload_id)  # forgotten once finished
        assert s.send("public", "", "still fine").result(WAIT)["msg_id"] > 0


@pytest.mark.skipif(not (HAVE_FILE_SHARING and HAVE_DOWNLOAD),
                    reason="file sharing or the download thread not written yet")
def test_download_verifies(tmp_path, sessions):
    with running_server(tmp_path) as srv:
        data = bytes(range(256)) * 4096  # 1 MiB
        (srv.files_dir / "doc.bin").write_bytes(data)
        s, rec = logged_in(sessions, srv, "alice")
        rec.wait_for(lambda e: isinstance(e, m.FileAdded) and e.file["name"] == "doc.bin")
        states: list[str] = []
        dest = tmp_path / "dl"
        dest.mkdir()
        thread = s.download("doc.bin", dest, lambda p: states.append(p.state))
        thread.join(30)
        assert not thread.is_alive()
        assert states[-1] == "done", states
        assert (dest / "doc.bin").read_bytes() == data
        with pytest.raises(SessionError) as err:
            s.download("../etc/passwd", dest, lambda p: None)
        assert err.value.code == "bad_path"


@pytest.mark.skipif(not HAVE_FILE_SHARING, reason="server file sharing not written yet")
def test_upload_resumes_after_the_connection_drops(tmp_path, sessions):
    """The server's end of the connection is cut a quarter of the way in: the session
    reconnects by itself, the upload begins again and carries on from what the server
    kept, never from zero."""
    with running_server(tmp_path) as srv:
        s, rec = logged_in(sessions, srv, "alice", auto_reconnect=True)
        data = bytes(range(256)) * (4 * 4096)  # 4 MiB
        path = tmp_path / "lecture.bin"
        path.write_bytes(data)
        progress: list[int] = []
        cut_at: list[int] = []

        def on_progress(sent: int, total: int) -> None:
            progress.append(sent)
            if not cut_at and sent >= total // 4:
                cut_at.append(len(progress))  # the network fails, here and now
                srv.server.get_client("alice").sock.shutdown(socket.SHUT_RDWR)

        entry = s.upload(path, on_progress).result(60)
        assert entry["name"] == "lecture.bin"
        assert (srv.files_dir / "lecture.bin").read_bytes() == data
        assert rec.wait_type(Reconnected).user == "alice"
        after = progress[cut_at[0]:]
        assert after and min(after) > 0 and after[-1] == len(data)


def test_after_a_password_change_the_session_reconnects_with_the_new_token(tmp_path, sessions):
    """The change voids the token the session had; it must keep the one the reply carries."""
    with running_server(tmp_path, files=False) as srv:
        s, rec = logged_in(sessions, srv, "alice", auto_reconnect=True)
        before = s.resume_token
        s.change_password("password-alice", "changed-pw").result(WAIT)
        assert s.resume_token not in (None, before)
        s._link.sock.shutdown(socket.SHUT_RDWR)  # the network drops
        assert rec.wait_type(Disconnected).will_reconnect is True
        assert rec.wait_type(Reconnected) == Reconnected("alice")
        assert s.send("public", "", "back").result(WAIT)["msg_id"] > 0


def test_a_password_reset_by_an_admin_logs_out_without_reconnecting(tmp_path, sessions):
    from parley_server.policy import Policy

    with running_server(tmp_path, files=False, policy=Policy(admins=["teacher"])) as srv:
        s, rec = logged_in(sessions, srv, "bob", auto_reconnect=True)
        teacher, _ = logged_in(sessions, srv, "teacher")
        teacher.moderate("reset_password", "bob").result(WAIT)
        lost = rec.wait_type(Disconnected)
        assert (lost.code, lost.will_reconnect) == ("password_reset", False)
        assert "teacher" in lost.reason
