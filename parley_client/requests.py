"""The chat requests a ClientSession offers, one method each: what they send and what their
result holds is in docs/protocol.md section 6. Each returns the Future of ClientSession.request;
what a reply changes in the session itself (the user, the reconnect token) is done by
ClientSession._apply_ok before the Future resolves."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from protocol import messages as m


class ChatRequests:
    """Mixed into ClientSession, which provides request() and the login state."""

    _credentials: tuple[str, str] | None

    def request(self, msg_type: type[m.Request], **fields: Any) -> Future:
        raise NotImplementedError

    def register(self, username: str, password: str) -> Future:
        return self.request(m.Register, username=username, password=password)

    def login(self, username: str, password: str) -> Future:
        return self.request(m.Login, username=username, password=password)

    def resume(self, username: str, token: str) -> Future:
        """Log in with a resume_token from an earlier login (see resume_token)."""
        return self.request(m.Resume, username=username, token=token)

    @property
    def resume_token(self) -> str | None:
        """The token of the current login, for resume() from a later session."""
        creds = self._credentials
        return creds[1] if creds else None

    def logout(self) -> Future:
        return self.request(m.Logout)

    def send(self, kind: str, target: str, text: str) -> Future:
        return self.request(m.Send, kind=kind, target=target, text=text)

    def list_users(self) -> Future:
        return self.request(m.ListUsers)

    def list_online(self) -> Future:
        return self.request(m.ListOnline)

    def list_rooms(self) -> Future:
        return self.request(m.ListRooms)

    def room_members(self, room: str) -> Future:
        return self.request(m.RoomMembers, room=room)

    def join_room(self, room: str) -> Future:
        return self.request(m.JoinRoom, room=room)

    def leave_room(self, room: str) -> Future:
        return self.request(m.LeaveRoom, room=room)

    def close_room(self, room: str) -> Future:
        return self.request(m.CloseRoom, room=room)

    def open_session(self, user: str) -> Future:
        return self.request(m.OpenSession, user=user)

    def close_session(self) -> Future:
        return self.request(m.CloseSession)

    def rename(self, display: str) -> Future:
        return self.request(m.Rename, display=display)

    def search(self, text: str, limit: int = 50) -> Future:
        """Result: messages (dicts as in history, newest first) containing text, among those
        one can read; truncated: true when there were more."""
        return self.request(m.Search, text=text, limit=limit)

    def typing(self, kind: str, target: str) -> Future:
        """Tell the others in that conversation that I am typing (call it every few seconds
        while typing; the server passes on at most one every TYPING_EVERY seconds)."""
        return self.request(m.Typing, kind=kind, target=target)

    def edit_message(self, msg_id: int, text: str) -> Future:
        """One's own message. Result: edited (server time); everyone who could see it gets a
        MessageEdited event (this session too)."""
        return self.request(m.EditMessage, msg_id=msg_id, text=text)

    def delete_message(self, msg_id: int) -> Future:
        """One's own message, or anyone's for an administrator; everyone who could see it gets
        a MessageDeleted event (this session too)."""
        return self.request(m.DeleteMessage, msg_id=msg_id)

    def change_password(self, old: str, new: str) -> Future:
        """Result: resume_token (the session keeps it for reconnecting; the old one is void)."""
        return self.request(m.ChangePassword, old_password=old, new_password=new)

    def moderate(self, action: str, target: str = "", minutes: int | None = None,
                 text: str = "") -> Future:
        return self.request(m.Moderate, action=action, target=target, minutes=minutes, text=text)

    def history(self, kind: str, target: str, limit: int = 50, before: int | None = None
                ) -> Future:
        return self.request(m.History, kind=kind, target=target, limit=limit, before=before)

    def list_files(self) -> Future:
        return self.request(m.ListFiles)

    def request_download(self, name: str, offset: int = 0, block_size: int | None = None
                         ) -> Future:
        return self.request(m.Download, name=name, offset=offset, block_size=block_size)
