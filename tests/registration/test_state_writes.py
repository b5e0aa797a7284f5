"""Registration states reach the store through a few writers, not a task per instance:
a burst of outcomes (the restart storm) queues as pending states, each instance's latest
state wins, and every one lands. Real store and lifecycle; no SIP needed."""

import asyncio
import time

from gateway.app import provider_face
from gateway.instances import InstanceService
from gateway.registrations import STATE_WRITERS, RegistrationService
from gateway.store import open_store
from gateway.timers import TimerWheel
from tests.support.instances import make_instance

from .conftest import gateway_config


async def test_a_burst_of_states_is_written_by_a_bounded_set_of_writers(tmp_path):
    config = gateway_config(tmp_path, "")
    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    wheel = TimerWheel()
    endpoint = provider_face(config, wheel)
    service = RegistrationService(config, InstanceService(config, store, wheel), endpoint, wheel)
    try:
        ids = [f"inst-{n:05d}" for n in range(300)]
        for n in range(300):
            await store.put_instance(make_instance(store.secret_box, n))
        until = time.time() + 600
        for instance_id in ids:
            service._report_id(instance_id, "error", "408 Request Timeout", None)
        for instance_id in ids[::2]:  # a later outcome for half of them: it must win
            service._report_id(instance_id, "registered", None, until)
        assert 1 <= len(service._tasks) <= STATE_WRITERS
        started = time.monotonic()
        while (service._pending or service._writers) and time.monotonic() - started < 20:
            await asyncio.sleep(0.01)
        records = {r.id: r for r in await store.list_instances()}
        assert all(records[i].state == "registered" and records[i].registered_until == until
                   for i in ids[::2])
        assert all(records[i].state == "error" and records[i].last_error == "408 Request Timeout"
                   for i in ids[1::2])
    finally:
        await service.stop()
        await endpoint.close()
        wheel.close()
        await store.close()
