"""LAN discovery: datagram codec, responder robustness and rate limit, client search.

Loopback only: responders bind 127.0.0.x on a free port and discover() gets unicast targets
with broadcast=False; no broadcast is ever sent.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_client.discovery import DiscoveredServer, broadcast_addresses, discover
from parley_server.discovery import DiscoveryResponder, RateLimiter
from protocol import discovery as wire
from protocol.version import APP_VERSION, PROTOCOL_VERSION

FINGERPRINT = "sha256:" + "ab" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def info_for(port: int = 5150, **extra):
    def info() -> dict:
        return {"name": "lab-box", "port": port, "users": 3, **extra}
    return info


@pytest.fixture
def responder():
    started: list[DiscoveryResponder] = []

    def make(info=None, **kwargs) -> DiscoveryResponder:
        kwargs.setdefault("bind", "127.0.0.1")
        kwargs.setdefault("port", 0)
        r = DiscoveryResponder(info or info_for(), **kwargs).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.close()


@pytest.fixture
def prober():
    socks: list[socket.socket] = []

    def make(bind: str = "127.0.0.1") -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(s)
        s.bind((bind, 0))
        s.settimeout(5)
        return s

    yield make
    for s in socks:
        s.close()


def second_loopback_address() -> str | None:
    """127.0.0.2 where the OS routes all of 127/8 to loopback (Linux), else None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
    except OSError:
        return None
    return "127.0.0.2"


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on sock (loopback delivers during sendto)."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return got


# ---------------------------------------------------------------- codec

def sample_answer(**changes) -> wire.Answer:
    fields = dict(nonce=0xDEADBEEF, name="lab-box", port=5150, protocol_version=PROTOCOL_VERSION,
                  app_version=APP_VERSION, users=3, fingerprint=FINGERPRINT)
    fields.update(changes)
    return wire.Answer(**fields)


def test_probe_round_trip_and_padding():
    data = wire.encode_probe(0x01020304, protocol_version=7)
    assert len(data) == wire.PROBE_SIZE
    assert data[:4] == wire.MAGIC
    assert wire.decode_probe(data) == wire.Probe(nonce=0x01020304, protocol_version=7)


@pytest.mark.parametrize("data", [
    b"",
    wire.encode_probe(1)[:wire.HEADER_SIZE],
    wire.encode_probe(1)[:wire.PROBE_SIZE - 1],                 # under the minimum size
    wire.encode_probe(1) + bytes(wire.MAX_PROBE_SIZE),           # oversize
    b"XXXX" + wire.encode_probe(1)[4:],                          # wrong magic
    wire.encode_probe(1)[:4] + b"\0" + wire.encode_probe(1)[5:],  # format version 0
    wire.encode_answer(sample_answer()) + bytes(wire.PROBE_SIZE),  # an answer, padded
], ids=["empty", "header", "short", "oversize", "magic", "format0", "answer"])
def test_non_probes_decode_to_none(data):
    assert wire.decode_probe(data) is None


def test_probe_from_later_format_version_is_still_answered():
    data = bytearray(wire.encode_probe(5))
    data[4] = 2
    data[-10:] = b"new fields"
    assert wire.decode_probe(bytes(data)) == wire.Probe(nonce=5, protocol_version=PROTOCOL_VERSION)


@pytest.mark.parametrize("fingerprint", [FINGERPRINT, None])
def test_answer_round_trip(fingerprint):
    answer = sample_answer(fingerprint=fingerprint)
    assert wire.decode_answer(wire.encode_answer(answer)) == answer


def test_largest_answer_fits_in_a_probe():
    answer = sample_answer(name="é" * 200, app_version="9" * 100, users=10**12,
                           fingerprint="F" * wire.MAX_FINGERPRINT_BYTES)
    data = wire.encode_answer(answer)
    assert len(data) <= wire.MAX_ANSWER_SIZE == wire.PROBE_SIZE
    back = wire.decode_answer(data)
    assert back is not None
    assert back.name == "é" * (wire.MAX_NAME_BYTES // 2)  # cut on a character boundary
    assert back.app_version == "9" * wire.MAX_APP_VERSION_BYTES
    assert back.users == 0xFFFFFFFF
    assert back.fingerprint == answer.fingerprint  # never cut


def test_name_with_control_characters_is_cleaned():
    back = wire.decode_answer(wire.encode_answer(sample_answer(name="evil\x1b[2J\nbox")))
    assert back is not None and back.name == "evil [2J box"


@pytest.mark.parametrize("changes", [
    {"port": 0}, {"port": 70000}, {"protocol_version": -1},
    {"fingerprint": "x" * (wire.MAX_FINGERPRINT_BYTES + 1)}, {"fingerprint": "ab\ncd"},
    {"fingerprint": ""}, {"app_version": "1.0\x00"},
])
def test_encode_answer_refuses_bad_values(changes):
    with pytest.raises(ValueError):
        wire.encode_answer(sample_answer(**changes))


def test_every_truncated_answer_decodes_to_none():
    data = wire.encode_answer(sample_answer())
    for n in range(len(data)):
        assert wire.decode_answer(data[:n]) is None


def test_answer_with_appended_fields_still_decodes():
    data = bytearray(wire.encode_answer(sample_answer()) + b"\x07future")
    data[4] = 3
    assert wire.decode_answer(bytes(data)) == sample_answer()


@pytest.mark.parametrize("mutate", [
    lambda d: d[:20] + bytes([65]) + d[21:],                  # name length past the fields
    lambda d: d[:6] + b"\0\0" + d[8:12] + b"\0\0" + d[14:],   # TCP port 0
    lambda d: d[:21] + b"\xff\xfe" + d[23:],                  # name not UTF-8
    lambda d: d[:21] + b"\x07" + d[22:],                      # control character in the name
    lambda d: d + bytes(wire.MAX_ANSWER_SIZE),                # oversize
], ids=["name-length", "port0", "not-utf8", "control-char", "oversize"])
def test_malformed_answers_decode_to_none(mutate):
    data = wire.encode_answer(sample_answer(name="lab-box"))
    assert wire.decode_answer(mutate(data)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_decoders_never_raise_on_random_bytes(data):
    assert wire.decode_probe(data) is None or len(data) >= wire.PROBE_SIZE
    answer = wire.decode_answer(data)
    assert answer is None or answer.name.isprintable()


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=100), users=st.integers(0, 2**40), port=st.integers(1, 65535))
def test_any_name_encodes_and_decodes(name, users, port):
    data = wire.encode_answer(sample_answer(name=name, users=users, port=port))
    back = wire.decode_answer(data)
    assert back is not None and len(data) <= wire.PROBE_SIZE
    assert back.port == port and back.users == min(users, 0xFFFFFFFF)
    assert len(back.name.encode()) <= wire.MAX_NAME_BYTES and back.name.isprintable()
    plain = name.isprintable() and not any(c.isspace() and c != " " for c in name)
    if plain and len(name.encode()) <= wire.MAX_NAME_BYTES:
        assert back.name == name


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_answers_never_raise(data):
    raw = bytearray(wire.encode_answer(sample_answer()))
    for _ in range(data.draw(st.integers(1, 5))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    back = wire.decode_answer(bytes(raw))
    assert back is None or isinstance(back, wire.Answer)


# ---------------------------------------------------------------- rate limiter

def test_rate_limiter_bucket_refills_with_time():
    clock = FakeClock()
    limiter = RateLimiter(10, 10, total_rate=1000, total_burst=1000, clock=clock)
    assert sum(limiter.allow("a") for _ in range(50)) == 10
    assert limiter.allow("b")  # another source has its own bucket
    clock.now += 0.5
    assert sum(limiter.allow("a") for _ in range(50)) == 5


def test_rate_limiter_total_limit_covers_many_sources():
    limiter = RateLimiter(10, 10, total_rate=20, total_burst=20, clock=FakeClock())
    assert sum(limiter.allow(f"10.0.0.{i}") for i in range(100)) == 20


def test_rate_limiter_table_is_bounded():
    clock = FakeClock()
    limiter = RateLimiter(10, 10, total_rate=1000, total_burst=1000, max_keys=3, clock=clock)
    for key in "abc":
        assert limiter.allow(key)
    assert not limiter.allow("d")          # table full, no one idle
    assert len(limiter._buckets) == 3
    clock.now += 1.0                       # a, b, c have refilled: they can be forgotten
    assert limiter.allow("d")
    assert len(limiter._buckets) <= 3


# ---------------------------------------------------------------- responder + discover over loopback

def test_discover_finds_a_responder(responder):
    r = responder(info_for(5150, fingerprint=FINGERPRINT))
    assert r.port != 0
    found = discover(timeout=0.5, port=r.port, targets=["127.0.0.1"], broadcast=False)
    assert found == [DiscoveredServer(name="lab-box", host="127.0.0.1", port=5150,
                                      version=PROTOCOL_VERSION, users=3, fingerprint=FINGERPRINT,
                                      app_version=APP_VERSION)]
    assert found[0].compatible
    assert r.stats.answered >= 1


def test_answer_reflects_current_info_and_defaults(responder):
    users = [0]
    r = responder(lambda: {"port": 6000, "users": users[0]})
    first = discover(timeout=0.5, port=r.port, targets=["127.0.0.1"], broadcast=False)
    users[0] = 42
    second = discover(timeout=0.5, port=r.port, targets=["127.0.0.1"], broadcast=False)
    assert [s.users for s in first] == [0] and [s.users for s in second] == [42]
    if len(socket.gethostname().encode()) <= wire.MAX_NAME_BYTES:
        assert second[0].name == socket.gethostname()
    assert second[0].fingerprint is None and second[0].app_version == APP_VERSION


def test_incompatible_server_is_listed_as_such(responder, prober):
    r = responder(info_for(protocol_version=PROTOCOL_VERSION + 1))
    found = discover(timeout=0.5, port=r.port, targets=["127.0.0.1"], broadcast=False)
    assert len(found) == 1 and found[0].version == PROTOCOL_VERSION + 1
    assert not found[0].compatible
    # And a probe from a client speaking another version is answered too.
    s = prober()
    s.sendto(wire.encode_probe(77, protocol_version=PROTOCOL_VERSION + 5), ("127.0.0.1", r.port))
    answer = wire.decode_answer(s.recv(4096))
    assert answer is not None and answer.nonce == 77


def test_targets_resolving_to_the_same_server_are_listed_once(responder):
    r = responder()
    found = discover(timeout=0.5, port=r.port, targets=["127.0.0.1", "localhost", "127.0.0.1"],
                     broadcast=False)
    assert [(s.host, s.port) for s in found] == [("127.0.0.1", 5150)]


def test_servers_on_two_addresses_are_both_listed(responder):
    other = second_loopback_address()
    if other is None:
        pytest.skip("only 127.0.0.1 is loopback here")
    a = responder(info_for(5150))
    b = responder(info_for(5150, name="zeta"), bind=other, port=a.port)
    found = discover(timeout=0.5, port=a.port, targets=["127.0.0.1", other], broadcast=False)
    assert [(s.name, s.host) for s in found] == [("lab-box", "127.0.0.1"), ("zeta", other)]
    assert b.stats.answered >= 1


def test_answer_goes_to_the_probe_source_and_is_no_larger(responder, prober):
    r = responder(info_for(fingerprint="F" * wire.MAX_FINGERPRINT_BYTES, name="n" * 300))
    s = prober()
    probe = wire.encode_probe(9)
    s.sendto(probe, ("127.0.0.1", r.port))
    data, addr = s.recvfrom(4096)
    assert addr == ("127.0.0.1", r.port)
    assert len(data) <= len(probe)
    assert wire.decode_answer(data).nonce == 9


def test_responder_survives_garbage(responder, prober):
    r = responder()
    s = prober()
    target = ("127.0.0.1", r.port)
    probe = wire.encode_probe(1)
    garbage = [
        os.urandom(300), os.urandom(10), b"", b"\0",
        probe[:wire.PROBE_SIZE - 1],                  # one byte under the minimum: no answer
        probe[:wire.HEADER_SIZE + 2],                 # truncated to the fields alone
        probe + os.urandom(wire.MAX_PROBE_SIZE),      # oversize
        os.urandom(9000),                             # larger than the receive buffer
        wire.encode_answer(sample_answer()) + bytes(300),  # an answer is never answered
    ]
    for g in garbage:
        s.sendto(g, target)
    wait_until(lambda: r.stats.received >= len(garbage))
    assert r.stats.answered == 0 and r.stats.ignored == len(garbage)
    assert drain(s) == []
    s.sendto(probe, target)  # still alive and answering
    assert wire.decode_answer(s.recv(4096)).nonce == 1


def test_burst_of_probes_is_rate_limited_per_source(responder, prober):
    clock = FakeClock()
    r = responder(clock=clock)
    s = prober()
    for i in range(50):
        s.sendto(wire.encode_probe(i), ("127.0.0.1", r.port))
    wait_until(lambda: r.stats.received >= 50)
    answers = drain(s)
    assert len(answers) == 10 == r.stats.answered
    assert r.stats.rate_limited == 40
    assert [wire.decode_answer(a).nonce for a in answers] == list(range(10))

    other = second_loopback_address()
    if other is not None:  # another source IP is not held back by the first one's burst
        t = prober(other)
        t.sendto(wire.encode_probe(100), ("127.0.0.1", r.port))
        assert wire.decode_answer(t.recv(4096)).nonce == 100

    clock.now += 0.25  # 2.5 tokens later: two more answers for the first source
    for i in range(5):
        s.sendto(wire.encode_probe(200 + i), ("127.0.0.1", r.port))
    wait_until(lambda: r.stats.received >= 55 + (other is not None))
    assert [wire.decode_answer(a).nonce for a in drain(s)] == [200, 201]


def test_failing_info_costs_an_answer_not_the_responder(responder, prober):
    broken = [True]

    def info():
        if broken[0]:
            raise RuntimeError("database gone")
        return {"port": 5150}

    r = responder(info)
    s = prober()
    s.sendto(wire.encode_probe(1), ("127.0.0.1", r.port))
    wait_until(lambda: r.stats.failed == 1)
    broken[0] = False
    s.sendto(wire.encode_probe(2), ("127.0.0.1", r.port))
    assert wire.decode_answer(s.recv(4096)).nonce == 2
    assert drain(s) == []


def test_probe_from_privileged_port_is_not_answered(responder):
    r = responder()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 1000))
    except OSError:
        s.close()
        pytest.skip("cannot bind a port below 1024 here")
    with s:
        s.sendto(wire.encode_probe(1), ("127.0.0.1", r.port))
        wait_until(lambda: r.stats.received >= 1)
        assert r.stats.ignored == 1 and drain(s) == []


def test_close_releases_the_port_and_busy_port_raises(responder):
    r = responder()
    port = r.port
    with pytest.raises(OSError):
        DiscoveryResponder(info_for(), bind="127.0.0.1", port=port).start()
    r.close()
    r.close()  # idempotent
    again = responder(port=port)
    assert again.port == port
    found = discover(timeout=0.5, port=port, targets=["127.0.0.1"], broadcast=False)
    assert len(found) == 1


def test_discover_ignores_foreign_and_stale_answers(prober):
    """A hostile peer answers with garbage and a wrong nonce before a real answer."""
    peer = prober()
    port = peer.getsockname()[1]
    seen = threading.Event()

    def hostile():
        data, addr = peer.recvfrom(4096)
        probe = wire.decode_probe(data)
        seen.set()
        if probe is None:
            return
        peer.sendto(os.urandom(100), addr)
        peer.sendto(wire.encode_answer(sample_answer(nonce=probe.nonce ^ 1, name="stale")), addr)
        peer.sendto(b"PRLD" + os.urandom(200), addr)
        peer.sendto(wire.encode_answer(sample_answer(nonce=probe.nonce, name="real")), addr)
        peer.sendto(wire.encode_answer(sample_answer(nonce=probe.nonce, name="dup")), addr)

    thread = threading.Thread(target=hostile, daemon=True)
    thread.start()
    found = discover(timeout=0.5, port=port, targets=["127.0.0.1"], broadcast=False)
    thread.join(5)
    assert seen.is_set()
    assert [(s.name, s.port) for s in found] == [("real", 5150)]


def test_discover_without_destinations_returns_at_once():
    started = time.monotonic()
    assert discover(timeout=5.0, targets=[], broadcast=False) == []
    assert time.monotonic() - started < 1.0


def test_discover_with_nobody_listening_returns_empty(prober):
    port = prober().getsockname()[1]  # bound but never read: probes go unanswered
    started = time.monotonic()
    assert discover(timeout=0.3, port=port, targets=["127.0.0.1"], broadcast=False) == []
    assert time.monotonic() - started < 2.0


def test_broadcast_addresses_are_ipv4_and_not_loopback():
    # Only asks the OS; nothing is sent.
    for address in broadcast_addresses():
        packed = socket.inet_aton(address)
        assert packed[0] != 127 and address != "0.0.0.0"
