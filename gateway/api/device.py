"""The device API: the HTTPS endpoints the mobile apps call, on aiohttp.

    POST   /v1/instances               app API key   create (or replace) an instance: 201
    GET    /v1/instances/{id}          secret        its state
    PATCH  /v1/instances/{id}          secret        new password, push targets, display name
    PUT    /v1/instances/{id}/mode     secret        foreground | background
    POST   /v1/instances/{id}/refresh  secret        the app was opened: extend its life
    DELETE /v1/instances/{id}          secret        erase now: 204
    GET    /v1/instances/{id}/messages secret        stored SIP MESSAGEs, oldest first
    POST   /v1/instances/{id}/messages/ack  secret   delete fetched messages by id
    GET    /v1/openapi.json            none          the OpenAPI document

Every error is `{"error": {"code", "message"}}`: 400 (the message starts with the bad
field's path), 401 (missing or wrong bearer token; an app key for another app), 404, 405,
409 (see `gateway.instances`), 413 (body over `max_body_bytes`), 415 (a body that is not
application/json), 429 (the app's token bucket is empty; Retry-After), 503 (the store is
busy; Retry-After). Anything unexpected is logged with its traceback and answered 500 with
no detail. Which app a request counts against: the app whose API key it carries (create),
or the instance's app.

This module depends on the instance service, the message box (`gateway.messages`), the
store's records and hashes, the config, the logs and the API schemas; the SIP and push
parts are reached only through the service's events.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl

import msgspec
from aiohttp import web

from gateway.api import schemas
from gateway.api.openapi import openapi_document
from gateway.api.ratelimit import AppRateLimit
from gateway.config import Config, api_key_hash, is_loopback, read_api_key_hashes
from gateway.errors import ApiError, ConfigError, TransientError
from gateway.instances import InstanceService
from gateway.logs import get_logger
from gateway.messages import MessageBox
from gateway.redact import shorten_token
from gateway.store.crypto import same_digest
from gateway.store.records import InstanceRecord, PushTarget

log = get_logger(__name__)

JSON = "application/json"
_encoder = msgspec.json.Encoder()

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class RateLimited(ApiError):
    """The app's token bucket is empty."""

    def __init__(self, app_id: str, retry_after: int):
        super().__init__(429, "rate_limited", f"too many requests for app {app_id!r}")
        self.retry_after = retry_after


#: the DeviceApi behind an application (for the wiring and the tests)
DEVICE_API: web.AppKey[DeviceApi] = web.AppKey("device_api")

# --- the error envelope ------------------------------------------------------------------


def error_response(status: int, code: str, message: str, headers=None) -> web.Response:
    body = schemas.ErrorBody(error=schemas.ErrorDetail(code=code, message=message))
    return web.Response(status=status, body=_encoder.encode(body), content_type=JSON, headers=headers)


@web.middleware
async def error_envelope(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into the JSON error envelope; no traceback leaves the process."""
    try:
        return await handler(request)
    except RateLimited as exc:
        return error_response(429, exc.code, str(exc), {"Retry-After": str(exc.retry_after)})
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, str(exc), headers)
    except web.HTTPException as exc:  # aiohttp's own: no route, wrong method, body too big
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers)
    except TransientError as exc:
        retry = str(max(1, round(exc.retry_after or 1)))
        log.warning("device api store busy", method=request.method, path=request.path, error=str(exc))
        return error_response(503, "unavailable", "try again later", {"Retry-After": retry})
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("device api request failed", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error")


# --- request helpers ---------------------------------------------------------------------


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token>")
    return token


async def read_body(request: web.Request, limit: int, kind: type):
    """The request body decoded as `kind`: 413 over `limit`, 415 unless it is JSON."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    mime = request.content_type
    if mime != JSON and not (mime.startswith("application/") and mime.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", f"the body must be {JSON}, not {mime}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes") from None
    if len(body) > limit:  # client_max_size is the first guard; this one names our limit
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    return schemas.decode(body, kind)


def json_response(struct, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(struct), content_type=JSON)


def _utc(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def push_targets(push: list[schemas.PushTargetIn]) -> list[PushTarget]:
    """API push targets -> stored ones (Web Push subscriptions flattened)."""
    targets = []
    for target in push:
        if isinstance(target.token, schemas.WebPushSubscription):
            sub = target.token
            targets.append(
                PushTarget(
                    provider=target.provider,
                    usage=target.usage,
                    endpoint=sub.endpoint,
                    p256dh=sub.keys.p256dh,
                    auth=sub.keys.auth,
                )
            )
        else:
            apns = target.provider == "apns"
            targets.append(
                PushTarget(
                    provider=target.provider,
                    usage=target.usage,
                    token=target.token,
                    environment=target.environment if apns else None,
                    topic=(target.topic or None) if apns else None,
                )
            )
    return targets


# --- the API -----------------------------------------------------------------------------


class DeviceApi:
    """The handlers, with what they share: config, service, key table and rate limit."""

    def __init__(self, config: Config, instances: InstanceService, messages: MessageBox | None = None):
        self.config = config
        self.instances = instances
        self.messages = messages or MessageBox(instances.store, instances.box)
        self.limit = config.device_api.max_body_bytes
        self.rate = AppRateLimit(config.device_api.rate_per_app, config.device_api.rate_burst)
        self.key_owner = app_keys(config)

    def _charge(self, app_id: str) -> None:
        wait = self.rate.retry_after(app_id)
        if wait:
            raise RateLimited(app_id, wait)

    def _app_of_key(self, request: web.Request) -> str:
        presented = api_key_hash(bearer_token(request))
        # constant time per stored hash: which key matched must not show in the timing
        owner = None
        for stored, app_id in self.key_owner.items():
            if same_digest(presented, stored):
                owner = app_id
        if owner is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        return owner

    async def _instance(self, request: web.Request) -> InstanceRecord:
        token = bearer_token(request)
        record = await self.instances.authenticate(request.match_info["id"], token)
        self._charge(record.app_id)
        return record

    async def _status(self, record: InstanceRecord) -> web.Response:
        pending = await self.instances.pending_messages(record.id)
        return json_response(
            schemas.InstanceStatus(
                id=record.id,
                app_id=record.app_id,
                device_id=record.device_id,
                aor=record.aor,
                display_name=record.display_name or "",
                mode=record.mode,
                state=record.state,
                last_error=record.last_error,
                registered_until=_utc(record.registered_until),
                expires_at=_utc(record.expires_at),
                pending_messages=pending,
            )
        )

    async def create(self, request: web.Request) -> web.Response:
        key_app = self._app_of_key(request)
        self._charge(key_app)
        body = await read_body(request, self.limit, schemas.CreateInstance)
        if body.app_id != key_app:
            raise ApiError(401, "unauthorized", f"the API key is not one of app {body.app_id!r}")
        app = self.config.app(key_app)
        schemas.check_push_providers(body.push, app.providers(), app.id)
        account = body.account
        record, secret = await self.instances.create(
            app,
            device_id=body.device_id,
            aor=account.aor,
            auth_username=account.auth_username,
            password=account.password,
            registrar=account.registrar,
            outbound_proxy=account.outbound_proxy,
            reg_expires=account.expires,
            display_name=account.display_name,
            push=push_targets(body.push),
        )
        log.info(
            "instance created",
            id=record.id,
            app=app.id,
            device=body.device_id,
            aor=account.aor,
            push=", ".join(_loggable(target) for target in record.push),
        )
        created = schemas.CreatedInstance(
            id=record.id,
            secret=secret,
            state=record.state,
            expires_at=_utc(record.expires_at),
            device_face=self.device_face(record.id, request.host),
        )
        return json_response(created, status=201)

    async def get(self, request: web.Request) -> web.Response:
        return await self._status(await self._instance(request))

    async def patch(self, request: web.Request) -> web.Response:
        record = await self._instance(request)
        body = await read_body(request, self.limit, schemas.UpdateInstance)
        push = None
        if body.push is not msgspec.UNSET:
            app = self.config.app(record.app_id)
            providers = app.providers() if app else set()
            schemas.check_push_providers(body.push, providers, record.app_id)
            push = push_targets(body.push)
        account = body.account or schemas.AccountUpdate()  # UNSET is falsy
        record = await self.instances.update(
            record.id,
            password=None if account.password is msgspec.UNSET else account.password,
            push=push,
            display_name=None if account.display_name is msgspec.UNSET else account.display_name,
        )
        return await self._status(record)

    async def set_mode(self, request: web.Request) -> web.Response:
        record = await self._instance(request)
        body = await read_body(request, self.limit, schemas.SetMode)
        return await self._status(await self.instances.set_mode(record.id, body.mode))

    async def refresh(self, request: web.Request) -> web.Response:
        record = await self._instance(request)
        return await self._status(await self.instances.refresh(record.id))

    async def delete(self, request: web.Request) -> web.Response:
        record = await self._instance(request)
        await self.instances.erase(record.id)
        log.info("instance erased", id=record.id, by="app")
        return web.Response(status=204)

    async def list_messages(self, request: web.Request) -> web.Response:
        record = await self._instance(request)
        out = []
        for row, content in await self.messages.fetch(record.id):
            try:
                body, encoding = content.body.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                body, encoding = base64.b64encode(content.body).decode(), "base64"
            out.append(schemas.StoredMessageOut(
                id=row.id, received_at=_utc(row.received_at), sender=content.sender,
                sender_name=content.sender_name, content_type=content.content_type,
                body=body, encoding=encoding, imdn=content.imdn))
        return json_response(schemas.MessageList(messages=out))

    async def ack_messages(self, request: web.Request) -> web.Response:
        record = await self._instance(request)
        body = await read_body(request, self.limit, schemas.AckMessages)
        deleted = await self.messages.ack(record.id, body.ids)
        return json_response(schemas.AckResult(deleted=deleted))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=openapi_document(), content_type=JSON)

    def device_face(self, instance_id: str, request_host: str) -> schemas.DeviceFace:
        """Where the woken device registers. The host is the configured public address,
        else the device face's own address, else the host the app reached this API by."""
        face = self.config.sip.device_face
        host = _host_part(self.config.sip.public_address)
        if not host and face.host not in ("0.0.0.0", "::", ""):
            host = face.host
        if not host:
            host = _host_part(request_host) or "localhost"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal in a URI
        ports = (("tls", face.tls_port), ("tcp", face.tcp_port), ("udp", face.udp_port))
        return schemas.DeviceFace(
            uri=f"sip:{instance_id}@{host}",
            username=instance_id,
            transports=[schemas.Transport(transport=t, port=p) for t, p in ports if p],
        )


def _loggable(target: PushTarget) -> str:
    """A push target for the log: the provider and a shortened token. For Web Push the
    push service's host is shown (it is not secret) and the path, which is, shortened."""
    if target.endpoint:
        host, _, path = target.endpoint.removeprefix("https://").partition("/")
        return f"webpush:{host}/{shorten_token(path)}"
    return f"{target.provider}:{shorten_token(target.token)}"


def _host_part(hostport: str) -> str:
    """'[::1]:8443' -> '::1', 'gw.example.com:8443' -> 'gw.example.com'."""
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0]
    if hostport.count(":") == 1:
        return hostport.partition(":")[0]
    return hostport


def app_keys(config: Config) -> dict[str, str]:
    """API key hash -> app id. One key serving two apps would make the app ambiguous: that
    is a configuration error."""
    owner: dict[str, str] = {}
    for app in config.apps:
        for digest in read_api_key_hashes(app):
            if owner.get(digest, app.id) != app.id:
                raise ConfigError(f"apps {owner[digest]!r} and {app.id!r} share an API key")
            owner[digest] = app.id
    return owner


def create_device_api(config: Config, instances: InstanceService,
                      messages: MessageBox | None = None) -> web.Application:
    """The aiohttp application of the device API (not yet listening)."""
    api = DeviceApi(config, instances, messages)
    # client_max_size makes aiohttp refuse a bigger body itself, before buffering it all
    app = web.Application(client_max_size=api.limit, middlewares=[error_envelope])
    app.router.add_post("/v1/instances", api.create)
    app.router.add_get("/v1/instances/{id}", api.get, allow_head=False)
    app.router.add_patch("/v1/instances/{id}", api.patch)
    app.router.add_delete("/v1/instances/{id}", api.delete)
    app.router.add_put("/v1/instances/{id}/mode", api.set_mode)
    app.router.add_post("/v1/instances/{id}/refresh", api.refresh)
    app.router.add_get("/v1/instances/{id}/messages", api.list_messages, allow_head=False)
    app.router.add_post("/v1/instances/{id}/messages/ack", api.ack_messages)
    app.router.add_get("/v1/openapi.json", api.openapi, allow_head=False)
    app[DEVICE_API] = api
    return app


async def start_device_api(
    config: Config, app: web.Application, ssl_context: ssl.SSLContext | None
) -> web.AppRunner:
    """Listen on device_api.host:port. Without a TLS context only a loopback host with
    plain_http set is allowed. Returns the runner; `await runner.cleanup()` stops it."""
    settings = config.device_api
    if ssl_context is None and not (settings.plain_http and is_loopback(settings.host)):
        raise ConfigError("device_api: plain HTTP needs plain_http = true and a loopback host")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"device_api: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    scheme = "https" if ssl_context else "http"
    log.info("device api listening", url=f"{scheme}://{settings.host}:{settings.port}")
    return runner
