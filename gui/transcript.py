"""The read-only message pane: a tk.Text with tags, rendered from ChatState entries.

Messages are grouped: consecutive messages by one sender within a few minutes share one
header (name + time). Own messages sit on a faint band, mentions of you are highlighted,
system notices are small, grey and centred, and a day separator starts each new day.
New entries are appended without redrawing; the view only follows new messages if it was
already scrolled to the bottom (or the message is yours), so reading back is never yanked.
"""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.chat_state import Entry

from .theme import Palette, sender_colour

MAX_RENDERED = 500
UNREAD_RULE = "─" * 14  # the "New messages" divider, drawn with box-drawing characters
EDITED_MARK = " (edited)"  # after the text of a message its sender changed
FOUND_SECONDS = 2.0  # how long a message gone to from the search window stays highlighted


def day_label(ts: float, now: float | None = None) -> str:
    day = time.localtime(ts)[:3]
    now = now if now is not None else time.time()
    if day == time.localtime(now)[:3]:
        return "Today"
    if day == time.localtime(now - 86400)[:3]:
        return "Yesterday"
    return time.strftime("%A %d %B %Y", time.localtime(ts))


class Transcript(ttk.Frame):
    def __init__(self, master, fonts, palette: Palette,
                 on_retry: Callable[[Entry], None],
                 on_earlier: Callable[[], None] = lambda: None,
                 on_menu: Callable[[Entry, tk.Event], None] = lambda entry, event: None
                 ) -> None:
        super().__init__(master)
        self.fonts, self.on_retry, self.on_earlier = fonts, on_retry, on_earlier
        self.on_menu = on_menu  # a right-click on an entry: on_menu(entry, event)
        self.rowconfigure(0, weight=1)
        self.columnconfigure(0, weight=1)
        self.text = tk.Text(self, wrap="word", state="disabled", relief="flat",
                            borderwidth=0, highlightthickness=0, padx=14, pady=10,
                            font=fonts.body, cursor="arrow", takefocus=False)
        self.text.grid(row=0, column=0, sticky="nsew")
        bar = ttk.Scrollbar(self, orient="vertical", command=self.text.yview)
        bar.grid(row=0, column=1, sticky="ns")
        self.text.configure(yscrollcommand=bar.set)
        aqua = self.text.tk.call("tk", "windowingsystem") == "aqua"
        for seq in ("<Button-2>", "<Control-Button-1>") if aqua else ("<Button-3>",):
            self.text.bind(seq, self._right_click)
        self._entries: dict[int, Entry] = {}
        self._last_day: tuple | None = None
        # Only the newest MAX_RENDERED entries are drawn, until the user asks for earlier
        # ones; from then on (until another conversation is opened) all that are held.
        self.render_all = False
        self._source: list[Entry] = []
        self._earlier = "unknown"
        self._found_id: str | None = None  # after() that takes the "found" highlight away
        self.apply_palette(palette)

    def apply_palette(self, pal: Palette) -> None:
        self.palette = pal
        t, f = self.text, self.fonts
        t.configure(background=pal.bg, foreground=pal.fg, selectbackground=pal.select_bg,
                    selectforeground=pal.fg, inactiveselectbackground=pal.select_bg)
        t.tag_configure("header", spacing1=10)
        t.tag_configure("name", font=f.bold)
        t.tag_configure("time", font=f.small, foreground=pal.muted)
        t.tag_configure("body", spacing3=2, lmargin1=0, lmargin2=0)
        t.tag_configure("own", background=pal.own_bg, lmargincolor=pal.own_bg)
        t.tag_configure("mention", background=pal.mention_bg, lmargincolor=pal.mention_bg)
        t.tag_configure("notice", font=f.notice, foreground=pal.muted, justify="center",
                        spacing1=6, spacing3=6)
        t.tag_configure("day", font=f.heading, foreground=pal.muted, justify="center",
                        spacing1=14, spacing3=4)
        t.tag_configure("pending", foreground=pal.muted)
        t.tag_configure("edited", font=f.small, foreground=pal.muted)
        t.tag_configure("status", font=f.small, foreground=pal.muted)
        t.tag_configure("failed", font=f.small, foreground=pal.error, underline=True)
        t.tag_bind("failed", "<Enter>", lambda e: t.configure(cursor="hand2"))
        t.tag_bind("failed", "<Leave>", lambda e: t.configure(cursor="arrow"))
        t.tag_configure("earlier", font=f.notice, foreground=pal.muted, justify="center",
                        spacing1=4, spacing3=8)
        t.tag_configure("earlier_link", foreground=pal.accent, underline=True)
        t.tag_bind("earlier_link", "<Enter>", lambda e: t.configure(cursor="hand2"))
        t.tag_bind("earlier_link", "<Leave>", lambda e: t.configure(cursor="arrow"))
        t.tag_bind("earlier_link", "<Button-1>", lambda e: self.show_earlier())
        t.tag_configure("unread", font=f.small, foreground=pal.error, justify="center",
                        spacing1=8, spacing3=2)
        t.tag_configure("name_own", foreground=pal.accent)
        for i, colour in enumerate(pal.senders):
            t.tag_configure(f"name{i}", foreground=colour)
        t.tag_configure("found", background=pal.select_bg)
        t.tag_raise("found")  # over the own and mention bands
        t.tag_raise("sel")

    # ------------------------------------------------------------------ rendering

    def show(self, entries: list[Entry], earlier: str = "unknown", *,
             keep_view: bool = False) -> None:
        """Replace everything with these entries (conversation switch, history, clear).
        earlier is the conversation's ChatState.earlier: what the top line offers. keep_view
        keeps the entry at the top of the view in place (older ones went in above it);
        otherwise the view shows the newest entry."""
        t = self.text
        anchors = self._top_entry_marks() if keep_view else []
        self._source, self._earlier = entries, earlier
        shown = entries if self.render_all else entries[-MAX_RENDERED:]
        t.configure(state="normal")
        t.delete("1.0", "end")
        self._forget(list(self._entries))
        self._last_day = None
        self._insert_earlier_line(cut=len(shown) < len(entries))
        for entry in shown:
            self._insert(entry)
        t.configure(state="disabled")
        kept = set(t.mark_names())
        anchor = next((a for a in anchors if a in kept), None)
        if anchor is not None:
            t.yview(anchor)
            return
        t.see("end")
        divider = t.tag_ranges("unread")
        if divider:  # more new messages than fit: start reading at the divider, not below
            below = t.count(divider[0], "end", "update", "ypixels")
            if isinstance(below, tuple):  # tkinter gives a tuple for several counts
                below = below[0]
            if below and below > t.winfo_height():
                t.yview(divider[0])

    def show_earlier(self) -> None:
        """The "Load earlier messages" line was clicked: draw what is held, then ask for
        the page before it."""
        self.render_all = True
        if len(self._source) > len(self._entries):
            self.show(self._source, self._earlier, keep_view=True)
        else:
            self.on_earlier()

    def _insert_earlier_line(self, cut: bool) -> None:
        t = self.text
        if cut or self._earlier == "more":
            t.insert("end", "Load earlier messages", ("earlier", "earlier_link"))
            t.insert("end", "\n", ("earlier",))
        elif self._earlier == "loading":
            t.insert("end", "Loading earlier messages…\n", ("earlier",))
        elif self._earlier == "start":
            t.insert("end", "This is the beginning of the conversation.\n", ("earlier",))
        elif self._earlier == "capped":
            t.insert("end", "Earlier messages are not kept in this window.\n", ("earlier",))

    def _top_entry_marks(self, count: int = 3) -> list[str]:
        """The marks of the first entries that start at or below the top of the view (more
        than one: the first may be the one a redraw leaves out)."""
        t, marks = self.text, []
        mark = t.mark_next("@0,0")
        while mark is not None and len(marks) < count:
            if _is_entry_mark(mark):
                marks.append(mark)
            mark = t.mark_next(mark)
        return marks

    def _top_entry_mark(self) -> str | None:
        marks = self._top_entry_marks(1)
        return marks[0] if marks else None

    def at_bottom(self) -> bool:
        return self.text.yview()[1] >= 0.999

    # ------------------------------------------------------------------ pointing

    def entry_at(self, x: int, y: int) -> Entry | None:
        """The entry drawn at widget position (x, y): the one whose mark (set where it starts)
        is the last at or before that character. Nothing for the day and "New messages"
        lines, the top line, or the empty space below the last line."""
        t = self.text
        index = t.index(f"@{x},{y}")
        line = t.dlineinfo(index)
        if line is None or not line[1] <= y < line[1] + line[3]:
            return None
        if {"day", "unread", "earlier"} & set(t.tag_names(index)):
            return None
        mark = t.mark_previous(f"{index} +1c")
        while mark is not None and not _is_entry_mark(mark):
            mark = t.mark_previous(mark)
        return self._entries.get(int(mark[1:])) if mark is not None else None

    def entry_bbox(self, entry: Entry) -> tuple[int, int, int, int] | None:
        """Where an entry's text is on screen (x, y, width, height), if it is visible."""
        t, mark = self.text, f"e{entry.local_id}"
        if entry.local_id not in self._entries:
            return None
        found = t.tag_nextrange(f"b{entry.local_id}" if entry.kind == "msg" else "notice", mark)
        return t.bbox(found[0]) if found else None

    def _right_click(self, event: tk.Event) -> str | None:
        entry = self.entry_at(event.x, event.y)
        if entry is None:
            return None
        self.on_menu(entry, event)
        return "break"

    def append(self, entry: Entry) -> None:
        t = self.text
        follow = t.yview()[1] >= 0.999 or entry.own
        t.configure(state="normal")
        self._insert(entry)
        if not self.render_all and len(self._entries) > MAX_RENDERED * 2:  # keep it light
            ids = list(self._entries)
            half = len(ids) // 2
            t.delete("1.0", f"e{ids[half]}")  # up to where the first one kept starts
            self._forget(ids[:half])
        t.configure(state="disabled")
        if follow:
            t.see("end")

    def _forget(self, local_ids: list[int]) -> None:
        """Drop entries no longer drawn, and their marks: a deleted text range leaves its
        marks behind, and a stale one would be taken for the entry it named."""
        if local_ids:
            self.text.mark_unset(*(f"e{i}" for i in local_ids))
        for i in local_ids:
            del self._entries[i]

    def _insert(self, e: Entry) -> None:
        t = self.text
        self._entries[e.local_id] = e
        t.mark_set(f"e{e.local_id}", "end-1c")  # where it starts, for keep_view
        t.mark_gravity(f"e{e.local_id}", "left")
        if e.unread_start:
            t.insert("end", f"{UNREAD_RULE}  New messages  {UNREAD_RULE}\n", ("unread",))
        day = time.localtime(e.ts)[:3]
        if day != self._last_day:
            self._last_day = day
            t.insert("end", f"{day_label(e.ts)}\n", ("day",))
            e_continues = False
        else:
            e_continues = e.continues
        if e.kind == "notice":
            t.insert("end", f"{e.text}  ·  {time.strftime('%H:%M', time.localtime(e.ts))}\n",
                     ("notice",))
            return
        band = _band(e)
        if not e_continues:
            colour = "name_own" if e.own else f"name{self._colour_index(e.sender)}"
            t.insert("end", e.sender_display or e.sender, ("header", "name", colour, *band))
            stamp = time.strftime("%H:%M", time.localtime(e.ts))
            extra = "  ·  delivered while you were away" if e.delayed else ""
            t.insert("end", f"   {stamp}{extra}\n", ("header", "time", *band))
        self._insert_body(e, "end", band)

    def _colour_index(self, user: str) -> int:
        colour = sender_colour(self.palette, user)
        return self.palette.senders.index(colour)

    def _insert_body(self, e: Entry, index: str, band: tuple[str, ...]) -> None:
        """A message's text, "(edited)", its delivery status and the newline, in one insert
        (pieces inserted one by one at a fixed index would land in reverse order)."""
        tag = f"st{e.local_id}"
        body = ("body", f"b{e.local_id}", *band)
        pieces: list = [e.text, body + (("pending",) if e.status == "pending" else ())]
        if e.edited is not None:
            pieces += [EDITED_MARK, ("edited", *band)]
        if e.status == "pending":
            pieces += ["  sending…", ("status", tag)]
        elif e.status == "failed":
            pieces += [f"  ⚠ {e.error or 'not sent'} — click to retry", ("failed", tag)]
            self.text.tag_bind(tag, "<Button-1>", lambda ev, e=e: self.on_retry(e))
        self.text.insert(index, *pieces, "\n", body)

    def update_entry(self, e: Entry) -> None:
        """A message changed (its delivery status, or its text after an edit): draw its body
        again where it is, and keep the view (at the end if the reader was there)."""
        t, body = self.text, self.text.tag_ranges(f"b{e.local_id}")
        if e.local_id not in self._entries or not body:  # not drawn, or trimmed off the top
            return
        follow = self.at_bottom()
        band = _band(e)
        t.configure(state="normal")
        # The new body goes in before the old one, which is then deleted between two marks:
        # inserting after it would put the next entry's mark (left gravity) before the new
        # text, and a click there would be taken for the next entry.
        t.mark_set("old_body", body[0])
        t.mark_gravity("old_body", "right")
        t.mark_set("old_body_end", body[-1])
        self._insert_body(e, body[0], band)
        t.delete("old_body", "old_body_end")
        t.mark_unset("old_body", "old_body_end")
        header = t.tag_nextrange("header", f"e{e.local_id}", body[0])
        if header:  # an edit may have added or taken away a mention of me
            t.tag_remove("mention", *header)
            if "mention" in band:
                t.tag_add("mention", *header)
        t.configure(state="disabled")
        if follow:
            t.see("end")

    def content(self) -> str:
        return self.text.get("1.0", "end-1c")

    # ------------------------------------------------------------------ search results

    def highlight(self, entry: Entry, seconds: float = FOUND_SECONDS) -> bool:
        """Scroll to a message (one the search window went to) and mark it, its header and
        text, for a few seconds. False if this conversation does not hold it. One held but
        not drawn (beyond MAX_RENDERED) is drawn first, with all the others held."""
        t = self.text
        if entry.local_id not in self._entries:
            if not any(e is entry for e in self._source):
                return False
            self.render_all = True
            self.show(self._source, self._earlier)
        body = t.tag_ranges(f"b{entry.local_id}")
        if not body:
            return False
        header = t.tag_nextrange("header", f"e{entry.local_id}", body[0])
        start = header[0] if header else body[0]
        self._unhighlight()
        t.tag_add("found", start, body[-1])
        t.see(body[-1])
        t.see(start)  # a message taller than the view shows from its start
        self._found_id = self.after(int(seconds * 1000), self._unhighlight)
        return True

    def _unhighlight(self) -> None:
        if self._found_id is not None:
            self.after_cancel(self._found_id)
            self._found_id = None
        self.text.tag_remove("found", "1.0", "end")

    def destroy(self) -> None:
        if self._found_id is not None:
            self.after_cancel(self._found_id)
            self._found_id = None
        super().destroy()


def _band(e: Entry) -> tuple[str, ...]:
    """The background a message is drawn on: own messages, then mentions of me."""
    return ("own",) if e.own else ("mention",) if e.mention else ()


def _is_entry_mark(mark: str) -> bool:
    return mark.startswith("e") and mark[1:].isdigit()
