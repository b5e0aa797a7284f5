"""The device API's request and response bodies, as strict msgspec Structs.

Requests are decoded with unknown fields forbidden; every bad value becomes one
`ApiError(400)` whose message starts with the path of the field at fault, e.g.
`account.registrar: must be a sip: or sips: URI` or `push[1].token: unknown field`.
Checks that need the app's configuration (is this push provider configured?) are in
`check_push_providers`, called by the handler once the app is known.

The same Structs generate the OpenAPI document (`gateway.api.openapi`). This module depends
only on msgspec and `gateway.errors`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from gateway.errors import ApiError

# --- field types -------------------------------------------------------------------------

# ASCII ranges rather than negated classes: RFC 3261 URIs are ASCII (anything else is
# %-escaped), and the regex engine checks a range faster than a "not whitespace" class.
# The SIP class is printable ASCII without space, '"', '<' and '>'.
_SIP_URI = r"^sips?:[!#-;=?-~]+$"
_SIP_URI_OR_EMPTY = r"^(sips?:[!#-;=?-~]+)?$"
_HTTPS_URL = r"^https://[!-~]+$"
_B64URL = r"^[A-Za-z0-9_-]+=*$"

SipUri = Annotated[
    str,
    Meta(
        min_length=5,
        max_length=512,
        pattern=_SIP_URI,
        description="A sip: or sips: URI; the transport as a URI parameter (;transport=tls).",
    ),
]
OptionalSipUri = Annotated[
    str,
    Meta(max_length=512, pattern=_SIP_URI_OR_EMPTY, description="A SIP URI, or empty."),
]
DeviceId = Annotated[
    str, Meta(min_length=1, max_length=200, description="The app's stable id for this device.")
]
AppId = Annotated[str, Meta(min_length=1, max_length=200)]
Username = Annotated[str, Meta(min_length=1, max_length=256)]
Password = Annotated[str, Meta(min_length=1, max_length=256)]
DisplayName = Annotated[str, Meta(max_length=256)]
Expires = Annotated[
    int, Meta(ge=60, le=86400, description="Registration expiry asked of the registrar (s).")
]
Token = Annotated[str, Meta(min_length=1, max_length=4096)]
HttpsUrl = Annotated[str, Meta(max_length=2048, pattern=_HTTPS_URL)]
# Web Push keys are unpadded base64url (RFC 8291): p256dh is a 65-byte point, auth 16 bytes.
B64Url = Annotated[str, Meta(min_length=16, max_length=256, pattern=_B64URL)]
Timestamp = Annotated[dt.datetime, Meta(tz=True, description="RFC 3339, UTC.")]

Provider = Literal["apns", "fcm", "webpush"]
Usage = Literal["call", "other"]
Environment = Literal["sandbox", "production"]
Mode = Literal["foreground", "background"]
State = Literal["idle", "registering", "registered", "error", "unauthorized", "off"]


class Body(Struct, forbid_unknown_fields=True):
    """Base of every request body: unknown fields are errors. (Fields are written required
    first: kw_only is not inherited.)"""


class WebPushKeys(Body):
    p256dh: B64Url
    auth: B64Url


class WebPushSubscription(Body):
    """A browser PushSubscription as `PushSubscription.toJSON()` gives it (or a
    UnifiedPush endpoint with its keys)."""

    endpoint: HttpsUrl
    keys: WebPushKeys
    # toJSON() carries it; the gateway has no use for it (a dead subscription shows as 404/410)
    expiration_time: int | float | None = msgspec.field(default=None, name="expirationTime")


class PushTargetIn(Body):
    """Where to wake the device. APNs and FCM: `token` is the device token. Web Push: the
    subscription either as `token` (the PushSubscription object) or flat as `endpoint`,
    `p256dh` and `auth`; after decoding, `token` always holds the subscription."""

    provider: Provider
    token: Token | WebPushSubscription | None = None
    endpoint: HttpsUrl | None = None
    p256dh: B64Url | None = None
    auth: B64Url | None = None
    usage: Usage = "call"
    environment: Environment = "production"  # APNs only: sandbox or production gateway
    topic: Annotated[str, Meta(max_length=256)] = ""  # APNs: the bundle id; "" = the app's

    def __post_init__(self):
        flat = self.endpoint is not None or self.p256dh is not None or self.auth is not None
        if self.provider != "webpush":
            if flat:
                raise ValueError(f"{self._flat_given()}: only for webpush targets")
            if type(self.token) is not str:
                raise ValueError(f"token: an {self.provider} target needs its token as a string")
        elif type(self.token) is str:
            raise ValueError("token: a webpush target needs {endpoint, keys: {p256dh, auth}}")
        elif self.token is not None:
            if flat:
                raise ValueError(f"{self._flat_given()}: give the subscription once, as token or flat")
        else:
            for name in ("endpoint", "p256dh", "auth"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: a webpush target needs endpoint, p256dh and auth")
            keys = WebPushKeys(p256dh=self.p256dh, auth=self.auth)
            self.token = WebPushSubscription(endpoint=self.endpoint, keys=keys)
            self.endpoint = self.p256dh = self.auth = None

    def _flat_given(self) -> str:
        return next(n for n in ("endpoint", "p256dh", "auth") if getattr(self, n) is not None)


PushTargets = Annotated[list[PushTargetIn], Meta(min_length=1, max_length=16)]


class Account(Body):
    """The SIP account the gateway registers for the device."""

    aor: SipUri
    auth_username: Username
    password: Password
    registrar: SipUri
    outbound_proxy: OptionalSipUri = ""
    expires: Expires = 3600
    display_name: DisplayName = ""


class CreateInstance(Body):
    app_id: AppId
    device_id: DeviceId
    account: Account
    push: PushTargets

    def __post_init__(self):
        _need_call_target(self.push)


class AccountUpdate(Body):
    password: Password | UnsetType = UNSET
    display_name: DisplayName | UnsetType = UNSET


class UpdateInstance(Body):
    """PATCH, in the shape of the create body: only the fields present change."""

    account: AccountUpdate | UnsetType = UNSET
    push: PushTargets | UnsetType = UNSET

    def __post_init__(self):
        if self.push is not UNSET:
            _need_call_target(self.push)


class SetMode(Body):
    mode: Mode


class AckMessages(Body):
    """The ids of fetched messages the app has safely stored: they are deleted."""

    ids: Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(min_length=1, max_length=1000)]


def _need_call_target(push: list[PushTargetIn]) -> None:
    if not any(target.usage == "call" for target in push):
        raise ValueError("push: at least one target needs usage 'call'")


# --- responses ---------------------------------------------------------------------------


class Transport(Struct, kw_only=True):
    transport: Literal["tls", "tcp", "udp"]
    port: int


class DeviceFace(Struct, kw_only=True):
    """How the woken app reaches the gateway: register as `username` (with the secret as
    password, digest auth) at `uri`'s host over one of `transports`."""

    uri: str
    username: str
    transports: list[Transport]


class CreatedInstance(Struct, kw_only=True):
    id: str
    secret: str  # shown once; the gateway keeps only its hashes
    state: State
    expires_at: Timestamp
    device_face: DeviceFace


class InstanceStatus(Struct, kw_only=True):
    id: str
    app_id: str
    device_id: str
    aor: str
    display_name: str
    mode: Mode
    state: State
    last_error: str | None
    registered_until: Timestamp | None
    expires_at: Timestamp
    pending_messages: int


class StoredMessageOut(Struct, kw_only=True):
    """A SIP MESSAGE waiting for the app. `body` is the text when it is UTF-8, else its
    base64 (`encoding` says which)."""

    id: str
    received_at: Timestamp
    sender: str
    sender_name: str | None
    content_type: str
    body: str
    encoding: Literal["utf-8", "base64"]
    imdn: bool  # a disposition notification (delivered/displayed report)


class MessageList(Struct, kw_only=True):
    messages: list[StoredMessageOut]


class AckResult(Struct, kw_only=True):
    deleted: int


class ErrorDetail(Struct, kw_only=True):
    code: str
    message: str


class ErrorBody(Struct, kw_only=True):
    error: ErrorDetail


# --- decoding ----------------------------------------------------------------------------

_decoders: dict[type, msgspec.json.Decoder] = {}
_OWN_PATH = re.compile(r"([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*): (.+)", re.DOTALL)
_PATTERN_MEANINGS = {
    _SIP_URI: "must be a sip: or sips: URI",
    _SIP_URI_OR_EMPTY: "must be a sip: or sips: URI, or empty",
    _HTTPS_URL: "must be an https:// URL",
    _B64URL: "must be base64url",
}
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`", re.DOTALL)


def decode(body: bytes, kind: type[Struct]) -> Struct:
    """Decode a request body into `kind`, or raise ApiError(400) naming the field."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_field", field_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def field_message(message: str) -> str:
    """'Expected `int` - at `$.account.expires`' -> 'account.expires: Expected `int`'."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        text, where = message, ""
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    unknown = _UNKNOWN.fullmatch(text)
    if unknown:
        path = _join(path, unknown[1][:64])
        text = "unknown field"
    own = _OWN_PATH.fullmatch(text)
    if own:  # raised by a __post_init__ above, naming the field inside the object
        path, text = _join(path, own[1]), own[2]
    for pattern, meaning in _PATTERN_MEANINGS.items():
        if text == f"Expected `str` matching regex {pattern!r}":
            text = meaning
    if text.startswith("Object missing required field"):
        missing = text.rpartition("`")[0].rpartition("`")[2]
        path, text = _join(path, missing), "required field missing"
    return f"{path}: {text}" if path else text


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def check_push_providers(push: list[PushTargetIn], configured: set[str], app_id: str) -> None:
    """Every target's provider must have credentials configured for the app."""
    for i, target in enumerate(push):
        if target.provider not in configured:
            raise ApiError(
                400,
                "invalid_field",
                f"push[{i}].provider: {target.provider!r} is not configured for app {app_id!r}",
            )
