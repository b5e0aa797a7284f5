# cython: language_level=3
"""The common registration cycle, compiled: the twin of `gateway/sip/regcycle.py`.

Built as `gateway._regcycle`; `gateway.sip.registration` picks this module or the
pure-Python twin through `gateway._accel`. The twin is the reference: it calls the
client's own methods (`_ready_flow`, `_template`, `_registered`, `_schedule`, `start`,
the context's `bind` and `exchange_ended`); this file writes the common case of each
out in C on the same attributes (the context's and the ramp's are this module's
`ContextState` and `RampState` fields), and calls those methods whenever it meets
anything else (a flow not at hand, a client bound elsewhere, parts not kept for the
flow). The pacer's `try_acquire` and the slots' `try_take` and `release` are called as
the twin calls them: as C functions when they are `gateway._buckets`' (cimported through
`gateway/_buckets.pxd`), by name otherwise. So a common registration enters Python only for the state report and
the metrics hook (when one is set). The REGISTER's per-client parts (From tag, To, Call-ID, Contact,
Expires) are written into two byte strings here, as `_template` writes them.

May depend on what the twin depends on, and on `gateway.sip.registration` for the
derived Contact token and instance URN, the jitter's random source and
`refresh_delay`'s checks (looked up at first use: that module imports this one);
never on instances, the store or the API.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.string cimport memcpy
from gateway._buckets cimport Pacer, Slots
from gateway._ids cimport draw
from gateway._timerwheel cimport TimerHandle, TimerWheel, cancel as _cancel
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME

import asyncio
import logging

from gateway.sip.digest import DigestClient
from gateway.sip.flow import Flow, trace

cdef extern from "Python.h":
    ctypedef struct PyLongObject:
        pass
    int _PyLong_AsByteArray(PyLongObject *value, unsigned char *out, size_t n,
                            int little_endian, int is_signed) except -1
    object _PyLong_FromByteArray(const unsigned char *data, size_t n, int little_endian,
                                 int is_signed)

include "tracing.pxi"
include "writer.pxi"
include "flowslots.pxi"

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object text)
    void *PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)


cdef inline int _text(_Writer w, str value) except -1:
    """`w.text(value)`; an ASCII text (every one of a REGISTER, nearly always) copied
    straight from the string's own bytes, which are its UTF-8."""
    if value is not None and PyUnicode_IS_COMPACT_ASCII(value):
        return w.add(<const char *>PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value))
    return w.text(value)


# from gateway.sip.registration, at first use (it imports this module)
cdef object _registration = None
cdef object _random = None
cdef object _ignore_result = None


cdef dict _URIS = None

cdef _late_imports():
    global _registration, _random, _URIS, _ignore_result
    from gateway.sip import registration
    _registration = registration
    _ignore_result = registration.ignore_result
    _random = registration._random
    _URIS = registration._URIS


cdef inline double _clock(int which):
    cdef timespec ts
    clock_gettime(which, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


# -- the client's state -------------------------------------------------------------------

cdef class ClientState:
    """The twin's `ClientState`: the same attributes, as this struct's fields (read and
    written by the cycle below and the compiled wire without a look-up), built without a
    Python frame."""

    # (its fields are declared in gateway/_regcycle.pxd, for the compiled wire too)

    @property
    def _ids(self):
        return _PyLong_FromByteArray(self.ids, IDS_BYTES, 0, 0)

    @_ids.setter
    def _ids(self, value):
        if not isinstance(value, int):
            raise TypeError(f"_ids must be an int, got {type(value).__name__}")
        cdef unsigned char ids[IDS_BYTES]
        # (more than 144 bits, or negative: OverflowError, the struct left as it was)
        _PyLong_AsByteArray(<PyLongObject *>value, ids, IDS_BYTES, 0, 0)
        memcpy(self.ids, ids, IDS_BYTES)

    def __init__(self, ctx, *, key, token=None, instance_urn=None, aor, username,
                 password_source, registrar, outbound_proxy=None, expires=3600):
        _init(self, ctx, key, token, instance_urn, aor, username, password_source,
              registrar, outbound_proxy, expires)


cdef _init(ClientState self, ctx, key, token, instance_urn, aor, username,
           password_source, registrar, outbound_proxy, expires):
    if _registration is None:
        _late_imports()
    self.ctx = ctx
    self.key = key
    self._token = token
    self.instance_urn = instance_urn
    self.aor = aor
    self.target = _registrar_uri(registrar)
    self.outbound_proxy = _registration._shared_uri(outbound_proxy, False) \
        if outbound_proxy else None
    self.expires = expires
    # (its slots set one by one from here cost as much as its constructor's frame,
    # whose slot stores 3.11 specialises: 0.34-0.42 against 0.33-0.38 us, 2026-11-29)
    self.digest = DigestClient(username, password_source)
    _draw_ids(self.ids)
    self.cseq = 0
    self.state = "idle"
    self.last_error = None
    self.flow = None
    self.failures = 0
    self.granted = None
    self.active = False
    self.bound_maybe = False
    self._timer = None
    self._task = None


# -- building a client without a keyword dict ------------------------------------------

# `RegistrationClient(ctx, key=..., ...)` goes through `type.__call__`, which packs the
# keywords into a dict that `__init__` then takes apart (a dict built, hashed, walked: a
# third of the construction). A class given to `construct_fast` is called through this
# vectorcall instead (CPython calls a type through its `tp_vectorcall` when one is set,
# and subclasses do not inherit it): the keywords are read off the call's own array.
# Anything but a plain call of that class with known keywords goes the ordinary way.

cdef extern from *:
    """
    #define REGCYCLE_NARGS(n) ((Py_ssize_t)((n) & ~PY_VECTORCALL_ARGUMENTS_OFFSET))
    #define REGCYCLE_SET_VECTORCALL(type, f) (((PyTypeObject *)(type))->tp_vectorcall = (vectorcallfunc)(f))
    #define REGCYCLE_SAME_INIT(a, b) (((PyTypeObject *)(a))->tp_init == ((PyTypeObject *)(b))->tp_init \
                                      && ((PyTypeObject *)(a))->tp_new == ((PyTypeObject *)(b))->tp_new)
    #define REGCYCLE_NEW(type, args) (((PyTypeObject *)(type))->tp_new((PyTypeObject *)(type), (args), NULL))
    """
    Py_ssize_t REGCYCLE_NARGS(size_t nargsf)
    void REGCYCLE_SET_VECTORCALL(object type, void *f)
    bint REGCYCLE_SAME_INIT(object a, object b)
    # `ClientState.__new__(cls)` without looking `__new__` up and calling it with a tuple:
    # cls's own tp_new, which REGCYCLE_SAME_INIT found to be ClientState's
    object REGCYCLE_NEW(object type, object args)

cdef object _type_call = type.__call__
cdef tuple _NAMES = ("key", "token", "instance_urn", "aor", "username", "password_source",
                     "registrar", "outbound_proxy", "expires")
cdef PyObject *_names[9]  # _NAMES' items (it keeps them), compared without a tuple read
for _i in range(9):
    _names[_i] = <PyObject *>_NAMES[_i]
cdef tuple _NO_ARGS = ()


def construct_fast(cls):
    """Calls of `cls` (a subclass of ClientState adding no `__init__`/`__new__`) read
    their keywords without a dict; the twin's does nothing."""
    if not (isinstance(cls, type) and issubclass(cls, ClientState)):
        raise TypeError("construct_fast takes a subclass of ClientState")
    REGCYCLE_SET_VECTORCALL(cls, <void *>_construct)


cdef object _construct(object cls, PyObject **args, size_t nargsf, PyObject *kwnames):
    cdef Py_ssize_t nargs = REGCYCLE_NARGS(nargsf)
    cdef Py_ssize_t count, i, j, k, at = 0
    cdef PyObject *values[9]
    cdef PyObject *name
    if nargs == 1 and kwnames != NULL and REGCYCLE_SAME_INIT(cls, ClientState):
        count = len(<tuple>kwnames)
        for j in range(9):
            values[j] = NULL
        for i in range(count):
            name = <PyObject *>(<tuple>kwnames)[i]
            # from the name after the last one found: keywords mostly come in order
            for k in range(9):
                j = at + k
                if j >= 9:
                    j -= 9
                if name == _names[j]:  # (a call's keywords are interned, as these are)
                    break
            else:
                break  # (another spelling, or not ours: the ordinary call says so)
            values[j] = args[1 + i]
            at = j + 1
        else:
            if (values[0] != NULL and values[3] != NULL and values[4] != NULL
                    and values[5] != NULL and values[6] != NULL):
                client = REGCYCLE_NEW(cls, _NO_ARGS)
                _init(client, <object>args[0], <object>values[0], _given(values[1], None),
                      _given(values[2], None), <object>values[3], <object>values[4],
                      <object>values[5], <object>values[6], _given(values[7], None),
                      _given(values[8], 3600))
                return client
    # the ordinary way (other arguments, an error to report...)
    positional = tuple([<object>args[i] for i in range(nargs)])
    keywords = {}
    if kwnames != NULL:
        for i in range(len(<tuple>kwnames)):
            keywords[(<tuple>kwnames)[i]] = <object>args[nargs + i]
    return _type_call(cls, *positional, **keywords)


cdef inline object _given(PyObject *value, default):
    return <object>value if value != NULL else default


# the registrar text last asked for and its shared URI: the clients of a registrar are
# built one after the other with the same text (often the same string object)
cdef object _last_registrar = None
cdef object _last_uri = None


cdef _registrar_uri(registrar):
    """`registration._shared_uri(registrar, True)`: the registrar's URI is shared
    already (after the first client of a registrar) unless the text is new."""
    global _last_registrar, _last_uri
    if registrar is _last_registrar:
        return _last_uri  # (a URI in `_URIS` stays there: the same answer)
    cdef PyObject *found = PyDict_GetItem(_URIS, (registrar, True))
    if found == NULL:
        return _registration._shared_uri(registrar, True)  # (parsed, or an error)
    _last_registrar, _last_uri = registrar, <object>found
    return _last_uri


# -- the context and the ramp ------------------------------------------------------------

cdef class ContextState:
    """The twin's `ContextState`: what the cycle reads of a `RegistrationContext`, as
    this struct's fields. `settings` keeps the two the cycle reads of it at hand."""

    cdef public object endpoint, wheel, pacer, report, on_register_result, in_flight
    cdef public object wire, last_ready, _last_parts, _last_hostport
    cdef public dict _ramping
    cdef object _settings, _max_challenges, _refresh_jitter
    cdef object _udp_flow  # the flow last found to be UDP (`_is_udp`)

    @property
    def settings(self):
        return self._settings

    @settings.setter
    def settings(self, value):
        # (frozen: what is read here stays what the settings say)
        self._max_challenges = value.max_challenges
        self._refresh_jitter = value.refresh_jitter
        self._settings = value


cdef class RampState:
    """The twin's `RampState`: a restart ramp under way (`registration._Ramp`), as this
    struct's fields."""

    cdef public object ctx, clients, wanted, started
    cdef public long free
    cdef public Py_ssize_t next
    cdef public bint pumping


# -- ids ---------------------------------------------------------------------------------

# a client's ids come from the compiled pool of random bytes (`gateway/_ids.pxd`, as
# `gateway.sip.ids.random_hex`, which the twin uses, draws them)

def new_ids():
    """The twin's `new_ids`."""
    cdef unsigned char ids[IDS_BYTES]
    _draw_ids(ids)
    return _PyLong_FromByteArray(ids, IDS_BYTES, 0, 0)


cdef inline int _draw_ids(unsigned char *out) except -1:
    return draw(out, IDS_BYTES)


# the pacing key of the last hop asked (`client.pacing_key`): the clients of a registrar
# share their hop's SipUri, and `host.lower()` would make a string each time
cdef object _key_hop = None
cdef object _key = None


cdef inline _pacing_key(hop):
    global _key_hop, _key
    if hop is not _key_hop:
        _key = hop.host.lower()
        _key_hop = hop
    return _key


# -- starting ------------------------------------------------------------------------------

def run(ClientState client):
    """The twin's `run`."""
    _run(client)


cdef bint _run(ClientState client) except -1:
    """The twin's `run`; True when it leaves an exchange under way on the wire (its
    handle in `client._task`)."""
    task = client._task
    if task is not None and not task.done():
        return False
    cdef ContextState ctx = <ContextState?>client.ctx
    wire = ctx.wire
    hop = client.outbound_proxy or client.target
    flow = None
    if wire is not None:
        last = ctx.last_ready  # `_ready_flow`'s answer while that flow is open
        if (<tuple>last)[0] is hop and not _closed((<tuple>last)[1]):
            flow = (<tuple>last)[1]
        else:
            flow = client._ready_flow()
    cdef long expires
    if flow is not None and (flow is ctx._udp_flow or _is_udp(ctx, flow)) and not _tracing():
        in_flight = ctx.in_flight
        if _try_take(in_flight):
            if _try_acquire(ctx.pacer, _pacing_key(hop)):
                expires = client.expires
                if expires > 0:
                    client.bound_maybe = True
                try:
                    handle = _start(client, ctx, wire, flow, expires)
                except Exception:
                    _release(in_flight)
                    client._in_task(True)
                    return False
                if not handle.done():
                    client._task = handle
                    return True
                return False
            _release(in_flight)
    client._in_task(False)
    return False


cdef inline bint _is_udp(ContextState ctx, flow) except -1:
    """`flow.transport == "udp"`, the flow kept when it is: the clients of a registrar
    share one flow, and a flow's transport never changes."""
    if flow.transport == "udp":
        ctx._udp_flow = flow
        return True
    return False


# the slots and the pacer: C calls for the compiled ones (a type check, then no look-up)
cdef inline bint _try_take(slots) except -1:
    if type(slots) is Slots:
        return (<Slots>slots).try_take()
    return slots.try_take()


cdef inline _release(slots):
    if type(slots) is Slots:
        (<Slots>slots).release()
    else:
        slots.release()


cdef inline bint _try_acquire(pacer, key) except -1:
    if type(pacer) is Pacer:
        return (<Pacer>pacer).try_acquire(key)
    return pacer.try_acquire(key)


cdef _start(ClientState client, ContextState ctx, wire, flow, long expires):
    """`wire.start(...)` with the parts `RegistrationClient._template(flow, expires)`
    gives (written here, passed on without a tuple)."""
    target, proxy = client.target, client.outbound_proxy
    last = ctx._last_parts
    if ((<tuple>last)[0] is flow and (<tuple>last)[1] is target
            and (<tuple>last)[2] is proxy and (<tuple>last)[3] is ctx.endpoint.user_agent):
        parts = (<tuple>last)[4]
    else:
        parts = ctx.registrar_parts(flow, target, proxy)
    uri, head, route, contact_end, user_agent = parts
    if _registration is None:
        _late_imports()
    # (typed: an empty text tested by its length, not through PyObject_IsTrue)
    cdef str token = client._token
    if not token:
        token = _registration.contact_token(client.key)
    cdef str urn = client.instance_urn
    if not urn:
        urn = _registration.instance_urn(client.key)
    # 96 bits of Call-ID, then 48 of From tag (`_ids`), two digits per byte
    cdef char hexed[2 * IDS_BYTES]
    cdef int i
    cdef const unsigned char *ids = client.ids
    for i in range(IDS_BYTES):
        memcpy(hexed + 2 * i, _HEX_PAIRS + 2 * ids[i], 2)
    cdef _Writer w = _writer  # (nothing here runs Python code that could write too)
    w.start()
    w.add(b";rport\r\nMax-Forwards: 70\r\n", 26)
    _text(w, route)
    w.add(b"From: <", 7)
    _text(w, client.aor)
    w.add(b">;tag=", 6)
    w.add(hexed + 24, 12)
    w.add(b"\r\nTo: <", 7)
    _text(w, client.aor)
    w.add(b">\r\nCall-ID: ", 12)
    w.add(hexed, 24)
    w.add(b"\r\nCSeq: ", 8)
    middle = w.take()
    w.add(b" REGISTER\r\nContact: <sip:", 25)
    _text(w, token)
    w.add(b"@", 1)
    _text(w, contact_end)
    w.add(b'+sip.instance="<', 16)
    _text(w, urn)
    w.add(b'>"\r\nExpires: ', 13)
    w.number(expires)
    w.add(b"\r\n", 2)
    _text(w, user_agent)
    tail = w.take()
    if isinstance(wire, ExchangeStarter):
        return (<ExchangeStarter>wire).c_start(client, flow, uri, head, middle, tail, expires,
                                               ctx._max_challenges)
    return wire.start(client, flow, uri, head, middle, tail, expires, ctx._max_challenges,
                      done)


cdef _Writer _writer = _Writer()

# "000102...ff": a byte's two hex digits at twice its value
cdef char _HEX_PAIRS[512]
for _i in range(256):
    _HEX_PAIRS[2 * _i] = _HEXDIGITS[_i >> 4]
    _HEX_PAIRS[2 * _i + 1] = _HEXDIGITS[_i & 15]


cdef class ExchangeStarter(DatagramTaker):
    """What the cycle asks of the compiled REGISTER wire (`gateway._regwire.RegisterWire`
    is one), declared here, where it is asked: `start` (see the wire), ending in `done`."""

    cdef object c_start(self, ClientState client, flow, uri, bytes head, bytes middle,
                        bytes tail, long expires, int challenges_left):
        raise NotImplementedError


# -- the end -------------------------------------------------------------------------------

def done(ClientState client, flow, outcome, double started):
    """The twin's `done`."""
    c_done(client, flow, outcome, started)


cdef c_done(ClientState client, flow, outcome, double started):
    """`done`, called from C by the compiled wire (declared in gateway/_regcycle.pxd)."""
    client._task = None
    cdef ContextState ctx = <ContextState?>client.ctx
    _release(ctx.in_flight)
    if type(outcome) is not int:
        client._task = asyncio.ensure_future(
            client._register(paced=True, resumed=(outcome, flow, started)))
        return
    if client.expires > 0 and client.flow is not flow:
        if client.flow is None:
            # `ctx.bind(client, flow)` for a client bound to none yet: `flow.acquire()`,
            # whose common case (open, held already: one more holder) is written out
            users = _users(flow)
            if users > 0 and not _closed(flow):
                _set_slot(flow, _USERS, "users", users + 1)
            else:
                flow.acquire()
            client.flow = flow
        else:
            ctx.bind(client, flow)
    _registered(client, ctx, outcome, started)
    _exchange_ended(ctx, client)


cdef _registered(ClientState client, ContextState ctx, granted, double started):
    """`RegistrationClient._registered(granted, started)`."""
    client.failures = 0
    client.granted = granted
    cdef double until = _clock(CLOCK_REALTIME) + <long>granted  # `time.time()`
    hook = ctx.on_register_result
    if hook is not _ignore_result:  # (the default hook does nothing: not called)
        hook("registered", _clock(CLOCK_MONOTONIC) - started)
    if client.active:
        _schedule(client, ctx, _refresh_delay(granted, ctx._refresh_jitter))
    client.state = "registered"
    client.last_error = None
    ctx.report(client, "registered", None, until)


cdef double _refresh_delay(granted, double spread) except? -1.0:
    """`registration.refresh_delay(granted, spread)`, drawn from the same source."""
    if _registration is None:
        _late_imports()
    if not 0.0 <= spread <= 1.0:
        return _registration.refresh_delay(granted, spread)  # (it says what is wrong)
    cdef double g = <long>granted
    cdef double lead = g * 0.1
    cdef double least = 2.0 if 2.0 < g / 2 else g / 2
    if lead < least:
        lead = least
    if lead > 120.0:
        lead = 120.0
    cdef double delay = g - lead
    if delay < 0.5:
        delay = 0.5
    cdef double value = delay - delay * spread * <double>_random()
    return value if value <= delay else delay


cdef _schedule(ClientState client, ContextState ctx, double delay):
    """`RegistrationClient._schedule(delay)`: C calls into the compiled wheel."""
    timer = client._timer
    if delay <= 0:
        if timer is not None:
            _cancel(timer)
            client._timer = None
        _run(client)
        return
    wheel = ctx.wheel
    if type(wheel) is not TimerWheel or (timer is not None and type(timer) is not TimerHandle):
        if timer is not None and not timer.cancelled():
            wheel.reschedule(timer, delay)
        else:
            client._timer = wheel.call_later(delay, timer_fired, client)
    elif timer is not None and (<TimerHandle>timer)._callback is not None:  # (not cancelled)
        (<TimerWheel>wheel).c_reschedule(timer, delay)
    else:
        client._timer = (<TimerWheel>wheel).c_call_later(delay, _timer_fired, client)


def timer_fired(ClientState client):
    """The twin's `timer_fired`."""
    if client.active:
        _run(client)


cdef object _timer_fired = timer_fired  # (passed to the wheel without a global look-up)


# -- the ramp ------------------------------------------------------------------------------

cdef _exchange_ended(ContextState ctx, client):
    """`RegistrationContext.exchange_ended(client)`."""
    cdef dict ramping = ctx._ramping
    if ramping:
        ramp = ramping.pop(client, None)
        if ramp is not None:
            (<RampState?>ramp).free += 1
            _pump(<RampState>ramp)


def pump(RampState ramp):
    """The twin's `pump`."""
    _pump(ramp)


cdef _pump(RampState ramp):
    cdef ClientState client
    cdef ContextState ctx
    cdef dict ramping
    if ramp.pumping:
        return
    ramp.pumping = True
    try:
        clients, wanted = ramp.clients, ramp.wanted
        ctx = <ContextState?>ramp.ctx
        ramping = ctx._ramping
        while ramp.free > 0 and ramp.next < len(clients):
            client = <ClientState?>clients[ramp.next]
            ramp.next += 1
            if client.active or (wanted is not None and not wanted(client)):
                continue
            ramp.free -= 1
            ramping[client] = ramp
            # `client.start(announce=False)`: no state announced, the exchange now
            client.active = True
            timer = client._timer
            if timer is not None:
                _cancel(timer)
                client._timer = None
            if _run(client):
                continue  # (its exchange under way on the wire)
            task = client._task
            if task is None or task.done():
                _exchange_ended(ctx, client)
        if ramp.next >= len(clients) and not ramp.started.done():
            ramp.started.set_result(None)
    finally:
        ramp.pumping = False
