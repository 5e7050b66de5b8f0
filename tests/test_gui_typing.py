"""Typing notices in the desktop client, against a real server: another person's notice shows
as a line above the message box until their message comes or it runs out; keys typed in the
box tell the others, once per burst; a refusal never reaches the status bar."""

from __future__ import annotations

import logging
import time

import pytest
import test_gui_app
from serverutil import server_fixture
from test_gui_app import Peer, close_app, open_app, peer_fixture, spy_on_session, transcript
from xvfb import pump_until

from parley_client import typing_state
from parley_client.chat_state import PUBLIC, direct_key, room_key
from protocol.messages import UserTyping

pytestmark = pytest.mark.gui
WAIT = 10.0

# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


server = server_fixture()


carol = peer_fixture("carol")


# ---------------------------------------------------------------------------- helpers


def line(app) -> str:
    """The typing line, as shown (empty when hidden under the editing bar)."""
    label = app.main.message_box.typing_line
    return label.cget("text") if label.winfo_ismapped() else ""


def press(app, *keysyms: str) -> None:
    """Real key presses in the message box, each handled as a person's would be."""
    box = app.main.message_box
    box.text.focus_force()
    for keysym in keysyms:
        box.text.event_generate(f"<KeyPress-{keysym}>")
    app.root.update()


def typing_from(peer: Peer, user: str) -> UserTyping:
    deadline = time.monotonic() + WAIT
    while True:
        ev = peer.events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(ev, UserTyping) and ev.user == user:
            return ev


# ---------------------------------------------------------------------------- tests


def test_a_notice_shows_who_is_typing_until_their_message_comes(tk_root, tmp_path, server,
                                                                carol):
    carol.session.rename("Carol Diaz").result(WAIT)
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        assert line(app) == ""
        carol.session.typing("public", "").result(WAIT)
        pump_until(app.root, lambda: line(app) == "Carol Diaz is typing…", WAIT)
        assert app.main._typing_id is not None  # the line's end is due, on the Tk thread

        carol.session.send("public", "", "lunch at noon?").result(WAIT)
        pump_until(app.root, lambda: "lunch at noon?" in transcript(app), WAIT)
        pump_until(app.root, lambda: line(app) == "", WAIT)
        assert app.main._typing_id is None  # nothing left to run out

        # In a private conversation: shown there, not in Public.
        carol.session.typing("direct", "alice").result(WAIT)
        pump_until(app.root, lambda: app.state.typing_text(direct_key("carol")), WAIT)
        app.root.update()
        assert line(app) == ""
        app.main.actions.open(direct_key("carol"))
        pump_until(app.root, lambda: line(app) == "Carol Diaz is typing…", WAIT)
        app.main.actions.open(PUBLIC)
        pump_until(app.root, lambda: app.main.conversation.key == PUBLIC, WAIT)
        assert line(app) == ""
    finally:
        close_app(app)


def test_a_notice_runs_out_by_itself(tk_root, tmp_path, server, carol, monkeypatch):
    monkeypatch.setattr(typing_state, "TYPING_SHOW", 0.4)
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        carol.session.typing("public", "").result(WAIT)
        pump_until(app.root, lambda: line(app) == "carol is typing…", WAIT)
        pump_until(app.root, lambda: line(app) == "", WAIT)
        assert app.main._typing_id is None
        assert "carol" not in transcript(app)  # a notice leaves nothing in the transcript
    finally:
        close_app(app)


def test_the_line_keeps_its_room_and_the_editing_bar_covers_it(tk_root, tmp_path, server, carol):
    app = open_app(tk_root, tmp_path, server, "alice")
    box = app.main.message_box
    try:
        test_gui_app.type_and_send(app, "my own words")
        pump_until(app.root, lambda: app.state.last_editable(PUBLIC) is not None, WAIT)
        app.root.update()
        height = box.winfo_height()
        carol.session.typing("public", "").result(WAIT)
        pump_until(app.root, lambda: line(app) == "carol is typing…", WAIT)
        app.root.update()
        assert box.winfo_height() == height  # the line's room is kept when it is empty
        app.main.begin_edit(app.state.last_editable(PUBLIC))
        app.root.update()
        assert box.edit_bar.winfo_ismapped() and line(app) == ""
        assert box.winfo_height() == height  # one takes the other's place: nothing jumps
        box.cancel_edit()
        app.root.update()
        assert line(app) == "carol is typing…" and not box.edit_bar.winfo_ismapped()
    finally:
        close_app(app)


def test_keys_in_the_box_tell_the_others_once_per_burst(tk_root, tmp_path, server, carol):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        sent = spy_on_session(app, "typing")
        press(app, "Left", "Right")  # keys that change nothing tell nobody
        assert sent == []
        press(app, "h", "e", "l", "l", "o", "space", "t", "h", "e", "r", "e")
        assert app.main.message_box.get() == "hello there"
        assert sent == [("public", "")]
        ev = typing_from(carol, "alice")
        assert (ev.kind, ev.target, ev.display) == ("public", "", "alice")

        # Sent: the next key starts a new notice at once; so does one after emptying the box.
        press(app, "Return")
        pump_until(app.root, lambda: app.state.last_editable(PUBLIC) is not None, WAIT)
        press(app, "o", "k")
        assert sent == [("public", "")] * 2
        press(app, "BackSpace", "BackSpace")
        assert sent == [("public", "")] * 2 and app.main.message_box.get() == ""
        press(app, "y")
        assert sent == [("public", "")] * 3

        # Nothing while editing a message, nor where nothing may be sent.
        app.main.message_box.set("")
        press(app, "Up")
        pump_until(app.root, lambda: app.main.message_box.editing is not None, WAIT)
        press(app, "space", "x")
        assert len(sent) == 3
        app.main.message_box.cancel_edit()
        app.main.actions.typing(room_key("nowhere"))  # a room I am not in
        assert len(sent) == 3
    finally:
        close_app(app)


def test_a_refused_notice_stays_out_of_the_status_bar(tk_root, tmp_path, server, carol,
                                                     caplog):
    app = open_app(tk_root, tmp_path, server, "bob")
    try:
        sent = spy_on_session(app, "typing")
        server.server.moderation.perform("console", "mute", "bob")
        with caplog.at_level(logging.DEBUG, logger="gui.actions"):
            press(app, "h", "i")
            assert sent == [("public", "")]
            pump_until(app.root, lambda: "typing notice" in caplog.text, WAIT)
        assert "mute" in caplog.text.lower()
        assert app.main.status.cget("text") == ""
    finally:
        close_app(app)
