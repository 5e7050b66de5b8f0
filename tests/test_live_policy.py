"""Policy switches an administrator flips while the server runs (an exam: no private messages),
through a real server and real clients: everyone is told, the server acts on it at once, the
console and the terminal client drive it, and a restart goes back to the configured policy."""

from __future__ import annotations

import io

import pytest
import test_cli
from serverutil import free_port, running_server, server_fixture, teacher_policy
from test_cli import registered
from wireclient import ReplyError, WireClient, registered_clients

from parley_server.console import AdminConsole
from protocol import messages as m

clis = test_cli.clis  # the terminal-client fixture


srv = server_fixture(files=False)


@pytest.fixture
def people(srv):
    with registered_clients(srv, "teacher", "alice", "bob") as clients:
        yield clients


def switch(client: WireClient, setting: str, value: str) -> str:
    return client.call(m.Moderate, action="set_policy", target=setting, text=value)["done"]


def policy_event(client: WireClient) -> dict:
    return client.wait_for(lambda e: isinstance(e, m.PolicyChanged)).policy


def code_of(client: WireClient, cls, **fields) -> str:
    with pytest.raises(ReplyError) as err:
        client.call(cls, **fields)
    return err.value.code


def test_private_messages_off_for_an_exam_then_on_again(srv, people):
    teacher, alice, bob = people["teacher"], people["alice"], people["bob"]
    assert switch(teacher, "private_messages", "off") == \
        "private messages: off (until the server restarts)"
    for c in people.values():
        assert policy_event(c)["private_messages"] is False
    assert code_of(alice, m.Send, kind="direct", target="bob", text="answer to 3?") == "disabled"
    with WireClient(srv.host, srv.port) as late:  # someone logging in now is told as well
        assert late.hello()["policy"]["private_messages"] is False
    switch(teacher, "private_messages", "ON")
    assert policy_event(bob)["private_messages"] is True
    alice.call(m.Send, kind="direct", target="bob", text="exam over")
    bob.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "exam over")


def test_read_only_public_room_and_uploads(srv, people):
    teacher, alice = people["teacher"], people["alice"]
    switch(teacher, "public_read_only", "on")
    assert policy_event(alice)["public_read_only"] is True
    assert code_of(alice, m.Send, kind="public", target="", text="can I?") == "read_only"
    teacher.call(m.Send, kind="public", target="", text="only me now")
    switch(teacher, "uploads", "off")
    assert policy_event(alice)["uploads"] is False
    assert srv.server.config.policy.uploads is False
    actions = [(e["action"], e["target"], e.get("text")) for e in
               srv.server.moderation.audit.entries()]
    assert actions == [("set_policy", "public_read_only", "on"), ("set_policy", "uploads", "off")]


def test_who_may_switch_what(people):
    alice, teacher = people["alice"], people["teacher"]
    assert code_of(alice, m.Moderate, action="set_policy", target="uploads",
                   text="off") == "not_admin"
    assert code_of(teacher, m.Moderate, action="set_policy", target="history_days",
                   text="on") == "bad_message"  # only the switches change live
    assert code_of(teacher, m.Moderate, action="set_policy", target="uploads",
                   text="maybe") == "bad_message"


def test_console_shows_and_switches(srv, people):
    out = io.StringIO()
    console = AdminConsole(srv.server, on_exit=lambda: None, out=out)
    console.execute("policy readonly on")
    assert policy_event(people["bob"])["public_read_only"] is True
    console.execute("policy")
    console.execute("policy bogus on")
    console.execute("policy private")
    lines = out.getvalue().splitlines()
    assert lines[0] == "read-only public room: on (until the server restarts)"
    assert [ln.split()[-1] for ln in lines[1:4]] == ["on", "on", "on"]
    assert lines[3].startswith("read-only public room")
    assert lines[4].startswith("error: the settings that change")
    assert lines[5] == "error: policy private|uploads|readonly on|off"


def test_terminal_client_switches_and_everyone_is_told(srv, clis):
    t = registered(clis, srv.port, "teacher", "pw-teach-1")
    s = registered(clis, srv.port, "stu", "pw-stu-1")
    s.send("policy private off")
    assert "only administrators" in s.expect(r"^error:")
    t.send("policy private off")
    t.expect(r"^private messages: off \(until the server restarts\)$")
    assert s.expect(r"policy changed") == ("* the server's policy changed: private messages off, "
                                           "uploads on, read-only public room off")
    s.send("dm teacher psst")
    assert "turned off" in s.expect(r"^error:")


def test_a_restart_goes_back_to_the_configured_policy(tmp_path):
    port = free_port()
    with running_server(tmp_path, files=False, port=port, policy=teacher_policy()) as srv, \
            WireClient(srv.host, srv.port) as teacher:
        teacher.register("teacher")
        switch(teacher, "private_messages", "off")
    with running_server(tmp_path, files=False, port=port, policy=teacher_policy()) as srv, \
            WireClient(srv.host, srv.port) as c:
        assert c.hello()["policy"]["private_messages"] is True
