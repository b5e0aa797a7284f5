"""The send-rate limits: a token bucket on the timer wheel, waiters in arrival order."""

import asyncio
import time

import pytest

from gateway.sip.pacing import Pacer, RateLimit
from gateway.timers import TimerWheel


@pytest.fixture
def wheel():
    w = TimerWheel()
    yield w
    w.close()


async def test_burst_then_rate_in_order(wheel):
    limit = RateLimit(rate=50.0, burst=5, wheel=wheel)
    order, stamps = [], []
    started = time.monotonic()

    async def take(n):
        await limit.acquire()
        order.append(n)
        stamps.append(time.monotonic() - started)

    await asyncio.gather(*(take(n) for n in range(30)))
    assert order == list(range(30))  # first come, first served
    assert all(s < 0.02 for s in stamps[:5])  # the burst at once
    # the other 25 at 50/s: about 0.5 s, never ahead of the bucket
    for i, s in enumerate(stamps[5:], start=1):
        assert s >= i / 50.0 - 0.015, (i, s)
    assert stamps[-1] < 0.5 + 0.25


async def test_pacer_applies_the_stricter_of_global_and_per_key(wheel):
    pacer = Pacer(wheel, rate=1000.0, burst=1, per_key_rate=20.0, per_key_burst=1)
    started = time.monotonic()
    await asyncio.gather(*(pacer.acquire("registrar-a") for _ in range(6)))
    assert time.monotonic() - started >= 5 / 20.0 - 0.02
    started = time.monotonic()
    await asyncio.gather(*(pacer.acquire(f"r{n}") for n in range(6)))
    assert time.monotonic() - started < 0.1  # different registrars: only the global rate


async def test_cancelled_waiter_gives_its_turn_away(wheel):
    limit = RateLimit(rate=20.0, burst=1, wheel=wheel)
    await limit.acquire()
    first = asyncio.ensure_future(limit.acquire())
    second = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 0.2)
    assert limit.waiting == 0


def test_bad_limits_are_refused(wheel):
    with pytest.raises(ValueError):
        RateLimit(rate=0, burst=1, wheel=wheel)
