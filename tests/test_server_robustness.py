"""Bad input, slow clients, races, crashes and restarts: nobody else is hurt, nothing is lost."""

from __future__ import annotations

import platform
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
from serverutil import free_port, running_server, server_process, start_server_process
from wireclient import ReplyError, WireClient

from protocol import encode_frame
from protocol import messages as m


def is_msg(text):
    return lambda e: isinstance(e, m.ChatMessage) and e.text == text


def assert_dropped(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the server closes; returns what it said last."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server did not close the connection")


@pytest.mark.parametrize("junk", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                    # length prefix of ~1.2 GB
    struct.pack(">I", 0xFFFFFFFF) + b"x" * 100,             # oversize prefix
    struct.pack(">I", (1 << 20) + 1),                       # just over the 1 MiB limit
    encode_frame(b"\xff\xfe not utf-8"),                     # not UTF-8
    encode_frame(b"[1, 2, 3]"),                              # JSON but not an object
])
def test_junk_drops_only_the_sender(tmp_path, junk):
    with running_server(tmp_path, files=False) as srv, \
            WireClient(srv.host, srv.port) as a, WireClient(srv.host, srv.port) as b:
        a.register("alice")
        b.register("bob")
        with srv.connect(timeout=5) as bad:  # TLS-wrapped: the junk reaches the framing
            bad.sendall(junk)
            said = assert_dropped(bad)
        assert b'"type":"bye"' in said and b"protocol_error" in said
        a.call(m.Send, kind="public", target="", text="still here")
        assert b.wait_for(is_msg("still here")).sender == "alice"


def test_silent_connections_and_half_frames_do_not_block_others(tmp_path):
    with running_server(tmp_path, files=False) as srv:
        idle = [srv.connect(timeout=None) for _ in range(20)]
        idle[0].sendall(struct.pack(">I", 1000) + b"{")  # a frame that never completes
        with WireClient(srv.host, srv.port) as a, WireClient(srv.host, srv.port) as b:
            a.register("alice")
            b.register("bob")
            a.call(m.Send, kind="public", target="", text="unaffected")
            b.wait_for(is_msg("unaffected"))
        for s in idle:
            s.close()


def test_client_that_stops_reading_is_dropped_and_others_get_everything(tmp_path):
    with running_server(tmp_path, files=False, sendq_limit=256 * 1024) as srv, \
            WireClient(srv.host, srv.port) as sender, WireClient(srv.host, srv.port) as other:
        sender.register("alice")
        other.register("bob")
        stuck = WireClient(srv.host, srv.port)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.register("stuck")
        text = "x" * 3990  # 4 MB in all: more than the kernel buffers plus the SendQ
        got: list[int] = []
        done = threading.Event()

        def read_all():
            while len(got) < 1000:
                ev = other.wait_for(lambda e: isinstance(e, m.ChatMessage), timeout=20)
                got.append(int(ev.text.split()[0]))
            done.set()

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        start = time.monotonic()
        for i in range(1000):
            sender.call(m.Send, kind="public", target="", text=f"{i} {text}")
        assert done.wait(20), f"bob got only {len(got)} of 1000"
        elapsed = time.monotonic() - start
        assert got == list(range(1000))  # all of them, in order, no duplicates
        assert elapsed < 15
        gone = sender.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "stuck"
                               and not e.online, timeout=20)
        assert gone.user == "stuck"
        stuck.close()


def test_twenty_concurrent_registrations_of_one_name_exactly_one_wins(tmp_path):
    with running_server(tmp_path, files=False) as srv:
        clients = [WireClient(srv.host, srv.port) for _ in range(20)]
        for c in clients:
            c.hello()
        barrier = threading.Barrier(20)
        outcomes: list[str] = []
        lock = threading.Lock()

        def attempt(c: WireClient, i: int):
            barrier.wait(timeout=10)
            try:
                c.call(m.Register, username="popular", password=f"password-{i}")
                result = "ok"
            except ReplyError as exc:
                result = exc.code
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=attempt, args=(c, i)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes) == ["name_taken"] * 19 + ["ok"]
        for c in clients:
            c.close()


def test_accounts_and_history_survive_restart_and_no_plaintext_password(tmp_path):
    port = free_port()
    password = "Plain-Text-Canary-91"
    with running_server(tmp_path, files=False, port=port) as srv, \
            WireClient(srv.host, srv.port) as a:
        a.register("alice", password)
        a.call(m.Send, kind="public", target="", text="remember me")
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    with running_server(tmp_path, files=False, port=port) as srv, \
            WireClient(srv.host, srv.port) as a:
        a.login("alice", password)
        history = a.call(m.History, kind="public", target="")["messages"]
        assert [x["text"] for x in history] == ["remember me"]


def test_what_logins_read_from_memory_is_reloaded_after_a_restart(tmp_path):
    """Accounts, reconnect tokens, display names and who has messages waiting are kept in
    memory for speed: a restarted server must know them all from the database."""
    port = free_port()
    with running_server(tmp_path, files=False, port=port) as srv:
        with WireClient(srv.host, srv.port) as b:
            b.register("bob")
            b.call(m.Rename, display="Bobby")
        with WireClient(srv.host, srv.port) as a:
            token = a.register("alice")["resume_token"]
            assert a.call(m.Send, kind="direct", target="bob", text="kept for later")["stored"]
    with running_server(tmp_path, files=False, port=port) as srv:
        with WireClient(srv.host, srv.port) as a:
            a.hello()
            assert a.call(m.Resume, username="alice", token=token)["user"] == "alice"
        with WireClient(srv.host, srv.port) as b:
            assert b.login("bob")["display"] == "Bobby"
            ev = b.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "kept for later")
            assert ev.delayed and ev.sender == "alice"
            b.call(m.AckDelayed, msg_id=ev.msg_id)
        with WireClient(srv.host, srv.port) as b2:  # acknowledged: the waiting list emptied
            b2.login("bob")
            b2.call(m.Send, kind="public", target="", text="marker")
            b2.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "marker")
            assert not [e for e in b2.inbox if isinstance(e, m.ChatMessage)
                        and e.text == "kept for later"]


def test_kill_9_right_after_acknowledged_registration_keeps_the_account(tmp_path):
    port = free_port()
    with server_process(tmp_path, port) as proc:
        with WireClient("127.0.0.1", port) as a:
            a.register("durable")
            a.call(m.Send, kind="public", target="", text="acked")
            proc.send_signal(signal.SIGKILL)  # no chance to flush anything
        proc.wait(10)
    with server_process(tmp_path, port), WireClient("127.0.0.1", port) as a:
        a.login("durable")
        texts = [x["text"] for x in a.call(m.History, kind="public", target="")["messages"]]
        assert texts == ["acked"]


def test_kill_9_after_stored_messages_were_sent_but_not_acknowledged_keeps_them(tmp_path):
    """The server had queued bob's stored message (it may even have reached his socket) when
    it died: bob never acknowledged it, so it is his again after the restart."""
    port = free_port()
    with server_process(tmp_path, port) as proc:
        with WireClient("127.0.0.1", port) as b:
            b.register("bob")
        with WireClient("127.0.0.1", port) as a:
            a.register("alice")
            assert a.call(m.Send, kind="direct", target="bob", text="do not lose me")["stored"]
        with WireClient("127.0.0.1", port) as b:
            b.login("bob")
            assert b.wait_for(lambda e: isinstance(e, m.ChatMessage)).text == "do not lose me"
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with server_process(tmp_path, port), WireClient("127.0.0.1", port) as b:
        b.login("bob")
        ev = b.wait_for(lambda e: isinstance(e, m.ChatMessage))
        assert (ev.text, ev.delayed) == ("do not lose me", True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_and_tells_clients(tmp_path, sig):
    port = free_port()
    proc = start_server_process(tmp_path, port)
    try:
        with WireClient("127.0.0.1", port) as a:
            a.register("alice")
            proc.send_signal(sig)
            bye = a.wait_for(lambda e: isinstance(e, m.Bye), timeout=10)
            assert bye.code == "shutdown"
        assert proc.wait(15) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_server_runs_with_stdin_closed_and_console_on_pipe(tmp_path):
    import subprocess
    import sys

    from serverutil import FAST_SCRYPT_N, REPO, wait_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
         "--files-dir", str(tmp_path / "f"), "--data-dir", str(tmp_path / "d"), "--console",
         "--scrypt-n", str(FAST_SCRYPT_N), "--no-discovery"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(port)
        with WireClient("127.0.0.1", port) as a:
            a.register("alice")
            a.call(m.JoinRoom, room="lab")
            out, _ = proc.communicate("lcu\nlr\nlru lab\nlu\nbogus\nsay hello from admin\nx\n",
                                      timeout=20)
            said = a.wait_for(is_msg("hello from admin"))
            assert said.sender == "SERVER"
        assert proc.returncode == 0
        assert "1 connected" in out and "lab" in out and "creator alice" in out
        assert "unknown command 'bogus'" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dead_client_is_dropped_and_presence_updated(tmp_path):
    with running_server(tmp_path, files=False, keepalive_after=0.3, dead_after=1.0,
                        poll_interval=0.1) as srv, WireClient(srv.host, srv.port) as a:
        a.register("alice")
        zombie = WireClient(srv.host, srv.port)
        zombie.register("zombie")  # then never reads or answers pings again
        came = a.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "zombie")
        assert came.online
        # alice keeps answering pings (WireClient does), zombie does not
        gone = a.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "zombie"
                          and not e.online, timeout=10)
        assert not gone.online
        assert a.call(m.ListOnline)["users"] == [
            {"name": "alice", "display": "alice", "online": True}]
        zombie.close()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's per-thread malloc caches exist only there")
def test_the_server_process_runs_without_per_thread_malloc_caches(tmp_path):
    """A thread per client would each fill its own glibc cache of freed memory (the soak
    grew by 10 MiB in 3 minutes with them): server.py re-executes itself with them off,
    keeping its process id, so signals and kill -9 still reach it."""
    port = free_port()
    proc = start_server_process(tmp_path, port, "--no-console")
    try:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"GLIBC_TUNABLES=glibc.malloc.tcache_count=0" in environ
        with WireClient("127.0.0.1", port) as c:
            assert c.register("alice")["user"] == "alice"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
