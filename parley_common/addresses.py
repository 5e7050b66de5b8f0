"""IP address spellings, made one: a dual-stack (IPv6) socket reports an IPv4 peer as
::ffff:a.b.c.d, and bans, per-address limits and download offers must see the same address
whichever socket the peer came through."""

from __future__ import annotations

import ipaddress


def plain_ip(ip: str) -> str:
    """The canonical text of an address: IPv4-mapped IPv6 as plain IPv4, IPv6 compressed,
    without a zone (%eth0); anything unparsable unchanged."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
