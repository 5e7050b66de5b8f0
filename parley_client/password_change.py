"""Changing one's own password, as a person types it: what the dialog checks before anything
is sent, and the sentence it shows when the server says no. No tkinter, so the rules are
tested without a window."""

from __future__ import annotations

# The server's rule (parley_server/accounts.py); checked here too so that a typo is caught
# before the current password is spent on a request that is bound to fail.
MIN_PASSWORD = 6
MAX_PASSWORD = 1024

# Refusals whose server message already reads as a sentence for the person at the keyboard.
SERVER_SENTENCES = frozenset({"wrong_password", "invalid_password", "throttled"})


class PasswordChangeError(ValueError):
    """What was typed cannot be sent; str() is a sentence for the user, field is the one to
    fix first: "current", "new" or "repeat"."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_new_password(current: str, new: str, repeat: str) -> None:
    """Raise PasswordChangeError unless the three fields make a change worth sending."""
    for value, field in ((current, "current"), (new, "new"), (repeat, "repeat")):
        if not value:
            raise PasswordChangeError("Fill in all three fields.", field)
    if len(new) < MIN_PASSWORD:
        raise PasswordChangeError(f"The new password needs at least {MIN_PASSWORD} "
                                  "characters.", "new")
    if len(new) > MAX_PASSWORD:
        raise PasswordChangeError(f"The new password can have at most {MAX_PASSWORD} "
                                  "characters.", "new")
    if new != repeat:
        raise PasswordChangeError("The two new passwords are not the same.", "repeat")
    if new == current:
        raise PasswordChangeError("The new password is the same as the current one.", "new")


def as_sentence(text: str) -> str:
    """"the current password is wrong" -> "The current password is wrong." """
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def refusal_sentence(code: str | None, message: str) -> str:
    """What the dialog says when the change failed (the server's refusal, or no answer)."""
    if code in SERVER_SENTENCES and message.strip():
        return as_sentence(message)
    reason = message.strip() or code or "no answer"
    return as_sentence(f"your password was not changed: {reason}")
