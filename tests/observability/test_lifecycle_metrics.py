"""A scripted lifecycle driven by the real parts end to end, read back through /metrics
with prometheus-client's parser: every counter moved by exactly what happened, and no
label value (nor any /stats field) names anyone.

The stack is `tests/support/testbed.py`: Kamailio with digest auth as the provider, the
APNs emulator, the gateway in this process with its admin listener. The script:
create an instance through the device API -> the gateway's registration client registers
it with Kamailio over TCP (401 challenge, then 200) -> bob (pjsua2, UDP to Kamailio) calls
it -> call push -> bob hangs up -> missed-call push -> bob's MESSAGE is stored, pushed,
fetched and acked through the API -> delete (the client unregisters).

The gateway's side of SIP is all TCP (registrar given with transport=tcp, so its Contact
and the flow Kamailio forwards over are TCP too): no retransmissions, so the SIP counters
are exact. bob's leg is UDP, but that is pjsua2's and Kamailio's traffic, not counted here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from gateway import metrics
from tests.calls.conftest import need_kamailio, register_bob
from tests.support.phone import Phone
from tests.support import testbed as stack  # not `Testbed`: pytest would try to collect it

from .harness import samples

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]

AOR_USER = "alice"
BODY = "see you at eight"


@pytest.fixture
async def testbed(tmp_path):
    need_kamailio()
    bed = stack.Testbed(tmp_path, t1=10.0)
    await bed.start()
    yield bed
    await bed.stop()


@pytest.fixture
async def bob(testbed):
    phone = await Phone.start()
    await register_bob(phone, testbed)
    yield phone
    await phone.stop()


async def admin_page(testbed, path: str):
    """(status, content type, text) of a page of the admin listener (no bearer token set)."""
    async with testbed.session.get(f"http://127.0.0.1:{testbed.config.admin.port}{path}") as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def scrape(testbed) -> dict[tuple, float]:
    """/metrics as {(sample name, ((label, value), ...)): value}, parsed by prometheus-client."""
    status, content_type, text = await admin_page(testbed, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    return samples(text)


async def stats(testbed) -> dict:
    status, _, text = await admin_page(testbed, "/stats")
    assert status == 200
    return json.loads(text)


async def until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def counter_moved(testbed, before: dict, name: str, **labels: str) -> bool:
    key = (name, tuple(sorted(labels.items())))
    return (await scrape(testbed)).get(key, 0.0) > before.get(key, 0.0)


async def test_scripted_lifecycle_moves_each_counter_by_what_happened(testbed, bob):
    gw = testbed.gateway
    before, stats_before = await scrape(testbed), await stats(testbed)
    state = lambda s: ("sippush_instances", (("state", s),))  # noqa: E731

    # --- 1. create, and 2. the registration client registers it (digest, TCP) -----------
    alice = await testbed.create_instance(AOR_USER, transport="tcp", wait=False)
    await testbed.wait_registered(alice)
    registered = await scrape(testbed)
    assert registered[state("registered")] == before[state("registered")] + 1

    # --- 3. bob calls: the gateway answers 180 and pushes to the VoIP token --------------
    await bob.send("call", account="bob", to=f"sip:{AOR_USER}@{testbed.kam.domain}")
    [call] = await testbed.wait_push("call", alice)
    assert call["_token"] == alice["voip"]
    # The relay's second 180 (Push-Notification-Sent) goes out once the gateway has the
    # emulator's answer, counted in invite_to_push just before: wait for it, so that bob's
    # CANCEL cannot overtake it and the count of 1xx sent stays exact.
    async def push_answered():
        return await counter_moved(testbed, before, "sippush_invite_to_push_seconds_count")
    await until(push_answered, "the call push's answer")
    await bob.expect("call_state", account="bob", state="EARLY")

    # --- 4. bob hangs up: CANCEL, 487, missed-call push ---------------------------------
    await bob.send("hangup", account="bob")
    await bob.expect("call_state", account="bob", state="DISCONNECTED")
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "cancelled" and missed["_token"] == alice["alert"]

    # --- 5. a MESSAGE: stored, pushed, fetched and acked through the API ----------------
    await bob.send("message", account="bob", to=f"sip:{AOR_USER}@{testbed.kam.domain}", body=BODY)
    assert (await bob.expect("im_status", account="bob"))["code"] == 200
    [pushed] = await testbed.wait_push("message", alice)
    code, listing = await testbed.api("GET", alice, "/messages")
    assert code == 200 and [m["body"] for m in listing["messages"]] == [BODY]
    code, acked = await testbed.api("POST", alice, "/messages/ack", {"ids": [pushed["message_id"]]})
    assert code == 200 and acked == {"deleted": 1}

    # The relay forgets the call once Kamailio ACKed our 487 (its transaction is done).
    async def call_over():
        return not gw.calls.relays
    await until(call_over, "the call relay to finish")

    # --- 6. delete: the client unregisters (Expires: 0) ---------------------------------
    code, _ = await testbed.api("DELETE", alice)
    assert code == 204

    async def unregistered():
        return await counter_moved(testbed, before, "sippush_register_results_total", outcome="unregistered")
    await until(unregistered, "the unregistration")
    after = await scrape(testbed)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        assert key in after, f"no series {name}{labels}"
        return after[key] - before.get(key, 0.0)


    # --- registration: first REGISTER challenged (401), the retry with digest registered,
    # the Expires: 0 on delete unregistered (the cached nonce is still good: no 401)
    assert moved("sippush_register_sent_total") == 3
    outcomes = {"challenged": 1, "registered": 1, "unregistered": 1}
    for outcome in metrics.REGISTER_OUTCOMES:
        assert moved("sippush_register_results_total", outcome=outcome) == outcomes.get(outcome, 0), outcome
    assert moved("sippush_register_rtt_seconds_count") == 3
    assert 0 < moved("sippush_register_rtt_seconds_sum") < 15

    # --- SIP, all on TCP (no retransmissions): out, the three REGISTERs; in, the INVITE,
    # bob's CANCEL, Kamailio's ACK of our 487 and the MESSAGE.
    requests = {("out", "REGISTER"): 3,
                ("in", "INVITE"): 1, ("in", "CANCEL"): 1, ("in", "ACK"): 1, ("in", "MESSAGE"): 1}
    for direction in metrics.DIRECTIONS:
        for transport in metrics.TRANSPORTS:
            for method in metrics.METHODS:
                want = requests.get((direction, method), 0) if transport == "tcp" else 0
                got = moved("sippush_sip_requests_total", direction=direction, transport=transport, method=method)
                assert got == want, (direction, transport, method, got)
    # in: 401 and 200 to the REGISTERs, 200 to the unregistration. out: 100 Trying,
    # 180 Alerting-Device and 180 Push-Notification-Sent; 200 to the CANCEL and to the
    # MESSAGE; 487 to the INVITE.
    responses = {("in", "2xx"): 2, ("in", "4xx"): 1, ("out", "1xx"): 3, ("out", "2xx"): 2, ("out", "4xx"): 1}
    for direction in metrics.DIRECTIONS:
        for transport in metrics.TRANSPORTS:
            for cls in metrics.STATUS_CLASSES:
                want = responses.get((direction, cls), 0) if transport == "tcp" else 0
                got = moved("sippush_sip_responses_total", direction=direction, transport=transport, status_class=cls)
                assert got == want, (direction, transport, cls, got)
    # Two connections: ours to Kamailio for REGISTER, and Kamailio's to our Contact for
    # the INVITE and the MESSAGE (its config keeps no alias of the registering connection).
    assert moved("sippush_sip_flows_opened_total", transport="tcp") == 2
    assert moved("sippush_sip_flows_open", transport="tcp") == 2
    for transport in metrics.TRANSPORTS:
        assert moved("sippush_sip_keepalive_failures_total", transport=transport) == 0
        assert moved("sippush_sip_parse_errors_total", transport=transport) == 0
    assert sum(moved("sippush_sip_transaction_timeouts_total", side=s, method=m)
               for s in metrics.SIDES for m in metrics.METHODS) == 0

    # --- the call, its pushes and the message ------------------------------------------
    assert moved("sippush_calls_received_total") == 1
    for outcome in metrics.CALL_OUTCOMES:
        assert moved("sippush_calls_total", outcome=outcome) == (outcome == "cancelled"), outcome
    assert moved("sippush_invite_to_push_seconds_count") == 1
    assert 0 < moved("sippush_invite_to_push_seconds_sum") < 10
    delivered = {"call", "missed_call", "message"}  # each to one APNs token
    for provider in metrics.PROVIDERS:
        for kind in metrics.PUSH_KINDS:
            for outcome in metrics.PUSH_OUTCOMES:
                want = int(provider == "apns" and kind in delivered and outcome == "delivered")
                assert moved("sippush_pushes_total", provider=provider, kind=kind, outcome=outcome) == want
        sent = 3 if provider == "apns" else 0
        assert moved("sippush_push_attempts_total", provider=provider) == sent
        assert moved("sippush_push_duration_seconds_count", provider=provider) == sent
        assert moved("sippush_push_retries_total", provider=provider) == 0
        assert moved("sippush_push_alerts_total", provider=provider) == 0
    assert moved("sippush_messages_stored_total") == 1
    assert moved("sippush_messages_fetched_total") == 1
    assert moved("sippush_messages_expired_total") == 0  # acked before the delete

    # create, registering, registered, message stored, message acked, delete
    assert moved("sippush_store_write_duration_seconds_count") == 6
    for state in metrics.STATES:  # created, registered, deleted: back to where it was
        assert moved("sippush_instances", state=state) == 0, state

    # /stats says the same
    stats_after = await stats(testbed)
    change = lambda *path: dig(stats_after, path) - dig(stats_before, path)  # noqa: E731
    assert change("registrations", "sent") == 3
    assert change("registrations", "outcomes", "registered") == 1
    assert change("calls", "received") == 1 and change("calls", "outcomes", "cancelled") == 1
    assert change("pushes", "apns", "delivered") == 3
    assert change("messages", "stored") == 1 and change("messages", "fetched") == 1
    assert stats_after["instances"] == stats_before["instances"]

    # --- privacy: no label value and no /stats field names anyone ---------------------------
    faces = testbed.config.sip
    ports = {testbed.kam.udp_port, testbed.kam.tcp_port, testbed.kam.tls_port, testbed.config.device_api.port,
             testbed.config.admin.port, faces.provider_face.udp_port, faces.provider_face.tcp_port,
             faces.device_face.udp_port, faces.device_face.tcp_port, faces.device_face.tls_port}
    secrets_seen = [alice["id"], alice["secret"], AOR_USER, testbed.kam.domain, testbed.kam.password(AOR_USER),
                    alice["voip"], alice["voip"][:8], alice["alert"], alice["alert"][:8], call["call_id"],
                    pushed["message_id"], stack.BUNDLE, "127.0.0.1", *(str(p) for p in ports if p)]
    address = re.compile(r"\d+\.\d+\.\d+\.\d+|\[?[0-9a-f]*:[0-9a-f:]+\]?|@|sip:", re.IGNORECASE)
    _, _, text = await admin_page(testbed, "/metrics")
    for name, labels in samples(text):
        for label, value in labels:
            assert not any(s in value for s in secrets_seen), (name, label, value)
            assert not address.search(value), (name, label, value)
    _, _, body = await admin_page(testbed, "/stats")
    for field in leaves(json.loads(body)):
        assert not any(s in field for s in secrets_seen), field
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?", field):  # started_at
            assert not address.search(field), field


def dig(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def leaves(tree) -> list[str]:
    """Every key and value of a JSON document, as text."""
    if isinstance(tree, dict):
        return [str(k) for k in tree] + [s for v in tree.values() for s in leaves(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in leaves(v)]
    return [str(tree)]
