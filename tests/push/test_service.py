"""PushService end to end: the three emulators, the real instance lifecycle (InstanceService
on SQLite and the timer wheel) for dead targets and the off state, retries and their
limits, auth renewal and alerts, in-flight limits, target selection and the iOS rule."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from gateway.config import App, Config, Push, Store
from gateway.instances import InstanceService
from gateway.push import LifecycleOutcomes, PushService
from gateway.push.payloads import MessagePush, MissedCallPush
from gateway.store import open_store
from gateway.store.records import PushTarget
from gateway.timers import TimerWheel

from .conftest import BUNDLE, call_payload

VOIP = "aa" * 32
ALERT = "bb" * 32
FCM_TOKEN = "fcm-token-" + "f" * 100


class Env:
    """The pieces of one test: emulators, lifecycle, push service, and what they saw."""

    def __init__(self, apns, fcm, webpush, clock):
        self.apns, self.fcm, self.webpush, self.clock = apns, fcm, webpush, clock
        self.events = []
        self.alerts = []
        self.sleeps = []

    async def sleep(self, delay):
        self.sleeps.append(delay)
        self.clock.advance(delay)
        await asyncio.sleep(0)

    async def create(self, *targets):
        record, _ = await self.instances.create(
            self.app,
            device_id=f"phone-{len(self.events)}-{time.monotonic_ns()}",
            aor="sip:alice@example.com",
            auth_username="alice",
            password="pw",
            registrar="sip:example.com",
            push=list(targets),
        )
        return record

    def call(self, seconds=60, **fields):
        return call_payload(self.clock() + seconds, **fields)


@pytest.fixture
def make_env(apns, fcm, webpush, apns_credentials, fcm_credentials, webpush_credentials, ca_file, clock, tmp_path):
    made = []  # only counts, for distinct database files

    async def make(clock_source=None, **push):
        clock_now = clock_source or clock
        env = Env(apns, fcm, webpush, clock)
        env.app = App(
            id="demo",
            api_key_hashes=["sha256:" + "0" * 64],
            apns=apns_credentials,
            fcm=fcm_credentials,
            webpush=webpush_credentials,
            message_body_in_push=push.pop("message_body_in_push", False),
        )
        config = Config(
            apps=[env.app],
            push=Push(tls_ca_file=ca_file, **push),
            store=Store(path=str(tmp_path / f"db{len(made)}.sqlite"), key_file=str(tmp_path / "store.key")),
        )
        env.store = open_store(config.store.path, config.store.key_file)
        await env.store.open()
        env.wheel = TimerWheel(clock=clock_now)
        env.instances = InstanceService(config, env.store, env.wheel, clock=clock_now)
        env.instances.subscribe(env.events.append)
        await env.instances.start()
        outcomes = LifecycleOutcomes(env.instances, alert=lambda *a: env.alerts.append(a))
        env.push = PushService(config, outcomes, clock=clock_now, sleep=env.sleep, jitter=lambda: 0.5)
        made.append(env)
        return env

    return make  # each test closes what it made (see `close`)


@pytest.fixture
async def env(make_env):
    env = await make_env()
    yield env
    await close(env)


async def close(env):
    await env.push.close()
    await env.instances.stop()
    await env.store.close()
    env.wheel.close()


def apns_target(token, usage="call", **kw):
    return PushTarget("apns", usage, token=token, **kw)


# --- dead targets and the off state ------------------------------------------------------


async def test_dead_last_call_target_turns_the_instance_off(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.unregistered[VOIP] = 1_700_000_000_000
    record = await env.create(apns_target(VOIP))
    (delivery,) = await env.push.notify(record, env.call())
    assert (delivery.result.outcome, delivery.result.reason) == ("dead_target", "Unregistered")
    stored = await env.store.get_instance(record.id)
    assert stored.push == [] and stored.state == "off" and "no push target" in stored.last_error
    kinds = [e.kind for e in env.events if e.instance_id == record.id]
    assert kinds == ["created", "updated", "state_changed"]


async def test_an_instance_with_another_call_target_stays_on(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.fcm.register(FCM_TOKEN)
    fcm_target = PushTarget("fcm", "call", token=FCM_TOKEN)
    record = await env.create(apns_target("ee" * 32), fcm_target)  # unknown token: BadDeviceToken
    deliveries = await env.push.notify(record, env.call())
    assert sorted(d.result.outcome for d in deliveries) == ["dead_target", "delivered"]
    stored = await env.store.get_instance(record.id)
    assert stored.push == [fcm_target] and stored.state == "idle"


async def test_two_targets_dying_at_once_are_both_removed(env):
    env.fcm.register(FCM_TOKEN)
    env.fcm.unregistered.add(FCM_TOKEN)
    sub = env.webpush.subscribe()
    env.webpush.subscription(sub[0]).gone = 410
    targets = [
        PushTarget("fcm", "call", token=FCM_TOKEN),
        PushTarget("webpush", "call", endpoint=sub[0], p256dh=sub[1], auth=sub[2]),
        apns_target(ALERT, "other"),
    ]
    env.apns.register(ALERT, BUNDLE)
    record = await env.create(*targets)
    deliveries = await env.push.notify(record, env.call())
    assert [d.result.outcome for d in deliveries] == ["dead_target", "dead_target"]
    stored = await env.store.get_instance(record.id)
    assert stored.push == [targets[2]] and stored.state == "off"
    # a late duplicate report changes nothing and emits nothing
    before = len(env.events)
    await env.push.outcomes.on_dead_target(record.id, targets[0], "again")
    assert len(env.events) == before


async def test_dead_target_of_an_erased_instance_is_ignored(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.unregistered[VOIP] = 1
    record = await env.create(apns_target(VOIP))
    await env.instances.erase(record.id)
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.result.outcome == "dead_target"


# --- target selection and the iOS rule ---------------------------------------------------


async def test_ios_rule_calls_to_voip_everything_else_to_the_alert_token(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.register(ALERT, BUNDLE)
    env.fcm.register(FCM_TOKEN)
    record = await env.create(apns_target(VOIP), apns_target(ALERT, "other"), PushTarget("fcm", "call", token=FCM_TOKEN))
    calls = await env.push.notify(record, env.call())
    assert [(d.target.token, d.result.outcome) for d in calls] == [(VOIP, "delivered"), (FCM_TOKEN, "delivered")]
    missed = MissedCallPush(instance=record.id, call_id="c", caller_uri="sip:bob@x", reason="cancelled")
    others = await env.push.notify(record, missed)
    # FCM has no "other" token: its one token serves both; APNs VoIP tokens never get this
    assert [(d.target.token, d.result.outcome) for d in others] == [(ALERT, "delivered"), (FCM_TOKEN, "delivered")]
    push_types = [(r.token, r.headers["apns-push-type"]) for r in env.apns.requests]
    assert push_types == [(VOIP, "voip"), (ALERT, "alert")]
    assert [m["message"]["data"]["type"] for m in env.fcm.delivered()] == ["call", "missed_call"]


async def test_ios_device_with_only_a_voip_token_gets_no_missed_call_push(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    record = await env.create(apns_target(VOIP))
    missed = MissedCallPush(instance=record.id, call_id="c", caller_uri="sip:bob@x", reason="no_answer")
    assert await env.push.notify(record, missed) == []
    assert env.apns.requests == []


@pytest.mark.parametrize("allowed", [False, True])
async def test_message_body_only_when_the_app_allows_it(make_env, allowed):
    env = await make_env(message_body_in_push=allowed)
    try:
        sub = env.webpush.subscribe()
        record = await env.create(PushTarget("webpush", "call", endpoint=sub[0], p256dh=sub[1], auth=sub[2]))
        message = MessagePush(instance=record.id, sender="sip:bob@x", message_id="m1", count=2, body="secret text")
        (delivery,) = await env.push.notify(record, message)
        assert delivery.delivered
        got = msgspec.json.decode(env.webpush.subscription(sub[0]).received[0]["plaintext"])
        assert got.get("body") == ("secret text" if allowed else None)
    finally:
        await close(env)


async def test_a_replaced_config_is_what_the_next_push_follows(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    record = await env.create(apns_target(VOIP))
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.delivered
    env.push.config = msgspec.structs.replace(
        env.push.config, apps=[msgspec.structs.replace(env.app, apns=None)])
    (delivery,) = await env.push.notify(record, env.call())
    assert (delivery.result.outcome, delivery.attempts) == ("rejected", 0)
    env.push.config = msgspec.structs.replace(env.push.config, apps=[])
    assert await env.push.notify(record, env.call()) == []  # an app no longer configured


async def test_target_of_a_provider_the_app_lacks_is_rejected(env):
    env.app = msgspec.structs.replace(env.app, fcm=None)
    env.push.config = msgspec.structs.replace(env.push.config, apps=[env.app])
    record = await env.create(PushTarget("fcm", "call", token=FCM_TOKEN))
    (delivery,) = await env.push.notify(record, env.call())
    assert (delivery.result.outcome, delivery.attempts) == ("rejected", 0)


# --- retries -----------------------------------------------------------------------------


async def test_transient_errors_are_retried_with_backoff(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, (503, "ServiceUnavailable"), (500, "InternalServerError"))
    record = await env.create(apns_target(VOIP))
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.delivered and delivery.attempts == 3
    # backoff 0.5 then 1.0, each with jitter in [half, full]: 0.5 -> 0.375, 1.0 -> 0.75
    assert env.sleeps == [0.375, 0.75]
    assert env.push.counters[("demo", "apns", "retries")] == 2


async def test_retry_after_is_honoured(env):
    env.fcm.register(FCM_TOKEN)
    env.fcm.script(FCM_TOKEN, (429, "QUOTA_EXCEEDED", {"Retry-After": "7"}))
    record = await env.create(PushTarget("fcm", "call", token=FCM_TOKEN))
    (delivery,) = await env.push.notify(record, env.call(60))
    assert delivery.delivered and env.sleeps == [7.0]


async def test_retries_stop_at_max_attempts(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, *[(500, "InternalServerError")] * 10)
    record = await env.create(apns_target(VOIP))
    (delivery,) = await env.push.notify(record, env.call(3600))
    assert (delivery.result.outcome, delivery.attempts) == ("retry_later", 5)
    assert len(env.sleeps) == 4 and sum(1 for r in env.apns.requests if r.token == VOIP) == 5


async def test_retries_never_go_past_the_notifications_useful_life(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, (429, "TooManyRequests", {"retry-after": "30"}))
    record = await env.create(apns_target(VOIP))
    (delivery,) = await env.push.notify(record, env.call(10))  # the call rings for 10 s
    assert (delivery.result.outcome, delivery.attempts, env.sleeps) == ("expired", 1, [])
    # with backoff: the call ends after 1 s, the second retry would be past it
    env.apns.script(VOIP, *[(503, "ServiceUnavailable")] * 5)
    (delivery,) = await env.push.notify(record, env.call(1.0))
    assert (delivery.result.outcome, delivery.attempts) == ("expired", 2)
    assert env.sleeps == [0.375]


async def test_a_dropped_connection_is_retried_on_a_new_one(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    record = await env.create(apns_target(VOIP))
    assert (await env.push.notify(record, env.call()))[0].delivered
    env.apns.hold = asyncio.Event()
    task = asyncio.ensure_future(env.push.notify(record, env.call()))
    while env.apns.in_flight < 1:
        await asyncio.sleep(0.01)
    env.apns.drop_connections()
    env.apns.hold.set()
    env.apns.hold = None
    (delivery,) = await task
    assert delivery.delivered and delivery.attempts == 2 and len(env.apns.connections) == 2


# --- auth --------------------------------------------------------------------------------


async def test_auth_failure_renews_once_and_the_retry_succeeds(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, (403, "ExpiredProviderToken"))
    record = await env.create(apns_target(VOIP))
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.delivered and delivery.attempts == 2
    provider = env.push.provider(env.app, "apns")
    assert provider.token.minted == 2 and env.alerts == []
    assert env.push.counters[("demo", "apns", "renewals")] == 1


async def test_auth_refused_after_renewal_raises_one_operator_alert(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.register(ALERT, BUNDLE)
    env.apns.clock = lambda: env.clock() + 7200  # every token we make looks two hours old
    records = [await env.create(apns_target(VOIP), apns_target(ALERT, "other")) for _ in range(5)]
    results = await asyncio.gather(*(env.push.notify(r, env.call()) for r in records))
    outcomes = {d.result.outcome for deliveries in results for d in deliveries}
    assert outcomes == {"auth_failed"}
    assert env.push.counters[("demo", "apns", "renewals")] == 1  # one renewal for the wave
    assert env.alerts == [("demo", "apns", "ExpiredProviderToken")]  # and one alert
    assert env.push.counters[("demo", "apns", "alerts")] == 1
    for record in records:  # the targets are fine: nothing removed
        assert len((await env.store.get_instance(record.id)).push) == 2


async def test_fcm_revoked_access_token_is_renewed(env):
    env.fcm.register(FCM_TOKEN)
    record = await env.create(PushTarget("fcm", "call", token=FCM_TOKEN))
    assert (await env.push.notify(record, env.call()))[0].delivered
    env.fcm.issued.clear()
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.delivered and delivery.attempts == 2 and env.fcm.token_requests == 2


# --- in-flight limits --------------------------------------------------------------------


async def test_requests_in_flight_are_limited_per_app_and_provider(make_env):
    env = await make_env(max_in_flight=3)
    try:
        tokens = [f"{i:02x}" * 32 for i in range(10)]
        for token in tokens:
            env.apns.register(token, BUNDLE + ".voip")
        record = await env.create(*[apns_target(t) for t in tokens])
        assert (await env.push.notify(record, env.call()))  # lift the one-stream start limit
        env.apns.max_in_flight = 0
        env.apns.hold = asyncio.Event()
        task = asyncio.ensure_future(env.push.notify(record, env.call()))
        while env.apns.in_flight < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        limit = env.push.limit("demo", "apns")
        assert (env.apns.in_flight, limit.in_flight, limit.waiting) == (3, 3, 7)
        env.apns.hold.set()
        env.apns.hold = None
        assert all(d.delivered for d in await task)
        assert env.apns.max_in_flight == 3 and limit.peak == 3
    finally:
        await close(env)


async def test_beyond_max_waiting_a_send_fails_at_once(make_env):
    env = await make_env(max_in_flight=1, max_waiting=1)
    try:
        tokens = [f"{i:02x}" * 32 for i in range(3)]
        for token in tokens:
            env.apns.register(token, BUNDLE + ".voip")
        env.apns.hold = asyncio.Event()
        records = [await env.create(apns_target(t)) for t in tokens]
        tasks = [asyncio.ensure_future(env.push.notify(r, env.call())) for r in records]
        await asyncio.sleep(0.1)
        env.apns.hold.set()
        results = [d.result for (d,) in await asyncio.gather(*tasks)]
        assert [r.outcome for r in results] == ["delivered", "delivered", "rejected"]
        assert results[2].reason == "overloaded"
    finally:
        await close(env)


async def test_a_send_waiting_for_a_slot_gives_up_when_its_call_ends(make_env):
    env = await make_env(clock_source=time.time, max_in_flight=1)
    env.apns.clock = time.time  # real time here: the deadline is a real 0.2 s
    try:
        env.apns.register(VOIP, BUNDLE + ".voip")
        env.apns.register(ALERT, BUNDLE + ".voip")
        env.apns.hold = asyncio.Event()
        first = await env.create(apns_target(VOIP))
        second = await env.create(apns_target(ALERT))
        slow = asyncio.ensure_future(env.push.notify(first, call_payload(time.time() + 30)))
        await asyncio.sleep(0.05)
        (delivery,) = await env.push.notify(second, call_payload(time.time() + 0.2))
        assert (delivery.result.outcome, delivery.attempts) == ("expired", 0)
        env.apns.hold.set()
        assert (await slow)[0].delivered
    finally:
        await close(env)


# --- logs --------------------------------------------------------------------------------


async def test_logs_never_hold_a_full_token_even_at_debug_level(env, caplog):
    import logging

    from gateway.logs import TextFormatter

    caplog.set_level(logging.DEBUG)
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, (500, "InternalServerError"), (403, "ExpiredProviderToken"))
    env.fcm.register(FCM_TOKEN)
    env.fcm.script(FCM_TOKEN, (503, "UNAVAILABLE"), (404, "UNREGISTERED"))
    sub = env.webpush.subscribe()
    env.webpush.script(sub[0], 429, 410)
    targets = [
        apns_target(VOIP),
        PushTarget("fcm", "call", token=FCM_TOKEN),
        PushTarget("webpush", "call", endpoint=sub[0], p256dh=sub[1], auth=sub[2]),
    ]
    record = await env.create(*targets)
    deliveries = await env.push.notify(record, env.call())
    assert [d.result.outcome for d in deliveries] == ["delivered", "dead_target", "dead_target"]
    text = "\n".join(TextFormatter().format(r) for r in caplog.records)
    assert "refused" in text and "dead" in text  # the logs did speak
    bearer = env.apns.requests[-1].headers["authorization"].removeprefix("bearer ")
    for secret in (VOIP, FCM_TOKEN, sub[0], sub[0].rsplit("/", 1)[1], sub[2], bearer):
        assert secret not in text


# --- credentials that cannot be used -----------------------------------------------------


async def test_unusable_credentials_fail_start_and_later_sends_alert_once(env, tmp_path):
    from gateway.errors import ConfigError

    broken = msgspec.structs.replace(env.app.apns, key_file=str(tmp_path / "missing.p8"))
    env.app = msgspec.structs.replace(env.app, apns=broken)
    env.push.config = msgspec.structs.replace(env.push.config, apps=[env.app])
    with pytest.raises(ConfigError, match="missing.p8: cannot read"):
        env.push.start()
    record = await env.create(apns_target(VOIP), apns_target(ALERT, "other"))
    for _ in range(2):
        (delivery,) = await env.push.notify(record, env.call())
        assert (delivery.result.outcome, delivery.result.reason) == ("rejected", "credentials unusable")
    assert len(env.alerts) == 1 and "missing.p8" in env.alerts[0][2]


def test_bad_ca_file_is_a_config_error(tmp_path):
    from gateway.errors import ConfigError
    from gateway.push.base import tls_context

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="ca.pem: not a usable PEM file"):
        tls_context(str(bad))


# --- the same rules for every provider ---------------------------------------------------


def one_target(env, provider):
    """A working call target of `provider`, and a function that makes it fail with `kind`."""
    if provider == "apns":
        env.apns.register(VOIP, BUNDLE + ".voip")
        fail = {
            "dead": lambda: env.apns.unregistered.__setitem__(VOIP, 1),
            "transient": lambda: env.apns.script(VOIP, *[(503, "ServiceUnavailable")] * 10),
        }
        return apns_target(VOIP), fail
    if provider == "fcm":
        env.fcm.register(FCM_TOKEN)
        fail = {
            "dead": lambda: env.fcm.unregistered.add(FCM_TOKEN),
            "transient": lambda: env.fcm.script(FCM_TOKEN, *[(503, "UNAVAILABLE")] * 10),
        }
        return PushTarget("fcm", "call", token=FCM_TOKEN), fail
    endpoint, p256dh, auth = env.webpush.subscribe()
    fail = {
        "dead": lambda: setattr(env.webpush.subscription(endpoint), "gone", 410),
        "transient": lambda: env.webpush.script(endpoint, *[503] * 10),
    }
    return PushTarget("webpush", "call", endpoint=endpoint, p256dh=p256dh, auth=auth), fail


PROVIDERS = ["apns", "fcm", "webpush"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_removes_a_dead_target_and_turns_the_instance_off(env, provider):
    target, fail = one_target(env, provider)
    record = await env.create(target)
    assert (await env.push.notify(record, env.call()))[0].delivered
    fail["dead"]()
    (delivery,) = await env.push.notify(record, env.call())
    assert delivery.result.outcome == "dead_target"
    stored = await env.store.get_instance(record.id)
    assert (stored.push, stored.state) == ([], "off")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_retries_transient_errors_a_bounded_number_of_times(env, provider):
    target, fail = one_target(env, provider)
    record = await env.create(target)
    fail["transient"]()
    (delivery,) = await env.push.notify(record, env.call(3600))
    assert (delivery.result.outcome, delivery.result.status, delivery.attempts) == ("retry_later", 503, 5)
    assert len(env.sleeps) == 4
    (delivery,) = await env.push.notify(record, env.call(1.0))  # a short call: fewer tries
    assert (delivery.result.outcome, delivery.attempts) == ("expired", 2)


async def test_rejections_only_the_operator_can_fix_raise_one_alert_per_reason(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.script(VOIP, (400, "TopicDisallowed"), (400, "TopicDisallowed"), (400, "BadCollapseId"))
    env.fcm.register(FCM_TOKEN)
    env.fcm.script(FCM_TOKEN, (401, "THIRD_PARTY_AUTH_ERROR"))
    record = await env.create(apns_target(VOIP), PushTarget("fcm", "call", token=FCM_TOKEN))
    first = await env.push.notify(record, env.call())
    assert [(d.result.outcome, d.result.reason, d.attempts) for d in first] == [
        ("rejected", "TopicDisallowed", 1),
        ("rejected", "THIRD_PARTY_AUTH_ERROR", 1),
    ]
    await env.push.notify(record, env.call())  # TopicDisallowed again, FCM delivers
    await env.push.notify(record, env.call())  # BadCollapseId: our bug, not the operator's
    assert sorted(env.alerts) == [("demo", "apns", "TopicDisallowed"), ("demo", "fcm", "THIRD_PARTY_AUTH_ERROR")]
    assert len((await env.store.get_instance(record.id)).push) == 2  # nothing removed


async def test_broken_credentials_are_renewed_at_most_every_five_minutes(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.apns.clock = lambda: env.clock() + 7200
    record = await env.create(apns_target(VOIP))
    (first,) = await env.push.notify(record, env.call())
    env.clock.advance(60)
    (second,) = await env.push.notify(record, env.call())  # within the cool-down: no renewal
    assert (first.attempts, second.attempts) == (2, 1)
    assert env.push.counters[("demo", "apns", "renewals")] == 1 and len(env.alerts) == 1
    assert len(env.apns.connections) == 2  # the renewal's new connection, no more churn
    env.clock.advance(300)
    (third,) = await env.push.notify(record, env.call())
    assert third.attempts == 2 and env.push.counters[("demo", "apns", "renewals")] == 2
    assert len(env.alerts) == 2  # still broken: said again, five minutes later


async def test_cancelling_a_push_frees_its_slot_and_stream(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    record = await env.create(apns_target(VOIP))
    assert (await env.push.notify(record, env.call()))[0].delivered
    env.apns.hold = asyncio.Event()
    task = asyncio.ensure_future(env.push.notify(record, env.call()))
    while env.apns.in_flight < 1:
        await asyncio.sleep(0.01)
    task.cancel()  # e.g. the caller hung up before the push went out
    with pytest.raises(asyncio.CancelledError):
        await task
    limit = env.push.limit("demo", "apns")
    conn = env.push.provider(env.app, "apns").pool("production").connections[0]
    assert (limit.in_flight, conn.in_flight) == (0, 0)
    env.apns.hold.set()
    env.apns.hold = None
    assert (await env.push.notify(record, env.call()))[0].delivered
    assert len(env.apns.connections) == 1


# --- the call push's path: written before notify_now returns ----------------------------


@pytest.mark.parametrize("way", ["notify_now", "notify_started"])
async def test_notify_now_writes_the_first_attempt_before_it_returns(env, way):
    env.apns.register(VOIP, BUNDLE + ".voip")
    env.fcm.register(FCM_TOKEN)
    record = await env.create(apns_target(VOIP), PushTarget("fcm", "call", token=FCM_TOKEN))
    await env.push.notify(record, env.call())  # the connections are open now
    env.apns.hold = asyncio.Event()
    # notify_started: the same, as a coroutine for the caller's own task
    pending = getattr(env.push, way)(record, env.call())
    # nothing has run on the loop since: the APNs request is on its stream already
    (conn,) = env.push.provider(env.app, "apns").pool("production").connections
    assert conn.in_flight == 1 and env.push.limit("demo", "apns").in_flight == 1
    assert env.push.limit("demo", "fcm").in_flight == 0  # FCM has no start(): the regular path
    env.apns.hold.set()
    deliveries = await pending
    assert sorted((d.target.provider, d.result.outcome, d.attempts) for d in deliveries) == [
        ("apns", "delivered", 1), ("fcm", "delivered", 1)]
    assert env.push.limit("demo", "apns").in_flight == 0


async def test_notify_now_falls_back_to_the_regular_path_when_it_cannot_start(env):
    env.apns.register(VOIP, BUNDLE + ".voip")
    record = await env.create(apns_target(VOIP))
    pending = env.push.notify_now(record, env.call())  # no connection yet: queued, not lost
    (delivery,) = await pending
    assert delivery.delivered and delivery.attempts == 1
    unknown = msgspec.structs.replace(record, app_id="nope")
    assert await env.push.notify_now(unknown, env.call()) == []
    assert await env.push.notify_started(unknown, env.call()) == []
