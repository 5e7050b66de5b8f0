"""Parley's application icon: a white speech bubble with three dots on a blue rounded square.

Drawn pixel by pixel so no image library or binary asset is needed. gui/assets/parley.png is
the same drawing, written by `python -m gui.icon` for packagers and file managers; at run time
the PNG is used when present, else the icon is drawn.
"""

from __future__ import annotations

import logging
import sys
import tkinter as tk
from pathlib import Path

log = logging.getLogger(__name__)
ASSET = Path(__file__).resolve().parent / "assets" / "parley.png"
BLUE, WHITE, DOT = (0, 95, 184), (255, 255, 255), (0, 95, 184)


def _inside_round_rect(x: float, y: float, x0, y0, x1, y1, r) -> bool:
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r and x0 <= x <= x1 and y0 <= y <= y1


def _pixel(x: float, y: float, s: float):
    """Colour at (x, y) in a unit square scaled by s, or None for transparent."""
    u, v = x / s, y / s
    if not _inside_round_rect(u, v, 0.02, 0.02, 0.98, 0.98, 0.22):
        return None
    in_bubble = _inside_round_rect(u, v, 0.16, 0.2, 0.84, 0.68, 0.14)
    # the bubble's tail: a triangle below its lower-left side
    in_tail = 0.68 <= v <= 0.84 and 0.28 <= u <= 0.28 + (0.84 - v) * 1.2 and u <= 0.46
    if in_bubble or in_tail:
        for cx in (0.34, 0.5, 0.66):
            if (u - cx) ** 2 + (v - 0.44) ** 2 <= 0.055 ** 2:
                return DOT
        return WHITE
    return BLUE


def draw(root: tk.Misc, size: int = 64) -> tk.PhotoImage:
    img = tk.PhotoImage(master=root, width=size, height=size)
    for y in range(size):
        for x in range(size):
            c = _pixel(x + 0.5, y + 0.5, size)
            if c is not None:
                img.put("#{:02x}{:02x}{:02x}".format(*c), (x, y))
    return img


def load(root: tk.Misc) -> tk.PhotoImage:
    if ASSET.exists():
        try:
            return tk.PhotoImage(master=root, file=str(ASSET))
        except tk.TclError as exc:  # unreadable asset: draw it instead
            log.warning("icon %s unreadable (%s); drawing it", ASSET, exc)
    return draw(root)


def set_icon(root: tk.Tk) -> tk.PhotoImage:
    img = load(root)
    root.iconphoto(True, img)
    root._parley_icon = img  # keep a reference: Tk drops images Python forgets
    return img


if __name__ == "__main__":
    r = tk.Tk()
    r.withdraw()
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ASSET
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(r, 64).write(str(out), format="png")
    r.destroy()
    print(out)
