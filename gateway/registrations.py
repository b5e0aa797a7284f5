"""The registrations the gateway keeps for sleeping phones: one client per background
instance, driven by the instance lifecycle's events.

`RegistrationService(config, instances, endpoint, wheel)`:
- `start()` subscribes to `InstanceService` events and registers every stored background
  instance again over a ramp: oldest expiry (`registered_until`) first, through the pacer,
  so never above `sip.registration.rate` nor `per_registrar_rate`; every client exists
  at once, but only `max_in_flight` of them wait for their first exchange at a time;
- `created` / `mode_changed` to background: register; `mode_changed` to foreground,
  `expired`, `erased`: unregister our Contact (Expires: 0) and forget the client;
  `updated` with a new password: fresh digest state and a new registration;
- a failed flow (missing keepalive pong, connection lost) re-registers every instance on
  it at random times within `dead_flow_spread` seconds;
- state and last error go to `InstanceService.set_state` (the API shows them), written
  in order per instance, the latest state winning when writes queue up, by at most
  `STATE_WRITERS` tasks;
- `on_register_result(outcome, rtt)` is the hook for metrics (`outcome`: registered,
  unregistered, unauthorized, error; `rtt`: seconds of the whole exchange).

Depends on the instance lifecycle, the config and the SIP registration client; the SIP
layers below never import this module.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable

from gateway.config import Config
from gateway.errors import ApiError, ConfigError
from gateway.logs import get_logger
from gateway.sip.pacing import Pacer
from gateway.sip.registration import (RegistrationClient, RegistrationContext,
                                      RegistrationSettings, contact_token)

log = get_logger(__name__)

# contact_token (defined with the client, which derives it) is named through this module
# by the call side and the tools
__all__ = ["STATE_WRITERS", "RegistrationService", "contact_token"]

#: state writes under way at once (the store batches what arrives together)
STATE_WRITERS = 64


class _PasswordSource:
    """The password of one instance, opened from its sealed copy when the digest asks
    (once per realm). Slotted, and holding the ciphertext itself rather than a key into
    a dict of them: 100,000 of them add up. Dropped with its client, so the ciphertext
    leaves memory when the client has unregistered."""

    __slots__ = ("service", "instance_id", "sealed")

    def __init__(self, service: "RegistrationService", instance_id: str, sealed: bytes):
        self.service = service
        self.instance_id = instance_id
        self.sealed = sealed

    def __call__(self) -> str:
        return self.service.instances.box.open(self.sealed, self.instance_id.encode())


class RegistrationService:
    def __init__(self, config: Config, instances: Any, endpoint: Any, wheel: Any):
        settings = config.sip.registration
        self.config = config
        self.instances = instances
        self.endpoint = endpoint
        self.spread = settings.dead_flow_spread
        self.pacer = Pacer(wheel, settings.rate, settings.burst, settings.per_registrar_rate,
                           settings.per_registrar_burst)
        self.ctx = RegistrationContext(
            endpoint, self.pacer,
            RegistrationSettings(retry_base=settings.retry_base, retry_max=settings.retry_max,
                                 unauthorized_retry=settings.unauthorized_retry,
                                 unauthorized_retry_max=settings.unauthorized_retry_max,
                                 refresh_jitter=settings.refresh_jitter),
            public_address=config.sip.public_address, max_in_flight=settings.max_in_flight,
            report=self._report)
        self.clients: dict[str, RegistrationClient] = {}
        self._pending: dict[str, tuple] = {}  # instance id -> state to write, in arrival order
        self._writing: set[str] = set()  # instance ids whose state write is under way
        self._writers = 0  # _write_states tasks running
        self._tasks: set[asyncio.Task] = set()
        self._unsubscribe: Callable[[], None] | None = None
        endpoint.on_flow_failed(self._flow_failed)

    # -- metrics hook ------------------------------------------------------------------

    @property
    def on_register_result(self) -> Callable[[str, float], None]:
        return self.ctx.on_register_result

    @on_register_result.setter
    def on_register_result(self, callback: Callable[[str, float], None]) -> None:
        self.ctx.on_register_result = callback

    # -- start and stop ----------------------------------------------------------------

    async def start(self) -> None:
        self._unsubscribe = self.instances.subscribe(self._event)
        # read a page at a time (100,000 records at once would set the process's memory
        # high for good); only what the ramp's order needs is kept
        lapsing: list[tuple[float, int, RegistrationClient]] = []
        async for record in self.instances.store.iter_instances():
            if record.mode == "background":
                client = self._add(record, begin=False)
                if client is not None:
                    lapsing.append((record.registered_until or 0.0, len(lapsing), client))
        # the registrations that lapse first go first; never registered counts as lapsed
        lapsing.sort()
        waiting = [client for _, _, client in lapsing]
        del lapsing
        self._spawn(self._ramp(waiting))
        log.info("registration ramp started", instances=len(waiting),
                 rate=self.config.sip.registration.rate)

    async def _ramp(self, waiting: list[RegistrationClient]) -> None:
        """Start the clients in order, no more than `max_in_flight` of them in their
        first exchange at once (`RegistrationContext.ramp`)."""
        await self.ctx.ramp(waiting, self.config.sip.registration.max_in_flight,
                            wanted=lambda client: self.clients.get(client.key) is client)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        self.pacer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- instance events ---------------------------------------------------------------

    def _event(self, event) -> None:
        kind, instance_id, record = event.kind, event.instance_id, event.record
        if kind == "created" and record.mode == "background":
            self._add(record)
        elif kind == "mode_changed":
            if record.mode == "background":
                self._add(record)
            else:
                self._remove(instance_id)
        elif kind in ("expired", "erased"):
            self._remove(instance_id)
        elif kind == "updated" and instance_id in self.clients:
            if self.clients[instance_id].digest.password_source.sealed != record.password_ct:
                self._remove(instance_id, then=record)  # new credentials: start afresh

    def _add(self, record, begin: bool = True) -> RegistrationClient | None:
        """The client of a background instance, started at once unless `begin` is False
        (the restart ramp starts it later, without announcing "registering": thousands of
        store writes would only say what the next outcome says anyway)."""
        if record.id in self.clients:
            return self.clients[record.id]
        try:
            client = RegistrationClient(
                self.ctx, key=record.id,
                aor=record.aor, username=record.auth_username,
                password_source=_PasswordSource(self, record.id, record.password_ct),
                registrar=record.registrar, outbound_proxy=record.outbound_proxy,
                expires=record.reg_expires)
        except (ConfigError, ValueError) as exc:
            # the API validates these; a stored record from elsewhere may still be bad
            self._report_id(record.id, "error", f"cannot register: {exc}", None)
            return None
        self.clients[record.id] = client
        if begin:
            client.start()
        return client

    def _remove(self, instance_id: str, then=None) -> None:
        client = self.clients.pop(instance_id, None)
        if client is None:
            return
        self._pending.pop(instance_id, None)
        self._spawn(self._unregister(client, then))

    async def _unregister(self, client: RegistrationClient, then) -> None:
        await client.unregister()
        if then is not None and then.mode == "background":
            self._add(then)

    # -- flows -------------------------------------------------------------------------

    def _flow_failed(self, flow, reason: Exception) -> None:
        clients = [client for client in self.clients.values() if client.flow is flow]
        if clients:
            log.info("flow failed: registering its instances again", flow=repr(flow),
                     instances=len(clients), reason=str(reason))
        for client in clients:
            client.flow_lost(random.uniform(0.0, self.spread))

    # -- state to the lifecycle --------------------------------------------------------

    def _report(self, client: RegistrationClient, state: str, error: str | None,
                until: float | None) -> None:
        if self.clients.get(client.key) is client and client.active:
            self._report_id(client.key, state, error, until)

    def _report_id(self, instance_id: str, state: str, error: str | None,
                   until: float | None) -> None:
        self._pending[instance_id] = (state, error, until)  # the latest state wins
        if self._writers < STATE_WRITERS:
            self._writers += 1
            self._spawn(self._write_states())

    async def _write_states(self) -> None:
        """Write pending states until none is left, one write per instance at a time (so
        they land in order). A few of these run at once, enough for the store to batch
        writes; a backlog (a storm faster than the disk) is a dict entry per instance,
        not a task per instance."""
        try:
            while True:
                instance_id = next((i for i in self._pending if i not in self._writing), None)
                if instance_id is None:
                    return
                state, error, until = self._pending.pop(instance_id)
                self._writing.add(instance_id)
                try:
                    # the SIP part speaks for background instances only: a write
                    # still on its way when the app took over must not undo its `off`
                    await self.instances.set_state(instance_id, state, last_error=error,
                                                   registered_until=until,
                                                   if_mode="background")
                except ApiError:  # erased or being erased meanwhile
                    self._pending.pop(instance_id, None)
                except Exception:  # noqa: BLE001 - the other instances' states still go
                    log.exception("writing a registration state failed", id=instance_id)
                finally:
                    self._writing.discard(instance_id)
        finally:
            self._writers -= 1

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("registration task failed", error=repr(task.exception()))
