"""Floods one user can send that reach everyone: each limit holds through the real server."""

from __future__ import annotations

import time

from serverutil import running_server
from wireclient import WireClient

from protocol import messages as m


def _is_public_typing(ev) -> bool:
    return isinstance(ev, m.UserTyping) and ev.kind == "public"


def test_typing_in_many_conversations_does_not_reopen_the_public_limit(tmp_path):
    with running_server(tmp_path, tls=False) as srv:
        others = [f"friend{i}" for i in range(40)]
        for name in others:
            with WireClient(srv.host, srv.port, tls=False) as c:
                c.register(name)
        with WireClient(srv.host, srv.port, tls=False) as watcher, \
                WireClient(srv.host, srv.port, tls=False) as flooder:
            watcher.register("watcher")
            flooder.register("flooder")
            began = time.monotonic()
            for _ in range(5):  # public, then 40 private conversations, again and again
                flooder.call(m.Typing, kind="public")
                for name in others:
                    flooder.call(m.Typing, kind="direct", target=name)
            elapsed = time.monotonic() - began
            flooder.call(m.Send, kind="public", target="", text="done")
            watcher.wait_for(lambda ev: isinstance(ev, m.ChatMessage) and ev.text == "done")
            told = sum(1 for ev in watcher.inbox if _is_public_typing(ev))
            # One public notice per 2 s, however many other conversations are typed in.
            assert 1 <= told <= 1 + int(elapsed / 2.0), (told, elapsed)


def test_history_keeps_the_newest_per_conversation_and_undelivered_messages(tmp_path):
    with running_server(tmp_path, tls=False, history_keep=10, retention_interval=0.1,
                        poll_interval=0.05) as srv:
        with WireClient(srv.host, srv.port, tls=False) as bob:
            bob.register("bob")
        with WireClient(srv.host, srv.port, tls=False) as alice:
            alice.register("alice")
            alice.call(m.Send, kind="direct", target="bob", text="for when you are back")
            for i in range(40):
                alice.call(m.Send, kind="public", target="", text=f"public {i}")
            bob = WireClient(srv.host, srv.port, tls=False)
            bob.login("bob")  # online now (and never acknowledges the delayed one)
            for i in range(15):
                alice.call(m.Send, kind="direct", target="bob", text=f"direct {i}")
            deadline = time.monotonic() + 10
            while True:  # retention runs on the housekeeping thread, every 0.1 s here
                public = alice.call(m.History, kind="public", target="", limit=100)["messages"]
                direct = alice.call(m.History, kind="direct", target="bob", limit=100)["messages"]
                if len(public) + len(direct) <= 21 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # polling the server inside a bounded wait
            assert [msg["text"] for msg in public] == [f"public {i}" for i in range(30, 40)]
            texts = [msg["text"] for msg in direct]
            # bob has not acknowledged the first one yet: it stays beside the 10 newest.
            assert texts == ["for when you are back"] + [f"direct {i}" for i in range(5, 15)]
            bob.close()


def _join(c: WireClient, room: str) -> str | None:
    """None when joined, else the refusal's code."""
    from wireclient import ReplyError
    try:
        c.call(m.JoinRoom, room=room)
    except ReplyError as exc:
        assert "_" not in exc.message  # words, not codes
        return exc.code
    return None


def test_one_account_cannot_hold_rooms_open_for_throwaway_makers(tmp_path):
    from parley_server.room_commands import ROOMS_JOINED_MAX
    with running_server(tmp_path, tls=False) as srv:
        makers = []
        for i in range(ROOMS_JOINED_MAX // 5 + 1):   # 5 rooms each (rooms_per_user)
            c = WireClient(srv.host, srv.port, tls=False)
            makers.append(c)
            c.register(f"maker{i}")
            for j in range(5):
                assert _join(c, f"r{i}-{j}") is None
        with WireClient(srv.host, srv.port, tls=False) as holder:
            holder.register("holder")
            codes = [_join(holder, f"r{i}-{j}") for i in range(len(makers)) for j in range(5)]
            assert codes[:ROOMS_JOINED_MAX] == [None] * ROOMS_JOINED_MAX
            assert set(codes[ROOMS_JOINED_MAX:]) == {"too_many_rooms"}
        for c in makers:
            c.close()


def test_rooms_made_from_one_address_are_bounded(tmp_path):
    from parley_server.policy import Limits, Policy
    from parley_server.room_commands import ROOMS_PER_ADDRESS_FACTOR
    policy = Policy(limits=Limits(message_rate=10_000, message_burst=10_000,
                                  exempt_loopback=False, connections_per_address=100))
    with running_server(tmp_path, tls=False, policy=policy) as srv:
        made, refused, clients = 0, None, []
        for i in range(ROOMS_PER_ADDRESS_FACTOR + 1):  # throwaway accounts, one address
            c = WireClient(srv.host, srv.port, tls=False, source="127.0.0.2")
            clients.append(c)
            c.register(f"throwaway{i}")
            for j in range(5):
                code = _join(c, f"t{i}-{j}")
                if code is not None:
                    refused = code
                    break
                made += 1
            if refused:
                break
        assert refused == "too_many_rooms"
        assert made == ROOMS_PER_ADDRESS_FACTOR * 5
        with WireClient(srv.host, srv.port, tls=False, source="127.0.0.3") as other:
            other.register("someone")
            assert _join(other, "elsewhere") is None  # another machine is not affected
        for c in clients:
            c.close()
