"""A scripted lifecycle -- create, register, call, cancel, message, delete -- against the
real gateway, read back through /metrics with prometheus-client's parser: every counter
moved by exactly what happened, and no label value names anyone.

What is real and what is not (yet):
- create and delete: the device API of the running `Gateway`, its store and lifecycle
  (instances by state, store write latency);
- register, call, cancel, message: real SIP over TCP through a real Kamailio, sent and
  received by the gateway's SIP core (transport, flows, transactions), which count what
  they carry;
- the call, missed-call and message pushes: the gateway's own PushService, over HTTP/2
  to the APNs emulator (token auth), which records them.
The registration client, the call relay and message storage are not in this branch yet:
the test plays their part and makes the metric calls they will make
(`registration_sent/result`, `call_received/ended`, `invite_to_push`,
`message_stored/fetched`), and moves the instance's state through the real lifecycle
(`InstanceService.set_state`) as the registration client will. Once those parts land,
replace each `# stands in for` block by the real part and keep the expectations.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import trustme

from gateway import metrics
from gateway.push.payloads import CallPush, MessagePush, MissedCallPush
from gateway.sip.dns import Target
from gateway.sip.transaction import build_cancel, build_response
from tests.push.conftest import write_ec_key
from tests.support.apns_emulator import ApnsEmulator

from .harness import ADMIN_TOKEN, APP_KEY, delta, make_config, samples, start, stop

pytestmark = pytest.mark.kamailio

AOR_USER = "alice-observed"
VOIP_TOKEN = "f00dfeed" * 8
OTHER_TOKEN = "0ddba11c" * 8
PASSWORD = "pw-observed-9876543210"
BUNDLE, TEAM, KEY_ID = "net.example.observed", "TEAMOBS123", "KEYOBS1234"


def create_body(domain: str, contact_port: int) -> dict:
    return {
        "app_id": "demo",
        "device_id": "phone-observed",
        "account": {
            "aor": f"sip:{AOR_USER}@{domain}",
            "auth_username": AOR_USER,
            "password": PASSWORD,
            "registrar": f"sip:{domain};transport=tcp",
        },
        "push": [
            {"provider": "apns", "usage": "call", "token": VOIP_TOKEN, "environment": "sandbox"},
            {"provider": "apns", "usage": "other", "token": OTHER_TOKEN, "environment": "sandbox"},
        ],
    }


@pytest.fixture
async def running(tmp_path):
    """The gateway with its push service pointed at an APNs emulator (token auth)."""
    ca = trustme.CA()
    ca_file = tmp_path / "push-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    public_key = write_ec_key(tmp_path / "AuthKey.p8")
    apns = ApnsEmulator(ca, environment="sandbox", keys={KEY_ID: (TEAM, public_key)})
    await apns.start()
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    apns.register(OTHER_TOKEN, BUNDLE)
    section = (f'[apps.apns]\ntopic = "{BUNDLE}"\nteam_id = "{TEAM}"\nkey_id = "{KEY_ID}"\n'
               f'key_file = "{tmp_path / "AuthKey.p8"}"\nproduction_url = "{apns.url}"\nsandbox_url = "{apns.url}"')
    gw = await start(make_config(tmp_path, apns=section, push=f'[push]\ntls_ca_file = "{ca_file}"'))
    gw.apns = apns
    yield gw
    await stop(gw)
    await apns.stop()


async def until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_scripted_lifecycle_moves_each_counter_by_what_happened(running, kamailio, make_stack):
    gw = running.gateway
    before = await running.scrape()

    # The gateway's SIP side (provider face) and a caller, both on TCP through Kamailio.
    sip = make_stack()
    _, contact_port = await sip.transport.listen("tcp", "127.0.0.1")
    target = Target("127.0.0.1", kamailio.tcp_port, "tcp", kamailio.domain)

    # --- 1. create (real) --------------------------------------------------------------
    resp = await running.api.post("/v1/instances", json=create_body(kamailio.domain, contact_port),
                                  headers={"Authorization": f"Bearer {APP_KEY}"})
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    instance_id, secret = created["id"], created["secret"]
    mid = await running.scrape()
    assert mid[("sippush_instances", (("state", "idle"),))] == before[("sippush_instances", (("state", "idle"),))] + 1

    # --- 2. register (real SIP; stands in for the registration client) ------------------
    await gw.instances.set_state(instance_id, "registering")
    flow = await sip.transport.connect(target)
    register = sip.request("REGISTER", flow, f"sip:{kamailio.domain}", extra=[
        ("Contact", f"<sip:{AOR_USER}@127.0.0.1:{contact_port};transport=tcp>"), ("Expires", "60")])
    register.headers.set("From", f"<sip:{AOR_USER}@{kamailio.domain}>;tag=reg1")
    register.headers.set("To", f"<sip:{AOR_USER}@{kamailio.domain}>")
    metrics.registration_sent()
    sent_at = time.perf_counter()
    response = await asyncio.wait_for(sip.transactions.send(register, flow), 5)
    assert response.status == 200
    metrics.registration_result("registered", time.perf_counter() - sent_at)
    await gw.instances.set_state(instance_id, "registered", registered_until=time.time() + 60)
    options = await asyncio.wait_for(
        sip.transactions.send(sip.request("OPTIONS", flow, f"sip:{kamailio.domain}"), flow), 5)
    assert options.status == 200

    # --- 3. call and 4. cancel (real SIP, real pushes; stands in for the call relay) -----
    cancelled = asyncio.get_running_loop().create_future()
    stored = []
    pushes = []  # the push tasks, awaited before the scrape

    async def push(payload, received_at=None):
        record = await gw.instances.get(instance_id)
        deliveries = await gw.push.notify(record, payload)  # the real PushService
        assert [d.result.outcome for d in deliveries] == ["delivered"]
        if received_at is not None:
            metrics.invite_to_push(time.perf_counter() - received_at)

    def provider_side(request, tx):
        # stands in for the call relay and message storage; the pushes are real
        call = {"instance": instance_id, "call_id": request.call_id, "caller_uri": "sip:bob@example.net"}
        if request.method == "INVITE":
            received_at = time.perf_counter()
            metrics.call_received()
            tx.respond(build_response(request, 180, "Ringing"))
            pushes.append(asyncio.ensure_future(push(CallPush(
                **call, callee=AOR_USER, push_id="p1", connect="sips:gw.example.net:5071",
                expires_at=time.time() + 60), received_at)))
        elif request.method == "CANCEL":
            tx.respond(build_response(request, 200, "OK"))
            tx.cancels.respond(build_response(tx.cancels.request, 487, "Request Terminated"))
            metrics.call_ended("cancelled")
            pushes.append(asyncio.ensure_future(push(MissedCallPush(**call, reason="cancelled"))))
            cancelled.set_result(tx.cancels)
        elif request.method == "MESSAGE":
            tx.respond(build_response(request, 200, "OK"))
            metrics.message_stored()
            pushes.append(asyncio.ensure_future(push(MessagePush(
                instance=instance_id, sender="sip:bob@example.net", message_id="m1"))))
            stored.append(request.body)

    sip.user.on_request = provider_side
    caller = make_stack()
    to_kamailio = await caller.transport.connect(target)
    ringing = asyncio.get_running_loop().create_future()
    invite = caller.request("INVITE", to_kamailio, f"sip:{AOR_USER}@{kamailio.domain}",
                            extra=[("Contact", f"<sip:bob@127.0.0.1:{to_kamailio.local[1]}>")])
    invite_tx = caller.transactions.request(
        invite, to_kamailio,
        on_response=lambda r: r.status == 180 and not ringing.done() and ringing.set_result(r))
    await asyncio.wait_for(ringing, 5)
    cancel_response = await asyncio.wait_for(caller.transactions.send(build_cancel(invite), to_kamailio), 5)
    assert cancel_response.status == 200
    assert (await asyncio.wait_for(invite_tx.final, 5)).status == 487
    server_invite = await asyncio.wait_for(cancelled, 5)
    await until(lambda: server_invite.state == "terminated", "Kamailio's ACK of our 487")

    # --- 5. message (real SIP, real push; stands in for message storage and the fetch) -
    message = caller.request("MESSAGE", to_kamailio, f"sip:{AOR_USER}@{kamailio.domain}",
                             extra=[("Content-Type", "text/plain")])
    message.body = b"see you at eight"
    answer = await asyncio.wait_for(caller.transactions.send(message, to_kamailio), 5)
    assert answer.status == 200 and stored == [b"see you at eight"]
    await asyncio.wait_for(asyncio.gather(*pushes), 10)
    assert len(running.apns.delivered()) == 3
    metrics.message_fetched()

    # --- 6. delete (real) --------------------------------------------------------------
    resp = await running.api.delete(f"/v1/instances/{instance_id}", headers={"Authorization": f"Bearer {secret}"})
    assert resp.status == 204
    flows_opened = len(sip.transport.flows()) + len(caller.transport.flows())
    after = await running.scrape()

    # --- what the counters say ------------------------------------------------------------
    def moved(name, **labels):
        return delta(before, after, name, **labels)

    requests = {("out", "REGISTER"): 1, ("out", "OPTIONS"): 1, ("out", "INVITE"): 1, ("out", "CANCEL"): 1,
                ("out", "ACK"): 1, ("out", "MESSAGE"): 1,
                ("in", "INVITE"): 1, ("in", "CANCEL"): 1, ("in", "ACK"): 1, ("in", "MESSAGE"): 1}
    for direction in metrics.DIRECTIONS:
        for transport in metrics.TRANSPORTS:
            for method in metrics.METHODS:
                want = requests.get((direction, method), 0) if transport == "tcp" else 0
                got = moved("sippush_sip_requests_total", direction=direction, transport=transport, method=method)
                assert got == want, (direction, transport, method)
    # in: Kamailio's 100 Trying and our 180 at the caller; 200s to REGISTER, OPTIONS,
    # CANCEL, MESSAGE; the 487. out: our 180, 200 (CANCEL), 200 (MESSAGE), 487.
    responses = {("in", "1xx"): 2, ("in", "2xx"): 4, ("in", "4xx"): 1,
                 ("out", "1xx"): 1, ("out", "2xx"): 2, ("out", "4xx"): 1}
    for direction in metrics.DIRECTIONS:
        for cls in metrics.STATUS_CLASSES:
            got = moved("sippush_sip_responses_total", direction=direction, transport="tcp", status_class=cls)
            assert got == responses.get((direction, cls), 0), (direction, cls)
    assert moved("sippush_sip_flows_opened_total", transport="tcp") == flows_opened == 3
    assert moved("sippush_sip_flows_open", transport="tcp") == 3
    assert moved("sippush_sip_keepalive_failures_total", transport="tcp") == 0
    assert sum(moved("sippush_sip_transaction_timeouts_total", side=s, method=m)
               for s in metrics.SIDES for m in metrics.METHODS) == 0
    assert moved("sippush_sip_parse_errors_total", transport="tcp") == 0

    assert moved("sippush_register_sent_total") == 1
    assert moved("sippush_register_results_total", outcome="registered") == 1
    assert sum(moved("sippush_register_results_total", outcome=o) for o in metrics.REGISTER_OUTCOMES) == 1
    assert moved("sippush_register_rtt_seconds_count") == 1
    assert 0 < moved("sippush_register_rtt_seconds_sum") < 5

    assert moved("sippush_calls_received_total") == 1
    assert moved("sippush_calls_total", outcome="cancelled") == 1
    assert sum(moved("sippush_calls_total", outcome=o) for o in metrics.CALL_OUTCOMES) == 1
    assert moved("sippush_invite_to_push_seconds_count") == 1
    assert 0 < moved("sippush_invite_to_push_seconds_sum") < 10
    delivered = {"call", "missed_call", "message"}  # each to one APNs target
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
    assert moved("sippush_messages_expired_total") == 0

    # create, registering, registered, delete: four durable writes
    assert moved("sippush_store_write_duration_seconds_count") == 4
    for state in metrics.STATES:  # created, moved through two states, deleted: back to where it was
        assert moved("sippush_instances", state=state) == 0
    assert mid[("sippush_instances", (("state", "idle"),))] - before[("sippush_instances", (("state", "idle"),))] == 1

    stats = await (await running.admin.get(
        "/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).json()
    assert stats["calls"]["outcomes"]["cancelled"] >= 1
    assert stats["pushes"]["apns"]["delivered"] >= 3

    # --- privacy: no label value names anyone ----------------------------------------------
    secrets_seen = [instance_id, secret, AOR_USER, VOIP_TOKEN, VOIP_TOKEN[:6], OTHER_TOKEN, OTHER_TOKEN[:6],
                    kamailio.domain, "127.0.0.1", str(contact_port), str(kamailio.tcp_port), PASSWORD, BUNDLE]
    address = re.compile(r"\d+\.\d+\.\d+\.\d+|\[?[0-9a-f]*:[0-9a-f:]+\]?|@|sip:", re.IGNORECASE)
    text = await (await running.admin.get("/metrics")).text()
    for name, labels in samples(text):
        for label, value in labels:
            assert not any(s in value for s in secrets_seen), (name, label, value)
            assert not address.search(value), (name, label, value)
    body = await (await running.admin.get(
        "/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text()
    assert not any(s in body for s in secrets_seen)
