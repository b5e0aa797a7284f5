"""Fixtures for the registration tests: a Kamailio registrar with digest auth on
(tests/support/registrar.py) and the real gateway (`gateway.app.Gateway`) in this process,
its device API on plain HTTP over loopback, its provider face on free loopback ports."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from gateway import config as gwconfig
from gateway.app import Gateway
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.pacing import Pacer
from gateway.sip.registration import (RegistrationClient, RegistrationContext,
                                      RegistrationSettings)
from gateway.sip.transaction import TimerSettings
from gateway.timers import TimerWheel
from tests.support.kamailio import need_kamailio
from tests.support.registrar import AuthRegistrar
from tests.support.ports import free_port

APP_KEY = "registration-test-key-0123456789"

CONFIG = """
state_dir = "{tmp}/state"
[device_api]
host = "127.0.0.1"
port = {api_port}
plain_http = true
rate_per_app = 10000.0
rate_burst = 10000
[admin]
host = "127.0.0.1"
port = {admin_port}
[sip]
keepalive_interval = {keepalive}
tls_ca_file = "{ca_file}"
t1 = {t1}
t2 = {t2}
[sip.provider_face]
host = "127.0.0.1"
udp_port = {udp_port}
tcp_port = {tcp_port}
tls_port = 0
[sip.device_face]
udp_port = 0
tcp_port = 0
tls_port = 0
[sip.registration]
rate = {rate}
burst = {burst}
per_registrar_rate = {rate}
per_registrar_burst = {burst}
max_in_flight = {in_flight}
retry_base = {retry_base}
retry_max = 4.0
unauthorized_retry = {unauthorized_retry}
unauthorized_retry_max = 60.0
dead_flow_spread = 0.3
[store]
path = "{tmp}/state/gw.db"
key_file = "{tmp}/state/store.key"
[logging]
level = "info"
[[apps]]
id = "demo"
api_key_hashes = ["{key_hash}"]
[apps.webpush]
vapid_key_file = "{tmp}/state/vapid.pem"
"""




def gateway_config(tmp_path, ca_file, **overrides) -> gwconfig.Config:
    values = dict(tmp=tmp_path, api_port=free_port(), admin_port=free_port(), udp_port=free_port(socket.SOCK_DGRAM),
                  tcp_port=free_port(), ca_file=ca_file, keepalive=30.0, rate=200.0, burst=20,
                  retry_base=0.5, unauthorized_retry=2.0, key_hash=gwconfig.api_key_hash(APP_KEY), t1=0.1, t2=0.4, in_flight=200)
    values.update(overrides)
    return gwconfig.parse(CONFIG.format(**values), "registration-test.toml")


@pytest.fixture
def registrar(tmp_path):
    need_kamailio()
    kam = AuthRegistrar(tmp_path / "kamailio", max_expires=3).start()
    yield kam
    kam.stop()


class Api:
    """The device API as an app uses it."""

    def __init__(self, gateway: Gateway):
        port = gateway.config.device_api.port
        self.base = f"http://127.0.0.1:{port}/v1"
        self.session = aiohttp.ClientSession()

    async def create(self, kam, user: str, transport: str = "udp", password: str | None = None,
                     device: str = "phone-1") -> dict:
        body = {
            "app_id": "demo", "device_id": device,
            "account": {"aor": f"sip:{user}@{kam.domain}", "auth_username": user,
                        "password": password if password is not None else kam.password(user),
                        "registrar": f"sip:127.0.0.1:{kam.port(transport)};transport={transport}",
                        "expires": 60},
            "push": [{"provider": "webpush", "usage": "call",
                      "token": {"endpoint": "https://push.example.org/send/abc",
                                "keys": {"p256dh": "B" * 87, "auth": "c" * 22}}}],
        }
        async with self.session.post(f"{self.base}/instances", json=body,
                                     headers={"Authorization": f"Bearer {APP_KEY}"}) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()

    async def _call(self, method: str, instance: dict, path: str = "", json=None):
        headers = {"Authorization": f"Bearer {instance['secret']}"}
        async with self.session.request(method, f"{self.base}/instances/{instance['id']}{path}",
                                        json=json, headers=headers) as resp:
            return resp.status, (await resp.json() if resp.status == 200 else None)

    async def get(self, instance: dict) -> dict:
        status, body = await self._call("GET", instance)
        assert status == 200
        return body

    async def set_mode(self, instance: dict, mode: str) -> None:
        status, _ = await self._call("PUT", instance, "/mode", {"mode": mode})
        assert status == 200

    async def delete(self, instance: dict) -> None:
        status, _ = await self._call("DELETE", instance)
        assert status == 204

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def start_gateway(tmp_path):
    """start_gateway(kam, **config overrides) -> (Gateway, Api); stopped at the end."""
    started = []

    async def start(kam, **overrides):
        config = gateway_config(tmp_path, kam.ca_file, **overrides)
        gateway = Gateway(config)
        await gateway.start()
        api = Api(gateway)
        started.append((gateway, api))
        return gateway, api

    yield start
    for gateway, api in started:
        await api.close()
        await gateway.stop()


async def eventually(check, timeout: float, interval: float = 0.05):
    """Poll `check()` (sync, may run kamcmd in a thread) until truthy; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def wait_state(api, instance, state: str, timeout: float) -> dict:
    """Poll the instance until it reaches `state`; its last status either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await api.get(instance)
        if status["state"] == state:
            return status
        await asyncio.sleep(0.05)
    return await api.get(instance)


def udp_client(ctx, port, **kwargs) -> RegistrationClient:
    """A registration client of alice (password "pw") to a registrar on loopback UDP."""
    return RegistrationClient(ctx, key="i1", token="gwtoken1", instance_urn="urn:uuid:1",
                              aor="sip:alice@example.com", username="alice",
                              password_source=lambda: "pw",
                              registrar=f"sip:127.0.0.1:{port};transport=udp", **kwargs)


async def settled(c, timeout: float = 2.0) -> str:
    """Wait until the client's state is past idle/registering; the state either way."""
    deadline = time.monotonic() + timeout
    while c.state in ("idle", "registering") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return c.state


@pytest.fixture
async def make_stack():
    """make(wire module or None) -> a RegistrationContext on a fresh endpoint (short
    timers), with that wire path (None: the general path only)."""
    made = []

    async def make(mode):
        wheel = TimerWheel()
        endpoint = SipEndpoint(wheel, timers=TimerSettings(t1=0.05, t2=0.2))
        settings = RegistrationSettings(retry_base=5.0, retry_max=60.0)
        ctx = RegistrationContext(endpoint, Pacer(wheel, 100, 10, 100, 10), settings)
        ctx.wire = None if mode is None else mode.RegisterWire.of(endpoint)
        made.append((endpoint, wheel))
        return ctx

    yield make
    for endpoint, wheel in made:
        await endpoint.close()
        wheel.close()
