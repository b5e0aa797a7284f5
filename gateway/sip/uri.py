"""SIP URIs and name-addr values (RFC 3261 19.1, 20.10, 25.1), parsed on first access.

`SipUri.parse("sip:alice:pw@[::1]:5070;transport=tcp;lr?subject=x")` and `str()` give the
same text back: escapes are kept as received, parameter names keep their case. `tel:`
URIs put the number in `user`; any other scheme keeps its text in `opaque`.
`NameAddr` is one From / To / Contact / Route element: display name, URI, header params.

Depends only on `gateway.errors` and the grammar helpers.
"""

from __future__ import annotations

import re
import string

from gateway.sip.grammar import (
    TOKEN_CHARS,
    WS,
    bad,
    format_params,
    is_token,
    quote,
    scan_params,
    scan_quoted,
    skip_ws,
    unquote,
)

_SCHEME_FIRST = frozenset(string.ascii_letters)
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+-.")
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "-._")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")
# characters that never appear unescaped in a URI on the wire
_URI_FORBIDDEN = frozenset(' \t\r\n<>"')
_QVALUE = re.compile(r"[01](\.[0-9]{0,3})?\Z")  # RFC 3261 25.1


def scheme_end(text: str) -> int:
    """Index of the `:` ending a valid URI scheme at the start of `text`, or -1."""
    if not text or text[0] not in _SCHEME_FIRST:
        return -1
    for i, c in enumerate(text):
        if c == ":":
            return i
        if c not in _SCHEME_CHARS:
            return -1
    return -1


def check_host(host: str, what: str) -> None:
    """A hostname, IPv4 address or bracketed IPv6 reference."""
    # set operations rather than a generator per character: this runs for every URI
    if host.startswith("["):
        if len(host) < 4 or host[-1] != "]" or not _IPV6_CHARS.issuperset(host[1:-1]):
            raise bad(f"malformed host in {what}")
        return
    if not host or not _HOST_CHARS.issuperset(host):
        raise bad(f"malformed host in {what}")


def parse_port(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise bad(f"malformed port in {what}")
    return int(text)


def split_hostport(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise bad(f"malformed host in {what}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and rest[0] != ":":
            raise bad(f"malformed host in {what}")
        port = rest[1:] if rest else None
    else:
        host, sep, port = text.partition(":")
        if not sep:
            port = None
    check_host(host, what)
    return host, (parse_port(port, what) if port is not None else None)


class SipUri:
    """A sip:, sips:, tel: or other absolute URI. Mutable; `str()` serializes it."""

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque")

    def __init__(
        self,
        host: str = "",
        user: str | None = None,
        *,
        scheme: str = "sip",
        password: str | None = None,
        port: int | None = None,
        params: dict | None = None,
        headers: dict | None = None,
        opaque: str | None = None,
    ):
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        #: URI parameters in order, names as received; a flag parameter maps to None
        self.params = params if params is not None else {}
        #: URI headers (`?name=value&...`), escaped as received
        self.headers = headers if headers is not None else {}
        #: the text after `scheme:` for schemes other than sip, sips and tel
        self.opaque = opaque

    @classmethod
    def parse(cls, text: str, what: str = "URI") -> SipUri:
        colon = scheme_end(text)
        if colon < 0:
            raise bad(f"malformed {what}")
        if not _URI_FORBIDDEN.isdisjoint(text):
            raise bad(f"malformed {what}")
        scheme, rest = text[:colon].lower(), text[colon + 1 :]
        if not rest:
            raise bad(f"malformed {what}")
        if scheme in ("sip", "sips"):
            return cls._parse_sip(scheme, rest, what)
        if scheme == "tel":
            number, params = cls._split_params(rest, what)
            if not number:
                raise bad(f"malformed {what}")
            return cls("", number, scheme=scheme, params=params)
        return cls("", scheme=scheme, opaque=rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, what: str) -> SipUri:
        # the user part may hold ';', '?' and ',' (RFC 4475 3.1.1.2), so split at the
        # last '@' before looking for parameters and headers
        user = password = None
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, sep, password = userinfo.partition(":")
            if not sep:
                password = None
            if not user:
                raise bad(f"malformed user in {what}")
        headers = {}
        rest, sep, header_text = rest.partition("?")
        if sep:
            for item in header_text.split("&"):
                name, _, value = item.partition("=")
                if not name:
                    raise bad(f"malformed header in {what}")
                headers[name] = value
        hostport, params = cls._split_params(rest, what)
        host, port = split_hostport(hostport, what)
        return cls(host, user, scheme=scheme, password=password, port=port, params=params,
                   headers=headers)

    @staticmethod
    def _split_params(text: str, what: str) -> tuple[str, dict]:
        head, *items = text.split(";")
        params = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not name:
                raise bad(f"malformed parameter in {what}")
            params.setdefault(name, value if sep else None)
        return head, params

    def param(self, name: str, default=None):
        """A URI parameter by case-insensitive name (None for a flag: use `in`)."""
        name = name.lower()
        for key, value in self.params.items():
            if key.lower() == name:
                return value
        return default

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(key.lower() == name for key in self.params)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            if self.host:
                out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        for name, value in self.params.items():
            out += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            out += ["?", "&".join(f"{k}={v}" for k, v in self.headers.items())]
        return "".join(out)

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, SipUri):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self):
        # scheme and host compare case-insensitively, user and password exactly
        params = tuple(sorted((k.lower(), v) for k, v in self.params.items()))
        return (self.scheme.lower(), self.user, self.password, self.host.lower(), self.port,
                params, tuple(sorted(self.headers.items())), self.opaque)


_NAME_ADDR = re.compile(r'[ \t]*(?:"([^"\\]*)"[ \t]*)?<([^>]*)>')


class NameAddr:
    """One From / To / Contact / Route value: `"display" <uri>;param=value`.

    `params` are the header parameters (lower-case names, values as received, quotes
    kept; None for a flag). A `Contact: *` is a NameAddr with `wildcard` True, no URI.
    """

    __slots__ = ("display_name", "uri", "params", "wildcard")

    def __init__(self, uri: SipUri | str | None, display_name: str | None = None,
                 params: dict | None = None, *, wildcard: bool = False):
        if isinstance(uri, str):
            uri = SipUri.parse(uri)
        self.uri = uri
        self.display_name = display_name
        self.params = params if params is not None else {}
        self.wildcard = wildcard

    @classmethod
    def parse(cls, text: str, what: str = "name-addr", *, wildcard_ok: bool = False) -> NameAddr:
        """One value; `wildcard_ok` accepts the `*` of a REGISTER's Contact."""
        # `"display" <uri>;params` (no escapes in the name) and `<uri>;params` in one
        # regular expression: what nearly every From, To and Contact looks like
        found = _NAME_ADDR.match(text)
        if found is not None:
            display, uri_text = found.groups()
            uri = SipUri.parse(uri_text, what)  # before the parameters, as below
            params, _ = scan_params(text, found.end(), what, stop_at_comma=False)
            return cls(uri, display, params)
        return cls._parse_slowly(text, what, wildcard_ok)

    @classmethod
    def _parse_slowly(cls, text: str, what: str, wildcard_ok: bool) -> NameAddr:
        n = len(text)
        i = skip_ws(text, 0)
        if i >= n:
            raise bad(f"empty {what}")
        display = None
        if text[i] == "*" and wildcard_ok:
            params, _ = scan_params(text, i + 1, what, stop_at_comma=False)
            return cls(None, None, params, wildcard=True)
        if text[i] == '"':
            end = scan_quoted(text, i, what)
            display = unquote(text[i:end])
            i = skip_ws(text, end)
            if i >= n or text[i] != "<":
                raise bad(f"malformed {what}")
        else:
            lt = text.find("<", i)
            semi = text.find(";", i)
            if lt < 0 or (0 <= semi < lt):
                # addr-spec: the first ';' starts the header parameters, and the URI
                # may not carry ',', '?' or ';' (RFC 3261 20)
                end = semi if semi >= 0 else n
                uri_text = text[i:end].rstrip(WS)
                if "?" in uri_text or "," in uri_text:
                    raise bad(f"{what} URI with headers must be in <>")
                uri = SipUri.parse(uri_text, what)
                params, _ = scan_params(text, end, what, stop_at_comma=False)
                return cls(uri, None, params)
            words = text[i:lt].split()
            if not all(is_token(w) for w in words):
                raise bad(f"malformed display name in {what}")
            display = " ".join(words) or None
            i = lt
        end = text.find(">", i)
        if end < 0:
            raise bad(f"unterminated <> in {what}")
        uri = SipUri.parse(text[i + 1 : end], what)
        params, _ = scan_params(text, end + 1, what, stop_at_comma=False)
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        if value is None:
            return None
        if not value.isascii() or not value.isdigit():
            raise bad("malformed expires parameter")
        return int(value)

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        if value is None:
            return None
        if not _QVALUE.match(value) or float(value) > 1:
            raise bad("malformed q parameter")
        return float(value)

    def __str__(self) -> str:
        if self.wildcard:
            return "*" + format_params(self.params)
        out = ""
        if self.display_name:
            name = self.display_name
            plain = all(is_token(w) for w in name.split(" "))
            out = (name if plain else quote(name)) + " "
        return f"{out}<{self.uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.uri, self.display_name, self.params, self.wildcard) == (
            other.uri, other.display_name, other.params, other.wildcard)

    __hash__ = None  # mutable


__all__ = ["SipUri", "NameAddr", "scheme_end", "check_host", "split_hostport", "TOKEN_CHARS"]
