"""The plain records ChatState keeps and hands to the GUI: entries of a conversation, the
conversation itself, rooms, transfers, and the Change notes that say what to redraw.

Conversation keys are (kind, target) with kind "public" (target ""), "room" (room name) or
"direct" (the OTHER user's name), lower-cased: names compare case-insensitively on the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PUBLIC = ("public", "")
GROUP_WINDOW_S = 300.0  # consecutive messages by one sender within 5 min share a header

ConvKey = tuple[str, str]


@dataclass
class Entry:
    """One line in a conversation: a chat message (kind "msg") or a system notice."""

    local_id: int
    kind: str  # "msg" | "notice"
    text: str  # a message's current text (the latest edit)
    ts: float
    sender: str = ""
    sender_display: str = ""
    msg_id: int | None = None
    own: bool = False
    status: str = "sent"  # "sent" | "pending" | "failed"
    error: str = ""
    delayed: bool = False
    mention: bool = False
    edited: float | None = None  # server time of its sender's last edit; None: never edited
    continues: bool = False  # shares the header of the entry before it
    unread_start: bool = False  # the first one not seen yet: "New messages" is drawn above it


@dataclass
class Conversation:
    key: ConvKey
    title: str
    entries: list[Entry] = field(default_factory=list)
    unread: int = 0
    mentions: int = 0
    history_state: str = "none"  # "none" | "loading" | "loaded"
    # Older history on the server: "unknown" (not asked yet), "more", "loading", "start" (we
    # have the beginning), "capped" (MAX_ENTRIES held), "none" (cleared: nothing to offer).
    earlier: str = "unknown"
    cleared_up_to: int = 0  # msg_id at the last local "clear": history must not bring these back
    last_activity: float = 0.0

    @property
    def kind(self) -> str:
        return self.key[0]

    @property
    def target(self) -> str:
        return self.key[1]


@dataclass
class RoomInfo:
    name: str
    creator: str = ""
    members: dict[str, str] = field(default_factory=dict)  # lower name -> display
    joined: bool = False
    closed: bool = False


@dataclass
class Transfer:
    tid: int
    direction: str  # "down" | "up"
    name: str
    size: int = 0
    done: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None
    state: str = "connecting"  # connecting|running|fallback-tcp|verifying|done|failed|cancelled
    message: str = ""
    path: str = ""
    transport: str = ""
    started: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        return min(1.0, self.done / self.size) if self.size else 0.0


@dataclass(frozen=True)
class Change:
    """What the GUI must redraw. kind: append|entry|reload|earlier|deleted|removed|
    conversations|online|rooms|files|transfers|connection|me|notify|error|logged_out|typing.
    "entry" is one entry changed in place (its delivery status, or its text after an edit);
    "earlier" is a reload that keeps the entry at the top of the view where it was (older
    messages went in above it); "deleted" is a reload after a message was taken out, which
    leaves the view where the reader was (at the bottom if they were there); "typing" is who is
    typing in conversation `key` changed (someone started, stopped or went)."""

    kind: str
    key: ConvKey | None = None
    entry: Entry | None = None


def direct_key(user: str) -> ConvKey:
    return ("direct", user.lower())


def room_key(room: str) -> ConvKey:
    return ("room", room.lower())


def continues(prev: Entry | None, entry: Entry) -> bool:
    """Whether entry shares the header of prev: both messages, one sender, close in time."""
    return (prev is not None and prev.kind == "msg" and entry.kind == "msg"
            and prev.sender.lower() == entry.sender.lower()
            and 0 <= entry.ts - prev.ts < GROUP_WINDOW_S)
