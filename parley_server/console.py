"""The administrator's console on the server's standard input."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from protocol import messages as m

if TYPE_CHECKING:
    from .chat_server import ChatServer

HELP = """commands:
  lu            all registered users        lcu          connected users
  ls            open one-to-one sessions    lr           rooms
  lru <room>    users in a room             kick <user>  disconnect a user
  say <text>    message from SERVER to all  x            shut down cleanly
  help          this list"""


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
        elif cmd == "kick":
            client = server.get_client(arg)
            if client is None:
                self._print(f"error: {arg!r} is not connected")
            else:
                client.disconnect("kicked", "you were disconnected by the administrator")
                self._print(f"kicked {client.user}")
        elif cmd == "say":
            if not arg:
                self._print("error: say needs a text")
            else:
                stored = server.store.add_message(time.time(), "SERVER", "SERVER", "public", "",
                                                  arg)
                count = server.broadcast(m.ChatMessage(stored.msg_id, stored.ts, "SERVER",
                                                       "SERVER", "public", "", arg))
                self._print(f"sent to {count} clients")
        elif cmd in ("x", "exit", "quit"):
            self._print("shutting down")
            self.on_exit()
            return False
        else:
            self._print(f"unknown command {cmd!r}; type help for the list")
        return True
