"""The desktop client's model of a chat: conversations, people, rooms, files and transfers.

Pure logic, no tkinter and no sockets: the GUI feeds it session events (on the Tk thread) and
results of requests, and it answers with a list of Change records saying what to redraw. That
keeps every rule (what counts as unread, how messages group, when to ring the bell) testable
without a window.

The records it keeps (Entry, Conversation, RoomInfo, Transfer, Change) and the conversation
keys are in chat_records.py; titles keep the spelling people chose.
"""

from __future__ import annotations

import itertools
import re
import time

from .chat_records import (
    GROUP_WINDOW_S,
    PUBLIC,
    Change,
    Conversation,
    ConvKey,
    Entry,
    RoomInfo,
    Transfer,
    continues,
    direct_key,
    room_key,
)
from .message_changes import MessageChanges
from .policy_state import PolicyTracking
from .room_state import RoomTracking
from .transfer_state import TransferTracking
from .typing_state import TypingNotices, TypingTracker
from .units import human_size

__all__ = ["GROUP_WINDOW_S", "HISTORY_PAGE", "MAX_ENTRIES", "MAX_TEXT", "PUBLIC", "Change",
           "ChatState", "Conversation", "ConvKey", "Entry", "RoomInfo", "Transfer",
           "direct_key", "room_key"]

MAX_TEXT = 4000  # the server's max_text; the hello reply may change it
MAX_ENTRIES = 2000  # per conversation: older entries fall off the client's memory
HISTORY_PAGE = 50  # messages per history request (on open, and per "load earlier")


class ChatState(MessageChanges, RoomTracking, TypingNotices, TransferTracking, PolicyTracking):
    """The model. What happens to messages after they are sent (edits, deletes), rooms,
    typing notices, file transfers and the server's policy (what may be sent) are mixins in
    their own modules (message_changes.py, room_state.py, typing_state.py,
    transfer_state.py, policy_state.py)."""

    def __init__(self, max_text: int = MAX_TEXT, clock=time.time,
                 typing_clock=time.monotonic) -> None:
        self.clock = clock  # message times (the server's clock is wall time too)
        self.typing = TypingTracker(typing_clock)
        self.max_text = max_text
        self.policy: dict = {}  # the server's policy (hello reply, then policy events)
        self.is_admin = False
        self.me = ""
        self.my_display = ""
        self.host = ""
        self.port = 0
        self.motd = ""
        self.conversations: dict[ConvKey, Conversation] = {}
        self.active: ConvKey | None = None
        self.window_focused = True
        self.displays: dict[str, str] = {}  # lower name -> display, everyone we heard of
        self.names: dict[str, str] = {}  # lower name -> name as the server spells it
        self.online: set[str] = set()  # lower names
        self.rooms: dict[str, RoomInfo] = {}  # lower name -> info (rooms I know about)
        self.room_directory: list[dict] = []  # last list_rooms answer
        self.files: dict[str, dict] = {}
        self.transfers: dict[int, Transfer] = {}
        self.connection = "offline"  # "online" | "reconnecting" | "offline"
        self.reconnect_at: float | None = None  # time.monotonic() of the next attempt
        self.reconnect_attempt = 0
        self.last_reason = ""
        self._ids = itertools.count(1)
        self._mention_re: re.Pattern[str] | None = None
        self.conversation(PUBLIC)

    # ------------------------------------------------------------------ people

    def display_of(self, user: str) -> str:
        return self.displays.get(user.lower()) or user

    def name_of(self, user: str) -> str:
        return self.names.get(user.lower(), user)

    def _learn(self, user: str, display: str) -> None:
        if user:
            self.names[user.lower()] = user
            if display:
                self.displays[user.lower()] = display

    def is_me(self, user: str) -> bool:
        return bool(self.me) and user.lower() == self.me.lower()

    def set_me(self, user: str, display: str) -> list[Change]:
        self.me, self.my_display = user, display or user
        self._learn(user, self.my_display)
        words = {re.escape(w) for w in (user, self.my_display) if w}
        self._mention_re = re.compile(
            r"(?<![\w@])@?(?:" + "|".join(sorted(words)) + r")(?!\w)", re.IGNORECASE)
        return [Change("me")]

    def online_users(self) -> list[tuple[str, str]]:
        """(name, display) sorted by display, me first."""
        people = [(self.name_of(u), self.display_of(u)) for u in self.online]
        return sorted(people, key=lambda p: (not self.is_me(p[0]), p[1].lower()))

    def set_online(self, users: list[dict]) -> list[Change]:
        self.online = set()
        for u in users:
            self._learn(u["name"], u.get("display", ""))
            if u.get("online", True):
                self.online.add(u["name"].lower())
        return [Change("online"), Change("conversations")]

    def learn_users(self, users: list[dict]) -> list[Change]:
        for u in users:
            self._learn(u["name"], u.get("display", ""))
        return [Change("online"), Change("conversations")]

    # ------------------------------------------------------------------ conversations

    def conversation(self, key: ConvKey) -> Conversation:
        conv = self.conversations.get(key)
        if conv is None:
            conv = Conversation(key, self._title(key))
            self.conversations[key] = conv
        return conv

    def _title(self, key: ConvKey) -> str:
        kind, target = key
        if kind == "public":
            return "Public"
        if kind == "room":
            info = self.rooms.get(target)
            return info.name if info else target
        return self.display_of(target)

    def ordered_keys(self) -> list[ConvKey]:
        """Public first, then rooms by name, then direct conversations by latest activity."""
        rooms = sorted((k for k in self.conversations if k[0] == "room"),
                       key=lambda k: k[1])
        directs = sorted((k for k in self.conversations if k[0] == "direct"),
                         key=lambda k: -self.conversations[k].last_activity)
        return [PUBLIC, *rooms, *directs]

    def total_unread(self) -> int:
        return sum(c.unread for c in self.conversations.values())

    def open(self, key: ConvKey) -> tuple[list[Change], bool]:
        """Make key the visible conversation. Returns (changes, history_needed)."""
        conv = self.conversation(key)
        left = self.conversations.get(self.active) if self.active != key else None
        if left is not None:  # read when it was left: no divider there next time
            self._mark_unread_start(left, None)
        self.active = key
        conv.unread = conv.mentions = 0
        need = conv.history_state == "none"
        if need:
            conv.history_state = "loading"
        return [Change("conversations"), Change("reload", key)], need

    def set_focused(self, focused: bool) -> list[Change]:
        self.window_focused = focused
        if focused and self.active in self.conversations:
            conv = self.conversations[self.active]
            if conv.unread:
                conv.unread = conv.mentions = 0
                return [Change("conversations")]
        return []

    def neighbour(self, step: int) -> ConvKey | None:
        keys = self.ordered_keys()
        if not keys:
            return None
        i = keys.index(self.active) if self.active in keys else 0
        return keys[(i + step) % len(keys)]

    def clear(self, key: ConvKey) -> list[Change]:
        conv = self.conversation(key)
        ids = [e.msg_id for e in conv.entries if e.msg_id is not None]
        conv.cleared_up_to = max([conv.cleared_up_to, *ids])
        conv.entries = [e for e in conv.entries if e.status != "sent"]  # keep unsent ones
        conv.unread = conv.mentions = 0
        conv.earlier = "none"
        return [Change("reload", key), Change("conversations")]

    def remove(self, key: ConvKey) -> list[Change]:
        if key == PUBLIC or key not in self.conversations:
            return []
        del self.conversations[key]
        changes = [Change("removed", key), Change("conversations")]
        if self.active == key:
            changes += self.open(PUBLIC)[0]
        return changes

    def _add(self, conv: Conversation, entry: Entry) -> list[Change]:
        prev = conv.entries[-1] if conv.entries else None
        entry.continues = continues(prev, entry)
        conv.entries.append(entry)
        conv.last_activity = max(conv.last_activity, entry.ts)
        changes = [Change("append", conv.key, entry)]
        if len(conv.entries) > MAX_ENTRIES:
            del conv.entries[: len(conv.entries) - MAX_ENTRIES]
        return changes

    def notice(self, key: ConvKey, text: str, ts: float | None = None) -> list[Change]:
        conv = self.conversation(key)
        entry = Entry(next(self._ids), "notice", text, ts if ts is not None else self.clock())
        return self._add(conv, entry)

    # ------------------------------------------------------------------ messages

    def key_of(self, kind: str, target: str, sender: str) -> ConvKey:
        if kind == "room":
            return room_key(target)
        if kind == "direct":
            return direct_key(target if self.is_me(sender) else sender)
        return PUBLIC

    def is_mention(self, text: str) -> bool:
        return bool(self._mention_re and self._mention_re.search(text))

    def on_message(self, msg) -> list[Change]:
        self._learn(msg.sender, msg.sender_display)
        key = self.key_of(msg.kind, msg.target, msg.sender)
        new_conv = key not in self.conversations
        conv = self.conversation(key)
        if msg.msg_id <= conv.cleared_up_to or any(
                e.msg_id == msg.msg_id for e in conv.entries[-200:]):
            return []
        own = self.is_me(msg.sender)
        if own:
            pending = next((e for e in conv.entries if e.own and e.msg_id is None
                            and e.text == msg.text and e.status != "sent"), None)
            if pending is not None:  # the echo of a message we are still waiting on
                pending.msg_id, pending.ts, pending.status, pending.error = (
                    msg.msg_id, msg.ts, "sent", "")
                return [Change("entry", key, pending)]
        entry = Entry(next(self._ids), "msg", msg.text, msg.ts, msg.sender,
                      msg.sender_display or msg.sender, msg.msg_id, own=own,
                      delayed=msg.delayed)
        entry.mention = not own and msg.kind != "direct" and self.is_mention(msg.text)
        hidden = not own and (key != self.active or not self.window_focused)
        if hidden and conv.unread == 0:  # the first one not seen: "New messages" goes here
            self._mark_unread_start(conv, entry)
        changes = self._add(conv, entry)
        if new_conv:
            changes.append(Change("conversations"))
        if not own:
            if hidden:
                conv.unread += 1
                conv.mentions += entry.mention
                changes.append(Change("conversations"))
            if msg.kind == "direct" or entry.mention:
                changes.append(Change("notify", key, entry))
        return changes

    @staticmethod
    def _mark_unread_start(conv: Conversation, entry: Entry | None) -> bool:
        """Move the "New messages" divider to entry (None: remove it). True if one was shown."""
        had = False
        for e in reversed(conv.entries):
            if e.unread_start:
                e.unread_start, had = False, True
                break
        if entry is not None:
            entry.unread_start = True
        return had

    def add_pending(self, key: ConvKey, text: str) -> tuple[Entry, list[Change]]:
        """A message the user just sent, shown at once and marked until the server confirms.
        Answering means the new messages were read: their divider goes."""
        conv = self.conversation(key)
        entry = Entry(next(self._ids), "msg", text, self.clock(), self.me, self.my_display,
                      own=True, status="pending")
        had_divider = self._mark_unread_start(conv, None)
        changes = self._add(conv, entry)
        if had_divider:
            changes = [Change("reload", key)]  # redrawn without it, the new entry included
        return entry, changes

    def send_ok(self, key: ConvKey, entry: Entry, result: dict) -> list[Change]:
        if entry.status == "sent":
            return []  # the echo event came first and confirmed it
        entry.status, entry.error = "sent", ""
        entry.msg_id = result.get("msg_id", entry.msg_id)
        entry.ts = result.get("ts", entry.ts)
        changes = [Change("entry", key, entry)]
        if result.get("stored"):
            changes += self.notice(key, f"{self.display_of(key[1])} is offline: "
                                        "the message will be delivered when they log in.")
        return changes

    def send_failed(self, key: ConvKey, entry: Entry, reason: str) -> list[Change]:
        if entry.status == "sent":
            return []
        entry.status, entry.error = "failed", reason
        return [Change("entry", key, entry)]

    def retry(self, key: ConvKey, entry: Entry) -> list[Change]:
        entry.status, entry.error = "pending", ""
        return [Change("entry", key, entry)]

    def merge_history(self, key: ConvKey, messages: list[dict], limit: int = HISTORY_PAGE,
                      *, earlier: bool = False) -> list[Change]:
        """Fold in a page of history: the newest one (on open, after a reconnect) or, with
        earlier=True, the page before the oldest message held (load_earlier)."""
        conv = self.conversation(key)
        conv.history_state = "loaded"
        was = conv.earlier
        full_page = len(messages) >= limit
        if earlier or conv.earlier == "unknown":
            conv.earlier = "more" if full_page else "start"
        if conv.cleared_up_to:
            conv.earlier = "none"
        known = {e.msg_id: e for e in conv.entries if e.msg_id is not None}
        added, edited = [], False
        for m in messages:
            mid = m.get("msg_id")
            if mid in known:  # held already: it may have been edited while we were away
                edited |= self._edit(conv, known[mid], m.get("text", ""), m.get("edited"))
            if mid is None or mid in known or mid <= conv.cleared_up_to:
                continue
            self._learn(m.get("sender", ""), m.get("sender_display", ""))
            own = self.is_me(m.get("sender", ""))
            added.append(Entry(next(self._ids), "msg", m.get("text", ""), m.get("ts", 0.0),
                               m.get("sender", ""), m.get("sender_display", ""), mid, own=own,
                               delayed=bool(m.get("delayed")), edited=m.get("edited")))
        entries = sorted(conv.entries + added, key=lambda e: e.ts)
        if earlier:  # asked for: keep them, and stop offering more once the window is full
            if len(entries) >= MAX_ENTRIES and conv.earlier == "more":
                conv.earlier = "capped"
        else:
            entries = entries[-MAX_ENTRIES:]
        conv.entries = entries
        if earlier:
            changes = [Change("earlier", key)]
        elif added or edited or conv.earlier != was:
            changes = [Change("reload", key)]
        else:
            return []
        prev = None
        for e in conv.entries:
            e.continues = continues(prev, e)
            prev = e
        if conv.entries:
            conv.last_activity = max(conv.last_activity, conv.entries[-1].ts)
        return changes + [Change("conversations")]

    def begin_earlier(self, key: ConvKey) -> tuple[int | None, list[Change]]:
        """The msg_id to page back from, if there is more to load and no load under way."""
        conv = self.conversations.get(key)
        if conv is None or conv.earlier != "more":
            return None, []
        ids = [e.msg_id for e in conv.entries if e.msg_id is not None]
        if not ids:
            return None, []
        conv.earlier = "loading"
        return min(ids), [Change("earlier", key)]

    def earlier_failed(self, key: ConvKey) -> list[Change]:
        conv = self.conversations.get(key)
        if conv is None or conv.earlier != "loading":
            return []
        conv.earlier = "more"
        return [Change("earlier", key)]

    def history_failed(self, key: ConvKey) -> None:
        if key in self.conversations:
            self.conversations[key].history_state = "none"

    def pending_entries(self) -> list[tuple[ConvKey, Entry]]:
        return [(c.key, e) for c in self.conversations.values() for e in c.entries
                if e.status == "pending"]

    # ------------------------------------------------------------------ files

    def set_files(self, files: list[dict]) -> list[Change]:
        self.files = {f["name"]: f for f in files}
        return [Change("files")]

    def on_file_added(self, ev) -> list[Change]:
        self.files[ev.file["name"]] = ev.file
        changes = [Change("files")]
        if ev.by:
            who = "You" if self.is_me(ev.by) else self.display_of(ev.by)
            changes += self.notice(PUBLIC, f"{who} shared {ev.file['name']} "
                                           f"({human_size(ev.file.get('size', 0))})")
        return changes

    # ------------------------------------------------------------------ session events

    def apply(self, event) -> list[Change]:
        """Fold one session event (protocol message or parley_client.events object) in."""
        handler = getattr(self, "_ev_" + type(event).__name__, None)
        return handler(event) if handler else []

    def _ev_ChatMessage(self, ev) -> list[Change]:
        key = self.key_of(ev.kind, ev.target, ev.sender)
        return self.typing_ended(key, ev.sender) + self.on_message(ev)  # their notice ends

    def _ev_Presence(self, ev) -> list[Change]:
        self._learn(ev.user, ev.display)
        was = ev.user.lower() in self.online
        if ev.online:
            self.online.add(ev.user.lower())
        else:
            self.online.discard(ev.user.lower())
        changes = [Change("online"), Change("conversations")]
        if not ev.online:  # gone: whatever they were typing will not come
            changes += [Change("typing", key) for key in self.typing.forget(ev.user)]
        if was != ev.online and not self.is_me(ev.user):
            verb = "is online" if ev.online else "went offline"
            changes += self.notice(PUBLIC, f"{ev.display or ev.user} {verb}")
        return changes

    def _ev_Renamed(self, ev) -> list[Change]:
        self._learn(ev.user, ev.display)
        changes = [Change("online"), Change("conversations")]
        if self.is_me(ev.user):
            self.my_display = ev.display
            changes += self.set_me(self.me, ev.display)
        dkey = direct_key(ev.user)
        if dkey in self.conversations:
            self.conversations[dkey].title = ev.display
        who = "You are" if self.is_me(ev.user) else f"{ev.old_display} is"
        return changes + self.notice(PUBLIC, f"{who} now known as {ev.display}")

    def _ev_AccountStatus(self, ev) -> list[Change]:
        """op/deop while logged in (the SERVER note that follows says it in words)."""
        if ev.admin == self.is_admin:
            return []
        self.is_admin = ev.admin
        return [Change("admin")]

    def _ev_FileAdded(self, ev) -> list[Change]:
        return self.on_file_added(ev)

    def _ev_FileRemoved(self, ev) -> list[Change]:
        self.files.pop(ev.name, None)
        return [Change("files")]

    def _ev_Bye(self, ev) -> list[Change]:
        self.last_reason = ev.reason or ev.code
        return self.notice(self.active or PUBLIC, f"Server: {self.last_reason}")

    def _ev_Error(self, ev) -> list[Change]:
        self.last_reason = ev.message
        return [Change("error")]

    def _ev_Connected(self, ev) -> list[Change]:
        self.host, self.port = ev.host, ev.port
        info = getattr(ev, "server_info", None) or {}
        self.max_text = int(info.get("max_text", self.max_text))
        self.motd = info.get("motd", "") or ""
        changes = [Change("connection")]
        if info.get("policy"):  # after a reconnect it may differ (the server restarted)
            changes += self.set_policy(info["policy"], tell=bool(self.me))
        return changes

    def _ev_LoggedIn(self, ev) -> list[Change]:
        self.connection = "online"
        return [*self.set_me(ev.user, ev.display), Change("connection")]

    def _ev_Disconnected(self, ev) -> list[Change]:
        self.connection = "reconnecting" if ev.will_reconnect else "offline"
        self.last_reason = ev.reason or ev.code or ""
        self.online = set()
        changes = [Change("connection"), Change("online"), Change("conversations")]
        changes += [Change("typing", key) for key in self.typing.clear()]  # no news of them
        if not ev.will_reconnect:
            for key, entry in self.pending_entries():
                changes += self.send_failed(key, entry, "not sent: disconnected")
        return changes

    def _ev_Reconnecting(self, ev) -> list[Change]:
        self.connection = "reconnecting"
        self.reconnect_attempt = ev.attempt
        self.reconnect_at = time.monotonic() + float(ev.delay)
        return [Change("connection")]

    def _ev_LoggedOut(self, ev) -> list[Change]:
        self.last_reason = ev.reason
        return [Change("logged_out")]

    def _ev_Reconnected(self, ev) -> list[Change]:
        self.connection = "online"
        self.reconnect_at = None
        self.reconnect_attempt = 0
        return [Change("connection")]

