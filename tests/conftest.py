"""Shared test setup: every asyncio test runs on uvloop, as the gateway does."""

import asyncio

import pytest
import uvloop


@pytest.fixture(scope="session")
def event_loop_policy():
    return uvloop.EventLoopPolicy()


def pytest_report_header(config):
    import gateway._accel as accel

    return f"gateway extensions forced off: {accel.FORCE_PYTHON}; asyncio {asyncio.__name__}"
