"""The sans-IO chat protocol: framing, message mapping, and the Connection state machine.

Everything here runs in memory: two Connection objects are wired together by handing one's
output bytes to the other's receive_data. No sockets, no threads, no clocks.
"""

from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    DEFAULT_MAX_FRAME,
    BadMessage,
    Connection,
    ConnectionClosed,
    FrameDecoder,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    State,
    encode_frame,
    encode_message,
)
from protocol import messages as m
from protocol.connection import PRE_AUTH_REQUESTS

# ---------------------------------------------------------------- helpers


def frame_json(obj) -> bytes:
    """A frame carrying obj as JSON, built without our encoder (as a foreign peer would)."""
    return encode_frame(json.dumps(obj).encode())


def deliver(data: bytes, to: Connection) -> list[object]:
    to.receive_data(data)
    return to.events()


class Pair:
    """A client and a server Connection joined back to back."""

    def __init__(self) -> None:
        self.client = Connection(Role.CLIENT)
        self.server = Connection(Role.SERVER)

    def c2s(self, msg: m.Message) -> list[object]:
        return deliver(self.client.send(msg), self.server)

    def s2c(self, msg: m.Message) -> list[object]:
        return deliver(self.server.send(msg), self.client)

    def request(self, msg: m.Request, reply: m.Message | None = None) -> list[object]:
        """Client sends msg, server answers with reply (default: Ok). Returns client events."""
        assert self.c2s(msg) == [msg]
        return self.s2c(reply if reply is not None else m.Ok(msg.id, {}))

    def states(self) -> tuple[State, State]:
        return self.client.state, self.server.state


def connected_pair() -> Pair:
    p = Pair()
    p.request(m.Hello(1, 1, "test/1"))
    assert p.states() == (State.CONNECTED, State.CONNECTED)
    return p


def authenticated_pair() -> Pair:
    p = connected_pair()
    p.request(m.Login(2, "alice", "secret1"), m.Ok(2, {"user": "alice"}))
    assert p.states() == (State.AUTHENTICATED, State.AUTHENTICATED)
    return p


def server_after_hello() -> Connection:
    """A server Connection that has answered hello, so it decodes every request type."""
    server = Connection(Role.SERVER)
    assert deliver(frame_json({"type": "hello", "id": 1, "version": 1}), server)
    server.send(m.Ok(1, {}))
    return server


# One sample per message type; test_samples_cover_every_type keeps this list complete.
CLIENT_SAMPLES: list[m.Message] = [
    m.Hello(101, 1, "parley-cli/0.1.0"),
    m.Register(102, "alice", "correct horse"),
    m.Login(103, "alice", "correct horse"),
    m.Resume(104, "alice", "tok_123-abc"),
    m.Logout(105),
    m.Send(106, "room", "lobby", "hi all"),
    m.ListUsers(107),
    m.ListOnline(108),
    m.ListRooms(109),
    m.RoomMembers(110, "lobby"),
    m.JoinRoom(111, "lobby"),
    m.LeaveRoom(112, "lobby"),
    m.CloseRoom(113, "lobby"),
    m.OpenSession(114, "bob"),
    m.CloseSession(115),
    m.Rename(116, "Alice W"),
    m.History(117, "direct", "bob", 20, 9001),
    m.AckDelayed(125, 9001),
    m.ChangePassword(126, "correct horse", "battery staple"),
    m.DeleteMessage(127, 9001),
    m.EditMessage(128, 9001, "fixed the typo"),
    m.Typing(129, "room", "lobby"),
    m.Search(130, "projector", 20),
    m.ListFiles(118),
    m.Download(119, "handouts/syllabus.md", 4096, 32768),
    m.UploadBegin(120, "report.pdf", 12345, "ab" * 32),
    m.UploadChunk(121, "f00d", 0, "aGVsbG8="),
    m.UploadEnd(122, "f00d"),
    m.UploadAbort(123, "f00d"),
    m.Moderate(124, "ban", "bob", 30, "flooding"),
    m.Pong(2**31 - 1),
]
SERVER_SAMPLES: list[m.Message] = [
    m.Ok(101, {"server": "Parley", "version": 1, "nested": {"list": [1, 2.5, None, "x"]}}),
    m.Error(102, "name_taken", "the name 'alice' is already taken"),
    m.Error(None, "bad_frame", "frame is not UTF-8 JSON"),
    m.ChatMessage(7, 1_700_000_000.25, "bob", "Bob B", "direct", "alice", "hey", True),
    m.Presence("bob", "Bob B", False),
    m.Renamed("bob", "bob", "Bob B"),
    m.RoomEvent("lobby", "joined", "bob", "Bob B"),
    m.FileAdded({"name": "a.txt", "size": 3, "mtime": 1.5, "sha256": None, "uploader": None},
                "bob"),
    m.FileAdded({"name": "b.txt", "size": 0, "mtime": 2.0, "sha256": "00" * 32,
                 "uploader": None}),
    m.FileRemoved("a.txt"),
    m.Ping(12345),
    m.AccountStatus(True),
    m.MessageDeleted(9001, "bob", "room", "lobby", "teacher"),
    m.MessageEdited(9001, "bob", "direct", "alice", "fixed the typo", 1_700_000_100.5),
    m.UserTyping("bob", "Bob B", "direct", "alice"),
    m.PolicyChanged({"private_messages": False, "uploads": True, "limits": {"list_max": 5}}),
    m.Bye("shutdown", "the server is shutting down"),
]
AUTH_ONLY = sorted(set(m.CLIENT_MESSAGES) - PRE_AUTH_REQUESTS)


def sample_of(type_name: str) -> m.Message:
    return next(s for s in CLIENT_SAMPLES + SERVER_SAMPLES if type_name == s.TYPE)


# ---------------------------------------------------------------- framing


def test_encode_frame_is_big_endian_length_then_payload():
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    payload = bytes(range(256)) * 300
    assert encode_frame(payload)[:4] == struct.pack(">I", len(payload))


def test_decode_round_trip_in_one_chunk_and_one_byte_at_a_time():
    payloads = [b"", b"x", b'{"type":"ping","nonce":1}', bytes(range(256)) * 40, b"\x00" * 5]
    stream = b"".join(encode_frame(p) for p in payloads)

    whole = FrameDecoder().feed(stream)
    assert whole == payloads

    dec = FrameDecoder()
    one_by_one = []
    for i in range(len(stream)):
        one_by_one += dec.feed(stream[i : i + 1])
    assert one_by_one == payloads
    assert dec.buffered == 0


@pytest.mark.parametrize("seed", range(20))
def test_decode_random_splits_give_the_same_frames(seed):
    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(rng.randrange(1, 30))]
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(rng.sample(range(len(stream) + 1), k=min(len(stream), rng.randrange(0, 50))))
    dec, got, prev = FrameDecoder(), [], 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[prev:cut])
        prev = cut
    assert got == payloads


def test_oversize_prefix_raises_before_the_payload_is_buffered():
    dec = FrameDecoder()
    header = struct.pack(">I", 2 * 1024**3)  # a 2 GiB frame: only its header is ever sent
    assert dec.feed(header[:3]) == []  # an incomplete header is not judged yet
    with pytest.raises(RemoteProtocolError) as info:
        dec.feed(header[3:])
    assert info.value.code == "frame_too_large"
    assert dec.buffered <= len(header)


def test_frame_limit_boundary_on_the_prefix():
    dec = FrameDecoder(max_frame=10)
    assert dec.feed(struct.pack(">I", 10)) == []  # exactly the limit: accepted, waits for data
    assert dec.feed(b"0123456789") == [b"0123456789"]
    with pytest.raises(RemoteProtocolError) as info:
        FrameDecoder(max_frame=10).feed(struct.pack(">I", 11))
    assert info.value.code == "frame_too_large"
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))


def test_encode_of_an_oversize_payload_is_a_local_error():
    assert len(encode_frame(b"x" * DEFAULT_MAX_FRAME)) == DEFAULT_MAX_FRAME + 4
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(b"x" * (DEFAULT_MAX_FRAME + 1))
    assert info.value.code == "frame_too_large"
    with pytest.raises(LocalProtocolError):
        encode_message(m.Send(1, "public", "", "x" * DEFAULT_MAX_FRAME))


def test_connection_closes_on_an_oversize_prefix():
    for conn in (Connection(Role.SERVER), Connection(Role.CLIENT)):
        with pytest.raises(RemoteProtocolError) as info:
            conn.receive_data(b"\x80\x00\x00\x00")
        assert info.value.code == "frame_too_large"
        assert conn.state is State.CLOSED
        conn.receive_data(b"more bytes after the error")  # ignored once closed
        assert conn.events() == []


def test_connection_send_of_an_oversize_message_is_a_local_error():
    p = authenticated_pair()
    with pytest.raises(LocalProtocolError) as info:
        p.client.send(m.Send(50, "public", "", "é" * DEFAULT_MAX_FRAME))
    assert info.value.code == "frame_too_large"
    small = Connection(Role.SERVER, max_frame=64)
    with pytest.raises(LocalProtocolError):
        small.send(m.Bye("shutdown", "x" * 100))


# ---------------------------------------------------------------- state machine


def test_handshake_login_logout_eof_state_machine():
    p = Pair()
    assert p.states() == (State.HANDSHAKE, State.HANDSHAKE)
    hello = m.Hello(1, 1, "parley-cli/0.1.0")
    assert p.c2s(hello) == [hello]
    assert p.states() == (State.HANDSHAKE, State.HANDSHAKE)  # nothing changes until the ok
    assert p.s2c(m.Ok(1, {"server": "Parley"})) == [m.Ok(1, {"server": "Parley"})]
    assert p.states() == (State.CONNECTED, State.CONNECTED)

    p.request(m.Login(2, "alice", "secret1"), m.Ok(2, {"user": "alice"}))
    assert p.states() == (State.AUTHENTICATED, State.AUTHENTICATED)
    p.request(m.Send(3, "public", "", "hi"), m.Ok(3, {"msg_id": 1, "ts": 1.0}))
    assert p.states() == (State.AUTHENTICATED, State.AUTHENTICATED)

    p.request(m.Logout(4))
    assert p.states() == (State.CONNECTED, State.CONNECTED)
    with pytest.raises(LocalProtocolError):
        p.client.send(m.Send(5, "public", "", "after logout"))

    assert deliver(b"", p.client) == [ConnectionClosed()]
    assert deliver(b"", p.server) == [ConnectionClosed()]
    assert p.states() == (State.CLOSED, State.CLOSED)
    with pytest.raises(LocalProtocolError) as info:
        p.client.send(m.Pong(1))
    assert info.value.code == "closed"
    p.client.receive_data(encode_message(m.Ping(1)))  # bytes after EOF are ignored
    assert p.client.events() == []


@pytest.mark.parametrize("grant", [m.Register(2, "bob", "secret1"), m.Login(2, "bob", "secret1"),
                                   m.Resume(2, "bob", "token")])
def test_every_auth_request_authenticates_on_ok(grant):
    p = connected_pair()
    p.request(grant)
    assert p.states() == (State.AUTHENTICATED, State.AUTHENTICATED)


def test_error_replies_do_not_change_state_and_free_the_id():
    p = Pair()
    p.request(m.Hello(1, 2), m.Error(1, "version_mismatch", "speak 1"))
    assert p.states() == (State.HANDSHAKE, State.HANDSHAKE)
    assert p.client.pending_requests == {}
    p.request(m.Hello(1, 1))  # the id is free again after its reply
    p.request(m.Login(2, "alice", "nope"), m.Error(2, "wrong_password", "wrong password"))
    assert p.states() == (State.CONNECTED, State.CONNECTED)
    p.request(m.Login(3, "alice", "right"))
    assert p.states() == (State.AUTHENTICATED, State.AUTHENTICATED)


def test_client_refuses_to_send_before_hello():
    client = Connection(Role.CLIENT)
    for msg in (m.Login(1, "a", "b"), m.Register(1, "a", "b"), m.Pong(1), m.ListUsers(1)):
        with pytest.raises(LocalProtocolError) as info:
            client.send(msg)
        assert info.value.code == "handshake_required"
    assert client.pending_requests == {}
    assert client.send(m.Hello(1, 1)).startswith(b"\x00\x00\x00")


@pytest.mark.parametrize("type_name", AUTH_ONLY)
def test_client_refuses_auth_only_requests_before_login(type_name):
    p = connected_pair()
    with pytest.raises(LocalProtocolError) as info:
        p.client.send(sample_of(type_name))
    assert info.value.code == "not_authenticated"
    p.request(m.Login(2, "alice", "secret1"))
    assert p.c2s(sample_of(type_name)) == [sample_of(type_name)]


def test_request_ids_are_tracked_until_their_reply():
    p = authenticated_pair()
    p.c2s(m.ListUsers(10))
    p.c2s(m.ListRooms(11))
    assert p.client.pending_requests == {10: "list_users", 11: "list_rooms"}
    assert p.server.pending_requests == {10: "list_users", 11: "list_rooms"}
    with pytest.raises(LocalProtocolError):
        p.client.send(m.ListOnline(10))  # id still awaiting its reply
    p.s2c(m.Ok(11, {"rooms": []}))  # replies may come in any order
    assert p.client.pending_requests == {10: "list_users"}
    p.s2c(m.Error(10, "internal", "oops"))
    assert p.client.pending_requests == {}
    assert p.server.pending_requests == {}
    p.c2s(m.ListOnline(10))  # reusable now
    assert p.client.pending_requests == {10: "list_online"}
    p.c2s(m.Pong(5))  # not a request: no id, nothing pending
    assert p.client.pending_requests == {10: "list_online"}


@pytest.mark.parametrize("msg", SERVER_SAMPLES, ids=lambda s: s.TYPE)
def test_client_cannot_send_server_messages(msg):
    p = authenticated_pair()
    with pytest.raises(LocalProtocolError) as info:
        p.client.send(msg)
    assert info.value.code == "wrong_role"


@pytest.mark.parametrize("msg", CLIENT_SAMPLES, ids=lambda s: s.TYPE)
def test_server_cannot_send_client_messages(msg):
    p = authenticated_pair()
    with pytest.raises(LocalProtocolError) as info:
        p.server.send(msg)
    assert info.value.code == "wrong_role"


@pytest.mark.parametrize("obj", [
    {"type": "login", "id": 7, "username": "a", "password": "b"},
    {"type": "list_users", "id": 7},
    {"type": "pong", "nonce": 1},
])
def test_server_reports_handshake_required_before_hello(obj):
    server = Connection(Role.SERVER)
    events = deliver(frame_json(obj), server)
    assert len(events) == 1 and isinstance(events[0], BadMessage)
    assert events[0].code == "handshake_required"
    assert events[0].request_id == obj.get("id")
    # Recoverable at this layer (the server application decides to hang up): hello still works.
    assert deliver(frame_json({"type": "hello", "id": 8, "version": 1}), server) == [
        m.Hello(8, 1)]


def test_server_accepts_requests_pipelined_after_hello():
    # hello and login in one read: the login arrives before the server's ok, and is accepted
    # (the server answers in order, so the hello is settled before the login is handled).
    server = Connection(Role.SERVER)
    events = deliver(frame_json({"type": "hello", "id": 1, "version": 1})
                     + frame_json({"type": "login", "id": 2, "username": "a", "password": "b"}),
                     server)
    assert events == [m.Hello(1, 1), m.Login(2, "a", "b")]


# ---------------------------------------------------------------- invalid messages


@pytest.mark.parametrize("obj, code, request_id", [
    ({"type": "frobnicate", "id": 5}, "unknown_type", 5),
    ({"id": 5, "room": "x"}, "unknown_type", 5),  # no type at all
    ({"type": 3, "id": 5}, "unknown_type", 5),
    ({"type": "Send", "id": 5}, "unknown_type", 5),  # type names are case-sensitive
    ({"type": "ok", "id": 5, "result": {}}, "unknown_type", 5),  # a server message
    ({"type": "send", "id": 5, "kind": "public", "target": ""}, "bad_message", 5),
    ({"type": "send", "id": 5, "kind": "public", "target": "", "text": 5}, "bad_message", 5),
    ({"type": "send", "id": 5, "kind": "public", "target": None, "text": "x"}, "bad_message", 5),
    ({"type": "send", "kind": "public", "target": "", "text": "x"}, "bad_message", None),
    ({"type": "history", "id": 5, "kind": "public", "target": "", "limit": True},
     "bad_message", 5),
    ({"type": "history", "id": 5, "kind": "public", "target": "", "limit": 2.0},
     "bad_message", 5),
    ({"type": "history", "id": 5, "kind": "public", "target": "", "limit": -1},
     "bad_message", 5),
    ({"type": "upload_chunk", "id": 5, "upload_id": "u", "offset": 2**53, "data": ""},
     "bad_message", 5),
    ({"type": "list_users", "id": True}, "bad_message", None),
    ({"type": "list_users", "id": -1}, "bad_message", None),
    ({"type": "list_users", "id": 2**53}, "bad_message", None),
    ({"type": "list_users", "id": "5"}, "bad_message", None),
    ({"type": "list_users", "id": 5.0}, "bad_message", None),
    ({"type": "pong", "nonce": "1"}, "bad_message", None),
    ({"type": "pong", "nonce": False}, "bad_message", None),
])
def test_invalid_messages_become_bad_message_events_and_the_stream_goes_on(obj, code, request_id):
    server = server_after_hello()
    events = deliver(frame_json(obj), server)
    assert len(events) == 1
    bad = events[0]
    assert isinstance(bad, BadMessage)
    assert (bad.code, bad.request_id) == (code, request_id)
    assert bad.message
    assert server.state is State.CONNECTED
    assert deliver(frame_json({"type": "list_users", "id": 6}), server) == [m.ListUsers(6)]


def test_largest_id_is_accepted():
    server = server_after_hello()
    assert deliver(frame_json({"type": "list_users", "id": 2**53 - 1}), server) == [
        m.ListUsers(2**53 - 1)]
    assert deliver(frame_json({"type": "list_users", "id": 0}), server) == [m.ListUsers(0)]


def test_client_side_bad_messages_are_recoverable():
    p = connected_pair()
    events = deliver(frame_json({"type": "typing", "user": "bob"})
                     + frame_json({"type": "ok", "id": 9, "result": []})
                     + frame_json({"type": "presence", "user": "bob", "display": "B",
                                   "online": "yes"})
                     + encode_message(m.Ping(3)), p.client)
    assert [(type(e), getattr(e, "code", None)) for e in events] == [
        (BadMessage, "unknown_type"), (BadMessage, "bad_message"), (BadMessage, "bad_message"),
        (m.Ping, None)]
    assert p.client.state is State.CONNECTED


def test_unknown_fields_are_ignored_and_defaults_filled():
    server = server_after_hello()
    events = deliver(frame_json({"type": "history", "id": 4, "kind": "public", "target": "",
                                 "future_field": {"x": 1}}), server)
    assert events == [m.History(4, "public", "", 50, None)]
    events = deliver(frame_json({"type": "download", "id": 5, "name": "a", "block_size": None}),
                     server)
    assert events == [m.Download(5, "a", 0, None)]


@pytest.mark.parametrize("payload", [
    b"not json", b"{", b'{"type":"ping"', b"\xff\xfe{}", b"\xef\xbb\xbf{}",
    b"", b"[]", b'"hello"', b"42", b"null", b"true", b"[" * 100_000 + b"]" * 100_000,
])
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_frames_that_are_not_a_json_object_are_fatal(payload, role):
    conn = Connection(role)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(encode_frame(payload))
    assert info.value.code == "bad_frame"
    assert conn.state is State.CLOSED


def test_frames_decoded_before_a_fatal_frame_are_kept():
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(frame_json({"type": "hello", "id": 1, "version": 1})
                            + encode_frame(b"garbage"))
    assert server.events() == [m.Hello(1, 1)]


# ---------------------------------------------------------------- round trips


def test_samples_cover_every_type():
    assert {s.TYPE for s in CLIENT_SAMPLES} == set(m.CLIENT_MESSAGES)
    assert {s.TYPE for s in SERVER_SAMPLES} == set(m.SERVER_MESSAGES)


@pytest.mark.parametrize("msg", CLIENT_SAMPLES, ids=lambda s: s.TYPE)
def test_every_client_message_round_trips(msg):
    p = authenticated_pair()
    if isinstance(msg, m.Hello):
        p = Pair()
    data = p.client.send(msg)
    assert json.loads(data[4:])["type"] == msg.TYPE
    assert deliver(data, p.server) == [msg]


@pytest.mark.parametrize("msg", SERVER_SAMPLES, ids=lambda s: s.TYPE)
def test_every_server_message_round_trips(msg):
    p = authenticated_pair()
    data = p.server.send(msg)
    assert deliver(data, p.client) == [msg]
    # The pre-encoded path used for fan-out gives the same bytes.
    assert encode_message(msg) == data


def test_wire_form_is_compact_utf8_json_with_every_field():
    data = encode_message(m.ChatMessage(7, 1.5, "bob", "Bob", "public", "", "hi"))
    assert data[4:] == (b'{"type":"message","msg_id":7,"ts":1.5,"sender":"bob",'
                        b'"sender_display":"Bob","kind":"public","target":"","text":"hi",'
                        b'"delayed":false}')
    assert data[:4] == struct.pack(">I", len(data) - 4)


UNICODE_TEXTS = [
    "emoji 👋🏽 family 👨‍👩‍👧 flag 🇳🇱",
    "RTL: שלום עולם / مرحبا بالعالم",
    "NUL\x00inside and \x01\x1f controls, tab\t, newline\n",
    'quotes " and backslash \\ and slash /',
    "\u2028\u2029 line separators, BOM \ufeff, combining e\u0301",
    "𝕏" * 4000,
]


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_unicode_text_round_trips_both_ways(text):
    p = authenticated_pair()
    out = m.Send(40, "direct", "bob", text)
    data = p.client.send(out)
    assert deliver(data, p.server) == [out]
    if "👋" in text:
        assert "👋".encode() in data  # sent as raw UTF-8, not \u escapes
    event = m.ChatMessage(1, 1.0, "bob", "بوب", "direct", "alice", text)
    assert deliver(p.server.send(event), p.client) == [event]


def test_a_send_refused_for_size_does_not_reserve_its_id():
    p = authenticated_pair()
    with pytest.raises(LocalProtocolError):
        p.client.send(m.Send(60, "public", "", "x" * DEFAULT_MAX_FRAME))
    assert 60 not in p.client.pending_requests


def test_unencodable_text_is_a_local_protocol_error():
    p = authenticated_pair()
    with pytest.raises(LocalProtocolError):
        p.client.send(m.Send(61, "public", "", "\ud800"))


# ---------------------------------------------------------------- property tests

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**60), max_value=2**60)
                | st.floats(allow_nan=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars,
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
field_names = st.sampled_from(sorted({"id", "type", "version", "text", "kind", "target",
                                      "limit", "before", "offset", "nonce", "result", "code",
                                      "message", "username", "password", "room", "data",
                                      "msg_id", "ts", "file", "online", "delayed"}))
type_names = st.sampled_from(sorted(set(m.CLIENT_MESSAGES) | set(m.SERVER_MESSAGES))) | st.text(
    max_size=10)
message_like = st.builds(lambda t, fields: {"type": t, **fields}, type_names,
                         st.dictionaries(field_names, json_values, max_size=8))
frames_of_json = st.lists(message_like | json_values, max_size=6).map(
    lambda objs: b"".join(encode_frame(json.dumps(o).encode()) for o in objs))
frames_of_bytes = st.lists(st.binary(max_size=200), max_size=6).map(
    lambda ps: b"".join(encode_frame(p) for p in ps))
streams = st.binary(max_size=600) | frames_of_json | frames_of_bytes | st.lists(
    frames_of_json | frames_of_bytes | st.binary(max_size=40), max_size=4).map(b"".join)


def fresh_connections() -> list[Connection]:
    return [Connection(Role.SERVER), server_after_hello(), Connection(Role.CLIENT),
            connected_pair().client]


def feed_in_chunks(conn: Connection, data: bytes, cuts: list[int]) -> list[object]:
    """Feed data split at cuts; returns events. Only RemoteProtocolError may escape."""
    events, prev = [], 0
    try:
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            if cut > prev:  # an empty read would mean EOF
                conn.receive_data(data[prev:cut])
            prev = cut
            events += conn.events()
    except RemoteProtocolError as exc:
        assert exc.code in ("bad_frame", "frame_too_large")
        assert conn.state is State.CLOSED
        events += conn.events()
        events.append(exc.code)
    return events


def check_events(events: list[object]) -> None:
    for e in events:
        assert isinstance(e, m.Message | BadMessage | str), e
        if isinstance(e, BadMessage):
            assert e.code in ("unknown_type", "bad_message", "handshake_required")
            assert e.request_id is None or 0 <= e.request_id < 2**53


@FAST
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_random_input_only_ever_raises_remote_protocol_error(data, cuts):
    for conn in fresh_connections():
        check_events(feed_in_chunks(conn, data, cuts))


@FAST
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_how_bytes_are_split_never_changes_the_outcome(data, cuts):
    for whole, split in zip(fresh_connections(), fresh_connections(), strict=True):
        at_once, in_pieces = feed_in_chunks(whole, data, []), feed_in_chunks(split, data, cuts)
        assert whole.state == split.state
        assert at_once == in_pieces


def test_frames_before_an_oversize_prefix_in_the_same_read_are_kept():
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(frame_json({"type": "hello", "id": 1, "version": 1})
                            + b"\x80\x00\x00\x00")
    assert server.events() == [m.Hello(1, 1)]


@FAST
@given(text=st.text(max_size=300), target=st.text(max_size=40),
       msg_id=st.integers(min_value=0, max_value=2**53 - 1),
       ts=st.floats(allow_nan=False, allow_infinity=False), delayed=st.booleans())
def test_any_text_round_trips(text, target, msg_id, ts, delayed):
    p = authenticated_pair()
    out = m.Send(9, "room", target, text)
    assert deliver(p.client.send(out), p.server) == [out]
    event = m.ChatMessage(msg_id, ts, target, text, "room", target, text, delayed)
    assert deliver(p.server.send(event), p.client) == [event]
