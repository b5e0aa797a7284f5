"""Shared test setup: every asyncio test runs on uvloop, as the gateway does."""

import uvloop


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


def pytest_report_header(config):
    import gateway._accel as accel

    return f"gateway extensions forced off (GATEWAY_NO_EXTENSIONS): {accel.FORCE_PYTHON}"
