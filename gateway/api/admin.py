"""The admin listener: metrics, health, about and stats for the operator, on aiohttp.

    GET /metrics   Prometheus text format (every metric of `gateway.metrics`)
    GET /healthz   200 while the process serves requests at all
    GET /readyz    200 when every readiness check passes (store open, listeners up),
                   else 503 naming the failing checks
    GET /about     version, build (compiled or pure Python), start time and uptime
    GET /stats     JSON in the spirit of SIPIS's /stats/summary/json: instances by state,
                   registration, call, push (per provider) and message counts

It listens on loopback by default (`[admin]` in the config). With `admin.bearer_token_file`
set, /about and /stats want `Authorization: Bearer <token>` (401 otherwise); /metrics and
the health checks stay open for Prometheus and the service manager. Everything here is an
aggregate: no AOR, token, instance id or address is ever shown.

Depends on `gateway.metrics`, the config, the logs and the device API's error envelope;
the gateway's parts are reached through the `InstanceStates` and the readiness checks
handed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from gateway import metrics
from gateway.api.device import error_response
from gateway.config import Config, is_loopback
from gateway.errors import ConfigError
from gateway.logs import get_logger

log = get_logger(__name__)

_encoder = msgspec.json.Encoder()
#: the text exposition format every Prometheus 2.x reads (newer prometheus-client versions
#: announce a "version=1.0.0" that older servers do not know; the bytes are the same)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Build(msgspec.Struct):
    accelerated: bool  # every hot path runs its compiled (Cython) twin
    modules: dict[str, str]  # accelerated module -> "cython" | "python"
    python: str


class About(msgspec.Struct):
    name: str
    version: str
    build: Build
    started_at: dt.datetime
    uptime_seconds: float


class InstanceStats(msgspec.Struct):
    count: int
    by_state: dict[str, int]


class RegistrationStats(msgspec.Struct):
    sent: int
    outcomes: dict[str, int]


class CallStats(msgspec.Struct):
    received: int
    outcomes: dict[str, int]


class MessageStats(msgspec.Struct):
    stored: int
    fetched: int
    expired: int


class Stats(msgspec.Struct):
    server: About
    instances: InstanceStats
    registrations: RegistrationStats
    calls: CallStats
    pushes: dict[str, dict[str, int]]  # provider -> outcome -> deliveries (all kinds)
    messages: MessageStats


class HealthBody(msgspec.Struct):
    status: str  # "ok" | "unavailable"
    failing: list[str] = []


Check = Callable[[], bool]

#: the Admin behind an application (for the wiring and the tests)
ADMIN: web.AppKey[Admin] = web.AppKey("admin")


def read_bearer_token(path: str) -> str:
    """The token in `path` (surrounding white space removed). ConfigError when the file
    cannot be read or holds a token too short to be a secret."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"admin.bearer_token_file: {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise ConfigError(f"admin.bearer_token_file: {path}: token shorter than 16 characters")
    return token


class Admin:
    """The handlers, the registry they expose, and what they read."""

    def __init__(self, config: Config, registry: CollectorRegistry, states: metrics.InstanceStates,
                 checks: Mapping[str, Check], *, clock: Callable[[], float] = time.time):
        self.registry = registry
        self.states = states
        self.checks = dict(checks)
        self.clock = clock
        self.started_at = clock()
        self.build = metrics.build()
        token_file = config.admin.bearer_token_file
        self._token_hash = hashlib.sha256(read_bearer_token(token_file).encode()).digest() if token_file else None
        if self._token_hash is None and not is_loopback(config.admin.host):
            log.warning("admin listener is not on loopback and has no bearer token: /about and /stats are open",
                        host=config.admin.host)

    def _authorize(self, request: web.Request) -> web.Response | None:
        """None when the request may see /about and /stats, else the 401 to answer."""
        if self._token_hash is None:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        if scheme.lower() == "bearer" and hmac.compare_digest(given, self._token_hash):
            return None
        return error_response(401, "unauthorized", "this page needs Authorization: Bearer <admin token>",
                              {"WWW-Authenticate": "Bearer"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(HealthBody("ok"))

    async def readyz(self, request: web.Request) -> web.Response:
        failing = sorted(name for name, check in self.checks.items() if not _passes(check))
        if failing:
            return _json(HealthBody("unavailable", failing), status=503)
        return _json(HealthBody("ok"))

    def about(self) -> About:
        now = self.clock()
        return About(
            name="sip-push-gateway",
            version=self.build["version"],
            build=msgspec.convert(self.build, Build),
            started_at=dt.datetime.fromtimestamp(self.started_at, dt.timezone.utc),
            uptime_seconds=round(max(0.0, now - self.started_at), 3),
        )

    async def about_page(self, request: web.Request) -> web.Response:
        return self._authorize(request) or _json(self.about())

    def stats(self) -> Stats:
        pushes = {
            provider: {outcome: metrics.PUSHES.total(provider=provider, outcome=outcome)
                       for outcome in metrics.PUSH_OUTCOMES}
            for provider in metrics.PROVIDERS
        }
        return Stats(
            server=self.about(),
            instances=InstanceStats(self.states.total, dict(self.states.counts)),
            registrations=RegistrationStats(
                metrics.REGISTER_SENT.total(),
                {o: metrics.REGISTER_RESULTS.total(outcome=o) for o in metrics.REGISTER_OUTCOMES},
            ),
            calls=CallStats(
                metrics.CALLS_RECEIVED.total(),
                {o: metrics.CALLS.total(outcome=o) for o in metrics.CALL_OUTCOMES},
            ),
            pushes=pushes,
            messages=MessageStats(
                metrics.MESSAGES_STORED.total(), metrics.MESSAGES_FETCHED.total(), metrics.MESSAGES_EXPIRED.total()
            ),
        )

    async def stats_page(self, request: web.Request) -> web.Response:
        return self._authorize(request) or _json(self.stats())


def _passes(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:  # a check that breaks is a check that fails
        log.exception("readiness check failed")
        return False


def _json(struct: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(struct), content_type="application/json")


@web.middleware
async def _no_traceback(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405) and our bugs as the JSON error envelope."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, "not_found" if exc.status == 404 else "http_error", exc.reason)
    except Exception:
        log.exception("admin request failed", path=request.path)
        return error_response(500, "internal", "internal error")


def create_admin(config: Config, registry: CollectorRegistry, states: metrics.InstanceStates,
                 checks: Mapping[str, Check]) -> web.Application:
    """The aiohttp application of the admin listener (not yet listening)."""
    admin = Admin(config, registry, states, checks)
    app = web.Application(middlewares=[_no_traceback])
    app.router.add_get("/metrics", admin.metrics_text)
    app.router.add_get("/healthz", admin.healthz)
    app.router.add_get("/readyz", admin.readyz)
    app.router.add_get("/about", admin.about_page)
    app.router.add_get("/stats", admin.stats_page)
    app[ADMIN] = admin
    return app


async def start_admin(config: Config, app: web.Application) -> web.AppRunner:
    """Listen on admin.host:port (port 0: any free port, see `runner.addresses`)."""
    settings = config.admin
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"admin: cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    host, port = runner.addresses[0][:2]
    log.info("admin listening", url=f"http://{host}:{port}")
    return runner
