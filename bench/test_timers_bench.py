"""The timer wheel against the event loop's own timers, measured in the same run.

Three figures, each a ratio to a baseline measured in the same test:

- schedule + cancel: 1,000,000 `wheel.call_later` then 1,000,000 `cancel()`, against the
  same with `loop.call_later` on stock asyncio and on uvloop (goal: 10x faster);
- memory per pending timer (tracemalloc, 100,000 timers), against an asyncio
  `TimerHandle` on stock asyncio and on uvloop (goal: at most a third);
- timers fired per second when 1,000,000 come due at once, against the loops' own.

Both twins run (ids "py" and "c"); the ratios land in each benchmark's extra_info and
are printed (-s shows them):

    python -m pytest bench/test_timers_bench.py --benchmark-only -s
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

import pytest
import uvloop

from tests.twins import load_both

COUNT = 1_000_000
MEMORY_COUNT = 100_000
# scattered over ten minutes by a multiplicative hash, like a gateway's mix of timers
DELAYS = [1.0 + (i * 7919 % 600_000) / 1000 for i in range(COUNT)]
BASELINE_LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

TWINS = load_both("_timerwheel", "timerwheel")


def on_timer(arg):
    pass


def interleaved(benchmark, rounds, subject, subject_args, baselines):
    """Time `subject(*subject_args())` with pytest-benchmark for `rounds` rounds, and
    before each round one round of every baseline (name -> (fn, args maker)), so a busy
    machine weighs on both alike. Returns the subject's and each baseline's shortest
    wall time. A full collection precedes every timed run, so garbage from the run
    before is not charged to the next."""
    best = {name: float("inf") for name in baselines}

    def setup():
        for name, (fn, make_args) in baselines.items():
            args = make_args()
            gc.collect()
            start = time.perf_counter()
            fn(*args)
            best[name] = min(best[name], time.perf_counter() - start)
        args = subject_args()
        gc.collect()
        return args, {}

    benchmark.pedantic(subject, setup=setup, rounds=rounds, iterations=1)
    return benchmark.stats.stats.min, best


def report(benchmark, name, **figures):
    benchmark.extra_info.update(figures)
    print(f"\n{name}: " + ", ".join(f"{key}={value:.3g}" for key, value in figures.items()))


# --- schedule + cancel ------------------------------------------------------------------

def schedule_then_cancel(call_later):
    handles = [call_later(delay, on_timer, None) for delay in DELAYS]
    for handle in handles:
        handle.cancel()


@pytest.mark.benchmark(group="timers-schedule-cancel")
@pytest.mark.parametrize("twin", TWINS)
def test_schedule_and_cancel_a_million(benchmark, twin):
    loops = {name: new_loop() for name, new_loop in BASELINE_LOOPS.items()}

    def baseline_args(loop):
        loop.run_until_complete(asyncio.sleep(0))  # drop the last round's cancelled handles
        return (loop.call_later,)

    wheel_loop = uvloop.new_event_loop()  # the gateway's loop, not running: nothing fires
    wheel = twin.TimerWheel(loop=wheel_loop)
    subject, baselines = interleaved(
        benchmark, 3, schedule_then_cancel, lambda: (wheel.call_later,),
        {name: (schedule_then_cancel, lambda loop=loop: baseline_args(loop))
         for name, loop in loops.items()},
    )
    wheel.close()
    for loop in (wheel_loop, *loops.values()):
        loop.close()
    report(
        benchmark, f"schedule+cancel x{COUNT:,} [{twin.__name__}]",
        wheel_ns_per_pair=subject / COUNT * 1e9,
        asyncio_ns_per_pair=baselines["asyncio"] / COUNT * 1e9,
        uvloop_ns_per_pair=baselines["uvloop"] / COUNT * 1e9,
        speedup_vs_asyncio=baselines["asyncio"] / subject,
        speedup_vs_uvloop=baselines["uvloop"] / subject,
    )


# --- memory per pending timer ------------------------------------------------------------

def bytes_per_timer(call_later):
    """Bytes tracemalloc sees allocated per pending timer (the list holding the handles
    is allocated before the measurement: only the timers count)."""
    handles = [None] * MEMORY_COUNT
    delays = DELAYS[:MEMORY_COUNT]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, delay in enumerate(delays):
            handles[i] = call_later(delay, on_timer, None)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    for handle in handles:
        handle.cancel()
    return (after - before) / MEMORY_COUNT


@pytest.mark.benchmark(group="timers-memory")
@pytest.mark.parametrize("twin", TWINS)
def test_memory_per_pending_timer(benchmark, twin):
    baselines = {}
    for name, new_loop in BASELINE_LOOPS.items():
        loop = new_loop()
        baselines[name] = bytes_per_timer(loop.call_later)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    loop = uvloop.new_event_loop()
    wheel = twin.TimerWheel(loop=loop)
    wheel.call_later(3600, on_timer)  # arms the loop once, before the measurement
    subject = benchmark.pedantic(bytes_per_timer, args=(wheel.call_later,), rounds=1, iterations=1)
    wheel.close()
    loop.close()
    report(
        benchmark, f"bytes per pending timer [{twin.__name__}]",
        wheel_bytes=subject,
        asyncio_timerhandle_bytes=baselines["asyncio"],
        uvloop_timerhandle_bytes=baselines["uvloop"],
        fraction_of_asyncio=subject / baselines["asyncio"],
        fraction_of_uvloop=subject / baselines["uvloop"],
    )


# --- firing ------------------------------------------------------------------------------

class FireRun:
    """COUNT timers, all already due, on a fresh loop; `run()` fires them all and
    returns the time from the loop's start to the last callback."""

    def __init__(self, new_loop, schedule_at):
        self.loop = new_loop()
        self.left = COUNT
        self.done = self.loop.create_future()
        self.schedule_at = schedule_at(self.loop)
        due = self.loop.time()
        for _ in range(COUNT):
            self.schedule_at(due, self.fired, None)

    def fired(self, arg):
        self.left -= 1
        if not self.left:
            self.done.set_result(time.perf_counter())

    def run(self):
        start = time.perf_counter()
        end = self.loop.run_until_complete(self.done)
        self.loop.close()
        return end - start


def loop_timers(loop):
    return loop.call_at


def wheel_timers(twin):
    def schedule_at(loop):
        return twin.TimerWheel(loop=loop).call_at
    return schedule_at


@pytest.mark.benchmark(group="timers-fire")
@pytest.mark.parametrize("twin", TWINS)
def test_fire_a_million_due_timers(benchmark, twin):
    elapsed, baselines = interleaved(
        benchmark, 3, FireRun.run, lambda: (FireRun(uvloop.new_event_loop, wheel_timers(twin)),),
        {name: (FireRun.run, lambda new_loop=new_loop: (FireRun(new_loop, loop_timers),))
         for name, new_loop in BASELINE_LOOPS.items()},
    )
    report(
        benchmark, f"fire x{COUNT:,} due timers [{twin.__name__}]",
        wheel_fired_per_second=COUNT / elapsed,
        asyncio_fired_per_second=COUNT / baselines["asyncio"],
        uvloop_fired_per_second=COUNT / baselines["uvloop"],
        speedup_vs_asyncio=baselines["asyncio"] / elapsed,
        speedup_vs_uvloop=baselines["uvloop"] / elapsed,
    )
