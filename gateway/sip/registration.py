"""The registration client: keeps one account registered with its provider (RFC 3261 10).

A `RegistrationClient` per instance sends REGISTER to the account's registrar (through the
outbound proxy when set; targets from RFC 3263 with failover) with the Contact

    <sip:TOKEN@<provider face address>;transport=x>;+sip.instance="<urn:uuid:...>"

where TOKEN identifies the instance (an incoming INVITE's Request-URI finds its instance
without a lookup by AOR). The exchange handles 401/407 (digest, `gateway.sip.digest`),
423 (Min-Expires), 3xx (a new registrar). Outcomes:

- 2xx: registered until the expiry granted to OUR Contact; a refresh is scheduled on the
  wheel before it (earlier by a tenth, at least 2 s when it can, at most 2 min; with
  jitter, so instances created together do not refresh together);
- 403, 404 or rejected credentials: `unauthorized`, retried slowly (doubling from
  `unauthorized_retry`);
- 408, 5xx, 6xx, other 4xx, timeouts and transport errors: `error`, retried with the
  RFC 5626 4.5 backoff: min(retry_max, retry_base * 2^(failures-1)), drawn in 50-100 %;
  a 503 (or 500) with Retry-After waits that long instead.

`unregister()` removes our Contact only (Expires: 0). A flow that fails (keepalive pong
missing, connection lost) is reported by the endpoint; `flow_lost()` re-registers.

Every REGISTER exchange waits for one of `max_in_flight` slots, then for the `Pacer`
(global and per-registrar rate). `RegistrationContext.ramp` starts many clients in order
(a restart) through a window of first exchanges under way.

Over UDP to an IP hop with a flow at hand (no DNS, no trace logging), an exchange goes
on the wire path (`RegisterWire`, `gateway.sip.regwire` or its compiled twin): requests
written from templates (`_template`), responses read off the datagram, the common 401 and
200 handled there; whatever else a response says comes back parsed to `_exchange`, which
decides as it does for the general path (transactions, `send_with_failover`): TCP, TLS,
DNS names, 3xx targets without a flow yet. When a slot and the pacer's tokens are free
at once, the exchange starts on the wire without a task and ends in `regcycle.done`
(the common cycle, `gateway.sip.regcycle` or its compiled twin `gateway._regcycle`:
compiled, a common registration runs no Python frame besides the state report and the
metrics hook when one is set (and the flow's `acquire` when nobody holds the flow yet);
a client's state is that module's `ClientState`, built in C but for its `DigestClient`).
Otherwise the exchange runs in a task (`_register`).
Results go to `RegistrationContext.report(client, state, error, until)` and, for metrics,
to `RegistrationContext.on_register_result(outcome, rtt)`.

Depends on the message model, digest, DNS, transaction and transport layers (through
`SipEndpoint`), the pacer and the timer wheel; never on instances, the store or the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
import uuid
from typing import Any, Callable

import msgspec

from gateway import _accel, metrics
from gateway.errors import (AuthError, ConfigError, ParseError, PeerError, TransactionTimeout,
                            TransientError, TransportError)
from gateway.sip.dns import DEFAULT_PORT, Target, is_ip, send_with_failover
from gateway.sip.flow import trace
from gateway.sip.message import SipUri
from gateway.sip.parsing import parse_message
from gateway.sip.pacing import Pacer, Slots
from gateway.sip.transaction import new_branch
from gateway.timers import jitter

log = logging.getLogger(__name__)

#: REGISTER exchanges on UDP written from templates and matched on the wire (the
#: compiled `gateway._regwire` or its twin `gateway.sip.regwire`)
_wire = _accel.load("_regwire", "sip.regwire")
RegisterWire = _wire.RegisterWire
#: the common cycle (start on the wire, its end, the ramp's next start): the compiled
#: `gateway._regcycle` or its twin `gateway.sip.regcycle`
_cycle = _accel.load("_regcycle", "sip.regcycle")

_rng = random.Random()
_random = _rng.random
#: registrar URIs with an IP address -> their one target (no DNS, never changes)
_IP_TARGETS: dict[str, list] = {}
#: registrar and outbound proxy text -> its parsed SipUri, shared by every client of that
#: registrar (100,000 clients hold a handful of URIs, not 100,000 copies); a client never
#: changes a URI in place, a 3xx replaces its `target` with a new one
_URIS: dict[tuple[str, bool], SipUri] = {}
#: id of a URI in _URIS -> its text (they stay in _URIS, so their ids are never reused)
_URI_TEXTS: dict[int, str] = {}


def contact_token(key: str) -> str:
    """The user part of an instance's Contact: stable across restarts (so the registrar
    replaces its binding rather than adding one) and not the instance id itself."""
    return "gw" + hashlib.sha256(b"contact:" + key.encode()).hexdigest()[:24]


def instance_urn(key: str) -> str:
    """The +sip.instance of an instance (RFC 5626 4.1): a stable UUID URN, derived for
    each REGISTER rather than kept (94 bytes a client)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'sip-push-gateway:' + key)}"


class RegistrationSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    retry_base: float = 30.0           # RFC 5626 base-time, seconds
    retry_max: float = 1800.0          # RFC 5626 max-time
    unauthorized_retry: float = 900.0  # first retry after 403/404/rejected credentials
    unauthorized_retry_max: float = 21600.0
    refresh_jitter: float = 0.1        # share of the refresh delay drawn at random
    max_challenges: int = 2            # 401/407 answered per exchange
    max_redirects: int = 3


class RegisterFailed(PeerError):
    """A final non-2xx answer to REGISTER (after challenges, 423 and redirects)."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None):
        super().__init__(f"{status} {reason}".strip(), status=status, reason=reason)
        self.retry_after = retry_after


def ignore_result(outcome: str, rtt: float) -> None:
    """The metrics hook of a context nobody set one on: nothing. The compiled cycle
    knows it and does not call it (a Python frame per registration for nothing)."""


class RegistrationContext(_cycle.ContextState):
    """What every client of one gateway shares: the SIP endpoint, the pacer, the wheel,
    where our Contact points, and where results go. What the common cycle reads of it
    is its base's (`ContextState`: compiled, C fields)."""

    def __init__(self, endpoint: Any, pacer: Pacer, settings: RegistrationSettings, *,
                 public_address: str = "", max_in_flight: int = 200,
                 report: Callable[["RegistrationClient", str, str | None, float | None], None]
                 = lambda client, state, error, until: None):
        self.endpoint = endpoint
        self.wheel = endpoint.wheel
        self.pacer = pacer
        self.settings = settings
        self.public_host, self.public_port = _split_public(public_address)
        self.report = report
        self.on_register_result: Callable[[str, float], None] = ignore_result
        # exchanges under way at once: beyond this they wait, so an overloaded registrar
        # (or host) sees retransmissions of a bounded set, not of everything queued
        self.in_flight = Slots(max_in_flight)
        # clients started by a ramp whose first exchange is under way -> that ramp
        self._ramping: dict[RegistrationClient, _Ramp] = {}
        #: the wire path of REGISTER exchanges on UDP (None: the general path only)
        self.wire = RegisterWire.of(endpoint)
        self._last_hostport: tuple[Any, str] = (None, "")
        self._last_parts: tuple = (None, None, None, None, None)
        #: (hop URI, its open flow) last found by a client's `_ready_flow`: the clients
        #: of a registrar share both, so the next one needs no look-up while it is open
        self.last_ready: tuple[Any, Any] = (None, None)

    def contact_hostport(self, flow: Any) -> str:
        """host:port for our Contact and Via on a flow: the public address when set, else
        the face's listening address for the transport, else the flow's own."""
        last = self._last_hostport
        if last[0] is flow:
            return last[1]
        listening = self.endpoint.transport.local_address(flow.transport)
        port = listening[1] if listening else flow.sent_by[1]
        host = flow.sent_by[0]
        if self.public_host:
            host, port = self.public_host, self.public_port or port
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if flow.transport == "udp":
            # the answer for the one UDP flow every client of a registrar shares, kept:
            # UDP listeners come and go only with the endpoint, so it never changes
            self._last_hostport = (flow, hostport)
        return hostport

    def registrar_parts(self, flow: Any, target: SipUri, proxy: SipUri | None
                        ) -> tuple[str, bytes, str, str, str]:
        """What every client's REGISTER to `target` (through `proxy`) on `flow` shares:
        the Request-URI, the request line and Via up to the branch, the Route line, the
        end of the Contact URI (`host:port;transport=...>;`) and the User-Agent line.
        The last answer is kept, for the one UDP flow the clients of a registrar share
        (`contact_hostport` keeps its part for that flow too)."""
        user_agent = self.endpoint.user_agent
        last = self._last_parts
        if last[0] is flow and last[1] is target and last[2] is proxy \
                and last[3] is user_agent:
            return last[4]
        hostport = self.contact_hostport(flow)
        transport = flow.transport
        uri = _text(target)
        route = "" if proxy is None else f"Route: <{_loose(proxy)}>\r\n"
        head = f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/{transport.upper()} {hostport};branch="
        parts = (uri, head.encode("utf-8"), route, f"{hostport};transport={transport}>;",
                 f"User-Agent: {user_agent}\r\n")
        if transport == "udp":
            self._last_parts = (flow, target, proxy, user_agent, parts)
        return parts

    async def ramp(self, clients: list["RegistrationClient"], window: int,
                   wanted: Callable[["RegistrationClient"], bool] | None = None) -> None:
        """Start `clients` in order (a restart registering every stored instance), no
        more than `window` of them in their first exchange at once: started all
        together, those waiting for the pacer would each hold a task until their turn,
        a burst of memory the process keeps fragmented long after. Clients already
        started, or no longer `wanted` (when given), are passed over. Returns once the
        last one is started."""
        ramp = _Ramp(self, clients, window, wanted)
        ramp.pump()
        try:
            await ramp.started
        finally:
            ramp.next = len(clients)  # (cancelled: start no more)

    def exchange_ended(self, client: "RegistrationClient") -> None:
        """A client's exchange is over (either path): its ramp window opens again."""
        if self._ramping:
            ramp = self._ramping.pop(client, None)
            if ramp is not None:
                ramp.free += 1
                ramp.pump()

    # No index of the clients on each flow: every client of a registrar shares one UDP
    # flow, so that would be a set entry per instance, to serve a rare event (a flow
    # failing) that a scan of the clients' `flow` serves as well.

    def bind(self, client: "RegistrationClient", flow: Any) -> None:
        if client.flow is flow:
            return
        if client.flow is not None:
            self.unbind(client)
        flow.acquire()  # keepalives run while anyone is registered over the flow
        client.flow = flow

    def unbind(self, client: "RegistrationClient") -> None:
        flow, client.flow = client.flow, None
        if flow is not None and not flow.closed:
            flow.release()


class _Ramp(_cycle.RampState):
    """`RegistrationContext.ramp` under way: the next client is started as an earlier
    one's first exchange ends, from that end (no task, and on the wire path its first
    REGISTER leaves with the other datagrams of the batch being handled). Its fields
    are its base's (`RampState`: compiled, C fields)."""

    __slots__ = ()

    def __init__(self, ctx: RegistrationContext, clients: list, window: int, wanted):
        self.ctx = ctx
        self.clients = clients
        self.wanted = wanted
        self.free = window
        self.next = 0
        self.pumping = False
        self.started = asyncio.get_running_loop().create_future()

    def pump(self) -> None:
        _cycle.pump(self)


def _split_public(address: str) -> tuple[str, int | None]:
    if not address:
        return "", None
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return address, None


class RegistrationClient(_cycle.ClientState):
    """Keeps one account registered; see the module docstring. `key` is the instance id,
    `token` the user part of our Contact, `instance_urn` its +sip.instance (when not
    given: `contact_token(key)` and `instance_urn(key)`, derived when a request is
    written or a response read rather than kept). Built as `ClientState` (the common
    cycle's module, `gateway.sip.regcycle` or its compiled twin) builds it:

        RegistrationClient(ctx, key=..., token=None, instance_urn=None, aor=...,
                           username=..., password_source=..., registrar=...,
                           outbound_proxy=None, expires=3600)"""

    __slots__ = ("__weakref__",)

    @property
    def token(self) -> str:
        return self._token or contact_token(self.key)

    @property
    def next_attempt(self) -> float | None:
        """When the next REGISTER is due, on the loop's clock (`time.monotonic()` for
        asyncio and uvloop): the refresh or retry timer's due time, None when none is set
        (read off the timer rather than kept: one float less per instance)."""
        timer = self._timer
        return timer.when if timer is not None and timer.pending() else None

    @property
    def call_id(self) -> str:
        return f"{self._ids >> 48:024x}"

    @property
    def from_tag(self) -> str:
        return f"{self._ids & 0xFFFFFFFFFFFF:012x}"

    def __repr__(self) -> str:
        return f"<RegistrationClient {self.key} {self.aor} {self.state}>"

    @property
    def exchange_task(self) -> Any:
        """The exchange under way or waiting for its turn, if any: its task, or the wire
        path's handle of an exchange started without one (both have done/cancel)."""
        task = self._task
        return task if task is not None and not task.done() else None

    @property
    def pacing_key(self) -> str:
        hop = self.outbound_proxy or self.target
        return hop.host.lower()

    # -- control ------------------------------------------------------------------------

    def start(self, delay: float = 0.0, announce: bool = True) -> None:
        """Register (again) now or after `delay`, and keep refreshing. `announce`: report
        the state "registering" at once (not done for the restart ramp, where thousands
        of store writes would only say what the next outcome says anyway)."""
        self.active = True
        if self.state in ("idle", "off") and announce:
            self._set_state("registering", None)
        self._schedule(delay)

    async def unregister(self) -> None:
        """Stop refreshing and remove our Contact (Expires: 0) if it may be bound."""
        self.active = False
        self._cancel_timer()
        task = self._stop_exchange()
        if task is not None and task is not asyncio.current_task():
            await asyncio.gather(task, return_exceptions=True)
        if self.bound_maybe:
            started = time.monotonic()
            try:
                await self.ctx.pacer.acquire(self.pacing_key)
                await self._exchange(0)
                self.bound_maybe = False
                self.ctx.on_register_result("unregistered", time.monotonic() - started)
            except (PeerError, TransientError, ConfigError) as exc:
                log.info("unregistering %s failed: %s", self.key, exc)
                self.ctx.on_register_result("error", time.monotonic() - started)
        self.ctx.unbind(self)

    def close(self) -> None:
        """Forget everything without unregistering (gateway shutdown: the binding stays
        with the provider until it lapses or the next start refreshes it)."""
        self.active = False
        self._cancel_timer()
        self._stop_exchange()
        self.ctx.unbind(self)

    def _stop_exchange(self) -> asyncio.Task | None:
        """Cancel the exchange under way, if any; its task, when it has one, to await."""
        task, self._task = self._task, None
        if task is None or task.done():
            return None
        task.cancel()
        if not isinstance(task, asyncio.Task):
            self.ctx.in_flight.release()  # a wire exchange: no task to do it as it ends
        # (a task does it as it ends too, unless cancelled before it ever ran)
        self.ctx.exchange_ended(self)
        return task if isinstance(task, asyncio.Task) else None

    def flow_lost(self, delay: float) -> None:
        """Our flow failed: the registrar may route to a dead connection; register again."""
        self.flow = None
        if self.active:
            self._schedule(delay)

    # -- the loop -----------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        timer = self._timer
        if delay <= 0:
            self._cancel_timer()
            self._run()
        elif timer is not None and not timer.cancelled():
            # one handle for the client's life, moved at each refresh rather than a new
            # one each time: 100,000 long-lived objects reallocated every few minutes
            # among the short-lived ones of the exchanges fragment the heap
            self.ctx.wheel.reschedule(timer, delay)
        else:
            self._timer = self.ctx.wheel.call_later(delay, _cycle.timer_fired, self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _run(self) -> None:
        _cycle.run(self)

    def _in_task(self, paced: bool) -> None:
        """The exchange in a task, on the general code (`paced`: the pacer's token is
        taken already)."""
        self._task = asyncio.ensure_future(self._register(paced=paced))

    async def _register(self, paced: bool = False, resumed: tuple | None = None) -> None:
        """One exchange and what follows from it. `paced`: the pacer's token is taken
        already; `resumed`: (outcome, flow, started) of a wire exchange that needs the
        general code to go on."""
        started = None
        try:
            async with self.ctx.in_flight:
                if not paced:
                    await self.ctx.pacer.acquire(self.pacing_key)
                if not self.active:
                    return
                if resumed is not None:
                    outcome, flow, started = resumed
                    granted = await self._exchange(self.expires, (outcome, flow))
                else:
                    started = time.monotonic()
                    granted = await self._exchange(self.expires)
        except asyncio.CancelledError:
            raise
        except AuthError as exc:
            self._failed("unauthorized", str(exc), started)
        except RegisterFailed as exc:
            if exc.status in (403, 404):
                self._failed("unauthorized", f"{exc.status} {exc.reason}", started)
            else:
                self._failed("error", f"{exc.status} {exc.reason}", started, exc.retry_after)
        except (TransientError, ParseError, ConfigError) as exc:
            self._failed("error", _describe(exc), started)
        except Exception as exc:  # noqa: BLE001 - a bug must not end the account's loop
            log.exception("registration of %s failed unexpectedly", self.key)
            self._failed("error", f"internal error: {type(exc).__name__}", started)
        else:
            self._registered(granted, started)
        finally:
            # a finished Task (with its coroutine, context and weak reference) would
            # otherwise stay with every idle client until its next refresh
            if self._task is asyncio.current_task():
                self._task = None
            self.ctx.exchange_ended(self)

    def _registered(self, granted: int, started: float) -> None:
        self.failures = 0
        self.granted = granted
        until = time.time() + granted  # reported, not kept: the lifecycle stores it
        self.ctx.on_register_result("registered", time.monotonic() - started)
        if self.active:
            self._schedule(refresh_delay(granted, self.ctx.settings.refresh_jitter))
        self._set_state("registered", None, until)

    def _failed(self, state: str, error: str, started: float | None,
                retry_after: float | None = None) -> None:
        settings = self.ctx.settings
        self.failures += 1
        if state == "unauthorized":
            base, cap = settings.unauthorized_retry, settings.unauthorized_retry_max
            delay = min(cap, base * 2 ** (self.failures - 1)) * _rng.uniform(0.75, 1.0)
        elif retry_after is not None:
            delay = min(retry_after, settings.retry_max)
        else:
            delay = backoff(self.failures, settings.retry_base, settings.retry_max)
        if started is not None:
            self.ctx.on_register_result(state, time.monotonic() - started)
        log.info("registration of %s: %s (%s); retry in %.1fs", self.key, state, error, delay)
        self.digest.forget_nonce()
        if self.active:
            self._schedule(delay)
        self._set_state(state, error)

    def _set_state(self, state: str, error: str | None, until: float | None = None) -> None:
        changed = (state, error) != (self.state, self.last_error)
        self.state, self.last_error = state, error
        if changed or state == "registered":
            self.ctx.report(self, state, error, until)

    # -- one exchange: challenges, 423, redirects ------------------------------------------

    async def _exchange(self, expires: int, resumed: tuple | None = None) -> int:
        """REGISTER until a 2xx; returns the expiry granted to our Contact (0 when
        unregistering). Raises RegisterFailed, AuthError or a TransientError.
        `resumed`: (outcome, flow) of a wire exchange already under way, to go on from."""
        settings = self.ctx.settings
        challenges = redirects = too_brief = 0
        while True:
            if expires > 0:
                self.bound_maybe = True
            if resumed is not None:
                outcome, flow = resumed
            else:
                flow = self._ready_flow()
            if resumed is not None or (
                    flow is not None and flow.transport == "udp" and self.ctx.wire is not None
                    and not trace.isEnabledFor(logging.DEBUG)):
                # the common case on the wire path: the whole exchange (challenges
                # answered) without a message object, unless a response needs us
                try:
                    if resumed is not None:
                        resumed = None
                        if isinstance(outcome, BaseException):
                            raise outcome
                    else:
                        outcome = await self._on_wire(flow, expires,
                                                      settings.max_challenges - challenges)
                except (TransportError, TransactionTimeout) as exc:
                    metrics.registration_result("transport_error")
                    _target_failed(flow, exc)
                if type(outcome) is int:
                    if expires > 0:
                        self.ctx.bind(self, flow)
                    return outcome
                response, answered = outcome
                challenges += answered
            else:
                response, flow = await self._transaction(expires)
            status = response.status
            if 200 <= status < 300:
                if expires == 0:
                    return 0
                granted = self._granted(response, expires)
                self.ctx.bind(self, flow)
                return granted
            if status in (401, 407):
                challenges += 1
                try:
                    if challenges > settings.max_challenges:
                        raise AuthError(f"still challenged after {settings.max_challenges} "
                                        "answers", status=status)
                    self.digest.challenged(response)
                except AuthError:
                    metrics.registration_result("unauthorized")
                    raise
                metrics.registration_result("challenged")
                continue
            metrics.registration_result("unauthorized" if status == 403 else "rejected")
            if status == 423 and too_brief < 2:
                minimum = response.get("Min-Expires")
                if minimum is None or not minimum.strip().isdigit() or int(minimum) <= expires:
                    raise RegisterFailed(423, "Interval Too Brief without a usable Min-Expires")
                too_brief += 1
                expires = int(minimum)
                self.expires = expires  # ask for what the registrar accepts from now on
            elif 300 <= status < 400 and redirects < settings.max_redirects:
                redirects += 1
                self.target = self._redirect(response)
                self.digest.forget_nonce()
            else:
                raise RegisterFailed(status, response.reason, _retry_after(response))

    def _redirect(self, response) -> SipUri:
        contacts = [c for c in response.contacts if not c.wildcard and c.uri.host]
        if not contacts:
            raise RegisterFailed(response.status, f"{response.reason} without a Contact")
        contacts.sort(key=lambda c: -(c.q if c.q is not None else 1.0))
        uri = contacts[0].uri
        return SipUri(uri.host, scheme=uri.scheme, port=uri.port,
                      params={k: v for k, v in uri.params.items() if k.lower() == "transport"})

    def _granted(self, response, asked: int) -> int:
        """The expiry of OUR Contact in the 200 (the registrar may list others too)."""
        token = self.token
        fast = _our_expires(response, token)
        if fast is not None:
            return fast
        for contact in response.contacts:
            if contact.uri is not None and contact.uri.user == token:
                if contact.expires is not None:
                    return contact.expires
                return response.expires if response.expires is not None else asked
        raise RegisterFailed(response.status, "the 200 does not list our Contact")

    async def _transaction(self, expires: int):
        """One REGISTER transaction (with target failover), counted for the metrics."""
        metrics.registration_sent()
        sent = time.monotonic()
        try:
            flow = self._ready_flow()
            if flow is None:
                response, flow = await self._send(expires)
            else:
                # the one target of an IP hop, with a flow to it at hand: the outcome of
                # send_with_failover over one target, without its coroutines
                try:
                    response = await self._attempt(flow, expires)
                except (TransportError, TransactionTimeout) as exc:
                    _target_failed(flow, exc)
        except TransactionTimeout:
            metrics.registration_result("timeout")
            raise
        except TransientError:
            metrics.registration_result("transport_error")
            raise
        if 200 <= response.status < 300:
            metrics.registration_result("unregistered" if expires == 0 else "registered",
                                        time.monotonic() - sent)
        else:
            metrics.REGISTER_RTT.observe(time.monotonic() - sent)
        return response, flow

    def _on_wire(self, flow, expires: int, challenges_left: int) -> asyncio.Future:
        """One exchange on `ctx.wire`; the future of the granted expiry, or of (response,
        challenges answered) for `_exchange` to decide on."""
        uri, head, middle, tail = self._template(flow, expires)
        return self.ctx.wire.exchange(self, flow, uri, head, middle, tail, expires,
                                      challenges_left)

    def _ready_flow(self):
        """The flow to the hop when the hop is an IP address already seen (one target,
        no DNS) and the flow needs no waiting; else None."""
        hop = self.outbound_proxy or self.target
        ctx = self.ctx
        last_hop, last_flow = ctx.last_ready
        if last_hop is hop and not last_flow.closed:
            return last_flow  # what the look-up below gives while that flow is open
        targets = _IP_TARGETS.get(_text(hop))
        if targets is None:
            return None
        target = targets[0]
        if _same_target(self.flow, target):
            flow = self.flow
        else:
            try:
                flow = ctx.endpoint.transport.connect_now(target, busy=True)
            except TransportError:
                return None  # (an unsupported transport) the general path reports it
        if flow is not None:
            ctx.last_ready = (hop, flow)
        return flow

    async def _send(self, expires: int):
        targets = await self._targets(self.outbound_proxy or self.target)
        used = []

        async def attempt(target):
            flow = self.flow if _same_target(self.flow, target) else \
                await self.ctx.endpoint.transport.connect(target, busy=True)
            used.append(flow)
            return await self._attempt(flow, expires)

        response = await send_with_failover(targets, attempt)
        return response, used[-1]

    def _attempt(self, flow, expires: int):
        """Start one REGISTER transaction on `flow`; the future of its final response."""
        request, wire = self._request(flow, expires)
        return self.ctx.endpoint.transactions.request(request, flow, wire=wire).final

    async def _targets(self, hop: SipUri) -> list:
        cached = _IP_TARGETS.get(str(hop))
        if cached is not None:
            return cached
        if is_ip(hop.host):  # no DNS: skip the resolver's work on every request
            transport = hop.transport or ("tls" if hop.scheme == "sips" else "udp")
            targets = [Target(hop.host.strip("[]"), hop.port or DEFAULT_PORT[transport],
                              transport, hop.host.strip("[]"))]
            if len(_IP_TARGETS) < 10_000:
                _IP_TARGETS[str(hop)] = targets
            return targets
        return await self.ctx.endpoint.resolver.resolve(
            hop.host, hop.port, hop.transport, secure=hop.scheme == "sips")

    def _request(self, flow, expires: int):
        """The REGISTER as (request, its bytes): written as text and read back by the
        parser (the Cython twin when built), cheaper than building it field by field;
        what goes on the wire is exactly what the transaction layer sees."""
        uri, head, middle, tail = self._template(flow, expires)
        self.cseq += 1
        wire = b"".join((head, new_branch().encode(), middle, str(self.cseq).encode(), tail,
                         _wire.credentials(self.digest, uri), b"Content-Length: 0\r\n\r\n"))
        return parse_message(wire), wire

    def _template(self, flow, expires: int) -> tuple[str, bytes, bytes, bytes]:
        """The Request-URI and the parts of every REGISTER of one exchange on `flow`:
        head + branch + middle + CSeq number + tail + Authorization line (if any) +
        `Content-Length: 0` and the blank line make the request."""
        uri, head, route, contact_end, user_agent = self.ctx.registrar_parts(
            flow, self.target, self.outbound_proxy)
        ids = self._ids
        middle = (f";rport\r\nMax-Forwards: 70\r\n{route}"
                  f"From: <{self.aor}>;tag={ids & 0xFFFFFFFFFFFF:012x}\r\n"
                  f"To: <{self.aor}>\r\n"
                  f"Call-ID: {ids >> 48:024x}\r\n"
                  f"CSeq: ")
        tail = (f" REGISTER\r\n"
                f"Contact: <sip:{self._token or contact_token(self.key)}@{contact_end}"
                f'+sip.instance="<{self.instance_urn or instance_urn(self.key)}>"\r\n'
                f"Expires: {expires}\r\n"
                f"{user_agent}")
        return uri, head, middle.encode("utf-8"), tail.encode("utf-8")


# (compiled: `RegistrationClient(ctx, key=..., ...)` reads its keywords without a dict)
_cycle.construct_fast(RegistrationClient)


def _target_failed(flow, exc: Exception):
    """The one target of a ready flow failed: raised as `send_with_failover` would."""
    log.info("target %s:%s/%s failed: %s", flow.remote[0], flow.remote[1], flow.transport, exc)
    raise TransportError("all 1 SIP targets failed") from exc


def _shared_uri(text: str, registrar: bool) -> SipUri:
    uri = _URIS.get((text, registrar))
    if uri is None:
        uri = _registrar_uri(text) if registrar else SipUri.parse(text)
        if len(_URIS) < 10_000:
            _URIS[(text, registrar)] = uri
            _URI_TEXTS[id(uri)] = str(uri)
    return uri


def _text(uri: SipUri) -> str:
    """`str(uri)`, kept for the shared URIs (written for every REGISTER otherwise)."""
    text = _URI_TEXTS.get(id(uri))
    return str(uri) if text is None else text


def _registrar_uri(text: str) -> SipUri:
    uri = SipUri.parse(text, "registrar")
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise ConfigError(f"registrar {text!r} is not a sip: or sips: URI")
    # the Request-URI of a REGISTER names the domain only (RFC 3261 10.2)
    return SipUri(uri.host, scheme=uri.scheme, port=uri.port,
                  params={k: v for k, v in uri.params.items() if k.lower() == "transport"})


def _loose(uri: SipUri) -> SipUri:
    if uri.has_param("lr"):
        return uri
    return SipUri(uri.host, uri.user, scheme=uri.scheme, port=uri.port,
                  params={**uri.params, "lr": None})


def _same_target(flow, target) -> bool:
    return (flow is not None and not flow.closed and flow.transport == target.transport
            and flow.remote[0] == target.address and flow.remote[1] == target.port)


def _our_expires(response, token: str) -> int | None:
    """The expires parameter of our Contact read off the raw header text, or None when
    the text is anything but the plain `<sip:TOKEN@...>;...;expires=N` form (then the
    caller parses every Contact properly). Registrars echo our Contact as we wrote it;
    this saves a full parse of each Contact list, which is the bulk of a 200's cost."""
    marker = f"<sip:{token}@"
    for value in response.headers.fields("Contact"):
        start = value.find(marker)
        if start < 0:
            continue
        end = value.find(">", start)
        if end < 0 or '"' in value[:start]:
            return None  # quoted text before it may hide commas: parse properly
        params = value[end + 1:].split(",", 1)[0]
        found = _EXPIRES.search(params)
        return int(found.group(1)) if found else None
    return None


_EXPIRES = re.compile(r";\s*expires\s*=\s*(\d{1,10})\s*(?:;|$)", re.I)


def _describe(exc: BaseException) -> str:
    """An error for the operator, with its cause ("all 1 SIP targets failed: tcp connect
    to ('127.0.0.1', 5060): Connection refused")."""
    text = str(exc) or type(exc).__name__
    if exc.__cause__ is not None and str(exc.__cause__):
        text += f": {exc.__cause__}"
    return text


def _retry_after(response) -> float | None:
    if response.status not in (500, 503):
        return None
    value = response.get("Retry-After")
    if value is None:
        return None
    seconds = value.split(";")[0].split("(")[0].strip()
    return float(seconds) if seconds.isdigit() else None


def refresh_delay(granted: int, spread: float = 0.1) -> float:
    """When to refresh a registration granted for `granted` seconds: a tenth early (at
    least 2 s when the expiry allows, at most 2 minutes), jitter only ever earlier."""
    lead = min(120.0, max(granted * 0.1, min(2.0, granted / 2)))
    delay = max(granted - lead, 0.5)
    if not 0.0 <= spread <= 1.0:
        return jitter(delay, spread)  # (it says what is wrong)
    # `jitter(delay, spread)` for a delay known finite and positive, drawn here: one
    # call per registration rather than its checks and `uniform`'s frames
    value = delay - delay * spread * _random()
    return value if value <= delay else delay


def backoff(failures: int, base: float, cap: float) -> float:
    """RFC 5626 4.5: min(max-time, base-time * 2^(failures-1)), drawn between 50 and 100 %
    (the RFC counts from 2^1; we count the first failure as 2^0 so that the first retry
    comes within base-time)."""
    return min(cap, base * 2 ** max(failures - 1, 0)) * _rng.uniform(0.5, 1.0)
