"""The gateway's timer facility: one hierarchical timing wheel for every timer.

    from gateway.timers import TimerWheel, TimerHandle, jitter, IMPLEMENTATION

    wheel = TimerWheel()                       # the running loop, 10 ms resolution
    handle = wheel.call_later(32.0, on_timer_b, transaction)   # on_timer_b(transaction)
    wheel.reschedule(handle, 64.0)             # O(1), also from inside the callback
    handle.cancel()

- `callback(arg)` is called with exactly one argument: pass the object the timer is
  about (a transaction, a flow) rather than building a closure per timer.
- Timers fire at the first tick (`resolution`, 10 ms) at or after their due time, in
  due order; a callback may schedule, cancel or reschedule any timer, itself included;
  an exception in one is logged (logger "gateway.timers") and the others still fire.
- The wheel wakes the loop with a single `loop.call_at` for its next due tick, and uses
  `loop.time()` (monotonic): wall-clock jumps do not move timers.
- `reschedule()` also takes a fired handle; a cancelled one is refused (ValueError).
- `TimerWheel(clock=fn)` never touches a loop: `advance()` fires what is due by
  `fn()` (or `advance(now)`), for tests and simulations.
- `close()` a wheel you are done with: it cancels what is pending (the compiled twin
  hides pending handles from the cyclic GC, so a dropped wheel would keep them).

This module is the one place that picks the compiled wheel (`gateway._timerwheel`, from
`_ext/timerwheel.pyx`) or its pure-Python twin (`gateway.timerwheel`);
GATEWAY_NO_EXTENSIONS=1 forces the twin. `IMPLEMENTATION` says which one is in use.
It depends on nothing in the gateway but `gateway._accel` and the twins.
"""

from __future__ import annotations

import math
import random

from gateway import _accel

_impl = _accel.load("_timerwheel", "timerwheel")

TimerWheel = _impl.TimerWheel
TimerHandle = _impl.TimerHandle
IMPLEMENTATION: str = _accel.chosen["_timerwheel"]

_random = random.Random()

__all__ = ["IMPLEMENTATION", "TimerHandle", "TimerWheel", "jitter"]


def jitter(delay: float, spread: float = 0.1, *, rng: random.Random | None = None) -> float:
    """A delay drawn uniformly from [delay * (1 - spread), delay], never below 0.

    For refreshes: instances created together must not all refresh together, and a
    refresh may come early but never late, so the jitter only ever shortens the delay.
    """
    delay = float(delay)
    spread = float(spread)
    if math.isnan(delay) or math.isinf(delay):
        raise ValueError(f"jitter needs a finite delay, got {delay!r}")
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"jitter spread must be within [0, 1], got {spread!r}")
    if delay <= 0.0:
        return 0.0
    low = delay * (1.0 - spread)
    value = (rng or _random).uniform(low, delay)
    # uniform() may round a hair outside [low, delay]; late is the one thing not allowed
    return min(max(value, 0.0), delay)
