"""Web Push provider against the emulator, which decrypts with the subscription's private
key using the independent http_ece package and checks VAPID with PyJWT."""

from __future__ import annotations

import os

import msgspec
import pytest

from gateway.push import payloads
from gateway.push.base import Notification
from gateway.push.payloads import InstanceExpiringPush, MessagePush
from gateway.push.webpush import WebPushProvider, encrypt, load_or_create_vapid_key
from gateway.store.records import PushTarget

from .conftest import call_payload


@pytest.fixture
async def provider(webpush_credentials, ca_file, clock):
    provider = WebPushProvider(webpush_credentials, ca_file=ca_file, clock=clock)
    yield provider
    await provider.close()


def target(subscription, usage="call"):
    endpoint, p256dh, auth = subscription
    return PushTarget("webpush", usage, endpoint=endpoint, p256dh=p256dh, auth=auth)


async def test_call_is_encrypted_for_the_subscription(webpush, provider, clock):
    sub = webpush.subscribe()
    note = Notification(call_payload(clock() + 40), clock() + 40)
    result = await provider.send(target(sub), note)
    assert (result.outcome, result.status) == ("delivered", 201)
    (got,) = webpush.subscription(sub[0]).received
    assert payloads.decode(got["plaintext"]) == note.payload  # decrypted by http_ece
    h = got["headers"]
    assert (h["TTL"], h["Urgency"], h["Content-Encoding"]) == ("40", "high", "aes128gcm")
    assert h["Authorization"].startswith("vapid t=") and f"k={provider.vapid.public_key}" in h["Authorization"]


async def test_housekeeping_is_low_urgency_with_a_topic(webpush, provider, clock):
    sub = webpush.subscribe()
    note = Notification(InstanceExpiringPush(instance="i", expires_at=clock() + 3600), clock() + 3600, "expiring:i")
    assert (await provider.send(target(sub, "other"), note)).outcome == "delivered"
    h = webpush.subscription(sub[0]).received[0]["headers"]
    assert h["Urgency"] == "low" and h["TTL"] == "3600" and len(h["Topic"]) == 32


async def test_restricted_subscription_needs_our_vapid_key(webpush, provider, clock):
    ours = webpush.subscribe(vapid_key=provider.vapid.public_key)
    note = Notification(call_payload(clock() + 40), clock() + 40)
    assert (await provider.send(target(ours), note)).outcome == "delivered"
    theirs = webpush.subscribe(vapid_key="B" + "A" * 86)
    result = await provider.send(target(theirs), note)
    assert (result.outcome, result.status) == ("auth_failed", 403)


async def test_vapid_jwt_is_reused_per_origin_until_near_expiry(webpush, provider, clock):
    sub = webpush.subscribe()
    note = lambda: Notification(call_payload(clock() + 40), clock() + 40)  # noqa: E731
    for _ in range(2):
        await provider.send(target(sub), note())
        clock.advance(5.6 * 3600)
    await provider.send(target(sub), note())  # 11.2 h: less than an hour left, re-signed
    auths = [r["headers"]["Authorization"] for r in webpush.subscription(sub[0]).received]
    assert auths[0] == auths[1] != auths[2]
    assert len(webpush.subscription(sub[0]).received) == 3  # the emulator accepted all


async def test_removed_subscription_is_dead(webpush, provider, clock):
    note = Notification(call_payload(clock() + 40), clock() + 40)
    for status in (404, 410):
        sub = webpush.subscribe()
        webpush.subscription(sub[0]).gone = status
        result = await provider.send(target(sub), note)
        assert (result.outcome, result.status) == ("dead_target", status)


@pytest.mark.parametrize(
    "answer, outcome",
    [((429, {"Retry-After": "12"}), "retry_later"), (503, "retry_later"), (413, "rejected"), (400, "rejected")],
)
async def test_error_statuses(webpush, provider, clock, answer, outcome):
    sub = webpush.subscribe()
    webpush.script(sub[0], answer)
    result = await provider.send(target(sub), Notification(call_payload(clock() + 40), clock() + 40))
    assert result.outcome == outcome
    if isinstance(answer, tuple):
        assert result.retry_after == 12.0


async def test_plaintext_limit_is_3993_bytes_and_fills_4096(webpush, provider, clock):
    sub = webpush.subscribe()
    fixed = len(payloads.encode_webpush(call_payload(clock() + 40, callee="")))
    exact = call_payload(clock() + 40, callee="x" * (3993 - fixed))
    assert len(payloads.encode_webpush(exact)) == 3993
    assert (await provider.send(target(sub), Notification(exact, clock() + 40))).outcome == "delivered"
    too_big = call_payload(clock() + 40, callee="x" * (3994 - fixed))
    assert (await provider.send(target(sub), Notification(too_big, clock() + 40))).outcome == "rejected"
    assert len(webpush.requests) == 1


async def test_message_body_dropped_when_it_does_not_fit(webpush, provider, clock):
    sub = webpush.subscribe()
    big = MessagePush(instance="i", sender="sip:bob@x", message_id="m", body="é" * 3000)
    assert (await provider.send(target(sub, "other"), Notification(big, clock() + 60))).outcome == "delivered"
    got = msgspec.json.decode(webpush.subscription(sub[0]).received[0]["plaintext"])
    assert got["message_id"] == "m" and "body" not in got


async def test_malformed_subscriptions_never_reach_the_wire(webpush, provider, clock):
    note = Notification(call_payload(clock() + 40), clock() + 40)
    endpoint, p256dh, auth = webpush.subscribe()
    bad_keys = PushTarget("webpush", "call", endpoint=endpoint, p256dh="AAAA", auth=auth)
    assert (await provider.send(bad_keys, note)).outcome == "dead_target"
    plain_http = PushTarget("webpush", "call", endpoint=endpoint.replace("https", "http"), p256dh=p256dh, auth=auth)
    assert (await provider.send(plain_http, note)).outcome == "dead_target"
    assert webpush.requests == []


def test_encryption_layout():
    import http_ece
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.push.jwt import b64url, public_point

    ua = ec.generate_private_key(ec.SECP256R1())
    secret = os.urandom(16)
    body = encrypt(b"hi", b64url(public_point(ua)), b64url(secret), salt=b"s" * 16)
    assert body[:16] == b"s" * 16 and body[16:20] == (4096).to_bytes(4, "big") and body[20] == 65
    assert len(body) == 86 + 2 + 1 + 16
    assert http_ece.decrypt(body, private_key=ua, auth_secret=secret, version="aes128gcm") == b"hi"


def test_vapid_key_is_created_private_and_then_reused(tmp_path):
    path = tmp_path / "keys" / "vapid.pem"
    key = load_or_create_vapid_key(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_vapid_key(str(path))
    assert again.private_numbers() == key.private_numbers()
    path.write_text("garbage")
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_or_create_vapid_key(str(path))


@pytest.mark.parametrize("endpoint", ["https://[::1", "https:///push/x", "", "mailto:x@y"])
async def test_malformed_endpoints_are_dead_not_errors(provider, clock, endpoint):
    target = PushTarget("webpush", "call", endpoint=endpoint, p256dh="x", auth="y")
    result = await provider.send(target, Notification(call_payload(clock() + 40), clock() + 40))
    assert result.outcome == "dead_target"


async def test_endpoints_outside_the_allowed_hosts_are_never_contacted(webpush, webpush_credentials, ca_file, clock):
    sub = webpush.subscribe()
    note = Notification(call_payload(clock() + 40), clock() + 40)
    for patterns, outcome in ((["*.push.example.net"], "rejected"), (["127.0.0.*", "*.example.net"], "delivered")):
        creds = msgspec.structs.replace(webpush_credentials, allowed_hosts=patterns)
        provider = WebPushProvider(creds, ca_file=ca_file, clock=clock)
        try:
            assert (await provider.send(target(sub), note)).outcome == outcome
        finally:
            await provider.close()
    assert len(webpush.requests) == 1
