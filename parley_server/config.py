"""Server settings, with the embedded defaults used when nothing is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from parley_common.paths import app_dir

from .policy import Policy

DEFAULT_PORT = 5150


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    files_dir: Path = field(default_factory=lambda: app_dir() / "ServerFiles")
    data_dir: Path = field(default_factory=lambda: app_dir() / "data")
    max_frame: int = 1 << 20
    max_text: int = 4000
    sendq_limit: int = 4 << 20          # bytes queued for one client before it is dropped
    socket_sndbuf: int = 256 << 10      # kernel send buffer per client
    keepalive_after: float = 20.0       # ping a client silent this long
    dead_after: float = 60.0            # drop a client silent this long (ping unanswered)
    poll_interval: float = 5.0          # how often an idle reader wakes to check the above
    history_keep: int = 5000            # messages kept per conversation (0: all)
    retention_interval: float = 600.0   # how often old history is removed (and at start)
    scrypt_n: int = 2**14
    max_upload: int = 100 << 20
    udp_port: int | None = None         # None: same number as the TCP port (0 when port is 0)
    scan_interval: float = 1.0          # how often the files dir is checked for changes
    motd: str = "Welcome to Parley."
    console: bool = False
    tls: bool = True                    # --no-tls: plain TCP, readable by anyone on the network
    tls_cert: Path | None = None        # None: data_dir/tls/cert.pem, created on first start
    tls_key: Path | None = None
    policy: Policy = field(default_factory=Policy)
    # Connections open at once, logged in or not: each holds a descriptor and a reader thread,
    # and past what the machine gives a process, accepting more would fail everyone's uploads
    # and downloads (EMFILE) or the accept loop itself. None: sized from RLIMIT_NOFILE.
    max_connections: int | None = None
    login_deadline: float = 30.0        # close a connection not logged in within this long
    pre_login_max_frame: int = 16 << 10 # hello and login are small; strangers hold no more
    # Free space uploads must leave on the disk: the database (accounts, messages), its
    # journal and the logs need room to write, or one user's upload would stop everyone's
    # messages and logins with a full disk.
    disk_reserve: int = 64 << 20

    def connection_cap(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        return default_max_connections()


def default_max_connections() -> int:
    """Half the descriptors this process may open (the other half for files being sent or
    received, the databases and the listening sockets), at most 4,000 (a large school)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # Windows: no resource module
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 4000
    return max(16, min(4000, (soft - 64) // 2))
