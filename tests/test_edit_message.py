"""Editing a message, through a real server and real clients: only one's own, who is told,
what history shows, the limits a post has, and a database from before edits existed."""

from __future__ import annotations

import sqlite3

import pytest
import test_cli
from serverutil import server_fixture
from test_cli import registered
from wireclient import ReplyError, WireClient, registered_clients

from parley_server.store import Store
from protocol import messages as m

clis = test_cli.clis  # the terminal-client fixture


srv = server_fixture(files=False)


@pytest.fixture
def people(srv):
    with registered_clients(srv, "teacher", "alice", "bob", "carol") as clients:
        yield clients


def edited(msg_id: int):
    return lambda e: isinstance(e, m.MessageEdited) and e.msg_id == msg_id


def refused(client: WireClient, msg_id: int, text: str = "changed") -> str:
    with pytest.raises(ReplyError) as err:
        client.call(m.EditMessage, msg_id=msg_id, text=text)
    return err.value.code


def test_editing_ones_own_message_tells_everyone_and_history_keeps_the_new_text(people):
    alice = people["alice"]
    sent = alice.call(m.Send, kind="public", target="", text="teh meeting is at 3")
    result = alice.call(m.EditMessage, msg_id=sent["msg_id"], text="the meeting is at 3")
    assert result["edited"] >= sent["ts"]
    for c in people.values():
        ev = c.wait_for(edited(sent["msg_id"]))
        assert (ev.sender, ev.kind, ev.target, ev.text, ev.edited) == \
            ("alice", "public", "", "the meeting is at 3", result["edited"])
    (entry,) = people["bob"].call(m.History, kind="public", target="")["messages"]
    assert (entry["text"], entry["edited"], entry["ts"]) == \
        ("the meeting is at 3", result["edited"], sent["ts"])


def test_a_message_never_edited_says_so_in_history(people):
    people["alice"].call(m.Send, kind="public", target="", text="as written")
    (entry,) = people["bob"].call(m.History, kind="public", target="")["messages"]
    assert entry["edited"] is None


def test_only_the_sender_edits_not_even_an_administrator(people):
    msg_id = people["alice"].call(m.Send, kind="public", target="", text="mine")["msg_id"]
    assert refused(people["bob"], msg_id) == "not_allowed"
    assert refused(people["teacher"], msg_id) == "not_allowed"  # admins delete instead
    assert refused(people["alice"], 10**9) == "not_found"
    people["alice"].call(m.DeleteMessage, msg_id=msg_id)
    assert refused(people["alice"], msg_id) == "not_found"


def test_an_edit_is_checked_like_a_post(srv, people):
    alice = people["alice"]
    msg_id = alice.call(m.Send, kind="public", target="", text="fine")["msg_id"]
    assert refused(alice, msg_id, "   ") == "invalid_text"
    assert refused(alice, msg_id, "x" * 4001) == "invalid_text"
    srv.server.moderation.perform("console", "mute", "alice")
    assert refused(alice, msg_id, "now something rude") == "muted"  # no way around a mute
    (entry,) = people["bob"].call(m.History, kind="public", target="")["messages"]
    assert entry["text"] == "fine"


def test_private_and_room_edits_reach_only_who_could_see_them(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    direct = alice.call(m.Send, kind="direct", target="bob", text="just us")["msg_id"]
    assert refused(carol, direct) == "not_found"  # carol is not even told it exists
    alice.call(m.EditMessage, msg_id=direct, text="just us two")
    assert bob.wait_for(edited(direct)).text == "just us two"
    alice.call(m.JoinRoom, room="lab")
    bob.call(m.JoinRoom, room="lab")
    room = alice.call(m.Send, kind="room", target="lab", text="lab only")["msg_id"]
    alice.call(m.EditMessage, msg_id=room, text="lab only, edited")
    bob.wait_for(edited(room))
    carol.call(m.Send, kind="public", target="", text="marker")
    carol.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "marker")
    assert not [e for e in carol.inbox if isinstance(e, m.MessageEdited)]


def test_a_stored_message_edited_before_delivery_arrives_as_edited(srv, people):
    alice = people["alice"]
    people["carol"].close()
    alice.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "carol" and not e.online)
    sent = alice.call(m.Send, kind="direct", target="carol", text="see you at 4")
    assert sent["stored"]
    alice.call(m.EditMessage, msg_id=sent["msg_id"], text="see you at 5")
    with WireClient(srv.host, srv.port) as carol:
        carol.login("carol")
        got = carol.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.delayed)
        assert (got.msg_id, got.text) == (sent["msg_id"], "see you at 5")


def test_a_database_from_before_edits_gets_the_column(tmp_path):
    path = tmp_path / "parley.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
            sender TEXT NOT NULL, sender_display TEXT NOT NULL, kind TEXT NOT NULL,
            target TEXT NOT NULL, conv TEXT NOT NULL, text TEXT NOT NULL);
        INSERT INTO messages(ts, sender, sender_display, kind, target, conv, text)
            VALUES (1.5, 'alice', 'alice', 'public', '', 'public', 'from the old days');
    """)
    db.commit()
    db.close()
    store = Store(path)
    try:
        (old,) = store.history("public", 10, None)
        assert (old.text, old.edited) == ("from the old days", None)
        assert store.edit_message(old.msg_id, "from the old days (edited)", 2.5)
        assert store.get_message(old.msg_id).edited == 2.5
    finally:
        store.close()


def test_terminal_client_edits_its_last_message_or_a_numbered_one(srv, clis):
    a = registered(clis, srv.port, "ann", "pw-ann-1")
    b = registered(clis, srv.port, "ben", "pw-ben-1")
    a.send("edit oops")
    assert "sent nothing from here" in a.expect(r"^error:")
    a.send("bm helo")
    b.expect(r"ann: helo$")
    a.send("edit hello")
    a.expect(r"^edited message #\d+$")
    assert b.expect(r"^\* ann edited a message").endswith(": hello")
    b.send("history")
    line = b.expect(r"ann: hello")
    assert line.endswith("hello (edited)")
    number = line.split()[0]
    a.send(f"edit {number} hello, world")
    a.expect(rf"^edited message {number}$")
    b.send(f"edit {number} mine now")
    assert "only your own" in b.expect(r"^error:")
