"""The wheel's synchronous core on both twins, driven by hand with a manual clock."""

import logging
import math
import random

import pytest

RES = 0.01


def recorder(clock, log):
    """A callback that records (arg, the clock's time when it fired)."""
    def fired(arg):
        log.append((arg, clock.now))
    return fired


@pytest.mark.parametrize("res", [0.001, RES, 0.25])
def test_fires_in_due_order_never_early_and_without_delay(twin, clock, res):
    wheel = twin.TimerWheel(clock=clock, resolution=res)
    rng = random.Random(7)
    log = []
    cb = recorder(clock, log)
    due = {}
    start = clock.now
    for i in range(5000):
        delay = rng.choice([rng.uniform(0, 1), rng.uniform(0, 60), rng.uniform(0, 7200)])
        handle = wheel.call_later(delay, cb, i)
        due[i] = handle.when
        assert handle.when == pytest.approx(start + delay)
    assert len(wheel) == 5000
    previous = {}  # advance time -> the advance time before it
    last = start
    # advance one tick at a time through the first second, then in coarse jumps
    for k in range(1, math.ceil(1 / res) + 1):
        clock.now = start + k * res
        previous[clock.now] = last
        last = clock.now
        wheel.advance()
    while len(wheel):
        clock.now += rng.uniform(0, 30)
        previous[clock.now] = last
        last = clock.now
        wheel.advance()
    assert sorted(i for i, _ in log) == list(range(5000))
    previous_tick = -1
    for i, fired_at in log:
        tick = math.ceil(due[i] / res)
        # fired by the first advance whose clock reached the timer's tick
        assert math.floor(fired_at / res) >= tick, "fired early"
        assert math.floor(previous[fired_at] / res) < tick, "fired late"
        assert tick >= previous_tick, "out of due order"
        previous_tick = tick
    wheel.close()


def test_same_tick_fires_in_schedule_order(wheel, clock):
    log = []
    for i in range(10):
        wheel.call_at(clock.now + 0.5, log.append, i)
    clock.now += 0.5
    assert wheel.advance() == 10
    assert log == list(range(10))


def test_advance_returns_count_and_nothing_fires_before_due(wheel, clock):
    log = []
    wheel.call_later(1.0, log.append, "a")
    clock.now += 0.99
    assert wheel.advance() == 0
    clock.now += 0.01
    assert wheel.advance() == 1
    assert log == ["a"]
    assert wheel.advance() == 0


def test_advance_with_explicit_time(wheel, clock):
    log = []
    wheel.call_at(clock.now + 5, log.append, 1)
    assert wheel.advance(clock.now + 4.9) == 0
    assert wheel.advance(clock.now + 5) == 1


def test_cancel_is_idempotent_and_releases_references(wheel, clock):
    log = []
    keep = wheel.call_later(1, log.append, "keep")
    drop = wheel.call_later(1, log.append, "drop")
    assert drop.pending() and not drop.cancelled()
    drop.cancel()
    drop.cancel()
    wheel.cancel(drop)
    assert drop.cancelled() and not drop.pending()
    assert len(wheel) == 1
    clock.now += 2
    wheel.advance()
    assert log == ["keep"]
    assert not keep.cancelled() and not keep.pending()  # fired
    keep.cancel()  # cancelling a fired timer is harmless
    assert keep.cancelled()
    assert len(wheel) == 0


def test_cancelled_timer_drops_its_callback_and_arg(wheel):
    import gc
    import weakref

    class Owner:
        def on_timer(self, arg):
            pass

    owner = Owner()
    handle = wheel.call_later(5, owner.on_timer, owner)
    ref = weakref.ref(owner)
    handle.cancel()
    del owner
    gc.collect()
    assert ref() is None


def test_handle_of_another_wheel_is_refused(twin, wheel, clock):
    other = twin.TimerWheel(clock=clock)
    handle = other.call_later(1, print)
    with pytest.raises(ValueError):
        wheel.cancel(handle)
    with pytest.raises(ValueError):
        wheel.reschedule(handle, 2)
    with pytest.raises(ValueError):
        wheel.cancel("not a handle")
    other.close()


def test_bad_input_is_refused_clearly(twin, wheel, clock):
    with pytest.raises(TypeError):
        wheel.call_later(1, "not callable")
    with pytest.raises(ValueError):
        wheel.call_later(float("nan"), print)
    with pytest.raises(ValueError):
        wheel.call_at(float("nan"), print)
    with pytest.raises(TypeError):
        wheel.call_later("1", print)
    with pytest.raises(ValueError):
        wheel.advance(float("nan"))
    for resolution in (0, -1, float("nan"), 7200, "0.01"):
        with pytest.raises(ValueError):
            twin.TimerWheel(clock=clock, resolution=resolution)
    with pytest.raises(ValueError):
        twin.TimerWheel(loop=object(), clock=clock)
    assert len(wheel) == 0


def test_reschedule_pending_timer_later_and_earlier(wheel, clock):
    log = []
    cb = recorder(clock, log)
    handle = wheel.call_later(10, cb, "h")
    wheel.reschedule(handle, 20)
    assert handle.when == pytest.approx(clock.now + 20)
    assert len(wheel) == 1
    clock.now += 15
    wheel.advance()
    assert log == []
    wheel.reschedule(handle, 0.5)
    clock.now += 0.5
    wheel.advance()
    assert [arg for arg, _ in log] == ["h"]
    assert len(wheel) == 0


def test_reschedule_from_inside_own_callback_makes_a_periodic_timer(wheel, clock):
    log = []

    def tick(arg):
        log.append(clock.now)
        if len(log) < 5:
            wheel.reschedule(handle, 2.0)

    handle = wheel.call_later(2.0, tick)
    for _ in range(20):
        clock.now += 1.0
        wheel.advance()
    assert log == pytest.approx([1002.0, 1004.0, 1006.0, 1008.0, 1010.0])
    assert not handle.pending()


def test_reschedule_a_fired_timer_later(wheel, clock):
    log = []
    handle = wheel.call_later(1, log.append, "x")
    clock.now += 1
    wheel.advance()
    wheel.reschedule(handle, 1)
    assert handle.pending() and len(wheel) == 1
    clock.now += 1
    wheel.advance()
    assert log == ["x", "x"]


def test_reschedule_a_cancelled_timer_is_refused(wheel):
    handle = wheel.call_later(1, print)
    handle.cancel()
    with pytest.raises(ValueError):
        wheel.reschedule(handle, 1)


def test_callback_cancels_and_reschedules_others_due_in_same_tick(wheel, clock):
    log = []
    handles = {}

    def first(arg):
        log.append("first")
        handles["second"].cancel()
        wheel.reschedule(handles["third"], 1.0)

    handles["first"] = wheel.call_later(1, first)
    handles["second"] = wheel.call_later(1, log.append, "second")
    handles["third"] = wheel.call_later(1, log.append, "third")
    clock.now += 1
    assert wheel.advance() == 1
    assert log == ["first"]
    clock.now += 1
    wheel.advance()
    assert log == ["first", "third"]


def test_callback_cancels_itself_while_firing(wheel, clock):
    def selfish(arg):
        handle.cancel()

    handle = wheel.call_later(1, selfish)
    clock.now += 1
    assert wheel.advance() == 1
    assert handle.cancelled() and len(wheel) == 0


def test_past_due_time_from_callback_fires_on_the_next_tick_not_in_a_loop(wheel, clock):
    count = []

    def again(arg):
        count.append(1)
        wheel.reschedule_at(handle, handle.when)  # already due: must wait one tick

    handle = wheel.call_later(0, again)
    clock.now += RES
    wheel.advance()
    assert len(count) == 1
    before = math.floor(clock.now / RES)
    clock.now += 10 * RES
    wheel.advance()
    # once per tick passed, never twice in one tick
    assert len(count) == 1 + math.floor(clock.now / RES) - before
    handle.cancel()


def test_zero_delay_from_callback_does_not_spin(wheel, clock):
    count = []

    def again(arg):
        count.append(1)
        wheel.reschedule(handle, 0)

    handle = wheel.call_later(0, again)
    clock.now += 1
    wheel.advance()
    # due at the clock's time, which the wheel has reached: at most once more
    assert 1 <= len(count) <= 2 and handle.pending()


def test_exception_is_logged_and_the_others_still_fire(wheel, clock, caplog):
    log = []

    def broken(arg):
        raise RuntimeError("boom")

    wheel.call_later(1, log.append, "before")
    wheel.call_later(1, broken, "secret-password")
    wheel.call_later(1, log.append, "after")
    clock.now += 1
    with caplog.at_level(logging.ERROR, logger="gateway.timers"):
        assert wheel.advance() == 3
    assert log == ["before", "after"]
    assert "broken" in caplog.text and "boom" in caplog.text
    assert "secret-password" not in caplog.text


def test_base_exception_escapes_and_the_rest_stay_due(wheel, clock):
    log = []

    def interrupt(arg):
        raise KeyboardInterrupt

    wheel.call_later(1, interrupt)
    wheel.call_later(1, log.append, "later")
    clock.now += 1
    with pytest.raises(KeyboardInterrupt):
        wheel.advance()
    assert log == [] and len(wheel) == 1
    clock.now += RES
    wheel.advance()
    assert log == ["later"]


def test_advance_from_a_callback_is_refused(wheel, clock, caplog):
    errors = []

    def reenter(arg):
        try:
            wheel.advance()
        except RuntimeError as exc:
            errors.append(exc)

    wheel.call_later(1, reenter)
    clock.now += 1
    wheel.advance()
    assert len(errors) == 1


def test_far_future_due_times(wheel, clock):
    log = []
    cb = recorder(clock, log)
    delays = [3600.0, 86400.0 * 3, 86400.0 * 365, 86400.0 * 365 * 30, 1e12, 1e15]
    for delay in delays:
        wheel.call_later(delay, cb, delay)
    never = wheel.call_later(float("inf"), cb, "never")
    assert never.when == float("inf")
    start = clock.now
    for delay in delays:
        clock.now = start + delay - 1
        wheel.advance()
        assert delay not in [d for d, _ in log]
        assert wheel.next_due() <= start + delay
        clock.now = start + delay
        wheel.advance()
        assert log[-1] == (delay, start + delay)
    assert len(log) == len(delays)
    assert never.pending() and len(wheel) == 1


def test_far_future_timer_crossing_every_level_boundary(wheel, clock):
    # a timer due one tick after a boundary of each level must not wait for the level
    log = []
    for level in range(1, 7):
        boundary = (math.floor(clock.now / RES) // 64**level + 1) * 64**level
        wheel.call_at((boundary + 1) * RES - RES / 2, log.append, level)
    for level in range(1, 7):
        boundary = (math.floor(clock.now / RES) // 64**level + 1) * 64**level
        wheel.advance(boundary * RES + RES / 2)
        assert level not in log
        wheel.advance((boundary + 1) * RES + RES / 2)
        assert level in log
    assert sorted(log) == list(range(1, 7))


def test_one_million_pending_timers(wheel, clock):
    count = 1_000_000
    fired = []
    cb = fired.append
    # scattered over ten minutes (three levels of the wheel, 60,000 ticks to go through)
    # by a multiplicative hash, which is cheaper than a random generator
    handles = [wheel.call_later((i * 7919 % 600_000) / 1000, cb, i) for i in range(count)]
    assert len(wheel) == count
    for handle in handles[::2]:
        handle.cancel()
    assert len(wheel) == count // 2
    clock.now += 300
    first_half = wheel.advance()
    clock.now += 300
    second_half = wheel.advance()
    assert first_half + second_half == count // 2 and len(wheel) == 0
    assert sorted(fired) == list(range(1, count, 2))
    whens = [handles[i].when for i in fired]
    ticks = [math.ceil(w / RES) for w in whens]
    assert all(a <= b for a, b in zip(ticks, ticks[1:])), "out of due order"


def test_close_cancels_everything(twin, clock):
    wheel = twin.TimerWheel(clock=clock)
    handles = [wheel.call_later(d, print) for d in (0.1, 100, 1e9)]
    wheel.close()
    assert wheel.closed and len(wheel) == 0
    assert all(h.cancelled() for h in handles)
    with pytest.raises(RuntimeError):
        wheel.call_later(1, print)
    handles[0].cancel()  # harmless
    clock.now += 1e10
    assert wheel.advance() == 0


def test_handle_repr_hides_the_argument(wheel):
    handle = wheel.call_later(1, print, "password=hunter2")
    assert "pending" in repr(handle) and "hunter2" not in repr(handle)
    handle.cancel()
    assert "cancelled" in repr(handle)


def test_next_due_tracks_the_earliest_timer(wheel, clock):
    assert wheel.next_due() is None
    wheel.call_later(500, print)
    wheel.call_later(30, print)
    assert wheel.next_due() == pytest.approx(clock.now + 30, abs=RES)


@pytest.mark.parametrize("distance", [0.3, 45.0, 3000.0, 2e5, 1e8])
def test_neighbours_in_an_upper_slot_fire_at_their_own_ticks(wheel, clock, distance):
    # they share a slot of an upper level, which cascades when the first comes due
    base = math.floor((clock.now + distance) / RES)
    log = []
    for offset in (3, 0, 2, 1, 64, 65):
        wheel.call_at((base + offset) * RES - RES / 4, log.append, offset)
    wheel.advance((base - 1) * RES + RES / 4)
    assert log == []
    for offset in range(66):
        wheel.advance((base + offset) * RES + RES / 4)
        expected = [o for o in (0, 1, 2, 3, 64, 65) if o <= offset]
        assert sorted(log) == expected, offset


def test_fired_timer_in_a_cycle_with_its_owner_is_collected(wheel, clock):
    import gc
    import weakref

    class Flow:
        def __init__(self):
            self.keepalive = wheel.call_later(1, self.on_keepalive)

        def on_keepalive(self, arg):
            pass

    flows = [Flow() for _ in range(3)]
    refs = [weakref.ref(flow) for flow in flows]
    flows[2].keepalive.cancel()
    clock.now += 1
    assert wheel.advance() == 2
    del flows
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


def test_close_from_a_callback_stops_the_rest(twin, clock):
    wheel = twin.TimerWheel(clock=clock)
    log = []

    def closer(arg):
        log.append("closer")
        wheel.close()

    wheel.call_later(1, closer)
    later_same_tick = wheel.call_later(1, log.append, "same tick")
    wheel.call_later(2, log.append, "later")
    clock.now += 5
    assert wheel.advance() == 1
    assert log == ["closer"] and later_same_tick.cancelled() and len(wheel) == 0
