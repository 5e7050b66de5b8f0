"""Editing a message from the desktop client, against a real server: Edit message… in the
right-click menu (one's own messages only), Up in an empty box, the editing bar, Escape and
switching conversation giving the draft back, and a refusal that keeps what was typed."""

from __future__ import annotations

import time

import pytest
import test_gui_app
from serverutil import server_fixture
from test_gui_app import Peer, close_app, open_app, peer_fixture, transcript, type_and_send
from test_gui_delete import choose, dismiss, labels, right_click, shown_entry
from xvfb import pump_until

from gui.conversation_view import COPY_LABEL, DELETE_LABEL, EDIT_LABEL
from gui.message_box import EDIT_BAR_TEXT
from gui.transcript import EDITED_MARK
from parley_client.chat_state import PUBLIC, direct_key
from protocol.messages import ChatMessage, MessageEdited

pytestmark = pytest.mark.gui
WAIT = 10.0

# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


server = server_fixture()


carol = peer_fixture("carol")


# ---------------------------------------------------------------------------- helpers


def box_of(app):
    return app.main.message_box


def key(app, sequence: str) -> None:
    """A real key press in the message box."""
    box = box_of(app)
    box.text.focus_force()
    box.text.event_generate(sequence)
    app.root.update()


def bar_shown(app) -> bool:
    return bool(box_of(app).edit_bar.winfo_ismapped())


def edit_via_menu(app, entry) -> None:
    menu = right_click(app, entry)
    assert labels(menu) == [COPY_LABEL, EDIT_LABEL, DELETE_LABEL]
    choose(app, menu, EDIT_LABEL)
    pump_until(app.root, lambda: bar_shown(app), WAIT)


def next_event(peer: Peer, wanted: tuple[type, ...]):
    deadline = time.monotonic() + WAIT
    while True:
        ev = peer.events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(ev, wanted):
            return ev


def nothing_edited_before(app, peer: Peer, marker: str) -> None:
    """Send marker from the app and check the peer got no MessageEdited before it: the server
    handles one connection's requests in order, so an edit sent earlier would come first."""
    type_and_send(app, marker)
    ev = next_event(peer, (ChatMessage, MessageEdited))
    while isinstance(ev, ChatMessage) and ev.text != marker:
        ev = next_event(peer, (ChatMessage, MessageEdited))
    assert isinstance(ev, ChatMessage), f"an edit was sent: {ev}"


def history(peer: Peer, kind: str = "public", target: str = "") -> dict[int, dict]:
    messages = peer.session.history(kind, target).result(WAIT)["messages"]
    return {m["msg_id"]: m for m in messages}


def status(app) -> str:
    return app.main.status.cget("text")


# ---------------------------------------------------------------------------- tests


def test_editing_my_message_from_its_menu_changes_it_for_everyone(tk_root, tmp_path, server,
                                                                   carol):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        type_and_send(app, "the meeting is at 3")
        entry = shown_entry(app, "the meeting is at 3")
        box = box_of(app)
        box.set("a half-written reply")  # a draft, given back once the edit is saved
        edit_via_menu(app, entry)
        assert box.get() == "the meeting is at 3" and box.editing is entry
        assert box.edit_bar.cget("text") == EDIT_BAR_TEXT
        assert box.send_button.cget("text") == "Save"

        box.set("the meeting is at 4")
        key(app, "<Return>")
        ev = next_event(carol, (MessageEdited,))
        assert (ev.msg_id, ev.sender, ev.text) == (entry.msg_id, "alice", "the meeting is at 4")
        pump_until(app.root, lambda: f"the meeting is at 4{EDITED_MARK}" in transcript(app),
                   WAIT)
        assert "at 3" not in transcript(app)
        assert entry.edited == pytest.approx(ev.edited)
        pump_until(app.root, lambda: not bar_shown(app), WAIT)
        assert box.editing is None and box.get() == "a half-written reply"
        assert box.send_button.cget("text") == "Send"

        stored = history(carol)[entry.msg_id]
        assert stored["text"] == "the meeting is at 4"
        assert stored["edited"] == pytest.approx(ev.edited)

        # Text left as it was: edit mode ends and nothing is sent.
        box.set("")
        edit_via_menu(app, entry)
        key(app, "<Return>")
        assert not bar_shown(app) and box.editing is None and box.get() == ""
        nothing_edited_before(app, carol, "unchanged, so no edit")
    finally:
        close_app(app)


def test_up_in_an_empty_box_edits_my_last_message_here(tk_root, tmp_path, server, carol):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        type_and_send(app, "first of mine")
        type_and_send(app, "second of mine")
        mine = shown_entry(app, "second of mine")
        carol.session.send("public", "", "carol has the last word").result(WAIT)
        last = shown_entry(app, "carol has the last word")
        box = box_of(app)

        box.set("typing something")  # Up in a box with text just moves the cursor
        key(app, "<Up>")
        assert box.editing is None and box.get() == "typing something"

        box.set("")
        key(app, "<Up>")
        assert box.editing is mine and box.get() == "second of mine" and bar_shown(app)
        box.set("second of mine, corrected")
        key(app, "<Return>")
        pump_until(app.root, lambda: f"second of mine, corrected{EDITED_MARK}" in
                   transcript(app), WAIT)
        assert f"first of mine{EDITED_MARK}" not in transcript(app)
        assert history(carol)[mine.msg_id]["text"] == "second of mine, corrected"
        # Redrawn in place: a click on either message is still taken for that message.
        dismiss(app, right_click(app, mine))
        dismiss(app, right_click(app, last))

        # Nothing of mine in another conversation: Up does nothing there.
        app.main.actions.open(direct_key("carol"))
        pump_until(app.root, lambda: app.main.conversation.key == direct_key("carol"), WAIT)
        key(app, "<Up>")
        assert box.editing is None and not bar_shown(app)
    finally:
        close_app(app)


def test_escape_or_another_conversation_gives_the_draft_back_and_sends_nothing(
        tk_root, tmp_path, server, carol):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        type_and_send(app, "see you at noon")
        entry = shown_entry(app, "see you at noon")
        box = box_of(app)
        box.set("an unfinished thought")
        edit_via_menu(app, entry)
        box.set("see you at one")
        key(app, "<Escape>")
        assert not bar_shown(app) and box.editing is None
        assert box.get() == "an unfinished thought"
        assert app.main.notebook.select() == str(app.main.chat_tab)

        box.set("")
        key(app, "<Up>")
        assert box.editing is entry
        box.set("see you at two")
        app.main.actions.open(direct_key("carol"))  # switching cancels the edit
        pump_until(app.root, lambda: not bar_shown(app), WAIT)
        assert box.editing is None and box.get() == ""

        app.main.actions.open(PUBLIC)
        pump_until(app.root, lambda: app.main.conversation.key == PUBLIC, WAIT)
        nothing_edited_before(app, carol, "still at noon")
        assert history(carol)[entry.msg_id]["text"] == "see you at noon"
        assert history(carol)[entry.msg_id].get("edited") is None
        assert EDITED_MARK not in transcript(app)
    finally:
        close_app(app)


def test_someone_elses_message_offers_no_edit(tk_root, tmp_path, server, carol):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        carol.session.send("public", "", "the printer is out of toner").result(WAIT)
        entry = shown_entry(app, "the printer is out of toner")
        menu = right_click(app, entry)
        assert labels(menu) == [COPY_LABEL]
        dismiss(app, menu)
        box = box_of(app)
        key(app, "<Up>")  # not mine: Up has nothing to edit
        assert box.editing is None

        # Even asked directly, nothing is sent.
        refusals: list[str | None] = []
        app.main.actions.edit_message(entry, "the printer is fine", refusals.append)
        assert refusals == ["This message can no longer be edited."]
        assert status(app) == refusals[0]
        assert history(carol)[entry.msg_id]["text"] == "the printer is out of toner"
    finally:
        close_app(app)


def test_a_muted_users_edit_is_refused_and_what_they_typed_stays(tk_root, tmp_path, server,
                                                                  carol):
    app = open_app(tk_root, tmp_path, server, "bob")
    try:
        type_and_send(app, "tonight's homework: page 12")
        entry = shown_entry(app, "tonight's homework: page 12")
        box = box_of(app)
        edit_via_menu(app, entry)

        box.set("   ")  # emptied: not sent, and told how to remove a message instead
        key(app, "<Return>")
        assert "Delete message" in status(app)
        assert box.editing is entry and bar_shown(app)

        server.server.moderation.perform("console", "mute", "bob")
        box.set("tonight's homework: pages 12 and 13")
        key(app, "<Return>")
        pump_until(app.root, lambda: "Editing the message failed" in status(app), WAIT)
        assert "mute" in status(app).lower()
        assert box.editing is entry and bar_shown(app) and not box.saving
        assert box.edit_bar.cget("text") == EDIT_BAR_TEXT
        assert box.get() == "tonight's homework: pages 12 and 13"
        assert entry.text == "tonight's homework: page 12" and entry.edited is None
        assert "pages 12 and 13" not in transcript(app)
        assert history(carol)[entry.msg_id]["text"] == "tonight's homework: page 12"
    finally:
        close_app(app)
