"""`InFlight`: one piece of async work per key at a time, its outcome shared by every
caller that asks for the same key meanwhile (the same DNS query, the same connection).

Depends on asyncio and `gateway.errors` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from gateway.errors import TransportError


class InFlight:
    def __init__(self, what: str):
        self.what = what
        self._pending: dict[Hashable, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        """`await work()` unless the same key is already being worked on: then wait for
        that and share its result or its error."""
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await work()
        except BaseException as exc:
            # a cancelled first caller must not cancel the others: they get an error
            future.set_exception(exc if isinstance(exc, Exception)
                                 else TransportError(f"{self.what} abandoned"))
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._pending[key]
