"""The shared-files tab: a sortable, searchable list of the server's files, with Download
(to a folder the user picks) and Upload, and the transfers panel underneath."""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

from parley_client.chat_state import ChatState
from parley_client.units import human_size

from .tkutil import release_variables

COLUMNS = (("name", "Name", 320), ("size", "Size", 90), ("mtime", "Date", 140),
           ("uploader", "Shared by", 120))


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


class FilesView(ttk.Frame):
    def __init__(self, master, state: ChatState, fonts, palette, *,
                 on_download: Callable[[list[str]], None], on_upload: Callable[[], None],
                 on_pick_folder: Callable[[], None], download_dir: Path) -> None:
        super().__init__(master, padding=(12, 10, 12, 6))
        self.state, self.on_download = state, on_download
        self.sort_column, self.sort_reverse = "name", False
        self.columnconfigure(0, weight=1)
        self.rowconfigure(1, weight=1)

        bar = ttk.Frame(self)
        bar.grid(row=0, column=0, sticky="ew", pady=(0, 8))
        bar.columnconfigure(1, weight=1)
        ttk.Label(bar, text="Shared files", font=fonts.title).grid(row=0, column=0,
                                                                  padx=(0, 16))
        self.filter_var = tk.StringVar()
        ttk.Label(bar, text="Filter", foreground=palette.muted).grid(row=0, column=1,
                                                                     sticky="e", padx=(0, 6))
        self.filter_entry = ttk.Entry(bar, textvariable=self.filter_var, width=28)
        self.filter_entry.grid(row=0, column=2, sticky="e", padx=(0, 12))
        self.filter_var.trace_add("write", lambda *a: self.refresh())
        self.download_button = ttk.Button(bar, text="Download", style="Accent.TButton",
                                          command=self.download_selected)
        self.download_button.grid(row=0, column=3, padx=(0, 6))
        self.upload_button = ttk.Button(bar, text="Upload…", command=on_upload)
        self.upload_button.grid(row=0, column=4)

        frame = ttk.Frame(self)
        frame.grid(row=1, column=0, sticky="nsew")
        frame.columnconfigure(0, weight=1)
        frame.rowconfigure(0, weight=1)
        self.tree = ttk.Treeview(frame, columns=[c[0] for c in COLUMNS], show="headings",
                                 selectmode="extended")
        for cid, title, width in COLUMNS:
            self.tree.heading(cid, text=title, command=lambda c=cid: self.sort_by(c))
            self.tree.column(cid, width=width, stretch=cid == "name",
                             anchor="e" if cid == "size" else "w")
        self.tree.grid(row=0, column=0, sticky="nsew")
        scroll = ttk.Scrollbar(frame, orient="vertical", command=self.tree.yview)
        scroll.grid(row=0, column=1, sticky="ns")
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.bind("<Double-1>", lambda e: self.download_selected())
        self.tree.bind("<Return>", lambda e: self.download_selected())

        where = ttk.Frame(self)
        where.grid(row=2, column=0, sticky="ew", pady=(6, 0))
        self.empty = ttk.Label(where, text="", foreground=palette.muted)
        self.empty.pack(side="left")
        ttk.Button(where, text="Change…", style="Toolbutton",
                   command=on_pick_folder).pack(side="right")
        self.folder_label = ttk.Label(where, text="", foreground=palette.muted)
        self.folder_label.pack(side="right", padx=(0, 6))
        self.set_download_dir(download_dir)
        self.refresh()

    def set_download_dir(self, path: Path) -> None:
        self.folder_label.configure(text=f"Downloads go to {path}")

    def sort_by(self, column: str) -> None:
        if self.sort_column == column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, column in ("size", "mtime")
        self.refresh()

    def visible_names(self) -> list[str]:
        return list(self.tree.get_children())

    def refresh(self) -> None:
        needle = self.filter_var.get().strip().lower()
        files = [f for f in self.state.files.values()
                 if not needle or needle in f["name"].lower()
                 or needle in (f.get("uploader") or "").lower()]
        col = self.sort_column

        def sort_key(f):
            value = f.get(col)
            if col in ("size", "mtime"):
                return value or 0
            return (value or "").lower()

        files.sort(key=sort_key, reverse=self.sort_reverse)
        selected = set(self.tree.selection())
        self.tree.delete(*self.tree.get_children())
        for f in files:
            uploader = f.get("uploader") or ""
            self.tree.insert("", "end", iid=f["name"], values=(
                f["name"], human_size(f.get("size", 0)), _date(f.get("mtime", 0)),
                self.state.display_of(uploader) if uploader else "—"))
        keep = [n for n in selected if self.tree.exists(n)]
        if keep:
            self.tree.selection_set(keep)
        for cid, title, _w in COLUMNS:
            arrow = (" ▼" if self.sort_reverse else " ▲") if cid == col else ""
            self.tree.heading(cid, text=title + arrow)
        total = len(self.state.files)
        self.empty.configure(text="No files shared yet — Upload one." if not total else
                             f"{len(files)} of {total} files" if needle else f"{total} files")

    def download_selected(self) -> None:
        names = list(self.tree.selection())
        if names:
            self.on_download(names)

    def focus_filter(self) -> None:
        self.filter_entry.focus_set()
        self.filter_entry.select_range(0, "end")

    def destroy(self) -> None:
        super().destroy()
        release_variables(self)
