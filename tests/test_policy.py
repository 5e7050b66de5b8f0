"""Classroom policies and abuse limits, through a real server and real clients."""

from __future__ import annotations

import base64
import hashlib
import socket
import time

import pytest
from serverutil import running_server
from wireclient import ReplyError, WireClient

from parley_server.limits import RateLimiter
from parley_server.policy import Limits, Policy, PolicyError, load_policy
from protocol import messages as m

FAST = Limits(message_rate=10_000, message_burst=10_000)


def upload(c: WireClient, name: str, data: bytes) -> dict:
    r = c.call(m.UploadBegin, name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    c.call(m.UploadChunk, upload_id=r["upload_id"], offset=0,
           data=base64.b64encode(data).decode())
    return c.call(m.UploadEnd, upload_id=r["upload_id"])["file"]


def test_clients_are_told_the_policy(tmp_path):
    policy = Policy(private_messages=False, allowed_extensions=[".pdf"], limits=FAST)
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as c:
        told = c.hello()["policy"]
        assert told["private_messages"] is False and told["allowed_extensions"] == [".pdf"]
        assert told["limits"]["message_burst"] == 10_000 and "admins" not in told


def test_private_messages_can_be_turned_off(tmp_path):
    with running_server(tmp_path, policy=Policy(private_messages=False, limits=FAST)) as srv, \
            WireClient(srv.host, srv.port) as a, WireClient(srv.host, srv.port) as b:
        a.register("alice")
        b.register("bob")
        for call in (lambda: a.call(m.Send, kind="direct", target="bob", text="psst"),
                     lambda: a.call(m.OpenSession, user="bob")):
            with pytest.raises(ReplyError) as err:
                call()
            assert err.value.code == "disabled"
        a.call(m.Send, kind="public", target="", text="public still works")


def test_uploads_off_and_allowed_extensions(tmp_path):
    policy = Policy(uploads=False, admins=["teacher"], limits=FAST)
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as a, \
            WireClient(srv.host, srv.port) as t:
        a.register("alice")
        t.register("teacher")
        with pytest.raises(ReplyError) as err:
            upload(a, "notes.txt", b"hello")
        assert err.value.code == "disabled"
        assert upload(t, "handout.txt", b"from the teacher")["name"] == "handout.txt"
    policy = Policy(allowed_extensions=[".pdf", ".txt"], limits=FAST)
    with running_server(tmp_path / "2", policy=policy) as srv, \
            WireClient(srv.host, srv.port) as a:
        a.register("alice")
        assert upload(a, "essay.PDF", b"%PDF")["name"] == "essay.PDF"
        with pytest.raises(ReplyError) as err:
            upload(a, "game.exe", b"MZ")
        assert err.value.code == "extension_not_allowed" and ".pdf" in str(err.value)


def test_read_only_public_room(tmp_path):
    policy = Policy(public_read_only=True, admins=["teacher"], limits=FAST)
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as a, \
            WireClient(srv.host, srv.port) as t:
        a.register("alice")
        t.register("teacher")
        with pytest.raises(ReplyError) as err:
            a.call(m.Send, kind="public", target="", text="can I?")
        assert err.value.code == "read_only"
        t.call(m.Send, kind="public", target="", text="Listen up")
        assert a.wait_for(lambda e: isinstance(e, m.ChatMessage)).text == "Listen up"
        a.call(m.Send, kind="direct", target="teacher", text="question in private is fine")


def test_retention_sweep_runs_by_itself(tmp_path):
    from parley_server.store import Store

    data = tmp_path / "data"
    store = Store(data / "parley.sqlite3")
    store.add_message(time.time() - 40 * 86400, "x", "x", "public", "", "very old")
    store.close()
    with running_server(tmp_path, policy=Policy(history_days=30, limits=FAST),
                        poll_interval=0.05) as srv, WireClient(srv.host, srv.port) as a:
        a.register("alice")
        deadline = time.monotonic() + 5
        while a.call(m.History, kind="public", target="")["messages"]:
            assert time.monotonic() < deadline, "the old message was never deleted"
            time.sleep(0.05)  # polling interval inside a bounded wait


def test_message_rate_limit_errors_without_disconnecting(tmp_path):
    policy = Policy(limits=Limits(message_rate=20.0, message_burst=5))
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as a:
        a.register("alice")
        codes = []
        for i in range(8):
            try:
                a.call(m.Send, kind="public", target="", text=f"m{i}")
                codes.append("ok")
            except ReplyError as exc:
                codes.append(exc.code)
        assert codes[:5] == ["ok"] * 5 and "rate_limited" in codes[5:]
        deadline = time.monotonic() + 5
        while True:  # the steady rate refills: sending works again on the same connection
            try:
                a.call(m.Send, kind="public", target="", text="later")
                break
            except ReplyError as exc:
                assert exc.code == "rate_limited" and time.monotonic() < deadline
                time.sleep(0.02)  # polling interval inside a bounded wait
        assert not a.closed


def test_rate_limiter_burst_then_steady():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a") == pytest.approx(0.5)
    assert limiter.allow("b") == 0.0  # per key
    now[0] = 0.5
    assert limiter.allow("a") == 0.0 and limiter.allow("a") > 0


def test_connections_per_address_limit(tmp_path):
    policy = Policy(limits=Limits(connections_per_address=2, exempt_loopback=False))
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as a, \
            WireClient(srv.host, srv.port) as b:
        a.register("alice")
        b.register("bob")
        third = socket.create_connection((srv.host, srv.port), timeout=5)
        assert third.recv(100) == b""  # refused: closed at once
        third.close()
        from_elsewhere = WireClient(srv.host, srv.port, source="127.0.0.3")
        from_elsewhere.register("carol")  # another address has its own allowance
        from_elsewhere.close()
        a.call(m.Send, kind="public", target="", text="still served")


def test_rooms_per_user_and_listing_caps(tmp_path):
    policy = Policy(limits=Limits(message_rate=10_000, message_burst=10_000, rooms_per_user=2,
                                  list_max=3))
    with running_server(tmp_path, policy=policy) as srv, WireClient(srv.host, srv.port) as a:
        a.register("alice")
        a.call(m.JoinRoom, room="r1")
        a.call(m.JoinRoom, room="r2")
        with pytest.raises(ReplyError) as err:
            a.call(m.JoinRoom, room="r3")
        assert err.value.code == "too_many_rooms"
        a.call(m.CloseRoom, room="r1")
        a.call(m.JoinRoom, room="r3")
        for i in range(4):
            with WireClient(srv.host, srv.port) as other:
                other.register(f"user{i}")
        listed = a.call(m.ListUsers)
        assert len(listed["users"]) == 3 and listed["truncated"] and listed["total"] == 5


def test_policy_file_and_flags(tmp_path):
    (tmp_path / "policy.toml").write_text(
        'private_messages = false\nallowed_extensions = ["pdf", ".TXT"]\nadmins = ["t"]\n'
        "[limits]\nmessage_rate = 2\nrooms_per_user = 3\n")
    policy = load_policy(tmp_path, {"uploads": False, "limits": {"message_burst": 4}})
    assert policy.private_messages is False and policy.uploads is False
    assert policy.allowed_extensions == [".pdf", ".txt"]
    assert (policy.limits.message_rate, policy.limits.message_burst,
            policy.limits.rooms_per_user) == (2.0, 4, 3)
    (tmp_path / "policy.toml").write_text("uploads = 'maybe'\n")
    with pytest.raises(PolicyError):
        load_policy(tmp_path)
    (tmp_path / "policy.toml").write_text("no_such_setting = 1\n")
    with pytest.raises(PolicyError):
        load_policy(tmp_path)


def test_server_flags_override_the_file(tmp_path):
    import server

    args = server.parse_args(["--no-private", "--allowed-ext", ".pdf,.png", "--admin", "t",
                              "--message-rate", "3", "--data-dir", str(tmp_path)])
    policy = load_policy(tmp_path, server.policy_overrides(args))
    assert policy.private_messages is False and policy.admins == ["t"]
    assert policy.allowed_extensions == [".pdf", ".png"] and policy.limits.message_rate == 3.0
    assert policy.uploads is True  # not given: the default stays
