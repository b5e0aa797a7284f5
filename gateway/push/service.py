"""PushService: wake an instance's phone through every push target that fits.

`notify(record, payload)` turns a payload into a `Notification` (with its useful life and
collapse id), picks the instance's targets for it, and delivers to each one concurrently
through the app's provider for that service, built from the config on first use. Per
target it:

- waits for a slot of the (app, provider) in-flight limit: back-pressure instead of an
  unbounded queue; beyond `push.max_waiting` waiting sends, it fails at once as
  "overloaded", and no send waits past the notification's useful life;
- retries transient failures (429, 5xx, connection loss) with exponential backoff and
  jitter, honouring Retry-After, at most `push.max_attempts` times and never past the
  notification's useful life (a call push is worthless once the call stopped ringing);
- on an auth failure renews the provider's credentials once (once per failure wave, not
  once per send, and at most every `RENEW_COOLDOWN` seconds) and retries; a second
  refusal raises an operator alert (log, counter,
  `PushOutcomes.on_alert`), as does a rejection only the operator can fix (a topic the
  APNs key may not use, a Firebase project without its APNs key), once per reason;
- reports dead targets to `PushOutcomes.on_dead_target`, which removes them (and turns an
  instance without a call target off).

Which targets: a call goes to "call" targets (for APNs these are PushKit VoIP tokens);
everything else goes to "other" targets, and for FCM and Web Push, whose one token serves
both, to the "call" target of a service that has no "other" one. APNs VoIP tokens never
get anything but calls (iOS would kill the app, and APNs refuses the topic anyway).

`notify_now(record, payload)` does the same, but writes each target's first attempt
before it returns when the provider can (`start()`: APNs), a slot is free and a
connection has a free stream; the incoming call's push takes this path.

`counters` counts outcomes per (app, provider, outcome) plus attempts, retries, renewals
and alerts; `gateway.metrics` gets the same per provider (no app label), with each
delivery's kind and duration.

Depends on the providers, `gateway.config`, `gateway.store.records`, `gateway.errors`,
`gateway.logs`, `gateway.metrics` and `gateway.redact`; the lifecycle is reached only through `PushOutcomes`.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any, Callable, Coroutine

import msgspec

from gateway import logs, metrics
from gateway.config import App, Config, Push
from gateway.errors import ConfigError
from gateway.push import payloads
from gateway.push.base import Notification, PushOutcomes, PushProvider, PushResult
from gateway.redact import shorten_token
from gateway.store.records import InstanceRecord, PushTarget

log = logs.get_logger(__name__)

DAY = 24 * 3600.0
# Credentials refused again after a renewal are not renewed again for this long: each
# APNs renewal opens new connections, and Apple treats connection churn as an attack.
RENEW_COOLDOWN = 300.0

ProviderFactory = Callable[[App, str, Push, Callable[[], float]], PushProvider]


class Delivery(msgspec.Struct, frozen=True):
    """What became of a notification for one target."""

    target: PushTarget
    result: PushResult
    attempts: int

    @property
    def delivered(self) -> bool:
        return self.result.outcome == "delivered"


def notification_for(payload: msgspec.Struct, now: float) -> Notification:
    """A payload with its useful life and collapse id.

    Calls live until they stop ringing, an expiry warning until the expiry; a missed call,
    a message or an "off" notice for a day. A newer message count, expiry warning or off
    notice replaces a pending one (collapse id per instance).
    """
    if isinstance(payload, payloads.CallPush):
        return Notification(payload, payload.expires_at)
    if isinstance(payload, payloads.InstanceExpiringPush):
        return Notification(payload, payload.expires_at, f"expiring:{payload.instance}")
    if isinstance(payload, payloads.MessagePush):
        return Notification(payload, now + DAY, f"message:{payload.instance}")
    if isinstance(payload, payloads.InstanceOffPush):
        return Notification(payload, now + DAY, f"off:{payload.instance}")
    return Notification(payload, now + DAY)


def targets_for(targets: list[PushTarget], kind: str) -> list[PushTarget]:
    """The targets a notification of `kind` goes to (see the module docstring)."""
    if kind == "call":
        return [t for t in targets if t.usage == "call"]
    chosen = [t for t in targets if t.usage == "other"]
    covered = {t.provider for t in chosen}
    chosen += [t for t in targets if t.usage == "call" and t.provider != "apns" and t.provider not in covered]
    return chosen


def build_provider(app: App, name: str, push: Push, clock: Callable[[], float]) -> PushProvider:
    """The provider `name` for `app` from its credentials. ConfigError/ValueError/OSError
    when the credentials cannot be used."""
    if name == "apns" and app.apns:
        from gateway.push.apns import ApnsProvider

        return ApnsProvider(
            app.apns,
            ca_file=push.tls_ca_file,
            connections=push.apns_connections,
            timeout=push.request_timeout,
            token_refresh_after=push.apns_token_refresh_minutes * 60,
            clock=clock,
        )
    if name == "fcm" and app.fcm:
        from gateway.push.fcm import FcmProvider

        return FcmProvider(
            app.fcm, ca_file=push.tls_ca_file, max_connections=push.max_in_flight, timeout=push.request_timeout, clock=clock
        )
    if name == "webpush" and app.webpush:
        from gateway.push.webpush import WebPushProvider

        return WebPushProvider(
            app.webpush,
            ca_file=push.tls_ca_file,
            max_connections=push.max_in_flight,
            timeout=push.request_timeout,
            clock=clock,
        )
    raise ValueError(f"app {app.id} has no {name} credentials")


class InFlightLimit:
    """At most `limit` sends at once; at most `max_waiting` sends waiting for a slot.
    A freed slot goes straight to the longest waiter (first come, first served)."""

    def __init__(self, limit: int, max_waiting: int):
        self.limit = limit
        self.max_waiting = max_waiting
        self.in_flight = 0
        self.peak = 0  # highest in_flight seen (tests, stats)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        return self.waiting >= self.max_waiting and self.in_flight >= self.limit

    def try_acquire(self) -> bool:
        """A slot now, or False (none free, or others are waiting for one)."""
        if self.in_flight >= self.limit or self._waiters:
            return False
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return True

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over: in_flight already counts it
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot came with the cancellation: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1


class PushService:
    def __init__(
        self,
        config: Config,
        outcomes: PushOutcomes,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        provider_factory: ProviderFactory = build_provider,
    ):
        self.config = config
        self.settings = config.push
        self.outcomes = outcomes
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._factory = provider_factory
        self._providers: dict[tuple[str, str], PushProvider] = {}
        self._limits: dict[tuple[str, str], InFlightLimit] = {}
        self._auth_epoch: collections.Counter[tuple[str, str]] = collections.Counter()
        self._renewed_at: dict[tuple[str, str], float] = {}
        self._alerted: set[tuple[str, str, object]] = set()  # (app, provider, epoch or reason)
        self.counters: collections.Counter[tuple[str, ...]] = collections.Counter()
        #: app id -> (app, the providers it has credentials for), for `_apps_of` config
        self._apps: dict[str, tuple[App, frozenset[str]]] = {}
        self._apps_of: Config | None = None

    # --- providers -----------------------------------------------------------------------

    def start(self) -> None:
        """Build every configured provider now, so that bad credentials fail at startup."""
        for app in self.config.apps:
            for name in sorted(app.providers()):
                self.provider(app, name)

    def provider(self, app: App, name: str) -> PushProvider:
        key = (app.id, name)
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = self._factory(app, name, self.settings, self._clock)
        return provider

    def limit(self, app_id: str, name: str) -> InFlightLimit:
        key = (app_id, name)
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = InFlightLimit(self.settings.max_in_flight, self.settings.max_waiting)
        return limit

    async def close(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.close()

    def _app(self, app_id: str) -> tuple[App, frozenset[str]] | None:
        """The app of that id and its provider names, indexed once per config in use
        (every push looked the app up by scanning the list and built the set twice)."""
        config = self.config
        if self._apps_of is not config:
            apps: dict[str, tuple[App, frozenset[str]]] = {}
            for app in config.apps:
                apps.setdefault(app.id, (app, frozenset(app.providers())))
            self._apps, self._apps_of = apps, config
        return self._apps.get(app_id)

    def _has(self, app: App, name: str) -> bool:
        """Whether `app` has credentials for provider `name`."""
        known = self._app(app.id)
        if known is not None and known[0] is app:
            return name in known[1]
        return name in app.providers()  # an app of another config (or none)

    # --- sending -------------------------------------------------------------------------

    def _plan(self, record: InstanceRecord, payload: msgspec.Struct):
        """(app, notification, targets) for `payload`, or None for an unknown app."""
        known = self._app(record.app_id)
        app = None if known is None else known[0]
        if app is None:
            log.warning("push for an instance of an unknown app", instance=record.id, app=record.app_id)
            return None
        if isinstance(payload, payloads.MessagePush) and not app.message_body_in_push:
            payload = msgspec.structs.replace(payload, body=None)
        notification = notification_for(payload, self._clock())
        return app, notification, targets_for(record.push, notification.kind)

    async def notify(self, record: InstanceRecord, payload: msgspec.Struct) -> list[Delivery]:
        """Send `payload` to the instance's targets that fit it; one Delivery per target."""
        plan = self._plan(record, payload)
        if plan is None:
            return []
        app, notification, targets = plan
        deliveries = await asyncio.gather(*(self.deliver(app, record.id, t, notification) for t in targets))
        return list(deliveries)

    def notify_now(self, record: InstanceRecord, payload: msgspec.Struct) -> asyncio.Future:
        """`notify()` with each target's first attempt written before this returns, when
        its provider can (`start()`), a slot is free and a connection has a free stream:
        an incoming call's push must not wait for the loop's next turn nor queue behind
        the work that turn brings. The rest (answers, retries) runs in the returned
        future, which gives the list of Deliveries."""
        return asyncio.ensure_future(self.notify_started(record, payload))

    def notify_started(self, record: InstanceRecord, payload: msgspec.Struct) -> Coroutine[Any, Any, list[Delivery]]:
        """`notify_now()` without its task: the first attempts are written before this
        returns, the rest runs in the returned coroutine, which the caller must await (or
        hand to a task) at once -- a caller already in a task spares one."""
        plan = self._plan(record, payload)
        if plan is None:
            return _nothing()
        app, notification, targets = plan
        started = [self._start(app, t, notification) for t in targets]
        return self._gather(app, record.id, targets, notification, started)

    async def _gather(self, app, instance_id, targets, notification, started) -> list[Delivery]:
        if len(targets) == 1:  # the usual call: no task per target
            return [await self.deliver(app, instance_id, targets[0], notification, started[0])]
        return list(await asyncio.gather(*(self.deliver(app, instance_id, t, notification, first)
                                           for t, first in zip(targets, started))))

    def _start(self, app: App, target: PushTarget, notification: Notification):
        """(awaitable of the first attempt's result, auth epoch), or None: not started."""
        key = (app.id, target.provider)
        provider = self._providers.get(key)
        start = getattr(provider, "start", None)
        if start is None or not self._has(app, target.provider) or notification.expires_at <= self._clock():
            return None
        limit = self.limit(*key)
        if not limit.try_acquire():
            return None
        epoch = self._auth_epoch[key]
        try:
            pending = start(target, notification)
        except Exception:  # the regular path will try again, and report
            log.exception("push provider failed to start a send", app=app.id, provider=target.provider)
            pending = None
        if pending is None:
            limit.release()
            return None
        return pending, epoch

    async def deliver(self, app: App, instance_id: str, target: PushTarget, notification: Notification,
                      first=None) -> Delivery:
        """One notification to one target, with the retry, auth and limit rules; `first`:
        the first attempt already started (`_start`)."""
        started = time.perf_counter()
        delivery = await self._deliver(app, instance_id, target, notification, first)
        metrics.push_result(target.provider, notification.kind, delivery.result.outcome, time.perf_counter() - started)
        return delivery

    async def _deliver(self, app: App, instance_id: str, target: PushTarget, notification: Notification,
                       first=None) -> Delivery:
        name = target.provider
        if not self._has(app, name):
            return self._done(app, target, PushResult("rejected", f"app has no {name} credentials"), 0)
        try:
            provider = self.provider(app, name)
        except (ConfigError, ValueError, OSError) as exc:  # start() would have said so
            self._alert(app, name, f"credentials unusable: {exc}", once_per="unusable")
            return self._done(app, target, PushResult("rejected", "credentials unusable"), 0)
        limit = self.limit(app.id, name)
        key = (app.id, name)
        attempts = 0
        renewed = False
        last = PushResult("expired", "not sent")
        while True:
            if first is not None:  # written already, its slot taken
                pending, epoch = first
                first = None
            else:
                left = notification.expires_at - self._clock()
                if left <= 0:
                    return self._done(app, target, PushResult("expired", last.reason, last.status), attempts)
                if limit.full:
                    return self._done(app, target, PushResult("rejected", "overloaded"), attempts)
                try:
                    async with asyncio.timeout(left):
                        await limit.acquire()
                except TimeoutError:
                    return self._done(app, target, PushResult("expired", "no free slot in time"), attempts)
                epoch = self._auth_epoch[key]
                pending = None
            attempts += 1
            self.counters[(app.id, name, "attempts")] += 1
            metrics.push_attempt(name)
            try:
                last = await (pending if pending is not None else provider.send(target, notification))
            except Exception:  # a provider bug must not take the caller down, nor loop
                log.exception("push provider failed", app=app.id, provider=name)
                last = PushResult("rejected", "internal error")
            finally:
                limit.release()

            if last.outcome == "auth_failed":
                fresh = self._auth_epoch[key] != epoch  # renewed by another send meanwhile
                cooling = self._clock() - self._renewed_at.get(key, -RENEW_COOLDOWN) < RENEW_COOLDOWN
                if renewed or (not fresh and cooling):
                    self._alert(app, name, last.reason)
                    return self._done(app, target, last, attempts)
                renewed = True
                if not fresh:
                    self._auth_epoch[key] += 1
                    self._renewed_at[key] = self._clock()
                    self.counters[(app.id, name, "renewals")] += 1
                    metrics.push_auth_renewal(name)
                    log.warning("push credentials refused, renewing", app=app.id, provider=name, reason=last.reason)
                    await provider.renew_auth()
                continue
            if last.outcome == "dead_target":
                await self._dead(instance_id, target, last.reason)
            if last.operator:
                self._alert(app, name, last.reason, once_per=last.reason)
            if last.outcome != "retry_later":
                return self._done(app, target, last, attempts)
            if attempts >= self.settings.max_attempts:
                return self._done(app, target, last, attempts)
            delay = self._backoff(attempts, last.retry_after)
            if self._clock() + delay >= notification.expires_at:
                return self._done(app, target, PushResult("expired", last.reason, last.status), attempts)
            self.counters[(app.id, name, "retries")] += 1
            metrics.push_retry(name)
            await self._sleep(delay)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after  # the service said when; sooner only gets us refused again
        ceiling = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** (attempts - 1))
        return ceiling / 2 + self._jitter() * ceiling / 2  # jitter spreads a burst of retries

    async def _dead(self, instance_id: str, target: PushTarget, reason: str) -> None:
        log.info(
            "push target is dead, removing it",
            instance=instance_id,
            provider=target.provider,
            device=shorten_token(target.token or target.endpoint),
            reason=reason,
        )
        try:
            await self.outcomes.on_dead_target(instance_id, target, reason)
        except Exception:
            log.exception("removing a dead push target failed", instance=instance_id)

    def _alert(self, app: App, name: str, reason: str, once_per: object = None) -> None:
        """Tell the operator, once per credential renewal (or once per `once_per` reason),
        not once per send."""
        key = (app.id, name, once_per if once_per is not None else self._auth_epoch[(app.id, name)])
        if key in self._alerted:
            return
        self._alerted.add(key)
        self.counters[(app.id, name, "alerts")] += 1
        metrics.push_alert(name)
        log.error("push service refuses the app's setup: operator action needed", app=app.id, provider=name, reason=reason)
        try:
            self.outcomes.on_alert(app.id, name, reason)
        except Exception:
            log.exception("push alert hook failed", app=app.id)

    def _done(self, app: App, target: PushTarget, result: PushResult, attempts: int) -> Delivery:
        self.counters[(app.id, target.provider, result.outcome)] += 1
        return Delivery(target, result, attempts)


async def _nothing() -> list[Delivery]:
    return []
