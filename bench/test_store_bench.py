"""Store write throughput and latency: the batching writer thread against one commit per
write (the same store with max_batch=1), measured in the same run.

Each round puts ROUND_SIZE new instances at once (asyncio.gather), as a burst of app
hand-overs would. The benchmark table compares the two (group "store-writes"); the
batched test also records, in extra_info, the writes per second of both, their ratio,
and the latency each write saw from call to durable commit (median and 99th percentile).

    python -m pytest bench/test_store_bench.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import pytest
import uvloop

from gateway.store import open_store
from tests.support.instances import make_instance

ROUND_SIZE = 200
ROUNDS = 8


class _Bench:
    """An open store on its own uvloop, fed bursts of fresh instances."""

    def __init__(self, tmp_path, max_batch: int):
        self.loop = uvloop.new_event_loop()
        self.store = open_store(str(tmp_path / f"bench-{max_batch}.db"), str(tmp_path / "store.key"), max_batch=max_batch)
        self.loop.run_until_complete(self.store.open())
        self.numbers = itertools.count()
        self.latencies: list[float] = []

    def burst(self):
        """Arguments for one round: ROUND_SIZE records built before the clock starts."""
        box = self.store.secret_box
        return ([make_instance(box, next(self.numbers)) for _ in range(ROUND_SIZE)],), {}

    def put_all(self, records) -> None:
        self.loop.run_until_complete(self._put_all(records))

    async def _put_all(self, records) -> None:
        await asyncio.gather(*(self._timed_put(r) for r in records))

    async def _timed_put(self, rec) -> None:
        start = time.perf_counter()
        await self.store.put_instance(rec)
        self.latencies.append(time.perf_counter() - start)

    def writes_per_second(self, rounds: int) -> float:
        elapsed = 0.0
        for _ in range(rounds):
            (records,), _ = self.burst()
            start = time.perf_counter()
            self.put_all(records)
            elapsed += time.perf_counter() - start
        return rounds * ROUND_SIZE / elapsed

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture
def bench_factory(tmp_path):
    made: list[_Bench] = []

    def make(max_batch: int) -> _Bench:
        made.append(_Bench(tmp_path, max_batch))
        return made[-1]

    yield make
    for b in made:
        b.close()


def _ms(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[int(q) - 1] * 1000, 3) if q < 100 else round(max(values) * 1000, 3)


@pytest.mark.benchmark(group="store-writes")
def test_one_commit_per_write(benchmark, bench_factory):
    """Baseline: every write is its own transaction and fsync."""
    b = bench_factory(max_batch=1)
    benchmark.pedantic(b.put_all, setup=b.burst, rounds=ROUNDS, iterations=1)
    assert b.store.batches == b.store.jobs
    benchmark.extra_info["writes_per_round"] = ROUND_SIZE
    benchmark.extra_info["latency_ms_p50"] = _ms(b.latencies, 50)
    benchmark.extra_info["latency_ms_p99"] = _ms(b.latencies, 99)


@pytest.mark.benchmark(group="store-writes")
def test_batched_writes(benchmark, bench_factory):
    """The store as the gateway runs it; the ratio against the baseline is measured here."""
    baseline = bench_factory(max_batch=1)
    single_wps = baseline.writes_per_second(ROUNDS)

    b = bench_factory(max_batch=256)
    benchmark.pedantic(b.put_all, setup=b.burst, rounds=ROUNDS, iterations=1)
    batched_wps = b.writes_per_second(ROUNDS)
    assert b.store.batches < b.store.jobs
    benchmark.extra_info.update(
        writes_per_round=ROUND_SIZE,
        batched_writes_per_s=round(batched_wps),
        single_commit_writes_per_s=round(single_wps),
        speedup_vs_single_commit=round(batched_wps / single_wps, 2),
        mean_jobs_per_commit=round(b.store.jobs / b.store.batches, 1),
        latency_ms_p50=_ms(b.latencies, 50),
        latency_ms_p99=_ms(b.latencies, 99),
        single_commit_latency_ms_p50=_ms(baseline.latencies, 50),
        single_commit_latency_ms_p99=_ms(baseline.latencies, 99),
    )
