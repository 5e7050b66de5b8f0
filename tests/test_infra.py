"""Smoke tests for the test infrastructure itself: Xvfb fixture, Tk helpers, screenshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tkinter
from pathlib import Path
from tkinter import ttk

import pytest
import xvfb
from xvfb import Xvfb, pump_until, screenshot, wait_viewable

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.gui
def test_button_invoke_runs_callback_on_display(display):
    assert os.environ["DISPLAY"] == display
    root = tkinter.Tk()
    try:
        clicks = []
        button = ttk.Button(root, text="Send", command=lambda: clicks.append("clicked"))
        button.pack()
        wait_viewable(button, timeout=5)
        button.invoke()
        assert clicks == ["clicked"]
    finally:
        root.destroy()


def test_tk_root_fixture_is_marked_gui_and_pumps_after_callbacks(request, tk_root):
    assert request.node.get_closest_marker("gui") is not None
    fired = []
    tk_root.after(20, fired.append, "tick")
    # Left pending on purpose: the fixture's teardown must cancel it without Tcl errors.
    tk_root.after(60_000, fired.append, "never")
    assert pump_until(tk_root, lambda: fired, timeout=5) == ["tick"]


def test_tk_root_teardown_tolerates_a_root_the_test_destroyed(tk_root):
    ttk.Label(tk_root, text="gone soon").pack()
    tk_root.after(60_000, lambda: None)
    tk_root.destroy()
    with pytest.raises(tkinter.TclError):
        tk_root.winfo_exists()


def test_real_xdotool_click_reaches_the_button(tk_root):
    if shutil.which("xdotool") is None:
        pytest.fail("xdotool is not installed: run `make xvfb`")
    clicks = []
    button = ttk.Button(tk_root, text="Click me", command=lambda: clicks.append(1))
    button.pack(padx=40, pady=40)
    wait_viewable(button, timeout=5)
    x = button.winfo_rootx() + button.winfo_width() // 2
    y = button.winfo_rooty() + button.winfo_height() // 2
    subprocess.run(["xdotool", "mousemove", "--sync", str(x), str(y), "click", "1"],
                   check=True, timeout=10, stdin=subprocess.DEVNULL)
    pump_until(tk_root, lambda: clicks, timeout=5)
    assert clicks == [1]


@pytest.mark.parametrize("backend", ["pillow", "imagemagick"])
def test_screenshot_of_widget_shows_its_colour(tk_root, tmp_path, monkeypatch, backend):
    if backend == "imagemagick" and not xvfb.IMAGEMAGICK_IMPORT.exists():
        pytest.skip("ImageMagick's import is not installed (Pillow is used instead)")
    if backend == "pillow":
        monkeypatch.setattr(xvfb, "IMAGEMAGICK_IMPORT", tmp_path / "no-such-import")
    from PIL import Image

    swatch = tkinter.Frame(tk_root, width=120, height=80, background="#ff0000")
    swatch.pack()
    wait_viewable(swatch, timeout=5)
    out = screenshot(tmp_path / "shot.png", widget=swatch)
    with Image.open(out) as image:
        assert image.size == (120, 80)
        assert image.convert("RGB").getpixel((60, 40)) == (255, 0, 0)


def test_second_private_xvfb_starts_and_stops_alongside_session_display(display):
    with Xvfb() as other:
        assert other.display not in (None, display)
        assert other.is_running()
    assert not other.is_running()


def test_xvfb_run_tool_runs_command_on_its_own_display(display):
    code = "import os, sys; print(os.environ['DISPLAY']); sys.exit(3)"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "xvfb_run.py"), "--",
                             sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 3, result.stderr
    own_display = result.stdout.strip()
    assert own_display.startswith(":") and own_display != display
