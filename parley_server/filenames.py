"""File-name rules for the shared folder.

Two different jobs, kept apart on purpose:
- `split_shared_name` *checks* a name a client asks for ("handouts/syllabus.md"). It never repairs
  anything: a name that is not exactly how the library lists a file is refused, so there is no
  second interpretation of a name for an attacker to exploit.
- `sanitize_upload_name` *repairs* a name a client wants to store. Uploaders cannot be expected to
  know the rules (a file from a Linux user may be called "a:b?.txt"), so we keep the name
  recognisable and make it one every client OS can save: Windows is the strictest, so its rules win.
"""

from __future__ import annotations

import unicodedata

# Room is left below the usual 255-byte file-name limit for " (12345)" collision suffixes.
MAX_NAME_BYTES = 200

# A request longer than this cannot name anything we would list (PATH_MAX on Linux is 4096).
MAX_SHARED_NAME_CHARS = 4096

# Characters Windows refuses in a file name (besides controls); "/" and "\\" are separators.
WINDOWS_FORBIDDEN_CHARS = frozenset('<>:"/\\|?*')

# Device names: Windows opens the device instead of a file for these, whatever the extension
# ("con.txt", "NUL.tar.gz"). The superscript digits are reserved too.
WINDOWS_RESERVED_STEMS = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{dev}{d}" for dev in ("COM", "LPT") for d in "123456789\u00b9\u00b2\u00b3"]
)

# Bidirectional controls let "gpj.exe" with U+202E in front display as "exe.jpg": replaced.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

# Double extensions kept together when numbering: "data.tar.gz" -> "data (1).tar.gz".
_COMPOUND_INNER_EXTENSIONS = frozenset([".tar"])


class UnsafeName(ValueError):
    """The name cannot be used; str(exc) says why, in words fit for the client."""


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls incl. NUL, tab, newline. Cs: lone surrogates, which is how Python shows
    # bytes that are not UTF-8 (they could not be sent as JSON, nor saved on most systems).
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI_CONTROLS


def component_problem(part: str) -> str | None:
    """Why one path component of a shared file may not be listed or served, or None if it may.

    The scan and `split_shared_name` use this same rule, so whatever is listed can be requested
    and nothing else can.
    """
    if part in ("", ".", ".."):
        return "empty, '.' or '..' path component"
    if part.startswith("."):
        return "hidden files are not shared"
    if "\\" in part:
        return "backslashes are not allowed (use '/' between folders)"
    if ":" in part:
        # Rules out drive letters ("C:x") and NTFS alternate data streams ("file:stream").
        return "':' is not allowed"
    if any(_is_control(ch) for ch in part):
        return "control characters are not allowed"
    return None


def is_listable_component(part: str) -> bool:
    return component_problem(part) is None


def split_shared_name(name: object) -> list[str]:
    """Check a client-supplied relative POSIX name and return its components.

    Raises UnsafeName for absolute paths, "..", empty components ("a//b"), backslashes,
    drive/UNC forms, NUL and other controls, and hidden components.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName("a file name must be a non-empty string")
    if len(name) > MAX_SHARED_NAME_CHARS:
        raise UnsafeName("file name too long")
    if name.startswith("/"):
        raise UnsafeName("absolute paths are not allowed")
    parts = name.split("/")
    for part in parts:
        problem = component_problem(part)
        if problem is not None:
            raise UnsafeName(problem)
    return parts


def is_windows_reserved(name: str) -> bool:
    """True for device names such as "CON", "nul.txt", "COM1.tar.gz", "AUX .txt"."""
    stem = name.split(".", 1)[0].rstrip(" ")
    return stem.upper() in WINDOWS_RESERVED_STEMS


def _split_extension(name: str) -> tuple[str, str]:
    """("report", ".pdf"), ("data", ".tar.gz"), ("README", "")."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    stem, ext = name[:dot], name[dot:]
    inner = stem.rfind(".")
    if inner > 0 and stem[inner:].lower() in _COMPOUND_INNER_EXTENSIONS:
        stem, ext = stem[:inner], stem[inner:] + ext
    return stem, ext


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    # errors="ignore" drops a multi-byte character cut in half at the end, never anything else.
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_upload_name(raw: object) -> str:
    """Turn whatever name a client sent into a safe, single-component name, or raise UnsafeName.

    Keeps only the last path part (either separator), replaces controls and characters Windows
    forbids with "_", drops leading dots (a hidden file would be invisible to everyone) and
    trailing dots/spaces (Windows silently strips them), renames device names ("CON.txt" ->
    "CON_.txt"), and shortens the name to MAX_NAME_BYTES of UTF-8, keeping the extension.
    """
    if not isinstance(raw, str):
        raise UnsafeName("the file name must be a string")
    # NFC: macOS sends decomposed accents; one spelling per name keeps collisions detectable.
    name = unicodedata.normalize("NFC", raw)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        "_" if (_is_control(ch) or ch in WINDOWS_FORBIDDEN_CHARS) else ch for ch in name
    )
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        raise UnsafeName("the file name is empty once unsafe characters are removed")

    stem, ext = _split_extension(name)
    if len(ext.encode("utf-8")) > MAX_NAME_BYTES // 2:
        stem, ext = name, ""  # an "extension" that long is just part of the name
    # One byte is kept spare for the "_" a device name may need below.
    short_stem = _truncate_utf8(stem, MAX_NAME_BYTES - 1 - len(ext.encode("utf-8")))
    if short_stem != stem:
        # Cutting may leave a trailing dot or space, which Windows would strip.
        stem = short_stem.rstrip(". ") or "_"
    name = stem + ext
    if is_windows_reserved(name):
        stem, _, rest = name.partition(".")
        name = stem + "_" + ("." + rest if rest else "")
    return name


def numbered_name(name: str, n: int) -> str:
    """The n-th alternative for a taken name: 0 -> "report.pdf", 1 -> "report (1).pdf"."""
    if n == 0:
        return name
    stem, ext = _split_extension(name)
    return f"{stem} ({n}){ext}"
