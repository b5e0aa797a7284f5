"""The lean HPACK encoder against hpack's own decoder (the reference), and inside h2."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from hpack import Decoder, HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import given
from hypothesis import strategies as st

from gateway.push.headerblock import LiteralEncoder, encode_field, encode_integer

REQUEST = [
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "api.push.apple.com"),
    NeverIndexedHeaderTuple(":path", "/3/device/" + "ab" * 32),
    ("apns-push-type", "voip"),
    ("authorization", "bearer " + "x" * 200),
    ("Apns-Topic", "com.example.phone.voip"),
]


def _decoded(block: bytes, decoder: Decoder | None = None) -> list:
    return (decoder or Decoder()).decode(block, raw=False)


def test_a_request_decodes_to_what_was_encoded_with_names_lowercased():
    decoded = _decoded(LiteralEncoder().encode(REQUEST))
    assert decoded == [(n.lower(), v) for n, v in REQUEST]


def test_static_matches_are_one_byte_and_the_table_is_never_used():
    assert encode_field(b":method", b"POST") == b"\x83"
    assert encode_field(b":scheme", b"https") == b"\x87"
    decoder = Decoder()
    encoder = LiteralEncoder()
    for _ in range(3):
        _decoded(encoder.encode(REQUEST), decoder)
    assert len(decoder.header_table.dynamic_entries) == 0


def test_never_indexed_fields_keep_their_flag():
    decoded = Decoder().decode(LiteralEncoder().encode([NeverIndexedHeaderTuple("apns-id", "u-1")]), raw=True)
    assert decoded == [(b"apns-id", b"u-1")]
    assert isinstance(decoded[0], HeaderTuple) and not decoded[0].indexable


def test_a_lowered_table_size_is_announced_in_the_next_block_only():
    encoder = LiteralEncoder()
    assert encoder.encode([("a", "b")]).startswith(b"\x20")
    assert not encoder.encode([("a", "b")]).startswith(b"\x20")
    encoder.header_table_size = 0
    assert encoder.encode([("a", "b")]).startswith(b"\x20")
    assert encoder.header_table_size == 0


@pytest.mark.parametrize("value, prefix, expected", [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (42, 8, b"\x2a")])
def test_integers_follow_rfc_7541_appendix_c1(value, prefix, expected):
    assert encode_integer(value, prefix, 0) == expected


@given(st.lists(st.tuples(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-:", min_size=1, max_size=300),
                          st.text(max_size=500)), max_size=12))
def test_any_fields_round_trip(fields):
    decoder = Decoder()
    assert _decoded(LiteralEncoder().encode(fields), decoder) == fields


def test_h2_carries_our_blocks_to_a_server():
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        normalize_outbound_headers=False))
    client.encoder = LiteralEncoder()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for stream_id in (1, 3):
        client.send_headers(stream_id, REQUEST, end_stream=True)
        events = server.receive_data(client.data_to_send())
        received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
        assert received and received[0].stream_id == stream_id
        assert list(received[0].headers) == [(n.lower(), v) for n, v in REQUEST]
