"""Search messages: a box, a Search button, the results (where, who, when, a line of text
around the match) and a line saying how it went.

Not modal: it stays open while the main window shows what was found, so that one can go
through several results in a row. A double-click (or Enter) on a result asks the main
window to open that conversation at the message. Searches are spaced so that the server's
limit (one every half second) is never hit by typing fast; a search asked for while another
is under way replaces it, and a late answer to the one replaced is ignored. Tests drive it
with the variables, invoke() and event_generate().
"""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable
from tkinter import font as tkfont
from tkinter import ttk

from parley_client.chat_state import PUBLIC, ConvKey
from parley_client.search import (
    CLEARED_SENTENCE,
    SearchPacer,
    SearchQueryError,
    SearchRow,
    check_query,
    further_back_sentence,
    not_loaded_sentence,
    summary,
)

from .tkutil import release_variables

TITLE = "Search messages — Parley"
MENU_LABEL = "Search messages…"
COLUMNS = (("where", "In", 120), ("who", "From", 120), ("when", "When", 130),
           ("excerpt", "Message", 520))
FITTED = ("where", "who", "when")  # narrowed to their contents, leaving the rest to the text
FIT_BOUNDS = (60, 220)  # pixels
GO_TO_POLL_MS = 50  # how often a result waits for its conversation's history to arrive
GO_TO_WAIT_S = 15.0  # and for how long at most (the request's own timeout is shorter)


class SearchDialog(tk.Toplevel):
    def __init__(self, master, fonts, palette, *,
                 on_search: Callable[[str, Callable[[dict | None, str | None], None]], None],
                 to_rows: Callable[[list[dict], str], list[SearchRow]],
                 on_open: Callable[[SearchRow, Callable[[str], None]], None]) -> None:
        """on_search(query, on_done) asks the server; on_done(result, None) with its answer
        or on_done(None, sentence) if it refused. to_rows(messages, query) makes the rows.
        on_open(row, tell) shows a result in the main window; tell(sentence) if it cannot."""
        super().__init__(master)
        self.title(TITLE)
        self.transient(master.winfo_toplevel())
        self.configure(background=palette.bg)
        self.minsize(520, 300)
        self.palette = palette
        self.on_search, self.to_rows, self.on_open = on_search, to_rows, on_open
        self.rows: list[SearchRow] = []
        self.busy = False
        self.status_is_error = False
        self._seq = 0  # the search whose answer is awaited; older answers are stale
        self._pacer = SearchPacer()
        self._queued_id: str | None = None  # after() of a search waiting for its turn

        body = ttk.Frame(self, padding=16)
        body.pack(fill="both", expand=True)
        body.columnconfigure(0, weight=1)
        body.rowconfigure(3, weight=1)
        ttk.Label(body, text="Search messages", font=fonts.title).grid(row=0, column=0,
                                                                      sticky="w")
        self.hint = ttk.Label(body, text="In Public, the rooms you are in and your private "
                              "conversations. Double-click a result to go to it.",
                              foreground=palette.muted)
        self.hint.grid(row=1, column=0, sticky="w", pady=(0, 8))
        row = ttk.Frame(body)
        row.grid(row=2, column=0, sticky="ew", pady=(0, 8))
        row.columnconfigure(0, weight=1)
        self.query_var = tk.StringVar()
        self.entry = ttk.Entry(row, textvariable=self.query_var)
        self.entry.grid(row=0, column=0, sticky="ew")
        self.entry.bind("<Return>", lambda e: self.search())
        self.search_button = ttk.Button(row, text="Search", style="Accent.TButton",
                                        command=self.search)
        self.search_button.grid(row=0, column=1, padx=(8, 0))

        table = ttk.Frame(body)
        table.grid(row=3, column=0, sticky="nsew")
        table.columnconfigure(0, weight=1)
        table.rowconfigure(0, weight=1)
        self.tree = ttk.Treeview(table, columns=[c[0] for c in COLUMNS], show="headings",
                                 selectmode="browse", height=12)
        for name, heading, width in COLUMNS:
            self.tree.heading(name, text=heading, anchor="w")
            self.tree.column(name, width=width, minwidth=60, anchor="w",
                             stretch=name == "excerpt")
        self.tree.grid(row=0, column=0, sticky="nsew")
        bar = ttk.Scrollbar(table, orient="vertical", command=self.tree.yview)
        bar.grid(row=0, column=1, sticky="ns")
        self.tree.configure(yscrollcommand=bar.set)
        self.tree.bind("<Double-1>", self._double_clicked)
        self.tree.bind("<Return>", lambda e: self.open_selected())

        bottom = ttk.Frame(body)
        bottom.grid(row=4, column=0, sticky="ew", pady=(8, 0))
        bottom.columnconfigure(0, weight=1)
        self.status = ttk.Label(bottom, text="", foreground=palette.muted, wraplength=560)
        self.status.grid(row=0, column=0, sticky="w")
        ttk.Button(bottom, text="Close", command=self.destroy).grid(row=0, column=1,
                                                                   padx=(8, 0))
        self.bind("<Escape>", lambda e: self.destroy())
        self.entry.focus_set()

    # ------------------------------------------------------------------ searching

    def search(self) -> None:
        """Search for what is in the box: now, or as soon as the server's limit allows."""
        try:
            query = check_query(self.query_var.get())
        except SearchQueryError as exc:
            self.show_status(str(exc), error=True)
            return
        self._seq += 1
        if self._queued_id is not None:
            self.after_cancel(self._queued_id)
            self._queued_id = None
        self.set_busy(True)
        self.show_status("Searching…")
        wait = self._pacer.wait()
        if wait > 0:
            self._queued_id = self.after(int(wait * 1000) + 1, self._send, query, self._seq)
        else:
            self._send(query, self._seq)

    def _send(self, query: str, seq: int) -> None:
        self._queued_id = None
        self._pacer.sent()
        self.on_search(query, lambda result, error: self._answered(seq, query, result, error))

    def _answered(self, seq: int, query: str, result: dict | None, error: str | None) -> None:
        if seq != self._seq or not self.winfo_exists():  # replaced, or closed meanwhile
            return
        self.set_busy(False)
        if result is None:
            self.show_status(error or "The search failed.", error=True)
            return
        self.show_results(self.to_rows(result.get("messages", []), query),
                          bool(result.get("truncated")), query)

    def show_results(self, rows: list[SearchRow], truncated: bool, query: str) -> None:
        self.rows = rows
        self.tree.delete(*self.tree.get_children())
        for i, r in enumerate(rows):
            self.tree.insert("", "end", iid=str(i), values=(r.where, r.who, r.when, r.excerpt))
        self.show_status(summary(len(rows), truncated, query))
        self._fit_columns()
        if rows:
            self.tree.selection_set("0")
            self.tree.focus("0")

    def _fit_columns(self) -> None:
        """Where, who and when as wide as their longest value (within bounds): the message
        column, which stretches, gets the rest of the width."""
        name = ttk.Style(self).lookup("Treeview", "font") or "TkDefaultFont"
        try:
            font = tkfont.nametofont(name, root=self)
        except tk.TclError:  # a font description rather than a named font
            font = tkfont.nametofont("TkDefaultFont", root=self)
        low, high = FIT_BOUNDS
        for column, heading, _width in COLUMNS:
            if column in FITTED:
                values = [heading] + [self.tree.set(iid, column)
                                      for iid in self.tree.get_children()]
                widest = max(font.measure(v) for v in values) + 24  # the cell's padding
                self.tree.column(column, width=max(low, min(high, widest)))

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.configure(cursor="watch" if busy else "")

    def apply_palette(self, palette) -> None:
        """The theme was switched while the window is open (ttk widgets follow by themselves)."""
        self.palette = palette
        self.configure(background=palette.bg)
        self.hint.configure(foreground=palette.muted)
        self.show_status(self.status.cget("text"), error=self.status_is_error)

    def show_status(self, text: str, error: bool = False) -> None:
        if self.winfo_exists():
            self.status_is_error = error
            self.status.configure(text=text, foreground=self.palette.error if error
                                  else self.palette.muted)

    # ------------------------------------------------------------------ opening a result

    def _double_clicked(self, event) -> str | None:
        iid = self.tree.identify_row(event.y)
        if not iid:  # a heading or the empty space below the rows
            return None
        self.tree.selection_set(iid)
        self.open_selected()
        return "break"

    def selected_row(self) -> SearchRow | None:
        sel = self.tree.selection()
        return self.rows[int(sel[0])] if sel else None

    def open_selected(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.on_open(row, lambda sentence: self.show_status(sentence))
            # Opening a conversation puts the cursor in its message box; keep it here, so
            # that Down and Enter go on to the next result.
            self.after_idle(self._keep_focus)

    def _keep_focus(self) -> None:
        if self.winfo_exists():
            self.tree.focus_set()

    def destroy(self) -> None:
        if self._queued_id is not None:
            self.after_cancel(self._queued_id)
            self._queued_id = None
        super().destroy()
        release_variables(self)


class GoToMessage:
    """The main window's side of a search result: open its conversation and, once that is
    on screen with its history, scroll to the message and highlight it. If the conversation
    does not hold it (it is older than the pages loaded), say so: the user pages back with
    "Load earlier messages"; nothing is loaded for them. One at a time: a newer one, or
    going to another conversation meanwhile, drops the one before."""

    def __init__(self, win) -> None:
        self.win = win
        self._pending: tuple | None = None  # (key, msg_id, tell, deadline)
        self._after_id: str | None = None

    def start(self, key: ConvKey, msg_id: int, tell: Callable[[str], None] | None) -> None:
        """tell(sentence) also gets what the status bar says if the message is not shown."""
        self.cancel()
        win = self.win
        win.actions.open(key)
        if win.state.active != key:  # not opened (private messages are off): it said why
            return
        self._pending = (key, msg_id, tell, time.monotonic() + GO_TO_WAIT_S)
        # After the redraw that open() queued (idle callbacks run in order).
        self._after_id = win.after_idle(self._try)

    def _try(self) -> None:
        self._after_id = None
        if self._pending is None:
            return
        key, msg_id, tell, deadline = self._pending
        win = self.win
        if win.state.active != key:  # the user went elsewhere meanwhile
            self._pending = None
            return
        conv = win.state.conversation(key)
        waiting = (conv.history_state == "loading" or win.redraw_pending
                   or win.conversation.key != key)
        if waiting and time.monotonic() < deadline:
            self._after_id = win.after(GO_TO_POLL_MS, self._try)
            return
        self._pending = None
        entry = next((e for e in conv.entries if e.msg_id == msg_id), None)
        if entry is not None and win.conversation.key == key \
                and win.conversation.transcript.highlight(entry):
            return
        where = conv.title if key[0] == "direct" else \
            "Public" if key == PUBLIC else f"#{conv.title}"
        if msg_id <= conv.cleared_up_to:
            sentence = CLEARED_SENTENCE
        elif conv.history_state != "loaded":  # the history request failed or is still out
            sentence = not_loaded_sentence(where)
        else:
            sentence = further_back_sentence(where)
        win.report(sentence)
        if tell is not None:
            tell(sentence)

    def cancel(self) -> None:
        self._pending = None
        if self._after_id is not None:
            self.win.after_cancel(self._after_id)
            self._after_id = None
