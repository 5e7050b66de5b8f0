"""The middle pane: who you are talking to, the transcript, and (for rooms) the members."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.chat_state import ChatState, ConvKey, Entry

from .transcript import Transcript

MEMBERS_MIN_WIDTH = 170
MEMBERS_MAX_WIDTH = 340  # longer names are cut rather than squeeze the transcript
COPY_LABEL = "Copy text"
EDIT_LABEL = "Edit message…"
DELETE_LABEL = "Delete message…"


class ConversationView(ttk.Frame):
    def __init__(self, master, state: ChatState, fonts, palette, *,
                 on_retry: Callable[[Entry], None], on_leave: Callable[[str], None],
                 on_close_room: Callable[[str], None],
                 on_open_person: Callable[[str], None],
                 on_earlier: Callable[[], None],
                 on_delete: Callable[[Entry], None] = lambda entry: None,
                 on_edit: Callable[[Entry], None] = lambda entry: None) -> None:
        super().__init__(master)
        self.state = state
        self.on_delete, self.on_edit = on_delete, on_edit
        self.on_leave, self.on_close_room = on_leave, on_close_room
        self.on_open_person = on_open_person
        self.key: ConvKey | None = None
        self.palette = palette
        self.fonts = fonts
        self.columnconfigure(0, weight=1)
        self.rowconfigure(1, weight=1)

        header = ttk.Frame(self, padding=(14, 10, 10, 6))
        header.grid(row=0, column=0, columnspan=2, sticky="ew")
        header.columnconfigure(0, weight=1)
        self.title = ttk.Label(header, text="", font=fonts.title)
        self.title.grid(row=0, column=0, sticky="w")
        self.subtitle = ttk.Label(header, text="", foreground=palette.muted)
        self.subtitle.grid(row=1, column=0, sticky="w")
        self.room_buttons = ttk.Frame(header)
        self.room_buttons.grid(row=0, column=1, rowspan=2, sticky="e")
        self.members_button = ttk.Button(self.room_buttons, text="Members",
                                         command=self.toggle_members)
        self.leave_button = ttk.Button(self.room_buttons, text="Leave room",
                                       command=lambda: self.on_leave(self.key[1]))
        self.close_button = ttk.Button(self.room_buttons, text="Close room",
                                       command=lambda: self.on_close_room(self.key[1]))
        ttk.Separator(self).grid(row=0, column=0, columnspan=2, sticky="sew")

        self.transcript = Transcript(self, fonts, palette, on_retry, on_earlier,
                                     on_menu=self.post_message_menu)
        self.transcript.grid(row=1, column=0, sticky="nsew")
        self.message_menu = tk.Menu(self, tearoff=False)
        self.menu_entry: Entry | None = None  # what the message menu was opened on

        self.members_frame = ttk.Frame(self, padding=(8, 8, 8, 8))
        ttk.Label(self.members_frame, text="Members", font=fonts.heading).pack(anchor="w")
        self.members = ttk.Treeview(self.members_frame, show="tree", selectmode="browse",
                                    height=10)
        self.members.column("#0", width=MEMBERS_MIN_WIDTH)
        self.members.pack(fill="both", expand=True, pady=(4, 0))
        self.members.bind("<Double-1>", self._member_clicked)
        self.members.tag_configure("creator", font=fonts.bold)
        self.show_members = True

    # ------------------------------------------------------------------ API

    def open(self, key: ConvKey) -> None:
        self.key = key
        self.refresh_header()
        self.transcript.render_all = False
        self.reload()

    def reload(self, keep_view: bool = False) -> None:
        """Redraw the transcript; keep_view keeps the top entry in place (older messages were
        put in above it), otherwise the view goes to the newest message."""
        if self.key is not None:
            conv = self.state.conversation(self.key)
            self.transcript.show(conv.entries, conv.earlier, keep_view=keep_view)

    def refresh_header(self) -> None:
        key = self.key
        if key is None:
            return
        conv = self.state.conversation(key)
        for w in self.room_buttons.winfo_children():
            w.pack_forget()
        if key[0] == "public":
            self.title.configure(text="# Public")
            self.subtitle.configure(text=f"Everyone on the server · {len(self.state.online)} "
                                         "online")
        elif key[0] == "direct":
            online = key[1] in self.state.online
            name = self.state.name_of(key[1])
            self.title.configure(text=f"@ {conv.title}")
            self.subtitle.configure(text=f"{name} · " + ("online" if online else
                                                        "offline — messages wait for them"))
        else:
            info = self.state.rooms.get(key[1])
            self.title.configure(text=f"# {conv.title}")
            if info and info.joined:
                creator = self.state.display_of(info.creator) if info.creator else "?"
                self.subtitle.configure(text=f"Room · {len(info.members)} members · "
                                             f"created by {creator}")
                self.members_button.pack(side="left", padx=(0, 6))
                self.leave_button.pack(side="left", padx=(0, 6))
                if self.state.i_created(key[1]):
                    self.close_button.pack(side="left")
            else:
                self.subtitle.configure(text="This room is closed.")
        self.refresh_members()

    def refresh_members(self) -> None:
        key = self.key
        info = self.state.rooms.get(key[1]) if key and key[0] == "room" else None
        if not (info and info.joined and self.show_members):
            self.members_frame.grid_remove()
            return
        self.members_frame.grid(row=1, column=1, sticky="ns")
        self.members.delete(*self.members.get_children())
        widest = 0
        for name, display in sorted(info.members.items(), key=lambda m: m[1].lower()):
            creator = name == info.creator.lower()
            label = display + ("  (creator)" if creator else "")
            if name not in self.state.online:
                label += "  · away"
            self.members.insert("", "end", iid=name, text=label,
                                tags=("creator",) if creator else ())
            widest = max(widest, self.fonts.bold.measure(label))
        # Wide enough for the longest name (bold is the widest style used), within bounds.
        self.members.column("#0", width=min(MEMBERS_MAX_WIDTH,
                                            max(MEMBERS_MIN_WIDTH, widest + 40)))

    # ------------------------------------------------------------------ message menu

    def prepare_message_menu(self, entry: Entry) -> tk.Menu:
        """Fill the right-click menu for entry: Copy for anything, Edit and Delete only where
        the server would allow them (so nobody is offered what would be refused); Edit also
        needs a message box to edit in (not in a closed room)."""
        self.menu_entry = entry
        menu = self.message_menu
        menu.delete(0, "end")
        menu.add_command(label=COPY_LABEL, command=self.copy_entry)
        editable = (self.state.may_edit(entry) and self.key is not None
                    and self.state.can_send(self.key))
        if editable or self.state.may_delete(entry):
            menu.add_separator()
        if editable:
            menu.add_command(label=EDIT_LABEL, command=lambda: self.on_edit(entry))
        if self.state.may_delete(entry):
            menu.add_command(label=DELETE_LABEL, command=lambda: self.on_delete(entry))
        return menu

    def post_message_menu(self, entry: Entry, event) -> None:
        self.prepare_message_menu(entry).tk_popup(event.x_root, event.y_root)

    def copy_entry(self) -> None:
        if self.menu_entry is not None:
            self.clipboard_clear()
            self.clipboard_append(self.menu_entry.text)

    def toggle_members(self) -> None:
        self.show_members = not self.show_members
        self.refresh_members()

    def _member_clicked(self, _event=None) -> None:
        sel = self.members.selection()
        if sel and not self.state.is_me(sel[0]):
            self.on_open_person(sel[0])

    def apply_palette(self, palette) -> None:
        self.palette = palette
        self.subtitle.configure(foreground=palette.muted)
        self.transcript.apply_palette(palette)
