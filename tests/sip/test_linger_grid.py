"""Timers whose lateness costs only memory (a server transaction's timers I and J, the
calls' recent-call window) fall due on the LINGER_GRID, never early, on both wheels: at
a low call rate those of neighbouring calls fire in one turn."""

from __future__ import annotations

import pytest

from gateway.sip.transaction import LINGER_GRID, call_on_grid
from tests.twins import load_both


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture(params=load_both("_timerwheel", "timerwheel"))
def wheel_type(request):
    return request.param.TimerWheel


@pytest.mark.parametrize("start", [100.0, 100.013, 100.0499, 100.05, 100.987654])
@pytest.mark.parametrize("delay", [0.5, 32.0, 5.0001])
def test_due_on_the_grid_and_never_early(wheel_type, start, delay):
    clock = Clock()
    clock.now = start
    wheel = wheel_type(clock=clock, resolution=0.001)
    handle = call_on_grid(wheel, delay, lambda arg: None, None)
    assert handle.when >= start + delay
    assert handle.when - (start + delay) < LINGER_GRID + 1e-9
    steps = handle.when / LINGER_GRID
    assert abs(steps - round(steps)) < 1e-6


def test_neighbours_fire_together_and_not_before_their_time(wheel_type):
    clock = Clock()
    wheel = wheel_type(clock=clock, resolution=0.001)
    fired = []
    for i in range(4):  # four calls 10 ms apart, each lingering 5 s
        clock.now = 100.001 + i * 0.01
        call_on_grid(wheel, 5.0, fired.append, i)
    clock.now = 105.031  # the last one's own due time: it may not fire before
    wheel.advance()
    assert fired == []
    clock.now = 105.052  # the grid point, plus the wheel's own resolution
    wheel.advance()
    assert fired == [0, 1, 2, 3]  # in one advance
