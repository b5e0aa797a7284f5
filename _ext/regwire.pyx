# cython: language_level=3
"""REGISTER exchanges on UDP, compiled: the twin of `gateway/sip/regwire.py`.

Built as `gateway._regwire`; `gateway.sip.registration` picks this module or the
pure-Python twin through `gateway._accel`. The design is described once, in the Python
twin's docstring; this file follows it with
- the response read by C pointer scans (top Via branch, status, CSeq method, the
  challenge's params, our Contact's expires);
- branches drawn from the compiled pool of random bytes (`gateway/_ids.pxd`);
- the Authorization line written here (`credentials`: HA1, H(A2) and the response
  hashed with OpenSSL's libcrypto, which hashlib uses too, without EVP's dispatch; the
  cnonce drawn with the nonce and kept in the digest client);
- the first timer E of every exchange kept in one queue under one wheel timer (a handle
  of its own only for an exchange that needs a second: see `RegisterWire._first`);
- a challenge like the last one read but for its nonce taken from that reading;
- the metrics counted in C and added into `gateway.metrics`' recorders when they are
  read;
so a common exchange runs no Python frame per message and makes few objects beyond the
datagram, the request and the strings the digest keeps.

What it reads differently (exactly-spelled header names, one Via in the top Via line,
a plain challenge) it hands to the same fallbacks as the twin: a value it does not take
goes to `gateway.sip.fields._single_challenge`, a response it does not take to the
general path, so both twins decide alike (the tests run both on the same responses).

May depend on the gateway's metrics, errors, digest, parser and flows (as the twin),
and on the layout of the compiled cycle's clients (`gateway/_regcycle.pxd`: their
`cseq`, `digest` and `_token` read from the struct; any other client is asked by name);
never on instances, the store or the API.
"""

from libc.string cimport memchr, memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII
from gateway._digest cimport DigestClient as _Digest
from gateway._ids cimport draw_hex
from gateway._regcycle cimport ClientState, ExchangeStarter, c_done
from gateway._udpsock cimport DatagramSender
from gateway._timerwheel cimport TimerHandle, TimerWheel, cancel as _cancel
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import asyncio
import logging

from gateway import metrics
from gateway._regcycle import done as _cycle_done
from gateway.errors import AuthError, TransactionTimeout, TransportError
from gateway.sip import parsing
from gateway.sip.digest import _BY_NAME, _CHALLENGES, _Challenge, _quote
from gateway.sip.fields import _single_challenge
from gateway.sip.flow import Flow, redact, trace
from gateway.sip.regwire import _observe


include "tracing.pxi"
include "writer.pxi"
include "flowslots.pxi"

# The counts this module makes in `gateway.metrics`' recorders, as its recording
# functions make them, kept in C and added into the recorders whenever one is read
# (`metrics.on_read`: scrapes, /stats and tests see every count): no dict update, no
# int or float object per count.
cdef enum:
    REGISTERED, UNREGISTERED, CHALLENGED, UNAUTHORIZED, OUTCOMES
    MAX_BOUNDS = 62
cdef tuple _OUTCOME_KEYS = (("registered",), ("unregistered",), ("challenged",),
                            ("unauthorized",))
cdef tuple _IN_CLASS = tuple(("in", "udp", c) for c in metrics._STATUS_CLASS)  # status // 100
cdef long long _sent = 0            # register_sent_total
cdef long long _sent_out = 0        # sip_requests_total out/udp/REGISTER
cdef long long _received[10]        # sip_responses_total in/udp/class, by status // 100
cdef long long _outcomes[OUTCOMES]  # register_results_total
cdef long long _rtt_counts[MAX_BOUNDS + 1]  # register_rtt_seconds: per bucket, then the sum
cdef double _rtt_sum = 0.0
cdef double _rtt_bounds[MAX_BOUNDS]
cdef Py_ssize_t _rtt_n = len(metrics.REGISTER_RTT.bounds)
cdef bint _counted = False  # anything counted since the last add
if _rtt_n > MAX_BOUNDS:
    raise ImportError("register_rtt_seconds has too many buckets for the compiled wire")
for _i, _bound in enumerate(metrics.REGISTER_RTT.bounds):
    _rtt_bounds[_i] = _bound
memset(_received, 0, sizeof(_received))
memset(_outcomes, 0, sizeof(_outcomes))
memset(_rtt_counts, 0, sizeof(_rtt_counts))


def _add_counts():
    """Add what was counted here since the last call into the recorders (their raw
    dicts: reading them through `values` would call this again)."""
    global _counted, _sent, _sent_out, _rtt_sum
    if not _counted:
        return
    _counted = False
    cdef int i
    if _sent:
        metrics.REGISTER_SENT._values[()] += _sent
        _sent = 0
    if _sent_out:
        metrics._SIP_REQ[("out", "udp", "REGISTER")] += _sent_out
        _sent_out = 0
    for i in range(10):
        if _received[i]:
            metrics._SIP_RESP[_IN_CLASS[i]] += _received[i]
            _received[i] = 0
    results = metrics.REGISTER_RESULTS._values
    for i in range(OUTCOMES):
        if _outcomes[i]:
            results[_OUTCOME_KEYS[i]] += _outcomes[i]
            _outcomes[i] = 0
    cdef list rtt = metrics.REGISTER_RTT._series[()]
    for i in range(_rtt_n + 1):
        if _rtt_counts[i]:
            rtt[i] += _rtt_counts[i]
            _rtt_counts[i] = 0
    if _rtt_sum:
        rtt[_rtt_n + 1] += _rtt_sum
        _rtt_sum = 0.0


metrics.on_read(_add_counts)


cdef inline void _count(long long *counter) noexcept:
    global _counted
    counter[0] += 1
    _counted = True


cdef void _observe_rtt(double rtt) noexcept:
    """`metrics.REGISTER_RTT.observe(rtt)`."""
    global _rtt_sum, _counted
    if not rtt >= 0.0:
        rtt = 0.0
    cdef Py_ssize_t i = 0
    while i < _rtt_n and _rtt_bounds[i] < rtt:
        i += 1
    _rtt_counts[i] += 1
    _rtt_sum += rtt
    _counted = True


cdef void _result(int outcome, double rtt) noexcept:
    """`metrics.registration_result(outcome, rtt)`."""
    _count(&_outcomes[outcome])
    _observe_rtt(rtt)


cdef inline _digest_of(client):
    """`client.digest`: read from the struct of the compiled cycle's clients."""
    return (<ClientState>client).digest if isinstance(client, ClientState) else client.digest


cdef inline _token_of(client):
    """`client._token or client.token` (the same, `_token` read from the struct)."""
    if isinstance(client, ClientState) and (<ClientState>client)._token:
        return (<ClientState>client)._token
    return client._token or client.token


cdef bytes _TAIL = b"Content-Length: 0\r\n\r\n"
cdef bytes _HEX = b"0123456789abcdef"
cdef enum:
    BRANCH = 33        # z9hG4bK, 20 random hex digits, the slot in 6 hex digits
    SLOT_DIGITS = 6
    MAX_SLOTS = 1 << 24


cdef void _write_branch(char *buf, Py_ssize_t slot) except *:
    """z9hG4bK + 20 random hex digits + `slot` in 6 hex digits (where the exchange is
    in its wire's table: a response finds it without a hash), BRANCH chars into buf."""
    cdef const char *hexd = _HEX
    cdef int i
    memcpy(buf, b"z9hG4bK", 7)
    draw_hex(buf + 7, 10)
    for i in range(SLOT_DIGITS):
        buf[BRANCH - 1 - i] = hexd[(slot >> (4 * i)) & 15]


cdef Py_ssize_t _slot_of(const char *s, Py_ssize_t b, Py_ssize_t e) noexcept:
    """The slot a branch of ours (s[b:e]) names, or -1."""
    cdef Py_ssize_t slot = 0, i
    cdef char c
    if e - b != BRANCH:
        return -1
    for i in range(e - SLOT_DIGITS, e):
        c = s[i]
        if b'0' <= c <= b'9':
            slot = slot * 16 + (c - 48)
        elif b'a' <= c <= b'f':
            slot = slot * 16 + (c - 87)
        else:
            return -1
    return slot


cdef inline double _now() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef Py_ssize_t _find(const char *s, Py_ssize_t start, Py_ssize_t end, const char *needle,
                      Py_ssize_t m) noexcept:
    """The offset of `needle` in s[start:end], or -1. Its first byte found with memchr,
    the rest compared: the needles are short (a header name, CRLF) and the texts a few
    hundred bytes, where memmem's set-up costs more than the search."""
    if start < 0 or end - start < m:
        return -1
    cdef const char *at = s + start
    cdef const char *last = s + end - m  # the last place the needle may start
    while at <= last:
        at = <const char *>memchr(at, needle[0], last - at + 1)
        if at == NULL:
            return -1
        if memcmp(at + 1, needle + 1, m - 1) == 0:
            return at - s
        at += 1
    return -1


cdef inline Py_ssize_t _crlf(const char *s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The offset of the first CRLF in s[i:n], or -1."""
    cdef const char *at
    while i < n - 1:
        at = <const char *>memchr(s + i, b'\r', n - 1 - i)
        if at == NULL:
            return -1
        if at[1] == b'\n':
            return at - s
        i = at - s + 1
    return -1


cdef struct _Head:
    # what a response's head holds for the wire, found in one pass over its lines:
    Py_ssize_t head_end          # where the first CRLF CRLF is
    Py_ssize_t via, via_end      # the first `Via:` line's value (-1: none)
    Py_ssize_t cseq, cseq_end    # the first `CSeq:` line's value (-1: none)
    Py_ssize_t contact           # the CRLF before the first `Contact:` line (-1: none)
    Py_ssize_t challenge, challenge_end  # the last challenge line's value (401, 407)
    int challenges               # how many challenge lines
    bint folded                  # a line starting with a space or tab (a folded one)


cdef bint _scan(const char *s, Py_ssize_t n, int status, _Head *h) noexcept:
    """The lines of the head of s[:n] read once into `h` (their names spelled exactly,
    as the twin finds them), the challenge lines as `status` calls them; False when the
    head has no end."""
    cdef const char *name = NULL
    cdef Py_ssize_t nlen = 0, pos, line, end
    cdef char c
    if status == 401:
        name, nlen = b"WWW-Authenticate:", 17
    elif status == 407:
        name, nlen = b"Proxy-Authenticate:", 19
    h.via = h.cseq = h.contact = h.challenge = -1
    h.via_end = h.cseq_end = h.challenge_end = -1
    h.challenges = 0
    h.folded = False
    pos = _crlf(s, 0, n)
    while pos >= 0:
        line = pos + 2
        end = _crlf(s, line, n)
        if end == line:
            h.head_end = pos
            return True
        if end < 0:
            return False
        c = s[line]
        if c == b'V':
            if h.via < 0 and end - line >= 4 and memcmp(s + line, b"Via:", 4) == 0:
                h.via, h.via_end = line + 4, end
        elif c == b'C':
            if h.cseq < 0 and end - line >= 5 and memcmp(s + line, b"CSeq:", 5) == 0:
                h.cseq, h.cseq_end = line + 5, end
            elif h.contact < 0 and end - line >= 8 and memcmp(s + line, b"Contact:", 8) == 0:
                h.contact = pos
        elif c == b' ' or c == b'\t':
            h.folded = True
        if nlen and c == name[0] and end - line >= nlen and memcmp(s + line, name, nlen) == 0:
            h.challenges += 1
            h.challenge, h.challenge_end = line + nlen, end
        pos = end
    return False


@cython.freelist(64)  # (made and freed per exchange)
cdef class _Exchange:
    cdef RegisterWire wire
    cdef object client, flow, future, callback, uri, timer, sendto, remote
    cdef DatagramSender sender  # sendto's socket, when it sends from C
    cdef bytes head, middle, tail, data
    cdef char branch[BRANCH]  # the last one sent (NUL first before the first send)
    cdef Py_ssize_t slot  # in its wire's table (-1: not there)
    cdef long expires
    cdef int challenges_left, answered
    cdef double interval, sent, started, due, deadline, armed
    cdef bint proceeding, finished
    # in its wire's queue of first retransmissions (`RegisterWire._first`): the next
    # exchange there (a reference) and the one before (its address only)
    cdef bint queued
    cdef _Exchange q_next
    cdef PyObject *q_prev

    def done(self):
        return self.finished

    def cancel(self):
        """Drop the exchange: no more sends, no call of its callback."""
        if not self.finished:
            self.wire._end(self, None, False)


cdef class RegisterWire(ExchangeStarter):
    """The REGISTER exchanges of one endpoint's UDP sockets; see the Python twin. (Its
    `datagram` is the sockets' hook; the compiled socket calls it as `take`.)"""

    cdef readonly object transport, wheel
    cdef object _call_later, _reschedule  # the wheel's, bound once
    cdef TimerWheel _cwheel  # the wheel when compiled (its C calls), else None
    # the flow of the last exchange started, its connection, sendto and peer
    cdef object _send_flow, _send_connection, _sendto, _remote
    cdef DatagramSender _sender
    # the flow whose last_activity was last written here (its address: no reference
    # kept), and when
    cdef const void *_active_flow
    cdef double _active_at
    cdef readonly double t1, t2
    cdef double _slack  # a timer fires this much early, or later (the wheel's tick)
    # the exchanges under way, each in the slot its branches name (`_write_branch`), and
    # the slots free; how many are under way
    cdef list _table, _free
    cdef Py_ssize_t _live
    # The exchanges whose timer is their first (timer E, T1 after the request: all wait
    # T1, so they fall due in the order they were sent), oldest first, and the one wheel
    # timer set for the oldest: a handle for each only once its first timer fired
    # (retransmitted, moved on to T2 or timer F), which the common exchange never gets to.
    cdef _Exchange _first
    cdef PyObject *_last  # (the queue's tail; its reference is its predecessor's)
    cdef object _first_timer  # set for `_first.armed`, None while the queue is empty
    # the top Via last read on a flow (branch aside), and what it told the flow
    cdef object _seen_flow, _seen_observed
    cdef bytes _seen_before, _seen_after
    cdef bint _seen_received  # whether that Via holds `received`
    # the challenge line last read plainly (the nonce cut out: what is before and after
    # it), for which status, and its reading (`_read_challenge`)
    cdef int _ch_status
    cdef bytes _ch_before, _ch_after
    cdef object _ch_shared
    cdef bint _ch_stale
    # what `_read_challenge` found
    cdef object _got_shared, _got_nonce
    cdef bint _got_stale

    def __init__(self, transport, wheel, double t1, double t2):
        self.transport = transport
        self.wheel = wheel
        self._call_later = wheel.call_later
        self._reschedule = wheel.reschedule
        self._cwheel = wheel if type(wheel) is TimerWheel else None
        self.t1 = t1
        self.t2 = t2
        self._slack = wheel.resolution
        self._table = []
        self._free = []
        self._seen_before = self._seen_after = b""
        self._ch_before = self._ch_after = b""
        transport.datagram_hook = self.datagram

    @property
    def pending(self):
        """The exchanges under way by their branch (as the twin's dict)."""
        cdef _Exchange ex
        cdef dict found = {}
        for item in self._table:
            if item is not None:
                ex = item
                found[ex.branch[:BRANCH]] = ex
        return found

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

    cdef object c_start(self, ClientState client, flow, uri, bytes head, bytes middle,
                        bytes tail, long expires, int challenges_left):
        """`start(..., done)` for the compiled cycle (its `done` the callback)."""
        cdef _Exchange ex = self._new(client, flow, uri, head, middle, tail, expires,
                                      challenges_left, _cycle_done)
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
        ex.branch[0] = 0
        ex.slot = -1
        connection = _connection(flow)
        if flow is not self._send_flow or connection is not self._send_connection:
            # (a flow's connection and peer stay; the clients of a registrar share one)
            self._send_flow = flow
            self._send_connection = connection
            sender = connection.transport
            self._sendto = sender.sendto
            self._sender = sender if isinstance(sender, DatagramSender) else None
            self._remote = flow.remote
        ex.sendto = self._sendto
        ex.sender = self._sender
        ex.remote = self._remote
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
        cdef ClientState state
        if isinstance(client, ClientState):  # (the compiled cycle's: its fields)
            state = <ClientState>client
            state.cseq += 1
            cseq = state.cseq
            digest = state.digest
        else:
            cseq = client.cseq + 1
            client.cseq = cseq
            digest = client.digest
        if ex.slot < 0:
            self._hold(ex)
        cdef char branch[BRANCH]
        _write_branch(branch, ex.slot)
        cdef _Writer w = _request
        w.start()
        w.raw(ex.head)
        w.add(branch, BRANCH)
        w.raw(ex.middle)
        w.number(cseq)
        w.raw(ex.tail)
        cdef Py_ssize_t at = _write_credentials(digest, ex.uri)
        if at >= 0:  # the Authorization line, from where it was written
            w.add(_line.data() + at, _line.size - at)
            _line.start()
        w.raw(_TAIL)
        ex.data = w.take()
        memcpy(ex.branch, branch, BRANCH)
        ex.interval = self.t1
        ex.proceeding = False
        _count(&_sent)
        ex.sent = _now()
        ex.due = ex.sent + self.t1
        ex.deadline = ex.sent + 64 * self.t1
        if ex.timer is None and not ex.queued:
            ex.armed = ex.due
            self._enqueue(ex)
        elif ex.timer is not None and ex.armed > ex.due:  # (a queued one's is not)
            self._move(ex.timer, self.t1)
            ex.armed = ex.due
        self._send(ex, ex.sent)

    cdef object _later(self, double delay, callback, arg):
        """The wheel's `call_later(delay, callback, arg)` (its C call when compiled)."""
        if self._cwheel is not None:
            return self._cwheel.c_call_later(delay, callback, arg)
        return self._call_later(delay, callback, arg)

    cdef int _enqueue(self, _Exchange ex) except -1:
        """`ex` last in the queue of first timers (the wheel's timer set if it was empty;
        `_first_fired` sets it for the first left when it is done)."""
        if self._last == NULL and self._first_timer is None:
            self._first_timer = self._later(ex.armed - ex.sent, _first_fired, self)
        ex.queued = True
        ex.q_prev = self._last
        if self._last == NULL:
            self._first = ex
        else:
            (<_Exchange>self._last).q_next = ex
        self._last = <PyObject *>ex
        return 0

    cdef int _dequeue(self, _Exchange ex) except -1:
        """`ex` out of the queue (the wheel's timer cancelled when it is left empty)."""
        following = ex.q_next
        if ex.q_prev == NULL:
            self._first = following
        else:
            (<_Exchange>ex.q_prev).q_next = following
        if following is None:
            self._last = ex.q_prev
        else:
            (<_Exchange>following).q_prev = ex.q_prev
        ex.q_next = None
        ex.q_prev = NULL
        ex.queued = False
        if self._first is None and self._first_timer is not None:
            _cancel(self._first_timer)
            self._first_timer = None
        return 0

    cdef int _move(self, timer, double delay) except -1:
        """The wheel's `reschedule(timer, delay)` (its C call when compiled)."""
        if self._cwheel is not None:
            return self._cwheel.c_reschedule(timer, delay)
        self._reschedule(timer, delay)
        return 0

    cdef bint _send(self, _Exchange ex, double now) except -1:
        flow = ex.flow
        if _closed(flow):
            self._end(ex, TransportError(f"{flow!r} is closed"))
            return False
        if _tracing():
            trace.debug("send %s\n%s", flow, redact(ex.data))
        if ex.sender is not None:
            ex.sender.send(ex.data, ex.remote)
        else:
            ex.sendto(ex.data, ex.remote)
        _count(&_sent_out)
        self._active(flow, now)
        return True

    cdef int _active(self, flow, double now) except -1:
        """`flow.last_activity = now`, skipped when this wire wrote it less than a
        millisecond ago (what the flow's idle check reads is then that much older at
        most; a flow made since, at the same address, has its own, newer time)."""
        if <const void *>flow == self._active_flow and now - self._active_at < 1e-3:
            return 0
        _set_slot(flow, _LAST_ACTIVITY, "last_activity", now)
        self._active_flow = <const void *>flow
        self._active_at = now
        return 0

    cdef int _hold(self, _Exchange ex) except -1:
        """A slot of the table for `ex`."""
        cdef Py_ssize_t slot
        if self._free:
            slot = self._free.pop()
            self._table[slot] = ex
        else:
            slot = len(self._table)
            if slot >= MAX_SLOTS:
                raise OverflowError("too many REGISTER exchanges under way")
            self._table.append(ex)
        ex.slot = slot
        self._live += 1

    cdef _end(self, _Exchange ex, outcome, bint notify=True):
        if ex.slot >= 0:  # its branch is not ours any more
            self._table[ex.slot] = None
            self._free.append(ex.slot)
            ex.slot = -1
            self._live -= 1
        if ex.queued:
            self._dequeue(ex)
        timer = ex.timer
        if timer is not None:
            _cancel(timer)
            ex.timer = None
        if ex.finished:
            return
        ex.finished = True
        future = ex.future
        if future is None:
            if notify:
                if ex.callback is _cycle_done and isinstance(ex.client, ClientState):
                    c_done(<ClientState>ex.client, ex.flow, outcome, ex.started)
                else:
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
        return self.take(data, remote)

    cdef bint take(self, bytes data, object remote) except -1:
        if not self._live:
            return False
        cdef const char *s = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if n < 12 or memcmp(s, b"SIP/2.0 ", 8) != 0:
            return False
        cdef int status = _status(s, n)
        cdef _Head h
        if status < 0 or not _scan(s, n, status, &h) or h.via < 0:
            return False
        # the top Via: the first `Via:` line, one Via in it
        cdef Py_ssize_t via = h.via, via_end = h.via_end
        if memchr(s + via, b',', via_end - via) != NULL:
            return False
        cdef Py_ssize_t b = _find(s, via, via_end, b";branch=", 8)
        if b < 0:
            return False
        b += 8
        # (ours are BRANCH long: the branch must end there, and be ours byte for byte)
        cdef Py_ssize_t e = b + BRANCH
        if e > via_end or (e < via_end and s[e] != b';' and s[e] != b' ' and s[e] != b'\t'):
            return False
        cdef Py_ssize_t slot = _slot_of(s, b, e)
        if slot < 0 or slot >= len(self._table):
            return False
        found = self._table[slot]
        if found is None:
            return False
        cdef _Exchange ex = <_Exchange>found
        if memcmp(ex.branch, s + b, BRANCH) != 0:
            return False  # an ended exchange's, or not ours
        if not _cseq_is_register(s, h.cseq, h.cseq_end):
            return False
        flow = ex.flow
        if _tracing():
            trace.debug("recv %s\n%s", flow, redact(data))
        _count(&_received[status // 100])  # (three digits)
        cdef double now = _now()
        self._active(flow, now)
        self._observe(s, via, b, e, via_end, flow)
        if status < 200:
            ex.proceeding = True
            return True
        cdef double rtt = now - ex.sent
        cdef long granted
        if status < 300:
            granted = ex.expires if ex.expires == 0 else \
                _our_expires(s, h.head_end, h.contact, _token_of(ex.client))
            if granted >= 0:
                _result(UNREGISTERED if ex.expires == 0 else REGISTERED, rtt)
                self._end(ex, granted)
                return True
        elif ((status == 401 or status == 407) and ex.answered < ex.challenges_left
                and self._read_challenge(s, &h, status)):
            _observe_rtt(rtt)
            self._challenged(ex, status)
            return True
        return self._hand_back(ex, data, status, rtt)

    cdef _observe(self, const char *s, Py_ssize_t via, Py_ssize_t b, Py_ssize_t e,
                  Py_ssize_t via_end, flow):
        """The twin's `_observe`. The clients of a registrar hear the same top Via but
        for its branch: whether it holds `received` is remembered with the last one
        (what is before and after the branch), and the noting is skipped when it is the
        one last noted on this flow and the flow still has what that one gave."""
        cdef bytes before = self._seen_before, after = self._seen_after
        if (PyBytes_GET_SIZE(before) == b - via and PyBytes_GET_SIZE(after) == via_end - e
                and memcmp(s + via, PyBytes_AS_STRING(before), b - via) == 0
                and memcmp(s + e, PyBytes_AS_STRING(after), via_end - e) == 0):
            if not self._seen_received or (flow is self._seen_flow
                                           and _observed(flow) is self._seen_observed):
                return
        else:
            self._seen_before = s[via:b]
            self._seen_after = s[e:via_end]
            self._seen_received = _has_received(s, via, via_end)
            self._seen_flow = None
            if not self._seen_received:
                return
        _observe(s[via:via_end], flow)
        self._seen_flow = flow
        self._seen_observed = _observed(flow)

    cdef bint _read_challenge(self, const char *s, _Head *h, int status) except -1:
        """Whether the 401/407 holds one usable Digest challenge, read as the twin reads
        it (`_one_digest_challenge`, `usable`, the shared challenge `accept` takes); if
        so, left in `_got_shared`, `_got_nonce`, `_got_stale`.

        The clients of one registrar hear the same challenge but for its nonce: when the
        line is the one last read here byte for byte outside the nonce, and the nonce is
        plain (printable ASCII, none of the bytes that would end or escape it), its
        reading is the last one with this nonce, and only the nonce is made."""
        cdef Py_ssize_t start = 0, end = 0, nonce_at = -1, nonce_end = -1, i
        cdef bytes before = self._ch_before, after = self._ch_after
        cdef Py_ssize_t nb, na
        cdef unsigned char c
        if h.challenges != 1 or h.folded:
            return False  # none, several, or a folded line somewhere: the general path
        start, end = h.challenge, h.challenge_end
        while start < end and _ws(s[start]):
            start += 1
        while end > start and _ws(s[end - 1]):
            end -= 1
        if status == self._ch_status:
            nb = PyBytes_GET_SIZE(before)
            na = PyBytes_GET_SIZE(after)
            if (end - start > nb + na and memcmp(s + start, PyBytes_AS_STRING(before), nb) == 0
                    and memcmp(s + end - na, PyBytes_AS_STRING(after), na) == 0):
                for i in range(start + nb, end - na):
                    c = <unsigned char>s[i]
                    if not (0x21 <= c <= 0x7e) or c == b'"' or c == b'\\' or c == b',' \
                            or c == b'<' or c == b'>':
                        break
                else:
                    self._got_shared = self._ch_shared
                    self._got_nonce = PyUnicode_DecodeASCII(s + start + nb, end - na - start - nb,
                                                            NULL)
                    self._got_stale = self._ch_stale
                    return True
        params = _challenge_params(s, start, end, &nonce_at, &nonce_end)
        if params is None:
            return False
        chosen = _usable(params)
        if chosen is None:
            return False
        shared = _shared_challenge("Authorization" if status == 401 else "Proxy-Authorization",
                                   params, chosen[0], chosen[1])
        self._got_shared = shared
        self._got_nonce = params["nonce"]
        self._got_stale = params.get("stale", "").lower() == "true"
        if nonce_at >= 0:  # read plainly: the next line like it is read from here
            self._ch_status = status
            self._ch_before = s[start:nonce_at]
            self._ch_after = s[nonce_end:end]
            self._ch_shared = shared
            self._ch_stale = self._got_stale
        return True

    cdef _challenged(self, _Exchange ex, int status):
        try:
            _accept(_digest_of(ex.client), status, self._got_shared, self._got_nonce,
                    self._got_stale)
        except Exception as exc:
            _count(&_outcomes[UNAUTHORIZED])
            self._end(ex, exc)
            return
        _count(&_outcomes[CHALLENGED])
        ex.answered += 1
        self._send_request(ex)

    cdef bint _hand_back(self, _Exchange ex, bytes data, int status, double rtt) except -1:
        try:
            response = parsing.parse_message(data)
        except Exception:
            return False
        if 200 <= status < 300:
            _result(UNREGISTERED if ex.expires == 0 else REGISTERED, rtt)
        else:
            _observe_rtt(rtt)
        self._end(ex, (response, ex.answered))
        return True


# -- the Authorization line, hashed with OpenSSL (libcrypto, as hashlib is) ---------------

# MD5 and SHA-256 through OpenSSL's own functions rather than EVP: the same hashes,
# without EVP's dispatch, most of the time of a short input (measured: 258 against 395 ns
# for 80 bytes). They are deprecated in OpenSSL 3, not removed: asked for knowingly.
cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    """

cdef extern from "openssl/md5.h":
    ctypedef struct MD5_CTX:
        pass
    int MD5_Init(MD5_CTX *c)
    int MD5_Update(MD5_CTX *c, const void *data, size_t n)
    int MD5_Final(unsigned char *md, MD5_CTX *c)

cdef extern from "openssl/sha.h":
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX *c)
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t n)
    int SHA256_Final(unsigned char *md, SHA256_CTX *c)

# H(REGISTER:uri) in hex by (hash, uri): the clients of a registrar send the same one
cdef dict _HA2 = {}
cdef _Writer _line = _Writer()     # the line written
cdef _Writer _hashed = _Writer()   # what each hash is taken of


cdef unsigned int _hash(const char *data, Py_ssize_t n, unsigned char *md, bint sha) except 0:
    """H(data) into md (16 or 32 bytes); its size. (The final step wipes the block the
    context buffered: what stays in it is the hash, not HA1's input, the password.)"""
    cdef MD5_CTX md5
    cdef SHA256_CTX sha256
    cdef bint done
    if sha:
        done = SHA256_Init(&sha256) and SHA256_Update(&sha256, data, n) \
            and SHA256_Final(md, &sha256)
    else:
        done = MD5_Init(&md5) and MD5_Update(&md5, data, n) and MD5_Final(md, &md5)
    if not done:
        raise MemoryError("OpenSSL could not hash")
    return 32 if sha else 16


cdef int _hash_into(_Writer out, _Writer text, bint sha) except -1:
    """H(text) in hex, added to `out`; `text` emptied."""
    cdef unsigned char md[32]
    cdef unsigned int n = _hash(text.data(), text.size, md, sha)
    text.start()
    out.hexed(md, n)


cdef bytes _ha1(str username, str realm, str password, bint sha):
    """H(username:realm:password), raw (`digest.ha1`); the text hashed is wiped after."""
    cdef _Writer text = _hashed
    cdef unsigned char md[32]
    cdef unsigned int n
    text.start()
    try:
        text.text(username)
        text.add(b":", 1)
        text.text(realm)
        text.add(b":", 1)
        text.text(password)
        n = _hash(text.data(), text.size, md, sha)
    finally:
        memset(text.data(), 0, text.size)
        text.start()
    return PyBytes_FromStringAndSize(<char *>md, n)


cdef _Writer _request = _Writer()  # the request written (`_send_request`)


cpdef bytes credentials(digest, str uri):
    """The twin's `credentials`: what `DigestClient.authorization("REGISTER", uri)` gives
    (the client's challenge, nonce, count, HA1 and the derived cnonce), computed here
    with the same hashes and written as the header line."""
    cdef Py_ssize_t at = _write_credentials(digest, uri)
    if at < 0:
        return b""
    line = PyBytes_FromStringAndSize(_line.data() + at, _line.size - at)
    _line.start()
    return line


@cython.final
cdef class _Said:
    """What the Authorization line needs of one shared `_Challenge`, read from it once
    (its accounts answer it one after another): the hash, and the line's fixed parts."""
    cdef object shared
    cdef bint sha, sess
    cdef object realm_text, ha1_key  # shared.realm, shared.ha1_key
    cdef bytes qop      # b"" without qop
    cdef bytes opening  # `Authorization: Digest username=`
    cdef bytes realm    # `, realm="R", nonce=`
    cdef bytes closing  # `"` [`, algorithm=A`] [`, opaque="O"`] [`, qop=Q, nc=`]


cdef _Said _last_said = None
# H(REGISTER:uri) in hex, the last one written (the next request is most often for the
# same registrar)
cdef str _last_uri = None
cdef bint _last_sha = False
cdef bytes _last_ha2 = None


cdef _Said _said(shared):
    """`shared`'s `_Said` (made again only when another challenge is answered)."""
    global _last_said
    cdef _Said said = _last_said
    if said is not None and said.shared is shared:
        return said
    said = _Said.__new__(_Said)
    algorithm = shared.algorithm
    qop = shared.qop
    said.realm_text = shared.realm
    said.ha1_key = shared.ha1_key
    said.sha = algorithm.startswith("SHA-256")
    said.sess = algorithm.endswith("-sess")
    said.qop = qop.encode() if qop else b""
    said.opening = f"{shared.header}: Digest username=".encode()
    said.realm = f", realm={_quote(shared.realm)}, nonce=".encode()
    closing = '"'
    if shared.algorithm_given or algorithm != "MD5":
        closing += f", algorithm={algorithm}"
    if shared.opaque is not None:
        closing += f", opaque={_quote(shared.opaque)}"
    if qop:
        closing += f", qop={qop}, nc="
    said.closing = closing.encode()
    said.shared = shared
    _last_said = said
    return said


cdef Py_ssize_t _write_credentials(digest, str uri) except -2:
    """`credentials` written at the end of `_line`: where the line starts there (-1 and
    nothing written before any challenge)."""
    global _last_uri, _last_sha, _last_ha2
    cdef _Digest d = <_Digest?>digest  # (the compiled client: its fields read directly)
    shared = d._challenge
    if shared is None:
        return -1
    cdef _Said said = _said(shared)
    d._nc += 1
    cdef long count = d._nc
    cdef str nonce = d._nonce, username = d.username
    cdef bint sha = said.sha
    cdef _Writer text = _hashed, out = _line
    cdef bytes ha1 = d._ha1
    cdef Py_ssize_t hexlen = 64 if sha else 32
    text.start()
    out.start()
    # out holds, until the line is written: HA1 hex, cnonce hex, nc, H(A2) hex, response
    out.hexed(<const unsigned char *>PyBytes_AS_STRING(ha1), len(ha1))
    cdef Py_ssize_t ha1_at = 0
    if said.sess:
        text.add(out.data(), out.size)
        text.add(b":", 1)
        text.text(nonce)
        text.add(b":", 1)
        text.add(d.cnonce, 16)
        _hash_into(out, text, sha)
        ha1_at = out.size - hexlen
    cdef Py_ssize_t cnonce_at = out.size
    out.add(d.cnonce, 16)
    cdef Py_ssize_t nc_at = out.size
    out.number(count, 16, 8)
    cdef Py_ssize_t ha2_at = out.size
    cdef object ha2
    if _last_ha2 is not None and sha == _last_sha and uri == _last_uri:
        ha2 = _last_ha2
    else:
        key = (sha, uri)
        ha2 = _HA2.get(key)
        if ha2 is None:
            text.add(b"REGISTER:", 9)
            text.text(uri)
            _hash_into(out, text, sha)
            ha2 = PyBytes_FromStringAndSize(out.data() + ha2_at, hexlen)
            out.size = ha2_at
            if len(_HA2) < 1000:
                _HA2[key] = ha2
        _last_uri, _last_sha, _last_ha2 = uri, sha, ha2
    out.add(<bytes>ha2, hexlen)
    cdef bytes qop = said.qop
    text.add(out.data() + ha1_at, hexlen)
    text.add(b":", 1)
    text.text(nonce)
    text.add(b":", 1)
    if qop:
        text.add(out.data() + nc_at, ha2_at - nc_at)
        text.add(b":", 1)
        text.add(out.data() + cnonce_at, 16)
        text.add(b":", 1)
        text.raw(qop)
        text.add(b":", 1)
    text.add(out.data() + ha2_at, hexlen)
    cdef Py_ssize_t response_at = out.size
    _hash_into(out, text, sha)
    # the line, written after what it is made of (then cut from the front)
    cdef Py_ssize_t line_at = out.size
    out.raw(said.opening)
    out.quoted(username)
    out.raw(said.realm)
    out.quoted(nonce)
    out.add(b", uri=", 6)
    out.quoted(uri)
    out.add(b', response="', 12)
    out.add(out.data() + response_at, hexlen)
    out.raw(said.closing)
    if qop:
        out.add(out.data() + nc_at, ha2_at - nc_at)
        out.add(b', cnonce="', 10)
        out.add(out.data() + cnonce_at, 16)
        out.add(b'"', 1)
    out.add(b"\r\n", 2)
    return line_at


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


cdef object _shared_challenge(str header, dict params, str algorithm, qop):
    """`digest._shared_challenge`: the one `_Challenge` of these values."""
    values = (header, params.get("realm", ""), params.get("opaque"), algorithm,
              "algorithm" in params, qop)
    shared = _CHALLENGES.get(values)
    if shared is None:
        shared = _Challenge(*values)
        if len(_CHALLENGES) < 10_000:
            _CHALLENGES[values] = shared
    return shared


cdef _accept(digest, int status, shared, str nonce, bint stale):
    """`DigestClient.accept` (see there), on the client's own fields: the same checks,
    the same shared challenge (read by `_read_challenge`), HA1 computed as `digest.ha1`
    computes it."""
    cdef _Digest d = <_Digest?>digest
    cdef _Said said = _said(shared)
    previous = d._challenge
    cdef long nc = d._nc
    if (previous is not None and nc > 0 and not stale
            and (previous is shared or previous.realm == said.realm_text)
            and (nc == 1 or d._nonce == nonce)):
        raise AuthError("credentials rejected", status=status)
    key = said.ha1_key
    if d._ha1_key is not key and (d._ha1_key is None or d._ha1_key != key):
        password = d.password_source()
        d._ha1 = _ha1(d.username, said.realm_text, password, key[1] == "SHA-256")
        d._ha1_key = key
        del password
    d._challenge = shared
    d._nonce = nonce
    d._nc = 0
    draw_hex(d.cnonce, 8)  # (the twin: `random_hex(8)`)


def _first_fired(RegisterWire wire):
    """The queue's timer: each exchange whose first timer is due (now, or within the
    wheel's tick) leaves the queue with a handle of its own, and `_timer_fired` does
    for it what it would have done had it had one from the start."""
    wire._first_timer = None
    cdef double now = _now()
    cdef _Exchange ex
    try:
        while wire._first is not None and wire._first.armed - wire._slack <= now:
            ex = wire._first
            wire._dequeue(ex)
            ex.timer = wire._later(wire.t1, _timer_fired, ex)  # (moved by _timer_fired)
            _timer_fired(ex)
    finally:
        if wire._first is not None and wire._first_timer is None:
            wire._first_timer = wire._later(max(wire._first.armed - _now(), 0.0),
                                            _first_fired, wire)


def _timer_fired(_Exchange ex):
    """The twin's `_timer_fired`."""
    cdef RegisterWire wire = ex.wire
    if ex.finished or (ex.future is not None and ex.future.done()):
        wire._end(ex, None, False)
        return
    cdef double now = _now()
    if now >= ex.deadline - wire._slack:
        _timed_out(ex)
        return
    if now >= ex.due - wire._slack:
        if not wire._send(ex, now):
            return
        ex.interval = wire.t2 if ex.proceeding else min(2 * ex.interval, wire.t2)
        ex.due = now + ex.interval
    ex.armed = min(ex.due, ex.deadline)
    wire._move(ex.timer, max(ex.armed - now, 0.0))


cdef _timed_out(_Exchange ex):
    metrics.transaction_timeout("client", "REGISTER")
    ex.wire._end(ex, TransactionTimeout(
        f"REGISTER got no final response (timer F, {64 * ex.wire.t1:g}s)"))


cdef bint _has_received(const char *s, Py_ssize_t start, Py_ssize_t end) noexcept:
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


cdef int _status(const char *s, Py_ssize_t n) noexcept:
    """The status code of `SIP/2.0 NNN ...`, or -1."""
    cdef int i, code = 0
    for i in range(8, 11):
        if not (b'0' <= s[i] <= b'9'):
            return -1
        code = code * 10 + (s[i] - 48)
    if n > 11 and s[11] != b' ' and s[11] != b'\r':
        return -1
    return code


cdef inline bint _ws(char c) noexcept:
    return c == b' ' or c == b'\t' or c == b'\r' or c == b'\n' or c == b'\x0b' or c == b'\x0c'


cdef bint _cseq_is_register(const char *s, Py_ssize_t i, Py_ssize_t end) noexcept:
    """The first `CSeq:` line (its value s[i:end], i < 0 for none) holds
    `<digits> REGISTER` (the twin's split() rule)."""
    if i < 0:
        return False
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


cdef long _our_expires(const char *s, Py_ssize_t head_end, Py_ssize_t pos, str token) except -2:
    """The twin's `_our_expires`: -1 where it gives None. `pos`: where the first
    `\\r\\nContact:` is (-1: none)."""
    cdef char buf[256]
    cdef Py_ssize_t n
    cdef const char *text = PyUnicode_AsUTF8AndSize(token, &n)
    cdef bytes marker
    cdef const char *m = buf
    cdef Py_ssize_t mlen = n + 6
    if mlen <= 256:  # `<sip:TOKEN@` written on the stack
        memcpy(buf, b"<sip:", 5)
        memcpy(buf + 5, text, n)
        buf[n + 5] = b'@'
    else:
        marker = b"<sip:" + token.encode() + b"@"
        m = marker
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


cdef long _expires_param(const char *s, Py_ssize_t i, Py_ssize_t end) noexcept:
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


cdef inline bint _token_char(unsigned char c) noexcept:
    return (b'a' <= c <= b'z' or b'A' <= c <= b'Z' or b'0' <= c <= b'9'
            or c in b"-.!%*_+`'~")


cdef object _challenge_params(const char *s, Py_ssize_t start, Py_ssize_t end,
                              Py_ssize_t *nonce_at, Py_ssize_t *nonce_end):
    """The params of the Digest challenge in s[start:end] as the twin reads them, or
    None; where the nonce's value is when the plain reading took it (else -1)."""
    cdef Py_ssize_t i
    for i in range(start, end):
        if <unsigned char>s[i] >= 0x80 or s[i] == b'\\':
            return _slow_challenge(s[start:end])  # the twin's own reading decides
    params = _plain_challenge(s, start, end, nonce_at, nonce_end)
    if params is not None:
        return params
    # what the plain reading does not take, the twin's reading decides (never otherwise)
    nonce_at[0] = nonce_end[0] = -1
    return _slow_challenge(s[start:end])


cdef object _slow_challenge(bytes value):
    try:
        single = _single_challenge(value.decode())
    except UnicodeDecodeError:
        return None
    if single is None or single[0].lower() != "digest":
        return None
    return single[1]


cdef object _plain_challenge(const char *s, Py_ssize_t i, Py_ssize_t end,
                            Py_ssize_t *nonce_at, Py_ssize_t *nonce_end):
    """`Digest name=value, name="value"...` without escapes, as `_single_challenge`
    reads it; None for anything it would not take (or would read otherwise). Where the
    value taken as the nonce is goes to nonce_at, nonce_end."""
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
            if key == "nonce":
                nonce_at[0] = v0
                nonce_end[0] = v1
        if i == end:
            return params
        if s[i] != b',':
            return None
        i += 1
        if i >= end:
            return None


def _read_challenge_of(RegisterWire wire, bytes data, int status):
    """For the tests: what the wire reads in the 401/407 `data` (as a datagram would be
    read, its last plain reading remembered): (shared challenge, nonce, stale) or None."""
    cdef const char *s = PyBytes_AS_STRING(data)
    cdef _Head h
    if not _scan(s, PyBytes_GET_SIZE(data), status, &h) or not wire._read_challenge(s, &h, status):
        return None
    return wire._got_shared, wire._got_nonce, wire._got_stale
