"""An administrator's controls in the desktop client, against a real server: the Admin menu,
the moderation dialog, announcements, purging a conversation and removing a shared file.
Everyone else is shown none of it."""

from __future__ import annotations

import pytest
import test_gui_app
from serverutil import running_server
from test_gui_app import close_app, open_app, peer_fixture, transcript
from xvfb import pump_until

from parley_client.chat_state import PUBLIC, direct_key
from parley_client.session import SessionError
from parley_server.policy import Limits, Policy
from protocol.messages import FileRemoved

pytestmark = pytest.mark.gui
WAIT = 10.0
POLICY = Policy(admins=["teacher"], limits=Limits(message_rate=1000, message_burst=1000))


# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


@pytest.fixture
def server(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "answers.txt").write_text("not for students yet\n")
    (files / "syllabus.txt").write_text("week 1\n")
    with running_server(tmp_path, policy=POLICY, files_dir=files) as srv:
        yield srv


bob = peer_fixture("bob")


def menu_labels(menu) -> list[str]:
    return [menu.entrycget(i, "label") for i in range(menu.index("end") + 1)
            if menu.type(i) not in ("separator", "tearoff")]


def test_students_see_no_admin_controls(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        assert app.main.admin is None
        assert "Admin" not in menu_labels(app.main.menu)
        app.main.open_moderation()  # Ctrl+M does nothing for them
        assert app.main.admin is None
    finally:
        close_app(app)


def test_mute_from_the_dialog_then_a_bad_duration_is_refused_before_sending(
        tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "teacher")
    try:
        admin = app.main.admin
        assert "Admin" in menu_labels(app.main.menu)
        app.main.actions.open(direct_key("bob"))
        dialog = admin.open_dialog("Mute")
        assert dialog.target_var.get() == "bob"  # the open private conversation's person
        assert "disabled" in dialog.reason_entry.state()  # mute takes no reason
        dialog.minutes_var.set("10")
        dialog.apply_button.invoke()
        pump_until(app.root, lambda: "mute" in dialog.message.cget("text").lower()
                   and "Sending" not in dialog.message.cget("text"), WAIT)
        with pytest.raises(SessionError) as err:
            bob.session.send("public", "", "can I still talk?").result(WAIT)
        assert err.value.code == "muted"

        dialog.set_action("Ban", "bob")
        dialog.minutes_var.set("forever and a day")
        dialog.apply_button.invoke()
        assert "duration" in dialog.message.cget("text").lower()
        assert bob.session.connected  # nothing was sent
    finally:
        close_app(app)


def test_kick_from_the_people_menu_tells_the_dialog_what_happened(tk_root, tmp_path, server,
                                                                   bob):
    app = open_app(tk_root, tmp_path, server, "teacher")
    try:
        admin = app.main.admin
        pump_until(app.root, lambda: "bob" in app.main.sidebar.people.get_children(), WAIT)
        admin._person = "bob"  # what a right-click on bob's row sets
        admin.person_menu.invoke(admin.person_menu.index("Kick…"))
        dialog = admin.dialog
        assert (dialog.action_var.get(), dialog.target_var.get()) == ("Kick", "bob")
        dialog.reason_var.set("phones away")
        dialog.apply_button.invoke()
        pump_until(app.root, lambda: "bob" not in app.main.sidebar.people.get_children(), WAIT)
        pump_until(app.root, lambda: "kick" in dialog.message.cget("text").lower(), WAIT)
        dialog.set_action("Kick", "nobody-here")
        dialog.apply_button.invoke()
        pump_until(app.root, lambda: str(dialog.message.cget("foreground"))
                   == str(app.main.palette.error), WAIT)
    finally:
        close_app(app)


def test_announce_purge_and_remove_a_file(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "teacher")
    try:
        actions = app.main.actions
        actions.confirm = lambda *a, **k: True  # the "are you sure" dialogs say yes
        actions.announce("Fire drill at three")
        ev = bob.wait_message(lambda e: e.text == "Fire drill at three")
        assert ev.sender == "SERVER"

        bob.session.send("public", "", "the answer is 42").result(WAIT)
        pump_until(app.root, lambda: "the answer is 42" in transcript(app), WAIT)
        app.main.actions.open(PUBLIC)
        app.main.admin.menu.invoke(app.main.admin.menu.index(
            "Purge this conversation's history…"))
        pump_until(app.root, lambda: "the answer is 42" not in transcript(app), WAIT)
        texts = [m["text"] for m in bob.session.history("public", "").result(WAIT)["messages"]]
        assert "the answer is 42" not in texts

        app.main.show_files()
        files = app.main.files_view
        pump_until(app.root, lambda: "answers.txt" in files.tree.get_children(), WAIT)
        files.tree.selection_set("answers.txt")
        app.main.admin.file_menu.invoke(0)
        pump_until(app.root, lambda: "answers.txt" not in app.state.files, WAIT)
        while True:  # bob is told too
            ev = bob.events.get(timeout=WAIT)
            if isinstance(ev, FileRemoved):
                assert ev.name == "answers.txt"
                break
        assert not (server.files_dir / "answers.txt").exists()
        assert (server.files_dir / "syllabus.txt").exists()
    finally:
        close_app(app)


def test_made_an_administrator_while_logged_in_the_controls_come_and_go(tk_root, tmp_path,
                                                                         server, bob):
    """op/deop reach the open window at once: no new login needed."""
    def told(text: str) -> bool:
        conv = app.state.conversations.get(direct_key("SERVER"))
        return conv is not None and any(text in e.text for e in conv.entries)

    app = open_app(tk_root, tmp_path, server, "student")
    try:
        assert app.main.admin is None
        server.server.moderation.perform("console", "op", "student")
        pump_until(app.root, lambda: app.main.admin is not None, WAIT)
        assert "Admin" in menu_labels(app.main.menu)
        assert app.main.sidebar.people.bind("<Button-3>")
        pump_until(app.root, lambda: told("You were made an administrator by the server's "
                                          "administrator."), WAIT)
        server.server.moderation.perform("console", "deop", "student")
        pump_until(app.root, lambda: app.main.admin is None, WAIT)
        assert "Admin" not in menu_labels(app.main.menu)
        assert not app.main.sidebar.people.bind("<Button-3>")
        assert not app.main.files_view.tree.bind("<Button-3>")
        app.main.open_moderation()  # Ctrl+M does nothing again
        assert app.main.admin is None
        pump_until(app.root, lambda: told("Your administrator rights were taken back"), WAIT)
    finally:
        close_app(app)
