# cython: language_level=3
"""Token buckets and slots, compiled: the twin of `gateway/sip/buckets.py`.

Built as `gateway._buckets`; `gateway.sip.pacing` picks this module or the pure-Python
twin through `gateway._accel`. The twin is the reference (the tests hold both to the
same behaviour); here the numbers are C doubles and longs, and a bucket on
`time.monotonic` reads that clock without a Python call: every registration asks the
pacer (`Pacer.try_acquire`, two buckets) and the slots (`Slots.try_take`, `release`)
once, from the compiled registration cycle.

Its fields and C methods are declared in `gateway/_buckets.pxd` (the registration
cycle cimports them). Depends only on asyncio and a timer wheel passed in (`call_later(delay, cb, arg)`).
"""

import asyncio
import time
from collections import deque

from cpython.object cimport Py_SIZE
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef object _monotonic = time.monotonic
cdef object _deque = deque


cdef inline bint _queued(waiters) except -1:
    """`bool(waiters)`: a deque's length is its size field (no call to ask it)."""
    if type(waiters) is _deque:
        return Py_SIZE(waiters) > 0
    return bool(waiters)


cdef class RateLimit:
    """The twin's `RateLimit`: `rate` per second, at most `burst` at once."""

    def __init__(self, rate, burst, wheel, clock=_monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.wheel = wheel
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._waiters = deque()
        self._timer = None

    cdef double _now(self) except? -1.0:
        cdef timespec ts
        if self.clock is _monotonic:  # (what `time.monotonic()` reads, without a float)
            clock_gettime(CLOCK_MONOTONIC, &ts)
            return ts.tv_sec + ts.tv_nsec * 1e-9
        return self.clock()

    @property
    def waiting(self):
        return len(self._waiters)

    def _refill(self):
        self._fill()

    cdef _fill(self):
        cdef double now = self._now()
        cdef double tokens = self._tokens + (now - self._stamp) * self.rate
        self._tokens = tokens if tokens < self.burst else self.burst
        self._stamp = now

    cpdef bint try_acquire(self) except -1:
        """Take a token if one is there and nobody is queued before us."""
        if _queued(self._waiters):
            return False
        self._fill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def acquire(self):
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

    def _arm(self):
        cdef double delay
        if self._timer is None and self._waiters:
            self._fill()
            delay = (1.0 - self._tokens) / self.rate
            self._timer = self.wheel.call_later(delay if delay > 0.0 else 0.0, _release,
                                                self)

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()


def _release(RateLimit limit):
    """The twin's `_release`: the bucket's timer hands tokens to its waiters in order."""
    limit._timer = None
    limit._fill()
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


cdef class Pacer:
    """The twin's `Pacer`: a global rate limit and one per key."""

    def __init__(self, wheel, rate, burst, per_key_rate, per_key_burst):
        self.wheel = wheel
        self.overall = RateLimit(rate, burst, wheel)
        self.per_key_rate = per_key_rate
        self.per_key_burst = per_key_burst
        self._keys = {}
        self._last_key = None
        self._last_limit = None

    cpdef RateLimit limit_for(self, key):
        limit = self._keys.get(key)
        if limit is None:
            limit = self._keys[key] = RateLimit(self.per_key_rate, self.per_key_burst,
                                                self.wheel)
        return limit

    async def acquire(self, key):
        await self.limit_for(key).acquire()
        await self.overall.acquire()

    cpdef bint try_acquire(self, key) except -1:
        """Both tokens at once, or neither (nothing taken when either would wait)."""
        cdef RateLimit found
        if key is self._last_key and key is not None:
            # the bucket found for this very key object last time (the callers of a
            # registrar ask with one shared key): `_keys` maps a key to its bucket for
            # good (only `limit_for` adds, nothing replaces or removes), so it still is
            found = self._last_limit
        else:
            limit = self._keys.get(key)
            found = limit if limit is not None else self.limit_for(key)
            self._last_key, self._last_limit = key, found
        if not found.try_acquire():
            return False
        if self.overall.try_acquire():
            return True
        found._tokens += 1.0  # the per-key token goes back: this one waits its turn
        return False

    @property
    def waiting(self):
        return self.overall.waiting + sum(limit.waiting for limit in self._keys.values())

    def close(self):
        self.overall.close()
        for limit in self._keys.values():
            limit.close()


cdef class Slots:
    """The twin's `Slots`: at most `count` holders at once, waiters in arrival order."""

    def __init__(self, long count):
        if count < 1:
            raise ValueError("Slots needs a count of at least 1")
        self.free = count
        self._waiters = deque()

    cpdef bint try_take(self) except -1:
        if self.free > 0 and not _queued(self._waiters):
            self.free -= 1
            return True
        return False

    async def take(self):
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

    cpdef release(self):
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # (a cancelled waiter is skipped)
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self.free += 1

    async def __aenter__(self):
        await self.take()

    async def __aexit__(self, *exc):
        self.release()
