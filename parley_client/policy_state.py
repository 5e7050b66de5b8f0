"""What the server's policy allows, and what to say when an administrator switches it while
people are chatting (docs/protocol.md, sections 6.6 and 7: `set_policy`, the `policy` event).

A mixin of ChatState: it reads self.policy, self.is_admin, self.rooms and self.active, and
adds notices with self.notice. The policy is the server's whole dict as in the hello reply;
a switch the server does not mention keeps its default (a server that never turns anything
off may send an empty policy).
"""

from __future__ import annotations

from .chat_records import PUBLIC, Change, ConvKey

# The switches an administrator flips while the server runs, with what they are when unsaid.
SWITCH_DEFAULTS = {"private_messages": True, "uploads": True, "public_read_only": False}

# setting -> (sentence when it becomes True, sentence when it becomes False)
SWITCH_SENTENCES = {
    "private_messages": ("Private messages are allowed again.",
                         "Private messages are now turned off."),
    "uploads": ("Uploads are allowed again.",
                "Uploads are now turned off (administrators still upload)."),
    "public_read_only": ("Only administrators can post in Public now.",
                         "Everyone can post in Public again."),
}


def switch_of(policy: dict, setting: str) -> bool:
    return bool(policy.get(setting, SWITCH_DEFAULTS[setting]))


def policy_sentences(old: dict, new: dict) -> list[str]:
    """In words, each switch that differs between two policies (none: an empty list)."""
    return [SWITCH_SENTENCES[s][0 if switch_of(new, s) else 1] for s in SWITCH_DEFAULTS
            if switch_of(old, s) != switch_of(new, s)]


class PolicyTracking:
    """The policy part of ChatState: what may be sent, and live switches."""

    policy: dict

    def policy_switch(self, setting: str) -> bool:
        """The live value of one of SWITCH_DEFAULTS' settings (what the Admin menu shows)."""
        return switch_of(self.policy, setting)

    def private_messages_allowed(self) -> bool:
        return self.policy_switch("private_messages")

    def uploads_allowed(self) -> bool:
        return self.policy_switch("uploads") or self.is_admin

    def can_send(self, key: ConvKey) -> bool:
        return self.send_blocked_because(key) is None

    def send_blocked_because(self, key: ConvKey) -> str | None:
        """Why the server would refuse a message here (its policy, a closed room), or None."""
        if key[0] == "room":
            info = self.rooms.get(key[1])
            return None if info and info.joined else "This room is closed."
        if key[0] == "direct" and not self.private_messages_allowed():
            return "Private messages are turned off on this server."
        if key[0] == "public" and self.policy_switch("public_read_only") and not self.is_admin:
            return "Only administrators post in Public on this server."
        return None

    def set_policy(self, policy: dict, *, tell: bool = True) -> list[Change]:
        """Replace the policy. Change("policy") if a switch moved, and with tell, a notice in
        Public saying so (the private-messages one also in the open private conversation,
        where whoever was typing there looks)."""
        old, self.policy = self.policy, dict(policy)
        sentences = policy_sentences(old, self.policy)
        if not sentences:
            return []
        changes = [Change("policy")]
        if tell:
            changes += self.notice(PUBLIC, " ".join(sentences))
            if (self.active and self.active[0] == "direct"
                    and switch_of(old, "private_messages")
                    != self.policy_switch("private_messages")):
                changes += self.notice(self.active, SWITCH_SENTENCES["private_messages"][
                    0 if self.private_messages_allowed() else 1])
        return changes

    def _ev_PolicyChanged(self, ev) -> list[Change]:
        return self.set_policy(ev.policy)
