"""Issue 11 regressions: nothing one stuck client or one flood may stop the server for
everyone. Each test goes through the real server on port 0."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from serverutil import running_server
from wireclient import WireClient

from protocol import messages as m


def test_sendq_overflow_during_presence_flush_does_not_deadlock(tmp_path):
    # A laptop asleep: registered, never reads. Presence notices (logins and logouts of
    # others) overflow its SendQ inside the presence flush, which holds the presence lock.
    with running_server(tmp_path, files=False, tls=False, sendq_limit=8 * 1024,
                        socket_sndbuf=4096) as srv:
        stuck = WireClient(srv.host, srv.port, tls=False)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stuck.register("sleeper")
        watcher = WireClient(srv.host, srv.port, tls=False)
        watcher.register("watcher")
        for i in range(400):
            with WireClient(srv.host, srv.port, tls=False) as c:
                c.register(f"user{i:02d}")
                c.call(m.Logout)
            name = f"user{i:02d}"  # the watcher reads as it goes: only the sleeper overflows
            watcher.wait_for(lambda e, n=name: isinstance(e, m.Presence) and e.user == n
                             and not e.online, timeout=10)
            if srv.server.get_client("sleeper") is None:
                break
        assert srv.server.get_client("sleeper") is None, "the sleeper was never dropped"
        gone = watcher.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "sleeper"
                                and not e.online, timeout=10)
        assert gone.user == "sleeper"
        # Logins and logouts are still answered, quickly, after the drop.
        start = time.monotonic()
        with WireClient(srv.host, srv.port, tls=False, timeout=5) as late:
            late.register("late")
        assert time.monotonic() - start < 2
        watcher.close()
        stuck.close()
        stopped = threading.Event()
        threading.Thread(target=lambda: (srv.server.shutdown(), stopped.set()),
                         daemon=True).start()
        assert stopped.wait(15), "shutdown hung"


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes sock within timeout (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_connection_cap_refuses_the_extra_connection_and_frees_up(tmp_path):
    with running_server(tmp_path, files=False, tls=False, max_connections=4) as srv:
        held = [socket.create_connection((srv.host, srv.port), timeout=5) for _ in range(4)]
        deadline = time.monotonic() + 5
        while len(srv.server.handlers) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a counter inside a bounded wait
        extra = socket.create_connection((srv.host, srv.port), timeout=5)
        assert _closed_by_server(extra, 5), "the fifth connection was served"
        extra.close()
        held.pop().close()
        deadline = time.monotonic() + 5
        while len(srv.server.handlers) > 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        with WireClient(srv.host, srv.port, tls=False) as c:  # room again: served
            c.register("after")
        for s in held:
            s.close()


def test_a_connection_that_never_logs_in_is_closed_even_if_it_trickles(tmp_path):
    with running_server(tmp_path, files=False, tls=False, login_deadline=1.0,
                        poll_interval=0.2) as srv, \
            WireClient(srv.host, srv.port, tls=False) as member:
        member.register("member")
        trickler = socket.create_connection((srv.host, srv.port), timeout=5)
        trickler.sendall(b"\x00\x00")  # half a frame header, then a byte now and then
        start = time.monotonic()
        closed = False
        for _ in range(40):  # at most 40 x 0.25 s
            try:
                trickler.sendall(b"\x00")
            except OSError:
                closed = True
                break
            if _closed_by_server(trickler, 0.25):
                closed = True
                break
        assert closed, "a connection that never logged in is still open"
        assert time.monotonic() - start < 5
        member.call(m.Send, kind="public", target="", text="still here")  # members stay
        trickler.close()


def test_before_login_a_large_frame_is_refused(tmp_path):
    with running_server(tmp_path, files=False, tls=False) as srv:
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        s.sendall((1 << 20).to_bytes(4, "big") + b"{")  # announces 1 MiB: fine after login
        assert _closed_by_server(s, 5)
        s.close()
        with WireClient(srv.host, srv.port, tls=False) as c:
            c.register("big")  # after login the full frame size applies
            c.call(m.Send, kind="public", target="", text="x" * 3000)


PIDS_CGROUP = "/sys/fs/cgroup/pids"


def _pids_cgroup(tmp_name: str) -> Path:
    root = Path(PIDS_CGROUP)
    if not (root / "cgroup.procs").exists():
        pytest.skip("no pids cgroup (v1) here to limit the server's threads")
    group = root / tmp_name
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a pids cgroup: {exc}")
    return group


def test_accept_loop_survives_running_out_of_threads(tmp_path):
    from serverutil import free_port, server_process
    group = _pids_cgroup(f"parley-test-{os.getpid()}")
    port = free_port()
    try:
        with server_process(tmp_path, port, "--no-tls") as proc:
            (group / "cgroup.procs").write_text(str(proc.pid))
            current = int((group / "pids.current").read_text())
            (group / "pids.max").write_text(str(current + 6))  # a few readers, no more
            socks = []
            for _ in range(20):
                try:
                    socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                except OSError:
                    break
            deadline = time.monotonic() + 10  # until the server has hit the limit
            while (int((group / "pids.events").read_text().split()[1]) == 0
                   and time.monotonic() < deadline):
                time.sleep(0.02)  # polling a kernel counter inside a bounded wait
            assert int((group / "pids.events").read_text().split()[1]) > 0
            for s in socks:
                s.close()
            (group / "pids.max").write_text("max")
            with WireClient("127.0.0.1", port, tls=False, timeout=10) as c:
                c.register("survivor")
            assert proc.poll() is None
    finally:
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                (Path(PIDS_CGROUP) / "cgroup.procs").write_text(pid)
            group.rmdir()


def test_a_flood_of_junk_connections_does_not_delay_others_replies(tmp_path):
    """Each junk connection is dropped, and its queue discarded by the shared flusher; a
    discard arriving at the wrong moment used to put the flusher to sleep for its whole 1 s
    timeout with everyone's replies waiting."""
    import random

    with running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as probe:
        probe.register("probe")
        stop = threading.Event()

        def junk():
            rng = random.Random(1)
            for _ in range(100_000):  # bounded; stopped by the test
                if stop.is_set():
                    return
                try:
                    with socket.create_connection((srv.host, srv.port), timeout=2) as s:
                        for _ in range(20):
                            body = rng.randbytes(rng.randrange(1, 100))
                            s.sendall(len(body).to_bytes(4, "big") + body)
                except OSError:
                    pass  # dropped by the server mid-way: that is its defence

        flooders = [threading.Thread(target=junk, daemon=True) for _ in range(2)]
        for t in flooders:
            t.start()
        worst = 0.0
        try:
            end = time.monotonic() + 3.0
            for _ in range(10_000):  # for 3 s, or until one reply is late
                if time.monotonic() > end or worst >= 0.5:
                    break
                began = time.monotonic()
                probe.call(m.History, kind="public", target="", limit=5)
                worst = max(worst, time.monotonic() - began)
        finally:
            stop.set()
            for t in flooders:
                t.join(5)
        assert worst < 0.5, f"a reply took {worst:.2f} s during the flood"


def test_an_address_cycling_connections_is_refused_before_it_costs_a_thread(tmp_path):
    from parley_server.chat_server import NEW_CONNECTIONS_PER_ADDRESS
    from parley_server.policy import Limits, Policy
    policy = Policy(limits=Limits(message_rate=10_000, message_burst=10_000,
                                  exempt_loopback=False))
    with running_server(tmp_path, tls=False, policy=policy) as srv:
        burst = NEW_CONNECTIONS_PER_ADDRESS[1]
        refused = 0
        for _ in range(burst + 40):
            with socket.create_connection((srv.host, srv.port), timeout=5,
                                          source_address=("127.0.0.2", 0)) as s:
                s.sendall(b"\x00\x00\x00\x02{}")  # a frame; a refused socket is closed unread
                s.settimeout(5)
                try:
                    answer = s.recv(100)
                except ConnectionResetError:
                    answer = b""
                refused += answer == b""
        assert refused >= 30
        with WireClient(srv.host, srv.port, tls=False, source="127.0.0.3") as other:
            other.register("elsewhere")  # another machine connects as ever
