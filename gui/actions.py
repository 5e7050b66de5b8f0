"""What the main window's buttons do: requests to the session, answers folded into ChatState.

Every request returns a Future; its outcome reaches the Tk thread through UiQueue.when_done,
and blocking calls (download offers) run on short-lived worker threads that only queue.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from tkinter import filedialog, messagebox, simpledialog

from parley_client.chat_state import HISTORY_PAGE, PUBLIC, ConvKey, Entry, room_key
from parley_client.moderation import purge_target
from parley_client.password_change import refusal_sentence
from parley_client.search import refusal_sentence as search_refusal
from parley_client.typing_state import TypingThrottle

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or exc.__class__.__name__


def _excerpt(text: str, limit: int = 80) -> str:
    """The start of a message, on one line, for a question about it."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


class Actions:
    def __init__(self, win) -> None:
        self.win = win
        self.state, self.session, self.ui = win.state, win.session, win.ui
        self.downloads: dict[int, object] = {}  # tid -> Download thread
        self.uploads: dict[int, object] = {}  # tid -> Future
        self.cancel_requested: set[int] = set()
        self.typing_throttle = TypingThrottle()
        # Dialog hooks: tests replace these to answer without a modal window.
        self.confirm = messagebox.askyesno
        self.ask_open_file = filedialog.askopenfilename
        self.ask_directory = filedialog.askdirectory
        self.ask_string = simpledialog.askstring

    def _request(self, future, on_ok, what: str, on_error=None) -> None:
        def failed(exc):
            if on_error is not None:
                on_error(exc)
            else:
                self.win.report(f"{what} failed: {describe(exc)}")
        self.ui.when_done(future, on_ok, failed)

    def _wire_target(self, key: ConvKey) -> str:
        if key[0] == "room":
            info = self.state.rooms.get(key[1])
            return info.name if info else key[1]
        return self.state.name_of(key[1]) if key[0] == "direct" else ""

    # ------------------------------------------------------------------ lists

    def refresh_lists(self) -> None:
        self._request(self.session.list_online(),
                      lambda r: self.win.apply(self.state.set_online(r.get("users", []))),
                      "Listing who is online")
        self._request(self.session.list_users(),
                      lambda r: self.win.apply(self.state.learn_users(r.get("users", []))),
                      "Listing users")
        self.refresh_files()

    def refresh_files(self) -> None:
        self._request(self.session.list_files(),
                      lambda r: self.win.apply(self.state.set_files(r.get("files", []))),
                      "Listing files")

    def after_reconnect(self) -> None:
        """Catch up on what happened while we were away."""
        self.refresh_lists()
        for info in list(self.state.rooms.values()):
            if info.joined:
                self._request(self.session.join_room(info.name),
                              lambda r: self.win.apply(self.state.set_room(r, joined=True)),
                              f"Re-entering room {info.name}")
        for conv in self.state.conversations.values():
            if conv.key != self.state.active and conv.history_state == "loaded":
                conv.history_state = "none"  # reload when opened next
        if self.state.active:
            self.load_history(self.state.active)

    # ------------------------------------------------------------------ conversations

    def open(self, key: ConvKey) -> None:
        """Show key's conversation. While private messages are off (the live policy), no
        new private conversation starts; one already in the list opens to be read."""
        private_off = key[0] == "direct" and not self.state.private_messages_allowed()
        if private_off and key not in self.state.conversations:
            self.win.report("Private messages are turned off on this server.")
            return
        changes, need_history = self.state.open(key)
        self.win.apply(changes)
        if key[0] == "direct" and not private_off:
            self._request(self.session.open_session(self._wire_target(key)), lambda r: None,
                          "Opening the conversation")
        if need_history:
            self.load_history(key)

    def load_history(self, key: ConvKey) -> None:
        def failed(exc):
            self.state.history_failed(key)
            self.win.report(f"Could not load earlier messages: {describe(exc)}")
        self._request(self.session.history(key[0], self._wire_target(key), limit=HISTORY_PAGE),
                      lambda r: self.win.apply(self.state.merge_history(
                          key, r.get("messages", []))), "History", failed)

    def load_earlier(self, key: ConvKey) -> None:
        """The page of history before the oldest message shown ("Load earlier messages")."""
        before, changes = self.state.begin_earlier(key)
        if before is None:
            return
        self.win.apply(changes)

        def failed(exc):
            self.win.apply(self.state.earlier_failed(key))
            self.win.report(f"Could not load earlier messages: {describe(exc)}")
        self._request(self.session.history(key[0], self._wire_target(key), limit=HISTORY_PAGE,
                                           before=before),
                      lambda r: self.win.apply(self.state.merge_history(
                          key, r.get("messages", []), earlier=True)), "History", failed)

    def send(self, text: str) -> bool:
        key = self.state.active or PUBLIC
        if not self.state.can_send(key):
            return False
        entry, changes = self.state.add_pending(key, text)
        self.win.apply(changes)
        self._send(key, entry)
        return True

    def typing(self, key: ConvKey) -> None:
        """A key changed the text in key's box: tell the others there, at most every
        TYPING_EVERY seconds. A refusal (muted, read-only, a room left meanwhile...) is not
        worth the user's attention: sending the message will say it if it matters."""
        if (self.state.connection != "online" or not self.state.can_send(key)
                or not self.typing_throttle.due(key)):
            return
        self._request(self.session.typing(key[0], self._wire_target(key)), lambda r: None,
                      "Typing notice", lambda exc: log.debug("typing notice for %s not sent: %s",
                                                             key, describe(exc)))

    def stopped_typing(self, key: ConvKey) -> None:
        """The box was emptied or its message sent: the next key tells the others at once."""
        self.typing_throttle.reset(key)

    def _send(self, key: ConvKey, entry: Entry) -> None:
        self._request(self.session.send(key[0], self._wire_target(key), entry.text),
                      lambda r: self.win.apply(self.state.send_ok(key, entry, r)), "Send",
                      lambda exc: self.win.apply(self.state.send_failed(
                          key, entry, f"not sent: {describe(exc)}")))

    def retry(self, entry: Entry) -> None:
        for conv in self.state.conversations.values():
            if entry in conv.entries:
                self.win.apply(self.state.retry(conv.key, entry))
                self._send(conv.key, entry)
                return

    def delete_message(self, entry: Entry) -> None:
        """Delete a message for everyone, once confirmed. The MessageDeleted event takes it
        out of every window that shows it; the answer does the same here in case the event
        does not come (taking out a message already gone changes nothing)."""
        key = self._key_holding(entry)
        if key is None or not self.state.may_delete(entry):
            return
        whose = "" if entry.own else \
            f" from {self.state.display_of(entry.sender) or entry.sender_display}"
        if not self.confirm("Delete message — Parley",
                            f"Delete this message{whose} for everyone?\n\n"
                            f"“{_excerpt(entry.text)}”", parent=self.win):
            return
        msg_id, sender = entry.msg_id, entry.sender

        def deleted(_result):
            self.win.apply(self.state.on_message_deleted(msg_id, sender, self.state.me, key))
            self.win.report("Message deleted.")
        self._request(self.session.delete_message(msg_id), deleted, "Deleting the message")

    def _key_holding(self, entry: Entry) -> ConvKey | None:
        return next((c.key for c in self.state.conversations.values() if entry in c.entries),
                    None)

    def edit_message(self, entry: Entry, text: str, on_done=None) -> None:
        """Change the text of one of my messages for everyone. on_done(None) once it is saved
        (or there was nothing to change), on_done(sentence) if not; the sentence is also
        in the status bar. The MessageEdited event updates every window that shows it; the
        answer does the same here (the same edit twice changes nothing)."""
        done = on_done or (lambda error: None)
        text = text.strip()
        key = self._key_holding(entry)

        def refuse(sentence: str) -> None:
            self.win.report(sentence)
            done(sentence)
        if key is None or not self.state.may_edit(entry):
            refuse("This message can no longer be edited.")
            return
        if text == entry.text:
            done(None)
            return
        if not text:
            refuse("A message cannot be edited to nothing: to remove it, right-click it and "
                   "choose Delete message….")
            return
        msg_id = entry.msg_id

        def saved(result):
            self.win.apply(self.state.on_message_edited(msg_id, text, result.get("edited"),
                                                         key))
            done(None)
        self._request(self.session.edit_message(msg_id, text), saved, "Editing the message",
                      lambda exc: refuse(f"Editing the message failed: {describe(exc)}"))

    def search(self, text: str, on_done) -> None:
        """Search the messages I can read for text: on_done(result, None) with the server's
        answer (messages newest first, truncated when there were more), or on_done(None,
        sentence) saying why it did not search. Only the search window reports it."""
        self._request(self.session.search(text), lambda result: on_done(result, None),
                      "Search", lambda exc: on_done(None, search_refusal(
                          getattr(exc, "code", None), describe(exc))))

    def clear(self) -> None:
        if self.state.active:
            self.win.apply(self.state.clear(self.state.active))

    def rename(self, display: str | None = None) -> None:
        """Change how others see my name (the Renamed event updates every view)."""
        if display is None:
            display = self.ask_string("Display name — Parley", "How should others see you?",
                                      initialvalue=self.state.my_display, parent=self.win)
        if display and display.strip() and display.strip() != self.state.my_display:
            self._request(self.session.rename(display.strip()), lambda r: None,
                          "Changing your display name")

    def change_password(self, old: str, new: str, on_done) -> None:
        """Send change_password; on_done(None) once it is changed, or on_done(sentence) saying
        why not. The session keeps the new reconnect token by itself."""
        def ok(_result):
            self.win.report("Your password was changed.")
            on_done(None)

        def failed(exc):
            on_done(refusal_sentence(getattr(exc, "code", None), describe(exc)))
        self._request(self.session.change_password(old, new), ok, "Changing your password",
                      failed)

    # ------------------------------------------------------------------ moderation (admins)

    def moderate(self, action: str, target: str = "", minutes: int | None = None,
                 text: str = "", on_done=None, on_result=None) -> None:
        """Send a moderate request; on_done(done_sentence, error_sentence) if given, and on
        success on_result(result) with the whole answer (a reset's temporary_password)."""
        def ok(result):
            done = result.get("done", "done")
            self.win.report(done)  # never a temporary password: the status bar stays on screen
            if on_done is not None:
                on_done(done, None)
            if on_result is not None:
                on_result(result)

        def failed(exc):
            self.win.report(f"Moderation failed: {describe(exc)}")
            if on_done is not None:
                on_done(None, describe(exc))
        self._request(self.session.moderate(action, target, minutes, text), ok, "Moderation",
                      failed)

    def set_policy(self, setting: str, on: bool, on_done=None) -> bool:
        """Switch one of the server's live policy settings (private_messages, uploads,
        public_read_only) for everyone. Turning private messages off asks first. False if
        nothing was sent; on_done(ok) once the server answered. The policy event that
        follows is what changes this window, like everyone else's."""
        if setting == "private_messages" and not on and not self.confirm(
                "Private messages — Parley", "Turn off private messages for everyone now?",
                parent=self.win):
            return False
        self.moderate("set_policy", setting, None, "on" if on else "off",
                      on_done=lambda ok, error: on_done(ok is not None) if on_done else None)
        return True

    def announce(self, text: str | None = None) -> None:
        if text is None:
            text = self.ask_string("Announce — Parley", "A message from SERVER to everyone "
                                   "online:", parent=self.win)
        if text and text.strip():
            self.moderate("announce", text=text.strip())

    def purge_active(self) -> None:
        """Delete the open conversation's history on the server, for everyone."""
        key = self.state.active or PUBLIC
        title = self.state.conversation(key).title
        if not self.confirm("Purge history — Parley",
                            f"Delete the whole history of {title} on the server, for "
                            "everyone? What people already see stays on their screens.",
                            parent=self.win):
            return
        target = purge_target(key, self.state.me or "", self._wire_target(key))

        def done(ok, _error):
            if ok:
                self.win.apply(self.state.clear(key))
        self.moderate("purge", target, on_done=done)

    def remove_files(self, names: list[str]) -> None:
        if not names:
            self.win.report("Select the files to remove first.")
            return
        listing = names[0] if len(names) == 1 else f"these {len(names)} files"
        if not self.confirm("Remove from server — Parley",
                            f"Delete {listing} from the server's shared folder? Nobody will "
                            "be able to download it any more.", parent=self.win):
            return
        for name in names:
            self.moderate("remove_file", name)

    # ------------------------------------------------------------------ rooms

    def join_room(self, name: str, on_error=None) -> None:
        def joined(result):
            self.win.apply(self.state.set_room(result, joined=True))
            self.open(room_key(result["room"]))
            self.win.close_rooms_dialog()
        self._request(self.session.join_room(name), joined, f"Entering room {name}",
                      on_error)

    def list_rooms(self, on_ok) -> None:
        def listed(result):
            self.state.room_directory = result.get("rooms", [])
            on_ok(self.state.room_directory)
        self._request(self.session.list_rooms(), listed, "Listing rooms")

    def leave_room(self, room: str) -> None:
        self._request(self.session.leave_room(room),
                      lambda r: self.win.apply(self.state.left_room(room)),
                      f"Leaving room {room}")

    def close_room(self, room: str) -> None:
        if not self.confirm("Close room — Parley",
                            f"Close the room {room} for everyone in it?",
                            parent=self.win):
            return
        self._request(self.session.close_room(room), lambda r: None, f"Closing room {room}")

    # ------------------------------------------------------------------ files

    def pick_download_dir(self) -> None:
        chosen = self.ask_directory(parent=self.win, title="Download files to — Parley",
                                    initialdir=str(self.win.settings.downloads()),
                                    mustexist=False)
        if chosen:
            self.win.settings.download_dir = chosen
            self.win.settings.save()
            self.win.files_view.set_download_dir(Path(chosen))

    def download(self, names: list[str]) -> None:
        dest = self.win.settings.downloads()
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.win.report(f"Cannot use the download folder {dest}: {exc.strerror or exc}")
            return
        for name in names:
            size = int(self.state.files.get(name, {}).get("size", 0))
            t = self.state.new_transfer("down", name, size)
            threading.Thread(target=self._start_download, args=(t.tid, name, dest),
                             name=f"offer-{name}", daemon=True).start()
        self.win.apply_kind("transfers")

    def _start_download(self, tid: int, name: str, dest: Path) -> None:
        """Worker thread: waits for the offer, then hands the Download thread to Tk."""
        try:
            thread = self.session.download(
                name, dest, lambda p: self.ui.call(self._download_progress, tid, p))
        except Exception as exc:  # SessionError or OSError: report it in the panel
            self.ui.call(self._finish, tid, "failed", describe(exc))
            return
        self.ui.call(self._download_started, tid, thread)

    def _download_started(self, tid: int, thread) -> None:
        self.downloads[tid] = thread
        if tid in self.cancel_requested:
            thread.cancel()

    def _download_progress(self, tid: int, progress) -> None:
        self.win.apply(self.state.on_download_progress(tid, progress))

    def _finish(self, tid: int, state: str, message: str = "") -> None:
        self.win.apply(self.state.finish_transfer(tid, state, message))

    def upload(self, path: str | None = None) -> None:
        if not self.state.uploads_allowed():
            self.win.report("Uploads are turned off on this server.")
            return
        path = path or self.ask_open_file(parent=self.win, title="Share a file — Parley")
        if not path:
            return
        p = Path(path)
        try:
            size = p.stat().st_size
        except OSError as exc:
            self.win.report(f"Cannot read {p.name}: {exc.strerror or exc}")
            return
        t = self.state.new_transfer("up", p.name, size)
        fut = self.session.upload(
            p, lambda sent, total: self.ui.call(self._upload_progress, t.tid, sent, total))
        self.uploads[t.tid] = fut
        self.ui.when_done(fut, lambda r: self._finish(t.tid, "done"),
                          lambda exc: self._finish(
                              t.tid, "cancelled" if t.tid in self.cancel_requested
                              else "failed", describe(exc)))
        self.win.apply_kind("transfers")

    def _upload_progress(self, tid: int, sent: int, total: int) -> None:
        self.win.apply(self.state.on_upload_progress(tid, sent, total))

    def cancel_transfer(self, tid: int) -> None:
        self.cancel_requested.add(tid)
        if tid in self.downloads:
            self.downloads[tid].cancel()
        elif tid in self.uploads:
            self.uploads[tid].cancel()

    def cancel_all(self) -> None:
        for tid, t in self.state.transfers.items():
            if not t.finished:
                self.cancel_transfer(tid)
