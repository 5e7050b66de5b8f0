"""The rooms the desktop client knows of: their members and creator, whether I am in them,
and the joined / left / closed events that change that (with a notice in the room saying so).

A mixin of ChatState: it expects rooms, _learn(), is_me(), conversation(), remove(), notice()
and typing_ended() from it.
"""

from __future__ import annotations

from .chat_records import Change, RoomInfo, room_key


class RoomTracking:
    rooms: dict[str, RoomInfo]  # lower name -> info (rooms I know about)

    def set_room(self, result: dict, joined: bool | None = None) -> list[Change]:
        """From a join_room or room_members answer."""
        name = result["room"]
        info = self.rooms.setdefault(name.lower(), RoomInfo(name))
        info.name, info.creator, info.closed = name, result.get("creator", ""), False
        info.members = {}
        for m in result.get("members", []):
            self._learn(m["name"], m.get("display", ""))
            info.members[m["name"].lower()] = m.get("display") or m["name"]
        if joined is not None:
            info.joined = joined
        changes = [Change("rooms", room_key(name))]
        if info.joined:
            conv = self.conversation(room_key(name))
            conv.title = name
            changes.append(Change("conversations"))
        return changes

    def i_created(self, room: str) -> bool:
        info = self.rooms.get(room.lower())
        return bool(info and info.joined and self.is_me(info.creator))

    def left_room(self, room: str) -> list[Change]:
        info = self.rooms.get(room.lower())
        if info:
            info.joined = False
        return [Change("rooms", room_key(room)), *self.remove(room_key(room))]

    def on_room_event(self, ev) -> list[Change]:
        self._learn(ev.user, ev.display)
        key = room_key(ev.room)
        info = self.rooms.setdefault(ev.room.lower(), RoomInfo(ev.room))
        who = "You" if self.is_me(ev.user) else (ev.display or ev.user)
        changes = [Change("rooms", key)]
        if ev.event == "joined":
            info.members[ev.user.lower()] = ev.display or ev.user
            if self.is_me(ev.user):
                info.joined, info.closed = True, False
                changes.append(Change("conversations"))
            changes += self.notice(key, f"{who} joined {info.name}")
        elif ev.event == "left":
            info.members.pop(ev.user.lower(), None)
            if self.is_me(ev.user):
                return changes + self.left_room(ev.room)
            changes += self.typing_ended(key, ev.user)
            changes += self.notice(key, f"{who} left {info.name}")
        elif ev.event == "closed":
            info.members.clear()
            info.joined, info.closed = False, True
            changes += self.notice(key, f"{who} closed the room {info.name}. "
                                        "Messages can no longer be sent here.")
        return changes

    def _ev_RoomEvent(self, ev) -> list[Change]:
        return self.on_room_event(ev)
