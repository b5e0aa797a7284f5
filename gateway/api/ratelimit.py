"""Per-app token buckets for the device API (429 with Retry-After when empty).

Buckets are refilled lazily from a monotonic clock when they are asked, so an idle app costs
nothing and there is no timer. Depends on nothing else in the gateway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token; return 0.0 on success, else the seconds until one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class AppRateLimit:
    """One bucket per app id; the set of apps is the configured one, so this cannot grow
    without bound whatever the clients send."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, app_id: str) -> int:
        """0 when the request may go on, else whole seconds to wait (Retry-After)."""
        now = self.clock()
        bucket = self._buckets.get(app_id)
        if bucket is None:
            bucket = self._buckets[app_id] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        return max(1, math.ceil(wait)) if wait else 0
