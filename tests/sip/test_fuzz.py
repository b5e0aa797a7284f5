"""Hypothesis fuzz of both parser twins.

For every input: only ParseError may escape (from the parser, and from `check()`, which
parses every lazily parsed field), and the two twins give the same answer: the same
error status and reason, or equal messages (start line, header fields, eagerly parsed
values, body). Inputs are random bytes, SIP-shaped messages built from the grammar's
sharp edges, mutations of real messages, and streams cut at random places.
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ParseError
from gateway.sip import parser as py_twin
from tests.twins import load_both

TWINS = [p.values[0] for p in load_both("_sipparse", "sip.parser")]
HERE = Path(__file__).parent
SEEDS = sorted(p.read_bytes() for p in [*HERE.glob("corpus/*/*.sip"), *HERE.glob("torture/*.sip")])
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def snapshot(item):
    if not hasattr(item, "headers"):
        return item  # a Keepalive
    start = (item.method, item.uri_text) if hasattr(item, "method") else (item.status, item.reason)
    return type(item).__name__, start, item.headers._fields, dict(item.headers._cache), item.body


def outcome(twin, data: bytes):
    try:
        message = twin.parse_message(data)
    except ParseError as exc:
        return ("error", exc.status, exc.reason)
    result = snapshot(message)
    if hasattr(message, "check"):
        try:
            message.check()
        except ParseError as exc:
            return result, ("check", exc.status, exc.reason)
        _ = message.encode()
    return result


def agree(data: bytes):
    results = [outcome(twin, data) for twin in TWINS]
    assert all(r == results[0] for r in results), data
    return results[0]


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    agree(data)


NAMES = ["Contact", "m", "Max-Forwards", "Expires", "Route", "Record-Route", "Subject",
         "WWW-Authenticate", "Proxy-Authenticate", "Date", "Allow", "X-A"]
ODD_NAMES = ["Via", "From", "t", "Call-ID", "CSeq", "l", "Bad Name", "", "a:b", "X-Ü"]
PIECES = ["sip:a@b", "<sip:a@b>", '"x y"', '"unterminated', ";tag=1", ";tag", ";;",
          ";branch=z9hG4bK1", ",", " ", "\t", "=", "SIP/2.0/UDP h", "SIP / 2.0 / TCP [::1]:5060",
          "1 INVITE", "2147483648 INVITE", "2147483647 INVITE", "INVITE", "0", "12", "-1", "\\",
          "<", ">", "@", "?x=1", ";rport", ";received=1.2.3.4", "Digest realm=\"r\", nonce=\"n\"",
          "*", ";expires=60", "é", "\x00", "\r\n ", "\r\n\t"]
START = ["INVITE sip:a@b SIP/2.0", "REGISTER sips:[::1]:5061;transport=tls SIP/2.0",
         "SIP/2.0 200 OK", "SIP/2.0 401 ", "SIP/2.0 180", "MESSAGE sip:u;x=y@h SIP/2.0"]
BAD_START = ["SIP/2.0 99 x", "OPTIONS <sip:a@b> SIP/2.0", "BYE sip:a@b?x=y SIP/2.0",
             "ACK sip:a@b SIP/3.0", "X  sip:a SIP/2.0", "SIP/2.0 200x"]

header_value = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
header_line = st.tuples(
    st.sampled_from(NAMES * 3 + ODD_NAMES),
    st.sampled_from([":", " :", ": ", "\t:"]), header_value).map("".join)


# values near the edges of what the eager checks accept, one strategy per field
_ws = st.sampled_from(["", " ", "\t", "  ", " \t"])
_token = st.text(alphabet="aZ09-.!%*_+`'~", min_size=1, max_size=6)
_number = st.one_of(st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32, 10**10, 10**11]).map(str),
                    st.integers(0, 2**32).map(str), st.integers(0, 99).map(lambda n: f"000{n}"))
_params = st.lists(st.tuples(st.sampled_from([";", " ;", "; "]), st.sampled_from(
    ["tag", "TAG", "branch", "Branch", "x", "rport", ""]), st.sampled_from(
    ["", "=", " = ", "="]), st.one_of(_token, st.just('"q u"'), st.just('"\\""'), st.just(""))),
    max_size=3).map(lambda ps: "".join("".join(p) for p in ps))
EDGES = {
    "Via": st.tuples(st.sampled_from(["SIP/2.0/UDP h", "SIP / 2.0 / TCP [::1]:5060",
                                      "SIP/2.0/TLS h:1"]), _params,
                     st.sampled_from(["", ",SIP/2.0/UDP x;branch=z9hG4bK2", ","])).map("".join),
    "From": st.tuples(st.sampled_from(["<sip:a@b>", '"A" <sip:a@b>', "A B<sip:a@b>",
                                       "sip:a@b", '"<" <sip:a@b>', '"\\"<sip:a@b>']),
                      _params).map("".join),
    "Call-ID": st.text(alphabet="ab@.\t -\"<>", min_size=0, max_size=8),
}


def cseq_edges(method: str):
    return st.tuples(_number, _ws, st.sampled_from([method] * 3 + ["", f"{method} x", "ACK"]),
                     ).map("".join)


EDGES["To"] = EDGES["From"]
REQUIRED = {"Via": ["Via", "v", "VIA"], "From": ["From", "f"], "To": ["To", "t", "TO "],
            "Call-ID": ["Call-ID", "i", "call-id"], "CSeq": ["CSeq", "cseq"]}


@st.composite
def sip_shaped(draw):
    """A start line, the five fields routing needs (valid, or for up to two of them:
    absent, wrapped in random grammar pieces, or replaced by a value near the edges of
    the eager checks) and random extra lines, in random order."""
    start = draw(st.sampled_from(START) if draw(st.integers(0, 9)) else st.sampled_from(BAD_START))
    method = "INVITE" if start.startswith("SIP") else start.split(" ")[0]
    good = {"Via": f"SIP/2.0/UDP h;branch=z9hG4bK{draw(st.integers(0, 9))}",
            "From": "<sip:a@b>;tag=1", "To": "<sip:c@d>", "Call-ID": "c1",
            "CSeq": f"1 {method}"}
    lines = []
    # at most two of the five are disturbed, so that most messages get past the others
    disturbed = draw(st.sets(st.sampled_from(list(REQUIRED)), max_size=2))
    for name, spellings in REQUIRED.items():
        choice = "good"
        if name in disturbed:
            choice = draw(st.sampled_from(["wrapped", "replaced", "replaced", "absent"]))
        if choice == "absent":
            continue
        value = good[name]
        if choice == "wrapped":
            value = draw(header_value) + value + draw(header_value)
        elif choice == "replaced":
            value = draw(cseq_edges(method) if name == "CSeq" else EDGES[name])
        lines.append(f"{draw(st.sampled_from(spellings))}: {value}")
    for extra in draw(st.lists(header_line, max_size=6)):
        lines.insert(draw(st.integers(0, len(lines))), extra)
    body = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        length = len(body) if draw(st.booleans()) else draw(st.integers(0, 50))
        lines.append(f"Content-Length: {draw(st.sampled_from(['', '0', '000']))}{length}")
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@FUZZ
@given(sip_shaped())
def test_sip_shaped_messages(data):
    agree(data)


@st.composite
def mutated_seed(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(st.sampled_from([b"\r\n", b" ", b";", b",", b'"', b"<", b">", b":", b"\t",
                                      b"\r\n ", b"0", b"\xff", b"=", b"\\"]))
        if action == "insert":
            data[at:at] = chunk
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at : at + len(chunk)] = chunk
    return bytes(data)


@FUZZ
@given(mutated_seed())
def test_mutated_real_messages(data):
    agree(data)


def stream_items(twin, chunks):
    parser = twin.StreamParser()
    items = []
    try:
        for chunk in chunks:
            items += parser.feed(chunk)
        items += parser.feed(b"")
    except ParseError as exc:
        return [snapshot(i) for i in items], (exc.status, exc.reason)
    return [snapshot(i) for i in items], None


@FUZZ
@given(st.lists(st.sampled_from(SEEDS + [b"\r\n\r\n", b"\r\n"]), min_size=1, max_size=5),
       st.lists(st.integers(0, 4000), max_size=6), st.data())
def test_streams_cut_anywhere(messages, cuts, data):
    stream = b"".join(messages)
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(stream)))
        stream = stream[:at] + data.draw(st.sampled_from([b"\r", b"x", b"\r\n\r\n"])) + stream[at:]
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    whole = stream_items(TWINS[0], [stream])
    chunked = [stream_items(twin, chunks) for twin in TWINS]
    assert all(c == chunked[0] for c in chunked)
    assert all(stream_items(twin, [stream]) == whole for twin in TWINS)
    # cutting the stream changes nothing but how a ping split in two is reported
    messages = [item for item in chunked[0][0] if isinstance(item, tuple)]
    assert messages == [item for item in whole[0] if isinstance(item, tuple)]
    assert chunked[0][1] == whole[1]


def test_stream_matches_datagram_for_every_seed():
    """Each seed with a Content-Length frames on a stream exactly as its datagram parse."""
    for seed in SEEDS:
        try:
            expected = py_twin.parse_message(seed)
        except ParseError:
            continue
        if "Content-Length" not in expected.headers or expected.content_length != len(
                seed) - seed.index(b"\r\n\r\n") - 4:
            continue
        for twin in TWINS:
            (item,) = twin.StreamParser().feed(seed)
            assert snapshot(item) == snapshot(expected)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(st.binary(max_size=800), sip_shaped(), mutated_seed()))
def test_long_fuzz(data):
    agree(data)


EDGE_CASES = [
    ("CSeq", "2147483647 INVITE", True), ("CSeq", "2147483648 INVITE", False),
    ("CSeq", "0000000001 INVITE", True), ("CSeq", "00000000001 INVITE", False),
    ("CSeq", "1\tINVITE", True), ("CSeq", "1INVITE", False), ("CSeq", "1 INVITE x", False),
    ("CSeq", "1 INVITE\t", True), ("CSeq", "-1 INVITE", False), ("CSeq", "1 ACK", False),
    ("Call-ID", "a\tb", False), ("Call-ID", 'a"<>b', True), ("Call-ID", "", False),
    ("From", "<sip:a@b>;tag=x;tag=y", True), ("From", "<sip:a@b>;TAG = x", True),
    ("From", '"a\\" <b>" <sip:a@b>;tag=1', True), ("From", '"a\\\\" <sip:a@b>;tag=1', True),
    ("From", "sip:a@b;tag=1,x", False), ("From", "<sip:a@b>;tag=\"1\"", True),
    ("From", "a <sip:a@b>>;tag=1", False), ("From", "<sip:a@b> tag=1", False),
    ("Via", "SIP/2.0/UDP h;branch=1,", True), ("Via", "SIP/2.0/UDP h,SIP/2.0/UDP g;branch=2", True),
    ("Via", "SIP/2.0/UDP h;branch=\"x,y\"", True),
    ("Via", "SIP/2.0/UDP h; branch = 1 ;rport", True),
    ("Via", "SIP/2.0/UDP h;=1", False), ("Via", "SIP/2.0/UDP h;branch=1 x", False),
    ("Content-Length", "0003", True), ("Content-Length", "4", False),
    ("Content-Length", "99999999999999999999999", False), ("Content-Length", " 3 ", True),
]


@pytest.mark.parametrize(("name", "value", "accepted"), EDGE_CASES)
def test_eager_edges(name, value, accepted):
    fields = {"Via": "SIP/2.0/UDP h;branch=z9hG4bK1", "From": "<sip:a@b>;tag=1",
              "To": "<sip:c@d>", "Call-ID": "c1", "CSeq": "1 INVITE", "Content-Length": "3"}
    fields[name] = value
    data = ("INVITE sip:c@d SIP/2.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            + "\r\nabc").encode()
    result = agree(data)
    assert (result[0] != "error") == accepted, result
