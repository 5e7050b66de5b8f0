"""The window hides or disables what the server's policy turns off, and says why."""

from __future__ import annotations

import gc

import pytest
from serverutil import running_server
from test_gui_app import log_in, make_app
from xvfb import pump_until

from parley_client.chat_state import PUBLIC, direct_key
from parley_server.policy import Limits, Policy

pytestmark = pytest.mark.gui

STRICT = Policy(private_messages=False, uploads=False, public_read_only=True,
                admins=["teacher"], limits=Limits(message_rate=1000, message_burst=1000))


@pytest.fixture(autouse=True)
def collect_tk_garbage_on_main_thread():
    yield
    gc.collect()  # see test_gui_app: Tk objects must be freed on the main thread


@pytest.fixture
def strict_server(tmp_path):
    with running_server(tmp_path, policy=STRICT) as srv:
        yield srv


def run_app(tk_root, tmp_path, srv, user):
    app = make_app(tk_root, tmp_path)
    log_in(app, srv.host, srv.port, user)
    return app


def close(app):
    app.quit(destroy_root=False)
    app.join_closers()


def test_student_sees_what_the_policy_turns_off(tk_root, tmp_path, strict_server):
    app = run_app(tk_root, tmp_path, strict_server, "student")
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
        close(app)


def test_admin_may_post_and_upload(tk_root, tmp_path, strict_server):
    app = run_app(tk_root, tmp_path, strict_server, "teacher")
    try:
        main = app.main
        pump_until(app.root, lambda: app.state.active == PUBLIC, 10)
        assert app.state.is_admin
        assert str(main.message_box.text.cget("state")) == "normal"
        main.notebook.select(main.files_tab)
        pump_until(app.root, lambda: main.files_view.upload_button.winfo_ismapped(), 10)
    finally:
        close(app)
