"""What the server does for each request. One function per request type, registered in COMMANDS.

Each takes the client's handler and the typed request, and returns the ``result`` of the ok
reply, or raises CommandError(code, message) for an error reply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocol import PROTOCOL_VERSION
from protocol import messages as m
from protocol.version import APP_NAME, APP_VERSION

from .accounts import AccountError, canonical_ip, check_new_credentials
from .names import NameRefused, clean_display, reserved, skeleton
from .store import NameTaken, StoredMessage, conversation_key

if TYPE_CHECKING:
    from .chat_server import Room
    from .handler import ClientHandler

MAX_HISTORY = 200
DEFERRED = object()  # a command's result meaning "a worker thread will reply"


class CommandError(Exception):
    def __init__(self, code: str, message: str, disconnect: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.disconnect = code, message, disconnect


COMMANDS: dict[str, Callable[[ClientHandler, m.Request], dict | None]] = {}


def command(cls: type[m.Request]):
    def register(fn):
        COMMANDS[cls.TYPE] = fn
        return fn
    return register


def _event(stored: StoredMessage, delayed: bool = False) -> m.ChatMessage:
    return m.ChatMessage(stored.msg_id, stored.ts, stored.sender, stored.sender_display,
                         stored.kind, stored.target, stored.text, delayed)


# ---------------------------------------------------------------- handshake and accounts


@command(m.Hello)
def hello(h: ClientHandler, req: m.Hello) -> dict:
    if h.conn.state.value != "handshake":
        raise CommandError("bad_message", "hello was already done")
    if req.version != PROTOCOL_VERSION:
        raise CommandError(
            "version_mismatch",
            f"this server speaks protocol version {PROTOCOL_VERSION}, the client {req.version}",
            disconnect=True)
    server = h.server
    if server.hello_facts is None:  # fixed for the server's life: built once, not per login
        server.hello_facts = _server_facts(server.config)
    return server.hello_facts


def _server_facts(cfg) -> dict:
    return {"server": APP_NAME, "version": PROTOCOL_VERSION, "app_version": APP_VERSION,
            "motd": cfg.motd, "max_text": cfg.max_text, "max_frame": cfg.max_frame,
            "max_upload": cfg.max_upload, "keepalive": cfg.keepalive_after,
            "policy": cfg.policy.to_wire()}


def _account_call(fn, *args):
    try:
        return fn(*args)
    except AccountError as exc:
        raise CommandError(exc.code, str(exc)) from None


def _log_in(h: ClientHandler, name: str, display: str, new: bool) -> dict:
    """Put h in the registry as name; a live older connection of the same user is replaced.

    Taking over (rather than refusing) is deliberate: after a network drop the server often
    still holds the dead connection for up to a minute, and the reconnecting client must win.
    """
    server = h.server
    if reserved(name):
        # An account from before the name was reserved: it would speak as the server, edit
        # its announcements and read its notices to others.
        raise CommandError("name_reserved", f"the account {name!r} has the name the server "
                           "signs its announcements with, so it cannot log in; ask the "
                           "administrator for another account")
    banned = server.moderation.ban_of(name)
    if banned is not False:
        until = "until the ban is lifted" if banned is None else \
            "until " + time.strftime("%Y-%m-%d %H:%M", time.localtime(banned))
        raise CommandError("banned", f"{name} is banned from this server {until}")
    if reserved(display):
        # A display name from before SERVER was reserved: it would make this user's posts
        # look like announcements. They are shown by their username instead.
        display = _give_back_display(server, name)
    with server.lock:
        old = server.clients.get(name.lower())
        server.clients[name.lower()] = h
        h.user, h.display = name, display
        h.delayed_sent_upto = 0
    if old is not None:
        old.user = None  # so its teardown does not announce a departure
        old.disconnect("logged_in_elsewhere", "you logged in from another place")
    else:
        server.announce_presence(m.Presence(name, display, True), exclude=h)
    token = server.accounts.new_resume_token(name)
    h._after_reply = lambda: _deliver_pending(h)
    return {"user": name, "display": display, "new": new, "resume_token": token,
            "replaced": old is not None, "admin": server.moderation.is_admin(name),
            "must_change_password": server.store.has_temporary_password(name)}


def _give_back_display(server, name: str) -> str:
    names = server.accounts.names
    with names.lock:
        try:
            server.store.set_display(name, name)
        except NameTaken:  # an older database's clash: shown so for this session only
            return name
        names.set_display(name, name)
    return name


def _deliver_pending(h: ClientHandler) -> None:
    """Send the stored direct messages after the login's ok. They stay stored until the client
    acknowledges them (ack_delayed): queued bytes are not yet read ones, and a connection
    or a server that dies now must not take them along."""
    if h.user is None:
        return
    for stored in h.server.store.pending_for(h.user):
        if not h.send_delayed(_event(stored, delayed=True)):
            break  # the connection went away: all of them come again at the next login


@command(m.AckDelayed)
def ack_delayed(h: ClientHandler, req: m.AckDelayed) -> dict:
    upto = min(req.msg_id, h.delayed_sent_upto)
    if upto:
        h.server.store.clear_pending(h.user, upto)
    return {}


def _require_logged_out(h: ClientHandler) -> None:
    if h.user is not None:
        raise CommandError("already_authenticated", f"already logged in as {h.user}")


@command(m.Register)
def register(h: ClientHandler, req: m.Register) -> dict:
    _require_logged_out(h)
    # Mistyped names do not use up the limits: only requests that could create an account.
    _account_call(check_new_credentials, req.username, req.password)
    _check_may_register(h)
    record = _account_call(h.server.accounts.register, req.username, req.password)
    return _log_in(h, record.name, record.display, new=True)


def _check_may_register(h: ClientHandler) -> None:
    """Self-registration may be off, and is limited per address (by the hour: a shared lab
    machine registers a few people, a script hundreds) and for the whole server (by the
    minute: a class registering at once fits, a flood does not)."""
    policy = h.server.config.policy
    if not policy.self_registration:
        raise CommandError("registration_closed",
                           "this server does not let people create their own accounts; ask "
                           "its administrator (your teacher) to create one for you")
    limits, accounts = policy.limits, h.server.accounts
    if limits.exempt_loopback and _is_loopback(h.ip):
        return  # the server's own machine (its administrator's scripts) is trusted
    per = limits.registrations_per_address
    wait = accounts.limiter("registrations_by_address", per / 3600, per).allow(h.ip)
    if wait:
        when = f"{wait / 60:.0f} min" if wait >= 60 else f"{max(wait, 1):.0f} s"
        raise CommandError("rate_limited", f"at most {per} accounts can be registered from "
                           f"one address per hour; try again in {when}")
    overall = accounts.limiter("registrations", limits.registrations_per_minute / 60,
                               limits.registrations_per_minute).allow("")
    if overall:
        raise CommandError("rate_limited", "too many accounts are being created on this server "
                           f"right now; try again in {max(overall, 1):.0f} s")


def _is_loopback(ip: str) -> bool:
    try:
        return canonical_ip(ip).is_loopback
    except ValueError:
        return False


@command(m.Login)
def login(h: ClientHandler, req: m.Login) -> dict:
    _require_logged_out(h)
    record = _account_call(h.server.accounts.login, req.username, req.password, h.ip)
    return _log_in(h, record.name, record.display, new=False)


@command(m.Resume)
def resume(h: ClientHandler, req: m.Resume) -> dict:
    _require_logged_out(h)
    record = _account_call(h.server.accounts.resume, req.username, req.token, h.ip)
    return _log_in(h, record.name, record.display, new=False)


@command(m.Logout)
def logout(h: ClientHandler, req: m.Logout) -> dict:
    h.server.log_out(h)
    h.user, h.display = None, ""
    h.delayed_sent_upto = 0
    return {}


@command(m.Rename)
def rename(h: ClientHandler, req: m.Rename) -> dict:
    try:
        display = clean_display(req.display)
    except NameRefused as exc:
        raise CommandError("invalid_display", str(exc)) from None
    server, key = h.server, skeleton(display)
    per = server.config.policy.limits.renames_per_minute
    names = server.accounts.names
    with names.lock:
        if names.owner_other_than(key, h.user):
            raise CommandError("display_taken", f"{display!r} is already used by someone "
                               "else, or looks the same as a name someone uses")
        # Each rename is written and told to everyone: without a limit one client floods
        # both. Counted only once it would be done: a refused name costs nothing to check.
        wait = server.accounts.limiter("renames", per / 60, per).allow(h.user.lower())
        if wait:
            raise CommandError("rate_limited", f"you can change your display name {per} "
                               f"times a minute; wait {max(wait, 1):.0f} s")
        try:
            server.store.set_display(h.user, display)
        except NameTaken:
            raise CommandError("display_taken", f"{display!r} is already used") from None
        names.set_display(h.user, display)
    with server.lock:
        old, h.display = h.display, display
    server.broadcast(m.Renamed(h.user, old, display))
    return {"display": display}


@command(m.ChangePassword)
def change_password(h: ClientHandler, req: m.ChangePassword) -> dict:
    try:
        token = h.server.accounts.change_password(h.user, req.old_password, req.new_password,
                                                  h.ip)
    except AccountError as exc:
        if exc.code == "wrong_password":
            raise CommandError("wrong_password", "the current password is wrong") from None
        raise CommandError(exc.code, str(exc)) from None
    return {"resume_token": token}


# ---------------------------------------------------------------- messaging


def check_text(h: ClientHandler, text: str) -> None:
    limit = h.server.config.max_text
    if not text.strip():
        raise CommandError("invalid_text", "a message cannot be empty")
    if len(text) > limit:
        raise CommandError("invalid_text",
                           f"a message can have at most {limit} characters ({len(text)} given)")


def _member_room(h: ClientHandler, name: str) -> Room:
    room = h.server.rooms.get(name.lower())
    if room is None:
        raise CommandError("no_such_room", f"there is no room named {name!r}")
    if h.user.lower() not in room.members:
        raise CommandError("not_member", f"you are not in the room {room.name!r}")
    return room


def check_may_post(h: ClientHandler, kind: str, rate: bool = True) -> None:
    server, policy = h.server, h.server.config.policy
    muted = server.moderation.mute_of(h.user)
    if muted is not False:
        until = "" if muted is None else " until " + time.strftime("%H:%M", time.localtime(muted))
        raise CommandError("muted", f"you are muted{until}")
    if kind == "direct" and not policy.private_messages:
        raise CommandError("disabled", "private messages are turned off on this server")
    if kind == "public" and policy.public_read_only and not server.moderation.is_admin(h.user):
        raise CommandError("read_only", "only administrators post in the public room here")
    wait = server.message_rate.allow(h.user.lower()) if rate else 0
    if wait:
        raise CommandError("rate_limited",
                           f"you are sending too fast; wait {max(wait, 0.1):.1f} s")


@command(m.Send)
def send(h: ClientHandler, req: m.Send) -> dict:
    check_text(h, req.text)
    if req.kind in ("public", "room", "direct"):
        check_may_post(h, req.kind)
    server, now = h.server, time.time()
    if req.kind == "public":
        stored = server.store.add_message(now, h.user, h.display, "public", "", req.text)
        server.broadcast(_event(stored))
        return {"msg_id": stored.msg_id, "ts": stored.ts}
    if req.kind == "room":
        with server.lock:
            room = _member_room(h, req.target)
        stored = server.store.add_message(now, h.user, h.display, "room", room.name, req.text)
        with server.lock:
            members = list(room.members)
        server.send_to(members, _event(stored))
        return {"msg_id": stored.msg_id, "ts": stored.ts}
    if req.kind == "direct":
        record = server.store.get_user(req.target)
        if record is None:
            raise CommandError("no_such_user", f"there is no user named {req.target!r}")
        target = server.get_client(record.name)
        stored = server.store.add_message(now, h.user, h.display, "direct", record.name,
                                          req.text,
                                          pending_for=None if target else record.name)
        event = _event(stored)
        server.flush_presence()  # the recipient hears that the sender is online first
        if target is not None:
            target.send_event(event)
        elif (late := server.get_client(record.name)) is not None:
            # They logged in while it was being stored, perhaps after their login read the
            # stored messages: deliver it now as a stored one (a client that got it twice
            # drops the copy by msg_id), rather than leave it for their next login.
            late.send_delayed(_event(stored, delayed=True))
        if target is not h:
            h.send_event(event)
        result = {"msg_id": stored.msg_id, "ts": stored.ts}
        if target is None:
            result["stored"] = True
        return result
    raise CommandError("bad_message", f"unknown message kind {req.kind!r}")


@command(m.History)
def history(h: ClientHandler, req: m.History) -> dict:
    if req.kind == "room":
        with h.server.lock:
            room = h.server.rooms.get(req.target.lower())
            if room is not None and h.user.lower() not in room.members:
                raise CommandError("not_member", "join the room to read its history")
    elif req.kind == "direct":
        if h.server.store.get_user(req.target) is None:
            raise CommandError("no_such_user", f"there is no user named {req.target!r}")
    elif req.kind != "public":
        raise CommandError("bad_message", f"unknown conversation kind {req.kind!r}")
    limit = max(1, min(MAX_HISTORY, req.limit))
    conv = conversation_key(req.kind, h.user, req.target)
    return {"messages": [s.to_dict() for s in h.server.store.history(conv, limit, req.before)]}


def capped(key: str, items: list, h: ClientHandler) -> dict:
    """A listing cut to the server's list_max, saying so when it was cut."""
    limit = h.server.config.policy.limits.list_max
    if len(items) <= limit:
        return {key: items}
    return {key: items[:limit], "truncated": True, "total": len(items)}


def _user_entry(name: str, display: str, online: bool) -> dict:
    return {"name": name, "display": display, "online": online}


@command(m.ListUsers)
def list_users(h: ClientHandler, req: m.ListUsers) -> dict:
    with h.server.lock:
        online = set(h.server.clients)
    users = h.server.store.all_users()
    return capped("users", [_user_entry(n, d, n.lower() in online) for n, d in users], h)


@command(m.ListOnline)
def list_online(h: ClientHandler, req: m.ListOnline) -> dict:
    clients = sorted(h.server.online(), key=lambda c: (c.user or "").lower())
    return capped("users", [_user_entry(c.user, c.display, True) for c in clients if c.user], h)


@command(m.OpenSession)
def open_session(h: ClientHandler, req: m.OpenSession) -> dict:
    if not h.server.config.policy.private_messages:
        raise CommandError("disabled", "private messages are turned off on this server")
    record = h.server.store.get_user(req.user)
    if record is None:
        raise CommandError("no_such_user", f"there is no user named {req.user!r}")
    with h.server.lock:
        h.server.sessions[h.user.lower()] = record.name
    return {"user": record.name, "display": record.display,
            "online": h.server.get_client(record.name) is not None}


@command(m.CloseSession)
def close_session(h: ClientHandler, req: m.CloseSession) -> dict:
    with h.server.lock:
        h.server.sessions.pop(h.user.lower(), None)
    return {}


@command(m.Moderate)
def moderate(h: ClientHandler, req: m.Moderate) -> dict:
    from .moderation import ModerationError

    if not h.server.moderation.is_admin(h.user):
        raise CommandError("not_admin", "only administrators can do that")
    try:
        done, private = h.server.moderation.perform(h.user, req.action, req.target, req.minutes,
                                                    req.text)
    except ModerationError as exc:
        raise CommandError(exc.code, exc.message) from None
    return {"done": done, **private}


# Importing these registers their commands in COMMANDS (they import this module first).
from . import file_sharing  # noqa: E402,F401,I001
from . import room_commands  # noqa: E402,F401,I001
from . import message_commands  # noqa: E402,F401,I001
