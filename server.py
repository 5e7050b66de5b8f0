"""Parley server: python server.py [--host H] [--port P] [--files-dir D] [--data-dir D] [--console]"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from parley_server.config import DEFAULT_PORT, ServerConfig, app_dir
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
    p.add_argument("--max-upload", type=int, default=100, metavar="MIB",
                   help="largest upload accepted, in MiB (default 100)")
    p.add_argument("--console", action="store_true",
                   help="read admin commands from stdin even when it is not a terminal")
    p.add_argument("--no-console", action="store_true", help="never read admin commands")
    p.add_argument("--scrypt-n", type=int, default=2**14, help=argparse.SUPPRESS)
    p.add_argument("--no-discovery", action="store_true", help="do not answer LAN discovery")
    p.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    p.add_argument("--version", action="version", version=f"{APP_NAME} {APP_VERSION}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = args.console or (not args.no_console and sys.stdin is not None
                               and sys.stdin.isatty())
    config = ServerConfig(host=args.host, port=args.port, files_dir=args.files_dir,
                          data_dir=args.data_dir, udp_port=args.udp_port,
                          max_upload=args.max_upload << 20, scrypt_n=args.scrypt_n,
                          console=console)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run_server(config, stop, discovery=not args.no_discovery)


if __name__ == "__main__":
    sys.exit(main())
