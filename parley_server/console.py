"""The administrator's console on the server's standard input."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .chat_server import ChatServer

HELP = """commands:
  lu            all registered users        lcu          connected users
  ls            open one-to-one sessions    lr           rooms
  lru <room>    users in a room             kick <user>  disconnect a user
  say <text>    message from SERVER to all  x            shut down cleanly
  ban <user|address> [minutes] [reason]     unban <user|address>
                (user:NAME or address:IP says which, for a username shaped like an address)
  adduser <user> create an account (prints a temporary password; for self_registration off)
  mute <user> [minutes]                     unmute <user>
  announce <text>                           rm <file>    remove a shared file
  purge public | room:NAME | direct:A:B     bans         list active bans
  op <user> / deop <user>  make / unmake an administrator
  passwd <user> reset a forgotten password (prints a temporary one)
  policy        the policy now; policy private|uploads|readonly on|off  switch one
                until the server restarts (policy.toml or flags set the start)
  audit [n]     the last n audit log entries
  help          this list"""

# console word -> moderation action
MODERATION = {"ban": "ban", "unban": "unban", "mute": "mute", "unmute": "unmute",
              "announce": "announce", "rm": "remove_file", "purge": "purge", "op": "op",
              "deop": "deop", "passwd": "reset_password", "adduser": "add_user"}


# console word -> policy setting that changes live (moderation.LIVE_SETTINGS)
POLICY_WORDS = {"private": "private_messages", "uploads": "uploads",
                "readonly": "public_read_only"}


class AdminConsole:
    def __init__(self, server: ChatServer, on_exit, out: TextIO = sys.stdout) -> None:
        self.server = server
        self.on_exit = on_exit
        self.out = out

    def start(self, stream: TextIO = sys.stdin) -> threading.Thread:
        t = threading.Thread(target=self._loop, args=(stream,), name="console", daemon=True)
        t.start()
        return t

    def _loop(self, stream: TextIO) -> None:
        for line in stream:
            if self.execute(line.strip()) is False:
                return
        # EOF on the console is not a request to stop: the server keeps running.

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _moderate(self, cmd: str, arg: str) -> None:
        from .moderation import ModerationError

        words = arg.split()
        target, minutes, text = "", None, ""
        if cmd in ("say", "announce"):
            action, text = "announce", arg
        elif cmd == "kick":
            action, target = "kick", arg
        else:
            action = MODERATION[cmd]
            target = words[0] if words else ""
            rest = words[1:]
            if rest and rest[0].isdigit() and action in ("ban", "mute"):
                minutes = int(rest.pop(0))
            text = " ".join(rest)
        if action != "announce" and not target:
            self._print(f"error: {cmd} needs a target; type help")
            return
        try:
            done, private = self.server.moderation.perform("console", action, target, minutes,
                                                           text)
        except ModerationError as exc:
            self._print(f"error: {exc.message}")
            return
        self._print(done)
        if "temporary_password" in private:
            self._print(f"temporary password: {private['temporary_password']}  (give it to "
                        f"{target}; they log in with it, then change it)")

    def _policy(self, arg: str) -> None:
        from .moderation import LIVE_SETTINGS, ModerationError

        words = arg.split()
        if not words:
            policy = self.server.config.policy
            for name, label in LIVE_SETTINGS.items():
                self._print(f"{label:<24} {'on' if getattr(policy, name) else 'off'}")
            return
        if len(words) != 2:
            self._print("error: policy private|uploads|readonly on|off")
            return
        name = POLICY_WORDS.get(words[0].lower(), words[0])
        try:
            done, _private = self.server.moderation.perform("console", "set_policy", name,
                                                            None, words[1])
        except ModerationError as exc:
            self._print(f"error: {exc.message}")
            return
        self._print(done)

    def execute(self, line: str) -> bool:
        """Run one console line. Returns False once the console should stop."""
        if not line:
            return True
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        server = self.server
        if cmd == "help":
            self._print(HELP)
        elif cmd == "lu":
            with server.lock:
                online = set(server.clients)
            users = server.store.all_users()
            for name, display in users:
                state = "online" if name.lower() in online else "offline"
                self._print(f"{name:<32} {display:<32} {state}")
            self._print(f"{len(users)} users")
        elif cmd == "lcu":
            clients = server.online()
            for c in clients:
                since = time.strftime("%H:%M:%S", time.localtime(c.connected_at))
                self._print(f"{c.user:<32} {c.ip}:{c.address[1]:<6} since {since}")
            self._print(f"{len(clients)} connected")
        elif cmd == "ls":
            with server.lock:
                sessions = sorted(server.sessions.items())
                names = {k: c.user for k, c in server.clients.items()}
            for user_key, target in sessions:
                self._print(f"{names.get(user_key, user_key)} -> {target}")
            self._print(f"{len(sessions)} open sessions")
        elif cmd == "lr":
            with server.lock:
                rooms = sorted(server.rooms.values(), key=lambda r: r.name.lower())
                lines = [f"{r.name:<32} creator {r.creator:<20} {len(r.members)} members"
                         for r in rooms]
            for text in lines:
                self._print(text)
            self._print(f"{len(lines)} rooms")
        elif cmd == "lru":
            with server.lock:
                room = server.rooms.get(arg.lower())
                members = sorted(room.members.values()) if room else None
            if members is None:
                self._print(f"error: no room named {arg!r}")
            else:
                self._print(" ".join(members) or "(empty)")
        elif cmd == "policy":
            self._policy(arg)
        elif cmd in ("kick", "say") or cmd in MODERATION:
            self._moderate(cmd, arg)
        elif cmd == "bans":
            bans = server.store.active_bans(time.time())
            for kind, value, until, reason, by in bans:
                when = "until lifted" if until is None else \
                    "until " + time.strftime("%Y-%m-%d %H:%M", time.localtime(until))
                self._print(f"{kind:<8} {value:<32} {when}  by {by}  {reason}")
            self._print(f"{len(bans)} bans")
        elif cmd == "audit":
            count = int(arg) if arg.isdigit() else 20
            for entry in server.moderation.audit.entries()[-count:]:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["ts"]))
                self._print(f"{when} {entry['actor']}: {entry['action']} {entry['target']}"
                            f" -> {entry.get('result', '')}")
        elif cmd in ("x", "exit", "quit"):
            self._print("shutting down")
            self.on_exit()
            return False
        else:
            self._print(f"unknown command {cmd!r}; type help for the list")
        return True
