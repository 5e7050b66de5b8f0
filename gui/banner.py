"""A strip across the top of the main window that says when the connection is gone, counts
down to the next reconnect attempt, and says so when it is back."""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable

from parley_client.chat_state import ChatState

RECONNECTED_SHOWN_MS = 3000


class Banner(tk.Frame):
    def __init__(self, master, state: ChatState, fonts, palette,
                 on_relogin: Callable[[], None]) -> None:
        super().__init__(master, padx=12, pady=6)
        self.state = state
        self.label = tk.Label(self, text="", font=fonts.bold, anchor="w")
        self.label.pack(side="left", fill="x", expand=True)
        self.button = tk.Button(self, text="Log in again", command=on_relogin, relief="flat")
        self._tick_id: str | None = None
        self._hide_id: str | None = None
        self.shown = ""
        self.apply_palette(palette)

    def apply_palette(self, palette) -> None:
        self.palette = palette
        self._colour(ok=False)

    def _colour(self, ok: bool) -> None:
        bg = self.palette.ok if ok else self.palette.banner_bg
        fg = "#ffffff" if ok else self.palette.banner_fg
        for w in (self, self.label):
            w.configure(background=bg)
        self.label.configure(foreground=fg)
        self.button.configure(background=bg, foreground=fg, activebackground=bg)

    def refresh(self) -> None:
        """Called on every connection change."""
        st = self.state.connection
        self._cancel(hide=True)
        if st == "online":
            if self.shown:
                self._show("Reconnected.", ok=True)
                self._hide_id = self.after(RECONNECTED_SHOWN_MS, self.hide)
            return
        if st == "reconnecting":
            self.button.pack_forget()
            self._countdown()
        else:
            reason = self.state.last_reason or "the server closed the connection"
            self._show(f"Disconnected: {reason}", ok=False)
            self.button.pack(side="right")

    def _countdown(self) -> None:
        self._tick_id = None
        at = self.state.reconnect_at
        if at is not None:
            left = max(0, int(round(at - time.monotonic())))
            text = (f"Connection lost — reconnecting in {left} s…" if left
                    else "Connection lost — reconnecting…")
        else:
            text = "Connection lost — reconnecting…"
        self._show(text, ok=False)
        if self.state.connection == "reconnecting":
            self._tick_id = self.after(250, self._countdown)

    def _show(self, text: str, ok: bool) -> None:
        self.shown = text
        self.label.configure(text=text)
        self._colour(ok)
        if not self.winfo_ismapped():
            self.grid()

    def hide(self) -> None:
        self._hide_id = None
        self.shown = ""
        self.grid_remove()

    def _cancel(self, hide: bool) -> None:
        if self._tick_id is not None:
            self.after_cancel(self._tick_id)
            self._tick_id = None
        if hide and self._hide_id is not None:
            self.after_cancel(self._hide_id)
            self._hide_id = None

    def destroy(self) -> None:
        self._cancel(hide=True)
        super().destroy()
