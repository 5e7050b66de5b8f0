"""What can happen to a message after it was sent: its sender edits it, or it is deleted (by
its sender, or by an administrator). The part of ChatState that decides who may do either and
folds the server's message_edited / message_deleted in.

A mixin rather than a class of its own: these rules read and change the same conversations,
unread counts and mention flags as the rest of ChatState. It expects from ChatState:
conversations, is_admin, _ids, is_me(), display_of(), is_mention(), key_of().
"""

from __future__ import annotations

from .chat_records import Change, Conversation, ConvKey, Entry, continues


class MessageChanges:
    # ------------------------------------------------------------------ deleting

    def may_delete(self, entry: Entry) -> bool:
        """Whether the server would let me delete entry: a message it has confirmed (it has
        a msg_id) that is mine, or anyone's for an administrator."""
        return (entry.kind == "msg" and entry.msg_id is not None and entry.status == "sent"
                and (entry.own or self.is_admin))

    def on_message_deleted(self, msg_id: int, sender: str, by: str,
                           key: ConvKey | None = None) -> list[Change]:
        """Take a deleted message out of whichever conversation holds it (key is where it
        should be; the others are searched too). An administrator's removal of someone
        else's message leaves a notice in its place; one's own just goes. A message not held
        (never loaded, already gone) changes nothing, so this may run twice for one delete."""
        for conv in self._search_order(key):
            i = next((i for i, e in enumerate(conv.entries) if e.msg_id == msg_id), None)
            if i is not None:
                return self._remove_entry(conv, i, sender, by)
        return []

    def _search_order(self, key: ConvKey | None) -> list[Conversation]:
        convs = [self.conversations[key]] if key in self.conversations else []
        return convs + [c for c in self.conversations.values() if c.key != key]

    def _remove_entry(self, conv: Conversation, i: int, sender: str, by: str) -> list[Change]:
        entry = conv.entries[i]
        if self._counted_unread(conv, entry):
            conv.unread -= 1
            conv.mentions = max(0, conv.mentions - entry.mention)
        del conv.entries[i]
        if entry.unread_start and i < len(conv.entries):
            conv.entries[i].unread_start = True
        if by.lower() != sender.lower():  # a moderator's act: say so where it was
            if self.is_me(by):
                text = f"You removed a message from {self.display_of(sender)}."
            elif self.is_me(sender):
                text = f"Your message was removed by {self.display_of(by)}."
            else:
                text = (f"A message from {self.display_of(sender)} was removed by "
                        f"{self.display_of(by)}.")
            conv.entries.insert(i, Entry(next(self._ids), "notice", text, entry.ts))
        prev = conv.entries[i - 1] if i > 0 else None
        for e in conv.entries[i:i + 2]:  # the grouping around the gap
            e.continues = continues(prev, e)
            prev = e
        return [Change("deleted", conv.key), Change("conversations")]

    # ------------------------------------------------------------------ editing

    def may_edit(self, entry: Entry) -> bool:
        """Whether the server would let me edit entry: my own message, confirmed by it (an
        administrator may delete others' messages, but nobody edits them)."""
        return (entry.kind == "msg" and entry.own and entry.msg_id is not None
                and entry.status == "sent")

    def last_editable(self, key: ConvKey) -> Entry | None:
        """My newest message in that conversation that I may edit (Up in an empty box)."""
        conv = self.conversations.get(key)
        if conv is None:
            return None
        return next((e for e in reversed(conv.entries) if self.may_edit(e)), None)

    def on_message_edited(self, msg_id: int, text: str, edited: float,
                          key: ConvKey | None = None) -> list[Change]:
        """A message's sender changed its text (the event, or the answer to my own edit).
        key is where it should be; the others are searched too. A message not held, or an
        edit already known (the answer and the event both bring it), changes nothing."""
        for conv in self._search_order(key):
            entry = next((e for e in conv.entries if e.msg_id == msg_id), None)
            if entry is not None:
                mentions = conv.mentions
                if not self._edit(conv, entry, text, edited):
                    return []
                changes = [Change("entry", conv.key, entry)]
                return changes + [Change("conversations")] * (conv.mentions != mentions)
        return []

    def _edit(self, conv: Conversation, entry: Entry, text: str,
              edited: float | None) -> bool:
        """Give entry the text of an edit made at server time `edited`, unless it has that
        one or a later one already. Whether it mentions me is worked out again, so the
        highlight follows the text; if it is still counted as unread, so does the mention
        count (an edit rings no bell: the message was announced when it came)."""
        if edited is None or (entry.edited is not None and edited <= entry.edited):
            return False
        mention = (not entry.own and conv.kind != "direct" and self.is_mention(text))
        if self._counted_unread(conv, entry):
            conv.mentions = max(0, conv.mentions + mention - entry.mention)
        entry.text, entry.edited, entry.mention = text, float(edited), mention
        return True

    @staticmethod
    def _counted_unread(conv: Conversation, entry: Entry) -> bool:
        """Whether entry is one of the conv.unread messages counted as not seen: those are
        the newest messages from others (the count starts again whenever it is looked at)."""
        if conv.unread <= 0 or entry.own or entry.kind != "msg":
            return False
        left = conv.unread
        for e in reversed(conv.entries):
            if e.kind == "msg" and not e.own:
                if e is entry:
                    return True
                left -= 1
                if left == 0:
                    return False
        return False

    # ------------------------------------------------------------------ session events

    def _ev_MessageDeleted(self, ev) -> list[Change]:
        return self.on_message_deleted(ev.msg_id, ev.sender, ev.by,
                                       self.key_of(ev.kind, ev.target, ev.sender))

    def _ev_MessageEdited(self, ev) -> list[Change]:
        return self.on_message_edited(ev.msg_id, ev.text, ev.edited,
                                      self.key_of(ev.kind, ev.target, ev.sender))
