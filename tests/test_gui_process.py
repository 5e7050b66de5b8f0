"""The desktop client as a whole program: how it ends.

Closing the window, Ctrl+C in the terminal that started it and SIGTERM (a desktop logout, a
parent script) must all end it the same way: App.quit on the Tk thread, exit status 0, no
traceback. Ctrl+C used to raise KeyboardInterrupt inside whichever Tk callback was running;
Tk printed it, carried on, and the UI queue's tick could die with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from serverutil import REPO
from x11close import request_close

pytestmark = pytest.mark.gui
WAIT = 20.0


def visible_windows(title: str) -> list[str]:
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title],
                         capture_output=True, text=True, timeout=WAIT)
    return out.stdout.split()


def start_client(tmp_path) -> tuple[subprocess.Popen, str]:
    """client.py with its own config folder; returns once its login window is on screen."""
    env = {**os.environ, "PARLEY_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen([sys.executable, "client.py", "--no-discovery"], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + WAIT
    while not (windows := visible_windows("Parley")):
        if proc.poll() is not None:
            raise AssertionError(f"client exited early: {proc.communicate()[0]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no visible window titled Parley")
        time.sleep(0.05)  # polling interval of a bounded wait
    return proc, windows[0]


def ended_cleanly(proc: subprocess.Popen) -> str:
    try:
        output, _ = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"client still running {WAIT} s later: {proc.communicate()[0]}") from None
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    return output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_closes_the_window_like_the_close_button(display, tmp_path, signum):
    proc, _ = start_client(tmp_path)
    proc.send_signal(signum)
    ended_cleanly(proc)


def test_close_button_ends_the_program(display, tmp_path):
    proc, window = start_client(tmp_path)
    request_close(window, display)
    ended_cleanly(proc)


def test_repeated_ctrl_c_while_busy_still_ends_cleanly(display, tmp_path):
    """Several interrupts in a row land wherever the main thread happens to be: inside Tk
    callbacks, inside quit() itself. Each one must only ask for the same clean exit."""
    proc, _ = start_client(tmp_path)
    for _ in range(5):
        proc.send_signal(signal.SIGINT)
    ended_cleanly(proc)
