"""Where the program lives, frozen or not."""

from __future__ import annotations

import sys
from pathlib import Path


def app_dir() -> Path:
    """The folder beside the executable when frozen by PyInstaller (never its temporary unpack
    folder, which is deleted at exit), else the repository root beside server.py/client.py."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parent.parent
