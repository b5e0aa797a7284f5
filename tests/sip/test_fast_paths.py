"""The regular-expression fast paths of the field parsers give what the general parsers
give (values, or the same error) on the usual shapes and on random near-misses; and the
transport reads only the top Via."""

from __future__ import annotations

import random

from gateway.errors import ParseError
from gateway.sip import parsing
from gateway.sip.fields import Via
from gateway.sip.grammar import split_list
from gateway.sip.message import Request
from gateway.sip.transaction import server_key
from gateway.sip.transport import stamp_via
from gateway.sip.uri import NameAddr

VIA_PIECES = ["SIP", "sip", "/", "2.0", " ", "\t", "UDP", "tcp", "host", "a.b-c_d", "1.2.3.4",
              "[::1]", "[::]", "[1:2", ":", "5060", "65536", "99999", ";", "branch", "=",
              "z9hG4bK1", "rport", "received", '"q"', ",", "x y", "\u00e9", ";branch="]
NAME_ADDR_PIECES = ['"', '"Al ice"', '"a\\"b"', " ", "\t", "<", ">", "sip:", "sips:", "tel:",
                    "alice", "@", "example.com", ":5060", ";tag=1", ";lr", "x y", "*", ",",
                    "?h=1", "[::1]", "\u00e9", ";", "=", "Bob"]


def _outcome(parse, *args):
    try:
        value = parse(*args)
    except ParseError as exc:
        return ("error", str(exc))
    if isinstance(value, Via):
        return (value.protocol, value.transport, value.host, value.port, value.params)
    return (str(value.uri) if value.uri else None, value.display_name, value.params, value.wildcard)


def _agree(seed, pieces, prefixes, longest, fast, slow):
    """Random texts from `pieces` (some after a valid prefix): `fast` and `slow` agree on
    each; returns how many were accepted."""
    rnd = random.Random(seed)
    accepted = 0
    for _ in range(20000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(1, longest)))
        if rnd.random() < 0.45:
            text = rnd.choice(prefixes) + text
        flag = rnd.random() < 0.3
        outcome = _outcome(fast, text, flag)
        assert outcome == _outcome(slow, text, flag), text
        accepted += outcome[0] != "error"
    return accepted


def test_via_fast_path_agrees_with_the_general_parser():
    accepted = _agree(7, VIA_PIECES, ["SIP/2.0/UDP "], 12,
                      lambda t, _: Via.parse(t), lambda t, _: Via._parse_slowly(t))
    assert accepted > 500  # the walk reaches the accepted shapes, not only errors


def test_name_addr_fast_path_agrees_with_the_general_parser():
    accepted = _agree(11, NAME_ADDR_PIECES, ['"Bob" <sip:bob@h>', "<sip:a@b:5060>", ' "x"\t<sips:q@[::1]>'], 9,
                      lambda t, w: NameAddr.parse(t, "From", wildcard_ok=w),
                      lambda t, w: NameAddr._parse_slowly(t, "From", w))
    assert accepted > 200


def test_split_list_without_quotes_or_brackets_splits_at_every_comma():
    assert split_list(" a , b,,c ", "Via") == ["a", "b", "", "c"]
    assert split_list('"x,y" <a,b>, c', "Contact") == ['"x,y" <a,b>', "c"]


def test_the_transport_reads_the_top_via_only():
    raw = (b"INVITE sip:u@127.0.0.1 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKtop, this is no via\r\n"
           b"Via: ;;;\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:u@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
           b"Content-Length: 0\r\n\r\n")
    request = parsing.parse_message(raw)
    stamp_via(request, ("192.0.2.9", 40000))
    assert request.top_via.received == "192.0.2.9" and request.top_via.rport == 40000
    assert server_key(request) == ("z9hG4bKtop", "10.0.0.1", 5060, "INVITE")
    assert request.headers.fields("Via") == [
        "SIP/2.0/UDP 10.0.0.1:5060;rport=40000;branch=z9hG4bKtop;received=192.0.2.9, "
        "this is no via, ;;;"]


# -- the call push's From / To / Request-URI texts without the URI parser ---------------

ADDR_PIECES = ['"', '"Load"', '""', " ", "\t", "<", ">", "sip:", "sips:", "SIP:", "tel:", "load",
               "a.b", "@", "127.0.0.1", "example.com", "-x", ":", "5061", "05061", "65535",
               "65536", "59999", "0", ";tag=1", ";lr", ";", "=", "?h=1", "%41", "[::1]",
               "\u00e9", ",", "x y", "'()*", ";transport=udp"]


def _texts(message, name):
    try:
        return message.addr_texts(name)
    except ParseError as exc:
        return ("error", str(exc))


def _parsed_texts(message, name):
    try:
        addr = message.from_ if name == "From" else message.to
    except ParseError as exc:
        return ("error", str(exc))
    return addr.display_name, str(addr.uri)


def _user(request, fast):
    try:
        return request.uri_user if fast else request.uri.user
    except ParseError as exc:
        return ("error", str(exc))


def test_addr_texts_and_uri_user_agree_with_the_parsers():
    rnd = random.Random(23)
    accepted = plain = 0
    for _ in range(20000):
        text = "".join(rnd.choice(ADDR_PIECES) for _ in range(rnd.randint(1, 9)))
        if rnd.random() < 0.5:
            text = rnd.choice(['"Load" <sip:load@127.0.0.1:5061>', "<sip:u1@h>", "sips:a@b.c"]) + text
        name = rnd.choice(["From", "To"])
        fresh = lambda: Request("INVITE", text, [(name, text), ("Call-ID", "c")])  # noqa: E731
        fast, slow = fresh(), fresh()
        outcome = _texts(fast, name)
        assert outcome == _parsed_texts(slow, name), text
        assert _user(fresh(), True) == _user(fresh(), False), text
        accepted += outcome[0] != "error"
        plain += outcome[0] != "error" and not fast.headers._cache  # by the match alone
    # the walk reaches the accepted shapes, and the matched ones, not only errors
    assert accepted > 500 and plain > 100


def test_addr_texts_of_the_usual_call():
    invite = Request("INVITE", "sip:gw-1a2b@127.0.0.1:5080;transport=udp",
                     [("From", '"Load" <sip:load@127.0.0.1:5061>;tag=99Load1'),
                      ("To", "<sip:user0001@127.0.0.1:5060>")])
    assert invite.addr_texts("From") == ("Load", "sip:load@127.0.0.1:5061")
    assert invite.addr_texts("To") == (None, "sip:user0001@127.0.0.1:5060")
    assert invite.uri_user == "gw-1a2b"
    assert "from" not in invite.headers._cache and invite._uri is None  # nothing built
    _ = invite.from_  # parsed meanwhile: the parsed value is what it gives
    invite.from_.display_name = "Changed"
    assert invite.addr_texts("From") == ("Changed", "sip:load@127.0.0.1:5061")
