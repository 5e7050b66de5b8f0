"""Close a window the way a window manager does when the user clicks its close button.

The window manager sends the program a WM_DELETE_WINDOW client message (ICCCM 4.2.8.1) and
the program decides what to do; Tk runs its WM_DELETE_WINDOW protocol handler. Under a bare
Xvfb there is no window manager, so tests send that message themselves. `xdotool
windowclose` is not the same thing: it destroys the X window under the program's feet,
which no user can do, and Tk may still be drawing into it (a BadDrawable error that kills
the program). This xdotool has no `windowquit`, hence a few lines of Xlib through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

CLIENT_MESSAGE = 33  # X.h: ClientMessage
NO_EVENT_MASK = 0
CURRENT_TIME = 0


class _ClientMessageEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong),
                ("send_event", ctypes.c_int), ("display", ctypes.c_void_p),
                ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]


class _Event(ctypes.Union):  # XEvent: every member padded to 24 longs
    _fields_ = [("xclient", _ClientMessageEvent), ("pad", ctypes.c_long * 24)]


def _xlib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    lib.XInternAtom.restype = ctypes.c_ulong
    lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.XSendEvent.restype = ctypes.c_int
    lib.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                               ctypes.POINTER(_Event)]
    lib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return lib


def request_close(window_id: int | str, display: str) -> None:
    """Send WM_DELETE_WINDOW to the top-level window `window_id` (as xdotool prints it)."""
    xlib = _xlib()
    dpy = xlib.XOpenDisplay(display.encode())
    if not dpy:
        raise RuntimeError(f"cannot open X display {display!r}")
    try:
        event = _Event()
        msg = event.xclient
        msg.type = CLIENT_MESSAGE
        msg.window = int(window_id)
        msg.message_type = xlib.XInternAtom(dpy, b"WM_PROTOCOLS", False)
        msg.format = 32
        msg.data[0] = xlib.XInternAtom(dpy, b"WM_DELETE_WINDOW", False)
        msg.data[1] = CURRENT_TIME
        if not xlib.XSendEvent(dpy, int(window_id), False, NO_EVENT_MASK, ctypes.byref(event)):
            raise RuntimeError(f"XSendEvent to window {window_id} failed")
        xlib.XSync(dpy, False)
    finally:
        xlib.XCloseDisplay(dpy)
