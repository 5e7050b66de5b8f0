"""A private Xvfb display for GUI tests and tools, plus helpers to drive Tk on it.

Used by tests/conftest.py (the `display` and `tk_root` fixtures) and by tools/xvfb_run.py.
Nothing here imports tkinter at module level, so importing this file costs nothing for
tests that never touch a window.

Facts this code is built on (see shared/design/tk-and-packaging.md):
- Xvfb announces its display number on the -displayfd pipe; the pipe must be read up to the
  newline before it is closed, or Xvfb may exit.
- If Xvfb dies while a Tk interpreter is still connected, Xlib ends the whole process: stop
  Xvfb only after every Tk root is destroyed.
- `wait_visibility()` can hang forever inside Tcl, where no timeout can break it: poll
  `winfo_viewable()` with a deadline instead.
"""

from __future__ import annotations

import gc
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SCREEN_GEOMETRY = "1280x800x24"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
IMAGEMAGICK_IMPORT = Path("/usr/bin/import")


class XvfbError(RuntimeError):
    """Xvfb is missing, failed to start, or did not announce its display in time."""


class Xvfb:
    """One Xvfb server process. Use as a context manager or call start()/stop()."""

    def __init__(self, geometry: str = SCREEN_GEOMETRY) -> None:
        self.geometry = geometry
        self.display: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start Xvfb on a free display number and return the display name (":N")."""
        exe = shutil.which("Xvfb")
        if exe is None:
            raise XvfbError("Xvfb is not on PATH: run `make xvfb` (apt-get install xvfb xdotool)")
        read_fd, write_fd = os.pipe()
        # Xvfb's stderr goes to a file, not a pipe: nobody drains a pipe while tests run, and
        # a full pipe would stall the X server. It lives as long as the server (closed in stop()),
        # so no `with` block fits.
        self._log = tempfile.TemporaryFile(prefix="xvfb-", suffix=".log")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [exe, "-displayfd", str(write_fd), "-screen", "0", self.geometry,
                 "-nolisten", "tcp"],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C aimed at pytest or a tool must not kill the X server
                # under still-connected Tk roots; we stop it ourselves, last.
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        try:
            number = self._read_display_number(read_fd, timeout)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(read_fd)
        self.display = f":{number}"
        return self.display

    def _read_display_number(self, read_fd: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XvfbError(f"Xvfb did not announce a display within {timeout} s"
                                f"{self._log_tail()}")
            ready, _, _ = select.select([read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_fd, 64)
            if not chunk:
                raise XvfbError(f"Xvfb exited before announcing a display "
                                f"(exit code {self._proc.poll()}){self._log_tail()}")
            data += chunk
        number = data.strip().decode("ascii", "replace")
        if not number.isdigit():
            raise XvfbError(f"Xvfb announced an unexpected display {number!r}")
        return number

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read()[-2000:].decode("utf-8", "replace").strip()
        return f"\nXvfb said:\n{text}" if text else ""

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.display = None

    def __enter__(self) -> Xvfb:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def destroy_tk_root(root) -> None:
    """Tear a Tk root down in the order Tcl tolerates: children, pending after() ids, root.

    Destroying the root first, or cancelling after() ids whose widgets are still alive,
    makes Tcl complain about commands deleted twice.
    """
    import tkinter

    try:
        if not root.winfo_exists():
            return
    except tkinter.TclError:
        return  # already destroyed: nothing left to tear down
    for child in root.winfo_children():
        child.destroy()
    for after_id in root.tk.splitlist(root.tk.call("after", "info")):
        root.after_cancel(after_id)
    root.destroy()


def destroy_leftover_tk_roots() -> int:
    """Destroy every live tkinter.Tk still reachable, so Xvfb can then be stopped safely.

    A test that made its own Tk() and forgot to destroy it would otherwise keep an X
    connection open past Xvfb's end, and Xlib would kill the process (losing pytest's report).
    Returns how many roots were destroyed.
    """
    import sys

    tkinter = sys.modules.get("tkinter")
    if tkinter is None:
        return 0  # tkinter never imported: no Tk root can exist
    gc.collect()
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, tkinter.Tk) and getattr(obj, "tk", None) is not None:
            try:
                alive = bool(obj.winfo_exists())
            except tkinter.TclError:
                alive = False
            if alive:
                destroy_tk_root(obj)
                count += 1
    return count


def wait_viewable(widget, timeout: float = 5.0) -> None:
    """Pump events until `widget` is mapped and viewable, or raise TimeoutError.

    Replaces `wait_visibility()`, which can block inside Tcl forever.
    """
    deadline = time.monotonic() + timeout
    while True:
        widget.update()
        if widget.winfo_viewable():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{widget} not viewable after {timeout} s")
        time.sleep(0.005)


def pump_until(root, predicate, timeout: float = 5.0, interval: float = 0.005):
    """Call root.update() until predicate() returns a true value; return that value.

    Raises TimeoutError after `timeout` seconds. Use this in place of mainloop() in tests:
    worker threads post to a queue and the Tk side drains it from here.
    """
    deadline = time.monotonic() + timeout
    while True:
        root.update()
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition {predicate!r} still false after {timeout} s")
        time.sleep(interval)


def screenshot(path: str | os.PathLike, widget=None, display: str | None = None) -> Path:
    """Save a PNG of the whole screen, or of `widget`'s on-screen area if given.

    Uses ImageMagick's `import` when /usr/bin/import exists, else Pillow's ImageGrab
    (Pillow is pinned in requirements-dev.txt). `display` defaults to $DISPLAY.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    display = display or os.environ.get("DISPLAY")
    if not display:
        raise XvfbError("no display: start Xvfb (the `display` fixture) first")
    box = None
    if widget is not None:
        widget.update()
        x, y = widget.winfo_rootx(), widget.winfo_rooty()
        box = (x, y, x + widget.winfo_width(), y + widget.winfo_height())
    if IMAGEMAGICK_IMPORT.exists():
        cmd = [str(IMAGEMAGICK_IMPORT), "-display", display, "-window", "root"]
        if box is not None:
            cmd += ["-crop", f"{box[2] - box[0]}x{box[3] - box[1]}+{box[0]}+{box[1]}"]
        subprocess.run(cmd + [str(path)], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, capture_output=True)
    else:
        from PIL import ImageGrab

        ImageGrab.grab(bbox=box, xdisplay=display).save(path)
    return path
