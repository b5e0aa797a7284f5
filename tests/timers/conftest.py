"""Fixtures for the timer wheel tests: both twins, and a clock the test moves by hand."""

import pytest

from tests.twins import load_both


@pytest.fixture(params=load_both("_timerwheel", "timerwheel"))
def twin(request):
    """The module of one twin (`gateway.timerwheel` or `gateway._timerwheel`)."""
    return request.param


class ManualClock:
    """Seconds that only move when the test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def wheel(twin, clock):
    """A wheel of the twin under test, driven by hand (10 ms resolution)."""
    wheel = twin.TimerWheel(clock=clock)
    yield wheel
    wheel.close()
