"""First connection to a server: show its certificate fingerprint so the user can compare it
with the one the server printed, then Accept (remember it) or Cancel (send nothing)."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.settings import format_server
from parley_common.tlsbio import format_fingerprint, short_fingerprint


class FingerprintDialog(tk.Toplevel):
    def __init__(self, master, fonts, palette, host: str, port: int, fingerprint: str,
                 on_answer: Callable[[bool], None]) -> None:
        super().__init__(master)
        self.title("New server — Parley")
        self.transient(master.winfo_toplevel())
        self.configure(background=palette.bg)
        self.resizable(False, False)
        self._on_answer = on_answer
        self._answered = False
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text=f"First connection to {format_server(host, port)}",
                  font=fonts.title).grid(row=0, column=0, columnspan=2, sticky="w")
        ttk.Label(body, wraplength=460, justify="left", text=(
            "Compare this certificate fingerprint with the one the server shows when it "
            "starts (ask its administrator). Accept only if they are the same: Parley will "
            "then warn you if this server's certificate ever changes.")).grid(
            row=1, column=0, columnspan=2, sticky="w", pady=(6, 10))
        full = format_fingerprint(fingerprint)
        # Two lines of 16 pairs each, so the whole value is readable without scrolling.
        cut = len("SHA256:") + 16 * 3
        self.fingerprint_text = f"{full[:cut]}\n{full[cut:]}"
        ttk.Label(body, text=self.fingerprint_text, font="TkFixedFont",
                  justify="left").grid(row=2, column=0, columnspan=2, sticky="w")
        ttk.Label(body, text=f"Short form: {short_fingerprint(fingerprint)}",
                  foreground=palette.muted).grid(row=3, column=0, columnspan=2, sticky="w",
                                                 pady=(4, 12))
        self.accept_button = ttk.Button(body, text="Accept", style="Accent.TButton",
                                        command=lambda: self.answer(True))
        self.accept_button.grid(row=4, column=0, sticky="ew", padx=(0, 4))
        self.cancel_button = ttk.Button(body, text="Cancel", command=lambda: self.answer(False))
        self.cancel_button.grid(row=4, column=1, sticky="ew", padx=(4, 0))
        body.columnconfigure((0, 1), weight=1, uniform="b")
        self.protocol("WM_DELETE_WINDOW", lambda: self.answer(False))
        self.bind("<Escape>", lambda e: self.answer(False))
        self.after_idle(self.cancel_button.focus_set)  # no accepting by a stray Return

    def answer(self, accepted: bool) -> None:
        if self._answered:
            return
        self._answered = True
        self._on_answer(accepted)
        self.destroy()

    def destroy(self) -> None:
        if not self._answered:  # closed along with its window: that is a no
            self._answered = True
            self._on_answer(False)
        super().destroy()
