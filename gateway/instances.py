"""The instance lifecycle: create, update, mode, refresh, state, expiry and erase.

`InstanceService` is the one owner of instances. The device API calls it; the SIP and
push parts subscribe to its events (`subscribe(callback)`) and report registration
outcomes through `set_state()`. Events (`InstanceEvent.kind`):

- `created`      a new instance (also after a create that replaced an older one)
- `updated`      password, push targets, display name or expiry changed
- `mode_changed` foreground (the app registers itself; the gateway must not) or background
- `state_changed` `set_state()` changed the registration state
- `expiring`     a warning `retention.warn_before_hours` before expiry (`hours_left` set)
- `expired`      the app was not heard from in time; `erased` follows at once
- `erased`       gone from the store: by DELETE, by expiry, or replaced by a new create

Expiry runs on the timer wheel (`gateway.timers`), one handle per instance for its next
step (the next warning, or the expiry). Stored times are wall clock (`time.time()`); they
are converted to the loop's clock when scheduled. On start every stored instance is
scheduled again: one already past its expiry is expired at once. Warnings missed (the
gateway was down, or the loop stalled) are not all replayed: only the nearest missed one,
and only if at least a quarter of its lead time is left (a "1 hour left" warning still
makes sense 20 minutes before, not 30 seconds before). Since warnings are not stored, an
instance warned just before a restart may be warned once more after it.

Conflicts (raised as `ApiError(409, "conflict")`): a create for an (app, aor, device) whose
previous create is still in flight, and any request on an instance whose erasure is in
progress.

This module depends on the store, the timer wheel (given, not imported), the config, the
errors and the logs; never on the API, SIP or push modules.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from gateway.config import App, Config
from gateway.errors import ApiError
from gateway.logs import get_logger
from gateway.store import Store
from gateway.store.crypto import SecretBox, bearer_hash, digest_ha1, same_digest
from gateway.store.records import InstanceRecord, PushTarget

log = get_logger(__name__)

EventKind = Literal[
    "created", "updated", "mode_changed", "state_changed", "expiring", "expired", "erased"
]

#: a missed warning is still sent if this share of its lead time is left
REPLAY_SHARE = 0.25
#: a warning step finding more than its lead plus this (seconds) left: the expiry moved
LATER = 60.0


class InstanceEvent(msgspec.Struct, frozen=True):
    kind: EventKind
    instance_id: str
    record: InstanceRecord | None = None  # None for `erased`
    hours_left: float | None = None  # for `expiring`: the time left when it was sent


Subscriber = Callable[[InstanceEvent], Any]


def new_instance_id() -> str:
    """128 random bits, URL- and SIP-user-safe, never starting with '-' or '_' (an id an
    operator pastes after `sip-push-gateway instances show` must not look like an option)."""
    while True:
        candidate = secrets.token_urlsafe(16)
        if candidate[0].isalnum():
            return candidate


class InstanceService:
    """Owns the instances: every change goes through here, and every change is an event."""

    def __init__(
        self,
        config: Config,
        store: Store,
        wheel,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.store = store
        self.box: SecretBox = store.secret_box
        self.wheel = wheel
        self.clock = clock
        self.realm = config.sip.device_realm
        self._subscribers: list[Subscriber] = []
        self._timers: dict[str, Any] = {}  # instance id -> wheel handle of its next step
        # instances whose step is due (its timer fired, its task not done yet); a waiting
        # step keeps nothing but its handle, whose argument is the (shared) instance id:
        # which step it is is told by its callback, one per lead; the expiry is read from
        # the store when the step runs
        self._stepping: set[str] = set()
        self._creating: set[tuple[str, str, str]] = set()
        self._erasing: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        leads = sorted(set(config.retention.warn_before_hours), reverse=True)
        self._leads = [hours * 3600.0 for hours in leads]
        # lead (None: the expiry itself) -> the callback of that step, shared by every
        # instance's handle
        self._due_steps = {lead: functools.partial(self._due, lead) for lead in (None, *self._leads)}

    # --- events --------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every event; a coroutine result runs as a task.
        Returns the function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _emit(self, kind: EventKind, instance_id: str, record=None, hours_left=None) -> None:
        event = InstanceEvent(kind, instance_id, record, hours_left)
        log.debug("instance event", id=instance_id, kind=kind)
        for callback in list(self._subscribers):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:  # a subscriber's bug must not stop the others
                log.exception("instance event subscriber failed", subscriber=repr(callback), kind=kind)

    def _spawn(self, awaitable) -> None:
        task = asyncio.ensure_future(self._guarded(awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(awaitable) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:  # an expiry step or a subscriber's coroutine: log, go on
            log.exception("instance task failed")

    # --- start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        """Schedule the next step of every stored instance (expire the overdue ones)."""
        now = self.clock()
        async for record in self.store.iter_instances():
            self._schedule(record.id, record.expires_at, now)
        log.info("instance lifecycle started", instances=len(self._timers))

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._stepping.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- reading -------------------------------------------------------------------------

    async def get(self, instance_id: str) -> InstanceRecord:
        record = await self.store.get_instance(instance_id)
        if record is None:
            raise ApiError(404, "not_found", "no such instance")
        return record

    async def authenticate(self, instance_id: str, secret: str) -> InstanceRecord:
        """The instance, if `secret` is its secret (constant-time compare of the hashes)."""
        record = await self.get(instance_id)
        if not same_digest(bearer_hash(secret), record.secret_bearer):
            raise ApiError(401, "unauthorized", "the bearer token is not this instance's secret")
        return record

    def password(self, record: InstanceRecord) -> str:
        """The SIP password in plaintext, for the registration client only."""
        return self.box.open(record.password_ct, record.id.encode())

    async def pending_messages(self, instance_id: str) -> int:
        """Messages waiting for the device. Messages arrive in a later part: until the store
        has a messages table, there are none."""
        count = getattr(self.store, "count_messages", None)
        return await count(instance_id) if count else 0

    # --- changes -------------------------------------------------------------------------

    async def create(
        self,
        app: App,
        *,
        device_id: str,
        aor: str,
        auth_username: str,
        password: str,
        registrar: str,
        outbound_proxy: str = "",
        reg_expires: int = 3600,
        display_name: str = "",
        push: list[PushTarget],
    ) -> tuple[InstanceRecord, str]:
        """A new instance, replacing the one of the same (app, aor, device) if any.
        Returns the record and the device secret, which is not kept anywhere."""
        key = (app.id, aor, device_id)
        if key in self._creating:
            raise ApiError(409, "conflict", "a create for this app, aor and device is in progress")
        self._creating.add(key)
        try:
            instance_id = new_instance_id()
            secret = secrets.token_urlsafe(32)
            now = self.clock()
            record = InstanceRecord(
                id=instance_id,
                app_id=app.id,
                device_id=device_id,
                aor=aor,
                auth_username=auth_username,
                password_ct=self.box.seal(password, instance_id.encode()),
                registrar=registrar,
                outbound_proxy=outbound_proxy or None,
                reg_expires=reg_expires,
                display_name=display_name or None,
                push=push,
                secret_ha1=digest_ha1(instance_id, self.realm, secret, "MD5"),
                secret_ha1_sha256=digest_ha1(instance_id, self.realm, secret, "SHA-256"),
                secret_bearer=bearer_hash(secret),
                mode="background",
                state="idle",
                last_error=None,
                created_at=now,
                updated_at=now,
                expires_at=now + self._max_age(app.premium),
                registered_until=None,
                premium=app.premium,
            )
            replaced = await self.store.put_instance(record)
        finally:
            self._creating.discard(key)
        if replaced:
            self._unschedule(replaced)
            self._emit("erased", replaced)
        self._schedule(record.id, record.expires_at, self.clock())
        self._emit("created", record.id, record)
        return record, secret

    async def update(
        self,
        instance_id: str,
        *,
        password: str | None = None,
        push: list[PushTarget] | None = None,
        display_name: str | None = None,
    ) -> InstanceRecord:
        fields: dict[str, Any] = {}
        if password is not None:
            fields["password_ct"] = self.box.seal(password, instance_id.encode())
        if push is not None:
            fields["push"] = push
        if display_name is not None:
            fields["display_name"] = display_name or None
        record = await self._change(instance_id, **fields)
        self._emit("updated", instance_id, record)
        return record

    async def set_mode(self, instance_id: str, mode: str) -> InstanceRecord:
        """Foreground: the app registers itself, the gateway stops (state `off`).
        Background: the gateway takes over again (state `idle` until the SIP part moves it)."""
        before = await self.get(instance_id)
        if before.mode == mode:
            return before
        state = "off" if mode == "foreground" else "idle"
        record = await self._change(instance_id, mode=mode, state=state)
        self._emit("mode_changed", instance_id, record)
        return record

    async def refresh(self, instance_id: str) -> InstanceRecord:
        """The app was opened: the instance lives max_age (or premium_max_age) from now."""
        before = await self.get(instance_id)
        now = self.clock()
        expires_at = now + self._max_age(before.premium)
        record = await self._change(instance_id, expires_at=expires_at)
        self._schedule(instance_id, expires_at, now)
        self._emit("updated", instance_id, record)
        return record

    async def set_state(
        self,
        instance_id: str,
        state: str,
        last_error: str | None = None,
        registered_until: float | None = None,
        if_mode: str | None = None,
    ) -> InstanceRecord:
        """For the SIP part: the registration's state, its last error and its end. With
        `if_mode`, only while the instance is in that mode: a registration's outcome that
        lands after a switch to the foreground must not overwrite its `off`."""
        record = await self._change(
            instance_id, if_mode=if_mode,
            state=state, last_error=last_error, registered_until=registered_until
        )
        if if_mode is None or record.mode == if_mode:
            self._emit("state_changed", instance_id, record)
        return record

    async def erase(self, instance_id: str) -> None:
        """Erase now (password ciphertext overwritten, WAL checkpointed); 404 if unknown."""
        if instance_id in self._erasing:
            raise ApiError(409, "conflict", "this instance is being erased")
        self._erasing.add(instance_id)
        try:
            found = await self._erase(instance_id)
        finally:
            self._erasing.discard(instance_id)
        if not found:
            raise ApiError(404, "not_found", "no such instance")

    async def _erase(self, instance_id: str) -> bool:
        self._unschedule(instance_id)
        found = await self.store.erase_instance(instance_id)
        if found:
            self._emit("erased", instance_id)
        return found

    async def _change(self, instance_id: str, if_mode: str | None = None,
                      **fields) -> InstanceRecord:
        if instance_id in self._erasing:
            raise ApiError(409, "conflict", "this instance is being erased")
        fields["updated_at"] = self.clock()
        record = await self.store.update_instance(instance_id, if_mode=if_mode, **fields)
        if record is None:
            raise ApiError(404, "not_found", "no such instance")
        return record

    def _max_age(self, premium: bool) -> float:
        retention = self.config.retention
        return 3600.0 * (retention.premium_max_age_hours if premium else retention.max_age_hours)

    # --- expiry --------------------------------------------------------------------------

    def _schedule(
        self, instance_id: str, expires_at: float, now: float, below: float | None = None
    ) -> None:
        """Put the instance's next step on the wheel: the next warning (with a lead shorter
        than `below`, the one just sent), or the expiry."""
        self._unschedule(instance_id)
        left = expires_at - now
        lead = None  # None: the expiry itself
        for candidate in self._leads:  # longest lead first
            if below is not None and candidate >= below:
                continue
            if left > candidate:
                lead = candidate
                break
            if left >= candidate * REPLAY_SHARE:
                lead = candidate  # missed (gateway down, loop stalled): warn at once
        when = expires_at - lead if lead is not None else expires_at
        delay = max(0.0, when - now)
        self._timers[instance_id] = self.wheel.call_later(delay, self._due_steps[lead], instance_id)

    def _unschedule(self, instance_id: str) -> None:
        handle = self._timers.pop(instance_id, None)
        if handle is not None:
            handle.cancel()
        self._stepping.discard(instance_id)

    def _due(self, lead: float | None, instance_id: str) -> None:
        if self._timers.pop(instance_id, None) is None:
            return  # unscheduled meanwhile
        self._stepping.add(instance_id)
        self._spawn(self._step(instance_id, lead))

    async def _step(self, instance_id: str, lead: float | None) -> None:
        if instance_id not in self._stepping or instance_id in self._timers:
            return  # refreshed, rescheduled or erased meanwhile
        if lead is None:
            await self._expire(instance_id)
            return
        record = await self.store.get_instance(instance_id)
        if record is None or instance_id in self._timers or instance_id not in self._stepping:
            self._stepping.discard(instance_id)
            return  # changed while the record was read
        now = self.clock()
        expires_at = record.expires_at
        if expires_at - now > lead + LATER:
            # the expiry moved later while this step was due (a refresh whose own
            # rescheduling is still to come): not this warning, the next step
            self._schedule(instance_id, expires_at, now)
            return
        self._emit("expiring", instance_id, record, hours_left=max(0.0, expires_at - now) / 3600)
        self._schedule(instance_id, expires_at, now, below=lead)

    async def _expire(self, instance_id: str) -> None:
        if instance_id in self._erasing:
            return  # a DELETE is at it
        self._erasing.add(instance_id)  # from here on a refresh gets 409, not a half-erase
        try:
            record = await self.store.get_instance(instance_id)
            if record is None:
                self._unschedule(instance_id)
                return
            # refreshed through another path since this step was scheduled: carry on
            if record.expires_at > self.clock() + 1.0:
                self._schedule(instance_id, record.expires_at, self.clock())
                return
            self._emit("expired", instance_id, record)
            await self._erase(instance_id)
        finally:
            self._erasing.discard(instance_id)
        log.info("instance expired and erased", id=instance_id, app=record.app_id)
