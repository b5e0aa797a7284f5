"""The SIP message model shared by both parser twins, and its serializer.

`Request` and `Response` hold the start line, the `Headers` and the body. The parser fills
in eagerly only what routing needs (top Via branch, Call-ID, CSeq, From/To tags,
Content-Length); everything else (`via`, `from_`, `contacts`, challenges, the Request-URI)
is parsed from the header text on first access and may raise `ParseError` then.
`check()` parses all of it at once.

For the UAC side:

    req = Request("REGISTER", "sip:example.com", headers=[("Via", "..."), ("From", ...)])
    req.headers.set("Expires", "600"); req.body = b""; wire = req.encode()

`encode()` writes the start line, the fields in order and a Content-Length matching the
body. `redacted()` renders a message for logs without credentials or push tokens.

Depends on `gateway.errors` and the grammar, URI and field modules; never on a parser.
"""

from __future__ import annotations

import enum
import re

import msgspec
from gateway.errors import ParseError

from gateway.sip.fields import (
    Challenge,
    CSeq,
    Headers,
    Via,
    canonical_name,
    check_date,
    header_tag,
    parse_cseq,
    via_branch,
)
from gateway.sip.grammar import TOKEN_CLASS, bad, split_list
from gateway.sip.uri import NameAddr, SipUri

__all__ = [
    "Request", "Response", "Message", "Headers", "SipUri", "NameAddr", "Via", "CSeq",
    "Challenge", "ParseLimits", "Keepalive", "KEEPALIVE_PING", "KEEPALIVE_PONG", "redacted",
    "reply_fields",
]

SIP_VERSION = "SIP/2.0"

# What the From, To and Request-URI of nearly every call look like: a lower-case sip(s)
# URI of user@host[:port] (no escapes, password, parameters or headers in a name-addr's
# URI; token parameters in a Request-URI), then token parameters. For such a text the
# URI parser cannot fail and `str()` of its URI gives the same text back, so the fields
# a call's push carries are read with one match instead of a NameAddr and a SipUri
# (~30 us a call); anything else goes through the parsers, errors included.
_USER_AT_HOSTPORT = (r"sips?:([A-Za-z0-9_.!~*'()+-]+)@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                     r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}))?")  # no leading 0, <= 65535
_TOKEN_PARAMS = rf"(?:[ \t]*;[ \t]*{TOKEN_CLASS}+(?:=[ \t]*{TOKEN_CLASS}+)?)*[ \t]*"
_PLAIN_NAME_ADDR = re.compile(
    rf'[ \t]*(?:"([^"\\]*)"[ \t]*)?<({_USER_AT_HOSTPORT})>{_TOKEN_PARAMS}')
_PLAIN_URI = re.compile(rf"{_USER_AT_HOSTPORT}(?:;{TOKEN_CLASS}+(?:={TOKEN_CLASS}+)?)*")


class ParseLimits(msgspec.Struct, frozen=True):
    """Limits the parser enforces before looking at a message's content."""

    #: bytes in one message (start line, headers and body); RFC 3261's UDP maximum
    max_message_size: int = 65535
    #: header fields in one message
    max_headers: int = 128

    def __post_init__(self):
        if not 1 <= self.max_message_size <= 0x7FFFFFFF:
            raise ValueError("max_message_size must be between 1 and 2147483647")
        if not 1 <= self.max_headers <= 65535:
            raise ValueError("max_headers must be between 1 and 65535")


DEFAULT_LIMITS = ParseLimits()


class Keepalive(enum.Enum):
    """A keepalive between messages on a stream (RFC 5626 3.5.1): a double CRLF "ping"
    asks for a single CRLF "pong"."""

    PING = b"\r\n\r\n"
    PONG = b"\r\n"


KEEPALIVE_PING = Keepalive.PING
KEEPALIVE_PONG = Keepalive.PONG

_MISSING = object()


class Message:
    """What requests and responses share: header fields and the body."""

    __slots__ = ("headers", "body")

    def __init__(self, headers=(), body: bytes = b""):
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)

    # -- raw access ------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def get_all(self, name: str) -> list[str]:
        return self.headers.get_all(name)

    def _cached(self, key: str, compute):
        cache = self.headers._cache
        value = cache.get(key, _MISSING)
        if value is _MISSING:
            value = cache[key] = compute()
        return value

    def _single(self, name: str) -> str:
        values = self.headers.fields(name)
        if not values:
            raise bad(f"missing {name}")
        if len(values) > 1:
            raise bad(f"more than one {name}")
        return values[0]

    # -- what routing needs (filled in by the parser) ---------------------------------------
    @property
    def call_id(self) -> str:
        return self._cached("call_id", lambda: self._single("Call-ID"))

    @property
    def cseq(self) -> CSeq:
        return self._cached("cseq", lambda: parse_cseq(self._single("CSeq")))

    @property
    def branch(self) -> str | None:
        """The branch of the top Via (the transaction id), None when absent."""
        return self._cached("branch", self._top_branch)

    def _top_branch(self):
        value = self.headers.get("Via")
        return None if value is None else via_branch(value)

    @property
    def from_tag(self) -> str | None:
        return self._cached("from_tag", lambda: self._tag("From"))

    @property
    def to_tag(self) -> str | None:
        return self._cached("to_tag", lambda: self._tag("To"))

    def _tag(self, name: str):
        return header_tag(self._single(name), name)

    @property
    def content_length(self) -> int:
        """The Content-Length field if present (as parsed), else the body's length."""
        if "content-length" not in self.headers:
            return len(self.body)  # not cached: the body may still change
        return self._cached("content_length", self._content_length)

    def _content_length(self) -> int:
        values = self.headers.fields("Content-Length")
        if len(values) > 1:
            raise bad("more than one Content-Length")
        if not values[0].isascii() or not values[0].isdigit():
            raise bad("malformed Content-Length")
        return int(values[0])

    # -- parsed on first access -----------------------------------------------------------
    @property
    def via(self) -> list[Via]:
        return self._cached("via", lambda: [Via.parse(v) for v in self._elements("Via")])

    @property
    def top_via(self) -> Via | None:
        """The first Via value alone (where a response goes), without parsing the rest."""
        return self._cached("top_via", self._top_via)

    def _top_via(self) -> Via | None:
        value = self.headers.get("Via")
        if value is None:
            return None
        first = split_list(value, "Via")[0]
        if not first:
            raise bad("empty element in Via")
        return Via.parse(first)

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: NameAddr.parse(self._single("From"), "From"))

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: NameAddr.parse(self._single("To"), "To"))

    def addr_texts(self, name: str) -> tuple[str | None, str]:
        """(display name, URI text) of the From or To (`name`) as `from_` / `to` give
        them (`display_name`, `str(uri)`), without building them when the value is
        plain (`_PLAIN_NAME_ADDR`); `ParseError` as they raise it."""
        key = "from" if name == "From" else "to"
        parsed = self.headers._cache.get(key)
        if parsed is None:
            found = _PLAIN_NAME_ADDR.fullmatch(self._single(name))
            if found is not None:
                return found.group(1), found.group(2)
            parsed = self.from_ if key == "from" else self.to
        return parsed.display_name, str(parsed.uri)

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact binding (`Contact: *` gives one wildcard NameAddr)."""
        return self._cached("contacts", lambda: self._name_addrs("Contact"))

    @property
    def routes(self) -> list[NameAddr]:
        return self._cached("routes", lambda: self._name_addrs("Route"))

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._cached("record_routes", lambda: self._name_addrs("Record-Route"))

    @property
    def max_forwards(self) -> int | None:
        return self._cached("max_forwards", lambda: self._number("Max-Forwards", 255))

    @property
    def expires(self) -> int | None:
        """The Expires header field (seconds), None when absent."""
        return self._cached("expires", lambda: self._number("Expires", 0xFFFFFFFF))

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def www_authenticate(self) -> list[Challenge]:
        return self._cached("www_authenticate", lambda: self._challenges("WWW-Authenticate"))

    @property
    def proxy_authenticate(self) -> list[Challenge]:
        return self._cached("proxy_authenticate",
                            lambda: self._challenges("Proxy-Authenticate"))

    def _elements(self, name: str) -> list[str]:
        parts = [p for v in self.headers.fields(name) for p in split_list(v, name)]
        if any(not p for p in parts):
            raise bad(f"empty element in {name}")
        return parts

    def _name_addrs(self, name: str) -> list[NameAddr]:
        items = [NameAddr.parse(p, name, wildcard_ok=name == "Contact")
                 for p in self._elements(name)]
        if name == "Contact" and any(c.wildcard for c in items) and len(items) > 1:
            raise bad("Contact * mixed with other contacts")
        return items

    def _number(self, name: str, maximum: int) -> int | None:
        values = self.headers.fields(name)
        if not values:
            return None
        value = self._single(name)
        if not value.isascii() or not value.isdigit() or int(value) > maximum:
            raise bad(f"malformed {name}")
        return int(value)

    def _challenges(self, name: str) -> list[Challenge]:
        return [c for v in self.headers.fields(name) for c in Challenge.parse_all(v, name)]

    def check(self) -> None:
        """Parse every field the model knows, raising `ParseError` on the first bad one."""
        _ = (self.call_id, self.cseq, self.branch, self.from_tag, self.to_tag,
             self.content_length, self.top_via, self.via, self.from_, self.to, self.contacts,
             self.routes, self.record_routes, self.max_forwards, self.expires,
             self.www_authenticate, self.proxy_authenticate)
        for contact in self.contacts:
            _ = contact.expires, contact.q
        for value in self.headers.fields("Date"):
            check_date(value)

    # -- serializer -----------------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message on the wire, with a Content-Length matching the body (where the
        field was, else last)."""
        # one comprehension for the usual message (at most one Content-Length): every
        # response we send goes through here
        length = f"Content-Length: {len(self.body)}"
        lines = [f"{name}: {value}" if key != "content-length" else length
                 for key, name, value in self.headers._fields]
        count = lines.count(length)  # only a Content-Length field renders as that
        if count <= 1:
            if not count:
                lines.append(length)
            head = "\r\n".join([self._start_line(), *lines]) + "\r\n\r\n"
            return head.encode("utf-8", "surrogateescape") + self.body
        lines = [self._start_line()]
        length = None
        for key, name, value in self.headers._fields:
            if key != "content-length":
                lines.append(f"{name}: {value}")
            elif length is None:
                length = f"Content-Length: {len(self.body)}"
                lines.append(length)
        if length is None:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    """A SIP request. `uri` is parsed on first access; `uri_text` is the raw text."""

    __slots__ = ("method", "_uri", "_uri_text")

    def __init__(self, method: str, uri: SipUri | str, headers=(), body: bytes = b""):
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    @property
    def uri(self) -> SipUri:
        if self._uri is None:
            self._uri = SipUri.parse(self._uri_text, "Request-URI")
        return self._uri

    @uri.setter
    def uri(self, value: SipUri | str) -> None:
        if isinstance(value, SipUri):
            self._uri, self._uri_text = value, None
        else:
            self._uri, self._uri_text = None, str(value)

    @property
    def uri_text(self) -> str:
        return self._uri_text if self._uri is None else str(self._uri)

    @property
    def uri_user(self) -> str | None:
        """`uri.user`, read from the text without parsing the URI when it is plain
        (`_PLAIN_URI`); `ParseError` as `uri` raises it."""
        if self._uri is None:
            found = _PLAIN_URI.fullmatch(self._uri_text)
            if found is not None:
                return found.group(1)
        return self.uri.user

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_text} {SIP_VERSION}"

    def check(self) -> None:
        _ = self.uri
        super().check()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str = "", headers=(), body: bytes = b""):
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _parsed_request(method: str, uri_text: str, headers: Headers, body: bytes) -> Request:
    """How both parser twins build a request without re-validating what they parsed."""
    msg = Request.__new__(Request)
    msg.headers, msg.body = headers, body
    msg.method, msg._uri, msg._uri_text = method, None, uri_text
    return msg


def _parsed_response(status: int, reason: str, headers: Headers, body: bytes) -> Response:
    msg = Response.__new__(Response)
    msg.headers, msg.body = headers, body
    msg.status, msg.reason = status, reason
    return msg


_REPLY_FIELDS = ("Via", "From", "To", "Call-ID", "CSeq")


def reply_fields(raw: bytes | None) -> list[tuple[str, str]] | None:
    """The fields a response to a malformed request copies (RFC 3261 8.2.6: Via, From,
    To, Call-ID, CSeq), read leniently from the bytes `ParseError.raw` kept; None when
    `raw` is not a request or lacks one of them, i.e. when no response can be sent."""
    if not raw:
        return None
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    if not lines[0] or lines[0].startswith("SIP/") or " " not in lines[0]:
        return None
    fields: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + line.strip(" \t")
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append([canonical_name(name.strip(" \t")), value.strip(" \t")])
    found = [(name, value) for name, value in fields if name in _REPLY_FIELDS and value]
    if any(all(name != wanted for name, _ in found) for wanted in _REPLY_FIELDS):
        return None
    return found


def error_reply(exc: ParseError) -> bytes | None:
    """The stateless response to a malformed request (RFC 3261 8.2.6: status and reason
    from the error, Via/From/To/Call-ID/CSeq copied), or None when it cannot be addressed."""
    fields = reply_fields(exc.raw)
    if fields is None:
        return None
    reason = " ".join(str(exc.reason).split())  # never a line break in a status line
    lines = [f"SIP/2.0 {exc.status} {reason}", *(f"{n}: {v}" for n, v in fields),
             "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


# -- logs -------------------------------------------------------------------------------
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
_URI_PASSWORD = re.compile(r"(\b(?:sips?):[^:@;>\s]+:)[^@;>\s]+@", re.I)
_PUSH_TOKEN = re.compile(r"(\bpn-prid=|\bpn-tok=)([^;>\s,\"]{6})[^;>\s,\"]*", re.I)
_DIGEST_RESPONSE = re.compile(r'(\bresponse\s*=\s*)("[^"]*"|[^\s,]+)', re.I)


def _scrub(text: str) -> str:
    text = _URI_PASSWORD.sub(r"\1<redacted>@", text)
    return _PUSH_TOKEN.sub(r"\1\2...", text)


def redacted(message: Message) -> str:
    """The message as text for logs: digest responses, URI passwords and push tokens
    masked, the body replaced by its length."""
    lines = [_scrub(message._start_line())]
    for key, name, value in message.headers._fields:
        if key in _SECRET_HEADERS:
            value = _DIGEST_RESPONSE.sub(r'\1"<redacted>"', value)
        lines.append(f"{name}: {_scrub(value)}")
    if message.body:
        lines.append(f"<body: {len(message.body)} bytes>")
    return "\r\n".join(lines)
