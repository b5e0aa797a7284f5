"""Ports for the servers tests start: below the kernel's ephemeral range, so that no client
socket (ours or a parallel test's) can take one between the pick and the server's bind, and
never the same one twice in a process."""

from __future__ import annotations

import os
import random
import socket

_given: set[int] = set()
_rng = random.Random(os.getpid())


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW, _HIGH = 10000, max(_ephemeral_low(), 12000)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` (`kind` is accepted for old callers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        port = _rng.randrange(_LOW, _HIGH)
        if port in _given:
            continue
        try:
            for sock_type in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(family, sock_type) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port between {_LOW} and {_HIGH}")
