"""Transaction state machines on an in-memory flow and a hand-driven timer wheel: every
timer's schedule exactly (RFC 3261 17.1 and 17.2, RFC 6026). The real-network tests are
in test_transaction.py (against Kamailio)."""

import asyncio

import pytest

from gateway.errors import ConfigError, ParseError, TransactionTimeout, TransportError
from gateway.sip.message import Request, Response
from gateway.sip.transaction import (TimerSettings, TransactionLayer, build_response, new_branch,
                                     response_like)
from gateway.timers import TimerWheel
from tests.twins import load_both

T1, T2, T4 = 0.5, 4.0, 5.0


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeFlow:
    """A flow that keeps what is sent, with the time it was sent."""

    def __init__(self, clock, reliable=False):
        self.clock = clock
        self.reliable = reliable
        self.sent: list[tuple[float, bytes]] = []
        self.broken = False

    def send(self, data: bytes) -> None:
        if self.broken:
            raise TransportError("broken")
        self.sent.append((self.clock.now, data))

    def lines(self):
        return [data.split(b"\r\n", 1)[0].decode() for _, data in self.sent]

    def times(self):
        return [t for t, _ in self.sent]


class User:
    def __init__(self):
        self.requests, self.acks, self.strays, self.failed = [], [], [], []

    def request_received(self, request, tx):
        self.requests.append((request, tx))

    def ack_received(self, ack, flow):
        self.acks.append(ack)

    def response_received(self, response, flow):
        self.strays.append(response)

    def flow_failed(self, flow, reason):
        self.failed.append(flow)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def wheel(clock):
    return TimerWheel(clock=clock, resolution=0.001)


@pytest.fixture
def user():
    return User()


@pytest.fixture
def layer(user, wheel):
    return TransactionLayer(user, wheel, TimerSettings(t1=T1, t2=T2, t4=T4, timer_d=32.0))


def run_until(clock, wheel, until):
    """Advance time in small steps (timers re-arm from inside callbacks)."""
    while clock.now < until - 1e-9:
        clock.now = round(clock.now + 0.01, 6)
        wheel.advance()


def make_request(method="OPTIONS", branch=None, cseq=1, via_host="gw.test", via_port=5060,
                 extra=()):
    branch = branch or new_branch()
    headers = [("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={branch};rport"),
               ("Max-Forwards", "70"), ("From", "<sip:alice@example.test>;tag=a1"),
               ("To", "<sip:bob@example.test>"), ("Call-ID", f"call-{branch}"),
               ("CSeq", f"{cseq} {method}"), *extra]
    return Request(method, "sip:bob@example.test", headers)


def make_response(request, status, reason="", to_tag="b2", method=None):
    to = request.get("To") + (f";tag={to_tag}" if to_tag and status > 100 else "")
    cseq = request.get("CSeq") if method is None else f"{request.cseq.number} {method}"
    headers = [("Via", v) for v in request.headers.fields("Via")]
    headers += [("From", request.get("From")), ("To", to), ("Call-ID", request.call_id),
                ("CSeq", cseq)]
    return Response(status, reason or "Reason", headers)


def intervals(times):
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


# ---- client non-INVITE ---------------------------------------------------------------

async def test_timer_e_doubles_up_to_t2_then_timer_f_times_out(layer, clock, wheel):
    flow = FakeFlow(clock)
    tx = layer.request(make_request(), flow)
    run_until(clock, wheel, 64 * T1 + 0.1)
    assert intervals(flow.times())[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert max(flow.times()) < 64 * T1
    assert tx.state == "terminated" and not layer.clients
    with pytest.raises(TransactionTimeout):
        await tx.final


async def test_timer_e_is_t2_after_a_provisional(layer, clock, wheel):
    flow = FakeFlow(clock)
    request = make_request()
    seen = []
    tx = layer.request(request, flow, on_response=seen.append)
    run_until(clock, wheel, 0.6)  # one retransmission at T1
    layer.message_received(make_response(request, 100), flow)
    run_until(clock, wheel, 12)
    assert tx.state == "proceeding" and [r.status for r in seen] == [100]
    # timer E already set for 2*T1 fires as planned, then comes back every T2 (17.1.2.2)
    assert intervals(flow.times()) == [0.5, 1.0, 4.0, 4.0]


async def test_final_response_then_timer_k(layer, clock, wheel):
    flow = FakeFlow(clock)
    request = make_request()
    tx = layer.request(request, flow)
    response = make_response(request, 200)
    layer.message_received(response, flow)
    assert (await tx.final) is response and tx.state == "completed"
    layer.message_received(make_response(request, 200), flow)  # retransmission: absorbed
    run_until(clock, wheel, T4 - 0.05)
    assert tx.state == "completed" and len(flow.sent) == 1
    run_until(clock, wheel, T4 + 0.05)
    assert tx.state == "terminated" and not layer.clients
    layer.message_received(make_response(request, 200), flow)  # now a stray
    assert len(layer.user.strays) == 1


async def test_reliable_flow_never_retransmits_and_ends_at_once(layer, clock, wheel):
    flow = FakeFlow(clock, reliable=True)
    request = make_request()
    tx = layer.request(request, flow)
    run_until(clock, wheel, 10)
    assert len(flow.sent) == 1
    layer.message_received(make_response(request, 404), flow)
    assert tx.state == "terminated" and (await tx.final).status == 404


async def test_transport_error_fails_the_transaction(layer, clock):
    flow = FakeFlow(clock)
    flow.broken = True
    tx = layer.request(make_request(), flow)
    with pytest.raises(TransportError):
        await tx.final
    assert not layer.clients


async def test_flow_failure_fails_its_transactions(layer, clock, user):
    flow, other = FakeFlow(clock, reliable=True), FakeFlow(clock, reliable=True)
    tx, tx_other = layer.request(make_request(), flow), layer.request(make_request(), other)
    layer.flow_failed(flow, TransportError("pong missing"))
    with pytest.raises(TransportError):
        await tx.final
    assert tx_other.state == "trying" and user.failed == [flow]


async def test_matching_needs_branch_and_method(layer, clock, user):
    flow = FakeFlow(clock)
    request = make_request()
    tx = layer.request(request, flow)
    layer.message_received(make_response(request, 200, method="CANCEL"), flow)
    assert tx.state == "trying" and len(user.strays) == 1
    with pytest.raises(ValueError):
        layer.request(make_request(branch=request.via[0].branch), flow)


# ---- client INVITE ---------------------------------------------------------------------

async def test_timer_a_doubles_without_cap_and_timer_b(layer, clock, wheel):
    flow = FakeFlow(clock)
    tx = layer.request(make_request("INVITE"), flow)
    run_until(clock, wheel, 64 * T1 + 0.1)
    assert intervals(flow.times()) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    with pytest.raises(TransactionTimeout):
        await tx.final


async def test_non_2xx_gets_an_ack_and_timer_d(layer, clock, wheel):
    flow = FakeFlow(clock)
    request = make_request("INVITE", extra=[("Route", "<sip:proxy.test;lr>")])
    tx = layer.request(request, flow)
    layer.message_received(make_response(request, 180), flow)
    run_until(clock, wheel, 3)
    assert len(flow.sent) == 1  # a provisional stops timer A
    layer.message_received(make_response(request, 486, to_tag="busy"), flow)
    assert (await tx.final).status == 486
    ack = flow.sent[-1][1]
    assert ack.startswith(b"ACK sip:bob@example.test SIP/2.0\r\n")
    assert request.get("Via").encode() in ack and b"CSeq: 1 ACK" in ack
    assert b"tag=busy" in ack and b"Route: <sip:proxy.test;lr>" in ack
    # the 486 again (our ACK was lost): the ACK again, nothing passed up
    layer.message_received(make_response(request, 486, to_tag="busy"), flow)
    assert flow.sent[-1][1] == ack and len(flow.sent) == 3
    run_until(clock, wheel, 3 + 32.1)
    assert tx.state == "terminated"


async def test_2xx_moves_to_accepted_and_passes_retransmissions_up(layer, clock, wheel):
    flow = FakeFlow(clock)
    request = make_request("INVITE")
    seen = []
    tx = layer.request(request, flow, on_response=seen.append)
    layer.message_received(make_response(request, 200), flow)
    layer.message_received(make_response(request, 200), flow)
    assert tx.state == "accepted" and [r.status for r in seen] == [200, 200]
    assert len(flow.sent) == 1  # no ACK from the transaction for a 2xx
    run_until(clock, wheel, 64 * T1 + 0.1)  # timer M
    assert tx.state == "terminated"


# ---- server non-INVITE -------------------------------------------------------------------

async def test_server_non_invite_absorbs_and_repeats(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    request = make_request("OPTIONS")
    layer.message_received(request, flow)
    layer.message_received(make_request("OPTIONS", branch=request.via[0].branch), flow)
    assert len(user.requests) == 1 and not flow.sent  # trying: absorbed, nothing to repeat
    tx = user.requests[0][1]
    tx.respond(make_response(request, 200))
    layer.message_received(make_request("OPTIONS", branch=request.via[0].branch), flow)
    assert flow.lines() == ["SIP/2.0 200 Reason"] * 2 and len(user.requests) == 1
    run_until(clock, wheel, 64 * T1 + 0.1)  # timer J
    assert tx.state == "terminated" and not layer.servers


async def test_server_non_invite_left_unanswered_ends(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    layer.message_received(make_request("MESSAGE"), flow)
    tx = user.requests[0][1]
    failures = []
    tx.on_failure = failures.append
    run_until(clock, wheel, 64 * T1 - 0.1)
    assert tx.state == "trying"
    run_until(clock, wheel, 64 * T1 + 0.1)
    assert tx.state == "terminated" and not layer.servers
    assert isinstance(failures[0], TransactionTimeout)


async def test_same_branch_other_sent_by_is_another_transaction(layer, clock, user):
    flow = FakeFlow(clock)
    request = make_request()
    layer.message_received(request, flow)
    layer.message_received(make_request(branch=request.via[0].branch, via_port=5070), flow)
    assert len(user.requests) == 2


# ---- server INVITE ------------------------------------------------------------------------

async def test_server_invite_trying_then_timer_g_h(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    request = make_request("INVITE")
    layer.message_received(request, flow)
    tx = user.requests[0][1]
    run_until(clock, wheel, 0.25)
    assert flow.lines() == ["SIP/2.0 100 Trying"]  # the TU was silent for 200 ms
    tx.respond(make_response(request, 486))
    failures = []
    tx.on_failure = failures.append
    run_until(clock, wheel, 0.25 + 64 * T1 + 0.1)
    finals = [t for (t, d) in flow.sent if d.startswith(b"SIP/2.0 486")]
    assert intervals(finals) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0][
        :len(finals) - 1] and len(finals) >= 9
    assert tx.state == "terminated" and isinstance(failures[0], TransactionTimeout)


async def test_server_invite_ack_stops_timer_g(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    request = make_request("INVITE")
    layer.message_received(request, flow)
    tx = user.requests[0][1]
    tx.respond(make_response(request, 180))
    layer.message_received(make_request("INVITE", branch=request.via[0].branch), flow)
    assert flow.lines() == ["SIP/2.0 180 Reason"] * 2  # retransmitted INVITE: 180 again
    tx.respond(make_response(request, 603))
    run_until(clock, wheel, 0.6)
    ack = make_request("ACK", branch=request.via[0].branch)
    layer.message_received(ack, flow)
    assert tx.state == "confirmed" and not user.acks
    sent = len(flow.sent)
    run_until(clock, wheel, T4 + 1)  # timer I
    assert len(flow.sent) == sent and tx.state == "terminated"


async def test_server_invite_2xx_accepted_and_acks_go_up(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    request = make_request("INVITE")
    layer.message_received(request, flow)
    tx = user.requests[0][1]
    tx.respond(make_response(request, 200))
    layer.message_received(make_request("INVITE", branch=request.via[0].branch), flow)
    assert tx.state == "accepted" and len(flow.sent) == 1  # absorbed, not answered
    layer.message_received(make_request("ACK"), flow)  # 2xx ACK: its own branch
    assert len(user.acks) == 1
    with pytest.raises(TransportError):
        tx.respond(make_response(request, 500))
    run_until(clock, wheel, 64 * T1 + 0.1)  # timer L
    assert tx.state == "terminated"


async def test_cancel_finds_its_invite(layer, clock, user):
    flow = FakeFlow(clock)
    invite = make_request("INVITE")
    layer.message_received(invite, flow)
    layer.message_received(make_request("CANCEL", branch=invite.via[0].branch), flow)
    layer.message_received(make_request("CANCEL"), flow)
    (_, invite_tx), (cancel, cancel_tx), (_, lone_cancel_tx) = user.requests
    assert cancel.method == "CANCEL" and cancel_tx.cancels is invite_tx
    assert lone_cancel_tx.cancels is None


def test_timer_settings_are_checked():
    with pytest.raises(ConfigError):
        TimerSettings(t1=5, t2=4)
    with pytest.raises(ConfigError):
        TimerSettings(t4=0)


async def test_branches_are_unique():
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000 and all(b.startswith("z9hG4bK") for b in branches)
    await asyncio.sleep(0)


# ---- what a lingering transaction keeps -----------------------------------------------------

def holds_messages(tx) -> bool:
    """Whether the transaction object itself refers to a parsed message (a lingering one
    should keep bytes only, so that the collector has little to walk)."""
    import gc

    return any(isinstance(o, (Request, Response)) for o in gc.get_referents(tx))


async def test_answered_server_transactions_keep_bytes_not_messages(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    options = make_request("OPTIONS")
    layer.message_received(options, flow)
    tx = user.requests[0][1]
    assert holds_messages(tx)  # the TU answers from the request
    tx.respond(make_response(options, 200))
    assert tx.request is None and not holds_messages(tx)
    layer.message_received(make_request("OPTIONS", branch=options.via[0].branch), flow)
    assert flow.lines() == ["SIP/2.0 200 Reason"] * 2  # still absorbed, from the bytes

    invite = make_request("INVITE")
    layer.message_received(invite, flow)
    invite_tx = user.requests[1][1]
    failures = []
    invite_tx.on_failure = failures.append
    invite_tx.respond(make_response(invite, 487))
    assert invite_tx.request is None and not holds_messages(invite_tx)
    layer.message_received(make_request("INVITE", branch=invite.via[0].branch), flow)
    assert flow.lines()[-1] == "SIP/2.0 487 Reason"  # the 487 again, from its bytes
    layer.message_received(make_request("ACK", branch=invite.via[0].branch), flow)
    assert invite_tx.state == "confirmed"
    run_until(clock, wheel, T4 + 0.1)  # timer I
    assert invite_tx.state == "terminated" and not failures
    assert invite_tx.on_failure is None  # a TU holding its transaction makes no lasting cycle


async def test_a_second_answer_after_the_final_one_is_dropped_not_raised(layer, clock, wheel, user):
    """A TU answering twice (a timer and a CANCEL racing) finds only the first answer's
    bytes: the second is logged and dropped, and nothing more is sent."""
    from gateway.calls import _reply
    from gateway.sip.endpoint import SipEndpoint

    flow = FakeFlow(clock)
    layer.message_received(make_request("INVITE"), flow)
    tx = user.requests[0][1]
    _reply(tx, 487, "Request Terminated")
    _reply(tx, 480)
    SipEndpoint(wheel)._answer(tx, 480, "Temporarily Unavailable")
    assert flow.lines() == ["SIP/2.0 487 Request Terminated"]


async def test_timer_h_still_reaches_on_failure_once(layer, clock, wheel, user):
    flow = FakeFlow(clock)
    invite = make_request("INVITE")
    layer.message_received(invite, flow)
    tx = user.requests[0][1]
    failures = []
    tx.on_failure = failures.append
    tx.respond(make_response(invite, 480))
    run_until(clock, wheel, 64 * T1 + 0.1)  # timer H: no ACK
    assert tx.state == "terminated" and len(failures) == 1 and tx.on_failure is None


async def test_completed_client_transactions_keep_bytes_not_messages(layer, clock, wheel):
    flow = FakeFlow(clock)
    options = make_request("OPTIONS")
    seen = []
    tx = layer.request(options, flow, on_response=seen.append)
    layer.message_received(make_response(options, 200), flow)
    assert (await tx.final).status == 200 and len(seen) == 1
    assert tx.request is None and tx.on_response is None and not holds_messages(tx)

    invite = make_request("INVITE")
    tx = layer.request(invite, flow, on_response=seen.append)
    layer.message_received(make_response(invite, 486, to_tag="busy"), flow)
    ack = flow.sent[-1][1]
    assert ack.startswith(b"ACK ") and tx.request is None and not holds_messages(tx)
    layer.message_received(make_response(invite, 486, to_tag="busy"), flow)
    assert flow.sent[-1][1] == ack and len(seen) == 2  # the ACK again, nothing passed up

    invite = make_request("INVITE")
    tx = layer.request(invite, flow, on_response=seen.append)
    layer.message_received(make_response(invite, 200), flow)
    assert tx.state == "accepted" and tx.request is None
    layer.message_received(make_response(invite, 200), flow)
    assert len(seen) == 4  # 2xx retransmissions still go up while accepted
    run_until(clock, wheel, 64 * T1 + 0.1)  # timer M
    assert tx.state == "terminated" and tx.on_response is None


# ---- responses the transactions' users build ------------------------------------------------

@pytest.mark.parametrize("parser", load_both("_sipparse", "sip.parser"))
def test_build_response_copies_the_echoed_fields_as_the_request_has_them(parser):
    wire = (b"INVITE sip:bob@example.test SIP/2.0\r\n"
            b"v: SIP/2.0/UDP p1.test;branch=z9hG4bK1, SIP/2.0/UDP p2.test;branch=z9hG4bK2\r\n"
            b"Subject: first\r\nVIA: SIP/2.0/UDP ua.test;branch=z9hG4bK3\r\n"
            b"f: <sip:alice@example.test>;tag=a1\r\nt: <sip:bob@example.test>\r\n"
            b"i: c1@ua.test\r\nCSeq: 7 INVITE\r\nTimestamp: 54\r\nContent-Length: 0\r\n\r\n")
    request = parser.parse_message(wire)
    assert build_response(request, 100, "Trying").encode() == (
        b"SIP/2.0 100 Trying\r\n"
        b"Via: SIP/2.0/UDP p1.test;branch=z9hG4bK1, SIP/2.0/UDP p2.test;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP ua.test;branch=z9hG4bK3\r\n"
        b"From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\n"
        b"Call-ID: c1@ua.test\r\nCSeq: 7 INVITE\r\nTimestamp: 54\r\nContent-Length: 0\r\n\r\n")
    ringing = build_response(request, 180, "Ringing")
    assert ringing.get("Timestamp") is None and ringing.to_tag is None
    ringing.headers.set("To", "<sip:bob@example.test>;tag=b1")
    final = response_like(ringing, 486, "Busy Here", [("Retry-After", "30")])
    assert final.to_tag == "b1" and final.cseq.number == 7
    assert final.encode().endswith(b"CSeq: 7 INVITE\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n")
    assert ringing.get("Retry-After") is None  # the first answer is not changed
    with pytest.raises(ValueError):
        response_like(ringing, 486, "Busy Here", [("Warning", "a\r\nVia: injected")])


def test_build_response_refuses_a_request_with_two_call_ids():
    twice = make_request("OPTIONS", extra=[("Call-ID", "again")])
    with pytest.raises(ParseError):
        build_response(twice, 200, "OK")  # which one to echo?
