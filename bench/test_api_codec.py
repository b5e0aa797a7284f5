"""msgspec against the stdlib `json` on the device API's bodies.

Decode: msgspec decodes *and validates* a create body into `CreateInstance`; the baseline,
`json.loads`, only parses it into dicts (no checks at all), so the ratio understates what
msgspec saves. Most of msgspec's time goes to the checks (the URI and base64url patterns
run on Python's regex engine); `parse_only_ratio_vs_stdlib_json` shows the parse alone. Encode: an `InstanceStatus` Struct with msgspec against the same content as
a dict with `json.dumps`. Ratios are baseline time / msgspec time (above 1: msgspec wins).

    make bench   (or: python -m pytest bench/test_api_codec.py --benchmark-only)
"""

import datetime as dt
import json

import msgspec
import pytest
from conftest import measure, median_seconds

from gateway.api import schemas

BODY = json.dumps(
    {
        "app_id": "demo",
        "device_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "account": {
            "aor": "sip:alice@example.com",
            "auth_username": "alice",
            "password": "correct horse battery staple",
            "registrar": "sip:example.com;transport=tls",
            "outbound_proxy": "sip:edge.example.com;lr",
            "expires": 600,
            "display_name": "Alice",
        },
        "push": [
            {"provider": "apns", "usage": "call", "token": "a" * 64, "environment": "production"},
            {
                "provider": "webpush",
                "usage": "other",
                "token": {"endpoint": "https://push.example.org/send/" + "x" * 120,
                          "keys": {"p256dh": "B" * 87, "auth": "c" * 22}},
            },
        ],
    }
).encode()

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
STATUS = schemas.InstanceStatus(
    id="cOyhfvahJtWIT94ze9KWRA", app_id="demo", device_id="0f8fad5b-d9cb-469f-a165-70867728950e",
    aor="sip:alice@example.com", display_name="Alice", mode="background", state="registered",
    last_error=None, registered_until=NOW, expires_at=NOW, pending_messages=0,
)
STATUS_DICT = msgspec.structs.asdict(STATUS)

decoder = msgspec.json.Decoder(schemas.CreateInstance)
untyped = msgspec.json.Decoder()
encoder = msgspec.json.Encoder()


def json_decode():
    return json.loads(BODY)


def json_encode():
    return json.dumps(
        {**STATUS_DICT, "registered_until": STATUS.registered_until.isoformat(),
         "expires_at": STATUS.expires_at.isoformat()}
    ).encode()


@pytest.mark.benchmark(group="api-decode")
def test_decode_stdlib_json(benchmark, baselines):
    assert benchmark(json_decode)["account"]["expires"] == 600
    baselines["decode"] = median_seconds(benchmark)


@pytest.mark.benchmark(group="api-decode")
def test_decode_msgspec(benchmark, baselines):
    assert benchmark(decoder.decode, BODY).account.expires == 600
    base = baselines.get("decode") or measure(json_decode, iterations=2000)
    benchmark.extra_info["ratio_vs_stdlib_json"] = round(base / median_seconds(benchmark), 2)
    # for context: how much of the time is the checks (7 patterns, lengths, enums)
    parse_only = measure(lambda: untyped.decode(BODY), iterations=2000)
    json_again = measure(json_decode, iterations=2000)
    benchmark.extra_info["parse_only_ratio_vs_stdlib_json"] = round(json_again / parse_only, 2)


@pytest.mark.benchmark(group="api-encode")
def test_encode_stdlib_json(benchmark, baselines):
    assert benchmark(json_encode).startswith(b"{")
    baselines["encode"] = median_seconds(benchmark)


@pytest.mark.benchmark(group="api-encode")
def test_encode_msgspec(benchmark, baselines):
    assert benchmark(encoder.encode, STATUS).startswith(b"{")
    base = baselines.get("encode") or measure(json_encode, iterations=2000)
    benchmark.extra_info["ratio_vs_stdlib_json"] = round(base / median_seconds(benchmark), 2)
