"""The pure-Python twin of `_ext/sipparse.pyx`: SIP datagrams and streams to messages.

Public names (identical in both twins): `parse_message`, `StreamParser`, `ParseLimits`,
`KEEPALIVE_PING`, `KEEPALIVE_PONG`. Use them through `gateway.sip.parsing`, never directly.

What is checked, in this order (the Cython twin keeps the same order, so both report the
same error for the same message):

1. size against `limits.max_message_size` (513);
2. the start line: `SIP/2.0 NNN reason` or `METHOD SP Request-URI SP SIP/2.0` with single
   spaces, a token method, a URI with a valid scheme and, for sip/sips, no headers
   (other versions: 505);
3. the header lines: CRLF only, folding (a line starting with SP/HT continues the field),
   `token *WSP ":"`, at most `limits.max_headers` fields (513);
4. the fields routing needs: one Call-ID (no whitespace), one CSeq (number < 2**31, token
   method), one From and one To (their tags), the top Via (its branch), at most one
   Content-Length (digits);
5. presence of Call-ID, CSeq, From, To, Via; a request's CSeq method equals its method;
6. the body: on a datagram Content-Length may be missing (the rest is the body) and extra
   octets are dropped; on a stream it is mandatory and frames the message.

Every other field is parsed on first access (see `message.py`). Depends on the model.
"""

from __future__ import annotations

from gateway.errors import ParseError
from gateway.sip.fields import CANONICAL, header_tag, parse_cseq, via_branch
from gateway.sip.grammar import TOKEN_CHARS, bad, too_large
from gateway.sip.message import (
    DEFAULT_LIMITS,
    KEEPALIVE_PING,
    KEEPALIVE_PONG,
    Headers,
    ParseLimits,
    _parsed_request,
    _parsed_response,
)
from gateway.sip.uri import scheme_end

__all__ = ["parse_message", "StreamParser", "ParseLimits", "KEEPALIVE_PING",
           "KEEPALIVE_PONG"]

_REQUIRED = ("call_id", "Call-ID"), ("cseq", "CSeq"), ("from_tag", "From"), \
    ("to_tag", "To"), ("branch", "Via")


def _version_error() -> ParseError:
    return ParseError("unsupported SIP version", status=505, reason="Version Not Supported")


def _status_line(line: str):
    if line[:8] != "SIP/2.0 ":
        raise bad("malformed status line") if line[:7] == "SIP/2.0" else _version_error()
    code = line[8:11]
    if len(code) != 3 or not all("0" <= c <= "9" for c in code) or not "1" <= code[0] <= "6":
        raise bad("malformed status code")
    if len(line) > 11 and line[11] != " ":
        raise bad("malformed status code")
    return int(code), line[12:]


def _request_line(line: str):
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise bad("malformed request line")
    method, uri, version = parts
    if not all(c in TOKEN_CHARS for c in method):
        raise bad("malformed method")
    if scheme_end(uri) < 0 or not uri.isascii() or any(c in '<>"' or c <= " " or c == "\x7f"
                                                          for c in uri):
        raise bad("malformed Request-URI")
    if uri[:4].lower() in ("sip:", "sips") and "?" in uri[uri.rfind("@") + 1 :]:
        raise bad("headers in Request-URI")
    if version != "SIP/2.0":
        raise _version_error() if version.startswith("SIP/") else bad("malformed request line")
    return method, uri


def _split_fields(lines: list[str], limits: ParseLimits) -> list[list]:
    """Group header lines into [name, value parts] (unfolding), checking names and count."""
    fields: list[list] = []
    for line in lines:
        if "\r" in line or "\n" in line:
            raise bad("bare CR or LF in header")
        if line[:1] in (" ", "\t"):
            if not fields:
                raise bad("malformed header line")
            fields[-1].append(line)
            continue
        colon = line.find(":")
        if colon < 0:
            raise bad("malformed header line")
        name = line[:colon].rstrip(" \t")
        if not name or not all(c in TOKEN_CHARS for c in name):
            raise bad("malformed header name")
        if len(fields) >= limits.max_headers:
            raise too_large("too many header fields")
        fields.append([name, line[colon + 1 :]])
    return fields


def _parse_head(head: str, limits: ParseLimits):
    """Parse the start line and header section; returns (message without body, CL|None)."""
    lines = head.split("\r\n")
    start = lines[0]
    if "\r" in start or "\n" in start:
        raise bad("bare CR or LF in start line")
    if start[:4] == "SIP/":
        status, reason = _status_line(start)
        method = None
    else:
        method, uri = _request_line(start)
    fields = []
    cache: dict = {}
    content_length = None
    for name, *parts in _split_fields(lines[1:], limits):
        value = " ".join(s for s in (p.strip(" \t") for p in parts) if s)
        lower = name.lower()
        canonical = CANONICAL.get(lower, name)
        key = canonical.lower() if canonical is not name else lower
        fields.append((key, canonical, value))
        if key == "via":
            if "branch" not in cache:
                cache["branch"] = via_branch(value)
        elif key == "call-id":
            if "call_id" in cache:
                raise bad("more than one Call-ID")
            if not value or " " in value or "\t" in value:
                raise bad("malformed Call-ID")
            cache["call_id"] = value
        elif key == "cseq":
            if "cseq" in cache:
                raise bad("more than one CSeq")
            cache["cseq"] = parse_cseq(value)
        elif key == "from" or key == "to":
            slot = "from_tag" if key == "from" else "to_tag"
            if slot in cache:
                raise bad(f"more than one {canonical}")
            cache[slot] = header_tag(value, canonical)
        elif key == "content-length":
            if content_length is not None:
                raise bad("more than one Content-Length")
            if not value or not all("0" <= c <= "9" for c in value):
                raise bad("malformed Content-Length")
            content_length = int(value)
    for slot, name in _REQUIRED:
        if slot not in cache:
            raise bad(f"missing {name}")
    if method is not None and cache["cseq"].method != method:
        raise bad("CSeq method does not match the request method")
    headers = Headers._from_parser(fields, cache)
    if method is None:
        return _parsed_response(status, reason, headers, b""), content_length
    return _parsed_request(method, uri, headers, b""), content_length


def _decode(data) -> str:
    return data.decode("utf-8", "surrogateescape")


def parse_message(data: bytes, limits: ParseLimits | None = None):
    """Parse one datagram: a Request or Response, or a Keepalive for a bare CRLF (pong) or
    CRLFCRLF (ping) datagram. Raises ParseError (with `raw` set to the data) and nothing
    else."""
    data = bytes(data)
    try:
        return _parse_datagram(data, limits or DEFAULT_LIMITS)
    except ParseError as exc:
        exc.raw = data
        raise


def _parse_datagram(data: bytes, limits: ParseLimits):
    n = len(data)
    if n > limits.max_message_size:
        raise too_large("message larger than the limit")
    pos = 0
    while data[pos : pos + 2] == b"\r\n":  # RFC 3261 7.5: CRLFs before the start line
        pos += 2
    if pos == n:
        if n == 0:
            raise bad("empty message")
        return KEEPALIVE_PING if n >= 4 else KEEPALIVE_PONG
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        raise bad("no end of header section")
    message, content_length = _parse_head(_decode(data[pos:end]), limits)
    body_start = end + 4
    if content_length is None:
        message.body = data[body_start:]
        message.headers._cache["content_length"] = n - body_start
    else:
        if content_length > n - body_start:
            raise bad("Content-Length larger than the message")
        message.body = data[body_start : body_start + content_length]
        message.headers._cache["content_length"] = content_length
    return message


class StreamParser:
    """Frames a TCP/TLS byte stream into messages and keepalives.

    `feed(data)` returns the complete items, in order. Content-Length is mandatory and
    frames each message across partial reads. Between messages, CRLFCRLF is a
    KEEPALIVE_PING and a lone CRLF a KEEPALIVE_PONG (a CRLF that ends a read is reported
    as a pong at once; if the next read starts with CRLF the pair is reported as a ping).

    A malformed message breaks the framing: the parser raises ParseError and keeps raising
    it on every later `feed()`; the caller answers if it can and closes the connection.
    Items completed before the bad message in the same read are returned first; the error
    comes with the next `feed()` call (`feed(b"")` is enough).
    """

    def __init__(self, limits: ParseLimits | None = None):
        self._limits = limits or DEFAULT_LIMITS
        self._buf = bytearray()
        self._error: ParseError | None = None
        self._head = None  # (message, body_start, total) while waiting for the body
        self._half_ping = False

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned item."""
        return len(self._buf)

    def feed(self, data: bytes) -> list:
        if self._error is not None:
            raise self._error.with_traceback(None)  # no growing traceback
        self._buf += data
        items: list = []
        try:
            while True:
                item = self._next()
                if item is None:
                    return items
                items.append(item)
        except ParseError as exc:
            self._error = exc
            if items:
                return items
            raise

    def _next(self):
        buf = self._buf
        n = len(buf)
        if n == 0:
            return None
        if self._head is None and buf[0] == 13:  # CR at a message boundary: keepalive
            if n < 2:
                return None
            if buf[1] != 10:
                raise bad("bare CR or LF between messages")
            if self._half_ping:
                self._half_ping = False
                del buf[:2]
                return KEEPALIVE_PING
            if n >= 4 and buf[2:4] == b"\r\n":
                del buf[:4]
                return KEEPALIVE_PING
            if n == 3 and buf[2] == 13:
                return None  # CR LF CR: the rest decides
            del buf[:2]
            self._half_ping = n == 2
            return KEEPALIVE_PONG
        self._half_ping = False
        if self._head is None:
            self._head = self._frame_head(buf)
            if self._head is None:
                return None
        message, body_start, total = self._head
        if n < total:
            return None
        message.body = bytes(buf[body_start:total])
        del buf[:total]
        self._head = None
        return message

    def _frame_head(self, buf: bytearray):
        limit = self._limits.max_message_size
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) >= limit:
                raise too_large("header section larger than the limit")
            return None
        body_start = end + 4
        if body_start > limit:
            raise too_large("header section larger than the limit")
        try:
            message, content_length = _parse_head(_decode(buf[:end]), self._limits)
            if content_length is None:
                raise bad("missing Content-Length")
            if body_start + content_length > limit:
                raise too_large("message larger than the limit")
        except ParseError as exc:
            exc.raw = bytes(buf[:body_start])
            raise
        message.headers._cache["content_length"] = content_length
        return message, body_start, body_start + content_length
