"""Fan-out benchmark: N logged-in clients, a few senders of public messages.

Prints: login time for N clients, latency p50/p99 at a gentle rate (10 msg/s), deliveries per
second when saturated, the server's CPU seconds and peak RSS, and whether anything was lost
or duplicated. The server runs as its own process (server.py) so its CPU and memory are its own.

By default each size runs twice, with TLS off (the baseline) and on (the default), and the
ratio TLS on / TLS off is printed. --tls or --no-tls runs only that one.

    python bench/fanout.py --clients 100 1000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from protocol import Connection, FrameDecoder, Role, encode_message  # noqa: E402
from protocol import messages as m  # noqa: E402
from protocol.version import PROTOCOL_VERSION  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(sock: socket.socket, conn: Connection, req: m.Request) -> dict:
    sock.sendall(conn.send(req))
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed")
        conn.receive_data(data)
        for ev in conn.events():
            if isinstance(ev, m.Ok) and ev.id == req.id:
                return ev.result
            if isinstance(ev, m.Error) and ev.id == req.id:
                raise RuntimeError(f"{ev.code}: {ev.message}")


def client_context() -> ssl.SSLContext:
    # The bench does not pin: it measures cost, not trust.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login(port: int, name: str, token: str | None = None, password: str = "bench-password",
          tls: bool = False):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = client_context().wrap_socket(sock)
    conn = Connection(Role.CLIENT)
    call(sock, conn, m.Hello(1, PROTOCOL_VERSION, "bench"))
    if token is None:
        result = call(sock, conn, m.Register(2, name, password))
    else:
        result = call(sock, conn, m.Resume(2, name, token))
    return sock, conn, result


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, current RSS bytes, peak RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, rss, hwm


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM afresh (Linux: write 5 to clear_refs). False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def wait_until_idle(pid: int, quiet: float = 0.3, limit: float = 15.0) -> float:
    """Wait (bounded) until the process used under 2% of a core for `quiet` seconds."""
    start = time.monotonic()
    cpu = proc_stats(pid)[0]
    while time.monotonic() - start < limit:
        time.sleep(quiet)
        now = proc_stats(pid)[0]
        if now - cpu < 0.02 * quiet:
            break
        cpu = now
    return time.monotonic() - start


# ------------------------------------------------------------------ reader processes


def pipelined_logins(port: int, accounts, tls: bool):
    """Log every account in the way many clients starting at once would: each connection
    sends its hello and its resume without waiting (the server answers in order), and the
    replies are collected afterwards. Returns the sockets, their frame decoders, and the frames
    that came after each login reply, left for the reading phase: parsing other clients'
    presence notices here would bill the load generator's work to the login time."""
    socks = []
    for name, token in accounts:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            sock = client_context().wrap_socket(sock)
        sock.sendall(encode_message(m.Hello(1, PROTOCOL_VERSION, "bench"))
                     + encode_message(m.Resume(2, name, token)))
        socks.append(sock)
    decoders, leftovers = {}, {}
    for sock in socks:
        decoder = decoders[sock.fileno()] = FrameDecoder()
        later = leftovers[sock.fileno()] = []
        logged_in = False
        while not logged_in:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed during login")
            for payload in decoder.feed(data):
                if logged_in:
                    later.append(payload)
                    continue
                obj = json.loads(payload)
                if obj.get("type") == "error":
                    raise RuntimeError(f"login failed: {obj}")
                logged_in = obj.get("type") == "ok" and obj.get("id") == 2
    return socks, decoders, leftovers


_TEXT = b',"text":"'


def bench_text_head(payload: bytes) -> tuple[str | None, str | None]:
    """(tag, sent_at) of one of this bench's messages, read without parsing the JSON; or
    (None, None) for anything else, which is then parsed in full. The load generator shares
    the server's two cores, so its per-message cost would show up as server latency."""
    if not payload.startswith(b'{"type":"message",'):
        return None, None
    at = payload.find(_TEXT)
    if at < 0:
        return None, None
    head = payload[at + len(_TEXT):at + len(_TEXT) + 40].split(b" ", 2)
    if len(head) < 3 or head[0][:1] not in (b"g", b"f"):
        return None, None
    return head[0].decode(), head[1].decode()


def reader_main(port, accounts, ready, go, stop, results, tls=False):
    """Log in this process's share of clients, then read everything until told to stop.
    Once nothing has arrived for half a second (the presence notices of everyone's logins
    are read), it puts "drained" on `ready`, so latency is measured on a quiet system."""
    t0 = time.perf_counter()
    socks, decoders, leftovers = pipelined_logins(port, accounts, tls)
    ready.put(("logged_in", time.perf_counter() - t0))
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    seen: dict[int, set] = {i: set() for i in range(len(socks))}
    index = {s.fileno(): i for i, s in enumerate(socks)}
    latencies: list[float] = []
    gentle: list[float] = []
    delivered = dups = 0

    def handle(s, payloads, now: float) -> None:
        nonlocal delivered, dups
        mine = seen[index[s.fileno()]]
        for payload in payloads:
            tag, sent_at = bench_text_head(payload)
            if tag is None:
                obj = json.loads(payload)
                if obj.get("type") == "ping":
                    s.send(encode_message(m.Pong(obj["nonce"])))
                if obj.get("type") != "message":
                    continue
                tag, sent_at = obj["text"].split(" ", 2)[:2]
            if tag in mine:
                dups += 1
            mine.add(tag)
            delivered += 1
            (gentle if tag[0] == "g" else latencies).append(now - float(sent_at))

    for s in socks:
        handle(s, leftovers[s.fileno()], time.time())
    quiet_since = time.monotonic()
    drained = False
    while True:
        events = sel.select(0.1)
        if not events and stop.is_set():
            break
        if events:
            quiet_since = time.monotonic()
        elif not drained and time.monotonic() - quiet_since > 0.5:
            drained = True
            ready.put(("drained", 0.0))
        for key, _ in events:
            s = key.fileobj
            # A plain socket is read once per wake-up (select reports it again if more is
            # waiting). A TLS socket hands out one record per recv, and records already
            # decrypted do not wake select: read while it has some pending.
            # 64 KiB reads: a 1 MiB buffer per recv is an mmap and munmap each time, which
            # on this shared machine would bill the load generator's cost to the server.
            while True:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, ssl.SSLWantReadError):
                    break
                if not data:
                    sel.unregister(s)
                    break
                # time per read: this loop can run for a while on one socket
                handle(s, decoders[s.fileno()].feed(data), time.time())
                if not tls or not s.pending():
                    break
    results.put((delivered, dups, [len(v) for v in seen.values()], latencies, gentle))
    for s in socks:
        s.close()


# ------------------------------------------------------------------ senders


def send_paced(senders, rate: float, duration: float, prefix: str) -> int:
    """Send at a total rate; returns how many were sent (each acknowledged)."""
    n = int(rate * duration)
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sock, conn = senders[i % len(senders)]
        call(sock, conn, m.Send(1000 + i, "public", "", f"{prefix}{i} {time.time()} gentle"))
    return n


def send_flood(sock, conn, count: int, prefix: str, window: int = 32) -> None:
    """Pipelined sends (at most `window` unacknowledged) as fast as the server takes them."""
    sent = acked = 0
    while acked < count:
        while sent < count and sent - acked < window:
            sock.sendall(conn.send(m.Send(10_000_000 + sent, "public", "",
                                          f"{prefix}{sent} {time.time()} flood")))
            sent += 1
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed")
        conn.receive_data(data)
        for ev in conn.events():
            if isinstance(ev, m.Ok | m.Error):
                acked += 1


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def run(n_clients: int, n_senders: int, readers: int, flood_per_sender: int, scrypt_n: int,
        tls: bool) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", f"{tmp}/data", "--files-dir", f"{tmp}/files", "--no-discovery",
             "--no-console", "--scrypt-n", str(scrypt_n),
             "--message-rate", "1000000", "--message-burst", "1000000",
             *([] if tls else ["--no-tls"])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            names = [f"user{i}" for i in range(n_clients)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                regs = list(pool.map(lambda n: login(port, n, tls=tls), names))
            reg_time = time.perf_counter() - t0
            tokens = []
            for sock, _conn, result in regs:
                tokens.append(result["resume_token"])
                sock.close()
            # The server is still seeing those connections off (leave notices, threads
            # ending): measure the logins on a settled server, not on that tail.
            settle_time = wait_until_idle(server.pid)
            # The peak RSS reported is that of serving the clients: registering them (a
            # thousand password hashes, done once in a server's life) is not part of it.
            peak_reset = reset_peak_rss(server.pid)
            print(f"\n== {n_clients} clients, {n_senders} senders, TLS {'on' if tls else 'off'} ==")
            print(f"registered {n_clients} accounts (scrypt n={scrypt_n}) in {reg_time:.2f} s;"
                  f" server idle again {settle_time:.2f} s after")

            ctx = mp.get_context("fork")
            ready, results = ctx.Queue(), ctx.Queue()
            go, stop = ctx.Event(), ctx.Event()
            shares = [list(zip(names, tokens, strict=True))[i::readers] for i in range(readers)]
            t0 = time.perf_counter()
            procs = [ctx.Process(target=reader_main,
                                 args=(port, share, ready, go, stop, results, tls))
                     for share in shares]
            for p in procs:
                p.start()
            per_proc, drained = [], 0
            while len(per_proc) < len(procs):
                what, seconds = ready.get(timeout=120)
                if what == "logged_in":
                    per_proc.append(seconds)
                else:
                    drained += 1
            login_time = time.perf_counter() - t0
            print(f"{n_clients} clients logged in (resume tokens, pipelined, {readers} processes) in "
                  f"{login_time:.2f} s (slowest process {max(per_proc):.2f} s)")
            senders = []
            for i in range(n_senders):
                sock, conn, _ = login(port, f"sender{i}", tls=tls)
                senders.append((sock, conn))
            cpu0, _rss0, _ = proc_stats(server.pid)
            t_drain = time.perf_counter()
            while drained < len(procs):
                what, _ = ready.get(timeout=180)
                drained += what == "drained"
            print(f"presence notices of all logins read by the clients after a further"
                  f" {time.perf_counter() - t_drain:.2f} s")
            go.set()

            # Phase A: gentle rate, latency.
            gentle = send_paced(senders, rate=10, duration=3, prefix="g")
            # Phase B: saturate.
            t_flood = time.perf_counter()
            import threading

            threads = [threading.Thread(target=send_flood, args=(s, c, flood_per_sender, f"f{i}-"))
                       for i, (s, c) in enumerate(senders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent_flood = flood_per_sender * n_senders
            expected = (gentle + sent_flood) * n_clients
            # wait until readers have everything (bounded)
            time.sleep(0.5)
            stop.set()
            totals = [results.get(timeout=120) for _ in procs]
            flood_elapsed = time.perf_counter() - t_flood
            for p in procs:
                p.join(30)
            cpu1, rss1, hwm = proc_stats(server.pid)
            delivered = sum(t[0] for t in totals)
            dups = sum(t[1] for t in totals)
            lat_all = [x for t in totals for x in t[3]]  # flood phase only
            gentle_lat = [x for t in totals for x in t[4]]
            per_client = [c for t in totals for c in t[2]]
            lost = expected - delivered + dups
            print(f"gentle 10 msg/s: {gentle} messages, latency p50 {pct(gentle_lat, 50)*1000:.1f} ms"
                  f" p99 {pct(gentle_lat, 99)*1000:.1f} ms")
            print(f"saturated: {sent_flood} messages x {n_clients} clients in {flood_elapsed:.2f} s ->"
                  f" {sent_flood * n_clients / flood_elapsed:,.0f} deliveries/s"
                  f" (overall p99 latency {pct(lat_all, 99)*1000:.0f} ms)")
            print(f"delivered {delivered} of {expected}; lost {max(0, lost)}; duplicated {dups};"
                  f" per-client min {min(per_client)} max {max(per_client)}")
            print(f"server CPU {cpu1 - cpu0:.2f} s during the run; RSS {rss1/2**20:.1f} MiB,"
                  f" peak {hwm/2**20:.1f} MiB"
                  f" ({'since the logins' if peak_reset else 'registrations included'})")
            for s, _c in senders:
                s.close()
            return {"rate": sent_flood * n_clients / flood_elapsed,
                    "p50": pct(gentle_lat, 50), "p99": pct(gentle_lat, 99),
                    "cpu": cpu1 - cpu0, "login": login_time, "lost": max(0, lost)}
        finally:
            server.terminate()
            server.wait(20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--readers", type=int, default=2, help="client processes")
    p.add_argument("--flood", type=int, default=500, help="messages per sender when saturating")
    p.add_argument("--scrypt-n", type=int, default=2**10,
                   help="password hash cost for the bench accounts (server default 16384)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tls", dest="modes", action="store_const", const=[True],
                      help="only the TLS run")
    mode.add_argument("--no-tls", dest="modes", action="store_const", const=[False],
                      help="only the plain-TCP run")
    a = p.parse_args()
    modes = a.modes or [False, True]
    for n in a.clients:
        out = {tls: run(n, a.senders, a.readers, a.flood, a.scrypt_n, tls) for tls in modes}
        if len(out) == 2:
            off, on = out[False], out[True]
            print(f"\n-- {n} clients: TLS on / TLS off --")
            print(f"saturated deliveries/s: {on['rate']:,.0f} / {off['rate']:,.0f}"
                  f" = {on['rate'] / off['rate']:.2f}")
            print(f"server CPU s:           {on['cpu']:.2f} / {off['cpu']:.2f}"
                  f" = {on['cpu'] / max(off['cpu'], 1e-9):.2f}")
            print(f"gentle latency p50 ms:  {on['p50']*1000:.1f} / {off['p50']*1000:.1f};"
                  f" p99 {on['p99']*1000:.1f} / {off['p99']*1000:.1f}")
            print(f"login of {n} clients s: {on['login']:.2f} / {off['login']:.2f}"
                  f" = {on['login'] / max(off['login'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
