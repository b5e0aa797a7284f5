"""A provider, a push service and the gateway, wired for call and message tests.

    bed = Testbed(tmp_path, t1=2.0)
    await bed.start()            # Kamailio with digest auth, the APNs emulator, the gateway
    alice = await bed.create_instance("alice")    # registered at Kamailio by the gateway
    ... bed.kam, bed.apns, bed.gateway, bed.pushes("call") ...
    await bed.stop()

The gateway runs in this process (`gateway.app.Gateway`), its device API on plain HTTP
over loopback, its provider face on UDP and TCP, its device face on UDP, TCP and TLS (a
self-signed certificate), every port free and on 127.0.0.1. The app "demo" pushes with
APNs token auth to the emulator (`tests/support/apns_emulator.py`), trusted through a
test CA. Each instance gets a PushKit VoIP token (calls) and an alert token (missed calls
and messages), both registered with the emulator.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from pathlib import Path

import aiohttp
import msgspec
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import config as gwconfig
from gateway.app import Gateway
from tests.support.apns_emulator import ApnsEmulator
from tests.support.registrar import AuthRegistrar
from tests.support.ports import free_port

TEAM = "TEAM123456"
KEY_ID = "KEY1234567"
BUNDLE = "com.example.phone"
APP_KEY = "calls-test-api-key-0123456789"

CONFIG = """
state_dir = "{tmp}/state"
[device_api]
host = "127.0.0.1"
port = {api_port}
plain_http = true
rate_per_app = 100000.0
rate_burst = 100000
[admin]
host = "127.0.0.1"
port = {admin_port}
[sip]
tls_ca_file = "{kam_ca}"
device_realm = "gateway.test"
[sip.provider_face]
host = "127.0.0.1"
udp_port = {udp_port}
tcp_port = {tcp_port}
tls_port = 0
[sip.device_face]
host = "127.0.0.1"
udp_port = {dev_udp}
tcp_port = {dev_tcp}
tls_port = {dev_tls}
[sip.registration]
rate = 5000.0
burst = 5000
per_registrar_rate = 5000.0
per_registrar_burst = 5000
retry_base = 0.5
retry_max = 4.0
[calls]
t1 = {t1}
t2 = {t2}
[messages]
max_body_bytes = {max_body}
[push]
tls_ca_file = "{push_ca}"
max_in_flight = 1000
[store]
path = "{tmp}/state/gw.db"
key_file = "{tmp}/state/store.key"
[logging]
level = "{log_level}"
[[apps]]
id = "demo"
api_key_hashes = ["{key_hash}"]
[apps.apns]
topic = "{bundle}"
team_id = "{team}"
key_id = "{key_id}"
key_file = "{key_file}"
production_url = "{apns_url}"
sandbox_url = "{apns_url}"
"""




def write_ec_key(path: Path) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class Testbed:
    def __init__(self, tmp_path: Path, *, t1: float = 10.0, t2: float = 10.0,
                 max_body: int = 4194304, log_level: str = "info", kam_children: int = 2,
                 kam_shm_mb: int = 64, kam_memory: str = ""):
        self.tmp = Path(tmp_path)
        self.t1, self.t2, self.max_body, self.log_level = t1, t2, max_body, log_level
        self.kam = AuthRegistrar(self.tmp / "kamailio", children=kam_children, shm_mb=kam_shm_mb)
        self.kam.config.memory_manager = kam_memory  # see KamailioConfig: "tlsf" for load
        self.ca = trustme.CA()
        self.push_ca = self.tmp / "push-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.push_ca))
        self.key_file = self.tmp / "AuthKey.p8"
        public = write_ec_key(self.key_file)
        self.apns = ApnsEmulator(self.ca, keys={KEY_ID: (TEAM, public)})
        self.gateway: Gateway | None = None
        self.session: aiohttp.ClientSession | None = None
        self.base = ""

    async def start(self, apns_url: str = "", push_ca: str = "") -> "Testbed":
        """Start everything; with `apns_url` (and its CA in `push_ca`) the gateway pushes to
        an emulator running elsewhere (tests/support/apns_remote.py) instead."""
        await asyncio.to_thread(self.kam.start)
        url = apns_url or await self.apns.start()
        if push_ca:
            self.push_ca = Path(push_ca)
        text = CONFIG.format(
            tmp=self.tmp, api_port=free_port(), admin_port=free_port(), kam_ca=self.kam.ca_file,
            udp_port=free_port(socket.SOCK_DGRAM), tcp_port=free_port(),
            dev_udp=free_port(socket.SOCK_DGRAM), dev_tcp=free_port(), dev_tls=free_port(),
            t1=self.t1, t2=self.t2, max_body=self.max_body, push_ca=self.push_ca,
            log_level=self.log_level, key_hash=gwconfig.api_key_hash(APP_KEY), bundle=BUNDLE,
            team=TEAM, key_id=KEY_ID, key_file=self.key_file, apns_url=url)
        self.config = gwconfig.parse(text, "calls-test.toml")
        self.gateway = Gateway(self.config)
        await self.gateway.start()
        self.session = aiohttp.ClientSession()
        self.base = f"http://127.0.0.1:{self.config.device_api.port}/v1"
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.gateway is not None:
            await self.gateway.stop()
        await self.apns.stop()
        await asyncio.to_thread(self.kam.stop)

    # -- the gateway's faces ------------------------------------------------------------

    def device_face(self, transport: str) -> str:
        port = getattr(self.config.sip.device_face, f"{transport}_port")
        return f"sip:127.0.0.1:{port};transport={transport}"

    @property
    def provider_udp(self) -> int:
        return self.config.sip.provider_face.udp_port

    # -- instances ----------------------------------------------------------------------

    async def create_instance(self, user: str, transport: str = "udp", wait: bool = True,
                              tokens: tuple[str, str] | None = None) -> dict:
        voip, alert = tokens or (secrets.token_hex(32), secrets.token_hex(32))
        self.apns.register(voip, BUNDLE + ".voip")
        self.apns.register(alert, BUNDLE)
        body = {
            "app_id": "demo", "device_id": f"phone-{user}-{secrets.token_hex(3)}",
            "account": {"aor": f"sip:{user}@{self.kam.domain}", "auth_username": user,
                        "password": self.kam.password(user),
                        "registrar": f"sip:127.0.0.1:{self.kam.port(transport)};transport={transport}",
                        "expires": 600},
            "push": [{"provider": "apns", "usage": "call", "token": voip},
                     {"provider": "apns", "usage": "other", "token": alert}],
        }
        async with self.session.post(f"{self.base}/instances", json=body,
                                     headers={"Authorization": f"Bearer {APP_KEY}"}) as resp:
            assert resp.status == 201, await resp.text()
            instance = await resp.json()
        instance.update(voip=voip, alert=alert, user=user)
        if wait:
            await self.wait_registered(instance)
        return instance

    async def api(self, method: str, instance: dict, path: str = "", json=None) -> tuple[int, dict | None]:
        headers = {"Authorization": f"Bearer {instance['secret']}"}
        async with self.session.request(method, f"{self.base}/instances/{instance['id']}{path}",
                                        json=json, headers=headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, body

    async def wait_registered(self, instance: dict, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.api("GET", instance)
            if status == 200 and body["state"] == "registered":
                return
            assert time.monotonic() < deadline, f"not registered: {body}"
            await asyncio.sleep(0.05)

    # -- pushes -------------------------------------------------------------------------

    def pushes(self, kind: str | None = None, instance: dict | None = None) -> list[dict]:
        """Payloads the emulator accepted, oldest first (the gateway's part of the body)."""
        out = []
        for received in self.apns.delivered():
            payload = msgspec.json.decode(received.body)["gateway"]
            if kind is not None and payload["type"] != kind:
                continue
            if instance is not None and payload["instance"] != instance["id"]:
                continue
            out.append(dict(payload, _token=received.token, _push_type=received.headers.get("apns-push-type")))
        return out

    async def wait_push(self, kind: str, instance: dict | None = None, count: int = 1,
                        timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.pushes(kind, instance)
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"no {kind} push; have {self.pushes()}"
            await asyncio.sleep(0.02)
