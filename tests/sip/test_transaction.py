"""Transactions on the wire against a real Kamailio, with a UDP relay in between that
loses what the test says and notes when each datagram passed."""

import asyncio

import pytest

from gateway.sip.dns import Target
from gateway.sip.transaction import TimerSettings, build_cancel, build_response
from gateway.sip.transport import TransportSettings
from tests.support.relay import UdpRelay

pytestmark = pytest.mark.kamailio

T1, T2 = 0.1, 0.4


def gaps(entries):
    return [b[0] - a[0] for a, b in zip(entries, entries[1:])]


def drop_first(count, prefix):
    """A relay rule: drop the first `count` datagrams whose first line starts with prefix."""
    left = [count]

    def rule(line):
        if line.startswith(prefix) and left[0] > 0:
            left[0] -= 1
            return True
        return False
    return rule


@pytest.fixture
async def relay(kamailio):
    relay = await UdpRelay(("127.0.0.1", kamailio.udp_port)).start()
    yield relay
    relay.close()


@pytest.fixture
def fast_timers():
    return TimerSettings(t1=T1, t2=T2, t4=0.5, timer_d=1.0, trying_after=-1)


async def test_dropped_responses_make_timer_e_retransmit(make_stack, relay, fast_timers):
    stack = make_stack(timer_settings=fast_timers)
    flow = await stack.transport.connect(Target("127.0.0.1", relay.port, "udp", "kamailio.test"))
    relay.drop_to_client = drop_first(5, "SIP/2.0 200")
    tx = stack.transactions.request(stack.request("OPTIONS", flow, "sip:kamailio.test"), flow)
    response = await asyncio.wait_for(tx.final, 5)
    assert response.status == 200 and tx.retransmissions == 5
    sent = [e for e in relay.to_peer if e[1].startswith("OPTIONS")]
    assert len(sent) == 6
    expected = [T1, 2 * T1, 4 * T1, T2, T2]  # doubling from T1, capped at T2
    # never early (10 ms wheel ticks); late only by what a loaded machine adds
    for got, want in zip(gaps(sent), expected):
        assert want - 0.02 <= got <= want + 0.15, gaps(sent)


async def test_lost_requests_too(make_stack, relay, fast_timers):
    stack = make_stack(timer_settings=fast_timers)
    flow = await stack.transport.connect(Target("127.0.0.1", relay.port, "udp", "kamailio.test"))
    relay.drop_to_peer = drop_first(3, "OPTIONS")
    response = await stack.transactions.send(
        stack.request("OPTIONS", flow, "sip:kamailio.test"), flow)
    assert response.status == 200
    times = sorted(relay.dropped + relay.to_peer)
    assert len(times) == 4, times
    for got, want in zip(gaps(times), [T1, 2 * T1, 4 * T1]):
        assert want - 0.02 <= got <= want + 0.15, gaps(times)


async def test_invite_non_2xx_is_acknowledged(make_stack, relay, fast_timers):
    """Kamailio answers 404 statefully; its tm retransmits the 404 (T1 0.5 s) until our
    transaction's ACK arrives. We lose the first ACK: the 404 comes again, and so does
    the ACK, and then it stays quiet."""
    stack = make_stack(timer_settings=fast_timers)
    flow = await stack.transport.connect(Target("127.0.0.1", relay.port, "udp", "kamailio.test"))
    relay.drop_to_peer = drop_first(1, "ACK")
    tx = stack.transactions.request(
        stack.request("INVITE", flow, "sip:nobody@kamailio.test",
                      extra=[("Contact", f"<sip:gw@127.0.0.1:{flow.local[1]}>")]), flow)
    assert (await asyncio.wait_for(tx.final, 5)).status == 404
    await asyncio.sleep(1.8)
    finals = [e for e in relay.to_client if e[1].startswith("SIP/2.0 404")]
    acks = [e for e in relay.to_peer if e[1].startswith("ACK")]
    assert len(finals) == 2 and len(acks) == 1 and len(relay.dropped) == 1
    assert finals[1][0] - finals[0][0] == pytest.approx(0.5, abs=0.1)  # Kamailio's timer G
    assert tx.state == "terminated"  # timer D (1 s here) has run out


async def register(stack, flow, kamailio, contact_port, user="gw", params=""):
    request = stack.request("REGISTER", flow, f"sip:{kamailio.domain}", extra=[
        ("Contact", f"<sip:{user}@127.0.0.1:{contact_port}{params}>"), ("Expires", "60")])
    # REGISTER's From and To carry the address of record
    request.headers.set("From", f"<sip:{user}@{kamailio.domain}>;tag=reg1")
    request.headers.set("To", f"<sip:{user}@{kamailio.domain}>")
    response = await stack.transactions.send(request, flow)
    assert response.status == 200


async def test_server_transaction_absorbs_kamailio_retransmissions(kamailio, make_stack):
    """Kamailio relays a MESSAGE to our registered contact through a relay and retransmits
    it (its T1 is 0.5 s) while we take 1.2 s to answer: the TU sees it once, and the
    sender gets our 200."""
    device = make_stack()
    _, port = await device.transport.listen("udp", "127.0.0.1")
    relay = await UdpRelay(("127.0.0.1", port)).start()
    try:
        to_kamailio = await device.transport.connect(Target("127.0.0.1", kamailio.udp_port, "udp", "k"))
        await register(device, to_kamailio, kamailio, relay.port, user="dev1")

        def answer_later(request, tx):
            asyncio.get_running_loop().call_later(
                1.2, tx.respond, build_response(request, 200, "OK"))
        device.user.on_request = answer_later

        caller = make_stack()
        flow = await caller.transport.connect(Target("127.0.0.1", kamailio.udp_port, "udp", "k"))
        message = caller.request("MESSAGE", flow, f"sip:dev1@{kamailio.domain}",
                                 extra=[("Content-Type", "text/plain")])
        message.body = b"hello"
        response = await asyncio.wait_for(caller.transactions.send(message, flow), 5)
        assert response.status == 200
        assert len(device.user.requests) == 1
        assert device.user.requests[0][0].body == b"hello"
        assert len([e for e in relay.to_peer if e[1].startswith("MESSAGE")]) >= 2
    finally:
        relay.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cancel_through_kamailio(kamailio, make_stack, transport):
    """An INVITE relayed by Kamailio to our device side, then CANCELled by the caller: the
    CANCEL finds its INVITE transaction, the 487 is ACKed hop by hop."""
    device = make_stack(TransportSettings())
    _, port = await device.transport.listen(transport, "127.0.0.1")
    own = Target("127.0.0.1", kamailio.port(transport), transport, "k")
    to_kamailio = await device.transport.connect(own)
    user = f"dev-{transport}"
    await register(device, to_kamailio, kamailio, port, user=user, params=f";transport={transport}")
    cancelled = asyncio.get_running_loop().create_future()

    def on_request(request, tx):
        if request.method == "INVITE":
            tx.respond(build_response(request, 180, "Ringing"))
        elif request.method == "CANCEL":
            assert tx.cancels is not None and tx.cancels.method == "INVITE"
            tx.respond(build_response(request, 200, "OK"))
            tx.cancels.respond(build_response(tx.cancels.request, 487, "Request Terminated"))
            cancelled.set_result(tx.cancels)
    device.user.on_request = on_request

    caller = make_stack()
    flow = await caller.transport.connect(own)
    ringing = asyncio.get_running_loop().create_future()
    invite = caller.request("INVITE", flow, f"sip:{user}@{kamailio.domain}",
                            extra=[("Contact", f"<sip:caller@127.0.0.1:{flow.local[1]}>")])
    tx = caller.transactions.request(
        invite, flow, on_response=lambda r: r.status == 180 and not ringing.done()
        and ringing.set_result(r))
    await asyncio.wait_for(ringing, 5)
    cancel_response = await caller.transactions.send(build_cancel(invite), flow)
    assert cancel_response.status == 200
    assert (await asyncio.wait_for(tx.final, 5)).status == 487
    invite_tx = await asyncio.wait_for(cancelled, 5)
    # Kamailio ACKs our 487: the INVITE server transaction is confirmed (or done, on TCP)
    for _ in range(100):
        if invite_tx.state in ("confirmed", "terminated"):
            break
        await asyncio.sleep(0.02)
    assert invite_tx.state in ("confirmed", "terminated")
