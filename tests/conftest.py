"""Shared pytest fixtures: a private X display for GUI tests and a Tk root per test.

Fixtures:
- `display` (session): starts one Xvfb for the whole run, sets $DISPLAY, returns ":N".
- `tk_root` (function): a tkinter.Tk on that display, torn down safely after the test.
Tests marked `gui` get `display` automatically; tests using `display` or `tk_root` are
marked `gui` automatically (so `-m "not gui"` skips them even if the marker was forgotten).
Helpers to drive windows live in tests/xvfb.py: `from xvfb import pump_until, wait_viewable`.
"""

from __future__ import annotations

import gc
import os
import warnings

import pytest
from xvfb import Xvfb, destroy_leftover_tk_roots, destroy_tk_root

# Set PARLEY_TEST_USE_DISPLAY=1 to run GUI tests on the $DISPLAY you already have (to watch
# them). By default we always start a private Xvfb, even on a desktop, because:
# - tests stay isolated from a person's clicks, focus changes and window manager, which would
#   otherwise steal focus from event_generate()/xdotool input and move windows off +0+0;
# - screenshots show only our windows, at a known size and depth (24-bit, which ImageGrab needs);
# - every machine, the developer's and CI's, runs the same display setup.
USE_EXISTING_DISPLAY_ENV = "PARLEY_TEST_USE_DISPLAY"

GUI_FIXTURES = ("display", "tk_root")


# tryfirst: the markers added here must exist before pytest's own -m deselection runs.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in item.fixturenames for name in GUI_FIXTURES):
            item.add_marker(pytest.mark.gui)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a GUI test and all its fixtures are torn down, collect garbage here, in the main
    thread. A Tk interpreter must be freed by the thread that made it: left to a later
    automatic collection, it can be freed on whatever thread allocates then (a test server's
    accept loop), and Tcl aborts the whole pytest process ("async handler deleted by the
    wrong thread")."""
    yield
    if item.get_closest_marker("gui") is not None:
        gc.collect()


@pytest.fixture(scope="session")
def display():
    """The X display name (":N") that GUI tests draw on; $DISPLAY is set to it."""
    existing = os.environ.get("DISPLAY")
    if os.environ.get(USE_EXISTING_DISPLAY_ENV) == "1" and existing:
        yield existing
        return
    server = Xvfb()
    name = server.start()
    os.environ["DISPLAY"] = name
    try:
        yield name
    finally:
        # Session teardown runs after every function fixture (so after every tk_root) has
        # been torn down. Roots that tests made by hand and left alive are destroyed here:
        # Xvfb must outlive every Tk connection, or Xlib kills the pytest process.
        leaked = destroy_leftover_tk_roots()
        if leaked:
            warnings.warn(f"{leaked} Tk root(s) were left alive by tests", stacklevel=1)
        server.stop()
        if existing is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = existing


@pytest.fixture(autouse=True)
def _private_client_config(monkeypatch, tmp_path_factory):
    """Clients (and CLI subprocesses, which inherit the environment) keep their settings and
    pinned server certificates in a fresh folder, never in the real user's config folder:
    test servers on reused ports have new certificates, which a shared pin list would refuse."""
    monkeypatch.setenv("PARLEY_CONFIG_DIR", str(tmp_path_factory.mktemp("client-config")))


@pytest.fixture(autouse=True)
def _display_for_gui_tests(request):
    """Give every test marked `gui` the display, without naming the fixture."""
    if request.node.get_closest_marker("gui") is not None:
        request.getfixturevalue("display")


@pytest.fixture
def tk_root(display):
    """A fresh tkinter.Tk on the test display; destroyed (children, after ids, root) after."""
    import tkinter

    root = tkinter.Tk()
    try:
        yield root
    finally:
        destroy_tk_root(root)
