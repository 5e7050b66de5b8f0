"""The server on IPv6: ::1 alone, and :: taking IPv4 peers too (seen as plain IPv4)."""

from __future__ import annotations

import socket

import pytest
from serverutil import running_server
from wireclient import WireClient

from protocol import messages as m


def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _have_ipv6_loopback(), reason="no IPv6 loopback here")


def test_chat_over_ipv6_loopback_with_tls(tmp_path):
    with running_server(tmp_path, files=False, host="::1") as srv:
        assert srv.host == "::1"
        with WireClient("::1", srv.port) as alice, WireClient("::1", srv.port) as bob:
            alice.register("alice")
            bob.register("bob")
            alice.call(m.Send, kind="public", target="", text="hello over IPv6")
            got = bob.wait_for(lambda ev: isinstance(ev, m.ChatMessage))
            assert got.text == "hello over IPv6"


def test_dual_stack_server_sees_ipv4_peers_as_plain_ipv4(tmp_path):
    with running_server(tmp_path, files=False, tls=False, host="::") as srv, \
            WireClient("127.0.0.1", srv.port, tls=False) as v4, \
            WireClient("::1", srv.port, tls=False) as v6:
        v4.register("four")
        v6.register("six")
        with srv.server.lock:
            seen = sorted(h.ip for h in srv.server.handlers)
        # The same spelling bans and per-address limits use for an IPv4-only server.
        assert seen == ["127.0.0.1", "::1"]
