"""The instance lifecycle: events, expiry on the timer wheel, restart, and erasure down to
the bytes of the SQLite files."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.instances import InstanceService
from gateway.store import PushTarget, open_store
from gateway.timers import TimerWheel

from .harness import PASSWORD, disk_bytes, make_config, start_gateway, stop_gateway

HOUR = 3600.0


class Recorder:
    """Collects events; `wait_for(kind)` returns once one of that kind has come."""

    def __init__(self):
        self.events = []
        self._changed = asyncio.Event()

    def __call__(self, event):
        self.events.append(event)
        self._changed.set()

    def kinds(self, instance_id=None):
        return [e.kind for e in self.events if instance_id in (None, e.instance_id)]

    async def wait_for(self, kind, instance_id=None, timeout=5.0):
        async def wait():
            while kind not in self.kinds(instance_id):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


class ManualClock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture
async def manual(tmp_path):
    """A service whose wall clock and wheel are both moved by hand."""
    config = make_config(tmp_path)
    clock = ManualClock()
    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    wheel = TimerWheel(clock=clock)
    service = InstanceService(config, store, wheel, clock=clock)
    recorder = Recorder()
    service.subscribe(recorder)
    await service.start()
    yield config, clock, wheel, service, recorder
    await service.stop()
    await store.close()
    wheel.close()


async def create(service, device_id="phone-1", password=PASSWORD):
    app = service.config.app("demo")
    record, secret = await service.create(
        app,
        device_id=device_id,
        aor="sip:alice@example.com",
        auth_username="alice",
        password=password,
        registrar="sip:example.com",
        push=[PushTarget(provider="fcm", token="t" * 40)],
    )
    return record


async def move(clock, wheel, to):
    clock.now = to
    for _ in range(5):  # a step may schedule the next one at once: advance again
        wheel.advance()
        await asyncio.sleep(0.01)  # let the spawned steps run their store calls
        clock.now += wheel.resolution  # "at once" is the next tick of the wheel


async def test_expiring_12h_and_1h_before_then_expired_and_erased(manual):
    config, clock, wheel, service, rec = manual
    record = await create(service)
    t0 = record.created_at
    assert record.expires_at == t0 + 72 * HOUR
    await move(clock, wheel, t0 + 59 * HOUR)
    assert rec.kinds() == ["created"]
    await move(clock, wheel, t0 + 60 * HOUR + 1)
    assert rec.kinds() == ["created", "expiring"]
    assert rec.events[-1].hours_left == pytest.approx(12.0, abs=0.01)
    assert rec.events[-1].record.id == record.id
    await move(clock, wheel, t0 + 71 * HOUR + 1)
    assert rec.kinds() == ["created", "expiring", "expiring"]
    assert rec.events[-1].hours_left == pytest.approx(1.0, abs=0.01)
    before = disk_bytes(config.store.path)
    assert record.password_ct in before  # the check below can fail
    await move(clock, wheel, t0 + 72 * HOUR + 1)
    await rec.wait_for("erased")
    assert rec.kinds() == ["created", "expiring", "expiring", "expired", "erased"]
    assert rec.events[-2].record.id == record.id and rec.events[-1].record is None
    assert await service.store.get_instance(record.id) is None
    after = disk_bytes(config.store.path)
    assert record.password_ct not in after and PASSWORD.encode() not in after
    assert len(wheel) == 0


async def test_refresh_postpones_warnings_and_expiry(manual):
    config, clock, wheel, service, rec = manual
    record = await create(service)
    t0 = record.created_at
    await move(clock, wheel, t0 + 71 * HOUR + 1)
    assert rec.kinds().count("expiring") == 2
    refreshed = await service.refresh(record.id)
    assert refreshed.expires_at == pytest.approx(t0 + 143 * HOUR + 1)
    await move(clock, wheel, t0 + 100 * HOUR)
    assert rec.kinds() == ["created", "expiring", "expiring", "updated"]
    await move(clock, wheel, t0 + 131 * HOUR + 2)
    assert rec.kinds()[-1] == "expiring"
    assert await service.store.get_instance(record.id) is not None


async def test_a_warning_due_after_the_expiry_moved_later_waits_for_the_new_expiry(manual):
    """The step reads the expiry from the store when it runs: moved later meanwhile (a
    refresh whose rescheduling has not run yet), it is not this warning's time."""
    config, clock, wheel, service, rec = manual
    record = await create(service)
    t0 = record.created_at
    await service.store.update_instance(record.id, expires_at=t0 + 120 * HOUR)
    await move(clock, wheel, t0 + 60 * HOUR + 1)  # the 12 h warning of the old expiry
    assert rec.kinds() == ["created"]
    await move(clock, wheel, t0 + 108 * HOUR + 1)
    assert rec.kinds() == ["created", "expiring"]
    assert rec.events[-1].hours_left == pytest.approx(12.0, abs=0.01)


async def test_events_for_every_change(manual):
    config, clock, wheel, service, rec = manual
    seen_async = []

    async def slow_subscriber(event):
        await asyncio.sleep(0)
        seen_async.append(event.kind)

    def broken_subscriber(event):
        raise RuntimeError("a subscriber bug")

    service.subscribe(broken_subscriber)
    service.subscribe(slow_subscriber)
    first = await create(service)
    await service.update(first.id, display_name="A")
    await service.set_mode(first.id, "foreground")
    await service.set_mode(first.id, "foreground")  # no change, no event
    await service.set_state(first.id, "off")
    second = await create(service)  # replaces the first
    await service.erase(second.id)
    await asyncio.sleep(0.05)
    assert rec.kinds() == [
        "created", "updated", "mode_changed", "state_changed", "erased", "created", "erased",
    ]
    assert [e.instance_id for e in rec.events[-3:]] == [first.id, second.id, second.id]
    assert seen_async == rec.kinds()
    assert len(wheel) == 0


async def test_a_registration_state_landing_after_the_switch_to_foreground_is_dropped(manual):
    """The SIP part writes its states late (queued, batched): one still on its way when
    the app took over must not turn the foreground instance's `off` back into
    `registered`."""
    config, clock, wheel, service, rec = manual
    instance = await create(service)
    await service.set_state(instance.id, "registered", registered_until=clock() + 60,
                            if_mode="background")
    assert (await service.get(instance.id)).state == "registered"
    await service.set_mode(instance.id, "foreground")
    before = rec.kinds(instance.id)
    late = await service.set_state(instance.id, "registered", if_mode="background")
    assert late.state == "off" and (await service.get(instance.id)).state == "off"
    assert rec.kinds(instance.id) == before  # nothing happened: no event
    await service.set_mode(instance.id, "background")
    await service.set_state(instance.id, "registering", if_mode="background")
    assert (await service.get(instance.id)).state == "registering"


async def test_restart_expires_overdue_and_replays_only_a_useful_warning(manual, tmp_path):
    config, clock, wheel, service, rec = manual
    overdue = await create(service, "overdue")
    in_window = await create(service, "in-window")
    too_late = await create(service, "too-late")
    fresh = await create(service, "fresh")
    await service.stop()
    now = clock.now
    # while the gateway was down: overdue expired, in-window is 40 min from expiry (the
    # 1 h warning was missed, a quarter of it is left), too-late is 5 min from expiry
    await service.store.update_instance(overdue.id, expires_at=now - 10)
    await service.store.update_instance(in_window.id, expires_at=now + 40 * 60)
    await service.store.update_instance(too_late.id, expires_at=now + 5 * 60)

    restarted = InstanceService(config, service.store, wheel, clock=clock)
    after = Recorder()
    restarted.subscribe(after)
    await restarted.start()
    await move(clock, wheel, now)
    await after.wait_for("erased", overdue.id)
    assert after.kinds(overdue.id) == ["expired", "erased"]
    assert after.kinds(in_window.id) == ["expiring"]
    warning = next(e for e in after.events if e.instance_id == in_window.id)
    assert warning.hours_left == pytest.approx(40 / 60, abs=0.01)
    assert after.kinds(too_late.id) == [] and after.kinds(fresh.id) == []
    await move(clock, wheel, now + 6 * 60)
    await after.wait_for("erased", too_late.id)
    assert after.kinds(too_late.id) == ["expired", "erased"]
    assert await restarted.store.count_instances() == 2
    await restarted.stop()


async def test_short_retention_end_to_end_through_the_api(tmp_path):
    """Real time, real loop-driven wheel: 1.8 s of life, warnings 1.08 s and 0.36 s before."""
    gw = await start_gateway(make_config(tmp_path, max_age=0.0005, warn=[0.0003, 0.0001]))
    rec = Recorder()
    gw.service.subscribe(rec)
    try:
        inst = await gw.create()
        ct = (await gw.store.get_instance(inst["id"])).password_ct
        await rec.wait_for("erased", inst["id"], timeout=10)
        assert rec.kinds(inst["id"]) == ["created", "expiring", "expiring", "expired", "erased"]
        resp = await gw.client.get(f"/v1/instances/{inst['id']}",
                                   headers={"Authorization": f"Bearer {inst['secret']}"})
        assert resp.status == 404
        data = disk_bytes(gw.config.store.path)
        assert ct not in data and PASSWORD.encode() not in data
    finally:
        await stop_gateway(gw)


async def test_delete_and_new_password_leave_no_trace_on_disk(gw):
    inst = await gw.create()
    auth = {"Authorization": f"Bearer {inst['secret']}"}
    old_ct = (await gw.store.get_instance(inst["id"])).password_ct
    assert old_ct in disk_bytes(gw.config.store.path)

    resp = await gw.client.patch(f"/v1/instances/{inst['id']}", json={"account": {"password": "second-pw-77"}}, headers=auth)
    assert resp.status == 200
    new_ct = (await gw.store.get_instance(inst["id"])).password_ct
    data = disk_bytes(gw.config.store.path)
    assert old_ct not in data and PASSWORD.encode() not in data and new_ct in data

    resp = await gw.client.delete(f"/v1/instances/{inst['id']}", headers=auth)
    assert resp.status == 204
    data = disk_bytes(gw.config.store.path)
    assert new_ct not in data and b"second-pw-77" not in data and old_ct not in data


async def test_replaced_instance_leaves_no_trace_on_disk(gw):
    first = await gw.create()
    old_ct = (await gw.store.get_instance(first["id"])).password_ct
    await gw.create()
    assert old_ct not in disk_bytes(gw.config.store.path)

