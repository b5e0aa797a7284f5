"""Shared by the benchmarks: baselines measured in the same run, to report ratios.

A baseline test stores its median in `baselines`; the subject test divides by it. When the
subject runs alone (-k), it measures the baseline itself with the same function.
"""

import statistics
import time

import pytest


@pytest.fixture(scope="session")
def baselines() -> dict[str, float]:
    return {}


def median_seconds(benchmark) -> float:
    return benchmark.stats.stats.median


def measure(fn, rounds: int = 7, iterations: int = 1) -> float:
    """Median seconds per call of `fn`, for a baseline that did not run as its own test."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        times.append((time.perf_counter() - start) / iterations)
    return statistics.median(times)
