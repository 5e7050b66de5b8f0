"""Moderation through a real server and real clients: every action, its audit trail, and the
console that drives the same actions."""

from __future__ import annotations

import io
import socket
import time

import pytest
from serverutil import running_server
from wireclient import ReplyError, WireClient

from parley_server.console import AdminConsole
from parley_server.policy import Limits, Policy
from protocol import messages as m


@pytest.fixture
def srv(tmp_path):
    policy = Policy(admins=["teacher"], limits=Limits(message_rate=10_000, message_burst=10_000))
    with running_server(tmp_path, policy=policy) as s:
        yield s


@pytest.fixture
def people(srv):
    clients = {}
    for name in ("teacher", "alice", "bob"):
        c = WireClient(srv.host, srv.port)
        clients[name] = c
        assert c.register(name)["admin"] is (name == "teacher")
    yield clients
    for c in clients.values():
        c.close()


def moderate(client: WireClient, action: str, target: str = "", **kw) -> str:
    return client.call(m.Moderate, action=action, target=target, **kw)["done"]


def audit(srv) -> list[dict]:
    return srv.server.moderation.audit.entries()


def is_msg(text):
    return lambda e: isinstance(e, m.ChatMessage) and e.text == text


def test_only_admins_moderate(people):
    with pytest.raises(ReplyError) as err:
        moderate(people["alice"], "kick", "bob")
    assert err.value.code == "not_admin"


def test_kick_disconnects_and_is_audited(srv, people):
    assert moderate(people["teacher"], "kick", "bob", text="take a break") == "kicked bob"
    bye = people["bob"].wait_for(lambda e: isinstance(e, m.Bye))
    assert (bye.code, bye.reason) == ("kicked", "take a break")
    entry = audit(srv)[-1]
    assert (entry["actor"], entry["action"], entry["target"]) == ("teacher", "kick", "bob")


def test_ban_user_with_duration_then_unban(srv, people):
    moderate(people["teacher"], "ban", "bob", minutes=30, text="spam")
    assert people["bob"].wait_for(lambda e: isinstance(e, m.Bye)).code == "banned"
    with WireClient(srv.host, srv.port) as again:
        again.hello()
        with pytest.raises(ReplyError) as err:
            again.call(m.Login, username="bob", password="secret-pw")
        assert err.value.code == "banned" and "until" in str(err.value)
        moderate(people["teacher"], "unban", "bob")
        assert again.call(m.Login, username="bob", password="secret-pw")["user"] == "bob"
    assert [e["action"] for e in audit(srv)[-2:]] == ["ban", "unban"]
    assert audit(srv)[-2]["minutes"] == 30


def test_ban_survives_restart(tmp_path):
    policy = Policy(admins=["teacher"])
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as t:
        t.register("teacher")
        with WireClient(srv.host, srv.port) as b:
            b.register("bob")
        moderate(t, "ban", "bob")
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as b:
        b.hello()
        with pytest.raises(ReplyError) as err:
            b.call(m.Login, username="bob", password="secret-pw")
        assert err.value.code == "banned"


def test_ban_address_closes_its_connections_and_refuses_new_ones(srv, people):
    w = WireClient(srv.host, srv.port, source="127.0.0.2")  # another address, this machine
    w.register("carol")
    moderate(people["teacher"], "ban", "127.0.0.2")
    assert w.wait_for(lambda e: isinstance(e, m.Bye)).code == "banned"
    again = socket.create_connection((srv.host, srv.port), source_address=("127.0.0.2", 0))
    again.settimeout(5)
    assert again.recv(100) == b""  # closed at once
    again.close()
    people["alice"].call(m.Send, kind="public", target="", text="others unaffected")
    people["bob"].wait_for(is_msg("others unaffected"))
    moderate(people["teacher"], "unban", "127.0.0.2")
    ok = socket.create_connection((srv.host, srv.port), source_address=("127.0.0.2", 0))
    ok.close()


def test_mute_blocks_posting_until_unmuted(srv, people):
    moderate(people["teacher"], "mute", "alice", minutes=5)
    notice = people["alice"].wait_for(lambda e: isinstance(e, m.ChatMessage)
                                      and e.sender == "SERVER")
    assert "muted" in notice.text
    for kind, target in (("public", ""), ("direct", "bob")):
        with pytest.raises(ReplyError) as err:
            people["alice"].call(m.Send, kind=kind, target=target, text="hello?")
        assert err.value.code == "muted"
    people["bob"].call(m.Send, kind="public", target="", text="bob can talk")
    moderate(people["teacher"], "unmute", "alice")
    people["alice"].call(m.Send, kind="public", target="", text="back")
    people["bob"].wait_for(is_msg("back"))


def test_announce_reaches_everyone(srv, people):
    moderate(people["teacher"], "announce", text="Exam starts at 10")
    for c in people.values():
        ev = c.wait_for(is_msg("Exam starts at 10"))
        assert ev.sender == "SERVER"


def test_remove_file_tells_everyone(srv, people):
    (srv.files_dir / "answers.pdf").write_bytes(b"%PDF secret")
    people["bob"].wait_for(lambda e: isinstance(e, m.FileAdded) and e.file["name"] == "answers.pdf")
    moderate(people["teacher"], "remove_file", "answers.pdf")
    people["bob"].wait_for(lambda e: isinstance(e, m.FileRemoved) and e.name == "answers.pdf")
    assert not (srv.files_dir / "answers.pdf").exists()
    with pytest.raises(ReplyError) as err:
        moderate(people["teacher"], "remove_file", "../data/parley.sqlite3")
    assert err.value.code == "bad_path"


def test_purge_conversation_history(srv, people):
    people["alice"].call(m.Send, kind="public", target="", text="oops")
    people["alice"].call(m.Send, kind="direct", target="bob", text="private")
    assert "purged 1 messages" in moderate(people["teacher"], "purge", "public")
    assert people["bob"].call(m.History, kind="public", target="")["messages"] == []
    kept = people["bob"].call(m.History, kind="direct", target="alice")["messages"]
    assert [x["text"] for x in kept] == ["private"]
    moderate(people["teacher"], "purge", "direct:alice:bob")
    assert people["bob"].call(m.History, kind="direct", target="alice")["messages"] == []


def test_op_makes_an_admin(srv, people):
    with pytest.raises(ReplyError):
        moderate(people["alice"], "announce", text="x")
    moderate(people["teacher"], "op", "alice")
    assert "announced" in moderate(people["alice"], "announce", text="I can now")


def test_console_drives_the_same_actions_and_audits(srv, people):
    out = io.StringIO()
    console = AdminConsole(srv.server, on_exit=lambda: None, out=out)
    console.execute("mute bob 10 be nice")
    console.execute("bans")
    console.execute("ban alice 5 flooding")
    assert people["alice"].wait_for(lambda e: isinstance(e, m.Bye)).code == "banned"
    console.execute("bans")
    console.execute("unban alice")
    console.execute("announce hello from the console")
    people["bob"].wait_for(is_msg("hello from the console"))
    console.execute("ban")
    console.execute("audit 3")
    text = out.getvalue()
    assert "muted bob for 10 min" in text and "banned alice for 5 min" in text
    assert "user     alice" in text and "error: ban needs a target" in text
    actions = [(e["actor"], e["action"]) for e in audit(srv)]
    assert actions[-4:] == [("console", "mute"), ("console", "ban"), ("console", "unban"),
                            ("console", "announce")]
    assert "console: announce" in text


def test_audit_log_lines_survive_on_disk(srv, people):
    moderate(people["teacher"], "announce", text="first")
    raw = (srv.data_dir / "audit.log").read_text().splitlines()
    assert len(raw) == 1 and '"action": "announce"' in raw[0]
    assert time.time() - audit(srv)[0]["ts"] < 60
