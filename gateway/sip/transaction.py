"""SIP transactions (RFC 3261 section 17, with the RFC 6026 Accepted states).

`TransactionLayer(user, wheel, settings)` is the transport layer's user: it matches what
arrives to transactions (17.1.3 for responses: branch + CSeq method; 17.2.3 for requests:
branch + sent-by + method, ACK going to its INVITE) and hands the rest up:
    user.request_received(request, server_transaction)   a new request (CANCEL too:
                                                          `transaction.cancels` is the
                                                          INVITE transaction it matches)
    user.ack_received(ack, flow)                          an ACK of no transaction (2xx)
    user.response_received(response, flow)                a stray response (2xx retransmits)
    user.flow_failed(flow, reason)                        passed on from the transport
`layer.request(request, flow)` starts a ClientTransaction; `await tx.final` gives the
final response or raises TransactionTimeout / TransportError. Timers A to K (and L, M)
run on the timer wheel, with T1, T2, T4 from `TimerSettings`; retransmissions happen on
unreliable flows only.

Once a transaction has its final response it may linger for up to 64*T1 (timers D, J,
L, M) only to absorb retransmissions; at 500 calls/s that is tens of thousands of them.
From then on it keeps its key and the bytes it may have to send again, not the parsed
messages (`request` is None), so the cyclic garbage collector has little to walk and
nothing of the call outlives the call. Callbacks (`on_failure`, `on_response`) are
dropped once they can no longer fire, so a TU holding its transaction makes no cycle
that outlives it.

`layer.absorb(datagram)` takes, before any parse, a UDP datagram that only repeats a
server transaction held here (the ACK of a non-2xx final answer, a retransmitted
request): `request_key` (`gateway.sip.wirekey`, compiled as `gateway._wirekey`) reads
its key from the bytes. The transport offers it each datagram first.

Transactions ended by a timer are counted in `gateway.metrics`.

Depends on the message model (`gateway.sip.message`), flows (anything with `send`,
`reliable`, `owner.response_flow`), a timer wheel, `gateway.errors`, `gateway.metrics` and
`gateway.sip.ids` (branches), `gateway.sip.wirekey`. Nothing above.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Callable, Protocol

import msgspec

from gateway import _accel, metrics
from gateway.errors import ConfigError, ParseError, TransactionTimeout, TransportError
from gateway.sip import message as sipmsg
from gateway.sip.fields import Headers, canonical_name
from gateway.sip.ids import random_hex

log = logging.getLogger(__name__)

#: `request_key(datagram)`: a request's server key from its bytes (`gateway.sip.wirekey`)
request_key = _accel.load("_wirekey", "sip.wirekey").request_key
#: `echo_head(fields, tag)`: what an answer copies from its request (`gateway.sip.answers`)
echo_head = _accel.load("_answers", "sip.answers").echo_head

MAGIC_COOKIE = "z9hG4bK"


class TimerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    t1: float = 0.5    # round-trip estimate
    t2: float = 4.0    # longest interval between non-INVITE retransmissions
    t4: float = 5.0    # how long a message may linger in the network
    timer_d: float = 32.0  # how long an INVITE client absorbs final retransmissions (UDP)
    #: an INVITE server transaction answers 100 Trying after this long unless the TU has
    #: answered already (RFC 3261 17.2.1: 200 ms); negative: never
    trying_after: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ConfigError("sip.timers: need 0 < t1 <= t2")
        if self.t4 <= 0 or self.timer_d < 0:
            raise ConfigError("sip.timers: t4 must be positive and timer_d not negative")


class TransactionUser(Protocol):
    def request_received(self, request: Any, transaction: "ServerTransaction") -> None: ...
    def ack_received(self, ack: Any, flow: Any) -> None: ...
    def response_received(self, response: Any, flow: Any) -> None: ...
    def flow_failed(self, flow: Any, reason: Exception) -> None: ...


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 80 random bits)."""
    return MAGIC_COOKIE + random_hex(10)


# ---- client transactions (17.1) -----------------------------------------------------------

class _Transaction:
    """What both kinds share: a flow to send on, and ending on a transport error."""

    __slots__ = ()

    def _send(self, data: bytes) -> bool:
        try:
            self.flow.send(data)
        except TransportError as exc:  # 17.1.4 / 17.2.4: tell the TU, end the transaction
            self._terminate(exc)
            return False
        return True


class ClientTransaction(_Transaction):
    """INVITE (17.1.1) or non-INVITE (17.1.2) client transaction on one flow.

    `final` is a future: the final response, or TransactionTimeout (timer B/F) or
    TransportError. `on_response(response)`, when given, sees every response passed up,
    provisional ones and INVITE 2xx retransmissions included.
    """

    __slots__ = ("layer", "request", "flow", "key", "method", "state", "final",
                 "on_response", "_wire", "_interval", "_retransmit", "_timeout", "_end",
                 "_ack", "retransmissions")

    def __init__(self, layer: "TransactionLayer", request: Any, flow: Any,
                 on_response: Callable[[Any], None] | None = None, wire: bytes | None = None):
        self.layer = layer
        self.request = request
        self.flow = flow
        self.method = request.method
        self.key = (request.branch, self.method)  # the top Via's branch, without parsing it all
        self.state = "calling" if self.method == "INVITE" else "trying"
        self.final: asyncio.Future = asyncio.get_running_loop().create_future()
        self.on_response = on_response
        self._wire = request.encode() if wire is None else wire
        self._interval = layer.settings.t1
        self._retransmit = self._timeout = self._end = None
        self._ack: bytes | None = None
        self.retransmissions = 0

    def start(self) -> None:
        wheel, t1 = self.layer.wheel, self.layer.settings.t1
        if not self.flow.reliable:  # timer A / timer E
            self._retransmit = wheel.call_later(t1, _client_retransmit, self)
        self._timeout = wheel.call_later(64 * t1, _client_timeout, self)  # timer B / F
        self._send(self._wire)

    def receive(self, response: Any) -> None:
        status = response.status
        if self.method == "INVITE":
            self._receive_invite(response, status)
        else:
            self._receive_non_invite(response, status)

    def _receive_non_invite(self, response, status) -> None:
        if self.state not in ("trying", "proceeding"):
            return  # completed: a retransmitted final response, absorbed
        if status < 200:
            self.state = "proceeding"
            self._pass_up(response)
            return
        self.state = "completed"
        _cancel(self._retransmit, self._timeout)
        self._pass_up(response)
        self.on_response = None  # later responses are absorbed, never passed up
        self._linger(self.layer.settings.t4)  # timer K

    def _receive_invite(self, response, status) -> None:
        if self.state in ("calling", "proceeding"):
            _cancel(self._retransmit)
            if status < 200:
                self.state = "proceeding"
                _cancel(self._timeout)  # timer B only matters while calling
                self._pass_up(response)
            elif status < 300:
                # RFC 6026 Accepted: keep matching the 2xx retransmissions for 64*T1
                self.state = "accepted"
                _cancel(self._timeout)
                self._pass_up(response)
                self._absorb_only()  # on_response stays: it hears the 2xx retransmissions
                self._end = self.layer.wheel.call_later(64 * self.layer.settings.t1,
                                                        _client_end, self)  # timer M
            else:
                self.state = "completed"
                _cancel(self._timeout)
                self._ack = build_ack(self.request, response).encode()
                self._send(self._ack)
                self._pass_up(response)
                self.on_response = None
                self._linger(self.layer.settings.timer_d)  # timer D
        elif self.state == "accepted" and 200 <= status < 300:
            self._pass_up(response)  # the TU acknowledges each 2xx retransmission
        elif self.state == "completed" and status >= 300 and self._ack is not None:
            self._send(self._ack)  # our ACK got lost: send it again

    def _pass_up(self, response: Any) -> None:
        if status_is_final(response) and not self.final.done():
            self.final.set_result(response)
        if self.on_response is not None:
            try:
                self.on_response(response)
            except Exception:  # noqa: BLE001
                log.exception("on_response of %s failed", self.key)

    def _linger(self, delay: float) -> None:
        self._absorb_only()
        if self.flow.reliable or delay <= 0:
            self._terminate(None)
        else:
            self._end = self.layer.wheel.call_later(delay, _client_end, self)

    def _absorb_only(self) -> None:
        """Final response in: nothing is retransmitted any more (a lost ACK is resent
        from `_ack`), so the request and its bytes can go."""
        self.request = None
        self._wire = b""

    def _terminate(self, error: Exception | None) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        _cancel(self._retransmit, self._timeout, self._end)
        self._retransmit = self._timeout = self._end = None
        self.on_response = None
        self.layer._client_done(self)
        if error is not None and not self.final.done():
            self.final.set_exception(error)
            self.final.exception()  # retrieved even when nobody awaits it

    def flow_failed(self, reason: Exception) -> None:
        self._terminate(TransportError(f"{self.method} transaction: flow failed: {reason}"))


def _client_retransmit(tx: ClientTransaction) -> None:
    """Timer A (INVITE: doubles without bound) or timer E (non-INVITE: doubles up to T2,
    T2 flat once a provisional response arrived)."""
    tx._retransmit = None
    if tx.state not in ("calling", "trying", "proceeding"):
        return
    if not tx._send(tx._wire):
        return
    tx.retransmissions += 1
    t2 = tx.layer.settings.t2
    if tx.method == "INVITE":
        tx._interval *= 2
    elif tx.state == "proceeding":
        tx._interval = t2
    else:
        tx._interval = min(2 * tx._interval, t2)
    tx._retransmit = tx.layer.wheel.call_later(tx._interval, _client_retransmit, tx)


def _client_timeout(tx: ClientTransaction) -> None:
    """Timer B or F: no final response in 64*T1."""
    tx._timeout = None
    if tx.state in ("calling", "trying", "proceeding"):
        which = "B" if tx.method == "INVITE" else "F"
        metrics.transaction_timeout("client", tx.method)
        tx._terminate(TransactionTimeout(
            f"{tx.method} got no final response (timer {which}, "
            f"{64 * tx.layer.settings.t1:g}s)"))


def _client_end(tx: ClientTransaction) -> None:
    tx._end = None
    tx._terminate(None)


# ---- server transactions (17.2) -----------------------------------------------------------

class ServerTransaction(_Transaction):
    """INVITE (17.2.1) or non-INVITE (17.2.2) server transaction. The TU answers with
    `respond(response)`; the transaction sends it, retransmits it as the timers say and
    absorbs retransmitted requests. `on_failure(reason)`, when set, hears of timer H
    (no ACK) and of transport errors. `request` is None once the final response is sent
    (see the module's docstring)."""

    __slots__ = ("layer", "request", "flow", "key", "method", "state", "cancels", "on_failure",
                 "_wire", "_interval", "_retransmit", "_timeout", "_end", "_trying")

    def __init__(self, layer: "TransactionLayer", request: Any, flow: Any, key: tuple):
        self.layer = layer
        self.request = request
        self.flow = flow
        self.key = key
        self.method = request.method
        self.state = "proceeding" if self.method == "INVITE" else "trying"
        self.cancels: ServerTransaction | None = None
        self.on_failure: Callable[[Exception], None] | None = None
        self._wire: bytes | None = None
        self._interval = layer.settings.t1
        self._retransmit = self._timeout = self._end = self._trying = None
        if self.method == "INVITE":
            if layer.settings.trying_after >= 0:
                self._trying = layer.wheel.call_later(layer.settings.trying_after,
                                                      _server_trying, self)
        else:
            # the client gives up after 64*T1 (timer F); a TU that never answers must not
            # leave the transaction behind for ever
            self._timeout = layer.wheel.call_later(64 * layer.settings.t1,
                                                   _server_unanswered, self)

    def respond(self, response: Any) -> None:
        """Send a response from the TU. Raises TransportError if it cannot be sent."""
        self.respond_wire(response.status, response.encode())

    def respond_wire(self, status: int, wire: bytes) -> None:
        """`respond()` with the response already encoded (`encode_answer`): `wire` must be
        a response with that status to this transaction's request."""
        if self.state in ("completed", "confirmed", "accepted", "terminated"):
            raise TransportError(f"{self.method} transaction already answered finally")
        _cancel(self._trying)
        self._trying = None
        self._wire = wire
        settings, wheel = self.layer.settings, self.layer.wheel
        if status >= 200:
            self.request = None  # from here on only `_wire` is sent again
        if status < 200:
            if self.method != "INVITE":
                self.state = "proceeding"
        elif self.method != "INVITE":
            self.state = "completed"
            _cancel(self._timeout)
            self._timeout = None
            self._linger(64 * settings.t1)  # timer J
        elif status < 300:
            # RFC 6026 Accepted: absorb INVITE retransmissions; the TU retransmits the 2xx
            self.state = "accepted"
            self._end = wheel.call_later(64 * settings.t1, _server_end, self)  # timer L
        else:
            self.state = "completed"
            if not self.flow.reliable:
                self._retransmit = wheel.call_later(settings.t1, _server_retransmit, self)  # G
            self._timeout = wheel.call_later(64 * settings.t1, _server_no_ack, self)  # H
        if not self._send(self._wire):
            raise TransportError(f"could not send {status} for {self.method}")

    def retransmitted(self, request: Any) -> None:
        """The same request again (or the ACK of our non-2xx final response)."""
        self.repeated(request.method)

    def repeated(self, method: str) -> None:
        """`retransmitted()` knowing only the method (`TransactionLayer.absorb`)."""
        if method == "ACK":
            if self.state == "completed":
                self.state = "confirmed"
                _cancel(self._retransmit, self._timeout)
                self._retransmit = self._timeout = None
                self._linger(self.layer.settings.t4)  # timer I
            return
        if self.state in ("proceeding", "completed") and self._wire is not None:
            self._send(self._wire)  # the last response (provisional or final) again

    def _linger(self, delay: float) -> None:
        if self.flow.reliable:
            self._terminate(None)
        else:
            self._end = call_on_grid(self.layer.wheel, delay, _server_end, self)

    def _terminate(self, error: Exception | None) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        _cancel(self._retransmit, self._timeout, self._end, self._trying)
        self._retransmit = self._timeout = self._end = self._trying = None
        self.layer._server_done(self)
        on_failure, self.on_failure = self.on_failure, None
        if error is not None and on_failure is not None:
            try:
                on_failure(error)
            except Exception:  # noqa: BLE001
                log.exception("on_failure of %s failed", self.key)


def _server_trying(tx: ServerTransaction) -> None:
    tx._trying = None
    if tx.state == "proceeding" and tx._wire is None:
        try:
            tx.respond(build_response(tx.request, 100, "Trying"))
        except TransportError:
            pass  # _send already ended the transaction


def _server_retransmit(tx: ServerTransaction) -> None:
    """Timer G: the non-2xx final response again, doubling up to T2, until the ACK."""
    tx._retransmit = None
    if tx.state != "completed" or not tx._send(tx._wire):
        return
    tx._interval = min(2 * tx._interval, tx.layer.settings.t2)
    tx._retransmit = tx.layer.wheel.call_later(tx._interval, _server_retransmit, tx)


def _server_no_ack(tx: ServerTransaction) -> None:
    """Timer H: the ACK never came."""
    tx._timeout = None
    if tx.state == "completed":
        metrics.transaction_timeout("server", tx.method)
        tx._terminate(TransactionTimeout("no ACK for the final response (timer H)"))


def _server_unanswered(tx: ServerTransaction) -> None:
    tx._timeout = None
    if tx.state in ("trying", "proceeding"):
        log.warning("%s %s got no final response from the TU in time", tx.method, tx.key[0])
        metrics.transaction_timeout("server", tx.method)
        tx._terminate(TransactionTimeout(f"{tx.method} left unanswered by the TU"))


def _server_end(tx: ServerTransaction) -> None:
    tx._end = None
    tx._terminate(None)


# ---- the layer ---------------------------------------------------------------------------

class TransactionLayer:
    """Matches messages to transactions; the transport layer's user. See the docstring."""

    def __init__(self, user: TransactionUser, wheel: Any, settings: TimerSettings | None = None):
        self.user = user
        self.wheel = wheel
        self.settings = settings or TimerSettings()
        self.clients: dict[tuple, ClientTransaction] = {}
        self.servers: dict[tuple, ServerTransaction] = {}

    def request(self, request: Any, flow: Any,
                on_response: Callable[[Any], None] | None = None, *,
                wire: bytes | None = None) -> ClientTransaction:
        """Start a client transaction for `request` (its top Via has a fresh branch, see
        `new_branch`) on `flow`. ACK for a 2xx is no transaction: send it on the flow.
        `wire`: the request's bytes when the caller has them already (they must be what
        `request.encode()` gives; the caller parsed the request from them)."""
        if request.method == "ACK":
            raise ValueError("an ACK is not sent through a client transaction")
        tx = ClientTransaction(self, request, flow, on_response, wire)
        if tx.key in self.clients:
            raise ValueError(f"branch {tx.key[0]} is already in use")
        self.clients[tx.key] = tx
        tx.start()
        return tx

    async def send(self, request: Any, flow: Any) -> Any:
        """Send a request and wait for its final response."""
        return await self.request(request, flow).final

    # -- from the transport layer ---------------------------------------------------------

    def message_received(self, message: Any, flow: Any) -> None:
        # A malformed field read lazily here raises ParseError: the transport layer, which
        # owns the flow, answers 400 (requests) or drops (responses).
        if isinstance(message, sipmsg.Response):
            self._response(message, flow)
        else:
            self._request(message, flow)

    def absorb(self, data: bytes) -> str | None:
        """A datagram that only repeats a server transaction held here (a retransmitted
        request, the ACK of our non-2xx final answer), handled from its bytes without
        parsing it: its method, or None when it must be parsed and delivered as usual.
        The transaction does what `_request` would have it do (`request_key` gives the
        key `server_key` would)."""
        found = request_key(data)
        if found is None:
            return None
        tx = self.servers.get(found[0])
        if tx is None:
            return None
        tx.repeated(found[1])
        return found[1]

    def flow_failed(self, flow: Any, reason: Exception) -> None:
        for tx in [tx for tx in self.clients.values() if tx.flow is flow]:
            tx.flow_failed(reason)
        for tx in [tx for tx in self.servers.values() if tx.flow is flow]:
            tx._terminate(TransportError(f"flow failed: {reason}"))
        self.user.flow_failed(flow, reason)

    def _response(self, response: Any, flow: Any) -> None:
        branch = response.branch  # filled in by the parser: no full Via parse per response
        if branch is None:
            log.info("dropping a response without a Via branch from %r", flow)
            return
        tx = self.clients.get((branch, response.cseq[1]))
        if tx is None:
            self.user.response_received(response, flow)
        else:
            tx.receive(response)

    def _request(self, request: Any, flow: Any) -> None:
        key = server_key(request)
        tx = self.servers.get(key)
        if tx is not None:
            tx.retransmitted(request)
            return
        if request.method == "ACK":
            self.user.ack_received(request, flow)  # ACK of a 2xx: the TU's business
            return
        reply_flow = flow.owner.response_flow(request, flow) if hasattr(flow, "owner") else flow
        tx = ServerTransaction(self, request, reply_flow, key)
        if request.method == "CANCEL":
            tx.cancels = self.servers.get(key[:-1] + ("INVITE",))
        self.servers[key] = tx
        self.user.request_received(request, tx)

    def _client_done(self, tx: ClientTransaction) -> None:
        if self.clients.get(tx.key) is tx:
            del self.clients[tx.key]

    def _server_done(self, tx: ServerTransaction) -> None:
        if self.servers.get(tx.key) is tx:
            del self.servers[tx.key]


def server_key(request: Any) -> tuple:
    """RFC 3261 17.2.3: branch + sent-by + method, ACK matching its INVITE. A request
    without the magic cookie (RFC 2543 peers) is keyed by its dialog-ish identity.
    Only the top Via is parsed (the others are not the server's business)."""
    via = request.top_via
    if via is None:
        raise sipmsg.bad("missing Via")
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), via.port, method)
    return ("rfc2543", request.call_id, request.cseq[0], request.from_.tag, via.host.lower(),
            via.port, branch, method)


def status_is_final(response: Any) -> bool:
    return response.status >= 200


#: A server transaction lingering (timers I and J: absorbing retransmissions, nothing to
#: send) ends on this grid of the wheel's clock, rounded up (never early): at a low call
#: rate the ones of neighbouring calls then end in one wake-up of the loop, not one each
LINGER_GRID = 0.05


def call_on_grid(wheel: Any, delay: float, callback: Callable[[Any], None], arg: Any) -> Any:
    """`wheel.call_later(delay, callback, arg)`, due at the next point of `LINGER_GRID`
    (for timers whose lateness costs only memory)."""
    handle = wheel.call_later(delay, callback, arg)
    when = handle.when
    wheel.reschedule_at(handle, max(when, math.ceil(when / LINGER_GRID) * LINGER_GRID))
    return handle


def _cancel(*handles) -> None:
    for handle in handles:
        if handle is not None:
            handle.cancel()


# ---- messages the transactions make themselves ----------------------------------------

def build_ack(request: Any, response: Any) -> Any:
    """The ACK for a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's Request-URI,
    top Via, From, Call-ID, CSeq number and Route set, the response's To (with its tag)."""
    return _same_transaction(request, "ACK", response.get("To"))


def build_cancel(request: Any) -> Any:
    """The CANCEL of a pending request (RFC 3261 9.1): same Request-URI, top Via (so the
    same branch), From, To, Call-ID, CSeq number and Route set. Send it on the request's
    flow through `TransactionLayer.request`, as its own transaction."""
    return _same_transaction(request, "CANCEL", request.get("To"))


def _same_transaction(request: Any, method: str, to: str) -> Any:
    headers = [("Via", request.headers.get_all("Via")[0]), ("Max-Forwards", "70")]
    headers += [("Route", route) for route in request.headers.fields("Route")]
    headers += [("From", request.get("From")), ("To", to), ("Call-ID", request.call_id),
                ("CSeq", f"{request.cseq.number} {method}")]
    return sipmsg.Request(method, request.uri_text, headers)


#: the fields a response copies from its request (8.2.6.2), by lower-case name; Via
#: every time it occurs, the others once
_ECHOED = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def build_response(request: Any, status: int, reason: str) -> Any:
    """A response copying the request's Via, From, To, Call-ID and CSeq (8.2.6.2)."""
    # A call is answered four or five times: the fields are copied in one pass over the
    # request's, without checking them again (they were checked entering the request).
    vias, first = [], {}
    for key, _, value in request.headers._fields:
        name = _ECHOED.get(key)
        if name is None:
            continue
        if key == "via":
            vias.append(("via", name, value))
        elif key not in first:
            first[key] = (key, name, value)
        elif key == "call-id":
            first = None  # more than one: request.call_id below says why
            break
    if first is None or len(first) < 4:  # a field missing: the checked path
        fields = [("Via", via) for via in request.headers.fields("Via")]
        fields += [("From", request.get("From")), ("To", request.get("To")),
                   ("Call-ID", request.call_id), ("CSeq", request.get("CSeq"))]
        headers = Headers(fields)
    else:
        headers = Headers._from_parser(
            vias + [first["from"], first["to"], first["call-id"], first["cseq"]], {})
    if status == 100 and request.get("Timestamp") is not None:
        headers.add("Timestamp", request.get("Timestamp"))  # RFC 3261 8.2.6.1
    return sipmsg.Response(status, reason, headers)


def answer_head(request: Any, status: int, tag: str | None = None) -> str:
    """The fields `build_response(request, status, ...)` copies from `request`, with
    `tag` added to To when given and To has none, as header lines with CRLF between
    them. Made once, it serves every answer of a call (`encode_answer`): a held INVITE
    is answered four or five times."""
    # The usual request is written from its fields in one pass (`echo_head`, compiled
    # as `gateway._answers`), without the response object `build_response` makes; a
    # Timestamp to echo on a 100, or fields `echo_head` leaves undecided, take that path.
    if status != 100 or request.get("Timestamp") is None:
        try:
            tagged = tag is not None and request.to_tag is not None
        except ParseError:  # two To fields: the general path copies the first
            return _general_head(request, status, tag)
        head = echo_head(request.headers._fields, None if tagged else tag)
        if head is not None:
            return head
    return _general_head(request, status, tag)


def _general_head(request: Any, status: int, tag: str | None) -> str:
    response = build_response(request, status, "")
    if tag is not None and response.to_tag is None:
        response.headers.set("To", f"{response.get('To')};tag={tag}")
    return "\r\n".join([f"{name}: {value}" for _, name, value in response.headers._fields])


#: (name, value) -> its checked header line, for the fields every call's answers repeat
#: (Server, Contact, X-Push-Status...): bounded, so odd values only miss
_LINES: dict[tuple[str, str], str] = {}


def encode_answer(status: int, reason: str, head: str, extra=()) -> bytes:
    """The bytes of a bodiless response whose copied fields are `head` (`answer_head`)
    followed by the `extra` (name, value) fields: what building it with
    `build_response`, adding `extra` and `encode()` give, without the message objects."""
    lines = [f"{sipmsg.SIP_VERSION} {status} {reason}", head]
    for name, value in extra:
        line = _LINES.get((name, value))
        if line is None:
            Headers._check(name, value)
            line = f"{canonical_name(name)}: {value}"
            if len(_LINES) < 512:
                _LINES[(name, value)] = line
        lines.append(line)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def response_like(response: Any, status: int, reason: str, extra=()) -> Any:
    """Another answer to the same request: `response`'s fields (checked already), then
    `extra` (name, value) fields."""
    headers = Headers._from_parser(list(response.headers._fields), {})
    for name, value in extra:
        headers.add(name, value)
    return sipmsg.Response(status, reason, headers)
