"""Searching messages through a real server and real clients: only what one can read, newest
first, hostile search text taken literally, the limits, and the terminal client."""

from __future__ import annotations

import pytest
import test_cli
from serverutil import server_fixture
from test_cli import registered
from wireclient import ReplyError, WireClient, registered_clients

import parley_server.message_commands as message_commands
from protocol import messages as m

clis = test_cli.clis  # the terminal-client fixture


srv = server_fixture(files=False)


@pytest.fixture
def people(srv, monkeypatch):
    monkeypatch.setattr(message_commands, "SEARCH_EVERY", 0.0)  # tests search back to back
    with registered_clients(srv, "alice", "bob", "carol") as clients:
        yield clients


def texts(client: WireClient, words: str, **kw) -> list[str]:
    return [x["text"] for x in client.call(m.Search, text=words, **kw)["messages"]]


def test_finds_what_one_can_read_newest_first(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.call(m.Send, kind="public", target="", text="The projector is in room 4")
    alice.call(m.Send, kind="direct", target="bob", text="bring the PROJECTOR cable")
    alice.call(m.JoinRoom, room="lab")
    bob.call(m.JoinRoom, room="lab")
    alice.call(m.Send, kind="room", target="lab", text="projector works now")
    carol.call(m.Send, kind="public", target="", text="nothing to see here")
    assert texts(bob, "projector") == ["projector works now", "bring the PROJECTOR cable",
                                       "The projector is in room 4"]
    assert texts(carol, "projector") == ["The projector is in room 4"]  # not their dm or room
    bob.call(m.LeaveRoom, room="lab")
    assert texts(bob, "projector") == ["bring the PROJECTOR cable", "The projector is in room 4"]
    (found,) = bob.call(m.Search, text="cable")["messages"]
    assert (found["sender"], found["kind"], found["target"], found["edited"]) == \
        ("alice", "direct", "bob", None)


def test_search_text_is_taken_literally(people):
    alice = people["alice"]
    for text in ("100% sure", "100 percent", "snake_case name", "snakeXcase", "back\\slash"):
        alice.call(m.Send, kind="public", target="", text=text)
    assert texts(alice, "100%") == ["100% sure"]
    assert texts(alice, "e_c") == ["snake_case name"]
    assert texts(alice, "k\\s") == ["back\\slash"]
    assert texts(alice, "' OR 1=1 --") == []


def test_limit_and_truncation(people):
    alice = people["alice"]
    for i in range(5):
        alice.call(m.Send, kind="public", target="", text=f"note {i}")
    result = alice.call(m.Search, text="note", limit=3)
    assert [x["text"] for x in result["messages"]] == ["note 4", "note 3", "note 2"]
    assert result["truncated"] is True
    assert "truncated" not in alice.call(m.Search, text="note", limit=5)


def test_bad_searches_get_errors(people, monkeypatch):
    alice = people["alice"]
    for words in ("x", "   y  ", "z" * 201):
        with pytest.raises(ReplyError) as err:
            alice.call(m.Search, text=words)
        assert err.value.code == "invalid_text"
    monkeypatch.setattr(message_commands, "SEARCH_EVERY", 30.0)
    alice.call(m.Search, text="first")
    with pytest.raises(ReplyError) as err:
        alice.call(m.Search, text="second")
    assert err.value.code == "rate_limited"
    alice.call(m.Send, kind="public", target="", text="still connected")


def test_terminal_client_searches(srv, clis, monkeypatch):
    monkeypatch.setattr(message_commands, "SEARCH_EVERY", 0.0)
    a = registered(clis, srv.port, "ann", "pw-ann-1")
    a.send("bm the quiz is on friday")
    a.expect(r"ann: the quiz is on friday$")
    a.send("search quiz")
    a.expect(r"^1 message\(s\) containing 'quiz':$")
    assert a.expect(r"quiz is on friday").lstrip().startswith("#")
    a.send("search nothing-like-it")
    a.expect(r"^no messages contain 'nothing-like-it'$")
    a.send("search q")
    assert "2 to 200 characters" in a.expect(r"^error:")


def test_search_uses_the_full_text_index_and_an_old_database_gets_one(tmp_path):
    import sqlite3

    from parley_server.store import Store
    path = tmp_path / "parley.sqlite3"
    store = Store(path)
    for i in range(50):
        store.add_message(1000.0 + i, "alice", "alice", "public", "", f"note {i} about 100% of the_exam")
    store.close()
    db = sqlite3.connect(path)  # as a database from before the index existed
    db.executescript("DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete;"
                     "DROP TRIGGER messages_fts_update; DROP TABLE messages_fts;")
    db.close()
    store = Store(path)
    try:
        assert store.indexed_search
        found = store.search("100% of the_ex", "bob", [], 10)
        assert [f.text for f in found][:2] == ["note 49 about 100% of the_exam",
                                              "note 48 about 100% of the_exam"]
        assert store.search("100_ of", "bob", [], 10) == []  # "_" is literal, not a wildcard
        with store._reader() as rdb:
            plan = rdb.execute("EXPLAIN QUERY PLAN SELECT rowid FROM messages_fts"
                               " WHERE messages_fts MATCH '\"exam\"'").fetchall()
        assert "VIRTUAL TABLE INDEX" in str(plan) and ":M" in str(plan)
        store.add_message(2000.0, "bob", "bob", "public", "", "a new exam date")  # kept in step
        assert store.search("new exam", "carol", [], 5)[0].text == "a new exam date"
    finally:
        store.close()


def test_many_searchers_get_busy_in_words_not_everyone_slow(srv, people):
    from parley_server.limits import RateLimiter
    srv.server.search_rate = RateLimiter(0.001, 2)  # the server-wide budget: 2 searches here
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.call(m.Send, kind="public", target="", text="quiz on friday")
    assert texts(alice, "quiz") == ["quiz on friday"]
    assert texts(bob, "quiz") == ["quiz on friday"]
    with pytest.raises(ReplyError) as busy:
        texts(carol, "quiz")
    assert busy.value.code == "busy" and "other people's searches" in busy.value.message
    carol.call(m.History, kind="public", target="", limit=5)  # history is not held up
