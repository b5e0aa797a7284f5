"""The answer classifiers never raise, whatever a push service (or a proxy in front of it)
sends back, and map the statuses consistently."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.push import apns, fcm, webpush

statuses = st.integers(min_value=100, max_value=599)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda r: b'{"reason": "%s"}' % r.encode(), st.text(max_size=30).filter(lambda t: '"' not in t and "\\" not in t)),
    st.just(b'{"error": {"details": [{"errorCode": 7}, "x", {"fieldViolations": null}]}}'),
    st.just(b'{"error": null}'),
    st.just(b"[]"),
)
retry_headers = st.one_of(st.none(), st.text(max_size=40))


@given(statuses, bodies, retry_headers)
def test_apns_classify_never_raises(status, body, header):
    result = apns.classify(status, body, header)
    assert isinstance(result.reason, str) and (result.reason or status == 200)
    assert (result.outcome == "delivered") == (status == 200)
    if status == 410:
        assert result.outcome == "dead_target"


@given(statuses, bodies)
def test_fcm_classify_never_raises(status, body):
    result = fcm.classify(status, body)
    assert isinstance(result.reason, str) and (result.reason or status == 200)
    assert (result.outcome == "delivered") == (status == 200)
    if status >= 500:
        assert result.outcome == "retry_later"


@given(statuses)
def test_webpush_classify(status):
    result = webpush.classify(status)
    assert (result.outcome == "delivered") == (status in (200, 201, 202))


@given(retry_headers)
def test_retry_after_is_seconds_or_none(header):
    from gateway.push.base import retry_after

    value = retry_after(header)
    assert value is None or value >= 0


def test_retry_after_forms():
    from gateway.push.base import retry_after

    assert retry_after("120") == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("²") is None and retry_after("soon") is None and retry_after(None) is None
