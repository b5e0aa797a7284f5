"""The wheel driven by a real event loop, on both twins.

The loop is uvloop (tests/conftest.py) unless a test builds its own; wake-ups are counted
with a stock asyncio loop whose call_at() counts what it is asked for, so the count does
not come from the wheel's own bookkeeping alone.
"""

import asyncio
import logging
import time

import pytest


class CountingLoop(asyncio.SelectorEventLoop):
    """A stock asyncio loop that records the call_at() requests made by timer wheels."""

    def __init__(self):
        super().__init__()
        self.wheel_handles = []

    def call_at(self, when, callback, *args, context=None):
        handle = super().call_at(when, callback, *args, context=context)
        if type(getattr(callback, "__self__", None)).__name__ == "TimerWheel":
            self.wheel_handles.append(handle)
        return handle

    @property
    def requested(self):
        return len(self.wheel_handles)

    def live_timers(self):
        """Wheel wake-ups still to come."""
        return sum(1 for h in self.wheel_handles if not h.cancelled() and h.when() > self.time())


@pytest.fixture
def counting_loop():
    loop = CountingLoop()
    yield loop
    loop.close()


async def test_timers_fire_on_time_through_the_loop(twin):
    loop = asyncio.get_running_loop()
    wheel = twin.TimerWheel()
    fired = []
    start = loop.time()
    for delay in (0.12, 0.02, 0.3, 0.0, 0.05):
        wheel.call_later(delay, lambda d: fired.append((d, loop.time() - start)), delay)
    await asyncio.sleep(0.45)
    assert [d for d, _ in fired] == [0.0, 0.02, 0.05, 0.12, 0.3]
    for delay, at in fired:
        assert at >= delay - 0.002  # loop.time() has millisecond steps under uvloop
        assert at < delay + 0.25  # generous: a shared CI machine may be slow
    assert len(wheel) == 0
    wheel.close()


async def test_loop_defaults_to_the_running_loop_at_first_use(twin):
    wheel = twin.TimerWheel()  # no loop yet is fine
    done = asyncio.get_running_loop().create_future()
    wheel.call_later(0.01, done.set_result, "ok")
    assert await asyncio.wait_for(done, 2) == "ok"
    wheel.close()


def test_without_loop_or_clock_outside_a_loop_says_so(twin):
    wheel = twin.TimerWheel()
    with pytest.raises(RuntimeError, match="running event loop"):
        wheel.call_later(1, print)


def test_idle_wheel_wakes_the_loop_only_for_due_timers(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    fired = []
    # three due times, two of them within one tick, and one far beyond the test
    for delay in (0.05, 0.05, 0.1, 0.2, 3600):
        wheel.call_later(delay, fired.append, delay)
    assert counting_loop.live_timers() == 1  # one call_at at a time, whatever the count
    counting_loop.run_until_complete(asyncio.sleep(0.35))
    assert fired == [0.05, 0.05, 0.1, 0.2]
    # one wake-up per distinct due tick (fewer if a stalled machine woke it late)
    assert 1 <= wheel.wakeups <= 3
    woken = wheel.wakeups
    # the wheel sleeps until the hour-long timer: nothing else wakes the loop
    requested = counting_loop.requested
    counting_loop.run_until_complete(asyncio.sleep(0.3))
    assert wheel.wakeups == woken and counting_loop.requested == requested
    assert counting_loop.live_timers() == 1
    wheel.close()
    assert counting_loop.live_timers() == 0


def test_many_timers_in_one_tick_cost_one_wake_up(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    fired = []
    when = counting_loop.time() + 0.05
    for i in range(10_000):
        wheel.call_at(when, fired.append, i)
    counting_loop.run_until_complete(asyncio.sleep(0.15))
    assert len(fired) == 10_000
    assert wheel.wakeups == 1
    wheel.close()


def test_an_earlier_timer_rearms_the_loop(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    fired = []
    wheel.call_later(10, fired.append, "late")
    wheel.call_later(0.05, fired.append, "early")
    assert counting_loop.live_timers() == 1
    counting_loop.run_until_complete(asyncio.sleep(0.15))
    assert fired == ["early"] and wheel.wakeups == 1
    wheel.close()


def test_cancelled_timers_cost_at_most_one_needless_wake_up(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    for _ in range(100):
        wheel.call_later(0.05, print).cancel()
    counting_loop.run_until_complete(asyncio.sleep(0.2))
    assert wheel.wakeups <= 1
    assert counting_loop.live_timers() == 0
    wheel.close()


def test_close_stops_waking_the_loop(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    fired = []
    wheel.call_later(0.05, fired.append, 1)
    wheel.close()
    counting_loop.run_until_complete(asyncio.sleep(0.1))
    assert fired == [] and wheel.wakeups == 0
    assert counting_loop.live_timers() == 0


async def test_callbacks_rescheduling_themselves_keep_the_loop_going(twin):
    wheel = twin.TimerWheel()
    ticks = []

    def keepalive(arg):
        ticks.append(arg)
        if len(ticks) < 5:
            wheel.reschedule(handle, 0.02)

    handle = wheel.call_later(0.02, keepalive, "flow-1")
    await asyncio.sleep(0.6)
    assert ticks == ["flow-1"] * 5
    wheel.close()


async def test_failing_callback_is_logged_and_the_loop_goes_on(twin, caplog):
    wheel = twin.TimerWheel()
    fired = []

    def broken(arg):
        raise ValueError("bad timer")

    wheel.call_later(0.01, broken)
    wheel.call_later(0.01, fired.append, "same tick")
    wheel.call_later(0.05, fired.append, "later")
    with caplog.at_level(logging.ERROR, logger="gateway.timers"):
        await asyncio.sleep(0.15)
    assert fired == ["same tick", "later"]
    assert "bad timer" in caplog.text
    wheel.close()


async def test_wall_clock_jumps_do_not_matter(twin, monkeypatch):
    loop = asyncio.get_running_loop()
    wheel = twin.TimerWheel()
    fired = []
    start = loop.time()
    wheel.call_later(0.1, lambda _: fired.append(loop.time() - start))
    # the wall clock leaps an hour forward: a timer on it would fire at once
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    await asyncio.sleep(0.02)
    assert fired == []
    # and an hour back: a timer on it would wait an hour
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    await asyncio.sleep(0.2)
    assert len(fired) == 1 and 0.09 <= fired[0] < 1.0
    wheel.close()


def test_interrupted_advance_still_rearms_the_loop(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    fired = []

    def interrupt(arg):
        raise KeyboardInterrupt

    now = counting_loop.time()
    wheel.call_at(now + 0.01, interrupt)
    wheel.call_at(now + 0.01, fired.append, "survivor")
    with pytest.raises(KeyboardInterrupt):
        wheel.advance(now + 0.05)
    assert counting_loop.live_timers() == 1  # the survivor still has a wake-up coming
    counting_loop.run_until_complete(asyncio.sleep(0.1))
    assert fired == ["survivor"]
    wheel.close()


def test_a_far_timer_arms_the_loop_at_most_a_day_ahead(twin, counting_loop):
    wheel = twin.TimerWheel(loop=counting_loop)
    wheel.call_later(10 * 86400, print)
    (armed,) = [h for h in counting_loop.wheel_handles if not h.cancelled()]
    assert 86400 - 1 <= armed.when() - counting_loop.time() <= 86400
    wheel.close()
