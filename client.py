"""Parley client entry point: the Tk GUI by default, the terminal client with --cli."""

from __future__ import annotations

import argparse
import sys

from protocol import APP_NAME, APP_VERSION

DEFAULT_PORT = 5150


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"{APP_NAME} chat client. Without --cli it opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {APP_VERSION}")
    parser.add_argument("--cli", action="store_true",
                        help="terminal client: commands on stdin, messages on stdout")
    parser.add_argument("--host", help="server host to prefill (GUI)")
    parser.add_argument("--port", type=int, help=f"server port to prefill (default {DEFAULT_PORT})")
    parser.add_argument("--theme", choices=("light", "dark"), help="GUI colour theme")
    parser.add_argument("--no-tls", action="store_true",
                        help="INSECURE, for testing: talk to a server started with --no-tls")
    parser.add_argument("--no-discovery", action="store_true",
                        help="do not look for servers on the local network (GUI)")
    parser.add_argument("server_host", nargs="?", metavar="HOST",
                        help="with --cli: connect to this host at once")
    parser.add_argument("server_port", nargs="?", type=int, metavar="PORT",
                        help=f"with --cli: the port (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    for port in (args.port, args.server_port):
        if port is not None and not 0 < port < 65536:
            parser.error(f"port {port} is out of range (1-65535)")
    # One meaning for both spellings: positional HOST PORT also prefill the GUI.
    args.host = args.host or args.server_host
    args.port = args.port or args.server_port
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cli:
        from parley_client.cli import main as cli_main

        return cli_main(args.host, args.port, tls=not args.no_tls)
    try:
        from gui.app import main as gui_main  # imported late: the CLI never loads tkinter
    except ImportError as exc:
        print(f"error: the graphical client is not available ({exc}); "
              "use --cli for the terminal client", file=sys.stderr)
        return 2
    return gui_main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
