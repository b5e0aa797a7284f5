"""Fixtures for the device API tests (see harness.py)."""

import pytest

from .harness import make_config, start_gateway, stop_gateway


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
async def gw(config):
    gateway = await start_gateway(config)
    yield gateway
    await stop_gateway(gateway)
