"""The real `sip-push-gateway run` process serves the admin listener: health, readiness and
metrics answer as soon as it logs "gateway ready", and /about works without a token file."""

from __future__ import annotations

import re

import aiohttp

from tests.support.gateway_process import GatewayProcess, write_config

from .harness import samples


async def test_the_running_process_serves_the_admin_listener(tmp_path):
    config = write_config(tmp_path)
    admin_port = int(re.search(r"\[admin\]\nhost = \"127.0.0.1\"\nport = (\d+)", config.read_text())[1])
    process = GatewayProcess(config)
    process.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{admin_port}") as admin:
            assert (await admin.get("/healthz")).status == 200
            ready = await admin.get("/readyz")
            assert ready.status == 200, await ready.text()
            found = samples(await (await admin.get("/metrics")).text())
            assert found[("sippush_instances", (("state", "idle"),))] == 0
            assert any(name == "process_resident_memory_bytes" for name, _ in found)
            about = await (await admin.get("/about")).json()
            assert about["name"] == "sip-push-gateway"
    finally:
        assert process.stop() == 0
    assert "admin listening" in process.log()
