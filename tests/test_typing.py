"""Typing notices through a real server and real clients: who is told, who is not, and the
server's limit on how often one is passed on."""

from __future__ import annotations

import pytest
from serverutil import server_fixture
from wireclient import ReplyError, WireClient, registered_clients

import parley_server.message_commands as message_commands
from protocol import messages as m

srv = server_fixture(files=False)


@pytest.fixture
def people(srv):
    with registered_clients(srv, "alice", "bob", "carol") as clients:
        yield clients


def typing_of(user: str):
    return lambda e: isinstance(e, m.UserTyping) and e.user == user


def settle(client: WireClient) -> None:
    """Everything the server queued for client before now has been read (a round trip)."""
    client.call(m.ListOnline)


def typing_seen(client: WireClient) -> list[m.UserTyping]:
    settle(client)
    return [e for e in client.inbox if isinstance(e, m.UserTyping)]


def test_a_private_notice_reaches_only_the_other_person(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.call(m.Typing, kind="direct", target="BOB")
    ev = bob.wait_for(typing_of("alice"))
    assert (ev.display, ev.kind, ev.target) == ("alice", "direct", "bob")
    assert typing_seen(carol) == [] and typing_seen(alice) == []


def test_room_and_public_notices_reach_the_others_there(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.call(m.JoinRoom, room="lab")
    bob.call(m.JoinRoom, room="lab")
    alice.call(m.Typing, kind="room", target="LAB")
    assert bob.wait_for(typing_of("alice")).target == "lab"
    assert typing_seen(carol) == []
    with pytest.raises(ReplyError) as err:
        carol.call(m.Typing, kind="room", target="lab")
    assert err.value.code == "not_member"
    carol.call(m.Typing, kind="public", target="")
    for c in (alice, bob):
        assert c.wait_for(typing_of("carol")).kind == "public"
    assert typing_seen(carol) == []


def test_notices_are_passed_on_at_most_every_few_seconds(people, monkeypatch):
    monkeypatch.setattr(message_commands, "TYPING_EVERY", 30.0)
    alice, bob = people["alice"], people["bob"]
    for _ in range(5):
        alice.call(m.Typing, kind="direct", target="bob")  # each one answered ok
    assert len(typing_seen(bob)) == 1
    alice.call(m.Typing, kind="public", target="")  # another conversation: its own clock
    assert len(typing_seen(bob)) == 2
    monkeypatch.setattr(message_commands, "TYPING_EVERY", 0.0)  # the interval has passed
    alice.call(m.Typing, kind="direct", target="bob")
    assert len(typing_seen(bob)) == 3


def test_no_notice_for_what_could_not_be_sent(srv, people):
    srv.server.moderation.perform("console", "mute", "alice")
    with pytest.raises(ReplyError) as err:
        people["alice"].call(m.Typing, kind="public", target="")
    assert err.value.code == "muted"
    for kind, target, code in (("direct", "nobody", "no_such_user"),
                               ("room", "nowhere", "no_such_room"),
                               ("shout", "", "bad_message")):
        with pytest.raises(ReplyError) as err:
            people["bob"].call(m.Typing, kind=kind, target=target)
        assert err.value.code == code
    assert typing_seen(people["carol"]) == []
