"""`make run`'s script: a real server, then a client window; stopping it stops the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from serverutil import REPO, free_port

pytestmark = pytest.mark.gui


def test_run_dev_starts_server_and_window_and_stops_both(display, tmp_path):
    port = free_port()
    env = {**os.environ, "PARLEY_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "run_dev.py"), "--port", str(port),
         f"--server-args=--data-dir {tmp_path / 'data'} --files-dir {tmp_path / 'files'}"
         " --no-discovery --host 127.0.0.1",
         "--client-args=--no-discovery"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--name", "Parley"],
                               capture_output=True, text=True, timeout=30, env=env)
        assert found.returncode == 0 and found.stdout.strip()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in the terminal does
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Parley server listening on port" in out and "stopped" in out
    assert "Traceback" not in out
    deadline = time.monotonic() + 10
    import socket

    while True:  # the server is gone: its port no longer accepts
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "the server is still running"
        time.sleep(0.05)  # polling interval inside a bounded wait
