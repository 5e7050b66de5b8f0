"""Finds Parley servers on the local network (docs/discovery.md). No GUI code here.

`discover()` blocks for `timeout` seconds, so call it from a worker thread. It is best-effort:
a server that is not found can still be reached by typing its address.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import struct
import sys
import time
from dataclasses import dataclass

from protocol import discovery as wire
from protocol.version import PROTOCOL_VERSION

log = logging.getLogger(__name__)

LIMITED_BROADCAST = "255.255.255.255"
MAX_SERVERS = 256  # a flood of forged answers cannot grow the list without bound


@dataclass(frozen=True)
class DiscoveredServer:
    name: str                  # what the server calls itself (its hostname)
    host: str                  # the IPv4 address the answer came from: connect here
    port: int                  # the chat server's TCP port
    version: int               # the server's protocol version
    users: int                 # people online when it answered
    fingerprint: str | None    # TLS certificate fingerprint, when the server has one
    app_version: str = ""

    @property
    def compatible(self) -> bool:
        """False when this client cannot talk to it (show it as "incompatible")."""
        return self.version == PROTOCOL_VERSION


def discover(timeout: float = 1.0, port: int = wire.DEFAULT_DISCOVERY_PORT,
             targets: list[str] | None = None, *, broadcast: bool = True) -> list[DiscoveredServer]:
    """Servers that answered a probe within `timeout` seconds, sorted by name then address.

    The probe goes to `targets` (host names or IPv4 addresses) and, when `broadcast` is true,
    to 255.255.255.255 and to each interface's directed broadcast address where known.
    Never raises for network trouble: unreachable or unresolvable destinations are skipped.
    """
    destinations = _resolve(targets or [])
    if broadcast:
        for address in [LIMITED_BROADCAST, *broadcast_addresses()]:
            if address not in destinations:
                destinations.append(address)
    if not destinations:
        return []
    nonce = secrets.randbits(32)
    probe = wire.encode_probe(nonce)
    found: dict[tuple[str, int], DiscoveredServer] = {}
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        log.warning("discovery: no UDP socket: %s", exc)
        return []
    with sock:
        if hasattr(socket, "SIO_UDP_CONNRESET"):
            # Windows: an ICMP "port unreachable" from a target would otherwise fail recvfrom.
            sock.ioctl(socket.SIO_UDP_CONNRESET, False)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        # One repeat half-way through, because a single datagram may be lost; answers dedup.
        sends = [start, start + timeout / 2] if timeout >= 0.2 else [start]
        while True:
            now = time.monotonic()
            while sends and sends[0] <= now:
                sends.pop(0)
                _send_all(sock, probe, destinations, port)
            if now >= deadline:
                break
            wake_at = min(deadline, sends[0]) if sends else deadline
            sock.settimeout(max(0.001, wake_at - now))
            try:
                data, addr = sock.recvfrom(wire.MAX_ANSWER_SIZE + 1)
            except TimeoutError:
                continue
            except OSError as exc:
                log.debug("discovery: receive error %s", exc)
                continue
            answer = wire.decode_answer(data)
            if answer is None or answer.nonce != nonce:
                continue  # not ours, or an answer to an earlier search
            key = (addr[0], answer.port)
            if key not in found and len(found) < MAX_SERVERS:
                found[key] = DiscoveredServer(
                    name=answer.name, host=addr[0], port=answer.port,
                    version=answer.protocol_version, users=answer.users,
                    fingerprint=answer.fingerprint, app_version=answer.app_version)
    return sorted(found.values(), key=lambda s: (s.name.lower(), _sort_key(s.host), s.port))


def _sort_key(host: str) -> tuple[int, ...]:
    try:
        return tuple(ipaddress.IPv4Address(host).packed)
    except ValueError:
        return (256,)


def _send_all(sock: socket.socket, probe: bytes, destinations: list[str], port: int) -> None:
    for address in destinations:
        try:
            sock.sendto(probe, (address, port))
        except OSError as exc:
            # No route (network down), broadcast refused, ...: the others may still work.
            log.debug("discovery: probe to %s not sent: %s", address, exc)


def _resolve(targets: list[str]) -> list[str]:
    """IPv4 addresses of the targets, in order, without repeats; unresolvable ones are skipped."""
    out: list[str] = []
    for target in targets:
        try:
            infos = socket.getaddrinfo(target, None, socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            log.debug("discovery: cannot resolve %r: %s", target, exc)
            continue
        for info in infos:
            address = info[4][0]
            if address not in out:
                out.append(address)
    return out


def broadcast_addresses() -> list[str]:
    """Directed broadcast addresses of this machine's IPv4 interfaces, where cheaply known.

    Linux: asked of the kernel per interface (exact). Elsewhere the netmask is not available
    from the standard library, so each non-loopback address of this host is assumed to be in
    a /24, the usual home and office LAN. 255.255.255.255 alone can leave by one interface
    only (notably on Windows), which is why these are sent as well. No traffic is sent here.
    """
    if sys.platform.startswith("linux"):
        try:
            return _linux_broadcast_addresses()
        except OSError as exc:
            log.debug("discovery: interface query failed (%s); guessing /24", exc)
    return _guessed_broadcast_addresses()


_SIOCGIFFLAGS = 0x8913
_SIOCGIFBRDADDR = 0x8919
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8


def _linux_broadcast_addresses() -> list[str]:
    import fcntl  # Unix only

    out: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            request = struct.pack("16s24x", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request), 16)[0]
                if not flags & _IFF_UP or not flags & _IFF_BROADCAST or flags & _IFF_LOOPBACK:
                    continue
                reply = fcntl.ioctl(s.fileno(), _SIOCGIFBRDADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            address = socket.inet_ntoa(reply[20:24])  # sockaddr_in at 16: family, port, address
            if address not in out and address != "0.0.0.0":
                out.append(address)
    return out


def _guessed_broadcast_addresses() -> list[str]:
    out: list[str] = []
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except (OSError, UnicodeError) as exc:
        log.debug("discovery: own addresses unknown: %s", exc)
        return out
    for info in infos:
        ip = ipaddress.IPv4Address(info[4][0])
        if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        address = str(ipaddress.IPv4Network(f"{ip}/24", strict=False).broadcast_address)
        if address not in out:
            out.append(address)
    return out
