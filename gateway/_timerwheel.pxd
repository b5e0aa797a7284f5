# cython: language_level=3
# The C layout of `gateway._timerwheel` (built from _ext/timerwheel.pyx), so that other
# compiled modules (the registration cycle, the REGISTER wire) schedule, move and cancel
# timers with C calls: `wheel.c_call_later(delay, callback, arg)`,
# `wheel.c_reschedule(handle, delay)`, `handle.c_cancel()` do what `call_later`,
# `reschedule` and `cancel` do (the same checks, the same errors), without a method
# look-up, an argument tuple or a float object. Check `type(x) is TimerWheel` (or
# TimerHandle) first: the pure-Python twin's objects take the Python calls. Here (named
# after the module, not the source) because a cimport finds it by the module's name.

cimport cython
from libc.stdint cimport int64_t, uint64_t

cdef enum:
    LEVEL_BITS = 6
    SLOTS = 64
    MASK = 63
    LEVELS = 6
    OVERFLOW = 384  # LEVELS * SLOTS


@cython.final
cdef class TimerHandle:
    cdef object _callback
    cdef object _arg
    cdef TimerWheel _wheel
    cdef TimerHandle _prev
    cdef TimerHandle _next
    cdef double _when

    cdef int c_cancel(self) except -1


cdef class TimerWheel:
    cdef double _resolution
    cdef object _loop
    cdef object _clock
    cdef object _time  # the clock, or the loop's bound time(): one lookup less per timer
    cdef object _armed
    cdef list _heads
    cdef TimerHandle _firing
    cdef int64_t _min[OVERFLOW + 1]
    cdef uint64_t _bits[LEVELS]
    cdef Py_ssize_t _count
    cdef int64_t _current
    cdef int64_t _armed_tick
    cdef bint _closed
    cdef bint _advancing
    cdef Py_ssize_t _wakeups

    cdef TimerHandle c_call_later(self, double delay, callback, arg)
    cdef int c_reschedule(self, handle, double delay) except -1
    cdef TimerHandle _call_at(self, double when, callback, arg)
    cdef int _reschedule_at(self, handle, double when) except -1
    cdef double _now(self) except? -1.0
    cdef object _bind(self)
    cdef int _schedule(self, TimerHandle handle, double when) except -1
    cdef void _link(self, TimerHandle handle, int64_t tick)
    cdef int64_t _next_event(self)
    cdef Py_ssize_t _advance_to(self, int64_t target) except -1
    cdef Py_ssize_t _step(self, int64_t tick) except -1
    cdef void _cascade(self, int index, int64_t tick)
    cdef Py_ssize_t _fire(self, TimerHandle head, int64_t tick) except -1
    cdef int _arm(self, int64_t tick) except -1
    cdef int _disarm(self) except -1
    cdef int _rearm(self) except -1
    cdef int _own(self, handle) except -1


cdef inline int cancel(timer) except -1:
    """`timer.cancel()`: the C call for the compiled wheel's handles, the Python one for
    anything else (the twin's)."""
    if type(timer) is TimerHandle:
        return (<TimerHandle>timer).c_cancel()
    timer.cancel()
    return 0
