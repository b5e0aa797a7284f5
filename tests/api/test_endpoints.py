"""Every endpoint's happy path, through aiohttp on a loopback port, against the real store."""

from __future__ import annotations

import datetime as dt
import json

from openapi_spec_validator import validate

from gateway.store.crypto import digest_ha1

from .harness import APP_KEY, PASSWORD, app_auth, create_body


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_create_answers_id_secret_state_expiry_and_device_face(gw):
    resp = await gw.client.post("/v1/instances", json=create_body(), headers=app_auth())
    assert resp.status == 201
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"id", "secret", "state", "expires_at", "device_face"}
    assert body["state"] == "idle"
    assert body["device_face"] == {
        "uri": f"sip:{body['id']}@gw.example.net",
        "username": body["id"],
        "transports": [{"transport": "tls", "port": 5071}, {"transport": "tcp", "port": 5070}],
    }
    expires = parse_time(body["expires_at"])
    record = await gw.store.get_instance(body["id"])
    assert abs(record.expires_at - expires) < 0.01
    assert 71.9 * 3600 < record.expires_at - record.created_at <= 72 * 3600

    # what is kept: the password sealed, the secret only as hashes
    assert gw.store.secret_box.open(record.password_ct, body["id"].encode()) == PASSWORD
    assert PASSWORD.encode() not in record.password_ct
    assert body["secret"] not in json.dumps([record.secret_ha1, record.secret_ha1_sha256])
    realm = gw.config.sip.device_realm
    assert record.secret_ha1 == digest_ha1(body["id"], realm, body["secret"], "MD5")
    assert record.secret_ha1_sha256 == digest_ha1(body["id"], realm, body["secret"], "SHA-256")
    assert [t.provider for t in record.push] == ["apns", "webpush"]
    webpush = record.push[1]
    assert (webpush.endpoint, webpush.p256dh, webpush.auth) == (
        "https://push.example.org/send/abc", "B" * 87, "c" * 22)
    assert record.push[0].environment == "sandbox" and record.push[0].usage == "call"
    assert record.reg_expires == 600 and record.registrar == "sip:example.com;transport=tls"


async def test_premium_app_lives_premium_max_age(gw):
    body = create_body()
    body["app_id"] = "other"
    body["push"] = [{"provider": "fcm", "token": "f" * 40}]
    resp = await gw.client.post(
        "/v1/instances", json=body, headers={"Authorization": "Bearer other-key-0123456789abcdef"}
    )
    assert resp.status == 201, await resp.text()
    record = await gw.store.get_instance((await resp.json())["id"])
    assert record.premium and record.expires_at - record.created_at > 167 * 3600


async def test_create_is_idempotent_on_app_aor_device(gw):
    first = await gw.create()
    other_device = await gw.create(device_id="tablet")
    second = await gw.create()
    assert second["id"] != first["id"]
    assert await gw.store.get_instance(first["id"]) is None
    assert await gw.store.get_instance(other_device["id"]) is not None
    assert await gw.store.count_instances() == 2
    resp = await gw.client.get(f"/v1/instances/{first['id']}", headers=bearer(first["secret"]))
    assert resp.status == 404
    # the same device for another account is another instance
    await gw.create(aor="sip:bob@example.com")
    assert await gw.store.count_instances() == 3


async def test_get_reports_state_and_never_the_password(gw):
    inst = await gw.create()
    resp = await gw.client.get(f"/v1/instances/{inst['id']}", headers=bearer(inst["secret"]))
    assert resp.status == 200
    text = await resp.text()
    assert PASSWORD not in text and inst["secret"] not in text
    body = json.loads(text)
    assert body["state"] == "idle" and body["mode"] == "background"
    assert body["last_error"] is None and body["registered_until"] is None
    assert body["pending_messages"] == 0
    assert body["expires_at"] == inst["expires_at"]
    assert (body["app_id"], body["device_id"], body["aor"], body["display_name"]) == (
        "demo", "phone-1", "sip:alice@example.com", "Alice")

    # the SIP part reports through set_state; GET shows it
    until = 1_900_000_000.0
    await gw.service.set_state(inst["id"], "registered", registered_until=until)
    body = await (await gw.client.get(f"/v1/instances/{inst['id']}", headers=bearer(inst["secret"]))).json()
    assert body["state"] == "registered" and parse_time(body["registered_until"]) == until


async def test_patch_changes_password_push_and_display_name(gw):
    inst = await gw.create()
    before = await gw.store.get_instance(inst["id"])
    patch = {
        "account": {"password": "new-secret-pw-99", "display_name": "Alice B."},
        "push": [{"provider": "fcm", "token": "fcm-token-xyz-123456"}],
    }
    resp = await gw.client.patch(f"/v1/instances/{inst['id']}", json=patch, headers=bearer(inst["secret"]))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["display_name"] == "Alice B."
    after = await gw.store.get_instance(inst["id"])
    assert after.password_ct != before.password_ct
    assert gw.service.password(after) == "new-secret-pw-99"
    assert [(t.provider, t.token) for t in after.push] == [("fcm", "fcm-token-xyz-123456")]

    # an empty PATCH changes nothing but is fine
    resp = await gw.client.patch(f"/v1/instances/{inst['id']}", json={}, headers=bearer(inst["secret"]))
    assert resp.status == 200
    assert (await gw.store.get_instance(inst["id"])).password_ct == after.password_ct


async def test_put_mode_switches_foreground_and_back(gw):
    inst = await gw.create()
    url = f"/v1/instances/{inst['id']}/mode"
    resp = await gw.client.put(url, json={"mode": "foreground"}, headers=bearer(inst["secret"]))
    assert resp.status == 200
    body = await resp.json()
    assert body["mode"] == "foreground" and body["state"] == "off"
    resp = await gw.client.put(url, json={"mode": "background"}, headers=bearer(inst["secret"]))
    body = await resp.json()
    assert body["mode"] == "background" and body["state"] == "idle"


async def test_refresh_extends_expiry(gw):
    inst = await gw.create()
    record = await gw.store.get_instance(inst["id"])
    # as if the instance was created a day ago
    await gw.store.update_instance(inst["id"], expires_at=record.expires_at - 86400)
    resp = await gw.client.post(f"/v1/instances/{inst['id']}/refresh", headers=bearer(inst["secret"]))
    assert resp.status == 200
    body = await resp.json()
    assert parse_time(body["expires_at"]) >= record.expires_at - 1
    stored = (await gw.store.get_instance(inst["id"])).expires_at
    assert abs(stored - parse_time(body["expires_at"])) < 1e-3


async def test_delete_erases_at_once(gw):
    inst = await gw.create()
    resp = await gw.client.delete(f"/v1/instances/{inst['id']}", headers=bearer(inst["secret"]))
    assert resp.status == 204
    assert await resp.read() == b""
    assert await gw.store.get_instance(inst["id"]) is None
    resp = await gw.client.delete(f"/v1/instances/{inst['id']}", headers=bearer(inst["secret"]))
    assert resp.status == 404


async def test_openapi_document_lists_every_route(gw):
    resp = await gw.client.get("/v1/openapi.json")
    assert resp.status == 200
    doc = json.loads(await resp.read())
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # a valid OpenAPI 3.1 document, $refs resolved
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in gw.client.server.app.router.routes()
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    # every $ref points at a component that exists
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rpartition("/")[2])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs and refs <= set(doc["components"]["schemas"])
    create = doc["components"]["schemas"]["CreateInstance"]
    assert create["additionalProperties"] is False
    assert APP_KEY not in json.dumps(doc)


async def test_webpush_subscription_as_toJSON_gives_it_or_flat(gw):
    subscription = {  # what PushSubscription.toJSON() gives in a browser
        "endpoint": "https://push.example.org/send/one",
        "expirationTime": None,
        "keys": {"p256dh": "B" * 87, "auth": "c" * 22},
    }
    flat = {"endpoint": "https://push.example.org/send/two", "p256dh": "D" * 87, "auth": "e" * 22}
    body = create_body()
    body["push"] = [
        {"provider": "webpush", "usage": "call", "token": subscription},
        {"provider": "webpush", "usage": "other", **flat},
    ]
    resp = await gw.client.post("/v1/instances", json=body, headers=app_auth())
    assert resp.status == 201, await resp.text()
    record = await gw.store.get_instance((await resp.json())["id"])
    assert [(t.usage, t.endpoint, t.p256dh, t.auth, t.token) for t in record.push] == [
        ("call", "https://push.example.org/send/one", "B" * 87, "c" * 22, None),
        ("other", "https://push.example.org/send/two", "D" * 87, "e" * 22, None),
    ]
