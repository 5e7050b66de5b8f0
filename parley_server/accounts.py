"""Account rules: name and password validation, scrypt hashing, and wrong-password throttling."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time

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
    """Refuses further attempts for a key after repeated failures, with a growing lock-out."""

    def __init__(self, free_failures: int = 5, window: float = 300.0, base_lock: float = 2.0,
                 max_lock: float = 300.0) -> None:
        self.free_failures, self.window = free_failures, window
        self.base_lock, self.max_lock = base_lock, max_lock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float, float]] = {}  # key -> (failures, first, locked_until)

    def retry_after(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures, first, until = self._state.get(key, (0, now, 0.0))
            return max(0.0, until - now)

    def failure(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures, first, until = self._state.get(key, (0, now, 0.0))
            if now - first > self.window:
                failures, first = 0, now
            failures += 1
            if failures >= self.free_failures:
                lock = min(self.max_lock, self.base_lock * 2 ** (failures - self.free_failures))
                until = now + lock
            self._state[key] = (failures, first, until)
            if len(self._state) > 100_000:  # bound memory under a name-spraying attack
                self._state = {k: v for k, v in self._state.items() if v[2] > now}

    def success(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)


class Accounts:
    def __init__(self, store: Store, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        self.store = store
        self.scrypt_n = scrypt_n
        # Each scrypt call holds 128*r*n bytes (16 MiB at the default): bound how many run at once.
        self._hash_slots = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
        self.by_name = Throttle()
        self.by_address = Throttle(free_failures=20)

    def _hash(self, password: str, salt: bytes, params: str) -> bytes:
        _algo, n, r, p = params.split(":")
        with self._hash_slots:
            return hashlib.scrypt(password.encode(), salt=salt, n=int(n), r=int(r), p=int(p),
                                  maxmem=256 * 1024 * 1024, dklen=32)

    def _params(self) -> str:
        return f"scrypt:{self.scrypt_n}:8:1"

    def register(self, name: str, password: str) -> UserRecord:
        check_new_credentials(name, password)
        if self.store.get_user(name) is not None:
            raise AccountError("name_taken", f"the name {name!r} is already taken")
        salt, params = os.urandom(16), self._params()
        try:
            self.store.create_user(name, self._hash(password, salt, params), salt, params)
        except NameTaken:  # lost a race with a concurrent registration of the same name
            raise AccountError("name_taken", f"the name {name!r} is already taken") from None
        record = self.store.get_user(name)
        assert record is not None
        return record

    def _check_throttle(self, name: str, address: str) -> None:
        wait = max(self.by_name.retry_after(name.lower()), self.by_address.retry_after(address))
        if wait > 0:
            raise AccountError("throttled",
                               f"too many failed logins; try again in {wait:.0f} s")

    def _failed(self, name: str, address: str) -> None:
        self.by_name.failure(name.lower())
        self.by_address.failure(address)

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
        self.by_name.success(name.lower())
        return record

    def resume(self, name: str, token: str, address: str) -> UserRecord:
        """Log in with the reconnect token from an earlier login: no password kept by clients."""
        self._check_throttle(name, address)
        record = self.store.get_user(name)
        digest = hashlib.sha256(token.encode()).digest()
        if record is None or record.resume_hash is None or not hmac.compare_digest(
                digest, record.resume_hash):
            self._failed(name, address)
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
