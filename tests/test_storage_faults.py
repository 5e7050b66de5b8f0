"""The store under a full disk and a damaged data dir, through a real server process.

The full disk is real: the server runs in a mount namespace of its own (unshare -m, as root)
whose data dir is a small tmpfs; the test fills and frees it through /proc/PID/root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverutil import FAST_SCRYPT_N, REPO, free_port, server_process, wait_port
from wireclient import ReplyError, WireClient

from protocol import messages as m


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


@contextlib.contextmanager
def server_on_small_disk(tmp_path: Path, size_mib: int):
    """server.py whose data dir is a tmpfs of size_mib, seen by this process under
    /proc/PID/root. Yields (proc, port, data dir as seen from here)."""
    if not _can_mount_tmpfs():
        pytest.skip("needs root and unshare -m to give the server a small disk of its own")
    data = tmp_path / "data"
    files = tmp_path / "files"
    data.mkdir()
    files.mkdir()
    port = free_port()
    script = ('mount -t tmpfs -o size="$1"m,mode=0700 tmpfs "$2" && shift 2 && exec "$@"')
    proc = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", script, "sh", str(size_mib), str(data),
         sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
         "--files-dir", str(files), "--data-dir", str(data), "--no-tls", "--no-discovery",
         "--scrypt-n", str(FAST_SCRYPT_N)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_port(port)
        yield proc, port, Path(f"/proc/{proc.pid}/root") / data.relative_to("/")
    finally:
        proc.kill()
        proc.wait(10)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full; return it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * (64 << 10)
    with open(filler, "wb") as f:
        for _ in range(100_000):  # bounded: 6 GiB, far beyond any test disk
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break
    return filler


def test_full_disk_refuses_writes_in_words_then_recovers_by_itself(tmp_path):
    with server_on_small_disk(tmp_path, 8) as (proc, port, disk):
        with WireClient("127.0.0.1", port, tls=False) as alice, \
                WireClient("127.0.0.1", port, tls=False) as bob:
            alice.register("alice")
            bob.register("bob")
            filler = _fill(disk)
            acked: list[str] = []
            refused = None
            for i in range(3000):  # SQLite reuses its journal's space for a while
                text = f"{i:05d} " + "x" * 1500
                try:
                    alice.call(m.Send, kind="public", target="", text=text)
                except ReplyError as exc:
                    refused = exc
                    break
                acked.append(text)
            assert refused is not None, "the disk never filled up"
            assert refused.code == "storage_full"
            assert "disk is full" in refused.message and "_" not in refused.message
            # The server still serves everyone: reads work, and bob is still connected.
            bob.call(m.ListOnline)
            bob.call(m.History, kind="public", target="", limit=5)
            filler.unlink()
            alice.call(m.Send, kind="public", target="", text="space again")
            history = bob.call(m.History, kind="public", target="", limit=10)
            texts = [msg["text"] for msg in history["messages"]]
            assert texts[-1] == "space again"
            if acked:
                assert acked[-1] in texts  # the last acknowledged one is there
            with WireClient("127.0.0.1", port, tls=False) as carol:
                carol.register("carol")  # registration writes again too
        assert proc.poll() is None


def test_an_empty_database_file_is_refused_in_words(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "parley.sqlite3").write_bytes(b"")
    port = free_port()
    out = _start_failing(tmp_path, port)
    assert "is empty" in out and "parley.sqlite3" in out
    assert "Traceback" not in out


def test_a_damaged_database_file_is_refused_in_words(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "parley.sqlite3").write_bytes(b"this is not a database, just text " * 200)
    out = _start_failing(tmp_path, free_port())
    assert "is damaged" in out and "backup" in out
    assert "Traceback" not in out


def _start_failing(tmp_path: Path, port: int) -> str:
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
         "--files-dir", str(files), "--data-dir", str(tmp_path / "data"), "--no-tls",
         "--no-discovery"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.returncode == 2
    return done.stdout + done.stderr


def test_data_dir_and_database_are_private_to_the_server_owner(tmp_path):
    port = free_port()
    with server_process(tmp_path, port, "--no-tls") as proc:
        with WireClient("127.0.0.1", port, tls=False) as c:
            c.register("alice")
            c.call(m.Send, kind="public", target="", text="hello")
        assert proc.poll() is None
        data = tmp_path / "data"
        assert data.stat().st_mode & 0o777 == 0o700
        for f in data.glob("parley.sqlite3*"):
            assert f.stat().st_mode & 0o077 == 0, f


def test_uploads_leave_the_disk_reserve_for_the_database(tmp_path):
    from serverutil import running_server
    files = tmp_path / "files"
    files.mkdir()
    free = shutil.disk_usage(files).free
    # A reserve of all but 64 MiB of what is free: a 128 MiB upload would eat into it.
    with running_server(tmp_path, tls=False, disk_reserve=free - (64 << 20),
                        max_upload=1 << 30) as srv, WireClient(srv.host, srv.port, tls=False) as c:
        c.register("alice")
        with pytest.raises(ReplyError) as refused:
            c.call(m.UploadBegin, name="big.iso", size=128 << 20)
        assert refused.value.code == "no_space"
        assert "free disk space" in refused.value.message
        c.call(m.Send, kind="public", target="", text="messages still go through")
        small = c.call(m.UploadBegin, name="small.txt", size=1000)
        assert small["upload_id"]


def test_a_lost_tls_key_is_said_loudly_never_replaced_silently(tmp_path):
    port = free_port()
    with server_process(tmp_path, port) as proc:
        pass
    proc.wait(10)
    tls = tmp_path / "data" / "tls"
    (tls / "key.pem").unlink()
    done = subprocess.run(
        [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
         "--files-dir", str(tmp_path / "files"), "--data-dir", str(tmp_path / "data"),
         "--no-discovery"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.returncode == 2
    assert "key.pem is missing" in done.stderr and "accept the new fingerprint" in done.stderr
    assert "Traceback" not in done.stderr
    (tls / "cert.pem").unlink()  # the operator chose a new identity
    with server_process(tmp_path, port) as proc:
        pass
    out = proc.stdout.read() if proc.stdout else ""
    assert "WARNING: this server had run before" in out and "(new certificate)" in out


def test_a_parked_upload_does_not_keep_the_disk_from_everyone_else(tmp_path):
    import base64
    import hashlib

    from serverutil import running_server
    files = tmp_path / "files"
    files.mkdir()
    free = shutil.disk_usage(files).free
    # 200 MiB usable by uploads: a 150 MiB upload begun and left leaves room for 100 MiB only
    # while it holds its promise.
    with running_server(tmp_path, tls=False, disk_reserve=free - (200 << 20),
                        max_upload=1 << 30) as srv:
        with WireClient(srv.host, srv.port, tls=False) as hog:
            hog.register("hog")
            begun = hog.call(m.UploadBegin, name="huge.iso", size=150 << 20,
                             sha256=hashlib.sha256(b"never sent").hexdigest())
            hog.call(m.UploadChunk, upload_id=begun["upload_id"], offset=0,
                     data=base64.b64encode(b"x" * 1000).decode())
            with WireClient(srv.host, srv.port, tls=False) as other:
                other.register("other")
                with pytest.raises(ReplyError) as refused:  # the promise holds while it moves
                    other.call(m.UploadBegin, name="notes.pdf", size=100 << 20)
                assert refused.value.code == "no_space"
        # hog's connection is gone: its upload is parked (resumable) and holds no space.
        with WireClient(srv.host, srv.port, tls=False) as other:
            other.login("other")
            deadline = time.monotonic() + 10
            while True:  # parking happens when the server sees hog's connection close
                try:
                    r = other.call(m.UploadBegin, name="notes.pdf", size=100 << 20)
                    break
                except ReplyError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # polling inside a bounded wait
            assert r["upload_id"]
