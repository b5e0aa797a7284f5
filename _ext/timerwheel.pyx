# cython: language_level=3, cdivision=True
"""Hierarchical timing wheel, compiled: the twin of `gateway/timerwheel.py`.

Built as `gateway._timerwheel`; callers import `gateway.timers`, which picks this module
or the pure-Python twin. The design is described once, in the Python twin's docstring;
this file follows it line for line with C types, so the two fire the same timers at the
same ticks in the same order (the tests check it on random schedules).

A handle is an 80-byte object (two links, the callback, its argument, the wheel, the due
time as a C double) and is the only per-timer allocation.

May depend only on the standard library and on the Python twin (for the shared failure
logging), never on the rest of the gateway.
"""

cimport cython
from libc.math cimport ceil, floor
from libc.stdint cimport int64_t, uint64_t
# (the fields and C methods are declared in gateway/_timerwheel.pxd, for other compiled
# modules to cimport: `c_call_later`, `c_reschedule`, `c_cancel`)

import asyncio

from gateway.timerwheel import log_failure


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil
    int __builtin_clzll(unsigned long long) nogil

cdef extern from "Python.h":
    void PyObject_GC_Track(object)
    void PyObject_GC_UnTrack(object)
    int PyObject_GC_IsTracked(object)


cdef int64_t MAX_TICK = (<int64_t>1) << 61
cdef double MAX_TICK_D = <double>((<int64_t>1) << 61)
cdef int64_t NOT_ARMED = MAX_TICK * 2  # above any tick, even one clamped past MAX_TICK
cdef double MAX_ARM_DELAY = 86400.0


@cython.freelist(256)
cdef class TimerHandle:
    """One scheduled timer. Pending while linked in a slot; cancelled once its callback
    is dropped; fired otherwise (a fired handle can be rescheduled)."""

    def __init__(self):
        raise TypeError("timer handles come from TimerWheel.call_later() or call_at()")

    @property
    def when(self):
        """Due time, on the clock of the wheel's loop."""
        return self._when

    def cancelled(self):
        return self._callback is None

    def pending(self):
        """True while scheduled and not yet fired or cancelled."""
        return self._prev is not None

    def cancel(self):
        """Cancel the timer; idempotent, also on a fired or closed wheel's handle."""
        self.c_cancel()

    cdef int c_cancel(self) except -1:
        if self._prev is not None:
            _unlink(self)
            _track(self)
            # the loop stays armed: one needless wake-up later is cheaper than a
            # disarm and re-arm each time a lone timer is set and cancelled
            self._wheel._count -= 1
        # drop the references at once: a cancelled timer must not keep its owner alive
        self._callback = None
        self._arg = None
        return 0

    def __repr__(self):
        if self._prev is not None:
            state = "pending"
        elif self._callback is None:
            state = "cancelled"
        else:
            state = "fired"
        # never the arg: it may be a registration holding credentials
        name = getattr(self._callback, "__qualname__", type(self._callback).__name__)
        return f"<TimerHandle {state} when={self._when:.3f} callback={name}>"


cdef inline void _unlink(TimerHandle handle):
    cdef TimerHandle prev = handle._prev
    cdef TimerHandle nxt = handle._next
    prev._next = nxt
    nxt._prev = prev
    handle._prev = None
    handle._next = None


# A pending handle is kept alive by its wheel, and so is all it refers to: the cyclic
# garbage collector has nothing to find there, and with a million timers its full
# collections would walk every handle again and again (that cost more than scheduling
# itself). So a handle is untracked while linked in the wheel and tracked again when it
# leaves it (fired, cancelled, closed), when it may become part of an unreachable cycle.
# The price: a wheel dropped with timers pending and without close() leaks them.
cdef inline void _untrack(TimerHandle handle):
    PyObject_GC_UnTrack(handle)


cdef inline void _track(TimerHandle handle):
    if not PyObject_GC_IsTracked(handle):
        PyObject_GC_Track(handle)


cdef TimerHandle _new_handle(TimerWheel wheel, double when, object callback, object arg):
    cdef TimerHandle handle = TimerHandle.__new__(TimerHandle)
    handle._wheel = wheel
    handle._when = when
    handle._callback = callback
    handle._arg = arg
    return handle


cdef TimerHandle _sentinel():
    cdef TimerHandle head = TimerHandle.__new__(TimerHandle)
    head._prev = head
    head._next = head
    return head


cdef inline double _check_time(double value) except? -1.0:
    if value != value:
        raise ValueError("a time must not be NaN")
    return value


cdef inline int64_t _clamp_tick(double q, bint up):
    if q >= MAX_TICK_D:
        return MAX_TICK
    if q <= 0.0:
        return 0
    return <int64_t>(ceil(q) if up else floor(q))


cdef inline int64_t _tick_ceil(TimerWheel wheel, double when):
    """The tick a timer due at `when` belongs to (rounded up: never early)."""
    return _clamp_tick(when / wheel._resolution, True)


cdef inline int64_t _tick_floor(TimerWheel wheel, double now):
    """The last tick fully reached at time `now`."""
    return _clamp_tick(now / wheel._resolution, False)


cdef class TimerWheel:
    """Hierarchical timing wheel driven by one `loop.call_at`, or by hand.

    With `clock` (a callable returning seconds) the wheel never touches an event loop:
    call `advance()` to fire what is due. Otherwise it uses `loop` (default: the running
    loop at first use) for time and wakes itself with one `loop.call_at` for the next
    event.
    """

    def __init__(self, loop=None, resolution=0.01, *, clock=None):
        if not isinstance(resolution, (int, float)) or not 0 < resolution < 3600 or (
                resolution != resolution):
            raise ValueError(f"resolution must be a number of seconds in (0, 3600), got {resolution!r}")
        if clock is not None and loop is not None:
            raise ValueError("give either a loop or a clock, not both")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        cdef int i
        self._resolution = float(resolution)
        self._loop = loop
        self._clock = clock
        self._time = clock if clock is not None else (None if loop is None else loop.time)
        self._heads = [_sentinel() for i in range(OVERFLOW + 1)]
        for i in range(OVERFLOW + 1):
            self._min[i] = 0
        for i in range(LEVELS):
            self._bits[i] = 0
        self._firing = _sentinel()
        self._count = 0
        self._current = -1  # last tick processed; -1 until the clock is first read
        self._closed = False
        self._advancing = False
        self._armed = None  # the loop's handle for our next wake-up
        # scheduling arms the loop when a tick is below this: -1 means never (driven by
        # hand, or inside advance(), which re-arms when done)
        self._armed_tick = -1 if clock is not None else NOT_ARMED
        self._wakeups = 0
        if clock is not None:
            self._current = _tick_floor(self, _check_time(clock()))
        elif loop is not None:
            self._current = _tick_floor(self, loop.time())

    # --- public API ------------------------------------------------------------------

    def call_later(self, double delay, callback, arg=None):
        """Call `callback(arg)` after `delay` seconds."""
        return self.c_call_later(delay, callback, arg)

    cdef TimerHandle c_call_later(self, double delay, callback, arg):
        return self._call_at(self._now() + _check_time(delay), callback, arg)

    def call_at(self, double when, callback, arg=None):
        """Call `callback(arg)` at `when`, on the loop's clock."""
        return self._call_at(when, callback, arg)

    cdef TimerHandle _call_at(self, double when, callback, arg):
        if not callable(callback):
            raise TypeError(f"timer callback must be callable, got {type(callback).__name__}")
        _check_time(when)
        if self._current < 0:
            self._now()
        if self._closed:
            raise RuntimeError("TimerWheel is closed")
        cdef TimerHandle handle = _new_handle(self, when, callback, arg)
        self._schedule(handle, when)
        return handle

    def cancel(self, handle):
        """Same as `handle.cancel()`."""
        self._own(handle)
        handle.cancel()

    def reschedule(self, handle, double delay):
        """Move a pending or fired timer to `delay` seconds from now, in O(1). Works from
        inside callbacks, also on the handle being fired."""
        self.c_reschedule(handle, delay)

    cdef int c_reschedule(self, handle, double delay) except -1:
        return self._reschedule_at(handle, self._now() + _check_time(delay))

    def reschedule_at(self, handle, double when):
        self._reschedule_at(handle, when)

    cdef int _reschedule_at(self, handle, double when) except -1:
        self._own(handle)
        _check_time(when)
        cdef TimerHandle h = <TimerHandle>handle
        if h._callback is None:
            raise ValueError("cannot reschedule a cancelled timer; schedule a new one")
        if self._closed:
            raise RuntimeError("TimerWheel is closed")
        if h._prev is not None:
            _unlink(h)
            self._count -= 1
        h._when = when
        self._schedule(h, when)
        return 0

    def advance(self, now=None):
        """Fire every timer due at `now` (default: the clock's or loop's time), in due
        order; returns how many fired."""
        cdef double t = self._now() if now is None else _check_time(now)
        cdef int64_t target = _tick_floor(self, t)
        if self._current < 0:
            self._current = target
        try:
            return self._advance_to(target)
        finally:
            self._rearm()

    def next_due(self):
        """Time of the next event the wheel will wake for, or None when idle. It may be
        earlier than any pending timer after cancellations (never later)."""
        cdef int64_t tick = self._next_event()
        return None if tick == NOT_ARMED else tick * self._resolution

    def close(self):
        """Cancel every timer and stop waking the loop; the wheel refuses new timers."""
        cdef TimerHandle head, node, nxt
        cdef int i
        self._closed = True
        for head in self._heads + [self._firing]:
            node = head._next
            while node is not head:
                nxt = node._next
                node._prev = None
                node._next = None
                node._callback = None
                node._arg = None
                _track(node)
                node = nxt
            head._prev = head
            head._next = head
        for i in range(LEVELS):
            self._bits[i] = 0
        self._count = 0
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._armed_tick = -1

    def __len__(self):
        return self._count

    @property
    def resolution(self):
        return self._resolution

    @property
    def wakeups(self):
        """How many times the event loop has woken the wheel (tests count these)."""
        return self._wakeups

    @property
    def closed(self):
        return self._closed

    def __repr__(self):
        return f"<TimerWheel cython pending={self._count} resolution={self._resolution}>"

    # --- time ------------------------------------------------------------------------

    cdef double _now(self) except? -1.0:
        time = self._time
        if time is None:
            time = self._bind().time
        return _check_time(time())

    cdef object _bind(self):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "TimerWheel needs a running event loop, or loop= or clock= at creation"
            ) from None
        self._loop = loop
        self._time = loop.time
        if self._current < 0:
            self._current = _tick_floor(self, loop.time())
        return loop

    # --- the wheel -------------------------------------------------------------------

    cdef int _schedule(self, TimerHandle handle, double when) except -1:
        cdef int64_t tick = _tick_ceil(self, when)
        if tick <= self._current:  # that tick is already processed: the next one
            tick = self._current + 1
        self._link(handle, tick)
        self._count += 1
        if tick < self._armed_tick:
            self._arm(tick)
        return 0

    cdef void _link(self, TimerHandle handle, int64_t tick):
        """Append `handle` to the slot of `tick` (>= current tick)."""
        cdef uint64_t diff = <uint64_t>(tick ^ self._current)
        cdef int level, index
        if diff < SLOTS:
            level = 0
            index = tick & MASK
        else:
            level = (63 - __builtin_clzll(diff)) // LEVEL_BITS
            if level >= LEVELS:
                index = OVERFLOW
            else:
                index = level * SLOTS + ((tick >> (level * LEVEL_BITS)) & MASK)
        cdef TimerHandle head = <TimerHandle>self._heads[index]
        cdef TimerHandle last = head._prev
        if last is head:
            self._min[index] = tick
            if index != OVERFLOW:
                self._bits[level] |= (<uint64_t>1) << (index & MASK)
        elif tick < self._min[index]:
            self._min[index] = tick
        handle._prev = last
        handle._next = head
        last._next = handle
        head._prev = handle
        _untrack(handle)

    cdef int64_t _next_event(self):
        """The smallest tick at which there is work (fire or cascade), or NOT_ARMED."""
        cdef int64_t current = self._current
        cdef int64_t best = NOT_ARMED
        cdef bint look_ahead = True
        cdef int level, digit, base, slot
        cdef uint64_t bits
        cdef TimerHandle head
        for level in range(LEVELS):
            digit = (current >> (level * LEVEL_BITS)) & MASK
            base = level * SLOTS
            if level:
                # the slot holding the current tick at this level waits for its cascade
                head = <TimerHandle>self._heads[base + digit]
                if head._next is not head and self._min[base + digit] < best:
                    best = self._min[base + digit]
            if look_ahead and digit < MASK:
                # later slots of a lower level come before those of a higher one
                bits = self._bits[level] >> (digit + 1)
                while bits:
                    slot = digit + 1 + __builtin_ctzll(bits)
                    head = <TimerHandle>self._heads[base + slot]
                    if head._next is not head:
                        if self._min[base + slot] < best:
                            best = self._min[base + slot]
                        look_ahead = False
                        break
                    self._bits[level] &= ~((<uint64_t>1) << slot)  # emptied by cancels
                    bits &= bits - 1
        head = <TimerHandle>self._heads[OVERFLOW]
        if head._next is not head and self._min[OVERFLOW] < best:
            best = self._min[OVERFLOW]
        return best

    cdef Py_ssize_t _advance_to(self, int64_t target) except -1:
        if self._advancing:
            raise RuntimeError("TimerWheel.advance() must not be called from a timer callback")
        self._advancing = True
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._armed_tick = -1  # callbacks' new timers do not arm; _rearm() does
        cdef Py_ssize_t fired = 0
        cdef int64_t tick
        try:
            while self._count:
                tick = self._next_event()
                if tick == NOT_ARMED or tick > target:
                    break
                fired += self._step(tick)
            if target > self._current:
                self._current = target
        finally:
            self._advancing = False
            if self._clock is None:
                self._armed_tick = NOT_ARMED
        return fired

    cdef Py_ssize_t _step(self, int64_t tick) except -1:
        """Process tick `tick`: cascade the upper slots due by then, fire level 0."""
        cdef int level, index
        cdef TimerHandle head
        self._current = tick
        head = <TimerHandle>self._heads[OVERFLOW]
        if head._next is not head and self._min[OVERFLOW] <= tick:
            self._cascade(OVERFLOW, tick)
        for level in range(LEVELS - 1, 0, -1):
            index = level * SLOTS + ((tick >> (level * LEVEL_BITS)) & MASK)
            head = <TimerHandle>self._heads[index]
            if head._next is not head and self._min[index] <= tick:
                self._cascade(index, tick)
        head = <TimerHandle>self._heads[tick & MASK]
        if head._next is head:
            return 0
        return self._fire(head, tick)

    cdef void _cascade(self, int index, int64_t tick):
        cdef TimerHandle head = <TimerHandle>self._heads[index]
        cdef TimerHandle node = head._next
        cdef TimerHandle nxt
        cdef int64_t due
        head._next = head
        head._prev = head
        if index != OVERFLOW:
            self._bits[index // SLOTS] &= ~((<uint64_t>1) << (index & MASK))
        # re-placing never puts a timer back into this slot: its digit now equals the
        # current tick's, so a timer lands at a lower level (or at `tick` when due)
        while node is not head:
            nxt = node._next
            due = _tick_ceil(self, node._when)
            self._link(node, due if due > tick else tick)
            node = nxt

    cdef Py_ssize_t _fire(self, TimerHandle head, int64_t tick) except -1:
        cdef TimerHandle firing = self._firing
        cdef TimerHandle first = head._next
        cdef TimerHandle last = head._prev
        cdef TimerHandle handle, nxt, node
        cdef Py_ssize_t fired = 0
        head._next = head
        head._prev = head
        self._bits[0] &= ~((<uint64_t>1) << (tick & MASK))
        firing._next = first
        first._prev = firing
        firing._prev = last
        last._next = firing
        try:
            while True:
                handle = firing._next
                if handle is firing:
                    break
                _unlink(handle)
                _track(handle)
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
            firing._next = firing
            firing._prev = firing
            while node is not firing:
                nxt = node._next
                self._link(node, tick + 1)
                node = nxt
        return fired

    # --- the event-loop driver -------------------------------------------------------

    cdef int _arm(self, int64_t tick) except -1:
        loop = self._loop
        if loop is None:
            loop = self._bind()
        if self._armed is not None:
            self._armed.cancel()
        cdef double at = tick * self._resolution
        cdef double limit = loop.time() + MAX_ARM_DELAY
        if at > limit:
            tick = _tick_floor(self, limit)
            at = tick * self._resolution
        self._armed_tick = tick
        self._armed = loop.call_at(at, self._wake)
        return 0

    cdef int _disarm(self) except -1:
        self._armed.cancel()
        self._armed = None
        self._armed_tick = NOT_ARMED
        return 0

    cdef int _rearm(self) except -1:
        if self._clock is not None or self._closed or self._advancing:
            return 0
        if self._armed is not None:
            self._disarm()
        cdef int64_t tick
        if self._count:
            tick = self._next_event()
            if tick != NOT_ARMED:
                self._arm(tick)
        return 0

    def _wake(self):
        self._wakeups += 1
        cdef int64_t woke = self._armed_tick
        self._armed = None
        self._armed_tick = NOT_ARMED
        # the loop may wake us a hair before the tick (its clock has ms steps): the tick
        # it was armed for is due all the same
        cdef int64_t target = _tick_floor(self, self._loop.time())
        if woke > target:
            target = woke
        try:
            self._advance_to(target)
        finally:
            self._rearm()

    cdef int _own(self, handle) except -1:
        if not isinstance(handle, TimerHandle) or (<TimerHandle>handle)._wheel is not self:
            raise ValueError("that timer handle does not belong to this TimerWheel")
        return 0
