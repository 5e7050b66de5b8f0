"""The main window: banner, conversation list and people on the left, the open conversation
(or the files tab) in the middle, the compose box below. Redraws come from ChatState changes."""

from __future__ import annotations

import logging
import sys
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from parley_client.chat_state import PUBLIC, Change, ChatState, ConvKey
from parley_client.search import to_rows
from parley_client.settings import Settings

from .actions import Actions
from .admin import AdminControls
from .banner import Banner
from .conversation_view import ConversationView
from .files_view import FilesView
from .message_box import MessageBox
from .password_dialog import APP_MENU, PasswordDialog
from .password_dialog import MENU_LABEL as PASSWORD_MENU_LABEL
from .rooms_dialog import RoomsDialog
from .search_dialog import MENU_LABEL as SEARCH_MENU_LABEL
from .search_dialog import GoToMessage, SearchDialog
from .sidebar import Sidebar
from .tkutil import release_variables
from .transfers_panel import TransfersPanel

log = logging.getLogger(__name__)
REDRAWS = frozenset({"reload", "earlier", "deleted"})  # changes that redraw the transcript
STATUS_SECONDS = 15  # how long a status-bar line stays


class MainWindow(ttk.Frame):
    def __init__(self, root: tk.Tk, state: ChatState, session, ui, settings: Settings,
                 fonts, palette, *, on_logout: Callable[[], None],
                 on_quit: Callable[[], None], on_theme: Callable[[str], None]) -> None:
        super().__init__(root)
        self.root, self.state, self.session, self.ui = root, state, session, ui
        self.settings, self.fonts, self.palette = settings, fonts, palette
        self.on_logout, self.on_quit, self.on_theme = on_logout, on_quit, on_theme
        self.actions = Actions(self)
        self.rooms_dialog: RoomsDialog | None = None
        self.password_dialog: PasswordDialog | None = None
        self.search_dialog: SearchDialog | None = None
        self.go_to_message = GoToMessage(self)
        self.attention_count = 0
        self._dirty: set[str] = set()
        self._flush_id: str | None = None
        self._status_clear_id: str | None = None
        self._typing_id: str | None = None  # after() for the next typing notice to run out
        self._was_online = state.connection == "online"
        self.columnconfigure(0, weight=1)
        self.rowconfigure(1, weight=1)

        self.banner = Banner(self, state, fonts, palette, on_relogin=on_logout)
        self.banner.grid(row=0, column=0, sticky="ew")
        self.banner.grid_remove()
        panes = ttk.PanedWindow(self, orient="horizontal")
        panes.grid(row=1, column=0, sticky="nsew")
        self.sidebar = Sidebar(panes, state, fonts, palette, on_open=self.actions.open,
                               on_rooms=self.open_rooms_dialog)
        panes.add(self.sidebar, weight=0)
        self.notebook = ttk.Notebook(panes)
        panes.add(self.notebook, weight=1)

        chat = ttk.Frame(self.notebook)
        chat.columnconfigure(0, weight=1)
        chat.rowconfigure(0, weight=1)
        self.conversation = ConversationView(
            chat, state, fonts, palette, on_retry=self.actions.retry,
            on_leave=self.actions.leave_room, on_close_room=self.actions.close_room,
            on_open_person=lambda u: self.actions.open(("direct", u.lower())),
            on_earlier=lambda: self.actions.load_earlier(self.state.active or PUBLIC),
            on_delete=self.actions.delete_message, on_edit=self.begin_edit)
        self.conversation.grid(row=0, column=0, sticky="nsew")
        self.message_box = MessageBox(
            chat, fonts, palette, self.actions.send, state.max_text,
            on_edit=self.actions.edit_message,
            last_own=lambda: self.state.last_editable(self.state.active or PUBLIC),
            on_typing=self._typed)
        self.message_box.grid(row=1, column=0, sticky="ew")
        self.notebook.add(chat, text="  Chat  ")

        files = ttk.Frame(self.notebook)
        files.columnconfigure(0, weight=1)
        files.rowconfigure(0, weight=1)
        self.files_view = FilesView(files, state, fonts, palette,
                                    on_download=self.actions.download,
                                    on_upload=self.actions.upload,
                                    on_pick_folder=self.actions.pick_download_dir,
                                    download_dir=settings.downloads())
        self.files_view.grid(row=0, column=0, sticky="nsew")
        ttk.Separator(files).grid(row=1, column=0, sticky="ew")
        self.transfers = TransfersPanel(files, state, fonts, palette,
                                        self.actions.cancel_transfer)
        self.transfers.grid(row=2, column=0, sticky="ew")
        self.notebook.add(files, text="  Files  ")
        self.chat_tab, self.files_tab = chat, files

        self.status = ttk.Label(self, text="", foreground=palette.muted, padding=(10, 2))
        self.status.grid(row=2, column=0, sticky="ew")
        self._build_menu()
        self.admin: AdminControls | None = None
        self._bind_keys()
        self.show_admin_state()
        root.bind("<FocusIn>", self._focus_in, add="+")
        root.bind("<FocusOut>", self._focus_out, add="+")
        self.show_conversation(state.active or PUBLIC)
        self.update_title()

    # ------------------------------------------------------------------ setup

    def _build_menu(self) -> None:
        menu = tk.Menu(self.root)
        app = tk.Menu(menu, tearoff=False)
        self.dark_var = tk.BooleanVar(value=self.palette.name == "dark")
        app.add_checkbutton(label="Dark theme", variable=self.dark_var,
                            command=lambda: self.on_theme("dark" if self.dark_var.get()
                                                          else "light"))
        app.add_command(label="Change display name…", command=self.actions.rename)
        app.add_command(label=PASSWORD_MENU_LABEL, command=self.open_password_dialog)
        app.add_separator()
        app.add_command(label="Log out", command=self.on_logout)
        app.add_command(label="Quit", accelerator="Ctrl+Q", command=self.on_quit)
        menu.add_cascade(label=APP_MENU, menu=app)
        self.app_menu = app
        conv = tk.Menu(menu, tearoff=False)
        conv.add_command(label="Find or switch…", accelerator="Ctrl+K",
                         command=self.sidebar.focus_search)
        conv.add_command(label="Join or create room…", accelerator="Ctrl+J",
                         command=self.open_rooms_dialog)
        conv.add_command(label=SEARCH_MENU_LABEL, accelerator="Ctrl+Shift+F",
                         command=self.open_search_dialog)
        conv.add_command(label="Previous", accelerator="Alt+Up", command=lambda: self.step(-1))
        conv.add_command(label="Next", accelerator="Alt+Down", command=lambda: self.step(1))
        conv.add_separator()
        conv.add_command(label="Clear (on this computer only)", accelerator="Ctrl+L",
                         command=self.actions.clear)
        menu.add_cascade(label="Conversation", menu=conv)
        self.conversation_menu = conv
        files = tk.Menu(menu, tearoff=False)
        files.add_command(label="Show files", accelerator="Ctrl+F", command=self.show_files)
        files.add_command(label="Upload…", accelerator="Ctrl+U", command=self.actions.upload)
        files.add_command(label="Refresh list", command=self.actions.refresh_files)
        menu.add_cascade(label="Files", menu=files)
        self.files_menu = files
        self.menu = menu
        self.root.configure(menu=menu)

    def _bind_keys(self) -> None:
        keys = {"<Control-k>": self.sidebar.focus_search, "<Control-f>": self.show_files,
                "<Control-l>": self.actions.clear, "<Control-q>": self.on_quit,
                "<Control-j>": self.open_rooms_dialog, "<Control-u>": self.actions.upload,
                "<Alt-Up>": lambda: self.step(-1), "<Alt-Down>": lambda: self.step(1),
                "<Escape>": self.show_chat, "<Control-m>": self.open_moderation,
                # X11 sends Ctrl+Shift+f as keysym F with Control and Shift; other platforms
                # may keep the lower-case keysym.
                "<Control-Shift-F>": self.open_search_dialog,
                "<Control-Shift-f>": self.open_search_dialog}
        # Text and Entry have class bindings for some of these (Ctrl+K kills a line, Ctrl+F
        # moves a character): bind on those widgets too and stop the class binding.
        widgets = (self.root, self.message_box.text, self.sidebar.search,
                   self.files_view.filter_entry)
        for seq, fn in keys.items():
            for w in widgets:
                if seq == "<Escape>" and w is self.sidebar.search:
                    continue
                # Escape in the message box first ends an edit, if one is under way.
                act = self.cancel_edit_or_show_chat if (
                    seq == "<Escape>" and w is self.message_box.text) else fn
                w.bind(seq, lambda e, act=act: (act(), "break")[1])

    # ------------------------------------------------------------------ navigation

    def step(self, delta: int) -> None:
        key = self.state.neighbour(delta)
        if key is not None:
            self.actions.open(key)

    def show_files(self) -> None:
        self.notebook.select(self.files_tab)
        self.files_view.focus_filter()

    def show_chat(self) -> None:
        self.notebook.select(self.chat_tab)
        self.message_box.focus()

    def begin_edit(self, entry) -> None:
        """Edit message…: the message's text goes into the box, under the editing bar."""
        self.show_chat()
        self.message_box.begin_edit(entry)

    def _typed(self, typing: bool) -> None:
        key = self.state.active or PUBLIC
        if typing:
            self.actions.typing(key)
        else:
            self.actions.stopped_typing(key)

    def cancel_edit_or_show_chat(self) -> None:
        if not self.message_box.cancel_edit():
            self.show_chat()

    def show_conversation(self, key: ConvKey) -> None:
        self.message_box.cancel_edit()  # an edit belongs to the conversation it began in
        self.conversation.open(key)
        self.show_composer(key)
        if str(self.notebook.select()) == str(self.chat_tab):
            self.message_box.focus()

    def show_composer(self, key: ConvKey) -> None:
        """The message box open for key, or disabled saying why (the draft waits)."""
        blocked = self.state.send_blocked_because(key)
        conv = self.state.conversation(key)
        hint = blocked or (f"Message {'#' if key[0] != 'direct' else '@'}{conv.title}  "
                           "(Enter to send, Shift+Enter for a new line)")
        self.message_box.set_enabled(blocked is None, hint)

    def open_rooms_dialog(self) -> None:
        if self.rooms_dialog is not None and self.rooms_dialog.winfo_exists():
            self.rooms_dialog.lift()
            return
        dialog = RoomsDialog(self.root, self.fonts, self.palette,
                             on_join=lambda n: self.actions.join_room(
                                 n, lambda exc: dialog.show_error(str(exc))),
                             on_refresh=lambda: self.actions.list_rooms(dialog.set_rooms))
        self.rooms_dialog = dialog
        self.actions.list_rooms(lambda rooms: dialog.winfo_exists() and dialog.set_rooms(rooms))

    def open_password_dialog(self, temporary: bool = False) -> PasswordDialog:
        """Parley → Change password…; temporary=True when the login said must_change_password
        (the dialog then says why it asks)."""
        if self.password_dialog is not None and self.password_dialog.winfo_exists():
            self.password_dialog.lift()
            return self.password_dialog
        dialog = None

        def submit(current: str, new: str) -> None:
            self.actions.change_password(current, new, answered)

        def answered(error: str | None) -> None:
            if dialog is None or not dialog.winfo_exists():  # cancelled meanwhile
                if error is not None:
                    self.report(error)
                return
            if error is None:
                self.close_password_dialog()
            else:
                dialog.show_error(error)
        dialog = PasswordDialog(self.root, self.fonts, self.palette, on_submit=submit,
                                temporary=temporary)
        self.password_dialog = dialog
        return dialog

    def close_password_dialog(self) -> None:
        if self.password_dialog is not None and self.password_dialog.winfo_exists():
            self.password_dialog.destroy()
        self.password_dialog = None

    def open_search_dialog(self) -> SearchDialog:
        """Conversation → Search messages… (Ctrl+Shift+F): one window, brought to the front
        if it is open already."""
        if self.search_dialog is not None and self.search_dialog.winfo_exists():
            self.search_dialog.deiconify()
            self.search_dialog.lift()
            self.search_dialog.entry.focus_set()
            self.search_dialog.entry.select_range(0, "end")
            return self.search_dialog
        self.search_dialog = SearchDialog(
            self.root, self.fonts, self.palette, on_search=self.actions.search,
            to_rows=lambda messages, query: to_rows(messages, query, self.state.me,
                                                    self.state.display_of),
            on_open=lambda row, tell: self.show_found(row.key, row.msg_id, tell))
        return self.search_dialog

    def close_search_dialog(self) -> None:
        if self.search_dialog is not None and self.search_dialog.winfo_exists():
            self.search_dialog.destroy()
        self.search_dialog = None

    def show_found(self, key: ConvKey, msg_id: int, tell=None) -> None:
        """Open key's conversation at message msg_id (a search result), highlighted; if it
        is older than what the conversation holds, say so (see GoToMessage)."""
        self.notebook.select(self.chat_tab)
        self.go_to_message.start(key, msg_id, tell)

    def open_moderation(self) -> None:
        if self.admin is not None:
            self.admin.open_dialog()

    def close_rooms_dialog(self) -> None:
        if self.rooms_dialog is not None and self.rooms_dialog.winfo_exists():
            self.rooms_dialog.destroy()
        self.rooms_dialog = None

    # ------------------------------------------------------------------ changes

    def apply(self, changes: list[Change]) -> None:
        """Fold model changes into the widgets: appends now, the rest once per idle moment."""
        for c in changes:
            if c.kind == "append":
                if c.key == self.conversation.key and not self._dirty & REDRAWS:
                    self.conversation.transcript.append(c.entry)
            elif c.kind == "entry":
                if c.key == self.conversation.key:
                    self.conversation.transcript.update_entry(c.entry)
            elif c.kind == "notify":
                self.notify(c)
            elif c.kind in REDRAWS or c.kind == "typing":
                if c.key == self.state.active:
                    self._dirty.add(c.kind)
            else:
                self._dirty.add(c.kind)
        if self.state.active != self.conversation.key:
            self._dirty.add("switch")
        if self._dirty and self._flush_id is None:
            self._flush_id = self.after_idle(self.flush)

    @property
    def redraw_pending(self) -> bool:
        """Changes are waiting for the next idle moment to be drawn (flush has not run)."""
        return self._flush_id is not None

    def apply_kind(self, kind: str) -> None:
        self.apply([Change(kind)])

    def flush(self) -> None:
        self._flush_id = None
        dirty, self._dirty = self._dirty, set()
        if "switch" in dirty:
            self.show_conversation(self.state.active or PUBLIC)
        elif "reload" in dirty:
            self.conversation.reload()
        elif "earlier" in dirty:
            self.conversation.reload(keep_view=True)
        elif "deleted" in dirty:  # stay where the reader is: at the end if they were there
            self.conversation.reload(keep_view=not self.conversation.transcript.at_bottom())
        if dirty & {"conversations", "removed", "switch", "me"}:
            self.sidebar.refresh()
            self.update_title()
        if dirty & {"online", "rooms", "switch"}:
            self.sidebar.refresh_people()
            self.conversation.refresh_header()
            if "switch" not in dirty:
                self.show_conversation_state()
        if dirty & {"typing", "switch", "online"}:  # online: a rename, someone gone
            self.refresh_typing()
        if "files" in dirty:
            self.files_view.refresh()
        if "transfers" in dirty:
            self.transfers.refresh()
        if "connection" in dirty:
            self.banner.refresh()
            online = self.state.connection == "online"
            if online and not self._was_online:
                self.actions.after_reconnect()
            self._was_online = online
        if dirty & {"admin", "policy"}:
            self.show_admin_state()
            self.show_conversation_state()
        if "policy" in dirty:  # greyed conversations: the ones nobody may write in now
            self.sidebar.refresh()
        if "error" in dirty:
            self.report(self.state.last_reason)

    def show_admin_state(self) -> None:
        """Admin controls, and what the policy allows only administrators, follow is_admin
        (set at login, changed by op/deop while logged in) and the live policy."""
        if self.state.is_admin and self.admin is None:
            self.admin = AdminControls(self)
        elif not self.state.is_admin and self.admin is not None:
            self.admin.remove()
            self.admin = None
        if self.admin is not None:
            self.admin.show_policy()
        # The server's policy: show nothing that would fail.
        if self.state.uploads_allowed():
            self.files_view.upload_button.grid()
        else:
            self.files_view.upload_button.grid_remove()
        self.files_menu.entryconfigure(
            "Upload…", state="normal" if self.state.uploads_allowed() else "disabled")

    def show_conversation_state(self) -> None:
        """The open conversation's box follows what may be sent there now (a room closed,
        made an administrator, a policy switched), without redrawing the transcript."""
        key = self.conversation.key
        if key is not None and self.state.can_send(key) != self.message_box.enabled():
            self.show_composer(key)

    def refresh_typing(self) -> None:
        """Say who is typing in the open conversation, and come back when the first of those
        notices runs out (one timer, on the Tk thread, moved each time)."""
        if self._typing_id is not None:
            self.after_cancel(self._typing_id)
            self._typing_id = None
        key = self.state.active or PUBLIC
        self.message_box.set_typing(self.state.typing_text(key))
        due = self.state.typing_due_in(key)
        if due is not None:
            # A few ms late rather than early: early, the notice would still hold.
            self._typing_id = self.after(int(due * 1000) + 5, self._typing_due)

    def _typing_due(self) -> None:
        self._typing_id = None
        self.refresh_typing()

    def apply_palette(self, palette) -> None:
        self.palette = palette
        self.conversation.apply_palette(palette)
        self.message_box.apply_palette(palette)
        self.banner.apply_palette(palette)
        self.status.configure(foreground=palette.muted)
        self.dark_var.set(palette.name == "dark")
        if self.search_dialog is not None and self.search_dialog.winfo_exists():
            self.search_dialog.apply_palette(palette)
        self.conversation.reload()

    def update_title(self) -> None:
        unread = self.state.total_unread()
        who = self.state.my_display or self.state.me
        title = f"Parley — {who}" if who else "Parley"
        self.root.title(f"({unread}) {title}" if unread else title)

    def report(self, text: str) -> None:
        """A line in the status bar; it goes after a while, as the moment it was about passes
        (what must stay, like a failed send, is shown where it happened instead)."""
        self.status.configure(text=text)
        if self._status_clear_id is not None:
            self.after_cancel(self._status_clear_id)
        self._status_clear_id = self.after(STATUS_SECONDS * 1000, self._clear_status) \
            if text else None

    def _clear_status(self) -> None:
        self._status_clear_id = None
        self.status.configure(text="")

    # ------------------------------------------------------------------ attention

    def _focus_in(self, _event=None) -> None:
        if not self.state.window_focused:
            self.apply(self.state.set_focused(True))

    def _focus_out(self, _event=None) -> None:
        self.after_idle(self._check_focus)

    def _check_focus(self) -> None:
        try:
            focused = self.root.focus_displayof() is not None
        except (KeyError, tk.TclError):  # focus is in a popdown Tk does not map to Python
            focused = True
        if not focused:
            self.state.set_focused(False)

    def notify(self, change: Change) -> None:
        """A private message or a mention: ring and flag the window if nobody is looking."""
        if self.state.window_focused and change.key == self.state.active:
            return
        self.attention_count += 1
        if not self.state.window_focused:
            self.root.bell()
            request_attention(self.root)

    def destroy(self) -> None:
        if self._flush_id is not None:
            self.after_cancel(self._flush_id)
            self._flush_id = None
        if self._status_clear_id is not None:
            self.after_cancel(self._status_clear_id)
            self._status_clear_id = None
        if self._typing_id is not None:
            self.after_cancel(self._typing_id)
            self._typing_id = None
        self.go_to_message.cancel()
        self.close_rooms_dialog()
        self.close_password_dialog()
        self.close_search_dialog()
        if self.admin is not None:
            self.admin.destroy()
        try:
            self.root.configure(menu="")
        except tk.TclError as exc:  # root already going away
            log.debug("menu removal: %s", exc)
        super().destroy()
        release_variables(self)


def request_attention(root: tk.Tk) -> None:
    """Flash the taskbar entry where the platform lets Tk do it."""
    if sys.platform == "win32":
        import ctypes

        hwnd = int(root.wm_frame(), 16)
        ctypes.windll.user32.FlashWindow(hwnd, True)
    # macOS and X11: Tk sets no urgency hint; the "(n)" in the title and the bell carry the signal.
