"""What one does to a message after sending it (edit, delete), the typing notice (each told
to whoever could see the conversation), and searching what one can read."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from protocol import messages as m

from .audit import AuditUnavailable
from .commands import CommandError, check_may_post, check_text, command
from .store import StoredMessage, conversation_key

if TYPE_CHECKING:
    from .handler import ClientHandler

# At most one typing notice per user and conversation is passed on in this many seconds:
# clients send one every few seconds while typing, and a faster one costs everyone else.
TYPING_EVERY = 2.0
TYPING_CONVERSATIONS = 32  # per connection, remembered for that limit
# A search reads the full-text index (or the newest messages, for two letters): one search
# per connection in this many seconds, at most this many results, words of this many
# characters.
SEARCH_EVERY = 0.5
SEARCH_MAX = 200
SEARCH_WORDS = (2, 200)
SEARCH_WAIT = 2.0  # seconds a search waits for the one running before it (then: busy)


@command(m.DeleteMessage)
def delete_message(h: ClientHandler, req: m.DeleteMessage) -> dict:
    server = h.server
    stored = server.store.get_message(req.msg_id)
    mine = stored is not None and stored.sender.lower() == h.user.lower()
    admin = server.moderation.is_admin(h.user)
    if stored is None or not (mine or admin or _can_see(h, stored)):
        # The same answer whether it never existed or is someone else's private message.
        raise CommandError("not_found", f"there is no message {req.msg_id}")
    if not (mine or admin):
        raise CommandError("not_allowed", "you can delete only your own messages")
    if mine:
        if not server.store.delete_message(stored.msg_id):
            raise CommandError("not_found", f"message {req.msg_id} was already deleted")
    else:
        # An administrator's act: audited like the others (without the text), the log opened
        # first, so that a log that cannot be written leaves the message where it was.
        conv = conversation_key(stored.kind, stored.sender, stored.target)
        try:
            with server.moderation.audit.entry(h.user, "delete_message",
                                               str(stored.msg_id)) as entry:
                if not server.store.delete_message(stored.msg_id):
                    raise CommandError("not_found",
                                       f"message {req.msg_id} was already deleted")
                entry["result"] = f"deleted a message of {stored.sender} in {conv}"
        except AuditUnavailable as exc:
            raise CommandError("audit_unavailable", f"nothing was done: {exc}, and every "
                               "administrator's action must be recorded there") from None
    _tell_audience(h, stored, m.MessageDeleted(stored.msg_id, stored.sender, stored.kind,
                                               stored.target, h.user))
    return {}


@command(m.EditMessage)
def edit_message(h: ClientHandler, req: m.EditMessage) -> dict:
    server = h.server
    stored = server.store.get_message(req.msg_id)
    if stored is None or not _can_see(h, stored):
        raise CommandError("not_found", f"there is no message {req.msg_id}")
    if stored.sender.lower() != h.user.lower():
        raise CommandError("not_allowed", "you can edit only your own messages")
    check_text(h, req.text)
    check_may_post(h, stored.kind)  # muted, policy and rate limit: an edit is a post
    edited = time.time()
    if not server.store.edit_message(stored.msg_id, req.text, edited):
        raise CommandError("not_found", f"message {req.msg_id} was deleted")
    _tell_audience(h, stored, m.MessageEdited(stored.msg_id, stored.sender, stored.kind,
                                              stored.target, req.text, edited))
    return {"edited": edited}


def _tell_audience(h: ClientHandler, stored: StoredMessage, event: m.Message) -> None:
    """Whoever could see the message and is online, and the one who acted on it."""
    server = h.server
    if stored.kind == "public":
        server.broadcast(event)
    elif stored.kind == "room":
        with server.lock:
            room = server.rooms.get(stored.target.lower())
            members = set(room.members) if room is not None else set()
        server.send_to(list(members | {h.user.lower()}), event)
    else:
        server.send_to(list({stored.sender.lower(), stored.target.lower(), h.user.lower()}),
                       event)


def _can_see(h: ClientHandler, stored: StoredMessage) -> bool:
    if stored.kind == "public":
        return True
    if stored.kind == "room":
        with h.server.lock:
            room = h.server.rooms.get(stored.target.lower())
            return room is not None and h.user.lower() in room.members
    return h.user.lower() in (stored.sender.lower(), stored.target.lower())


@command(m.Typing)
def typing(h: ClientHandler, req: m.Typing) -> dict:
    server = h.server
    if req.kind == "room":
        with server.lock:
            room = server.rooms.get(req.target.lower())
            if room is None:
                raise CommandError("no_such_room", f"there is no room named {req.target!r}")
            if h.user.lower() not in room.members:
                raise CommandError("not_member", f"you are not in the room {room.name!r}")
            target = room.name
    elif req.kind == "direct":
        record = server.store.get_user(req.target)
        if record is None:
            raise CommandError("no_such_user", f"there is no user named {req.target!r}")
        target = record.name
    elif req.kind == "public":
        target = ""
    else:
        raise CommandError("bad_message", f"unknown conversation kind {req.kind!r}")
    check_may_post(h, req.kind, rate=False)  # no notice for what could not be sent
    conv, now = conversation_key(req.kind, h.user, target), time.monotonic()
    told = h.typing_told
    if now - told.get(conv, -TYPING_EVERY) < TYPING_EVERY:
        return {}
    if len(told) >= TYPING_CONVERSATIONS:
        # Forget only what no longer limits anything: clearing it all would let a client
        # cycling through many conversations pass a public notice on every time.
        for key in [k for k, t in told.items() if now - t >= TYPING_EVERY]:
            del told[key]
        if len(told) >= TYPING_CONVERSATIONS:
            return {}  # typing in 32 places in 2 s is no person: the notice is best effort
    told[conv] = now
    event = m.UserTyping(h.user, h.display, req.kind, target)
    if req.kind == "public":
        server.broadcast(event, exclude=h)
    elif req.kind == "room":
        with server.lock:
            members = [k for k in room.members if k != h.user.lower()]
        server.send_to(members, event)
    elif target.lower() != h.user.lower():
        server.send_to([target], event)
    return {}


@command(m.Search)
def search(h: ClientHandler, req: m.Search) -> dict:
    words = req.text.strip()
    low, high = SEARCH_WORDS
    if not low <= len(words) <= high:
        raise CommandError("invalid_text", f"search for {low} to {high} characters")
    now = time.monotonic()
    if now - h.searched_at < SEARCH_EVERY:
        raise CommandError("rate_limited", f"one search every {SEARCH_EVERY:g} s")
    h.searched_at = now
    server, key = h.server, h.user.lower()
    with server.lock:  # the rooms one is in now: a room left is no longer searched
        rooms = [conversation_key("room", "", r.name) for r in server.rooms.values()
                 if key in r.members]
    limit = max(1, min(SEARCH_MAX, req.limit))
    if server.search_rate.allow("all") or not server.search_slot.acquire(timeout=SEARCH_WAIT):
        raise CommandError("busy", "the server is busy with other people's searches; "
                           "try again in a moment")
    try:
        found = server.store.search(words, h.user, rooms, limit + 1)
    finally:
        server.search_slot.release()
    result: dict = {"messages": [s.to_dict() for s in found[:limit]]}
    if len(found) > limit:
        result["truncated"] = True
    return result
