"""APNs provider: HTTP/2 over TLS to Apple's provider API, token or certificate auth.

- Token auth: one ES256 provider token (JWT with `kid`, `iss`, `iat`) per app, shared by
  every connection, reused for `refresh_after` (20 to 60 minutes, Apple's window: a new
  token more often than every 20 minutes gets 429 TooManyProviderTokenUpdates, one older
  than an hour gets 403 ExpiredProviderToken). The clock is injectable for tests.
- Certificate auth: the client certificate goes into the TLS handshake; no header.
- Sandbox or production per push target (`PushTarget.environment`, production when unset),
  each with its own pool of long-lived connections (`gateway.push.http2`).
- Headers: `apns-push-type` voip / alert / background (the iOS rule lives in
  `payloads.apns_push_type`), `apns-topic` (`<bundle>.voip` for VoIP), `apns-priority`
  (5 for background, 10 otherwise), `apns-expiration` (the notification's useful life),
  `apns-collapse-id`, and our own `apns-id` so that logs can be matched with Apple's.
- `send()` is one attempt; `start()` is the same attempt with the request written
  before it returns (None when no connection has a free stream at once), for the
  incoming call's push (`PushService.notify_now`).

Depends on `gateway.push.http2`, the other `gateway.push` modules,
the config's credential Structs, the stored `PushTarget`, `gateway.errors`, `gateway.logs`
and `gateway.redact`; never on the API, SIP or lifecycle modules.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path
from typing import Awaitable, Callable

import msgspec
from hpack import NeverIndexedHeaderTuple

from gateway import logs
from gateway.config import ApnsCredentials
from gateway.errors import ConfigError, PayloadTooLarge, TransientError
from gateway.push import payloads
from gateway.push.base import (
    Notification,
    PushResult,
    delivered,
    retry_after,
    tls_context,
)
from gateway.push.http2 import Http2Pool
from gateway.push.jwt import load_ec_p256_key, sign_es256
from gateway.redact import shorten_token
from gateway.store.records import PushTarget

log = logs.get_logger(__name__)

MIN_TOKEN_AGE = 20 * 60
MAX_TOKEN_AGE = 60 * 60

# Apple's reasons, by what they mean for us.
DEAD_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
AUTH_REASONS = frozenset(
    {
        "ExpiredProviderToken",
        "InvalidProviderToken",
        "MissingProviderToken",
        "BadCertificate",
        "BadCertificateEnvironment",
        "UnrelatedKeyIdInToken",
        "BadEnvironmentKeyIdInToken",
    }
)
# Refusals of what the operator configured (topic, key scope), not of this push.
OPERATOR_REASONS = frozenset({"TopicDisallowed", "BadTopic", "MissingTopic", "Forbidden"})
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


class ProviderToken:
    """The APNs provider token of one key: minted when missing or `refresh_after` old."""

    def __init__(
        self, key_file: str, key_id: str, team_id: str, *, refresh_after: float = 45 * 60, clock=time.time
    ):
        if not MIN_TOKEN_AGE <= refresh_after < MAX_TOKEN_AGE:
            raise ValueError("an APNs provider token must be replaced after 20 to 60 minutes")
        self.key_file = key_file
        self.key_id = key_id
        self.team_id = team_id
        self.refresh_after = refresh_after
        self._clock = clock
        try:
            self._key = load_ec_p256_key(Path(key_file).read_bytes(), key_file)
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._token: str | None = None
        self._issued_at = 0.0
        self.minted = 0  # how many tokens were made (tests, stats)

    def value(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued_at >= self.refresh_after:
            self._issued_at = now
            claims = {"iss": self.team_id, "iat": int(now)}
            self._token = sign_es256(self._key, claims, kid=self.key_id)
            self.minted += 1
        return self._token

    def renew(self) -> None:
        """Mint a new token at the next use, from the key file as it is now (the operator
        may have replaced a revoked key)."""
        self._token = None
        try:
            self._key = load_ec_p256_key(Path(self.key_file).read_bytes(), self.key_file)
        except (OSError, ValueError) as exc:
            log.error("APNs key file unreadable, keeping the loaded key", file=self.key_file, error=str(exc))


class ApnsProvider:
    """APNs for one app."""

    name = "apns"

    def __init__(
        self,
        credentials: ApnsCredentials,
        *,
        ca_file: str = "",
        connections: int = 1,
        timeout: float = 10.0,
        token_refresh_after: float = 45 * 60,
        clock: Callable[[], float] = time.time,
    ):
        self.credentials = credentials
        self._ca_file = ca_file
        self._connections = connections
        self._timeout = timeout
        self._clock = clock
        self.token: ProviderToken | None = None
        if credentials.team_id and credentials.key_id and credentials.key_file:
            self.token = ProviderToken(
                credentials.key_file,
                credentials.key_id,
                credentials.team_id,
                refresh_after=token_refresh_after,
                clock=clock,
            )
        self._ssl = self._tls_context()
        self._pools: dict[str, Http2Pool] = {}

    def _tls_context(self):
        cert_file = "" if self.token else self.credentials.cert_file
        return tls_context(self._ca_file, cert_file=cert_file, alpn=["h2"])

    def pool(self, environment: str) -> Http2Pool:
        pool = self._pools.get(environment)
        if pool is None:
            creds = self.credentials
            url = creds.sandbox_url if environment == "sandbox" else creds.production_url
            pool = Http2Pool(url, self._ssl, size=self._connections, connect_timeout=self._timeout)
            self._pools[environment] = pool
        return pool

    def headers(self, target: PushTarget, notification: Notification, push_type: str) -> list[tuple[str, str]]:
        topic = target.topic or self.credentials.topic
        if push_type == "voip" and not topic.endswith(".voip"):
            topic += ".voip"
        headers = [
            ("apns-push-type", push_type),
            ("apns-topic", topic),
            ("apns-priority", "5" if push_type == "background" else "10"),
            ("apns-expiration", str(max(int(notification.expires_at), 1))),
            # Unique per request: not indexed, so that the provider token stays in the
            # HPACK table and goes as a one-byte index instead of 200 bytes.
            NeverIndexedHeaderTuple("apns-id", random_uuid()),
        ]
        if notification.collapse_id:
            collapse = notification.collapse_id
            if len(collapse.encode()) > 64:  # Apple's limit; a digest keeps it unique
                collapse = hashlib.sha256(collapse.encode()).hexdigest()
            headers.append(("apns-collapse-id", collapse))
        if self.token is not None:
            headers.append(("authorization", f"bearer {self.token.value()}"))
        return headers

    def _prepare(self, target: PushTarget, notification: Notification):
        """(path, headers, body, push type), or the PushResult when it cannot be sent."""
        token = target.token or ""
        if not _HEX.match(token):
            return PushResult("dead_target", "BadDeviceToken", None)  # never valid: not hex
        push_type = payloads.apns_push_type(notification.payload, target.usage)
        try:
            body = payloads.fit(notification.payload, lambda p: payloads.encode_apns(p, push_type))
        except PayloadTooLarge:
            return PushResult("rejected", "PayloadTooLarge", None)
        return f"/3/device/{token}", self.headers(target, notification, push_type), body, push_type

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        prepared = self._prepare(target, notification)
        if isinstance(prepared, PushResult):
            return prepared
        path, headers, body, push_type = prepared
        environment = target.environment or "production"
        try:
            response = await self.pool(environment).request("POST", path, headers, body, timeout=self._timeout)
        except TransientError as exc:
            return PushResult("retry_later", str(exc))
        return self._result(target, push_type, response)

    def start(self, target: PushTarget, notification: Notification) -> Awaitable[PushResult] | None:
        """`send()`, with the request written before this returns (see
        `Http2Pool.start`); None, with nothing sent, when that cannot be done at once.
        Only a call's push is written at once: the others leave together with those
        framed in the same turn of the loop (`urgent`), one TLS record and send for all."""
        prepared = self._prepare(target, notification)
        if isinstance(prepared, PushResult):
            return None  # rare: `send()` says why
        path, headers, body, push_type = prepared
        pending = self.pool(target.environment or "production").start(
            "POST", path, headers, body, timeout=self._timeout, urgent=notification.is_call)
        return None if pending is None else self._await_result(target, push_type, pending)

    async def _await_result(self, target: PushTarget, push_type: str, pending) -> PushResult:
        try:
            response = await pending
        except TransientError as exc:
            return PushResult("retry_later", str(exc))
        return self._result(target, push_type, response)

    def _result(self, target: PushTarget, push_type: str, response) -> PushResult:
        token = target.token or ""
        result = classify(response.status, response.body, response.headers.get("retry-after"))
        if result.outcome != "delivered":
            log.info(
                "APNs refused a push",
                device=shorten_token(token),
                apns_id=response.headers.get("apns-id", ""),
                status=response.status,
                reason=result.reason,
                push_type=push_type,
            )
        return result

    async def renew_auth(self) -> None:
        # A new JWT on a connection that used another less than 20 minutes ago is refused,
        # and a replaced certificate only counts on new handshakes: start new connections.
        if self.token is not None:
            self.token.renew()
        else:
            try:
                self._ssl = self._tls_context()
            except ConfigError as exc:
                log.error("APNs certificate unreadable, keeping the loaded one", error=str(exc))
        for pool in self._pools.values():
            pool.recycle(self._ssl)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()


def random_uuid() -> str:
    """A random (version 4) UUID as text, as `str(uuid.uuid4())` gives it, without the
    UUID object (a few microseconds per push) nor a `getrandom` system call per push: the
    id only tells requests apart (Apple echoes it in its answer), it guards nothing, so
    the `random` module's generator (reseeded in a forked child) serves."""
    h = f"{random.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant bits


class _Reason(msgspec.Struct):
    reason: str = ""


def classify(status: int, body: bytes, retry_after_header: str | None = None) -> PushResult:
    """What an APNs answer means (Apple's table of reasons)."""
    if status == 200:
        return delivered()
    try:
        reason = msgspec.json.decode(body, type=_Reason).reason if body else ""
    except msgspec.DecodeError:
        reason = ""
    reason = reason or str(status)
    if reason in DEAD_REASONS or status == 410:
        return PushResult("dead_target", reason, status)
    if reason in AUTH_REASONS:
        return PushResult("auth_failed", reason, status)
    if status == 429 or status >= 500:
        return PushResult("retry_later", reason, status, retry_after(retry_after_header))
    return PushResult("rejected", reason, status, operator=reason in OPERATOR_REASONS)
