"""The restart ramp: every stored background instance registers again, the ones whose
registration lapses first going first, foreground ones not at all, never above the rate.
Against a scripted UDP registrar that notes the order of the REGISTERs it gets."""

import asyncio
import contextlib
import time

from gateway.app import provider_face
from gateway.instances import InstanceService
from gateway.registrations import RegistrationService
from gateway.store import open_store
from gateway.timers import TimerWheel
from tests.support.instances import make_instance
from tests.support.scripted_registrar import ScriptedRegistrar, response

from .conftest import gateway_config


@contextlib.asynccontextmanager
async def ramp(tmp_path, accounts: dict, **config):
    """A registration service over a store holding `accounts` (n -> make_instance fields),
    all registering with a scripted registrar that answers 200; not started yet."""
    registrar = await ScriptedRegistrar([response(200, "OK", "Contact: {contact};expires=600")]).start()
    config = gateway_config(tmp_path, "", **config)
    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    wheel = TimerWheel()
    for n, fields in accounts.items():
        await store.put_instance(make_instance(
            store.secret_box, n, app_id="demo", aor=f"sip:user{n}@example.com",
            registrar=f"sip:127.0.0.1:{registrar.port};transport=udp", **fields))
    endpoint = provider_face(config, wheel)
    service = RegistrationService(config, InstanceService(config, store, wheel), endpoint, wheel)
    try:
        yield service, registrar, store
    finally:
        await service.stop()
        await endpoint.close()
        registrar.close()
        wheel.close()
        await store.close()


async def test_ramp_goes_oldest_expiry_first_at_the_rate(tmp_path):
    now = time.time()
    # registered_until: None (lapsed) first, then the soonest; one in the foreground
    lapses = {0: now + 500, 1: None, 2: now + 100, 3: now + 300, 4: now + 200, 5: now + 50}
    accounts = {n: dict(registered_until=until, state="registered",
                        mode="foreground" if n == 3 else "background") for n, until in lapses.items()}
    async with ramp(tmp_path, accounts, rate=20.0, burst=1) as (service, registrar, store):
        started = time.monotonic()
        await service.start()
        while len(registrar.requests) < 5 and time.monotonic() - started < 3:
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        users = [r.from_.uri.user for r in registrar.requests]
        assert users == ["user1", "user5", "user2", "user4", "user0"]
        assert took >= 4 / 20.0 - 0.02  # one at once, then 20 per second
        await asyncio.sleep(0.2)
        assert all(c.state == "registered" for c in service.clients.values())
        record = await store.get_instance("inst-00005")
        assert record.state == "registered" and record.registered_until > now + 500


async def test_ramp_holds_no_more_waiting_exchanges_than_the_in_flight_bound(tmp_path):
    """Started all at once, every stored instance would hold a task until its turn; the
    ramp starts them through a window of `max_in_flight` instead, and still gets them all."""
    accounts = {n: dict(registered_until=time.time() + 100 + n) for n in range(40)}
    async with ramp(tmp_path, accounts, rate=400.0, burst=50, in_flight=3) as (service, registrar, _):
        await service.start()
        assert len(service.clients) == 40  # known at once (incoming calls find them)
        most = 0
        started = time.monotonic()
        # (users, not requests: on a loaded machine timer E, at T1 = 0.1 s here, may
        # send a request again before its answer is read)
        while len({r.from_.uri.user for r in registrar.requests}) < 40 \
                and time.monotonic() - started < 5:
            most = max(most, sum(1 for c in service.clients.values() if c.exchange_task))
            await asyncio.sleep(0.002)
        assert 1 <= most <= 3
        # three at a time may pass each other; the order itself is the test above
        assert sorted({r.from_.uri.user for r in registrar.requests}) == \
            sorted(f"user{n}" for n in range(40))
        assert len({(r.from_.uri.user, r.branch) for r in registrar.requests}) == 40  # one each
        await asyncio.sleep(0.2)
        assert all(c.state == "registered" for c in service.clients.values())
