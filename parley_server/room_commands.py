"""Named rooms: enter (creating if absent), leave, close (creator only), list, members."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from protocol import messages as m

from .accounts import valid_name
from .commands import CommandError, capped, command

if TYPE_CHECKING:
    from .chat_server import Room
    from .handler import ClientHandler

# Rooms live in memory while someone is in them, so their number is bounded three ways: in
# all, per member (one account staying in hundreds of rooms would hold them open for throwaway
# accounts that made them), and per address the rooms were made from (throwaway accounts
# from one machine).
MAX_ROOMS = 1000
ROOMS_JOINED_MAX = 50
ROOMS_PER_ADDRESS_FACTOR = 4  # an address may hold this many times rooms_per_user


def _members(h: ClientHandler, room: Room) -> list[dict]:
    out = []
    for key, name in room.members.items():
        client = h.server.clients.get(key)
        out.append({"name": name, "display": client.display if client else name})
    return out


def _room(h: ClientHandler, name: str) -> Room:
    room = h.server.rooms.get(name.lower())
    if room is None:
        raise CommandError("no_such_room", f"there is no room named {name!r}")
    return room


@command(m.JoinRoom)
def join_room(h: ClientHandler, req: m.JoinRoom) -> dict:
    from .chat_server import Room

    if not valid_name(req.room):
        raise CommandError("invalid_room_name",
                           "room names are 1-32 letters, digits, '_', '-' or '.'")
    server, key = h.server, h.user.lower()
    limits = server.config.policy.limits
    with server.lock:
        room = server.rooms.get(req.room.lower())
        created = room is None
        already = not created and key in room.members
        if not already:
            joined = sum(1 for r in server.rooms.values() if key in r.members)
            if joined >= ROOMS_JOINED_MAX:
                raise CommandError("too_many_rooms", f"you are already in {joined} rooms, the "
                                   "most one person can be in; leave one first")
        if created:
            if len(server.rooms) >= MAX_ROOMS:
                raise CommandError("too_many_rooms", f"the server has {MAX_ROOMS} rooms open, "
                                   "the most it keeps; join one of them or try later")
            mine = sum(1 for r in server.rooms.values() if r.creator.lower() == key)
            if mine >= limits.rooms_per_user:
                raise CommandError("too_many_rooms",
                                   f"you already have {mine} rooms open; close one first")
            if not (limits.exempt_loopback and ipaddress.ip_address(h.ip).is_loopback):
                cap = ROOMS_PER_ADDRESS_FACTOR * limits.rooms_per_user
                here = sum(1 for r in server.rooms.values() if r.creator_ip == h.ip)
                if here >= cap:
                    raise CommandError("too_many_rooms",
                                       f"{here} rooms made from your computer's address are "
                                       "open, the most one address may have; close one first")
            room = server.rooms[req.room.lower()] = Room(req.room, h.user, creator_ip=h.ip)
        room.members[h.user.lower()] = h.user
        members = list(room.members)
        result = {"room": room.name, "created": created, "creator": room.creator,
                  "members": _members(h, room)}
    if not already:
        server.send_to(members, m.RoomEvent(room.name, "joined", h.user, h.display))
    return result


@command(m.LeaveRoom)
def leave_room(h: ClientHandler, req: m.LeaveRoom) -> dict:
    server = h.server
    with server.lock:
        room = _room(h, req.room)
        if room.members.pop(h.user.lower(), None) is None:
            raise CommandError("not_member", f"you are not in the room {room.name!r}")
        members = list(room.members)
        if not members:
            del server.rooms[room.name.lower()]
    server.send_to(members + [h.user], m.RoomEvent(room.name, "left", h.user, h.display))
    return {}


@command(m.CloseRoom)
def close_room(h: ClientHandler, req: m.CloseRoom) -> dict:
    server = h.server
    with server.lock:
        room = _room(h, req.room)
        if room.creator.lower() != h.user.lower():
            raise CommandError("not_creator",
                               f"only {room.creator}, who created {room.name!r}, can close it")
        del server.rooms[room.name.lower()]
        members = list(room.members)
    server.send_to(members, m.RoomEvent(room.name, "closed", h.user, h.display))
    return {}


@command(m.ListRooms)
def list_rooms(h: ClientHandler, req: m.ListRooms) -> dict:
    with h.server.lock:
        rooms = sorted(h.server.rooms.values(), key=lambda r: r.name.lower())
        return capped("rooms", [{"name": r.name, "creator": r.creator, "members": len(r.members)}
                                for r in rooms], h)


@command(m.RoomMembers)
def room_members(h: ClientHandler, req: m.RoomMembers) -> dict:
    with h.server.lock:
        room = _room(h, req.room)
        return {"room": room.name, "creator": room.creator, "members": _members(h, room)}
