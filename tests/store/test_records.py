"""Stored shapes: strict decoding, and reprs that keep secrets out of logs."""

from __future__ import annotations

import msgspec
import pytest

from gateway.store.records import InstanceRecord, PushTarget
from tests.support.instances import make_instance


def test_push_target_decoding_is_strict():
    ok = msgspec.json.decode(b'{"provider": "fcm", "usage": "call", "token": "t"}', type=PushTarget)
    assert ok == PushTarget(provider="fcm", token="t")
    with pytest.raises(msgspec.ValidationError, match="colour"):
        msgspec.json.decode(b'{"provider": "fcm", "colour": "red"}', type=PushTarget)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.environment"):
        msgspec.json.decode(b'{"provider": "apns", "environment": "staging"}', type=PushTarget)


def test_reprs_do_not_leak_secrets(box):
    rec = make_instance(box, 1)
    token = rec.push[0].token
    text = repr(rec) + str(rec) + repr(rec.push) + str(rec.push[1])
    for secret in (token, rec.push[1].endpoint, rec.push[1].p256dh, rec.push[1].auth, rec.secret_ha1, rec.secret_bearer):
        assert secret not in text
    assert rec.password_ct.hex() not in text and repr(rec.password_ct) not in text
    assert token[:8] in repr(rec.push[0])  # enough to tell two tokens apart
    assert rec.id in repr(rec)


def test_record_round_trips_through_msgpack(box):
    rec = make_instance(box, 3, premium=True, registered_until=99.5)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(rec), type=InstanceRecord) == rec
