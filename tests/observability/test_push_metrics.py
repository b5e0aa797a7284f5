"""The push service records its deliveries in `gateway.metrics`: against the APNs
emulator over real HTTP/2 (the push tests' environment), each delivery moves the
per-provider counters and the duration histogram by exactly what happened."""

from __future__ import annotations

from gateway import metrics
from gateway.push import payloads
from gateway.push.base import Outcome
from tests.push.conftest import (  # noqa: F401 - fixtures
    BUNDLE,
    apns,
    apns_credentials,
    apns_key,
    ca,
    ca_file,
    clock,
    fcm,
    fcm_credentials,
    service_account_file,
    service_account_key,
    webpush,
    webpush_credentials,
)
from tests.push.test_service import VOIP, apns_target, env, make_env  # noqa: F401 - fixtures


def counts() -> dict:
    return {
        "delivered": metrics.PUSHES.values[("apns", "call", "delivered")],
        "dead": metrics.PUSHES.values[("apns", "call", "dead_target")],
        "attempts": metrics.PUSH_ATTEMPTS.values[("apns",)],
        "retries": metrics.PUSH_RETRIES.values[("apns",)],
        "timed": metrics.PUSH_DURATION.count(("apns",)),
    }


def moved(before: dict) -> dict:
    return {key: value - before[key] for key, value in counts().items()}


async def test_a_retried_delivery(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, (503, "ServiceUnavailable"), (500, "InternalServerError"))
    record = await env.create(apns_target(VOIP))
    before = counts()
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.delivered and delivery.attempts == 3
    assert moved(before) == {"delivered": 1, "dead": 0, "attempts": 3, "retries": 2, "timed": 1}


async def test_a_dead_target(env):
    record = await env.create(apns_target("bb" * 32))  # never registered: Unregistered
    before = counts()
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.result.outcome == "dead_target"
    assert moved(before) == {"delivered": 0, "dead": 1, "attempts": 1, "retries": 0, "timed": 1}


def test_label_sets_match_the_push_layer():
    """A new payload kind or outcome must be added to the metrics' fixed sets too."""
    kinds = {cls.__struct_config__.tag for cls in vars(payloads).values()
             if isinstance(cls, type) and issubclass(cls, payloads._Payload) and cls is not payloads._Payload}
    assert kinds == set(metrics.PUSH_KINDS)
    assert set(Outcome.__args__) == set(metrics.PUSH_OUTCOMES)
