"""Deleting a message, through a real server and real clients: one's own, anyone's for an
administrator, who is told, what history keeps, and a stored message deleted before delivery."""

from __future__ import annotations

import pytest
import test_cli
from serverutil import server_fixture
from test_cli import registered
from wireclient import ReplyError, WireClient, registered_clients

from protocol import messages as m

clis = test_cli.clis  # the terminal-client fixture


srv = server_fixture(files=False)


@pytest.fixture
def people(srv):
    with registered_clients(srv, "teacher", "alice", "bob", "carol") as clients:
        yield clients


def deleted(msg_id: int):
    return lambda e: isinstance(e, m.MessageDeleted) and e.msg_id == msg_id


def history(client: WireClient, kind: str, target: str) -> list[str]:
    return [x["text"] for x in client.call(m.History, kind=kind, target=target)["messages"]]


def refused(client: WireClient, msg_id: int) -> str:
    with pytest.raises(ReplyError) as err:
        client.call(m.DeleteMessage, msg_id=msg_id)
    return err.value.code


def test_deleting_ones_own_public_message_tells_everyone_and_leaves_history(people):
    alice = people["alice"]
    keep = alice.call(m.Send, kind="public", target="", text="keep me")["msg_id"]
    oops = alice.call(m.Send, kind="public", target="", text="oops, wrong window")["msg_id"]
    assert alice.call(m.DeleteMessage, msg_id=oops) == {}
    for c in people.values():
        ev = c.wait_for(deleted(oops))
        assert (ev.sender, ev.kind, ev.target, ev.by) == ("alice", "public", "", "alice")
    assert history(people["bob"], "public", "") == ["keep me"]
    assert refused(alice, oops) == "not_found"  # already gone
    assert keep < oops


def test_only_the_sender_or_an_administrator_may_delete(srv, people):
    alice, bob, teacher = people["alice"], people["bob"], people["teacher"]
    msg_id = alice.call(m.Send, kind="public", target="", text="mine")["msg_id"]
    assert refused(bob, msg_id) == "not_allowed"
    assert history(bob, "public", "") == ["mine"]
    teacher.call(m.DeleteMessage, msg_id=msg_id)
    ev = alice.wait_for(deleted(msg_id))
    assert (ev.sender, ev.by) == ("alice", "teacher")
    entry = srv.server.moderation.audit.entries()[-1]
    assert (entry["actor"], entry["action"], entry["target"]) == \
        ("teacher", "delete_message", str(msg_id))
    assert "mine" not in (srv.data_dir / "audit.log").read_text()  # not the text itself
    assert refused(alice, 10**9) == "not_found"


def test_room_deletions_reach_only_its_members(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.call(m.JoinRoom, room="lab")
    bob.call(m.JoinRoom, room="lab")
    msg_id = alice.call(m.Send, kind="room", target="lab", text="lab only")["msg_id"]
    assert refused(carol, msg_id) == "not_found"  # not a member: not even told it exists
    alice.call(m.DeleteMessage, msg_id=msg_id)
    bob.wait_for(deleted(msg_id))
    carol.call(m.Send, kind="public", target="", text="marker")
    carol.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "marker")
    assert not [e for e in carol.inbox if isinstance(e, m.MessageDeleted)]
    assert history(bob, "room", "lab") == []


def test_a_private_message_is_private_to_deletion_too(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    msg_id = alice.call(m.Send, kind="direct", target="bob", text="just us")["msg_id"]
    assert refused(carol, msg_id) == "not_found"
    assert refused(bob, msg_id) == "not_allowed"  # bob sees it but did not write it
    alice.call(m.DeleteMessage, msg_id=msg_id)
    ev = bob.wait_for(deleted(msg_id))
    assert (ev.kind, ev.target) == ("direct", "bob")
    assert history(bob, "direct", "alice") == []


def test_a_stored_message_deleted_before_delivery_never_arrives(srv, people):
    alice = people["alice"]
    people["carol"].close()
    alice.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "carol" and not e.online)
    first = alice.call(m.Send, kind="direct", target="carol", text="sorry, ignore this")
    alice.call(m.Send, kind="direct", target="carol", text="the real one")
    assert first["stored"]
    alice.call(m.DeleteMessage, msg_id=first["msg_id"])
    with WireClient(srv.host, srv.port) as carol:
        carol.login("carol")
        got = carol.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.delayed)
        assert got.text == "the real one"
        carol.call(m.AckDelayed, msg_id=got.msg_id)
    assert srv.server.store.pending_for("carol") == []
    with WireClient(srv.host, srv.port) as carol:  # and nothing is owed any more
        carol.login("carol")
        carol.call(m.Send, kind="public", target="", text="marker")
        carol.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "marker")
        assert not [e for e in carol.inbox if isinstance(e, m.ChatMessage) and e.delayed]


def test_terminal_client_deletes_its_last_message_or_a_numbered_one(srv, clis):
    a = registered(clis, srv.port, "ann", "pw-ann-1")
    b = registered(clis, srv.port, "ben", "pw-ben-1")
    a.send("delete")
    assert "sent nothing from here" in a.expect(r"^error:")
    a.send("bm first")
    b.expect(r"ann: first")
    a.send("bm second")
    b.expect(r"ann: second")
    a.send("delete")
    number = int(a.expect(r"^deleted message #\d+$").rsplit("#", 1)[1])
    assert b.expect(r"^\* ann deleted a message") == f"* ann deleted a message (#{number})"
    b.send("history")
    b.expect(r"history of public: 1 message")
    line = b.expect(r"ann: first")
    first = int(line.split()[0].lstrip("#"))
    b.send(f"delete {first}")
    assert "only your own" in b.expect(r"^error:")
    a.send(f"delete #{first}")
    a.expect(rf"^deleted message #{first}$")
