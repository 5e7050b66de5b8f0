"""Starting real Parley servers for tests: in-process (port 0) or as a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from parley_server.chat_server import ChatServer
from parley_server.config import ServerConfig
from parley_server.file_sharing import attach_file_sharing
from parley_server.policy import Limits, Policy

REPO = Path(__file__).resolve().parent.parent
FAST_SCRYPT_N = 2**10  # tests hash many passwords; the cost parameter is stored per user


@dataclass
class RunningServer:
    server: ChatServer
    host: str
    port: int
    files_dir: Path
    data_dir: Path

    @property
    def fingerprint(self) -> str | None:
        """The certificate's SHA-256 (64 hex digits), None when TLS is off."""
        return self.server.tls.fingerprint if self.server.tls is not None else None

    def connect(self, timeout: float | None = 10.0) -> socket.socket:
        """A blocking socket to the server, TLS-wrapped when the server uses TLS: for tests
        that write raw bytes into the chat protocol."""
        return open_socket(self.host, self.port, tls=self.server.tls is not None,
                           timeout=timeout)

    def stop(self) -> None:
        self.server.shutdown()


def make_config(tmp_path: Path, **kwargs) -> ServerConfig:
    files_dir = kwargs.pop("files_dir", tmp_path / "files")
    data_dir = kwargs.pop("data_dir", tmp_path / "data")
    files_dir.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("port", 0)
    kwargs.setdefault("scrypt_n", FAST_SCRYPT_N)
    kwargs.setdefault("scan_interval", 0.2)
    # Tests send faster than any person; the limits have tests of their own.
    kwargs.setdefault("policy", Policy(limits=Limits(message_rate=10_000, message_burst=10_000)))
    return ServerConfig(files_dir=files_dir, data_dir=data_dir, **kwargs)


def teacher_policy(**kwargs) -> Policy:
    """A fresh policy (a server may change its own) with "teacher" as administrator and
    limits no test trips over by accident."""
    return Policy(admins=["teacher"], limits=Limits(message_rate=1000, message_burst=1000),
                  **kwargs)


def server_fixture(policy=teacher_policy, **kwargs):
    """A pytest fixture: a running_server for each test, with a fresh policy(), for modules
    that name it (``srv = server_fixture(files=False)``)."""
    @pytest.fixture
    def fixture(tmp_path):
        with running_server(tmp_path, policy=policy(), **kwargs) as srv:
            yield srv
    return fixture


def insecure_client_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: test clients do not pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def open_socket(host: str, port: int, *, tls: bool = True,
                timeout: float | None = 10.0, source: str | None = None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    if tls:
        try:
            sock = insecure_client_context().wrap_socket(sock)
        except (OSError, ssl.SSLError):
            sock.close()
            raise
    return sock


@contextlib.contextmanager
def running_server(tmp_path: Path, *, files: bool = True, tls: bool = True, **kwargs):
    """A real ChatServer in this process on 127.0.0.1 (port 0 unless port= is given), with
    TLS (a certificate made in its data dir) unless tls=False."""
    config = make_config(tmp_path, tls=tls, **kwargs)
    server = ChatServer(config)
    if files:
        attach_file_sharing(server)
    server.start()
    host, port = server.address
    try:
        yield RunningServer(server, host, port, config.files_dir, config.data_dir)
    finally:
        server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts on {host}:{port}") from None
            time.sleep(0.05)  # polling interval inside a bounded wait


def start_server_process(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    """server.py as a real process (for kill -9 and signal tests)."""
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", str(port),
         "--files-dir", str(files), "--data-dir", str(tmp_path / "data"),
         "--scrypt-n", str(FAST_SCRYPT_N), "--no-discovery", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc


@contextlib.contextmanager
def server_process(tmp_path: Path, port: int, *extra: str):
    """start_server_process, and stopped at the end whatever happened: SIGTERM if it still
    runs, SIGKILL if that does not end it within 10 s."""
    proc = start_server_process(tmp_path, port, *extra)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
