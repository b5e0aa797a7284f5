"""RFC 7541 Huffman decoding, both twins (`gateway.push.huffman`, `_ext/huffman.pyx`),
against hpack's encoder and decoder: the same bytes back, the same verdict on padding,
EOS and garbage."""

from __future__ import annotations

import pytest
from hpack import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import _accel
from gateway.push import headerblock
from tests.twins import load_both

TWINS = load_both("_huffman", "push.huffman")
ENCODE = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode


@pytest.fixture(params=TWINS)
def decode(request):
    return request.param.decode_huffman


def _verdict(decode, data: bytes):
    try:
        return decode(data)
    except HPACKDecodingError:
        return "refused"


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_round_trip(raw):
    for twin in TWINS:
        assert twin.values[0].decode_huffman(ENCODE(raw)) == raw


@settings(max_examples=600)
@given(st.binary(max_size=24))
def test_garbage_gets_hpacks_verdict(data):
    expected = _verdict(hpack_decode, data)
    for twin in TWINS:
        assert _verdict(twin.values[0].decode_huffman, data) == expected


def test_an_apns_id_as_h2_sends_it(decode):
    apns_id = b"6f1d2c3a-9b8e-4f70-a1b2-c3d4e5f60718"
    assert decode(ENCODE(apns_id)) == apns_id
    assert decode(b"") == b""


@pytest.mark.parametrize("data, why", [
    (b"\xff", "8 bits of padding"),
    (b"\x00", "padding of zeros"),            # '0' (00000) then 000 as padding
    (b"\xff\xff\xff\xfc", "EOS (30 ones) inside the string"),
    (ENCODE(b"a") + b"\xff", "a whole padding byte after a full string"),
])
def test_bad_padding_and_eos_are_refused(decode, data, why):
    with pytest.raises(HPACKDecodingError):
        decode(data)
    assert _verdict(hpack_decode, data) == "refused"  # as hpack says


def test_the_block_decoder_uses_the_chosen_twin():
    expected = "python" if _accel.FORCE_PYTHON else "cython"
    assert _accel.chosen["_huffman"] == expected
    twin = TWINS[0 if _accel.FORCE_PYTHON else 1].values[0]
    assert headerblock.decode_huffman is twin.decode_huffman
