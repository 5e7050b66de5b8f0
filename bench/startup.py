"""Start-up time and size of the packaged executables in dist/ (build them with `make dist`).

Prints, for dist/parley-server and dist/parley-client:
- the file sizes (MB = 10^6 bytes, and MiB);
- server: time from launch to the first accepted TCP connection, median of 5;
- client: time from launch to its window ("Parley" in the title) being mapped on a private
  Xvfb, median of 5;
and the same two times for the unpackaged programs (`python server.py`, `python client.py`)
as the baseline measured in the same run, with the ratio packaged / baseline.
Targets (issue 5): each under 1.0 s, each executable under 30 MB.

Run: .venv/bin/python bench/startup.py [--runs N] [--dist DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/xvfb.py: the private X server helper
from xvfb import Xvfb  # noqa: E402

DIST = REPO / "dist"
WINDOW_TITLE = "Parley"
TARGET_S = 1.0
TARGET_BYTES = 30_000_000
GIVE_UP_S = 20.0  # one start taking this long is a failure, not a measurement
POLL_S = 0.005


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_accepting(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before listening") \
                    from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepted on port {port}") from None
            time.sleep(POLL_S)


def visible_windows(title: str, env: dict[str, str]) -> list[str]:
    # Without --sync: xdotool's own --sync re-checks only every half second, too coarse here.
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title],
                         capture_output=True, text=True, env=env, timeout=10)
    return out.stdout.split()


def wait_window(title: str, env: dict[str, str], proc: subprocess.Popen, deadline: float) -> str:
    while True:
        found = visible_windows(title, env)
        if found:
            return found[0]
        if proc.poll() is not None:
            raise RuntimeError(f"client exited with {proc.returncode} before its window showed")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no visible window titled {title!r}")
        time.sleep(POLL_S)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def timed_starts(runs: int, start_once: Callable[[Path, dict[str, str]], float]) -> list[float]:
    """Run `start_once(workdir, env)` `runs` times, each with its own $TMPDIR and config dir."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as work:
            work_path = Path(work)
            tmp = work_path / "tmp"
            tmp.mkdir()
            env = {**os.environ, "TMPDIR": str(tmp), "PARLEY_CONFIG_DIR": str(work_path / "cfg")}
            times.append(start_once(work_path, env))
            left = list(tmp.iterdir())
            if left:
                print(f"  warning: left in TMPDIR after exit: {[p.name for p in left]}")
    return times


def server_start(cmd: list[str]) -> Callable[[Path, dict[str, str]], float]:
    def once(work: Path, env: dict[str, str]) -> float:
        port = free_port()
        args = cmd + ["--host", "127.0.0.1", "--port", str(port), "--udp-port", "0",
                      "--files-dir", str(work / "files"), "--data-dir", str(work / "data"),
                      "--no-discovery", "--no-console"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=work)
        try:
            wait_accepting(port, proc, time.monotonic() + GIVE_UP_S)
            return time.perf_counter() - t0
        finally:
            stop(proc)
    return once


def client_start(cmd: list[str]) -> Callable[[Path, dict[str, str]], float]:
    def once(work: Path, env: dict[str, str]) -> float:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=work)
        try:
            window = wait_window(WINDOW_TITLE, env, proc, time.monotonic() + GIVE_UP_S)
            elapsed = time.perf_counter() - t0
            # Destroying the window ends Tk's main loop: a normal exit, so the one-file
            # bootloader removes its unpack folder (checked by timed_starts).
            subprocess.run(["xdotool", "windowclose", window], env=env, timeout=10,
                           capture_output=True)
            proc.wait(10)
            return elapsed
        finally:
            stop(proc)
    return once


def size_line(path: Path) -> str:
    n = path.stat().st_size
    verdict = "ok" if n < TARGET_BYTES else "OVER TARGET"
    return f"{path.name:14s} {n / 1e6:6.1f} MB  {n / 2**20:6.1f} MiB   (target < 30 MB: {verdict})"


def report(label: str, packaged: list[float], baseline: list[float]) -> None:
    med, base = statistics.median(packaged), statistics.median(baseline)
    verdict = "ok" if med < TARGET_S else "OVER TARGET"
    runs = " ".join(f"{t:.3f}" for t in packaged)
    print(f"{label:28s} median {med:.3f} s  (runs: {runs})  target < {TARGET_S} s: {verdict}")
    print(f"{'':28s} baseline (unpackaged) median {base:.3f} s; ratio packaged/baseline "
          f"{med / base:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dist", type=Path, default=DIST, help="folder holding the executables")
    args = parser.parse_args()
    server_exe, client_exe = args.dist / "parley-server", args.dist / "parley-client"
    missing = [p for p in (server_exe, client_exe) if not p.exists()]
    if missing:
        print(f"missing {', '.join(map(str, missing))}: run `make dist` first", file=sys.stderr)
        return 1
    if shutil.which("xdotool") is None:
        print("xdotool is not installed: run `make xvfb`", file=sys.stderr)
        return 1

    print("sizes:")
    for exe in (server_exe, client_exe):
        print("  " + size_line(exe))

    py = sys.executable
    server_packaged = timed_starts(args.runs, server_start([str(server_exe)]))
    server_baseline = timed_starts(args.runs, server_start([py, str(REPO / "server.py")]))
    with Xvfb() as xvfb:
        os.environ["DISPLAY"] = xvfb.display
        client_packaged = timed_starts(args.runs, client_start([str(client_exe)]))
        client_baseline = timed_starts(args.runs, client_start([py, str(REPO / "client.py")]))

    print(f"start-up, {args.runs} runs each:")
    report("server accepting", server_packaged, server_baseline)
    report("client window mapped", client_packaged, client_baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
