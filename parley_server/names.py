"""Which names are the same name: usernames and display names compared as people read them.

Two names clash when their *skeletons* are equal. The skeleton folds case the Unicode way
(``str.casefold``: "Émile" and "émile" clash), applies NFKC (fullwidth "ｂｏｂ" is "bob"), and
maps the Cyrillic and Greek letters that look like Latin ones to those Latin letters
("tеacher" with a Cyrillic е is "teacher"). The table is a small built-in subset of Unicode's
confusables (UTS #39), stdlib only: it covers the look-alikes a keyboard layout gives easily,
not every glyph. ASCII is never mapped to other ASCII, so "bob1" and "bobl" stay distinct
usernames.

Display names are also refused when a character would not show (controls, format characters,
separators other than a plain space, the Hangul and Braille blanks): such a name looks like
another one, or like nothing.
"""

from __future__ import annotations

import threading
import unicodedata

# The name the server's announcements and notices go out under (moderation.SERVER_NAME).
SERVER_NAME = "SERVER"
DISPLAY_MAX = 32

# Capital letters first: casefold would turn Cyrillic "В" into "в", which no longer looks
# like the Latin "b" it was copying.
_UPPER = {
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q",
    "Ԝ": "W", "Ү": "Y", "Һ": "H", "Ӏ": "I", "Ԁ": "D", "Ɡ": "G",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}
_LOWER = {
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s",
    "і": "i", "ј": "j", "һ": "h", "ԛ": "q", "ԝ": "w", "ү": "y", "ӏ": "l", "ԁ": "d",
    "ɡ": "g", "ı": "i",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "υ": "u", "χ": "x",
    "γ": "y", "τ": "t",
}
_UPPER_TABLE = str.maketrans(_UPPER)
_LOWER_TABLE = str.maketrans(_LOWER)

# Characters of other categories that show as nothing: the Hangul fillers, the Braille
# blank, and the invisible combining marks (grapheme joiner, variation selectors).
_BLANKS = {0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F, 0x17B4, 0x17B5,
           *range(0x180B, 0x1810), *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}


def skeleton(name: str) -> str:
    """The key two names clash on. NFKD first so an accented Cyrillic letter (ё) maps its
    base letter and keeps its accent (ë)."""
    text = unicodedata.normalize("NFKD", name).translate(_UPPER_TABLE).casefold()
    text = unicodedata.normalize("NFKD", text).translate(_LOWER_TABLE)
    return " ".join(unicodedata.normalize("NFC", text).split())


def reserved(name: str) -> bool:
    return skeleton(name) == skeleton(SERVER_NAME)


class NameRefused(Exception):
    """A display name that cannot be used; str() says why, for the person who chose it."""


def _describe(c: str) -> str:
    return f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed character')})"


def clean_display(text: str) -> str:
    """The display name as it will be stored (NFC, runs of spaces made one), or NameRefused."""
    display = " ".join(unicodedata.normalize("NFC", text).split(" "))
    display = " ".join(p for p in display.split(" ") if p)
    if not 1 <= len(display) <= DISPLAY_MAX:
        raise NameRefused(f"display names are 1-{DISPLAY_MAX} characters")
    for c in display:
        cat = unicodedata.category(c)
        if c == " ":
            continue
        if cat in ("Zs", "Zl", "Zp"):
            raise NameRefused(f"display names cannot contain {_describe(c)}: only the ordinary "
                              "space separates words")
        if cat[0] == "C":
            raise NameRefused(f"display names cannot contain {_describe(c)}: it is an "
                              "invisible or control character")
        if ord(c) in _BLANKS:
            raise NameRefused(f"display names cannot contain {_describe(c)}: it shows as "
                              "blank space")
    if not any(unicodedata.category(c)[0] in "LNPS" for c in display):
        raise NameRefused("a display name needs at least one visible letter, digit or sign")
    if reserved(display):
        raise NameRefused(f"{SERVER_NAME!r} is how the server signs its announcements; "
                          "choose another display name")
    return display


class NameIndex:
    """Every username and display name by skeleton, and whose it is, kept in memory.

    The database's own unique index compares lower(display) only; this is the stricter check,
    done before each registration and rename under ``lock`` so two of them cannot both take
    one skeleton. An older database may already hold clashing names: they keep them.
    """

    def __init__(self, users: list[tuple[str, str]]) -> None:
        # Reentrant: a check is also made before the lock is held for the check-and-write.
        self.lock = threading.RLock()
        self._owners: dict[str, set[str]] = {}
        self._display: dict[str, str] = {}  # name key -> skeleton of its display name
        for name, display in users:
            self.add(name, display)

    def owner_other_than(self, key: str, name: str) -> bool:
        """Whether the skeleton ``key`` belongs to an account other than ``name``."""
        with self.lock:
            return bool(self._owners.get(key, set()) - {name.lower()})

    def add(self, name: str, display: str) -> None:
        owner = name.lower()
        self._owners.setdefault(skeleton(name), set()).add(owner)
        self.set_display(name, display)

    def set_display(self, name: str, display: str) -> None:
        owner, new = name.lower(), skeleton(display)
        old = self._display.get(owner)
        if old is not None and old != skeleton(name):
            self._owners.get(old, set()).discard(owner)
        self._display[owner] = new
        self._owners.setdefault(new, set()).add(owner)
