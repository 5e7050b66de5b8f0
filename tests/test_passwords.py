"""Changing one's password, and an administrator resetting a forgotten one: through a real
server (and, for the durability test, a real server process killed with SIGKILL)."""

from __future__ import annotations

import io
import re
import signal

import pytest
import test_cli
from serverutil import free_port, running_server, server_fixture, server_process
from test_cli import registered
from wireclient import ReplyError, WireClient

from parley_server.accounts import TEMP_ALPHABET, temporary_password
from parley_server.console import AdminConsole
from parley_server.policy import Policy
from protocol import encode_message
from protocol import messages as m

clis = test_cli.clis  # the terminal-client fixture


srv = server_fixture(files=False)


@pytest.fixture
def connect(srv):
    clients = []

    def make(user: str | None = None, password: str = "secret-pw") -> WireClient:
        c = WireClient(srv.host, srv.port)
        clients.append(c)
        if user:
            c.register(user, password)
        return c

    yield make
    for c in clients:
        c.close()


def login_code(srv, user: str, password: str) -> str:
    """"ok" or the error code of a fresh login."""
    with WireClient(srv.host, srv.port) as c:
        try:
            c.login(user, password)
        except ReplyError as exc:
            return exc.code
        return "ok"


def test_change_password_replaces_the_old_one(srv, connect):
    a = connect("alice")
    result = a.call(m.ChangePassword, old_password="secret-pw", new_password="new-secret")
    assert set(result) == {"resume_token"}
    a.call(m.Send, kind="public", target="", text="still logged in")  # the session carries on
    assert login_code(srv, "alice", "secret-pw") == "wrong_password"
    assert login_code(srv, "alice", "new-secret") == "ok"


def test_change_password_voids_the_old_resume_token_and_gives_a_new_one(srv, connect):
    a = connect()
    a.hello()
    old_token = a.call(m.Register, username="alice", password="secret-pw")["resume_token"]
    new_token = a.call(m.ChangePassword, old_password="secret-pw",
                       new_password="new-secret")["resume_token"]
    assert new_token != old_token
    with WireClient(srv.host, srv.port) as b:
        b.hello()
        with pytest.raises(ReplyError) as err:
            b.call(m.Resume, username="alice", token=old_token)
        assert err.value.code == "bad_token"
    with WireClient(srv.host, srv.port) as c:
        c.hello()
        assert c.call(m.Resume, username="alice", token=new_token)["user"] == "alice"


@pytest.mark.parametrize("old,new,code", [
    ("wrong-one", "new-secret", "wrong_password"),
    ("secret-pw", "short", "invalid_password"),
    ("secret-pw", "x" * 1025, "invalid_password"),
    ("secret-pw", "secret-pw", "invalid_password"),
])
def test_change_password_refusals_leave_the_password_alone(srv, connect, old, new, code):
    a = connect("alice")
    with pytest.raises(ReplyError) as err:
        a.call(m.ChangePassword, old_password=old, new_password=new)
    assert err.value.code == code and str(err.value).split(": ", 1)[1]
    a.call(m.Send, kind="public", target="", text="not disconnected")
    assert login_code(srv, "alice", "secret-pw") == "ok"


def test_guessing_the_current_password_is_throttled_like_a_login(srv, connect):
    a = connect("alice")
    codes = []
    for _ in range(7):
        try:
            a.call(m.ChangePassword, old_password="guess-guess", new_password="taken-over")
        except ReplyError as exc:
            codes.append(exc.code)
    assert codes[:5] == ["wrong_password"] * 5 and codes[-1] == "throttled"
    with pytest.raises(ReplyError) as err:  # the right one waits out the lock too
        a.call(m.ChangePassword, old_password="secret-pw", new_password="new-secret")
    assert err.value.code == "throttled"


def test_change_password_needs_a_login(connect):
    a = connect()
    a.hello()
    # our own client refuses this locally, so send the raw frame as a hostile client would
    a.sock.sendall(encode_message(m.ChangePassword(id=50, old_password="secret-pw",
                                                   new_password="new-secret")))
    assert a.wait_for(lambda e: isinstance(e, m.Error) and e.id == 50).code == \
        "not_authenticated"


def test_temporary_passwords_are_long_random_and_unambiguous():
    made = {temporary_password() for _ in range(200)}
    assert len(made) == 200
    for pw in made:
        assert re.fullmatch(rf"[{TEMP_ALPHABET}]{{4}}(-[{TEMP_ALPHABET}]{{4}}){{3}}", pw)
    assert not set("0o1lI") & set(TEMP_ALPHABET)


def test_admin_resets_a_forgotten_password(srv, connect):
    teacher = connect("teacher")
    bob = connect("bob")
    result = teacher.call(m.Moderate, action="reset_password", target="BOB")
    assert result["done"] == "reset the password of bob"
    temp = result["temporary_password"]
    bye = bob.wait_for(lambda e: isinstance(e, m.Bye))
    assert bye.code == "password_reset" and "teacher" in bye.reason
    assert login_code(srv, "bob", "secret-pw") == "wrong_password"
    with WireClient(srv.host, srv.port) as b:  # log in with it, then choose one's own
        assert b.login("bob", temp)["must_change_password"] is True
        b.call(m.ChangePassword, old_password=temp, new_password="bobs-own-pw")
    assert login_code(srv, "bob", "bobs-own-pw") == "ok"
    with WireClient(srv.host, srv.port) as b:
        assert b.login("bob", "bobs-own-pw")["must_change_password"] is False
    entry = srv.server.moderation.audit.entries()[-1]
    assert (entry["actor"], entry["action"], entry["target"]) == ("teacher", "reset_password",
                                                                  "BOB")
    assert temp not in (srv.data_dir / "audit.log").read_text()


def test_reset_lifts_a_lock_out_and_voids_the_resume_token(srv, connect):
    a = connect()
    a.hello()
    token = a.call(m.Register, username="bob", password="secret-pw")["resume_token"]
    a.close()
    for _ in range(6):
        login_code(srv, "bob", "forgotten")
    assert login_code(srv, "bob", "forgotten") == "throttled"
    temp = connect("teacher").call(m.Moderate, action="reset_password",
                                   target="bob")["temporary_password"]
    assert login_code(srv, "bob", temp) == "ok"
    with WireClient(srv.host, srv.port) as c:
        c.hello()
        with pytest.raises(ReplyError) as err:
            c.call(m.Resume, username="bob", token=token)
        assert err.value.code == "bad_token"


def test_only_the_console_resets_an_administrators_password(srv, connect):
    teacher = connect("teacher")
    alice = connect("alice")
    with pytest.raises(ReplyError) as err:
        alice.call(m.Moderate, action="reset_password", target="bob")
    assert err.value.code == "not_admin"
    teacher.call(m.Moderate, action="op", target="alice")
    for target in ("teacher", "alice"):  # another admin, or oneself without the old password
        with pytest.raises(ReplyError) as err:
            alice.call(m.Moderate, action="reset_password", target=target)
        assert err.value.code == "not_allowed"
    with pytest.raises(ReplyError) as err:
        teacher.call(m.Moderate, action="reset_password", target="nobody")
    assert err.value.code == "no_such_user"

    out = io.StringIO()
    AdminConsole(srv.server, on_exit=lambda: None, out=out).execute("passwd teacher")
    lines = out.getvalue().splitlines()
    assert lines[0] == "reset the password of teacher"
    temp = re.search(r"temporary password: (\S+)", lines[1]).group(1)
    assert login_code(srv, "teacher", temp) == "ok"
    assert temp not in (srv.data_dir / "audit.log").read_text()


def test_terminal_client_changes_and_resets_passwords(srv, clis):
    t = registered(clis, srv.port, "teacher", "pw-teach-1")
    s = registered(clis, srv.port, "stu", "pw-stu-1")
    s.send("passwd wrong-pw pw-stu-2")
    assert "current password is wrong" in s.expect(r"^error:")
    s.send("passwd pw-stu-1")
    assert "usage: passwd <old> <new>" in s.expect(r"^error:")
    s.send("passwd pw-stu-1 pw-stu-2")
    s.expect(r"^password changed$")
    t.send("resetpw stu")
    t.expect(r"reset the password of stu")
    temp = re.search(r"temporary password for stu: (\S+)",
                     t.expect(r"temporary password for stu")).group(1)
    s.expect(r"disconnected: your password was reset by teacher \(password_reset\)$")
    s.send(f"c 127.0.0.1 {srv.port}")
    s.send("login stu pw-stu-2")  # what the student had chosen is gone
    assert "wrong password" in s.expect(r"^error:")
    s.send(f"login stu {temp}")
    s.expect(r"logged in as stu")
    s.expect(r"an administrator gave you this password: choose your own with passwd")


def test_an_acknowledged_password_change_survives_kill_9(tmp_path):
    port = free_port()
    with server_process(tmp_path, port) as proc:
        with WireClient("127.0.0.1", port) as a:
            a.register("durable")
            a.call(m.ChangePassword, old_password="secret-pw", new_password="changed-pw")
            proc.send_signal(signal.SIGKILL)  # no chance to flush anything
        proc.wait(10)
    with server_process(tmp_path, port), WireClient("127.0.0.1", port) as a:
        a.login("durable", "changed-pw")


def test_the_reset_flag_survives_a_restart_until_the_owner_changes_it(tmp_path):
    port = free_port()
    with running_server(tmp_path, files=False, port=port,
                        policy=Policy(admins=["teacher"])) as srv, \
            WireClient(srv.host, srv.port) as t:
        assert t.register("teacher")["must_change_password"] is False
        with WireClient(srv.host, srv.port) as b:
            b.register("bob")
        temp = t.call(m.Moderate, action="reset_password", target="bob")["temporary_password"]
    with running_server(tmp_path, files=False, port=port) as srv, \
            WireClient(srv.host, srv.port) as b:
        assert b.login("bob", temp)["must_change_password"] is True
        b.call(m.ChangePassword, old_password=temp, new_password="bobs-own-pw")
    with running_server(tmp_path, files=False, port=port) as srv, \
            WireClient(srv.host, srv.port) as b:
        assert b.login("bob", "bobs-own-pw")["must_change_password"] is False


def test_op_and_deop_reach_the_connected_user_at_once(srv, connect):
    teacher = connect("teacher")
    alice = connect("alice")
    teacher.call(m.Moderate, action="op", target="alice")
    assert alice.wait_for(lambda e: isinstance(e, m.AccountStatus)).admin is True
    notice = alice.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.sender == "SERVER")
    assert notice.text == "You were made an administrator by teacher."
    alice.call(m.Moderate, action="announce", text="now I can")
    alice.inbox.clear()
    teacher.call(m.Moderate, action="deop", target="alice")
    assert alice.wait_for(lambda e: isinstance(e, m.AccountStatus)).admin is False
    with pytest.raises(ReplyError) as err:
        alice.call(m.Moderate, action="announce", text="not any more")
    assert err.value.code == "not_admin"
