"""Create or enter a room: the server's room list (name, creator, members) and a name box.
Entering a name that does not exist yet creates the room, with you as its creator."""

from __future__ import annotations

import re
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from .tkutil import release_variables

ROOM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


class RoomsDialog(tk.Toplevel):
    def __init__(self, master, fonts, palette, *, on_join: Callable[[str], None],
                 on_refresh: Callable[[], None]) -> None:
        super().__init__(master)
        self.title("Rooms — Parley")
        self.transient(master.winfo_toplevel())
        self.configure(background=palette.bg)
        self.on_join = on_join
        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        body.columnconfigure(0, weight=1)
        body.rowconfigure(2, weight=1)
        ttk.Label(body, text="Rooms", font=fonts.title).grid(row=0, column=0, sticky="w")
        ttk.Label(body, text="Enter a room to join it; a new name creates it.",
                  foreground=palette.muted).grid(row=1, column=0, sticky="w", pady=(0, 8))
        self.tree = ttk.Treeview(body, columns=("creator", "members"), height=8,
                                 selectmode="browse")
        self.tree.heading("#0", text="Room")
        self.tree.heading("creator", text="Created by")
        self.tree.heading("members", text="Members")
        self.tree.column("#0", width=180)
        self.tree.column("creator", width=120)
        self.tree.column("members", width=80, anchor="e")
        self.tree.grid(row=2, column=0, columnspan=2, sticky="nsew")
        self.tree.bind("<<TreeviewSelect>>", self._picked)
        self.tree.bind("<Double-1>", lambda e: self.join())
        row = ttk.Frame(body)
        row.grid(row=3, column=0, columnspan=2, sticky="ew", pady=(10, 0))
        row.columnconfigure(0, weight=1)
        self.name_var = tk.StringVar()
        self.entry = ttk.Entry(row, textvariable=self.name_var)
        self.entry.grid(row=0, column=0, sticky="ew")
        self.entry.bind("<Return>", lambda e: self.join())
        self.join_button = ttk.Button(row, text="Join / Create", style="Accent.TButton",
                                      command=self.join)
        self.join_button.grid(row=0, column=1, padx=(8, 0))
        ttk.Button(row, text="Refresh", command=on_refresh).grid(row=0, column=2, padx=(8, 0))
        self.error = ttk.Label(body, text="", foreground=palette.error)
        self.error.grid(row=4, column=0, columnspan=2, sticky="w", pady=(6, 0))
        self.bind("<Escape>", lambda e: self.destroy())
        self.entry.focus_set()

    def set_rooms(self, rooms: list[dict]) -> None:
        self.tree.delete(*self.tree.get_children())
        for r in sorted(rooms, key=lambda r: r["name"].lower()):
            self.tree.insert("", "end", iid=r["name"], text=r["name"],
                             values=(r.get("creator", ""), r.get("members", 0)))

    def _picked(self, _event=None) -> None:
        sel = self.tree.selection()
        if sel:
            self.name_var.set(sel[0])

    def join(self) -> None:
        name = self.name_var.get().strip()
        if not ROOM_NAME.match(name):
            self.error.configure(text="Room names are 1–32 letters, digits, _ - or .")
            return
        self.error.configure(text="")
        self.on_join(name)

    def show_error(self, text: str) -> None:
        self.error.configure(text=text)

    def destroy(self) -> None:
        super().destroy()
        release_variables(self)
