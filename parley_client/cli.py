"""The terminal client: commands from stdin line by line, incoming messages printed as they come.

Works with stdin as a pipe (tests and scripts drive it that way): no prompt, no terminal tricks,
one line per event, flushed at once. Commands run on the main thread and wait (bounded) for their
reply; the session's event thread prints incoming messages meanwhile, under the same print lock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TextIO

from parley_common.paths import app_dir
from parley_common.tlsbio import format_fingerprint
from protocol import APP_NAME, APP_VERSION
from protocol import messages as m
from protocol.join_code import decode_join_code

from .cli_text import (
    HELP,
    MODERATION,
    POLICY_WORDS,
    format_event,
    format_message,
    shown,
    terminal_safe,
    who,
)
from .events import Disconnected, LoggedIn, LoggedOut, SessionError
from .session import ClientSession
from .trust_store import TrustStore
from .units import human_size

DEFAULT_PORT = 5150
REPLY_TIMEOUT = 10.0
STALL_TIMEOUT = 60.0  # a transfer with no progress for this long is given up
PROGRESS_EVERY = 0.5  # seconds between progress lines


class TerminalClient:
    def __init__(self, out: TextIO | None = None, downloads_dir: Path | None = None, *,
                 tls: bool = True, trust: TrustStore | None = None) -> None:
        self.out = out or sys.stdout
        self.downloads_dir = downloads_dir or app_dir() / "Downloads"
        self._print_lock = threading.Lock()
        self.tls = tls
        self.trust = trust if trust is not None else TrustStore.load()
        self.session = ClientSession(self._on_event, software=f"parley-cli/{APP_VERSION}",
                                     auto_reconnect=True, tls=tls, trust=self.trust,
                                     on_new_fingerprint=self._new_fingerprint)
        self.target: tuple[str, str] = ("public", "")  # (kind, target) that `s` sends to
        self.last_sent: int | None = None  # msg_id of the last message sent (for `delete`)
        # Set once the LoggedIn line is out: printed from the event thread so that it comes
        # before the offline messages the server delivers right after the login reply.
        self._logged_in_printed = threading.Event()
        self.commands: dict[str, Callable[[list[str], str], None]] = {
            "c": self.cmd_connect, "join": self.cmd_join, "register": self.cmd_register,
            "login": self.cmd_login,
            "lu": self.cmd_list_users, "lcu": self.cmd_list_online, "lr": self.cmd_list_rooms,
            "lru": self.cmd_room_members, "bm": self.cmd_public, "dm": self.cmd_direct,
            "o": self.cmd_open, "or": self.cmd_open_room, "s": self.cmd_send,
            "cs": self.cmd_close_session, "cr": self.cmd_close_room, "rename": self.cmd_rename,
            "passwd": self.cmd_passwd, "delete": self.cmd_delete,
            "edit": self.cmd_edit, "policy": self.cmd_policy,
            "search": self.cmd_search,
            "history": self.cmd_history, "l": self.cmd_status, "d": self.cmd_disconnect,
            "help": self.cmd_help, "files": self.cmd_files, "get": self.cmd_get,
            "put": self.cmd_put,
        }
        for word in MODERATION:
            self.commands[word] = lambda args, rest, word=word: self.cmd_moderate(word, args, rest)

    # ------------------------------------------------------------------ output

    def say(self, line: str) -> None:
        with self._print_lock:
            self.out.write(terminal_safe(line) + "\n")
            self.out.flush()

    def error(self, text: str) -> None:
        self.say(f"error: {shown(text)}")

    def _new_fingerprint(self, host: str, port: int, fingerprint: str) -> bool:
        # Trust on first use: a terminal has no dialog; the line lets the user compare it with
        # what the server printed, and a later change is refused.
        self.say(f"server fingerprint {format_fingerprint(fingerprint)} (new server, remembered)")
        return True

    def _on_event(self, event: object) -> None:
        if isinstance(event, m.RoomEvent) and event.event == "closed" \
                and self.target[0] == "room" and self.target[1].lower() == event.room.lower():
            self.target = ("public", "")
        if isinstance(event, LoggedOut | Disconnected) and not self.session.user:
            self.target = ("public", "")
        if isinstance(event, Disconnected) and event.reason == "closed" and event.code is None:
            return  # our own close(): the d / c command reports it
        line = format_event(event, self.session.user)
        if line is not None:
            self.say(line)
        if isinstance(event, LoggedIn):
            self._logged_in_printed.set()

    # ------------------------------------------------------------------ main loop

    def run(self, stdin: TextIO | None = None) -> int:
        stdin = stdin or sys.stdin
        try:
            while True:
                line = stdin.readline()
                if not line:
                    break  # EOF
                if not self.handle_line(line):
                    break
        except KeyboardInterrupt:
            self.say("")
        finally:
            self.session.close()
        return 0

    def handle_line(self, line: str) -> bool:
        """Run one command line; False means exit."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        cmd = word.lower()
        if cmd in ("x", "ex", "\\quit", "quit", "exit"):
            return False
        handler = self.commands.get(cmd)
        if handler is None:
            self.error(f"unknown command {word!r} (type help for the list)")
            return True
        try:
            handler(rest.split(), rest)
        except SessionError as exc:
            self.error(exc.message)
        return True

    def wait(self, fut: Future, what: str) -> Any:
        try:
            return fut.result(REPLY_TIMEOUT)
        except TimeoutError:
            raise SessionError("timeout", f"no reply to {what} within {REPLY_TIMEOUT:g} s") \
                from None

    def need_login(self) -> None:
        if not self.session.connected:
            raise SessionError("not_connected", "not connected (use: c <host> [port])")
        if not self.session.user:
            raise SessionError("not_authenticated",
                               "not logged in (use: login <user> <password> or register)")

    def need_connection(self) -> None:
        if not self.session.connected:
            raise SessionError("not_connected", "not connected (use: c <host> [port])")

    @staticmethod
    def usage(args: list[str], n: int, text: str) -> None:
        if len(args) < n:
            raise SessionError("usage", f"usage: {text}")

    # ------------------------------------------------------------------ connection commands

    def connect(self, host: str, port: int) -> bool:
        if self.session.connected or self.session.reconnecting:
            self.session.close()
        self.target = ("public", "")
        if not self.tls:
            self.say("* warning: TLS is off (--no-tls): anyone on the network can read this "
                     "connection, passwords included")
        try:
            info = self.session.connect(host, port)
        except SessionError as exc:
            self.error(exc.message)
            return False
        server = f"{info.get('server', 'Parley')} {info.get('app_version', '')}".strip()
        self.say(f"connected to {host}:{port} ({server})")
        if info.get("motd"):
            self.say(f"* {shown(info['motd'])}")
        return True

    def cmd_connect(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "c <host> [port]")
        port = DEFAULT_PORT
        if len(args) > 1:
            if not args[1].isdigit() or not 0 < int(args[1]) < 65536:
                raise SessionError("usage", f"{args[1]!r} is not a port number")
            port = int(args[1])
        self.connect(args[0], port)

    def cmd_join(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "join <code>")
        try:
            code = decode_join_code(args[0])
        except ValueError as exc:
            raise SessionError("usage", str(exc)) from None
        # The code comes from the server's administrator: it replaces any earlier pin.
        self.trust.remember(code.host, code.port, code.fingerprint)
        self.say(f"trusting {code.host}:{code.port} with fingerprint "
                 f"{format_fingerprint(code.fingerprint)} (from the join code)")
        self.connect(code.host, code.port)

    def cmd_register(self, args: list[str], _rest: str) -> None:
        self.usage(args, 2, "register <user> <password>")
        self.need_connection()
        self._logged_in_printed.clear()
        self.wait(self.session.register(args[0], args[1]), "register")
        self._logged_in_printed.wait(REPLY_TIMEOUT)

    def cmd_login(self, args: list[str], _rest: str) -> None:
        self.usage(args, 2, "login <user> <password>")
        self.need_connection()
        self._logged_in_printed.clear()
        try:
            result = self.wait(self.session.login(args[0], args[1]), "login")
        except SessionError as exc:
            if exc.code == "no_such_user":
                raise SessionError(exc.code, f"{exc.message} (use register to create it)") \
                    from None
            raise
        self._logged_in_printed.wait(REPLY_TIMEOUT)
        if result.get("must_change_password"):
            self.say("* an administrator gave you this password: choose your own with "
                     "passwd <old> <new>")

    def cmd_disconnect(self, _args: list[str], _rest: str) -> None:
        if not (self.session.connected or self.session.reconnecting):
            raise SessionError("not_connected", "not connected")
        self.session.close()
        self.target = ("public", "")
        self.say("disconnected")

    def cmd_status(self, _args: list[str], _rest: str) -> None:
        s = self.session
        if s.connected:
            self.say(f"connected to {s.host}:{s.port}")
            self.say(f"server fingerprint {format_fingerprint(s.fingerprint)}" if s.fingerprint
                     else "TLS is off: the connection is not encrypted")
        elif s.reconnecting:
            self.say(f"reconnecting to {s.host}:{s.port}")
        else:
            self.say("not connected")
        if s.user:
            self.say(f"logged in as {s.user}" + (f" (shown as {s.display})"
                                                 if s.display and s.display != s.user else ""))
        elif s.connected:
            self.say("not logged in")
        self.say(f"talking in: {self.describe_target()}")

    def describe_target(self) -> str:
        kind, target = self.target
        return {"direct": f"session with {target}", "room": f"room {target}"}.get(kind, "public")

    def cmd_help(self, _args: list[str], _rest: str) -> None:
        for line in HELP.splitlines():
            self.say(line)

    # ------------------------------------------------------------------ lists

    def cmd_list_users(self, _args: list[str], _rest: str) -> None:
        self.need_login()
        users = self.wait(self.session.list_users(), "lu").get("users", [])
        self.say(f"{len(users)} registered user(s):")
        for u in users:
            state = "online" if u.get("online") else "offline"
            self.say(f"  {who(u.get('name', '?'), u.get('display'))} - {state}")

    def cmd_list_online(self, _args: list[str], _rest: str) -> None:
        self.need_login()
        users = self.wait(self.session.list_online(), "lcu").get("users", [])
        self.say(f"{len(users)} user(s) online:")
        for u in users:
            self.say(f"  {who(u.get('name', '?'), u.get('display'))}")

    def cmd_list_rooms(self, _args: list[str], _rest: str) -> None:
        self.need_login()
        rooms = self.wait(self.session.list_rooms(), "lr").get("rooms", [])
        self.say(f"{len(rooms)} room(s):" if rooms else "no rooms")
        for r in rooms:
            self.say(f"  {shown(r.get('name'))} (created by {shown(r.get('creator'))}, "
                     f"{r.get('members', 0)} member(s))")

    def cmd_room_members(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "lru <room>")
        self.need_login()
        result = self.wait(self.session.room_members(args[0]), "lru")
        members = result.get("members", [])
        self.say(f"room {result.get('room', args[0])} (created by {result.get('creator')}), "
                 f"{len(members)} member(s):")
        for u in members:
            self.say(f"  {who(u.get('name', '?'), u.get('display'))}")

    # ------------------------------------------------------------------ talking

    def _send(self, kind: str, target: str, text: str) -> None:
        if not text:
            raise SessionError("usage", "nothing to send")
        if self.session.reconnecting and self.session.user:
            # The session keeps it in its outbox and sends it once logged in again.
            fut = self.session.send(kind, target, text)
            fut.add_done_callback(self._report_queued)
            self.say("* not connected: the message will be sent after reconnecting")
            return
        self.need_login()
        result = self.wait(self.session.send(kind, target, text), "send")
        if isinstance(result.get("msg_id"), int):
            self.last_sent = result["msg_id"]
        if result.get("stored"):
            self.say(f"* {target} is offline; the message will be delivered at their next login")

    def _report_queued(self, fut: Future) -> None:
        exc = fut.exception()
        if exc is not None:
            self.error(f"a queued message was not sent: {exc}")

    def cmd_public(self, _args: list[str], rest: str) -> None:
        self.usage([rest] if rest else [], 1, "bm <text>")
        self._send("public", "", rest)

    def cmd_direct(self, args: list[str], rest: str) -> None:
        self.usage(args, 2, "dm <user> <text>")
        self._send("direct", args[0], rest.partition(" ")[2].strip())

    def cmd_send(self, _args: list[str], rest: str) -> None:
        self.usage([rest] if rest else [], 1, "s <text>")
        kind, target = self.target
        self._send(kind, target, rest)

    def cmd_open(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "o <user>")
        self.need_login()
        result = self.wait(self.session.open_session(args[0]), "o")
        user = result.get("user", args[0])
        self.target = ("direct", user)
        state = "online" if result.get("online") else "offline"
        self.say(f"session with {who(user, result.get('display'))} ({state}); "
                 "s <text> sends to them")

    def cmd_open_room(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "or <room>")
        self.need_login()
        result = self.wait(self.session.join_room(args[0]), "or")
        room = result.get("room", args[0])
        self.target = ("room", room)
        names = ", ".join(u.get("name", "?") for u in result.get("members", []))
        made = " (new room)" if result.get("created") else ""
        self.say(f"in room {room}{made}; members: {names}; s <text> sends here")

    def cmd_close_session(self, _args: list[str], _rest: str) -> None:
        self.need_login()
        kind, target = self.target
        if kind == "room":
            self.wait(self.session.leave_room(target), "cs")
            self.say(f"left room {target}")
        elif kind == "direct":
            self.wait(self.session.close_session(), "cs")
            self.say(f"closed the session with {target}")
        else:
            raise SessionError("usage", "no session or room is open")
        self.target = ("public", "")

    def cmd_close_room(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "cr <room>")
        self.need_login()
        self.wait(self.session.close_room(args[0]), "cr")
        if self.target[0] == "room" and self.target[1].lower() == args[0].lower():
            self.target = ("public", "")
        self.say(f"closed room {args[0]}")

    def cmd_moderate(self, word: str, args: list[str], rest: str) -> None:
        action = MODERATION[word]
        self.need_login()
        target, minutes, text = "", None, ""
        if action == "announce":
            text = rest
            self.usage([rest] if rest else [], 1, "announce <text>")
        else:
            self.usage(args[:1], 1, f"{word} <target>")
            target, more = args[0], args[1:]
            if more and more[0].isdigit() and action in ("ban", "mute"):
                minutes = int(more.pop(0))
            text = " ".join(more)
        result = self.wait(self.session.moderate(action, target, minutes, text), word)
        self.say(result.get("done", "done"))
        if "temporary_password" in result:
            self.say(f"temporary password for {target}: {result['temporary_password']} "
                     "(they log in with it, then change it with passwd)")

    def cmd_rename(self, _args: list[str], rest: str) -> None:
        self.usage([rest] if rest else [], 1, "rename <name>")
        self.need_login()
        result = self.wait(self.session.rename(rest), "rename")
        self.say(f"you are now shown as {result.get('display', rest)}")

    def cmd_policy(self, args: list[str], _rest: str) -> None:
        self.usage(args, 2, "policy private|uploads|readonly on|off")
        self.need_login()
        setting = POLICY_WORDS.get(args[0].lower(), args[0])
        result = self.wait(self.session.moderate("set_policy", setting, None, args[1]), "policy")
        self.say(result.get("done", "done"))

    def cmd_passwd(self, args: list[str], _rest: str) -> None:
        self.usage(args, 2, "passwd <old> <new>")
        self.need_login()
        self.wait(self.session.change_password(args[0], args[1]), "passwd")
        self.say("password changed")

    def cmd_history(self, _args: list[str], _rest: str) -> None:
        self.need_login()
        kind, target = self.target
        messages = self.wait(self.session.history(kind, target), "history").get("messages", [])
        self.say(f"history of {self.describe_target()}: {len(messages)} message(s)")
        self._say_numbered(messages)

    def _say_numbered(self, messages: list[dict]) -> None:
        """History-style lines with the number that delete and edit take."""
        for msg in messages:
            self.say(f"  #{msg.get('msg_id')} "
                     + format_message(msg, self.session.user, with_time=True))

    def _message_number(self, word: str | None, what: str) -> int:
        """#N (or N, for delete) from history, else the last message sent from here."""
        if word is not None:
            return int(word.lstrip("#"))
        if self.last_sent is None:
            raise SessionError("usage", f"you have sent nothing from here to {what}; "
                               "give a number from history")
        return self.last_sent

    def cmd_search(self, _args: list[str], rest: str) -> None:
        self.usage([rest] if rest else [], 1, "search <words>")
        self.need_login()
        result = self.wait(self.session.search(rest), "search")
        found = result.get("messages", [])
        if not found:
            self.say(f"no messages contain {rest!r}")
            return
        more = " (the newest; there are more)" if result.get("truncated") else ""
        self.say(f"{len(found)} message(s) containing {rest!r}{more}:")
        self._say_numbered(found)

    def cmd_delete(self, args: list[str], _rest: str) -> None:
        self.need_login()
        if args and not args[0].lstrip("#").isdigit():
            raise SessionError("usage", "usage: delete [number from history]")
        msg_id = self._message_number(args[0] if args else None, "delete")
        self.wait(self.session.delete_message(msg_id), "delete")
        if msg_id == self.last_sent:
            self.last_sent = None
        self.say(f"deleted message #{msg_id}")

    def cmd_edit(self, args: list[str], rest: str) -> None:
        self.need_login()
        numbered = bool(args) and args[0].startswith("#") and args[0][1:].isdigit()
        text = rest.partition(" ")[2].strip() if numbered else rest
        self.usage([text] if text else [], 1, "edit [#number] <new text>")
        msg_id = self._message_number(args[0] if numbered else None, "edit")
        self.wait(self.session.edit_message(msg_id, text), "edit")
        self.say(f"edited message #{msg_id}")

    # ------------------------------------------------------------------ files

    def cmd_files(self, _args: list[str], _rest: str) -> None:
        self.need_login()
        files = self.wait(self.session.list_files(), "files").get("files", [])
        self.say(f"{len(files)} shared file(s):" if files else "no shared files")
        for f in files:
            by = f" shared by {shown(f['uploader'])}" if f.get("uploader") else ""
            self.say(f"  {shown(f.get('name'))}  {human_size(f.get('size', 0))}{by}")

    def cmd_get(self, args: list[str], _rest: str) -> None:
        self.usage(args, 1, "get <name> [dest-dir]")
        self.need_login()
        dest_dir = Path(args[1]).expanduser() if len(args) > 1 else self.downloads_dir
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionError("io_error", f"cannot create {dest_dir}: {exc.strerror}") from None
        watcher = _ProgressWatcher(self.say, args[0])
        thread = self.session.download(args[0], dest_dir, watcher.update)
        while thread.is_alive():
            thread.join(0.2)
            if watcher.stalled():
                thread.cancel()
                thread.join(5)
                raise SessionError("timeout", f"download of {args[0]} stalled")
        last = watcher.last
        if last is None or last.state != "done":
            why = last.message if last is not None and last.message else "it did not finish"
            raise SessionError("download_failed", f"download of {args[0]} failed: {why}")
        how = f" via {last.transport}" if getattr(last, "transport", None) else ""
        self.say(f"saved {last.path} ({human_size(last.size)}{how}), sha256 verified")

    def cmd_put(self, _args: list[str], rest: str) -> None:
        self.usage([rest] if rest else [], 1, "put <path>")
        self.need_login()
        path = Path(rest).expanduser()
        if not path.is_file():
            raise SessionError("io_error", f"{path} is not a readable file")
        activity = {"at": time.monotonic(), "line": 0.0}  # written by the upload thread

        def progress(sent: int, total: int) -> None:
            now = time.monotonic()
            activity["at"] = now
            if sent == total or now - activity["line"] >= PROGRESS_EVERY:
                activity["line"] = now
                pct = 100 * sent // total if total else 100
                self.say(f"put {path.name}: {pct}% {human_size(sent)}/{human_size(total)}")

        fut = self.session.upload(path, progress)
        while True:
            try:
                entry = fut.result(0.5)
                break
            except TimeoutError:
                if time.monotonic() - activity["at"] > STALL_TIMEOUT:
                    fut.cancel()
                    raise SessionError("timeout", f"upload of {path.name} stalled") from None
        self.say(f"uploaded {entry.get('name', path.name)} ({human_size(entry.get('size', 0))})")


class _ProgressWatcher:
    """Turns DownloadProgress callbacks (from the download thread) into occasional lines."""

    def __init__(self, say: Callable[[str], None], name: str) -> None:
        self.say = say
        self.name = name
        self.last: Any = None
        self._last_line = 0.0
        self._last_change = time.monotonic()
        self._last_state: str | None = None

    def update(self, p: Any) -> None:
        now = time.monotonic()
        if self.last is None or p.received != self.last.received or p.state != self._last_state:
            self._last_change = now
        self.last = p
        changed = p.state != self._last_state
        self._last_state = p.state
        if p.state in ("done", "failed", "cancelled"):
            return  # the get command reports the outcome itself
        if changed or now - self._last_line >= PROGRESS_EVERY:
            self._last_line = now
            pct = 100 * p.received // p.size if p.size else 0
            rate = f" {human_size(p.rate_bps)}/s" if p.rate_bps else ""
            eta = f" eta {p.eta_s:.0f} s" if p.eta_s else ""
            self.say(f"get {self.name}: {p.state} {pct}% "
                     f"{human_size(p.received)}/{human_size(p.size)}{rate}{eta}")

    def stalled(self) -> bool:
        return time.monotonic() - self._last_change > STALL_TIMEOUT


def main(host: str | None = None, port: int | None = None, tls: bool = True) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    client = TerminalClient(tls=tls)
    client.say(f"{APP_NAME} {APP_VERSION} terminal client. Type help for commands.")
    if host:
        client.connect(host, port or DEFAULT_PORT)
    return client.run()
