"""Create-instance requests per second through the real HTTP stack, against a trivial
aiohttp endpoint measured in the same run.

Both servers run on uvloop on a loopback port, with the same aiohttp client, the same body
and the same concurrency (CONCURRENCY requests in flight, BATCH per round). The trivial
endpoint reads the body and answers 201 with a small JSON: what is left is the gateway's
own work per create (auth, decode and validation, AES-GCM sealing, hashes, the store's
batched durable write, the expiry timer, the answer). The ratio is create rate / trivial
rate (1.0 would mean the gateway adds nothing).

    make bench   (or: python -m pytest bench/test_api_http.py --benchmark-only)
"""

import asyncio
import itertools
import json

import aiohttp
import pytest
import uvloop
from aiohttp import web
from conftest import measure, median_seconds

from gateway import config as gwconfig
from gateway.api.device import create_device_api
from gateway.instances import InstanceService
from gateway.store import open_store
from gateway.timers import TimerWheel

BATCH = 200
CONCURRENCY = 16
KEY = "bench-key-0123456789abcdef"

CONFIG = """
[device_api]
host = "127.0.0.1"
plain_http = true
rate_per_app = 1000000.0
rate_burst = 1000000
[store]
path = "{tmp}/bench.db"
key_file = "{tmp}/bench.key"
[[apps]]
id = "bench"
api_key_hashes = ["{hash}"]
[apps.fcm]
service_account_file = "{tmp}/fcm.json"
"""

_serial = itertools.count()


def body() -> bytes:
    return json.dumps({
        "app_id": "bench",
        "device_id": f"device-{next(_serial)}",
        "account": {"aor": "sip:alice@example.com", "auth_username": "alice",
                    "password": "correct horse battery staple",
                    "registrar": "sip:example.com;transport=tls"},
        "push": [{"provider": "fcm", "token": "f" * 152}],
    }).encode()


async def trivial(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=201, body=b'{"id": "x"}', content_type="application/json")


class Stack:
    """Both servers and one client session on a private uvloop loop."""

    def __init__(self, tmp):
        self.loop = uvloop.new_event_loop()
        self.tmp = tmp
        self.loop.run_until_complete(self._start())

    async def _start(self):
        config = gwconfig.parse(CONFIG.format(tmp=self.tmp, hash=gwconfig.api_key_hash(KEY)))
        self.store = open_store(config.store.path, config.store.key_file)
        await self.store.open()
        self.wheel = TimerWheel(asyncio.get_running_loop())
        self.service = InstanceService(config, self.store, self.wheel)
        baseline = web.Application()
        baseline.router.add_post("/v1/instances", trivial)
        self.runners = []
        self.urls = {}
        for name, app in (("gateway", create_device_api(config, self.service)), ("trivial", baseline)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.runners.append(runner)
            self.urls[name] = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/instances"
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        self.session = aiohttp.ClientSession(connector=connector)

    async def _batch(self, name: str):
        url = self.urls[name]
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        bodies = [body() for _ in range(BATCH)]

        async def worker(mine):
            for data in mine:
                async with self.session.post(url, data=data, headers=headers) as resp:
                    assert resp.status == 201, await resp.text()
                    await resp.read()

        await asyncio.gather(*(worker(bodies[i::CONCURRENCY]) for i in range(CONCURRENCY)))

    def batch(self, name: str):
        self.loop.run_until_complete(self._batch(name))

    def close(self):
        async def stop():
            await self.session.close()
            for runner in self.runners:
                await runner.cleanup()
            await self.service.stop()
            await self.store.close()
            self.wheel.close()

        self.loop.run_until_complete(stop())
        self.loop.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("bench-api"))
    yield s
    s.close()


@pytest.mark.benchmark(group="api-create-http")
def test_trivial_aiohttp_endpoint(benchmark, stack, baselines):
    benchmark.pedantic(stack.batch, args=("trivial",), rounds=5, warmup_rounds=1)
    baselines["http"] = median_seconds(benchmark)
    benchmark.extra_info["requests_per_second"] = round(BATCH / baselines["http"])


@pytest.mark.benchmark(group="api-create-http")
def test_create_instance(benchmark, stack, baselines):
    benchmark.pedantic(stack.batch, args=("gateway",), rounds=5, warmup_rounds=1)
    seconds = median_seconds(benchmark)
    if "http" not in baselines:  # run alone: measure the baseline here
        baselines["http"] = measure(lambda: stack.batch("trivial"), rounds=5)
    benchmark.extra_info["requests_per_second"] = round(BATCH / seconds)
    benchmark.extra_info["ratio_vs_trivial_endpoint"] = round(baselines["http"] / seconds, 3)
