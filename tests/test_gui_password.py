"""Changing one's password in the desktop client, and an administrator's reset, against a real
server: what the dialog refuses before sending, the server's refusals shown in place, and that
afterwards only the new password (or the temporary one) logs in."""

from __future__ import annotations

import re

import pytest
import test_gui_app
from serverutil import server_fixture
from test_gui_admin import menu_labels
from test_gui_app import Peer, close_app, log_in, make_app, open_app, peer_fixture, spy_on_session
from xvfb import pump_until

from parley_client.password_change import (
    PasswordChangeError,
    check_new_password,
    refusal_sentence,
)
from parley_client.session import ClientSession, SessionError

WAIT = 10.0
TEMPORARY = re.compile(r"^[a-z2-9]{4}(-[a-z2-9]{4}){3}$")

# Tk objects must be freed on the main thread: see test_gui_app.
collect_tk_garbage_on_main_thread = test_gui_app.collect_tk_garbage_on_main_thread


server = server_fixture()


bob = peer_fixture("bob")


def try_login(srv, user: str, password: str) -> dict:
    """A fresh connection logging in (the login result); SessionError if the server refuses."""
    session = ClientSession(lambda ev: None)
    try:
        session.connect(srv.host, srv.port)
        return session.login(user, password).result(WAIT)
    finally:
        session.close()


def open_from_menu(app):
    menu = app.main.app_menu
    menu.invoke(menu.index("Change password…"))
    return app.main.password_dialog


def fill(dialog, current: str, new: str, repeat: str) -> None:
    dialog.current_var.set(current)
    dialog.new_var.set(new)
    dialog.repeat_var.set(repeat)


def settled(dialog) -> bool:
    return not dialog.busy


# ---------------------------------------------------------------------------- no window


@pytest.mark.parametrize("current, new, repeat, says, field", [
    ("", "new-secret", "new-secret", "all three", "current"),
    ("secret-pw", "", "", "all three", "new"),
    ("secret-pw", "new-secret", "", "all three", "repeat"),
    ("secret-pw", "short", "short", "at least 6", "new"),
    ("secret-pw", "x" * 1025, "x" * 1025, "at most 1024", "new"),
    ("secret-pw", "new-secret", "new-secrte", "not the same", "repeat"),
    ("secret-pw", "secret-pw", "secret-pw", "same as the current", "new"),
])
def test_what_is_refused_before_sending(current, new, repeat, says, field):
    with pytest.raises(PasswordChangeError, match=says) as err:
        check_new_password(current, new, repeat)
    text = str(err.value)
    assert text[0].isupper() and text.endswith(".")
    assert err.value.field == field  # where the dialog puts the cursor


def test_accepted_and_refusal_sentences():
    check_new_password("secret-pw", "123456", "123456")  # six characters are enough
    assert refusal_sentence("wrong_password", "the current password is wrong") == \
        "The current password is wrong."
    assert refusal_sentence("throttled", "too many failed logins; try again in 4 s") == \
        "Too many failed logins; try again in 4 s."
    assert refusal_sentence("not_connected", "not connected") == \
        "Your password was not changed: not connected."


# ---------------------------------------------------------------------------- the dialog


def test_local_mistakes_are_shown_and_nothing_is_sent(tk_root, tmp_path, server):
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        labels = menu_labels(app.main.app_menu)
        assert labels[labels.index("Change display name…") + 1] == "Change password…"
        sent = spy_on_session(app, "change_password")
        dialog = open_from_menu(app)
        assert [e.cget("show") for e in dialog.entries] == ["•"] * 3
        for fields, says, fix in (
                (("secret-pw", "abc", "abc"), "at least 6", dialog.new_entry),
                (("secret-pw", "new-secret", "new-secret!"), "not the same", dialog.repeat_entry),
                (("", "new-secret", "new-secret"), "all three", dialog.current_entry)):
            fill(dialog, *fields)
            dialog.ok_button.invoke()
            assert says in dialog.message.cget("text")  # at once: no answer was awaited
            # The cursor goes to the field to fix.
            pump_until(app.root, lambda fix=fix: dialog.focus_get() is fix, WAIT)
            assert str(dialog.message.cget("foreground")) == str(app.main.palette.error)
            assert "disabled" not in dialog.ok_button.state()
            assert (dialog.current_var.get(), dialog.new_var.get(),
                    dialog.repeat_var.get()) == fields  # kept, to be fixed
        app.root.update()
        assert sent == []
        assert dialog.winfo_exists()
        # Opening it again from the menu brings back the same dialog, as it was.
        assert open_from_menu(app) is dialog and dialog.repeat_var.get() == "new-secret"
        dialog.current_entry.focus_force()
        pump_until(app.root, lambda: dialog.focus_get() is dialog.current_entry, WAIT)
        dialog.current_entry.event_generate("<Escape>")  # Escape cancels
        pump_until(app.root, lambda: not dialog.winfo_exists(), WAIT)
        assert sent == []
        try_login(server, "student", "secret-pw")  # still the old password
    finally:
        close_app(app)


def test_a_wrong_current_password_keeps_the_dialog_until_throttled(tk_root, tmp_path,
                                                                  server):
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        sent = spy_on_session(app, "change_password")
        dialog = open_from_menu(app)
        fill(dialog, "not-my-password", "new-secret", "new-secret")
        dialog.ok_button.invoke()
        assert "disabled" in dialog.ok_button.state()  # while the request is in flight
        dialog.submit()  # a second Enter meanwhile sends nothing more
        assert len(sent) == 1
        pump_until(app.root, lambda: settled(dialog), WAIT)
        assert dialog.message.cget("text") == "The current password is wrong."
        assert dialog.winfo_exists() and "disabled" not in dialog.ok_button.state()
        assert dialog.new_var.get() == "new-secret"
        assert app.main.status.cget("text") != "Your password was changed."

        # Guessing is throttled like logging in: the server's sentence says how long.
        for _ in range(10):
            dialog.ok_button.invoke()
            pump_until(app.root, lambda: settled(dialog), WAIT)
            if "try again" in dialog.message.cget("text"):
                break
        text = dialog.message.cget("text")
        assert re.search(r"try again in \d+ s\.$", text), text
        assert dialog.winfo_exists()
        assert app.session.connected  # a wrong guess is an answer, not a disconnection
    finally:
        close_app(app)


def test_a_change_closes_the_dialog_and_only_the_new_password_logs_in(tk_root, tmp_path,
                                                                      server):
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        sent = spy_on_session(app, "change_password")
        dialog = open_from_menu(app)
        fill(dialog, "secret-pw", "brand-new-pw", "brand-new-pw")
        dialog.repeat_entry.focus_force()
        pump_until(app.root, lambda: dialog.focus_get() is dialog.repeat_entry, WAIT)
        dialog.repeat_entry.event_generate("<Return>")  # Enter is OK
        pump_until(app.root, lambda: not dialog.winfo_exists(), WAIT)
        assert sent == [("secret-pw", "brand-new-pw")]
        assert app.main.status.cget("text") == "Your password was changed."
        assert app.main.password_dialog is None
        assert app.session.connected  # changing it did not log this window out
        # (A second login as student takes over from this window: the server allows one.)
        try_login(server, "student", "brand-new-pw")
        with pytest.raises(SessionError) as err:
            try_login(server, "student", "secret-pw")
        assert err.value.code == "wrong_password"
    finally:
        close_app(app)


# ---------------------------------------------------------------------------- admin reset


def test_an_admin_reset_shows_a_temporary_password_that_logs_in(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "teacher")
    try:
        admin = app.main.admin
        assert "Reset password…" in menu_labels(admin.person_menu)
        admin._person = "bob"  # what a right-click on bob's row sets
        admin.person_menu.invoke(admin.person_menu.index("Reset password…"))
        dialog = admin.dialog
        assert (dialog.action_var.get(), dialog.target_var.get()) == ("Reset password", "bob")
        assert "disabled" in dialog.minutes_entry.state()
        assert "disabled" in dialog.reason_entry.state()
        assert not dialog.reveal.winfo_ismapped()
        dialog.apply_button.invoke()
        pump_until(app.root, lambda: dialog.password_var.get()
                   and dialog.reveal.winfo_ismapped(), WAIT)
        password = dialog.password_var.get()
        assert TEMPORARY.match(password), password
        assert "readonly" in dialog.password_entry.state()
        assert dialog.message.cget("text") == "reset the password of bob"
        handover = dialog.handover.cget("text").replace("\u00a0", " ")
        assert handover.startswith("Give this to bob.")
        assert "Parley → Change password…" in handover
        assert password not in app.main.status.cget("text")
        dialog.copy_button.invoke()
        assert app.root.clipboard_get() == password
        assert dialog.copy_button.cget("text") == "Copied"

        pump_until(app.root, lambda: not bob.session.connected, WAIT)  # reset knocks bob off
        assert try_login(server, "bob", password)["must_change_password"]
        with pytest.raises(SessionError) as err:
            try_login(server, "bob", "secret-pw")
        assert err.value.code == "wrong_password"

        # Another administrator's password is reset only at the server console.
        dialog.set_action("Reset password", "teacher")
        dialog.apply_button.invoke()
        assert dialog.password_var.get() == ""  # the last one is gone from the dialog
        pump_until(app.root, lambda: str(dialog.message.cget("foreground"))
                   == str(app.main.palette.error), WAIT)
        assert "console" in dialog.message.cget("text")
        app.root.update()
        assert not dialog.reveal.winfo_ismapped()

        # Closed before the answer came: the dialog comes back with it, or the new password
        # would be known to nobody.
        dialog.set_action("Reset password", "bob")
        dialog.apply_button.invoke()
        admin.close()
        pump_until(app.root, lambda: admin.dialog is not None and admin.dialog.winfo_exists()
                   and admin.dialog.password_var.get(), WAIT)
        again = admin.dialog.password_var.get()
        assert again != password and TEMPORARY.match(again)
        assert admin.dialog.action_var.get() == "Reset password"
        try_login(server, "bob", again)
        try_login(server, "teacher", "secret-pw")  # (last: it takes over from this window)
    finally:
        close_app(app)


def test_someone_who_is_not_an_admin_cannot_reset(tk_root, tmp_path, server, bob):
    app = open_app(tk_root, tmp_path, server, "student")
    try:
        assert app.main.admin is None  # no Admin menu, no people menu, no moderation dialog
        assert "Admin" not in menu_labels(app.main.menu)
        app.main.open_moderation()
        assert app.main.admin is None
        # Even asked directly, the server refuses and bob keeps his password.
        answers = []
        app.main.actions.moderate("reset_password", "bob",
                                  on_done=lambda ok, error: answers.append((ok, error)),
                                  on_result=answers.append)
        pump_until(app.root, lambda: answers, WAIT)
        assert answers[0][0] is None and "administrator" in answers[0][1]
        assert len(answers) == 1  # no result, so no temporary password
        assert bob.session.connected
        try_login(server, "bob", "secret-pw")
    finally:
        close_app(app)


def test_a_temporary_password_is_replaced_with_ones_own(tk_root, tmp_path, server, bob):
    teacher = Peer(server.host, server.port, "teacher")
    try:
        temporary = teacher.session.moderate("reset_password", "bob").result(WAIT)[
            "temporary_password"]
    finally:
        teacher.close()
    app = make_app(tk_root, tmp_path)
    try:
        log_in(app, server.host, server.port, "bob", temporary, register=False)
        # The login said must_change_password: the window asks at once.
        dialog = app.main.password_dialog
        assert dialog is not None and dialog.winfo_exists()
        assert "temporary password" in dialog.hint.cget("text")
        fill(dialog, temporary, "bobs-own-pw", "bobs-own-pw")
        dialog.ok_button.invoke()
        pump_until(app.root, lambda: not dialog.winfo_exists(), WAIT)
        assert app.main.status.cget("text") == "Your password was changed."
    finally:
        close_app(app)
    assert not try_login(server, "bob", "bobs-own-pw")["must_change_password"]
