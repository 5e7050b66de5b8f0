"""Floods against a live server, and what each costs a legitimate user.

server.py runs as its own process (default scrypt cost, policy with no loopback exemption so
the per-address limits apply to the flooders on 127.x.y.z), with a history of --history
messages and one 64 MiB shared file. A probe, in this process, repeats: log in on a fresh
connection, then four times send a public message and fetch a page of history; each timed. The floods run in a
separate process (so their Python work is not billed to the probe), one at a time:

  junk           connections sending garbage frames, reconnecting when dropped
  oversize       frames announcing 1 GiB, then nothing
  prelogin       200 connections each holding a 15 KiB partial frame before login
  trickle        50 connections sending one byte a second
  never-reader   a logged-in client that never reads while 4 others chat publicly
  messages       one account sending public messages as fast as it can
  typing         typing notices in public and 40 private conversations, as fast as possible
  register       new accounts as fast as the server takes them
  rename         display name changes as fast as possible
  rooms          room creation by fresh accounts, and one holder joining them all
  search         10 accounts each searching at its allowed rate
  guessing       wrong passwords for the probe's account from rotating 127.0.x.y
  offers         download requests for the big file as fast as possible
  start-udp      START datagrams with wrong tokens at the transfer port

For each: the probe's p50/p99 per step, p99 as a ratio to the quiet baseline measured in the
same run (the worst of the three steps; a baseline under 10 ms counts as 10 ms), the probe's
failures (any is a failure of the server), and whether the server still runs. The target is
a ratio under 5 for every flood.

    .venv/bin/python bench/abuse.py [--seconds 5] [--history 100000] [--only junk,typing]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from protocol import Connection, Role  # noqa: E402
from protocol import messages as m  # noqa: E402
from protocol.version import PROTOCOL_VERSION  # noqa: E402

PASSWORD = "bench-password-1"
# Ratios are taken against the quiet p99 or this, whichever is larger: under 10 ms nobody can
# tell, and there one scheduling hiccup of a busy 2-core machine would be "5x".
RATIO_FLOOR = 0.010
# No loopback exemption, so the per-address limits apply to the flooders on 127.x.y.z; a
# message rate the probe's pace (about 12 lines a second) stays under.
POLICY = """
[limits]
exempt_loopback = false
connections_per_address = 64
message_rate = 20.0
message_burst = 40
"""
# Accounts the floods log in to, registered before any flood (from addresses of their own:
# registration is limited per address), so that a flood measures its own effect.
SETUP_ACCOUNTS = (["sleeper", "chatty", "typist", "renamer", "holder", "hoarder"]
                  + [f"talker{i}" for i in range(4)] + [f"pal{i}" for i in range(40)]
                  + [f"seeker{i}" for i in range(10)] + [f"maker{i}" for i in range(20)])


class Client:
    """A blocking client for one connection (the bench's own, like tests/wireclient.py)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Connection(Role.CLIENT)
        self.next_id = 1

    def call(self, cls, **fields) -> dict:
        rid, self.next_id = self.next_id, self.next_id + 1
        self.sock.sendall(self.conn.send(cls(id=rid, **fields)))
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self.conn.receive_data(data)
            for ev in self.conn.events():
                if isinstance(ev, m.Ping):
                    self.sock.sendall(self.conn.send(m.Pong(ev.nonce)))
                elif isinstance(ev, m.Ok) and ev.id == rid:
                    return ev.result
                elif isinstance(ev, m.Error) and ev.id == rid:
                    raise RuntimeError(f"{ev.code}: {ev.message}")

    def hello(self) -> None:
        self.call(m.Hello, version=PROTOCOL_VERSION, software="bench-abuse")

    def close(self) -> None:
        self.sock.close()


def account(port: int, name: str, *, register: bool, source: str = "127.0.0.1") -> Client:
    c = Client(port, source)
    c.hello()
    c.call(m.Register if register else m.Login, username=name, password=PASSWORD)
    return c


# ------------------------------------------------------------------ the floods
# Each runs until `stop` is set or its deadline passes; every loop is bounded by both.


def _source(i: int) -> str:
    """A flooder's address: consecutive i in different /24s, none in the probe's 127.0.0.0/24."""
    return f"127.{1 + (i // 62_500) % 200}.{i % 250}.{1 + (i // 250) % 250}"


def _login(port: int, name: str) -> Client:
    return account(port, name, register=False, source=_source(SETUP_ACCOUNTS.index(name)))


def _keep_trying(fn, stop, deadline) -> None:
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            fn()
        except (OSError, RuntimeError, ConnectionError):
            time.sleep(0.01)  # refused or dropped: the server defends itself; go again


def flood_junk(port, stop, deadline):
    rng = random.Random(1)

    def once():
        with socket.create_connection(("127.0.0.1", port), timeout=2,
                                      source_address=(_source(1001), 0)) as s:
            for _ in range(50):
                s.sendall(len_frame(rng.randbytes(rng.randrange(1, 200))))
    _keep_trying(once, stop, deadline)


def len_frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def flood_oversize(port, stop, deadline):
    def once():
        with socket.create_connection(("127.0.0.1", port), timeout=2,
                                      source_address=(_source(1002), 0)) as s:
            s.sendall((1 << 30).to_bytes(4, "big") + b"{" * 1000)
            s.recv(100)
    _keep_trying(once, stop, deadline)


def flood_prelogin(port, stop, deadline):
    held = []
    for i in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2,
                                         source_address=(_source(i * 7), 0))
            s.sendall((15 << 10).to_bytes(4, "big") + b"x" * ((15 << 10) - 1))
            held.append(s)
        except OSError:
            pass
    stop.wait(max(0.0, deadline - time.monotonic()))
    for s in held:
        s.close()


def flood_trickle(port, stop, deadline):
    held = []
    for i in range(50):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2,
                                                 source_address=(_source(i * 11 + 3), 0)))
        except OSError:
            pass
    while not stop.wait(1.0) and time.monotonic() < deadline:
        for s in list(held):
            try:
                s.sendall(b"\x00")
            except OSError:
                held.remove(s)
    for s in held:
        s.close()


def flood_never_reader(port, stop, deadline):
    sleeper = _login(port, "sleeper")
    sleeper.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    talkers = [_login(port, f"talker{i}") for i in range(4)]
    text = "x" * 3000
    while not stop.is_set() and time.monotonic() < deadline:
        for t in talkers:
            try:
                t.call(m.Send, kind="public", target="", text=text)
            except RuntimeError:
                pass  # rate limited
    for c in [sleeper, *talkers]:
        c.close()


def flood_messages(port, stop, deadline):
    c = _login(port, "chatty")
    _keep_trying(lambda: c.call(m.Send, kind="public", target="", text="spam " * 100),
                 stop, deadline)
    c.close()


def flood_typing(port, stop, deadline):
    names = [f"pal{i}" for i in range(40)]
    c = _login(port, "typist")

    def once():
        c.call(m.Typing, kind="public")
        for n in names:
            c.call(m.Typing, kind="direct", target=n)
    _keep_trying(once, stop, deadline)
    c.close()


def flood_register(port, stop, deadline):
    counter = iter(range(1_000_000))

    def once():
        i = next(counter)
        account(port, f"throwaway{i}", register=True, source=_source(2000 + i)).close()
    _keep_trying(once, stop, deadline)


def flood_rename(port, stop, deadline):
    c = _login(port, "renamer")
    counter = iter(range(1_000_000))
    _keep_trying(lambda: c.call(m.Rename, display=f"Renamer {next(counter)}"), stop, deadline)
    c.close()


def flood_rooms(port, stop, deadline):
    holder = _login(port, "holder")
    makers = [_login(port, f"maker{i}") for i in range(20)]
    for i, maker in enumerate(makers):  # each makes its 5 rooms; the holder joins them all
        for j in range(5):
            for who in (maker, holder):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                try:
                    who.call(m.JoinRoom, room=f"r{i}-{j}")
                except RuntimeError:
                    pass  # refused: a room limit
    stop.wait(max(0.0, deadline - time.monotonic()))
    for c in [holder, *makers]:
        c.close()


def flood_search(port, stop, deadline):
    searchers = [_login(port, f"seeker{i}") for i in range(10)]
    words = ["homework", "the exam", "chapter 3", "lecture", "zzzz nothing"]
    k = 0
    while not stop.is_set() and time.monotonic() < deadline:
        began = time.monotonic()
        for c in searchers:
            k += 1
            try:
                c.call(m.Search, text=words[k % len(words)])
            except RuntimeError:
                pass  # rate limited or busy
        stop.wait(max(0.0, 0.5 - (time.monotonic() - began)))  # each at its allowed rate
    for c in searchers:
        c.close()


def flood_guessing(port, stop, deadline):
    counter = iter(range(1_000_000))

    def once():
        c = Client(port, _source(5000 + next(counter)))
        try:
            c.hello()
            c.call(m.Login, username="probe", password="wrong guess")
        finally:
            c.close()
    _keep_trying(once, stop, deadline)


def flood_offers(port, stop, deadline):
    c = _login(port, "hoarder")
    _keep_trying(lambda: c.call(m.Download, name="big.bin"), stop, deadline)
    c.close()


def flood_start_udp(port, stop, deadline):
    from protocol import transfer_wire as wire
    rng = random.Random(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((_source(1011), 0))
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(200):
                s.sendto(wire.encode_start(rng.getrandbits(64), rng.randbytes(16), 512),
                         ("127.0.0.1", port))
            time.sleep(0.001)  # about 100k datagrams a second at most


FLOODS = {
    "junk": flood_junk, "oversize": flood_oversize, "prelogin": flood_prelogin,
    "trickle": flood_trickle, "never-reader": flood_never_reader, "messages": flood_messages,
    "typing": flood_typing, "rename": flood_rename, "rooms": flood_rooms,
    "search": flood_search, "guessing": flood_guessing, "offers": flood_offers,
    "start-udp": flood_start_udp,
    "register": flood_register,  # last: it uses up the server-wide registration budget
}


def run_flood(name, port, stop, seconds):
    deadline = time.monotonic() + seconds
    try:
        FLOODS[name](port, stop, deadline)
    except Exception as exc:  # the flood gave up (refused at setup): that is its result
        print(f"  ({name}: the flood stopped early: {exc})", flush=True)


# ------------------------------------------------------------------ the probe


def probe(port: int, seconds: float) -> tuple[dict[str, list[float]], int]:
    """Time login, send and history for `seconds`; returns the samples and the failures."""
    samples: dict[str, list[float]] = {"login": [], "send": [], "history": []}
    failures = 0
    deadline = time.monotonic() + seconds
    for _ in range(10_000):
        if time.monotonic() > deadline:
            break
        try:
            t0 = time.perf_counter()
            c = account(port, "probe", register=False)
            t1 = time.perf_counter()
            for _ in range(4):  # a few lines and conversations opened per login
                began = time.perf_counter()
                c.call(m.Send, kind="public", target="", text="probe")
                samples["send"].append(time.perf_counter() - began)
                began = time.perf_counter()
                c.call(m.History, kind="public", target="", limit=50)
                samples["history"].append(time.perf_counter() - began)
                time.sleep(0.02)
            c.close()
        except (OSError, RuntimeError, ConnectionError) as exc:
            failures += 1
            print(f"    probe failed: {exc}", flush=True)
            time.sleep(0.1)
            continue
        samples["login"].append(t1 - t0)
        time.sleep(0.15)  # a person's pace, roughly; keeps the probe from being a flood
    return samples, failures


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ------------------------------------------------------------------ the server


def fill_history(data: Path, n: int) -> None:
    rng = random.Random(3)
    words = ["homework", "exam", "lecture", "chapter", "python", "socket", "thread",
             "server", "client", "the", "a", "of", "to", "and", "lab", "notes", "friday"]
    db = sqlite3.connect(data / "parley.sqlite3")
    now = time.time()
    rows = ((now - n + i, "filler", "filler", "public", "", "public",
             " ".join(rng.choice(words) for _ in range(10))) for i in range(n))
    db.executemany("INSERT INTO messages(ts, sender, sender_display, kind, target, conv, text)"
                   " VALUES (?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def start_server(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
         "--files-dir", str(root / "files"), "--data-dir", str(root / "data"), "--no-tls",
         "--no-discovery", "--no-console"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(300):  # bounded: 30 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server.py exited: {proc.stderr.read()[-2000:]}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server.py did not start listening within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="probe time per flood")
    ap.add_argument("--history", type=int, default=100_000, help="messages in the history")
    ap.add_argument("--only", default="", help="comma-separated floods to run (default all)")
    args = ap.parse_args()
    chosen = [f for f in args.only.split(",") if f] or list(FLOODS)
    unknown = set(chosen) - set(FLOODS)
    if unknown:
        ap.error(f"unknown flood(s): {', '.join(sorted(unknown))}")

    with tempfile.TemporaryDirectory(prefix="parley-abuse-") as tmp:
        root = Path(tmp)
        (root / "files").mkdir()
        (root / "data").mkdir()
        (root / "data" / "policy.toml").write_text(POLICY)
        with open(root / "files" / "big.bin", "wb") as f:
            f.write(hashlib.sha256(b"seed").digest() * (2 << 20))  # 64 MiB
        port = free_port()
        proc = start_server(root, port)  # first start makes the schema; then fill it
        account(port, "probe", register=True).close()
        for i, name in enumerate(SETUP_ACCOUNTS):
            account(port, name, register=True, source=_source(i)).close()
        stop_server(proc)
        fill_history(root / "data", args.history)
        proc = start_server(root, port)
        print(f"server pid {proc.pid}, port {port}, {args.history} messages of history, "
              f"{args.seconds:g} s per flood", flush=True)
        try:
            quiet, failed = probe(port, args.seconds)
            base = {k: pct(v, 0.99) for k, v in quiet.items()}
            print(f"{'flood':<14}{'login p50/p99 ms':>19}{'send p50/p99':>16}"
                  f"{'history p50/p99':>18}{'worst p99 ratio':>17}{'failed':>8}  server")
            row("quiet", quiet, base, failed, proc)
            worst = 0.0
            ctx = mp.get_context("spawn")
            for name in chosen:
                stop = ctx.Event()
                flooder = ctx.Process(target=run_flood, args=(name, port, stop,
                                                              args.seconds + 15.0))
                flooder.start()
                time.sleep(1.0)  # the flood gets going (accounts made, connections open)
                samples, failed = probe(port, args.seconds)
                stop.set()
                flooder.join(20)
                if flooder.is_alive():
                    flooder.kill()
                worst = max(worst, row(name, samples, base, failed, proc))
                if proc.poll() is not None:
                    print("the server died; the remaining floods were not run")
                    return 1
                time.sleep(1.0)  # let the server settle before the next flood
            print(f"worst p99 ratio {worst:.1f} (target: under 5)")
            return 0 if worst < 5 else 1
        finally:
            stop_server(proc)


def row(name: str, samples: dict[str, list[float]], base: dict[str, float], failed: int,
        proc: subprocess.Popen) -> float:
    cells, ratio = [], 0.0
    for step in ("login", "send", "history"):
        p50, p99 = pct(samples[step], 0.5) * 1000, pct(samples[step], 0.99) * 1000
        cells.append(f"{p50:7.1f}/{p99:<7.1f}")
        if samples[step]:
            ratio = max(ratio, pct(samples[step], 0.99) / max(base[step], RATIO_FLOOR))
    alive = "runs" if proc.poll() is None else "DEAD"
    n = len(samples["login"])
    print(f"{name:<14}{cells[0]:>19}{cells[1]:>16}{cells[2]:>18}{ratio:>12.1f} ({n:>3})"
          f"{failed:>6}  {alive}", flush=True)
    return ratio


if __name__ == "__main__":
    sys.exit(main())
