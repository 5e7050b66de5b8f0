"""File sharing through the real chat server: listing, UDP downloads, uploads, change events."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serverutil import REPO, running_server
from wireclient import ReplyError, WireClient

from parley_client.download import Download, part_path, resume_offset, state_path
from protocol import messages as m


def make_file(path: Path, size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
    data = (block * (size // len(block) + 1))[:size]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path) as s:
        yield s


@pytest.fixture
def alice(srv):
    with WireClient(srv.host, srv.port) as c:
        c.register("alice")
        yield c


def run_download(client: WireClient, name: str, dest: Path, *, offset: int = 0, offer_edit=None,
                 on_progress=None, start: bool = True) -> Download:
    offer = client.call(m.Download, name=name, offset=offset)
    if offer_edit:
        offer = offer_edit(offer)
    d = Download(offer, "127.0.0.1", dest, on_progress=on_progress or (lambda p: None),
                 udp_timeout=1.5)
    if start:
        d.start()
    return d


def finished(d: Download, timeout: float = 60.0):
    d.join(timeout)
    assert not d.is_alive(), "download did not finish"
    return d.progress


def test_listing_shows_files_with_hashes_and_subfolders(srv, alice):
    data = make_file(srv.files_dir / "notes.txt", 1000)
    make_file(srv.files_dir / "handouts" / "week1.pdf", 5000)
    (srv.files_dir / ".hidden").write_text("secret")
    alice.call(m.ListFiles)  # the watcher may need a scan; ask until both are listed
    deadline = time.monotonic() + 5
    while True:
        files = {f["name"]: f for f in alice.call(m.ListFiles)["files"]}
        if {"notes.txt", "handouts/week1.pdf"} <= set(files) or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling interval inside a bounded wait
    assert files["notes.txt"]["size"] == 1000
    assert files["notes.txt"]["sha256"] in (None, hashlib.sha256(data).hexdigest())
    assert ".hidden" not in files and "handouts/week1.pdf" in files


def test_download_is_byte_identical_and_verified(srv, alice, tmp_path):
    data = make_file(srv.files_dir / "video.bin", 3_000_000 + 17)
    dest = tmp_path / "dl" / "video.bin"
    dest.parent.mkdir()
    states = []
    p = finished(run_download(alice, "video.bin", dest, on_progress=lambda p: states.append(p.state)))
    assert p.state == "done", p.message
    assert dest.read_bytes() == data
    assert not part_path(dest).exists() and not state_path(dest).exists()
    assert "verifying" in states and p.transport == "udp"


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "a/../../x", "x\x00y",
                                  ".hidden", "C:\\Windows\\win.ini", "..\\..\\x"])
def test_traversal_attempts_are_refused(srv, alice, name):
    (srv.files_dir / ".hidden").write_text("secret")
    with pytest.raises(ReplyError) as err:
        alice.call(m.Download, name=name)
    assert err.value.code == "bad_path"
    alice.call(m.Send, kind="public", target="", text="still fine")  # connection unharmed


def test_missing_file_is_not_found(alice):
    with pytest.raises(ReplyError) as err:
        alice.call(m.Download, name="nope.txt")
    assert err.value.code == "not_found"


def test_two_downloads_at_once_while_chat_flows(srv, alice, tmp_path):
    a = make_file(srv.files_dir / "a.bin", 20 << 20, seed=1)
    b = make_file(srv.files_dir / "b.bin", 20 << 20, seed=2)
    with WireClient(srv.host, srv.port) as bob:
        bob.register("bob")
        d1 = run_download(alice, "a.bin", tmp_path / "a.bin")
        d2 = run_download(alice, "b.bin", tmp_path / "b.bin")
        for i in range(30):
            alice.call(m.Send, kind="public", target="", text=f"chat {i}")
        got = [bob.wait_for(lambda e: isinstance(e, m.ChatMessage)).text for _ in range(30)]
        assert got == [f"chat {i}" for i in range(30)]
        assert finished(d1).state == "done" and finished(d2).state == "done"
    assert (tmp_path / "a.bin").read_bytes() == a and (tmp_path / "b.bin").read_bytes() == b


def test_cancel_keeps_part_then_resume_completes(srv, alice, tmp_path):
    data = make_file(srv.files_dir / "big.bin", 64 << 20)
    dest = tmp_path / "big.bin"
    started = threading.Event()

    def progress(p):
        if p.received > (4 << 20):
            started.set()

    d = run_download(alice, "big.bin", dest, on_progress=progress)
    assert started.wait(30)
    d.cancel()
    p = finished(d)
    if p.state == "done":
        pytest.skip("the machine finished 64 MiB before the cancel landed")
    assert p.state == "cancelled"
    assert not dest.exists() and part_path(dest).exists()
    offset = resume_offset(dest)
    assert offset > 0
    p = finished(run_download(alice, "big.bin", dest, offset=offset))
    assert p.state == "done", p.message
    assert dest.read_bytes() == data


KILLABLE = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from pathlib import Path
from wireclient import WireClient
from parley_client.download import Download
from protocol import messages as m
c = WireClient("127.0.0.1", {port})
c.register("carol")  # not alice: a second login would take over her session
offer = c.call(m.Download, name="big.bin")
def slow(p):  # a slow client (busy disk, weak machine): the kill lands mid-transfer
    if p.received > 1 << 20:
        time.sleep(0.05)
d = Download(offer, "127.0.0.1", Path({dest!r}), on_progress=slow, checkpoint_interval=0.05)
d.run()
"""


def test_resume_after_killing_the_client_mid_transfer(srv, alice, tmp_path):
    data = make_file(srv.files_dir / "big.bin", 96 << 20)
    dest = tmp_path / "big.bin"
    script = KILLABLE.format(repo=str(REPO), tests=str(REPO / "tests"), port=srv.port,
                             dest=str(dest))
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while resume_offset(dest) == 0:  # wait for a durable checkpoint
            assert proc.poll() is None or resume_offset(dest) > 0, "client ended early"
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.02)  # polling interval inside a bounded wait
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    if dest.exists():
        pytest.skip("the client finished before it was killed")
    offset = resume_offset(dest)
    assert offset > 0 and not dest.exists()
    p = finished(run_download(alice, "big.bin", dest, offset=offset))
    assert p.state == "done", p.message
    assert dest.read_bytes() == data


def test_falls_back_to_tcp_when_udp_is_blocked(srv, alice, tmp_path):
    data = make_file(srv.files_dir / "doc.pdf", 2_000_000)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a firewall: UDP vanishes
    blackhole.bind(("127.0.0.1", 0))
    try:
        def block_udp(offer):
            return {**offer, "udp_port": blackhole.getsockname()[1]}

        messages = []
        p = finished(run_download(alice, "doc.pdf", tmp_path / "doc.pdf", offer_edit=block_udp,
                                  on_progress=lambda p: messages.append((p.state, p.message))))
    finally:
        blackhole.close()
    assert p.state == "done" and p.transport == "tcp"
    assert any(state == "fallback-tcp" and "TCP" in msg for state, msg in messages)
    assert (tmp_path / "doc.pdf").read_bytes() == data


def upload(client: WireClient, name: str, data: bytes, sha: str | None = None) -> dict:
    r = client.call(m.UploadBegin, name=name, size=len(data),
                    sha256=sha or hashlib.sha256(data).hexdigest())
    step = r["chunk_size"]
    for off in range(0, len(data), step):
        client.call(m.UploadChunk, upload_id=r["upload_id"], offset=off,
                    data=base64.b64encode(data[off:off + step]).decode())
    return client.call(m.UploadEnd, upload_id=r["upload_id"])["file"]


def test_upload_announces_and_never_overwrites(srv, alice):
    with WireClient(srv.host, srv.port) as bob:
        bob.register("bob")
        first = upload(alice, "report.pdf", b"first version" * 1000)
        second = upload(alice, "report.pdf", b"second version")
        assert (first["name"], second["name"]) == ("report.pdf", "report (1).pdf")
        assert first["uploader"] == "alice"
        ev = bob.wait_for(lambda e: isinstance(e, m.FileAdded) and e.file["name"] == "report.pdf")
        assert ev.by == "alice"
        assert (srv.files_dir / "report.pdf").read_bytes() == b"first version" * 1000
        assert (srv.files_dir / "report (1).pdf").read_bytes() == b"second version"
        listed = {f["name"]: f for f in bob.call(m.ListFiles)["files"]}
        assert listed["report (1).pdf"]["uploader"] == "alice"


def test_upload_hostile_names_and_size_limit(tmp_path):
    with running_server(tmp_path, max_upload=1000) as srv, WireClient(srv.host, srv.port) as c:
        c.register("alice")
        with pytest.raises(ReplyError) as err:
            c.call(m.UploadBegin, name="big.iso", size=1001)
        assert err.value.code == "too_large"
        entry = upload(c, "../../etc/CON.txt", b"x" * 10)
        assert "/" not in entry["name"] and entry["name"] != "CON.txt"
        assert (srv.files_dir / entry["name"]).read_bytes() == b"x" * 10
        with pytest.raises(ReplyError) as err:
            upload(c, "fake.txt", b"data", sha="0" * 64)
        assert err.value.code == "hash_mismatch"
        assert "fake.txt" not in {f["name"] for f in c.call(m.ListFiles)["files"]}


def test_files_copied_in_or_deleted_by_hand_are_announced(srv, alice):
    make_file(srv.files_dir / "dropped.txt", 123)
    ev = alice.wait_for(lambda e: isinstance(e, m.FileAdded) and e.file["name"] == "dropped.txt")
    assert ev.file["size"] == 123 and ev.by is None
    os.unlink(srv.files_dir / "dropped.txt")
    ev = alice.wait_for(lambda e: isinstance(e, m.FileRemoved) and e.name == "dropped.txt")
    assert ev.name == "dropped.txt"


def test_an_upload_cut_off_by_a_lost_connection_resumes_on_the_next(srv):
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with WireClient(srv.host, srv.port) as c:
        c.register("alice")
        r = c.call(m.UploadBegin, name="lecture.mp4", size=len(data), sha256=digest)
        assert r["offset"] == 0
        step = r["chunk_size"]
        for off in range(0, 3 * step, step):
            c.call(m.UploadChunk, upload_id=r["upload_id"], offset=off,
                   data=base64.b64encode(data[off:off + step]).decode())
    # The connection is gone; a new one, the same user, the same file.
    with WireClient(srv.host, srv.port) as c:
        c.login("alice")
        again = c.call(m.UploadBegin, name="lecture.mp4", size=len(data), sha256=digest)
        assert (again["upload_id"], again["offset"]) == (r["upload_id"], 3 * step)
        for off in range(3 * step, len(data), step):
            c.call(m.UploadChunk, upload_id=again["upload_id"], offset=off,
                   data=base64.b64encode(data[off:off + step]).decode())
        entry = c.call(m.UploadEnd, upload_id=again["upload_id"])["file"]
    assert entry["name"] == "lecture.mp4" and entry["sha256"] == digest
    assert (srv.files_dir / "lecture.mp4").read_bytes() == data
