"""FCM provider: Firebase Cloud Messaging HTTP v1 with a Google service account.

- Auth: an OAuth2 access token obtained with the JWT-bearer grant (RFC 7523): an RS256
  assertion signed with the service account's key, POSTed to the token URL. The token
  is cached and refreshed a few minutes before it expires (clock injectable), one refresh
  at a time however many sends are waiting.
- Send: a data message (values all strings) with Android priority HIGH for what the user
  must see now and NORMAL for housekeeping, and a TTL equal to the notification's
  remaining useful life, so FCM drops a call push the moment the call has stopped ringing.
- Errors come from `error.details[].errorCode` (Google's FcmError), falling back to the
  HTTP status when the body is not Google's JSON (an HTML 502 from the front end).

Depends on aiohttp, cryptography, the other `gateway.push` modules,
the config's credential Structs, the stored `PushTarget`, `gateway.errors`, `gateway.logs`
and `gateway.redact`; never on the API, SIP or lifecycle modules.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable

import aiohttp
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import logs
from gateway.config import FcmCredentials
from gateway.errors import ConfigError, PayloadTooLarge
from gateway.push import payloads
from gateway.push.base import (
    Notification,
    PushResult,
    delivered,
    retry_after,
    tls_context,
)
from gateway.push.jwt import sign_rs256
from gateway.redact import shorten_token
from gateway.store.records import PushTarget

log = logs.get_logger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
REFRESH_MARGIN = 300.0  # seconds before expiry at which a token is replaced
REFUSAL_MEMORY = 60.0  # a refused assertion is not posted again before this, unless renewed
MAX_TTL = 2_419_200  # FCM's limit: four weeks
_URGENT = {"call", "missed_call", "message"}


class ServiceAccount(msgspec.Struct):
    """The fields of a Google service-account JSON file that we use."""

    project_id: str
    client_email: str
    private_key: str
    private_key_id: str = ""
    token_uri: str = GOOGLE_TOKEN_URI
    type: str = "service_account"


def load_service_account(path: str) -> tuple[ServiceAccount, rsa.RSAPrivateKey]:
    """The account and its key; ConfigError naming the file when it is not usable."""
    try:
        account = msgspec.json.decode(Path(path).read_bytes(), type=ServiceAccount)
        key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a service account file: {exc}") from None
    if account.type != "service_account" or not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path}: not a service account file with an RSA key")
    return account, key


class AuthRefused(Exception):
    """The token endpoint refused our assertion (bad key, disabled account)."""


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: int | str = 3600


class AccessToken:
    """A cached OAuth2 access token for one service account."""

    def __init__(
        self,
        account: ServiceAccount,
        key: rsa.RSAPrivateKey,
        token_url: str,
        session: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float],
    ):
        self.account = account
        self._key = key
        self.token_url = token_url
        self._session = session
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._refreshing: asyncio.Future | None = None
        self._refused_until = 0.0
        self.refreshes = 0  # tokens obtained (tests, stats)

    def invalidate(self) -> None:
        self._token = None
        self._refused_until = 0.0

    async def value(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._expires_at - REFRESH_MARGIN:
            return self._token
        if now < self._refused_until:  # no token request per push while the key is refused
            raise AuthRefused("token endpoint refused the assertion recently")
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)
        return await asyncio.shield(self._refreshing)

    def _refreshed(self, future: asyncio.Future) -> None:
        self._refreshing = None
        if not future.cancelled():
            future.exception()  # retrieved here; every waiter sees it through the shield

    async def _refresh(self) -> str:
        now = self._clock()
        account = self.account
        claims = {
            "iss": account.client_email,
            "scope": SCOPE,
            # Google checks aud against its own token URI even when we post elsewhere.
            "aud": account.token_uri or GOOGLE_TOKEN_URI,
            "iat": int(now),
            "exp": int(now) + 3600,
        }
        assertion = sign_rs256(self._key, claims, kid=account.private_key_id)
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        async with self._session().post(self.token_url, data=form) as response:
            body = await response.read()
            if response.status in (400, 401, 403):
                self._refused_until = now + REFUSAL_MEMORY
                raise AuthRefused(f"token endpoint answered {response.status}")
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
        try:
            answer = msgspec.json.decode(body, type=_TokenAnswer)
            lifetime = float(answer.expires_in)
        except (msgspec.DecodeError, ValueError):
            raise AuthRefused("token endpoint answered something that is not a token") from None
        self._token, self._expires_at = answer.access_token, now + lifetime
        self.refreshes += 1
        return self._token


class _Violation(msgspec.Struct):
    field: str = ""


class _Detail(msgspec.Struct, rename="camel"):
    """One of google.rpc.Status details: an FcmError or a BadRequest (others: all defaults)."""

    error_code: str = ""
    field_violations: list[_Violation] = []


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_Detail] = []


class _Envelope(msgspec.Struct):
    error: _Error | None = None


class FcmProvider:
    """FCM HTTP v1 for one app."""

    name = "fcm"

    def __init__(
        self,
        credentials: FcmCredentials,
        *,
        ca_file: str = "",
        max_connections: int = 100,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.account, key = load_service_account(credentials.service_account_file)
        self.send_url = credentials.send_url.format(project_id=self.account.project_id)
        self._ssl = tls_context(ca_file)
        self._max_connections = max_connections
        self._timeout = timeout
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self.auth = AccessToken(self.account, key, credentials.token_url, self._session, clock)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._http

    def message(self, target: PushTarget, notification: Notification, data: dict[str, str]) -> dict:
        ttl = min(MAX_TTL, max(0, int(notification.expires_at - self._clock())))
        android = {"priority": "HIGH" if notification.kind in _URGENT else "NORMAL", "ttl": f"{ttl}s"}
        if notification.collapse_id:
            android["collapse_key"] = notification.collapse_id
        return {"message": {"token": target.token, "data": data, "android": android}}

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        if not target.token:
            return PushResult("dead_target", "no token")
        try:
            data = payloads.fit(notification.payload, payloads.fcm_data)
        except PayloadTooLarge:
            return PushResult("rejected", "payload too large")
        body = msgspec.json.encode(self.message(target, notification, data))
        try:
            access_token = await self.auth.value()
            headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}
            async with self._session().post(self.send_url, data=body, headers=headers) as response:
                answer = await response.read()
                status, wait = response.status, retry_after(response.headers.get("Retry-After"))
        except AuthRefused as exc:
            return PushResult("auth_failed", str(exc))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return PushResult("retry_later", f"FCM unreachable: {exc or type(exc).__name__}")
        result = classify(status, answer, wait)
        if result.outcome != "delivered":
            log.info("FCM refused a push", device=shorten_token(target.token), status=status, reason=result.reason)
        return result

    async def renew_auth(self) -> None:
        self.auth.invalidate()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def classify(status: int, body: bytes, wait: float | None = None) -> PushResult:
    """What an FCM v1 answer means, from Google's FcmError code first."""
    if status == 200:
        return delivered()
    try:
        error = msgspec.json.decode(body, type=_Envelope).error or _Error()
    except msgspec.DecodeError:
        error = _Error()  # not Google's JSON: an HTML error page from a front end
    code = next((d.error_code for d in error.details if d.error_code), "")
    reason = code or error.status or str(status)
    if code == "UNREGISTERED" or status == 404:
        return PushResult("dead_target", reason, status)
    if status == 400 and code in ("INVALID_ARGUMENT", "") and _bad_token(error):
        return PushResult("dead_target", "INVALID_ARGUMENT (token)", status)
    if code in ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR", "SENDER_ID_MISMATCH"):
        # set up in the Firebase project, not ours to renew: the operator must look
        return PushResult("rejected", reason, status, operator=True)
    if status in (401, 403):
        return PushResult("auth_failed", reason, status)
    if status == 429:  # Google: back off at least a minute unless told otherwise
        return PushResult("retry_later", reason, status, wait if wait is not None else 60.0)
    if status >= 500:
        return PushResult("retry_later", reason, status, wait)
    return PushResult("rejected", reason, status)


def _bad_token(error: _Error) -> bool:
    fields = {v.field for detail in error.details for v in detail.field_violations}
    return "message.token" in fields or "registration token" in error.message
