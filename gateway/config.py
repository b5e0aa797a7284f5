"""The gateway's configuration: msgspec Structs decoded strictly from TOML.

Every key has a default here, and `config/gateway.toml` lists every key with that default
(a test keeps the two in step). Unknown keys, wrong types and bad values raise one
`ConfigError` naming the file and the key path, e.g.
`config/gateway.toml: device_api.port: Expected int <= 65535`.

Relative paths are taken relative to the working directory (the Debian package uses
absolute ones). This module depends only on `gateway.errors`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from gateway.errors import ConfigError

DEFAULT_PATH = "config/gateway.toml"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[float, Meta(gt=0)]
Hours = Annotated[float, Meta(gt=0)]


class Section(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: unknown keys are errors."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DeviceApi(Section):
    """The HTTPS API the mobile apps talk to."""

    host: str = "0.0.0.0"
    port: Port = 8443
    tls_cert_file: str = ""  # empty: a self-signed certificate in state_dir
    tls_key_file: str = ""
    plain_http: bool = False  # only allowed when host is a loopback address
    max_body_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 65536
    rate_per_app: Positive = 50.0  # requests per second per app (token bucket)
    rate_burst: Annotated[int, Meta(ge=1)] = 100

    def __post_init__(self):
        if self.plain_http and not is_loopback(self.host):
            raise ValueError("plain_http is only allowed when host is a loopback address")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")


class Admin(Section):
    """Metrics, health and stats; loopback by default."""

    host: str = "127.0.0.1"
    port: Port = 9464
    bearer_token_file: str = ""  # empty: /about and /stats are open on this listener


class SipFace(Section):
    """One SIP face: the ports it listens on (0 disables a transport)."""

    host: str = "0.0.0.0"
    udp_port: Port = 0
    tcp_port: Port = 0
    tls_port: Port = 0
    tls_cert_file: str = ""  # empty: the self-signed certificate in state_dir
    tls_key_file: str = ""


def _provider_face() -> SipFace:
    return SipFace(udp_port=5060, tcp_port=5060, tls_port=5061)


def _device_face() -> SipFace:
    return SipFace(udp_port=5070, tcp_port=5070, tls_port=5071)


class Registration(Section):
    """REGISTER towards providers: send rates, retries, refresh jitter."""

    # false: the gateway registers nothing (the API, the lifecycle and push still run)
    enabled: bool = True
    # REGISTER exchanges per second for the whole gateway, and per registrar (next hop)
    rate: Positive = 500.0
    burst: Annotated[int, Meta(ge=1)] = 50
    per_registrar_rate: Positive = 100.0
    per_registrar_burst: Annotated[int, Meta(ge=1)] = 20
    # REGISTER exchanges under way at once (the rest wait: back-pressure under overload)
    max_in_flight: Annotated[int, Meta(ge=1)] = 200
    # RFC 5626 4.5 backoff after errors: min(retry_max, retry_base * 2^(failures-1))
    retry_base: Positive = 30.0
    retry_max: Positive = 1800.0
    # after 403/404/rejected credentials: slow retries, doubling up to the max
    unauthorized_retry: Positive = 900.0
    unauthorized_retry_max: Positive = 21600.0
    refresh_jitter: Annotated[float, Meta(ge=0, le=1)] = 0.1
    # instances on a failed flow register again spread over this many seconds
    dead_flow_spread: Annotated[float, Meta(ge=0)] = 5.0

    def __post_init__(self):
        if self.retry_base > self.retry_max:
            raise ValueError("retry_base must not exceed retry_max")
        if self.unauthorized_retry > self.unauthorized_retry_max:
            raise ValueError("unauthorized_retry must not exceed unauthorized_retry_max")


class Sip(Section):
    """The SIP engine: faces towards providers and devices, timers, TLS and DNS."""

    # host[:port] written into Contact and Via when the appliance sits behind NAT;
    # empty: the listening address.
    public_address: str = ""
    provider_face: SipFace = msgspec.field(default_factory=_provider_face)
    device_face: SipFace = msgspec.field(default_factory=_device_face)
    registration: Registration = msgspec.field(default_factory=Registration)
    device_realm: str = "sip-push-gateway"
    user_agent: str = "sip-push-gateway"
    t1: Positive = 0.5
    t2: Positive = 4.0
    t4: Positive = 5.0
    keepalive_interval: Positive = 30.0
    tls_verify: bool = True
    tls_ca_file: str = ""  # empty: the system's CA store
    dns_server: str = ""  # host[:port]; empty: the system resolver (/etc/resolv.conf)


class ApnsCredentials(Section):
    """APNs: token auth (team_id, key_id, key_file) or certificate auth (cert_file)."""

    topic: str  # the app's bundle id; VoIP pushes go to "<topic>.voip"
    team_id: str = ""
    key_id: str = ""
    key_file: str = ""  # the .p8 signing key
    cert_file: str = ""  # PEM with certificate and key, for certificate auth
    production_url: str = "https://api.push.apple.com"
    sandbox_url: str = "https://api.sandbox.push.apple.com"

    def __post_init__(self):
        token_auth = bool(self.team_id and self.key_id and self.key_file)
        if not token_auth and not self.cert_file:
            raise ValueError("set team_id, key_id and key_file (token auth) or cert_file")


class FcmCredentials(Section):
    """FCM HTTP v1 with a Google service account."""

    service_account_file: str
    send_url: str = "https://fcm.googleapis.com/v1/projects/{project_id}/messages:send"
    token_url: str = "https://oauth2.googleapis.com/token"


class WebPushCredentials(Section):
    """Web Push / UnifiedPush with VAPID (RFC 8292)."""

    vapid_key_file: str  # PEM EC P-256 private key; created when missing
    vapid_subject: str = "mailto:operator@localhost"
    # Host patterns (fnmatch, e.g. "*.push.example.net") endpoints must match; empty: any.
    # Apps choose endpoints: this keeps the gateway from posting to hosts of your network.
    allowed_hosts: list[str] = []


class App(Section):
    """A mobile app allowed to use the gateway, with its API keys and push credentials."""

    id: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
    # Files that each hold one API key. A missing file is created with a random key
    # (mode 0600) when create_missing_key_files is set, so a fresh install works at once.
    api_key_files: list[str] = []
    # SHA-256 of API keys, as "sha256:<hex>", for keys kept elsewhere.
    api_key_hashes: list[Annotated[str, Meta(pattern=r"^sha256:[0-9a-f]{64}$")]] = []
    create_missing_key_files: bool = False
    premium: bool = False  # instances of this app live premium_max_age_hours
    # Put the text of a SIP MESSAGE into its push (else the app fetches it over HTTPS).
    message_body_in_push: bool = False
    apns: ApnsCredentials | None = None
    fcm: FcmCredentials | None = None
    webpush: WebPushCredentials | None = None

    def __post_init__(self):
        if not self.api_key_files and not self.api_key_hashes:
            raise ValueError("an app needs api_key_files or api_key_hashes")

    def providers(self) -> set[str]:
        return {name for name in ("apns", "fcm", "webpush") if getattr(self, name)}


class Push(Section):
    """How pushes are sent, for every app (each app has its own providers and limits)."""

    max_in_flight: Annotated[int, Meta(ge=1, le=100000)] = 100  # per app and provider
    # Sends waiting for a free slot beyond this fail at once ("overloaded").
    max_waiting: Annotated[int, Meta(ge=0)] = 10000
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5  # per target, never past the push's useful life
    backoff_initial: Positive = 0.5  # seconds; doubled per retry, with jitter
    backoff_max: Positive = 30.0
    request_timeout: Positive = 10.0  # seconds for one HTTP request
    apns_connections: Annotated[int, Meta(ge=1, le=64)] = 1  # per app and APNs environment
    # Age at which the APNs provider token (JWT) is replaced: Apple wants 20 to 60 minutes.
    apns_token_refresh_minutes: Annotated[float, Meta(ge=20, lt=60)] = 45.0
    tls_ca_file: str = ""  # extra CA bundle for push services (a proxy, an emulator); empty: system store


class Calls(Section):
    """Incoming calls for sleeping phones (SIPIS's timers and answers)."""

    # Seconds the held INVITE waits for the woken device to register (SIPIS T1), and,
    # once it did, for it to answer (T2). Then: 480 with X-Push-Reason.
    t1: Positive = 120.0
    t2: Positive = 120.0
    # The answer to an INVITE or MESSAGE for a token no instance has, and for an instance
    # whose app is in the foreground (it registers itself; the gateway must not ring it).
    unknown_status: Literal[404, 480] = 404
    foreground_status: Literal[404, 480] = 480
    # Seconds the resolved addresses of a registrar or outbound proxy are trusted before
    # they are looked up again (who may send calls and messages to an instance).
    peer_cache_seconds: Positive = 60.0


class Messages(Section):
    """Incoming SIP MESSAGEs, stored encrypted until the app fetches them."""

    # Bodies larger than this get 413 (SIPIS: 4 MiB).
    max_body_bytes: Annotated[int, Meta(ge=1, le=64 * 1024 * 1024)] = 4194304
    # At most this many messages wait per instance; further ones get 486 Busy Here.
    max_pending: Annotated[int, Meta(ge=1)] = 1000


class Retention(Section):
    """How long an instance lives without news from its app (SIPIS's rules)."""

    max_age_hours: Hours = 72.0
    premium_max_age_hours: Hours = 168.0
    not_registered_max_age_hours: Hours = 12.0
    warn_before_hours: list[Hours] = msgspec.field(default_factory=lambda: [12.0, 1.0])


class Store(Section):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "var/gateway.db"
    key_file: str = "var/store.key"  # AES-256 key for passwords at rest; created (0600) when missing


class Logging(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: str = ""  # empty: standard error


class Config(Section):
    state_dir: str = "var"  # self-signed certificates and other generated files
    device_api: DeviceApi = msgspec.field(default_factory=DeviceApi)
    admin: Admin = msgspec.field(default_factory=Admin)
    sip: Sip = msgspec.field(default_factory=Sip)
    # No app by default: config/gateway.toml ships a "demo" app for a first run.
    apps: list[App] = []
    push: Push = msgspec.field(default_factory=Push)
    calls: Calls = msgspec.field(default_factory=Calls)
    messages: Messages = msgspec.field(default_factory=Messages)
    retention: Retention = msgspec.field(default_factory=Retention)
    store: Store = msgspec.field(default_factory=Store)
    logging: Logging = msgspec.field(default_factory=Logging)

    def __post_init__(self):
        ids = [app.id for app in self.apps]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"app ids must be unique, repeated: {', '.join(duplicates)}")

    def app(self, app_id: str) -> App | None:
        return next((app for app in self.apps if app.id == app_id), None)


def _key_path(message: str) -> str:
    """Turn msgspec's '... - at `$.device_api.port`' into 'device_api.port: ...'."""
    text, sep, where = message.rpartition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".") if sep else ""
    if not sep:
        text = message
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text)
    if unknown:
        path = f"{path}.{unknown[1]}" if path else unknown[1]
        text = "unknown key"
    return f"{path}: {text}" if path else text


def load(path: str | os.PathLike | None = None) -> Config:
    """Read and check the config file; raise ConfigError naming the file and the key."""
    path = Path(path or os.environ.get("GATEWAY_CONFIG") or DEFAULT_PATH)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(data, str(path))


def parse(data: bytes | str, source: str = "<config>") -> Config:
    try:
        return msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_key_path(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def api_key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def read_api_key_hashes(app: App) -> set[str]:
    """The hashes of an app's API keys, creating missing key files when the app allows it."""
    hashes = set(app.api_key_hashes)
    for name in app.api_key_files:
        path = Path(name)
        if not path.exists() and app.create_missing_key_files:
            _create_key_file(path)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"apps[{app.id}].api_key_files: {path}: {exc.strerror}") from None
        if len(key) < 16:
            raise ConfigError(f"apps[{app.id}].api_key_files: {path}: key shorter than 16 characters")
        hashes.add(api_key_hash(key))
    return hashes


def _create_key_file(path: Path) -> None:
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names, one message per problem (no changes made).

    Files the gateway creates when missing (store key, API key files with
    create_missing_key_files, VAPID keys) only need a directory they can be created in."""
    problems: list[str] = []

    def readable(key: str, name: str) -> None:
        if name and not os.access(name, os.R_OK):
            problems.append(f"{key}: {name}: file missing or not readable")

    def creatable(key: str, name: str) -> None:
        if os.path.exists(name):
            readable(key, name)
            return
        parent = Path(name).parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            problems.append(f"{key}: {name}: missing and {parent} is not writable")

    for face_key in ("device_api", "sip.provider_face", "sip.device_face"):
        section = config.device_api if face_key == "device_api" else getattr(config.sip, face_key[4:])
        readable(f"{face_key}.tls_cert_file", section.tls_cert_file)
        readable(f"{face_key}.tls_key_file", section.tls_key_file)
    readable("admin.bearer_token_file", config.admin.bearer_token_file)
    readable("sip.tls_ca_file", config.sip.tls_ca_file)
    readable("push.tls_ca_file", config.push.tls_ca_file)
    creatable("store.key_file", config.store.key_file)
    creatable("store.path", config.store.path)
    for i, app in enumerate(config.apps):
        for j, name in enumerate(app.api_key_files):
            key = f"apps[{i}].api_key_files[{j}]"
            (creatable if app.create_missing_key_files else readable)(key, name)
        if app.apns:
            readable(f"apps[{i}].apns.key_file", app.apns.key_file)
            readable(f"apps[{i}].apns.cert_file", app.apns.cert_file)
        if app.fcm:
            readable(f"apps[{i}].fcm.service_account_file", app.fcm.service_account_file)
        if app.webpush:
            creatable(f"apps[{i}].webpush.vapid_key_file", app.webpush.vapid_key_file)
    return problems
