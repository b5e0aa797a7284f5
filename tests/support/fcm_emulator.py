"""An FCM HTTP v1 emulator with Google's OAuth2 token endpoint, over HTTPS on loopback.

- `POST /token`: the JWT-bearer grant. The RS256 assertion is verified with PyJWT (an
  implementation independent of ours) against the service account's public key; `iss`,
  `scope` and the one-hour `exp` are checked. It issues random access tokens that expire
  after `token_lifetime` seconds of the emulator's clock.
- `POST /v1/projects/{project}/messages:send`: checks the bearer token (issued, not
  expired: 401 otherwise), the project, the message shape FCM enforces (one target, data
  values all strings, Android priority and TTL syntax, 4096 bytes of data), then answers
  from its device registry: unknown token 400 INVALID_ARGUMENT, unregistered 404
  UNREGISTERED, else 200 with a message name. Errors use Google's envelope with
  `details[].errorCode`.

Tests can script answers per device token (any status and FcmError code, Retry-After,
an HTML 502), or for the token endpoint, and read every request.
"""

from __future__ import annotations

import collections
import re
import secrets
import time

import jwt
import msgspec
import trustme
from aiohttp import web

from tests.support.push_tls import server_context

CANONICAL = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")


def error_body(status: int, code: str | None, message: str = "error", violations: list | None = None) -> bytes:
    details = []
    if code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code})
    if violations:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations})
    error = {"code": status, "message": message, "status": CANONICAL.get(status, "UNKNOWN"), "details": details}
    return msgspec.json.encode({"error": error})


class FcmEmulator:
    def __init__(
        self,
        ca: trustme.CA,
        *,
        project_id: str,
        client_email: str,
        public_key_pem: bytes,
        clock=time.time,
        token_lifetime: int = 3600,
    ):
        self.ca = ca
        self.project_id = project_id
        self.client_email = client_email
        self.public_key_pem = public_key_pem
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.issued: dict[str, float] = {}  # access token -> expiry
        self.devices: set[str] = set()
        self.unregistered: set[str] = set()
        self.scripted: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.token_script: collections.deque = collections.deque()  # statuses for /token
        self.token_requests = 0
        self.assertions: list[str] = []  # every assertion posted to /token
        self.messages: list[dict] = []  # every send request body, with the answer's status
        self.url = ""
        self._runner: web.AppRunner | None = None

    def register(self, token: str) -> str:
        self.devices.add(token)
        return token

    def script(self, token: str, *answers: tuple) -> None:
        """Next answers for a device token: (status, errorCode[, headers]); errorCode "html"
        gives an HTML body as Google's front end does."""
        self.scripted[token].extend(answers)

    def delivered(self) -> list[dict]:
        return [m for m in self.messages if m["status"] == 200]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        context = server_context(self.ca)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- OAuth -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.token_script:
            status = self.token_script.popleft()
            return web.json_response({"error": "scripted"}, status=status)
        form = await request.post()
        self.assertions.append(form.get("assertion", ""))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.public_key_pem,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            return web.json_response({"error": "invalid_grant", "error_description": str(exc)}, status=400)
        now = self.clock()
        valid = (
            claims.get("iss") == self.client_email
            and "https://www.googleapis.com/auth/firebase.messaging" in claims.get("scope", "").split()
            and claims.get("aud") == "https://oauth2.googleapis.com/token"
            and 0 < claims.get("exp", 0) - claims.get("iat", 0) <= 3600
            and claims["exp"] > now
        )
        if not valid:
            return web.json_response({"error": "invalid_grant", "error_description": "bad claims"}, status=400)
        token = "ya29." + secrets.token_urlsafe(24)
        self.issued[token] = now + self.token_lifetime
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    # --- send --------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, answer, headers = self._check(request, body)
        try:
            message = msgspec.json.decode(body).get("message", {})
        except (msgspec.DecodeError, AttributeError):
            message = {}
        self.messages.append({"message": message, "status": status, "headers": dict(request.headers)})
        content_type = "text/html" if answer.startswith(b"<") else "application/json"
        return web.Response(status=status, body=answer, headers=headers, content_type=content_type)

    def _check(self, request: web.Request, body: bytes) -> tuple[int, bytes, dict]:
        auth = request.headers.get("Authorization", "")
        expiry = self.issued.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if expiry is None or expiry <= self.clock():
            return 401, error_body(401, None, "Request had invalid authentication credentials."), {}
        if request.match_info["project"] != self.project_id:
            return 403, error_body(403, "SENDER_ID_MISMATCH", "SenderId mismatch"), {}
        try:
            message = msgspec.json.decode(body)["message"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return 400, error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), {}
        problem = _shape_problem(message)
        if problem:
            return 400, error_body(400, "INVALID_ARGUMENT", problem), {}
        token = message["token"]
        if self.scripted.get(token):
            status, code, *extra = self.scripted[token].popleft()
            if code == "html":
                return status, b"<html><body>502 Bad Gateway</body></html>", {}
            return status, error_body(status, code), (extra[0] if extra else {})
        if token in self.unregistered:
            return 404, error_body(404, "UNREGISTERED", "Requested entity was not found."), {}
        if token not in self.devices:
            violation = [{"field": "message.token", "description": "Invalid registration token"}]
            return 400, error_body(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", violation), {}
        name = f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"
        return 200, msgspec.json.encode({"name": name}), {}


def _shape_problem(message: dict) -> str:
    if sum(key in message for key in ("token", "topic", "condition")) != 1:
        return "Recipient of the message is not set."
    data = message.get("data", {})
    if not all(isinstance(v, str) for v in data.values()):
        return "Invalid value at 'message.data' (TYPE_STRING)"
    if len(msgspec.json.encode(data)) > 4096:
        return "Message is too big"
    android = message.get("android", {})
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "Invalid value at 'message.android.priority'"
    ttl = android.get("ttl", "0s")
    if not _TTL.match(ttl) or float(ttl[:-1]) > 2_419_200:
        return "Invalid value at 'message.android.ttl'"
    return ""
