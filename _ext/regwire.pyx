# cython: language_level=3
"""REGISTER exchanges on UDP, compiled: the twin of `gateway/sip/regwire.py`.

Built as `gateway._regwire`; `gateway.sip.registration` picks this module or the
pure-Python twin through `gateway._accel`. The design is described once, in the Python
twin's docstring; this file follows it with the response read by C pointer scans (top
Via branch, status, CSeq method, the challenge's params, our Contact's expires) and
branches drawn from a pool of random bytes, the Authorization line computed here
(`credentials`) and the metrics counted straight into `gateway.metrics`' recorders, so a
common exchange runs no Python frame per message and makes few objects beyond the
datagram, the request and the strings the digest keeps.

What it reads differently (exactly-spelled header names, one Via in the top Via line,
a plain challenge) it hands to the same fallbacks as the twin: a value it does not take
goes to `gateway.sip.fields._single_challenge`, a response it does not take to the
general path, so both twins decide alike (the tests run both on the same responses).

May depend on the gateway's metrics, errors, digest, parser and flows (as the twin);
never on instances, the store or the API.
"""

from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import asyncio
import logging
import os
from hashlib import blake2b as _blake2b, md5 as _md5, sha256 as _sha256

from gateway import metrics
from gateway.errors import AuthError, TransactionTimeout, TransportError
from gateway.sip import parsing
from gateway.sip.digest import _BY_NAME, _CHALLENGES, _CNONCE_KEY, _Challenge
from gateway.sip.digest import _quote as _quote_escaped
from gateway.sip.fields import _single_challenge
from gateway.sip.flow import redact, trace
from gateway.sip.regwire import _observe

cdef extern from "string.h":
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

include "tracing.pxi"

# The recorders of `gateway.metrics`, incremented here as its recording functions do
# (`values[key] += 1`, see `metrics.Tally`), without a Python frame per count.
cdef dict _SENT = metrics.REGISTER_SENT.values
cdef dict _RESULTS = metrics.REGISTER_RESULTS.values
cdef dict _SIP_REQ = metrics._SIP_REQ
cdef dict _SIP_RESP = metrics._SIP_RESP
cdef list _RTT = metrics.REGISTER_RTT.series[()]
cdef tuple _RTT_BOUNDS = metrics.REGISTER_RTT.bounds
cdef tuple _OUT_REGISTER = ("out", "udp", "REGISTER")
cdef tuple _IN_CLASS = tuple(("in", "udp", c) for c in metrics._STATUS_CLASS)
cdef tuple _REGISTERED = ("registered",)
cdef tuple _UNREGISTERED = ("unregistered",)
cdef tuple _CHALLENGED = ("challenged",)
cdef tuple _UNAUTHORIZED = ("unauthorized",)


cdef inline void _count(dict values, key) except *:
    values[key] += 1


cdef void _observe_rtt(double rtt) except *:
    """`metrics.REGISTER_RTT.observe(rtt)`."""
    if not rtt >= 0.0:
        rtt = 0.0
    cdef Py_ssize_t i = 0, n = len(_RTT_BOUNDS)
    while i < n and <double>_RTT_BOUNDS[i] < rtt:
        i += 1
    _RTT[i] += 1
    _RTT[len(_RTT) - 1] += rtt


cdef void _result(tuple outcome, double rtt) except *:
    """`metrics.registration_result(outcome, rtt)`."""
    _count(_RESULTS, outcome)
    _observe_rtt(rtt)
cdef bytes _TAIL = b"Content-Length: 0\r\n\r\n"
cdef bytes _HEX = b"0123456789abcdef"
cdef Py_ssize_t _POOL_SIZE = 4096

# branches: 80 random bits each, from os.urandom 4 KiB at a time (as gateway.sip.ids)
cdef bytes _pool = b""
cdef Py_ssize_t _pos = 0


def _forget_pool():
    global _pool, _pos
    _pool, _pos = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


cdef bytes _new_branch():
    """z9hG4bK + 20 hex digits."""
    global _pool, _pos
    cdef char buf[27]
    cdef const unsigned char *src
    cdef const char *hexd = _HEX
    cdef int i
    if _pos + 10 > PyBytes_GET_SIZE(_pool):
        _pool = os.urandom(_POOL_SIZE)
        _pos = 0
    src = <const unsigned char *>PyBytes_AS_STRING(_pool) + _pos
    _pos += 10
    memcpy(buf, b"z9hG4bK", 7)
    for i in range(10):
        buf[7 + 2 * i] = hexd[src[i] >> 4]
        buf[8 + 2 * i] = hexd[src[i] & 15]
    return PyBytes_FromStringAndSize(buf, 27)


cdef inline double _now():
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef Py_ssize_t _find(const char *s, Py_ssize_t start, Py_ssize_t end, const char *needle,
                      Py_ssize_t m):
    """The offset of `needle` in s[start:end], or -1."""
    if start < 0 or end - start < m:
        return -1
    cdef const char *found = <const char *>memmem(s + start, end - start, needle, m)
    return -1 if found == NULL else found - s


cdef class _Exchange:
    cdef RegisterWire wire
    cdef object client, flow, future, callback, uri, retransmit, timeout, sendto, remote
    cdef bytes head, middle, tail, branch, data
    cdef long expires
    cdef int challenges_left, answered
    cdef double interval, sent, started
    cdef bint proceeding, finished

    def done(self):
        return self.finished

    def cancel(self):
        """Drop the exchange: no more sends, no call of its callback."""
        if not self.finished:
            self.wire._end(self, None, False)


cdef class RegisterWire:
    """The REGISTER exchanges of one endpoint's UDP sockets; see the Python twin."""

    cdef readonly object transport, wheel
    cdef readonly double t1, t2
    cdef readonly dict pending
    # the top Via last read on a flow (branch aside), and what it told the flow
    cdef object _seen_flow, _seen_observed
    cdef bytes _seen_before, _seen_after

    def __init__(self, transport, wheel, double t1, double t2):
        self.transport = transport
        self.wheel = wheel
        self.t1 = t1
        self.t2 = t2
        self.pending = {}
        self._seen_before = self._seen_after = b""
        transport.datagram_hook = self.datagram

    @classmethod
    def of(cls, endpoint):
        hook = endpoint.transport.datagram_hook
        wire = getattr(hook, "__self__", None)
        if isinstance(wire, cls):
            return wire
        settings = endpoint.transactions.settings
        return cls(endpoint.transport, endpoint.wheel, settings.t1, settings.t2)

    def exchange(self, client, flow, uri, bytes head, bytes middle, bytes tail, long expires,
                 int challenges_left):
        cdef _Exchange ex = self._new(client, flow, uri, head, middle, tail, expires,
                                      challenges_left, None)
        self._first_send(ex)
        return ex.future

    def start(self, client, flow, uri, bytes head, bytes middle, bytes tail, long expires,
              int challenges_left, done):
        cdef _Exchange ex = self._new(client, flow, uri, head, middle, tail, expires,
                                      challenges_left, done)
        self._first_send(ex)
        return ex

    cdef _Exchange _new(self, client, flow, uri, bytes head, bytes middle, bytes tail,
                        long expires, int challenges_left, callback):
        cdef _Exchange ex = _Exchange.__new__(_Exchange)
        ex.wire = self
        ex.client = client
        ex.flow = flow
        if callback is None:
            ex.future = asyncio.get_running_loop().create_future()
        ex.callback = callback
        ex.started = _now()
        ex.uri = uri
        ex.head = head
        ex.middle = middle
        ex.tail = tail
        ex.expires = expires
        ex.challenges_left = challenges_left
        ex.answered = 0
        ex.branch = b""
        ex.sendto = flow.connection.transport.sendto
        ex.remote = flow.remote
        return ex

    # -- sending --------------------------------------------------------------------------

    cdef _first_send(self, _Exchange ex):
        try:
            self._send_request(ex)
        except BaseException:
            self._end(ex, None, False)  # nothing left behind (timers, branch)
            raise

    cdef _send_request(self, _Exchange ex):
        client = ex.client
        cseq = client.cseq + 1
        client.cseq = cseq
        cdef bytes branch = _new_branch()
        ex.data = b"".join((ex.head, branch, ex.middle, str(cseq).encode(), ex.tail,
                            credentials(client.digest, ex.uri), _TAIL))
        if ex.branch:
            del self.pending[ex.branch]
        ex.branch = branch
        self.pending[branch] = ex
        ex.interval = self.t1
        ex.proceeding = False
        _count(_SENT, ())
        ex.sent = _now()
        wheel = self.wheel
        if ex.retransmit is None:
            ex.retransmit = wheel.call_later(self.t1, _retransmit, ex)
            ex.timeout = wheel.call_later(64 * self.t1, _timed_out, ex)
        else:
            wheel.reschedule(ex.retransmit, self.t1)
            wheel.reschedule(ex.timeout, 64 * self.t1)
        self._send(ex)

    cdef bint _send(self, _Exchange ex) except -1:
        flow = ex.flow
        if flow.closed:
            self._end(ex, TransportError(f"{flow!r} is closed"))
            return False
        if _tracing():
            trace.debug("send %s\n%s", flow, redact(ex.data))
        ex.sendto(ex.data, ex.remote)
        _count(_SIP_REQ, _OUT_REGISTER)
        flow.last_activity = _now()
        return True

    cdef _end(self, _Exchange ex, outcome, bint notify=True):
        if self.pending.get(ex.branch) is ex:
            del self.pending[ex.branch]
        if ex.retransmit is not None:
            ex.retransmit.cancel()
            ex.timeout.cancel()
        ex.retransmit = ex.timeout = None
        if ex.finished:
            return
        ex.finished = True
        future = ex.future
        if future is None:
            if notify:
                ex.callback(ex.client, ex.flow, outcome, ex.started)
            return
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    # -- receiving ------------------------------------------------------------------------

    def datagram(self, bytes data, remote):
        """The transport's hook (see the twin)."""
        if not self.pending:
            return False
        cdef const char *s = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if n < 12 or memcmp(s, b"SIP/2.0 ", 8) != 0:
            return False
        cdef Py_ssize_t head_end = _find(s, 0, n, b"\r\n\r\n", 4)
        if head_end < 0:
            return False
        # the top Via: the first `Via:` line, one Via in it
        cdef Py_ssize_t via = _find(s, 0, head_end + 2, b"\r\nVia:", 6)
        if via < 0:
            return False
        via += 6
        cdef Py_ssize_t via_end = _find(s, via, n, b"\r\n", 2)
        if _find(s, via, via_end, b",", 1) >= 0:
            return False
        cdef Py_ssize_t b = _find(s, via, via_end, b";branch=", 8)
        if b < 0:
            return False
        b += 8
        cdef Py_ssize_t e = b
        while e < via_end and s[e] != b';' and s[e] != b' ' and s[e] != b'\t':
            e += 1
        cdef PyObject *found = PyDict_GetItem(self.pending, s[b:e])
        if found == NULL:
            return False
        cdef _Exchange ex = <_Exchange>found
        cdef int status = _status(s, n)
        if status < 0 or not _cseq_is_register(s, head_end):
            return False
        flow = ex.flow
        if _tracing():
            trace.debug("recv %s\n%s", flow, redact(data))
        _count(_SIP_RESP, _IN_CLASS[status // 100 if status < 1000 else 0])
        flow.last_activity = _now()
        if _has_received(s, via, via_end):
            self._observe(s, via, b, e, via_end, flow)
        if status < 200:
            ex.proceeding = True
            return True
        cdef double rtt = _now() - ex.sent
        cdef long granted
        if status < 300:
            granted = ex.expires if ex.expires == 0 else \
                _our_expires(s, head_end, ex.client.token.encode())
            if granted >= 0:
                _result(_UNREGISTERED if ex.expires == 0 else _REGISTERED, rtt)
                self._end(ex, granted)
                return True
        elif (status == 401 or status == 407) and ex.answered < ex.challenges_left:
            params = _one_digest_challenge(
                s, head_end, b"WWW-Authenticate" if status == 401 else b"Proxy-Authenticate")
            if params is not None:
                chosen = _usable(params)
                if chosen is not None:
                    _observe_rtt(rtt)
                    self._challenged(ex, status, params, chosen)
                    return True
        return self._hand_back(ex, data, status, rtt)

    cdef _observe(self, const char *s, Py_ssize_t via, Py_ssize_t b, Py_ssize_t e,
                  Py_ssize_t via_end, flow):
        """The twin's `_observe`, skipped when the top Via (its branch aside) is the one
        last seen on this flow and the flow still has what that one gave."""
        cdef bytes before = self._seen_before, after = self._seen_after
        if (flow is self._seen_flow and flow.observed is self._seen_observed
                and len(before) == b - via and len(after) == via_end - e
                and memcmp(s + via, <const char *>before, b - via) == 0
                and memcmp(s + e, <const char *>after, via_end - e) == 0):
            return
        _observe(s[via:via_end], flow)
        self._seen_flow = flow
        self._seen_observed = flow.observed
        self._seen_before = s[via:b]
        self._seen_after = s[e:via_end]

    cdef _challenged(self, _Exchange ex, int status, dict params, tuple chosen):
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        try:
            _accept(ex.client.digest, status, name, params, chosen[0], chosen[1])
        except Exception as exc:
            _count(_RESULTS, _UNAUTHORIZED)
            self._end(ex, exc)
            return
        _count(_RESULTS, _CHALLENGED)
        ex.answered += 1
        self._send_request(ex)

    cdef bint _hand_back(self, _Exchange ex, bytes data, int status, double rtt) except -1:
        try:
            response = parsing.parse_message(data)
        except Exception:
            return False
        if 200 <= status < 300:
            _result(_UNREGISTERED if ex.expires == 0 else _REGISTERED, rtt)
        else:
            _observe_rtt(rtt)
        self._end(ex, (response, ex.answered))
        return True


# H(REGISTER:uri) by (hash, uri): the clients of a registrar send the same one
cdef dict _HA2 = {}


cpdef bytes credentials(digest, str uri):
    """The twin's `credentials`: what `DigestClient.authorization("REGISTER", uri)` gives
    (the client's challenge, nonce, count, HA1 and the derived cnonce), computed here
    with the same hashes and written as the header line."""
    shared = digest._challenge
    if shared is None:
        return b""
    cdef long count = digest._nc + 1
    digest._nc = count
    cdef str nonce = digest._nonce, username = digest.username, algorithm = shared.algorithm
    cdef bint sha = algorithm.startswith("SHA-256")
    H = _sha256 if sha else _md5
    cdef str nc = "%08x" % count
    cdef str cnonce = _blake2b(f"{username}\x00{nonce}".encode(), key=_CNONCE_KEY,
                               digest_size=8).hexdigest()
    cdef str ha1 = digest._ha1.hex()
    if algorithm.endswith("-sess"):
        ha1 = H(f"{ha1}:{nonce}:{cnonce}".encode()).hexdigest()
    key = (sha, uri)
    cdef object ha2 = _HA2.get(key)
    if ha2 is None:
        ha2 = H(f"REGISTER:{uri}".encode()).hexdigest()
        if len(_HA2) < 1000:
            _HA2[key] = ha2
    qop = shared.qop
    if qop:
        response = H(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode()).hexdigest()
    else:
        response = H(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    # one string, encoded once
    algorithm_part = f", algorithm={algorithm}" \
        if shared.algorithm_given or algorithm != "MD5" else ""
    opaque_part = "" if shared.opaque is None else f", opaque={_quote(shared.opaque)}"
    qop_part = f', qop={qop}, nc={nc}, cnonce="{cnonce}"' if qop else ""
    return (f"{shared.header}: Digest username={_quote(username)}, "
            f"realm={_quote(shared.realm)}, nonce={_quote(nonce)}, uri={_quote(uri)}, "
            f'response="{response}"{algorithm_part}{opaque_part}{qop_part}\r\n').encode()


cdef object _usable(dict params):
    """`gateway.sip.digest.usable(params)`: (algorithm, qop) or None."""
    nonce = params.get("nonce")
    if not nonce:
        return None
    algorithm = _BY_NAME.get(params.get("algorithm", "MD5").strip().lower())
    if algorithm is None:
        return None
    qops = params.get("qop")
    if qops is None:
        return (algorithm, None)
    for q in qops.split(","):
        if q.strip().lower() == "auth":
            return (algorithm, "auth")
    return None  # auth-int only


cdef _accept(digest, int status, str header, dict params, str algorithm, qop):
    """`DigestClient.accept` (see there), on the client's own fields: the same checks,
    the same shared challenge, HA1 computed as `digest.ha1` computes it."""
    previous = digest._challenge
    stale = params.get("stale", "").lower() == "true"
    cdef str realm = params.get("realm", "")
    cdef long nc = digest._nc
    if (previous is not None and nc > 0 and not stale and previous.realm == realm
            and (digest._nonce == params.get("nonce") or nc == 1)):
        raise AuthError("credentials rejected", status=status)
    values = (header, realm, params.get("opaque"), algorithm, "algorithm" in params, qop)
    shared = _CHALLENGES.get(values)
    if shared is None:
        shared = _Challenge(*values)
        if len(_CHALLENGES) < 10_000:
            _CHALLENGES[values] = shared
    key = shared.ha1_key
    if digest._ha1_key != key:
        password = digest.password_source()
        H = _sha256 if key[1] == "SHA-256" else _md5
        digest._ha1 = H(f"{digest.username}:{realm}:{password}".encode("utf-8")).digest()
        digest._ha1_key = key
        del password
    digest._challenge = shared
    digest._nonce = params.get("nonce", "")
    digest._nc = 0


cdef str _quote(str value):
    if "\\" in value or '"' in value:
        return _quote_escaped(value)
    return f'"{value}"'


def _retransmit(_Exchange ex):
    cdef RegisterWire wire = ex.wire
    if ex.finished or (ex.future is not None and ex.future.done()):
        wire._end(ex, None, False)
        return
    if not wire._send(ex):
        return
    ex.interval = wire.t2 if ex.proceeding else min(2 * ex.interval, wire.t2)
    wire.wheel.reschedule(ex.retransmit, ex.interval)


def _timed_out(_Exchange ex):
    metrics.transaction_timeout("client", "REGISTER")
    ex.wire._end(ex, TransactionTimeout(
        f"REGISTER got no final response (timer F, {64 * ex.wire.t1:g}s)"))


cdef bint _has_received(const char *s, Py_ssize_t start, Py_ssize_t end):
    """`received` in any letter case within s[start:end] (the twin lower-cases the Via)."""
    cdef Py_ssize_t i, j
    cdef const char *word = b"received"
    for i in range(start, end - 7):
        for j in range(8):
            if (s[i + j] | 32) != word[j]:
                break
        else:
            return True
    return False


cdef int _status(const char *s, Py_ssize_t n):
    """The status code of `SIP/2.0 NNN ...`, or -1."""
    cdef int i, code = 0
    for i in range(8, 11):
        if not (b'0' <= s[i] <= b'9'):
            return -1
        code = code * 10 + (s[i] - 48)
    if n > 11 and s[11] != b' ' and s[11] != b'\r':
        return -1
    return code


cdef inline bint _ws(char c):
    return c == b' ' or c == b'\t' or c == b'\r' or c == b'\n' or c == b'\x0b' or c == b'\x0c'


cdef bint _cseq_is_register(const char *s, Py_ssize_t head_end):
    """The first `CSeq:` line holds `<digits> REGISTER` (the twin's split() rule)."""
    cdef Py_ssize_t start = _find(s, 0, head_end + 2, b"\r\nCSeq:", 7)
    if start < 0:
        return False
    cdef Py_ssize_t i = start + 7
    cdef Py_ssize_t end = _find(s, i, head_end + 2, b"\r\n", 2)
    while i < end and _ws(s[i]):
        i += 1
    cdef Py_ssize_t digits = i
    while i < end and b'0' <= s[i] <= b'9':
        i += 1
    if i == digits or i == end or not _ws(s[i]):
        return False
    while i < end and _ws(s[i]):
        i += 1
    if end - i < 8 or memcmp(s + i, b"REGISTER", 8) != 0:
        return False
    i += 8
    while i < end and _ws(s[i]):
        i += 1
    return i == end


cdef long _our_expires(const char *s, Py_ssize_t head_end, bytes token) except -2:
    """The twin's `_our_expires`: -1 where it gives None."""
    cdef bytes marker = b"<sip:" + token + b"@"
    cdef const char *m = marker
    cdef Py_ssize_t mlen = len(marker)
    cdef Py_ssize_t pos = _find(s, 0, head_end + 2, b"\r\nContact:", 10)
    cdef Py_ssize_t start, end, at, close, stop, i
    cdef long value
    while 0 <= pos < head_end:
        start = pos + 10
        end = _find(s, start, head_end + 2, b"\r\n", 2)
        at = _find(s, start, end, m, mlen)
        if at >= 0:
            close = _find(s, at, end, b">", 1)
            if close < 0 or _find(s, start, at, b'"', 1) >= 0:
                return -1
            stop = _find(s, close + 1, end, b",", 1)
            if stop < 0:
                # the twin strips the value: trailing whitespace is not part of it
                stop = end
                while stop > close + 1 and _ws(s[stop - 1]):
                    stop -= 1
            return _expires_param(s, close + 1, stop)
        pos = _find(s, end, head_end + 2, b"\r\nContact:", 10)
    return -1


cdef long _expires_param(const char *s, Py_ssize_t i, Py_ssize_t end):
    """The first `;[ws]expires[ws]=[ws]DIGITS[ws](;|end)` in s[i:end] (any case), as the
    twin's regular expression finds it; -1 when there is none."""
    cdef Py_ssize_t j, k, digits
    cdef const char *word = b"expires"
    cdef long value
    while i < end:
        if s[i] != b';':
            i += 1
            continue
        j = i + 1
        while j < end and (s[j] == b' ' or s[j] == b'\t'):
            j += 1
        if end - j < 7:
            return -1
        for k in range(7):
            if (s[j + k] | 32) != word[k]:
                break
        else:
            j += 7
            while j < end and (s[j] == b' ' or s[j] == b'\t'):
                j += 1
            if j < end and s[j] == b'=':
                j += 1
                while j < end and (s[j] == b' ' or s[j] == b'\t'):
                    j += 1
                digits = j
                value = 0
                while j < end and b'0' <= s[j] <= b'9' and j - digits < 10:
                    value = value * 10 + (s[j] - 48)
                    j += 1
                if j > digits and not (j < end and b'0' <= s[j] <= b'9'):
                    while j < end and (s[j] == b' ' or s[j] == b'\t'):
                        j += 1
                    if j == end or s[j] == b';':
                        return value
        i += 1
    return -1


cdef inline bint _token_char(unsigned char c):
    return (b'a' <= c <= b'z' or b'A' <= c <= b'Z' or b'0' <= c <= b'9'
            or c in b"-.!%*_+`'~")


cdef object _one_digest_challenge(const char *s, Py_ssize_t head_end, bytes header):
    """The twin's `_one_digest_challenge`: the params dict, or None."""
    cdef const char *name = header
    cdef Py_ssize_t nlen = len(header)
    cdef Py_ssize_t start = -1, pos, end, count = 0, i
    pos = _find(s, 0, head_end + 2, b"\r\n", 2)
    while 0 <= pos < head_end:
        if head_end - pos - 2 > nlen and memcmp(s + pos + 2, name, nlen) == 0 \
                and s[pos + 2 + nlen] == b':':
            count += 1
            start = pos + 3 + nlen
        if s[pos + 2] == b' ' or s[pos + 2] == b'\t':
            return None  # a folded line somewhere: the general path
        pos = _find(s, pos + 2, head_end + 2, b"\r\n", 2)
    if count != 1:
        return None
    end = _find(s, start, head_end + 2, b"\r\n", 2)
    while start < end and _ws(s[start]):
        start += 1
    while end > start and _ws(s[end - 1]):
        end -= 1
    for i in range(start, end):
        if <unsigned char>s[i] >= 0x80 or s[i] == b'\\':
            return _slow_challenge(s[start:end])  # the twin's own reading decides
    params = _plain_challenge(s, start, end)
    # what the plain reading does not take, the twin's reading decides (never otherwise)
    return params if params is not None else _slow_challenge(s[start:end])


cdef object _slow_challenge(bytes value):
    try:
        single = _single_challenge(value.decode())
    except UnicodeDecodeError:
        return None
    if single is None or single[0].lower() != "digest":
        return None
    return single[1]


cdef object _plain_challenge(const char *s, Py_ssize_t i, Py_ssize_t end):
    """`Digest name=value, name="value"...` without escapes, as `_single_challenge`
    reads it; None for anything it would not take (or would read otherwise)."""
    if end - i < 7 or (s[i] | 32) != b'd' or s[i:i + 6].lower() != b"digest":
        return None
    i += 6
    if i >= end or not (s[i] == b' ' or s[i] == b'\t'):
        return None
    cdef dict params = {}
    cdef Py_ssize_t n0, n1, v0, v1
    while True:
        while i < end and (s[i] == b' ' or s[i] == b'\t'):
            i += 1
        n0 = i
        while i < end and _token_char(s[i]):
            i += 1
        n1 = i
        if n1 == n0:
            return None
        while i < end and (s[i] == b' ' or s[i] == b'\t'):
            i += 1
        if i >= end or s[i] != b'=':
            return None
        i += 1
        while i < end and (s[i] == b' ' or s[i] == b'\t'):
            i += 1
        if i < end and s[i] == b'"':
            i += 1
            v0 = i
            while i < end and s[i] != b'"':
                i += 1
            if i >= end:
                return None
            v1 = i
            i += 1
        else:
            v0 = i
            while i < end and not (s[i] in b' \t,"<>'):
                i += 1
            v1 = i
            if v1 == v0:
                return None
        while i < end and (s[i] == b' ' or s[i] == b'\t'):
            i += 1
        key = s[n0:n1].decode("ascii").lower()
        if key not in params:
            params[key] = s[v0:v1].decode("ascii")
        if i == end:
            return params
        if s[i] != b',':
            return None
        i += 1
        if i >= end:
            return None
