"""ChatState: the client's chat model, driven with real protocol and session event objects."""

from __future__ import annotations

import json

from parley_client import chat_state
from parley_client.chat_state import (
    PUBLIC,
    ChatState,
    direct_key,
    room_key,
)
from parley_client.events import Connected, Disconnected, LoggedIn, Reconnected, Reconnecting
from parley_client.settings import Settings, parse_server
from parley_client.units import human_duration, human_size
from protocol.messages import (
    ChatMessage,
    FileAdded,
    FileRemoved,
    MessageDeleted,
    MessageEdited,
    PolicyChanged,
    Presence,
    Renamed,
    RoomEvent,
)


def msg(mid, sender, text, kind="public", target="", ts=1000.0, display=None):
    return ChatMessage(mid, ts, sender, display or sender.title(), kind, target, text)


def logged_in(user="alice", display="Alice"):
    st = ChatState()
    st.apply(LoggedIn(user, display, False))
    st.open(PUBLIC)
    return st


def kinds(changes):
    return [c.kind for c in changes]


def test_public_message_appends_and_groups_by_sender_within_window():
    st = logged_in()
    st.apply(msg(1, "bob", "hi", ts=1000))
    st.apply(msg(2, "bob", "there", ts=1060))
    st.apply(msg(3, "carol", "yo", ts=1070))
    st.apply(msg(4, "carol", "later", ts=1070 + 301))
    entries = st.conversations[PUBLIC].entries
    assert [e.text for e in entries] == ["hi", "there", "yo", "later"]
    assert [e.continues for e in entries] == [False, True, False, False]


def test_unread_counts_only_hidden_conversations_and_unfocused_window():
    st = logged_in()
    st.apply(msg(1, "bob", "in public"))  # active + focused: read
    assert st.conversations[PUBLIC].unread == 0
    st.apply(msg(2, "bob", "psst", kind="direct", target="alice"))
    dm = st.conversations[direct_key("bob")]
    assert dm.unread == 1 and st.total_unread() == 1
    st.set_focused(False)
    st.apply(msg(3, "bob", "public again"))
    assert st.conversations[PUBLIC].unread == 1
    st.set_focused(True)  # looking at Public again clears it
    assert st.conversations[PUBLIC].unread == 0
    st.open(direct_key("bob"))
    assert st.total_unread() == 0


def test_direct_message_and_mention_notify_but_own_messages_do_not():
    st = logged_in()
    ch = st.apply(msg(1, "bob", "hey", kind="direct", target="alice"))
    assert "notify" in kinds(ch)
    ch = st.apply(msg(2, "bob", "ping @alice look"))
    assert "notify" in kinds(ch) and st.conversations[PUBLIC].entries[-1].mention
    ch = st.apply(msg(3, "bob", "Alice: lunch?"))  # display name, any case
    assert "notify" in kinds(ch)
    ch = st.apply(msg(4, "bob", "malice aforethought"))  # not a word match
    assert "notify" not in kinds(ch)
    ch = st.apply(msg(5, "alice", "@alice talking to myself"))
    assert "notify" not in kinds(ch)


def test_own_direct_echo_goes_to_the_recipients_conversation():
    st = logged_in()
    st.apply(msg(1, "alice", "to bob", kind="direct", target="Bob"))
    assert direct_key("bob") in st.conversations
    assert st.conversations[direct_key("bob")].entries[0].own


def test_pending_send_is_confirmed_once_by_echo_or_ok_in_either_order():
    st = logged_in()
    e1, _ = st.add_pending(PUBLIC, "first")
    assert e1.status == "pending"
    st.apply(msg(10, "alice", "first"))  # echo first
    assert e1.status == "sent" and e1.msg_id == 10
    assert st.send_ok(PUBLIC, e1, {"msg_id": 10, "ts": 5.0}) == []
    e2, _ = st.add_pending(PUBLIC, "second")
    st.send_ok(PUBLIC, e2, {"msg_id": 11, "ts": 6.0})  # ok first
    st.apply(msg(11, "alice", "second"))  # echo deduplicated by msg_id
    texts = [e.text for e in st.conversations[PUBLIC].entries]
    assert texts == ["first", "second"]


def test_disconnect_without_reconnect_marks_pending_as_not_sent():
    st = logged_in()
    e, _ = st.add_pending(PUBLIC, "lost?")
    st.apply(Disconnected("server gone", None, will_reconnect=True))
    assert e.status == "pending" and st.connection == "reconnecting"
    st.apply(Reconnecting(2, 4.0))
    assert st.reconnect_attempt == 2 and st.reconnect_at is not None
    st.apply(Reconnected("alice"))
    assert st.connection == "online"
    st.apply(Disconnected("gave up", None, will_reconnect=False))
    assert e.status == "failed" and "not sent" in e.error


def test_history_merges_without_duplicates_and_respects_clear():
    st = logged_in()
    st.apply(msg(5, "bob", "live"))
    hist = [{"msg_id": i, "ts": 900.0 + i, "sender": "bob", "sender_display": "Bob",
             "kind": "public", "target": "", "text": f"old {i}"} for i in (3, 4, 5)]
    st.merge_history(PUBLIC, hist)
    texts = [e.text for e in st.conversations[PUBLIC].entries]
    assert texts == ["old 3", "old 4", "live"]
    st.clear(PUBLIC)
    assert st.conversations[PUBLIC].entries == []
    assert st.merge_history(PUBLIC, hist) == []  # cleared locally: stays cleared
    st.apply(msg(6, "bob", "new"))
    assert [e.text for e in st.conversations[PUBLIC].entries] == ["new"]


def history_page(ids, sender="bob"):
    return [{"msg_id": i, "ts": 1000.0 + i, "sender": sender, "sender_display": "Bob",
             "kind": "public", "target": "", "text": f"m{i}"} for i in ids]


def test_earlier_pages_go_in_above_one_load_at_a_time_until_the_start():
    st = logged_in()
    conv = st.conversations[PUBLIC]
    assert st.begin_earlier(PUBLIC) == (None, [])  # nothing known yet: nothing to page from
    assert kinds(st.merge_history(PUBLIC, history_page(range(51, 101)), limit=50)) == \
        ["reload", "conversations"]
    assert conv.earlier == "more"  # a full page: there may be more
    before, changes = st.begin_earlier(PUBLIC)
    assert before == 51 and kinds(changes) == ["earlier"] and conv.earlier == "loading"
    assert st.begin_earlier(PUBLIC) == (None, [])  # one load at a time
    assert kinds(st.earlier_failed(PUBLIC)) == ["earlier"] and conv.earlier == "more"
    before, _ = st.begin_earlier(PUBLIC)
    changes = st.merge_history(PUBLIC, history_page(range(1, 51)), limit=50, earlier=True)
    assert kinds(changes) == ["earlier", "conversations"] and conv.earlier == "more"
    assert st.begin_earlier(PUBLIC)[0] == 1
    st.merge_history(PUBLIC, [], limit=50, earlier=True)
    assert conv.earlier == "start"
    assert [e.msg_id for e in conv.entries] == list(range(1, 101))
    # The newest page again (after a reconnect) does not forget where the start is.
    st.merge_history(PUBLIC, history_page(range(61, 111)), limit=50)
    assert conv.earlier == "start" and [e.msg_id for e in conv.entries] == list(range(1, 111))
    st.clear(PUBLIC)
    assert conv.earlier == "none" and st.begin_earlier(PUBLIC) == (None, [])


def test_a_short_first_page_is_the_whole_conversation():
    st = logged_in()
    st.merge_history(PUBLIC, history_page(range(1, 4)), limit=50)
    assert st.conversations[PUBLIC].earlier == "start"
    assert kinds(st.merge_history(PUBLIC, [], limit=50)) == []  # nothing new, nothing to redraw


def test_earlier_pages_stop_when_the_window_holds_max_entries(monkeypatch):
    monkeypatch.setattr(chat_state, "MAX_ENTRIES", 120)
    st = logged_in()
    conv = st.conversations[PUBLIC]
    st.merge_history(PUBLIC, history_page(range(101, 201)), limit=100)
    st.begin_earlier(PUBLIC)
    st.merge_history(PUBLIC, history_page(range(1, 101)), limit=100, earlier=True)
    assert conv.earlier == "capped" and len(conv.entries) == 200  # what was asked for is kept
    assert st.begin_earlier(PUBLIC) == (None, [])


def test_presence_and_rename_update_online_list_and_titles():
    st = logged_in()
    st.set_online([{"name": "alice", "display": "Alice"}, {"name": "bob", "display": "Bob"}])
    st.apply(Presence("carol", "Carol", True))
    assert [d for _, d in st.online_users()] == ["Alice", "Bob", "Carol"]
    st.apply(msg(1, "bob", "hi", kind="direct", target="alice"))
    st.apply(Renamed("bob", "Bob", "Robert"))
    assert st.conversations[direct_key("bob")].title == "Robert"
    st.apply(Presence("bob", "Robert", False))
    assert ("bob", "Robert") not in st.online_users()
    notices = [e.text for e in st.conversations[PUBLIC].entries if e.kind == "notice"]
    assert "Carol is online" in notices and "Robert went offline" in notices


def test_rooms_join_leave_close_and_creator_rights():
    st = logged_in()
    st.set_room({"room": "Dev", "creator": "alice",
                 "members": [{"name": "alice", "display": "Alice"}]}, joined=True)
    assert room_key("dev") in st.conversations and st.i_created("dev")
    st.apply(RoomEvent("Dev", "joined", "bob", "Bob"))
    assert st.rooms["dev"].members == {"alice": "Alice", "bob": "Bob"}
    st.apply(RoomEvent("Dev", "left", "bob", "Bob"))
    assert "bob" not in st.rooms["dev"].members
    st.apply(RoomEvent("Dev", "closed", "alice", "Alice"))
    assert not st.can_send(room_key("dev")) and not st.i_created("dev")
    st.set_room({"room": "Ops", "creator": "bob", "members": []}, joined=True)
    assert not st.i_created("ops")
    st.open(room_key("ops"))
    st.apply(RoomEvent("Ops", "left", "alice", "Alice"))
    assert room_key("ops") not in st.conversations and st.active == PUBLIC


def test_files_added_and_removed_with_shared_notice():
    st = logged_in()
    st.learn_users([{"name": "bob", "display": "Bob", "online": False}])
    st.set_files([{"name": "a.txt", "size": 10, "mtime": 1.0, "uploader": "bob"}])
    st.apply(FileAdded({"name": "b.bin", "size": 2_500_000, "mtime": 2.0}, by="bob"))
    assert set(st.files) == {"a.txt", "b.bin"}
    assert st.conversations[PUBLIC].entries[-1].text == "Bob shared b.bin (2.5 MB)"
    st.apply(FileRemoved("a.txt"))
    assert set(st.files) == {"b.bin"}


def test_transfer_progress_and_finish():
    st = logged_in()
    t = st.new_transfer("down", "big.bin", 100)

    class P:  # the shape of parley_client.download.DownloadProgress
        name, received, size, rate_bps, eta_s = "big.bin", 50, 100, 10.0, 5.0
        state, path, message, transport = "running", "/tmp/big.bin", "", "udp"

    st.on_download_progress(t.tid, P)
    assert t.fraction == 0.5 and t.transport == "udp"
    P.state, P.received = "done", 100
    st.on_download_progress(t.tid, P)
    assert t.finished and t.fraction == 1.0
    st.clear_finished_transfers()
    assert st.transfers == {}


def test_neighbour_cycles_through_ordered_conversations():
    st = logged_in()
    st.set_room({"room": "dev", "creator": "x", "members": []}, joined=True)
    st.apply(msg(1, "bob", "hi", kind="direct", target="alice"))
    assert st.ordered_keys() == [PUBLIC, room_key("dev"), direct_key("bob")]
    assert st.neighbour(1) == room_key("dev")
    assert st.neighbour(-1) == direct_key("bob")


def test_human_formats():
    assert human_size(512) == "512 B" and human_size(64 * 10**6) == "64.0 MB"
    assert human_duration(5) == "5 s" and human_duration(125) == "2 min 05 s"
    assert human_duration(None) == "—"


def test_settings_round_trip_and_damaged_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_CONFIG_DIR", str(tmp_path))
    s = Settings.load()
    assert s.servers == [] and s.theme == "light"
    s.remember_server("a.local", 5150)
    s.remember_server("b.local", 6000)
    s.remember_server("a.local", 5150)
    s.theme = "dark"
    s.save()
    again = Settings.load()
    assert again.servers == [("a.local", 5150), ("b.local", 6000)] and again.theme == "dark"
    (tmp_path / "settings.json").write_text("{not json")
    assert Settings.load().servers == []
    (tmp_path / "settings.json").write_text(json.dumps({"servers": [["x", "bad"]]}))
    assert Settings.load().servers == []


def test_parse_server():
    assert parse_server("host") == ("host", 5150)
    assert parse_server(" 10.0.0.2:6000 ") == ("10.0.0.2", 6000)
    assert parse_server("[::1]:7000") == ("::1", 7000)
    assert parse_server("::1") == ("::1", 5150)
    for bad in ("", "h:99999", "h:x", ":80"):
        try:
            parse_server(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_new_messages_divider_marks_the_first_unseen_until_answered_or_left():
    st = logged_in()
    bob = direct_key("bob")

    def flagged(key):
        return [e.text for e in st.conversations[key].entries if e.unread_start]

    st.apply(msg(1, "bob", "one", kind="direct", target="alice"))
    st.apply(msg(2, "bob", "two", kind="direct", target="alice"))
    assert flagged(bob) == ["one"]
    st.open(bob)
    assert flagged(bob) == ["one"]  # shown on open
    st.open(PUBLIC)
    assert flagged(bob) == []  # read when left
    st.apply(msg(3, "bob", "three", kind="direct", target="alice"))
    st.open(bob)
    assert flagged(bob) == ["three"]
    entry, changes = st.add_pending(bob, "on my way")
    assert kinds(changes) == ["reload"] and flagged(bob) == []
    assert st.conversations[bob].entries[-1] is entry  # the redraw includes the reply
    _entry, changes = st.add_pending(bob, "again")
    assert kinds(changes) == ["append"]  # no divider left to remove

    # In the open conversation while the window is in the background.
    st.set_focused(False)
    st.apply(msg(4, "bob", "while away", kind="direct", target="alice"))
    st.apply(msg(5, "bob", "still away", kind="direct", target="alice"))
    assert flagged(bob) == ["while away"]
    st.set_focused(True)
    st.apply(msg(6, "bob", "back?", kind="direct", target="alice"))
    assert flagged(bob) == ["while away"]  # seen as it arrived: the divider stays put


# ---------------------------------------------------------------------------- deleting


def deleted(mid, sender, by=None, kind="public", target=""):
    return MessageDeleted(mid, sender, kind, target, by or sender)


def test_a_deleted_message_goes_and_its_neighbours_regroup():
    st = logged_in()
    for mid, who in ((1, "bob"), (2, "carol"), (3, "bob")):
        st.apply(msg(mid, who, f"m{mid}", ts=1000 + mid))
    conv = st.conversations[PUBLIC]
    assert [e.continues for e in conv.entries] == [False, False, False]
    changes = st.apply(deleted(2, "carol"))
    assert kinds(changes) == ["deleted", "conversations"] and changes[0].key == PUBLIC
    assert [e.text for e in conv.entries] == ["m1", "m3"]
    assert [e.continues for e in conv.entries] == [False, True]  # bob's two now share a header
    assert st.apply(deleted(2, "carol")) == []  # told twice: nothing more to do


def test_deleting_an_unknown_or_unloaded_message_changes_nothing():
    st = logged_in()
    st.apply(msg(1, "bob", "kept"))
    assert st.apply(deleted(99, "bob")) == []
    assert st.apply(deleted(7, "bob", by="teacher", kind="room", target="Dev")) == []
    assert [e.text for e in st.conversations[PUBLIC].entries] == ["kept"]
    assert room_key("dev") not in st.conversations  # not made up for a deletion


def test_deleting_an_unread_message_fixes_the_counts_and_moves_the_divider():
    st = logged_in()
    bob = direct_key("bob")
    st.apply(msg(1, "bob", "one", kind="direct", target="alice"))
    st.apply(msg(2, "bob", "two @alice", kind="direct", target="alice"))
    st.apply(msg(3, "bob", "three", kind="direct", target="alice"))
    conv = st.conversations[bob]
    assert conv.unread == 3 and conv.entries[0].unread_start
    st.apply(deleted(1, "bob", kind="direct", target="alice"))
    assert conv.unread == 2 and st.total_unread() == 2
    assert [e.text for e in conv.entries if e.unread_start] == ["two @alice"]
    st.apply(deleted(3, "bob", kind="direct", target="alice"))
    assert conv.unread == 1 and [e.text for e in conv.entries] == ["two @alice"]
    st.apply(deleted(2, "bob", kind="direct", target="alice"))
    assert conv.unread == 0 and conv.entries == []  # the divider went with the last one


def test_deleting_a_message_already_read_leaves_the_unread_count_alone():
    st = logged_in()
    st.apply(msg(1, "bob", "seen"))  # public is open and the window focused: read
    st.set_focused(False)
    st.apply(msg(2, "bob", "not seen"))
    conv = st.conversations[PUBLIC]
    assert conv.unread == 1
    st.apply(deleted(1, "bob"))
    assert conv.unread == 1 and conv.entries[0].unread_start
    st.apply(deleted(2, "bob"))
    assert conv.unread == 0


def test_a_mention_deleted_unread_takes_its_mention_count_with_it():
    st = logged_in()
    st.open(room_key("dev"))
    st.apply(msg(1, "bob", "hey @alice"))
    st.apply(msg(2, "bob", "and another thing"))
    conv = st.conversations[PUBLIC]
    assert (conv.unread, conv.mentions) == (2, 1)
    st.apply(deleted(1, "bob"))
    assert (conv.unread, conv.mentions) == (1, 0)


def test_an_administrator_removing_someone_elses_message_leaves_a_notice_in_its_place():
    st = logged_in()
    st.learn_users([{"name": "bob", "display": "Bob Martin"},
                    {"name": "teacher", "display": "Ms Teacher"}])
    for mid in (1, 2, 3):
        st.apply(msg(mid, "bob", f"m{mid}", ts=1000 + mid, display="Bob Martin"))
    conv = st.conversations[PUBLIC]
    st.apply(deleted(2, "bob", by="teacher"))
    assert [(e.kind, e.text) for e in conv.entries] == [
        ("msg", "m1"), ("notice", "A message from Bob Martin was removed by Ms Teacher."),
        ("msg", "m3")]
    assert conv.entries[1].ts == 1002 and not conv.entries[2].continues
    st.apply(msg(4, "alice", "mine"))
    st.apply(deleted(4, "alice", by="teacher"))
    assert conv.entries[-1].text == "Your message was removed by Ms Teacher."
    st.apply(deleted(3, "bob", by="ALICE"))  # I am the administrator here
    assert conv.entries[-2].text == "You removed a message from Bob Martin."


def test_deleting_ones_own_message_leaves_no_notice_wherever_it_was():
    st = logged_in()
    st.apply(msg(1, "alice", "to bob", kind="direct", target="bob"))
    st.apply(msg(2, "bob", "reply", kind="direct", target="alice"))
    conv = st.conversations[direct_key("bob")]
    st.apply(deleted(1, "alice", kind="direct", target="bob"))
    st.apply(deleted(2, "bob", kind="direct", target="alice"))
    assert conv.entries == []
    # Located by msg_id even when the event's conversation is not where it is held.
    st.apply(msg(3, "bob", "stray"))
    assert kinds(st.on_message_deleted(3, "bob", "bob", room_key("nowhere"))) == \
        ["deleted", "conversations"]
    assert st.conversations[PUBLIC].entries == []


def public_of_every_kind():
    """alice's Public with one entry of each kind: bob's, hers (confirmed), one still on its
    way, one that failed, and a notice."""
    st = logged_in()
    st.apply(msg(1, "bob", "theirs"))
    st.apply(msg(2, "alice", "mine"))
    theirs, mine = st.conversations[PUBLIC].entries
    pending, _ = st.add_pending(PUBLIC, "on its way")
    failed, _ = st.add_pending(PUBLIC, "lost")
    st.send_failed(PUBLIC, failed, "not sent")
    st.notice(PUBLIC, "Bob is online")
    return st, (theirs, mine, pending, failed, st.conversations[PUBLIC].entries[-1])


def test_may_delete_own_confirmed_messages_or_anything_for_an_administrator():
    st, (theirs, mine, pending, failed, notice) = public_of_every_kind()
    assert st.may_delete(mine) and not st.may_delete(theirs)
    assert not any(st.may_delete(e) for e in (pending, failed, notice))
    st.is_admin = True
    assert st.may_delete(theirs) and st.may_delete(mine)
    assert not any(st.may_delete(e) for e in (pending, failed, notice))
    st.send_ok(PUBLIC, pending, {"msg_id": 3, "ts": 2000.0})
    assert st.may_delete(pending)


# ---------------------------------------------------------------------------- editing


def edited(mid, sender, text, at, kind="public", target=""):
    return MessageEdited(mid, sender, kind, target, text, at)


def test_an_edit_replaces_the_text_in_place_once():
    st = logged_in()
    for mid in (1, 2, 3):
        st.apply(msg(mid, "bob", f"m{mid}", ts=1000 + mid))
    conv = st.conversations[PUBLIC]
    second = conv.entries[1]
    assert second.edited is None
    changes = st.apply(edited(2, "bob", "m2, fixed", 1500.0))
    assert [(c.kind, c.key, c.entry) for c in changes] == [("entry", PUBLIC, second)]
    assert (second.text, second.edited) == ("m2, fixed", 1500.0)
    assert [e.text for e in conv.entries] == ["m1", "m2, fixed", "m3"]  # same place
    assert [e.continues for e in conv.entries] == [False, True, True]
    assert st.apply(edited(2, "bob", "m2, fixed", 1500.0)) == []  # the answer, then the event
    assert st.apply(edited(2, "bob", "an older edit", 1400.0)) == []  # late: a newer one is shown
    assert second.text == "m2, fixed"
    st.apply(edited(2, "bob", "m2 again", 1600.0))
    assert (second.text, second.edited) == ("m2 again", 1600.0)


def test_an_edit_of_an_unknown_message_changes_nothing():
    st = logged_in()
    st.apply(msg(1, "bob", "kept"))
    assert st.apply(edited(99, "bob", "new text", 1500.0)) == []
    assert st.apply(edited(7, "bob", "new text", 1500.0, kind="room", target="Dev")) == []
    assert [(e.text, e.edited) for e in st.conversations[PUBLIC].entries] == [("kept", None)]
    assert room_key("dev") not in st.conversations  # not made up for an edit


def test_an_edit_is_found_wherever_the_message_is_held():
    st = logged_in()
    st.apply(msg(1, "alice", "to bob", kind="direct", target="bob"))
    mine = st.conversations[direct_key("bob")].entries[0]
    changes = st.apply(edited(1, "alice", "to bob, edited", 1500.0, kind="direct",
                              target="bob"))
    assert kinds(changes) == ["entry"] and changes[0].key == direct_key("bob")
    assert mine.text == "to bob, edited"
    assert kinds(st.on_message_edited(1, "again", 1600.0, room_key("nowhere"))) == ["entry"]
    assert mine.text == "again"


def test_history_brings_edits_for_new_and_held_messages():
    st = logged_in()
    st.apply(msg(5, "bob", "live, before the edit", ts=1005.0))
    page = history_page([3, 4, 5])
    page[0]["edited"] = 1200.0
    page[1]["edited"] = None  # never edited
    page[2].update(text="live, after the edit", edited=1300.0)
    assert kinds(st.merge_history(PUBLIC, page)) == ["reload", "conversations"]
    conv = st.conversations[PUBLIC]
    assert [(e.msg_id, e.text, e.edited) for e in conv.entries] == [
        (3, "m3", 1200.0), (4, "m4", None), (5, "live, after the edit", 1300.0)]
    assert st.merge_history(PUBLIC, page) == []  # nothing new the second time
    del page[2]["edited"]  # an older server: no "edited" key at all
    st.merge_history(PUBLIC, page)
    assert conv.entries[-1].edited == 1300.0


def test_may_edit_only_my_own_confirmed_messages_even_for_an_administrator():
    st, (theirs, mine, pending, failed, notice) = public_of_every_kind()
    assert st.may_edit(mine) and not st.may_edit(theirs)
    assert not any(st.may_edit(e) for e in (pending, failed, notice))
    assert st.last_editable(PUBLIC) is mine  # the newest I may edit, not the pending ones
    st.is_admin = True
    assert not st.may_edit(theirs)  # administrators delete; they do not edit
    st.send_ok(PUBLIC, pending, {"msg_id": 3, "ts": 2000.0})
    assert st.may_edit(pending) and st.last_editable(PUBLIC) is pending
    assert st.last_editable(direct_key("nobody")) is None


def test_an_edit_that_adds_or_removes_a_mention_keeps_the_counts_right():
    st = logged_in()
    st.open(room_key("dev"))
    st.apply(msg(1, "bob", "lunch?"))
    st.apply(msg(2, "bob", "anyone"))
    conv = st.conversations[PUBLIC]
    assert (conv.unread, conv.mentions) == (2, 0)
    changes = st.apply(edited(1, "bob", "lunch, @alice?", 1500.0))
    assert kinds(changes) == ["entry", "conversations"]  # the badge changes
    assert "notify" not in kinds(changes)  # an edit rings no bell
    assert conv.entries[0].mention and (conv.unread, conv.mentions) == (2, 1)
    st.apply(edited(1, "bob", "lunch, anyone?", 1600.0))
    assert not conv.entries[0].mention and (conv.unread, conv.mentions) == (2, 0)

    st.open(PUBLIC)  # read now: the highlight follows the text, the counts stay at zero
    st.apply(edited(2, "bob", "anyone, Alice?", 1800.0))
    assert conv.entries[1].mention and (conv.unread, conv.mentions) == (0, 0)


# ---------------------------------------------------------------------------- live policy

OPEN_POLICY = {"private_messages": True, "uploads": True, "public_read_only": False,
               "allowed_extensions": None}


def switched(**switches) -> PolicyChanged:
    return PolicyChanged({**OPEN_POLICY, **switches})


def public_notices(st) -> list[str]:
    return [e.text for e in st.conversations[PUBLIC].entries if e.kind == "notice"]


def test_each_policy_switch_is_told_in_words_both_ways():
    st = logged_in()
    st.policy = dict(OPEN_POLICY)
    said = []
    for setting, off, on in (
            ("private_messages", False, True), ("uploads", False, True),
            ("public_read_only", True, False)):
        for value in (off, on):
            changes = st.apply(switched(**{setting: value}))
            assert kinds(changes) == ["policy", "append"]
            assert changes[1].key == PUBLIC and changes[1].entry.kind == "notice"
            said.append(changes[1].entry.text)
    assert said == ["Private messages are now turned off.",
                    "Private messages are allowed again.",
                    "Uploads are now turned off (administrators still upload).",
                    "Uploads are allowed again.",
                    "Only administrators can post in Public now.",
                    "Everyone can post in Public again."]
    assert public_notices(st) == said


def test_a_policy_event_replaces_the_policy_and_what_may_be_sent_follows():
    st = logged_in()
    st.policy = dict(OPEN_POLICY)
    dm = direct_key("bob")
    st.apply(switched(private_messages=False, uploads=False, public_read_only=True))
    assert st.policy["uploads"] is False
    assert st.send_blocked_because(dm) == "Private messages are turned off on this server."
    assert st.send_blocked_because(PUBLIC) == \
        "Only administrators post in Public on this server."
    assert not st.uploads_allowed() and not st.private_messages_allowed()
    assert public_notices(st)[-1] == (
        "Private messages are now turned off. Uploads are now turned off (administrators "
        "still upload). Only administrators can post in Public now.")
    st.is_admin = True  # administrators still post in Public and upload
    assert st.can_send(PUBLIC) and st.uploads_allowed() and not st.can_send(dm)
    st.apply(switched())
    assert st.can_send(dm) and st.policy_switch("private_messages")


def test_no_notice_when_none_of_the_switches_moved():
    st = logged_in()
    st.policy = dict(OPEN_POLICY)
    before = len(st.conversations[PUBLIC].entries)
    assert st.apply(switched()) == []
    assert st.apply(switched(allowed_extensions=["pdf"])) == []  # not one of the three
    assert st.policy["allowed_extensions"] == ["pdf"]  # replaced all the same
    assert len(st.conversations[PUBLIC].entries) == before
    st.policy = {}  # a server that says nothing turns nothing off: the defaults hold
    assert st.apply(switched()) == []


def test_private_messages_off_is_also_said_in_the_open_private_conversation():
    st = logged_in()
    st.policy = dict(OPEN_POLICY)
    dm = direct_key("bob")
    st.open(dm)
    changes = st.apply(switched(private_messages=False))
    assert [(c.kind, c.key) for c in changes] == [("policy", None), ("append", PUBLIC),
                                                   ("append", dm)]
    assert st.conversations[dm].entries[-1].text == "Private messages are now turned off."
    changes = st.apply(switched(private_messages=False, uploads=False))
    assert [(c.kind, c.key) for c in changes] == [("policy", None), ("append", PUBLIC)]


def test_a_reconnect_that_finds_another_policy_says_so_the_first_connect_does_not():
    st = ChatState()
    info = {"max_text": 4000, "policy": {**OPEN_POLICY, "uploads": False}}
    changes = st.apply(Connected("127.0.0.1", 5150, info))
    assert "policy" in kinds(changes) and "append" not in kinds(changes)  # not logged in yet
    assert not st.uploads_allowed()
    st.apply(LoggedIn("alice", "Alice", False))
    assert kinds(st.apply(Connected("127.0.0.1", 5150, info))) == ["connection"]
    changes = st.apply(Connected("127.0.0.1", 5150, {"policy": OPEN_POLICY}))  # restarted
    assert kinds(changes) == ["connection", "policy", "append"]
    assert public_notices(st)[-1] == "Uploads are allowed again."
