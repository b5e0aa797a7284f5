# cython: language_level=3
"""Random bytes for the compiled SIP modules, compiled: the twin of the pool in
`gateway/sip/ids.py`, drawn from in C through `gateway/_ids.pxd` (`draw`, `draw_hex`).

The same source and rules as the twin: `os.urandom`, 4 KiB at a time, each byte handed
out once, a forked child starting with a pool of its own. One pool for the REGISTER
wire's branches and cnonces and the cycle's Call-IDs and tags (each kept its own until
2026-11-29). No lock: the GIL is held throughout, but for `os.urandom`, whose answer
is taken whole before anything else draws.

Depends on nothing in the gateway.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy

import os

cdef enum:
    POOL_SIZE = 4096

cdef bytes _pool = b""
cdef Py_ssize_t _pos = 0
cdef const char *_HEX = b"0123456789abcdef"


def _forget_pool():
    """In a forked child: never hand out bytes the parent hands out too."""
    global _pool, _pos
    _pool, _pos = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


cdef const unsigned char *_take(Py_ssize_t n) except NULL:
    """n bytes of the pool, handed out: read them before anything draws again."""
    global _pool, _pos
    if not 0 < n <= POOL_SIZE:
        raise ValueError(f"random_hex takes 1 to {POOL_SIZE} bytes, not {n}")
    cdef Py_ssize_t start = _pos
    if start + n > PyBytes_GET_SIZE(_pool):
        pool = os.urandom(POOL_SIZE)
        _pool = pool
        start = 0
    _pos = start + n
    return <const unsigned char *>PyBytes_AS_STRING(_pool) + start


cdef int draw(unsigned char *out, Py_ssize_t n) except -1:
    memcpy(out, _take(n), n)
    return 0


cdef int draw_hex(char *out, Py_ssize_t n) except -1:
    cdef const unsigned char *src = _take(n)
    cdef Py_ssize_t i
    for i in range(n):
        out[2 * i] = _HEX[src[i] >> 4]
        out[2 * i + 1] = _HEX[src[i] & 15]
    return 0


def random_hex(Py_ssize_t nbytes):
    """The twin's `random_hex`: `nbytes` random bytes (1 to 4096) as hex digits."""
    cdef const unsigned char *src = _take(nbytes)  # (which checks nbytes)
    return src[:nbytes].hex()
