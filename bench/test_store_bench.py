"""Store benchmarks, each against a baseline measured in the same run.

- "store-writes": write throughput and latency of the batching writer thread against one
  commit per write (the same store with max_batch=1).
- "store-erase": what a real erasure costs (delete, WAL checkpoint, search of the file,
  rebuild when a stale copy turns up) against a plain update through the same writer.

For writes, each round puts ROUND_SIZE new instances at once (asyncio.gather), as a
burst of app hand-overs would; the batched test also records, in extra_info, the writes
per second of both, their ratio, and the latency each write saw from call to durable
commit (median and 99th percentile). For erasure, each round erases (or updates)
ERASE_ROUND instances one after the other, in a store of FILLED.

    python -m pytest bench/test_store_bench.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import itertools
import os
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


ERASE_ROUND = 20
FILLED = 2000


def _filled(b: _Bench, count: int) -> list[str]:
    ids = []
    for _ in range(0, count, ROUND_SIZE):
        (records,), _ = b.burst()
        b.put_all(records)
        ids += [r.id for r in records]
    return ids


@pytest.mark.benchmark(group="store-erase")
def test_plain_update_one_at_a_time(benchmark, bench_factory):
    """Baseline for erasure: a write of its own through the same writer, no scrub."""
    b = bench_factory(max_batch=256)
    ids = iter(_filled(b, FILLED))

    async def update_each(batch):
        for i in batch:
            await b.store.update_instance(i, state="registered")

    def round_():
        b.loop.run_until_complete(update_each([next(ids) for _ in range(ERASE_ROUND)]))

    benchmark.pedantic(round_, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["calls_per_round"] = ERASE_ROUND


@pytest.mark.benchmark(group="store-erase")
def test_erase_one_at_a_time(benchmark, bench_factory):
    """Each erase alone in its batch (the worst case): delete, checkpoint, search the
    file for the erased credentials, VACUUM when a stale copy turns up."""
    b = bench_factory(max_batch=256)
    ids = iter(_filled(b, FILLED + ROUNDS * ERASE_ROUND))

    async def erase_each(batch):
        for i in batch:
            assert await b.store.erase_instance(i)

    def round_():
        b.loop.run_until_complete(erase_each([next(ids) for _ in range(ERASE_ROUND)]))

    benchmark.pedantic(round_, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["calls_per_round"] = ERASE_ROUND
    benchmark.extra_info["file_rebuilds"] = b.store._scrubber.vacuums
    benchmark.extra_info["database_mb"] = round(os.path.getsize(b.store.path) / 1e6, 2)
