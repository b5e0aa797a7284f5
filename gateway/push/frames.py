"""HTTP/2 frames (RFC 9113 section 4 and 6) as the push client needs them: bytes for the
frames a client sends, and a reader that cuts what arrives into frames.

Only the wire format lives here; what the frames mean for streams, windows and settings
is `gateway.push.http2.Http2Connection`'s business (the one state machine of a
connection). Depends on nothing but the standard library.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5

# error codes (section 7), named as in the RFC for messages
ERRORS = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
          "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
          "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, REFUSED_STREAM, CANCEL = 0, 1, 3, 7, 8

DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
MAX_WINDOW = 2**31 - 1

_HEAD = struct.Struct(">HBBBI")  # length as 16 + 8 bits, type, flags, stream id


class FrameError(Exception):
    """The peer broke the framing rules: the connection cannot go on."""


def error_name(code: int) -> str:
    return ERRORS[code] if 0 <= code < len(ERRORS) else f"error {code}"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _HEAD.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def headers(stream_id: int, block: bytes, max_size: int, end_stream: bool) -> bytes:
    """HEADERS, then CONTINUATIONs when the block is larger than a frame may be."""
    first = END_STREAM if end_stream else 0
    if len(block) <= max_size:
        return frame(HEADERS, first | END_HEADERS, stream_id, block)
    parts = [block[i:i + max_size] for i in range(0, len(block), max_size)]
    out = [frame(HEADERS, first, stream_id, parts[0])]
    out += [frame(CONTINUATION, 0, stream_id, p) for p in parts[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def goaway(last_stream_id: int, code: int) -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise FrameError("SETTINGS of a length not a multiple of 6")
    return [struct.unpack_from(">HI", payload, i) for i in range(0, len(payload), 6)]


def unpad(flags: int, payload: bytes) -> bytes:
    """The payload without padding (and, for HEADERS, without priority fields)."""
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise FrameError("padding longer than the frame")
        payload = payload[1:len(payload) - payload[0]]
    return payload


def u32(payload: bytes, offset: int = 0) -> int:
    return int.from_bytes(payload[offset:offset + 4], "big") & 0x7FFFFFFF


class FrameReader:
    """Bytes in, frames out: `feed(data)` gives the (type, flags, stream id, payload) of
    every frame complete so far; a frame over `max_size` is a FrameError."""

    def __init__(self, max_size: int = DEFAULT_FRAME_SIZE):
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames = []
        at, end = 0, len(buffer)
        while end - at >= 9:
            high, low, kind, flags, stream_id = _HEAD.unpack_from(buffer, at)
            length = (high << 8) | low
            if length > self.max_size:
                raise FrameError(f"a frame of {length} bytes (at most {self.max_size})")
            if end - at - 9 < length:
                break
            frames.append((kind, flags, stream_id & 0x7FFFFFFF, bytes(buffer[at + 9:at + 9 + length])))
            at += 9 + length
        if at:
            del buffer[:at]
        return frames
