"""Typing notices, both ways: who is typing in each conversation (from the server's
user_typing events) and when to tell the server that I am typing.

There is no "stopped typing" message: a notice simply holds for TYPING_SHOW seconds unless
another one renews it, and ends at once when that person's message arrives or they go
offline. Times come from an injectable monotonic clock, so tests need no sleeps. Both
constants are read when used, so a test may patch them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .chat_records import Change, ConvKey

TYPING_SHOW = 6.0  # seconds a notice holds (the server passes one on at most every 2 s)
TYPING_EVERY = 3.0  # seconds between my own notices while I keep typing in one conversation

Clock = Callable[[], float]


def typing_sentence(displays: list[str]) -> str:
    """The line under the transcript for these people (in the order they began)."""
    if not displays:
        return ""
    if len(displays) == 1:
        return f"{displays[0]} is typing…"
    if len(displays) == 2:
        return f"{displays[0]} and {displays[1]} are typing…"
    return "Several people are typing…"


class TypingTracker:
    """Who is typing where, each until their notice runs out."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        # conversation -> lower name -> (name, clock time the notice runs out); in the order
        # people began, so the sentence does not reshuffle names as notices are renewed.
        self._until: dict[ConvKey, dict[str, tuple[str, float]]] = {}

    def notice(self, key: ConvKey, user: str) -> None:
        now = self.clock()
        self._drop_expired(now)
        people = self._until.setdefault(key, {})
        people[user.lower()] = (user, now + TYPING_SHOW)

    def stop(self, key: ConvKey, user: str) -> bool:
        """user's notice in key ends (their message came). True if it was still showing."""
        people = self._until.get(key, {})
        held = people.pop(user.lower(), None)
        if not people:
            self._until.pop(key, None)
        return held is not None and held[1] > self.clock()

    def forget(self, user: str) -> list[ConvKey]:
        """user went offline: their notices end everywhere. Where they were showing."""
        now, shown = self.clock(), []
        for key in list(self._until):
            held = self._until[key].pop(user.lower(), None)
            if held is not None and held[1] > now:
                shown.append(key)
            if not self._until[key]:
                del self._until[key]
        return shown

    def clear(self) -> list[ConvKey]:
        """Every notice ends (the connection was lost). Where some were showing."""
        now = self.clock()
        shown = [k for k, people in self._until.items()
                 if any(until > now for _, until in people.values())]
        self._until.clear()
        return shown

    def who(self, key: ConvKey) -> list[str]:
        """The names typing in key now, first to begin first."""
        now = self.clock()
        return [name for name, until in self._until.get(key, {}).values() if until > now]

    def due_in(self, key: ConvKey) -> float | None:
        """Seconds until the next notice showing in key runs out (None: nobody is typing)."""
        now = self.clock()
        ends = [until for _, until in self._until.get(key, {}).values() if until > now]
        return min(ends) - now if ends else None

    def _drop_expired(self, now: float) -> None:
        for key in list(self._until):
            people = self._until[key]
            for name in [n for n, (_, until) in people.items() if until <= now]:
                del people[name]
            if not people:
                del self._until[key]


class TypingThrottle:
    """When my own notice is worth sending: at the first key that changes the text, then at
    most every TYPING_EVERY seconds per conversation while the typing goes on. reset() after
    the message is sent or the box emptied, so the next key starts a new notice at once."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._last: dict[ConvKey, float] = {}

    def due(self, key: ConvKey) -> bool:
        """True (and counted as sent now) if a notice for key may go now."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < TYPING_EVERY:
            return False
        self._last[key] = now
        return True

    def reset(self, key: ConvKey) -> None:
        self._last.pop(key, None)


class TypingNotices:
    """ChatState's part for the notices of others: a mixin that expects from ChatState
    typing (a TypingTracker), is_me(), _learn(), display_of() and key_of()."""

    typing: TypingTracker

    def typing_text(self, key: ConvKey) -> str:
        """"", "Bob is typing…", "Bob and carol are typing…" or "Several people are typing…"."""
        return typing_sentence([self.display_of(name) for name in self.typing.who(key)])

    def typing_due_in(self, key: ConvKey) -> float | None:
        """Seconds until typing_text(key) may change by itself (a notice running out)."""
        return self.typing.due_in(key)

    def typing_ended(self, key: ConvKey, user: str) -> list[Change]:
        """user's message in key arrived: their notice there goes at once."""
        return [Change("typing", key)] if self.typing.stop(key, user) else []

    def _ev_UserTyping(self, ev) -> list[Change]:
        if self.is_me(ev.user):  # my other window, or an echo: nothing to show me
            return []
        self._learn(ev.user, ev.display)
        key = self.key_of(ev.kind, ev.target, ev.user)  # direct: keyed by the one typing
        self.typing.notice(key, ev.user)
        return [Change("typing", key)]
