"""The gateway under observation: the real `Gateway` (store, timer wheel, lifecycle, device
API over plain HTTP and the admin listener, all on loopback ports), clients for both
listeners, and `/metrics` read with prometheus-client's own parser.

This gateway has no provider to register with; the scripted lifecycle with every part
real (Kamailio, registration client, calls, messages, APNs emulator) runs on
`tests/support/testbed.py` instead (test_lifecycle_metrics.py)."""

from __future__ import annotations

import aiohttp
import trustme
from prometheus_client.parser import text_string_to_metric_families

from gateway import config as gwconfig
from gateway.app import Gateway

APP_KEY = "observability-key-0123456789"
ADMIN_TOKEN = "admin-token-0123456789abcdef"

CONFIG = """
state_dir = "{tmp}/state"
[device_api]
host = "127.0.0.1"
port = 0
plain_http = true
[admin]
host = "127.0.0.1"
port = 0
bearer_token_file = "{token_file}"
[sip.device_face]
udp_port = 0
tcp_port = 0
tls_port = 0
[store]
path = "{tmp}/state/gw.db"
key_file = "{tmp}/state/store.key"
[[apps]]
id = "demo"
api_key_hashes = ["{key_hash}"]
[apps.apns]
topic = "net.example.phone"
cert_file = "{tmp}/apns.pem"
[apps.webpush]
vapid_key_file = "{tmp}/state/vapid.pem"
# No registrar here: the registration client stays off, and the provider face listens on
# ephemeral ports (no fixed 5060/5061 in tests).
[sip.provider_face]
udp_port = 0
tcp_port = 0
tls_port = 0
[sip.registration]
enabled = false
"""


def make_config(tmp_path, *, token: bool = True) -> gwconfig.Config:
    """The app pushes to APNs with a client certificate the push service loads but never uses."""
    identity = trustme.CA().issue_cert("apns-client.test")
    identity.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "apns.pem"))
    token_file = ""
    if token:
        token_file = tmp_path / "admin.token"
        token_file.write_text(ADMIN_TOKEN + "\n")
    text = CONFIG.format(tmp=tmp_path, token_file=token_file, key_hash=gwconfig.api_key_hash(APP_KEY))
    return gwconfig.parse(text, "observability.toml")


class Running:
    """One started gateway and HTTP clients for its two listeners."""

    def __init__(self, gateway: Gateway, api: aiohttp.ClientSession, admin: aiohttp.ClientSession):
        self.gateway = gateway
        self.api = api
        self.admin = admin

    async def scrape(self) -> dict[tuple, float]:
        """/metrics as {(sample name, ((label, value), ...)): value}, parsed by prometheus-client."""
        resp = await self.admin.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(await resp.text())


def samples(text: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def start(config) -> Running:
    gateway = Gateway(config)
    await gateway.start()
    api_host, api_port = gateway.addresses["device_api"]
    admin_host, admin_port = gateway.addresses["admin"]
    api = aiohttp.ClientSession(base_url=f"http://{api_host}:{api_port}")
    admin = aiohttp.ClientSession(base_url=f"http://{admin_host}:{admin_port}")
    return Running(gateway, api, admin)


async def stop(running: Running) -> None:
    await running.api.close()
    await running.admin.close()
    await running.gateway.stop()

