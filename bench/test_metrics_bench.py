"""What instrumentation costs on the registration hot path, with and without metrics, in
the same run (goal: at most 5 %).

The path measured is the real one: `RegistrationClient._register` for a fresh client (the
in-flight bound, the pacer, a REGISTER built and sent through the SIP endpoint -- client
transaction, timers E and F on the real wheel, `Flow.send` -> sendto on a UDP socket --,
the 200 OK received, parsed and matched, our Contact's expiry read back, the refresh timer
set, the state reported), against a minimal registrar on loopback in the same loop (its
cost, small and the same in both variants, is part of each round). With metrics, what the
client and the SIP core record on that path: `registration_sent`, `registration_result`
with the RTT, REGISTER out, 2xx in, a parse time every 16th read.
"Without" replaces every `gateway.metrics` function the path calls by a no-op (the call
sites stay, so the no-op calls remain in the baseline).

Figures: the pytest-benchmark table (group "metrics-register-path") and, in the subject's
extra_info:
- `overhead_pct_paired`: rounds of both variants interleaved (order alternating, a garbage
  collection before each), timed in the thread's CPU time (time spent descheduled by a
  busy machine does not count), the median of the ratio within each neighbouring pair.
  On a shared, loaded machine two tests drift apart more than two neighbouring rounds;
  `overhead_pct_min` compares the fastest rounds (the least disturbed ones);
- `modelled_overhead_pct`: the metric calls of one registration timed on their own
  (`metric_calls_ns`) against the fastest plain registration: the steady figure when the
  machine is too noisy for the A/B one.
Group "metrics-recorders" sets the gateway's recorders against prometheus-client's own
Counter and Histogram, the reason they exist.

    python -m pytest bench/test_metrics_bench.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time

import pytest
import uvloop
from prometheus_client import CollectorRegistry, Counter, Histogram

from bench.quick import QUICK
from gateway import metrics
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.pacing import Pacer
from gateway.sip.registration import RegistrationClient, RegistrationContext, RegistrationSettings
from gateway.timers import TimerWheel

BATCH = 200  # registrations per round
ROUNDS = 25
WARMUP = 3  # the first rounds of a fresh loop and socket are slower: not counted (either variant)
AB_ROUNDS = 40 if QUICK else 150  # interleaved pairs for overhead_pct_*
AB_BATCH = 50
#: the gateway.metrics functions on the path
PATH_CALLS = ("sip_request", "sip_response", "sip_sent", "sip_parsed", "registration_sent", "registration_result")


class _Registrar(asyncio.DatagramProtocol):
    """A registrar that accepts every REGISTER at once: its 200 OK echoes the request's
    Via, From, Call-ID, CSeq and Contact (a To tag and Expires added), byte operations
    only, so that it costs little next to the client (its cost is in both variants)."""

    KEEP = (b"Via:", b"From:", b"Call-ID:", b"CSeq:", b"Contact:")

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        lines = [b"SIP/2.0 200 OK"] + [line for line in head[1:] if line.startswith(self.KEEP)]
        to = next(line for line in head if line.startswith(b"To:"))
        lines += [to + b";tag=reg", b"Expires: 600", b"Content-Length: 0", b"", b""]
        self.transport.sendto(b"\r\n".join(lines), addr)


class RegisterPath:
    """The real registration path on its own uvloop: `RegistrationClient._register` (the
    in-flight bound, the pacer, one REGISTER transaction through the SIP endpoint over
    UDP, the 200's Contact read back, the refresh timer on the wheel, the state reported)
    against `_Registrar` on a loopback socket. Each round registers BATCH fresh clients,
    made before the clock starts, one after the other."""

    def __init__(self):
        self.loop = uvloop.new_event_loop()
        self.loop.run_until_complete(self._open())
        self.reported = 0
        self.clients: list[RegistrationClient] = []

    async def _open(self):
        self.wheel = TimerWheel()
        self.endpoint = SipEndpoint(self.wheel)
        await self.endpoint.listen("udp", "127.0.0.1", 0)
        pacer = Pacer(self.wheel, 1e9, 1_000_000, 1e9, 1_000_000)  # no pacing
        self.ctx = RegistrationContext(self.endpoint, pacer, RegistrationSettings(), report=self._report)
        loop = asyncio.get_running_loop()
        self.registrar, _ = await loop.create_datagram_endpoint(_Registrar, local_addr=("127.0.0.1", 0))
        self.port = self.registrar.get_extra_info("sockname")[1]

    def _report(self, client, state, error, until):
        self.reported += 1

    def batch(self, size: int = BATCH):
        """One round's fresh clients (the last round's closed first), outside the clock."""
        for client in self.clients:
            client.close()
        self.loop.run_until_complete(asyncio.sleep(0.002))
        self.clients = []
        for i in range(size):
            client = RegistrationClient(
                self.ctx, key=f"i{i}", token=f"gw{i}", instance_urn=f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                aor=f"sip:user{i}@registrar.test", username=f"user{i}", password_source=lambda: "pw",
                registrar=f"sip:127.0.0.1:{self.port};transport=udp", expires=600)
            client.active = True  # what start() sets, without spawning the task itself
            self.clients.append(client)
        return (self.clients,), {}

    def run(self, clients) -> None:
        self.loop.run_until_complete(self._run(clients))

    async def _run(self, clients) -> None:
        for client in clients:
            await client._register()
        assert client.state == "registered", (client.state, client.last_error)

    def close(self) -> None:
        async def shut():
            for client in self.clients:
                client.close()
            self.registrar.close()
            await self.endpoint.close()
            self.wheel.close()

        self.loop.run_until_complete(shut())
        self.loop.close()


def _noop(*args, **kwargs) -> None:
    return None


@contextlib.contextmanager
def metrics_off():
    """Every metrics function on the path as a no-op (their call sites stay)."""
    saved = {name: getattr(metrics, name) for name in PATH_CALLS}
    for name in PATH_CALLS:
        setattr(metrics, name, _noop)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(metrics, name, function)


@pytest.fixture(scope="module")
def path():
    p = RegisterPath()
    yield p
    p.close()


def _round(path: RegisterPath, metered: bool) -> float:
    """One round's CPU time on this thread (the loop runs on it; sendto's kernel time counts)."""
    (clients,), _ = path.batch(AB_BATCH)
    gc.collect()  # the batch's garbage is collected before the clock, not during it
    with contextlib.nullcontext() if metered else metrics_off():
        start = time.thread_time()
        path.run(clients)
        return time.thread_time() - start


@pytest.mark.benchmark(group="metrics-register-path")
def test_register_path_without_metrics(benchmark, path, baselines):
    with metrics_off():
        benchmark.pedantic(path.run, setup=path.batch, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
    baselines["register-path"] = benchmark.stats.stats.median
    benchmark.extra_info["registrations_per_round"] = BATCH
    benchmark.extra_info["us_per_registration"] = round(benchmark.stats.stats.median / BATCH * 1e6, 2)


@pytest.mark.benchmark(group="metrics-register-path")
def test_register_path_with_metrics(benchmark, path, baselines):
    sent = metrics.REGISTER_SENT.values[()]
    benchmark.pedantic(path.run, setup=path.batch, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
    assert metrics.REGISTER_SENT.values[()] - sent == BATCH * (ROUNDS + WARMUP)  # the calls did run
    median = benchmark.stats.stats.median

    # both variants, round after round, in the same stretch of time
    plain, metered = [], []
    for i in range(AB_ROUNDS):
        for on in ((False, True) if i % 2 else (True, False)):
            (metered if on else plain).append(_round(path, on))
    paired = statistics.median(m / p for m, p in zip(metered, plain))
    calls = _metric_calls_seconds()
    info = benchmark.extra_info
    info["registrations_per_round"] = BATCH
    info["us_per_registration"] = round(median / BATCH * 1e6, 2)
    info["overhead_pct_min"] = round(100 * (min(metered) / min(plain) - 1), 2)
    info["overhead_pct_paired"] = round(100 * (paired - 1), 2)
    info["interleaved_us_plain_min"] = round(min(plain) / AB_BATCH * 1e6, 2)
    info["interleaved_us_metered_min"] = round(min(metered) / AB_BATCH * 1e6, 2)
    info["metric_calls_ns"] = round(calls * 1e9, 1)
    info["modelled_overhead_pct"] = round(100 * calls / (min(plain) / AB_BATCH), 2)
    if "register-path" in baselines:
        info["ratio_to_baseline_test"] = round(median / baselines["register-path"], 4)


def _metric_calls_seconds(n: int = 20_000) -> float:
    """One registration's metric calls on their own, minus the no-op calls that stay in
    the plain path: the fastest of five runs."""
    register = b"REGISTER sip:registrar.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060\r\n"
    perf = time.perf_counter

    def metered():
        metrics.registration_sent()
        sent_at = perf()
        metrics.sip_sent("udp", register)
        metrics.sip_response("in", "udp", 200)
        metrics.registration_result("registered", perf() - sent_at)

    def plain():
        _noop("udp", register)
        _noop("in", "udp", 200)

    def best(fn) -> float:
        times = []
        for _ in range(5):
            start = perf()
            for _ in range(n):
                fn()
            times.append((perf() - start) / n)
        return min(times)

    # every 16th read also times the parse: two clock reads and one observation
    sample = best(lambda: metrics.SIP_PARSE.observe(1e-5)) + 2 * best(perf)
    return max(0.0, best(metered) - best(plain)) + sample / 16


# --- the recorders against prometheus-client's own objects -----------------------------------

N = 10_000


@pytest.mark.benchmark(group="metrics-recorders")
def test_prometheus_client_counter_and_histogram(benchmark, baselines):
    registry = CollectorRegistry()
    counter = Counter("bench_total", "b", ["outcome"], registry=registry).labels("registered")
    histogram = Histogram("bench_seconds", "b", buckets=metrics.NETWORK_BUCKETS, registry=registry)

    def record():
        for _ in range(N):
            counter.inc()
            histogram.observe(0.03)

    benchmark.pedantic(record, rounds=ROUNDS, iterations=1)
    baselines["prometheus-client"] = benchmark.stats.stats.median
    benchmark.extra_info["ns_per_inc_and_observe"] = round(benchmark.stats.stats.median / N * 1e9, 1)


@pytest.mark.benchmark(group="metrics-recorders")
def test_gateway_recorders(benchmark, baselines):
    tally = metrics.Tally("bench_total", "b", ("outcome",), (("registered",),))
    timing = metrics.Timing("bench_seconds", "b", metrics.NETWORK_BUCKETS)
    metrics.RECORDERS.remove(tally)
    metrics.RECORDERS.remove(timing)
    key = ("registered",)

    def record():
        for _ in range(N):
            tally.inc(key)
            timing.observe(0.03)

    benchmark.pedantic(record, rounds=ROUNDS, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info["ns_per_inc_and_observe"] = round(median / N * 1e9, 1)
    if "prometheus-client" in baselines:
        benchmark.extra_info["ratio_to_prometheus_client"] = round(median / baselines["prometheus-client"], 3)
