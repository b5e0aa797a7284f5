"""Answers written straight to bytes (`answer_head` + `encode_answer`, what the call
relay and the provider face send) against the general path (`build_response`, To's tag,
fields added, `encode()`): the same bytes for every request of the corpus and for the
odd shapes (compact names, several Vias, a Timestamp, a To tag already there)."""

from pathlib import Path

import pytest

from gateway.sip import parsing, transaction
from gateway.sip.message import Request
from gateway.sip.transaction import answer_head, build_response, encode_answer
from tests.twins import load_both

CORPUS = Path(__file__).parent / "corpus"


def _requests():
    for path in sorted(CORPUS.glob("*/*.sip")):
        try:
            message = parsing.parse_message(path.read_bytes())
        except Exception:  # noqa: BLE001 - the corpus holds refused messages too
            continue
        if isinstance(message, Request) and message.method != "ACK":
            yield pytest.param(message, id=path.stem)
    odd = (
        b"INVITE sip:a@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK-0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-x;received=1.2.3.4\r\n"
        b"f: \"Caf\xc3\xa9\" <sip:bob@example.com>;tag=99\r\nt: <sip:a@example.com>\r\n"
        b"i: odd-1@example.com\r\nCSeq: 7 INVITE\r\nTimestamp: 54.3 0.1\r\n"
        b"Max-Forwards: 70\r\nl: 0\r\n\r\n",
        b"CANCEL sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-2\r\n"
        b"From: <sip:b@h>;tag=1\r\nTo: <sip:a@example.com>;tag=already\r\nCall-ID: c2\r\n"
        b"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    )
    for n, data in enumerate(odd):
        yield pytest.param(parsing.parse_message(data), id=f"odd-{n}")


def _general(request, status, reason, tag, extra) -> bytes:
    response = build_response(request, status, reason)
    if tag is not None and response.to_tag is None:
        response.headers.set("To", f"{request.get('To')};tag={tag}")
    for name, value in extra:
        response.headers.add(name, value)
    return response.encode()


ANSWERS = [
    (100, "Trying", None, [("Server", "sip-push-gateway")]),
    (180, "Ringing", "gw1a2b", [("Contact", "<sip:gw-p@127.0.0.1:5060;transport=udp>"),
                                ("X-Push-Status", "Alerting-Device"), ("Server", "gw")]),
    (487, "Request Terminated", "gw1a2b", [("Server", "gw")]),
    (480, "Temporarily Unavailable", "t", [("x-push-reason", "No-Response-From-Device")]),
    (200, "OK", "gw3", []),
    (405, "Method Not Allowed", "gw3", [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE")]),
]


@pytest.fixture(params=load_both("_answers", "sip.answers"))
def twin(request, monkeypatch):
    """answer_head with each twin of `echo_head`."""
    monkeypatch.setattr(transaction, "echo_head", request.param.echo_head)
    return request.param


@pytest.mark.parametrize("request_", list(_requests()))
@pytest.mark.parametrize("status, reason, tag, extra", ANSWERS)
def test_the_same_bytes_as_the_general_path(twin, request_, status, reason, tag, extra):
    head = answer_head(request_, status, tag)
    assert encode_answer(status, reason, head, extra) == _general(request_, status, reason, tag, extra)


def test_a_field_that_would_inject_another_is_refused():
    request = next(iter(_requests())).values[0]
    head = answer_head(request, 180, "t")
    with pytest.raises(ValueError):
        encode_answer(180, "Ringing", head, [("Warning", "a\r\nVia: injected")])
    with pytest.raises(ValueError):
        encode_answer(180, "Ringing", head, [("Bad Name", "x")])


def test_echo_head_leaves_the_unusual_to_the_general_path(twin):
    fields = [("via", "Via", "SIP/2.0/UDP h;branch=z9hG4bK-1"), ("from", "From", "<sip:b@h>;tag=1"),
              ("to", "To", "<sip:a@h>"), ("call-id", "Call-ID", "c"), ("cseq", "CSeq", "1 INVITE")]
    assert twin.echo_head(fields, "t") == ("Via: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nFrom: <sip:b@h>;tag=1"
                                           "\r\nTo: <sip:a@h>;tag=t\r\nCall-ID: c\r\nCSeq: 1 INVITE")
    assert twin.echo_head(fields + [("cseq", "CSeq", "2 INVITE")], None) is None
    assert twin.echo_head(fields[:-1], None) is None
    assert twin.echo_head(fields[1:], None) is None
