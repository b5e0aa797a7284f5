"""Missed-call pushes read the store together: the pushes of calls ending within
`MISSED_BATCH_DELAY` of each other queue their reads in one turn of the loop, which the
store's thread serves as one batch (one wake-up of that thread and of the loop for all of
them). A real SQLite store; a hand-driven timer wheel says when the delay is over; the
push service is a recorder (what it sends is tested in tests/push)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.calls import MISSED_BATCH_DELAY, CallService
from gateway.config import App, Config, Store
from gateway.push.payloads import MissedCallPush
from gateway.store import open_store
from gateway.store.crypto import SecretBox
from gateway.timers import TimerWheel
from tests.support.instances import make_instance


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Instances:
    def __init__(self, store):
        self.store = store


class PushRecorder:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def notify_started(self, record, payload):
        self.sent.append((record.id, payload.reason))
        return asyncio.sleep(0)


class Bench:
    """A CallService on a real store holding instances 0 to 4, its hand-driven wheel."""

    def __init__(self, tmp_path):
        self.box = SecretBox.load_or_create(tmp_path / "store.key")
        self.store = open_store(str(tmp_path / "db.sqlite"), str(tmp_path / "store.key"))
        self.clock = Clock()
        self.wheel = TimerWheel(clock=self.clock)
        self.push = PushRecorder()
        config = Config(apps=[App(id="com.example.phone", api_key_hashes=["sha256:" + "0" * 64])],
                        store=Store(path=str(tmp_path / "db.sqlite"), key_file=str(tmp_path / "store.key")))
        self.service = CallService(config, Instances(self.store), self.push, None, None, None, self.wheel)
        self.records = [make_instance(self.box, n) for n in range(5)]

    def later(self, seconds: float) -> None:
        self.clock.now += seconds
        self.wheel.advance()


@pytest.fixture
async def bench(tmp_path):
    bench = Bench(tmp_path)
    await bench.store.open()
    for record in bench.records:
        await bench.store.put_instance(record)
    yield bench
    bench.wheel.close()
    await bench.store.close()


def missed(instance: str, n: int) -> MissedCallPush:
    return MissedCallPush(instance=instance, call_id=f"c{n}", caller_uri="sip:bob@x",
                          reason="cancelled" if n % 2 else "no_answer")


async def test_missed_calls_of_the_same_moment_share_one_store_batch(bench):
    before = bench.store.batches
    tasks = []
    for n, record in enumerate(bench.records):  # calls ending one after the other
        tasks.append(asyncio.ensure_future(bench.service._missed(missed(record.id, n))))
        for _ in range(3):
            await asyncio.sleep(0)
    assert bench.store.batches == before and bench.push.sent == []  # nobody read alone
    bench.later(MISSED_BATCH_DELAY / 2)
    await asyncio.sleep(0.05)
    assert bench.push.sent == []  # not yet
    bench.later(MISSED_BATCH_DELAY)
    deadline = time.monotonic() + 5
    while len(bench.push.sent) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert sorted(bench.push.sent) == sorted((r.id, missed(r.id, n).reason)
                                             for n, r in enumerate(bench.records))
    assert bench.store.batches == before + 1


async def test_a_missed_call_alone_reads_after_the_delay_and_an_erased_instance_gets_none(bench):
    for instance in (bench.records[1].id, "gone"):
        task = asyncio.ensure_future(bench.service._missed(missed(instance, 1)))
        await asyncio.sleep(0)
        bench.later(MISSED_BATCH_DELAY)
        await asyncio.wait_for(task, 5)
    assert bench.push.sent == [(bench.records[1].id, "cancelled")]
