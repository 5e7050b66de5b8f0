"""Join codes: one string that carries a server's address, port and certificate fingerprint,
so that joining is one paste with the trust already established.

    parley://192.168.1.20:5150/#q3JtX0cQ1v1fN2i4kq2b3x8C3m6oWl1bY2d3Z9a0T4E

The fragment is the certificate's SHA-256 in URL-safe base64 without padding (43 characters).
An IPv6 address is written in brackets, as in URLs. Pure functions, no IO.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

SCHEME = "parley://"
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class JoinCode:
    host: str
    port: int
    fingerprint: str  # 64 lowercase hex digits


def encode_join_code(host: str, port: int, fingerprint: str) -> str:
    """fingerprint: 64 hex digits (any case)."""
    fp = fingerprint.lower()
    if not _HEX64.fullmatch(fp):
        raise ValueError("the fingerprint must be 64 hex digits")
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    _check_host(host)
    where = f"[{host}]" if ":" in host else host
    digest = base64.urlsafe_b64encode(bytes.fromhex(fp)).rstrip(b"=").decode("ascii")
    return f"{SCHEME}{where}:{port}/#{digest}"


def decode_join_code(text: str) -> JoinCode:
    """Parse a join code (surrounding spaces and a missing '/' before '#' are tolerated).
    Raises ValueError with a sentence a person can act on."""
    t = text.strip()
    if not t.lower().startswith(SCHEME):
        raise ValueError("A join code starts with parley://")
    rest = t[len(SCHEME):]
    address, sep, digest = rest.partition("#")
    if not sep or not digest:
        raise ValueError("The join code has no fingerprint (the part after #).")
    address = address.rstrip("/")
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or not address[end + 1:].startswith(":"):
            raise ValueError("The join code's address is damaged.")
        host, port_text = address[1:end], address[end + 2:]
    else:
        host, _, port_text = address.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("The join code's port is missing or damaged.")
    _check_host(host)
    try:
        raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("The join code's fingerprint is damaged.") from None
    if len(raw) != 32 or len(digest) != 43:
        raise ValueError("The join code's fingerprint is damaged (wrong length).")
    return JoinCode(host, int(port_text), raw.hex())


def _check_host(host: str) -> None:
    if ":" in host:  # IPv6 (without a %zone: it could hold any character)
        try:
            ipaddress.IPv6Address(host)
            if "%" in host:
                raise ValueError
        except ValueError:
            raise ValueError(f"The host {host!r} is not an IPv6 address.") from None
        return
    if not _HOST.fullmatch(host):
        raise ValueError(f"The host {host!r} is not a host name or address.")
