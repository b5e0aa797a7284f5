"""The device API on a real listener: HTTPS with a configured certificate, and the rules
for plain HTTP."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import msgspec
import pytest
import trustme

from gateway.api.device import create_device_api, start_device_api
from gateway.tls import server_context as server_ssl_context
from gateway.config import parse
from gateway.errors import ConfigError
from gateway.instances import InstanceService
from gateway.store import open_store
from gateway.timers import TimerWheel

from .harness import app_auth, create_body, make_config


@pytest.fixture
async def service(tmp_path):
    config = make_config(tmp_path)
    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    wheel = TimerWheel(asyncio.get_running_loop())
    service = InstanceService(config, store, wheel)
    yield service
    await service.stop()
    await store.close()
    wheel.close()


def port_of(runner) -> int:
    return runner.addresses[0][1]


async def test_https_with_the_configured_certificate(service, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "api.pem", tmp_path / "api.key"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    config = service.config
    runner = await start_device_api(
        config, create_device_api(config, service), server_ssl_context(str(cert_file), str(key_file))
    )
    base = f"https://127.0.0.1:{port_of(runner)}"
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/v1/instances", json=create_body(), headers=app_auth(),
                                    ssl=client_ctx) as resp:
                assert resp.status == 201
                inst = await resp.json()
            async with session.get(f"{base}/v1/instances/{inst['id']}", ssl=client_ctx,
                                   headers={"Authorization": f"Bearer {inst['secret']}"}) as resp:
                assert resp.status == 200 and (await resp.json())["state"] == "idle"
            # a client that does not trust the certificate does not get through
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{base}/v1/openapi.json")
            # nor does plain HTTP on the HTTPS port
            try:
                async with session.get(f"http://127.0.0.1:{port_of(runner)}/v1/openapi.json") as resp:
                    status = resp.status
            except aiohttp.ClientError:
                status = None
            assert status != 200
    finally:
        await runner.cleanup()


async def test_plain_http_only_on_loopback_when_enabled(service, tmp_path):
    config = service.config  # loopback, plain_http = true
    runner = await start_device_api(config, create_device_api(config, service), None)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port_of(runner)}/v1/openapi.json") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()

    off = msgspec.structs.replace(
        config, device_api=msgspec.structs.replace(config.device_api, plain_http=False)
    )
    with pytest.raises(ConfigError, match="plain HTTP needs plain_http = true and a loopback host"):
        await start_device_api(off, create_device_api(off, service), None)
    # and the config itself refuses plain HTTP on a public address
    with pytest.raises(ConfigError, match="plain_http is only allowed when host is a loopback"):
        parse('[device_api]\nhost = "0.0.0.0"\nplain_http = true\n')


def test_bad_certificate_files_are_a_config_error(tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        server_ssl_context(str(tmp_path / "junk.pem"), str(tmp_path / "junk.pem"))
