"""An instance's registration from the API to Kamailio's location table and back, over
UDP, TCP and TLS, with digest authentication on and a 3 s expiry granted by Kamailio."""

import asyncio

import pytest

from gateway.registrations import contact_token

from .conftest import eventually, wait_state

pytestmark = pytest.mark.kamailio


def bound(kam, user, token):
    return [c for c in kam.contacts(user) if token in c]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_create_refresh_foreground_background_delete(registrar, start_gateway, transport):
    gateway, api = await start_gateway(registrar)
    instance = await api.create(registrar, "alice", transport)
    token = contact_token(instance["id"])

    contacts = await eventually(lambda: bound(registrar, "alice", token), 1.0)
    assert contacts, registrar.log_tail()
    assert f"transport={transport}" in contacts[0]
    # Kamailio shows the binding a moment before its 200 OK reaches the gateway
    status = await wait_state(api, instance, "registered", 1.0)
    assert status["state"] == "registered" and status["last_error"] in (None, ""), status

    # Kamailio grants 3 s: three refreshes within ~5 s, the binding never missing
    before = registrar.registers("alice")
    for _ in range(22):
        await asyncio.sleep(0.25)
        assert await asyncio.to_thread(bound, registrar, "alice", token)
    refreshes = registrar.registers("alice") - before
    assert refreshes >= 3, refreshes
    # the nonce is reused on refreshes: no 401 round trip per refresh
    assert registrar.auth_failures("alice") == 0

    await api.set_mode(instance, "foreground")
    assert await eventually(lambda: not bound(registrar, "alice", token), 1.0)
    assert (await wait_state(api, instance, "off", 3.0))["state"] == "off"

    await api.set_mode(instance, "background")
    assert await eventually(lambda: bound(registrar, "alice", token), 1.0)

    await api.delete(instance)
    assert await eventually(lambda: not bound(registrar, "alice", token), 1.0)
