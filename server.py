"""Parley server: python server.py [--host H] [--port P] [--files-dir D] [--data-dir D] [--console]
[--tls-cert PATH --tls-key PATH | --no-tls]"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from parley_server.config import DEFAULT_PORT, ServerConfig, app_dir
from parley_server.memory import relaunch_without_thread_caches
from parley_server.policy import PolicyError, load_policy
from parley_server.runner import run_server
from protocol.version import APP_NAME, APP_VERSION


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="parley-server",
                                description=f"{APP_NAME} chat and file-sharing server")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--files-dir", type=Path, default=app_dir() / "ServerFiles",
                   help="the shared files folder (default ServerFiles/ beside the program)")
    p.add_argument("--data-dir", type=Path, default=app_dir() / "data",
                   help="where accounts and history are kept (default data/ beside the program)")
    p.add_argument("--udp-port", type=int, default=None,
                   help="UDP port for downloads (default: the TCP port's number)")
    p.add_argument("--max-upload", type=int, default=None, metavar="MIB",
                   help="largest upload accepted, in MiB (default 100)")
    p.add_argument("--console", action="store_true",
                   help="read admin commands from stdin even when it is not a terminal")
    p.add_argument("--no-console", action="store_true", help="never read admin commands")
    p.add_argument("--scrypt-n", type=int, default=2**14, help=argparse.SUPPRESS)
    p.add_argument("--no-discovery", action="store_true", help="do not answer LAN discovery")
    pol = p.add_argument_group("policies and limits (override data/policy.toml)")
    pol.add_argument("--admin", action="append", metavar="USER", default=None,
                     help="make USER an administrator (repeatable)")
    pol.add_argument("--no-private", dest="private_messages", action="store_false", default=None,
                     help="turn off private (direct) messages")
    pol.add_argument("--no-uploads", dest="uploads", action="store_false", default=None,
                     help="only administrators may upload")
    pol.add_argument("--read-only-public", dest="public_read_only", action="store_true",
                     default=None, help="only administrators post in the public room")
    pol.add_argument("--allowed-ext", metavar="EXTS", default=None,
                     help="comma-separated file extensions accepted for upload, e.g. .pdf,.txt")
    pol.add_argument("--history-days", type=int, default=None, metavar="N",
                     help="delete messages older than N days (0 keeps everything)")
    pol.add_argument("--message-rate", type=float, default=None, metavar="PER_S",
                     help="steady messages per second per user (default 1)")
    pol.add_argument("--message-burst", type=int, default=None, metavar="N",
                     help="messages a user may send at once (default 10)")
    pol.add_argument("--max-connections-per-address", type=int, default=None, metavar="N",
                     help="connections from one address (default 8; loopback exempt)")
    pol.add_argument("--rooms-per-user", type=int, default=None, metavar="N",
                     help="open rooms one user may have created (default 5)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="connections open at once, logged in or not (default: half the "
                        "descriptors the system gives the server, at most 4000)")
    p.add_argument("--login-deadline", type=float, default=30.0, metavar="SECONDS",
                   help="close a connection that has not logged in within this long "
                        "(default 30)")
    p.add_argument("--disk-reserve", type=int, default=64, metavar="MIB",
                   help="free disk space uploads must leave for the database and logs "
                        "(default 64)")
    p.add_argument("--tls-cert", type=Path, metavar="PATH",
                   help="TLS certificate (PEM) to use instead of the one made on first start")
    p.add_argument("--tls-key", type=Path, metavar="PATH", help="the private key of --tls-cert")
    p.add_argument("--no-tls", action="store_true",
                   help="INSECURE, for testing: plain TCP that anyone on the network can read")
    p.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    p.add_argument("--version", action="version", version=f"{APP_NAME} {APP_VERSION}")
    return p.parse_args(argv)


def policy_overrides(args: argparse.Namespace) -> dict:
    """The policy settings given as flags (None means: not given, keep the file's)."""
    top = {"private_messages": args.private_messages, "uploads": args.uploads,
           "public_read_only": args.public_read_only, "history_days": args.history_days,
           "max_upload_mib": args.max_upload, "admins": args.admin,
           "allowed_extensions": args.allowed_ext.split(",") if args.allowed_ext else None}
    limits = {"message_rate": args.message_rate, "message_burst": args.message_burst,
              "connections_per_address": args.max_connections_per_address,
              "rooms_per_user": args.rooms_per_user}
    out = {k: v for k, v in top.items() if v is not None}
    limits = {k: v for k, v in limits.items() if v is not None}
    if limits:
        out["limits"] = limits
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: give both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    if args.no_tls and args.tls_cert is not None:
        print("error: --no-tls and --tls-cert contradict each other", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = args.console or (not args.no_console and sys.stdin is not None
                               and sys.stdin.isatty())
    try:
        policy = load_policy(args.data_dir, policy_overrides(args))
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(host=args.host, port=args.port, files_dir=args.files_dir,
                          data_dir=args.data_dir, udp_port=args.udp_port,
                          max_upload=policy.max_upload_mib << 20, scrypt_n=args.scrypt_n,
                          console=console, policy=policy, tls=not args.no_tls,
                          tls_cert=args.tls_cert, tls_key=args.tls_key,
                          max_connections=args.max_connections,
                          login_deadline=args.login_deadline,
                          disk_reserve=args.disk_reserve << 20)
    stop = threading.Event()

    def request_stop(*_) -> None:
        # Event.set() takes the event's lock, which the main thread may hold inside
        # stop.wait() when this handler runs on it (two signals in a row, as a frozen
        # one-file program gets on Ctrl+C, would deadlock): set it from another thread.
        threading.Thread(target=stop.set, name="parley-stop", daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    return run_server(config, stop, discovery=not args.no_discovery)


if __name__ == "__main__":
    relaunch_without_thread_caches()  # returns at once when already done or not applicable
    sys.exit(main())
