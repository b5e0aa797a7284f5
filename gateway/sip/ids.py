"""Random identifiers for SIP (branches, tags, Call-IDs, cnonces) without a system call
each.

`random_hex(nbytes)` gives 2*nbytes hex digits of the same quality as
`secrets.token_hex(nbytes)`: the bytes come from `os.urandom`, drawn 4 KiB at a time, and
each byte is handed out once. A REGISTER exchange needs five fresh ids; under load one
`getrandom` system call per id cost about 4 us each, more than writing the request
around it. A lock keeps threads from sharing bytes, and a forked child starts with a
pool of its own.

Depends on nothing in the gateway.
"""

from __future__ import annotations

import os
import threading

_POOL_SIZE = 4096
_lock = threading.Lock()
_pool = b""
_pos = 0


def random_hex(nbytes: int) -> str:
    """`nbytes` random bytes (1 to 4096) as lower-case hex digits."""
    global _pool, _pos
    if not 0 < nbytes <= _POOL_SIZE:
        raise ValueError(f"random_hex takes 1 to {_POOL_SIZE} bytes, not {nbytes}")
    with _lock:
        start = _pos
        end = start + nbytes
        if end > len(_pool):
            _pool = os.urandom(_POOL_SIZE)
            start, end = 0, nbytes
        _pos = end
        return _pool[start:end].hex()


def _forget_pool() -> None:
    """In a forked child: never hand out bytes the parent hands out too."""
    global _pool, _pos, _lock
    _lock = threading.Lock()
    _pool, _pos = b"", 0


os.register_at_fork(after_in_child=_forget_pool)
