"""FCM HTTP v1 provider against the emulator: OAuth2 JWT-bearer token reuse and renewal
on a controlled clock, the data message, and the error table read from details[].errorCode."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from gateway.errors import ConfigError
from gateway.push.base import Notification
from gateway.push.fcm import FcmProvider, classify, load_service_account
from gateway.push.payloads import InstanceOffPush, MessagePush
from gateway.store.records import PushTarget

from .conftest import CLIENT_EMAIL, call_payload

TOKEN = "fcm-registration-token-" + "x" * 120


@pytest.fixture
async def provider(fcm_credentials, ca_file, clock):
    provider = FcmProvider(fcm_credentials, ca_file=ca_file, clock=clock)
    yield provider
    await provider.close()


def call(clock, seconds=45):
    return Notification(call_payload(clock() + seconds), clock() + seconds)


async def test_call_is_a_high_priority_data_message_with_the_calls_ttl(fcm, provider, clock):
    fcm.register(TOKEN)
    result = await provider.send(PushTarget("fcm", "call", token=TOKEN), call(clock, 45))
    assert result.outcome == "delivered"
    (sent,) = fcm.delivered()
    message = sent["message"]
    assert message["token"] == TOKEN
    assert message["android"] == {"priority": "HIGH", "ttl": "45s"}
    assert message["data"]["type"] == "call" and message["data"]["caller_uri"] == "sip:bob@example.com"
    assert all(isinstance(v, str) for v in message["data"].values())
    assert sent["headers"]["Authorization"].startswith("Bearer ya29.")


async def test_housekeeping_is_normal_priority_and_collapsible(fcm, provider, clock):
    fcm.register(TOKEN)
    note = Notification(InstanceOffPush(instance="i", reason="r"), clock() + 86400, "off:i")
    assert (await provider.send(PushTarget("fcm", "other", token=TOKEN), note)).outcome == "delivered"
    android = fcm.delivered()[0]["message"]["android"]
    assert android == {"priority": "NORMAL", "ttl": "86400s", "collapse_key": "off:i"}


async def test_access_token_is_cached_then_renewed_before_it_expires(fcm, provider, clock):
    fcm.register(TOKEN)
    target = PushTarget("fcm", "call", token=TOKEN)
    await asyncio.gather(*(provider.send(target, call(clock)) for _ in range(5)))
    assert fcm.token_requests == 1  # one refresh however many sends wait for it
    clock.advance(3600 - 301)
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    assert fcm.token_requests == 1
    clock.advance(2)  # within five minutes of expiry: replaced
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    assert fcm.token_requests == 2 and provider.auth.refreshes == 2
    bearers = {m["headers"]["Authorization"] for m in fcm.delivered()}
    assert len(bearers) == 2


async def test_the_assertion_is_what_google_wants(fcm, provider, clock, service_account_key):
    await provider.auth.value()
    (assertion,) = fcm.assertions
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "typ": "JWT", "kid": "0123abcd"}
    claims = jwt.decode(
        assertion,
        service_account_key.public_key(),
        algorithms=["RS256"],
        audience="https://oauth2.googleapis.com/token",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": CLIENT_EMAIL,
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": int(clock()),
        "exp": int(clock()) + 3600,
    }


async def test_an_expired_or_revoked_token_is_auth_failed_and_renewal_fixes_it(fcm, provider, clock):
    fcm.register(TOKEN)
    target = PushTarget("fcm", "call", token=TOKEN)
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    fcm.issued.clear()  # revoked at Google
    result = await provider.send(target, call(clock))
    assert (result.outcome, result.status) == ("auth_failed", 401)
    await provider.renew_auth()
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    assert fcm.token_requests == 2


async def test_a_refused_assertion_is_auth_failed(fcm, provider, clock):
    fcm.register(TOKEN)
    fcm.token_script.append(400)
    result = await provider.send(PushTarget("fcm", "call", token=TOKEN), call(clock))
    assert result.outcome == "auth_failed" and fcm.messages == []


async def test_a_token_endpoint_outage_is_transient(fcm, provider, clock):
    fcm.register(TOKEN)
    fcm.token_script.append(503)
    result = await provider.send(PushTarget("fcm", "call", token=TOKEN), call(clock))
    assert result.outcome == "retry_later"


async def test_unregistered_and_invalid_tokens_are_dead(fcm, provider, clock):
    fcm.register(TOKEN)
    fcm.unregistered.add(TOKEN)
    result = await provider.send(PushTarget("fcm", "call", token=TOKEN), call(clock))
    assert (result.outcome, result.reason, result.status) == ("dead_target", "UNREGISTERED", 404)
    result = await provider.send(PushTarget("fcm", "call", token="never-issued"), call(clock))
    assert (result.outcome, result.status) == ("dead_target", 400)


FCM_TABLE = [
    ((400, "INVALID_ARGUMENT"), "rejected"),  # no token field violation: the message is bad
    ((401, "THIRD_PARTY_AUTH_ERROR"), "rejected"),  # the APNs key in Firebase, not our token
    ((403, "SENDER_ID_MISMATCH"), "rejected"),
    ((404, "UNREGISTERED"), "dead_target"),
    ((429, "QUOTA_EXCEEDED", {"Retry-After": "30"}), "retry_later"),
    ((500, "INTERNAL"), "retry_later"),
    ((503, "UNAVAILABLE", {"Retry-After": "5"}), "retry_later"),
    ((502, "html"), "retry_later"),
]


@pytest.mark.parametrize("answer, outcome", FCM_TABLE, ids=[a[1] for a, _ in FCM_TABLE])
async def test_error_table(fcm, provider, clock, answer, outcome):
    fcm.register(TOKEN)
    fcm.script(TOKEN, answer)
    result = await provider.send(PushTarget("fcm", "call", token=TOKEN), call(clock))
    assert (result.outcome, result.status) == (outcome, answer[0])
    if answer[1] != "html":
        assert result.reason == answer[1]
    if len(answer) == 3:
        assert result.retry_after == float(answer[2]["Retry-After"])


def test_quota_without_retry_after_waits_a_minute():
    body = b'{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"errorCode":"QUOTA_EXCEEDED"}]}}'
    assert classify(429, body).retry_after == 60.0


async def test_message_too_large_for_fcm_is_rejected_before_sending(fcm, provider, clock):
    fcm.register(TOKEN)
    note = Notification(call_payload(clock() + 30, callee="x" * 5000), clock() + 30)
    result = await provider.send(PushTarget("fcm", "call", token=TOKEN), note)
    assert result.outcome == "rejected" and fcm.messages == []
    # a message body is dropped instead
    big = MessagePush(instance="i", sender="s", message_id="m", body="y" * 5000)
    assert (await provider.send(PushTarget("fcm", "other", token=TOKEN), Notification(big, clock() + 60))).outcome == "delivered"
    assert "body" not in fcm.delivered()[0]["message"]["data"]


def test_bad_service_account_files(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(ConfigError, match="cannot read"):
        load_service_account(str(missing))
    garbage = tmp_path / "bad.json"
    garbage.write_text('{"type": "service_account"}')
    with pytest.raises(ConfigError, match="not a service account file"):
        load_service_account(str(garbage))


async def test_a_refused_assertion_is_not_posted_again_for_a_minute(fcm, provider, clock):
    fcm.register(TOKEN)
    fcm.token_script.append(400)
    target = PushTarget("fcm", "call", token=TOKEN)
    for _ in range(3):
        assert (await provider.send(target, call(clock))).outcome == "auth_failed"
    assert fcm.token_requests == 1
    clock.advance(61)
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    fcm.token_script.append(400)
    fcm.issued.clear()
    await provider.renew_auth()  # a renewal always tries again
    assert (await provider.send(target, call(clock))).outcome == "auth_failed"
    assert fcm.token_requests == 3
