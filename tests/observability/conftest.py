"""Fixtures for the observability tests (see harness.py)."""

import pytest

from tests.support.sipstack import make_stack  # noqa: F401 - fixture

from .harness import make_config, start, stop


@pytest.fixture
async def running(tmp_path):
    gw = await start(make_config(tmp_path))
    yield gw
    await stop(gw)
