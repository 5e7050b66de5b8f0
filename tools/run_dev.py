#!/usr/bin/env python3
"""Start the Parley server in the background, run the GUI client, stop the server after.

    python tools/run_dev.py [--port 5150] [--host 127.0.0.1] [--server-args "..."]
                            [--client-args "..."]

Used by `make run`. The server gets SIGTERM (then SIGKILL after a grace period) when the
client exits, when you press Ctrl-C, or when this script itself gets SIGTERM.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 5150
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_listening(server: subprocess.Popen, host: str, port: int, timeout: float) -> None:
    """Poll the port until it accepts; fail early if the server process has exited."""
    deadline = time.monotonic() + timeout
    while not port_accepts(host, port):
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode} before "
                               f"listening on {host}:{port}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"server not accepting on {host}:{port} after {timeout} s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen, name: str) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"run_dev: {name} ignored SIGTERM for {STOP_TIMEOUT_S} s; killing it",
              file=sys.stderr)
        proc.kill()
        proc.wait()


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to probe for readiness")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server's TCP port")
    parser.add_argument("--server-args", default="", help="extra server.py arguments")
    parser.add_argument("--client-args", default="", help="extra client.py arguments")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                        help="seconds to wait for the server to accept connections")
    args = parser.parse_args(argv)

    if port_accepts(args.host, args.port):
        print(f"run_dev: something already listens on {args.host}:{args.port}; "
              f"stop it or pass --port", file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    python = sys.executable
    server = subprocess.Popen([python, "server.py", "--port", str(args.port),
                               *shlex.split(args.server_args)], cwd=REPO,
                              stdin=subprocess.DEVNULL)
    client = None
    try:
        wait_until_listening(server, args.host, args.port, args.timeout)
        print(f"run_dev: server ready on {args.host}:{args.port}; starting client",
              file=sys.stderr)
        client = subprocess.Popen([python, "client.py", "--host", args.host, "--port",
                                   str(args.port), *shlex.split(args.client_args)],
                                  cwd=REPO)
        return client.wait()
    except RuntimeError as exc:
        print(f"run_dev: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave the server running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if client is not None:
            stop(client, "client")
        stop(server, "server")


if __name__ == "__main__":
    sys.exit(main())
