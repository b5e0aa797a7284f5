"""The push layer's small interface: a notification, a provider, a result, and the outcome
callbacks the instance lifecycle implements.

- `Notification`: what to send (a payload from `gateway.push.payloads`), until when it is
  useful (`expires_at`, Unix seconds), and how to collapse it.
- `PushProvider`: one class per push service (APNs, FCM, Web Push). `send()` makes one
  attempt and classifies the answer into a `PushResult`; retries, limits and auth renewal
  policy live in `gateway.push.service`, which is why a provider never sleeps.
- `PushOutcomes`: what the push layer tells the rest of the gateway: a push target is
  dead, an operator must look at an app's credentials.
- `remove_target` / `has_call_target`: the rule the lifecycle applies when a target dies
  (an instance left without a call target goes to state `off`).

Also the TLS context and Retry-After parsing the three providers share. Depends on
`gateway.store.records` (the stored `PushTarget`), `gateway.errors` and msgspec only.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from typing import Literal, Protocol

import msgspec

from gateway.errors import ConfigError
from gateway.store.records import PushTarget

Outcome = Literal["delivered", "dead_target", "retry_later", "auth_failed", "rejected", "expired"]


class PushResult(msgspec.Struct, frozen=True):
    """The answer to one attempt (from a provider) or to a whole delivery (from the service).

    - delivered: the push service accepted the notification.
    - dead_target: the token or subscription will never work again; remove it.
    - retry_later: transient (429, 5xx, connection loss); `retry_after` when the service said.
    - auth_failed: our credentials were refused (expired JWT, bad OAuth token, VAPID).
    - rejected: permanent for this notification (payload too large, bad request, config).
    - expired: the service gave up because the notification's useful life ran out.
    `reason` is the service's reason code (e.g. "Unregistered", "UNREGISTERED", "410").
    `operator`: a rejection only the operator can fix (a topic the key may not use, a
    Firebase project without its APNs key); the service raises an alert for it.
    """

    outcome: Outcome
    reason: str = ""
    status: int | None = None
    retry_after: float | None = None
    operator: bool = False


def delivered(reason: str = "", status: int | None = 200) -> PushResult:
    return PushResult("delivered", reason, status)


class Notification(msgspec.Struct, frozen=True):
    """One thing to tell a phone. `payload` is a Struct of `gateway.push.payloads`.

    `expires_at` bounds every retry and becomes APNs `apns-expiration`, FCM `ttl` and Web
    Push `TTL`. `collapse_id` (any text) lets a newer notification replace an older one.
    """

    payload: msgspec.Struct
    expires_at: float
    collapse_id: str | None = None

    @property
    def kind(self) -> str:
        return type(self.payload).__struct_config__.tag

    @property
    def is_call(self) -> bool:
        return self.kind == "call"


class PushProvider(Protocol):
    """One push service for one app."""

    name: str  # "apns" | "fcm" | "webpush"

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        """Make one attempt. Never raises for the service's or the network's failures:
        they are classified into the result."""

    async def renew_auth(self) -> None:
        """Drop cached credentials (JWT, OAuth token) so that the next send makes new ones."""

    async def close(self) -> None:
        """Release connections. Safe to call twice."""


class PushOutcomes(Protocol):
    """What the push layer reports; the instance lifecycle implements it.

    Calls may repeat (two notifications can find the same dead target at once), so
    implementations must be idempotent.
    """

    async def on_dead_target(self, instance_id: str, target: PushTarget, reason: str) -> None:
        """Remove `target` from the instance; when `has_call_target` of what is left is
        false, the instance goes to state `off` with a lifecycle event."""

    def on_alert(self, app_id: str, provider: str, reason: str) -> None:
        """An operator must act: the app's credentials for `provider` keep being refused."""


def same_target(a: PushTarget, b: PushTarget) -> bool:
    """Whether two targets address the same device channel (tokens compared, not metadata)."""
    return (a.provider, a.usage, a.token, a.endpoint) == (b.provider, b.usage, b.token, b.endpoint)


def remove_target(targets: list[PushTarget], dead: PushTarget) -> list[PushTarget]:
    """The targets without `dead` (unchanged when it is not there)."""
    return [t for t in targets if not same_target(t, dead)]


def has_call_target(targets: list[PushTarget]) -> bool:
    """Whether an incoming call can still wake the phone."""
    return any(t.usage == "call" for t in targets)


def tls_context(ca_file: str = "", *, cert_file: str = "", alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client TLS context for a push service: the system's CAs plus `ca_file` (a proxy's
    or an emulator's CA), an optional client certificate (APNs certificate auth)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # APNs requires 1.2 or later
    for name, load in ((ca_file, context.load_verify_locations), (cert_file, context.load_cert_chain)):
        if name:
            try:
                load(name)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{name}: not a usable PEM file: {exc.strerror or exc}") from None
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: "²" is a digit too
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
