"""The connect-and-log-in screen: server (recent ones remembered), username, password,
Log in / Register, and errors in words next to the field they are about."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.settings import Settings, format_server, parse_server
from protocol.join_code import JoinCode, decode_join_code

from .tkutil import release_variables

FIELDS = ("server", "username", "password", "general")


class LoginView(ttk.Frame):
    def __init__(self, master, settings: Settings, fonts,
                 on_submit: Callable[[str, int, str, str, bool], None], palette, *,
                 on_join_code: Callable[[JoinCode], None] | None = None) -> None:
        super().__init__(master, padding=24)
        self.on_submit = on_submit
        self.on_join_code = on_join_code
        self.palette = palette
        self.busy = False
        self.columnconfigure(0, weight=1)
        self.rowconfigure(0, weight=1)
        card = ttk.Frame(self, padding=8)
        card.grid(row=0, column=0)
        card.columnconfigure(0, weight=1, minsize=340)

        icon = getattr(master.winfo_toplevel(), "_parley_icon", None)
        head = ttk.Label(card, text="  Parley", font=fonts.big, image=icon or "",
                         compound="left")
        head.grid(row=0, column=0, sticky="w")
        ttk.Label(card, text="Chat and share files on your network.",
                  foreground=palette.muted).grid(row=1, column=0, sticky="w", pady=(2, 16))

        self.server_var = tk.StringVar(value=format_server(*settings.servers[0])
                                       if settings.servers else "localhost")
        self.user_var = tk.StringVar(value=settings.last_user)
        self.password_var = tk.StringVar()
        self.errors: dict[str, ttk.Label] = {}
        row = 2
        ttk.Label(card, text="Server").grid(row=row, column=0, sticky="w")
        self.server_box = ttk.Combobox(card, textvariable=self.server_var,
                                       values=[format_server(h, p) for h, p in settings.servers])
        self.server_box.grid(row=row + 1, column=0, sticky="ew", pady=(2, 0))
        row = self._error_row(card, "server", row + 2)

        # A join code (parley://host:port/#fingerprint, printed by the server) fills the
        # server field and vouches for the server's certificate in one paste.
        self.join_var = tk.StringVar()
        join = ttk.Frame(card)
        join.grid(row=row, column=0, sticky="ew", pady=(0, 8))
        join.columnconfigure(0, weight=1)
        ttk.Label(join, text="or paste a join code (parley://…) from the server:",
                  foreground=palette.muted).grid(row=0, column=0, columnspan=2, sticky="w")
        self.join_entry = ttk.Entry(join, textvariable=self.join_var)
        self.join_entry.grid(row=1, column=0, sticky="ew", padx=(0, 4), pady=(2, 0))
        self.join_button = ttk.Button(join, text="Use join code", command=self.use_join_code)
        self.join_button.grid(row=1, column=1, pady=(2, 0))
        self.join_entry.bind("<Return>", lambda e: self.use_join_code())
        row += 1

        # Slot for servers found on the LAN (filled by set_discovered; hidden while empty).
        self.discovered_frame = ttk.Frame(card)
        self.discovered_frame.grid(row=row, column=0, sticky="ew")
        self.discovered_frame.columnconfigure(0, weight=1)
        self.discovered: list[tuple[str, str, int]] = []
        ttk.Style(self).configure("Discovered.Toolbutton", anchor="w")
        row += 1

        ttk.Label(card, text="Username").grid(row=row, column=0, sticky="w")
        self.user_entry = ttk.Entry(card, textvariable=self.user_var)
        self.user_entry.grid(row=row + 1, column=0, sticky="ew", pady=(2, 0))
        row = self._error_row(card, "username", row + 2)
        ttk.Label(card, text="Password").grid(row=row, column=0, sticky="w")
        self.password_entry = ttk.Entry(card, textvariable=self.password_var, show="•")
        self.password_entry.grid(row=row + 1, column=0, sticky="ew", pady=(2, 0))
        row = self._error_row(card, "password", row + 2)

        buttons = ttk.Frame(card)
        buttons.grid(row=row, column=0, sticky="ew", pady=(8, 0))
        buttons.columnconfigure((0, 1), weight=1, uniform="b")
        self.login_button = ttk.Button(buttons, text="Log in", style="Accent.TButton",
                                       command=lambda: self.submit(False))
        self.login_button.grid(row=0, column=0, sticky="ew", padx=(0, 4))
        self.register_button = ttk.Button(buttons, text="Register",
                                          command=lambda: self.submit(True))
        self.register_button.grid(row=0, column=1, sticky="ew", padx=(4, 0))
        self.progress = ttk.Progressbar(card, mode="indeterminate")
        self.progress.grid(row=row + 1, column=0, sticky="ew", pady=(12, 0))
        self.progress.grid_remove()
        row = self._error_row(card, "general", row + 2)
        self.status = ttk.Label(card, text="", foreground=palette.muted)
        self.status.grid(row=row, column=0, sticky="w")

        for w in (self.server_box, self.user_entry, self.password_entry):
            w.bind("<Return>", lambda e: self.submit(False))
        focus = self.password_entry if self.user_var.get() else self.user_entry
        self.after_idle(focus.focus_set)

    def _error_row(self, card, name: str, row: int) -> int:
        label = ttk.Label(card, text="", foreground=self.palette.error, wraplength=340,
                          justify="left")
        label.grid(row=row, column=0, sticky="w", pady=(2, 8))
        self.errors[name] = label
        return row + 1

    # ------------------------------------------------------------------ API

    def use_join_code(self, text: str | None = None) -> bool:
        """Apply a pasted join code: fill the server field and pin its fingerprint."""
        try:
            code = decode_join_code(self.join_var.get() if text is None else text)
        except ValueError as exc:
            self.show_error("server", str(exc))
            return False
        self.errors["server"].configure(text="")
        self.server_var.set(format_server(code.host, code.port))
        self.join_var.set("")
        if self.on_join_code is not None:
            self.on_join_code(code)
        self.status.configure(text="Join code accepted: the server's identity is known.")
        (self.password_entry if self.user_var.get() else self.user_entry).focus_set()
        return True

    def submit(self, register: bool) -> None:
        if self.busy:
            return
        self.clear_errors()
        pasted = self.server_var.get()  # a join code pasted into the server field works too
        if pasted.strip().lower().startswith("parley://") and not self.use_join_code(pasted):
            return
        try:
            host, port = parse_server(self.server_var.get())
        except ValueError as exc:
            self.show_error("server", str(exc))
            return
        user, password = self.user_var.get().strip(), self.password_var.get()
        if not user:
            self.show_error("username", "Enter your username.")
            return
        if not password:
            self.show_error("password", "Enter your password.")
            return
        self.on_submit(host, port, user, password, register)

    def show_error(self, field: str, text: str) -> None:
        self.errors[field if field in FIELDS else "general"].configure(text=text)
        target = {"server": self.server_box, "username": self.user_entry,
                  "password": self.password_entry}.get(field)
        if target is not None:
            target.focus_set()
            if field == "password":
                self.password_entry.select_range(0, "end")

    def error_text(self, field: str) -> str:
        return str(self.errors[field].cget("text"))

    def clear_errors(self) -> None:
        for label in self.errors.values():
            label.configure(text="")

    def set_busy(self, busy: bool, text: str = "") -> None:
        self.busy = busy
        state = ["disabled"] if busy else ["!disabled"]
        for w in (self.login_button, self.register_button):
            w.state(state)
        if busy:
            self.progress.grid()
            self.progress.start(15)
        else:
            self.progress.stop()
            self.progress.grid_remove()
        self.status.configure(text=text)

    def set_discovered(self, servers: list[tuple[str, str, int]]) -> None:
        """Show servers found on the LAN; clicking one fills the Server field."""
        self.discovered = list(servers)
        for child in self.discovered_frame.winfo_children():
            child.destroy()
        if not servers:
            return
        ttk.Label(self.discovered_frame, text="Found on your network:",
                  foreground=self.palette.muted).grid(row=0, column=0, sticky="w")
        for i, (name, host, port) in enumerate(servers, start=1):
            address = format_server(host, port)
            ttk.Button(self.discovered_frame, text=f"{name}  —  {address}",
                       style="Discovered.Toolbutton",
                       command=lambda a=address: self._pick(a)).grid(row=i, column=0,
                                                                     sticky="ew")
        ttk.Frame(self.discovered_frame, height=8).grid(row=len(servers) + 1, column=0)

    def _pick(self, address: str) -> None:
        self.server_var.set(address)
        (self.password_entry if self.user_var.get() else self.user_entry).focus_set()

    def destroy(self) -> None:
        super().destroy()
        release_variables(self)
