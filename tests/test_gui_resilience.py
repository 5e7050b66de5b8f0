"""The window keeps working when things go wrong or get busy: the server restarts, a big
download runs while messages pour in."""

from __future__ import annotations

import os

import pytest
import test_gui_app as base
from serverutil import running_server
from test_gui_app import WAIT, Peer, log_in, transcript, type_and_send
from xvfb import pump_until

from bench.gui_responsiveness import measure

pytestmark = pytest.mark.gui
# Shared fixtures, re-exported so pytest finds them in this module.
app, server, peers = base.app, base.server, base.peers
collect_tk_garbage_on_main_thread = base.collect_tk_garbage_on_main_thread
MAX_STALL_S = 0.100


def test_server_restart_shows_banner_and_reconnects_by_itself(app, tmp_path):
    with running_server(tmp_path) as srv:
        host, port = srv.host, srv.port
        log_in(app, host, port, "alice")
        type_and_send(app, "before the restart")
        pump_until(app.root, lambda: "before the restart" in transcript(app)
                   and "sending…" not in transcript(app), WAIT)
    # the server is gone
    banner = app.main.banner
    pump_until(app.root, lambda: "Connection lost" in banner.shown, WAIT)
    assert banner.winfo_ismapped()
    type_and_send(app, "written while offline")
    pump_until(app.root, lambda: "sending…" in transcript(app), WAIT)

    with running_server(tmp_path, port=port) as srv2:  # same port, same data dir
        pump_until(app.root, lambda: app.state.connection == "online", 30)
        pump_until(app.root, lambda: banner.shown == "Reconnected.", WAIT)
        # the message kept in the outbox was sent after the reconnect
        pump_until(app.root, lambda: "sending…" not in transcript(app), WAIT)
        bob = Peer(srv2.host, srv2.port, "bob")
        try:
            history = bob.session.history("public", "").result(WAIT)["messages"]
            assert "written while offline" in [m["text"] for m in history]
            pump_until(app.root, lambda: "bob" in app.state.online, WAIT)
            bob.session.send("public", "", "welcome back").result(WAIT)
            pump_until(app.root, lambda: "welcome back" in transcript(app), WAIT)
        finally:
            bob.close()
        pump_until(app.root, lambda: not banner.winfo_ismapped(), WAIT)


def test_server_killed_with_sigkill_and_restarted_client_reconnects(app, tmp_path):
    from serverutil import free_port, start_server_process

    port = free_port()
    proc = start_server_process(tmp_path, port)
    try:
        log_in(app, "127.0.0.1", port, "alice")
        proc.kill()  # SIGKILL: no bye, no flush, the socket just dies
        proc.wait(10)
        banner = app.main.banner
        pump_until(app.root, lambda: "Connection lost" in banner.shown, WAIT)
        proc = start_server_process(tmp_path, port)  # same port, data dir and certificate
        pump_until(app.root, lambda: app.state.connection == "online", 30)
        pump_until(app.root, lambda: banner.shown == "Reconnected.", WAIT)
        type_and_send(app, "after the crash")
        pump_until(app.root, lambda: "after the crash" in transcript(app)
                   and "sending…" not in transcript(app), WAIT)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        proc.stdout.close()


def test_window_stays_responsive_during_download_and_message_flood(app, server, peers,
                                                                    tmp_path):
    bob = peers("bob")
    with open(server.files_dir / "big.bin", "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(64):
            f.write(chunk)
    log_in(app, server.host, server.port, "alice")
    app.settings.download_dir = str(tmp_path / "dl")
    pump_until(app.root, lambda: "big.bin" in app.state.files, WAIT)
    result = measure(app, bob.session, "big.bin", rate=100, seconds=2.0)
    assert result["state"] == "done"
    assert result["messages_sent"] >= 150
    pump_until(app.root, lambda: f"flood message {result['messages_sent'] - 1} " in
               transcript(app), WAIT)
    assert result["max_gap"] < MAX_STALL_S, result
