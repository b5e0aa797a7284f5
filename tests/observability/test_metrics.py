"""The metrics module on its own: recorders, folding network values into fixed label sets,
the exposition prometheus-client produces from them, instances by state, the probes."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from prometheus_client import generate_latest

from gateway import metrics
from gateway.timers import TimerWheel

from .harness import samples


def scrape(registry) -> dict:
    return samples(generate_latest(registry).decode())


def test_every_metric_is_named_the_prometheus_way():
    names = [r.name for r in metrics.RECORDERS]
    assert len(names) == len(set(names))
    for recorder in metrics.RECORDERS:
        assert recorder.name.startswith("sippush_")
        if isinstance(recorder, metrics.Tally):
            assert recorder.name.endswith("_total")
        else:
            assert recorder.name.endswith("_seconds")
            assert "_total" not in recorder.name


def test_tally_and_timing():
    tally = metrics.Tally("test_things_total", "things", ("kind",), (("a", "b"),))
    metrics.RECORDERS.remove(tally)
    tally.inc(("a",))
    tally.inc(("a",), 2)
    assert tally.values == {("a",): 3, ("b",): 0}
    assert tally.total(kind="a") == 3 and tally.total() == 3
    with pytest.raises(ValueError, match="sippush_test_things_total: .*'c'"):
        tally.inc(("c",))
    timing = metrics.Timing("test_wait_seconds", "wait", (0.1, 1.0))
    metrics.RECORDERS.remove(timing)
    for value in (0.05, 0.1, 0.5, 3.0, -1.0, math.nan):
        timing.observe(value)
    # 0.1 belongs to le="0.1"; a negative or NaN duration counts as 0
    assert timing.series[()] == [4, 1, 1, 3.65]
    assert timing.count() == 6
    family = timing.family()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 4, "1.0": 5, "+Inf": 6}
    with pytest.raises(ValueError, match="increase"):
        metrics.Timing("test_bad_seconds", "bad", (1.0, 0.5))


def test_counts_kept_elsewhere_are_added_before_any_read(monkeypatch):
    """A hot path may count on its own (the compiled REGISTER wire does) and add its
    counts when the recorders are read: every way of reading sees them."""
    tally = metrics.Tally("test_kept_total", "kept", ("kind",), (("a", "b"),))
    timing = metrics.Timing("test_kept_seconds", "kept", (0.1, 1.0))
    metrics.RECORDERS.remove(tally)
    metrics.RECORDERS.remove(timing)
    kept = {"a": 0, "waits": []}

    def add_counts():
        tally.inc(("a",), kept["a"])
        for wait in kept["waits"]:
            timing.observe(wait)
        kept["a"], kept["waits"] = 0, []

    monkeypatch.setattr(metrics, "_ON_READ", [])
    metrics.on_read(add_counts)
    kept["a"] = 2
    assert tally.values[("a",)] == 2
    kept["a"] = 3
    assert tally.total(kind="a") == 5
    kept["a"] = 1
    assert {s.labels["kind"]: s.value for s in tally.family().samples} == {"a": 6, "b": 0}
    kept["waits"] = [0.5]
    assert timing.count() == 1
    kept["waits"] = [2.0]
    assert timing.series[()] == [0, 1, 1, 2.5]
    kept["waits"] = [0.05]
    family = timing.family()
    assert [s.value for s in family.samples if s.name.endswith("_count")] == [3]


def test_network_values_fold_into_the_fixed_sets():
    req, resp = metrics.SIP_REQUESTS.values, metrics.SIP_RESPONSES.values
    before = dict(req), dict(resp)
    metrics.sip_request("in", "udp", "FROBNICATE-alice@example.com")
    metrics.sip_response("in", "udp", 999)
    metrics.sip_response("in", "udp", 0)
    metrics.sip_sent("tls", b"INVITE sip:bob@example.com SIP/2.0\r\n")
    metrics.sip_sent("tls", b"X-ATTACKER-METHOD sip:x SIP/2.0\r\n")
    metrics.sip_sent("tls", b"garbage-without-space")
    metrics.sip_sent("tls", b"SIP/2.0 486 Busy Here\r\n")
    metrics.sip_sent("tls", b"SIP/2.0 9")
    assert req[("in", "udp", "other")] - before[0][("in", "udp", "other")] == 1
    assert resp[("in", "udp", "other")] - before[1][("in", "udp", "other")] == 2
    assert req[("out", "tls", "INVITE")] - before[0][("out", "tls", "INVITE")] == 1
    assert req[("out", "tls", "other")] - before[0][("out", "tls", "other")] == 2
    assert resp[("out", "tls", "4xx")] - before[1][("out", "tls", "4xx")] == 1
    assert resp[("out", "tls", "other")] - before[1][("out", "tls", "other")] == 1
    assert set(req) == set(before[0]) and set(resp) == set(before[1])  # no new series


def test_outcomes_outside_the_fixed_sets_are_refused():
    with pytest.raises(ValueError):
        metrics.push_result("pigeon", "call", "delivered")
    with pytest.raises(ValueError):
        metrics.call_ended("sip:alice@example.com")
    with pytest.raises(ValueError):
        metrics.registration_result("maybe")


class Event:
    def __init__(self, kind, instance_id, state=None):
        self.kind = kind
        self.instance_id = instance_id
        self.record = None if state is None else Record(instance_id, state)


class Record:
    def __init__(self, instance_id, state):
        self.id = instance_id
        self.state = state


def test_instance_states_follow_the_events():
    states = metrics.InstanceStates()
    states.load([Record("a", "registered"), Record("b", "idle")])
    for event in (Event("created", "c", "idle"), Event("state_changed", "c", "registering"),
                  Event("state_changed", "c", "registered"), Event("mode_changed", "a", "off"),
                  Event("updated", "a", "off"), Event("erased", "b"), Event("erased", "b"),
                  Event("erased", "never-seen")):
        states.on_event(event)
    assert states.total == 2
    assert states.counts == {"idle": 0, "registering": 0, "registered": 1, "error": 0, "unauthorized": 0, "off": 1}
    registry = metrics.create_registry(states)
    found = scrape(registry)
    assert found[("sippush_instances", (("state", "registered"),))] == 1
    assert found[("sippush_instances", (("state", "idle"),))] == 0
    with pytest.raises(ValueError, match="unknown instance state"):
        states.on_event(Event("state_changed", "c", "confused"))


def test_registry_has_process_and_build_metrics():
    found = scrape(metrics.create_registry())
    names = {name for name, _ in found}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info",
            "sippush_build_info", "sippush_sip_flows_open"} <= names
    build = next(labels for name, labels in found if name == "sippush_build_info")
    assert dict(build)["accelerated"] in ("true", "false")
    assert dict(build)["accelerated"] == str(metrics.build()["accelerated"]).lower()
    assert "sippush_instances" not in names  # no lifecycle given: no made-up zeros


async def test_probe_sees_a_blocked_loop_and_a_late_wheel():
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop)
    probe = metrics.LoopProbe(loop, wheel, interval=0.05)
    lag_before = metrics.LOOP_LAG.series[()][:]
    late_before = metrics.TIMER_LATENESS.series[()][:]
    probe.start()
    try:
        await asyncio.sleep(0.02)
        time.sleep(0.3)  # block the loop: both probe timers come due while it is blocked
        await asyncio.sleep(0.12)
    finally:
        probe.stop()
        wheel.close()
    lag = [a - b for a, b in zip(metrics.LOOP_LAG.series[()], lag_before)]
    late = [a - b for a, b in zip(metrics.TIMER_LATENESS.series[()], late_before)]
    assert sum(lag[:-1]) >= 2 and sum(late[:-1]) >= 2
    assert lag[-1] >= 0.2 and late[-1] >= 0.2  # the sums hold the blocked time
    # the long one is in a bucket above 0.1 s
    over = metrics.LAG_BUCKETS.index(0.25)
    assert sum(lag[over:-1]) >= 1 and sum(late[over:-1]) >= 1
    registry = metrics.create_registry(wheel=None)
    assert ("sippush_event_loop_lag_seconds_count", ()) in scrape(registry)


async def test_wheel_size_is_read_at_scrape_time():
    wheel = TimerWheel(asyncio.get_running_loop())
    try:
        handles = [wheel.call_later(60, lambda arg: None) for _ in range(3)]
        registry = metrics.create_registry(wheel=wheel)
        assert scrape(registry)[("sippush_timer_wheel_timers", ())] == 3
        handles[0].cancel()
        assert scrape(registry)[("sippush_timer_wheel_timers", ())] == 2
    finally:
        wheel.close()


def test_the_operator_doc_lists_every_metric():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "observability.md").read_text()
    for name in [r.name for r in metrics.RECORDERS] + ["sippush_build_info", "sippush_instances",
                                                       "sippush_timer_wheel_timers", "sippush_sip_flows_open"]:
        assert f"`{name}`" in doc, name
