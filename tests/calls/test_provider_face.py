"""The provider face seen by a provider's proxy (the gateway's own SIP stack, sending from
127.0.0.1 like alice's registrar): the X-Push-Status sequence, the INVITE proxied to the
device with both Record-Routes, CANCEL to the device, unknown and foreground instances,
and a MESSAGE from a stranger."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from gateway.registrations import contact_token
from gateway.sip.dns import Target
from gateway.sip.transaction import build_cancel
from tests.support.sipstack import Stack

from .conftest import wake_device

pytestmark = pytest.mark.kamailio


@pytest.fixture
async def proxy_stack():
    stacks = []

    async def make(testbed, local_ip: str = "127.0.0.1"):
        stack = Stack()
        stacks.append(stack)
        await stack.transport.listen("udp", local_ip, 0)
        flow = await stack.transport.connect(Target("127.0.0.1", testbed.provider_udp, "udp", None))
        return stack, flow

    yield make
    for stack in stacks:
        await stack.close()


def invite(stack, flow, instance, method="INVITE", body=b""):
    uri = f"sip:{contact_token(instance['id'])}@127.0.0.1"
    request = stack.request(method, flow, uri, extra=(("Contact", f"<sip:caller@{flow.sent_by[0]}:{flow.sent_by[1]}>"),))
    request.headers.set("From", f'"Carol" <sip:carol@example.org>;tag=c{id(request) & 0xffff:x}')
    request.body = body
    return request


async def wait_for(predicate, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def call_alice(bed, proxy_stack):
    """A gateway with alice's instance, and an INVITE to it from a provider's proxy:
    (testbed, alice, stack, flow, request, client transaction, responses seen)."""
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    stack, flow = await proxy_stack(testbed)
    request = invite(stack, flow, alice)
    responses = []
    tx = stack.transactions.request(request, flow, on_response=responses.append)
    return testbed, alice, stack, flow, request, tx, responses


async def test_progress_statuses_proxying_and_cancel(bed, phones, proxy_stack):
    testbed, alice, stack, flow, request, tx, responses = await call_alice(bed, proxy_stack)

    def statuses():
        return [(r.status, r.get("X-Push-Status")) for r in responses]

    await wait_for(lambda: (180, "Push-Notification-Sent") in statuses())
    assert statuses() == [(100, None), (180, "Alerting-Device"), (180, "Push-Notification-Sent")]
    assert responses[1].to_tag and responses[1].to_tag == responses[2].to_tag

    device = await phones()
    await wake_device(device, testbed, alice, "udp", auto_answer=180)  # the device rings
    await device.expect("incoming_call", account="device")
    await wait_for(lambda: any(r.status == 180 and r.get("X-Push-Status") is None for r in responses))
    assert statuses()[3] == (180, "Device-Making-Progress")
    ringing = responses[4]
    assert ringing.status == 180 and ringing.to_tag != responses[1].to_tag  # the device's own
    assert len(ringing.via) == 1 and ringing.via[0].branch == request.branch  # our Via only
    routes = [str(r.uri) for r in ringing.record_routes]
    face = testbed.config.sip
    assert routes == [f"sip:gw-d@127.0.0.1:{face.device_face.udp_port};transport=udp;lr",
                      f"sip:gw-p@127.0.0.1:{face.provider_face.udp_port};transport=udp;lr"]

    cancel = build_cancel(request)
    cancel.headers.add("Reason", 'SIP;cause=487;text="caller gave up"')
    assert (await stack.transactions.send(cancel, flow)).status == 200
    final = await asyncio.wait_for(tx.final, 5)
    assert final.status == 487
    await device.expect("call_state", account="device", state="DISCONNECTED", code=487)
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "cancelled" and missed["caller_name"] == "Carol"


async def test_a_cancelled_call_is_freed_without_the_collector(bed, proxy_stack):
    """At 500 calls/s the cyclic collector's pauses delayed INVITEs: what a call leaves
    behind must go by reference counting alone, while its transactions still linger."""
    testbed, alice, stack, flow, request, tx, responses = await call_alice(bed, proxy_stack)
    await wait_for(lambda: any(r.get("X-Push-Status") == "Push-Notification-Sent" for r in responses))
    calls = testbed.gateway.calls
    [relay] = calls.relays.values()
    provider_tx = relay.tx
    relay = weakref.ref(relay)
    gc.disable()
    try:
        assert (await stack.transactions.send(build_cancel(request), flow)).status == 200
        assert (await asyncio.wait_for(tx.final, 5)).status == 487
        await testbed.wait_push("missed_call", alice)
        await asyncio.sleep(0.05)  # the missed-call push's task is done with the relay
        assert relay() is None
        # the INVITE's transaction lingers (timer I) with its bytes, not the INVITE
        assert provider_tx.request is None and provider_tx.on_failure is None
    finally:
        gc.enable()


async def test_unknown_token_and_foreground_instance_get_no_push(bed, proxy_stack):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    stack, flow = await proxy_stack(testbed)
    stranger = {"id": "no-such-instance"}
    response = await stack.transactions.send(invite(stack, flow, stranger), flow)
    assert response.status == 404

    code, _ = await testbed.api("PUT", alice, "/mode", {"mode": "foreground"})
    assert code == 200
    await wait_for(lambda: testbed.gateway.calls.by_id[alice["id"]].mode == "foreground")
    response = await stack.transactions.send(invite(stack, flow, alice), flow)
    assert response.status == 480
    response = await stack.transactions.send(invite(stack, flow, alice, "MESSAGE", b"hi"), flow)
    assert response.status == 480
    await asyncio.sleep(0.3)
    assert not testbed.pushes()


async def test_message_from_a_stranger_gets_403(bed, proxy_stack):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    stack, flow = await proxy_stack(testbed, local_ip="127.0.0.2")
    request = invite(stack, flow, alice, "MESSAGE", b"buy now")
    request.headers.add("Content-Type", "text/plain")
    assert (await stack.transactions.send(request, flow)).status == 403
    code, listing = await testbed.api("GET", alice, "/messages")
    assert listing == {"messages": []}
    assert not testbed.pushes()


async def test_max_forwards_zero_is_refused_at_forwarding(bed, phones, proxy_stack):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    stack, flow = await proxy_stack(testbed)
    request = invite(stack, flow, alice)
    request.headers.set("Max-Forwards", "0")
    tx = stack.transactions.request(request, flow)
    await testbed.wait_push("call", alice)
    device = await phones()
    await wake_device(device, testbed, alice, "udp")
    final = await asyncio.wait_for(tx.final, 10)
    assert final.status == 483
    await asyncio.sleep(0.3)
    assert device.find("incoming_call") is None


async def test_large_message_over_tcp_stored_or_413(bed):
    """Bodies past the UDP size arrive whole over TCP: up to the limit they are stored,
    over it they get 413 (not the transport's 513)."""
    testbed = await bed(max_body=200_000)
    alice = await testbed.create_instance("alice")
    stack = Stack()
    try:
        flow = await stack.transport.connect(
            Target("127.0.0.1", testbed.config.sip.provider_face.tcp_port, "tcp", None))
        for size, expected in ((150_000, 200), (250_000, 413)):
            request = invite(stack, flow, alice, "MESSAGE", b"y" * size)
            request.headers.add("Content-Type", "text/plain")
            assert (await stack.transactions.send(request, flow)).status == expected
    finally:
        await stack.close()
    code, listing = await testbed.api("GET", alice, "/messages")
    [stored] = listing["messages"]
    assert len(stored["body"]) == 150_000


async def test_an_early_dialog_update_reaches_the_ringing_device(bed, phones, proxy_stack):
    """Before the answer, a request in the device's early dialog (UPDATE here; PRACK and
    INFO take the same way) is relayed to it, not refused with 481."""
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    stack, flow = await proxy_stack(testbed)
    host, port = flow.sent_by
    offer = (f"v=0\r\no=carol 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
             f"m=audio {port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
    request = invite(stack, flow, alice, body=offer)  # an offer: the device's SDP state exists
    request.headers.add("Content-Type", "application/sdp")
    responses = []
    tx = stack.transactions.request(request, flow, on_response=responses.append)
    await wait_for(lambda: any(r.get("X-Push-Status") == "Push-Notification-Sent" for r in responses))
    device = await phones()
    await wake_device(device, testbed, alice, "udp", auto_answer=180)
    await device.expect("incoming_call", account="device")
    await wait_for(lambda: any(r.status == 180 and r.get("X-Push-Status") is None for r in responses))
    ringing = next(r for r in responses if r.status == 180 and r.get("X-Push-Status") is None)

    # the caller's side of the early dialog: the device's Contact, our routes in reverse
    target = str(ringing.contacts[0].uri)
    routes = [f"<{r.uri}>" for r in reversed(ringing.record_routes)]
    update = stack.request("UPDATE", flow, target, cseq=2,
                           extra=[("Route", route) for route in routes])
    for name in ("From", "To", "Call-ID"):
        update.headers.set(name, (request if name != "To" else ringing).get(name))
    answer = await stack.transactions.send(update, flow)
    assert answer.status == 200  # the device's answer, relayed back

    cancel = build_cancel(request)
    assert (await stack.transactions.send(cancel, flow)).status == 200
    assert (await asyncio.wait_for(tx.final, 5)).status == 487
    await device.expect("call_state", account="device", state="DISCONNECTED", code=487)
    assert not testbed.gateway.calls.dialogs.table  # the early dialog ended with the call
