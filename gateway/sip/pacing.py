"""Send-rate limits for outgoing requests and bounds on how much runs at once:

    limit = RateLimit(rate=200.0, burst=20, wheel=wheel)
    await limit.acquire()          # returns at once while tokens last, else waits its turn
    pacer = Pacer(wheel, rate, burst, per_key_rate, per_key_burst)  # global + per key
    slots = Slots(count)           # try_take() / await take() / release()

The classes are `gateway.sip.buckets`'s (see there), compiled as `gateway._buckets`
when built: chosen here through `gateway._accel`, so callers never know which.

Depends on `gateway._accel` and the two twins only.
"""

from gateway import _accel

_impl = _accel.load("_buckets", "sip.buckets")

RateLimit = _impl.RateLimit
Pacer = _impl.Pacer
Slots = _impl.Slots

__all__ = ["Pacer", "RateLimit", "Slots"]
