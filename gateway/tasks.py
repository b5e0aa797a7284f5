"""`Background`: the tasks a part of the gateway starts and does not await at once (a
push after a call ended, a store write after a REGISTER). It keeps a reference to each
(asyncio only keeps weak ones), logs a task's failure instead of losing it, and cancels
what is left at stop.

Depends on asyncio and the logs only.
"""

from __future__ import annotations

import asyncio

from gateway import logs


class Background:
    def __init__(self, name: str):
        self.name = name
        self._tasks: set[asyncio.Task] = set()
        self._log = logs.get_logger(name)

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("background task failed", part=self.name, error=repr(task.exception()))

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
