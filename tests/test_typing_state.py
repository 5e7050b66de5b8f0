"""Typing notices in the client's model: who is typing where, until when, in what words; and
when the client's own notices are worth sending. A fake monotonic clock stands in for time."""

from __future__ import annotations

import pytest

from parley_client import typing_state
from parley_client.chat_state import PUBLIC, ChatState, direct_key, room_key
from parley_client.events import Disconnected, LoggedIn
from parley_client.typing_state import TYPING_SHOW, TypingThrottle, typing_sentence
from protocol.messages import ChatMessage, Presence, Renamed, RoomEvent, UserTyping


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def st(clock):
    state = ChatState(typing_clock=clock)
    state.apply(LoggedIn("alice", "Alice", False))
    state.open(PUBLIC)
    return state


def typing(user, display=None, kind="public", target=""):
    return UserTyping(user, display or user, kind, target)


def msg(mid, sender, text="hi", kind="public", target=""):
    return ChatMessage(mid, 1000.0 + mid, sender, sender, kind, target, text)


def typing_changes(changes):
    return [c.key for c in changes if c.kind == "typing"]


def test_a_notice_shows_for_typing_show_seconds_then_runs_out(st, clock):
    assert st.typing_text(PUBLIC) == "" and st.typing_due_in(PUBLIC) is None
    assert typing_changes(st.apply(typing("bob", "Bob Martin"))) == [PUBLIC]
    assert st.typing_text(PUBLIC) == "Bob Martin is typing…"
    assert st.typing_due_in(PUBLIC) == pytest.approx(TYPING_SHOW)

    clock.now += TYPING_SHOW - 0.5
    assert st.typing_text(PUBLIC) == "Bob Martin is typing…"
    assert st.typing_due_in(PUBLIC) == pytest.approx(0.5)
    st.apply(typing("bob", "Bob Martin"))  # renewed: holds another TYPING_SHOW from now
    clock.now += TYPING_SHOW - 0.5
    assert st.typing_text(PUBLIC) == "Bob Martin is typing…"
    clock.now += 0.5
    assert st.typing_text(PUBLIC) == "" and st.typing_due_in(PUBLIC) is None


def test_due_in_is_the_first_of_several_notices_to_run_out(st, clock):
    st.apply(typing("bob"))
    clock.now += 2
    st.apply(typing("carol"))
    assert st.typing_due_in(PUBLIC) == pytest.approx(TYPING_SHOW - 2)
    clock.now += TYPING_SHOW - 2
    assert st.typing_text(PUBLIC) == "carol is typing…"
    assert st.typing_due_in(PUBLIC) == pytest.approx(2)


def test_the_sentence_for_nobody_one_two_and_more():
    assert typing_sentence([]) == ""
    assert typing_sentence(["Bob Martin"]) == "Bob Martin is typing…"
    assert typing_sentence(["Bob Martin", "carol"]) == "Bob Martin and carol are typing…"
    assert typing_sentence(["a", "b", "c"]) == "Several people are typing…"
    assert typing_sentence(["a", "b", "c", "d"]) == "Several people are typing…"


def test_display_names_in_the_order_people_began(st, clock):
    st.apply(typing("bob", "Bob Martin"))
    st.apply(typing("carol"))
    assert st.typing_text(PUBLIC) == "Bob Martin and carol are typing…"
    st.apply(Renamed("carol", "carol", "Carol Diaz"))  # the sentence follows a rename
    assert st.typing_text(PUBLIC) == "Bob Martin and Carol Diaz are typing…"
    clock.now += 1
    st.apply(typing("bob", "Bob Martin"))  # renewing does not move him
    assert st.typing_text(PUBLIC) == "Bob Martin and Carol Diaz are typing…"
    st.apply(typing("dave"))
    assert st.typing_text(PUBLIC) == "Several people are typing…"
    clock.now += TYPING_SHOW - 1  # carol's ran out; bob's and dave's hold
    assert st.typing_text(PUBLIC) == "Bob Martin and dave are typing…"


def test_my_own_notices_are_ignored(st):
    assert st.apply(typing("ALICE", "Alice")) == []
    assert st.typing_text(PUBLIC) == ""
    assert st.typing_due_in(PUBLIC) is None


def test_their_message_in_that_conversation_ends_their_notice_at_once(st):
    st.apply(typing("bob"))
    st.apply(typing("carol"))
    st.apply(room_event("bob", "joined", "lab"))
    st.apply(typing("bob", kind="room", target="lab"))
    changes = st.apply(msg(1, "bob"))
    assert typing_changes(changes) == [PUBLIC]
    assert [c.kind for c in changes if c.kind != "typing"][0] == "append"
    assert st.typing_text(PUBLIC) == "carol is typing…"
    assert st.typing_text(room_key("lab")) == "bob is typing…"  # still typing over there
    # Someone else's message, or one after the notice ran out, changes nothing about it.
    assert typing_changes(st.apply(msg(2, "dave"))) == []
    assert typing_changes(st.apply(msg(3, "bob"))) == []


def room_event(user, event, room):
    return RoomEvent(room, event, user, user)


def test_going_offline_ends_their_notices_everywhere(st):
    st.apply(Presence("bob", "Bob", True))
    st.apply(room_event("alice", "joined", "lab"))
    st.apply(typing("bob"))
    st.apply(typing("bob", kind="room", target="lab"))
    st.apply(typing("bob", kind="direct", target="alice"))
    st.apply(typing("carol"))
    changes = st.apply(Presence("bob", "Bob", False))
    assert sorted(typing_changes(changes)) == sorted([PUBLIC, room_key("lab"),
                                                       direct_key("bob")])
    assert st.typing_text(PUBLIC) == "carol is typing…"
    assert st.typing_text(room_key("lab")) == ""
    assert st.typing_text(direct_key("bob")) == ""
    assert typing_changes(st.apply(Presence("dave", "dave", False))) == []


def test_leaving_a_room_ends_a_notice_there(st):
    st.apply(room_event("alice", "joined", "lab"))
    st.apply(room_event("bob", "joined", "lab"))
    st.apply(typing("bob", kind="room", target="LAB"))  # the room's spelling, any case
    assert st.typing_text(room_key("lab")) == "bob is typing…"
    assert typing_changes(st.apply(room_event("bob", "left", "lab"))) == [room_key("lab")]
    assert st.typing_text(room_key("lab")) == ""


def test_a_lost_connection_ends_every_notice(st):
    st.apply(typing("bob"))
    st.apply(typing("carol", kind="direct", target="alice"))
    changes = st.apply(Disconnected("connection lost", None, will_reconnect=True))
    assert sorted(typing_changes(changes)) == sorted([PUBLIC, direct_key("carol")])
    assert st.typing_text(PUBLIC) == "" and st.typing_text(direct_key("carol")) == ""


def test_a_direct_notice_is_keyed_by_the_one_typing(st):
    # target is me, as in a direct message: the conversation is the one with the sender.
    changes = st.apply(typing("Bob", "Bob Martin", kind="direct", target="alice"))
    assert typing_changes(changes) == [direct_key("bob")]
    assert st.typing_text(direct_key("bob")) == "Bob Martin is typing…"
    assert st.typing_text(PUBLIC) == "" and st.typing_text(direct_key("alice")) == ""
    assert direct_key("bob") not in st.conversations  # a notice opens no conversation
    changes = st.apply(msg(1, "bob", kind="direct", target="alice"))
    assert typing_changes(changes) == [direct_key("bob")]
    assert st.typing_text(direct_key("bob")) == ""


def test_the_show_time_is_read_when_a_notice_comes(st, clock, monkeypatch):
    monkeypatch.setattr(typing_state, "TYPING_SHOW", 0.25)
    st.apply(typing("bob"))
    assert st.typing_due_in(PUBLIC) == pytest.approx(0.25)
    clock.now += 0.25
    assert st.typing_text(PUBLIC) == ""


def test_my_notices_go_at_the_first_key_then_at_most_every_few_seconds(clock):
    throttle = TypingThrottle(clock)
    every = typing_state.TYPING_EVERY
    assert throttle.due(PUBLIC)
    clock.now += every - 0.1
    assert not throttle.due(PUBLIC)
    assert throttle.due(room_key("lab"))  # each conversation has its own
    clock.now += 0.1
    assert throttle.due(PUBLIC)
    clock.now += 1
    assert not throttle.due(PUBLIC)
    throttle.reset(PUBLIC)  # sent, or the box emptied: the next key tells at once
    assert throttle.due(PUBLIC)
    assert not throttle.due(PUBLIC)
