"""Every Prometheus metric of the gateway, defined once, and the tiny API that records them.

How a part records (import the module, call a function; nothing to set up):

    from gateway import metrics
    metrics.registration_sent()                          # a REGISTER transaction started
    metrics.registration_result("registered", rtt)       # its outcome, RTT in seconds
    metrics.push_result("apns", "call", "delivered", seconds)
    metrics.push_attempt("fcm"); metrics.push_retry("fcm")
    metrics.push_auth_renewal("fcm"); metrics.push_alert("fcm")
    metrics.invite_to_push(seconds)                      # INVITE received -> push accepted
    metrics.call_received(); metrics.call_ended("cancelled")
    metrics.message_stored(); metrics.message_fetched(); metrics.message_expired()
The SIP core, the store and the probes below call the rest (`sip_request`, `sip_response`,
`sip_sent`, `sip_parsed`, `flow_opened`, `flow_closed`, `keepalive_failed`,
`transaction_timeout`, `store_write`). Every label value comes from a fixed set defined
here; a value outside it raises ValueError (a bug in the caller, caught by its tests),
except SIP methods and statuses, which come from the network and fold into "other". No
label ever carries an AOR, a token, an instance id or an address: the analytics are
aggregate and identify no one.

Why not prometheus-client's Counter and Histogram on the hot paths: each call takes a lock
and walks several Python frames (measured here: 1.5 us per Counter.inc, 3.7 us per
Histogram.observe, against 0.2 and 0.5 us for the recorders below), and the registration
path makes four such calls per REGISTER. The gateway runs one event loop, so the
recorders are plain lock-free ints (`Tally`, `Timing`); prometheus-client turns them into
metric families at scrape time (`create_registry`), next to its own process, platform and
GC collectors. Call the recording functions from the event loop's thread only.

Recorders are process-wide, as counters in one process are; `create_registry()` builds a
fresh `CollectorRegistry` for each gateway (tests compare counters before and after).
Gauges that describe the gateway's parts (instances by state, timers on the wheel) are
read from those parts at scrape time.

Depends on prometheus-client and the standard library only (build info reads
`gateway._accel`); every other part of the gateway may import it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import platform
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from gateway import __version__, _accel

PREFIX = "sippush_"

# --- the fixed label value sets ----------------------------------------------------------

METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "MESSAGE", "INFO",
           "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH", "other")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "other")
DIRECTIONS = ("in", "out")
TRANSPORTS = ("udp", "tcp", "tls")
SIDES = ("client", "server")
STATES = ("idle", "registering", "registered", "error", "unauthorized", "off")
#: per REGISTER transaction: 2xx with bindings (registered) or for expires=0 (unregistered);
#: a 401/407 answered with credentials next (challenged); credentials refused (unauthorized:
#: 401/407 after credentials, 403); any other final error (rejected, 423 included); timer F
#: (timeout); no flow or a broken one (transport_error)
REGISTER_OUTCOMES = ("registered", "unregistered", "challenged", "unauthorized", "rejected",
                     "timeout", "transport_error")
PROVIDERS = ("apns", "fcm", "webpush")
#: as `gateway.push`: `Notification.kind` and `PushResult.outcome`
PUSH_KINDS = ("call", "missed_call", "message", "instance_expiring", "instance_off")
PUSH_OUTCOMES = ("delivered", "dead_target", "retry_later", "auth_failed", "rejected", "expired")
#: answered by the woken device; CANCEL before it answered; CANCEL with Reason "call
#: completed elsewhere"; the call timers ran out (480); the device declined
CALL_OUTCOMES = ("answered", "cancelled", "answered_elsewhere", "no_answer", "rejected")

# --- buckets, in seconds, fitting each figure ----------------------------------------------

PARSE_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3)
NETWORK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0)
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DISK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# --- the recorders ---------------------------------------------------------------------------

RECORDERS: list[Tally | Timing] = []

#: what adds counts kept elsewhere into the recorders before they are read (the compiled
#: REGISTER wire counts in C and adds its counts here): see `on_read`
_ON_READ: list[Callable[[], None]] = []


def on_read(add_counts: Callable[[], None]) -> None:
    """Have `add_counts()` called whenever a recorder is read (`values`, `series`, and
    what reads them: scrapes, totals, /stats): it adds the counts a hot path kept
    on its own since the last call (and forgets them), so readers see every count."""
    _ON_READ.append(add_counts)


def _gather() -> None:
    for add_counts in _ON_READ:
        add_counts()


def _series(name: str, labelnames: Sequence[str], choices: Sequence[Sequence[str]]) -> list[tuple]:
    if len(labelnames) != len(choices):
        raise ValueError(f"{name}: one value set per label")
    return list(itertools.product(*choices))


class Tally:
    """A counter over a fixed set of label values (every series exists from the start, at 0).
    `_values[key] += 1` is what the recording functions do; `key` is the tuple of label
    values (() without labels). Read `values` (counts kept elsewhere added first)."""

    __slots__ = ("name", "doc", "labelnames", "_values")

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (),
                 choices: Sequence[Sequence[str]] = ()):
        self.name = PREFIX + name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self._values = dict.fromkeys(_series(name, labelnames, choices), 0)
        RECORDERS.append(self)

    @property
    def values(self) -> dict[tuple, int]:
        _gather()
        return self._values

    def inc(self, key: tuple = (), amount: int = 1) -> None:
        try:
            self._values[key] += amount
        except KeyError:
            raise ValueError(f"{self.name}: {key!r} is not among its label values") from None

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family

    def total(self, **match: str) -> int:
        """The sum over the series whose labels match (for /stats and tests)."""
        index = [(self.labelnames.index(k), v) for k, v in match.items()]
        return sum(v for key, v in self.values.items() if all(key[i] == want for i, want in index))


class Timing:
    """A histogram over a fixed set of label values. Each series is a list: one count per
    bucket (the last one for values above every bound), then the sum. `_series` is
    written, `series` read (counts kept elsewhere added first)."""

    __slots__ = ("name", "doc", "labelnames", "bounds", "_series")

    def __init__(self, name: str, doc: str, bounds: Sequence[float],
                 labelnames: Sequence[str] = (), choices: Sequence[Sequence[str]] = ()):
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must increase")
        self.name = PREFIX + name
        self.doc = doc
        self.bounds = tuple(float(b) for b in bounds)
        self.labelnames = tuple(labelnames)
        size = len(self.bounds) + 2
        self._series = {key: [0] * (size - 1) + [0.0] for key in _series(name, labelnames, choices)}
        RECORDERS.append(self)

    @property
    def series(self) -> dict[tuple, list]:
        _gather()
        return self._series

    def observe(self, value: float, key: tuple = ()) -> None:
        try:
            counts = self._series[key]
        except KeyError:
            raise ValueError(f"{self.name}: {key!r} is not among its label values") from None
        if not value >= 0.0:  # negative (a clock step) or NaN: it took no time we can tell
            value = 0.0
        counts[bisect.bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def count(self, key: tuple = ()) -> int:
        return sum(self.series[key][:-1])

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for key, counts in self.series.items():
            buckets, running = [], 0
            for edge, n in zip(edges, counts):
                running += n
                buckets.append((edge, running))
            family.add_metric(list(key), buckets, counts[-1])
        return family


# --- every metric ------------------------------------------------------------------------------

SIP_REQUESTS = Tally("sip_requests_total", "SIP requests received (in) and sent (out), retransmissions included",
                     ("direction", "transport", "method"), (DIRECTIONS, TRANSPORTS, METHODS))
SIP_RESPONSES = Tally("sip_responses_total", "SIP responses received (in) and sent (out), by status class",
                      ("direction", "transport", "status_class"), (DIRECTIONS, TRANSPORTS, STATUS_CLASSES))
SIP_PARSE_ERRORS = Tally("sip_parse_errors_total", "Datagrams or streams dropped as unparsable",
                         ("transport",), (TRANSPORTS,))
SIP_PARSE = Timing("sip_parse_duration_seconds", "Time to parse one SIP message (every 16th read is timed)",
                   PARSE_BUCKETS)
TRANSACTION_TIMEOUTS = Tally("sip_transaction_timeouts_total",
                             "Transactions ended by a timer (client: B or F; server: H or an unanswered request)",
                             ("side", "method"), (SIDES, METHODS))
FLOWS_OPENED = Tally("sip_flows_opened_total", "Flows (connections, UDP peers) opened", ("transport",), (TRANSPORTS,))
FLOWS_CLOSED = Tally("sip_flows_closed_total", "Flows closed or failed", ("transport",), (TRANSPORTS,))
KEEPALIVE_FAILURES = Tally("sip_keepalive_failures_total", "Flows failed by a missing keepalive pong or a failed ping",
                           ("transport",), (TRANSPORTS,))
REGISTER_SENT = Tally("register_sent_total", "REGISTER transactions started (first tries, auth retries, refreshes)")
REGISTER_RESULTS = Tally("register_results_total", "Outcomes of REGISTER transactions",
                         ("outcome",), (REGISTER_OUTCOMES,))
REGISTER_RTT = Timing("register_rtt_seconds", "REGISTER sent to its final response", NETWORK_BUCKETS)
PUSHES = Tally("pushes_total", "Push deliveries by provider, kind and final outcome",
               ("provider", "kind", "outcome"), (PROVIDERS, PUSH_KINDS, PUSH_OUTCOMES))
PUSH_DURATION = Timing("push_duration_seconds", "Push delivery time, retries included", PUSH_BUCKETS,
                       ("provider",), (PROVIDERS,))
PUSH_ATTEMPTS = Tally("push_attempts_total", "Requests made to push services (first tries and retries)",
                      ("provider",), (PROVIDERS,))
PUSH_RETRIES = Tally("push_retries_total", "Push attempts retried after a transient failure",
                     ("provider",), (PROVIDERS,))
PUSH_RENEWALS = Tally("push_auth_renewals_total", "Push credentials renewed after a refusal",
                      ("provider",), (PROVIDERS,))
PUSH_ALERTS = Tally("push_alerts_total", "Push credentials refused after renewal: operator action needed",
                    ("provider",), (PROVIDERS,))
INVITE_TO_PUSH = Timing("invite_to_push_seconds", "INVITE received to call push accepted by the push service",
                        PUSH_BUCKETS)
CALLS_RECEIVED = Tally("calls_received_total", "Incoming INVITEs for an instance")
CALLS = Tally("calls_total", "Incoming calls by how they ended", ("outcome",), (CALL_OUTCOMES,))
MESSAGES_STORED = Tally("messages_stored_total", "SIP MESSAGEs stored for a device")
MESSAGES_FETCHED = Tally("messages_fetched_total", "Stored messages fetched by the device")
MESSAGES_EXPIRED = Tally("messages_expired_total", "Stored messages erased unfetched")
STORE_WRITES = Timing("store_write_duration_seconds", "A store write from call to durable commit", DISK_BUCKETS)
LOOP_LAG = Timing("event_loop_lag_seconds", "How late a probe timer of the event loop ran", LAG_BUCKETS)
TIMER_LATENESS = Timing("timer_lateness_seconds", "How late a probe timer of the timer wheel fired (up to one 10 ms tick is by design)",
                        LAG_BUCKETS)

# lookups that fold network-supplied values into the fixed sets
_METHOD = {m: m for m in METHODS}
_METHOD_BYTES = {m.encode(): m for m in METHODS if m != "other"}
_STATUS_CLASS = ("other",) + STATUS_CLASSES[:6] + ("other",) * 3
_STATUS_CLASS_BYTES = {str(i).encode(): STATUS_CLASSES[i - 1] for i in range(1, 7)}
_SIP_REQ = SIP_REQUESTS._values
_SIP_RESP = SIP_RESPONSES._values


# --- the recording functions ---------------------------------------------------------------

def sip_request(direction: str, transport: str, method: str) -> None:
    _SIP_REQ[(direction, transport, _METHOD.get(method, "other"))] += 1


def sip_response(direction: str, transport: str, status: int) -> None:
    cls = _STATUS_CLASS[status // 100] if 0 <= status < 1000 else "other"
    _SIP_RESP[(direction, transport, cls)] += 1


def sip_sent(transport: str, data: bytes) -> None:
    """A message leaving on a flow, as bytes: its method or status class from the start line."""
    if data.startswith(b"SIP/2.0 "):
        _SIP_RESP[("out", transport, _STATUS_CLASS_BYTES.get(data[8:9], "other"))] += 1
    else:
        _SIP_REQ[("out", transport, _METHOD_BYTES.get(data[:data.find(b" ")], "other"))] += 1


def sip_parse_error(transport: str) -> None:
    SIP_PARSE_ERRORS.inc((transport,))


def sip_parsed(seconds: float, messages: int = 1) -> None:
    if messages > 0:
        for _ in range(messages):
            SIP_PARSE.observe(seconds / messages)


def transaction_timeout(side: str, method: str) -> None:
    TRANSACTION_TIMEOUTS.inc((side, _METHOD.get(method, "other")))


def flow_opened(transport: str) -> None:
    FLOWS_OPENED.inc((transport,))


def flow_closed(transport: str) -> None:
    FLOWS_CLOSED.inc((transport,))


def keepalive_failed(transport: str) -> None:
    KEEPALIVE_FAILURES.inc((transport,))


def registration_sent() -> None:
    REGISTER_SENT._values[()] += 1


def registration_result(outcome: str, rtt_seconds: float | None = None) -> None:
    """One REGISTER transaction's outcome; `rtt_seconds` when a final response came."""
    REGISTER_RESULTS.inc((outcome,))
    if rtt_seconds is not None:
        REGISTER_RTT.observe(rtt_seconds)


def push_result(provider: str, kind: str, outcome: str, seconds: float | None = None) -> None:
    """A delivery to one target ended (after its retries); `seconds` from its start."""
    PUSHES.inc((provider, kind, outcome))
    if seconds is not None:
        PUSH_DURATION.observe(seconds, (provider,))


def push_attempt(provider: str) -> None:
    PUSH_ATTEMPTS.inc((provider,))


def push_retry(provider: str) -> None:
    PUSH_RETRIES.inc((provider,))


def push_auth_renewal(provider: str) -> None:
    PUSH_RENEWALS.inc((provider,))


def push_alert(provider: str) -> None:
    PUSH_ALERTS.inc((provider,))


def invite_to_push(seconds: float) -> None:
    INVITE_TO_PUSH.observe(seconds)


def call_received() -> None:
    CALLS_RECEIVED._values[()] += 1


def call_ended(outcome: str) -> None:
    CALLS.inc((outcome,))


def message_stored() -> None:
    MESSAGES_STORED._values[()] += 1


def message_fetched(count: int = 1) -> None:
    MESSAGES_FETCHED.inc((), count)


def message_expired(count: int = 1) -> None:
    MESSAGES_EXPIRED.inc((), count)


def store_write(seconds: float) -> None:
    STORE_WRITES.observe(seconds)


# --- gauges read from the gateway's parts --------------------------------------------------------

class InstanceStates:
    """Instances by registration state, kept from the lifecycle's events: `load()` the
    stored instances once at start, then `subscribe` `on_event` (before anything can change)."""

    def __init__(self) -> None:
        self._state: dict[str, str] = {}
        self.counts = dict.fromkeys(STATES, 0)

    def load(self, records: Iterable[Any]) -> None:
        for record in records:
            self._set(record.id, record.state)

    def on_event(self, event: Any) -> None:
        if event.kind == "erased":
            old = self._state.pop(event.instance_id, None)
            if old is not None:
                self.counts[old] -= 1
        elif event.record is not None:
            self._set(event.instance_id, event.record.state)

    def _set(self, instance_id: str, state: str) -> None:
        if state not in self.counts:
            raise ValueError(f"unknown instance state {state!r}")
        old = self._state.get(instance_id)
        if old == state:
            return
        if old is not None:
            self.counts[old] -= 1
        self._state[instance_id] = state
        self.counts[state] += 1

    @property
    def total(self) -> int:
        return len(self._state)


class LoopProbe:
    """Event-loop lag and timer-wheel lateness: one loop timer and one wheel timer every
    `interval`, each noting how late it ran. Costs two timers per interval."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wheel: Any = None, interval: float = 0.5):
        self.loop = loop
        self.wheel = wheel
        self.interval = interval
        self._loop_handle: asyncio.TimerHandle | None = None
        self._wheel_handle: Any = None
        self._due = 0.0

    def start(self) -> None:
        self._arm_loop()
        if self.wheel is not None:
            self._wheel_handle = self.wheel.call_later(self.interval, self._wheel_tick, None)

    def stop(self) -> None:
        for handle in (self._loop_handle, self._wheel_handle):
            if handle is not None:
                handle.cancel()
        self._loop_handle = self._wheel_handle = None

    def _arm_loop(self) -> None:
        self._due = self.loop.time() + self.interval
        self._loop_handle = self.loop.call_at(self._due, self._loop_tick)

    def _loop_tick(self) -> None:
        LOOP_LAG.observe(self.loop.time() - self._due)
        self._arm_loop()

    def _wheel_tick(self, _arg: object) -> None:
        handle = self._wheel_handle
        if handle is None:
            return
        TIMER_LATENESS.observe(self.loop.time() - handle.when)
        self.wheel.reschedule(handle, self.interval)


def build() -> dict[str, Any]:
    """What this process runs: version, and whether the hot paths are compiled."""
    import gateway.sip.parsing  # noqa: F401 - resolve the twins before reporting them
    import gateway.timers  # noqa: F401

    return {
        "version": __version__,
        "accelerated": _accel.accelerated(),
        "modules": dict(sorted(_accel.chosen.items())),
        "python": platform.python_version(),
    }


class _GatewayCollector:
    """Hands prometheus-client the recorders and the gauges read from the parts."""

    def __init__(self, states: InstanceStates | None, wheel: Any):
        self.states = states
        self.wheel = wheel
        self.build = build()

    def collect(self):
        info = GaugeMetricFamily(PREFIX + "build_info", "Version and build of the gateway (always 1)",
                                 labels=("version", "accelerated"))
        info.add_metric((self.build["version"], str(self.build["accelerated"]).lower()), 1)
        yield info
        if self.states is not None:
            family = GaugeMetricFamily(PREFIX + "instances", "Instances by registration state", labels=("state",))
            for state, count in self.states.counts.items():
                family.add_metric((state,), count)
            yield family
        if self.wheel is not None:
            yield GaugeMetricFamily(PREFIX + "timer_wheel_timers", "Timers pending on the timer wheel",
                                    value=len(self.wheel))
        flows = GaugeMetricFamily(PREFIX + "sip_flows_open", "Flows open now", labels=("transport",))
        for transport in TRANSPORTS:
            key = (transport,)
            flows.add_metric(key, FLOWS_OPENED.values[key] - FLOWS_CLOSED.values[key])
        yield flows
        for recorder in RECORDERS:
            yield recorder.family()


def create_registry(states: InstanceStates | None = None, wheel: Any = None) -> CollectorRegistry:
    """A fresh registry with every gateway metric and prometheus-client's process,
    platform and garbage-collector collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_GatewayCollector(states, wheel))
    return registry
