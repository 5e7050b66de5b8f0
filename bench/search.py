"""How long a message search takes as the history grows.

Fills a fresh database (the server's own Store, in a temporary folder) with N messages spread
over Public, 20 rooms and 200 private conversations, then times, median of 7:
- search for a word in about 1 message in 1000 (what people usually look for);
- search for a word in every message (the worst case: the newest `limit` of very many);
- search for a word in none (the whole history read);
and, as the baseline measured in the same run, one page of `history` (50 messages), with the
ratio search / history. Searches of 3+ characters read a trigram full-text index (FTS5), so a
rare word costs about the same at any N; a word in none is found in none at once; a word in
every message stops after `limit`. Two-letter searches scan the newest 20,000 messages only.
The server also runs one search at a time and 20 a second server-wide (see message_commands).

Run: .venv/bin/python bench/search.py [--messages 10000 100000 500000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parley_server.store import Store, conversation_key  # noqa: E402

ROOMS = [f"room{i}" for i in range(20)]
USERS = [f"user{i}" for i in range(40)]
WORDS = ("lunch", "meeting", "build", "green", "coffee", "deploy", "review", "ticket", "later",
         "ok", "thanks", "printer", "again", "friday", "naïve", "done")


def fill(store: Store, n: int, rng: random.Random) -> None:
    """Rows written straight into the table in big transactions: this measures reading."""
    rows = []
    for i in range(n):
        sender = rng.choice(USERS)
        kind = rng.choices(("public", "room", "direct"), weights=(3, 4, 3))[0]
        target = "" if kind == "public" else rng.choice(ROOMS) if kind == "room" else \
            rng.choice([u for u in USERS if u != sender])
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))
        if i % 1000 == 0:
            words += " projector"
        rows.append((1.7e9 + i, sender, sender, kind, target,
                     conversation_key(kind, sender, target), f"all {words}"))
    with store._reader() as db:  # one connection, outside the writer: setup only
        db.execute("BEGIN")
        db.executemany("INSERT INTO messages(ts, sender, sender_display, kind, target, conv, text)"
                       " VALUES (?,?,?,?,?,?,?)", rows)
        db.execute("COMMIT")


def median_ms(fn, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(path: Path, n: int, rng: random.Random, rooms: list[str]
            ) -> tuple[float, dict[str, float]]:
    store = Store(path)
    try:
        fill(store, n, rng)
        history = median_ms(lambda: store.history("public", 50, None))
        figures = {what: median_ms(lambda words=words: store.search(words, "user1", rooms, 51))
                   for what, words in (("rare word (1 in 1000)", "projector"),
                                       ("common word (all)", "all"),
                                       ("absent word", "xylophone"))}
    finally:
        store.close()
    return history, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    args = parser.parse_args()
    rng = random.Random(1)
    rooms = [conversation_key("room", "", r) for r in ROOMS[:5]]  # a user in 5 rooms
    for n in args.messages:
        with tempfile.TemporaryDirectory() as tmp:
            history, figures = measure(Path(tmp) / "parley.db", n, rng, rooms)
        print(f"{n:>9,} messages: history page {history:6.2f} ms (baseline)")
        for what, ms in figures.items():
            print(f"    search, {what:<22} {ms:8.2f} ms  ({ms / history:6.1f}x history)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
