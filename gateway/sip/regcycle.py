"""The common registration cycle: a client's exchange started on the wire path, its end,
and the restart ramp's next start.

    regcycle.run(client)                          # RegistrationClient._run
    regcycle.done(client, flow, outcome, started)  # the wire's callback at the end
    regcycle.timer_fired(client)                  # the refresh or retry timer
    regcycle.pump(ramp)                           # _Ramp.pump
    class RegistrationContext(regcycle.ContextState), class _Ramp(regcycle.RampState)
    client._ids = regcycle.new_ids()              # a client's Call-ID and From tag
    class RegistrationClient(regcycle.ClientState)  # a client's state, built here
    regcycle.construct_fast(RegistrationClient)   # built without a keyword dict

A common registration is: the ramp (or a timer) starts a client; with a flow at hand, a
free slot and the pacer's tokens, its exchange goes on the wire path with no task
(`RegisterWire.start`); when the wire has its granted expiry, `done` binds the client to
the flow, counts the result, schedules the refresh on the wheel, reports the state, gives
the slot back and lets the ramp start the next client. Everything else (a slot or a
token to wait for, TCP/TLS, DNS, a response the wire hands back) goes on in a task on
the registration client's general code (`RegistrationClient._in_task`).

This is the pure-Python twin and the reference of `_ext/regcycle.pyx` (chosen through
`gateway._accel` by `gateway.sip.registration`): here every step is the client's own
method, there the same steps are written out in C so that a common registration runs
no Python frame besides the state report and the metrics hook when one is set (and the
flow's `acquire` when nobody holds the flow yet). The tests hold both to the same
requests and outcomes.

Depends on the registration client's and context's attributes and methods (duck-typed),
the pacer's `Slots` and `Pacer`, the SIP trace logger; never on instances, the store or
the API.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.sip.digest import DigestClient
from gateway.sip.flow import trace
from gateway.sip.ids import random_hex

#: a client's Call-ID (12 bytes) and From tag (6 bytes), drawn as one number
IDS_BYTES = 18


def construct_fast(cls) -> None:
    """Compiled: calls of `cls` (a subclass of `ClientState` adding no `__init__` or
    `__new__`) read their keywords off the call without a dict. Nothing to do here."""
    if not (isinstance(cls, type) and issubclass(cls, ClientState)):
        raise TypeError("construct_fast takes a subclass of ClientState")


def new_ids() -> int:
    """96 random bits of Call-ID and 48 of From tag, as one int: the same for every
    REGISTER of a client (RFC 3261 10.2), written out when a request is."""
    return int(random_hex(IDS_BYTES), 16)


class ClientState:
    """What a registration client keeps (`RegistrationClient` extends it): its
    registrar's URIs (shared per registrar, `registration._shared_uri`), the digest
    state, ids, CSeq, state, flow, timer and exchange under way. Compiled, these are a
    C struct's fields (the cycle reads them without a look-up) and this constructor
    runs no Python frame."""

    # One per registered instance: every byte here is 100 KB at 100,000 instances. So:
    # slots; URIs shared per registrar; the Call-ID and From tag drawn together as one
    # int and written out when a request is built; one timer handle, moved rather than
    # replaced.
    __slots__ = ("ctx", "key", "_token", "instance_urn", "aor", "target",
                 "outbound_proxy", "expires", "digest", "_ids", "cseq", "state",
                 "last_error", "flow", "failures", "granted", "active",
                 "bound_maybe", "_timer", "_task")

    def __init__(self, ctx, *, key: str, token: str | None = None,
                 instance_urn: str | None = None, aor: str, username: str,
                 password_source, registrar: str, outbound_proxy: str | None = None,
                 expires: int = 3600):
        shared_uri = _registration()._shared_uri
        self.ctx = ctx
        self.key = key
        self._token = token
        self.instance_urn = instance_urn
        self.aor = aor
        self.target = shared_uri(registrar, True)  # the registrar; a 3xx changes it
        self.outbound_proxy = shared_uri(outbound_proxy, False) if outbound_proxy else None
        self.expires = expires
        self.digest = DigestClient(username, password_source)
        # the same for every REGISTER of this client (RFC 3261 10.2)
        self._ids = new_ids()
        self.cseq = 0
        self.state = "idle"
        self.last_error = None
        self.flow = None
        self.failures = 0
        self.granted = None
        self.active = False       # we want to be registered
        self.bound_maybe = False  # a REGISTER with expires > 0 may have been accepted
        self._timer = None
        self._task = None


class ContextState:
    """What the cycle reads of a `RegistrationContext` (which extends it and sets
    these). Compiled, they are a C struct's fields, read without a look-up."""

    __slots__ = ("endpoint", "wheel", "pacer", "settings", "report", "on_register_result",
                 "in_flight", "_ramping", "wire", "last_ready", "_last_parts",
                 "_last_hostport")


class RampState:
    """A restart ramp under way (`registration._Ramp` extends it): its context, the
    clients in order, the `wanted` filter, room left in the window (`free`), the next
    client's index, whether `pump` is on the stack, and the future set once the last
    client is started. Compiled, a C struct's fields."""

    __slots__ = ("ctx", "clients", "wanted", "free", "next", "pumping", "started")


def _registration():
    """gateway.sip.registration (which imports this module: looked up when used)."""
    from gateway.sip import registration
    return registration


def run(client) -> None:
    """Start the client's next exchange: on the wire path when it can start at once,
    else in a task (see the module docstring)."""
    task = client._task
    if task is not None and not task.done():
        return  # an exchange is under way; it schedules what comes next
    ctx = client.ctx
    flow = client._ready_flow() if ctx.wire is not None else None
    if flow is not None and flow.transport == "udp" and not trace.isEnabledFor(logging.DEBUG) \
            and ctx.in_flight.try_take():
        if ctx.pacer.try_acquire(client.pacing_key):
            # the common case: the whole exchange on the wire path, with no task; Python
            # runs again when it ends (`done`)
            expires = client.expires
            if expires > 0:
                client.bound_maybe = True
            try:
                handle = ctx.wire.start(client, flow, *client._template(flow, expires),
                                        expires, ctx.settings.max_challenges, done)
            except Exception:  # noqa: BLE001 - the task's exchange meets it again
                ctx.in_flight.release()  # and reports it as every failure is reported
                client._in_task(True)
                return
            if not handle.done():  # (else it ended at once: `done` ran)
                client._task = handle
            return
        ctx.in_flight.release()  # its turn at the pacer: waited for in a task
    client._in_task(False)


def done(client, flow, outcome, started: float) -> None:
    """The end of an exchange `run` started on the wire path: the common outcome (the
    granted expiry) settled here; anything else goes on in a task, on the general code
    (`_exchange` from where the wire left it)."""
    client._task = None
    ctx = client.ctx
    ctx.in_flight.release()
    if type(outcome) is int:
        if client.expires > 0:
            ctx.bind(client, flow)
        client._registered(outcome, started)
        ctx.exchange_ended(client)
        return
    # (the task takes a slot again: a rare path may wait its turn)
    client._task = asyncio.ensure_future(
        client._register(paced=True, resumed=(outcome, flow, started)))


def timer_fired(client) -> None:
    # the fired handle stays with the client: `_schedule` moves it again
    if client.active:
        run(client)


def pump(ramp) -> None:
    """Start the ramp's next clients while its window has room (`_Ramp`)."""
    if ramp.pumping:
        return  # an exchange ended while we start one: the loop below goes on
    ramp.pumping = True
    try:
        clients, ctx, wanted = ramp.clients, ramp.ctx, ramp.wanted
        while ramp.free > 0 and ramp.next < len(clients):
            client = clients[ramp.next]
            ramp.next += 1
            if client.active or (wanted is not None and not wanted(client)):
                continue  # started meanwhile, or removed
            ramp.free -= 1
            ctx._ramping[client] = ramp
            client.start(announce=False)
            if client._task is None or client._task.done():
                ctx.exchange_ended(client)  # (over already, or nothing under way)
        if ramp.next >= len(clients) and not ramp.started.done():
            ramp.started.set_result(None)
    finally:
        ramp.pumping = False
