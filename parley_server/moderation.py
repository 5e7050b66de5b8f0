"""Moderation: admins, bans (of users and addresses), mutes, kicks, announcements, file removal
and history purges. The console and users marked admin use the same actions; every action is
written to the audit log in the data dir."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from typing import TYPE_CHECKING

from protocol import messages as m

from .accounts import AccountError, canonical_ip, temporary_password
from .audit import AuditLog, AuditUnavailable
from .names import SERVER_NAME
from .store import conversation_key

if TYPE_CHECKING:
    from .chat_server import ChatServer

BAN_KINDS = ("user", "address")


class ModerationError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def address_key(text: str) -> str:
    """How an address ban is stored and looked up: one spelling per address, and an
    IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack listener's view of an IPv4 peer)
    as its IPv4 address, so a ban of a.b.c.d catches it."""
    try:
        return str(canonical_ip(text))
    except ValueError:
        return text.strip().lower()


def _split_kind(target: str) -> tuple[str, str]:
    """("user" or "address", the rest) for a prefixed ban target; ("", target) for a bare one
    (an IPv6 address has colons too, but never starts with one of the two words)."""
    kind, sep, rest = target.partition(":")
    if sep and kind in BAN_KINDS:
        return kind, rest.strip()
    return "", target


def _until(minutes: int | None) -> float | None:
    return None if not minutes else time.time() + 60 * minutes


def _who(actor: str) -> str:
    """The actor as the person concerned reads it: "console" means nothing to them."""
    return "the server's administrator" if actor == "console" else actor


def _for(minutes: int | None) -> str:
    return "until lifted" if not minutes else f"for {minutes} min"


class Moderation:
    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.store = server.store
        self.audit = AuditLog(server.config.data_dir / "audit.log")
        self._lock = threading.Lock()
        now = time.time()
        # Checked on every login, connection and message: kept in memory, persisted in SQLite.
        self._bans = {(k, address_key(v) if k == "address" else v.lower()): until
                      for k, v, until, _r, _b in self.store.active_bans(now)}
        self._mutes = dict(self.store.active_mutes(now))
        for name in server.config.policy.admins:
            self.store.set_admin(name, True)
        self._admins = self.store.admins()

    # ------------------------------------------------------------ checks

    def is_admin(self, user: str | None) -> bool:
        return user is not None and user.lower() in self._admins

    def _active(self, table: dict, key) -> float | None | bool:
        """False when not present or expired; else the expiry (None: until lifted)."""
        with self._lock:
            if key not in table:
                return False
            until = table[key]
            if until is not None and until <= time.time():
                del table[key]
                return False
            return until

    def ban_of(self, user: str) -> float | None | bool:
        return self._active(self._bans, ("user", user.lower()))

    def address_banned(self, ip: str) -> bool:
        return self._active(self._bans, ("address", address_key(ip))) is not False

    def mute_of(self, user: str) -> float | None | bool:
        return self._active(self._mutes, user.lower())

    # ------------------------------------------------------------ actions

    def perform(self, actor: str, action: str, target: str = "", minutes: int | None = None,
                text: str = "") -> tuple[str, dict]:
        """Run one moderation action; returns a sentence saying what was done, and what only
        the actor may see (a temporary password), which stays out of the audit log."""
        fn = getattr(self, "_" + action, None)
        if action.startswith("_") or fn is None or action not in ACTIONS:
            raise ModerationError("bad_message", f"unknown moderation action {action!r}")
        if minutes is not None and not 0 <= minutes <= 10 * 365 * 24 * 60:
            raise ModerationError("bad_message", "minutes must be between 0 and ten years")
        # The log is opened first: an action it could not record is not done at all (a
        # password reset whose temporary password is never shown locks its owner out).
        try:
            with self.audit.entry(actor, action, target, minutes=minutes,
                                  text=text or None) as entry:
                summary = fn(actor, target.strip(), minutes, text)
                private: dict = {}
                if isinstance(summary, tuple):
                    summary, private = summary
                entry["result"] = summary
        except AuditUnavailable as exc:
            raise ModerationError("audit_unavailable", f"nothing was done: {exc}, and every "
                                  "administrator's action must be recorded there") from None
        if not entry["written"]:
            summary += " (but the audit log could not be written: see the server's log)"
        return summary, private

    def _user(self, name: str) -> str:
        record = self.store.get_user(name)
        if record is None:
            raise ModerationError("no_such_user", f"there is no user named {name!r}")
        return record.name

    def _kick(self, actor, target, minutes, text) -> str:
        client = self.server.get_client(target)
        if client is None:
            raise ModerationError("no_such_user", f"{target!r} is not connected")
        client.disconnect("kicked", text or f"you were disconnected by {_who(actor)}")
        return f"kicked {client.user}"

    def _ban_target(self, target: str) -> tuple[str, str]:
        """("user", name) or ("address", address) from "user:NAME", "address:IP" or, the older
        shape, a bare target: an address unless a user has that name, then refused as
        ambiguous (usernames may look like IPv4 addresses)."""
        kind, value = _split_kind(target)
        if not value:
            raise ModerationError("bad_message", "say whom to ban: user:NAME or address:IP")
        if kind == "" and _is_address(value):
            if self.store.get_user(value) is not None:
                raise ModerationError("ambiguous", f"{value!r} is a username and an address; "
                                      f"say user:{value} or address:{value}")
            kind = "address"
        if kind == "address":
            if not _is_address(value):
                raise ModerationError("bad_message", f"{value!r} is not an IP address")
            return kind, address_key(value)
        return "user", value

    def _ban(self, actor, target, minutes, text) -> str:
        kind, target = self._ban_target(target)
        if kind == "address":
            with self._lock:
                self._bans[("address", target)] = _until(minutes)
            self.store.set_ban("address", target, _until(minutes), text, actor)
            with self.server.lock:
                victims = [h for h in self.server.handlers if address_key(h.ip) == target]
            for h in victims:
                h.disconnect("banned", "this address is banned from the server")
            return f"banned address {target} {_for(minutes)} ({len(victims)} connections closed)"
        name = self._user(target)
        if self.is_admin(name):
            raise ModerationError("not_allowed", "an administrator cannot be banned")
        with self._lock:
            self._bans[("user", name.lower())] = _until(minutes)
        self.store.set_ban("user", name, _until(minutes), text, actor)
        client = self.server.get_client(name)
        if client is not None:
            client.disconnect("banned", text or f"you were banned {_for(minutes)}")
        return f"banned {name} {_for(minutes)}"

    def _unban(self, actor, target, minutes, text) -> str:
        kind, value = self._ban_target(target)
        key = value.lower() if kind == "user" else value
        with self._lock:
            found = self._bans.pop((kind, key), False) is not False
        # An older database may hold an address as it was typed: lift that spelling too.
        for spelling in {value, _split_kind(target)[1]}:
            found = self.store.lift_ban(kind, spelling) or found
        if not found:
            raise ModerationError("not_found", f"{value!r} is not banned")
        return f"lifted the ban on {'address ' if kind == 'address' else ''}{value}"

    def _mute(self, actor, target, minutes, text) -> str:
        name = self._user(target)
        with self._lock:
            self._mutes[name.lower()] = _until(minutes)
        self.store.set_mute(name, _until(minutes), actor)
        client = self.server.get_client(name)
        if client is not None:
            self._notice_to(client, f"You were muted {_for(minutes)} by {_who(actor)}.")
        return f"muted {name} {_for(minutes)}"

    def _unmute(self, actor, target, minutes, text) -> str:
        name = self._user(target)
        with self._lock:
            self._mutes.pop(name.lower(), None)
        if not self.store.lift_mute(name):
            raise ModerationError("not_found", f"{name} is not muted")
        client = self.server.get_client(name)
        if client is not None:
            self._notice_to(client, "You can post again.")
        return f"unmuted {name}"

    def _announce(self, actor, target, minutes, text) -> str:
        if not text.strip():
            raise ModerationError("invalid_text", "an announcement needs a text")
        stored = self.store.add_message(time.time(), SERVER_NAME, SERVER_NAME, "public", "", text)
        count = self.server.broadcast(m.ChatMessage(stored.msg_id, stored.ts, SERVER_NAME,
                                                    SERVER_NAME, "public", "", text))
        return f"announced to {count} clients"

    def _remove_file(self, actor, target, minutes, text) -> str:
        files = self.server.files
        if files is None:
            raise ModerationError("unavailable", "file sharing is off")
        from .library import LibraryError

        try:
            path = files.library.resolve(target)
            path.unlink()
            files.library.refresh()  # tells everyone the file is gone
        except LibraryError as exc:
            raise ModerationError(exc.code, str(exc)) from None
        except OSError as exc:
            raise ModerationError("io_error", f"could not remove {target!r}: {exc.strerror}") from None
        return f"removed {target}"

    def _purge(self, actor, target, minutes, text) -> str:
        """target: "public", "room:NAME" or "direct:USER1:USER2"."""
        kind, _, rest = target.partition(":")
        if kind == "public":
            conv = "public"
        elif kind == "room" and rest:
            conv = conversation_key("room", "", rest)
        elif kind == "direct" and rest.count(":") == 1:
            a, b = rest.split(":")
            conv = conversation_key("direct", a, b)
        else:
            raise ModerationError("bad_message",
                                  "purge takes public, room:NAME or direct:USER1:USER2")
        count = self.store.purge_conversation(conv)
        return f"purged {count} messages from {target}"

    def _op(self, actor, target, minutes, text) -> str:
        name = self._user(target)
        self.store.set_admin(name, True)
        with self._lock:
            self._admins = self._admins | {name.lower()}
        self._tell_status(name, f"You were made an administrator by {_who(actor)}.")
        return f"{name} is now an administrator"

    def _deop(self, actor, target, minutes, text) -> str:
        name = self._user(target)
        self.store.set_admin(name, False)
        with self._lock:
            self._admins = self._admins - {name.lower()}
        self._tell_status(name, f"Your administrator rights were taken back by {_who(actor)}.")
        return f"{name} is no longer an administrator"

    def _tell_status(self, name: str, text: str) -> None:
        """A connected user learns at once: their client shows or hides its admin controls."""
        client = self.server.get_client(name)
        if client is not None:
            client.send_event(m.AccountStatus(admin=self.is_admin(name)))
            self._notice_to(client, text)

    def _reset_password(self, actor, target, minutes, text) -> tuple[str, dict]:
        """For someone who forgot theirs: a temporary password the actor hands over, which they
        replace with change_password. Administrators' passwords are reset only at the console,
        so an admin's unattended session cannot take over another admin (or its own account)."""
        name = self._user(target)
        if actor != "console" and self.is_admin(name):
            raise ModerationError("not_allowed",
                                  "an administrator's password can only be reset at the server "
                                  "console")
        password = temporary_password()
        self.server.accounts.set_password(name, password, temporary=True)
        self.server.accounts.by_name.success(name.lower())  # lift a lock-out from guessing
        client = self.server.get_client(name)
        if client is not None:
            client.disconnect("password_reset", f"your password was reset by {_who(actor)}")
        return f"reset the password of {name}", {"temporary_password": password}

    def _add_user(self, actor, target, minutes, text) -> tuple[str, dict]:
        """An account made by an administrator (the way in when self-registration is off):
        a temporary password to hand over, replaced by its owner at the first login."""
        password = temporary_password()
        try:
            self.server.accounts.register(target, password)
        except AccountError as exc:
            raise ModerationError(exc.code, str(exc)) from None
        self.server.accounts.set_password(target, password, temporary=True)
        return f"created the account {target}", {"temporary_password": password}

    def _set_policy(self, actor, target, minutes, text) -> str:
        """A switch a teacher flips during a lesson (an exam: no private messages). It lasts
        until the server stops; policy.toml or a flag sets what it starts with."""
        if target not in LIVE_SETTINGS:
            raise ModerationError("bad_message", "the settings that change while the server runs "
                                  f"are {', '.join(LIVE_SETTINGS)}")
        value = {"on": True, "off": False}.get(text.strip().lower())
        if value is None:
            raise ModerationError("bad_message", "set a setting on or off")
        server = self.server
        with server.lock:
            # A new Policy rather than a changed one: whoever holds the old one (a request
            # half-way through, or whoever passed it in) sees a consistent policy.
            server.config.policy = dataclasses.replace(server.config.policy, **{target: value})
            server.hello_facts = None  # the hello reply tells the policy too
            wire = server.config.policy.to_wire()
        server.broadcast(m.PolicyChanged(wire))
        return f"{LIVE_SETTINGS[target]}: {'on' if value else 'off'} (until the server restarts)"

    def _notice_to(self, client, text: str) -> None:
        """A direct message from SERVER (stored, so it has a real id and shows in history)."""
        if client.user is None:
            return
        stored = self.store.add_message(time.time(), SERVER_NAME, SERVER_NAME, "direct",
                                        client.user, text)
        client.send_event(m.ChatMessage(stored.msg_id, stored.ts, SERVER_NAME, SERVER_NAME,
                                        "direct", client.user, text))


ACTIONS = ("kick", "ban", "unban", "mute", "unmute", "announce", "remove_file", "purge", "op",
           "deop", "reset_password", "set_policy", "add_user")
# Policy settings an administrator switches on or off while the server runs, as they read.
LIVE_SETTINGS = {"private_messages": "private messages", "uploads": "uploads by everyone",
                 "public_read_only": "read-only public room"}
