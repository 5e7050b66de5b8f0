"""UploadManager on real files (tmp_path) and a real SQLite database."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from pathlib import Path

import pytest

from parley_server.filenames import (
    MAX_NAME_BYTES,
    WINDOWS_FORBIDDEN_CHARS,
    WINDOWS_RESERVED_STEMS,
    numbered_name,
)
from parley_server.library import FileLibrary, LibraryError
from parley_server.uploads import TEMP_PREFIX, TEMP_SUFFIX, UploadError, UploadManager

WAIT = 10.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    d = tmp_path / "files"
    d.mkdir()
    return d


@pytest.fixture
def library(tmp_path, files):
    changes: queue.Queue = queue.Queue()
    lib = FileLibrary(
        files, tmp_path / "data" / "files.sqlite3", scan_interval=3600,
        on_change=lambda changed, removed: changes.put((changed, removed)),
    )
    lib.changes = changes  # test-side handle on what was reported
    lib.start()
    yield lib
    lib.close()


@pytest.fixture
def manager(library):
    mgr = UploadManager(library, max_upload=1_000_000)
    yield mgr
    mgr.close()


def upload(mgr: UploadManager, name: str, data: bytes, *, user: str = "alice",
           declare_hash: bool = True, chunk: int = 7000):
    up = mgr.begin(user, name, len(data), sha(data) if declare_hash else None)
    for offset in range(0, len(data), chunk):
        mgr.write(up.upload_id, offset, data[offset:offset + chunk])
    return mgr.finish(up.upload_id)


def temp_files(files: Path) -> list[str]:
    return sorted(p.name for p in files.iterdir() if p.name.startswith(TEMP_PREFIX))


def windows_safe(name: str) -> bool:
    """Independent statement of what Windows can hold, to check the sanitiser against."""
    stem = name.split(".")[0].rstrip(" ").upper()
    return (
        bool(name)
        and not any(ch in WINDOWS_FORBIDDEN_CHARS or ord(ch) < 32 or ord(ch) == 127 for ch in name)
        and stem not in WINDOWS_RESERVED_STEMS
        and not name.endswith((".", " "))
        and not name.startswith(".")
        and len(name.encode("utf-8")) <= MAX_NAME_BYTES
    )


def test_happy_path(files, library, manager):
    data = os.urandom(50_000)
    entry = upload(manager, "report.pdf", data)

    assert entry.name == "report.pdf"
    assert entry.size == len(data)
    assert entry.sha256 == sha(data)
    assert entry.uploader == "alice"
    assert (files / "report.pdf").read_bytes() == data
    assert temp_files(files) == []
    assert [e.name for e in library.list()] == ["report.pdf"]
    changed, removed = library.changes.get(timeout=WAIT)  # reported at once, not at next scan
    assert changed == [entry] and removed == []
    # The hash was primed: neither this library nor a rescan hashed the file again.
    assert library.refresh() == ([], [])
    assert library.files_hashed == 0
    assert library.sha256_of("report.pdf", timeout=0) == sha(data)


def test_upload_without_declared_hash_and_empty_file(files, manager):
    assert upload(manager, "notes.txt", b"no hash given", declare_hash=False).sha256 == sha(
        b"no hash given"
    )
    empty = upload(manager, "empty.txt", b"")
    assert empty.size == 0 and empty.sha256 == sha(b"")
    assert (files / "empty.txt").read_bytes() == b""


def test_uploader_survives_restart(tmp_path, files, manager, library):
    upload(manager, "shared.txt", b"from bob", user="bob")
    library.close()
    again = FileLibrary(files, tmp_path / "data" / "files.sqlite3")
    try:
        again.start()
        assert again.get("shared.txt").uploader == "bob"
        assert again.files_hashed == 0
    finally:
        again.close()


def test_collisions_get_numbered_names_and_never_overwrite(files, manager):
    (files / "report.pdf").write_bytes(b"original")
    first = upload(manager, "report.pdf", b"one")
    second = upload(manager, "report.pdf", b"two")
    archive = upload(manager, "data.tar.gz", b"a")
    archive2 = upload(manager, "data.tar.gz", b"b")
    noext = upload(manager, "README", b"r")
    noext2 = upload(manager, "README", b"r2")

    assert (first.name, second.name) == ("report (1).pdf", "report (2).pdf")
    assert (archive.name, archive2.name) == ("data.tar.gz", "data (1).tar.gz")
    assert (noext.name, noext2.name) == ("README", "README (1)")
    assert (files / "report.pdf").read_bytes() == b"original"
    assert (files / "report (1).pdf").read_bytes() == b"one"
    assert (files / "report (2).pdf").read_bytes() == b"two"


def test_concurrent_uploads_of_the_same_name_all_survive(files, manager):
    count = 8
    contents = [f"upload number {i}".encode() * 1000 for i in range(count)]
    uploads = [
        manager.begin(f"user{i}", "same.txt", len(d), sha(d)) for i, d in enumerate(contents)
    ]
    for up, data in zip(uploads, contents, strict=True):
        manager.write(up.upload_id, 0, data)
    barrier = threading.Barrier(count)
    results: queue.Queue = queue.Queue()

    def finish(upload_id: str) -> None:
        barrier.wait(timeout=WAIT)
        try:
            results.put(manager.finish(upload_id))
        except Exception as exc:  # reported to the test thread, which fails on it
            results.put(exc)

    threads = [threading.Thread(target=finish, args=(u.upload_id,)) for u in uploads]
    for t in threads:
        t.start()
    entries = [results.get(timeout=WAIT) for _ in threads]
    for t in threads:
        t.join(WAIT)

    assert all(not isinstance(e, Exception) for e in entries), entries
    expected_names = sorted(numbered_name("same.txt", n) for n in range(count))
    assert sorted(e.name for e in entries) == expected_names
    for entry in entries:
        assert hashlib.sha256((files / entry.name).read_bytes()).hexdigest() == entry.sha256
    assert {e.sha256 for e in entries} == {sha(d) for d in contents}
    assert temp_files(files) == []


def test_size_limit(files, manager):
    with pytest.raises(UploadError) as exc:
        manager.begin("alice", "huge.iso", 1_000_001)
    assert exc.value.code == "too_large"
    assert temp_files(files) == []
    for bad_size in (-1, 1.5, "10", True):
        with pytest.raises(UploadError) as exc:
            manager.begin("alice", "x.bin", bad_size)
        assert exc.value.code == "bad_size"


def test_more_data_than_declared_is_refused(files, manager):
    up = manager.begin("alice", "x.bin", 10)
    manager.write(up.upload_id, 0, b"12345678")
    with pytest.raises(UploadError) as exc:
        manager.write(up.upload_id, 8, b"9ab")
    assert exc.value.code == "size_exceeded"
    # The refused chunk was not written; the upload carries on.
    manager.write(up.upload_id, 8, b"9a")
    assert (files / manager.finish(up.upload_id).name).read_bytes() == b"123456789a"


def test_bad_offset_is_refused_and_upload_can_resume(files, manager):
    up = manager.begin("alice", "x.bin", 6)
    with pytest.raises(UploadError) as exc:
        manager.write(up.upload_id, 3, b"def")
    assert exc.value.code == "bad_offset"
    assert manager.write(up.upload_id, 0, b"abc") == 3
    with pytest.raises(UploadError) as exc:
        manager.write(up.upload_id, 0, b"abc")  # a duplicated chunk
    assert exc.value.code == "bad_offset"
    assert manager.write(up.upload_id, 3, b"def") == 6
    assert (files / manager.finish(up.upload_id).name).read_bytes() == b"abcdef"


def test_hash_mismatch_discards_the_upload(files, library, manager):
    up = manager.begin("alice", "x.bin", 4, sha(b"abcd"))
    manager.write(up.upload_id, 0, b"abcX")
    with pytest.raises(UploadError) as exc:
        manager.finish(up.upload_id)
    assert exc.value.code == "hash_mismatch"
    assert list(files.iterdir()) == []
    assert library.list() == []
    with pytest.raises(UploadError) as exc:
        manager.write(up.upload_id, 4, b"")
    assert exc.value.code == "unknown_upload"


def test_finish_before_all_data_arrived(files, manager):
    up = manager.begin("alice", "x.bin", 10)
    manager.write(up.upload_id, 0, b"12345")
    with pytest.raises(UploadError) as exc:
        manager.finish(up.upload_id)
    assert exc.value.code == "incomplete"
    assert list(files.iterdir()) == []


def test_bad_declared_hash(manager):
    for bad in ("abc", "z" * 64, 123):
        with pytest.raises(UploadError) as exc:
            manager.begin("alice", "x.bin", 1, bad)
        assert exc.value.code == "bad_hash"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CON", "CON_"),
        ("con.txt", "con_.txt"),
        ("PRN.doc", "PRN_.doc"),
        ("aux", "aux_"),
        ("Nul.tar.gz", "Nul_.tar.gz"),
        ("COM1.txt", "COM1_.txt"),
        ("com9", "com9_"),
        ("LPT1.log", "LPT1_.log"),
        ("lpt9.x.y", "lpt9_.x.y"),
        ("COM\u00b9.txt", "COM\u00b9_.txt"),
        ("AUX .txt", "AUX _.txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),  # only the exact device names are special
        ("report.", "report"),
        ("report.pdf. . ", "report.pdf"),
        ("  spaced  ", "spaced"),
        ("a<b>c:d\"e|f?g*h.txt", "a_b_c_d_e_f_g_h.txt"),
        ("tab\there.txt", "tab_here.txt"),
        ("nul\x00byte.txt", "nul_byte.txt"),
        ("bell\x07\x7f\x9b.txt", "bell___.txt"),
        ("\u202egpj.exe", "_gpj.exe"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\win.ini", "win.ini"),
        ("\\\\server\\share\\x.txt", "x.txt"),
        ("C:evil.txt", "C_evil.txt"),
        ("folder/.bashrc", "bashrc"),
        ("..hidden..", "hidden"),
        ("Cafe\u0301.txt", "Caf\u00e9.txt"),  # NFC: one spelling per name
        ("r\u00e9sum\u00e9.pdf", "r\u00e9sum\u00e9.pdf"),
    ],
)
def test_hostile_names_are_made_safe(files, library, manager, raw, expected):
    entry = upload(manager, raw, b"payload")
    assert entry.name == expected
    assert windows_safe(entry.name)
    assert (files / expected).read_bytes() == b"payload"
    assert [e.name for e in library.list()] == [expected]
    assert library.resolve(expected) == files.resolve() / expected


def test_long_names_are_shortened_keeping_the_extension(files, manager):
    entry = upload(manager, "\u00e9" * 300 + ".pdf", b"x")
    assert entry.name.endswith(".pdf")
    assert len(entry.name.encode("utf-8")) <= MAX_NAME_BYTES
    assert windows_safe(entry.name)
    again = upload(manager, "\u00e9" * 300 + ".pdf", b"y")
    assert again.name.endswith(" (1).pdf") and again.name != entry.name


@pytest.mark.parametrize("raw", ["", "...", "   ", "///", "a/", "dir\\", ". . .", None, 42])
def test_names_empty_after_sanitising_are_refused(files, manager, raw):
    with pytest.raises(UploadError) as exc:
        manager.begin("alice", raw, 1)
    assert exc.value.code == "bad_name"
    assert list(files.iterdir()) == []


def test_temp_files_are_never_listed_or_served(files, library, manager):
    up = manager.begin("alice", "draft.txt", 10)
    manager.write(up.upload_id, 0, b"hello")
    temps = temp_files(files)
    assert len(temps) == 1
    library.refresh()
    assert library.list() == []
    with pytest.raises(LibraryError) as exc:
        library.resolve(temps[0])
    assert exc.value.code == "bad_path"
    assert not (files / "draft.txt").exists()  # nothing under the final name until finish


def test_abort_removes_the_temp_file(files, manager):
    up = manager.begin("alice", "x.bin", 10)
    manager.write(up.upload_id, 0, b"12345")
    assert manager.abort(up.upload_id) is True
    assert temp_files(files) == []
    assert manager.abort(up.upload_id) is False
    with pytest.raises(UploadError) as exc:
        manager.write(up.upload_id, 5, b"67890")
    assert exc.value.code == "unknown_upload"
    with pytest.raises(UploadError) as exc:
        manager.finish(up.upload_id)
    assert exc.value.code == "unknown_upload"


def test_abort_user_only_removes_that_users_uploads(files, manager):
    mine = [manager.begin("alice", f"a{i}.txt", 3) for i in range(2)]
    theirs = manager.begin("bob", "b.txt", 3)
    for up in (*mine, theirs):
        manager.write(up.upload_id, 0, b"ab")
    assert manager.abort_user("alice") == 2
    assert len(temp_files(files)) == 1
    manager.write(theirs.upload_id, 2, b"c")
    assert manager.finish(theirs.upload_id).name == "b.txt"
    assert temp_files(files) == []


def test_another_users_upload_id_is_unknown(manager):
    up = manager.begin("alice", "x.bin", 3)
    with pytest.raises(UploadError) as exc:
        manager.write(up.upload_id, 0, b"abc", user="mallory")
    assert exc.value.code == "unknown_upload"
    with pytest.raises(UploadError) as exc:
        manager.finish(up.upload_id, user="mallory")
    assert exc.value.code == "unknown_upload"
    assert manager.write(up.upload_id, 0, b"abc", user="alice") == 3


def test_per_user_limit_on_uploads_in_progress(manager):
    for i in range(4):
        manager.begin("alice", f"{i}.txt", 1)
    with pytest.raises(UploadError) as exc:
        manager.begin("alice", "5.txt", 1)
    assert exc.value.code == "too_many_uploads"
    manager.begin("bob", "fine.txt", 1)  # others are not affected


def test_leftovers_of_a_killed_server_are_removed_at_start(files, library):
    crashed = UploadManager(library)
    up = crashed.begin("alice", "big.iso", 100)
    crashed.write(up.upload_id, 0, b"x" * 50)
    # Simulate kill -9: the manager is never closed and its temp file stays behind.
    leftover = TEMP_PREFIX + "0" * 32 + TEMP_SUFFIX
    (files / leftover).write_bytes(b"older leftover")
    unrelated = files / ".parley-upload-notes.txt"  # not our naming pattern: left alone
    unrelated.write_bytes(b"keep")
    assert len(temp_files(files)) == 3

    restarted = UploadManager(library)
    try:
        assert temp_files(files) == [unrelated.name]
    finally:
        restarted.close()


def test_sweep_removes_stale_uploads_and_orphans(files, library):
    mgr = UploadManager(library, stale_after=1.0)
    try:
        active = mgr.begin("alice", "slow.bin", 10)
        mgr.write(active.upload_id, 0, b"12")
        old_orphan = files / (TEMP_PREFIX + "a" * 32 + TEMP_SUFFIX)
        old_orphan.write_bytes(b"orphan")
        os.utime(old_orphan, (time.time() - 60, time.time() - 60))
        new_orphan = files / (TEMP_PREFIX + "b" * 32 + TEMP_SUFFIX)
        new_orphan.write_bytes(b"being created by someone right now")

        assert mgr.sweep() == 1  # only the old orphan: the upload is not idle yet
        assert not old_orphan.exists() and new_orphan.exists()

        # Poll (bounded) until the upload has been idle longer than stale_after.
        deadline = time.monotonic() + WAIT
        while mgr.in_progress():
            assert time.monotonic() < deadline, "stale upload was never swept"
            time.sleep(0.05)
            mgr.sweep()
        with pytest.raises(UploadError) as exc:
            mgr.write(active.upload_id, 2, b"34")
        assert exc.value.code == "unknown_upload"
        assert not os.path.exists(active.temp_path)
    finally:
        mgr.close()


def test_filesystem_without_hard_links(files, manager, monkeypatch):
    """FAT and some network shares refuse os.link; the O_EXCL fallback must still never
    overwrite."""
    def no_hard_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    (files / "x.txt").write_bytes(b"original")
    first = upload(manager, "x.txt", b"one")
    second = upload(manager, "x.txt", b"two")
    assert (first.name, second.name) == ("x (1).txt", "x (2).txt")
    assert (files / "x.txt").read_bytes() == b"original"
    assert (files / "x (1).txt").read_bytes() == b"one"
    assert (files / "x (2).txt").read_bytes() == b"two"
    assert temp_files(files) == []


def test_a_parked_upload_carries_on_where_it_stopped(files, library, manager):
    data = os.urandom(50_000)
    up = manager.begin("alice", "notes.pdf", len(data), sha(data))
    manager.write(up.upload_id, 0, data[:20_000])
    assert manager.park(up.upload_id)  # the connection went away
    assert temp_files(files) == [os.path.basename(up.temp_path)]  # what arrived is kept
    with pytest.raises(UploadError) as exc:  # nobody writes to it while parked
        manager.write(up.upload_id, 20_000, data[20_000:])
    assert exc.value.code == "unknown_upload"
    # Another user, another name or other content: a new upload, not this one.
    assert manager.begin("bob", "notes.pdf", len(data), sha(data)).received == 0
    other = data[:-1] + bytes([data[-1] ^ 1])
    assert manager.begin("alice", "notes.pdf", len(data), sha(other)).received == 0
    again = manager.begin("alice", "notes.pdf", len(data), sha(data))
    assert (again.upload_id, again.received) == (up.upload_id, 20_000)
    manager.write(again.upload_id, 20_000, data[20_000:])
    entry = manager.finish(again.upload_id)
    assert entry.sha256 == sha(data) and (files / "notes.pdf").read_bytes() == data


def test_parking_without_a_declared_hash_discards(files, manager):
    up = manager.begin("alice", "anon.bin", 10)
    manager.write(up.upload_id, 0, b"12345")
    assert manager.park(up.upload_id)
    assert temp_files(files) == []  # nothing to recognise it by when it comes back
    assert manager.begin("alice", "anon.bin", 10).received == 0


def test_parked_uploads_are_bounded_per_user_and_swept_when_stale(files, library):
    mgr = UploadManager(library, stale_after=1.0, max_active_per_user=2)
    try:
        parked = []
        for i in range(3):
            data = bytes([i]) * 100
            up = mgr.begin("alice", f"f{i}.bin", 100, sha(data))
            mgr.write(up.upload_id, 0, data[:50])
            mgr.park(up.upload_id)
            parked.append(up)
        # Each new one made room: at most max_active_per_user - 1 parked before a begin.
        assert [u.upload_id for u in mgr.in_progress("alice")] == \
            [u.upload_id for u in parked[1:]]
        assert not os.path.exists(parked[0].temp_path)
        deadline = time.monotonic() + WAIT
        while mgr.in_progress():
            assert time.monotonic() < deadline, "parked uploads were never swept"
            time.sleep(0.05)  # polling interval of a bounded wait
            mgr.sweep()
        assert temp_files(files) == []
    finally:
        mgr.close()
