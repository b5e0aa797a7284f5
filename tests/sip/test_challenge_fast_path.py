"""The plain-shape reader of WWW-Authenticate / Proxy-Authenticate values
(`fields._single_challenge`) against the general parser (`Challenge._parse_list`): for
every value it accepts, both give the same scheme and parameters; what it declines goes
to the general parser, whose errors stay the only errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ParseError
from gateway.sip.fields import Challenge, _single_challenge


def general(value: str):
    try:
        return [(c.scheme, c.params) for c in Challenge._parse_list(value, "WWW-Authenticate")]
    except ParseError as exc:
        return exc.reason


KAMAILIO = 'Digest realm="example.org", nonce="ZPO2K2Tzsf8v+TFwqOJaSPzcVHYpKCWt", qop="auth"'


@pytest.mark.parametrize("value, expected", [
    (KAMAILIO, ("Digest", {"realm": "example.org", "nonce": "ZPO2K2Tzsf8v+TFwqOJaSPzcVHYpKCWt",
                           "qop": "auth"})),
    ('Digest realm="a\\"b\\\\c",algorithm=SHA-256 ,  stale=TRUE',
     ("Digest", {"realm": 'a"b\\c', "algorithm": "SHA-256", "stale": "TRUE"})),
    ('Digest REALM = "x", realm="second", opaque=""', ("Digest", {"realm": "x", "opaque": ""})),
    ('Digest qop="auth,auth-int", nonce=a;b', ("Digest", {"qop": "auth,auth-int", "nonce": "a;b"})),
])
def test_plain_challenges_are_read_by_the_fast_path(value, expected):
    assert _single_challenge(value) == expected
    assert general(value) == [expected]
    (challenge,) = Challenge.parse_all(value)
    assert (challenge.scheme, challenge.params) == expected


@pytest.mark.parametrize("value", [
    'Digest realm="a", Basic realm="b"',   # two challenges
    'Digest realm="a",',                    # trailing comma (an empty element)
    'Digest realm="a",, nonce="n"',         # empty element inside
    'Digest',                               # a scheme alone
    'realm="a"',                            # no scheme
    ' Digest realm="a"',                    # not stripped
    'Digest realm="a"x',                    # text after a quoted string
    'Digest realm=a b',                     # whitespace inside a token value
    'Digest realm="unterminated',
    'Digest realm=<x>, nonce=n',            # angle brackets change the list split
    'Digest realm=a"b"',
])
def test_other_shapes_are_left_to_the_general_parser(value):
    assert _single_challenge(value) is None
    try:
        parsed = [(c.scheme, c.params) for c in Challenge.parse_all(value)]
    except ParseError as exc:
        parsed = exc.reason
    assert parsed == general(value)


NAMES = st.sampled_from(["realm", "NONCE", "qop", "a-1", "x"] * 3 + ["", "r e", "é"])
VALUES = st.sampled_from(['"example.org"', '""', '"a,b"', '"\\""', '"\\\\"', '"<x>"', "auth",
                          "SHA-256", "a;b", "a b", 'a"b', "<x>", "", '"open', "é", '"a"b'])
GAPS = st.sampled_from(["", " ", "\t", "  "])
SEPARATORS = st.sampled_from([",", " , ", ", "] * 3 + [",,", ";", ""])


@st.composite
def challenge_values(draw):
    """Mostly well-shaped challenges, with the grammar's sharp edges mixed in."""
    out = [draw(st.sampled_from(["Digest"] * 6 + ["Basic", "", " Digest", "Digest="])), " "]
    for k in range(draw(st.integers(1, 4))):
        if k:
            out.append(draw(SEPARATORS))
        out += [draw(GAPS), draw(NAMES), draw(GAPS), draw(st.sampled_from(["="] * 8 + [""])),
                draw(GAPS), draw(VALUES), draw(GAPS)]
    if draw(st.integers(0, 4)) == 0:
        out.append(draw(st.sampled_from([",", ", Basic realm=x", " x"])))
    return "".join(out)


@settings(max_examples=1500, deadline=None)
@given(challenge_values())
def test_fast_path_agrees_with_the_general_parser(value):
    fast = _single_challenge(value)
    if fast is not None:
        assert general(value) == [fast]
