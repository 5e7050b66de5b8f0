"""Who is who (issue 11, hardening): reserved and look-alike names, the two kinds of ban,
lock-outs that cannot be used as a weapon, registration and rename limits, an audit log
that cannot be written, and policy values checked at start. Real servers, real clients."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import pytest
from serverutil import FAST_SCRYPT_N, REPO, running_server
from wireclient import ReplyError, WireClient

from parley_server.console import AdminConsole
from parley_server.policy import Limits, Policy
from protocol import messages as m


def fast(**limits) -> Policy:
    return Policy(admins=["teacher"],
                  limits=Limits(message_rate=10_000, message_burst=10_000, **limits))


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, tls=False, policy=fast()) as s:
        yield s


def client(srv, source: str | None = None) -> WireClient:
    c = WireClient(srv.host, srv.port, tls=False, source=source)
    c.hello()
    return c


def refused(fn) -> ReplyError:
    with pytest.raises(ReplyError) as err:
        fn()
    return err.value


def rename(c: WireClient, display: str) -> dict:
    return c.call(m.Rename, display=display)


def moderate(c: WireClient, action: str, target: str = "", **kw) -> dict:
    return c.call(m.Moderate, action=action, target=target, **kw)


# ---------------------------------------------------------------- 6: SERVER is reserved


def test_server_is_reserved_as_username_and_display_name(srv):
    for name in ("SERVER", "server", "Server"):
        with client(srv) as c:
            err = refused(lambda c=c, n=name: c.register(n))
            assert err.code == "name_reserved" and "announcements" in err.message
    with client(srv) as alice:
        alice.register("alice")
        for display in ("SERVER", "server", "ｓｅｒｖｅｒ", "ЅERVER", " SERVER "):
            err = refused(lambda d=display: rename(alice, d))
            assert err.code == "invalid_display" and "announcements" in err.message


def test_an_older_account_named_server_cannot_log_in(srv):
    # Made before the name was reserved (straight into the store, as an old database has it).
    accounts = srv.server.accounts
    salt, params = os.urandom(16), accounts._params()
    srv.server.store.create_user("server", accounts._hash("secret-pw", salt, params), salt,
                                 params)
    with client(srv) as c:
        err = refused(lambda: c.login("server"))
        assert err.code == "name_reserved"
    assert srv.server.get_client("server") is None


def test_an_older_display_name_server_is_given_back_at_login(srv):
    with client(srv) as a:
        a.register("alice")
    srv.server.store.set_display("alice", "Server")  # as an older database may have it
    with client(srv) as a, client(srv) as b:
        b.register("bob")
        assert a.login("alice")["display"] == "alice"
        a.call(m.Send, kind="public", target="", text="hello")
        said = b.wait_for(lambda e: isinstance(e, m.ChatMessage) and e.text == "hello")
        assert said.sender_display == "alice"
    assert srv.server.store.get_user("alice").display == "alice"


# ---------------------------------------------------------------- 7: display names


def test_display_names_fold_case_the_unicode_way(srv):
    with client(srv) as a, client(srv) as b:
        a.register("alice")
        b.register("bob")
        assert rename(a, "Émile")["display"] == "Émile"
        for same in ("émile", "ÉMILE", "E\u0301mile".lower()):
            err = refused(lambda s=same: rename(b, s))
            assert err.code == "display_taken"
        assert rename(a, "émile")["display"] == "émile"  # one's own name in another case


def test_look_alikes_of_another_name_are_refused(srv):
    with client(srv) as t, client(srv) as a:
        t.register("teacher")
        a.register("alice")
        # Cyrillic е, Cyrillic Т and А, Greek Α, fullwidth letters: all read "teacher".
        for fake in ("t\u0435acher", "\u0422\u0415\u0410CHER", "TE\u0391CHER", "ｔｅａｃｈｅｒ"):
            err = refused(lambda f=fake: rename(a, f))
            assert err.code == "display_taken", fake
        rename(t, "Mr Smith")
        err = refused(lambda: rename(a, "Mr Sm\u0456th"))  # Cyrillic і
        assert err.code == "display_taken"
        assert rename(a, "Alice Émile")["display"] == "Alice Émile"


def test_invisible_and_separator_characters_are_refused_in_words(srv):
    with client(srv) as a:
        a.register("alice")
        for bad, named in (("\u3164", "HANGUL FILLER"), ("bob\u2800", "BRAILLE PATTERN BLANK"),
                           ("a\u2028b", "LINE SEPARATOR"), ("a\u2029b", "PARAGRAPH SEPARATOR"),
                           ("a\u00a0b", "NO-BREAK SPACE"), ("a\u200bb", "ZERO WIDTH SPACE"),
                           ("a\u3000b", "IDEOGRAPHIC SPACE"), ("\u115f\u1160", "HANGUL"),
                           ("x\ufe0f", "VARIATION SELECTOR"), ("a\tb", "U+0009")):
            err = refused(lambda b=bad: rename(a, b))
            assert err.code == "invalid_display", repr(bad)
            assert "U+" in err.message and named in err.message, err.message
        # Plain spaces inside are fine; runs of them are made one.
        assert rename(a, "  Ms   Smith ")["display"] == "Ms Smith"


def test_a_display_name_cannot_squat_a_future_username(srv):
    with client(srv) as a, client(srv) as c:
        a.register("alice")
        rename(a, "carol")
        err = refused(lambda: c.register("Carol"))
        assert err.code == "name_taken" and "display name" in err.message
        rename(a, "Alice")  # once given back, the name is free
        c.register("carol")


# ---------------------------------------------------------------- 8: two kinds of ban


def test_ban_says_user_or_address(srv):
    with client(srv) as t, client(srv, source="127.0.0.7") as odd:
        t.register("teacher")
        odd.register("10.0.0.5")  # a username shaped like an address
        err = refused(lambda: moderate(t, "ban", "10.0.0.5"))
        assert err.code == "ambiguous" and "user:10.0.0.5" in err.message
        assert "banned 10.0.0.5" in moderate(t, "ban", "user:10.0.0.5")["done"]
        assert odd.wait_for(lambda e: isinstance(e, m.Bye)).code == "banned"
        with client(srv, source="127.0.0.7") as again:  # the address is not banned
            assert refused(lambda: again.login("10.0.0.5")).code == "banned"
        moderate(t, "unban", "user:10.0.0.5")
        # An address that no user is called: the old bare shape still bans the address.
        assert "banned address 10.9.9.9" in moderate(t, "ban", "10.9.9.9")["done"]
        assert "address 10.9.9.9" in moderate(t, "unban", "address:10.9.9.9")["done"]
        assert refused(lambda: moderate(t, "ban", "address:bob")).code == "bad_message"


def _closed_at_once(host: str, port: int, source: str) -> bool:
    s = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
    try:
        s.settimeout(5)
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


def test_an_ipv4_ban_catches_ipv4_mapped_ipv6_peers(tmp_path):
    # A dual-stack listener ("::") sees IPv4 peers as ::ffff:a.b.c.d.
    with running_server(tmp_path, files=False, tls=False, host="::",
                        policy=fast()) as srv:
        port = srv.port
        with WireClient("127.0.0.1", port, tls=False, source="127.0.0.9") as victim, \
                WireClient("127.0.0.1", port, tls=False) as t:
            t.register("teacher")
            victim.register("mallory")
            assert "1 connections closed" in moderate(t, "ban", "address:127.0.0.9")["done"]
            assert victim.wait_for(lambda e: isinstance(e, m.Bye)).code == "banned"
            assert _closed_at_once("127.0.0.1", port, "127.0.0.9")
            moderate(t, "unban", "address:::ffff:127.0.0.9")  # the same address
            with WireClient("127.0.0.1", port, tls=False, source="127.0.0.9") as back:
                back.login("mallory")


# ---------------------------------------------------------------- 9: lock-out as a weapon


def test_guesses_from_many_addresses_do_not_lock_the_owner_out(srv):
    with client(srv) as t:
        token = t.register("teacher", "the-right-one")["resume_token"]
    # One wrong guess each from 30 addresses in 30 subnets: the name is locked for them.
    for i in range(30):
        with client(srv, source=f"127.0.{i + 1}.{i + 1}") as guesser:
            err = refused(lambda g=guesser, i=i: g.login("teacher", f"guess-{i}"))
            assert err.code in ("wrong_password", "throttled")
    with client(srv, source="127.0.1.1") as guesser:  # a guesser tries again: refused
        err = refused(lambda: guesser.login("teacher", "the-right-one"))
        assert err.code == "throttled" and "try again in" in err.message
    with client(srv, source="127.0.1.1") as guesser:  # and a bad token is no way round
        err = refused(lambda: guesser.call(m.Resume, username="teacher", token="x" * 43))
        assert err.code == "bad_token"
    with client(srv, source="127.0.200.1") as owner:  # the owner, from a clean address
        assert owner.call(m.Resume, username="teacher", token=token)["user"] == "teacher"
    with client(srv, source="127.0.201.1") as owner:
        assert owner.login("teacher", "the-right-one")["admin"] is True


def test_the_address_limit_counts_the_subnet(srv):
    with client(srv, source="127.0.7.250") as bob:
        bob.register("bob")
    # 60 addresses of one /24, each failing once (unknown names: no name lock involved).
    for i in range(1, 61):
        with client(srv, source=f"127.0.7.{i}") as c:
            assert refused(lambda c=c, i=i: c.login(f"nobody{i}")).code == "no_such_user"
    with client(srv, source="127.0.7.1") as c:  # one of them again: the subnet is over
        assert refused(lambda: c.login("nobody-else")).code == "throttled"
    with client(srv, source="127.0.7.200") as c:  # a classmate who has not failed gets in
        c.login("bob")


# ---------------------------------------------------------------- 10: registration limits


def test_registrations_are_limited_per_address_and_overall(tmp_path):
    policy = fast(exempt_loopback=False, registrations_per_address=3,
                  registrations_per_minute=5)
    with running_server(tmp_path, tls=False, policy=policy) as srv:
        for i in range(3):
            with client(srv, source="127.0.0.2") as c:
                c.register(f"lab{i}")
        with client(srv, source="127.0.0.2") as c:
            err = refused(lambda: c.register("lab3"))
            assert err.code == "rate_limited" and "at most 3 accounts" in err.message
            assert refused(lambda: c.register("bad name!")).code == "invalid_username"
        with client(srv, source="127.0.0.3") as c:
            c.register("other0")
            c.call(m.Logout)
            c.register("other1")
        with client(srv, source="127.0.0.4") as c:  # 5 a minute for the whole server
            err = refused(lambda: c.register("late"))
            assert err.code == "rate_limited" and "too many accounts" in err.message


def test_self_registration_off_leaves_accounts_to_the_administrator(tmp_path):
    policy = fast()
    policy.self_registration = False
    with running_server(tmp_path, tls=False, policy=policy) as srv:
        with WireClient(srv.host, srv.port, tls=False) as c:
            assert c.hello()["policy"]["self_registration"] is False
            err = refused(lambda: c.register("alice"))
            assert err.code == "registration_closed" and "administrator" in err.message
        out = io.StringIO()
        AdminConsole(srv.server, on_exit=lambda: None, out=out).execute("adduser alice")
        temp = out.getvalue().split("temporary password: ")[1].split()[0]
        with client(srv) as c:
            assert c.login("alice", temp)["must_change_password"] is True
        AdminConsole(srv.server, on_exit=lambda: None, out=out).execute("adduser SERVER")
        assert "error:" in out.getvalue().splitlines()[-1]


# ---------------------------------------------------------------- 11b: rename limit


def test_renames_are_rate_limited_per_user(tmp_path):
    with running_server(tmp_path, tls=False, policy=fast(renames_per_minute=3)) as srv, \
            client(srv) as a, client(srv) as b:
        a.register("alice")
        b.register("bob")
        for i in range(3):
            rename(a, f"Alice {i}")
        err = refused(lambda: rename(a, "Alice 3"))
        assert err.code == "rate_limited" and "3 times a minute" in err.message
        rename(b, "Bob")  # someone else's limit is their own


# ---------------------------------------------------------------- 17: audit log unwritable


def test_an_action_the_audit_log_cannot_record_is_not_done(srv):
    with client(srv) as t, client(srv) as a:
        t.register("teacher")
        a.register("alice", "alice-pw")
        log = srv.data_dir / "audit.log"
        if log.exists():
            log.unlink()
        log.mkdir()  # root ignores chmod; a directory cannot be opened for writing by anyone
        err = refused(lambda: moderate(t, "reset_password", "alice"))
        assert err.code == "audit_unavailable" and "nothing was done" in err.message
        assert refused(lambda: moderate(t, "kick", "alice")).code == "audit_unavailable"
        assert srv.server.get_client("alice") is not None  # not kicked
        said = a.call(m.Send, kind="public", target="", text="keep me")
        with pytest.raises(ReplyError) as deleting:  # an administrator deleting a message
            t.call(m.DeleteMessage, msg_id=said["msg_id"])
        assert deleting.value.code == "audit_unavailable"
        history = t.call(m.History, kind="public", target="", limit=5)["messages"]
        assert "keep me" in [x["text"] for x in history]  # still there
        a.call(m.Logout)
        a.login("alice", "alice-pw")  # the password is still the old one
        log.rmdir()
        assert "temporary_password" in moderate(t, "reset_password", "alice")


# ---------------------------------------------------------------- 19: policy values


def _start(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    (tmp_path / "files").mkdir(exist_ok=True)
    try:
        return subprocess.run(
            [sys.executable, str(REPO / "server.py"), "--host", "127.0.0.1", "--port", "0",
             "--files-dir", str(tmp_path / "files"), "--data-dir", str(tmp_path / "data"),
             "--scrypt-n", str(FAST_SCRYPT_N), "--no-discovery", "--no-tls", "--no-console",
             *flags], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
            cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail("the server started with a policy value out of range")


@pytest.mark.parametrize("toml, setting", [
    ("[limits]\nconnections_per_address = 0\n", "connections_per_address"),
    ("[limits]\nlist_max = -1\n", "list_max"),
    ("[limits]\nrooms_per_user = -3\n", "rooms_per_user"),
    ("history_days = -1\n", "history_days"),
    ("[limits]\nrenames_per_minute = 0\n", "renames_per_minute"),
])
def test_out_of_range_policy_values_stop_the_server_in_words(tmp_path, toml, setting):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "policy.toml").write_text(toml)
    done = _start(tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and setting in done.stderr
    assert "must be a whole number from" in done.stderr


def test_out_of_range_flags_stop_the_server_too(tmp_path):
    done = _start(tmp_path, "--rooms-per-user", "-3")
    assert done.returncode == 2 and "rooms_per_user is -3" in done.stderr
    assert "from 0 to 1000" in done.stderr

