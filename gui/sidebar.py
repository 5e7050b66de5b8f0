"""Left column: quick-switch search, conversations with unread badges, people online."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.chat_state import ChatState, ConvKey, direct_key

from .tkutil import release_variables

PLACEHOLDER = "Jump to…  Ctrl+K"


def key_to_iid(key: ConvKey) -> str:
    return f"{key[0]}:{key[1]}"


def iid_to_key(iid: str) -> ConvKey:
    kind, _, target = iid.partition(":")
    return (kind, target)


class Sidebar(ttk.Frame):
    def __init__(self, master, state: ChatState, fonts, palette,
                 on_open: Callable[[ConvKey], None], on_rooms: Callable[[], None]) -> None:
        super().__init__(master, padding=(8, 8, 4, 8))
        self.state, self.on_open, self.palette = state, on_open, palette
        self.columnconfigure(0, weight=1)
        self.search_var = tk.StringVar()
        self.search = ttk.Entry(self, textvariable=self.search_var)
        self.search.grid(row=0, column=0, sticky="ew")
        self.search.bind("<Return>", self._open_first_match)
        self.search.bind("<Escape>", lambda e: self.search_var.set(""))
        self.search.bind("<Down>", lambda e: self.conversations.focus_set())
        self.search_var.trace_add("write", lambda *a: self.refresh())

        head = ttk.Frame(self)
        head.grid(row=1, column=0, sticky="ew", pady=(10, 2))
        head.columnconfigure(0, weight=1)
        ttk.Label(head, text="Conversations", font=fonts.heading).grid(row=0, column=0,
                                                                       sticky="w")
        self.rooms_button = ttk.Button(head, text="+ Room", style="Toolbutton",
                                       command=on_rooms)
        self.rooms_button.grid(row=0, column=1)

        self.conversations = ttk.Treeview(self, show="tree", columns=("badge",),
                                          selectmode="browse", height=8)
        self.conversations.column("#0", stretch=True, width=180)
        self.conversations.column("badge", width=44, stretch=False, anchor="e")
        self.conversations.tag_configure("unread", font=fonts.bold)
        self.conversations.tag_configure("mention", font=fonts.bold, foreground=palette.accent)
        self.conversations.tag_configure("closed", foreground=palette.muted)
        self.conversations.grid(row=2, column=0, sticky="nsew")
        self.conversations.bind("<<TreeviewSelect>>", self._selected_conversation)
        self.rowconfigure(2, weight=3)

        self.online_label = ttk.Label(self, text="Online", font=fonts.heading)
        self.online_label.grid(row=3, column=0, sticky="w", pady=(12, 2))
        self.people = ttk.Treeview(self, show="tree", selectmode="browse", height=6)
        self.people.column("#0", width=220)
        self.people.tag_configure("me", foreground=palette.muted)
        self.people.grid(row=4, column=0, sticky="nsew")
        self.people.bind("<<TreeviewSelect>>", self._selected_person)
        self.rowconfigure(4, weight=2)
        self._set_placeholder()
        self.refresh()
        self.refresh_people()

    # ------------------------------------------------------------------ search box

    def _set_placeholder(self) -> None:
        # ttk.Entry has no placeholder option: show the hint as a tooltip-like label instead.
        self.hint = ttk.Label(self.search, text=PLACEHOLDER, foreground=self.palette.muted)
        self.hint.place(x=8, rely=0.5, anchor="w")
        self.hint.bind("<Button-1>", lambda e: self.focus_search())
        self.search_var.trace_add("write", lambda *a: self._update_hint())
        self.search.bind("<FocusIn>", lambda e: self._update_hint(), add="+")
        self.search.bind("<FocusOut>", lambda e: self._update_hint(), add="+")

    def _update_hint(self) -> None:
        if self.search_var.get() or self.focus_get() is self.search:
            self.hint.place_forget()
        else:
            self.hint.place(x=8, rely=0.5, anchor="w")

    def focus_search(self) -> None:
        self.search.focus_set()
        self.search.select_range(0, "end")
        self._update_hint()

    def _matches(self, key: ConvKey) -> bool:
        needle = self.search_var.get().strip().lower()
        if not needle:
            return True
        conv = self.state.conversations[key]
        return needle in conv.title.lower() or needle in key[1]

    def _open_first_match(self, _event=None) -> str:
        children = self.conversations.get_children()
        if children:
            self.search_var.set("")
            self.on_open(iid_to_key(children[0]))
        return "break"

    # ------------------------------------------------------------------ lists

    def _label(self, key: ConvKey) -> str:
        conv = self.state.conversations[key]
        if key[0] == "direct":
            dot = "●" if key[1] in self.state.online else "○"
            return f"{dot}  {conv.title}"
        return f"#  {conv.title}"

    def refresh(self) -> None:
        tree = self.conversations
        wanted = [k for k in self.state.ordered_keys() if self._matches(k)]
        iids = [key_to_iid(k) for k in wanted]
        if list(tree.get_children()) != iids:
            tree.delete(*tree.get_children())
            for iid in iids:
                tree.insert("", "end", iid=iid)
        for key, iid in zip(wanted, iids, strict=True):
            conv = self.state.conversations[key]
            badge, tags = "", ()
            if conv.unread:
                badge = f"@ {conv.unread}" if conv.mentions else f"{conv.unread}"
                tags = ("mention",) if conv.mentions or key[0] == "direct" else ("unread",)
            elif not self.state.can_send(key):
                tags = ("closed",)
            tree.item(iid, text=self._label(key), values=(badge,), tags=tags)
        active = key_to_iid(self.state.active) if self.state.active else None
        if active in iids and tree.selection() != (active,):
            tree.selection_set(active)
            tree.see(active)

    def refresh_people(self) -> None:
        people = self.state.online_users()
        self.people.delete(*self.people.get_children())
        for name, display in people:
            me = self.state.is_me(name)
            text = f"{display} (you)" if me else display
            if display.lower() != name.lower():
                text += f"  ·  {name}"
            self.people.insert("", "end", iid=name.lower(), text=text,
                               tags=("me",) if me else ())
        self.online_label.configure(text=f"Online — {len(people)}")

    def _selected_conversation(self, _event=None) -> None:
        sel = self.conversations.selection()
        if sel and iid_to_key(sel[0]) != self.state.active:
            self.on_open(iid_to_key(sel[0]))

    def _selected_person(self, _event=None) -> None:
        sel = self.people.selection()
        if not sel:
            return
        self.people.selection_remove(sel)  # so clicking the same person again works
        if not self.state.is_me(sel[0]):
            self.on_open(direct_key(self.state.name_of(sel[0])))

    def open_person(self, user: str) -> None:
        """What a click on a name in the online list does (tests call this)."""
        self.people.selection_set(user.lower())

    def destroy(self) -> None:
        super().destroy()
        release_variables(self)
