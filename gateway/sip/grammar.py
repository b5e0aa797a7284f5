"""Low-level SIP grammar (RFC 3261 section 25) shared by the model and the Python twin.

Character classes, quoted strings, comma-separated lists and `;name=value` parameter
lists. Every malformed input raises `ParseError`; nothing else may escape. The Cython twin
(`_ext/sipparse.pyx`) re-implements `scan_params` and `params_start` for the hot path and
must keep exactly the same rules (the fuzz test compares the twins).

Depends only on `gateway.errors`.
"""

from __future__ import annotations

import re
import string

from gateway.errors import ParseError

#: RFC 3261 `token` characters
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
#: TOKEN_CHARS as a regular expression's character class
TOKEN_CLASS = r"[A-Za-z0-9\-.!%*_+`'~]"
WS = " \t"
#: an unquoted parameter value runs until one of these
PARAM_VALUE_STOP = frozenset(' \t;,"')


def bad(detail: str) -> ParseError:
    """The error for a malformed message: a 400 whose reason names what is wrong."""
    return ParseError(detail, status=400, reason=f"Bad Request ({detail})")


def too_large(detail: str) -> ParseError:
    """The error for a message over a configured limit (513, RFC 3261 21.5.14)."""
    return ParseError(detail, status=513, reason="Message Too Large")


def is_token(text: str) -> bool:
    return bool(text) and TOKEN_CHARS.issuperset(text)


def skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and (s[i] == " " or s[i] == "\t"):
        i += 1
    return i


_TOKEN_RUN = re.compile(TOKEN_CLASS + "*")


def scan_token(s: str, i: int) -> int:
    """Index just past the run of token characters starting at `i`."""
    return _TOKEN_RUN.match(s, i).end()


def scan_quoted(s: str, i: int, what: str) -> int:
    """`s[i]` is a double quote: index just past the closing quote (backslash escapes)."""
    n = len(s)
    i += 1
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1
    raise bad(f"unterminated quoted string in {what}")


def unquote(text: str) -> str:
    """The content of a quoted-string (with or without its quotes), escapes resolved."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if "\\" not in text:
        return text
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            i += 1
            c = text[i]
        out.append(c)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str, what: str) -> list[str]:
    """Split a header value at the commas outside quoted strings and <...>, stripped.

    Empty elements are kept (callers decide whether they are an error)."""
    if '"' not in value and "<" not in value:  # every comma separates: str.split does it
        return [part.strip(WS) for part in value.split(",")]
    parts = []
    start = 0
    depth = 0
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = scan_quoted(value, i, what)
            continue
        if c == "<":
            depth = 1
        elif c == ">":
            depth = 0
        elif c == "," and not depth:
            parts.append(value[start:i].strip(WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(WS))
    return parts


def scan_params(s: str, i: int, what: str, *, stop_at_comma: bool) -> tuple[dict, int]:
    """Parse `*( SWS ";" SWS name [ SWS "=" SWS value ] )` from `s[i]`.

    Names are lower-cased; a value is a quoted string (kept with its quotes) or a run of
    characters up to whitespace, `;`, `,` or a quote; a name without `=` maps to None.
    The first occurrence of a name wins. Returns (params, index where parsing stopped):
    the end of `s`, or a comma when `stop_at_comma`.
    """
    params: dict = {}
    n = len(s)
    fast = _PARAM.match
    while True:
        # the usual parameter in one regular expression; what it leaves undecided (its
        # end not followed by whitespace, `;`, `,` or the end) the loop below reads,
        # errors included
        found = fast(s, i)
        if found is not None:
            end = found.end()
            if end == n or s[end] in _PARAM_FOLLOW:
                name = found.group(1).lower()
                if name not in params:
                    params[name] = found.group(2)
                i = end
                continue
        i = skip_ws(s, i)
        if i >= n:
            return params, i
        c = s[i]
        if c == "," and stop_at_comma:
            return params, i
        if c != ";":
            raise bad(f"malformed {what}")
        i = skip_ws(s, i + 1)
        j = scan_token(s, i)
        if j == i:
            raise bad(f"malformed {what} parameter")
        name = s[i:j].lower()
        i = skip_ws(s, j)
        value = None
        if i < n and s[i] == "=":
            i = skip_ws(s, i + 1)
            if i < n and s[i] == '"':
                j = scan_quoted(s, i, what)
            else:
                j = i
                while j < n and s[j] not in PARAM_VALUE_STOP:
                    j += 1
                if j == i:
                    raise bad(f"malformed {what} parameter")
            value = s[i:j]
            i = j
        if name not in params:
            params[name] = value
    # not reached


# `SWS ";" SWS name [ SWS "=" SWS value ]`, value quoted (backslash escapes) or a run
# up to PARAM_VALUE_STOP: exactly what one turn of scan_params' loop accepts
_PARAM = re.compile(rf'[ \t]*;[ \t]*({TOKEN_CLASS}+)[ \t]*'
                    r'(?:=[ \t]*("(?:[^"\\]|\\.)*"|[^ \t;,"]+))?', re.S)
_PARAM_FOLLOW = frozenset(" \t;,")


def params_start(value: str, what: str) -> int:
    """Where the header parameters of a name-addr / addr-spec value begin.

    `"display" <uri>;p`, `tokens <uri>;p` and `uri;p` (an addr-spec: its first `;` starts
    the header parameters, RFC 3261 20). Raises on an unterminated quote or `<`.
    """
    n = len(value)
    i = skip_ws(value, 0)
    if i >= n:
        raise bad(f"empty {what}")
    if value[i] == '"':
        i = skip_ws(value, scan_quoted(value, i, what))
        if i >= n or value[i] != "<":
            raise bad(f"malformed {what}")
    else:
        while i < n and value[i] != "<" and value[i] != ";":
            i += 1
        if i >= n or value[i] == ";":
            return i
    end = value.find(">", i)
    if end < 0:
        raise bad(f"unterminated <> in {what}")
    return end + 1


def format_params(params: dict) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
