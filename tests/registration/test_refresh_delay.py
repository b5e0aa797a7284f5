"""refresh_delay(): a tenth early (2 s to 2 minutes), jitter only ever earlier."""

import pytest

from gateway.sip.registration import refresh_delay


@pytest.mark.parametrize("granted, expected", [
    (3600, 3480.0),   # capped lead: 2 minutes
    (600, 540.0),     # a tenth
    (10, 8.0),        # at least 2 s
    (3, 1.5),         # half, when the expiry is under 4 s
    (1, 0.5),         # never below half a second
    (0, 0.5),
])
@pytest.mark.parametrize("spread", [0.0, 0.1, 0.5, 1.0])
def test_drawn_within_the_spread_and_never_late(granted, expected, spread):
    values = [refresh_delay(granted, spread) for _ in range(2000)]
    assert all(expected * (1 - spread) <= v <= expected for v in values)
    if spread == 0.0:
        assert set(values) == {expected}
    else:  # spread over the range, not stuck at one end
        width = expected * spread
        assert min(values) < expected - 0.8 * width and max(values) > expected - 0.2 * width


@pytest.mark.parametrize("spread", [-0.1, 1.5, float("nan")])
def test_a_spread_out_of_range_is_refused(spread):
    with pytest.raises(ValueError, match="spread"):
        refresh_delay(600, spread)
