"""What an answer copies from its request, written straight from the request's fields.

`echo_head(fields, tag)`: `fields` is a parsed request's `headers._fields` (tuples of
lower-case name, canonical name, value); the result is the Via lines (one per Via field,
as received), then From, To (with `;tag=<tag>` appended when `tag` is given), Call-ID and
CSeq, canonical names, CRLF between lines -- what `build_response` copies (RFC 3261
8.2.6.2), as `gateway.sip.transaction.answer_head` joins it. None when a field is missing
or one of From, To, Call-ID, CSeq occurs twice: the caller then takes the general path,
which says what is wrong or which one counts.

The caller decides whether To needs our tag (only when it has none) and echoes a 100's
Timestamp itself. This is the pure-Python twin of `_ext/answers.pyx` (chosen in
`gateway.sip.transaction` through `gateway._accel`). Depends on nothing.
"""

from __future__ import annotations

_ONCE = ("from", "to", "call-id", "cseq")


def echo_head(fields: list, tag: str | None) -> str | None:
    lines = []
    found: dict[str, str] = {}
    for key, _, value in fields:
        if key == "via":
            lines.append("Via: " + value)
        elif key in _ONCE:
            if key in found:
                return None
            found[key] = value
    if len(found) < 4 or not lines:
        return None
    to = found["to"] if tag is None else f"{found['to']};tag={tag}"
    lines += ("From: " + found["from"], "To: " + to, "Call-ID: " + found["call-id"],
              "CSeq: " + found["cseq"])
    return "\r\n".join(lines)
