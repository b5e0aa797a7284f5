"""Random schedules: both twins must fire the same timers in the same order, and both
must match a plain model of when a timer is due.

A schedule is a list of operations (schedule, cancel, reschedule, move the clock), and a
timer's callback may itself record, reschedule itself, cancel another timer or schedule
a new one. Each twin runs it with its own manual clock; the logs must be equal.
"""

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.twins import load_both

from .conftest import ManualClock

RES = 0.01
MAX_TICK = 1 << 61
TWINS = [param.values[0] for param in load_both("_timerwheel", "timerwheel")]

delays = st.one_of(
    st.floats(0, 0.2),  # transaction timers
    st.floats(0, 120),  # keepalives, refreshes
    st.floats(0, 5e5),  # instance expiry
    st.integers(0, 3000).map(lambda n: n * RES),  # exactly on tick boundaries
    # clusters a tick or two apart at each level, where slots cascade
    st.tuples(st.sampled_from([0.3, 45.0, 3000.0, 2e5]), st.integers(0, 3)).map(
        lambda t: t[0] + t[1] * RES),
    st.sampled_from([-1.0, 0.0, 1e9, float("inf")]),
)
steps = st.one_of(
    st.floats(0, 0.05), st.floats(0, 30), st.floats(0, 2e5), st.integers(1, 3).map(lambda n: n * RES)
)
behaviours = st.one_of(
    st.just(("record",)),
    st.tuples(st.just("again"), delays),  # reschedule itself
    st.tuples(st.just("cancel"), st.integers(0, 63)),  # cancel another timer
    st.tuples(st.just("spawn"), delays),  # schedule a new timer
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), delays, behaviours),
        st.tuples(st.just("cancel"), st.integers(0, 63)),
        st.tuples(st.just("reschedule"), st.integers(0, 63), delays),
        st.tuples(st.just("advance"), steps),
    ),
    max_size=80,
)


def run(twin, ops):
    """Run `ops` on one twin, checking it against the model as it goes; return its
    firing log and a trace of its observable state."""
    clock = ManualClock(1000.0)
    wheel = twin.TimerWheel(clock=clock)
    handles = []
    log = []  # (advance number, timer id)
    trace = []  # observable state after each operation
    # the model: timer id -> the tick it must fire at, for every timer the test itself
    # (re)scheduled; forgotten once a callback moves or cancels it, since a callback
    # runs at a tick the test does not see
    due_tick = {}
    fired_ticks = []  # model ticks in firing order, for the current advance
    advance_no = 0

    def callback(arg):
        timer_id, behaviour = arg
        log.append((advance_no, timer_id))
        tick = due_tick.pop(timer_id, None)
        if tick is not None:
            assert math.floor(clock.now / RES) >= tick, "fired before its tick"
            fired_ticks.append(tick)
        if behaviour[0] == "again":
            wheel.reschedule(handles[timer_id], behaviour[1])
        elif behaviour[0] == "cancel":
            other = behaviour[1] % len(handles)
            handles[other].cancel()
            due_tick.pop(other, None)
        elif behaviour[0] == "spawn" and len(handles) < 200:
            handles.append(wheel.call_later(behaviour[1], callback, (len(handles), ("record",))))

    def predict(timer_id):
        # the first tick at or after the due time that the wheel has not yet passed
        when = handles[timer_id].when
        tick = math.ceil(when / RES) if when < 1e300 else MAX_TICK
        due_tick[timer_id] = min(max(tick, math.floor(clock.now / RES) + 1), MAX_TICK)

    def advance(now):
        nonlocal advance_no
        clock.now = now
        advance_no += 1
        fired_ticks.clear()
        wheel.advance()
        assert fired_ticks == sorted(fired_ticks), "fired out of due order"
        reached = math.floor(now / RES)
        late = [t for t, tick in due_tick.items() if tick <= reached]
        assert not late, f"timers {late} not fired by tick {reached}"

    for op in ops:
        if op[0] == "schedule":
            handles.append(wheel.call_later(op[1], callback, (len(handles), op[2])))
            predict(len(handles) - 1)
        elif op[0] == "cancel" and handles:
            timer_id = op[1] % len(handles)
            handles[timer_id].cancel()
            due_tick.pop(timer_id, None)
        elif op[0] == "reschedule" and handles:
            timer_id = op[1] % len(handles)
            if not handles[timer_id].cancelled():
                wheel.reschedule(handles[timer_id], op[2])
                predict(timer_id)
        elif op[0] == "advance":
            advance(clock.now + op[1])
        assert len(wheel) == sum(h.pending() for h in handles)
        trace.append((len(wheel), wheel.next_due()))
    advance(1e30)  # past everything but timers that keep rescheduling themselves
    assert len(wheel) == sum(h.pending() for h in handles)
    trace.append([(h.when, h.pending(), h.cancelled()) for h in handles])
    wheel.close()
    return log, trace


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_twins_agree_and_match_the_model(ops):
    results = [run(twin, ops) for twin in TWINS]
    if len(results) == 2:
        assert results[0][0] == results[1][0], "the twins fired differently"
        assert results[0][1] == results[1][1], "the twins' states differ"
