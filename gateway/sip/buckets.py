"""Send-rate limits for outgoing requests: a token bucket whose waiters queue in order.

    limit = RateLimit(rate=200.0, burst=20, wheel=wheel)
    await limit.acquire()          # returns at once while tokens last, else waits its turn

Waiters are released in arrival order by ONE timer on the wheel per bucket (not one timer
per waiter), so 20,000 registrations queued at start cost 20,000 futures and a single
handle. `Pacer` chains a global bucket and one per key (the registrar), so a burst towards
one provider never exceeds its own rate nor the gateway's. Both also answer at once
(`try_acquire`), for callers that start work without a coroutine when nothing is queued.

`Slots(count)` bounds how much runs at once (the REGISTER exchanges under way): taken at
once with `try_take()`, or awaited in arrival order (`take()`, `async with slots:`).

This is the pure-Python twin and the reference of `_ext/buckets.pyx` (the compiled
`gateway._buckets`, whose classes keep their numbers as C doubles and longs);
`gateway.sip.pacing` chooses one through `gateway._accel`, and callers import from there.

Depends only on asyncio and a timer wheel passed in (`call_later(delay, cb, arg)`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable


class RateLimit:
    """A token bucket: `rate` per second, at most `burst` at once."""

    __slots__ = ("rate", "burst", "wheel", "clock", "_tokens", "_stamp", "_waiters", "_timer")

    def __init__(self, rate: float, burst: int, wheel: Any,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.wheel = wheel
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._waiters: deque[asyncio.Future] = deque()
        self._timer = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        """Take a token if one is there and nobody is queued before us."""
        if self._waiters:
            return False
        # `_refill()` written out: asked once or twice per registration
        now = self.clock()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._arm()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._tokens += 1.0  # granted just as we were cancelled: give it back
            raise

    def _arm(self) -> None:
        if self._timer is None and self._waiters:
            self._refill()
            delay = max(0.0, (1.0 - self._tokens) / self.rate)
            self._timer = self.wheel.call_later(delay, _release, self)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()


def _release(limit: RateLimit) -> None:
    limit._timer = None
    limit._refill()
    waiters = limit._waiters
    while waiters and limit._tokens >= 1.0:
        waiter = waiters.popleft()
        if waiter.done():  # cancelled while queued
            continue
        limit._tokens -= 1.0
        waiter.set_result(None)
    while waiters and waiters[0].done():
        waiters.popleft()
    limit._arm()


class Pacer:
    """A global rate limit and one per key (e.g. per registrar host)."""

    def __init__(self, wheel: Any, rate: float, burst: int, per_key_rate: float,
                 per_key_burst: int):
        self.wheel = wheel
        self.overall = RateLimit(rate, burst, wheel)
        self.per_key_rate = per_key_rate
        self.per_key_burst = per_key_burst
        self._keys: dict[str, RateLimit] = {}

    def limit_for(self, key: str) -> RateLimit:
        limit = self._keys.get(key)
        if limit is None:
            limit = self._keys[key] = RateLimit(self.per_key_rate, self.per_key_burst,
                                                self.wheel)
        return limit

    async def acquire(self, key: str) -> None:
        await self.limit_for(key).acquire()
        await self.overall.acquire()

    def try_acquire(self, key: str) -> bool:
        """Both tokens at once, or neither (nothing taken when either would wait)."""
        limit = self._keys.get(key) or self.limit_for(key)
        if not limit.try_acquire():
            return False
        if self.overall.try_acquire():
            return True
        limit._tokens += 1.0  # the per-key token goes back: this one waits its turn
        return False

    @property
    def waiting(self) -> int:
        return self.overall.waiting + sum(limit.waiting for limit in self._keys.values())

    def close(self) -> None:
        self.overall.close()
        for limit in self._keys.values():
            limit.close()


class Slots:
    """At most `count` holders at once; waiters served in arrival order. Unlike
    asyncio.Semaphore it can be taken without a coroutine (`try_take`), which never
    jumps the queue."""

    __slots__ = ("free", "_waiters")

    def __init__(self, count: int):
        if count < 1:
            raise ValueError("Slots needs a count of at least 1")
        self.free = count
        self._waiters: deque[asyncio.Future] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # (a cancelled waiter is skipped)
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self.free += 1

    async def __aenter__(self) -> None:
        await self.take()

    async def __aexit__(self, *exc) -> None:
        self.release()
