"""REGISTER exchanges on UDP, sent from byte templates and matched on the wire.

The common registration is four datagrams: REGISTER, 401, REGISTER with credentials,
200. The general path parses each response into a message object, matches it to a
`ClientTransaction` and resumes a coroutine per transaction. `RegisterWire` does the
common case with none of that: one future per exchange, requests written from the
client's templates (only branch, CSeq and Authorization differ between sends), and
responses recognised by their top Via's branch before any parsing, reading only what
the registration needs.

    wire = RegisterWire.of(endpoint)     # one per endpoint; it diverts UDP datagrams
    outcome = await wire.exchange(client, flow, uri, head, middle, tail, expires,
                                  challenges_left)
    handle = wire.start(client, flow, uri, head, middle, tail, expires, challenges_left,
                        done)            # done(client, flow, outcome, started) at the end

`start` is the same exchange without a future: `done` is called once, from the datagram
or timer that ends it, with the outcome (or the exception) and the loop time the
exchange started; `handle.cancel()` drops it without a call, `handle.done()` says
whether it is over. The registration client starts its exchanges this way, so a common
registration enters Python once, when it ends.

`head + branch + middle + CSeq number + tail + [Authorization] + Content-Length` is a
request (see `RegistrationClient._template`). The outcome is the expiry granted to our
Contact (an int: the 200 listed it in the plain form, or `expires` was 0), or
`(response, answered)`: a final response the general code must decide on (3xx, 423,
other statuses, a challenge in another form or one too many, a 200 whose Contact needs
a full parse) parsed as the transport would have, and how many challenges the wire
answered before it. Timer F raises TransactionTimeout; a closed flow TransportError;
a challenge the server refuses AuthError (from the digest client).

Retransmissions (timer E, T1 doubling to T2, T2 once a provisional response came) and
timer F run on the timer wheel, as one handle per exchange set for the next of the two
(timer F due 64*T1 after the request was sent), not moved when a new request of the
exchange is sent later than it fires. A final response arriving after its exchange ended is
not ours any more: the transport's general path drops it, as it drops a response to an
ended transaction. Metrics are counted as the general path counts them.

This is the pure-Python twin of `_ext/regwire.pyx`; `gateway.sip.registration` picks
one through `gateway._accel`. Depends on the transport's flows and hook, the parser,
digest, metrics and errors; never on instances, the store or the API.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from gateway import metrics
from gateway.errors import TransactionTimeout, TransportError
from gateway.sip import parsing
from gateway.sip.digest import usable
from gateway.sip.fields import _single_challenge
from gateway.sip.flow import redact, trace
from gateway.sip.ids import random_hex
from gateway.sip.transport import observe_top_via

log = logging.getLogger("gateway.sip.registration")

_BRANCH = b"z9hG4bK"
_TAIL = b"Content-Length: 0\r\n\r\n"
_BRANCH_PARAM = re.compile(rb";branch=([^; \t]*)")
_EXPIRES = re.compile(rb";[ \t]*expires[ \t]*=[ \t]*(\d{1,10})[ \t]*(?:;|$)", re.I)


class _Exchange:
    """One REGISTER exchange under way: its templates, the transaction in flight (branch,
    bytes, timers), and the future the registration client awaits."""

    __slots__ = ("wire", "client", "flow", "future", "callback", "finished", "started",
                 "uri", "head", "middle", "tail", "expires", "challenges_left", "answered",
                 "branch", "data", "interval", "proceeding", "timer", "sent", "due", "deadline",
                 "armed")

    def __init__(self, wire, client, flow, uri, head, middle, tail, expires,
                 challenges_left, callback=None):
        self.wire = wire
        self.client = client
        self.flow = flow
        # the caller hears of the end through one of these
        self.future = None if callback is not None else \
            asyncio.get_running_loop().create_future()
        self.callback = callback
        self.finished = False
        self.started = time.monotonic()
        self.uri = uri
        self.head = head
        self.middle = middle
        self.tail = tail
        self.expires = expires
        self.challenges_left = challenges_left
        self.answered = 0
        self.branch = b""
        self.data = b""
        self.interval = 0.0
        self.proceeding = False
        self.timer = None  # timers E and F: one handle (see `_timer_fired`)
        self.sent = 0.0
        self.due = 0.0  # when timer E is due
        self.deadline = 0.0  # when timer F is due
        self.armed = 0.0  # when the handle fires

    def done(self) -> bool:
        return self.finished

    def cancel(self) -> None:
        """Drop the exchange: no more sends, no call of its callback."""
        if not self.finished:
            self.wire._end(self, None, notify=False)


class RegisterWire:
    """The REGISTER exchanges of one endpoint's UDP sockets; see the module docstring."""

    def __init__(self, transport, wheel, t1: float, t2: float):
        self.transport = transport
        self.wheel = wheel
        self.t1 = t1
        self.t2 = t2
        self.slack = wheel.resolution  # a timer fires this much early, or later
        self.pending: dict[bytes, _Exchange] = {}  # branch -> exchange
        transport.datagram_hook = self.datagram

    @classmethod
    def of(cls, endpoint) -> "RegisterWire":
        """The endpoint's wire (made, and hooked into its transport, on first use)."""
        hook = endpoint.transport.datagram_hook
        wire = getattr(hook, "__self__", None)
        if isinstance(wire, cls):
            return wire
        settings = endpoint.transactions.settings
        return cls(endpoint.transport, endpoint.wheel, settings.t1, settings.t2)

    def exchange(self, client, flow, uri: str, head: bytes, middle: bytes, tail: bytes,
                 expires: int, challenges_left: int) -> asyncio.Future:
        ex = _Exchange(self, client, flow, uri, head, middle, tail, expires, challenges_left)
        self._first_send(ex)
        return ex.future

    def start(self, client, flow, uri: str, head: bytes, middle: bytes, tail: bytes,
              expires: int, challenges_left: int, done) -> _Exchange:
        ex = _Exchange(self, client, flow, uri, head, middle, tail, expires, challenges_left,
                       done)
        self._first_send(ex)
        return ex

    # -- sending --------------------------------------------------------------------------

    def _first_send(self, ex: _Exchange) -> None:
        try:
            self._send_request(ex)
        except BaseException:
            self._end(ex, None, notify=False)  # nothing left behind (timers, branch)
            raise

    def _send_request(self, ex: _Exchange) -> None:
        """A new REGISTER transaction of the exchange (the first, or after a challenge)."""
        client = ex.client
        client.cseq += 1
        branch = _BRANCH + random_hex(10).encode()
        ex.data = b"".join((ex.head, branch, ex.middle, str(client.cseq).encode(), ex.tail,
                            credentials(client.digest, ex.uri), _TAIL))
        if ex.branch:
            del self.pending[ex.branch]
        ex.branch = branch
        self.pending[branch] = ex
        ex.interval = self.t1
        ex.proceeding = False
        metrics.registration_sent()
        ex.sent = time.monotonic()
        ex.due = ex.sent + self.t1
        ex.deadline = ex.sent + 64 * self.t1
        if ex.timer is None:
            ex.timer = self.wheel.call_later(self.t1, _timer_fired, ex)
            ex.armed = ex.due
        elif ex.armed > ex.due:
            self.wheel.reschedule(ex.timer, self.t1)
            ex.armed = ex.due
        # else it fires first, and is set then for what is due (after a challenge: the
        # exchange most often ends before, and the handle is never moved)
        self._send(ex)

    def _send(self, ex: _Exchange) -> bool:
        flow = ex.flow
        if flow.closed:
            self._end(ex, TransportError(f"{flow!r} is closed"))
            return False
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("send %s\n%s", flow, redact(ex.data))
        flow.connection.transport.sendto(ex.data, flow.remote)
        metrics.sip_sent("udp", ex.data)
        flow.last_activity = time.monotonic()
        return True

    def _end(self, ex: _Exchange, outcome, notify: bool = True) -> None:
        """The exchange is over: stop its timers, forget its branch, tell its owner."""
        if self.pending.get(ex.branch) is ex:
            del self.pending[ex.branch]
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None
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

    def datagram(self, data: bytes, remote: tuple) -> bool:
        """The transport's hook: True when `data` was a response to one of our exchanges
        and is dealt with; False leaves it to the general path."""
        if not data.startswith(b"SIP/2.0 ") or not self.pending:
            return False
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = data[:head_end + 2]  # the header lines, each ending with CRLF
        top = _top_via(head)
        if top is None:
            return False
        branch = _BRANCH_PARAM.search(top)
        if branch is None:
            return False
        ex = self.pending.get(branch.group(1))
        if ex is None:
            return False
        status = _status(head)
        if status is None or _cseq_method(head) != b"REGISTER":
            return False
        flow = ex.flow
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("recv %s\n%s", flow, redact(data))
        metrics.sip_response("in", "udp", status)
        flow.last_activity = time.monotonic()
        _observe(top, flow)
        if status < 200:
            ex.proceeding = True
            return True
        rtt = time.monotonic() - ex.sent
        if status < 300:
            granted = ex.expires if ex.expires == 0 else _our_expires(head, ex.client.token)
            if granted is not None:
                metrics.registration_result("unregistered" if ex.expires == 0 else "registered",
                                            rtt)
                self._end(ex, granted)
                return True
        elif status in (401, 407) and ex.answered < ex.challenges_left:
            header = b"WWW-Authenticate" if status == 401 else b"Proxy-Authenticate"
            challenge = _one_digest_challenge(head, header)
            if challenge is not None:
                chosen = usable(challenge)
                if chosen is not None:
                    metrics.REGISTER_RTT.observe(rtt)
                    self._challenged(ex, status, challenge, chosen)
                    return True
        return self._hand_back(ex, data, status, rtt)

    def _challenged(self, ex: _Exchange, status: int, params: dict, chosen) -> None:
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        try:
            ex.client.digest.accept(status, name, params, chosen[0], chosen[1])
        except Exception as exc:  # AuthError (credentials rejected), or a bug: the caller's
            metrics.registration_result("unauthorized")
            self._end(ex, exc)
            return
        metrics.registration_result("challenged")
        ex.answered += 1
        self._send_request(ex)

    def _hand_back(self, ex: _Exchange, data: bytes, status: int, rtt: float) -> bool:
        try:
            response = parsing.parse_message(data)
        except Exception:  # noqa: BLE001 - malformed: the general path logs and drops it
            return False
        if 200 <= status < 300:
            metrics.registration_result("unregistered" if ex.expires == 0 else "registered",
                                        rtt)
        else:
            metrics.REGISTER_RTT.observe(rtt)
        self._end(ex, (response, ex.answered))
        return True


def credentials(digest, uri: str) -> bytes:
    """The Authorization (or Proxy-Authorization) line of the next REGISTER to `uri`
    (b"" before any challenge): `digest.authorization("REGISTER", uri)` as a line."""
    found = digest.authorization("REGISTER", uri)
    return b"" if found is None else f"{found[0]}: {found[1]}\r\n".encode()


def _timer_fired(ex: _Exchange) -> None:
    """The exchange's one timer handle: timer F when due, else timer E when due (the
    request again, doubling up to T2, T2 flat once proceeding); then set for the next
    of the two."""
    wire = ex.wire
    if ex.finished or (ex.future is not None and ex.future.done()):
        wire._end(ex, None, notify=False)  # the registration gave up (cancelled): so do we
        return
    now = time.monotonic()
    if now >= ex.deadline - wire.slack:
        _timed_out(ex)
        return
    if now >= ex.due - wire.slack:
        if not wire._send(ex):
            return
        ex.interval = wire.t2 if ex.proceeding else min(2 * ex.interval, wire.t2)
        ex.due = now + ex.interval
    ex.armed = min(ex.due, ex.deadline)
    wire.wheel.reschedule(ex.timer, max(ex.armed - now, 0.0))


def _timed_out(ex: _Exchange) -> None:
    """Timer F: no final response in 64*T1."""
    metrics.transaction_timeout("client", "REGISTER")
    ex.wire._end(ex, TransactionTimeout(
        f"REGISTER got no final response (timer F, {64 * ex.wire.t1:g}s)"))


def _top_via(head: bytes) -> bytes | None:
    """The first Via header line's value, when it is written `Via:` and holds one Via
    (else None: the general path decides)."""
    start = head.find(b"\r\nVia:")
    if start < 0:
        return None
    start += 6
    line = head[start:head.find(b"\r\n", start)]
    return None if b"," in line else line


def _status(data: bytes) -> int | None:
    code = data[8:11]
    if len(code) != 3 or not code.isdigit() or data[11:12] not in (b" ", b"\r"):
        return None
    return int(code)


def _cseq_method(head: bytes) -> bytes | None:
    start = head.find(b"\r\nCSeq:")
    if start < 0:
        return None
    end = head.find(b"\r\n", start + 7)
    parts = head[start + 7:end].split()
    return parts[1] if len(parts) == 2 and parts[0].isdigit() else None


def _header_lines(head: bytes, name: bytes) -> list[bytes]:
    """The values of every header line called `name` (exact spelling)."""
    marker = b"\r\n" + name + b":"
    values = []
    pos = head.find(marker)
    while pos >= 0:
        end = head.find(b"\r\n", pos + len(marker))
        values.append(head[pos + len(marker):end].strip())
        pos = head.find(marker, end)
    return values


def _one_digest_challenge(head: bytes, header: bytes) -> dict | None:
    """The params of the one Digest challenge in the one `header` line, or None when
    there is anything else (no challenge, several, another scheme, folded lines)."""
    lines = _header_lines(head, header)
    if len(lines) != 1 or b"\r\n " in head or b"\r\n\t" in head:
        return None
    try:
        single = _single_challenge(lines[0].decode())
    except UnicodeDecodeError:
        return None
    if single is None or single[0].lower() != "digest":
        return None
    return single[1]


def _our_expires(head: bytes, token: str) -> int | None:
    """The expires parameter of our Contact in a 200, read as
    `gateway.sip.registration._our_expires` reads it (None: parse properly)."""
    marker = b"<sip:" + token.encode() + b"@"
    for value in _header_lines(head, b"Contact"):
        start = value.find(marker)
        if start < 0:
            continue
        end = value.find(b">", start)
        if end < 0 or b'"' in value[:start]:
            return None
        found = _EXPIRES.search(value[end + 1:].split(b",", 1)[0])
        return int(found.group(1)) if found else None
    return None


def _observe(top: bytes, flow) -> None:
    """How the peer saw us (received/rport on our Via), noted as the transport notes it."""
    if b"received" in top.lower():
        observe_top_via(top.decode("utf-8", "replace"), flow)
