"""FileLibrary on real files (tmp_path) and a real SQLite database."""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import time
from pathlib import Path

import pytest

from parley_server.library import FileEntry, FileLibrary, LibraryError

WAIT = 10.0  # upper bound for anything a background thread should do in milliseconds


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    files = tmp_path / "files"
    files.mkdir()
    return files, tmp_path / "data" / "files.sqlite3"


@pytest.fixture
def make_library(dirs):
    made: list[FileLibrary] = []

    def make(**kwargs) -> FileLibrary:
        files, db = dirs
        lib = FileLibrary(files, db, **kwargs)
        made.append(lib)
        return lib

    yield make
    for lib in made:
        lib.close()


def names(lib: FileLibrary) -> list[str]:
    return [e.name for e in lib.list()]


def collect_changes() -> tuple[queue.Queue, object]:
    q: queue.Queue = queue.Queue()
    return q, lambda changed, removed: q.put((list(changed), list(removed)))


def wait_for(q: queue.Queue, predicate, timeout: float = WAIT):
    """Take reports off the on_change queue until one satisfies predicate (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("expected change was not reported in time")
        changed, removed = q.get(timeout=remaining)
        if predicate(changed, removed):
            return changed, removed


def test_lists_files_with_subfolders(dirs, make_library):
    files, _ = dirs
    (files / "welcome.txt").write_bytes(b"hello")
    (files / "handouts" / "week1").mkdir(parents=True)
    (files / "handouts" / "syllabus.md").write_bytes(b"# syllabus")
    (files / "handouts" / "week1" / "lab.csv").write_bytes(b"a,b\n1,2\n")
    (files / "empty-folder").mkdir()

    lib = make_library()
    lib.start()

    assert names(lib) == ["handouts/syllabus.md", "handouts/week1/lab.csv", "welcome.txt"]
    entry = lib.get("handouts/week1/lab.csv")
    assert entry.size == 8
    assert entry.sha256 == sha(b"a,b\n1,2\n")
    assert entry.uploader is None
    assert entry.mtime == pytest.approx(os.stat(files / "handouts/week1/lab.csv").st_mtime)
    assert entry.to_dict() == {
        "name": "handouts/week1/lab.csv",
        "size": 8,
        "mtime": entry.mtime,
        "sha256": sha(b"a,b\n1,2\n"),
        "uploader": None,
    }
    assert lib.resolve("handouts/syllabus.md") == (files / "handouts/syllabus.md").resolve()


def test_hidden_symlinked_out_and_excluded_are_never_listed_or_served(
    tmp_path, dirs, make_library
):
    files, _ = dirs
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (files / "public.txt").write_bytes(b"public")
    (files / ".hidden.txt").write_bytes(b"h")
    (files / ".git").mkdir()
    (files / ".git" / "config").write_bytes(b"c")
    (files / "link-out.txt").symlink_to(outside / "secret.txt")
    (files / "dir-out").symlink_to(outside, target_is_directory=True)
    (files / "link-in.txt").symlink_to(files / "public.txt")
    (files / "link-to-hidden.txt").symlink_to(files / ".hidden.txt")
    (files / "back\\slash.txt").write_bytes(b"b")  # cannot be requested, so not listed either
    data = files / "data"  # the server's data dir, misconfigured to live in the shared folder
    data.mkdir()
    (data / "messages.sqlite3").write_bytes(b"db")
    db_in_folder = files / "files.sqlite3"  # the library's own database inside the folder

    lib = FileLibrary(files, db_in_folder, exclude=[data])
    try:
        lib.start()
        assert names(lib) == ["link-in.txt", "public.txt"]
        assert lib.get("link-in.txt").sha256 == sha(b"public")
        for name in ["files.sqlite3", "files.sqlite3-wal", "data/messages.sqlite3",
                     "link-out.txt", "dir-out/secret.txt", "link-to-hidden.txt",
                     ".hidden.txt", ".git/config"]:
            with pytest.raises(LibraryError) as exc:
                lib.resolve(name)
            assert exc.value.code == "bad_path", name
    finally:
        lib.close()


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a/../../x",
        "handouts/../welcome.txt",  # even when it would stay inside: one spelling per file
        "./welcome.txt",
        "handouts//syllabus.md",
        "handouts/",
        "C:\\x",
        "C:x",
        "\\\\server\\share",
        "handouts\\syllabus.md",
        "x\x00y",
        "line\nbreak",
        ".hidden",
        "handouts/.hidden",
        "",
        "a" * 5000,
    ],
)
def test_resolve_refuses_unsafe_names(dirs, make_library, name):
    files, _ = dirs
    (files / "welcome.txt").write_bytes(b"w")
    (files / "handouts").mkdir()
    (files / "handouts" / "syllabus.md").write_bytes(b"s")
    lib = make_library()
    with pytest.raises(LibraryError) as exc:
        lib.resolve(name)
    assert exc.value.code == "bad_path"
    with pytest.raises(LibraryError) as exc:
        lib.sha256_of(name, timeout=0.1)
    assert exc.value.code == "bad_path"


def test_resolve_refuses_non_string(make_library):
    with pytest.raises(LibraryError) as exc:
        make_library().resolve(None)  # type: ignore[arg-type]
    assert exc.value.code == "bad_path"


def test_resolve_refuses_symlink_pointing_outside(tmp_path, dirs, make_library):
    files, _ = dirs
    (tmp_path / "passwd").write_bytes(b"root:x:0:0")
    (files / "innocent.txt").symlink_to(tmp_path / "passwd")
    (files / "dangling.txt").symlink_to(tmp_path / "does-not-exist")
    (files / "sub").symlink_to(tmp_path, target_is_directory=True)
    lib = make_library()
    for name in ["innocent.txt", "dangling.txt", "sub/passwd"]:
        with pytest.raises(LibraryError) as exc:
            lib.resolve(name)
        assert exc.value.code == "bad_path", name


def test_resolve_not_found_for_missing_dirs_and_special_files(dirs, make_library):
    files, _ = dirs
    (files / "folder").mkdir()
    os.mkfifo(files / "pipe")
    lib = make_library()
    for name in ["missing.txt", "folder", "pipe", "folder/missing.txt"]:
        with pytest.raises(LibraryError) as exc:
            lib.resolve(name)
        assert exc.value.code == "not_found", name
    lib.start()
    assert names(lib) == []


def test_hash_cache_is_reused_by_a_second_instance(dirs, make_library):
    files, _ = dirs
    contents = {f"f{i}.bin": os.urandom(1000 + i) for i in range(3)}
    for name, data in contents.items():
        (files / name).write_bytes(data)

    first = make_library()
    first.start()
    assert first.files_hashed == 3
    first.close()

    second = make_library()
    second.start()
    assert second.files_hashed == 0  # every hash came from SQLite
    assert {e.name: e.sha256 for e in second.list()} == {n: sha(d) for n, d in contents.items()}

    # A changed file (new size and mtime) is hashed again; the others still are not.
    (files / "f0.bin").write_bytes(b"new content")
    os.utime(files / "f0.bin", ns=(1_000_000_000, 1_000_000_000))
    changed, removed = second.refresh()
    assert [e.name for e in changed] == ["f0.bin"] and removed == []
    assert second.files_hashed == 1
    assert second.get("f0.bin").sha256 == sha(b"new content")
    # And a scan with nothing new hashes nothing.
    assert second.refresh() == ([], [])
    assert second.files_hashed == 1


def test_large_file_is_hashed_in_background(dirs, make_library):
    files, _ = dirs
    big = os.urandom(300_000)
    (files / "big.iso").write_bytes(big)
    (files / "small.txt").write_bytes(b"small")
    changes, on_change = collect_changes()
    lib = make_library(hash_inline_limit=1024, on_change=on_change)

    # A scan without the threads running: the small file is hashed inline, the big one waits.
    lib.refresh()
    assert lib.get("small.txt").sha256 == sha(b"small")
    assert lib.get("big.iso").sha256 is None
    with pytest.raises(LibraryError) as exc:
        lib.sha256_of("big.iso", timeout=0.05)
    assert exc.value.code == "hash_pending"

    lib.start()  # the hasher thread now picks it up
    assert lib.sha256_of("big.iso", timeout=WAIT) == sha(big)
    assert lib.get("big.iso").sha256 == sha(big)
    changed, _ = wait_for(changes, lambda c, r: any(e.name == "big.iso" and e.sha256 for e in c))
    assert changed[0].sha256 == sha(big)

    # Cached for the next instance: no background work needed at all.
    lib.close()
    again = make_library(hash_inline_limit=1024)
    again.start()
    assert again.get("big.iso").sha256 == sha(big)
    assert again.files_hashed == 0


def test_watcher_reports_files_copied_in_and_deleted(tmp_path, dirs, make_library):
    files, _ = dirs
    (files / "already.txt").write_bytes(b"here before start")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.4 pretend" * 100)
    changes, on_change = collect_changes()
    lib = make_library(scan_interval=0.05, on_change=on_change)
    lib.start()

    (files / "handouts").mkdir()
    shutil.copy(source, files / "handouts" / "report.pdf")
    expected = sha(source.read_bytes())
    changed, _ = wait_for(
        changes,
        lambda c, r: any(e.name == "handouts/report.pdf" and e.sha256 == expected for e in c),
    )
    assert "already.txt" not in [e.name for e in changed]  # unchanged files are not re-reported
    assert "handouts/report.pdf" in names(lib)

    (files / "already.txt").unlink()
    wait_for(changes, lambda c, r: "already.txt" in r)
    assert names(lib) == ["handouts/report.pdf"]


def test_get_and_sha256_of_see_a_new_file_before_the_watcher_does(dirs, make_library):
    files, _ = dirs
    lib = make_library(scan_interval=3600)  # the watcher will not scan during this test
    lib.start()
    (files / "fresh.txt").write_bytes(b"just copied")
    assert lib.sha256_of("fresh.txt", timeout=1.0) == sha(b"just copied")
    assert names(lib) == ["fresh.txt"]


def test_uploader_is_recorded_and_survives_restart(dirs, make_library):
    files, _ = dirs
    (files / "notes.txt").write_bytes(b"notes")
    changes, on_change = collect_changes()
    lib = make_library(on_change=on_change)
    lib.start()
    entry = lib.set_uploader("notes.txt", "alice")
    assert entry.uploader == "alice"
    assert lib.get("notes.txt").uploader == "alice"
    changed, _ = changes.get(timeout=WAIT)
    assert changed == [entry]
    lib.close()

    again = make_library()
    again.start()
    assert again.get("notes.txt").uploader == "alice"
    again.close()

    # The same name replaced by a different file is not credited to alice.
    (files / "notes.txt").write_bytes(b"somebody else's notes")
    third = make_library()
    third.start()
    assert third.get("notes.txt").uploader is None


def test_a_failing_listener_does_not_stop_the_watcher(dirs, make_library):
    files, _ = dirs
    seen: queue.Queue = queue.Queue()

    def listener(changed: list[FileEntry], removed: list[str]) -> None:
        seen.put([e.name for e in changed])
        raise RuntimeError("listener bug")

    lib = make_library(scan_interval=0.05, on_change=listener)
    lib.start()
    (files / "one.txt").write_bytes(b"1")
    assert seen.get(timeout=WAIT) == ["one.txt"]
    (files / "two.txt").write_bytes(b"2")
    assert seen.get(timeout=WAIT) == ["two.txt"]


def test_close_stops_threads(dirs, make_library):
    files, _ = dirs
    (files / "big.bin").write_bytes(os.urandom(3_000_000))
    lib = make_library(hash_inline_limit=1, scan_interval=0.01)
    lib.start()
    lib.close()
    assert not any(t.is_alive() for t in lib._threads)
    with pytest.raises(LibraryError) as exc:
        lib.set_uploader("big.bin", "x")
    assert exc.value.code == "closed"
