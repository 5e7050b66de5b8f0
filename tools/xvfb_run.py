#!/usr/bin/env python3
"""Run one command on a fresh private Xvfb display, then stop the display.

    python tools/xvfb_run.py [--screen WxHxD] [--] COMMAND [ARG...]

Xvfb is started exactly as the test fixture starts it (tests/xvfb.py), DISPLAY is set for
the command only, and the command's exit status is returned. Used by `make screenshots`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from xvfb import SCREEN_GEOMETRY, Xvfb, XvfbError  # noqa: E402  (path set just above)

CHILD_STOP_TIMEOUT_S = 10.0


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_child(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _exit_status(returncode: int) -> int:
    # A child killed by signal N reports -N; shells report that as 128 + N.
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screen", default=SCREEN_GEOMETRY, help="Xvfb screen, WxHxDEPTH")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        with Xvfb(args.screen) as server:
            env = dict(os.environ, DISPLAY=server.display)
            child = subprocess.Popen(command, env=env)
            try:
                return _exit_status(child.wait())
            except KeyboardInterrupt:
                # Stop the command before the display it draws on goes away.
                _stop_child(child)
                return 130
    except XvfbError as exc:
        print(f"xvfb_run: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"xvfb_run: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
