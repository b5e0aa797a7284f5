# cython: language_level=3
"""The Cython twin of `gateway/sip/parser.py`: SIP datagrams and streams to messages.

Same public names, same checks in the same order, same errors (see the Python twin's
docstring for the list); the fuzz test holds the two to that. This twin scans the bytes
with C loops and builds Python objects only for what the model keeps: one str per field
value, the names of well-known fields are shared constants. Everything else is parsed on
first access by the shared model (`gateway/sip/message.py`).

It may depend only on the model and the errors; it raises `gateway.errors.ParseError` and
nothing else. Compiles with Cython 3 and 0.29.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp, memcpy

from gateway.errors import ParseError
from gateway.sip.fields import CANONICAL, CSeq
from gateway.sip.grammar import bad, too_large
from gateway.sip.message import (
    DEFAULT_LIMITS,
    KEEPALIVE_PING,
    KEEPALIVE_PONG,
    Headers,
    ParseLimits,
    Request,
    Response,
)

__all__ = ["parse_message", "StreamParser", "ParseLimits", "KEEPALIVE_PING",
           "KEEPALIVE_PONG"]

# -- character classes ------------------------------------------------------------------
cdef bint TOKEN[256]
cdef bint VALUE_STOP[256]
cdef int _c
for _c in range(256):
    TOKEN[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or \
        chr(_c) in "-.!%*_+`'~"
    VALUE_STOP[_c] = chr(_c) in ' \t;,"'

cdef inline Py_ssize_t skip_ws(const char* s, Py_ssize_t n, Py_ssize_t i):
    while i < n and (s[i] == 32 or s[i] == 9):
        i += 1
    return i

cdef inline Py_ssize_t scan_token(const char* s, Py_ssize_t n, Py_ssize_t i):
    while i < n and TOKEN[<unsigned char>s[i]]:
        i += 1
    return i

cdef inline str dec(const char* p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(<char*>p, n, "surrogateescape")

cdef inline bint same_lower(const char* p, const char* lower, Py_ssize_t n):
    """p[:n] equals the lower-case ASCII `lower`, ignoring case."""
    cdef Py_ssize_t k
    cdef unsigned char c
    for k in range(n):
        c = <unsigned char>p[k]
        if 65 <= c <= 90:
            c += 32
        if c != <unsigned char>lower[k]:
            return False
    return True

# -- the names of the fields parsed eagerly and of the most common others -----------------
cdef enum Kind:
    K_OTHER = 0
    K_VIA
    K_CALL_ID
    K_CSEQ
    K_FROM
    K_TO
    K_CONTENT_LENGTH

_HOT = [
    (b"via", K_VIA), (b"v", K_VIA), (b"call-id", K_CALL_ID), (b"i", K_CALL_ID),
    (b"cseq", K_CSEQ), (b"from", K_FROM), (b"f", K_FROM), (b"to", K_TO), (b"t", K_TO),
    (b"content-length", K_CONTENT_LENGTH), (b"l", K_CONTENT_LENGTH),
    (b"contact", K_OTHER), (b"m", K_OTHER), (b"max-forwards", K_OTHER),
    (b"content-type", K_OTHER), (b"c", K_OTHER), (b"expires", K_OTHER),
    (b"www-authenticate", K_OTHER), (b"proxy-authenticate", K_OTHER),
    (b"authorization", K_OTHER), (b"proxy-authorization", K_OTHER),
    (b"user-agent", K_OTHER), (b"server", K_OTHER), (b"allow", K_OTHER),
    (b"supported", K_OTHER), (b"k", K_OTHER), (b"record-route", K_OTHER),
    (b"route", K_OTHER), (b"date", K_OTHER), (b"require", K_OTHER),
    (b"min-expires", K_OTHER), (b"event", K_OTHER), (b"o", K_OTHER),
]
cdef int N_HOT = len(_HOT)
cdef const char* HOT_NAME[40]
cdef Py_ssize_t HOT_LEN[40]
cdef int HOT_KIND[40]
cdef list HOT_KEYS = []
cdef list HOT_CANONICAL = []
cdef int _i
for _i in range(N_HOT):
    HOT_NAME[_i] = PyBytes_AS_STRING(_HOT[_i][0])
    HOT_LEN[_i] = PyBytes_GET_SIZE(_HOT[_i][0])
    HOT_KIND[_i] = _HOT[_i][1]
    _canonical = CANONICAL[_HOT[_i][0].decode()]
    HOT_CANONICAL.append(_canonical)
    HOT_KEYS.append(_canonical.lower())

cdef inline int hot_index(const char* p, Py_ssize_t n):
    cdef int k
    for k in range(N_HOT):
        if HOT_LEN[k] == n and same_lower(p, HOT_NAME[k], n):
            return k
    return -1

# method names and reason phrases seen on every call: shared str objects, no decoding
_COMMON = [b"INVITE", b"ACK", b"BYE", b"CANCEL", b"REGISTER", b"OPTIONS", b"MESSAGE",
           b"SUBSCRIBE", b"NOTIFY", b"REFER", b"INFO", b"UPDATE", b"PRACK", b"PUBLISH",
           b"OK", b"Trying", b"Ringing", b"Unauthorized", b"Session Progress"]
cdef int N_COMMON = len(_COMMON)
cdef const char* COMMON_BYTES[20]
cdef Py_ssize_t COMMON_LEN[20]
cdef list COMMON_STR = []
for _i in range(N_COMMON):
    COMMON_BYTES[_i] = PyBytes_AS_STRING(_COMMON[_i])
    COMMON_LEN[_i] = PyBytes_GET_SIZE(_COMMON[_i])
    COMMON_STR.append(_COMMON[_i].decode())

cdef inline str common_str(const char* p, Py_ssize_t n):
    """p[:n] decoded, as a shared object when it is a common method or reason."""
    cdef int k
    for k in range(N_COMMON):
        if COMMON_LEN[k] == n and memcmp(p, COMMON_BYTES[k], n) == 0:
            return <str>COMMON_STR[k]
    return dec(p, n)

_tuple_new = tuple.__new__
_object_new = object.__new__
_EMPTY = b""


cdef object version_error():
    return ParseError("unsupported SIP version", status=505, reason="Version Not Supported")

# -- grammar pieces (mirror gateway/sip/grammar.py) ---------------------------------------
cdef Py_ssize_t scan_quoted(const char* s, Py_ssize_t n, Py_ssize_t i, str what) except -1:
    i += 1
    while i < n:
        if s[i] == 92:  # backslash
            i += 2
        elif s[i] == 34:
            return i + 1
        else:
            i += 1
    raise bad(f"unterminated quoted string in {what}")


cdef object find_param(const char* s, Py_ssize_t n, Py_ssize_t i, str what,
                       bint stop_at_comma, const char* target, Py_ssize_t target_len):
    """scan_params() of the Python twin, keeping only the first `target` parameter."""
    cdef Py_ssize_t j, name_start, name_end, value_start
    cdef bint have = False
    found = None
    while True:
        i = skip_ws(s, n, i)
        if i >= n:
            return found
        if s[i] == 44 and stop_at_comma:
            return found
        if s[i] != 59:
            raise bad(f"malformed {what}")
        i = skip_ws(s, n, i + 1)
        j = scan_token(s, n, i)
        if j == i:
            raise bad(f"malformed {what} parameter")
        name_start, name_end = i, j
        i = skip_ws(s, n, j)
        value_start = -1
        if i < n and s[i] == 61:
            i = skip_ws(s, n, i + 1)
            if i < n and s[i] == 34:
                j = scan_quoted(s, n, i, what)
            else:
                j = i
                while j < n and not VALUE_STOP[<unsigned char>s[j]]:
                    j += 1
                if j == i:
                    raise bad(f"malformed {what} parameter")
            value_start = i
            i = j
        if not have and name_end - name_start == target_len and \
                same_lower(s + name_start, target, target_len):
            have = True
            if value_start >= 0:
                found = dec(s + value_start, i - value_start)


cdef Py_ssize_t params_start(const char* s, Py_ssize_t n, str what) except -1:
    cdef Py_ssize_t i = skip_ws(s, n, 0)
    cdef const char* gt
    if i >= n:
        raise bad(f"empty {what}")
    if s[i] == 34:
        i = skip_ws(s, n, scan_quoted(s, n, i, what))
        if i >= n or s[i] != 60:
            raise bad(f"malformed {what}")
    else:
        while i < n and s[i] != 60 and s[i] != 59:
            i += 1
        if i >= n or s[i] == 59:
            return i
    gt = <const char*>memchr(s + i, 62, n - i)
    if gt == NULL:
        raise bad(f"unterminated <> in {what}")
    return gt - s + 1


cdef object parse_cseq(const char* s, Py_ssize_t n):
    cdef Py_ssize_t digits = 0, i, j
    cdef unsigned long long number = 0
    while digits < n and 48 <= s[digits] <= 57:
        if digits < 11:
            number = number * 10 + (s[digits] - 48)
        digits += 1
    i = skip_ws(s, n, digits)
    j = scan_token(s, n, i)
    if digits == 0 or i == digits or j == i or j != n or digits > 10:
        raise bad("malformed CSeq")
    if number > 0x7FFFFFFF:
        raise bad("CSeq number too large")
    return _tuple_new(CSeq, (<long>number, common_str(s + i, j - i)))


# -- the start line -------------------------------------------------------------------------
cdef object status_line(const char* s, Py_ssize_t n, int* status):
    cdef Py_ssize_t k
    if n < 8 or memcmp(s, b"SIP/2.0 ", 8) != 0:
        if n >= 7 and memcmp(s, b"SIP/2.0", 7) == 0:
            raise bad("malformed status line")
        raise version_error()
    if n < 11:
        raise bad("malformed status code")
    for k in range(8, 11):
        if not 48 <= s[k] <= 57:
            raise bad("malformed status code")
    if not 49 <= s[8] <= 54:
        raise bad("malformed status code")
    if n > 11 and s[11] != 32:
        raise bad("malformed status code")
    status[0] = (s[8] - 48) * 100 + (s[9] - 48) * 10 + (s[10] - 48)
    if n <= 12:
        return ""
    return common_str(s + 12, n - 12)


cdef Py_ssize_t scheme_end(const char* s, Py_ssize_t n):
    cdef Py_ssize_t k
    cdef unsigned char c
    if n == 0 or not ((65 <= s[0] <= 90) or (97 <= s[0] <= 122)):
        return -1
    for k in range(n):
        c = <unsigned char>s[k]
        if c == 58:
            return k
        if not ((48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 43
                or c == 45 or c == 46):
            return -1
    return -1


cdef tuple request_line(const char* s, Py_ssize_t n):
    cdef const char* sp1 = <const char*>memchr(s, 32, n)
    cdef const char* sp2
    cdef const char* at
    cdef Py_ssize_t a, b, k, v
    cdef unsigned char c
    if sp1 == NULL:
        raise bad("malformed request line")
    a = sp1 - s
    sp2 = <const char*>memchr(s + a + 1, 32, n - a - 1)
    if sp2 == NULL:
        raise bad("malformed request line")
    b = sp2 - s
    if a == 0 or b == a + 1 or b + 1 == n or memchr(s + b + 1, 32, n - b - 1) != NULL:
        raise bad("malformed request line")
    for k in range(a):
        if not TOKEN[<unsigned char>s[k]]:
            raise bad("malformed method")
    if scheme_end(s + a + 1, b - a - 1) < 0:
        raise bad("malformed Request-URI")
    for k in range(a + 1, b):
        c = <unsigned char>s[k]
        if c <= 32 or c >= 127 or c == 60 or c == 62 or c == 34:
            raise bad("malformed Request-URI")
    if b - a - 1 >= 4 and (same_lower(s + a + 1, b"sip:", 4) or same_lower(s + a + 1, b"sips", 4)):
        k = b - 1
        while k > a and s[k] != 64:
            k -= 1
        if memchr(s + k + 1, 63, b - k - 1) != NULL:
            raise bad("headers in Request-URI")
    v = n - b - 1
    if v != 7 or memcmp(s + b + 1, b"SIP/2.0", 7) != 0:
        if v >= 4 and memcmp(s + b + 1, b"SIP/", 4) == 0:
            raise version_error()
        raise bad("malformed request line")
    return common_str(s, a), dec(s + a + 1, b - a - 1)


# -- the header section -----------------------------------------------------------------
cdef struct Field:
    Py_ssize_t name_start
    Py_ssize_t name_end
    Py_ssize_t value_start  # just after the colon
    Py_ssize_t end          # end of the field's last line
    bint folded


cdef Py_ssize_t line_end(const char* buf, Py_ssize_t pos, Py_ssize_t end, str where) except -2:
    """End of the line starting at `pos` (the CR of its CRLF, or `end`); bare CR/LF raise."""
    cdef const char* cr = <const char*>memchr(buf + pos, 13, end - pos)
    cdef Py_ssize_t k = end if cr == NULL else cr - buf
    if cr != NULL and (k + 1 >= end or buf[k + 1] != 10):
        raise bad(f"bare CR or LF in {where}")
    if memchr(buf + pos, 10, k - pos) != NULL:
        raise bad(f"bare CR or LF in {where}")
    return k


cdef str folded_value(const char* buf, Field* f):
    """The value of a folded field, unfolded exactly as the Python twin does."""
    parts = dec(buf + f.value_start, f.end - f.value_start).split("\r\n")
    return " ".join([s for s in [p.strip(" \t") for p in parts] if s])


cdef object parse_head(const char* buf, Py_ssize_t start, Py_ssize_t end, object limits,
                       Py_ssize_t* content_length):
    """Start line and header section in buf[start:end] -> message without body.

    `content_length[0]` is set to the Content-Length value, or -1 when there is none."""
    cdef Py_ssize_t sl_end, pos, k, colon, name_end, vs, ve, n
    cdef int status = 0, count = 0, max_headers = limits.max_headers, idx, kind
    cdef Field stack_fields[48]
    cdef Field* fields = stack_fields
    cdef Field* f
    cdef const char* v
    cdef bint seen_via = False, seen_call_id = False, seen_cseq = False
    cdef bint seen_from = False, seen_to = False
    cdef unsigned long long cl = 0
    cdef object method = None, uri = None, reason = None
    content_length[0] = -1

    sl_end = line_end(buf, start, end, "start line")
    if sl_end - start >= 4 and memcmp(buf + start, b"SIP/", 4) == 0:
        reason = status_line(buf + start, sl_end - start, &status)
    else:
        method, uri = request_line(buf + start, sl_end - start)

    cdef int capacity = 48
    cdef Field* grown
    try:
        # pass 1: the structure of the lines
        pos = sl_end + 2
        while pos < end:
            k = line_end(buf, pos, end, "header")
            if buf[pos] == 32 or buf[pos] == 9:
                if count == 0:
                    raise bad("malformed header line")
                fields[count - 1].folded = True
                fields[count - 1].end = k
            else:
                v = <const char*>memchr(buf + pos, 58, k - pos)
                if v == NULL:
                    raise bad("malformed header line")
                colon = v - buf
                name_end = colon
                while name_end > pos and (buf[name_end - 1] == 32 or buf[name_end - 1] == 9):
                    name_end -= 1
                if name_end == pos:
                    raise bad("malformed header name")
                for idx in range(pos, name_end):
                    if not TOKEN[<unsigned char>buf[idx]]:
                        raise bad("malformed header name")
                if count >= max_headers:
                    raise too_large("too many header fields")
                if count == capacity:  # grow with the message, not with the limit
                    capacity *= 2
                    if fields == stack_fields:
                        grown = <Field*>PyMem_Malloc(sizeof(Field) * capacity)
                        if grown != NULL:
                            memcpy(grown, stack_fields, sizeof(Field) * count)
                    else:
                        grown = <Field*>PyMem_Realloc(fields, sizeof(Field) * capacity)
                    if grown == NULL:
                        raise MemoryError()
                    fields = grown
                f = &fields[count]
                f.name_start, f.name_end, f.value_start, f.end = pos, name_end, colon + 1, k
                f.folded = False
                count += 1
            pos = k + 2

        # pass 2: the values, and the fields routing needs
        out = []
        call_id = cseq = branch = from_tag = to_tag = None
        for idx in range(count):
            f = &fields[idx]
            if f.folded:
                value = folded_value(buf, f)
                raw = value.encode("utf-8", "surrogateescape")
                v = PyBytes_AS_STRING(raw)
                n = PyBytes_GET_SIZE(raw)
            else:
                vs, ve = f.value_start, f.end
                while vs < ve and (buf[vs] == 32 or buf[vs] == 9):
                    vs += 1
                while ve > vs and (buf[ve - 1] == 32 or buf[ve - 1] == 9):
                    ve -= 1
                v = buf + vs
                n = ve - vs
                value = dec(v, n)
            k = hot_index(buf + f.name_start, f.name_end - f.name_start)
            if k >= 0:
                out.append((HOT_KEYS[k], HOT_CANONICAL[k], value))
                kind = HOT_KIND[k]
            else:
                name = dec(buf + f.name_start, f.name_end - f.name_start)
                lower = name.lower()
                canonical = CANONICAL.get(lower, name)
                out.append((canonical.lower() if canonical is not name else lower,
                            canonical, value))
                continue
            if kind == K_VIA:
                if not seen_via:
                    seen_via = True
                    k = 0
                    while k < n and v[k] != 59 and v[k] != 44:
                        k += 1
                    branch = find_param(v, n, k, "Via", True, b"branch", 6)
            elif kind == K_CALL_ID:
                if seen_call_id:
                    raise bad("more than one Call-ID")
                if n == 0 or memchr(v, 32, n) != NULL or memchr(v, 9, n) != NULL:
                    raise bad("malformed Call-ID")
                seen_call_id = True
                call_id = value
            elif kind == K_CSEQ:
                if seen_cseq:
                    raise bad("more than one CSeq")
                cseq = parse_cseq(v, n)
                seen_cseq = True
            elif kind == K_FROM:
                if seen_from:
                    raise bad("more than one From")
                from_tag = find_param(v, n, params_start(v, n, "From"), "From", False, b"tag", 3)
                seen_from = True
            elif kind == K_TO:
                if seen_to:
                    raise bad("more than one To")
                to_tag = find_param(v, n, params_start(v, n, "To"), "To", False, b"tag", 3)
                seen_to = True
            elif kind == K_CONTENT_LENGTH:
                if content_length[0] >= 0:
                    raise bad("more than one Content-Length")
                if n == 0:
                    raise bad("malformed Content-Length")
                cl = 0
                for k in range(n):
                    if not 48 <= v[k] <= 57:
                        raise bad("malformed Content-Length")
                    if cl < 1000000000000:  # saturate: far above any size limit
                        cl = cl * 10 + (v[k] - 48)
                content_length[0] = <Py_ssize_t>cl
    finally:
        if fields != stack_fields:
            PyMem_Free(fields)

    if not seen_call_id:
        raise bad("missing Call-ID")
    if not seen_cseq:
        raise bad("missing CSeq")
    if not seen_from:
        raise bad("missing From")
    if not seen_to:
        raise bad("missing To")
    if not seen_via:
        raise bad("missing Via")
    if method is not None and cseq[1] != method:
        raise bad("CSeq method does not match the request method")

    headers = _object_new(Headers)
    headers._fields = out
    cache = {"branch": branch, "call_id": call_id, "cseq": cseq, "from_tag": from_tag,
             "to_tag": to_tag}
    if content_length[0] >= 0:
        cache["content_length"] = content_length[0]
    headers._cache = cache
    if method is None:
        msg = _object_new(Response)
        msg.status = status
        msg.reason = reason
    else:
        msg = _object_new(Request)
        msg.method = method
        msg._uri = None
        msg._uri_text = uri
    msg.headers = headers
    return msg


# -- datagrams --------------------------------------------------------------------------
def parse_message(data, limits=None):
    """Parse one datagram: a Request or Response, or a Keepalive for a bare CRLF (pong) or
    CRLFCRLF (ping) datagram. Raises ParseError (with `raw` set to the data) and nothing
    else."""
    cdef bytes raw = data if type(data) is bytes else bytes(data)
    try:
        return parse_datagram(raw, DEFAULT_LIMITS if limits is None else limits)
    except ParseError as exc:
        exc.raw = raw
        raise


cdef object parse_datagram(bytes data, object limits):
    cdef const char* buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos = 0, end, body_start
    cdef Py_ssize_t content_length
    cdef const char* found
    if n > <Py_ssize_t>limits.max_message_size:
        raise too_large("message larger than the limit")
    while pos + 1 < n and buf[pos] == 13 and buf[pos + 1] == 10:
        pos += 2
    if pos == n:
        if n == 0:
            raise bad("empty message")
        return KEEPALIVE_PING if n >= 4 else KEEPALIVE_PONG
    end = find_blank_line(buf, pos, n)
    if end < 0:
        raise bad("no end of header section")
    message = parse_head(buf, pos, end, limits, &content_length)
    body_start = end + 4
    if content_length < 0:
        message.body = data[body_start:]
        message.headers._cache["content_length"] = n - body_start  # no field: all of it
    else:
        if content_length > n - body_start:
            raise bad("Content-Length larger than the message")
        message.body = data[body_start:body_start + content_length]
    return message


cdef Py_ssize_t find_blank_line(const char* buf, Py_ssize_t pos, Py_ssize_t n):
    """Index of the first CRLFCRLF at or after `pos`, or -1."""
    cdef const char* p
    while pos + 3 < n:
        p = <const char*>memchr(buf + pos, 13, n - pos - 3)
        if p == NULL:
            return -1
        pos = p - buf
        if buf[pos + 1] == 10 and buf[pos + 2] == 13 and buf[pos + 3] == 10:
            return pos
        pos += 1
    return -1


# -- streams ------------------------------------------------------------------------------
cdef class StreamParser:
    """Frames a TCP/TLS byte stream into messages and keepalives (see the Python twin for
    the contract: mandatory Content-Length, CRLFCRLF ping / CRLF pong between messages,
    a ParseError breaks the framing for good)."""

    cdef object _limits
    cdef bytearray _buf
    cdef object _error
    cdef object _message      # parsed head waiting for its body
    cdef Py_ssize_t _body_start, _total
    cdef bint _half_ping

    def __init__(self, limits=None):
        self._limits = DEFAULT_LIMITS if limits is None else limits
        self._buf = bytearray()
        self._error = None
        self._message = None
        self._half_ping = False

    @property
    def failed(self):
        return self._error is not None

    @property
    def buffered(self):
        """Bytes received and not yet part of a returned item."""
        return len(self._buf)

    def feed(self, data):
        if self._error is not None:
            raise self._error.with_traceback(None)  # no growing traceback
        self._buf += data
        items = []
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

    cdef object _next(self):
        cdef bytearray buf = self._buf
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(buf)
        cdef const char* p = PyByteArray_AS_STRING(buf)
        if n == 0:
            return None
        if self._message is None and p[0] == 13:
            if n < 2:
                return None
            if p[1] != 10:
                raise bad("bare CR or LF between messages")
            if self._half_ping:
                self._half_ping = False
                del buf[:2]
                return KEEPALIVE_PING
            if n >= 4 and p[2] == 13 and p[3] == 10:
                del buf[:4]
                return KEEPALIVE_PING
            if n == 3 and p[2] == 13:
                return None
            del buf[:2]
            self._half_ping = n == 2
            return KEEPALIVE_PONG
        self._half_ping = False
        if self._message is None:
            if not self._frame_head(p, n):
                return None
        if n < self._total:
            return None
        message = self._message
        message.body = bytes(buf[self._body_start:self._total])
        del buf[:self._total]
        self._message = None
        return message

    cdef bint _frame_head(self, const char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t limit = self._limits.max_message_size, end, content_length
        end = find_blank_line(p, 0, n)
        if end < 0:
            if n >= limit:
                raise too_large("header section larger than the limit")
            return False
        if end + 4 > limit:
            raise too_large("header section larger than the limit")
        try:
            message = parse_head(p, 0, end, self._limits, &content_length)
            if content_length < 0:
                raise bad("missing Content-Length")
            if end + 4 + content_length > limit:
                raise too_large("message larger than the limit")
        except ParseError as exc:
            exc.raw = bytes(self._buf[:end + 4])
            raise
        self._message = message
        self._body_start = end + 4
        self._total = end + 4 + content_length
        return True
