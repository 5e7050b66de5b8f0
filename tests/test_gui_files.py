"""The files tab against a real server: live list, sort, filter, download to 100 % and
"verified", cancel, upload."""

from __future__ import annotations

import os

import pytest
import test_gui_app as base
from test_gui_app import WAIT, log_in
from xvfb import pump_until

pytestmark = pytest.mark.gui
# Shared fixtures, re-exported so pytest finds them in this module.
app, server, peers = base.app, base.server, base.peers
collect_tk_garbage_on_main_thread = base.collect_tk_garbage_on_main_thread


def transfer_row(app, name):
    for t in app.state.transfers.values():
        if t.name == name:
            return t, app.main.transfers.row(t.tid)
    return None, None


def test_files_appear_sort_filter_and_download_verified(app, server, tmp_path):
    log_in(app, server.host, server.port, "alice")
    app.settings.download_dir = str(tmp_path / "dl")
    app.main.message_box.text.focus_force()
    app.main.message_box.text.event_generate("<Control-f>")
    pump_until(app.root, lambda: str(app.main.notebook.select()) == str(app.main.files_tab))

    data = os.urandom(300_000)
    (server.files_dir / "small.bin").write_bytes(data)
    (server.files_dir / "notes.txt").write_bytes(b"hello" * 10)
    view = app.main.files_view
    pump_until(app.root, lambda: set(view.visible_names()) == {"small.bin", "notes.txt"}, WAIT)

    click_heading = view.tree.heading("size", "command")  # what a click on "Size" runs
    app.root.tk.call(click_heading)
    assert view.visible_names() == ["small.bin", "notes.txt"]  # largest first
    app.root.tk.call(click_heading)
    assert view.visible_names() == ["notes.txt", "small.bin"]
    view.filter_var.set("small")
    app.root.update()
    assert view.visible_names() == ["small.bin"]

    view.tree.selection_set("small.bin")
    view.download_button.invoke()
    pump_until(app.root, lambda: transfer_row(app, "small.bin")[0] is not None
               and transfer_row(app, "small.bin")[0].state == "done", WAIT)
    t, row = transfer_row(app, "small.bin")
    app.root.update()
    assert row.bar.cget("value") == 1000
    assert "Verified" in row.status.cget("text")
    assert (tmp_path / "dl" / "small.bin").read_bytes() == data
    assert not list((tmp_path / "dl").glob("*.part"))


def test_cancel_a_download_and_upload_a_file(app, server, tmp_path, peers):
    bob = peers("bob")
    big = server.files_dir / "big.bin"
    with open(big, "wb") as f:  # sparse: quick to make, real bytes to send and hash
        f.truncate(512 << 20)
    log_in(app, server.host, server.port, "alice")
    app.settings.download_dir = str(tmp_path / "dl")
    pump_until(app.root, lambda: "big.bin" in app.main.files_view.visible_names(), WAIT)
    app.main.actions.download(["big.bin"])
    app.root.update()
    t, row = transfer_row(app, "big.bin")
    row.cancel.invoke()
    pump_until(app.root, lambda: t.finished, WAIT)
    assert t.state == "cancelled"
    app.root.update()
    assert row.status.cget("text") == "Cancelled"
    assert not (tmp_path / "dl" / "big.bin").exists()  # never a partial file under the name

    src = tmp_path / "report.txt"
    src.write_bytes(b"quarterly numbers\n" * 1000)
    app.main.actions.upload(str(src))
    pump_until(app.root, lambda: transfer_row(app, "report.txt")[0].state == "done", WAIT)
    pump_until(app.root, lambda: "report.txt" in app.main.files_view.visible_names(), WAIT)
    assert app.state.files["report.txt"]["size"] == src.stat().st_size
    assert bob.session.list_files().result(WAIT)["files"]
