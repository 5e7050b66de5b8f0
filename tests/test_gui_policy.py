"""The window hides or disables what the server's policy turns off, and says why."""

from __future__ import annotations

import pytest
import test_gui_app
from serverutil import running_server
from test_gui_app import close_app, open_app
from xvfb import pump_until

from parley_client.chat_state import PUBLIC, direct_key
from parley_server.policy import Limits, Policy

pytestmark = pytest.mark.gui

STRICT = Policy(private_messages=False, uploads=False, public_read_only=True,
                admins=["teacher"], limits=Limits(message_rate=1000, message_burst=1000))


# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


@pytest.fixture
def strict_server(tmp_path):
    with running_server(tmp_path, policy=STRICT) as srv:
        yield srv


def test_student_sees_what_the_policy_turns_off(tk_root, tmp_path, strict_server):
    app = open_app(tk_root, tmp_path, strict_server, "student")
    try:
        main = app.main
        pump_until(app.root, lambda: app.state.active == PUBLIC, 10)
        assert str(main.message_box.text.cget("state")) == "disabled"
        main.notebook.select(main.files_tab)
        pump_until(app.root, lambda: main.files_view.download_button.winfo_ismapped(), 10)
        assert not main.files_view.upload_button.winfo_ismapped()
        assert main.files_menu.entrycget("Upload…", "state") == "disabled"
        main.actions.open(direct_key("teacher"))
        assert app.state.active == PUBLIC  # no private conversation was opened
        assert "turned off" in main.status.cget("text")
    finally:
        close_app(app)


def test_admin_may_post_and_upload(tk_root, tmp_path, strict_server):
    app = open_app(tk_root, tmp_path, strict_server, "teacher")
    try:
        main = app.main
        pump_until(app.root, lambda: app.state.active == PUBLIC, 10)
        assert app.state.is_admin
        assert str(main.message_box.text.cget("state")) == "normal"
        main.notebook.select(main.files_tab)
        pump_until(app.root, lambda: main.files_view.upload_button.winfo_ismapped(), 10)
    finally:
        close_app(app)
