"""An administrator's dialog: kick, mute, ban (a user or an address), and their undoing;
making and unmaking administrators; resetting a forgotten password, whose temporary
replacement shows here (and nowhere else) for the administrator to hand over.

Not modal: it stays open so that one can act on several people in a row, and each answer
(what the server did, or why it refused) shows in the dialog itself. Tests drive it with
the variables and invoke().
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import font as tkfont
from tkinter import ttk

from parley_client.moderation import ACTIONS, BY_LABEL, ModerationInputError, build_request

from .password_dialog import CHANGE_PASSWORD_MENU_PATH
from .tkutil import release_variables


def code_font(widget, fonts) -> tuple[str, int]:
    """A fixed-width font as large as the body text, for a password read out or typed over.
    A description, not a Font object: nothing to free from the wrong thread later."""
    family = tkfont.nametofont("TkFixedFont", root=widget).actual("family")
    return family, int(fonts.body.actual("size"))


class ModerationDialog(tk.Toplevel):
    def __init__(self, master, fonts, palette, *,
                 on_submit: Callable[[str, str, int | None, str], None],
                 action: str = "Kick", target: str = "") -> None:
        """on_submit(action, target, minutes, text) sends the request; the caller reports
        the outcome back through show_result()."""
        super().__init__(master)
        self.title("Moderate — Parley")
        self.transient(master.winfo_toplevel())
        self.configure(background=palette.bg)
        self.palette = palette
        self.on_submit = on_submit
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        body.columnconfigure(1, weight=1)
        ttk.Label(body, text="Moderate", font=fonts.title).grid(row=0, column=0, columnspan=2,
                                                              sticky="w")
        ttk.Label(body, text="Every action is written to the server's audit log.",
                  foreground=palette.muted).grid(row=1, column=0, columnspan=2, sticky="w",
                                                 pady=(0, 10))
        self.action_var = tk.StringVar(value=action if action in BY_LABEL else ACTIONS[0].label)
        self.target_var = tk.StringVar(value=target)
        self.minutes_var = tk.StringVar()
        self.reason_var = tk.StringVar()
        self.action_box = ttk.Combobox(body, textvariable=self.action_var, state="readonly",
                                       values=[a.label for a in ACTIONS], width=22)
        self.target_label = ttk.Label(body, text="User")
        self.target_entry = ttk.Entry(body, textvariable=self.target_var, width=28)
        self.minutes_entry = ttk.Entry(body, textvariable=self.minutes_var, width=28)
        self.minutes_hint = ttk.Label(body, text="e.g. 30, 2h, 1d; empty: until lifted",
                                      foreground=palette.muted)
        self.reason_entry = ttk.Entry(body, textvariable=self.reason_var, width=28)
        rows = [("Action", self.action_box), (self.target_label, self.target_entry),
                ("Duration", self.minutes_entry), (None, self.minutes_hint),
                ("Reason", self.reason_entry)]
        for i, (label, widget) in enumerate(rows, start=2):
            if isinstance(label, str):
                label = ttk.Label(body, text=label)
            if label is not None:
                label.grid(row=i, column=0, sticky="w", padx=(0, 10), pady=3)
            widget.grid(row=i, column=1, sticky="ew" if widget is not self.minutes_hint
                        else "w", pady=3)
        self.message = ttk.Label(body, text="", wraplength=340)
        self.message.grid(row=7, column=0, columnspan=2, sticky="w", pady=(8, 0))
        self._build_reveal(body, fonts, palette).grid(row=8, column=0, columnspan=2,
                                                      sticky="ew", pady=(8, 0))
        self.reveal.grid_remove()
        buttons = ttk.Frame(body)
        buttons.grid(row=9, column=0, columnspan=2, sticky="e", pady=(12, 0))
        self.apply_button = ttk.Button(buttons, text="Apply", style="Accent.TButton",
                                       command=self.submit)
        self.apply_button.pack(side="left")
        ttk.Button(buttons, text="Close", command=self.destroy).pack(side="left", padx=(8, 0))
        self.action_box.bind("<<ComboboxSelected>>", lambda e: self._fit_fields())
        for entry in (self.target_entry, self.minutes_entry, self.reason_entry):
            entry.bind("<Return>", lambda e: self.submit())
        self.bind("<Escape>", lambda e: self.destroy())
        self._fit_fields()
        (self.target_entry if not target else self.action_box).focus_set()

    def _build_reveal(self, body, fonts, palette) -> ttk.Frame:
        """Where a reset's temporary password shows: selectable, copyable, never editable."""
        self.reveal = ttk.Frame(body)
        self.reveal.columnconfigure(0, weight=1)
        self.password_var = tk.StringVar()
        self.password_entry = ttk.Entry(self.reveal, textvariable=self.password_var,
                                        state="readonly", font=code_font(self, fonts), width=22)
        self.password_entry.grid(row=0, column=0, sticky="ew")
        self.copy_button = ttk.Button(self.reveal, text="Copy", width=8,
                                      command=self.copy_password)
        self.copy_button.grid(row=0, column=1, padx=(8, 0))
        self.handover = ttk.Label(self.reveal, text="", wraplength=340,
                                  foreground=palette.muted)
        self.handover.grid(row=1, column=0, columnspan=2, sticky="w", pady=(6, 0))
        return self.reveal

    def show_temporary_password(self, user: str, password: str) -> None:
        self.password_var.set(password)
        self.handover.configure(text=f"Give this to {user}. They log in with it, then choose "
                                f"their own under {CHANGE_PASSWORD_MENU_PATH}")
        self.copy_button.configure(text="Copy")
        self.reveal.grid()
        self.copy_button.focus_set()

    def hide_temporary_password(self) -> None:
        self.password_var.set("")
        self.reveal.grid_remove()

    def copy_password(self) -> None:
        self.clipboard_clear()
        self.clipboard_append(self.password_var.get())
        self.copy_button.configure(text="Copied")

    def set_action(self, label: str, target: str | None = None) -> None:
        self.action_var.set(label)
        if target is not None:
            self.target_var.set(target)
        self._fit_fields()

    def _fit_fields(self) -> None:
        """Only the fields the chosen action takes can be filled in."""
        spec = BY_LABEL[self.action_var.get()]
        self.target_label.configure(text=spec.target)
        self.minutes_entry.state(["!disabled"] if spec.minutes else ["disabled"])
        self.reason_entry.state(["!disabled"] if spec.reason else ["disabled"])

    def submit(self) -> None:
        try:
            request = build_request(self.action_var.get(), self.target_var.get(),
                                    self.minutes_var.get(), self.reason_var.get())
        except ModerationInputError as exc:
            self.show_result(str(exc), error=True)
            return
        self.hide_temporary_password()
        self.show_result("Sending…")
        self.on_submit(*request)

    def show_result(self, text: str, error: bool = False) -> None:
        self.message.configure(text=text, foreground=self.palette.error if error
                               else self.palette.fg)

    def destroy(self) -> None:
        super().destroy()
        release_variables(self)
