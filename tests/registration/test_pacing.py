"""The send-rate limits: a token bucket on the timer wheel, waiters in arrival order; both
twins (`gateway.sip.buckets` and the compiled `gateway._buckets`), and the one
`gateway.sip.pacing` chose."""

import asyncio
import time

import pytest

from gateway.sip import pacing
from gateway.timers import TimerWheel
from tests.twins import load_both

BUCKETS = load_both("_buckets", "sip.buckets")


@pytest.fixture(params=BUCKETS)
def buckets(request):
    return request.param


@pytest.fixture
def wheel():
    w = TimerWheel()
    yield w
    w.close()


async def test_burst_then_rate_in_order(buckets, wheel):
    limit = buckets.RateLimit(rate=50.0, burst=5, wheel=wheel)
    assert [limit.try_acquire() for _ in range(6)] == [True] * 5 + [False]  # the burst at once
    limit = buckets.RateLimit(rate=50.0, burst=5, wheel=wheel)
    order, stamps = [], []
    started = time.monotonic()

    async def take(n):
        await limit.acquire()
        order.append(n)
        stamps.append(time.monotonic() - started)

    await asyncio.gather(*(take(n) for n in range(30)))
    assert order == list(range(30))  # first come, first served
    # the other 25 at 50/s: about 0.5 s, never ahead of the bucket (a busy machine can
    # only make them later: the bound after is loose, it catches a stalled waiter)
    for i, s in enumerate(stamps[5:], start=1):
        assert s >= i / 50.0 - 0.015, (i, s)
    assert stamps[-1] < 0.5 + 2.0


async def test_pacer_applies_the_stricter_of_global_and_per_key(buckets, wheel):
    pacer = buckets.Pacer(wheel, rate=1000.0, burst=1, per_key_rate=20.0, per_key_burst=1)
    started = time.monotonic()
    await asyncio.gather(*(pacer.acquire("registrar-a") for _ in range(6)))
    assert time.monotonic() - started >= 5 / 20.0 - 0.02
    started = time.monotonic()
    await asyncio.gather(*(pacer.acquire(f"r{n}") for n in range(6)))
    # different registrars: only the global rate (5 ms), not the per-key one (250 ms)
    assert time.monotonic() - started < 5 / 20.0


async def test_cancelled_waiter_gives_its_turn_away(buckets, wheel):
    limit = buckets.RateLimit(rate=20.0, burst=1, wheel=wheel)
    await limit.acquire()
    first = asyncio.ensure_future(limit.acquire())
    second = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 0.2)
    assert limit.waiting == 0


def test_bad_limits_are_refused(buckets, wheel):
    with pytest.raises(ValueError):
        buckets.RateLimit(rate=0, burst=1, wheel=wheel)


async def test_pacer_try_acquire_takes_both_tokens_or_neither(buckets, wheel):
    pacer = buckets.Pacer(wheel, rate=1.0, burst=2, per_key_rate=1.0, per_key_burst=1)
    assert pacer.try_acquire("a")          # a's only token and one global
    assert not pacer.try_acquire("a")      # a is empty: nothing taken
    assert pacer.try_acquire("b")          # the second global token
    assert not pacer.try_acquire("c")      # global empty: c's own token is given back
    assert pacer.limit_for("c").try_acquire()


async def test_pacer_try_acquire_never_jumps_the_queue(buckets, wheel):
    pacer = buckets.Pacer(wheel, rate=1000.0, burst=1, per_key_rate=1000.0, per_key_burst=1)
    assert pacer.try_acquire("a")
    waiter = asyncio.ensure_future(pacer.acquire("a"))
    await asyncio.sleep(0)
    assert not pacer.try_acquire("a")  # the queued waiter goes first
    await asyncio.wait_for(waiter, 1.0)


async def test_slots_bound_holders_and_serve_waiters_in_order(buckets):
    slots = buckets.Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    order = []

    async def hold(n):
        async with slots:
            order.append(n)
            await asyncio.sleep(0.01)

    tasks = [asyncio.ensure_future(hold(n)) for n in range(3)]
    await asyncio.sleep(0.005)
    assert order == []  # both slots are held
    slots.release()
    assert not slots.try_take()  # handed straight to the first waiter
    slots.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert slots.free == 2


async def test_slots_cancelled_waiter_passes_its_turn_on(buckets):
    slots = buckets.Slots(1)
    assert slots.try_take()
    first = asyncio.ensure_future(slots.take())
    second = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    first.cancel()
    slots.release()
    await asyncio.wait_for(second, 1.0)
    assert first.cancelled() and slots.free == 0
    slots.release()
    assert slots.free == 1
    with pytest.raises(ValueError):
        buckets.Slots(0)


def test_pacing_offers_one_twins_classes():
    chosen = pacing._impl
    assert chosen in [param.values[0] for param in BUCKETS]
    assert (pacing.RateLimit, pacing.Pacer, pacing.Slots) == (
        chosen.RateLimit, chosen.Pacer, chosen.Slots)


def test_a_bucket_reads_the_clock_it_is_given(buckets, wheel):
    now = [100.0]
    limit = buckets.RateLimit(rate=2.0, burst=2, wheel=wheel, clock=lambda: now[0])
    assert limit.try_acquire() and limit.try_acquire() and not limit.try_acquire()
    now[0] += 0.5  # one token back at 2/s
    assert limit.try_acquire() and not limit.try_acquire()
    now[0] += 10.0  # never more than the burst
    assert [limit.try_acquire() for _ in range(3)] == [True, True, False]
    assert limit.waiting == 0 and limit._tokens < 1.0


async def test_pacer_try_acquire_takes_from_each_keys_own_bucket_whatever_was_asked_last(
        buckets, wheel):
    # (compiled, the bucket of the key object asked last is kept: it must never answer
    # for another key, an equal key that is another object, or a bucket with waiters)
    pacer = buckets.Pacer(wheel, 1000.0, 100, 0.001, 2)  # per key: 2 now, then ~never
    a, b = "registrar-a.example", "registrar-b.example"
    assert [pacer.try_acquire(a), pacer.try_acquire(a), pacer.try_acquire(a)] == [True, True, False]
    assert [pacer.try_acquire(b), pacer.try_acquire(a), pacer.try_acquire(b)] == [True, False, True]
    assert pacer.try_acquire(b) is False
    same_as_a = "".join(["registrar-a", ".example"])  # equal, not the same object
    assert same_as_a is not a and pacer.try_acquire(same_as_a) is False
    c = "registrar-c.example"
    assert pacer.try_acquire(c) is True
    assert pacer.limit_for(c)._tokens < 1.5 and pacer.limit_for(a)._tokens < 1.0
    assert pacer.limit_for(c).try_acquire() is True  # (c's last token, not through the pacer)
    # a waiter queued on the bucket asked last: nobody jumps it
    waiter = asyncio.ensure_future(pacer.limit_for(c).acquire())
    await asyncio.sleep(0)
    assert pacer.limit_for(c).waiting == 1 and pacer.try_acquire(c) is False
    waiter.cancel()
    pacer.close()


async def test_slots_try_take_sees_waiters_in_any_queue(buckets):
    slots = buckets.Slots(1)
    assert slots.try_take() is True
    waiter = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    slots.free += 1  # (a slot free while someone waits: still theirs, not ours)
    assert slots.try_take() is False
    slots._waiters = list(slots._waiters)  # (not a deque: asked as any sequence)
    assert slots.try_take() is False
    slots._waiters = []
    assert slots.try_take() is True
    waiter.cancel()
