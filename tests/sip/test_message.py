"""The message model: URIs, name-addr values, headers, construction, encode, redaction."""

import msgspec
import pytest

from gateway.errors import ParseError
from gateway.sip.message import (
    Headers,
    NameAddr,
    ParseLimits,
    Request,
    Response,
    SipUri,
    redacted,
    reply_fields,
)
from gateway.sip.parser import parse_message


@pytest.mark.parametrize("text", [
    "sip:alice@example.com",
    "sips:alice:s3cret@example.com:5061;transport=tcp;lr?subject=hi&priority=urgent",
    "sip:[2001:db8::1]:5070;maddr=192.0.2.1",
    "sip:example.com;lr",
    "sip:user;par=u%40example.net@example.com",
    "sip:alice@example.com;lr=",
    "tel:+1-201-555-0123;phone-context=example.com",
    "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
])
def test_uri_round_trip(text):
    assert str(SipUri.parse(text)) == text


def test_uri_parts():
    uri = SipUri.parse("SIPS:alice:pw@[::1]:5061;Transport=TLS;lr?Subject=x")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "pw", "[::1]", 5061)
    assert uri.transport == "tls" and uri.has_param("LR") and uri.param("lr") is None
    assert uri.headers == {"Subject": "x"}
    assert uri == SipUri.parse("sips:alice:pw@[::1]:5061;transport=TLS;lr?Subject=x")
    tel = SipUri.parse("tel:+33123;isub=1")
    assert (tel.user, tel.params) == ("+33123", {"isub": "1"})
    built = SipUri("example.com", "bob", port=5080, params={"transport": "tcp"})
    assert str(built) == "sip:bob@example.com:5080;transport=tcp"


@pytest.mark.parametrize("text", [
    "sip:", "sip:alice@", "sip:@example.com", "sip:a b@example.com", "sip:alice@exa mple.com",
    "sip:alice@example.com:99999", "sip:alice@example.com:5x", "sip:[::1", "sip:[zz::1]",
    "1sip:alice@example.com", "sip:alice@example.com;=x", "sip:a@<b>",
])
def test_bad_uris(text):
    with pytest.raises(ParseError):
        SipUri.parse(text)


def test_name_addr_forms():
    quoted = NameAddr.parse('"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=1;x')
    assert quoted.display_name == 'Alice "A"' and quoted.tag == "1"
    assert quoted.params == {"tag": "1", "x": None}
    assert quoted.uri.transport == "tcp"
    assert str(quoted) == '"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=1;x'
    tokens = NameAddr.parse("Alice  Smith<sip:alice@example.com>")
    assert tokens.display_name == "Alice Smith"
    assert str(tokens) == "Alice Smith <sip:alice@example.com>"
    spec = NameAddr.parse("sip:alice@example.com;tag=9")  # addr-spec: ;tag is a header param
    assert spec.uri.params == {} and spec.tag == "9" and spec.display_name is None
    star = NameAddr.parse("*", "Contact", wildcard_ok=True)
    assert star.wildcard and star.uri is None and str(star) == "*"
    built = NameAddr("sip:bob@example.com", "Bob, the builder", {"expires": "60"})
    assert str(built) == '"Bob, the builder" <sip:bob@example.com>;expires=60'
    assert built.expires == 60


@pytest.mark.parametrize("text", [
    '"unterminated <sip:a@b>', "<sip:a@b", "Bell, Alexander <sip:a@b>", "< sip:a@b >",
    "sip:a@b?x=1", "<sip:a@b>;;tag=1", "<sip:a@b>;tag=", "*",
])
def test_bad_name_addrs(text):
    with pytest.raises(ParseError):
        NameAddr.parse(text)


def test_headers_are_ordered_and_case_insensitive():
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-Custom", "1"),
                       ("Via", "SIP/2.0/UDP b"), ("x-custom", "2")])
    assert list(headers) == [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-Custom", "1"),
                             ("Via", "SIP/2.0/UDP b"), ("x-custom", "2")]
    assert headers.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get_all("x-CUSTOM") == ["1", "2"] and "X-CUSTOM" in headers
    headers.set("Via", "SIP/2.0/TCP c")
    assert headers.get_all("Via") == ["SIP/2.0/TCP c"] and list(headers)[0][0] == "Via"
    assert headers.remove("x-custom") == 2 and len(headers) == 1
    headers.add("Allow", "INVITE, ACK,BYE")
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    with pytest.raises(ValueError):
        headers.add("X-Evil", "a\r\nVia: injected")
    with pytest.raises(ValueError):
        headers.add("Bad Name", "x")


def make_register(body: bytes = b"") -> Request:
    return Request("REGISTER", "sip:example.com", headers=[
        ("Via", "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKabc;rport"),
        ("Max-Forwards", "70"),
        ("From", '"Alice" <sip:alice:pw@example.com>;tag=f1'),
        ("To", "<sip:alice@example.com>"),
        ("Call-ID", "reg1@192.0.2.4"),
        ("CSeq", "1 REGISTER"),
        ("Contact", "<sip:alice@192.0.2.4:5060;pn-prid=0123456789abcdef>;expires=600"),
    ], body=body)


def test_construct_encode_and_parse_back():
    req = make_register()
    assert req.call_id == "reg1@192.0.2.4" and req.cseq == (1, "REGISTER")
    assert req.branch == "z9hG4bKabc" and req.from_tag == "f1" and req.to_tag is None
    assert req.content_length == 0 and req.contacts[0].expires == 600
    req.check()
    wire = req.encode()
    assert wire.startswith(b"REGISTER sip:example.com SIP/2.0\r\nVia: ")
    assert wire.endswith(b"Content-Length: 0\r\n\r\n")
    back = parse_message(wire)
    assert list(back.headers) == list(req.headers) + [("Content-Length", "0")]
    fields = [(n, "2 MESSAGE" if n == "CSeq" else v) for n, v in req.headers]
    message = Request("MESSAGE", SipUri("example.com", "bob"), fields, "héllo".encode())
    assert parse_message(message.encode()).body == "héllo".encode()
    assert message.uri_text == "sip:bob@example.com"


def test_changing_headers_drops_parsed_values():
    req = make_register()
    assert req.cseq.number == 1 and len(req.contacts) == 1
    req.headers.set("CSeq", "2 REGISTER")
    req.headers.add("Contact", "*")
    assert req.cseq.number == 2
    with pytest.raises(ParseError, match="Contact"):
        _ = req.contacts  # * mixed with a binding
    req.headers.remove("Contact")
    req.headers.set("Contact", "*")
    assert req.contacts[0].wildcard


def test_response_construction():
    req = make_register()
    resp = Response(200, "OK", headers=[(n, v) for n, v in req.headers
                                         if n in ("Via", "From", "To", "Call-ID", "CSeq")])
    resp.headers.set("To", "<sip:alice@example.com>;tag=t9")
    back = parse_message(resp.encode())
    assert (back.status, back.reason, back.to_tag) == (200, "OK", "t9")


def test_parsed_values_match_between_eager_and_lazy_paths():
    wire = make_register().encode()
    parsed = parse_message(wire)
    rebuilt = Request(parsed.method, parsed.uri_text, list(parsed.headers), parsed.body)
    for name in ("call_id", "cseq", "branch", "from_tag", "to_tag", "content_length"):
        assert getattr(parsed, name) == getattr(rebuilt, name), name


def test_missing_or_duplicated_single_fields():
    req = Request("OPTIONS", "sip:a@b", headers=[("Call-ID", "1"), ("Call-ID", "2")])
    with pytest.raises(ParseError, match="more than one Call-ID"):
        _ = req.call_id
    with pytest.raises(ParseError, match="missing CSeq"):
        _ = req.cseq
    assert req.max_forwards is None and req.expires is None and req.contacts == []
    assert Request("OPTIONS", "sip:a@b", [("Max-Forwards", "256")]).headers.get("max-forwards")
    with pytest.raises(ParseError):
        _ = Request("OPTIONS", "sip:a@b", [("Max-Forwards", "256")]).max_forwards


def test_redacted_hides_credentials_and_tokens():
    req = make_register(body=b"secret text")
    req.headers.add("Authorization", 'Digest username="alice", realm="example.com", '
                    'nonce="abc", uri="sip:example.com", response="0123456789abcdef0123"')
    text = redacted(req)
    assert "0123456789abcdef0123" not in text and 'response="<redacted>"' in text
    assert "alice:pw@" not in text and "sip:alice:<redacted>@example.com" in text
    assert "pn-prid=012345..." in text and "0123456789abcdef>" not in text
    assert "secret text" not in text and "<body: 11 bytes>" in text


def test_parse_limits_is_a_struct():
    limits = msgspec.convert({"max_message_size": 4096}, ParseLimits)
    assert limits == ParseLimits(max_message_size=4096, max_headers=128)


def test_reply_fields_for_answering_a_malformed_request():
    raw = (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nv: SIP/2.0/UDP g\r\n"
           b"f: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n ;x=y\r\ni: c1\r\nCSeq: 99999999999 INVITE\r\n"
           b"Max-Forwards: 70\r\n\r\n")
    with pytest.raises(ParseError) as caught:
        parse_message(raw)
    assert caught.value.reason == "Bad Request (malformed CSeq)"
    assert reply_fields(caught.value.raw) == [
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Via", "SIP/2.0/UDP g"),
        ("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d> ;x=y"), ("Call-ID", "c1"),
        ("CSeq", "99999999999 INVITE")]
    assert reply_fields(raw.replace(b"i: c1\r\n", b"")) is None       # no Call-ID
    assert reply_fields(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n") is None  # never answer a response
    assert reply_fields(None) is None and reply_fields(b"\xff\xfe") is None


def test_limits_and_q_are_checked():
    with pytest.raises(ValueError):
        ParseLimits(max_headers=0)
    with pytest.raises(ValueError):
        ParseLimits(max_message_size=2**40)
    with pytest.raises(ParseError):
        _ = NameAddr.parse("<sip:a@b>;q=nan").q
    assert NameAddr.parse("<sip:a@b>;q=0.7").q == 0.7
