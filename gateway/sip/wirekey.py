"""A request's server transaction key read straight from its datagram, before any parse.

`request_key(data)` -> `(key, method)` or None. `key` is what
`gateway.sip.transaction.server_key` gives for the parsed request (RFC 3261 17.2.3:
the top Via's branch, its sent-by host in lower case and port, the method, ACK counted as
INVITE); `method` is the request line's. It exists so that the transaction layer can
absorb what only repeats a transaction it holds -- the ACK of a non-2xx final answer
(one per cancelled call), a retransmitted INVITE or CANCEL -- without parsing a message
it will not read: on a busy provider face that was a third of the datagrams.

Conservative by design: None whenever the datagram is anything but the usual shape (no
magic cookie, a quoted string, angle brackets or a folded line near the top Via, a port
over 65535, a method that is not upper-case letters, a version other than SIP/2.0...).
None is always safe: the caller parses the datagram as before. For a datagram that
parses, the key is the parsed request's (`tests/sip/test_wirekey.py` holds both twins to
that); one malformed further down may still be keyed, and then only repeats what its
transaction already answered, as RFC 3261 17.2.3 matches by the top Via alone.

This is the pure-Python twin of `_ext/wirekey.pyx` (chosen in `gateway.sip.transaction`
through `gateway._accel`). Depends on nothing but `re`.
"""

from __future__ import annotations

import re

MAGIC_COOKIE = b"z9hG4bK"
_TOKEN = rb"[A-Za-z0-9\-.!%*_+`'~]+"
# sent-protocol, LWS, sent-by: the shape the Via parser reads in one go
_VIA_HEAD = re.compile(rb"[ \t]*" + _TOKEN + rb"[ \t]*/[ \t]*" + _TOKEN + rb"[ \t]*/[ \t]*"
                       + _TOKEN + rb"[ \t]+([A-Za-z0-9\-._]+|\[[0-9A-Fa-f:.]{2,}\])(?::([0-9]{1,5}))?")
# `SWS ";" SWS name [ SWS "=" SWS value ]`, the value unquoted
_PARAM = re.compile(rb"[ \t]*;[ \t]*(" + _TOKEN + rb")[ \t]*(?:=[ \t]*([^ \t;,\"]+))?")
_FOLLOW = frozenset(b" \t;,")


def request_key(data: bytes) -> tuple[tuple, str] | None:
    """(the server transaction key, the method) of the request in `data`, or None."""
    sp = data.find(b" ", 0, 32)
    if sp <= 0:
        return None
    method = data[:sp]
    if not (method.isalpha() and method.isupper()):
        return None
    pos = data.find(b"\r\n", sp)
    if pos < 0 or data[pos - 8:pos] != b" SIP/2.0":
        return None
    pos += 2
    while True:
        end = data.find(b"\r\n", pos)
        if end <= pos:  # the empty line ending the header, or no line end at all
            return None
        colon = data.find(b":", pos, end)
        if colon > pos:
            name = data[pos:colon].rstrip(b" \t").lower()
            if name == b"via" or name == b"v":
                if data[end + 2:end + 3] in (b" ", b"\t"):
                    return None  # the value goes on in a folded line
                return _key(data[colon + 1:end], method)
        pos = end + 2


def _key(value: bytes, method: bytes) -> tuple[tuple, str] | None:
    if b'"' in value or b"<" in value:
        return None
    head = _VIA_HEAD.match(value)
    if head is None:
        return None
    i, n = head.end(), len(value)
    if i >= n or value[i] != 59:  # ";": no parameters, so no branch
        return None
    branch = None
    while True:
        found = _PARAM.match(value, i)
        if found is None:
            break
        end = found.end()
        if end < n and value[end] not in _FOLLOW:
            return None
        if branch is None and found.group(1).lower() == b"branch":
            branch = found.group(2)
            if branch is None:
                return None  # a bare `branch` flag
        i = end
    while i < n and value[i] in (32, 9):
        i += 1
    if i < n and value[i] != 44:  # anything but the next element's ","
        return None
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        return None
    port = head.group(2)
    if port is not None:
        port = int(port)
        if port > 65535:
            return None
    text = method.decode("ascii")
    key = (branch.decode("utf-8", "surrogateescape"), head.group(1).decode("ascii").lower(),
           port, "INVITE" if text == "ACK" else text)
    return key, text
