"""Every error status of the device API, always as the JSON error envelope."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from .harness import (
    APP_KEY,
    OTHER_KEY,
    app_auth,
    create_body,
    make_config,
    start_gateway,
    stop_gateway,
)


async def error_of(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]


async def post_create(gw, body, headers=None, **kwargs):
    data = body if isinstance(body, (bytes, str)) or not isinstance(body, dict) else json.dumps(body)
    headers = {"Content-Type": "application/json", **(headers or app_auth())}
    return await gw.client.post("/v1/instances", data=data, headers=headers, **kwargs)


# --- 400 ---------------------------------------------------------------------------------


async def test_bad_json_is_400(gw):
    err = await error_of(await post_create(gw, b'{"app_id": "demo",'), 400)
    assert err["code"] == "invalid_json"
    err = await error_of(await post_create(gw, b"\xff\xfe"), 400)
    assert err["code"] == "invalid_json"


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda b: b["account"].update(expires="3600"), "account.expires: Expected `int`"),
        (lambda b: b["account"].update(expires=5), "account.expires: Expected `int` >= 60"),
        (lambda b: b.update(device_id=7), "device_id: Expected `str`"),
        (lambda b: b["account"].update(aor="alice@example.com"), "account.aor: must be a sip: or sips: URI"),
        (lambda b: b["account"].update(registrar="https://x"), "account.registrar: must be a sip:"),
        (lambda b: b["account"].update(colour="red"), "account.colour: unknown field"),
        (lambda b: b.update(extra=1), "extra: unknown field"),
        (lambda b: b["account"].pop("password"), "account.password: required field missing"),
        (lambda b: b.pop("push"), "push: required field missing"),
        (lambda b: b.update(push=[]), "push: Expected `array` of length >= 1"),
        (lambda b: b["push"][0].update(provider="gcm"), "push[0].provider: Invalid enum value 'gcm'"),
        (lambda b: b["push"][0].update(usage="other"), "push: at least one target needs usage 'call'"),
        (lambda b: b["push"][0].update(
            token={"endpoint": "https://x/y", "keys": {"p256dh": "B" * 87, "auth": "c" * 22}}),
         "push[0].token: an apns target needs its token as a string"),
        (lambda b: b["push"][1].update(token="x" * 30), "push[1].token: a webpush target needs"),
        (lambda b: b["push"][1].update(endpoint="https://x/y"), "push[1].endpoint: give the subscription once"),
        (lambda b: b["push"][0].update(p256dh="B" * 87), "push[0].p256dh: only for webpush targets"),
        (lambda b: b["push"][1].update(token=None, endpoint="https://x/y", auth="c" * 22),
         "push[1].p256dh: a webpush target needs endpoint, p256dh and auth"),
        (lambda b: b["push"][1]["token"].update(endpoint="http://push.example.org/x"),
         "push[1].token.endpoint: must be an https:// URL"),
        (lambda b: b["push"][1]["token"]["keys"].pop("auth"), "push[1].token.keys.auth: required field missing"),
        (lambda b: b["push"][0].update(environment="staging"), "push[0].environment: Invalid enum value"),
    ],
)
async def test_bad_field_is_400_naming_its_path(gw, change, path):
    body = create_body()
    change(body)
    err = await error_of(await post_create(gw, body), 400)
    assert err["code"] == "invalid_field"
    assert err["message"].startswith(path), err["message"]


async def test_provider_not_configured_for_the_app_is_400(gw):
    body = create_body()
    body["app_id"] = "other"  # has fcm only
    err = await error_of(await post_create(gw, body, {"Authorization": f"Bearer {OTHER_KEY}"}), 400)
    assert err["message"].startswith("push[0].provider: 'apns' is not configured for app 'other'")


async def test_patch_and_mode_bodies_are_checked_too(gw):
    inst = await gw.create()
    auth = {"Authorization": f"Bearer {inst['secret']}"}
    url = f"/v1/instances/{inst['id']}"
    err = await error_of(await gw.client.patch(url, json={"account": {"password": ""}}, headers=auth), 400)
    assert err["message"].startswith("account.password: Expected `str` of length >= 1")
    err = await error_of(await gw.client.patch(url, json={"account": {"aor": "sip:x@y"}}, headers=auth), 400)
    assert err["message"] == "account.aor: unknown field"
    err = await error_of(await gw.client.patch(url, json={"password": "x"}, headers=auth), 400)
    assert err["message"] == "password: unknown field"
    err = await error_of(await gw.client.put(url + "/mode", json={"mode": "sleep"}, headers=auth), 400)
    assert err["message"].startswith("mode: Invalid enum value 'sleep'")
    err = await error_of(await gw.client.put(url + "/mode", json=["foreground"], headers=auth), 400)
    assert err["message"].startswith("Expected `object`, got `array`")


# --- 401 ---------------------------------------------------------------------------------


async def test_create_without_or_with_a_wrong_key_is_401(gw):
    for headers in ({}, {"Authorization": "Basic ZGVtbzpkZW1v"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer not-a-key-of-any-app"}):
        resp = await gw.client.post("/v1/instances", json=create_body(), headers=headers)
        err = await error_of(resp, 401)
        assert err["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    # a valid key of another app
    err = await error_of(await post_create(gw, create_body(), {"Authorization": f"Bearer {OTHER_KEY}"}), 401)
    assert "app 'demo'" in err["message"]
    assert await gw.store.count_instances() == 0


async def test_instance_endpoints_need_the_instance_secret(gw):
    inst = await gw.create()
    other = await gw.create(device_id="phone-2")
    url = f"/v1/instances/{inst['id']}"
    for headers in ({}, app_auth(), {"Authorization": f"Bearer {other['secret']}"},
                    {"Authorization": f"Bearer {inst['secret']}x"}):
        for method, path, body in (("GET", url, None), ("PATCH", url, {"account": {"display_name": "x"}}),
                                   ("PUT", url + "/mode", {"mode": "foreground"}),
                                   ("POST", url + "/refresh", None), ("DELETE", url, None)):
            resp = await gw.client.request(method, path, json=body, headers=headers)
            await error_of(resp, 401)
    record = await gw.store.get_instance(inst["id"])
    assert record.mode == "background" and record.display_name == "Alice"


# --- 404, 405 ----------------------------------------------------------------------------


async def test_unknown_instance_route_or_method(gw):
    inst = await gw.create()
    auth = {"Authorization": f"Bearer {inst['secret']}"}
    err = await error_of(await gw.client.get("/v1/instances/nope", headers=auth), 404)
    assert err["code"] == "not_found"
    await error_of(await gw.client.post("/v1/instances/nope/refresh", headers=auth), 404)
    await error_of(await gw.client.get("/v2/anything"), 404)
    resp = await gw.client.put("/v1/instances", json={})
    err = await error_of(resp, 405)
    assert err["code"] == "method_not_allowed" and "POST" in resp.headers["Allow"]


# --- 409 ---------------------------------------------------------------------------------


class GatedStore:
    """The real store, with put_instance and erase_instance held at a gate so that a
    request can be made to overlap another one deterministically."""

    def __init__(self, store):
        self._store = store
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def _held(self, call):
        self.entered.set()
        await self.gate.wait()
        return await call

    def put_instance(self, rec):
        return self._held(self._store.put_instance(rec))

    def erase_instance(self, instance_id):
        return self._held(self._store.erase_instance(instance_id))


async def test_create_while_the_same_create_is_in_flight_is_409(gw):
    gated = GatedStore(gw.store)
    gw.service.store = gated
    first = asyncio.create_task(post_create(gw, create_body()))
    await gated.entered.wait()
    err = await error_of(await post_create(gw, create_body()), 409)
    assert err["code"] == "conflict"
    # once the first create is through, the same create is a replace again
    gated.gate.set()
    assert (await first).status == 201
    assert (await post_create(gw, create_body())).status == 201
    assert await gw.store.count_instances() == 1


async def test_request_on_an_instance_being_erased_is_409(gw):
    inst = await gw.create()
    auth = {"Authorization": f"Bearer {inst['secret']}"}
    url = f"/v1/instances/{inst['id']}"
    gated = GatedStore(gw.store)
    gw.service.store = gated
    deleting = asyncio.create_task(gw.client.delete(url, headers=auth))
    await gated.entered.wait()
    await error_of(await gw.client.patch(url, json={"account": {"display_name": "x"}}, headers=auth), 409)
    await error_of(await gw.client.delete(url, headers=auth), 409)
    gated.gate.set()
    assert (await deleting).status == 204
    await error_of(await gw.client.get(url, headers=auth), 404)


# --- 413, 415 ----------------------------------------------------------------------------


async def test_oversized_body_is_413(gw):
    body = create_body(display_name="x" * 5000)  # max_body_bytes is 4096 in these tests
    err = await error_of(await post_create(gw, body), 413)
    assert err["code"] == "body_too_large" and "4096" in err["message"]

    async def chunks():  # no Content-Length: aiohttp's own limit, same envelope
        for _ in range(10):
            yield b" " * 1000

    err = await error_of(await post_create(gw, chunks()), 413)
    assert err["code"] == "body_too_large"
    assert await gw.store.count_instances() == 0


async def test_body_that_is_not_json_is_415(gw):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**app_auth(), "Content-Type": ctype} if ctype else app_auth()
        data = json.dumps(create_body()).encode()
        resp = await gw.client.post("/v1/instances", data=data, headers=headers)
        err = await error_of(resp, 415)
        assert err["code"] == "unsupported_media_type"
    ok = {**app_auth(), "Content-Type": "application/json; charset=utf-8"}
    resp = await gw.client.post("/v1/instances", data=json.dumps(create_body()), headers=ok)
    assert resp.status == 201


# --- 429 ---------------------------------------------------------------------------------


async def test_over_the_apps_rate_is_429_with_retry_after(tmp_path):
    gw = await start_gateway(make_config(tmp_path, rate=0.5, burst=3))
    try:
        inst = await gw.create()
        auth = {"Authorization": f"Bearer {inst['secret']}"}
        statuses = [(await gw.client.get(f"/v1/instances/{inst['id']}", headers=auth)).status for _ in range(2)]
        assert statuses == [200, 200]
        resp = await gw.client.get(f"/v1/instances/{inst['id']}", headers=auth)
        err = await error_of(resp, 429)
        assert err["code"] == "rate_limited" and "demo" in err["message"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 2
        await error_of(await post_create(gw, create_body(device_id="d2")), 429)
        # another app has its own bucket
        body = create_body()
        body["app_id"] = "other"
        body["push"] = [{"provider": "fcm", "token": "f" * 40}]
        resp = await post_create(gw, body, {"Authorization": f"Bearer {OTHER_KEY}"})
        assert resp.status == 201
    finally:
        await stop_gateway(gw)


# --- 500: never a traceback --------------------------------------------------------------


async def test_an_unexpected_failure_is_a_bare_500(gw, caplog):
    inst = await gw.create()
    await gw.store.close()  # every store call now fails with RuntimeError
    resp = await gw.client.get(f"/v1/instances/{inst['id']}", headers={"Authorization": f"Bearer {inst['secret']}"})
    err = await error_of(resp, 500)
    assert err == {"code": "internal", "message": "internal error"}
    assert "Traceback" in caplog.text  # logged here, not sent
    assert APP_KEY not in caplog.text


# --- 503: the store cannot write just now -------------------------------------------------


async def test_a_store_that_cannot_write_is_503_with_retry_after(gw):
    blocker = sqlite3.connect(gw.config.store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        resp = await post_create(gw, create_body())
        err = await error_of(resp, 503)
        assert err == {"code": "unavailable", "message": "try again later"}
        assert int(resp.headers["Retry-After"]) >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await post_create(gw, create_body())).status == 201
