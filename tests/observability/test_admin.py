"""The admin listener of the running gateway: health, readiness, the bearer token on /about
and /stats, their JSON shapes, and errors in the JSON envelope."""

from __future__ import annotations

import pytest

from gateway import __version__, metrics
from gateway.api.admin import read_bearer_token
from gateway.errors import ConfigError

from .harness import ADMIN_TOKEN, APP_KEY, make_config, start, stop

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_healthz_and_readyz_while_running(running):
    resp = await running.admin.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok", "failing": []}
    resp = await running.admin.get("/readyz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_readyz_names_what_is_not_ready(running):
    gateway = running.gateway
    await gateway.store.close()  # the store's thread ends: not ready any more
    gateway.listening = False
    resp = await running.admin.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {"status": "unavailable", "failing": ["listeners", "store"]}
    assert (await running.admin.get("/healthz")).status == 200  # the process still lives


@pytest.mark.parametrize("path", ["/about", "/stats"])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", f"Basic {ADMIN_TOKEN}", "Bearer"])
async def test_about_and_stats_want_the_token(running, path, header):
    headers = {"Authorization": header} if header else {}
    resp = await running.admin.get(path, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_metrics_and_health_need_no_token(running):
    for path in ("/metrics", "/healthz", "/readyz"):
        assert (await running.admin.get(path)).status == 200


async def test_about(running):
    resp = await running.admin.get("/about", headers=AUTH)
    assert resp.status == 200
    about = await resp.json()
    assert about["name"] == "sip-push-gateway" and about["version"] == __version__
    assert set(about["build"]["modules"]) >= {"_sipparse", "_timerwheel"}
    assert about["build"]["accelerated"] == all(v == "cython" for v in about["build"]["modules"].values())
    assert 0 <= about["uptime_seconds"] < 60
    assert about["started_at"].endswith("Z") or about["started_at"].endswith("+00:00")


async def test_stats_counts_instances_by_state(running):
    body = {"app_id": "demo", "device_id": "d1",
            "account": {"aor": "sip:carol@example.com", "auth_username": "carol", "password": "pw-0123456789",
                        "registrar": "sip:example.com"},
            "push": [{"provider": "apns", "usage": "call", "token": "ab" * 32, "environment": "sandbox"}]}
    ids = []
    for device in ("d1", "d2"):
        body["device_id"] = device
        resp = await running.api.post("/v1/instances", json=body, headers={"Authorization": f"Bearer {APP_KEY}"})
        assert resp.status == 201
        ids.append((await resp.json())["id"])
    await running.gateway.instances.set_state(ids[1], "unauthorized", last_error="403 Forbidden")
    stats = await (await running.admin.get("/stats", headers=AUTH)).json()
    assert stats["instances"] == {"count": 2, "by_state": {"idle": 1, "registering": 0, "registered": 0,
                                                            "error": 0, "unauthorized": 1, "off": 0}}
    assert set(stats) == {"server", "instances", "registrations", "calls", "pushes", "messages"}
    assert set(stats["pushes"]) == set(metrics.PROVIDERS)
    assert set(stats["pushes"]["apns"]) == set(metrics.PUSH_OUTCOMES)
    assert set(stats["calls"]["outcomes"]) == set(metrics.CALL_OUTCOMES)
    before = stats["calls"]["outcomes"]["no_answer"]
    metrics.call_ended("no_answer")
    stats = await (await running.admin.get("/stats", headers=AUTH)).json()
    assert stats["calls"]["outcomes"]["no_answer"] == before + 1
    text = await (await running.admin.get("/stats", headers=AUTH)).text()
    assert "carol" not in text and ids[0] not in text and "ab" * 32 not in text


async def test_unknown_path_and_method_get_the_json_envelope(running):
    resp = await running.admin.get("/nope")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await running.admin.post("/metrics")
    assert resp.status == 405 and "error" in await resp.json()


async def test_without_a_token_file_about_and_stats_are_open(tmp_path):
    gw = await start(make_config(tmp_path, token=False))
    try:
        assert (await gw.admin.get("/about")).status == 200
        assert (await gw.admin.get("/stats")).status == 200
    finally:
        await stop(gw)


def test_token_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="admin.bearer_token_file: .*missing"):
        read_bearer_token(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_bearer_token(str(short))


async def test_a_bad_token_file_stops_the_start(tmp_path):
    config = make_config(tmp_path)
    (tmp_path / "admin.token").write_text("short\n")
    from gateway.app import Gateway

    gateway = Gateway(config)
    try:
        with pytest.raises(ConfigError, match="bearer_token_file"):
            await gateway.start()
    finally:
        await gateway.stop()
