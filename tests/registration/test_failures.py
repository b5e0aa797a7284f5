"""What goes wrong: a wrong password, a registrar that is down, a registrar that restarts
(and forgets every binding), a gateway that restarts. Real Kamailio, digest auth on."""

import asyncio
import time

import pytest

from gateway.app import Gateway
from gateway.registrations import contact_token

from .conftest import Api, eventually, wait_state

pytestmark = pytest.mark.kamailio


def bound(kam, user, token):
    return [c for c in kam.contacts(user) if token in c]


async def test_wrong_password_ends_unauthorized_with_few_attempts(registrar, start_gateway):
    # unauthorized retries start at 2 s and double: 2, 4 (x 0.75-1)
    gateway, api = await start_gateway(registrar)
    instance = await api.create(registrar, "mallory", "udp", password="not-the-password")
    status = await wait_state(api, instance, "unauthorized", 2.0)
    assert status["state"] == "unauthorized", status
    assert "rejected" in status["last_error"]
    await asyncio.sleep(4.0)
    # within ~4.5 s: the first attempt and at most two slow retries, one wrong answer each
    failures = registrar.auth_failures("mallory")
    assert 1 <= failures <= 3, failures
    assert registrar.registers("mallory") <= 2 * failures
    assert not registrar.contacts("mallory")


async def test_registrar_down_gives_error_and_backoff_then_recovers(registrar, start_gateway):
    gateway, api = await start_gateway(registrar)
    registrar.stop()
    instance = await api.create(registrar, "bob", "tcp")
    status = await wait_state(api, instance, "error", 2.0)
    assert status["state"] == "error", status
    assert "connect" in status["last_error"]
    await asyncio.sleep(3.0)  # let the backoff grow (retry_base 0.5, retry_max 4)
    client = gateway.registrations.clients[instance["id"]]
    assert client.failures >= 3
    await asyncio.to_thread(registrar.start)
    back = time.monotonic()
    token = contact_token(instance["id"])
    # within one backoff step (at most retry_max = 4 s) plus the exchange
    assert await eventually(lambda: bound(registrar, "bob", token), 5.0)
    assert time.monotonic() - back < 5.0
    assert (await wait_state(api, instance, "registered", 1.0))["state"] == "registered"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_registrar_restart_is_repaired(registrar, start_gateway, transport):
    gateway, api = await start_gateway(registrar)
    instance = await api.create(registrar, "carol", transport)
    token = contact_token(instance["id"])
    assert await eventually(lambda: bound(registrar, "carol", token), 1.0)
    client = gateway.registrations.clients[instance["id"]]
    flow_before = client.flow
    await asyncio.to_thread(registrar.restart)
    restarted = time.monotonic()
    # TCP: the connection loss is seen at once and the instance registers again (while
    # Kamailio starts up it is refused and backs off: retry_base 0.5 s); UDP has no
    # connection to lose: the next refresh (3 s granted) brings the binding back
    assert await eventually(lambda: bound(registrar, "carol", token), 4.0)
    took = time.monotonic() - restarted
    assert took < 4.0, took
    if transport == "tcp":
        assert flow_before.closed and client.flow is not flow_before


async def test_gateway_restart_reregisters_every_instance_at_the_rate(tmp_path, start_gateway):
    from tests.support.registrar import AuthRegistrar
    from .conftest import need_kamailio

    need_kamailio()
    kam = AuthRegistrar(tmp_path / "kam3600").start()  # long expiry: no refresh interferes
    try:
        gateway, api = await start_gateway(kam, rate=10.0, burst=2)
        users = [f"u{i}" for i in range(24)]
        for user in users:
            await api.create(kam, user, "udp", device=user)
        assert await eventually(lambda: len(kam.all_contacts()) == len(users), 5.0)
        config = gateway.config
        await api.close()
        await gateway.stop()
        await asyncio.to_thread(kam.restart)  # forget every binding
        assert not kam.all_contacts()

        again = Gateway(config)
        started = time.monotonic()
        await again.start()
        counts = []
        try:
            while time.monotonic() - started < 6.0:
                counts.append((time.monotonic() - started, len(await asyncio.to_thread(kam.all_contacts))))
                if counts[-1][1] == len(users):
                    break
                await asyncio.sleep(0.2)
        finally:
            await again.stop()
        assert counts[-1][1] == len(users), counts
        # 24 at 10/s with a burst of 2: about 2.2 s, and never ahead of the rate
        for elapsed, count in counts:
            assert count <= 2 + 10 * elapsed + 1, counts
        assert counts[-1][0] > 1.8, counts
    finally:
        kam.stop()


async def test_missing_keepalive_pong_reregisters_on_a_new_flow(registrar, start_gateway):
    """Kamailio frozen (SIGSTOP): the TCP connection stays up but CRLF pings get no pong;
    the flow is declared dead and its instance registers again once Kamailio thaws."""
    import os
    import signal

    gateway, api = await start_gateway(registrar, keepalive=1.0)
    instance = await api.create(registrar, "erin", "tcp")
    token = contact_token(instance["id"])
    assert await eventually(lambda: bound(registrar, "erin", token), 1.0)
    client = gateway.registrations.clients[instance["id"]]
    first_flow = client.flow
    assert first_flow is not None and first_flow.users >= 1  # keepalives run while held
    os.killpg(registrar.process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 3.0  # ping within 0.8-1 s, pong due 0.5 s later
        while not first_flow.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert first_flow.closed, "the frozen peer's flow was not declared dead"
    finally:
        os.killpg(registrar.process.pid, signal.SIGCONT)
    assert await eventually(lambda: client.state == "registered" and client.flow is not None
                            and client.flow is not first_flow, 5.0), client
    assert bound(registrar, "erin", token)


async def test_corrected_password_registers_at_once(registrar, start_gateway):
    """The app fixes a wrong password (PATCH): no waiting for the slow unauthorized retry."""
    gateway, api = await start_gateway(registrar)
    instance = await api.create(registrar, "frank", "udp", password="typo")
    assert (await wait_state(api, instance, "unauthorized", 2.0))["state"] == "unauthorized"
    status, _ = await api._call("PATCH", instance, "",
                                {"account": {"password": registrar.password("frank")}})
    assert status == 200
    token = contact_token(instance["id"])
    assert await eventually(lambda: bound(registrar, "frank", token), 1.5)
    assert (await wait_state(api, instance, "registered", 1.0))["state"] == "registered"
