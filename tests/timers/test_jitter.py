"""jitter(): spreads refreshes early, never late, never below zero."""

import math
import random

import pytest

from gateway.timers import IMPLEMENTATION, TimerHandle, TimerWheel, jitter


def test_stays_within_the_early_window():
    rng = random.Random(3)
    for delay in (0.5, 30.0, 3600.0, 86400.0 * 7):
        for spread in (0.0, 0.05, 0.1, 0.5, 1.0):
            for _ in range(200):
                value = jitter(delay, spread, rng=rng)
                assert delay * (1 - spread) <= value <= delay


def test_spreads_instances_created_together():
    values = [jitter(3600.0) for _ in range(1000)]
    assert len(set(values)) > 990
    # covers the window rather than bunching in one part of it
    assert min(values) < 3240.0 + 36.0 and max(values) > 3600.0 - 36.0
    below_middle = sum(v < 3420.0 for v in values)
    assert 400 < below_middle < 600


def test_never_below_zero_and_never_late():
    assert jitter(0.0) == 0.0
    assert jitter(-5.0) == 0.0
    assert jitter(1e-300, 1.0) >= 0.0
    assert jitter(10.0, 0.0) == 10.0


@pytest.mark.parametrize("spread", [-0.1, 1.5, math.nan])
def test_bad_spread_is_refused(spread):
    with pytest.raises(ValueError):
        jitter(10.0, spread)


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_bad_delay_is_refused(delay):
    with pytest.raises(ValueError):
        jitter(delay)


def test_the_chooser_exports_one_implementation():
    import os

    import gateway.timerwheel as python_twin

    if os.environ.get("GATEWAY_NO_EXTENSIONS") == "1":
        assert IMPLEMENTATION == "python"
    if IMPLEMENTATION == "python":
        assert TimerWheel is python_twin.TimerWheel and TimerHandle is python_twin.TimerHandle
    else:
        import gateway._timerwheel as compiled

        assert TimerWheel is compiled.TimerWheel and TimerHandle is compiled.TimerHandle
