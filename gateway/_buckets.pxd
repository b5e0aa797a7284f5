# cython: language_level=3
# The C layout of `gateway._buckets` (built from _ext/buckets.pyx), so that the compiled
# registration cycle (_ext/regcycle.pyx) calls `Slots.try_take`/`release` and
# `Pacer.try_acquire` as C functions rather than through attribute look-ups. Here (named
# after the module, not the source) because a cimport finds it by the module's name.

cdef class RateLimit:
    cdef public double rate, burst, _tokens, _stamp
    cdef public object wheel, clock, _waiters, _timer
    cdef double _now(self) except? -1.0
    cdef _fill(self)
    cpdef bint try_acquire(self) except -1


cdef class Pacer:
    cdef public object wheel, per_key_rate, per_key_burst
    cdef public RateLimit overall
    cdef public dict _keys
    cdef object _last_key  # the key last asked for, and its bucket (`try_acquire`)
    cdef RateLimit _last_limit
    cpdef RateLimit limit_for(self, key)
    cpdef bint try_acquire(self, key) except -1


cdef class Slots:
    cdef public long free
    cdef public object _waiters
    cpdef bint try_take(self) except -1
    cpdef release(self)
