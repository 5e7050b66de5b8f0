"""An administrator's actions as a person reads them, mapped to the protocol's `moderate`
request (docs/protocol.md, section 6.6). No tkinter: the GUI's moderation dialog and its
tests use this to check what was typed before anything is sent.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .chat_state import ConvKey


@dataclass(frozen=True)
class ModerationAction:
    label: str  # what the dialog shows
    action: str  # the protocol's action
    target: str  # what the target field asks for
    minutes: bool  # takes a duration
    reason: bool  # takes a reason, shown to the person it concerns
    # Put before the target on the wire: a ban says whether it is of a user or an address,
    # since a username may look like an IPv4 address.
    prefix: str = ""


ACTIONS = (
    ModerationAction("Kick", "kick", "User", False, True),
    ModerationAction("Mute", "mute", "User", True, False),
    ModerationAction("Unmute", "unmute", "User", False, False),
    ModerationAction("Ban", "ban", "User", True, True, "user:"),
    ModerationAction("Ban address", "ban", "Address", True, True, "address:"),
    ModerationAction("Unban", "unban", "User", False, False, "user:"),
    ModerationAction("Unban address", "unban", "Address", False, False, "address:"),
    ModerationAction("Make administrator", "op", "User", False, False),
    ModerationAction("Remove administrator", "deop", "User", False, False),
    # The answer carries a temporary password for the admin to hand over (not an admin's:
    # the server refuses those except at its console).
    ModerationAction("Reset password", "reset_password", "User", False, False),
    # An account for someone, with a temporary password (when the server does not let
    # people register themselves).
    ModerationAction("Create account", "add_user", "User", False, False),
)
BY_LABEL = {a.label: a for a in ACTIONS}
BY_ACTION = {a.action: a for a in reversed(ACTIONS)}  # the first label of each action

_DURATION = re.compile(r"^\s*(\d{1,7})\s*(m|min|minutes?|h|hours?|d|days?)?\s*$", re.I)
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}
MAX_MINUTES = 366 * 1440  # a year: anything longer is "until lifted"


class ModerationInputError(ValueError):
    """What was typed cannot be sent; str() is a sentence for the user."""


def parse_minutes(text: str) -> int | None:
    """"" -> None (until lifted); "30" -> 30 minutes; "2h" -> 120; "1 day" -> 1440."""
    if not text.strip():
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ModerationInputError("Give the duration in minutes (30), hours (2h) or days "
                                   "(1d), or leave it empty for until lifted.")
    minutes = int(match.group(1)) * _UNIT_MINUTES[(match.group(2) or "m")[0].lower()]
    if not 1 <= minutes <= MAX_MINUTES:
        raise ModerationInputError("The duration must be between 1 minute and a year; leave "
                                   "it empty for until lifted.")
    return minutes


def build_request(label: str, target: str, duration: str = "", reason: str = ""
                  ) -> tuple[str, str, int | None, str]:
    """(action, target, minutes, text) for ClientSession.moderate, from the dialog's fields.
    Fields the action does not take are ignored."""
    spec = BY_LABEL.get(label)
    if spec is None:
        raise ModerationInputError(f"Unknown action {label!r}.")
    target = target.strip()
    if spec.prefix and target.lower().startswith(spec.prefix):
        target = target[len(spec.prefix):]  # typed the wire's form: take it as meant
    if spec.target == "Address":
        try:
            ipaddress.ip_address(target)
        except ValueError:
            raise ModerationInputError("Address: an IP address, such as 192.168.1.23."
                                       ) from None
    elif not target or any(c.isspace() for c in target):
        raise ModerationInputError(f"{spec.target}: one name, without spaces.")
    minutes = parse_minutes(duration) if spec.minutes else None
    return spec.action, spec.prefix + target, minutes, reason.strip() if spec.reason else ""


def purge_target(key: ConvKey, me: str, wire_target: str) -> str:
    """The moderate `purge` target for a conversation: public, room:NAME or direct:A:B."""
    kind = key[0]
    if kind == "public":
        return "public"
    if kind == "room":
        return f"room:{wire_target}"
    return f"direct:{me}:{wire_target}"
