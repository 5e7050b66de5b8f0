"""Small Tk housekeeping shared by the views."""

from __future__ import annotations

import tkinter as tk


def release_variables(obj: object) -> None:
    """Drop a destroyed view's Tk variables now, on the Tk thread.

    A tkinter Variable unsets its Tcl variable in __del__. If the view is left to the cyclic
    garbage collector, that can run on a worker thread, where any Tcl call raises
    "main thread is not in main loop". Dropping the only reference here frees it at once.
    """
    for name, value in list(vars(obj).items()):
        if isinstance(value, tk.Variable):
            setattr(obj, name, None)
