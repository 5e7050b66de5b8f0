"""The desktop client follows policy switches made while it runs (docs/protocol.md 6.6, 7),
against a real server: a student's window closes and reopens what the switch concerns at
once, keeping their draft; a teacher's Admin menu shows the live switches and flips them."""

from __future__ import annotations

import pytest
import test_gui_app
from serverutil import server_fixture
from test_gui_app import close_app, open_app, peer_fixture
from xvfb import pump_until

from parley_client.chat_state import PUBLIC, direct_key

pytestmark = pytest.mark.gui
WAIT = 10.0
PRIVATE_OFF = "Private messages are turned off on this server."
READ_ONLY = "Only administrators post in Public on this server."

# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


server = server_fixture()


bob = peer_fixture("bob")


def console(server, setting: str, value: str) -> None:
    """What the server's console (or another administrator) does."""
    server.server.moderation.perform("console", "set_policy", setting, None, value)


def notices(app, key=PUBLIC) -> list[str]:
    conv = app.state.conversations.get(key)
    return [e.text for e in conv.entries if e.kind == "notice"] if conv else []


def box_open(app) -> bool:
    box = app.main.message_box
    return box.enabled() and "disabled" not in box.send_button.state()


def hint(app) -> str:
    return app.main.message_box.placeholder.cget("text")


def set_policy_audit(server) -> list[tuple[str, str]]:
    return [(e["target"], e["text"]) for e in server.server.moderation.audit.entries()
            if e["action"] == "set_policy"]


def test_a_students_window_follows_each_switch(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        main, box = app.main, app.main.message_box
        dm = direct_key("bob")
        main.actions.open(dm)
        pump_until(app.root, lambda: main.conversation.key == dm and box_open(app), WAIT)
        box.set("see you at the")

        console(server, "private_messages", "off")
        pump_until(app.root, lambda: not box_open(app), WAIT)
        assert hint(app) == PRIVATE_OFF  # the reason shows where the draft was
        assert box.get() == "" and box.draft() == "see you at the"
        assert "Private messages are now turned off." in notices(app)
        assert "Private messages are now turned off." in notices(app, dm)
        assert main.sidebar.conversations.item("direct:bob", "tags") == ("closed",)
        main.actions.open(direct_key("teacher"))  # nobody new to talk to privately
        assert app.state.active == dm
        assert "turned off" in main.status.cget("text")
        main.actions.open(PUBLIC)  # Public is still open for writing, and the draft with it
        pump_until(app.root, lambda: box_open(app) and box.get() == "see you at the", WAIT)
        main.actions.open(dm)  # one already there opens to be read
        pump_until(app.root, lambda: main.conversation.key == dm and not box_open(app), WAIT)

        console(server, "private_messages", "on")
        pump_until(app.root, lambda: box_open(app), WAIT)
        assert box.get() == "see you at the"  # the draft is back
        assert notices(app)[-1] == "Private messages are allowed again."
        assert main.sidebar.conversations.item("direct:bob", "tags") in ("", ())
        box.send()
        bob.wait_message(lambda m: m.text == "see you at the" and m.kind == "direct")

        main.show_files()
        upload = main.files_view.upload_button
        pump_until(app.root, upload.winfo_ismapped, WAIT)
        console(server, "uploads", "off")
        pump_until(app.root, lambda: not upload.winfo_ismapped(), WAIT)
        assert main.files_menu.entrycget("Upload…", "state") == "disabled"
        assert notices(app)[-1] == "Uploads are now turned off (administrators still upload)."
        console(server, "uploads", "on")
        pump_until(app.root, upload.winfo_ismapped, WAIT)
        assert main.files_menu.entrycget("Upload…", "state") == "normal"

        main.show_chat()
        main.actions.open(PUBLIC)
        pump_until(app.root, lambda: main.conversation.key == PUBLIC and box_open(app), WAIT)
        console(server, "public_read_only", "on")
        pump_until(app.root, lambda: not box_open(app), WAIT)
        assert hint(app) == READ_ONLY
        assert notices(app)[-1] == "Only administrators can post in Public now."
        console(server, "public_read_only", "off")
        pump_until(app.root, lambda: box_open(app), WAIT)
        assert notices(app)[-1] == "Everyone can post in Public again."
    finally:
        close_app(app)


def test_the_teachers_admin_menu_shows_and_flips_the_switches(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "teacher")
    try:
        admin, actions = app.main.admin, app.main.actions
        switch = admin.policy_vars

        def click(label: str) -> None:
            admin.menu.invoke(admin.menu.index(label))

        assert {s: v.get() for s, v in switch.items()} == {
            "private_messages": True, "uploads": True, "public_read_only": False}

        click("Uploads by everyone")
        assert switch["uploads"].get() is False  # Tk unticked it; the server decides
        pump_until(app.root, lambda: server.server.config.policy.uploads is False, WAIT)
        pump_until(app.root, lambda: "uploads by everyone: off" in app.main.status.cget("text"),
                   WAIT)
        pump_until(app.root, lambda: notices(app)[-1:] == [
            "Uploads are now turned off (administrators still upload)."], WAIT)
        assert switch["uploads"].get() is False
        assert app.main.files_view.upload_button.winfo_manager()  # administrators still upload

        asked: list[str] = []

        def answer(reply: bool):
            def confirm(title, question, **kw):
                asked.append(question)
                return reply
            return confirm

        actions.confirm = answer(False)
        click("Private messages")
        assert asked == ["Turn off private messages for everyone now?"]
        assert switch["private_messages"].get() is True  # back: nothing was sent
        actions.confirm = answer(True)
        click("Private messages")
        pump_until(app.root, lambda: server.server.config.policy.private_messages is False,
                   WAIT)
        pump_until(app.root, lambda: len(set_policy_audit(server)) >= 2, WAIT)
        assert set_policy_audit(server) == [("uploads", "off"), ("private_messages", "off")]
        assert len(asked) == 2
        click("Private messages")  # on again: no question
        pump_until(app.root, lambda: server.server.config.policy.private_messages, WAIT)
        assert len(asked) == 2

        console(server, "public_read_only", "on")  # someone else switched it
        pump_until(app.root, lambda: switch["public_read_only"].get(), WAIT)
        assert box_open(app)  # the teacher still posts in Public
        console(server, "uploads", "on")
        pump_until(app.root, lambda: switch["uploads"].get(), WAIT)

        server.stop()  # a click that cannot reach the server: the mark goes back
        pump_until(app.root, lambda: app.state.connection != "online", WAIT)
        click("Read-only Public")
        assert switch["public_read_only"].get() is False
        pump_until(app.root, lambda: switch["public_read_only"].get(), WAIT)
        assert "failed" in app.main.status.cget("text")
    finally:
        close_app(app)
