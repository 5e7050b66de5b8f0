"""The compose box: Enter sends, Shift+Enter starts a new line, over-long text is refused
before it is sent, with a character counter that appears near the limit."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

COUNTER_FROM = 0.9  # show the counter once 90 % of the limit is used


class MessageBox(ttk.Frame):
    def __init__(self, master, fonts, palette, on_send: Callable[[str], bool],
                 max_text: int) -> None:
        super().__init__(master, padding=(12, 6, 12, 10))
        self.on_send, self.max_text, self.palette = on_send, max_text, palette
        self.columnconfigure(0, weight=1)
        self.border = ttk.Frame(self, style="Card.TFrame", padding=4)
        self.border.grid(row=0, column=0, sticky="ew")
        self.border.columnconfigure(0, weight=1)
        self.text = tk.Text(self.border, height=3, wrap="word", font=fonts.body,
                            relief="flat", borderwidth=0, highlightthickness=0, undo=True,
                            padx=6, pady=4)
        self.text.grid(row=0, column=0, sticky="ew")
        self.send_button = ttk.Button(self.border, text="Send", style="Accent.TButton",
                                      command=self.send)
        self.send_button.grid(row=0, column=1, sticky="se", padx=(6, 0))
        self.placeholder = ttk.Label(self.text, text="", foreground=palette.muted,
                                     background=palette.bg)
        self.placeholder.bind("<Button-1>", lambda e: self.text.focus_set())
        info = ttk.Frame(self)
        info.grid(row=1, column=0, sticky="ew")
        info.columnconfigure(0, weight=1)
        self.error = ttk.Label(info, text="", foreground=palette.error)
        self.error.grid(row=0, column=0, sticky="w")
        self.counter = ttk.Label(info, text="", foreground=palette.muted, font=fonts.small)
        self.counter.grid(row=0, column=1, sticky="e")
        self.text.bind("<Return>", self._on_return)
        self.text.bind("<KP_Enter>", self._on_return)
        self.text.bind("<Shift-Return>", self._newline)
        self.text.bind("<<Modified>>", self._on_modified)
        self.apply_palette(palette)

    def _on_return(self, _event=None) -> str:
        self.send()
        return "break"  # no newline: Enter sends

    def _newline(self, _event=None) -> str:
        self.text.insert("insert", "\n")
        return "break"

    def _on_modified(self, _event=None) -> None:
        self.text.edit_modified(False)
        self.update_counter()

    # ------------------------------------------------------------------ API

    def get(self) -> str:
        return self.text.get("1.0", "end-1c")

    def set(self, text: str) -> None:
        self.text.delete("1.0", "end")
        self.text.insert("1.0", text)
        self.update_counter()

    def update_counter(self) -> None:
        n = len(self.get())
        if n >= self.max_text * COUNTER_FROM:
            over = n > self.max_text
            self.counter.configure(text=f"{n} / {self.max_text}",
                                   foreground=self.palette.error if over
                                   else self.palette.muted)
        else:
            self.counter.configure(text="")
        if n <= self.max_text and self.error.cget("text").startswith("Too long"):
            self.error.configure(text="")
        if n:
            self.placeholder.place_forget()
        else:
            self.placeholder.place(x=6, y=4)

    def send(self) -> bool:
        text = self.get().strip()
        if not text or str(self.text.cget("state")) == "disabled":
            return False
        if len(text) > self.max_text:
            self.error.configure(text=f"Too long: {len(text)} characters, the limit is "
                                      f"{self.max_text}. Shorten it or share it as a file.")
            return False
        if self.on_send(text):
            self.set("")
            self.error.configure(text="")
            return True
        return False

    def set_enabled(self, enabled: bool, placeholder: str) -> None:
        self.text.configure(state="normal" if enabled else "disabled")
        self.send_button.state(["!disabled"] if enabled else ["disabled"])
        self.placeholder.configure(text=placeholder)
        self.update_counter()

    def focus(self) -> None:
        self.text.focus_set()

    def apply_palette(self, palette) -> None:
        self.palette = palette
        self.text.configure(background=palette.bg, foreground=palette.fg,
                            insertbackground=palette.fg, selectbackground=palette.select_bg)
        self.placeholder.configure(background=palette.bg, foreground=palette.muted)
        self.error.configure(foreground=palette.error)
        self.update_counter()
