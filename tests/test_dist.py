"""The packaged executables, built by `make dist`, used the way people use them.

Builds dist/parley-server and dist/parley-client once for the module (about 25 s), then:
- the server, copied into an empty folder, creates ServerFiles/ and data/ beside itself and
  says where they are; two `parley-client --cli` processes register, chat publicly and one
  downloads a shared file whose sha256 is checked;
- `parley-client` opens its login window on Xvfb (found by title) and exits when closed;
- Ctrl+C (SIGINT to the process group, as a terminal sends it) stops the server, every time;
- --version / --help of both print the one APP_VERSION and the flags of server.py / client.py.
Every executable runs with its own $TMPDIR, which must be empty after it exits: a one-file
program unpacks itself there and must remove that folder (_MEI*) on a normal exit.

Run alone: .venv/bin/python -m pytest -m dist tests/test_dist.py
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from linereader import LineReader
from serverutil import free_port
from x11close import request_close

from protocol.version import APP_NAME, APP_VERSION

pytestmark = [pytest.mark.dist, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
WAIT = 15.0
BUILD_TIMEOUT = 240.0
CTRL_C_ATTEMPTS = 8
FAST_SCRYPT_N = 2**10  # the hidden --scrypt-n flag: registering is not what is tested here


@pytest.fixture(scope="module")
def dist() -> Path:
    """Build both executables with `make dist`, from the repository root."""
    if shutil.which("make") is None:
        pytest.fail("`make` is not installed; the dist test builds with `make dist`")
    done = subprocess.run(["make", "dist"], cwd=REPO, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"make dist failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for name in ("parley-server", "parley-client"):
        exe = DIST / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} was not built"
    return DIST


@pytest.fixture
def unpack_dir(tmp_path: Path):
    """A private $TMPDIR for the executables; it must be empty once they have all exited."""
    path = tmp_path / "unpack"
    path.mkdir()
    yield path
    left = sorted(p.name for p in path.iterdir())
    assert not left, f"temporary unpack folder(s) left behind: {left}"


def exe_env(unpack_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(unpack_dir),
            "PARLEY_CONFIG_DIR": str(tmp_path / "config"), **extra}


def start(args: list[str], env: dict[str, str], cwd: Path, stdin=subprocess.PIPE) -> LineReader:
    proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, encoding="utf-8", env=env, cwd=cwd)
    return LineReader(proc)


def stop(proc: subprocess.Popen) -> None:
    """Last-resort cleanup for a failed test; a passing test has already ended each process."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(WAIT)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_and_help(dist: Path, tmp_path: Path, unpack_dir: Path) -> None:
    env = exe_env(unpack_dir, tmp_path)
    for name, flags in (("parley-server", ("--port", "--files-dir", "--data-dir")),
                        ("parley-client", ("--cli", "--host", "--theme"))):
        out = subprocess.run([str(dist / name), "--version"], capture_output=True, text=True,
                             env=env, timeout=WAIT, stdin=subprocess.DEVNULL)
        assert (out.returncode, out.stdout.strip()) == (0, f"{APP_NAME} {APP_VERSION}")
        out = subprocess.run([str(dist / name), "--help"], capture_output=True, text=True,
                             env=env, timeout=WAIT, stdin=subprocess.DEVNULL)
        assert out.returncode == 0
        for flag in (*flags, "--version"):
            assert flag in out.stdout, f"{name} --help does not mention {flag}"


def test_server_and_two_cli_clients(dist: Path, tmp_path: Path, unpack_dir: Path) -> None:
    # The server in a folder of its own, as after a download: nothing beside it yet.
    app = tmp_path / "app"
    app.mkdir()
    server_exe = app / "parley-server"
    shutil.copy2(dist / "parley-server", server_exe)
    env = exe_env(unpack_dir, tmp_path)
    port = free_port()
    server = start([str(server_exe), "--host", "127.0.0.1", "--port", str(port), "--udp-port", "0",
                    "--scrypt-n", str(FAST_SCRYPT_N), "--no-discovery", "--no-console"],
                   env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    clients: list[LineReader] = []
    try:
        # Created beside the executable, not in the working folder nor the unpack folder.
        server.expect(rf"^created {re.escape(str(app / 'ServerFiles'))}$")
        server.expect(rf"^created {re.escape(str(app / 'data'))}$")
        server.expect(rf"listening on port {port}$")
        server.expect(rf"^  address 127\.0\.0\.1 port {port}$")
        server.expect(rf"shared files: {re.escape(str(app / 'ServerFiles'))}$")
        server.expect(rf"data: +{re.escape(str(app / 'data'))}$")
        assert (app / "ServerFiles").is_dir() and (app / "data").is_dir()
        if sys.platform.startswith("linux"):  # the program re-executed itself (memory.py)
            loader = server.proc.pid
            children = Path(f"/proc/{loader}/task/{loader}/children").read_text().split()
            assert [c for c in children if b"GLIBC_TUNABLES=glibc.malloc.tcache_count=0"
                    in Path(f"/proc/{c}/environ").read_bytes().split(b"\0")]

        cli = [str(dist / "parley-client"), "--cli", "127.0.0.1", str(port)]
        alice, bob = start(cli, env, tmp_path), start(cli, env, tmp_path)
        clients += [alice, bob]
        for reader, name in ((alice, "alice"), (bob, "bob")):
            reader.expect(rf"^{APP_NAME} {re.escape(APP_VERSION)} terminal client")
            reader.expect(r"^connected to 127\.0\.0\.1")
            reader.send(f"register {name} pw-{name}-secret")
            reader.expect(rf"logged in as {name}")

        alice.send("bm hello from a packaged client")
        bob.expect(r"^\[public\] alice: hello from a packaged client$")

        # A file dropped into ServerFiles/ by the server's owner (complete before it appears).
        payload = os.urandom(700_000)
        staged = tmp_path / "notes.bin"
        staged.write_bytes(payload)
        os.replace(staged, app / "ServerFiles" / "notes.bin")
        bob.expect(r"^\* new shared file notes\.bin", timeout=WAIT)
        downloads = tmp_path / "downloads"
        bob.send(f"get notes.bin {downloads}")
        bob.expect(r"^saved .*sha256 verified", timeout=30)
        assert sha256(downloads / "notes.bin") == hashlib.sha256(payload).hexdigest()

        bob.send("x")
        assert bob.proc.wait(WAIT) == 0
        assert alice.proc.stdin is not None
        alice.proc.stdin.close()  # EOF ends the terminal client too
        assert alice.proc.wait(WAIT) == 0

        server.proc.send_signal(signal.SIGTERM)  # forwarded by the bootloader to the program
        assert server.proc.wait(WAIT) == 0
        server.expect(r"^stopped$")
    finally:
        for reader in (*clients, server):
            stop(reader.proc)


def test_ctrl_c_stops_the_server(dist: Path, tmp_path: Path, unpack_dir: Path) -> None:
    """Ctrl+C in a terminal signals the whole process group: the bootloader and the program
    both get SIGINT, and the bootloader forwards its own, so the program sees two in a row.
    Repeated, at moments spread over the server's 0.5 s idle wait, because a stop that
    deadlocks (an Event.set() in a signal handler) does so only on some interleavings."""
    env = exe_env(unpack_dir, tmp_path)
    for attempt in range(CTRL_C_ATTEMPTS):
        port = free_port()
        work = tmp_path / f"run{attempt}"
        proc = subprocess.Popen(
            [str(dist / "parley-server"), "--host", "127.0.0.1", "--port", str(port),
             "--udp-port", "0", "--files-dir", str(work / "files"), "--data-dir", str(work / "data"),
             "--no-discovery", "--no-console"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, cwd=tmp_path, start_new_session=True)  # its own group, like a terminal's job
        server = LineReader(proc)
        try:
            server.expect(rf"listening on port {port}$")
            time.sleep(attempt * 0.5 / CTRL_C_ATTEMPTS)  # not a wait: the moment varies on purpose
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"Ctrl+C did not stop the server (attempt {attempt + 1}); "
                                     f"said {server.history!r}") from None
            assert code == 0
            server.expect(r"^stopped$")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the program too, not only the bootloader
                proc.wait(WAIT)


def visible_windows(title: str) -> list[str]:
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title],
                         capture_output=True, text=True, timeout=WAIT)
    return out.stdout.split()


def test_gui_client_opens_login_window(dist: Path, tmp_path: Path, unpack_dir: Path,
                                       display: str) -> None:
    if shutil.which("xdotool") is None:
        pytest.fail("xdotool is not installed: run `make xvfb`")
    proc = subprocess.Popen([str(dist / "parley-client")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=exe_env(unpack_dir, tmp_path, DISPLAY=display), cwd=tmp_path)
    try:
        deadline = time.monotonic() + WAIT
        while not (windows := visible_windows("Parley")):
            assert proc.poll() is None, f"client exited early: {proc.communicate()[0]}"
            assert time.monotonic() < deadline, "no visible window titled Parley"
            time.sleep(0.05)  # polling interval of a bounded wait
        titles = [subprocess.run(["xdotool", "getwindowname", w], capture_output=True,
                                 text=True, timeout=WAIT).stdout.strip() for w in windows]
        assert any("Log in" in t for t in titles), titles
        # Closing the window (what the close button does) ends Tk's main loop: the program
        # exits normally and the bootloader removes its unpack folder (checked by the
        # unpack_dir fixture).
        request_close(windows[0], display)
        output, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, output
        assert "Traceback" not in output, output
    finally:
        stop(proc)
