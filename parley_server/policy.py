"""Classroom and office policies, and the abuse limits, from a file in the data dir and flags.

The file is ``policy.toml`` in the data dir (read with the standard tomllib). Flags given on
the command line win over the file. Clients are told the policy in the hello reply so they can
hide what is disabled.

    # data/policy.toml
    private_messages = false      # no direct messages
    uploads = true
    public_read_only = false      # only admins post in the public room
    max_upload_mib = 100
    allowed_extensions = [".pdf", ".txt", ".png"]   # empty or absent: any
    history_days = 30             # delete messages older than this; 0 keeps everything
    admins = ["teacher"]          # these users are administrators
    self_registration = true      # false: only the administrator creates accounts (adduser)

    [limits]
    message_rate = 1.0            # messages per second, steady
    message_burst = 10            # messages at once before the steady rate applies
    connections_per_address = 8
    exempt_loopback = true        # no connection or registration limit for 127.0.0.0/8, ::1
    rooms_per_user = 5            # rooms a user may have created and still open
    list_max = 1000               # longest list any listing request returns
    registrations_per_address = 10   # new accounts one address may register per hour
    registrations_per_minute = 120   # new accounts the whole server takes per minute
    renames_per_minute = 5        # display name changes per user per minute

Every number is checked at start: a value outside its range (see RANGES) stops the server
with the setting's name and what it may be.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

POLICY_FILE = "policy.toml"


class PolicyError(Exception):
    pass


@dataclass
class Limits:
    message_rate: float = 1.0
    message_burst: int = 10
    connections_per_address: int = 8
    exempt_loopback: bool = True  # the server's own machine (its admin, local tools) is trusted
    rooms_per_user: int = 5
    list_max: int = 1000
    # Registrations from loopback are not counted either, when exempt_loopback is on.
    registrations_per_address: int = 10  # per hour
    registrations_per_minute: int = 120
    renames_per_minute: int = 5


@dataclass
class Policy:
    private_messages: bool = True
    uploads: bool = True
    public_read_only: bool = False
    max_upload_mib: int = 100
    allowed_extensions: list[str] = field(default_factory=list)
    history_days: int = 0
    admins: list[str] = field(default_factory=list)
    self_registration: bool = True
    limits: Limits = field(default_factory=Limits)

    def extension_allowed(self, filename: str) -> bool:
        if not self.allowed_extensions:
            return True
        lower = filename.lower()
        return any(lower.endswith(ext) for ext in self.allowed_extensions)

    def to_wire(self) -> dict:
        """What clients are told (the limits they may hit included; the admin list is not)."""
        out = asdict(self)
        del out["admins"]
        return out


def _apply(target, values: dict, where: str) -> None:
    known = {f.name: f for f in fields(target)}
    for key, value in values.items():
        if key not in known:
            raise PolicyError(f"{where}: unknown setting {key!r}")
        current = getattr(target, key)
        if isinstance(current, Limits):
            if not isinstance(value, dict):
                raise PolicyError(f"{where}: [{key}] must be a table")
            _apply(current, value, f"{where} [{key}]")
            continue
        expected = type(current)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise PolicyError(f"{where}: {key} must be {expected.__name__}")
        setattr(target, key, value)


# setting -> (lowest, highest, what it counts): every number in the policy is checked at start,
# since a zero or negative one (connections_per_address = 0) silently breaks the server.
RANGES: dict[str, tuple[float, float, str]] = {
    "max_upload_mib": (1, 1 << 20, "MiB an upload may have"),
    "history_days": (0, 36_500, "days messages are kept, 0 for always"),
    "message_rate": (0.001, 10_000, "messages per second a user may send, steadily"),
    "message_burst": (1, 10_000, "messages a user may send at once"),
    "connections_per_address": (1, 10_000, "connections one address may have open"),
    "rooms_per_user": (0, 1_000, "rooms one user may have open, 0 for none"),
    "list_max": (1, 1_000_000, "entries a listing returns at most"),
    "registrations_per_address": (1, 100_000, "accounts one address may register per hour"),
    "registrations_per_minute": (1, 100_000, "accounts the server takes per minute"),
    "renames_per_minute": (1, 1_000, "display name changes per user per minute"),
}


def check_ranges(policy: Policy) -> None:
    """PolicyError naming the first setting outside its range, and the range, in words."""
    for target, where in ((policy, ""), (policy.limits, "[limits] ")):
        for f in fields(target):
            if f.name not in RANGES:
                continue
            low, high, meaning = RANGES[f.name]
            value = getattr(target, f.name)
            if not low <= value <= high:
                kind = "a whole number" if isinstance(value, int) else "a number"
                raise PolicyError(f"policy setting {where}{f.name} is {value}, but it must be "
                                  f"{kind} from {_num(low)} to {_num(high)} ({meaning})")


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def load_policy(data_dir: Path, overrides: dict | None = None) -> Policy:
    """The policy file (if any) with the command line's overrides on top."""
    policy = Policy()
    path = data_dir / POLICY_FILE
    if path.exists():
        try:
            values = tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: {exc}") from None
        _apply(policy, values, str(path))
    if overrides:
        _apply(policy, overrides, "command line")
    policy.allowed_extensions = [e if e.startswith(".") else "." + e
                                 for e in (x.strip().lower() for x in policy.allowed_extensions)
                                 if e]
    check_ranges(policy)
    return policy
