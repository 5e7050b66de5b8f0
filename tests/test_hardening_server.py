"""Issue 11 regressions: nothing one stuck client or one flood may stop the server for
everyone. Each test goes through the real server on port 0."""

from __future__ import annotations

import socket
import threading
import time

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
