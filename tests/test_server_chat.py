"""The chat server's features, through real sockets on 127.0.0.1 and a real SQLite store."""

from __future__ import annotations

import pytest
from serverutil import running_server
from wireclient import ReplyError, WireClient

from protocol import encode_frame, encode_message
from protocol import messages as m


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, files=False) as s:
        yield s


@pytest.fixture
def connect(srv):
    clients = []

    def make(user: str | None = None, register: bool = True) -> WireClient:
        c = WireClient(srv.host, srv.port)
        clients.append(c)
        if user:
            c.register(user) if register else c.login(user)
        return c

    yield make
    for c in clients:
        c.close()


def is_msg(text):
    return lambda e: isinstance(e, m.ChatMessage) and e.text == text


def test_register_reports_new_and_taken(connect):
    a = connect()
    a.hello()
    assert a.call(m.Register, username="Alice", password="secret-pw")["new"] is True
    b = connect()
    b.hello()
    with pytest.raises(ReplyError) as err:
        b.call(m.Register, username="alice", password="other-pw")  # case-insensitive
    assert err.value.code == "name_taken"


@pytest.mark.parametrize("name,password,code", [
    ("", "secret-pw", "invalid_username"),
    ("x" * 33, "secret-pw", "invalid_username"),
    ("bad name", "secret-pw", "invalid_username"),
    ("ok_name", "short", "invalid_password"),
])
def test_register_validates(connect, name, password, code):
    c = connect()
    c.hello()
    with pytest.raises(ReplyError) as err:
        c.call(m.Register, username=name, password=password)
    assert err.value.code == code


def test_login_errors_and_success(connect):
    connect("alice").close()
    c = connect()
    c.hello()
    with pytest.raises(ReplyError) as err:
        c.call(m.Login, username="alice", password="wrong-pw")
    assert err.value.code == "wrong_password"
    with pytest.raises(ReplyError) as err:
        c.call(m.Login, username="nobody", password="secret-pw")
    assert err.value.code == "no_such_user"
    assert c.call(m.Login, username="ALICE", password="secret-pw")["user"] == "alice"


def test_requests_before_login_and_unknown_types_get_errors(srv, connect):
    c = connect()
    c.hello()
    # our own client refuses this locally, so send the raw frame as a hostile client would
    c.sock.sendall(encode_message(m.ListOnline(id=50)))
    ev = c.wait_for(lambda e: isinstance(e, m.Error) and e.id == 50)
    assert ev.code == "not_authenticated"
    # a well-framed but unknown message type: an error reply, and the connection stays usable
    c.sock.sendall(encode_frame(b'{"type":"dance","id":77,"x":1}'))
    ev = c.wait_for(lambda e: isinstance(e, m.Error) and e.id == 77)
    assert ev.code == "unknown_type"
    c.register("carol")
    assert [u["name"] for u in c.call(m.ListOnline)["users"]] == ["carol"]


def test_version_mismatch_is_refused(connect):
    c = connect()
    with pytest.raises(ReplyError) as err:
        c.call(m.Hello, version=999, software="future")
    assert err.value.code == "version_mismatch"
    bye = c.wait_for(lambda e: isinstance(e, m.Bye))
    assert bye.code == "version_mismatch"


def test_public_message_reaches_everyone_with_sender_and_timestamp(connect):
    a, b, c = connect("alice"), connect("bob"), connect("carol")
    reply = a.call(m.Send, kind="public", target="", text="hello all")
    for client in (a, b, c):
        ev = client.wait_for(is_msg("hello all"))
        assert (ev.sender, ev.kind, ev.msg_id) == ("alice", "public", reply["msg_id"])
        assert abs(ev.ts - reply["ts"]) < 1e-6


def test_direct_message_only_reaches_its_target(connect):
    a, b, c = connect("alice"), connect("bob"), connect("carol")
    a.call(m.Send, kind="direct", target="Bob", text="psst")
    ev = b.wait_for(is_msg("psst"))
    assert (ev.sender, ev.kind, ev.target) == ("alice", "direct", "bob")
    a.wait_for(is_msg("psst"))  # the sender's own echo
    c.call(m.Send, kind="public", target="", text="marker")
    c.wait_for(is_msg("marker"))
    assert not [e for e in c.inbox if isinstance(e, m.ChatMessage) and e.text == "psst"]


def test_direct_message_errors(connect):
    a = connect("alice")
    with pytest.raises(ReplyError) as err:
        a.call(m.Send, kind="direct", target="ghost", text="hi")
    assert err.value.code == "no_such_user"
    for text in ("", "   ", "x" * 4001):
        with pytest.raises(ReplyError) as err:
            a.call(m.Send, kind="public", target="", text=text)
        assert err.value.code == "invalid_text"
    assert a.call(m.Send, kind="public", target="", text="x" * 4000)["msg_id"] > 0


def test_offline_direct_messages_stay_stored_until_acknowledged(connect):
    """Queued is not read: a connection (or a server) that dies right after the login must
    not take the stored messages along. They come again until the client acknowledges them,
    and an acknowledgement covers what it names, no more."""
    connect("bob").close()
    a = connect("alice")
    texts = [f"while you were out {i}" for i in range(3)]
    ids = []
    for text in texts:
        sent = a.call(m.Send, kind="direct", target="bob", text=text)
        assert sent["stored"]
        ids.append(sent["msg_id"])

    def log_in_bob() -> tuple[WireClient, list[m.ChatMessage]]:
        b = connect()
        b.login("bob")
        b.call(m.Send, kind="public", target="", text="marker")  # after the stored ones
        b.wait_for(is_msg("marker"))
        return b, [e for e in b.messages() if e.text != "marker"]

    b, got = log_in_bob()
    assert [(e.msg_id, e.text, e.delayed, e.sender) for e in got] == \
        [(i, t, True, "alice") for i, t in zip(ids, texts, strict=True)]
    b.close()  # gone without acknowledging
    b, got = log_in_bob()
    assert [e.msg_id for e in got] == ids and all(e.delayed for e in got)
    assert b.call(m.AckDelayed, msg_id=ids[1]) == {}  # the first two taken in
    b.close()
    b, got = log_in_bob()
    assert [e.msg_id for e in got] == ids[2:]
    b.call(m.AckDelayed, msg_id=ids[2])
    b.close()
    b, got = log_in_bob()
    assert got == []


def test_rooms_create_join_message_and_close_rights(connect):
    a, b, c = connect("alice"), connect("bob"), connect("carol")
    r = a.call(m.JoinRoom, room="lab")
    assert r["created"] and r["creator"] == "alice"
    r = b.call(m.JoinRoom, room="LAB")
    assert not r["created"] and {x["name"] for x in r["members"]} == {"alice", "bob"}
    a.wait_for(lambda e: isinstance(e, m.RoomEvent) and e.user == "bob" and e.event == "joined")
    b.call(m.Send, kind="room", target="lab", text="room talk")
    assert a.wait_for(is_msg("room talk")).target == "lab"
    with pytest.raises(ReplyError) as err:
        c.call(m.Send, kind="room", target="lab", text="let me in")
    assert err.value.code == "not_member"
    c.call(m.Send, kind="public", target="", text="marker")
    c.wait_for(is_msg("marker"))
    assert not [e for e in c.inbox if isinstance(e, m.ChatMessage)]
    rooms = a.call(m.ListRooms)["rooms"]
    assert rooms == [{"name": "lab", "creator": "alice", "members": 2}]
    with pytest.raises(ReplyError) as err:
        b.call(m.CloseRoom, room="lab")
    assert err.value.code == "not_creator"
    a.call(m.CloseRoom, room="lab")
    closed = b.wait_for(lambda e: isinstance(e, m.RoomEvent) and e.event == "closed")
    assert closed.room == "lab" and closed.user == "alice"
    assert a.call(m.ListRooms)["rooms"] == []
    with pytest.raises(ReplyError) as err:
        b.call(m.Send, kind="room", target="lab", text="anyone?")
    assert err.value.code == "no_such_room"


def test_leaving_a_room_notifies_members(connect):
    a, b = connect("alice"), connect("bob")
    a.call(m.JoinRoom, room="lab")
    b.call(m.JoinRoom, room="lab")
    b.call(m.LeaveRoom, room="lab")
    ev = a.wait_for(lambda e: isinstance(e, m.RoomEvent) and e.event == "left")
    assert ev.user == "bob"
    assert a.call(m.RoomMembers, room="lab")["members"] == [{"name": "alice", "display": "alice"}]
    with pytest.raises(ReplyError) as err:
        b.call(m.LeaveRoom, room="lab")
    assert err.value.code == "not_member"


def test_presence_join_and_leave(connect):
    a = connect("alice")
    b = connect("bob")
    assert a.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "bob").online
    b.close()
    ev = a.wait_for(lambda e: isinstance(e, m.Presence) and e.user == "bob" and not e.online)
    assert ev.display == "bob"
    users = {u["name"]: u["online"] for u in a.call(m.ListUsers)["users"]}
    assert users == {"alice": True, "bob": False}


def test_rename_changes_display_not_account(connect):
    a, b = connect("alice"), connect("bob")
    assert a.call(m.Rename, display="Alice W")["display"] == "Alice W"
    ev = b.wait_for(lambda e: isinstance(e, m.Renamed))
    assert (ev.user, ev.old_display, ev.display) == ("alice", "alice", "Alice W")
    with pytest.raises(ReplyError) as err:
        b.call(m.Rename, display="alice w")
    assert err.value.code == "display_taken"
    with pytest.raises(ReplyError) as err:
        b.call(m.Rename, display="alice")  # someone's account name
    assert err.value.code == "display_taken"
    a.call(m.Send, kind="public", target="", text="renamed")
    assert b.wait_for(is_msg("renamed")).sender_display == "Alice W"


def test_history_of_public_room_and_direct_conversations(connect):
    a, b = connect("alice"), connect("bob")
    for i in range(5):
        a.call(m.Send, kind="public", target="", text=f"p{i}")
    a.call(m.Send, kind="direct", target="bob", text="d1")
    b.call(m.Send, kind="direct", target="alice", text="d2")
    a.call(m.JoinRoom, room="lab")
    a.call(m.Send, kind="room", target="lab", text="r1")
    pub = a.call(m.History, kind="public", target="", limit=3)["messages"]
    assert [x["text"] for x in pub] == ["p2", "p3", "p4"]
    older = a.call(m.History, kind="public", target="", limit=10, before=pub[0]["msg_id"])
    assert [x["text"] for x in older["messages"]] == ["p0", "p1"]
    assert [x["text"] for x in b.call(m.History, kind="direct", target="alice")["messages"]] \
        == ["d1", "d2"]
    assert [x["text"] for x in a.call(m.History, kind="direct", target="bob")["messages"]] \
        == ["d1", "d2"]
    with pytest.raises(ReplyError) as err:
        b.call(m.History, kind="room", target="lab")
    assert err.value.code == "not_member"


def test_sessions_are_tracked_for_the_console(srv, connect):
    import io

    from parley_server.console import AdminConsole

    a = connect("alice")
    connect("bob")
    assert a.call(m.OpenSession, user="bob")["online"] is True
    out = io.StringIO()
    console = AdminConsole(srv.server, on_exit=lambda: None, out=out)
    console.execute("ls")
    assert "alice -> bob" in out.getvalue()
    a.call(m.CloseSession)
    out.truncate(0)
    console.execute("ls")
    assert "0 open sessions" in out.getvalue()


def test_second_login_takes_over_the_first(connect):
    a1 = connect("alice")
    a2 = connect()
    r = a2.login("alice")
    assert r["replaced"] is True
    bye = a1.wait_for(lambda e: isinstance(e, m.Bye))
    assert bye.code == "logged_in_elsewhere"
    b = connect("bob")
    b.call(m.Send, kind="direct", target="alice", text="to the new one")
    a2.wait_for(is_msg("to the new one"))


def test_resume_token_logs_in_without_password(connect):
    a = connect()
    a.hello()
    token = a.call(m.Register, username="alice", password="secret-pw")["resume_token"]
    a.close()
    a2 = connect()
    a2.hello()
    r = a2.call(m.Resume, username="alice", token=token)
    assert r["user"] == "alice"
    a3 = connect()
    a3.hello()
    with pytest.raises(ReplyError) as err:
        a3.call(m.Resume, username="alice", token=token)  # each login issues a new token
    assert err.value.code == "bad_token"


def test_wrong_passwords_are_throttled(connect):
    connect("alice").close()
    c = connect()
    c.hello()
    codes = []
    for _ in range(7):
        try:
            c.call(m.Login, username="alice", password="nope-nope")
        except ReplyError as exc:
            codes.append(exc.code)
    assert codes[:5] == ["wrong_password"] * 5
    assert codes[-1] == "throttled"
    with pytest.raises(ReplyError) as err:  # even the right password waits out the lock
        c.call(m.Login, username="alice", password="secret-pw")
    assert err.value.code == "throttled"


def test_presence_comes_before_the_newcomers_first_messages(connect):
    a = connect("alice")
    b = connect("bob")
    b.call(m.Send, kind="public", target="", text="first words")
    b.call(m.Send, kind="direct", target="alice", text="hi alice")
    a.wait_for(is_msg("hi alice"))
    kinds = [(type(e).__name__, getattr(e, "user", getattr(e, "text", None))) for e in a.inbox
             if isinstance(e, m.Presence | m.ChatMessage)]
    assert kinds.index(("Presence", "bob")) < kinds.index(("ChatMessage", "first words"))


def test_a_burst_of_logins_is_announced_once_each(srv, connect):
    watcher = connect("watcher")
    names = [f"user{i}" for i in range(30)]
    for name in names:
        connect(name)
    seen = []
    while len(seen) < len(names):
        ev = watcher.wait_for(lambda e: isinstance(e, m.Presence))
        seen.append(ev.user)
    assert sorted(seen) == sorted(names)  # every one, none twice


def test_logins_in_one_burst_tell_everyone_else_but_not_the_user_itself(connect):
    """Presence notices of a burst go out as one batch; each client gets it minus its own."""
    first = connect("early")
    burst = [connect(f"burst{i}") for i in range(6)]

    def online(c, user):
        return c.wait_for(lambda e: isinstance(e, m.Presence) and e.user == user and e.online)

    for c in burst:
        online(first, c.user)
    for i, c in enumerate(burst):
        for later in burst[i + 1:]:
            online(c, later.user)  # everyone logged in after c is announced to c
    connect("marker")  # everything before its notice has arrived
    for c in [first, *burst]:
        online(c, "marker")
        assert not [e for e in c.inbox if isinstance(e, m.Presence) and e.user == c.user]
