"""The stateful proxy's rules on messages (gateway.sip.proxy), on parsed messages from both
parser twins: Via on top, Max-Forwards, loose and strict routing, Record-Route, retargeting,
and the response's Via removed."""

from __future__ import annotations

import pytest

from gateway.sip.proxy import TooManyHops, forward, next_hop, strip_via
from gateway.sip.relay import Faces
from tests.twins import load_both

PARSERS = load_both("_sipparse", "sip.parser")

INVITE = (
    "INVITE sip:gw1@192.0.2.10:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKabc;received=198.51.100.1\r\n"
    "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKdef\r\n"
    "Max-Forwards: 69\r\n"
    "{routes}"
    "Record-Route: <sip:proxy.example.org;lr>\r\n"
    "From: <sip:bob@example.org>;tag=1\r\n"
    "To: <sip:alice@example.org>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:bob@10.0.0.5>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
)


def parse(parser, routes: str = "", uri: str | None = None):
    text = INVITE.format(routes=routes)
    if uri:
        text = text.replace("sip:gw1@192.0.2.10:5060", uri, 1)
    return parser.parse_message(text.encode())


@pytest.mark.parametrize("parser", PARSERS)
def test_forward_to_the_device(parser):
    request = parse(parser, routes="Route: <sip:gw-p@192.0.2.10:5060;lr>\r\n")
    out = forward(request, via="SIP/2.0/TLS 192.0.2.10:5071;rport", ours=Faces.ours,
                  record_route=["<sip:gw-d@192.0.2.10:5071;transport=tls;lr>",
                                "<sip:gw-p@192.0.2.10:5060;transport=udp;lr>"],
                  uri="sip:inst@203.0.113.7:40000;transport=tls", branch="z9hG4bKnew")
    again = parser.parse_message(out.encode())
    assert again.uri_text == "sip:inst@203.0.113.7:40000;transport=tls"
    assert [v.branch for v in again.via] == ["z9hG4bKnew", "z9hG4bKabc", "z9hG4bKdef"]
    assert again.via[1].received == "198.51.100.1"
    assert again.max_forwards == 68
    assert [str(r.uri) for r in again.record_routes] == [
        "sip:gw-d@192.0.2.10:5071;transport=tls;lr", "sip:gw-p@192.0.2.10:5060;transport=udp;lr",
        "sip:proxy.example.org;lr"]
    assert again.routes == []  # our own Route entry was consumed
    assert again.body == b"v=0\n" and again.content_type == "application/sdp"
    assert again.get("Contact") == "<sip:bob@10.0.0.5>"


@pytest.mark.parametrize("parser", PARSERS)
def test_in_dialog_request_pops_both_of_our_routes_and_keeps_the_rest(parser):
    routes = ("Route: <sip:gw-p@192.0.2.10:5060;transport=udp;lr>, "
              "<sip:gw-d@192.0.2.10:5071;transport=tls;lr>\r\n"
              "Route: <sip:edge.example.org;lr>\r\n")
    request = parse(parser, routes=routes, uri="sip:bob@10.0.0.5")
    out = forward(request, via="SIP/2.0/UDP 192.0.2.10:5060", ours=Faces.ours)
    assert [str(r.uri) for r in out.routes] == ["sip:edge.example.org;lr"]
    assert str(next_hop(out)) == "sip:edge.example.org;lr"
    out = forward(parse(parser, uri="sip:bob@10.0.0.5"), via="SIP/2.0/UDP 192.0.2.10:5060",
                  ours=Faces.ours)
    assert str(next_hop(out)) == "sip:bob@10.0.0.5"  # no Route: the Request-URI


@pytest.mark.parametrize("parser", PARSERS)
def test_strict_router_before_us(parser):
    """A strict router put our URI in the Request-URI and the target in the last Route."""
    routes = "Route: <sip:next.example.org>, <sip:bob@10.0.0.5>\r\n"
    request = parse(parser, routes=routes, uri="sip:gw-p@192.0.2.10:5060")
    out = forward(request, via="SIP/2.0/UDP 192.0.2.10:5060", ours=Faces.ours)
    assert out.uri_text == "sip:bob@10.0.0.5"
    assert [str(r.uri) for r in out.routes] == ["sip:next.example.org"]


@pytest.mark.parametrize("parser", PARSERS)
def test_max_forwards_zero(parser):
    request = parse(parser)
    request.headers.set("Max-Forwards", "0")
    with pytest.raises(TooManyHops) as caught:
        forward(request, via="SIP/2.0/UDP 192.0.2.10:5060", ours=Faces.ours)
    assert caught.value.status == 483


@pytest.mark.parametrize("parser", PARSERS)
def test_strip_via_leaves_the_rest(parser):
    response = parser.parse_message(
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/TLS 192.0.2.10:5071;branch=z9hG4bKnew, SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKabc\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKdef\r\n"
        b"Record-Route: <sip:gw-d@192.0.2.10:5071;lr>\r\n"
        b"From: <sip:bob@example.org>;tag=1\r\nTo: <sip:alice@example.org>;tag=dev\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    up = parser.parse_message(strip_via(response).encode())
    assert [v.branch for v in up.via] == ["z9hG4bKabc", "z9hG4bKdef"]
    assert up.to_tag == "dev" and up.get("Record-Route") == "<sip:gw-d@192.0.2.10:5071;lr>"
