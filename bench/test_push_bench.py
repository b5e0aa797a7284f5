"""APNs throughput and latency through our client (gateway.push.apns + http2) to the APNs
emulator over HTTP/2 + TLS on loopback, on ONE connection.

- subject: a burst of BURST concurrent sends multiplexed on one connection;
- baselines, measured in the same run: sends one at a time (each waits for its answer
  before the next goes), i.e. what the same connection gives without multiplexing; and
  the same burst as bare h2 requests (same headers and body, same 100-stream window, no
  pool, no classification), i.e. what our client layer costs.

Two settings: the emulator answering at once (both ends then share one uvloop loop and
one core: CPU-bound, the absolute figure is a floor) and answering after 20 ms, a round
trip to Apple's servers, where multiplexing is what matters.

Figures in extra_info: pushes per second for both, their ratio, and send-to-answer
latency p50/p99 (ms): in the burst (mostly waiting for a stream), one at a time, and at
a steady PACED_RATE pushes per second (what a call push sees on a busy gateway).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hpack import NeverIndexedHeaderTuple

from gateway.config import ApnsCredentials
from gateway.push import payloads
from gateway.push.apns import ApnsProvider
from gateway.push.base import Notification, tls_context
from gateway.push.payloads import CallPush
from gateway.store.records import PushTarget
from tests.support.apns_emulator import ApnsEmulator

BURST = 2000
PACED_RATE = 200.0
TOKEN = "ab" * 32


class RawH2(asyncio.Protocol):
    """The baseline: h2 driven directly, one connection, a window of 100 streams."""

    def __init__(self):
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.waiting: dict[int, asyncio.Future] = {}
        self.status: dict[int, int] = {}

    def connection_made(self, transport):
        self.transport = transport
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data):
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.status[event.stream_id] = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.StreamEnded):
                self.waiting.pop(event.stream_id).set_result(self.status.pop(event.stream_id))
        self.transport.write(self.h2.data_to_send())

    async def burst(self, n: int, make_headers, body: bytes) -> None:
        window = asyncio.Semaphore(100)

        async def one():
            async with window:
                stream_id = self.h2.get_next_available_stream_id()
                self.waiting[stream_id] = asyncio.get_running_loop().create_future()
                self.h2.send_headers(stream_id, make_headers(stream_id))
                self.h2.send_data(stream_id, body, end_stream=True)
                self.transport.write(self.h2.data_to_send())
                assert await self.waiting[stream_id] == 200

        await asyncio.gather(*(one() for _ in range(n)))


class Bench:
    async def start(self, tmp_path):
        ca = trustme.CA()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        key = ec.generate_private_key(ec.SECP256R1())
        key_file = tmp_path / "AuthKey.p8"
        key_file.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.emulator = ApnsEmulator(ca, keys={"KEY1234567": ("TEAM123456", public)})
        await self.emulator.start()
        self.emulator.register(TOKEN, "com.example.phone.voip")
        creds = ApnsCredentials(
            topic="com.example.phone", team_id="TEAM123456", key_id="KEY1234567", key_file=str(key_file),
            production_url=self.emulator.url,
        )
        self.provider = ApnsProvider(creds, ca_file=str(ca_file), connections=1)
        self.ca_file = str(ca_file)
        self.target = PushTarget("apns", "call", token=TOKEN)
        expires = time.time() + 3600
        payload = CallPush(
            instance="inst", call_id="call@pbx", caller_uri="sip:bob@example.com", caller_name="Bob",
            callee="sip:alice@example.com", push_id="p1", connect="sips:gw.example.com:5071", expires_at=expires,
        )
        self.note = Notification(payload, expires)

    async def one(self, latencies: list[float]) -> None:
        start = time.perf_counter()
        result = await self.provider.send(self.target, self.note)
        latencies.append(time.perf_counter() - start)
        assert result.outcome == "delivered", result

    async def burst(self, n: int, latencies: list[float]) -> None:
        await asyncio.gather(*(self.one(latencies) for _ in range(n)))

    async def sequential(self, n: int, latencies: list[float]) -> None:
        for _ in range(n):
            await self.one(latencies)

    async def paced(self, n: int, rate: float, latencies: list[float]) -> None:
        """`n` sends started at `rate` per second, each without waiting for the others."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(self.one(latencies)))
            delay = start + (i + 1) / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*tasks)

    async def raw_connection(self) -> RawH2:
        port = int(self.emulator.url.rsplit(":", 1)[1])
        context = tls_context(self.ca_file, alpn=["h2"])
        _, raw = await asyncio.get_running_loop().create_connection(RawH2, "127.0.0.1", port, ssl=context)
        await self.raw_burst(raw, 1)  # one valid token lifts the emulator's one-stream start
        while raw.h2.remote_settings.max_concurrent_streams < 100:
            await asyncio.sleep(0.01)
        return raw

    async def raw_burst(self, raw: RawH2, n: int) -> None:
        body = payloads.encode_apns(self.note.payload, "voip")
        path = f"/3/device/{TOKEN}"

        def make_headers(stream_id):
            # as our client sends them (a device's path is not worth indexing)
            pseudo = [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "127.0.0.1"),
                NeverIndexedHeaderTuple(":path", path),
            ]
            return pseudo + self.provider.headers(self.target, self.note, "voip")

        await raw.burst(n, make_headers, body)

    async def stop(self):
        await self.provider.close()
        await self.emulator.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@pytest.mark.benchmark(group="push-apns")
@pytest.mark.parametrize("rtt", [0.0, 0.020], ids=["loopback", "rtt20ms"])
def test_apns_pushes_per_second_on_one_connection(benchmark, tmp_path, rtt):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        bench = Bench()
        runner.run(bench.start(tmp_path))
        try:
            runner.run(bench.burst(200, []))  # connect, lift the one-stream limit, warm up
            bench.emulator.delay = rtt

            paced_latencies: list[float] = []
            runner.run(bench.paced(400, PACED_RATE, paced_latencies))
            raw = runner.run(bench.raw_connection())

            # The baselines run before each round of the subject (interleaved, so that the
            # load of a shared machine weighs on all three alike); medians are compared.
            sequential = 100 if rtt else BURST
            sequential_latencies: list[float] = []
            sequential_rates: list[float] = []
            raw_rates: list[float] = []

            def baselines():
                started = time.perf_counter()
                runner.run(bench.sequential(sequential, sequential_latencies))
                sequential_rates.append(sequential / (time.perf_counter() - started))
                started = time.perf_counter()
                runner.run(bench.raw_burst(raw, BURST))
                raw_rates.append(BURST / (time.perf_counter() - started))

            burst_latencies: list[float] = []
            benchmark.pedantic(
                lambda: runner.run(bench.burst(BURST, burst_latencies)), setup=baselines, rounds=3, iterations=1
            )
            raw.transport.close()
            burst_rate = BURST / benchmark.stats.stats.median
            sequential_rate = statistics.median(sequential_rates)
            raw_rate = statistics.median(raw_rates)

            assert len(bench.emulator.connections) == 2  # ours, and the raw baseline's
            ms = 1000.0
            benchmark.extra_info.update(
                {
                    "pushes": BURST,
                    "emulator_answer_delay_ms": rtt * 1000,
                    "connections": 1,
                    "max_concurrent_streams_seen": bench.emulator.max_in_flight,
                    "pushes_per_second": round(burst_rate),
                    "sequential_pushes_per_second": round(sequential_rate),
                    "ratio_vs_sequential": round(burst_rate / sequential_rate, 2),
                    "raw_h2_pushes_per_second": round(raw_rate),
                    "ratio_vs_raw_h2": round(burst_rate / raw_rate, 2),
                    "latency_p50_ms": round(percentile(burst_latencies, 0.5) * ms, 2),
                    "latency_p99_ms": round(percentile(burst_latencies, 0.99) * ms, 2),
                    "sequential_latency_p50_ms": round(percentile(sequential_latencies, 0.5) * ms, 3),
                    "sequential_latency_p99_ms": round(percentile(sequential_latencies, 0.99) * ms, 3),
                    "sequential_latency_mean_ms": round(statistics.mean(sequential_latencies) * ms, 3),
                    "paced_rate": PACED_RATE,
                    "paced_latency_p50_ms": round(percentile(paced_latencies, 0.5) * ms, 3),
                    "paced_latency_p99_ms": round(percentile(paced_latencies, 0.99) * ms, 3),
                }
            )
        finally:
            runner.run(bench.stop())
