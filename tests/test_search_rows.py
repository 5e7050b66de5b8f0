"""The search window's logic without a window: results turned into rows (conversation, where,
who, when, excerpt), the query checked before sending, the sentences, the pacing."""

from __future__ import annotations

import time

import pytest

from parley_client.chat_state import PUBLIC, direct_key, room_key
from parley_client.search import (
    CLEARED_SENTENCE,
    ELLIPSIS,
    EXCERPT_WIDTH,
    MAX_QUERY,
    SearchPacer,
    SearchQueryError,
    check_query,
    excerpt,
    further_back_sentence,
    not_loaded_sentence,
    refusal_sentence,
    summary,
    to_rows,
    when_label,
)

DISPLAYS = {"carol": "Carol King", "bob": "Bob Martin", "alice": "Alice"}
# A Wednesday afternoon, local time: the labels below are local like the transcript's.
NOW = time.mktime((2025, 11, 5, 15, 30, 0, 0, 0, -1))


def display_of(user: str) -> str:
    return DISPLAYS.get(user.lower(), user)


def msg(text="hello there", kind="public", target="", sender="bob", display="Bob Martin",
        ts=NOW - 60, msg_id=7) -> dict:
    return {"msg_id": msg_id, "ts": ts, "sender": sender, "sender_display": display,
            "kind": kind, "target": target, "text": text, "edited": None}


def row_of(m: dict, query: str = "hello", me: str = "alice"):
    (row,) = to_rows([m], query, me, display_of, now=NOW)
    return row


# ---------------------------------------------------------------------------- rows


def test_a_public_message():
    row = row_of(msg())
    assert (row.key, row.where, row.who, row.msg_id) == (PUBLIC, "Public", "Bob Martin", 7)
    assert row.excerpt == "hello there"


def test_a_room_message_keeps_the_rooms_spelling_and_keys_it_lower_case():
    row = row_of(msg(kind="room", target="Lab-2"))
    assert (row.key, row.where) == (room_key("Lab-2"), "#Lab-2")
    assert row.key == ("room", "lab-2")


def test_a_private_message_to_me_is_the_conversation_with_its_sender():
    row = row_of(msg(kind="direct", target="alice", sender="Carol", display="Carol K."))
    assert row.key == direct_key("carol")
    assert (row.where, row.who) == ("Carol King", "Carol K.")


def test_a_private_message_i_sent_is_the_conversation_with_its_recipient():
    row = row_of(msg(kind="direct", target="carol", sender="Alice", display="Alice"))
    assert row.key == direct_key("carol")
    assert (row.where, row.who) == ("Carol King", "Alice")


def test_someone_unknown_is_named_by_their_user_name():
    row = row_of(msg(kind="direct", target="alice", sender="dave", display=""))
    assert (row.key, row.where, row.who) == (("direct", "dave"), "dave", "dave")


def test_rows_keep_the_servers_order():
    rows = to_rows([msg(msg_id=3), msg(msg_id=2, kind="room", target="lab"), msg(msg_id=1)],
                   "hello", "alice", display_of, now=NOW)
    assert [r.msg_id for r in rows] == [3, 2, 1]
    assert [r.where for r in rows] == ["Public", "#lab", "Public"]


# ---------------------------------------------------------------------------- when


def at(*ymdhm) -> float:
    return time.mktime((*ymdhm, 0, 0, 0, -1))


def test_when_today_is_the_time_alone():
    assert when_label(at(2025, 11, 5, 14, 5), NOW) == "14:05"
    assert when_label(at(2025, 11, 5, 0, 1), NOW) == "00:01"


def test_when_yesterday_and_earlier_this_year_and_before():
    assert when_label(at(2025, 11, 4, 23, 59), NOW) == "Yesterday 23:59"
    assert when_label(at(2025, 11, 3, 14, 5), NOW) == "Mon 3 Nov 14:05"
    assert when_label(at(2025, 2, 14, 9, 0), NOW) == "Fri 14 Feb 09:00"
    assert when_label(at(2024, 12, 31, 18, 30), NOW) == "31 Dec 2024 18:30"


def test_a_row_carries_its_when_label():
    assert row_of(msg(ts=at(2025, 11, 3, 14, 5))).when == "Mon 3 Nov 14:05"


# ---------------------------------------------------------------------------- excerpt


def test_a_short_text_is_shown_whole_on_one_line():
    assert excerpt("first line\nsecond   line\n\n third", "second") == \
        "first line second line third"


def test_a_long_text_is_cut_around_the_match_with_ellipses_at_both_ends():
    text = "a" * 300 + " NEEDLE " + "b" * 300
    out = excerpt(text, "needle")
    assert out.startswith(ELLIPSIS) and out.endswith(ELLIPSIS)
    assert len(out) <= EXCERPT_WIDTH
    middle = out.index("NEEDLE") + len("NEEDLE") // 2
    assert abs(middle - len(out) / 2) <= 3  # centred on the match


def test_a_match_near_the_start_cuts_only_the_end():
    text = "the NEEDLE is here " + "x" * 300
    out = excerpt(text, "needle")
    assert out.startswith("the NEEDLE") and out.endswith(ELLIPSIS)
    assert len(out) == EXCERPT_WIDTH


def test_a_match_near_the_end_cuts_only_the_start():
    text = "y" * 300 + " ends with the NEEDLE."
    out = excerpt(text, "needle")
    assert out.startswith(ELLIPSIS) and out.endswith("the NEEDLE.")
    assert len(out) == EXCERPT_WIDTH


def test_matching_folds_ascii_letters_only_like_the_server():
    text = "Élan at the start, " + "z" * 200 + " élan later " + "z" * 200
    assert excerpt(text, "élan").startswith(ELLIPSIS)  # É is not é: the later one matched
    assert "élan later" in excerpt(text, "élan")
    assert excerpt(text, "ÉLAN").startswith("Élan at the start")  # L, A, N fold; É is É


def test_newlines_are_collapsed_before_the_match_is_found():
    text = "line one\n" * 30 + "the\nword   we want\n" + "line two\n" * 30
    out = excerpt(text, "word we")
    assert "\n" not in out and "word we want" in out
    assert out.startswith(ELLIPSIS) and out.endswith(ELLIPSIS)


def test_a_row_excerpt_is_centred_on_the_query():
    row = row_of(msg(text="x" * 400 + " the budget meeting " + "x" * 400), query="BUDGET")
    assert "the budget meeting" in row.excerpt and row.excerpt.startswith(ELLIPSIS)


# ---------------------------------------------------------------------------- query, sentences


def test_the_query_is_stripped_and_must_be_2_to_200_characters():
    assert check_query("  hi  ") == "hi"
    assert check_query("x" * MAX_QUERY) == "x" * MAX_QUERY
    with pytest.raises(SearchQueryError, match="at least 2 characters"):
        check_query(" a ")
    with pytest.raises(SearchQueryError, match="at least 2"):
        check_query("")
    with pytest.raises(SearchQueryError, match="at most 200 characters.*201"):
        check_query("x" * 201)


def test_the_status_line():
    assert summary(0, False, "xyz") == "No messages contain “xyz”."
    assert summary(1, False, "xyz") == "1 message"
    assert summary(12, False, "xyz") == "12 messages"
    assert summary(50, True, "xyz") == \
        "Showing the newest 50; be more specific to see older ones."


def test_refusals_read_as_sentences():
    assert "too quickly" in refusal_sentence("rate_limited", "one search every 0.5 s")
    assert refusal_sentence("invalid_text", "search for 2 to 200 characters") == \
        "Type 2 to 200 characters to search for."
    assert refusal_sentence("not_connected", "not connected") == \
        "The search failed: not connected."
    assert "Load earlier messages" in further_back_sentence("#lab")
    assert "#lab" in further_back_sentence("#lab")
    assert "still on the server" in CLEARED_SENTENCE
    assert "Bob Martin could not be loaded" in not_loaded_sentence("Bob Martin")


def test_searches_are_spaced_to_the_servers_limit():
    clock = [100.0]
    pacer = SearchPacer(0.55, clock=lambda: clock[0])
    assert pacer.wait() == 0.0
    pacer.sent()
    clock[0] += 0.2
    assert pacer.wait() == pytest.approx(0.35)
    clock[0] += 0.5
    assert pacer.wait() == 0.0
