"""How long does the Parley window stall while a big download runs and messages pour in?

    python bench/gui_responsiveness.py [--mib 200] [--rate 100] [--seconds 4]

Starts a real server with one file of --mib MiB, logs a GUI client (a real App window) and
a second plain session in, then downloads the file in the GUI while the second session
sends --rate public messages a second. A repeating after(10 ms) probe on the Tk thread
records the gap between its runs; the largest gap is the worst stall a person would feel.
The same probe on the idle window, in the same run, is the baseline. Needs an X display:
one is started with Xvfb when $DISPLAY is unset.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

PROBE_MS = 10


class Probe:
    """A repeating after() callback that records the largest gap between its runs."""

    def __init__(self, root) -> None:
        self.root, self.gaps, self.last, self.after_id = root, [], None, None

    def start(self) -> None:
        self.last = time.perf_counter()
        self.after_id = self.root.after(PROBE_MS, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now
        self.after_id = self.root.after(PROBE_MS, self._tick)

    def stop(self) -> float:
        if self.after_id is not None:
            self.root.after_cancel(self.after_id)
        return max(self.gaps, default=0.0)


def pump_for(root, seconds: float, until=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until()):
        root.update()
        time.sleep(0.002)


def flood(session, rate: int, stop: threading.Event, sent: list) -> None:
    """Send `rate` public messages a second until stopped (paced by the clock, not guessed)."""
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        due = start + n / rate
        wait = due - time.monotonic()
        if wait > 0 and stop.wait(wait):
            break
        session.send("public", "", f"flood message {n} " + "lorem ipsum " * 4)
        n += 1
    sent.append(n)


def measure(app, peer_session, file_name: str, rate: int, seconds: float,
            timeout: float = 60.0) -> dict:
    """Run the download + flood in an already logged-in App; return figures in seconds."""
    root = app.root
    idle = Probe(root)
    idle.start()
    pump_for(root, 1.0)
    baseline = idle.stop()

    stop, sent = threading.Event(), []
    flooder = threading.Thread(target=flood, args=(peer_session, rate, stop, sent), daemon=True)
    probe = Probe(root)
    probe.start()
    flooder.start()
    t0 = time.monotonic()
    app.main.actions.download([file_name])
    transfer = max(app.state.transfers.values(), key=lambda t: t.tid)
    pump_for(root, timeout, until=lambda: transfer.finished and time.monotonic() - t0 >= seconds)
    download_s = time.monotonic() - t0
    stop.set()
    flooder.join(5)
    worst = probe.stop()
    return {"baseline_max_gap": baseline, "max_gap": worst, "state": transfer.state,
            "download_s": download_s, "messages_sent": sent[0] if sent else 0,
            "probes": len(probe.gaps)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    from xvfb import Xvfb

    xvfb = None
    if not os.environ.get("DISPLAY"):
        xvfb = Xvfb()
        os.environ["DISPLAY"] = xvfb.start()
    try:
        return run(args)
    finally:
        if xvfb is not None:
            xvfb.stop()


def run(args) -> int:
    import tkinter as tk

    from serverutil import running_server

    from gui.app import App
    from parley_client.session import ClientSession
    from parley_client.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = tmp_path / "files"
        files.mkdir()
        with open(files / "big.bin", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(args.mib):
                f.write(chunk)
        with running_server(tmp_path) as srv:
            peer = ClientSession(lambda ev: None)
            peer.connect(srv.host, srv.port)
            peer.register("bob", "secret-pw").result(10)
            root = tk.Tk()
            settings = Settings.load(tmp_path / "config" / "settings.json")
            settings.download_dir = str(tmp_path / "dl")
            app = App(root, settings, confirm_fingerprint=lambda *a: True)
            app.login.server_var.set(f"{srv.host}:{srv.port}")
            app.login.user_var.set("alice")
            app.login.password_var.set("secret-pw")
            app.login.register_button.invoke()
            pump_for(root, 15, until=lambda: app.main is not None and "big.bin" in app.state.files)
            if app.main is None:
                print("login failed", file=sys.stderr)
                return 1
            r = measure(app, peer, "big.bin", args.rate, args.seconds)
            app.quit()
            app.join_closers()
            peer.close()
    print(f"download of {args.mib} MiB: {r['state']} in {r['download_s']:.2f} s "
          f"while {r['messages_sent']} messages arrived ({args.rate}/s)")
    print(f"idle window: max gap {r['baseline_max_gap'] * 1000:.1f} ms between "
          f"{PROBE_MS} ms probes")
    print(f"under load:  max gap {r['max_gap'] * 1000:.1f} ms over {r['probes']} probes "
          f"(ratio to idle {r['max_gap'] / max(r['baseline_max_gap'], 1e-6):.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
