"""`request_key`, both twins: the server transaction key read from a datagram's bytes is
the one `server_key` gives for the parsed request, or None; and the transaction layer
absorbs, from the bytes alone, what only repeats a transaction it holds."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ParseError
from gateway.sip import parsing
from gateway.sip.transaction import TimerSettings, TransactionLayer, server_key
from gateway.timers import TimerWheel
from tests.twins import load_both

from .test_transaction_units import Clock, FakeFlow, User, make_response

TWINS = load_both("_wirekey", "sip.wirekey")
HERE = Path(__file__).parent
FILES = sorted([*HERE.glob("corpus/*/*.sip"), *HERE.glob("torture/*.sip")])


def parsed_key(data: bytes):
    """(server_key, method) from the full parse, or None when it does not parse."""
    try:
        request = parsing.parse_message(data)
        if not hasattr(request, "method"):
            return None
        return server_key(request), request.method
    except ParseError:
        return None


def check(twin, data: bytes):
    found = twin.request_key(data)
    parsed = parsed_key(data)
    if found is not None and parsed is not None:
        assert found == parsed
    return found


def invite(via: bytes, method: bytes = b"INVITE", after: bytes = b"") -> bytes:
    return (method + b" sip:gw123@gw.test SIP/2.0\r\n" + via + b"\r\n" + after
            + b"Max-Forwards: 70\r\nFrom: <sip:a@x.test>;tag=1\r\nTo: <sip:b@x.test>\r\n"
            b"Call-ID: c1\r\nCSeq: 1 " + (b"INVITE" if method == b"ACK" else method)
            + b"\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_corpus_gives_the_parsed_key_or_none(twin, path):
    check(twin, path.read_bytes())


@pytest.mark.parametrize("twin", TWINS)
def test_relayed_invite_from_kamailio_is_keyed(twin):
    data = (HERE / "corpus/captured/kamailio-relayed-invite.sip").read_bytes()
    key, method = check(twin, data)
    assert method == "INVITE" and key[0].startswith("z9hG4bK") and key[3] == "INVITE"


KEYED = [
    (b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKab.1;rport", ("z9hG4bKab.1", "127.0.0.1", 5070)),
    (b"v: SIP/2.0/UDP Proxy.Example.COM;BRANCH=z9hG4bKx", ("z9hG4bKx", "proxy.example.com", None)),
    (b"VIA :  SIP / 2.0 / TCP  h-1.test:1; rport ; branch = z9hG4bKy ;received=1.2.3.4",
     ("z9hG4bKy", "h-1.test", 1)),
    (b"Via: SIP/2.0/UDP [2001:DB8::1]:5060;branch=z9hG4bKv6, SIP/2.0/UDP b.test;branch=z9hG4bKo",
     ("z9hG4bKv6", "[2001:db8::1]", 5060)),
    (b"Via: SIP/2.0/UDP a.test;branch=z9hG4bKfirst;branch=z9hG4bKsecond", ("z9hG4bKfirst", "a.test", None)),
    (b"Via: SIP/2.0/UDP a.test;branch=z9hG4bK\xc3\xa9t\xc3\xa9", ("z9hG4bKét\u00e9", "a.test", None)),
]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("via,expected", KEYED)
def test_usual_shapes_are_keyed(twin, via, expected):
    assert check(twin, invite(via)) == ((*expected, "INVITE"), "INVITE")
    assert check(twin, invite(via, b"ACK")) == ((*expected, "INVITE"), "ACK")
    assert check(twin, invite(via, b"CANCEL")) == ((*expected, "CANCEL"), "CANCEL")


UNKEYED = [
    b"Via: SIP/2.0/UDP a.test;branch=1234",                      # RFC 2543: no magic cookie
    b"Via: SIP/2.0/UDP a.test;branch",                           # a bare flag
    b"Via: SIP/2.0/UDP a.test;rport;branch;branch=z9hG4bKx",     # ... which wins
    b"Via: SIP/2.0/UDP a.test",                                  # no parameters at all
    b"Via: SIP/2.0/UDP a.test:70000;branch=z9hG4bKx",            # a port out of range
    b"Via: SIP/2.0/UDP a.test:;branch=z9hG4bKx",
    b"Via: SIP/2.0/UDP a.test ;branch=z9hG4bKx",                 # the parser's long way
    b'Via: SIP/2.0/UDP a.test;branch=z9hG4bKx;x="q"',            # a quoted string
    b"Via: SIP/2.0/UDP a.test;branch=z9hG4bKx;x=<y>",
    b"Via: SIP/2.0/UDP a.test;branch=z9hG4bKx;=1",
    b"Via: SIP/2.0/UDP a.test;branch=z9hG4bKx junk",
    b"Via: SIP/2.0/UDP a.test;branch=;rport",
    b"Via: SIP/2.0 a.test;branch=z9hG4bKx",
    b"Via: SIP/2.0/UDPa.test;branch=z9hG4bKx",
    b"Via: SIP/2.0/UDP [1];branch=z9hG4bKx",
    b"Via: SIP/2.0/UDP [::1;branch=z9hG4bKx",
    b"Vias: SIP/2.0/UDP a.test;branch=z9hG4bKx",
    b"Via: SIP/2.0/UDP a.test;branch=z9hG4bKx\r\n ;rport",       # folded
]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("via", UNKEYED)
def test_anything_unusual_is_left_to_the_parser(twin, via):
    assert check(twin, invite(via)) is None


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("data", [
    b"", b"INVITE", b"invite sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nTo: <sip:b@x>\r\n\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n",
    b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx",
    b"X" * 40 + b" sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\r\n",
    b"INVITE sip:x SIP/7.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\r\n",
    b"INVITE SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\r\n"[:6] + b"\r\n",
])
def test_not_a_request_with_a_via_line(twin, data):
    assert twin.request_key(data) is None


PIECES = [b"SIP", b"/", b"2.0", b"UDP", b" ", b"\t", b"a.test", b"[::1]", b":", b"5060", b";",
          b"branch", b"=", b"z9hG4bK", b"x1", b"rport", b",", b'"', b"<", b">", b"\r\n ",
          b"BRANCH", b"received", b"1.2.3.4", b"99999", b"\xc3\xa9", b"v", b"Via"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=24), st.sampled_from([b"INVITE", b"ACK", b"BYE"]),
       st.booleans())
def test_twins_agree_with_each_other_and_the_parser(parts, method, compact):
    via = (b"v: " if compact else b"Via: ") + b"SIP/2.0/UDP " + b"".join(parts)
    data = invite(via, method)
    answers = {check(twin, data) for twin in (p.values[0] for p in TWINS)}
    assert len(answers) == 1


# ---- the transaction layer ----------------------------------------------------------------

@pytest.fixture
def layer():
    clock = Clock()
    user = User()
    wheel = TimerWheel(clock=clock, resolution=0.001)
    layer = TransactionLayer(user, wheel, TimerSettings())
    return layer, user, FakeFlow(clock)


VIA = b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcall1;rport"


async def test_absorb_takes_the_ack_of_a_non_2xx_answer_and_retransmissions(layer):
    layer, user, flow = layer
    data = invite(VIA)
    assert layer.absorb(data) is None  # no transaction yet: parsed and delivered
    layer.message_received(parsing.parse_message(data), flow)
    (request, tx), = user.requests
    tx.respond(make_response(request, 180))
    assert layer.absorb(data) == "INVITE"  # a retransmission: the last answer again
    assert flow.lines() == ["SIP/2.0 180 Reason"] * 2
    tx.respond(make_response(request, 487))
    assert tx.state == "completed"
    assert layer.absorb(invite(VIA, b"ACK")) == "ACK"
    assert tx.state == "confirmed" and len(user.requests) == 1 and not user.acks
    assert layer.absorb(invite(VIA.replace(b"call1", b"call2"), b"ACK")) is None


async def test_absorbed_datagrams_reach_the_transaction_through_the_transport():
    from gateway.sip.endpoint import SipEndpoint
    import asyncio
    from gateway.timers import TimerWheel as Wheel

    wheel = Wheel()
    face = SipEndpoint(wheel)
    seen = []
    face.on_request = lambda request, tx: seen.append(tx)
    host, port = await face.listen("udp", "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    got: asyncio.Queue = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.put_nowait(data)

    peer, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    try:
        via = b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKwire1;rport" % peer.get_extra_info("sockname")[1]
        peer.sendto(invite(via), (host, port))
        while not seen:
            await asyncio.sleep(0.01)
        tx = seen[0]
        tx.respond(make_response(tx.request, 487))
        assert (await asyncio.wait_for(got.get(), 2)).startswith(b"SIP/2.0 487")
        peer.sendto(invite(via, b"ACK"), (host, port))
        for _ in range(200):
            if tx.state == "confirmed":
                break
            await asyncio.sleep(0.01)
        assert tx.state == "confirmed" and len(seen) == 1
    finally:
        peer.close()
        await face.close()
