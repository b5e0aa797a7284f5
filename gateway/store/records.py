"""The shapes the store keeps: an instance and its push targets, as msgspec Structs.

An instance is what a phone handed over before going to sleep: its SIP account (the
password only as AES-GCM ciphertext), where to register, how to wake it, and the hashes
of the device secret it will use to come back. Nothing here holds a secret in plaintext.

This module depends on msgspec only; the API, the lifecycle and the backends import it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Provider = Literal["apns", "fcm", "webpush"]
Usage = Literal["call", "other"]
Environment = Literal["sandbox", "production"]
Mode = Literal["background", "foreground"]
State = Literal["idle", "registering", "registered", "error", "unauthorized", "off"]


class PushTarget(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One way to wake the phone: an APNs or FCM token, or a Web Push subscription.

    `token` is set for APNs and FCM; `endpoint`, `p256dh` and `auth` for Web Push
    (RFC 8030/8291). `environment` and `topic` only matter to APNs.
    """

    provider: Provider
    usage: Usage = "call"
    token: str | None = None
    endpoint: str | None = None
    p256dh: str | None = None
    auth: str | None = None
    environment: Environment | None = None
    topic: str | None = None

    def __repr__(self) -> str:
        # Logs must not carry full push tokens or Web Push keys: enough to tell them apart.
        where = f"token={_abbrev(self.token)}" if self.token else f"endpoint={_abbrev(self.endpoint)}"
        return f"PushTarget(provider={self.provider!r}, usage={self.usage!r}, {where})"

    __str__ = __repr__


def _abbrev(value: str | None) -> str:
    if value is None:
        return "None"
    return repr(value[:8] + "…") if len(value) > 8 else repr(value)


class InstanceRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One stored instance. Times are Unix epoch seconds (`time.time()`).

    - `password_ct`: the SIP password sealed with `SecretBox.seal(password, aad=id.encode())`.
    - `secret_ha1`, `secret_ha1_sha256`: digest HA1 (MD5 and SHA-256) of the device secret
      for username=`id` and the gateway's device realm; `secret_bearer`: SHA-256 hex of the
      secret, for the API's bearer token. The secret itself is never stored.
    - `expires_at`: when the instance is erased unless the app is heard from again.
    - `registered_until`: when the provider's registration lapses (None: not registered).
    """

    id: str
    app_id: str
    device_id: str
    aor: str
    auth_username: str
    password_ct: bytes
    registrar: str
    outbound_proxy: str | None
    reg_expires: int
    display_name: str | None
    push: list[PushTarget]
    secret_ha1: str
    secret_ha1_sha256: str
    secret_bearer: str
    mode: Mode
    state: State
    last_error: str | None
    created_at: float
    updated_at: float
    expires_at: float
    registered_until: float | None
    premium: bool = False

    def __repr__(self) -> str:
        # Records end up in logs and tracebacks: show who, never the sealed password,
        # the secret's hashes or full push tokens.
        return (
            f"InstanceRecord(id={self.id!r}, app_id={self.app_id!r}, aor={self.aor!r}, "
            f"state={self.state!r}, mode={self.mode!r}, expires_at={self.expires_at!r})"
        )

    __str__ = __repr__


#: the fields `Store.update_instance` accepts (the identity of an instance never changes)
UPDATABLE_FIELDS = frozenset(InstanceRecord.__struct_fields__) - {"id", "app_id", "device_id", "aor", "created_at"}


class MessageContent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a stored SIP MESSAGE says: sealed as a whole (AES-GCM, the message id and
    the instance id as associated data), so nothing of it is readable on disk."""

    sender: str  # the From URI
    sender_name: str | None = None  # the From display name
    content_type: str = "text/plain"
    body: bytes = b""
    imdn: bool = False  # a disposition notification (stored, not pushed)
    sip_call_id: str = ""  # the MESSAGE's Call-ID, to tell retransmissions apart


class StoredMessage(msgspec.Struct, frozen=True):
    """One row of the messages table: the content still sealed."""

    id: str
    instance_id: str
    received_at: float
    sealed: bytes
