"""The device API under test: a real store in a temporary directory, the real timer wheel,
the instance service and the aiohttp application served on a free loopback port."""

from __future__ import annotations

import asyncio
import os

from aiohttp.test_utils import TestClient, TestServer

from gateway import config as gwconfig
from gateway.api.device import create_device_api
from gateway.instances import InstanceService
from gateway.store import open_store
from gateway.timers import TimerWheel

APP_KEY = "demo-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
PASSWORD = "pw-Zq8#unique-4242"

CONFIG = """
state_dir = "{tmp}"
[device_api]
host = "127.0.0.1"
port = 0
plain_http = true
max_body_bytes = 4096
rate_per_app = {rate}
rate_burst = {burst}
[sip]
public_address = "gw.example.net"
[sip.device_face]
udp_port = 0
tcp_port = 5070
tls_port = 5071
[retention]
max_age_hours = {max_age}
premium_max_age_hours = {premium_max_age}
warn_before_hours = {warn}
[store]
path = "{tmp}/gw.db"
key_file = "{tmp}/store.key"
[[apps]]
id = "demo"
api_key_hashes = ["{demo_hash}"]
[apps.apns]
topic = "net.example.phone"
cert_file = "{tmp}/apns.pem"
[apps.fcm]
service_account_file = "{tmp}/fcm.json"
[apps.webpush]
vapid_key_file = "{tmp}/vapid.pem"
[[apps]]
id = "other"
premium = true
api_key_hashes = ["{other_hash}"]
[apps.fcm]
service_account_file = "{tmp}/fcm.json"
"""


def make_config(tmp_path, **overrides) -> gwconfig.Config:
    values = dict(
        tmp=tmp_path,
        rate=1000.0,
        burst=1000,
        max_age=72.0,
        premium_max_age=168.0,
        warn=[12.0, 1.0],
        demo_hash=gwconfig.api_key_hash(APP_KEY),
        other_hash=gwconfig.api_key_hash(OTHER_KEY),
    )
    values.update(overrides)
    return gwconfig.parse(CONFIG.format(**values), "test.toml")


def create_body(device_id: str = "phone-1", aor: str = "sip:alice@example.com", **account) -> dict:
    acc = {
        "aor": aor,
        "auth_username": "alice",
        "password": PASSWORD,
        "registrar": "sip:example.com;transport=tls",
        "expires": 600,
        "display_name": "Alice",
    }
    acc.update(account)
    return {
        "app_id": "demo",
        "device_id": device_id,
        "account": acc,
        "push": [
            {"provider": "apns", "usage": "call", "token": "a" * 64, "environment": "sandbox"},
            {
                "provider": "webpush",
                "usage": "other",
                "token": {
                    "endpoint": "https://push.example.org/send/abc",
                    "keys": {"p256dh": "B" * 87, "auth": "c" * 22},
                },
            },
        ],
    }


def app_auth(key: str = APP_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def disk_bytes(db_path: str) -> bytes:
    """Everything SQLite has on disk for this database: the file, its WAL and shm."""
    data = b""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            with open(db_path + suffix, "rb") as f:
                data += f.read()
    return data


class Gateway:
    """The pieces of one gateway under test."""

    def __init__(self, config, store, wheel, service, client):
        self.config = config
        self.store = store
        self.wheel = wheel
        self.service = service
        self.client = client

    async def create(self, **kwargs) -> dict:
        resp = await self.client.post("/v1/instances", json=create_body(**kwargs), headers=app_auth())
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def start_gateway(config) -> Gateway:
    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    wheel = TimerWheel(asyncio.get_running_loop())
    service = InstanceService(config, store, wheel)
    await service.start()
    client = TestClient(TestServer(create_device_api(config, service), host="127.0.0.1"))
    await client.start_server()
    return Gateway(config, store, wheel, service, client)


async def stop_gateway(gw: Gateway) -> None:
    await gw.client.close()
    await gw.service.stop()
    await gw.store.close()
    close = getattr(gw.wheel, "close", None)
    if close:
        close()
