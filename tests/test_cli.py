"""The terminal client as a real subprocess (stdin a pipe) against a real server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from linereader import LineReader
from serverutil import running_server

from parley_client.cli_text import format_event, format_message
from protocol import APP_VERSION
from protocol import messages as m

REPO = Path(__file__).resolve().parent.parent
WAIT = 10.0


class CliProcess(LineReader):
    """python client.py --cli ... with its stdout read as lines."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        super().__init__(subprocess.Popen(
            [sys.executable, str(REPO / "client.py"), "--cli", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}))

    def close_stdin(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(WAIT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def clis():
    made: list[CliProcess] = []

    def make(*args: str, **kwargs) -> CliProcess:
        c = CliProcess(*args, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.kill()


def registered(clis, port: int, user: str, password: str) -> CliProcess:
    """A terminal client connected to 127.0.0.1:port, registered and logged in as user."""
    c = clis("127.0.0.1", str(port))
    c.send(f"register {user} {password}")
    c.expect(rf"logged in as {user}$")
    return c


def test_version_and_help_flags():
    out = subprocess.run([sys.executable, str(REPO / "client.py"), "--version"],
                         capture_output=True, text=True, timeout=WAIT, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == f"Parley {APP_VERSION}"
    out = subprocess.run([sys.executable, str(REPO / "client.py"), "--help"],
                         capture_output=True, text=True, timeout=WAIT, cwd=REPO)
    assert out.returncode == 0 and "--cli" in out.stdout and "--theme" in out.stdout


def test_two_clis_chat_publicly_directly_and_in_a_room(tmp_path, clis):
    with running_server(tmp_path, files=False) as srv:
        a = clis("127.0.0.1", str(srv.port))
        a.expect(r"^connected to 127\.0\.0\.1:\d+")
        a.send("register alice pw-alice-1")
        a.expect(r"logged in as alice")
        b = clis()
        b.send(f"c 127.0.0.1 {srv.port}")
        b.expect(r"^connected to")
        b.send("register bob pw-bob-1")
        b.expect(r"logged in as bob")
        a.expect(r"^\* bob joined$")

        a.send("bm hello everyone")
        assert b.expect(r"\[public\]") == "[public] alice: hello everyone"
        b.send("dm alice just for you")
        assert a.expect(r"\[dm\]") == "[dm] bob: just for you"
        assert b.expect(r"\[dm to alice\]") == "[dm to alice] bob: just for you"

        a.send("or lab")
        a.expect(r"in room lab \(new room\)")
        b.send("or lab")
        b.expect(r"in room lab")
        a.expect(r"^\* bob joined room lab$")
        b.send("s anyone here?")
        assert a.expect(r"\[room:lab\]") == "[room:lab] bob: anyone here?"
        a.send("lru lab")
        a.expect(r"room lab .*2 member")

        a.send("o bob")
        a.expect(r"session with bob \(online\)")
        a.send("s private words")
        assert b.expect(r"\[dm\]") == "[dm] alice: private words"
        a.send("history")
        a.expect(r"history of session with bob: 2 message")
        a.expect(r"alice: private words")

        b.send("rename Bobby")
        b.expect(r"you are now shown as Bobby")
        a.expect(r"^\* bob is now known as Bobby$")
        b.send("cs")
        b.expect(r"left room lab")
        a.send("lu")
        a.expect(r"2 registered user")
        a.send("l")
        a.expect(r"^logged in as alice")
        a.expect(r"talking in: session with bob")

        b.send("x")
        assert b.proc.wait(WAIT) == 0
        a.expect(r"^\* Bobby \(bob\) left$")
        assert a.close_stdin() == 0  # EOF exits cleanly


def test_errors_are_prefixed_and_worded(tmp_path, clis):
    with running_server(tmp_path, files=False) as srv:
        c = clis()
        c.send("bm hi")
        assert c.expect(r"^error:").startswith("error: not connected")
        c.send("frobnicate")
        assert "unknown command" in c.expect(r"^error:")
        c.send(f"c 127.0.0.1 {srv.port}")
        c.expect(r"^connected to")
        c.send("lu")
        assert "not logged in" in c.expect(r"^error:")
        c.send("login ghost whatever1")
        assert "register" in c.expect(r"^error:")
        c.send("register carol pw-carol-1")
        c.expect(r"logged in as carol")
        c.send("dm nobody hello")
        assert "nobody" in c.expect(r"^error:")
        c.send("dm")
        assert c.expect(r"^error:") == "error: usage: dm <user> <text>"
        c.send("lru nowhere")
        assert "nowhere" in c.expect(r"^error:")
        c.send("cs")
        assert "no session or room" in c.expect(r"^error:")
        c.send("d")
        c.expect(r"^disconnected$")
        c.send("s hello")
        assert c.expect(r"^error:").startswith("error: not connected")
        c.send("c 127.0.0.1 1")
        assert "cannot reach" in c.expect(r"^error:")
        assert c.close_stdin() == 0


def test_offline_dm_is_delivered_late(tmp_path, clis):
    with running_server(tmp_path, files=False) as srv:
        a = clis("127.0.0.1", str(srv.port))
        a.send("register dave pw-dave-1")
        a.expect(r"logged in as dave")
        a.send("x")
        assert a.proc.wait(WAIT) == 0
        b = clis("127.0.0.1", str(srv.port))
        b.send("register erin pw-erin-1")
        b.expect(r"logged in as erin")
        b.send("dm dave see you later")
        b.expect(r"dave is offline")
        a2 = clis("127.0.0.1", str(srv.port))
        a2.send("login dave pw-dave-1")
        a2.expect(r"logged in as dave")
        assert a2.expect(r"delivered late") == "[dm, delivered late] erin: see you later"


def test_put_files_and_get(tmp_path, clis):
    with running_server(tmp_path) as srv:
        data = os.urandom(300_000)
        src = tmp_path / "report.bin"
        src.write_bytes(data)
        a = clis("127.0.0.1", str(srv.port))
        a.send("register frank pw-frank-1")
        a.expect(r"logged in as frank")
        b = clis("127.0.0.1", str(srv.port))
        b.send("register gina pw-gina-1")
        b.expect(r"logged in as gina")
        a.send(f"put {src}")
        a.expect(r"^uploaded report\.bin")
        b.expect(r"^\* frank shared report\.bin$")
        b.send("files")
        b.expect(r"report\.bin .*shared by frank")
        dest = tmp_path / "got"
        b.send(f"get report.bin {dest}")
        done = b.expect(r"^saved ", timeout=30)
        assert "verified" in done
        assert (dest / "report.bin").read_bytes() == data
        assert hashlib.sha256((dest / "report.bin").read_bytes()).hexdigest() == \
            hashlib.sha256(data).hexdigest()
        b.send("get missing.bin")
        assert b.expect(r"^error:").startswith("error: ")
        b.send(f"put {tmp_path / 'nope.txt'}")
        assert "not a readable file" in b.expect(r"^error:")


def test_formatting_of_events():
    msg = m.ChatMessage(1, 0.0, "alice", "Al", "room", "lab", "hi", False)
    assert format_message(msg, "bob") == "[room:lab] Al (alice): hi"
    late = m.ChatMessage(2, 0.0, "bob", "bob", "direct", "alice", "yo", True)
    assert format_event(late, "alice") == "[dm, delivered late] bob: yo"
    assert format_event(m.FileAdded({"name": "r.pdf", "size": 10}, "alice"), "x") == \
        "* alice shared r.pdf"
    assert format_event(m.Error(None, "x", "went wrong"), "x") == "error: went wrong"
    assert format_message({"kind": "public", "target": "", "sender": "SERVER",
                           "sender_display": "SERVER", "text": "maintenance"}, None) == \
        "[public] SERVER: maintenance"


def test_admin_commands_from_the_terminal(tmp_path, clis):
    from parley_server.policy import Limits, Policy

    policy = Policy(admins=["teach"], limits=Limits(message_rate=1000, message_burst=1000))
    with running_server(tmp_path, files=False, policy=policy) as srv:
        t = clis("127.0.0.1", str(srv.port))
        t.send("register teach pw-teach-1")
        t.expect(r"logged in as teach")
        s = clis("127.0.0.1", str(srv.port))
        s.send("register stu pw-stu-1")
        s.expect(r"logged in as stu")
        s.send("kick teach")
        assert s.expect(r"^error:").startswith("error: ")
        t.send("mute stu 5")
        t.expect(r"muted stu for 5 min")
        s.send("bm hello?")
        assert "muted" in s.expect(r"^error:")
        t.send("unmute stu")
        t.expect(r"unmuted stu")
        t.send("announce quiz in 5 minutes")
        s.expect(r"SERVER: quiz in 5 minutes")
        t.send("kick stu go home")
        t.expect(r"kicked stu")
        s.expect(r"go home")
    assert [e["action"] for e in srv.server.moderation.audit.entries()] == \
        ["mute", "unmute", "announce", "kick"]


def test_control_characters_and_newlines_cannot_forge_lines_or_drive_the_terminal(tmp_path,
                                                                                  clis):
    from wireclient import WireClient
    with running_server(tmp_path, files=False) as srv:
        with WireClient(srv.host, srv.port) as mallory:
            mallory.register("mallory")
            b = clis()
            b.send(f"c 127.0.0.1 {srv.port}")
            b.expect(r"^connected to")
            b.send("register bob pw-bob-1")
            b.expect(r"logged in as bob")
            hostile = ("\x1b[2J\x1b]0;owned\x07hi\r\n[public] teacher: Test is cancelled"
                       "\u2028\u202eevil\x9b31m")
            mallory.call(m.Send, kind="public", target="", text=hostile)
            mallory.call(m.Send, kind="public", target="", text="marker")
            b.expect(r"\[public\] mallory: marker$")
        out = "\n".join(b.history)
        assert not any(ch in out for ch in "\x1b\x07\r\x9b\u2028\u202e")
        assert "\\x1b[2J" in out and "\\x1b]0;owned\\x07hi" in out
        assert not any(line.startswith("[public] teacher") for line in b.history)
        assert any(line.startswith("      [public] teacher: Test is cancelled")
                   for line in b.history)
