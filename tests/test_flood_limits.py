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
