"""Searching one's messages, as the desktop client shows it: the query checked before it is
sent, each result turned into a row (which conversation, who, when, a line of text around
the match), and the sentences the search window says. No tkinter, so it is tested without
a window.

Results are the server's search answer: dicts as in history (msg_id, ts, sender,
sender_display, kind, target, text, edited), newest first. For a direct message the target
is the recipient, so the conversation is with whichever of sender and target is not me.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .chat_records import PUBLIC, ConvKey, direct_key, room_key

# The server's limits on what may be searched for (parley_server/message_commands.py); checked
# here too so that a typo gets a sentence at once instead of a round trip and a refusal.
MIN_QUERY, MAX_QUERY = 2, 200
EXCERPT_WIDTH = 100  # characters of text shown around the match, ellipses included
ELLIPSIS = "…"
# The server allows one search per connection every 0.5 s; searches are spaced a little more
# than that so that typing quickly queues a search instead of earning a refusal.
SEARCH_SPACING = 0.55
# Only ASCII letters fold, as on the server: "É" does not find "é" there, nor here.
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SearchQueryError(ValueError):
    """What was typed cannot be searched for; str() is a sentence for the user."""


@dataclass(frozen=True)
class SearchRow:
    """One result as the search window lists it."""

    key: ConvKey  # the conversation, as ChatState keys it
    where: str  # "Public", "#lab", or the other person's display name
    who: str  # the sender's display name
    when: str  # "14:05" today, else with the day
    excerpt: str  # one line around the first match
    msg_id: int
    ts: float


def check_query(text: str) -> str:
    """The query to send (stripped), or SearchQueryError saying what is wrong with it."""
    words = text.strip()
    if len(words) < MIN_QUERY:
        raise SearchQueryError(f"Type at least {MIN_QUERY} characters to search for.")
    if len(words) > MAX_QUERY:
        raise SearchQueryError(f"A search can be at most {MAX_QUERY} characters long "
                               f"(this one has {len(words)}).")
    return words


def conversation_of(message: dict, me: str) -> ConvKey:
    kind = message.get("kind", "public")
    if kind == "room":
        return room_key(message.get("target", ""))
    if kind == "direct":
        sender, target = message.get("sender", ""), message.get("target", "")
        return direct_key(target if sender.lower() == me.lower() else sender)
    return PUBLIC


def when_label(ts: float, now: float) -> str:
    """"14:05" on the same day; "Yesterday 14:05"; "Mon 3 Nov 14:05" within the year;
    "3 Nov 2024 14:05" before it. Local time, like the transcript's headers."""
    t, today = time.localtime(ts), time.localtime(now)
    clock = time.strftime("%H:%M", t)
    if t[:3] == today[:3]:
        return clock
    if t[:3] == time.localtime(now - 86400)[:3]:
        return f"Yesterday {clock}"
    if t.tm_year == today.tm_year:
        return f"{time.strftime('%a', t)} {t.tm_mday} {time.strftime('%b', t)} {clock}"
    return f"{t.tm_mday} {time.strftime('%b', t)} {t.tm_year} {clock}"


def excerpt(text: str, query: str, width: int = EXCERPT_WIDTH) -> str:
    """The text on one line, cut to width characters around the first match of query (the
    match in the middle where the text allows), with an ellipsis where it was cut."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    needle = " ".join(query.split()).translate(_ASCII_FOLD)
    found = line.translate(_ASCII_FOLD).find(needle) if needle else -1
    if found < 0:  # the match spans a line break that was collapsed: show the start
        found, needle = 0, ""
    one_cut = width - len(ELLIPSIS)  # room for the text when one end is cut
    both_cut = width - 2 * len(ELLIPSIS)  # and when both are
    start = found + len(needle) // 2 - both_cut // 2
    if start <= len(ELLIPSIS):  # near the start: cut the end only
        return line[:one_cut].rstrip() + ELLIPSIS
    if start + both_cut >= len(line) - len(ELLIPSIS):  # near the end: cut the start only
        return ELLIPSIS + line[len(line) - one_cut:].lstrip()
    return ELLIPSIS + line[start:start + both_cut].strip() + ELLIPSIS


def to_rows(messages: list[dict], query: str, me: str, display_of: Callable[[str], str],
            now: float | None = None) -> list[SearchRow]:
    """Rows for the server's results, in the order given (newest first). display_of names
    the other person of a private conversation (the result only carries the sender's)."""
    now = time.time() if now is None else now
    rows = []
    for m in messages:
        key = conversation_of(m, me)
        if key[0] == "room":
            where = f"#{m.get('target', '')}"
        elif key[0] == "direct":
            other = m.get("sender", "") if key[1] == m.get("sender", "").lower() \
                else m.get("target", "")
            where = display_of(other) or other
        else:
            where = "Public"
        sender = m.get("sender", "")
        rows.append(SearchRow(key, where, m.get("sender_display") or sender,
                              when_label(m.get("ts", 0.0), now),
                              excerpt(m.get("text", ""), query), m.get("msg_id", 0),
                              m.get("ts", 0.0)))
    return rows


def summary(count: int, truncated: bool, query: str) -> str:
    """The search window's status line after an answer."""
    if count == 0:
        return f"No messages contain “{query}”."
    if truncated:
        return f"Showing the newest {count}; be more specific to see older ones."
    return "1 message" if count == 1 else f"{count} messages"


def refusal_sentence(code: str | None, message: str) -> str:
    """What the search window says when the server did not search."""
    if code == "rate_limited":
        return "Searching too quickly: wait a moment and search again."
    if code == "invalid_text":
        return f"Type {MIN_QUERY} to {MAX_QUERY} characters to search for."
    reason = message.strip() or code or "no answer"
    return f"The search failed: {reason}."


def further_back_sentence(where: str) -> str:
    """Said when the message found is older than what the open conversation holds."""
    return (f"That message is further back in {where}: choose “Load earlier messages” at the "
            "top of the conversation to find it.")


def not_loaded_sentence(where: str) -> str:
    """Said when the conversation's messages could not be fetched to show the one found."""
    return f"The messages of {where} could not be loaded to show that one: try again."


CLEARED_SENTENCE = ("That message was cleared from this window (Clear works on this computer "
                    "only: it is still on the server).")


class SearchPacer:
    """When the next search may go: at least SEARCH_SPACING seconds after the one before."""

    def __init__(self, spacing: float = SEARCH_SPACING, clock=time.monotonic) -> None:
        self.spacing, self.clock = spacing, clock
        self.last: float | None = None

    def wait(self) -> float:
        """Seconds to wait before sending (0: now)."""
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.spacing - self.clock())

    def sent(self) -> None:
        self.last = self.clock()
