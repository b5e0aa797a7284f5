"""APNs provider against the HTTP/2 TLS emulator: headers, auth (token and certificate),
environments, token reuse and renewal on a controlled clock, and every reason of Apple's
table classified."""

from __future__ import annotations

import uuid

import jwt
import msgspec
import pytest
import trustme

from gateway.config import ApnsCredentials
from gateway.push.apns import ApnsProvider, ProviderToken
from gateway.push.base import Notification, tls_context
from gateway.push.http2 import Http2Pool
from gateway.push.payloads import InstanceExpiringPush, MissedCallPush
from gateway.store.records import PushTarget
from tests.support.apns_emulator import ApnsEmulator

from .conftest import BUNDLE, KEY_ID, TEAM, call_payload

VOIP_TOKEN = "ab" * 32
ALERT_TOKEN = "cd" * 32


@pytest.fixture
async def provider(apns_credentials, ca_file, clock):
    provider = ApnsProvider(apns_credentials, ca_file=ca_file, clock=clock)
    yield provider
    await provider.close()


def call(clock, **fields):
    return Notification(call_payload(clock() + 60, **fields), clock() + 60)


async def test_call_goes_as_voip_with_the_headers_apple_wants(apns, provider, clock, apns_key):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))
    assert result.outcome == "delivered"
    (req,) = apns.requests
    h = req.headers
    assert (h[":method"], h[":path"], h[":scheme"]) == ("POST", f"/3/device/{VOIP_TOKEN}", "https")
    assert h["apns-push-type"] == "voip" and h["apns-topic"] == BUNDLE + ".voip"
    assert h["apns-priority"] == "10" and h["apns-expiration"] == str(int(clock() + 60))
    assert uuid.UUID(h["apns-id"]).version == 4
    # checked again here with PyJWT: ES256, kid, iss, iat
    token = h["authorization"].removeprefix("bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "JWT", "kid": KEY_ID}
    claims = jwt.decode(token, apns_key[1], algorithms=["ES256"], options={"verify_iat": False})
    assert claims == {"iss": TEAM, "iat": int(clock())}
    assert msgspec.json.decode(req.body)["gateway"]["type"] == "call"


async def test_missed_call_and_expiry_warning_are_not_voip(apns, provider, clock):
    apns.register(ALERT_TOKEN, BUNDLE)
    target = PushTarget("apns", "other", token=ALERT_TOKEN)
    missed = MissedCallPush(instance="i", call_id="c", caller_uri="sip:b@x", reason="cancelled")
    expiring = InstanceExpiringPush(instance="i", expires_at=clock() + 3600)
    assert (await provider.send(target, Notification(missed, clock() + 600, "m:i"))).outcome == "delivered"
    assert (await provider.send(target, Notification(expiring, clock() + 3600))).outcome == "delivered"
    first, second = (r.headers for r in apns.requests)
    assert (first["apns-push-type"], first["apns-topic"], first["apns-priority"]) == ("alert", BUNDLE, "10")
    assert first["apns-collapse-id"] == "m:i"
    assert (second["apns-push-type"], second["apns-priority"]) == ("background", "5")


async def test_a_voip_push_to_a_regular_token_is_refused_by_topic(apns, provider, clock):
    # What would happen without the rule: the emulator, like APNs, refuses the topic.
    apns.register(ALERT_TOKEN, BUNDLE)
    result = await provider.send(PushTarget("apns", "call", token=ALERT_TOKEN), call(clock))
    assert (result.outcome, result.reason) == ("dead_target", "DeviceTokenNotForTopic")


async def test_long_collapse_id_is_digested_to_64_bytes(apns, provider, clock):
    apns.register(ALERT_TOKEN, BUNDLE)
    missed = MissedCallPush(instance="i", call_id="c", caller_uri="sip:b@x", reason="no_answer")
    note = Notification(missed, clock() + 600, "x" * 100)
    assert (await provider.send(PushTarget("apns", "other", token=ALERT_TOKEN), note)).outcome == "delivered"
    assert len(apns.requests[0].headers["apns-collapse-id"]) == 64


async def test_sandbox_and_production_are_separate_hosts(ca, ca_file, apns_key, clock):
    keys = {KEY_ID: (TEAM, apns_key[1])}
    sandbox = ApnsEmulator(ca, environment="sandbox", keys=keys, clock=clock)
    production = ApnsEmulator(ca, environment="production", keys=keys, clock=clock)
    await sandbox.start()
    await production.start()
    creds = ApnsCredentials(
        topic=BUNDLE, team_id=TEAM, key_id=KEY_ID, key_file=apns_key[0],
        production_url=production.url, sandbox_url=sandbox.url,
    )
    provider = ApnsProvider(creds, ca_file=ca_file, clock=clock)
    try:
        for emulator in (sandbox, production):
            emulator.register("01" * 32, BUNDLE + ".voip", environment="sandbox")
            emulator.register("02" * 32, BUNDLE + ".voip", environment="production")
        dev = PushTarget("apns", "call", token="01" * 32, environment="sandbox")
        prod = PushTarget("apns", "call", token="02" * 32)  # no environment: production
        assert (await provider.send(dev, call(clock))).outcome == "delivered"
        assert (await provider.send(prod, call(clock))).outcome == "delivered"
        assert [r.token for r in sandbox.requests] == ["01" * 32]
        assert [r.token for r in production.requests] == ["02" * 32]
        # a sandbox token sent to production is a BadDeviceToken, as with Apple
        wrong = PushTarget("apns", "call", token="01" * 32, environment="production")
        assert (await provider.send(wrong, call(clock))).reason == "BadDeviceToken"
    finally:
        await provider.close()
        await sandbox.stop()
        await production.stop()


async def test_certificate_auth(ca, ca_file, tmp_path, clock):
    client_ca = trustme.CA()
    emulator = ApnsEmulator(ca, client_ca=client_ca, clock=clock)
    await emulator.start()
    cert_file = tmp_path / "apns-cert.pem"
    client_ca.issue_cert("com.example.phone").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    creds = ApnsCredentials(topic=BUNDLE, cert_file=str(cert_file), production_url=emulator.url)
    provider = ApnsProvider(creds, ca_file=ca_file, clock=clock)
    try:
        emulator.register(VOIP_TOKEN, BUNDLE + ".voip")
        assert (await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))).outcome == "delivered"
        assert "authorization" not in emulator.requests[0].headers
        assert emulator.connections[0].client_names == ("com.example.phone",)
        # the operator replaces the certificate: a renewal reads it and reconnects
        client_ca.issue_cert("renewed.example.phone").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
        await provider.renew_auth()
        assert (await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))).outcome == "delivered"
        assert emulator.connections[-1].client_names == ("renewed.example.phone",)
        assert emulator.requests[-1].connection == len(emulator.connections) - 1
        # without the certificate (and without a token) the emulator refuses, as APNs does
        bare = Http2Pool(emulator.url, tls_context(ca_file, alpn=["h2"]))
        headers = provider.headers(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock), "voip")
        refused = await bare.request("POST", f"/3/device/{VOIP_TOKEN}", headers, b"{}", timeout=5)
        await bare.close()
        assert (refused.status, refused.body) == (403, b'{"reason":"MissingProviderToken"}')
    finally:
        await provider.close()
        await emulator.stop()


async def test_provider_token_is_reused_for_20_minutes_and_replaced_before_60(apns, provider, clock):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    target = PushTarget("apns", "call", token=VOIP_TOKEN)
    for _ in range(3):
        assert (await provider.send(target, call(clock))).outcome == "delivered"
        clock.advance(10 * 60 - 1)  # up to 29:57 after minting
    assert provider.token.minted == 1
    clock.advance(45 * 60 - 3 * (10 * 60 - 1))  # 45 minutes after minting: replaced
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    assert provider.token.minted == 2
    tokens = [r.headers["authorization"] for r in apns.requests]
    assert len(set(tokens)) == 2 and tokens[:3] == [tokens[0]] * 3
    # on the same connection: the emulator enforces Apple's 20-minute rule and accepted it
    assert {r.connection for r in apns.requests} == {0}
    # an hour with sends every 5 minutes never uses a token older than 60 minutes
    for _ in range(24):
        clock.advance(5 * 60)
        assert (await provider.send(target, call(clock))).outcome == "delivered"
    assert provider.token.minted == 4


def test_provider_token_refresh_window_is_enforced(apns_key, clock):
    for minutes in (19, 60, 75):
        with pytest.raises(ValueError, match="20 to 60"):
            ProviderToken(apns_key[0], KEY_ID, TEAM, refresh_after=minutes * 60, clock=clock)
    token = ProviderToken(apns_key[0], KEY_ID, TEAM, refresh_after=20 * 60, clock=clock)
    first = token.value()
    clock.advance(20 * 60 - 1)
    assert token.value() == first
    clock.advance(1)
    assert token.value() != first


async def test_an_old_token_is_refused_as_expired(apns, provider, clock):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    apns.clock = lambda: clock() + 3601  # the emulator sees our iat as over an hour old
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))
    assert (result.outcome, result.reason, result.status) == ("auth_failed", "ExpiredProviderToken", 403)


async def test_a_token_signed_with_another_key_is_invalid(apns, apns_credentials, ca_file, clock, tmp_path):
    from .conftest import write_ec_key

    other = tmp_path / "other.p8"
    write_ec_key(other)
    creds = msgspec.structs.replace(apns_credentials, key_file=str(other))
    provider = ApnsProvider(creds, ca_file=ca_file, clock=clock)
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))
    await provider.close()
    assert (result.outcome, result.reason) == ("auth_failed", "InvalidProviderToken")


async def test_renewal_mints_a_new_token_on_a_new_connection(apns, provider, clock):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    target = PushTarget("apns", "call", token=VOIP_TOKEN)
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    clock.advance(60)
    await provider.renew_auth()
    # a new token one minute after the first: fine, because it goes on a new connection
    assert (await provider.send(target, call(clock))).outcome == "delivered"
    assert provider.token.minted == 2
    assert [r.connection for r in apns.requests] == [0, 1]


# Apple's table: (status, reason) -> our outcome.
APPLE_TABLE = [
    (400, "BadCollapseId", "rejected"),
    (400, "BadDeviceToken", "dead_target"),
    (400, "BadExpirationDate", "rejected"),
    (400, "BadMessageId", "rejected"),
    (400, "BadPriority", "rejected"),
    (400, "BadTopic", "rejected"),
    (400, "DeviceTokenNotForTopic", "dead_target"),
    (400, "DuplicateHeaders", "rejected"),
    (400, "IdleTimeout", "rejected"),
    (400, "InvalidPushType", "rejected"),
    (400, "MissingDeviceToken", "rejected"),
    (400, "MissingTopic", "rejected"),
    (400, "PayloadEmpty", "rejected"),
    (400, "TopicDisallowed", "rejected"),
    (403, "BadCertificate", "auth_failed"),
    (403, "BadCertificateEnvironment", "auth_failed"),
    (403, "ExpiredProviderToken", "auth_failed"),
    (403, "Forbidden", "rejected"),
    (403, "InvalidProviderToken", "auth_failed"),
    (403, "MissingProviderToken", "auth_failed"),
    (403, "UnrelatedKeyIdInToken", "auth_failed"),
    (403, "BadEnvironmentKeyIdInToken", "auth_failed"),
    (404, "BadPath", "rejected"),
    (405, "MethodNotAllowed", "rejected"),
    (410, "ExpiredToken", "dead_target"),
    (410, "Unregistered", "dead_target"),
    (413, "PayloadTooLarge", "rejected"),
    (429, "TooManyProviderTokenUpdates", "retry_later"),
    (429, "TooManyRequests", "retry_later"),
    (500, "InternalServerError", "retry_later"),
    (503, "ServiceUnavailable", "retry_later"),
    (503, "Shutdown", "retry_later"),
]


@pytest.mark.parametrize("status, reason, outcome", APPLE_TABLE, ids=[r for _, r, _ in APPLE_TABLE])
async def test_every_reason_of_apples_table(apns, provider, clock, status, reason, outcome):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    apns.script(VOIP_TOKEN, (status, reason, {"retry-after": "7"} if status == 429 else {}))
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))
    assert (result.outcome, result.reason, result.status) == (outcome, reason, status)
    if status == 429:
        assert result.retry_after == 7.0


async def test_unregistered_comes_with_a_timestamp_and_kills_the_target(apns, provider, clock):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    apns.unregistered[VOIP_TOKEN] = 1_625_475_525_573
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))
    assert (result.outcome, result.reason, result.status) == ("dead_target", "Unregistered", 410)


async def test_oversized_payload_is_rejected_before_sending(apns, provider, clock):
    apns.register(VOIP_TOKEN, BUNDLE + ".voip")
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock, caller_name="x" * 6000))
    assert (result.outcome, result.reason) == ("rejected", "PayloadTooLarge")
    assert apns.requests == []


async def test_a_token_that_is_not_hex_never_reaches_the_wire(apns, provider, clock):
    result = await provider.send(PushTarget("apns", "call", token="../../admin"), call(clock))
    assert result.outcome == "dead_target" and apns.requests == []


async def test_unreachable_service_is_transient(apns_credentials, ca_file, clock):
    creds = msgspec.structs.replace(apns_credentials, production_url="https://127.0.0.1:1")
    provider = ApnsProvider(creds, ca_file=ca_file, clock=clock, timeout=2)
    result = await provider.send(PushTarget("apns", "call", token=VOIP_TOKEN), call(clock))
    await provider.close()
    assert result.outcome == "retry_later" and "cannot connect" in result.reason


def test_apns_ids_are_random_version_4_uuids_as_uuid_writes_them():
    import uuid

    from gateway.push.apns import random_uuid

    seen = set()
    for _ in range(2000):
        text = random_uuid()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
        seen.add(text)
    assert len(seen) == 2000
