"""Start a configured server, print where to reach it, and stop cleanly when asked."""

from __future__ import annotations

import socket
import sys
import threading

from parley_common.tlsbio import format_fingerprint, short_fingerprint
from protocol.join_code import encode_join_code

from .chat_server import ChatServer
from .config import ServerConfig
from .console import AdminConsole
from .discovery import DiscoveryResponder
from .file_sharing import attach_file_sharing
from .memory import limit_malloc_arenas
from .store import StoreError
from .tls_setup import TLSSetupError


def lan_addresses() -> list[str]:
    """The addresses people on the network would type (best effort, no traffic is sent)."""
    found: list[str] = []
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            ip = info[4][0]
            if ip not in found and not ip.startswith("127."):
                found.append(ip)
    except OSError:
        pass  # no resolvable hostname: fall back to the UDP trick below
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: connect() on UDP only picks a route
            ip = s.getsockname()[0]
            if ip not in found and not ip.startswith("127."):
                found.append(ip)
    except OSError:
        pass  # no route at all: loopback only
    return found or ["127.0.0.1"]


def _start_discovery(config: ServerConfig, server: ChatServer) -> DiscoveryResponder | None:
    # Bound to one address the socket would not receive broadcasts; a server listening on
    # loopback only answers only there, staying invisible to the LAN.
    bind = "0.0.0.0" if config.host in ("0.0.0.0", "::", "") else config.host
    port = server.address[1]
    fp = server.tls.fingerprint if server.tls is not None else None
    responder = DiscoveryResponder(
        lambda: {"name": socket.gethostname(), "port": port, "users": len(server.online()),
                 "fingerprint": format_fingerprint(fp) if fp else None},
        bind=bind)
    try:
        responder.start()
    except OSError as exc:
        print(f"warning: LAN discovery is off (UDP port {responder.port}: {exc.strerror})",
              file=sys.stderr, flush=True)
        return None
    print(f"  answering LAN discovery on UDP port {responder.port}", flush=True)
    return responder


def _print_join_code(server: ChatServer, host: str, port: int) -> None:
    if server.tls is None:
        return
    try:
        code = encode_join_code(host, port, server.tls.fingerprint)
    except ValueError:
        return  # a --host the code cannot carry (not a plain name or address)
    print(f"    join code: {code}", flush=True)


def _print_tls(server: ChatServer) -> None:
    tls = server.tls
    if tls is None:
        print("WARNING: TLS is off (--no-tls): anyone on the network can read the chat, "
              "passwords included. Use this for testing only.", file=sys.stderr, flush=True)
        return
    if tls.replaced:
        print("WARNING: this server had run before, but its TLS certificate was gone, so a "
              "new one was made. Every client that connected before will refuse the new "
              "fingerprint until its user checks and accepts it: tell them the new short "
              "form below, or restore the old data/tls folder from a backup and restart.",
              file=sys.stderr, flush=True)
    made = " (new certificate)" if tls.generated else ""
    print(f"  TLS fingerprint{made}: {format_fingerprint(tls.fingerprint)}", flush=True)
    print(f"    short form: {short_fingerprint(tls.fingerprint)}"
          f"  (certificate {tls.cert_path})", flush=True)


def run_server(config: ServerConfig, stop: threading.Event, discovery: bool = True) -> int:
    limit_malloc_arenas()
    for folder in (config.files_dir, config.data_dir):
        if not folder.exists():
            folder.mkdir(parents=True)
            print(f"created {folder}", flush=True)
    try:
        server = ChatServer(config)
    except (TLSSetupError, StoreError) as exc:  # a damaged or unwritable database, a bad key
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror}",
              file=sys.stderr, flush=True)
        return 2
    attach_file_sharing(server)
    server.start()
    port = server.address[1]
    print(f"Parley server listening on port {port}", flush=True)
    if config.host in ("0.0.0.0", "::", ""):
        for ip in lan_addresses():
            print(f"  people can connect to {ip} port {port}", flush=True)
            _print_join_code(server, ip, port)
    else:
        print(f"  address {config.host} port {port}", flush=True)
        _print_join_code(server, config.host, port)
    _print_tls(server)
    print(f"  shared files: {config.files_dir.resolve()}", flush=True)
    print(f"  data:         {config.data_dir.resolve()}", flush=True)
    responder = _start_discovery(config, server) if discovery else None
    if config.console:
        AdminConsole(server, on_exit=stop.set).start()
        print("admin console ready: type help", flush=True)
    print("stop the server with Ctrl+C", flush=True)
    while not stop.wait(0.5):
        pass
    print("shutting down", flush=True)
    if responder is not None:
        responder.close()
    server.shutdown()
    print("stopped", flush=True)
    return 0
