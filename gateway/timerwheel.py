"""Hierarchical timing wheel: the pure-Python twin of `_ext/timerwheel.pyx`.

Callers import `gateway.timers`, never this module: it picks this twin or the compiled
one. Both must behave identically (same ticks, same firing order); the tests run the
same bodies against both and compare them on random schedules.

Design (the comments in the Cython twin refer to this description):

- Time is counted in integer *ticks* of `resolution` seconds on the loop's monotonic
  clock. A timer due at `when` belongs to tick ceil(when / resolution) and fires when the
  wheel has advanced to that tick: never early, at most one resolution late.
- LEVELS levels of 64 slots. A timer sits at the level of the highest 6-bit digit in
  which its tick differs from the wheel's current tick, in the slot named by that digit
  (at 10 ms: level 0 has 10 ms slots spanning 0.64 s, level 1 0.64 s slots spanning 41 s,
  level 2 41 s slots spanning 44 min, level 3 44 min slots spanning 47 h, level 4 47 h
  slots spanning 124 days, level 5 124-day slots spanning 22 years). Ticks beyond the
  top level go to one overflow list. Every slot is a doubly linked list of handles, so
  schedule, cancel and reschedule are O(1).
- Each slot remembers the smallest tick put into it (a lower bound once timers are
  cancelled). Upper slots are cascaded lazily, when the wheel reaches that smallest tick
  rather than when it enters the slot's range: the earliest timer of the slot then fires
  at once and the others move down. A timer moves down at most once per level and a
  cancelled one never moves, so the only cascading cost is for timers that come due
  (the overflow list, beyond 22 years, is re-sorted whenever its earliest comes due).
- A bitmap per level finds the next non-empty slot without scanning, so the event-loop
  driver sleeps until exactly the next event: one `loop.call_at` at a time.
- Callbacks get `callback(arg)`: no closure per timer. An exception in one is logged and
  the others still fire.

Depends only on the standard library (asyncio for the running loop, logging, math).
"""

from __future__ import annotations

import asyncio
import logging
import math

LEVEL_BITS = 6
SLOTS = 1 << LEVEL_BITS
MASK = SLOTS - 1
LEVELS = 6
OVERFLOW = LEVELS * SLOTS  # index of the overflow list among the slot heads
MAX_TICK = 1 << 61  # far enough for any delay (73 million years at 1 ms)
NOT_ARMED = MAX_TICK * 2  # above any tick, even one clamped past MAX_TICK
# A due time further out than this is woken for at this distance and re-armed: some
# loops overflow on huge delays, and one wake a day costs nothing.
MAX_ARM_DELAY = 86400.0

logger = logging.getLogger("gateway.timers")


class TimerHandle:
    """One scheduled timer. Pending while linked in a slot; cancelled once its callback
    is dropped; fired otherwise (a fired handle can be rescheduled)."""

    __slots__ = ("_callback", "_arg", "_wheel", "_prev", "_next", "_when")

    def __init__(self, wheel, when, callback, arg):
        self._wheel = wheel
        self._when = when
        self._callback = callback
        self._arg = arg
        self._prev = None
        self._next = None

    @property
    def when(self) -> float:
        """Due time, on the clock of the wheel's loop."""
        return self._when

    def cancelled(self) -> bool:
        return self._callback is None

    def pending(self) -> bool:
        """True while scheduled and not yet fired or cancelled."""
        return self._prev is not None

    def cancel(self) -> None:
        """Cancel the timer; idempotent, also on a fired or closed wheel's handle."""
        if self._prev is not None:
            self._unlink()
            # the loop stays armed: one needless wake-up later is cheaper than a
            # disarm and re-arm each time a lone timer is set and cancelled
            self._wheel._count -= 1
        # drop the references at once: a cancelled timer must not keep its owner alive
        self._callback = None
        self._arg = None

    def _unlink(self) -> None:
        prev = self._prev
        nxt = self._next
        prev._next = nxt
        nxt._prev = prev
        self._prev = self._next = None

    def __repr__(self) -> str:
        state = "pending" if self._prev is not None else (
            "cancelled" if self._callback is None else "fired")
        # never the arg: it may be a registration holding credentials
        name = getattr(self._callback, "__qualname__", type(self._callback).__name__)
        return f"<TimerHandle {state} when={self._when:.3f} callback={name}>"


def _sentinel() -> TimerHandle:
    head = TimerHandle(None, 0.0, None, None)
    head._prev = head._next = head
    return head


class TimerWheel:
    """Hierarchical timing wheel driven by one `loop.call_at`, or by hand.

    With `clock` (a callable returning seconds) the wheel never touches an event loop:
    call `advance()` to fire what is due. Otherwise it uses `loop` (default: the running
    loop at first use) for time and wakes itself with one `loop.call_at` for the next
    event.
    """

    def __init__(self, loop=None, resolution: float = 0.01, *, clock=None):
        if not isinstance(resolution, (int, float)) or not 0 < resolution < 3600 or (
                resolution != resolution):
            raise ValueError(f"resolution must be a number of seconds in (0, 3600), got {resolution!r}")
        if clock is not None and loop is not None:
            raise ValueError("give either a loop or a clock, not both")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._resolution = float(resolution)
        self._loop = loop
        self._clock = clock
        # the clock, or the loop's bound time(): one attribute lookup less per timer
        self._time = clock if clock is not None else (None if loop is None else loop.time)
        self._heads = [_sentinel() for _ in range(OVERFLOW + 1)]
        self._min = [0] * (OVERFLOW + 1)
        self._bits = [0] * LEVELS
        self._firing = _sentinel()
        self._count = 0
        self._current = -1  # last tick processed; -1 until the clock is first read
        self._closed = False
        self._advancing = False
        self._armed = None  # the loop's handle for our next wake-up
        # schedule() arms the loop when a tick is below this: -1 means never (driven by
        # hand, or inside advance(), which re-arms when done)
        self._armed_tick = -1 if clock is not None else NOT_ARMED
        self._wakeups = 0
        if clock is not None:
            self._current = self._tick_floor(self._check_time(clock()))
        elif loop is not None:
            self._current = self._tick_floor(loop.time())

    # --- public API ------------------------------------------------------------------

    def call_later(self, delay, callback, arg=None) -> TimerHandle:
        """Call `callback(arg)` after `delay` seconds."""
        return self.call_at(self._now() + math.ldexp(delay, 0), callback, arg)

    def call_at(self, when, callback, arg=None) -> TimerHandle:
        """Call `callback(arg)` at `when`, on the loop's clock."""
        if not callable(callback):
            raise TypeError(f"timer callback must be callable, got {type(callback).__name__}")
        when = math.ldexp(when, 0)  # see _check_time()
        if when != when:
            raise ValueError("a time must not be NaN")
        if self._current < 0:
            self._now()
        if self._closed:
            raise RuntimeError("TimerWheel is closed")
        handle = TimerHandle(self, when, callback, arg)
        self._schedule(handle, when)
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        """Same as `handle.cancel()`."""
        self._own(handle)
        handle.cancel()

    def reschedule(self, handle: TimerHandle, delay) -> None:
        """Move a pending or fired timer to `delay` seconds from now, in O(1). Works from
        inside callbacks, also on the handle being fired."""
        self.reschedule_at(handle, self._now() + self._check_time(delay))

    def reschedule_at(self, handle: TimerHandle, when) -> None:
        self._own(handle)
        when = self._check_time(when)
        if handle._callback is None:
            raise ValueError("cannot reschedule a cancelled timer; schedule a new one")
        if self._closed:
            raise RuntimeError("TimerWheel is closed")
        if handle._prev is not None:
            handle._unlink()
            self._count -= 1
        handle._when = when
        self._schedule(handle, when)

    def advance(self, now=None) -> int:
        """Fire every timer due at `now` (default: the clock's or loop's time), in due
        order; returns how many fired."""
        if now is None:
            now = self._now()
        target = self._tick_floor(self._check_time(now))
        if self._current < 0:
            self._current = target
        try:
            return self._advance_to(target)
        finally:
            self._rearm()

    def next_due(self):
        """Time of the next event the wheel will wake for, or None when idle. It may be
        earlier than any pending timer after cancellations (never later)."""
        tick = self._next_event()
        return None if tick is None else tick * self._resolution

    def close(self) -> None:
        """Cancel every timer and stop waking the loop; the wheel refuses new timers."""
        self._closed = True
        for head in self._heads + [self._firing]:
            node = head._next
            while node is not head:
                nxt = node._next
                node._prev = node._next = None
                node._callback = node._arg = None
                node = nxt
            head._prev = head._next = head
        self._bits = [0] * LEVELS
        self._count = 0
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._armed_tick = -1

    def __len__(self) -> int:
        return self._count

    @property
    def resolution(self) -> float:
        return self._resolution

    @property
    def wakeups(self) -> int:
        """How many times the event loop has woken the wheel (tests count these)."""
        return self._wakeups

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<TimerWheel python pending={self._count} resolution={self._resolution}>"

    # --- time ------------------------------------------------------------------------

    def _now(self) -> float:
        time = self._time
        if time is None:
            time = self._bind().time
        return self._check_time(time())

    def _bind(self):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "TimerWheel needs a running event loop, or loop= or clock= at creation"
            ) from None
        self._loop = loop
        self._time = loop.time
        if self._current < 0:
            self._current = self._tick_floor(loop.time())
        return loop

    @staticmethod
    def _check_time(value) -> float:
        # ldexp(x, 0) converts exactly as a C double parameter of the compiled twin does
        # (numbers and objects with __float__, not strings), so both raise alike
        value = math.ldexp(value, 0)
        if value != value:
            raise ValueError("a time must not be NaN")
        return value

    def _tick_ceil(self, when: float) -> int:
        """The tick a timer due at `when` belongs to (rounded up: never early)."""
        return _clamp_tick(when / self._resolution, math.ceil)

    def _tick_floor(self, now: float) -> int:
        """The last tick fully reached at time `now`."""
        return _clamp_tick(now / self._resolution, math.floor)

    # --- the wheel -------------------------------------------------------------------

    def _schedule(self, handle: TimerHandle, when: float) -> None:
        q = when / self._resolution  # _tick_ceil() inlined: the hot path of call_at()
        tick = math.ceil(q) if 0.0 < q < MAX_TICK else _clamp_tick(q, math.ceil)
        current = self._current
        if tick <= current:  # that tick is already processed: the next one
            tick = current + 1
        self._link(handle, tick)
        self._count += 1
        if tick < self._armed_tick:
            self._arm(tick)

    def _link(self, handle: TimerHandle, tick: int) -> None:
        """Append `handle` to the slot of `tick` (>= current tick)."""
        current = self._current
        diff = tick ^ current
        if diff < SLOTS:
            level = 0
            index = tick & MASK
        else:
            level = (diff.bit_length() - 1) // LEVEL_BITS
            if level >= LEVELS:
                index = OVERFLOW
            else:
                index = level * SLOTS + ((tick >> (level * LEVEL_BITS)) & MASK)
        head = self._heads[index]
        last = head._prev
        if last is head:
            self._min[index] = tick
            if index != OVERFLOW:
                self._bits[level] |= 1 << (index & MASK)
        elif tick < self._min[index]:
            self._min[index] = tick
        handle._prev = last
        handle._next = head
        last._next = handle
        head._prev = handle

    def _next_event(self):
        """The smallest tick at which there is work (fire or cascade), or None."""
        current = self._current
        heads = self._heads
        mins = self._min
        best = NOT_ARMED
        look_ahead = True
        for level in range(LEVELS):
            digit = (current >> (level * LEVEL_BITS)) & MASK
            base = level * SLOTS
            if level:
                # the slot holding the current tick at this level waits for its cascade
                head = heads[base + digit]
                if head._next is not head and mins[base + digit] < best:
                    best = mins[base + digit]
            if look_ahead:
                # later slots of a lower level come before those of a higher one
                bits = self._bits[level] >> (digit + 1)
                while bits:
                    slot = digit + (bits & -bits).bit_length()
                    head = heads[base + slot]
                    if head._next is not head:
                        if mins[base + slot] < best:
                            best = mins[base + slot]
                        look_ahead = False
                        break
                    self._bits[level] &= ~(1 << slot)  # emptied by cancels
                    bits &= bits - 1
        head = heads[OVERFLOW]
        if head._next is not head and mins[OVERFLOW] < best:
            best = mins[OVERFLOW]
        return None if best == NOT_ARMED else best

    def _advance_to(self, target: int) -> int:
        if self._advancing:
            raise RuntimeError("TimerWheel.advance() must not be called from a timer callback")
        self._advancing = True
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._armed_tick = -1  # callbacks' new timers do not arm; _rearm() does
        fired = 0
        try:
            while self._count:
                tick = self._next_event()
                if tick is None or tick > target:
                    break
                fired += self._step(tick)
            if target > self._current:
                self._current = target
        finally:
            self._advancing = False
            if self._clock is None:
                self._armed_tick = NOT_ARMED
        return fired

    def _step(self, tick: int) -> int:
        """Process tick `tick`: cascade the upper slots due by then, fire level 0."""
        self._current = tick
        heads = self._heads
        mins = self._min
        if heads[OVERFLOW]._next is not heads[OVERFLOW] and mins[OVERFLOW] <= tick:
            self._cascade(OVERFLOW, tick)
        for level in range(LEVELS - 1, 0, -1):
            index = level * SLOTS + ((tick >> (level * LEVEL_BITS)) & MASK)
            head = heads[index]
            if head._next is not head and mins[index] <= tick:
                self._cascade(index, tick)
        head = heads[tick & MASK]
        if head._next is head:
            return 0
        return self._fire(head, tick)

    def _cascade(self, index: int, tick: int) -> None:
        head = self._heads[index]
        node = head._next
        head._next = head._prev = head
        if index != OVERFLOW:
            self._bits[index // SLOTS] &= ~(1 << (index & MASK))
        # re-placing never puts a timer back into this slot: its digit now equals the
        # current tick's, so a timer lands at a lower level (or at `tick` when due)
        while node is not head:
            nxt = node._next
            due = self._tick_ceil(node._when)
            self._link(node, due if due > tick else tick)
            node = nxt

    def _fire(self, head: TimerHandle, tick: int) -> int:
        firing = self._firing
        first = head._next
        last = head._prev
        head._next = head._prev = head
        self._bits[0] &= ~(1 << (tick & MASK))
        firing._next = first
        first._prev = firing
        firing._prev = last
        last._next = firing
        fired = 0
        try:
            while True:
                handle = firing._next
                if handle is firing:
                    break
                handle._unlink()
                self._count -= 1
                fired += 1
                callback = handle._callback
                try:
                    callback(handle._arg)
                except Exception:
                    log_failure(callback)
        finally:
            # only reached with timers left when a BaseException escapes: keep them due
            node = firing._next
            firing._next = firing._prev = firing
            while node is not firing:
                nxt = node._next
                self._link(node, tick + 1)
                node = nxt
        return fired

    # --- the event-loop driver -------------------------------------------------------

    def _arm(self, tick: int) -> None:
        loop = self._loop
        if loop is None:
            loop = self._bind()
        if self._armed is not None:
            self._armed.cancel()
        at = tick * self._resolution
        limit = loop.time() + MAX_ARM_DELAY
        if at > limit:
            tick = self._tick_floor(limit)
            at = tick * self._resolution
        self._armed_tick = tick
        self._armed = loop.call_at(at, self._wake)

    def _disarm(self) -> None:
        self._armed.cancel()
        self._armed = None
        self._armed_tick = NOT_ARMED

    def _rearm(self) -> None:
        if self._clock is not None or self._closed or self._advancing:
            return
        if self._armed is not None:
            self._disarm()
        if self._count:
            tick = self._next_event()
            if tick is not None:
                self._arm(tick)

    def _wake(self) -> None:
        self._wakeups += 1
        woke = self._armed_tick
        self._armed = None
        self._armed_tick = NOT_ARMED
        # the loop may wake us a hair before the tick (its clock has ms steps): the tick
        # it was armed for is due all the same
        target = max(self._tick_floor(self._loop.time()), woke)
        try:
            self._advance_to(target)
        finally:
            self._rearm()

    def _own(self, handle) -> None:
        if not isinstance(handle, TimerHandle) or handle._wheel is not self:
            raise ValueError("that timer handle does not belong to this TimerWheel")


def _clamp_tick(q: float, rounding) -> int:
    if q >= MAX_TICK:
        return MAX_TICK
    if q <= 0.0:
        return 0
    return rounding(q)


def log_failure(callback) -> None:
    """Log the exception a timer callback raised (shared by both twins). Only the
    callback's name: its argument may hold credentials."""
    name = getattr(callback, "__qualname__", type(callback).__name__)
    logger.exception("timer callback %s failed", name)
