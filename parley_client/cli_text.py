"""What the terminal client prints: its help, and one line per incoming event or message.
Kept apart from the command loop (cli.py) so that the wording can be read and tested alone."""

from __future__ import annotations

import re
import time

from protocol import messages as m

from .events import (
    Connected,
    Disconnected,
    LoggedIn,
    LoggedOut,
    Notice,
    Reconnected,
    Reconnecting,
)
from .units import human_size

HELP = """\
commands:
  c <host> [port]            connect (default port 5150)
  join <code>                connect with a join code (parley://...) from the server
  register <user> <password> create an account and log in
  login <user> <password>    log in
  lu | lcu                   list all users | connected users
  lr | lru <room>            list rooms | members of a room
  bm <text>                  message everyone (public)
  dm <user> <text>           direct message
  o <user>                   open a session with a user
  or <room>                  enter a room (created if new)
  s <text>                   send to the open session or room (public when none)
  cs                         close the session or leave the room
  cr <room>                  close a room you created
  rename <name>              change your display name
  passwd <old> <new>         change your password
  history                    recent messages of the open session/room (else public), numbered
  search <words>             messages you can read that contain the words, newest first
  edit [#number] <text>      change your last message, or the one with that history number
  delete [number]            delete your last message, or the one with that history number
                             (administrators: anyone's)
  files                      list shared files
  get <name> [dest-dir]      download a shared file
  put <path>                 share a file (upload)
  l                          status
  d                          disconnect
administrators only:
  kick <user> [reason]       ban <user|address> [minutes] [reason]   unban <user|address>
  mute <user> [minutes]      unmute <user>        announce <text>     rmfile <name>
  purge public|room:NAME|direct:A:B               op <user> | deop <user>
  resetpw <user>             give a user who forgot theirs a temporary password
  adduser <user>             create an account (a temporary password to hand over)
  (ban/unban: user:NAME or address:IP says which, for a username shaped like an address)
  policy private|uploads|readonly on|off          switch until the server restarts
  x | ex | \\quit             exit
  help                       this text"""


# command word -> moderation action (see docs/protocol.md, moderate)
MODERATION = {"kick": "kick", "ban": "ban", "unban": "unban", "mute": "mute",
              "unmute": "unmute", "announce": "announce", "rmfile": "remove_file",
              "purge": "purge", "op": "op", "deop": "deop",
              "resetpw": "reset_password", "adduser": "add_user"}


# policy word -> the setting an administrator switches while the server runs
POLICY_WORDS = {"private": "private_messages", "uploads": "uploads",
                "readonly": "public_read_only"}


# What a terminal acts on instead of showing: C0 controls and DEL (ESC starts the sequences
# that clear the screen or set the window title, CR and backspace overwrite what is shown),
# C1 controls (some terminals take 0x9b as ESC [), line and paragraph separators, and the
# bidirectional overrides that make text read differently from what it is.
_TERMINAL_CONTROLS = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
CONTINUATION = "\n      "  # a message's next line: indented, so it cannot pass for a new line


def _visible(match: re.Match) -> str:
    ch = match.group()
    return "\\t" if ch == "\t" else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def terminal_safe(line: str) -> str:
    """A line of ours with every control character shown as an escape (\\x1b), never acted
    on; its own line breaks stay. The last guard: fields are also cleaned by shown()."""
    return _TERMINAL_CONTROLS.sub(_visible, line)


def shown(text: object) -> str:
    """One field from the server (a message, a name, a reason), safe to print: controls
    escaped, and its line breaks indented so that no text can forge a line of its own."""
    return terminal_safe(str(text)).replace("\r\n", "\n").replace("\n", CONTINUATION)


def who(name: str, display: str | None) -> str:
    name = shown(name)
    return name if not display or display == name else f"{shown(display)} ({name})"


def format_message(msg: m.ChatMessage | dict, me: str | None, *, with_time: bool = False) -> str:
    """One chat message as one line: ``[public] alice: hi``, ``[dm] alice: hi``, ...

    Takes the event or a history entry (a dict with the same fields).
    """
    get = msg.get if isinstance(msg, dict) else lambda k, d=None: getattr(msg, k, d)
    kind, target, sender = get("kind", ""), get("target", ""), get("sender", "?")
    if kind == "direct":
        mine = me is not None and sender.lower() == me.lower()
        where = f"dm to {target}" if mine else "dm"
    elif kind == "room":
        where = f"room:{target}"
    else:
        where = "public"
    if get("delayed", False):
        where += ", delivered late"
    stamp = ""
    if with_time and isinstance(get("ts"), int | float):
        stamp = time.strftime("%H:%M ", time.localtime(get("ts")))
    mark = " (edited)" if get("edited") else ""
    return f"[{shown(where)}] {stamp}{who(sender, get('sender_display'))}: {shown(get('text', ''))}{mark}"


def describe_policy(policy: dict) -> str:
    """The switches an administrator flips during a lesson, as one line."""
    def onoff(key: str, default: bool) -> str:
        return "on" if policy.get(key, default) else "off"
    return (f"private messages {onoff('private_messages', True)}, "
            f"uploads {onoff('uploads', True)}, "
            f"read-only public room {onoff('public_read_only', False)}")


def format_event(event: object, me: str | None) -> str | None:
    """The line to print for an incoming event, or None for events a command reports itself."""
    if isinstance(event, m.ChatMessage):
        return format_message(event, me)
    if isinstance(event, m.Presence):
        return f"* {who(event.user, event.display)} {'joined' if event.online else 'left'}"
    if isinstance(event, m.Renamed):
        return f"* {shown(event.old_display or event.user)} is now known as {shown(event.display)}"
    if isinstance(event, m.RoomEvent):
        actor = who(event.user, event.display)
        if event.event == "closed":
            return f"* room {shown(event.room)} was closed by {actor}"
        return f"* {actor} {shown(event.event)} room {shown(event.room)}"
    if isinstance(event, m.FileAdded):
        name = shown(event.file.get("name", "?"))
        if event.by:
            return f"* {shown(event.by)} shared {name}"
        return f"* new shared file {name} ({human_size(event.file.get('size', 0))})"
    if isinstance(event, m.FileRemoved):
        return f"* shared file {shown(event.name)} was removed"
    if isinstance(event, m.Error):
        return f"error: {shown(event.message)}"
    if isinstance(event, m.PolicyChanged):
        return "* the server's policy changed: " + describe_policy(event.policy)
    if isinstance(event, m.UserTyping):
        return None  # a line per notice would drown the conversation
    if isinstance(event, m.MessageEdited):
        return f"* {shown(event.sender)} edited a message (#{event.msg_id}): {shown(event.text)}"
    if isinstance(event, m.MessageDeleted):
        if event.by.lower() == event.sender.lower():
            return f"* {shown(event.sender)} deleted a message (#{event.msg_id})"
        return f"* {shown(event.by)} removed a message of {shown(event.sender)} (#{event.msg_id})"
    if isinstance(event, m.AccountStatus):
        return None  # the SERVER message that comes with it says it in words
    if isinstance(event, m.Bye):
        return None  # the Disconnected that follows carries its reason and code
    if isinstance(event, Disconnected):
        code = f" ({event.code})" if event.code else ""
        then = "; reconnecting" if event.will_reconnect else ""
        return f"* disconnected: {shown(event.reason)}{code}{then}"
    if isinstance(event, Reconnecting):
        return f"* reconnecting in {event.delay:.1f} s (attempt {event.attempt})"
    if isinstance(event, Reconnected):
        return f"* reconnected{f' and logged in as {event.user}' if event.user else ''}"
    if isinstance(event, LoggedOut):
        return f"* {shown(event.reason)}" if event.reason != "logged out" else None
    if isinstance(event, Notice):
        return f"* {shown(event.text)}"
    if isinstance(event, LoggedIn):
        as_shown = f" (shown as {shown(event.display)})" if event.display != event.user else ""
        return f"{'registered; ' if event.new else ''}logged in as {event.user}{as_shown}"
    if isinstance(event, Connected):
        return None  # the c command prints it
    return None
