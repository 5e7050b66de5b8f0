"""TLS on the chat connection: the generated certificate, pinning (trust on first use), join
codes, --tls-cert/--tls-key, plain clients against TLS servers and the reverse, the GUI's
first-connection dialog and the CLI's join command. Real sockets on 127.0.0.1."""

from __future__ import annotations

import gc
import json
import os
import queue
import re
import socket
import ssl
import stat
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from serverutil import (
    free_port,
    open_socket,
    running_server,
    start_server_process,
)
from wireclient import WireClient

import parley_server.handler as handler_module
import server as server_main
from parley_client.events import Disconnected
from parley_client.session import ClientSession, SessionError
from parley_client.trust_store import TrustStore
from parley_common.tlsbio import (
    cert_fingerprint,
    format_fingerprint,
    parse_fingerprint,
    pem_fingerprint,
)
from parley_server.tls_setup import generate_self_signed, server_context
from protocol import encode_message
from protocol import messages as m
from protocol.join_code import decode_join_code, encode_join_code

WAIT = 10.0


def is_msg(text):
    return lambda e: isinstance(e, m.ChatMessage) and e.text == text


def cert_file_fingerprint(srv) -> str:
    return pem_fingerprint((srv.data_dir / "tls" / "cert.pem").read_text())


# ---------------------------------------------------------------------------- server side


def test_handshake_with_the_generated_certificate(tmp_path):
    with running_server(tmp_path, files=False) as srv:
        cert, key = srv.data_dir / "tls" / "cert.pem", srv.data_dir / "tls" / "key.pem"
        assert cert.is_file() and key.is_file()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert srv.fingerprint == cert_file_fingerprint(srv)
        with open_socket(srv.host, srv.port) as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            assert cert_fingerprint(s.getpeercert(binary_form=True)) == srv.fingerprint
            s.sendall(encode_message(m.Hello(1, 1, "tls-test")))
            s.settimeout(WAIT)
            reply = s.recv(65536)
        assert b'"type":"ok"' in reply and b'"server":"Parley"' in reply
        with WireClient(srv.host, srv.port) as a, WireClient(srv.host, srv.port) as b:
            a.register("alice")
            b.register("bob")
            a.call(m.Send, kind="public", target="", text="over TLS")
            assert b.wait_for(is_msg("over TLS")).sender == "alice"


def test_certificate_is_kept_across_restarts(tmp_path):
    with running_server(tmp_path, files=False) as srv:
        first = srv.fingerprint
    with running_server(tmp_path, files=False) as srv:
        assert srv.fingerprint == first


def test_server_prints_the_fingerprint_of_its_certificate_and_a_join_code(tmp_path):
    port = free_port()
    proc = start_server_process(tmp_path, port, "--no-console")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        seen, deadline = [], time.monotonic() + WAIT
        while not any("TLS fingerprint" in x for x in seen):
            seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
    finally:
        proc.terminate()
        proc.wait(WAIT)
        proc.stdout.close()
    fp = pem_fingerprint((tmp_path / "data" / "tls" / "cert.pem").read_text())
    printed = next(x for x in seen if "TLS fingerprint" in x)
    assert printed.split(": ", 1)[1].strip() == format_fingerprint(fp)
    code_line = next(x for x in seen if "join code:" in x)
    code = decode_join_code(code_line.split("join code:", 1)[1])
    assert (code.host, code.port, code.fingerprint) == ("127.0.0.1", port, fp)


def test_given_certificate_and_key_are_used(tmp_path):
    mine = tmp_path / "mine"
    generate_self_signed(mine / "c.pem", mine / "k.pem", hostname="chat.example")
    fp = pem_fingerprint((mine / "c.pem").read_text())
    with running_server(tmp_path, files=False, tls_cert=mine / "c.pem",
                        tls_key=mine / "k.pem") as srv:
        assert srv.fingerprint == fp
        assert not (srv.data_dir / "tls").exists()  # nothing generated
        s = ClientSession(lambda ev: None)
        try:
            s.connect(srv.host, srv.port)
            assert s.fingerprint == fp
            s.register("alice", "secret-pw").result(WAIT)
        finally:
            s.close()


def test_server_flags_refuse_half_a_certificate(tmp_path, capsys):
    common = ["--data-dir", str(tmp_path / "d"), "--files-dir", str(tmp_path / "f"),
              "--no-console", "--no-discovery"]
    assert server_main.main([*common, "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "both --tls-cert and --tls-key" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before doing anything


def test_plain_client_is_dropped_without_hurting_others(tmp_path):
    with running_server(tmp_path, files=False) as srv, \
            WireClient(srv.host, srv.port) as a, WireClient(srv.host, srv.port) as b:
        a.register("alice")
        b.register("bob")
        with socket.create_connection((srv.host, srv.port), timeout=WAIT) as plain:
            plain.sendall(encode_message(m.Hello(1, 1, "plain")))
            got = b""
            while True:
                try:
                    chunk = plain.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
        assert b'"type"' not in got  # not one readable byte of the chat protocol
        a.call(m.Send, kind="public", target="", text="still fine")
        assert b.wait_for(is_msg("still fine")).sender == "alice"
        # The session library says what went wrong, in words.
        s = ClientSession(lambda ev: None, tls=False)
        with pytest.raises(SessionError) as err:
            s.connect(srv.host, srv.port)
        assert "without --no-tls" in err.value.message
        s.close()


def test_junk_inside_tls_is_a_protocol_error_for_the_sender_only(tmp_path):
    with running_server(tmp_path, files=False) as srv, \
            WireClient(srv.host, srv.port) as a, WireClient(srv.host, srv.port) as b:
        a.register("alice")
        b.register("bob")
        with srv.connect() as bad:
            bad.sendall(struct.pack(">I", 0xFFFFFFFF))
            bad.settimeout(WAIT)
            said = b""
            while chunk := bad.recv(65536):
                said += chunk
        assert b"frame_too_large" in said and b"protocol_error" in said
        a.call(m.Send, kind="public", target="", text="unaffected")
        assert b.wait_for(is_msg("unaffected")).sender == "alice"


def test_connection_that_never_handshakes_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(handler_module, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    with running_server(tmp_path, files=False, poll_interval=0.1) as srv, \
            socket.create_connection((srv.host, srv.port), timeout=WAIT) as silent:
        start = time.monotonic()
        assert silent.recv(100) == b""  # closed by the server, bounded by the socket timeout
        assert time.monotonic() - start < WAIT


def test_tls_client_against_a_server_without_tls_gets_a_clear_error(tmp_path):
    with running_server(tmp_path, files=False, tls=False) as srv:
        assert srv.fingerprint is None and not (srv.data_dir / "tls").exists()
        s = ClientSession(lambda ev: None)
        with pytest.raises(SessionError) as err:
            s.connect(srv.host, srv.port)
        assert err.value.code == "tls_failed" and "does not use TLS" in err.value.message
        s.close()
        with WireClient(srv.host, srv.port, tls=False) as plain:  # --no-tls still works
            plain.register("alice")


# ---------------------------------------------------------------------------- pinning


class RecordingTLSServer:
    """A TLS endpoint (with a Parley certificate) that records every plaintext byte a
    client sends: to prove that a refusing client sends nothing at all."""

    def __init__(self, tmp_path) -> None:
        generate_self_signed(tmp_path / "rc.pem", tmp_path / "rk.pem")
        self.fingerprint = pem_fingerprint((tmp_path / "rc.pem").read_text())
        self.ctx = server_context(tmp_path / "rc.pem", tmp_path / "rk.pem")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.handshakes = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.listener.settimeout(WAIT)
        try:
            conn, _ = self.listener.accept()
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                tls.settimeout(WAIT)
                while data := tls.recv(65536):
                    self.received += data
        except (OSError, ssl.SSLError):
            pass  # the client cut the connection: how it ends does not matter here
        finally:
            self.done.set()
            self.listener.close()


def test_changed_fingerprint_is_refused_before_anything_is_sent(tmp_path):
    peer = RecordingTLSServer(tmp_path)
    trust = TrustStore()
    trust.remember("127.0.0.1", peer.port, "ab" * 32)
    s = ClientSession(lambda ev: None, trust=trust)
    with pytest.raises(SessionError) as err:
        s.connect("127.0.0.1", peer.port)
    s.close()
    assert err.value.code == "fingerprint_changed"
    assert "certificate changed" in err.value.message and "intercepting" in err.value.message
    assert peer.done.wait(WAIT)
    assert peer.handshakes == 1 and peer.received == b""  # no hello, no password
    assert trust.get("127.0.0.1", peer.port) == "ab" * 32  # the old pin is kept


def test_changed_fingerprint_against_the_real_server(tmp_path):
    with running_server(tmp_path, files=False) as srv:
        trust = TrustStore()
        trust.remember(srv.host, srv.port, "cd" * 32)
        s = ClientSession(lambda ev: None, trust=trust)
        with pytest.raises(SessionError) as err:
            s.connect(srv.host, srv.port)
        s.close()
        assert err.value.code == "fingerprint_changed"
        assert not srv.server.online()


def test_first_use_asks_once_and_the_pin_is_stored(tmp_path):
    path = tmp_path / "known_servers.json"
    with running_server(tmp_path, files=False) as srv:
        asked = []

        def ask(host, port, fp):
            asked.append((host, port, fp))
            return len(asked) > 1  # refuse the first time, accept the second

        s = ClientSession(lambda ev: None, trust=TrustStore.load(path), on_new_fingerprint=ask)
        with pytest.raises(SessionError) as err:
            s.connect(srv.host, srv.port)
        assert err.value.code == "untrusted" and not path.exists()
        s.connect(srv.host, srv.port)
        s.close()
        assert asked == [(srv.host, srv.port, srv.fingerprint)] * 2
        assert json.loads(path.read_text()) == {f"{srv.host}:{srv.port}": srv.fingerprint}
        # A later session with the stored pins does not ask again.
        s2 = ClientSession(lambda ev: None, trust=TrustStore.load(path),
                           on_new_fingerprint=lambda *a: pytest.fail("asked again"))
        s2.connect(srv.host, srv.port)
        assert s2.fingerprint == srv.fingerprint
        s2.close()


def test_reconnect_stops_when_the_certificate_changes(tmp_path):
    port = free_port()
    events: queue.SimpleQueue = queue.SimpleQueue()
    s = ClientSession(events.put, auto_reconnect=True)
    try:
        with running_server(tmp_path / "one", files=False, port=port) as srv:
            s.connect(srv.host, srv.port)
            s.register("alice", "secret-pw").result(WAIT)
        with running_server(tmp_path / "two", files=False, port=port):  # another certificate
            deadline = time.monotonic() + WAIT
            while True:
                ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
                if isinstance(ev, Disconnected) and ev.code == "fingerprint_changed":
                    break
            assert not ev.will_reconnect and not s.reconnecting and not s.connected
    finally:
        s.close()


# ---------------------------------------------------------------------------- join codes

hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}",
                          fullmatch=True)


@given(host=st.one_of(hostnames, st.ip_addresses().map(str)),
       port=st.integers(1, 65535), digest=st.binary(min_size=32, max_size=32))
def test_join_code_round_trip(host, port, digest):
    code = encode_join_code(host, port, digest.hex())
    assert code.startswith("parley://") and " " not in code
    back = decode_join_code(f"  {code}\n")
    assert (back.host, back.port, back.fingerprint) == (host, port, digest.hex())


@pytest.mark.parametrize("text", [
    "", "http://host:1/#" + "A" * 43, "parley://host:5150/", "parley://host/#" + "A" * 43,
    "parley://host:0/#" + "A" * 43, "parley://host:5150/#" + "A" * 42,
    "parley://host:5150/#" + "!" * 43, "parley://[::1:5150/#" + "A" * 43,
    "parley://bad host:5150/#" + "A" * 43,
])
def test_damaged_join_codes_are_refused_in_words(text):
    with pytest.raises(ValueError) as err:
        decode_join_code(text)
    assert str(err.value)[0].isupper()


def test_fingerprint_forms_parse_to_the_same_digest():
    fp = "0f" * 32
    assert parse_fingerprint(format_fingerprint(fp)) == fp
    assert parse_fingerprint("sha256:" + fp.upper()) == fp
    with pytest.raises(ValueError):
        parse_fingerprint("SHA256:AB")


# ---------------------------------------------------------------------------- CLI


def test_cli_join_code_connects_with_the_trust_established(tmp_path):
    from test_cli import CliProcess  # the real terminal client as a subprocess

    with running_server(tmp_path, files=False) as srv:
        code = encode_join_code(srv.host, srv.port, srv.fingerprint)
        cli = CliProcess()
        try:
            cli.send(f"join {code}")
            cli.expect(r"^trusting 127\.0\.0\.1:\d+ with fingerprint SHA256:")
            cli.expect(rf"^connected to 127\.0\.0\.1:{srv.port}")
            assert not any("new server" in x for x in cli.history)  # no first-use question
            cli.send("register alice secret-pw")
            cli.expect(r"logged in as alice")
            cli.send("l")
            cli.expect(rf"^server fingerprint {re.escape(format_fingerprint(srv.fingerprint))}$")
            cli.send("join parley://nonsense")
            cli.expect(r"^error: The join code has no fingerprint")
        finally:
            cli.kill()
        # The pin was written where the client keeps its settings.
        pins = TrustStore.load(Path(os.environ["PARLEY_CONFIG_DIR"]) / "known_servers.json")
        assert pins.get(srv.host, srv.port) == srv.fingerprint


def test_cli_first_use_line_and_changed_certificate(tmp_path):
    from test_cli import CliProcess

    with running_server(tmp_path, files=False) as srv:
        cli = CliProcess()
        try:
            cli.send(f"c {srv.host} {srv.port}")
            line = cli.expect(r"^server fingerprint ")
            assert line == (f"server fingerprint {format_fingerprint(srv.fingerprint)} "
                            "(new server, remembered)")
            cli.expect(r"^connected to ")
        finally:
            cli.kill()
        store = TrustStore.load()
        store.remember(srv.host, srv.port, "ef" * 32)  # as if the server had been replaced
        cli = CliProcess()
        try:
            cli.send(f"c {srv.host} {srv.port}")
            cli.expect(r"^error: The server's certificate changed!")
        finally:
            cli.kill()
        assert not srv.server.online()


# ---------------------------------------------------------------------------- GUI


@pytest.fixture
def gui_app(tk_root, tmp_path):
    """The real App with its real first-connection dialog (no confirm_fingerprint hook)."""
    from xvfb import wait_viewable

    from gui.app import App
    from parley_client.settings import Settings

    app = App(tk_root, Settings.load(tmp_path / "config" / "settings.json"))
    wait_viewable(tk_root)
    yield app
    app.quit(destroy_root=False)
    app.join_closers()
    del app
    gc.collect()  # on the Tk thread, see test_gui_app.collect_tk_garbage_on_main_thread


def submit_login(app, host, port, user="alice", register=True) -> None:
    from test_gui_app import fill_login

    fill_login(app, host, port, user, "secret-pw")
    (app.login.register_button if register else app.login.login_button).invoke()


def test_gui_asks_about_a_new_server_and_accept_proceeds(gui_app, tmp_path):
    from xvfb import pump_until

    app = gui_app
    with running_server(tmp_path, files=False) as srv:
        submit_login(app, srv.host, srv.port)
        dialog = pump_until(app.root, lambda: app.fingerprint_dialog, WAIT)
        full = format_fingerprint(srv.fingerprint)
        assert dialog.fingerprint_text.replace("\n", "") == full  # all of it, to compare
        assert not srv.server.online()  # nothing sent while the user decides
        dialog.cancel_button.invoke()
        pump_until(app.root, lambda: app.login.error_text("server"), WAIT)
        assert "not accepted" in app.login.error_text("server")
        assert app.trust.get(srv.host, srv.port) is None

        submit_login(app, srv.host, srv.port)
        dialog = pump_until(app.root, lambda: app.fingerprint_dialog
                            and app.fingerprint_dialog.winfo_exists()
                            and app.fingerprint_dialog, WAIT)
        dialog.accept_button.invoke()
        pump_until(app.root, lambda: app.main is not None, WAIT)
        assert srv.server.get_client("alice") is not None
        pins = json.loads((tmp_path / "config" / "known_servers.json").read_text())
        assert pins == {f"{srv.host}:{srv.port}": srv.fingerprint}


def test_gui_join_code_pre_trusts_and_a_changed_certificate_is_refused(gui_app, tmp_path):
    from xvfb import pump_until

    app = gui_app
    with running_server(tmp_path, files=False) as srv:
        app.login.join_var.set("parley://nonsense")
        app.login.join_button.invoke()
        assert "fingerprint" in app.login.error_text("server")

        app.login.join_var.set(encode_join_code(srv.host, srv.port, srv.fingerprint))
        app.login.join_button.invoke()
        assert app.login.server_var.get() == f"{srv.host}:{srv.port}"
        assert app.trust.get(srv.host, srv.port) == srv.fingerprint
        submit_login(app, srv.host, srv.port, register=True)
        pump_until(app.root, lambda: app.main is not None, WAIT)
        assert app.fingerprint_dialog is None  # the code vouched for the server: no question
        app.logout()

        app.trust.remember(srv.host, srv.port, "12" * 32)  # as if the server were replaced
        submit_login(app, srv.host, srv.port, register=False)
        pump_until(app.root, lambda: app.login.error_text("server"), WAIT)
        assert "certificate changed" in app.login.error_text("server")
        assert app.fingerprint_dialog is None


# ---------------------------------------------------------------------- TLS over memory BIOs


def _channel_pair(tmp_path, count: int = 1):
    from parley_common.tlsbio import TLSChannel

    generate_self_signed(tmp_path / "bio-c.pem", tmp_path / "bio-k.pem")
    sctx = server_context(tmp_path / "bio-c.pem", tmp_path / "bio-k.pem")
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    pairs = []
    for _ in range(count):
        client, server = TLSChannel(cctx, server_side=False), TLSChannel(sctx, server_side=True)
        to_server = client.start()
        for _ in range(10):  # bounded: TLS 1.3 needs two flights
            server.feed_incoming(to_server)
            client.feed_incoming(server.pending_output())
            to_server = client.pending_output()
            if client.established and server.established and not to_server:
                break
        assert client.established and server.established
        pairs.append((client, server))
    return pairs


def test_a_large_message_crosses_a_tls_channel_intact_however_it_is_cut(tmp_path):
    [(client, server)] = _channel_pair(tmp_path)
    message = os.urandom(300_000)
    cipher = server.encrypt(message)
    received = b"".join(client.feed_incoming(cipher[i:i + 7001])
                        for i in range(0, len(cipher), 7001))
    assert received == message
    echoed = server.feed_incoming(client.encrypt(message))  # and one 300 KB burst the other way
    assert echoed == message


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_a_burst_does_not_stay_in_a_tls_channels_buffers(tmp_path):
    """OpenSSL memory BIOs never shrink: fed whole, a 1 MiB burst would be kept by each
    connection for its life (+2 MiB per pair here). Fed in slices, next to nothing stays."""
    pairs = _channel_pair(tmp_path, count=40)

    def rss_mib() -> float:
        gc.collect()
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    burst = b"m" * (1 << 20)
    before = rss_mib()
    for client, server in pairs:
        assert len(client.feed_incoming(server.encrypt(burst))) == len(burst)
    grown = rss_mib() - before
    assert grown < 20, f"{grown:.1f} MiB stayed after 40 x 1 MiB (80 MiB if the BIOs kept it)"
