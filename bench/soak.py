"""Soak test: many real clients against one server for a long while, on loopback, bounded.

    .venv/bin/python bench/soak.py                       # 200 clients, 10 minutes
    .venv/bin/python bench/soak.py --clients 40 --minutes 1

Starts server.py as its own process (temp data and files dirs, a few shared files of 1-20 MiB),
then worker processes that each drive their share of the users with real ClientSession objects
(bench/soak_client.py): public, direct and room messages (each after a typing notice),
editing one's last message, deleting one's last public message, searching, joining and leaving
rooms, reading lists and history, logging out or dropping the connection and coming back later,
uploads and downloads (hash-checked); plus a junk worker opening broken connections a few times
a second.

Every message carries a unique tag, so at the end every delivery that was owed can be checked:
  * the sender's own echo, always;
  * public: every user logged in from before the server stamped the message (its ts) until
    after the sender had the ok (the server queues every copy before the ok);
  * room: the same, for the users that were members of the room in that interval;
  * direct: the recipient, exactly once: live, or at the next login when the ok said `stored`.
    The only exception is a message sent in the instant a recipient's connection was being
    closed without logout (between its closing barrier and its next login): that copy goes to
    a dead socket, which the protocol allows (it is in the history).
Deliveries in the fuzzy edges of an interval are neither owed nor forbidden; a copy received
far outside any interval is "misdelivered". Lost, duplicated and misdelivered must be zero.

Also measured, from /proc/<server pid>: RSS once all clients are in and warmed up, RSS after they
all left (must not grow by more than --rss-slack-mib), the peak (VmHWM), CPU seconds, threads,
and open file descriptors before the clients and after they left (must return to the baseline,
give or take --fd-slack). The exit status is 1 if any check fails.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_client import SESSION_HAS_TLS, WorkerPlan, junk_main, worker_main  # noqa: E402

ROOMS = [f"room{i}" for i in range(12)]
EDGE_SLACK = 5.0     # a copy received this close to a login/membership interval is not an error
SETTLE = 2.0         # after the clients left and the fds are back, before the last RSS reading
MIB = 1 << 20


class HardDeadline(Exception):
    pass


# ---------------------------------------------------------------------- the server process


def server_help() -> str:
    out = subprocess.run([sys.executable, str(REPO / "server.py"), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    return out.stdout


def decide_tls(wanted: bool | None, help_text: str) -> tuple[bool, list[str]]:
    """(TLS on?, server flags). A server without TLS flags speaks plain TCP."""
    has_no_tls = "--no-tls" in help_text
    has_opt_in = "--tls " in help_text or "--tls\n" in help_text
    if wanted is None:
        return has_no_tls, []
    if wanted:
        if has_no_tls:
            return True, []
        if has_opt_in:
            return True, ["--tls"]
        sys.exit("--tls asked for, but this server.py has no TLS option")
    return False, (["--no-tls"] if has_no_tls else [])


def connection_limit_flags(help_text: str, clients: int) -> list[str]:
    """Every soak client comes from 127.0.0.1. Servers that cap connections per address exempt
    loopback; should one not, raise its cap to what the soak needs (message rate limits stay
    at their defaults: they are part of what is measured)."""
    flag = "--max-connections-per-address"
    if flag in help_text and "loopback exempt" not in " ".join(help_text.split()):
        return [flag, str(clients * 2 + 100)]
    return []


def make_files(files_dir: Path, sizes_mib: list[int], seed: int) -> dict[str, str]:
    import hashlib
    import random

    files_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = {}
    for size in sizes_mib:
        data = rng.randbytes(size * MIB)
        name = f"shared-{size}MiB.bin"
        (files_dir / name).write_bytes(data)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not listen on {port}") from None
            time.sleep(0.05)  # polling interval inside a bounded wait


class ProcStats:
    """Readings of one process from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        self.cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        status = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.split()
        self.rss = int(status["VmRSS"][0]) * 1024
        self.hwm = int(status["VmHWM"][0]) * 1024
        self.threads = int(status["Threads"][0])
        self.fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.at = time.monotonic()


def wait_fds(pid: int, at_most: int | None, timeout: float) -> ProcStats:
    """Poll until the fd count is <= at_most (or, with None, unchanged for 2 s); bounded."""
    deadline = time.monotonic() + timeout
    last, since = ProcStats(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)  # polling interval inside a bounded wait
        now = ProcStats(pid)
        if at_most is not None and now.fds <= at_most:
            return now
        if now.fds != last.fds:
            last, since = now, time.monotonic()
        elif at_most is None and time.monotonic() - since >= 2.0:
            return now
    return ProcStats(pid)


def log_problems(log_path: Path) -> tuple[int, int, list[str]]:
    """(tracebacks, warning/error lines, a few of them) in the server's output."""
    tracebacks = problems = 0
    sample: list[str] = []
    for line in log_path.read_text("utf-8", "replace").splitlines():
        if line.startswith("Traceback"):
            tracebacks += 1
        if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
            problems += 1
            if len(sample) < 8:
                sample.append(line[:200])
    return tracebacks, problems, sample


# ---------------------------------------------------------------------- accounting


def account(records: list) -> dict:
    """Which owed deliveries were lost or duplicated, and what arrived where it should not."""
    sessions = {r.user: r.sessions for r in records}
    room_members: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for room, start, end in r.memberships:
            room_members[room][r.user].append((start, end))
    got = {r.user: Counter(r.received) for r in records}
    unconfirmed = {tag for r in records for tag in r.unconfirmed}
    sent = [(r.user, *row) for r in records for row in r.sent]
    sent_tags = {row[1] for row in sent}
    # Direct messages sent while the recipient's connection was being dropped: (end, next login).
    closing: dict[str, list] = {}
    for user, ivals in sessions.items():
        ivals = sorted(ivals)
        closing[user] = [(end, ivals[i + 1][0] if i + 1 < len(ivals) else float("inf"))
                         for i, (_s, end, graceful) in enumerate(ivals) if not graceful]
    everyone = [(u, [(s, e) for s, e, _g in iv]) for u, iv in sessions.items()]
    f: Counter = Counter()
    checked_received: Counter = Counter()
    lost_examples: list[str] = []
    for sender, tag, kind, target, ts, ack, stored in sent:
        f[f"sent_{kind}"] += 1
        if kind == "direct":
            f["sent_direct_stored"] += stored
            window = any(ack > end and ts < nxt for end, nxt in closing.get(target, ()))
            f["edge_pairs"] += window and not stored
            cands = [(target, not window or stored, True)]
        else:
            pool = everyone if kind == "public" else list(room_members[target].items())
            cands = []
            for u, ivals in pool:
                if u == sender:
                    continue
                owed = any(s < ts and ack < e for s, e in ivals)
                near = owed or any(s - EDGE_SLACK < ack and ts < e + EDGE_SLACK for s, e in ivals)
                f["edge_pairs"] += near and not owed
                if near:
                    cands.append((u, owed, near))
        cands.append((sender, True, True))  # the echo
        for u, owed, _near in cands:
            n = got.get(u, Counter()).get(tag, 0)
            checked_received[u] += n > 0
            f["owed"] += owed
            f["received_owed"] += owed and n > 0
            f["duplicated"] += max(0, n - 1)
            if owed and n == 0:
                f["lost"] += 1
                if len(lost_examples) < 10:
                    mine = sorted(sessions.get(u, []))
                    lost_examples.append(f"{kind} tag {tag} {sender}->{u} ts {ts:.3f} ack "
                                         f"{ack:.3f} stored {stored} {target!r}; {u} sessions "
                                         f"{[(round(s, 3), round(e, 3), g) for s, e, g in mine]}")
    for r in records:
        counts = got[r.user]
        f["received"] += sum(counts.values())
        f["delayed"] += r.delayed
        f["foreign"] += r.foreign
        f["received_unconfirmed"] += sum(1 for t in counts if t in unconfirmed)
        f["unknown_tags"] += sum(1 for t in counts if t not in sent_tags and t not in unconfirmed)
        f["duplicated_unconfirmed"] += sum(n - 1 for t, n in counts.items()
                                           if t in unconfirmed and n > 1)
        f["misdelivered"] += sum(1 for t in counts if t in sent_tags) - checked_received[r.user]
    f["unconfirmed"] = len(unconfirmed)
    return {"figures": f, "lost_examples": lost_examples}


# ---------------------------------------------------------------------- the run


def run(args, deadline: float) -> int:
    help_text = server_help()
    tls, tls_flags = decide_tls(args.tls, help_text)
    if tls and not SESSION_HAS_TLS:
        print("the server speaks TLS but ClientSession has no tls parameter: cannot connect",
              file=sys.stderr)
        return 2
    session_tls = tls if SESSION_HAS_TLS else None
    duration = args.minutes * 60
    warmup = min(30.0, max(5.0, duration * 0.1))
    users = [f"soak{i:04d}" for i in range(args.clients)]
    ctx = mp.get_context("fork")  # forked before this process starts any thread
    with tempfile.TemporaryDirectory(prefix="parley-soak-") as tmp_name:
        tmp = Path(tmp_name)
        files = make_files(tmp / "files", args.files_mib, args.seed)
        limit_flags = connection_limit_flags(help_text, args.clients)
        port = free_port()
        log_path = tmp / "server.log"
        cmd = [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port",
               str(port), "--data-dir", str(tmp / "data"), "--files-dir", str(tmp / "files"),
               "--scrypt-n", "1024", "--no-discovery", "--no-console", *tls_flags,
               *limit_flags]
        print(f"Parley soak: {args.clients} clients x {args.minutes:g} min in {args.processes} "
              f"processes, seed {args.seed}; TLS {'on' if tls else 'off'}"
              f"{'' if SESSION_HAS_TLS else ' (ClientSession has no tls option)'}; "
              f"files {', '.join(f'{s} MiB' for s in args.files_mib)}; "
              f"extra server flags: {' '.join(tls_flags + limit_flags) or 'none'}"
              f"{'; server env ' + ' '.join(args.server_env) if args.server_env else ''}",
              flush=True)
        with open(log_path, "w") as log:
            server = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1",
                                           **dict(e.split("=", 1) for e in args.server_env)})
        procs: list = []
        try:
            wait_port(port, 30)
            base = wait_fds(server.pid, None, 30)
            control, results = ctx.Queue(), ctx.Queue()
            go, stop, final = ctx.Event(), ctx.Event(), ctx.Event()
            progress = ctx.Array("q", args.processes)
            for i in range(args.processes):
                plan = WorkerPlan(index=i, host="127.0.0.1", port=port, tls=session_tls,
                                  users=users[i::args.processes], all_users=users, rooms=ROOMS,
                                  files=files, scratch=str(tmp / f"scratch{i}"),
                                  seed=args.seed, min_gap=args.min_gap, max_gap=args.max_gap,
                                  hard_deadline=deadline)
                procs.append(ctx.Process(target=worker_main, daemon=True, name=f"soak-w{i}",
                                         args=(plan, control, go, stop, final, results,
                                               progress)))
            t_login = time.monotonic()
            for p in procs:
                p.start()
            ready = [control.get(timeout=max(1, deadline - time.time()))
                     for _ in procs]
            in_clients = sum(r[2] for r in ready)
            print(f"{in_clients}/{args.clients} clients registered and logged in in "
                  f"{time.monotonic() - t_login:.1f} s", flush=True)
            if in_clients < args.clients:
                print("not every client could log in; giving up", file=sys.stderr)
                return 2
            junk = ctx.Process(target=junk_main, daemon=True, name="soak-junk",
                               args=("127.0.0.1", port, tls, args.seed, args.junk_rate, stop,
                                     results, deadline))
            go.set()
            junk.start()
            procs.append(junk)
            t_go = time.monotonic()
            time.sleep(warmup)  # the warm-up is part of the run's fixed schedule
            start = ProcStats(server.pid)
            print(f"warmed up ({warmup:.0f} s): server RSS {start.rss / MIB:.1f} MiB, "
                  f"{start.fds} fds, {start.threads} threads", flush=True)
            report_every = 60.0 if duration >= 300 else 15.0
            last, last_actions = start, 0
            while (left := t_go + duration - time.monotonic()) > 0:
                time.sleep(min(left, report_every))
                now = ProcStats(server.pid)
                actions = sum(progress[:])
                print(f"  t={now.at - t_go:5.0f} s  actions {actions:6d} "
                      f"({(actions - last_actions) / (now.at - last.at):4.1f}/s)  server RSS "
                      f"{now.rss / MIB:6.1f} MiB  fds {now.fds:4d}  threads {now.threads:4d}  "
                      f"CPU {100 * (now.cpu - last.cpu) / (now.at - last.at):3.0f}%", flush=True)
                last, last_actions = now, actions
            stop.set()
            t_stop = time.monotonic()
            quiesced = [control.get(timeout=max(1, deadline - time.time()))
                        for _ in range(args.processes)]
            stuck = sum(q[2] for q in quiesced)
            final.set()
            records, junk_counts = [], {}
            for _ in procs:
                what, _index, payload = results.get(timeout=max(1, deadline - time.time()))
                if what == "records":
                    records.extend(payload)
                else:
                    junk_counts = payload
            for p in procs:
                p.join(max(1, min(30, deadline - time.time())))
            wind_down = time.monotonic() - t_stop
            end = wait_fds(server.pid, base.fds + args.fd_slack, 30)
            time.sleep(SETTLE)  # a short settle before the last reading, as the issue asks
            end = ProcStats(server.pid)
        except queue.Empty:
            print("a worker did not report in time (hard deadline)", file=sys.stderr)
            return 2
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            server.terminate()
            try:
                server_rc = server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server_rc = server.wait(10)
            tracebacks, problems, sample = log_problems(log_path)
        return report(args, records, junk_counts, base, start, end, server_rc, stuck, wind_down,
                      tracebacks, problems, sample, duration)


def report(args, records, junk_counts, base, start, end, server_rc, stuck, wind_down,
           tracebacks, problems, sample, duration) -> int:
    acc = account(records)
    f = acc["figures"]
    counters: Counter = Counter()
    errors: Counter = Counter()
    unexpected: list[str] = []
    fatal = [f"{r.user}: {r.fatal}" for r in records if r.fatal]
    for r in records:
        counters.update(r.counters)
        errors.update(r.errors)
        unexpected.extend(f"{r.user}: {u}" for u in r.unexpected)
    rate_limited = sum(n for (_what, code), n in errors.items() if code == "rate_limited")
    other_errors = {f"{what}:{code}": n for (what, code), n in sorted(errors.items())
                    if code != "rate_limited"}
    actions = sum(n for k, n in counters.items() if k.startswith("action_"))
    failures = []
    for key in ("lost", "duplicated", "misdelivered", "unknown_tags", "duplicated_unconfirmed"):
        if f[key]:
            failures.append(f"{key} {f[key]}")
    fd_leak = end.fds - base.fds
    if fd_leak > args.fd_slack:
        failures.append(f"{fd_leak} file descriptors left open")
    growth = (end.rss - start.rss) / MIB
    if growth > args.rss_slack_mib:
        failures.append(f"server RSS grew {growth:.1f} MiB")
    if unexpected:
        failures.append(f"{len(unexpected)} unexpected disconnects")
    if fatal:
        failures.append(f"{len(fatal)} clients failed")
    bad_transfers = sum(n for (what, code), n in errors.items()
                        if what in ("download", "upload") and code in ("hash_mismatch",
                                                                        "entry_mismatch"))
    if bad_transfers:
        failures.append(f"{bad_transfers} transfers with wrong content")
    if tracebacks:
        failures.append(f"{tracebacks} tracebacks in the server log")

    rows = [
        ("clients / processes / minutes", f"{len(records)} / {args.processes} / {args.minutes:g}"),
        ("actions (per second)", f"{actions} ({actions / duration:.1f}/s)"),
        ("  by kind", ", ".join(f"{k[7:]} {n}" for k, n in sorted(counters.items())
                                if k.startswith("action_"))),
        ("messages sent: public / direct / room",
         f"{f['sent_public']} / {f['sent_direct']} (stored for offline {f['sent_direct_stored']})"
         f" / {f['sent_room']}"),
        ("send outcome unknown (timeout/disconnect)", f"{f['unconfirmed']} "
         f"(copies received {f['received_unconfirmed']})"),
        ("deliveries owed / received of those", f"{f['owed']} / {f['received_owed']}"),
        ("message events received (delayed; stored ones again, not acknowledged)",
         f"{f['received']} ({f['delayed']}; {counters['delayed_again']})"),
        ("LOST", f"{f['lost']}"),
        ("DUPLICATED", f"{f['duplicated'] + f['duplicated_unconfirmed']}"),
        ("misdelivered / unknown tags / untagged", f"{f['misdelivered']} / {f['unknown_tags']}"
         f" / {f['foreign']}"),
        ("deliveries at interval edges (not judged)", f"{f['edge_pairs']}"),
        ("notices received: typing / edited / deleted",
         f"{counters['seen_user_typing']} / {counters['seen_message_edited']} / "
         f"{counters['seen_message_deleted']}"),
        ("rate_limited errors", f"{rate_limited}"),
        ("other errors", ", ".join(f"{k} {n}" for k, n in other_errors.items()) or "none"),
        ("logins: register / login / resume", f"{counters['register']} / {counters['login']} / "
         f"{counters['resume']} (takeovers {counters['takeover']})"),
        ("reconnects: logout+login / close+new", f"{counters['reconnect_graceful']} / "
         f"{counters['reconnect_close']}"),
        ("unexpected disconnects", f"{len(unexpected)}"),
        ("uploads ok (MiB)", f"{counters['upload_ok']} ({counters['upload_bytes'] / MIB:.1f})"),
        ("downloads ok, hash checked (MiB)", f"{counters['download_ok']} "
         f"({counters['download_bytes'] / MIB:.1f}; udp {counters['download_via_udp']}, tcp "
         f"{counters['download_via_tcp']}; deferred {counters['download_deferred']})"),
        ("junk connections", f"{sum(junk_counts.values())}"),
        ("  by kind/outcome", ", ".join(f"{k}/{o} {n}" for (k, o), n in
                                        sorted(junk_counts.items()))),
        ("server RSS before clients", f"{base.rss / MIB:.1f} MiB"),
        ("server RSS warmed up / at end / growth",
         f"{start.rss / MIB:.1f} / {end.rss / MIB:.1f} MiB / {growth:+.1f} MiB"),
        ("server peak RSS (VmHWM)", f"{end.hwm / MIB:.1f} MiB"),
        ("server CPU during run (avg)", f"{end.cpu - base.cpu:.1f} s "
         f"({100 * (end.cpu - start.cpu) / max(1e-9, end.at - start.at):.0f}% of a core "
         "after warm-up)"),
        ("server fds before / with clients / end", f"{base.fds} / {start.fds} / {end.fds} "
         f"(leak {fd_leak:+d})"),
        ("server threads before / with / end", f"{base.threads} / {start.threads} / "
         f"{end.threads}"),
        ("wind-down (stop to all clients gone)", f"{wind_down:.1f} s; users stuck {stuck}"),
        ("server log: tracebacks / warnings", f"{tracebacks} / {problems}; exit code "
         f"{server_rc}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n== soak summary ==")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for line in sample:
        print(f"  server log: {line}")
    for line in acc["lost_examples"]:
        print(f"  lost: {line}")
    for line in (unexpected + fatal)[:10]:
        print(f"  client: {line}")
    print("RESULT:", "PASS" if not failures else "FAIL - " + "; ".join(failures))
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--processes", type=int, default=4, help="client worker processes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                   help="TLS on the chat connection (default: the server's default)")
    p.add_argument("--junk-rate", type=float, default=3.0, help="junk connections per second")
    p.add_argument("--min-gap", type=float, default=2.0, help="seconds between a user's actions")
    p.add_argument("--max-gap", type=float, default=10.0)
    p.add_argument("--files-mib", type=int, nargs="+", default=[1, 4, 10, 20],
                   help="sizes of the shared files offered for download")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    p.add_argument("--fd-slack", type=int, default=4)
    p.add_argument("--rss-slack-mib", type=float, default=8.0)
    args = p.parse_args()
    args.processes = max(1, min(args.processes, args.clients))
    hard = args.minutes * 60 + 120
    deadline = time.time() + hard

    def on_alarm(*_):
        raise HardDeadline(f"the soak passed its hard deadline of {hard:.0f} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(hard))
    try:
        return run(args, deadline)
    except HardDeadline as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
