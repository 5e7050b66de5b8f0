"""Deleting a message from the desktop client, against a real server: the right-click menu on
a message (Copy text for anyone, Delete only where the server allows it), the confirmation,
and what everyone else's window and the server's history show afterwards."""

from __future__ import annotations

import time

import pytest
import test_gui_app
from serverutil import server_fixture
from test_gui_app import Peer, close_app, open_app, peer_fixture, transcript, type_and_send
from xvfb import pump_until

from gui.conversation_view import COPY_LABEL, DELETE_LABEL, EDIT_LABEL
from parley_client.chat_state import PUBLIC
from protocol.messages import MessageDeleted

pytestmark = pytest.mark.gui
WAIT = 10.0

# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


server = server_fixture()


bob = peer_fixture("bob")


# ---------------------------------------------------------------------------- helpers


def shown_entry(app, text: str):
    """The entry with this text in Public once the server has confirmed it (has a msg_id)."""
    def find():
        return next((e for e in app.state.conversations[PUBLIC].entries
                     if e.text == text and e.msg_id is not None), None)
    return pump_until(app.root, find, WAIT)


def right_click(app, entry):
    """A real right-click (event_generate) in the middle of the entry's text; returns the
    menu it posted."""
    view = app.main.conversation
    text = view.transcript.text
    x, y, _w, h = pump_until(app.root, lambda: view.transcript.entry_bbox(entry), WAIT)
    view.menu_entry = None
    text.event_generate("<Button-3>", x=x + 2, y=y + h // 2,
                        rootx=text.winfo_rootx() + x + 2, rooty=text.winfo_rooty() + y + h // 2)
    assert view.menu_entry is entry  # the click position was mapped to this entry
    pump_until(app.root, view.message_menu.winfo_ismapped, WAIT)  # and the menu is up
    return view.message_menu


def labels(menu) -> list[str]:
    return [menu.entrycget(i, "label") for i in range(menu.index("end") + 1)
            if menu.type(i) not in ("separator", "tearoff")]


def choose(app, menu, label: str) -> None:
    """Pick an item of the posted menu, then take the menu (and its grab) away."""
    menu.invoke(menu.index(label))
    app.root.tk.call("tk::MenuUnpost", menu)
    pump_until(app.root, lambda: not menu.winfo_ismapped(), WAIT)


def dismiss(app, menu) -> None:
    app.root.tk.call("tk::MenuUnpost", menu)
    pump_until(app.root, lambda: not menu.winfo_ismapped(), WAIT)


def wait_deleted(peer: Peer, msg_id: int) -> MessageDeleted:
    deadline = time.monotonic() + WAIT
    while True:
        ev = peer.events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(ev, MessageDeleted) and ev.msg_id == msg_id:
            return ev


def history_texts(peer: Peer) -> list[str]:
    return [m["text"] for m in peer.session.history("public", "").result(WAIT)["messages"]]


def asked(app) -> list[str]:
    """Say yes to the confirmation and keep what it asked."""
    questions: list[str] = []

    def confirm(title, message, **_kw):
        questions.append(message)
        return True
    app.main.actions.confirm = confirm
    return questions


# ---------------------------------------------------------------------------- tests


def test_deleting_my_own_message_takes_it_away_for_everyone(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        type_and_send(app, "keep this one")
        type_and_send(app, "oops, wrong window")
        entry = shown_entry(app, "oops, wrong window")
        shown_entry(app, "keep this one")
        questions = asked(app)
        menu = right_click(app, entry)
        assert labels(menu) == [COPY_LABEL, EDIT_LABEL, DELETE_LABEL]
        choose(app, menu, DELETE_LABEL)
        assert questions == ["Delete this message for everyone?\n\n“oops, wrong window”"]

        ev = wait_deleted(bob, entry.msg_id)
        assert (ev.sender, ev.by, ev.kind) == ("alice", "alice", "public")
        pump_until(app.root, lambda: "oops, wrong window" not in transcript(app), WAIT)
        assert "keep this one" in transcript(app)
        assert "removed" not in transcript(app)  # one's own just goes: no notice
        assert "Message deleted." in app.main.status.cget("text")
        texts = history_texts(bob)
        assert "oops, wrong window" not in texts and "keep this one" in texts
    finally:
        close_app(app)


def test_someone_elses_message_offers_copy_but_no_delete(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        bob.session.send("public", "", "the wifi password is on the fridge").result(WAIT)
        entry = shown_entry(app, "the wifi password is on the fridge")
        menu = right_click(app, entry)
        assert labels(menu) == [COPY_LABEL]
        app.root.clipboard_clear()
        choose(app, menu, COPY_LABEL)
        assert app.root.clipboard_get() == "the wifi password is on the fridge"
        assert app.main.actions.delete_message(entry) is None  # not offered, not sent either
        assert "the wifi password is on the fridge" in history_texts(bob)

        # Nothing to act on below the last line or on the day line.
        view = app.main.conversation.transcript
        assert view.entry_at(5, view.text.winfo_height() - 2) is None
        day = view.text.tag_ranges("day")[0]
        x, y, _w, h = view.text.bbox(day)
        assert view.entry_at(x + 1, y + h // 2) is None
    finally:
        close_app(app)


def test_an_administrator_deletes_a_students_message(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "teacher")
    try:
        bob.session.send("public", "", "answers to the quiz: b, d, a").result(WAIT)
        bob.session.send("public", "", "see you tomorrow").result(WAIT)
        entry = shown_entry(app, "answers to the quiz: b, d, a")
        later = shown_entry(app, "see you tomorrow")
        questions = asked(app)
        menu = right_click(app, entry)
        assert labels(menu) == [COPY_LABEL, DELETE_LABEL]
        choose(app, menu, DELETE_LABEL)
        assert questions[0].startswith("Delete this message from bob for everyone?")

        ev = wait_deleted(bob, entry.msg_id)
        assert (ev.sender, ev.by) == ("bob", "teacher")
        pump_until(app.root, lambda: "You removed a message from bob." in transcript(app), WAIT)
        assert "answers to the quiz" not in transcript(app)
        assert "answers to the quiz: b, d, a" not in history_texts(bob)

        # Deleted by its sender while the menu was open: the server's refusal is shown.
        menu = right_click(app, later)
        bob.session.delete_message(later.msg_id).result(WAIT)
        choose(app, menu, DELETE_LABEL)  # before the event reaches this window
        pump_until(app.root, lambda: "Deleting the message failed" in
                   app.main.status.cget("text"), WAIT)
        pump_until(app.root, lambda: "see you tomorrow" not in transcript(app), WAIT)
    finally:
        close_app(app)


def test_a_student_sees_that_an_administrator_removed_their_message(tk_root, tmp_path,
                                                                     server):
    teacher = Peer(server.host, server.port, "teacher")
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        type_and_send(app, "this quiz is rubbish")
        entry = shown_entry(app, "this quiz is rubbish")
        teacher.session.delete_message(entry.msg_id).result(WAIT)
        pump_until(app.root, lambda: "Your message was removed by teacher." in transcript(app),
                   WAIT)
        assert "this quiz is rubbish" not in transcript(app)
        entries = app.state.conversations[PUBLIC].entries
        assert [e.kind for e in entries if "removed" in e.text] == ["notice"]
        notice = next(e for e in entries if "removed" in e.text)
        assert not app.state.may_delete(notice)
        assert labels(right_click(app, notice)) == [COPY_LABEL]
        dismiss(app, app.main.conversation.message_menu)
    finally:
        close_app(app)
        teacher.close()


def test_the_view_stays_where_the_reader_is_when_a_message_goes(tk_root, tmp_path, server,
                                                                 bob):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        ids = [bob.session.send("public", "", f"line {i:02d}").result(WAIT)["msg_id"]
               for i in range(40)]
        shown_entry(app, "line 39")
        view = app.main.conversation.transcript

        def top_text() -> str:
            return view._entries[int(view._top_entry_mark()[1:])].text

        def deleted_here(n: int) -> None:
            bob.session.delete_message(ids[n]).result(WAIT)
            pump_until(app.root, lambda: f"line {n:02d}" not in transcript(app), WAIT)
            app.root.update()

        assert view.at_bottom()
        deleted_here(20)  # reading the newest: still at the end after the redraw
        assert view.at_bottom()

        view.text.yview_moveto(0.3)  # reading back
        app.root.update()
        top = top_text()
        assert not view.at_bottom() and top != "line 39"
        deleted_here(39)  # out of sight
        assert top_text() == top
        entries = app.state.conversations[PUBLIC].entries
        following = entries[[e.text for e in entries].index(top) + 1].text
        deleted_here(int(top.split()[1]))  # the one at the top: the next one takes its place
        assert top_text() == following
    finally:
        close_app(app)
