"""A real Prometheus scrapes the running gateway's admin listener; PromQL over its HTTP API
sees the series the gateway exposes, with the values it has."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from gateway import metrics
from tests.support.prometheus import Prometheus, prometheus_binary

from .harness import APP_KEY

pytestmark = pytest.mark.slow


@pytest.fixture
def prometheus_installed():
    if prometheus_binary() is None:
        message = "prometheus is not installed (apt-get install prometheus; tests/apt-packages.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def settle(prom: Prometheus, promql: str, want, timeout: float = 20.0) -> list[dict]:
    """Query until `want(result)` holds (a few scrapes), else fail showing the last result."""
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = await prom.query(promql)
        if want(result):
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"{promql}: got {result}\n{prom.log_tail()}")


def values(result: list[dict], label: str) -> dict[str, float]:
    return {item["metric"].get(label, ""): float(item["value"][1]) for item in result}


def p99_bucket(timing: metrics.Timing, key: tuple) -> tuple[float, float]:
    """(lower, upper) bound of the bucket of `timing`'s series `key` that holds its 99th
    percentile, from the process's own counts."""
    counts = timing.series[key][:-1]
    edges = (0.0, *timing.bounds, float("inf"))
    rank, running = 0.99 * sum(counts), 0
    for index, n in enumerate(counts):
        running += n
        if running >= rank:
            return edges[index], edges[index + 1]
    raise AssertionError(f"{timing.name}{key}: nothing observed")


async def test_prometheus_scrapes_the_gateway(prometheus_installed, running, tmp_path):
    body = {"app_id": "demo", "device_id": "scraped",
            "account": {"aor": "sip:dave@example.com", "auth_username": "dave", "password": "pw-0123456789",
                        "registrar": "sip:example.com"},
            "push": [{"provider": "apns", "usage": "call", "token": "cd" * 32, "environment": "sandbox"}]}
    resp = await running.api.post("/v1/instances", json=body, headers={"Authorization": f"Bearer {APP_KEY}"})
    assert resp.status == 201
    instance_id = (await resp.json())["id"]
    await running.gateway.instances.set_state(instance_id, "registered")
    for _ in range(3):
        metrics.push_result("fcm", "message", "rejected", 0.02)
    rejected = metrics.PUSHES.values[("fcm", "message", "rejected")]

    host, port = running.gateway.addresses["admin"]
    prom = Prometheus(tmp_path / "prometheus", [f"{host}:{port}"], interval=0.25)
    # start() polls with blocking calls: run it off the loop, which must keep serving scrapes
    await asyncio.to_thread(prom.start)
    try:
        up = await settle(prom, 'up{job="gateway"}', lambda r: values(r, "job").get("gateway") == 1.0)
        assert up[0]["metric"]["instance"] == f"{host}:{port}"
        states = await settle(prom, "sum by (state) (sippush_instances)",
                              lambda r: values(r, "state").get("registered") == 1.0)
        assert values(states, "state") == {"idle": 0, "registering": 0, "registered": 1, "error": 0,
                                           "unauthorized": 0, "off": 0}
        # one series per (provider, kind, outcome): other tests of the process may have
        # counted other kinds already, so the series is picked by its labels
        pushes = await settle(prom, 'sippush_pushes_total{provider="fcm",kind="message",'
                              'outcome="rejected"} > 0', lambda r: len(r) == 1)
        assert float(pushes[0]["value"][1]) == rejected
        info = await settle(prom, "sippush_build_info", lambda r: len(r) == 1)
        assert info[0]["metric"]["version"] == metrics.build()["version"]
        # a histogram Prometheus can compute a quantile from
        p99 = await settle(prom, 'histogram_quantile(0.99, sum by (le) (sippush_push_duration_seconds_bucket{provider="fcm"}))',
                           lambda r: len(r) == 1)
        # within the bucket holding the 99th percentile of what this process observed
        # (alone, this test's three 20 ms pushes: 10-25 ms; after other tests' pushes, theirs too)
        assert p99_bucket(metrics.PUSH_DURATION, ("fcm",))[0] <= float(p99[0]["value"][1]) \
            <= p99_bucket(metrics.PUSH_DURATION, ("fcm",))[1]
    finally:
        await asyncio.to_thread(prom.stop)
