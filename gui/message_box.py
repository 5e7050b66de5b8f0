"""The compose box: Enter sends, Shift+Enter starts a new line, over-long text is refused
before it is sent, with a character counter that appears near the limit.

It also edits a message already sent (as in Telegram or Slack): the message's text comes into
the box under a bar saying so, Enter saves, Escape (or opening another conversation) cancels
and gives back whatever draft was in the box before. Up in an empty box edits one's last
message. The box knows nothing of the server: on_edit(entry, text, done) does the asking and
calls done(None) once saved or done(sentence) if not, and the text stays for another try.

Above the box, where the editing bar goes, a muted line says who else is typing here
(set_typing); the editing bar wins while editing. The line keeps its height when empty, so the
transcript does not jump each time someone starts or stops typing. The other way round, each
key that changes the text calls on_typing(True) (on_typing(False) once the box is emptied or
its message sent); the window decides whether that is worth telling the server."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.chat_state import Entry

COUNTER_FROM = 0.9  # show the counter once 90 % of the limit is used
EDIT_BAR_TEXT = "Editing message — Enter to save, Escape to cancel"
SAVING_TEXT = "Saving the edit…"


class MessageBox(ttk.Frame):
    def __init__(self, master, fonts, palette, on_send: Callable[[str], bool],
                 max_text: int, *,
                 on_edit: Callable[[Entry, str, Callable[[str | None], None]], None]
                 = lambda entry, text, done: done("editing is not available"),
                 last_own: Callable[[], Entry | None] = lambda: None,
                 on_typing: Callable[[bool], None] = lambda typing: None) -> None:
        super().__init__(master, padding=(12, 6, 12, 10))
        self.on_send, self.max_text, self.palette = on_send, max_text, palette
        self.on_edit, self.last_own, self.on_typing = on_edit, last_own, on_typing
        self.editing: Entry | None = None  # the message being edited, if any
        self.saving = False  # an edit was sent and has not been answered yet
        self._draft = ""  # what was in the box before the edit began
        self._held = ""  # the draft while the box is disabled (set_enabled)
        self._seen = ""  # the text when the last key was handled (did a key change it?)
        self.columnconfigure(0, weight=1)
        self.typing_line = ttk.Label(self, text="", font=fonts.notice,
                                     foreground=palette.muted, padding=(2, 0, 0, 3))
        self.typing_line.grid(row=0, column=0, sticky="ew")
        self.edit_bar = ttk.Label(self, text=EDIT_BAR_TEXT, font=fonts.small,
                                  foreground=palette.accent, padding=(2, 0, 0, 3))
        self.edit_bar.grid(row=0, column=0, sticky="ew")
        self.edit_bar.grid_remove()
        self.border = ttk.Frame(self, style="Card.TFrame", padding=4)
        self.border.grid(row=1, column=0, sticky="ew")
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
        info.grid(row=2, column=0, sticky="ew")
        info.columnconfigure(0, weight=1)
        self.error = ttk.Label(info, text="", foreground=palette.error)
        self.error.grid(row=0, column=0, sticky="w")
        self.counter = ttk.Label(info, text="", foreground=palette.muted, font=fonts.small)
        self.counter.grid(row=0, column=1, sticky="e")
        self.text.bind("<Return>", self._on_return)
        self.text.bind("<KP_Enter>", self._on_return)
        self.text.bind("<Shift-Return>", self._newline)
        self.text.bind("<<Modified>>", self._on_modified)
        self.text.bind("<Up>", self._on_up)
        # A bind tag after the Text class: its key binding runs once the key has changed the
        # text (the widget's own bindings run before that, and Enter's stops the rest).
        tags = self.text.bindtags()
        self._key_tag = f"ParleyTyped{id(self)}"
        self.text.bindtags((*tags[:2], self._key_tag, *tags[2:]))
        self._key_command = self.text.bind_class(self._key_tag, "<KeyPress>", self._after_key)
        self.apply_palette(palette)

    def _on_return(self, _event=None) -> str:
        self.send()
        return "break"  # no newline: Enter sends

    def _newline(self, _event=None) -> str:
        self.text.insert("insert", "\n")
        return "break"

    def _on_up(self, _event=None) -> str | None:
        """Up in an empty box edits my last message here; otherwise it moves the cursor."""
        if self.editing is not None or self.get().strip() or not self.enabled():
            return None
        entry = self.last_own()
        if entry is None:
            return None
        self.begin_edit(entry)
        return "break"

    def _on_modified(self, _event=None) -> None:
        self.text.edit_modified(False)
        self._seen = self.get()  # changed some other way (set, a paste with the mouse)
        self.update_counter()

    def _after_key(self, _event=None) -> None:
        text = self.get()
        if text == self._seen:  # a key that moved the cursor, or did nothing
            return
        self._seen = text
        if not text.strip():
            self.on_typing(False)
        elif self.editing is None and self.enabled():
            self.on_typing(True)

    # ------------------------------------------------------------------ API

    def get(self) -> str:
        return self.text.get("1.0", "end-1c")

    def set(self, text: str) -> None:
        self.text.delete("1.0", "end")
        self.text.insert("1.0", text)
        self._seen = self.get()
        self.update_counter()

    def set_typing(self, sentence: str) -> None:
        """Who else is typing here ("" for nobody); hidden under the editing bar meanwhile."""
        self.typing_line.configure(text=sentence)

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

    def enabled(self) -> bool:
        return str(self.text.cget("state")) == "normal"

    def send(self) -> bool:
        if self.editing is not None:
            return self._save_edit()
        text = self.get().strip()
        if not text or not self.enabled():
            return False
        if len(text) > self.max_text:
            self.error.configure(text=f"Too long: {len(text)} characters, the limit is "
                                      f"{self.max_text}. Shorten it or share it as a file.")
            return False
        if self.on_send(text):
            self.set("")
            self.error.configure(text="")
            self.on_typing(False)  # sent: the next key starts a new notice
            return True
        return False

    # ------------------------------------------------------------------ editing

    def begin_edit(self, entry: Entry) -> None:
        """Put entry's text in the box to be changed; the draft there is kept for later."""
        if self.editing is None:
            self._draft = self.get()
        self.editing, self.saving = entry, False
        self.set(entry.text)
        self.text.mark_set("insert", "end-1c")
        self.text.edit_reset()  # Ctrl+Z must not bring the draft into the edit
        self.error.configure(text="")
        self.edit_bar.configure(text=EDIT_BAR_TEXT)
        self.typing_line.grid_remove()
        self.edit_bar.grid()
        self.send_button.configure(text="Save")
        self.focus()

    def cancel_edit(self) -> bool:
        """Leave edit mode, giving back the draft; False if there was no edit to leave."""
        if self.editing is None:
            return False
        self.editing, self.saving = None, False
        self.edit_bar.grid_remove()
        self.typing_line.grid()
        self.send_button.configure(text="Send")
        self.set(self._draft)
        self.text.edit_reset()
        self._draft = ""
        return True

    def _save_edit(self) -> bool:
        entry, text = self.editing, self.get().strip()
        if self.saving or entry is None:
            return False
        if len(text) > self.max_text:
            self.error.configure(text=f"Too long: {len(text)} characters, the limit is "
                                      f"{self.max_text}.")
            return False
        self.saving = True
        self.edit_bar.configure(text=SAVING_TEXT)

        def done(error: str | None) -> None:
            if self.editing is not entry:  # cancelled, or another edit began, meanwhile
                return
            if error is None:
                self.cancel_edit()
            else:  # stay in edit mode with the text as typed, to try again or cancel
                self.saving = False
                self.edit_bar.configure(text=EDIT_BAR_TEXT)
        self.on_edit(entry, text, done)
        return True

    def set_enabled(self, enabled: bool, placeholder: str) -> None:
        """Allow typing, or not with placeholder saying why. A draft in the box is held
        aside meanwhile (so the reason shows where it was) and comes back once enabled."""
        if not enabled and self.enabled():
            self.cancel_edit()  # an edit would be refused like a message: its draft is kept
            self._held = self.get()
            self.set("")
            self.text.edit_reset()  # Ctrl+Z must not bring it back into a disabled box
        self.text.configure(state="normal" if enabled else "disabled")
        self.send_button.state(["!disabled"] if enabled else ["disabled"])
        self.placeholder.configure(text=placeholder)
        if enabled and self._held:
            held, self._held = self._held, ""
            if not self.get():
                self.set(held)
                self.text.mark_set("insert", "end-1c")
                self.text.edit_reset()  # nor take it away again
        self.update_counter()

    def draft(self) -> str:
        """What the user typed and has not sent, also while the box is disabled."""
        return self.get() or self._held

    def focus(self) -> None:
        self.text.focus_set()

    def apply_palette(self, palette) -> None:
        self.palette = palette
        self.text.configure(background=palette.bg, foreground=palette.fg,
                            insertbackground=palette.fg, selectbackground=palette.select_bg)
        self.placeholder.configure(background=palette.bg, foreground=palette.muted)
        self.error.configure(foreground=palette.error)
        self.edit_bar.configure(foreground=palette.accent)
        self.typing_line.configure(foreground=palette.muted)
        self.update_counter()

    def destroy(self) -> None:
        # A class binding outlives the widget (its command belongs to the root, which may
        # live on for the next login): take both away with the box, once.
        if self._key_command is not None:
            self.text.unbind_class(self._key_tag, "<KeyPress>")
            self._root().deletecommand(self._key_command)
            self._key_command = None
        super().destroy()
