"""HTTP/2 framing: what the client writes is what h2 (the reference) reads, and the reader
cuts any byte stream into the frames it carries."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from gateway.push import frames
from gateway.push.headerblock import LiteralEncoder


def _server() -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    server.initiate_connection()
    server.data_to_send()
    return server


def test_a_large_header_block_goes_as_headers_and_continuations():
    server = _server()
    block = LiteralEncoder().encode([(":method", "POST"), (":scheme", "https"), (":authority", "a"),
                                     (":path", "/"), ("x-big", "v" * 40_000)])
    wire = frames.headers(1, block, frames.DEFAULT_FRAME_SIZE, end_stream=True)
    assert [f[0] for f in frames.FrameReader().feed(wire)] == [frames.HEADERS] + [frames.CONTINUATION] * 2
    events = server.receive_data(frames.PREFACE + frames.settings({frames.ENABLE_PUSH: 0}) + wire)
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert dict(request.headers)["x-big"] == "v" * 40_000
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_the_reader_waits_for_whole_frames_across_reads():
    wire = frames.window_update(0, 1000) + frames.rst_stream(3, frames.CANCEL) + frames.frame(frames.PING, 0, 0, b"12345678")
    reader = frames.FrameReader()
    got = []
    for i in range(len(wire)):  # one byte at a time
        got += reader.feed(wire[i:i + 1])
    assert got == [(frames.WINDOW_UPDATE, 0, 0, (1000).to_bytes(4, "big")),
                   (frames.RST_STREAM, 0, 3, (frames.CANCEL).to_bytes(4, "big")),
                   (frames.PING, 0, 0, b"12345678")]


def test_an_oversized_frame_or_bad_padding_is_a_frame_error():
    with pytest.raises(frames.FrameError):
        frames.FrameReader().feed(frames.frame(frames.DATA, 0, 1, b"x" * (frames.DEFAULT_FRAME_SIZE + 1)))
    with pytest.raises(frames.FrameError):
        frames.unpad(frames.PADDED, b"\x05abc")
    assert frames.unpad(frames.PADDED, b"\x02abcXX") == b"abc"
    with pytest.raises(frames.FrameError):
        frames.parse_settings(b"\x00\x01\x00")


def test_server_frames_parse_as_h2_wrote_them():
    server = _server()
    server.receive_data(frames.PREFACE + frames.settings({frames.ENABLE_PUSH: 0}))
    server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7})
    got = frames.FrameReader().feed(server.data_to_send())
    settings = [frames.parse_settings(p) for kind, flags, _, p in got if kind == frames.SETTINGS and not flags & frames.ACK]
    assert (frames.MAX_CONCURRENT_STREAMS, 7) in settings[-1]
    assert frames.error_name(frames.REFUSED_STREAM) == "REFUSED_STREAM" and frames.error_name(99) == "error 99"
