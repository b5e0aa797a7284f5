"""Stored instance records for tests: realistic, unique per `n`, any field overridable.

The password is sealed with the given SecretBox (aad = the id), the device secret is
turned into its hashes the way the API does it, so records made here are what the
gateway really stores.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.store.crypto import SecretBox, bearer_hash, digest_ha1
from gateway.store.records import InstanceRecord, PushTarget

DEVICE_REALM = "gateway.test"


def password_for(n: int) -> str:
    return f"pw-{n:05d}-Correct-Horse-Battery"


def make_instance(box: SecretBox, n: int = 0, *, password: str | None = None, secret: str | None = None, **fields: Any) -> InstanceRecord:
    """Instance number `n` of app "com.example.phone", account sip:user{n}@example.com."""
    instance_id = fields.pop("id", f"inst-{n:05d}")
    password = password_for(n) if password is None else password
    secret = f"secret-{n:05d}-0123456789abcdef" if secret is None else secret
    now = fields.pop("now", time.time())
    values: dict[str, Any] = dict(
        id=instance_id,
        app_id="com.example.phone",
        device_id=f"device-{n:05d}",
        aor=f"sip:user{n}@example.com",
        auth_username=f"user{n}",
        password_ct=box.seal(password, aad=instance_id.encode()),
        registrar="sip:example.com;transport=tls",
        outbound_proxy=None,
        reg_expires=600,
        display_name=f"User {n}",
        push=[
            PushTarget(provider="apns", usage="call", token=f"{n:08x}" * 8, environment="production", topic="com.example.phone.voip"),
            PushTarget(provider="webpush", usage="other", endpoint=f"https://push.example.net/w/{n}", p256dh="BPk" + "x" * 84, auth="a" * 22),
        ],
        secret_ha1=digest_ha1(instance_id, DEVICE_REALM, secret),
        secret_ha1_sha256=digest_ha1(instance_id, DEVICE_REALM, secret, "SHA-256"),
        secret_bearer=bearer_hash(secret),
        mode="background",
        state="idle",
        last_error=None,
        created_at=now,
        updated_at=now,
        expires_at=now + 3 * 86400 + n,
        registered_until=None,
    )
    values.update(fields)
    return InstanceRecord(**values)
