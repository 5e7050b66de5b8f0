"""What the moderation dialog accepts before anything is sent (parley_client.moderation)."""

from __future__ import annotations

import pytest

from parley_client.chat_state import PUBLIC, direct_key, room_key
from parley_client.moderation import (
    ACTIONS,
    ModerationInputError,
    build_request,
    parse_minutes,
    purge_target,
)
from protocol.messages import Moderate


@pytest.mark.parametrize("text, minutes", [
    ("", None), ("  ", None), ("30", 30), (" 45 ", 45), ("2h", 120), ("2 hours", 120),
    ("1d", 1440), ("3 days", 4320), ("10min", 10), ("1 minute", 1), ("366d", 366 * 1440),
])
def test_durations_people_type(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("text", ["0", "-5", "1.5h", "soon", "2 weeks", "367d", "99999999"])
def test_durations_that_are_refused_with_a_sentence(text):
    with pytest.raises(ModerationInputError, match="duration|Give"):
        parse_minutes(text)


def test_each_action_takes_only_its_own_fields():
    assert build_request("Kick", " bob ", "10", " phones ") == ("kick", "bob", None, "phones")
    assert build_request("Mute", "bob", "10", "ignored") == ("mute", "bob", 10, "")
    assert build_request("Ban address", "192.168.1.23", "", "spam") == (
        "ban", "address:192.168.1.23", None, "spam")
    # A username shaped like an address is banned as the user: the kind is in the request.
    assert build_request("Ban", "10.0.0.5", "", "") == ("ban", "user:10.0.0.5", None, "")
    assert build_request("Unban", "bob", "5", "x") == ("unban", "user:bob", None, "")
    assert build_request("Unban address", "address:::1")[1] == "address:::1"
    with pytest.raises(ModerationInputError, match="IP address"):
        build_request("Ban address", "bob")
    for label in ("Kick", "Ban"):
        with pytest.raises(ModerationInputError):
            build_request(label, "  ")
        with pytest.raises(ModerationInputError):
            build_request(label, "two words")
    with pytest.raises(ModerationInputError):
        build_request("Explode", "bob")


def test_every_action_is_one_the_protocol_knows():
    # The server's actions (docs/protocol.md, 6.6), less announce/remove_file/purge, which
    # have their own menu entries.
    assert {a.action for a in ACTIONS} == {"kick", "ban", "unban", "mute", "unmute", "op",
                                          "deop", "reset_password", "add_user"}
    for a in ACTIONS:
        Moderate(1, a.action, "bob", 5 if a.minutes else None, "")  # a valid message


def test_purge_targets_name_the_conversation():
    assert purge_target(PUBLIC, "alice", "") == "public"
    assert purge_target(room_key("Lab"), "alice", "Lab") == "room:Lab"
    assert purge_target(direct_key("bob"), "alice", "Bob") == "direct:alice:Bob"


def test_a_password_reset_names_one_user_and_takes_nothing_else():
    assert build_request("Reset password", " bob ", "10", "forgot it") == (
        "reset_password", "bob", None, "")
    with pytest.raises(ModerationInputError, match="User"):
        build_request("Reset password", "")
    with pytest.raises(ModerationInputError):
        build_request("Reset password", "10.0.0.5 bob")
