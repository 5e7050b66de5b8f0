"""Account rules: name and password validation, scrypt hashing, and wrong-password throttling."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import threading
import time

from .limits import RateLimiter
from .names import SERVER_NAME, NameIndex, reserved, skeleton
from .store import NameTaken, Store, UserRecord

NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
MIN_PASSWORD = 6
MAX_PASSWORD = 1024
# Temporary passwords an administrator hands out: no look-alike characters (0/O, 1/l/I),
# four groups of four, about 80 bits.
TEMP_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
# scrypt cost: n=2**14, r=8, p=1 is the common interactive setting (~40 ms, 16 MiB here).
DEFAULT_SCRYPT_N = 2**14


def temporary_password() -> str:
    return "-".join("".join(secrets.choice(TEMP_ALPHABET) for _ in range(4)) for _ in range(4))


class AccountError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


def check_new_credentials(name: str, password: str) -> None:
    if not valid_name(name):
        raise AccountError("invalid_username",
                           "usernames are 1-32 letters, digits, '_', '-' or '.'")
    check_new_password(password)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError("invalid_password",
                           f"passwords need at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError("invalid_password", "that password is too long")


class Throttle:
    """Counts failures per key and locks the key out, for a growing time, after too many.

    Whom a lock-out stops is the caller's choice (see Accounts._check_throttle): a lock on a
    name must not stop its owner, or one wrong guess from each of many addresses keeps them
    out."""

    def __init__(self, free_failures: int = 5, window: float = 300.0, base_lock: float = 2.0,
                 max_lock: float = 300.0) -> None:
        self.free_failures, self.window = free_failures, window
        self.base_lock, self.max_lock = base_lock, max_lock
        self._lock = threading.Lock()
        # key -> (failures, first, last, locked_until)
        self._state: dict[str, tuple[int, float, float, float]] = {}

    def retry_after(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            _failures, _first, _last, until = self._state.get(key, (0, now, now, 0.0))
            return max(0.0, until - now)

    def failed_recently(self, key: str, now: float | None = None) -> bool:
        """Whether key failed within the window (or is still locked)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            state = self._state.get(key)
            return state is not None and (now - state[2] <= self.window or state[3] > now)

    def failure(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures, first, _last, until = self._state.get(key, (0, now, now, 0.0))
            if now - first > self.window:
                failures, first = 0, now
            failures += 1
            if failures >= self.free_failures:
                lock = min(self.max_lock, self.base_lock * 2 ** (failures - self.free_failures))
                until = now + lock
            self._state[key] = (failures, first, now, until)
            if len(self._state) > 100_000:  # bound memory under a name-spraying attack
                self._state = {k: v for k, v in self._state.items()
                               if v[3] > now or now - v[2] <= self.window}

    def success(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)


def network_of(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address is in: one machine can take any address of its
    subnet, so rotating the last octet must not start its count afresh. An IPv4-mapped IPv6
    address (::ffff:a.b.c.d, from a dual-stack listener) counts as its IPv4 address."""
    try:
        ip = canonical_ip(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def canonical_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address parsed, an IPv4-mapped IPv6 address as the IPv4 one (ValueError if none)."""
    ip = ipaddress.ip_address(address.strip())
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Accounts:
    def __init__(self, store: Store, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        self.store = store
        self.scrypt_n = scrypt_n
        # Each scrypt call holds 128*r*n bytes (16 MiB at the default) and a core for ~40 ms:
        # bound how many run at once, and leave one core to everything else, or a burst of
        # registrations or guesses (each one scrypt) stalls every chat line for everyone
        # (bench/abuse.py: send p99 from 9 ms to 410 ms with both cores hashing).
        self._hash_slots = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) - 1))
        self.by_name = Throttle()
        self.by_address = Throttle(free_failures=20)
        # A subnet gets more than an address (a classroom shares one), but it is counted: see
        # network_of. Its lock stops only the subnet's addresses that have failed themselves.
        self.by_network = Throttle(free_failures=50)
        self.names = NameIndex(store.all_users())
        self._limiters: dict[str, RateLimiter] = {}
        self._limiters_lock = threading.Lock()

    def limiter(self, what: str, per_second: float, burst: int) -> RateLimiter:
        """The token bucket for one kind of request, made again when its policy changes."""
        with self._limiters_lock:
            lim = self._limiters.get(what)
            if lim is None or (lim.rate, lim.burst) != (per_second, float(burst)):
                lim = self._limiters[what] = RateLimiter(per_second, burst)
            return lim

    def _hash(self, password: str, salt: bytes, params: str) -> bytes:
        _algo, n, r, p = params.split(":")
        with self._hash_slots:
            return hashlib.scrypt(password.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                                  maxmem=256 * 1024 * 1024, dklen=32)

    def _params(self) -> str:
        return f"scrypt:{self.scrypt_n}:8:1"

    def register(self, name: str, password: str) -> UserRecord:
        check_new_credentials(name, password)
        if reserved(name):
            raise AccountError("name_reserved",
                               f"{SERVER_NAME!r} is the name the server's announcements go out "
                               "under; choose another username")
        self._check_name_free(name)
        salt, params = os.urandom(16), self._params()
        pw_hash = self._hash(password, salt, params)
        with self.names.lock:  # checked again: someone may have taken it during the hash
            self._check_name_free(name)
            try:
                self.store.create_user(name, pw_hash, salt, params)
            except NameTaken:  # lost a race with a concurrent registration of the same name
                raise AccountError("name_taken", f"the name {name!r} is already taken") from None
            self.names.add(name, name)
        record = self.store.get_user(name)
        assert record is not None
        return record

    def _check_name_free(self, name: str) -> None:
        if self.store.get_user(name) is not None:
            raise AccountError("name_taken", f"the name {name!r} is already taken")
        if self.names.owner_other_than(skeleton(name), name):
            raise AccountError("name_taken", f"the name {name!r} is already taken: another "
                               "account uses it, or one that looks the same, as its display "
                               "name")

    def _check_throttle(self, name: str, address: str) -> None:
        """An address over its own limit is refused. The locks on a name and on a subnet stop
        only addresses that have failed recently themselves: an attacker rotating addresses
        gets one guess from each fresh one, and the owner (whose address has not been
        failing) still gets in with the right password."""
        wait = self.by_address.retry_after(address)
        if self.by_address.failed_recently(address):
            wait = max(wait, self.by_name.retry_after(name.lower()),
                       self.by_network.retry_after(network_of(address)))
        if wait > 0:
            raise AccountError("throttled",
                               f"too many failed logins; try again in {max(wait, 1):.0f} s")

    def _failed(self, name: str | None, address: str) -> None:
        if name is not None:
            self.by_name.failure(name.lower())
        self.by_address.failure(address)
        self.by_network.failure(network_of(address))

    def login(self, name: str, password: str, address: str) -> UserRecord:
        self._check_throttle(name, address)
        record = self.store.get_user(name)
        if record is None:
            self._failed(name, address)
            raise AccountError("no_such_user", f"there is no account named {name!r}; register it")
        if not hmac.compare_digest(self._hash(password, record.pw_salt, record.pw_params),
                                   record.pw_hash):
            self._failed(name, address)
            raise AccountError("wrong_password", "wrong password")
        # The name's count is not cleared: the owner logging in must not hand the guessers
        # a fresh set of free guesses.
        return record

    def resume(self, name: str, token: str, address: str) -> UserRecord:
        """Log in with the reconnect token from an earlier login: no password kept by clients.

        Not throttled by name: a token is 256 random bits, so guessing one is hopeless, and a
        lock on the name would only let others keep its owner out. A bad token counts
        against the address, like a wrong password."""
        wait = self.by_address.retry_after(address)
        if wait > 0:
            raise AccountError("throttled",
                               f"too many failed logins; try again in {max(wait, 1):.0f} s")
        record = self.store.get_user(name)
        digest = hashlib.sha256(token.encode()).digest()
        if record is None or record.resume_hash is None or not hmac.compare_digest(
                digest, record.resume_hash):
            self._failed(None, address)
            raise AccountError("bad_token", "that reconnect token is not valid; log in again")
        return record

    def change_password(self, name: str, old: str, new: str, address: str) -> str:
        """The owner's change: the old password is checked (and throttled) like a login.
        Returns a fresh reconnect token, since the old one is void now."""
        check_new_password(new)
        self.login(name, old, address)
        if new == old:
            raise AccountError("invalid_password", "the new password is the same as the old one")
        self.set_password(name, new)
        return self.new_resume_token(name)

    def set_password(self, name: str, password: str, temporary: bool = False) -> None:
        """New salt and hash, current cost parameters; the reconnect token is voided."""
        check_new_password(password)
        salt, params = os.urandom(16), self._params()
        self.store.set_password(name, self._hash(password, salt, params), salt, params,
                                temporary)

    def new_resume_token(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        self.store.set_resume_hash(name, hashlib.sha256(token.encode()).digest())
        return token
