"""A Web Push service emulator (RFC 8030) over HTTPS on loopback, playing a browser's or a
UnifiedPush distributor's push service.

`subscribe()` makes a subscription the way a user agent does: a P-256 key pair and a
16-byte auth secret, optionally restricted to one VAPID key (applicationServerKey). On
`POST /push/{id}` it checks `TTL` (400 when missing), `Content-Encoding: aes128gcm`, the
4096-byte limit (413), the VAPID header (`vapid t=..., k=...`: ES256 signature verified
with PyJWT, `aud` equal to this origin, `exp` in the future and at most 24 hours ahead,
the key the subscription is restricted to: 401/403 otherwise), then decrypts the body
with the subscription's private key using the independent `http_ece` package -- proving
our RFC 8291 encryption -- and keeps the plaintext. Removed subscriptions answer 404 or
410; answers can be scripted per subscription.
"""

from __future__ import annotations

import base64
import collections
import os
import secrets
import time
from dataclasses import dataclass, field

import http_ece
import jwt
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.push_tls import server_context


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscription:
    id: str
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    vapid_key: str | None  # the only applicationServerKey allowed, if restricted
    gone: int | None = None  # 404 or 410 once removed
    received: list[dict] = field(default_factory=list)


class WebPushEmulator:
    def __init__(self, ca: trustme.CA, *, clock=time.time):
        self.ca = ca
        self.clock = clock
        self.subscriptions: dict[str, Subscription] = {}
        self.scripted: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.requests: list[dict] = []
        self.origin = ""
        self._runner: web.AppRunner | None = None

    def subscribe(self, vapid_key: str | None = None) -> tuple[str, str, str]:
        """A new subscription: (endpoint, p256dh, auth) as a user agent hands them out."""
        sub = Subscription(secrets.token_urlsafe(20), ec.generate_private_key(ec.SECP256R1()), os.urandom(16), vapid_key)
        self.subscriptions[sub.id] = sub
        point = sub.key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return f"{self.origin}/push/{sub.id}", _b64(point), _b64(sub.auth)

    def subscription(self, endpoint: str) -> Subscription:
        return self.subscriptions[endpoint.rsplit("/", 1)[1]]

    def script(self, endpoint: str, *statuses: int | tuple[int, dict]) -> None:
        self.scripted[endpoint.rsplit("/", 1)[1]].extend(statuses)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/push/{id}", self._push)
        app.router.add_get("/push/{id}", self._unifiedpush_probe)
        context = server_context(self.ca)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.origin = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self.origin

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _unifiedpush_probe(self, request: web.Request) -> web.Response:
        return web.json_response({"unifiedpush": {"version": 1}})

    async def _push(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, extra = self._check(request, body)
        self.requests.append({"id": request.match_info["id"], "headers": dict(request.headers), "status": status})
        headers = {"TTL": request.headers.get("TTL", "0")} if status == 201 else {}
        if status == 201:
            headers["Location"] = f"{self.origin}/message/{secrets.token_hex(8)}"
        headers.update(extra)
        return web.Response(status=status, headers=headers)

    def _check(self, request: web.Request, body: bytes) -> tuple[int, dict]:
        sub = self.subscriptions.get(request.match_info["id"])
        if sub is None:
            return 404, {}
        if sub.gone:
            return sub.gone, {}
        if self.scripted.get(sub.id):
            answer = self.scripted[sub.id].popleft()
            return answer if isinstance(answer, tuple) else (answer, {})
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            return 400, {}
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return 415, {}
        if len(body) > 4096:
            return 413, {}
        topic = request.headers.get("Topic")
        if topic is not None and (len(topic) > 32 or not all(c.isalnum() or c in "-_" for c in topic)):
            return 400, {}
        vapid = self._check_vapid(request.headers.get("Authorization", ""), sub)
        if vapid:
            return vapid, {}
        try:
            plaintext = http_ece.decrypt(body, private_key=sub.key, auth_secret=sub.auth, version="aes128gcm")
        except Exception:
            return 400, {}
        sub.received.append({"plaintext": plaintext, "headers": dict(request.headers)})
        return 201, {}

    def _check_vapid(self, authorization: str, sub: Subscription) -> int:
        if not authorization.startswith("vapid "):
            return 401 if sub.vapid_key else 0
        params = dict(part.strip().split("=", 1) for part in authorization[6:].split(",") if "=" in part)
        token, key = params.get("t", ""), params.get("k", "")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(key))
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=self.origin,
                options={"verify_exp": False, "require": ["aud", "exp"]},
            )
        except (jwt.PyJWTError, ValueError):
            return 403
        now = self.clock()
        if not now < claims["exp"] <= now + 24 * 3600:
            return 403
        if sub.vapid_key and key != sub.vapid_key:
            return 403
        return 0
