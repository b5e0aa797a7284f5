# cython: language_level=3
"""Compiled twin of `gateway/sip/answers.py`: what an answer copies from its request,
written from the request's parsed fields in one pass. Same rules, same result; see the
twin's docstring.

Depends on nothing.
"""


def echo_head(list fields, tag):
    cdef list lines = []
    cdef object from_ = None, to = None, call_id = None, cseq = None
    cdef tuple field
    cdef str key
    for field in fields:
        key = field[0]
        if key == "via":
            lines.append("Via: " + field[2])
        elif key == "from":
            if from_ is not None:
                return None
            from_ = field[2]
        elif key == "to":
            if to is not None:
                return None
            to = field[2]
        elif key == "call-id":
            if call_id is not None:
                return None
            call_id = field[2]
        elif key == "cseq":
            if cseq is not None:
                return None
            cseq = field[2]
    if from_ is None or to is None or call_id is None or cseq is None or not lines:
        return None
    if tag is not None:
        to = f"{to};tag={tag}"
    lines.append("From: " + from_)
    lines.append("To: " + to)
    lines.append("Call-ID: " + call_id)
    lines.append("CSeq: " + cseq)
    return "\r\n".join(lines)
