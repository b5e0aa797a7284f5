"""The real process, as `make run` starts it: HTTPS with a self-signed certificate, a whole
instance lifecycle through the API, a restart, and what is left in logs and files."""

import sqlite3
import ssl

import aiohttp
import pytest

from gateway import tls
from tests.support.gateway_process import GatewayProcess, write_config

PASSWORD = "Pa55-first-0f-a-kind"
NEW_PASSWORD = "Pa55-second-0f-a-kind"
ENDPOINT = "https://push.example.net/wpush/v2/gAAAAABkZXZpY2UtZW5kcG9pbnQtdG9rZW4tMTIzNDU2Nzg5"


def create_body(device="phone-1"):
    return {
        "app_id": "demo",
        "device_id": device,
        "account": {
            "aor": "sip:alice@example.com",
            "auth_username": "alice",
            "password": PASSWORD,
            "registrar": "sip:example.com;transport=tcp",
        },
        "push": [
            {
                "provider": "webpush",
                "usage": "call",
                "endpoint": ENDPOINT,
                "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                "auth": "tBHItJI5svbpez7KI4CCXg",
            }
        ],
    }


@pytest.fixture
def gateway(tmp_path):
    process = GatewayProcess(write_config(tmp_path))
    process.start()
    yield process
    process.stop()


def client_for(gateway):
    """An HTTPS client that trusts exactly the gateway's generated certificate."""
    cert = gateway.directory / "state" / tls.SELF_SIGNED_CERT
    context = ssl.create_default_context(cafile=str(cert))
    return aiohttp.ClientSession(
        base_url=f"https://127.0.0.1:{gateway.api_port}",
        connector=aiohttp.TCPConnector(ssl=context),
    )


async def test_lifecycle_over_https_leaves_no_credential_behind(gateway):
    cert = (gateway.directory / "state" / tls.SELF_SIGNED_CERT).read_bytes()
    assert tls.fingerprint(cert) in gateway.log()  # the operator can pin it

    app_auth = {"Authorization": f"Bearer {gateway.api_key}"}
    async with client_for(gateway) as http:
        async with http.post("/v1/instances", json=create_body(), headers=app_auth) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        instance = created["id"]
        auth = {"Authorization": f"Bearer {created['secret']}"}
        path = f"/v1/instances/{instance}"

        async with http.get(path, headers=auth) as r:
            assert r.status == 200
            shown = await r.json()
        assert PASSWORD not in str(shown) and shown["expires_at"] == created["expires_at"]

        db = gateway.directory / "state" / "gateway.db"
        ciphertexts = [row[0] for row in sqlite3.connect(db).execute("SELECT password_ct FROM instances")]
        assert len(ciphertexts) == 1

        async with http.patch(path, json={"account": {"password": NEW_PASSWORD}}, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with http.put(f"{path}/mode", json={"mode": "foreground"}, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with http.put(f"{path}/mode", json={"mode": "background"}, headers=auth) as r:
            assert r.status == 200
        async with http.post(f"{path}/refresh", headers=auth) as r:
            assert r.status == 200
            assert (await r.json())["expires_at"] >= created["expires_at"]
        ciphertexts += [row[0] for row in sqlite3.connect(db).execute("SELECT password_ct FROM instances")]

        async with http.delete(path, headers=auth) as r:
            assert r.status == 204
        async with http.get(path, headers=auth) as r:
            assert r.status in (401, 404)

    assert gateway.stop() == 0
    log = gateway.log()
    for secret in (PASSWORD, NEW_PASSWORD, created["secret"], ENDPOINT, gateway.api_key):
        assert secret not in log
    leftovers = b"".join(p.read_bytes() for p in db.parent.glob("gateway.db*"))
    for secret in (PASSWORD.encode(), NEW_PASSWORD.encode(), *ciphertexts):
        assert secret not in leftovers


async def test_instances_survive_a_restart(gateway):
    async with client_for(gateway) as http:
        async with http.post(
            "/v1/instances", json=create_body(), headers={"Authorization": f"Bearer {gateway.api_key}"}
        ) as r:
            created = await r.json()
    assert gateway.stop() == 0
    gateway.start()
    async with client_for(gateway) as http:
        async with http.get(
            f"/v1/instances/{created['id']}", headers={"Authorization": f"Bearer {created['secret']}"}
        ) as r:
            assert r.status == 200
            assert (await r.json())["expires_at"] == created["expires_at"]


def test_cli_lists_and_erases_without_showing_secrets(gateway, capsys):
    import asyncio

    from gateway import cli

    async def create():
        async with client_for(gateway) as http:
            async with http.post(
                "/v1/instances", json=create_body(), headers={"Authorization": f"Bearer {gateway.api_key}"}
            ) as r:
                return await r.json()

    created = asyncio.run(create())
    gateway.stop()
    config = ["--config", str(gateway.config)]
    assert cli.main(["instances", "list", *config]) == 0
    assert cli.main(["instances", "show", created["id"], *config]) == 0
    out = capsys.readouterr().out
    assert created["id"] in out and "sip:alice@example.com" in out
    assert PASSWORD not in out and created["secret"] not in out and ENDPOINT not in out
    assert cli.main(["instances", "delete", created["id"], *config]) == 0
    assert cli.main(["instances", "show", created["id"], *config]) == cli.EXIT_NOT_FOUND
