"""Header fields: names, the ordered case-insensitive `Headers` list, and the typed values
parsed from them on first access (Via, CSeq, Challenge).

Header names are normalized once, when a field is added: compact forms become full names
(`v` -> `Via`), known names get their canonical spelling (`cseq` -> `CSeq`), others keep
the case they arrived with. Both parser twins normalize names with `CANONICAL`.

Depends only on `gateway.errors` and the grammar / URI helpers.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.sip.grammar import (
    TOKEN_CLASS,
    WS,
    bad,
    format_params,
    is_token,
    params_start,
    scan_params,
    scan_quoted,
    scan_token,
    skip_ws,
    split_list,
    unquote,
)
from gateway.sip.uri import split_hostport

#: RFC 3261 7.3.3 and later RFCs' compact forms
COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}

_KNOWN = """Accept Accept-Contact Accept-Encoding Accept-Language Alert-Info Allow
Allow-Events Authentication-Info Authorization Call-ID Call-Info Contact
Content-Disposition Content-Encoding Content-Language Content-Length Content-Type CSeq
Date Error-Info Event Expires Feature-Caps From History-Info Identity Identity-Info
In-Reply-To Max-Forwards Min-Expires Min-SE MIME-Version Organization P-Asserted-Identity
P-Preferred-Identity Path Priority Privacy Proxy-Authenticate Proxy-Authorization
Proxy-Require RAck Reason Record-Route Refer-To Referred-By Reject-Contact Replaces
Reply-To Request-Disposition Require Retry-After Route RSeq Security-Client
Security-Server Security-Verify Server Service-Route Session-Expires SIP-ETag
SIP-If-Match Subject Subscription-State Supported Timestamp To Unsupported User-Agent Via
Warning WWW-Authenticate"""

#: lower-case name (or compact letter) -> canonical name
CANONICAL = {name.lower(): name for name in _KNOWN.split()}
CANONICAL.update(COMPACT_FORMS)

#: headers whose value is a comma-separated list (RFC 3261 7.3.1); others never split
LIST_HEADERS = frozenset(name.lower() for name in """Accept Accept-Contact Accept-Encoding
Accept-Language Alert-Info Allow Allow-Events Call-Info Contact Content-Encoding
Content-Language Error-Info History-Info In-Reply-To P-Asserted-Identity
P-Preferred-Identity Path Privacy Proxy-Require Reason Record-Route Reject-Contact
Require Route Security-Client Security-Server Security-Verify Service-Route Supported
Unsupported Via Warning""".split())


def canonical_name(name: str) -> str:
    """The name a header is stored under: full form, canonical case when known."""
    return CANONICAL.get(name.lower(), name)


_TOKEN_NAMES: set[str] = set()  # header names found to be tokens (a few dozen in practice)


def _token_name(name: str) -> bool:
    if not is_token(name):
        return False
    if len(_TOKEN_NAMES) < 4096:
        _TOKEN_NAMES.add(name)
    return True


class Headers:
    """Header fields in message order; names compare case-insensitively.

    Each field is kept as the parser saw it (folding undone, whitespace around the value
    removed). `get_all()` splits list-valued headers (Via, Contact, Route...) at commas.
    Changing the fields drops every value parsed from them.
    """

    __slots__ = ("_fields", "_cache")

    def __init__(self, fields=()):
        #: [(lower-case name, canonical name, value)]
        self._fields: list[tuple[str, str, str]] = []
        #: values parsed from the fields (filled eagerly by the parser, lazily otherwise)
        self._cache: dict = {}
        for name, value in fields:
            self.add(name, value)

    @classmethod
    def _from_parser(cls, fields: list, cache: dict) -> Headers:
        self = cls.__new__(cls)
        self._fields = fields
        self._cache = cache
        return self

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's value, or `default`."""
        key = canonical_name(name).lower()
        for k, _, value in self._fields:
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value, list headers split at their commas (empty elements dropped)."""
        key = canonical_name(name).lower()
        values = [value for k, _, value in self._fields if k == key]
        if key in LIST_HEADERS:
            return [part for value in values for part in split_list(value, name) if part]
        return values

    def fields(self, name: str) -> list[str]:
        """Every field's value as it stands, without splitting."""
        key = canonical_name(name).lower()
        return [value for k, _, value in self._fields if k == key]

    def add(self, name: str, value) -> None:
        self._check(name, value)
        canonical = canonical_name(name)
        self._fields.append((canonical.lower(), canonical, str(value)))
        self._cache.clear()

    def set(self, name: str, value) -> None:
        """Replace every field of that name by one, where the first one was."""
        self._check(name, value)
        canonical = canonical_name(name)
        key = canonical.lower()
        field = (key, canonical, str(value))
        out, placed = [], False
        for item in self._fields:
            if item[0] == key:
                if not placed:
                    out.append(field)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append(field)
        self._fields = out
        self._cache.clear()

    def remove(self, name: str) -> int:
        """Remove every field of that name; returns how many there were."""
        key = canonical_name(name).lower()
        before = len(self._fields)
        self._fields = [item for item in self._fields if item[0] != key]
        self._cache.clear()
        return before - len(self._fields)

    @staticmethod
    def _check(name: str, value) -> None:
        # a CR or LF would let a value inject header fields into the encoded message
        # (str's own search: this runs for every field of every message we build)
        text = str(value)
        if "\r" in text or "\n" in text or (name not in _TOKEN_NAMES and not _token_name(name)):
            raise ValueError(f"invalid header field {name!r}: {value!r}")

    def __iter__(self):
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: str) -> bool:
        key = canonical_name(name).lower()
        return any(k == key for k, _, _ in self._fields)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


class CSeq(NamedTuple):
    number: int
    method: str


def parse_cseq(value: str) -> CSeq:
    """`1*DIGIT LWS Method`, the number below 2**31 (RFC 3261 8.1.1.5)."""
    digits = 0
    n = len(value)
    while digits < n and "0" <= value[digits] <= "9":
        digits += 1
    i = skip_ws(value, digits)
    j = scan_token(value, i)
    if not digits or i == digits or j == i or j != n or digits > 10:
        raise bad("malformed CSeq")
    number = int(value[:digits])
    if number > 0x7FFFFFFF:
        raise bad("CSeq number too large")
    return CSeq(number, value[i:j])


def via_branch(value: str) -> str | None:
    """The branch parameter of the first element of a Via field value."""
    start = len(value)
    for i, c in enumerate(value):
        if c == ";" or c == ",":
            start = i
            break
    params, _ = scan_params(value, start, "Via", stop_at_comma=True)
    return params.get("branch")


def header_tag(value: str, what: str) -> str | None:
    """The tag parameter of a From or To field value."""
    params, _ = scan_params(value, params_start(value, what), what, stop_at_comma=False)
    return params.get("tag")


_TOKEN = TOKEN_CLASS + "+"
# sent-protocol, LWS, sent-by with a host of the characters `check_host` accepts
_VIA_HEAD = re.compile(rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
                       r"([A-Za-z0-9\-._]+|\[[0-9A-Fa-f:.]{2,}\])(?::([0-9]{1,5}))?")


class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=...;received=...;rport`."""

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: dict | None = None, protocol: str = "SIP/2.0"):
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        #: lower-case names -> value as received (None for a flag such as `rport`)
        self.params = params if params is not None else {}

    @classmethod
    def parse(cls, text: str) -> Via:
        # the usual shape (`SIP/2.0/UDP host:port;...`) in one regular expression; anything
        # it leaves undecided goes the long way, which also says what is wrong
        found = _VIA_HEAD.match(text)
        if found is not None:
            end = found.end()
            if end == len(text) or text[end] == ";":
                name, version, transport, host, port = found.groups()
                if port is None or int(port) <= 65535:
                    params, _ = scan_params(text, end, "Via", stop_at_comma=False)
                    if "branch" in params and not params["branch"]:
                        raise bad("malformed Via branch")
                    return cls(transport, host, None if port is None else int(port), params,
                               protocol=f"{name.upper()}/{version}")
        return cls._parse_slowly(text)

    @classmethod
    def _parse_slowly(cls, text: str) -> Via:
        parts = []
        i = 0
        for k in range(3):
            i = skip_ws(text, i)
            j = scan_token(text, i)
            if j == i:
                raise bad("malformed Via")
            parts.append(text[i:j])
            i = skip_ws(text, j)
            if k < 2:
                if i >= len(text) or text[i] != "/":
                    raise bad("malformed Via")
                i += 1
        name, version, transport = parts
        if i == j or i >= len(text):  # LWS is required before sent-by
            raise bad("malformed Via")
        j = i
        n = len(text)
        while j < n and text[j] not in ";, \t":
            if text[j] == "[":
                close = text.find("]", j)
                j = close if close > 0 else n
            j += 1
        hostport = text[i:j]
        k = skip_ws(text, j)
        if k < n and text[k] == ":":  # SWS allowed around the port's colon
            k = skip_ws(text, k + 1)
            p = k
            while p < n and text[p].isdigit():
                p += 1
            hostport += ":" + text[k:p]
            j = p
        host, port = split_hostport(hostport, "Via")
        params, end = scan_params(text, j, "Via", stop_at_comma=False)
        if "branch" in params and not params["branch"]:
            raise bad("malformed Via branch")
        return cls(transport, host, port, params, protocol=f"{name.upper()}/{version}")

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value a server filled in (None when absent or empty)."""
        value = self.params.get("rport")
        if not value:
            return None
        if not value.isascii() or not value.isdigit() or int(value) > 65535:
            raise bad("malformed Via rport")
        return int(value)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


class Challenge:
    """One WWW-Authenticate / Proxy-Authenticate challenge: scheme and unquoted params."""

    __slots__ = ("scheme", "params")

    def __init__(self, scheme: str, params: dict | None = None):
        self.scheme = scheme
        #: lower-case names -> unquoted values
        self.params = params if params is not None else {}

    @classmethod
    def parse_all(cls, value: str, what: str = "WWW-Authenticate") -> list[Challenge]:
        """Every challenge in one header value (a value may carry several, RFC 7235)."""
        single = _single_challenge(value)
        if single is not None:
            return [cls(single[0], single[1])]
        return cls._parse_list(value, what)

    @classmethod
    def _parse_list(cls, value: str, what: str) -> list[Challenge]:
        """The general parser: any number of challenges, every malformation an error."""
        challenges: list[Challenge] = []
        for item in split_list(value, what):
            if not item:
                continue
            i = scan_token(item, 0)
            if i == 0:
                raise bad(f"malformed {what}")
            rest = skip_ws(item, i)
            if rest == len(item) or (rest > i and item[rest] != "="):
                # `Scheme` or `Scheme name=value`: a new challenge begins
                challenges.append(cls(item[:i]))
                if rest == len(item):
                    continue
                i = scan_token(item, rest)
                if i == rest:
                    raise bad(f"malformed {what}")
                name_start = rest
            else:
                name_start = 0
            if not challenges:
                raise bad(f"malformed {what}")
            name = item[name_start:i].lower()
            j = skip_ws(item, i)
            if j >= len(item) or item[j] != "=":
                raise bad(f"malformed {what}")
            j = skip_ws(item, j + 1)
            if j < len(item) and item[j] == '"':
                end = scan_quoted(item, j, what)
                if end != len(item):
                    raise bad(f"malformed {what}")
                param = unquote(item[j:end])
            else:
                param = item[j:]
                if not param or any(c in WS for c in param):
                    raise bad(f"malformed {what}")
            challenges[-1].params.setdefault(name, param)
        if not challenges:
            raise bad(f"empty {what}")
        return challenges

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    def __repr__(self) -> str:
        return f"Challenge({self.scheme!r}, {self.params!r})"


_TOKEN_RE = r"[A-Za-z0-9\-.!%*_+`'~]+"
# `Scheme name=value` and then `, name=value` items: the shape of nearly every challenge.
# A value is a quoted string or a run without whitespace, commas, quotes or angle brackets
# (those would change how the general parser splits the list).
_CHALLENGE_HEAD = re.compile(rf"({_TOKEN_RE})[ \t]+(?=[A-Za-z0-9\-.!%*_+`'~]+[ \t]*=)")
_CHALLENGE_PARAM = re.compile(
    rf'[ \t]*({_TOKEN_RE})[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^ \t,"<>]+))[ \t]*(,|\Z)',
    re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)


def _single_challenge(value: str) -> tuple[str, dict] | None:
    """(scheme, params) of a value holding one challenge in the plain shape, read with
    two regular expressions; None for anything else (then the general parser decides,
    errors included). Gives what the general parser gives for the values it takes."""
    head = _CHALLENGE_HEAD.match(value)
    if head is None:
        return None
    params: dict = {}
    pos, end = head.end(), len(value)
    match = _CHALLENGE_PARAM.match
    while True:
        found = match(value, pos)
        if found is None:
            return None
        name, quoted, plain, sep = found.groups()
        if quoted is not None:
            plain = _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        params.setdefault(name.lower(), plain)
        pos = found.end()
        if not sep:
            return head.group(1), params
        if pos >= end:
            return None  # a trailing comma: the general parser skips the empty element


_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d\d:\d\d:\d\d GMT\Z")


def check_date(value: str) -> None:
    """RFC 3261 20.17: an RFC 1123 date, always in GMT."""
    if not _DATE.match(value):
        raise bad("malformed Date")
