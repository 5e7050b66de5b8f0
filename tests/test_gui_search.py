"""Searching messages from the desktop client, against a real server: the Search messages
window (opened from the Conversation menu or with Ctrl+Shift+F), what it finds and what it
does not, its sentences, and going from a result to the message in the main window."""

from __future__ import annotations

import pytest
import test_gui_app
from serverutil import server_fixture
from test_gui_app import Peer, close_app, open_app
from xvfb import pump_until

from gui.search_dialog import MENU_LABEL, SearchDialog
from gui.theme import DARK
from parley_client.chat_state import HISTORY_PAGE, PUBLIC, direct_key

pytestmark = pytest.mark.gui
WAIT = 10.0

# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


server = server_fixture()


@pytest.fixture
def bob(server):
    peer = Peer(server.host, server.port, "bob")
    peer.session.rename("Bob Martin").result(WAIT)
    yield peer
    peer.close()


# ---------------------------------------------------------------------------- helpers


def open_from_menu(app) -> SearchDialog:
    menu = app.main.conversation_menu
    menu.invoke(menu.index(MENU_LABEL))
    dialog = app.main.search_dialog
    assert dialog is not None and dialog.winfo_exists()
    return dialog


def search(app, dialog: SearchDialog, text: str) -> str:
    """Type text, press Enter in the box, and wait for the answer; the status line."""
    dialog.query_var.set(text)
    dialog.entry.focus_force()
    pump_until(app.root, lambda: dialog.focus_get() is dialog.entry, WAIT)  # keys go there
    dialog.entry.event_generate("<Return>")
    pump_until(app.root, lambda: not dialog.busy, WAIT)
    return dialog.status.cget("text")


def rows(dialog: SearchDialog) -> list[tuple]:
    return [tuple(dialog.tree.item(i, "values")) for i in dialog.tree.get_children()]


def double_click(app, dialog: SearchDialog, index: int) -> None:
    """Two real presses on the row, close enough in time for Tk to see a double-click."""
    tree = dialog.tree
    x, y, _w, h = pump_until(app.root, lambda: tree.bbox(str(index)), WAIT)
    for _ in range(2):
        tree.event_generate("<ButtonPress-1>", x=x + 20, y=y + h // 2)
        tree.event_generate("<ButtonRelease-1>", x=x + 20, y=y + h // 2)


def highlighted(app) -> str:
    """The text under the "found" highlight in the transcript ("" if none)."""
    text = app.main.conversation.transcript.text
    ranges = text.tag_ranges("found")
    return text.get(ranges[0], ranges[-1]) if ranges else ""


def body_range(app, entry) -> tuple[str, str]:
    text = app.main.conversation.transcript.text
    first, last = text.tag_ranges(f"b{entry.local_id}")[:2]
    return str(first), str(last)


def entry_with(app, key, msg_id: int):
    return next(e for e in app.state.conversations[key].entries if e.msg_id == msg_id)


def found_covers(app, entry) -> bool:
    """Whether the "found" tag lies on the whole of the entry's text."""
    text = app.main.conversation.transcript.text
    first, last = body_range(app, entry)
    ranges = text.tag_ranges("found")
    return bool(ranges) and text.compare(ranges[0], "<=", first) \
        and text.compare(ranges[-1], ">=", last)


# ---------------------------------------------------------------------------- tests


def test_search_finds_public_and_private_messages_and_goes_to_them(tk_root, tmp_path, server,
                                                                    bob):
    carol = Peer(server.host, server.port, "carol")
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        public_id = bob.session.send("public", "", "The Budget for next year is in "
                                     "Files.").result(WAIT)["msg_id"]
        carol.session.join_room("staff").result(WAIT)
        bob.session.join_room("staff").result(WAIT)  # a room alice is not in
        bob.session.send("room", "staff", "budget gossip, staff only").result(WAIT)
        direct_id = bob.session.send("direct", "alice", "can you check the budget "
                                     "numbers?").result(WAIT)["msg_id"]
        pump_until(app.root, lambda: direct_key("bob") in app.state.conversations, WAIT)

        dialog = open_from_menu(app)
        pump_until(app.root, lambda: dialog.focus_get() is dialog.entry, WAIT)  # ready to type
        assert search(app, dialog, "  BUDGET ") == "2 messages"
        found = rows(dialog)
        assert [r[:2] for r in found] == [("Bob Martin", "Bob Martin"),  # newest first
                                          ("Public", "Bob Martin")]
        assert found[0][3] == "can you check the budget numbers?"
        assert found[1][3] == "The Budget for next year is in Files."
        assert all(":" in r[2] for r in found)  # today: the time alone, "14:05"
        assert not any("staff" in r[3] for r in found)

        # The private one: its conversation opens (history loads) and the message is marked.
        assert app.state.active == PUBLIC
        double_click(app, dialog, 0)
        pump_until(app.root, lambda: "check the budget" in highlighted(app), WAIT)
        assert app.state.active == direct_key("bob")
        assert found_covers(app, entry_with(app, direct_key("bob"), direct_id))
        assert dialog.winfo_exists()  # it stays open for the next result
        pump_until(app.root, lambda: dialog.focus_get() is dialog.tree, WAIT)

        # Down and Enter: the public one, back in Public.
        dialog.tree.event_generate("<Down>")
        dialog.tree.event_generate("<Return>")
        pump_until(app.root, lambda: "next year" in highlighted(app), WAIT)
        assert app.state.active == PUBLIC
        assert found_covers(app, entry_with(app, PUBLIC, public_id))
        assert "Bob Martin" in highlighted(app)  # its header too
        # The highlight is brief.
        pump_until(app.root, lambda: not highlighted(app), WAIT)
    finally:
        close_app(app)
        carol.close()


def test_what_the_window_says_for_a_short_query_and_for_nothing_found(tk_root, tmp_path,
                                                                      server, bob):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        bob.session.send("public", "", "lunch at noon?").result(WAIT)
        dialog = open_from_menu(app)
        dialog.query_var.set(" x ")
        dialog.search_button.invoke()
        assert dialog.status.cget("text") == "Type at least 2 characters to search for."
        assert not dialog.busy  # nothing was sent
        app.set_theme("dark")  # the open window follows a theme switch, the error stays red
        assert str(dialog.cget("background")) == DARK.bg
        assert str(dialog.status.cget("foreground")) == DARK.error

        assert search(app, dialog, "lunch") == "1 message"
        assert rows(dialog)[0][0] == "Public"
        assert search(app, dialog, "zebra crossing") == "No messages contain “zebra crossing”."
        assert rows(dialog) == []

        # A search asked for while another is under way replaces it: only the last answer
        # is shown, even though the first one comes back too.
        sent: list[str] = []
        shown: list[str] = []
        ask, show = dialog.on_search, dialog.show_results
        dialog.on_search = lambda query, done: (sent.append(query), ask(query, done))
        dialog.show_results = lambda r, t, query: (shown.append(query), show(r, t, query))
        pump_until(app.root, lambda: dialog._pacer.wait() == 0, WAIT)  # "lunch" goes at once
        dialog.query_var.set("lunch")
        dialog.search_button.invoke()
        dialog.query_var.set("noon")
        dialog.search_button.invoke()  # waits for its turn (the server's 0.5 s)
        assert sent == ["lunch"]
        pump_until(app.root, lambda: not dialog.busy, WAIT)
        assert sent == ["lunch", "noon"]
        assert shown == ["noon"] and dialog.status.cget("text") == "1 message"
        assert rows(dialog)[0][3] == "lunch at noon?"
    finally:
        close_app(app)


def test_a_message_older_than_what_is_loaded_is_not_paged_in(tk_root, tmp_path, server, bob):
    bob.session.send("public", "", "the old wifi password was hunter2").result(WAIT)
    for i in range(HISTORY_PAGE + 5):
        bob.session.send("public", "", f"filler {i}").result(WAIT)
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        conv = app.state.conversations[PUBLIC]
        pump_until(app.root, lambda: conv.history_state == "loaded" and conv.entries, WAIT)
        held = len(conv.entries)
        dialog = open_from_menu(app)
        assert search(app, dialog, "hunter2") == "1 message"
        double_click(app, dialog, 0)
        pump_until(app.root, lambda: "further back" in app.main.status.cget("text"), WAIT)
        assert "Load earlier messages" in app.main.status.cget("text")
        assert "further back in Public" in dialog.status.cget("text")
        assert not highlighted(app)
        app.root.update()
        assert len(conv.entries) == held and conv.earlier == "more"  # nothing loaded for us
    finally:
        close_app(app)


def test_the_menu_and_ctrl_shift_f_open_one_window_which_goes_with_the_main_window(
        tk_root, tmp_path, server):
    app = open_app(tk_root, tmp_path, server, "alice")
    try:
        dialog = open_from_menu(app)
        assert app.main.conversation_menu.entrycget(MENU_LABEL, "accelerator") == \
            "Ctrl+Shift+F"
        dialog.query_var.set("kept")
        box = app.main.message_box.text
        box.focus_force()
        app.root.update()
        # What X11 sends for Ctrl+Shift+f: keysym F with Control and Shift held.
        box.event_generate("<Control-Shift-KeyPress-F>")
        assert app.main.search_dialog is dialog and dialog.winfo_exists()
        assert dialog.query_var.get() == "kept"
        assert sum(isinstance(w, SearchDialog) for w in tk_root.winfo_children()) == 1
        assert str(app.main.notebook.select()) == str(app.main.chat_tab)  # not Files (Ctrl+F)

        dialog.destroy()
        box.focus_force()
        box.event_generate("<Control-Shift-KeyPress-F>")
        second = app.main.search_dialog
        assert second is not dialog and second.winfo_exists()
        assert second.query_var.get() == ""

        app.logout()  # the main window goes, and the search window with it
        assert not second.winfo_exists()
    finally:
        close_app(app)
