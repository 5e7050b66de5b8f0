"""Hardening of file sharing (issue 11): bounded hash waits, bounded offers, deadlines on the
TCP fallback, a damaged hash cache, IPv6 hosts, and names that never overwrite or collide."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serverutil import REPO, running_server
from wireclient import ReplyError, WireClient

from protocol import messages as m


def make_file(path: Path, size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
    data = (block * (size // len(block) + 1))[:size]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- 18b: the hash cache --------------------------------------------------------------------

def test_a_damaged_hash_cache_is_moved_aside_and_rebuilt(tmp_path, caplog):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "files.sqlite3").write_bytes(b"this is not an SQLite database" * 100)
    make_file(tmp_path / "files" / "notes.txt", 1000)
    with caplog.at_level(logging.WARNING, logger="parley_server.library"), \
            running_server(tmp_path, tls=False) as srv, WireClient(srv.host, srv.port,
                                                                    tls=False) as c:
        c.register("alice")
        files = c.call(m.ListFiles)["files"]
        assert [f["name"] for f in files] == ["notes.txt"]
        assert files[0]["sha256"] is not None
        assert any("damaged" in r.getMessage() for r in caplog.records)
        aside = list(data_dir.glob("files.sqlite3.damaged-*"))
        assert len(aside) == 1
        for suffix in ("", "-wal", "-shm"):
            path = data_dir / ("files.sqlite3" + suffix)
            assert path.exists() and mode(path) == 0o600, (suffix, oct(mode(path)))


def test_the_hash_cache_is_private_from_the_start(tmp_path):
    old = os.umask(0o022)
    try:
        with running_server(tmp_path, tls=False) as srv:
            for suffix in ("", "-wal", "-shm"):
                path = srv.data_dir / ("files.sqlite3" + suffix)
                assert mode(path) == 0o600, (suffix, oct(mode(path)))
    finally:
        os.umask(old)


def test_a_cache_with_damaged_pages_is_rebuilt(tmp_path, caplog):
    """The header is fine (SQLite opens it) but the table pages are not."""
    from parley_server.library import FileLibrary

    files = tmp_path / "files"
    for i in range(50):
        make_file(files / f"f{i:02}.txt", 100 + i, seed=i)
    db = tmp_path / "files.sqlite3"
    with FileLibrary(files, db) as lib:
        lib.start()
    assert db.stat().st_size > 4096
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * (db.stat().st_size - 4096))
    make_file(files / "new.txt", 300, seed=99)
    with caplog.at_level(logging.WARNING, logger="parley_server.library"), \
            FileLibrary(files, db) as lib:
        lib.start()
        assert len(lib.list()) == 51
        assert all(e.sha256 is not None for e in lib.list())
    assert any("damaged" in r.getMessage() for r in caplog.records)


# ---- 4: a scan that cannot read is not a scan that found nothing ----------------------------

_SCAN_OUT_OF_DESCRIPTORS = r"""
import json, os, resource, sys
from pathlib import Path
from parley_server.library import FileLibrary

files, db = Path(sys.argv[1]), Path(sys.argv[2])
removed = []
lib = FileLibrary(files, db, scan_interval=3600,
                  on_change=lambda added, gone: removed.extend(gone))
lib.start()
before = [e.name for e in lib.list()]
(files / "sub" / "b.txt").unlink()          # really deleted: must be reported
# Use up every descriptor this process may have, then scan.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
hog = []
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    lib.refresh()
    error = None
except Exception as exc:
    error = repr(exc)
after_starved = [e.name for e in lib.list()]
removed_starved = list(removed)
for fd in hog:
    os.close(fd)
lib.refresh()
print(json.dumps({"before": before, "starved": after_starved, "removed_starved":
                  removed_starved, "removed": removed, "after": [e.name for e in lib.list()],
                  "error": error}))
lib.close()
"""


def test_running_out_of_descriptors_does_not_empty_the_listing(tmp_path):
    files = tmp_path / "files"
    make_file(files / "a.txt", 100)
    make_file(files / "sub" / "b.txt", 100)
    make_file(files / "sub" / "c.txt", 100)
    out = subprocess.run([sys.executable, "-c", _SCAN_OUT_OF_DESCRIPTORS, str(files),
                          str(tmp_path / "files.sqlite3")], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == ["a.txt", "sub/b.txt", "sub/c.txt"]
    assert result["removed_starved"] == [], result
    assert result["starved"] == result["before"], result
    assert "could not read" in out.stderr or "cannot read" in out.stderr
    # Once descriptors are back, the real deletion is seen.
    assert result["removed"] == ["sub/b.txt"] and result["after"] == ["a.txt", "sub/c.txt"]


# ---- 3b: download requests waiting for a hash ----------------------------------------------

def sparse_file(path: Path, size: int) -> None:
    """A file of `size` bytes that takes no disk space (and long to hash: ~0.3 GB/s here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def send(client: WireClient, cls, **fields) -> int:
    rid = next(client.ids)
    client.sock.sendall(client.conn.send(cls(id=rid, **fields)))
    return rid


def reply_to(client: WireClient, rid: int, timeout: float = 10.0):
    return client.wait_for(lambda ev: isinstance(ev, m.Ok | m.Error) and ev.id == rid,
                           timeout=timeout)


def test_requests_waiting_for_hashes_take_no_threads_and_are_bounded(tmp_path):
    import parley_server.file_sharing as fs

    MAX_HASH_WAITS_PER_USER = getattr(fs, "MAX_HASH_WAITS_PER_USER", 8)

    for i in range(4):
        sparse_file(tmp_path / "files" / f"huge{i}.iso", 64 << 30)  # not hashed in this test
    with running_server(tmp_path, tls=False) as srv:
        clients = [WireClient(srv.host, srv.port, tls=False) for _ in range(4)]
        try:
            for i, c in enumerate(clients):
                c.register(f"user{i}")
            baseline = threading.active_count()
            asks = MAX_HASH_WAITS_PER_USER + 4
            rids = {c: [send(c, m.Download, name=f"huge{k % 4}.iso", offset=0)
                        for k in range(asks)] for c in clients}
            for c in clients:
                # The waits past the bound are refused at once, in words.
                for rid in rids[c][MAX_HASH_WAITS_PER_USER:]:
                    ev = reply_to(c, rid)
                    assert isinstance(ev, m.Error) and ev.code == "busy", ev
                    assert f"{MAX_HASH_WAITS_PER_USER} files" in ev.message
                # The others wait without an answer and without a thread each.
                assert not any(isinstance(ev, m.Ok | m.Error) and ev.id in rids[c]
                               for ev in c.inbox)
            files = srv.server.files
            assert files.library.hash_waiters == 4 * MAX_HASH_WAITS_PER_USER
            assert threading.active_count() <= baseline + 2, threading.enumerate()
            # Chat still answers while the waits are pending.
            clients[0].call(m.ListFiles)
        finally:
            for c in clients:
                c.close()
        deadline = time.monotonic() + 10
        while srv.server.files.library.hash_waiters and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.server.files.library.hash_waiters == 0  # gone with their connections


def test_a_request_waiting_for_a_hash_gets_its_offer_when_the_hash_is_done(tmp_path):
    sparse_file(tmp_path / "files" / "big.img", 512 << 20)
    with running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as c:
        c.register("alice")
        baseline = threading.active_count()
        rid = send(c, m.Download, name="big.img", offset=0)
        assert threading.active_count() <= baseline + 1
        ev = reply_to(c, rid, timeout=60)
        assert isinstance(ev, m.Ok), ev
        zeros = hashlib.sha256()
        for _ in range(512):
            zeros.update(bytes(1 << 20))
        assert ev.result["sha256"] == zeros.hexdigest()
        assert ev.result["size"] == 512 << 20


# ---- 4: offers are bounded and hold no file until used --------------------------------------

def fds_on(path: Path) -> int:
    """Descriptors this process (the server's) has open on path."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            continue
    return count


def test_offers_are_limited_per_user_and_in_all_and_hold_no_descriptor(tmp_path):
    import parley_server.transfer_service as ts

    per_user = getattr(ts, "MAX_OFFERS_PER_USER", 16)
    make_file(tmp_path / "files" / "notes.txt", 100_000)
    with running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as alice, \
            WireClient(srv.host, srv.port, tls=False) as bob:
        alice.register("alice")
        bob.register("bob")
        for _ in range(per_user):
            alice.call(m.Download, name="notes.txt", offset=0)
        assert fds_on(srv.files_dir / "notes.txt") == 0      # the offers keep no file open
        with pytest.raises(ReplyError) as exc:
            alice.call(m.Download, name="notes.txt", offset=0)
        assert exc.value.code == "too_many_downloads"
        assert f"{per_user} downloads" in exc.value.message
        bob.call(m.Download, name="notes.txt", offset=0)   # someone else is not held up
        srv.server.files.transfers.max_offers = per_user + 1
        with pytest.raises(ReplyError) as exc:
            bob.call(m.Download, name="notes.txt", offset=0)
        assert exc.value.code == "busy" and "try again" in exc.value.message


def test_a_transfer_opens_its_file_only_while_it_runs(tmp_path):
    from parley_client.download import Download

    data = make_file(tmp_path / "files" / "notes.txt", 300_000)
    with running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as alice:
        alice.register("alice")
        transfers = srv.server.files.transfers
        offer = alice.call(m.Download, name="notes.txt", offset=0)
        assert fds_on(srv.files_dir / "notes.txt") == 0
        d = Download(offer, "127.0.0.1", tmp_path / "dl" / "notes.txt",
                     on_progress=lambda p: None)
        d.start()
        d.join(30)
        assert d.progress.state == "done", d.progress.message
        assert (tmp_path / "dl" / "notes.txt").read_bytes() == data
        deadline = time.monotonic() + 10
        while transfers.active_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert transfers.active_count() == 0 and fds_on(srv.files_dir / "notes.txt") == 0


def test_a_file_replaced_after_its_offer_is_not_sent(tmp_path):
    from parley_client.download import Download

    make_file(tmp_path / "files" / "notes.txt", 300_000)
    with running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as alice:
        alice.register("alice")
        offer = alice.call(m.Download, name="notes.txt", offset=0)
        make_file(tmp_path / "files" / "notes.txt", 300_001, seed=5)
        d = Download(offer, "127.0.0.1", tmp_path / "dl" / "notes.txt",
                     on_progress=lambda p: None)
        d.start()
        d.join(30)
        assert d.progress.state == "failed"
        assert "changed since it was offered" in d.progress.message
        assert not (tmp_path / "dl" / "notes.txt").exists()


# ---- 14: deadlines on the TCP fallback -----------------------------------------------------

def tcp_service(**kwargs):
    from parley_server.transfer_service import TransferService

    svc = TransferService("127.0.0.1", **kwargs)
    svc.start()
    return svc


def test_tricklers_do_not_hold_the_tcp_fallback(tmp_path):
    from parley_client.download import Download

    svc = tcp_service()
    tricklers = []
    try:
        src = tmp_path / "src.bin"
        data = make_file(src, 2_000_000)
        sha = hashlib.sha256(data).hexdigest()
        for _ in range(20):
            t = socket.create_connection(("127.0.0.1", svc.tcp_port), timeout=10)
            t.sendall(b"\x00")
            tricklers.append(t)
        offer = svc.offer(src, len(data), sha, "127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
            blackhole.bind(("127.0.0.1", 0))          # UDP goes nowhere: TCP it is
            offer["udp_port"] = blackhole.getsockname()[1]
            started = time.monotonic()
            d = Download(offer, "127.0.0.1", tmp_path / "out.bin",
                         on_progress=lambda p: None, udp_timeout=0.3)
            d.start()
            d.join(30)
        assert d.progress.state == "done", d.progress.message
        assert d.progress.transport == "tcp"
        assert time.monotonic() - started < 2.5   # not after the tricklers were dropped
        # The tricklers keep trickling, and are cut off by the request deadline.
        cut = 0
        deadline = time.monotonic() + 8
        for t in tricklers:
            t.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    t.sendall(b"\x00")
                    if t.recv(100) == b"":
                        cut += 1
                        break
                except TimeoutError:
                    continue
                except OSError:
                    cut += 1
                    break
        assert cut == 20
    finally:
        for t in tricklers:
            t.close()
        svc.shutdown()


def test_a_slow_reader_of_the_tcp_fallback_is_given_up(tmp_path):
    from protocol import transfer_wire as wire

    svc = tcp_service(idle_limit=1.0)
    try:
        src = tmp_path / "src.bin"
        size = 64 << 20
        sparse_file(src, size)
        offer = svc.offer(src, size, "0" * 64, "127.0.0.1")
        conn = socket.create_connection(("127.0.0.1", svc.tcp_port), timeout=10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        with conn:
            conn.sendall(wire.encode_tcp_request(offer["transfer_id"],
                                                 bytes.fromhex(offer["token"]), 0))
            got = 0
            started = time.monotonic()
            while time.monotonic() - started < 20:
                try:
                    chunk = conn.recv(16 * 1024)   # 32 KiB/s: far too slow for 64 MB
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += len(chunk)
                time.sleep(0.5)                # the slow reader itself, not synchronisation
            else:
                pytest.fail("the server kept feeding a reader at 32 KiB/s")
        assert got < size
        deadline = time.monotonic() + 5
        while svc._workers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not svc._workers
    finally:
        svc.shutdown()


# ---- 21b: IPv6 hosts ------------------------------------------------------------------------

def _download_from(svc, host: str, client_ip: str, tmp_path: Path, *, blackhole_udp=False):
    from parley_client.download import Download

    src = tmp_path / "src.bin"
    data = make_file(src, 1_000_000)
    offer = svc.offer(src, len(data), hashlib.sha256(data).hexdigest(), client_ip)
    hole = None
    if blackhole_udp:
        hole = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        hole.bind(("::1", 0))
        offer["udp_port"] = hole.getsockname()[1]
    try:
        dest = tmp_path / "dl" / f"out-{host}.bin".replace(":", "_")
        d = Download(offer, host, dest, on_progress=lambda p: None, udp_timeout=0.5)
        d.start()
        d.join(30)
    finally:
        if hole is not None:
            hole.close()
    assert d.progress.state == "done", d.progress.message
    assert dest.read_bytes() == data
    return d.progress


def test_the_transfer_service_on_ipv6_loopback(tmp_path):
    from parley_server.transfer_service import TransferService

    svc = TransferService("::1")
    svc.start()
    try:
        assert svc._udp.family == socket.AF_INET6
        assert _download_from(svc, "::1", "::1", tmp_path).transport == "udp"
        assert _download_from(svc, "::1", "::1", tmp_path, blackhole_udp=True).transport == "tcp"
    finally:
        svc.shutdown()


def test_the_transfer_service_on_all_addresses_serves_ipv4_and_ipv6(tmp_path):
    from parley_server.transfer_service import TransferService

    svc = TransferService("::")
    svc.start()
    try:
        assert _download_from(svc, "::1", "::1", tmp_path).transport == "udp"
        # An IPv4 client of the dual-stack socket (offered as the chat server sees it).
        assert _download_from(svc, "127.0.0.1", "::ffff:127.0.0.1", tmp_path).transport == "udp"
        assert _download_from(svc, "127.0.0.1", "127.0.0.1", tmp_path).transport == "udp"
    finally:
        svc.shutdown()


def test_a_server_on_ipv6_loopback_lists_and_serves_files(tmp_path):
    """Needs the chat listener's own IPv6 support (chat_server.py) as well."""
    from parley_client.download import Download

    data = make_file(tmp_path / "files" / "notes.txt", 500_000)
    with running_server(tmp_path, tls=False, host="::1") as srv, \
            WireClient("::1", srv.port, tls=False) as alice:
        alice.register("alice")
        assert [f["name"] for f in alice.call(m.ListFiles)["files"]] == ["notes.txt"]
        offer = alice.call(m.Download, name="notes.txt", offset=0)
        d = Download(offer, "::1", tmp_path / "dl" / "notes.txt", on_progress=lambda p: None)
        d.start()
        d.join(30)
        assert d.progress.state == "done", d.progress.message
        assert d.progress.transport == "udp"
        assert (tmp_path / "dl" / "notes.txt").read_bytes() == data


# ---- 23: names that never overwrite, hide or collide ---------------------------------------

def _offer_and_download(svc, src: Path, dest: Path):
    from parley_client.download import Download

    data = src.read_bytes()
    offer = svc.offer(src, len(data), hashlib.sha256(data).hexdigest(), "127.0.0.1")
    d = Download(offer, "127.0.0.1", dest, on_progress=lambda p: None)
    d.start()
    d.join(30)
    assert d.progress.state == "done", d.progress.message
    return d.progress


def test_a_download_never_overwrites_a_file_in_the_download_folder(tmp_path):
    svc = tcp_service()
    try:
        src = tmp_path / "report.pdf"
        data = make_file(src, 200_000)
        folder = tmp_path / "Downloads"
        folder.mkdir()
        (folder / "report.pdf").write_bytes(b"my own notes")
        (folder / "data.tar.gz").write_bytes(b"mine too")
        first = _offer_and_download(svc, src, folder / "report.pdf")
        second = _offer_and_download(svc, src, folder / "report.pdf")
        assert (folder / "report.pdf").read_bytes() == b"my own notes"
        assert first.path == folder / "report (1).pdf" and first.name == "report (1).pdf"
        assert second.path == folder / "report (2).pdf"
        assert first.path.read_bytes() == second.path.read_bytes() == data
        tarball = _offer_and_download(svc, src, folder / "data.tar.gz")
        assert tarball.path == folder / "data (1).tar.gz"
        assert (folder / "data.tar.gz").read_bytes() == b"mine too"
        assert sorted(p.name for p in folder.iterdir()) == [
            "data (1).tar.gz", "data.tar.gz", "report (1).pdf", "report (2).pdf", "report.pdf"]
    finally:
        svc.shutdown()


def test_a_download_is_never_saved_under_a_hidden_name(tmp_path):
    svc = tcp_service()
    try:
        src = tmp_path / "src.bin"
        data = make_file(src, 100_000)
        home = tmp_path / "home"
        home.mkdir()
        (home / ".bashrc").write_bytes(b"alias ls='ls -F'\n")
        progress = _offer_and_download(svc, src, home / ".bashrc")
        assert progress.path == home / "bashrc"
        assert (home / "bashrc").read_bytes() == data
        assert (home / ".bashrc").read_bytes() == b"alias ls='ls -F'\n"
        assert sorted(p.name for p in home.iterdir()) == [".bashrc", "bashrc"]
    finally:
        svc.shutdown()


def test_an_upload_differing_only_in_case_gets_a_free_name(tmp_path):
    import base64

    make_file(tmp_path / "files" / "report.pdf", 1000)
    with running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as alice:
        alice.register("alice")
        data = b"the new report"
        up = alice.call(m.UploadBegin, name="Report.PDF", size=len(data),
                        sha256=hashlib.sha256(data).hexdigest())
        alice.call(m.UploadChunk, upload_id=up["upload_id"], offset=0,
                   data=base64.b64encode(data).decode())
        done = alice.call(m.UploadEnd, upload_id=up["upload_id"])
        assert done["file"]["name"] == "Report (1).PDF"
        names = sorted(p.name for p in srv.files_dir.iterdir() if not p.name.startswith("."))
        assert names == ["Report (1).PDF", "report.pdf"]
        assert (srv.files_dir / "Report (1).PDF").read_bytes() == data
        listed = [f["name"] for f in alice.call(m.ListFiles)["files"]]
        assert sorted(listed) == ["Report (1).PDF", "report.pdf"]


def test_files_put_in_by_hand_that_differ_only_in_case_are_listed_with_a_warning(tmp_path,
                                                                                  caplog):
    make_file(tmp_path / "files" / "notes.txt", 100)
    make_file(tmp_path / "files" / "NOTES.txt", 200, seed=2)
    with caplog.at_level(logging.WARNING, logger="parley_server.library"), \
            running_server(tmp_path, tls=False) as srv, \
            WireClient(srv.host, srv.port, tls=False) as alice:
        alice.register("alice")
        listed = [f["name"] for f in alice.call(m.ListFiles)["files"]]
        assert listed == ["NOTES.txt", "notes.txt"]
    warnings = [r.getMessage() for r in caplog.records if "letter case" in r.getMessage()]
    assert len(warnings) == 1 and "NOTES.txt, notes.txt" in warnings[0]


_ACCEPT_OUT_OF_DESCRIPTORS = r"""
import os, resource, sys, time
from parley_server.transfer_service import TransferService

svc = TransferService("127.0.0.1")
svc.start()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
hog = []
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print(svc.tcp_port, flush=True)
sys.stdin.readline()                   # the parent has connected: accept() now fails
cpu, wall = time.process_time(), time.monotonic()
time.sleep(1.0)                        # the measurement window
print(f"{time.process_time() - cpu:.3f}", flush=True)
for fd in hog:
    os.close(fd)
sys.stdin.readline()
svc.shutdown()
"""


def test_the_tcp_fallback_does_not_spin_when_out_of_descriptors(tmp_path):
    from protocol import transfer_wire as wire

    child = subprocess.Popen([sys.executable, "-c", _ACCEPT_OUT_OF_DESCRIPTORS], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        with conn:
            child.stdin.write("go\n")
            child.stdin.flush()
            cpu = float(child.stdout.readline())
            assert cpu < 0.3, f"the service thread used {cpu:.2f} s of CPU in 1 s"
            # Descriptors are back: the waiting connection is served (refused: no offer).
            conn.sendall(wire.encode_tcp_request(1, bytes(16), 0))
            reply = conn.recv(100)
            assert wire.decode_tcp_reply(reply)[1] == wire.TCP_REFUSED
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait(10)


def test_a_flood_of_download_requests_leaves_the_server_usable(tmp_path):
    """Issue 11 item 4 through server.py with few descriptors: one user asking for a
    thousand downloads gets refused in words, and the server keeps its files, its listing
    and its connections for everyone else."""
    import base64
    import resource

    from serverutil import free_port, server_process

    make_file(tmp_path / "files" / "notes.txt", 50_000)
    port = free_port()
    with server_process(tmp_path, port, "--no-tls") as proc, \
            WireClient("127.0.0.1", port, tls=False) as alice:
        alice.register("alice")
        in_use = len(os.listdir(f"/proc/{proc.pid}/fd"))
        limit = in_use + 40
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
        codes = []
        for _ in range(1000):
            try:
                alice.call(m.Download, name="notes.txt", offset=0)
                codes.append("ok")
            except ReplyError as exc:
                codes.append(exc.code)
        assert set(codes) == {"ok", "too_many_downloads"}, set(codes)
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) < limit - 20
        with WireClient("127.0.0.1", port, tls=False, timeout=5) as bob:
            bob.register("bob")
            assert [f["name"] for f in bob.call(m.ListFiles)["files"]] == ["notes.txt"]
            data = b"bob's notes"
            up = bob.call(m.UploadBegin, name="bob.txt", size=len(data),
                          sha256=hashlib.sha256(data).hexdigest())
            bob.call(m.UploadChunk, upload_id=up["upload_id"], offset=0,
                     data=base64.b64encode(data).decode())
            assert bob.call(m.UploadEnd, upload_id=up["upload_id"])["file"]["name"] \
                == "bob.txt"
        assert not any(isinstance(ev, m.FileRemoved) for ev in alice.inbox)
