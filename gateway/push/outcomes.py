"""The push layer's outcomes applied to the instance lifecycle.

`LifecycleOutcomes` implements `PushOutcomes` on top of the instance service (anything
with `get(id)`, `update(id, push=...)` and `set_state(id, state, last_error=...)`, i.e.
`gateway.instances.InstanceService`): a dead target is removed from the instance (an
`updated` event), and an instance left without a call target goes to state `off` (a
`state_changed` event), since no incoming call could wake its phone any more. Reports for
one instance are applied one at a time, so two targets dying at once are both removed.

Operator alerts go to the `alert` callback (the metrics part will count them) and the log.

Depends on `gateway.push.base`, `gateway.errors` and `gateway.logs`; it reaches the
lifecycle only through the object it is given.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Callable

from gateway import logs
from gateway.errors import ApiError
from gateway.push.base import has_call_target, remove_target
from gateway.store.records import PushTarget

log = logs.get_logger(__name__)

NO_CALL_TARGET = "no push target left for calls"


class LifecycleOutcomes:
    def __init__(self, instances, alert: Callable[[str, str, str], None] | None = None):
        self.instances = instances
        self._alert = alert
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: collections.Counter[str] = collections.Counter()

    async def on_dead_target(self, instance_id: str, target: PushTarget, reason: str) -> None:
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        self._users[instance_id] += 1
        try:
            async with lock:
                await self._remove(instance_id, target, reason)
        finally:
            self._users[instance_id] -= 1
            if not self._users[instance_id]:  # no lock kept per instance once idle
                del self._users[instance_id]
                del self._locks[instance_id]

    async def _remove(self, instance_id: str, target: PushTarget, reason: str) -> None:
        try:
            record = await self.instances.get(instance_id)
            remaining = remove_target(record.push, target)
            if len(remaining) == len(record.push):
                return  # already removed by an earlier report
            await self.instances.update(instance_id, push=remaining)
            if not has_call_target(remaining) and record.state != "off":
                log.info("instance turned off: its last call target died", instance=instance_id, reason=reason)
                await self.instances.set_state(instance_id, "off", last_error=NO_CALL_TARGET)
        except ApiError:
            return  # erased, or being erased, meanwhile (404, 409): nothing left to change

    def on_alert(self, app_id: str, provider: str, reason: str) -> None:
        if self._alert is not None:
            self._alert(app_id, provider, reason)
