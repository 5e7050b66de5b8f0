"""Real UDP/TCP downloads on 127.0.0.1: TransferService + Download, real files in tmp_path."""

from __future__ import annotations

import hashlib
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from parley_client.download import Download, part_path, resume_offset, state_path
from parley_server.transfer_service import TransferService
from protocol import transfer_wire as wire

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0


@pytest.fixture
def service():
    svc = TransferService("127.0.0.1")
    svc.start()
    yield svc
    svc.shutdown()


def make_file(path: Path, size: int, seed: int = 1) -> tuple[Path, str]:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    data = bytes(b ^ (i * 7 & 0xFF) for i, b in enumerate(data[:4096])) + data[4096:]
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def download(offer: dict, dest: Path, **kwargs) -> tuple[Download, list]:
    events: list = []
    d = Download(offer, "127.0.0.1", dest, on_progress=events.append, **kwargs)
    d.start()
    d.join(WAIT)
    assert not d.is_alive(), "download thread did not finish"
    return d, events


def wait_until(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.mark.parametrize("size,block", [(0, None), (1, None), (1400 * 300, None),
                                        (3_000_001, None), (5_000_000, 60000)])
def test_download_over_udp(service, tmp_path, size, block):
    src, sha = make_file(tmp_path / "src.bin", size)
    offer = service.offer(src, size, sha, "127.0.0.1", block_size=block)
    assert offer["block_size"] == (block or 1400)
    dest = tmp_path / "dl" / "file.bin"
    d, events = download(offer, dest)
    assert d.progress.state == "done", d.progress.message
    assert d.progress.transport == "udp"
    assert dest.read_bytes() == src.read_bytes()
    assert not part_path(dest).exists() and not state_path(dest).exists()
    states = [e.state for e in events]
    assert states[0] == "connecting" and states[-2:] == ["verifying", "done"]
    wait_until(lambda: service.active_count() == 0)


def test_large_blocks_spliced_and_copied_arrive_intact(service, tmp_path):
    # 61440-byte blocks from offset 0 are spliced; the odd-sized last block, and every block
    # of a resume from an odd offset, take the copying path. Both must arrive byte-identical.
    size = 61440 * 40 + 12_345
    src, sha = make_file(tmp_path / "src.bin", size)
    dest = tmp_path / "whole.bin"
    d, _ = download(service.offer(src, size, sha, "127.0.0.1", block_size=61440), dest)
    assert d.progress.state == "done", d.progress.message
    assert dest.read_bytes() == src.read_bytes()
    if sys.platform == "linux":
        assert service.splice_used
    resumed, offset = tmp_path / "resumed.bin", 1_234_567
    part_path(resumed).write_bytes(src.read_bytes()[:offset])
    state_path(resumed).write_text(json.dumps({"sha256": sha, "size": size,
                                               "received": offset}))
    assert resume_offset(resumed, sha) == offset
    offer = service.offer(src, size, sha, "127.0.0.1", offset=offset, block_size=61440)
    d, _ = download(offer, resumed)
    assert d.progress.state == "done", d.progress.message
    assert resumed.read_bytes() == src.read_bytes()
    wait_until(lambda: service.active_count() == 0)


def test_large_block_refused_off_loopback(service, tmp_path):
    src, sha = make_file(tmp_path / "src.bin", 10)
    assert service.offer(src, 10, sha, "192.0.2.7", block_size=60000)["block_size"] == 1400


def test_two_downloads_at_once(service, tmp_path):
    files = [make_file(tmp_path / f"src{i}.bin", 4_000_000 + i, seed=i) for i in range(2)]
    downloads = []
    for i, (src, sha) in enumerate(files):
        offer = service.offer(src, src.stat().st_size, sha, "127.0.0.1")
        d = Download(offer, "127.0.0.1", tmp_path / f"out{i}.bin", on_progress=lambda p: None)
        downloads.append(d)
    for d in downloads:
        d.start()
    for d in downloads:
        d.join(WAIT)
    for i, d in enumerate(downloads):
        assert d.progress.state == "done", d.progress.message
        assert (tmp_path / f"out{i}.bin").read_bytes() == files[i][0].read_bytes()


def paused_download(service, src, sha, dest, offset=0):
    """A Download whose progress callback parks the thread mid-transfer until released."""
    offer = service.offer(src, src.stat().st_size, sha, "127.0.0.1", offset=offset)
    midway, release = threading.Event(), threading.Event()

    def on_progress(p):
        if p.state == "running" and p.received > offer["offset"] and not midway.is_set():
            midway.set()
            release.wait(WAIT)

    d = Download(offer, "127.0.0.1", dest, on_progress=on_progress)
    d.start()
    return d, midway, release


def test_cancel_then_resume(service, tmp_path):
    size = 30_000_000
    src, sha = make_file(tmp_path / "src.bin", size)
    dest = tmp_path / "out.bin"
    d, midway, release = paused_download(service, src, sha, dest)
    assert midway.wait(WAIT)
    d.cancel()
    release.set()
    d.join(WAIT)
    assert not d.is_alive() and d.progress.state == "cancelled"
    assert not dest.exists() and part_path(dest).exists()
    offset = resume_offset(dest, sha)
    assert 0 < offset < size
    assert resume_offset(dest, "0" * 64) == 0          # state of another file version
    offer = service.offer(src, size, sha, "127.0.0.1", offset=offset)
    d2, _ = download(offer, dest)
    assert d2.progress.state == "done", d2.progress.message
    assert dest.read_bytes() == src.read_bytes()


CHILD = r"""
import sys, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from parley_client.download import Download, resume_offset
offer = eval(sys.argv[2]); dest = Path(sys.argv[3]); hold = threading.Event()
def on_progress(p):
    if p.state == "running" and resume_offset(dest) > 0:
        print("CHECKPOINTED", flush=True)
        hold.wait()              # park mid-transfer until the parent kills us
d = Download(offer, "127.0.0.1", dest, on_progress=on_progress, checkpoint_interval=0.0)
d.start(); d.join(60)
"""


def test_resume_after_client_process_killed(service, tmp_path):
    size = 6_000_000
    src, sha = make_file(tmp_path / "src.bin", size)
    dest = tmp_path / "out.bin"
    offer = service.offer(src, size, sha, "127.0.0.1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), repr(offer), str(dest)],
                             stdout=subprocess.PIPE, text=True)
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(child.stdout.readline()), daemon=True).start()
        assert lines.get(timeout=WAIT).strip() == "CHECKPOINTED"
    finally:
        child.kill()
        child.wait(WAIT)
    offset = resume_offset(dest, sha)
    assert 0 < offset < size
    d, _ = download(service.offer(src, size, sha, "127.0.0.1", offset=offset), dest)
    assert d.progress.state == "done", d.progress.message
    assert dest.read_bytes() == src.read_bytes()


def test_cancel_stops_promptly_while_connecting(tmp_path):
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 0))
    with blackhole:
        offer = {"transfer_id": 1, "token": "00" * 16, "size": 10, "sha256": "0" * 64,
                 "block_size": 1400, "offset": 0, "udp_port": blackhole.getsockname()[1],
                 "tcp_port": 1, "expires_in": 30.0}
        states: queue.Queue = queue.Queue()
        d = Download(offer, "127.0.0.1", tmp_path / "x.bin", on_progress=lambda p: states.put(p))
        d.start()
        assert states.get(timeout=WAIT).state == "connecting"
        started = time.monotonic()
        d.cancel()
        d.join(WAIT)
        assert time.monotonic() - started < 1.0
        assert d.progress.state == "cancelled"
        assert wire.peek(blackhole.recv(100)) in ((wire.START, 1), (wire.ABORT, 1))


def test_tcp_fallback_when_udp_is_blackholed(service, tmp_path):
    size = 3_000_000
    src, sha = make_file(tmp_path / "src.bin", size)
    offer = service.offer(src, size, sha, "127.0.0.1")
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 0))                 # bound, never read: UDP goes nowhere
    with blackhole:
        offer["udp_port"] = blackhole.getsockname()[1]
        d, events = download(offer, tmp_path / "out.bin", udp_timeout=0.5)
    assert d.progress.state == "done", d.progress.message
    assert d.progress.transport == "tcp"
    assert "fallback-tcp" in [e.state for e in events]
    assert any("TCP" in e.message for e in events if e.state == "fallback-tcp")
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()


def test_tcp_fallback_refuses_a_wrong_token(service, tmp_path):
    src, sha = make_file(tmp_path / "src.bin", 1000)
    offer = service.offer(src, 1000, sha, "127.0.0.1")
    with socket.create_connection(("127.0.0.1", offer["tcp_port"]), timeout=WAIT) as conn:
        conn.sendall(wire.encode_tcp_request(offer["transfer_id"], bytes(16), 0))
        reply = conn.recv(100)
    assert wire.decode_tcp_reply(reply)[1] == wire.TCP_REFUSED


def test_hash_mismatch_never_renames(service, tmp_path):
    size = 500_000
    src, sha = make_file(tmp_path / "src.bin", size)
    wrong = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "out.bin"
    d, events = download(service.offer(src, size, wrong, "127.0.0.1"), dest)
    assert d.progress.state == "failed" and "SHA-256" in d.progress.message
    assert not dest.exists() and not part_path(dest).exists()
    assert "done" not in [e.state for e in events]


def test_wrong_token_gets_nothing_back(service, tmp_path):
    src, sha = make_file(tmp_path / "src.bin", 100_000)
    offer = service.offer(src, 100_000, sha, "127.0.0.1")
    tid = offer["transfer_id"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("127.0.0.1", offer["udp_port"]))
        probe.settimeout(0.5)
        for bad in (wire.encode_start(tid, bytes(16), 64), wire.encode_start(tid + 1, bytes(16), 64),
                    b"junk" * 10, wire.encode_ack(tid, 5, 64, 1, [])):
            probe.send(bad)
        with pytest.raises(TimeoutError):
            probe.recv(65536)
        # The same socket with the right token is served: the silence above was a refusal.
        probe.settimeout(WAIT)
        probe.send(wire.encode_start(tid, bytes.fromhex(offer["token"]), 64))
        assert wire.peek(probe.recv(65536)) == (wire.DATA, tid)


def test_expired_offer_is_cleaned_up(tmp_path):
    svc = TransferService("127.0.0.1", token_ttl=0.2)
    svc.start()
    try:
        src, sha = make_file(tmp_path / "src.bin", 1000)
        offer = svc.offer(src, 1000, sha, "127.0.0.1")
        assert svc.active_count() == 1
        wait_until(lambda: svc.active_count() == 0, timeout=5.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("127.0.0.1", offer["udp_port"]))
            probe.settimeout(0.3)
            probe.send(wire.encode_start(offer["transfer_id"], bytes.fromhex(offer["token"]), 64))
            with pytest.raises(TimeoutError):
                probe.recv(65536)
    finally:
        svc.shutdown()


def test_shutdown_is_bounded_with_a_transfer_in_flight(tmp_path):
    svc = TransferService("127.0.0.1")
    svc.start()
    # Bigger than the receive window: the server cannot finish without further ACKs.
    src, sha = make_file(tmp_path / "src.bin", 20_000_000)
    d, midway, release = paused_download(svc, src, sha, tmp_path / "out.bin")
    try:
        assert midway.wait(WAIT)
        started = time.monotonic()
        svc.shutdown()
        assert time.monotonic() - started < 5.0
        assert not any(t.name.startswith("transfer-") for t in threading.enumerate())
    finally:
        release.set()
        d.join(WAIT)
    assert d.progress.state == "failed"                 # told by ABORT, or idle limit
    assert part_path(tmp_path / "out.bin").exists() and not (tmp_path / "out.bin").exists()
