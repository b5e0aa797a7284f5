"""Stub of the compiled batched UDP socket (`_ext/udpsock.pyx`); see `gateway.sip.udpsock`."""

import asyncio
import socket
from typing import Any, Callable

BATCH: int
ROUNDS: int

class BatchedDatagramSocket:
    sock: socket.socket
    loop: asyncio.AbstractEventLoop
    hook: Callable[[bytes, Any], bool] | None
    receive: Callable[[bytes, Any], None]
    error: Callable[[Exception], None]
    received_at: float
    def __init__(self, sock: socket.socket, receive: Callable[[bytes, Any], None],
                 error: Callable[[Exception], None], loop: asyncio.AbstractEventLoop) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def stamp_arrivals(self) -> None: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def sendto(self, data: bytes, addr: tuple) -> None: ...

def numeric_sockaddr(family: int, addr: tuple) -> tuple: ...
