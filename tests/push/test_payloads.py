"""Payload Structs, their encodings per service, the size limits and the iOS VoIP rule."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PayloadTooLarge
from gateway.push import payloads
from gateway.push.payloads import (
    InstanceExpiringPush,
    InstanceOffPush,
    MessagePush,
    MissedCallPush,
)

from .conftest import call_payload

ALL = [
    call_payload(1_800_000_060.0),
    MissedCallPush(instance="i", call_id="c", caller_uri="sip:bob@example.com", reason="answered_elsewhere"),
    MessagePush(instance="i", sender="sip:bob@example.com", message_id="m1", count=3, body="hello"),
    InstanceExpiringPush(instance="i", expires_at=1_800_003_600.0),
    InstanceOffPush(instance="i", reason="no registration"),
]


@pytest.mark.parametrize("payload", ALL, ids=lambda p: payloads.kind(p))
def test_payloads_round_trip_with_their_type_tag(payload):
    data = payloads.encode_webpush(payload)
    assert msgspec.json.decode(data)["type"] == payloads.kind(payload)
    assert payloads.decode(data) == payload


def test_missed_call_reason_is_checked():
    good = b'{"type":"missed_call","instance":"i","call_id":"c","caller_uri":"u","reason":"no_answer"}'
    assert payloads.decode(good).reason == "no_answer"
    with pytest.raises(msgspec.ValidationError):
        payloads.decode(good.replace(b"no_answer", b"lost"))


@pytest.mark.parametrize(
    "payload, usage, push_type",
    [
        (ALL[0], "call", "voip"),  # only an incoming call to a PushKit token is VoIP
        (ALL[0], "other", "alert"),
        (ALL[1], "call", "alert"),  # a missed call is never VoIP: iOS would kill the app
        (ALL[1], "other", "alert"),
        (ALL[2], "other", "alert"),
        (ALL[3], "other", "background"),
        (ALL[4], "other", "alert"),
    ],
)
def test_ios_rule_only_calls_are_voip(payload, usage, push_type):
    assert payloads.apns_push_type(payload, usage) == push_type


def test_apns_bodies():
    voip = msgspec.json.decode(payloads.encode_apns(ALL[0], "voip"))
    assert "aps" not in voip and voip["gateway"]["call_id"] == "call-1@pbx"
    alert = msgspec.json.decode(payloads.encode_apns(ALL[1], "alert"))
    assert alert["aps"]["alert"] == {"title": "Call answered elsewhere", "body": "bob@example.com"}
    assert alert["aps"]["mutable-content"] == 1
    background = msgspec.json.decode(payloads.encode_apns(ALL[3], "background"))
    assert background["aps"] == {"content-available": 1}


def test_apns_limits_4096_and_5120_for_voip():
    big = call_payload(1.0, caller_name="x" * 4500)
    assert 4096 < len(payloads.encode_apns(big, "voip")) <= 5120
    with pytest.raises(PayloadTooLarge, match="4096"):
        payloads.encode_apns(big, "alert")
    with pytest.raises(PayloadTooLarge, match="5120"):
        payloads.encode_apns(call_payload(1.0, caller_name="x" * 5200), "voip")


@pytest.mark.parametrize(
    "encode, limit",
    [
        (lambda p: payloads.encode_apns(p, "alert"), 4096),
        (lambda p: payloads.encode_apns(p, "voip"), 5120),
        (lambda p: msgspec.json.encode(payloads.fcm_data(p)), 4096),
        (payloads.encode_webpush, 3993),
    ],
    ids=["apns", "voip", "fcm", "webpush"],
)
def test_limits_are_exact(encode, limit):
    fixed = len(encode(call_payload(1.0, callee="")))
    exact = call_payload(1.0, callee="x" * (limit - fixed))
    assert len(encode(exact)) == limit
    with pytest.raises(PayloadTooLarge):
        encode(call_payload(1.0, callee="x" * (limit - fixed + 1)))


def test_fcm_data_values_are_all_strings():
    data = payloads.fcm_data(MessagePush(instance="i", sender="s", message_id="m", count=2))
    assert data == {"type": "message", "instance": "i", "sender": "s", "message_id": "m", "count": "2"}
    call = payloads.fcm_data(ALL[0])
    assert call["expires_at"] == "1800000060.0" and all(isinstance(v, str) for v in call.values())


def test_fit_drops_a_message_body_that_does_not_fit():
    message = MessagePush(instance="i", sender="s", message_id="m", body="y" * 5000)
    data = payloads.fit(message, payloads.encode_webpush)
    assert payloads.decode(data).body is None
    small = MessagePush(instance="i", sender="s", message_id="m", body="hi")
    assert payloads.decode(payloads.fit(small, payloads.encode_webpush)).body == "hi"
    with pytest.raises(PayloadTooLarge):  # nothing else is dropped
        payloads.fit(call_payload(1.0, caller_name="x" * 5000), payloads.encode_webpush)


@settings(max_examples=200)
@given(st.text(max_size=6000), st.text(max_size=200), st.one_of(st.none(), st.text(max_size=3000)))
def test_encoders_fit_their_limit_or_say_too_large(caller, sender, body):
    candidates = [
        call_payload(1.0, caller_name=caller),
        MessagePush(instance="i", sender=sender, message_id="m", body=body),
    ]
    encoders = [
        (lambda p: payloads.encode_apns(p, "alert"), 4096),
        (lambda p: payloads.encode_apns(p, "voip"), 5120),
        (lambda p: msgspec.json.encode(payloads.fcm_data(p)), 4096),
        (payloads.encode_webpush, 3993),
    ]
    for payload in candidates:
        for encode, limit in encoders:
            try:
                data = payloads.fit(payload, encode)
            except PayloadTooLarge:
                continue
            assert len(data) <= limit
