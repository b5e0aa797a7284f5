"""Web Push provider (RFC 8030), for browsers, UnifiedPush distributors and phones
without Google services.

- The payload is encrypted for the subscription (RFC 8291, `aes128gcm` of RFC 8188): an
  ephemeral P-256 key agreed with the subscription's `p256dh`, mixed with its `auth`
  secret and a random salt; one record, no padding beyond the delimiter. That is why the
  plaintext limit is 3993 bytes.
- The gateway identifies itself with VAPID (RFC 8292): an ES256 JWT for the push
  service's origin, `Authorization: vapid t=<jwt>, k=<public key>`. The key lives in the
  app's `vapid_key_file` (created, mode 0600, when missing); a JWT is reused for an origin
  until an hour before it expires (12 hours).
- `TTL` is the notification's remaining useful life; `Urgency` is high for calls;
  `Topic` (from the collapse id) lets a newer notification replace a pending one.

Depends on aiohttp, cryptography, the other `gateway.push` modules,
the config's credential Structs, the stored `PushTarget`, `gateway.errors`, `gateway.logs`
and `gateway.redact`; never on the API, SIP or lifecycle modules.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import os
import struct
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import logs
from gateway.config import WebPushCredentials
from gateway.errors import ConfigError, PayloadTooLarge
from gateway.push import payloads
from gateway.push.base import (
    Notification,
    PushResult,
    delivered,
    retry_after,
    tls_context,
)
from gateway.push.jwt import (
    b64url,
    b64url_decode,
    load_ec_p256_key,
    public_point,
    sign_es256,
)
from gateway.redact import shorten_token
from gateway.store.records import PushTarget

log = logs.get_logger(__name__)

RECORD_SIZE = 4096
VAPID_LIFETIME = 12 * 3600
_URGENCY = {"call": "high", "missed_call": "normal", "message": "normal"}  # others: low


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def encrypt(plaintext: bytes, p256dh: str, auth: str, *, salt: bytes | None = None, sender=None) -> bytes:
    """RFC 8291 message encryption; ValueError when the subscription's keys are malformed."""
    ua_public = b64url_decode(p256dh)
    auth_secret = b64url_decode(auth)
    if len(auth_secret) != 16:
        raise ValueError("auth secret must be 16 bytes")
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)  # ValueError if bad
    sender = sender or ec.generate_private_key(ec.SECP256R1())
    as_public = public_point(sender)
    salt = salt or os.urandom(16)
    shared = sender.exchange(ec.ECDH(), ua_key)
    # HKDF with one block of output each (RFC 8291 section 3.4, RFC 8188 section 2.2).
    prk_key = _hmac(auth_secret, shared)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: the last record
    header = salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public
    return header + record


def load_or_create_vapid_key(path: str) -> ec.EllipticCurvePrivateKey:
    file = Path(path)
    if not file.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        log.info("VAPID key created", file=path, public_key=b64url(public_point(key)))
        return key
    try:
        return load_ec_p256_key(file.read_bytes(), path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class Vapid:
    """VAPID headers for one key, one cached JWT per push-service origin."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str, clock: Callable[[], float]):
        self.key = key
        self.subject = subject
        self.public_key = b64url(public_point(key))  # what apps pass as applicationServerKey
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def header(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = self._clock()
        cached = self._cache.get(origin)
        if cached is None or cached[1] - now < 3600:
            expires = int(now) + VAPID_LIFETIME
            token = sign_es256(self.key, {"aud": origin, "exp": expires, "sub": self.subject})
            cached = self._cache[origin] = (token, expires)
        return f"vapid t={cached[0]}, k={self.public_key}"

    def forget(self) -> None:
        self._cache.clear()


class WebPushProvider:
    """Web Push for one app."""

    name = "webpush"

    def __init__(
        self,
        credentials: WebPushCredentials,
        *,
        ca_file: str = "",
        max_connections: int = 100,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.vapid = Vapid(load_or_create_vapid_key(credentials.vapid_key_file), credentials.vapid_subject, clock)
        self.allowed_hosts = [pattern.lower() for pattern in credentials.allowed_hosts]
        self._ssl = tls_context(ca_file)
        self._max_connections = max_connections
        self._timeout = timeout
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._http

    def headers(self, target: PushTarget, notification: Notification) -> dict[str, str]:
        headers = {
            "TTL": str(max(0, int(notification.expires_at - self._clock()))),
            "Urgency": _URGENCY.get(notification.kind, "low"),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.vapid.header(target.endpoint),
        }
        if notification.collapse_id:
            # RFC 8030 Topic: at most 32 characters of the URL-safe base64 alphabet.
            headers["Topic"] = b64url(hashlib.sha256(notification.collapse_id.encode()).digest())[:32]
        return headers

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        endpoint = target.endpoint or ""
        try:
            parts = urlsplit(endpoint)
        except ValueError:  # e.g. "https://[::1"
            return PushResult("dead_target", "malformed endpoint")
        if parts.scheme != "https" or not parts.hostname:
            return PushResult("dead_target", "endpoint is not an https URL")
        if self.allowed_hosts and not any(fnmatch.fnmatchcase(parts.hostname, p) for p in self.allowed_hosts):
            return PushResult("rejected", "endpoint host not allowed")
        try:
            plaintext = payloads.fit(notification.payload, payloads.encode_webpush)
        except PayloadTooLarge:
            return PushResult("rejected", "payload too large")
        try:
            body = encrypt(plaintext, target.p256dh or "", target.auth or "")
        except (ValueError, TypeError):
            return PushResult("dead_target", "malformed subscription keys")
        try:
            async with self._session().post(endpoint, data=body, headers=self.headers(target, notification)) as response:
                await response.read()
                status, wait = response.status, retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # the error's text may hold the endpoint, a capability URL: name the error only
            return PushResult("retry_later", f"push service unreachable: {type(exc).__name__}")
        result = classify(status, wait)
        if result.outcome != "delivered":
            log.info("Web Push refused a push", subscription=shorten_token(endpoint), status=status)
        return result

    async def renew_auth(self) -> None:
        self.vapid.forget()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def classify(status: int, wait: float | None = None) -> PushResult:
    if status in (200, 201, 202):
        return delivered(status=status)
    reason = str(status)
    if status in (404, 410):  # RFC 8030 says 404; many services answer 410
        return PushResult("dead_target", reason, status)
    if status in (401, 403):
        return PushResult("auth_failed", reason, status)
    if status == 429 or status >= 500:
        return PushResult("retry_later", reason, status, wait)
    return PushResult("rejected", reason, status)
