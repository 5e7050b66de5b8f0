"""Look and feel: sv-ttk light/dark for ttk widgets, plus colours and fonts for the plain Tk
widgets (Text, Listbox, Menu) that ttk themes do not reach."""

from __future__ import annotations

import tkinter as tk
import zlib
from dataclasses import dataclass
from tkinter import font as tkfont

import sv_ttk


@dataclass(frozen=True)
class Palette:
    name: str
    bg: str  # chat pane background
    fg: str
    muted: str  # times, notices
    accent: str  # own name, links, badges
    own_bg: str  # a faint band behind own messages
    mention_bg: str
    error: str
    ok: str
    banner_bg: str
    banner_fg: str
    select_bg: str
    senders: tuple[str, ...]  # name colours for other people, picked by a stable hash


LIGHT = Palette(
    "light", bg="#ffffff", fg="#1b1b1b", muted="#6e6e6e", accent="#005fb8",
    own_bg="#eef5fc", mention_bg="#fff4ce", error="#c42b1c", ok="#0f7b0f",
    banner_bg="#fde7e9", banner_fg="#8a1c1c", select_bg="#cce4f7",
    senders=("#b4009e", "#8764b8", "#038387", "#ca5010", "#498205", "#c239b3", "#0063b1",
             "#7a7574"),
)
DARK = Palette(
    "dark", bg="#1f1f1f", fg="#f2f2f2", muted="#a0a0a0", accent="#57c8ff",
    own_bg="#26323d", mention_bg="#4a3b12", error="#ff99a4", ok="#6ccb5f",
    banner_bg="#442726", banner_fg="#ffd0d0", select_bg="#264f78",
    senders=("#ff8ce6", "#c5a3ff", "#5fd7d7", "#ffb36b", "#9fd86b", "#f48fb1", "#79b8ff",
             "#d0c8bf"),
)
PALETTES = {"light": LIGHT, "dark": DARK}


def sender_colour(palette: Palette, user: str) -> str:
    return palette.senders[zlib.crc32(user.lower().encode()) % len(palette.senders)]


class Fonts:
    """Named fonts shared by every chat widget, derived from the theme's body font so a
    platform's UI font (Segoe UI, Cantarell, DejaVu Sans...) carries through."""

    def __init__(self, root: tk.Misc) -> None:
        try:
            base = tkfont.nametofont("SunValleyBodyFont", root=root).actual()
        except tk.TclError:
            base = tkfont.nametofont("TkDefaultFont", root=root).actual()
        family = base["family"]
        self.body = _font(root, "ParleyBody", family, 11)
        self.bold = _font(root, "ParleyBold", family, 11, weight="bold")
        self.small = _font(root, "ParleySmall", family, 9)
        self.notice = _font(root, "ParleyNotice", family, 9, slant="italic")
        self.title = _font(root, "ParleyTitle", family, 14, weight="bold")
        self.heading = _font(root, "ParleyHeading", family, 10, weight="bold")
        self.big = _font(root, "ParleyBig", family, 20, weight="bold")


def _font(root, name: str, family: str, size: int, **kw) -> tkfont.Font:
    try:
        f = tkfont.nametofont(name, root=root)
        f.configure(family=family, size=size, **kw)
        return f
    except tk.TclError:
        f = tkfont.Font(root=root, name=name, family=family, size=size, **kw)
        # The font lives as long as the interpreter. Without this, Font.__del__ would call
        # Tcl from whichever thread the garbage collector happens to run on.
        f.delete_font = False
        return f


def apply_theme(root: tk.Tk, name: str) -> Palette:
    name = name if name in PALETTES else "light"
    sv_ttk.set_theme(name, root)
    pal = PALETTES[name]
    # Menus and listboxes are classic Tk: give them the theme's colours through the option db
    # (for ones made later) and directly for the root.
    for pattern, value in (("*Menu.background", pal.bg), ("*Menu.foreground", pal.fg),
                           ("*Menu.activeBackground", pal.select_bg),
                           ("*Menu.activeForeground", pal.fg),
                           ("*Listbox.background", pal.bg), ("*Listbox.foreground", pal.fg)):
        root.option_add(pattern, value)
    root.configure(background=pal.bg)
    return pal
