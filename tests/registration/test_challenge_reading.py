"""The compiled wire's reading of a 401/407 (`RegisterWire._read_challenge` in
`_ext/regwire.pyx`) against the twin's (`regwire._one_digest_challenge`, `digest.usable`,
the shared challenge `DigestClient.accept` takes): the same shared challenge object, nonce
and `stale`, or None for both, whatever line the wire read before (its last plain reading
is reused when only the nonce differs). Corpus responses, hand-made near misses, and
hypothesis-generated lines."""

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip import regwire
from gateway.sip.digest import _shared_challenge, usable
from gateway.timers import TimerWheel

compiled = pytest.importorskip("gateway._regwire")

CORPUS = Path(__file__).parents[1] / "sip" / "corpus"
KAMAILIO = 'Digest realm="example.com", nonce="abc123", qop="auth"'


def response(value: str | bytes, status: int = 401) -> bytes:
    header = b"WWW-Authenticate" if status == 401 else b"Proxy-Authenticate"
    if isinstance(value, str):
        value = value.encode("utf-8")
    return (b"SIP/2.0 %d Challenge\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            b"CSeq: 1 REGISTER\r\n%s: %s\r\nContent-Length: 0\r\n\r\n" % (status, header, value))


def twin(data: bytes, status: int):
    """The Python twin's reading: (shared challenge, nonce, stale) or None."""
    head = data[:data.find(b"\r\n\r\n") + 2]
    header = b"WWW-Authenticate" if status == 401 else b"Proxy-Authenticate"
    params = regwire._one_digest_challenge(head, header)
    chosen = None if params is None else usable(params)
    if chosen is None:
        return None
    name = "Authorization" if status == 401 else "Proxy-Authorization"
    return (_shared_challenge(name, params, *chosen), params["nonce"],
            params.get("stale", "").lower() == "true")


def new_wire():
    return compiled.RegisterWire(SimpleNamespace(datagram_hook=None), TimerWheel(), 0.5, 4.0)


def read(wire, data: bytes, status: int):
    return compiled._read_challenge_of(wire, data, status)


def same(found, expected) -> bool:
    if found is None or expected is None:
        return found is expected
    return found[0] is expected[0] and found[1:] == expected[1:] and type(found[1]) is str


def check_after(first: bytes, then: bytes, status: int = 401, first_status: int = 401) -> None:
    """`then` read by a wire that read `first` before reads as the twin reads it (and
    as a fresh wire does)."""
    wire = new_wire()
    assert same(read(wire, first, first_status), twin(first, first_status))
    expected = twin(then, status)
    assert same(read(wire, then, status), expected), (first, then)
    assert same(read(new_wire(), then, status), expected)
    assert same(read(wire, then, status), expected)  # the line just read, again


def corpus_challenges() -> list[bytes]:
    found = []
    for path in sorted(CORPUS.rglob("*.sip")):
        data = path.read_bytes()
        if data.startswith((b"SIP/2.0 401", b"SIP/2.0 407")):
            found.append(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return found


def test_the_corpus_has_challenges_to_read():
    assert len(corpus_challenges()) >= 5


@pytest.mark.parametrize("first, then", list(itertools.product(corpus_challenges(), repeat=2)))
def test_corpus_challenges_read_alike_after_any_other(first, then):
    check_after(first, then)


def with_nonce(template: str, nonce: str) -> bytes:
    return response(template.replace("@@", nonce))


TEMPLATES = [
    'Digest realm="example.com", nonce="@@", qop="auth"',
    'Digest realm="r",nonce=@@,opaque="o",stale=false,algorithm=MD5',
    'Digest nonce="@@", realm="r", algorithm=SHA-256-sess, qop="auth,auth-int"',
    'Digest realm="r", nonce="@@", stale=TRUE',
    'Digest realm="r", NONCE="@@", nonce="second"',
    'Digest realm="r", nonce="@@", qop="auth-int"',
    'Digest realm="r", nonce="@@", algorithm=unknown',
    'Digest realm="r", nonce="@@"',
]

# nonces that must not be taken as a plain one in place of another: they end the value,
# escape, are empty, or are not ASCII
NEAR_MISSES = ['', 'a"b', 'a\\"b', "a,b", "a b", "a\tb", "a<b", "a>b", "é", "a\x7fb",
               'x", stale=true, y="z', "x, stale=true", "abc123", "n2", "a;b", "A" * 300]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("nonce", NEAR_MISSES)
def test_a_line_like_the_last_but_for_its_nonce(template, nonce):
    check_after(with_nonce(template, "first1"), with_nonce(template, nonce))


@pytest.mark.parametrize("first, then", [
    (KAMAILIO, KAMAILIO.replace('"auth"', '"auth-int"')),
    (KAMAILIO, KAMAILIO.replace("example.com", "example.org")),
    (KAMAILIO, KAMAILIO + ", stale=true"),
    (KAMAILIO + ", stale=true", KAMAILIO + ", stale=false"),
    (KAMAILIO, KAMAILIO.replace("Digest", "DIGEST")),
    (KAMAILIO, KAMAILIO.replace("Digest ", "Basic ")),
    (KAMAILIO, KAMAILIO.replace('nonce="abc123"', "nonce=abc123")),
    (KAMAILIO, KAMAILIO.replace('nonce="abc123"', 'nonce="ab\\c123"')),
    (KAMAILIO, KAMAILIO.replace('"abc123"', '"abc123", nonce="other"')),
    (KAMAILIO, KAMAILIO + ", "),
    (KAMAILIO, KAMAILIO + " "),
    ('Digest nonce="abc", realm="r"', 'Digest nonce="abcdef", realm="r"'),
    ('Digest nonce=abc, realm="r"', 'Digest nonce=abc"def, realm="r"'),
])
def test_near_misses_outside_the_nonce(first, then):
    check_after(response(first), response(then))


def test_the_status_is_part_of_what_is_remembered():
    for first, then in itertools.product((401, 407), repeat=2):
        check_after(response(KAMAILIO, first), response(KAMAILIO.replace("abc123", "n2"), then),
                    status=then, first_status=first)
    # a 401 carrying Proxy-Authenticate is no challenge to read
    wire = new_wire()
    read(wire, response(KAMAILIO, 407), 407)
    assert read(wire, response(KAMAILIO, 407), 401) is None


def test_a_folded_or_second_line_is_never_read_from_memory():
    wire = new_wire()
    first = response(KAMAILIO)
    assert read(wire, first, 401) is not None
    folded = first.replace(b"CSeq: 1 REGISTER\r\n", b"CSeq: 1\r\n REGISTER\r\n")
    assert read(wire, folded, 401) is None and twin(folded, 401) is None
    second = first.replace(b"Content-Length", b"WWW-Authenticate: " + KAMAILIO.encode()
                           + b"\r\nContent-Length")
    assert read(wire, second, 401) is None and twin(second, 401) is None


PARAM_NAMES = st.sampled_from(["realm", "nonce", "NONCE", "opaque", "stale", "algorithm",
                               "qop", "x-y"])
VALUES = st.text(st.sampled_from('abcAZ09+/=-_.;:"\\, \té<>'), max_size=8)


@st.composite
def challenge_lines(draw):
    params = draw(st.lists(st.tuples(PARAM_NAMES, VALUES, st.booleans()), max_size=5))
    params.insert(draw(st.integers(0, len(params))), ("nonce", "@@", draw(st.booleans())))
    separator = draw(st.sampled_from([", ", ",", " , "]))
    body = separator.join(f'{name}="{value}"' if quoted else f"{name}={value}"
                          for name, value, quoted in params)
    return draw(st.sampled_from(["Digest ", "digest  "])) + body


@settings(max_examples=400, deadline=None)
@given(challenge_lines(), VALUES, VALUES, st.sampled_from([401, 407]))
def test_generated_lines_read_alike(template, first_nonce, nonce, status):
    wire = new_wire()
    first = response(template.replace("@@", first_nonce or "n0"), status)
    assert same(read(wire, first, status), twin(first, status))
    then = response(template.replace("@@", nonce), status)
    assert same(read(wire, then, status), twin(then, status))
