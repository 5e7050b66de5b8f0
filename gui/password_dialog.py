"""Change my password: the current one, the new one twice.

Not modal, like the other dialogs: a mistake (found here, or the server's refusal) shows in
the dialog, which keeps what was typed so that only the wrong field needs fixing; it closes
once the server has made the change. Tests drive it with the variables and invoke().
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.password_change import (
    MIN_PASSWORD,
    PasswordChangeError,
    check_new_password,
)

from .tkutil import release_variables

MASK = "•"
# Where the main window's menu offers this dialog (an admin's reset tells people to go there).
APP_MENU, MENU_LABEL = "Parley", "Change password…"
# No-break spaces: a sentence that names the menu wraps before it, never inside it.
CHANGE_PASSWORD_MENU_PATH = f"{APP_MENU} → {MENU_LABEL}".replace(" ", "\u00a0")


class PasswordDialog(tk.Toplevel):
    def __init__(self, master, fonts, palette, *,
                 on_submit: Callable[[str, str], None], temporary: bool = False) -> None:
        """on_submit(current, new) sends the request; the caller reports back through
        show_error() or closes the dialog. temporary: the current password is one an
        administrator handed out (the login said must_change_password)."""
        super().__init__(master)
        self.title("Change password — Parley")
        self.transient(master.winfo_toplevel())
        self.configure(background=palette.bg)
        self.resizable(False, False)
        self.palette = palette
        self.on_submit = on_submit
        self.busy = False
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        body.columnconfigure(1, weight=1)
        ttk.Label(body, text="Change password", font=fonts.title).grid(
            row=0, column=0, columnspan=2, sticky="w")
        hint = (f"An administrator gave you a temporary password: type it as the current "
                f"one, then choose your own (at least {MIN_PASSWORD} characters)."
                if temporary else f"The new one needs at least {MIN_PASSWORD} characters.")
        self.hint = ttk.Label(body, text=hint, foreground=palette.muted, wraplength=360)
        self.hint.grid(row=1, column=0, columnspan=2, sticky="w", pady=(0, 10))
        self.current_var = tk.StringVar()
        self.new_var = tk.StringVar()
        self.repeat_var = tk.StringVar()
        self.entries = []
        for row, (label, var) in enumerate((("Current password", self.current_var),
                                            ("New password", self.new_var),
                                            ("Repeat new password", self.repeat_var)), start=2):
            ttk.Label(body, text=label).grid(row=row, column=0, sticky="w", padx=(0, 10),
                                             pady=3)
            entry = ttk.Entry(body, textvariable=var, show=MASK, width=28)
            entry.grid(row=row, column=1, sticky="ew", pady=3)
            entry.bind("<Return>", lambda e: self.submit())
            self.entries.append(entry)
        self.current_entry, self.new_entry, self.repeat_entry = self.entries
        self.message = ttk.Label(body, text="", foreground=palette.error, wraplength=360)
        self.message.grid(row=5, column=0, columnspan=2, sticky="w", pady=(8, 0))
        buttons = ttk.Frame(body)
        buttons.grid(row=6, column=0, columnspan=2, sticky="e", pady=(12, 0))
        self.ok_button = ttk.Button(buttons, text="OK", style="Accent.TButton", width=8,
                                    command=self.submit)
        self.ok_button.pack(side="left")
        self.cancel_button = ttk.Button(buttons, text="Cancel", width=8, command=self.destroy)
        self.cancel_button.pack(side="left", padx=(8, 0))
        self.bind("<Escape>", lambda e: self.destroy())
        self.current_entry.focus_set()

    def submit(self) -> None:
        if self.busy:  # Enter while the answer is on its way: one request at a time
            return
        current, new = self.current_var.get(), self.new_var.get()
        try:
            check_new_password(current, new, self.repeat_var.get())
        except PasswordChangeError as exc:
            self.show_error(str(exc), exc.field)
            return
        self.set_busy(True)
        self.message.configure(text="Changing…", foreground=self.palette.muted)
        self.on_submit(current, new)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.ok_button.state(["disabled"] if busy else ["!disabled"])

    def show_error(self, text: str, field: str = "current") -> None:
        """The change did not happen: say why, and put the cursor where the fix goes (the
        server's refusals are about the current password: wrong, or too many guesses)."""
        self.set_busy(False)
        self.message.configure(text=text, foreground=self.palette.error)
        entry = {"current": self.current_entry, "new": self.new_entry,
                 "repeat": self.repeat_entry}.get(field, self.current_entry)
        entry.focus_set()
        entry.select_range(0, "end")

    def destroy(self) -> None:
        super().destroy()
        release_variables(self)
