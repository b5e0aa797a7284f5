"""Both parser twins: datagrams, streams, limits and errors."""

import os

import pytest

from gateway.errors import ParseError
from gateway.sip import parsing
from gateway.sip.message import (
    KEEPALIVE_PING,
    KEEPALIVE_PONG,
    ParseLimits,
    Request,
    Response,
)

CRLF = "\r\n"


def sip(*lines: str, body: str = "") -> bytes:
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()


REGISTER = sip(
    "REGISTER sip:registrar.example.com SIP/2.0",
    "Via: SIP/2.0/TCP 192.0.2.4:5061;branch=z9hG4bKnashd92;rport",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@example.com>",
    'From: "Bob Smith" <sip:bob@example.com>;tag=456248',
    "Call-ID: 843817637684230@998sdasdh09",
    "CSeq: 1826 REGISTER",
    "Contact: <sip:bob@192.0.2.4;transport=tcp>;expires=7200",
    "Content-Length: 0",
)

OK_REGISTER = sip(
    "SIP/2.0 200 OK",
    "v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK1;received=198.51.100.7;rport=40000",
    "f: <sip:bob@example.com>;tag=a1",
    "t: <sip:bob@example.com>;tag=b2",
    "i: c3@host",
    "CSeq: 2 REGISTER",
    'm: "Desk, 1" <sip:bob@192.0.2.4;transport=udp>;expires=60, '
    "<sip:bob@[2001:db8::1]:5070>;expires=3600;q=0.5",
    "m: sip:bob@192.0.2.9;expires=10",
    "l: 0",
)


def test_the_chooser_uses_the_compiled_twin_when_built():
    expected = "python" if os.environ.get("GATEWAY_NO_EXTENSIONS") == "1" else "cython"
    assert parsing.IMPLEMENTATION == expected
    assert parsing.parse_message(REGISTER).call_id == "843817637684230@998sdasdh09"


def test_request_fields(twin):
    msg = twin.parse_message(REGISTER)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri_text, str(msg.uri)) == (
        "REGISTER", "sip:registrar.example.com", "sip:registrar.example.com")
    assert msg.call_id == "843817637684230@998sdasdh09"
    assert msg.cseq == (1826, "REGISTER") and msg.cseq.number == 1826
    assert msg.branch == "z9hG4bKnashd92"
    assert msg.from_tag == "456248" and msg.to_tag is None
    assert msg.from_.display_name == "Bob Smith" and msg.to.display_name == "Bob"
    assert msg.max_forwards == 70 and msg.content_length == 0 and msg.body == b""
    (via,) = msg.via
    assert (via.transport, via.host, via.port, via.has_rport, via.rport) == (
        "TCP", "192.0.2.4", 5061, True, None)
    (contact,) = msg.contacts
    assert contact.expires == 7200 and contact.uri.transport == "tcp"


def test_response_compact_forms_and_contact_lists(twin):
    msg = twin.parse_message(OK_REGISTER)
    assert isinstance(msg, Response) and (msg.status, msg.reason) == (200, "OK")
    top = msg.top_via
    assert (top.host, top.port, top.received, top.rport) == (
        "192.0.2.4", None, "198.51.100.7", 40000)
    assert [name for name, _ in msg.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Contact", "Content-Length"]
    assert msg.via[0].received == "198.51.100.7" and msg.via[0].rport == 40000
    assert msg.get("CALL-ID") == msg.get("i") == "c3@host"
    contacts = msg.contacts
    assert [str(c.uri) for c in contacts] == [
        "sip:bob@192.0.2.4;transport=udp", "sip:bob@[2001:db8::1]:5070", "sip:bob@192.0.2.9"]
    assert contacts[0].display_name == "Desk, 1"
    assert [c.expires for c in contacts] == [60, 3600, 10]
    assert contacts[1].q == 0.5 and contacts[1].uri.host == "[2001:db8::1]"
    assert len(msg.get_all("m")) == 3


def test_folded_headers_and_whitespace(twin):
    msg = twin.parse_message(sip(
        "OPTIONS sip:a@example.com SIP/2.0",
        "Via  :  SIP / 2.0 / UDP",
        "\t host.example.com ; branch = z9hG4bKx",
        "From: <sip:b@example.com>",
        "  ;tag=1",
        "To: sip:a@example.com",
        "Call-ID: x",
        "CSeq: 1",
        " OPTIONS",
        "Subject:",
        "l: 0",
    ))
    assert msg.get("Via") == "SIP / 2.0 / UDP host.example.com ; branch = z9hG4bKx"
    assert msg.branch == "z9hG4bKx" and msg.via[0].host == "host.example.com"
    assert msg.from_tag == "1" and msg.cseq == (1, "OPTIONS")
    assert msg.get("subject") == ""


def test_challenges(twin):
    msg = twin.parse_message(sip(
        "SIP/2.0 407 Proxy Authentication Required",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK2",
        "From: <sip:a@x>;tag=1", "To: <sip:a@x>;tag=2", "Call-ID: c", "CSeq: 5 INVITE",
        'Proxy-Authenticate: Digest realm="x, y", nonce="n1", qop="auth,auth-int", '
        'algorithm=SHA-256, Digest realm="x", nonce="n2", algorithm=MD5',
        "WWW-Authenticate: Digest realm=\"r\",\r\n stale=TRUE , nonce=\"a\\\"b\"",
        "Content-Length: 0",
    ))
    first, second = msg.proxy_authenticate
    assert first.scheme == "Digest" and first.params == {
        "realm": "x, y", "nonce": "n1", "qop": "auth,auth-int", "algorithm": "SHA-256"}
    assert second.params["nonce"] == "n2"
    (www,) = msg.www_authenticate
    assert www.realm == "r" and www.params["stale"] == "TRUE" and www.params["nonce"] == 'a"b'


def test_datagram_body_and_content_length(twin):
    base = ["MESSAGE sip:a@x SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK3",
            "From: <sip:b@x>;tag=1", "To: <sip:a@x>", "Call-ID: c", "CSeq: 1 MESSAGE"]
    assert twin.parse_message(sip(*base, body="hello")).body == b"hello"
    assert twin.parse_message(sip(*base, "Content-Length: 3", body="hello")).body == b"hel"
    with pytest.raises(ParseError, match="larger than the message"):
        twin.parse_message(sip(*base, "Content-Length: 6", body="hello"))


def test_leading_crlf_and_keepalive_datagrams(twin):
    assert twin.parse_message(b"\r\n\r\n" + REGISTER).method == "REGISTER"
    assert twin.parse_message(b"\r\n\r\n") is KEEPALIVE_PING
    assert twin.parse_message(b"\r\n") is KEEPALIVE_PONG
    assert twin.parse_message(bytearray(REGISTER)).method == "REGISTER"
    assert twin.parse_message(memoryview(REGISTER)).method == "REGISTER"


def test_limits(twin):
    with pytest.raises(ParseError) as caught:
        twin.parse_message(REGISTER, ParseLimits(max_message_size=100))
    assert (caught.value.status, caught.value.reason) == (513, "Message Too Large")
    with pytest.raises(ParseError) as caught:
        twin.parse_message(REGISTER, ParseLimits(max_headers=7))
    assert caught.value.status == 513
    assert twin.parse_message(REGISTER, ParseLimits(max_headers=8)).call_id
    many = REGISTER.replace(b"Content-Length: 0", b"X-A: 1\r\n" * 200 + b"Content-Length: 0")
    with pytest.raises(ParseError):
        twin.parse_message(many)  # 208 fields, the default allows 128
    assert len(twin.parse_message(many, ParseLimits(max_headers=300)).headers) == 208


BAD = {
    b"": "empty message",
    b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n": "no end of header section",
    b"SIP/2.0 200\r\n\r\n": "missing Call-ID",
    b"SIP/2.0 20 OK\r\n\r\n": "malformed status code",
    b"SIP/2.0 700 OK\r\n\r\n": "malformed status code",
    b"SIP/2.0 200OK\r\n\r\n": "malformed status code",
    b"SIP/2.0\r\n\r\n": "malformed status line",
    b"SIP/3.0 200 OK\r\n\r\n": "Version Not Supported",
    b"INVITE sip:a@b SIP/2.0 \r\n\r\n": "malformed request line",
    b"INVITE sip:a@b\r\n\r\n": "malformed request line",
    b"IN(VITE sip:a@b SIP/2.0\r\n\r\n": "malformed method",
    b"INVITE 1sip:a@b SIP/2.0\r\n\r\n": "malformed Request-URI",
    b"INVITE sip:a\xc3\xa9@b SIP/2.0\r\n\r\n": "malformed Request-URI",
    b"INVITE sip:a@b HTTP/1.1\r\n\r\n": "malformed request line",
    b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n": "malformed header line",
    b"INVITE sip:a@b SIP/2.0\r\n Via: x\r\n\r\n": "malformed header line",
    b"INVITE sip:a@b SIP/2.0\r\nV ia: x\r\n\r\n": "malformed header name",
    b"INVITE sip:a@b SIP/2.0\r\n: x\r\n\r\n": "malformed header name",
    b"INVITE sip:a@b SIP/2.0\rVia: x\r\n\r\n": "bare CR or LF in start line",
    b"INVITE sip:a@b SIP/2.0\r\nVia: x\ny: z\r\n\r\n": "bare CR or LF in header",
    b"INVITE sip:a@b SIP/2.0\r\nCall-ID: a b\r\n\r\n": "malformed Call-ID",
    b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1\r\n\r\n": "malformed CSeq",
    b"INVITE sip:a@b SIP/2.0\r\nCSeq: 2147483648 INVITE\r\n\r\n": "CSeq number too large",
    b"INVITE sip:a@b SIP/2.0\r\nFrom: <sip:a@b\r\n\r\n": "unterminated <> in From",
    b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>;tag\"\r\n\r\n": "malformed To",
    b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>;tag=1, <sip:c@d>\r\n\r\n": "malformed To",
    b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=\r\n\r\n": "malformed Via parameter",
    b"INVITE sip:a@b SIP/2.0\r\nl: 1x\r\n\r\n": "malformed Content-Length",
}


@pytest.mark.parametrize("data", list(BAD), ids=lambda d: d[:40].decode("latin-1"))
def test_malformed_messages(twin, data):
    with pytest.raises(ParseError) as caught:
        twin.parse_message(data)
    assert BAD[data] in caught.value.reason
    assert caught.value.status in (400, 505)
    assert caught.value.raw == data


def test_the_first_missing_field_is_named(twin):
    for missing in ("Call-ID", "CSeq", "From", "To", "Via"):
        lines = [line for line in REGISTER.decode().split(CRLF)
                 if not line.startswith(missing + ":")]
        with pytest.raises(ParseError) as caught:
            twin.parse_message(CRLF.join(lines).encode())
        assert caught.value.reason == f"Bad Request (missing {missing})"


# -- streams ---------------------------------------------------------------------------
INVITE = sip(
    "INVITE sip:alice@example.com SIP/2.0",
    "Via: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bKinv",
    "From: <sip:bob@example.com>;tag=9", "To: <sip:alice@example.com>",
    "Call-ID: inv@192.0.2.1", "CSeq: 1 INVITE", "Content-Type: application/sdp",
    "Content-Length: 10", body="v=0\r\ns=-\r\n")


def test_stream_several_messages_in_one_read(twin):
    parser = twin.StreamParser()
    items = parser.feed(REGISTER + INVITE + b"\r\n\r\n" + REGISTER)
    assert [getattr(i, "method", i) for i in items] == [
        "REGISTER", "INVITE", KEEPALIVE_PING, "REGISTER"]
    assert items[1].body == b"v=0\r\ns=-\r\n"
    assert parser.buffered == 0


def test_stream_byte_by_byte(twin):
    parser = twin.StreamParser()
    stream = REGISTER + INVITE + REGISTER
    items = []
    for i in range(len(stream)):
        items += parser.feed(stream[i : i + 1])
    assert [i.method for i in items] == ["REGISTER", "INVITE", "REGISTER"]
    assert items[1].body == b"v=0\r\ns=-\r\n"


def test_stream_body_across_reads(twin):
    parser = twin.StreamParser()
    head, body = INVITE[:-5], INVITE[-5:]
    assert parser.feed(head) == []
    assert parser.buffered == len(head)
    (msg,) = parser.feed(body + REGISTER[:10])
    assert msg.body == b"v=0\r\ns=-\r\n" and msg.content_length == 10
    assert parser.buffered == 10


def test_stream_keepalives(twin):
    parser = twin.StreamParser()
    assert parser.feed(b"\r\n\r\n") == [KEEPALIVE_PING]
    assert parser.feed(b"\r\n") == [KEEPALIVE_PONG]          # a lone CRLF: pong at once
    assert parser.feed(b"\r\n") == [KEEPALIVE_PING]          # ... or a ping split in two
    assert parser.feed(b"\r") == []                           # CR alone waits for its LF
    assert parser.feed(b"\n\r\n\r") == [KEEPALIVE_PING]      # CR LF CR waits as well
    assert parser.buffered == 1
    items = parser.feed(b"\n" + REGISTER + b"\r\n")
    assert items[0] is KEEPALIVE_PONG and items[1].method == "REGISTER"
    assert items[2:] == [KEEPALIVE_PONG]
    assert parser.feed(b"\r\n\r\n\r\n") == [KEEPALIVE_PING, KEEPALIVE_PING]


def test_stream_requires_content_length(twin):
    parser = twin.StreamParser()
    no_length = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(ParseError, match="missing Content-Length") as caught:
        parser.feed(no_length)
    assert caught.value.raw == no_length
    assert parser.failed
    with pytest.raises(ParseError):
        parser.feed(REGISTER)


def test_stream_returns_good_messages_before_the_error(twin):
    parser = twin.StreamParser()
    items = parser.feed(REGISTER + b"GARBAGE\r\n\r\n")
    assert [i.method for i in items] == ["REGISTER"]
    assert parser.failed
    with pytest.raises(ParseError, match="malformed request line"):
        parser.feed(b"")


def test_stream_limits(twin):
    parser = twin.StreamParser(ParseLimits(max_message_size=200))
    with pytest.raises(ParseError) as caught:
        parser.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 40)
    assert caught.value.status == 513
    parser = twin.StreamParser(ParseLimits(max_message_size=400))
    with pytest.raises(ParseError) as caught:
        parser.feed(REGISTER.replace(b"Content-Length: 0", b"Content-Length: 100000"))
    assert caught.value.status == 513
    with pytest.raises(ParseError):
        parser.feed(b"\r\x00")


def test_stream_bare_cr_between_messages(twin):
    with pytest.raises(ParseError, match="bare CR"):
        twin.StreamParser().feed(b"\rX")
