"""The HPACK block decoder against hpack (the reference encoder and decoder): the same
fields, the same dynamic table, the same verdict on malformed blocks."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, HPACKError, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.push.headerblock import BlockDecoder

NAMES = [":status", "apns-id", "content-type", "retry-after", "x-caf\u00e9", "server"]
values = st.text(alphabet="abcdef0123456789-\u00e9\u2603 ", max_size=60)
fields = st.tuples(st.sampled_from(NAMES), values, st.booleans())
blocks = st.lists(st.tuples(st.lists(fields, max_size=6), st.booleans(),
                            st.sampled_from([None, None, None, 0, 100, 256, 4096])),
                  min_size=1, max_size=30)


def _table(decoder: BlockDecoder) -> list:
    return [(name.encode(), value.encode()) for name, value, _ in decoder._table]


@settings(max_examples=150, deadline=None)
@given(blocks)
def test_blocks_decode_as_hpack_decodes_them_and_the_tables_stay_in_step(sequence):
    encoder, reference, decoder = Encoder(), Decoder(), BlockDecoder()
    for headers, huffman, resize in sequence:
        if resize is not None:
            encoder.header_table_size = resize
        block = encoder.encode([NeverIndexedHeaderTuple(n, v) if never else (n, v)
                                for n, v, never in headers], huffman=huffman)
        assert decoder.decode(block) == [tuple(h) for h in reference.decode(block)]
        assert _table(decoder) == [e[:2] for e in reference.header_table.dynamic_entries]


def _verdict(decode, data):
    try:
        return [tuple(h) for h in decode(data)]
    except HPACKError:
        return "refused"


@settings(max_examples=400)
@given(st.binary(max_size=16))
def test_garbage_gets_hpacks_verdict(data):
    assert _verdict(BlockDecoder().decode, data) == _verdict(Decoder().decode, data)


@pytest.mark.parametrize("block, why", [
    (b"\x80", "index 0"),
    (b"\xbe", "dynamic index beyond the table"),
    (b"\x40\x01a", "truncated value"),
    (b"\x88\x20", "table size update after a field"),
    (b"\x3f\xe2\x1f", "table size above 4096"),
    (b"\x00\x81\xff\x00", "Huffman string of padding only, 8 bits"),
    (b"\x00\x01a\x01\xff", "not UTF-8"),
])
def test_malformed_blocks_are_refused(block, why):
    with pytest.raises(HPACKError):
        BlockDecoder().decode(block)


def test_the_usual_apns_answer_and_its_table_entry():
    encoder, decoder = Encoder(), BlockDecoder()
    for n in range(3):
        apns_id = f"a1b2c3d4-0000-4000-8000-{n:012d}"
        assert decoder.decode(encoder.encode([(":status", "200"), ("apns-id", apns_id)])) == [
            (":status", "200"), ("apns-id", apns_id)]
    assert [v for _, v, _ in decoder._table][0] == "a1b2c3d4-0000-4000-8000-000000000002"


def test_oversized_header_list_is_refused():
    block = Encoder().encode([("x-big", "a" * 5000)], huffman=False)
    assert BlockDecoder(max_header_list_size=8192).decode(block)
    with pytest.raises(HPACKError):
        BlockDecoder(max_header_list_size=4096).decode(block)
