"""What a push tells the phone, as msgspec Structs, and how each service carries it.

The payload Structs are the contract with the apps: a tagged union on `"type"`
(`call`, `missed_call`, `message`, `instance_expiring`, `instance_off`). Each service
wraps them differently:

- APNs: `{"aps": {...}, "gateway": <payload>}`. Only an incoming call to a VoIP token
  goes as a VoIP push (PushKit); missed calls and everything else go as alert or
  background pushes, because iOS kills an app that gets a VoIP push and does not report
  a call to CallKit, and stops waking it after a few such pushes. Limits: 4096 bytes,
  5120 for VoIP.
- FCM: a data message whose values are all strings: `{"type": "call", "call_id": ...}`.
  Limit: 4096 bytes.
- Web Push: the payload's JSON, encrypted (RFC 8291). Limit: 3993 bytes of plaintext.

A payload over the limit raises `PayloadTooLarge`; `fit()` first drops a message's body
(the app can always fetch the message over HTTPS), which is the only field worth losing.

Depends on msgspec and `gateway.errors` only.
"""

from __future__ import annotations

from typing import Callable, Literal

import msgspec

from gateway.errors import PayloadTooLarge

APNS_LIMIT = 4096
APNS_VOIP_LIMIT = 5120
FCM_LIMIT = 4096
WEBPUSH_LIMIT = 3993

MissedReason = Literal["cancelled", "answered_elsewhere", "no_answer"]


class _Payload(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, tag_field="type"):
    instance: str  # the instance id, so the app knows which account this is about


class CallPush(_Payload, tag="call", kw_only=True):
    """A call is ringing: connect to `connect` and register to pick it up."""

    call_id: str
    caller_uri: str
    caller_name: str | None = None
    callee: str
    push_id: str  # unique per push, echoed by the app so the gateway can match it
    connect: str  # the device face's SIP URI (e.g. "sips:gw.example.com:5071")
    expires_at: float  # Unix seconds when the call stops ringing


class MissedCallPush(_Payload, tag="missed_call", kw_only=True):
    call_id: str
    caller_uri: str
    caller_name: str | None = None
    reason: MissedReason


class MessagePush(_Payload, tag="message", kw_only=True):
    sender: str
    message_id: str
    count: int = 1  # messages waiting for the app
    body: str | None = None  # only when the app's config allows it


class InstanceExpiringPush(_Payload, tag="instance_expiring", kw_only=True):
    expires_at: float


class InstanceOffPush(_Payload, tag="instance_off", kw_only=True):
    reason: str


Payload = CallPush | MissedCallPush | MessagePush | InstanceExpiringPush | InstanceOffPush
PushType = Literal["voip", "alert", "background"]


def kind(payload: msgspec.Struct) -> str:
    return type(payload).__struct_config__.tag


# --- APNs --------------------------------------------------------------------------------


class _Alert(msgspec.Struct, omit_defaults=True):
    title: str
    body: str


class _Aps(msgspec.Struct, omit_defaults=True):
    alert: _Alert | None = None
    sound: str | None = None
    content_available: int | None = msgspec.field(default=None, name="content-available")
    mutable_content: int | None = msgspec.field(default=None, name="mutable-content")


class _ApnsBody(msgspec.Struct, omit_defaults=True):
    aps: _Aps | None = None
    gateway: Payload | None = None


def apns_push_type(payload: msgspec.Struct, usage: str) -> PushType:
    """The iOS rule: VoIP only for an incoming call to a VoIP (usage "call") token."""
    name = kind(payload)
    if name == "call":
        return "voip" if usage == "call" else "alert"
    if name == "instance_expiring":
        return "background"  # the app refreshes itself; nothing to show
    return "alert"


def _caller(name: str | None, uri: str) -> str:
    return name or uri.removeprefix("sip:").removeprefix("sips:")


def _alert(payload) -> _Alert:
    if isinstance(payload, CallPush):
        return _Alert("Incoming call", _caller(payload.caller_name, payload.caller_uri))
    if isinstance(payload, MissedCallPush):
        title = "Call answered elsewhere" if payload.reason == "answered_elsewhere" else "Missed call"
        return _Alert(title, _caller(payload.caller_name, payload.caller_uri))
    if isinstance(payload, MessagePush):
        return _Alert(_caller(None, payload.sender), payload.body or "New message")
    if isinstance(payload, InstanceOffPush):
        return _Alert("Incoming calls are off", "Open the app to receive calls again.")
    return _Alert("Notice", "Open the app.")


def encode_apns(payload: msgspec.Struct, push_type: PushType) -> bytes:
    if push_type == "voip":
        body = _ApnsBody(gateway=payload)  # PushKit: no aps, the app reports to CallKit
        limit = APNS_VOIP_LIMIT
    elif push_type == "background":
        body = _ApnsBody(aps=_Aps(content_available=1), gateway=payload)
        limit = APNS_LIMIT
    else:
        # mutable-content lets a notification service extension localise the text.
        aps = _Aps(alert=_alert(payload), sound="default", mutable_content=1)
        body = _ApnsBody(aps=aps, gateway=payload)
        limit = APNS_LIMIT
    return _checked(msgspec.json.encode(body), limit, "APNs")


# --- FCM ---------------------------------------------------------------------------------


def fcm_data(payload: msgspec.Struct) -> dict[str, str]:
    """The payload as FCM data: every value a string (FCM refuses anything else)."""
    data = {"type": kind(payload)}
    for key, value in msgspec.to_builtins(payload).items():
        if key != "type" and value is not None:
            data[key] = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    _checked(msgspec.json.encode(data), FCM_LIMIT, "FCM")
    return data


# --- Web Push ----------------------------------------------------------------------------


def encode_webpush(payload: msgspec.Struct) -> bytes:
    return _checked(msgspec.json.encode(payload), WEBPUSH_LIMIT, "Web Push")


decode = msgspec.json.Decoder(Payload).decode  # for apps and tests: bytes -> payload Struct


def _checked(data: bytes, limit: int, service: str) -> bytes:
    if len(data) > limit:
        raise PayloadTooLarge(len(data), limit, service)
    return data


def fit(payload: msgspec.Struct, encode: Callable[[msgspec.Struct], object]):
    """`encode(payload)`, dropping a message's body if that is what makes it too large."""
    try:
        return encode(payload)
    except PayloadTooLarge:
        if isinstance(payload, MessagePush) and payload.body:
            return encode(msgspec.structs.replace(payload, body=None))
        raise
