"""A `Flow`: the path to one SIP peer (local address, remote address, transport), with its
RFC 5626 keepalive and its idle timer.

A flow over TCP or TLS owns one connection; a flow over UDP shares its listening socket
with the other UDP flows. Flows are shared: every registration towards the same peer
holds the same flow (`acquire`/`release`). While a flow has holders it sends CRLFCRLF
keepalives at 80-100 % of the interval (RFC 5626 section 4.4.1) and, on TCP/TLS, expects
the CRLF pong within the pong timeout, else the flow has failed. (On UDP the CRLFCRLF
only keeps NAT bindings open: no pong is expected, as RFC 5626 would use STUN there.) A
flow nobody holds is closed after the idle timeout without traffic.

Flows count themselves (opened, closed, keepalive failures) and the messages they send in
`gateway.metrics`.

This module depends on `gateway.errors`, `gateway.metrics`, `gateway.timers.jitter` and a timer wheel passed
in (anything with `call_later(delay, callback, arg)` returning a handle with `cancel()`);
it knows nothing of SIP messages. The transport layer (`gateway.sip.transport`) creates flows.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from typing import Any, Protocol

from gateway import metrics
from gateway.errors import TransportError
from gateway.timers import jitter

log = logging.getLogger("gateway.sip.flow")
trace = logging.getLogger("gateway.sip.trace")

PING = b"\r\n\r\n"
PONG = b"\r\n"
# headers whose values never reach a log (RFC 3261 names, case-insensitive, one per line)
_SECRET_HEADER = re.compile(
    rb"^((?:proxy-)?authorization|(?:proxy-|www-)?authenticate)[ \t]*:.*?$",
    re.IGNORECASE | re.MULTILINE)


def redact(data: bytes) -> str:
    """A SIP message as text for logs, with credentials removed."""
    return _SECRET_HEADER.sub(rb"\1: <redacted>", data).decode("utf-8", "replace")


class FlowOwner(Protocol):
    """What a flow needs from the transport layer that made it."""

    wheel: Any

    def _write(self, flow: "Flow", data: bytes) -> None: ...
    def _flow_failed(self, flow: "Flow", reason: Exception) -> None: ...
    def _flow_idle(self, flow: "Flow") -> None: ...


class Flow:
    """One path to a peer. `reliable` flows (TCP, TLS) are connections; `key` is what
    sharing is keyed by: (host, port, transport, server name, client identity) for flows
    we opened, (transport, local, remote) for flows the peer opened or that use UDP."""

    __slots__ = ("transport", "local", "remote", "server_name", "key", "outbound", "owner",
                 "connection", "users", "last_activity", "closed", "observed",
                 "keepalive_interval", "pong_timeout", "_keepalive", "_pong", "_idle",
                 "idle_timeout", "_sent_by", "__weakref__")

    def __init__(self, owner: FlowOwner, transport: str, local: tuple, remote: tuple, *,
                 key: tuple, outbound: bool, server_name: str | None = None,
                 connection: Any = None, keepalive_interval: float = 0.0,
                 pong_timeout: float = 10.0, idle_timeout: float = 0.0):
        self.owner = owner
        self.transport = transport
        self.local = local
        self.remote = remote
        self.server_name = server_name
        self.key = key
        self.outbound = outbound
        # the asyncio transport of a TCP/TLS flow; the shared socket of a UDP flow
        self.connection = connection
        self.users = 0
        self.last_activity = time.monotonic()
        self.closed = False
        #: our address as the peer saw it (RFC 3581 received/rport of its responses)
        self.observed: tuple[str, int] | None = None
        self.keepalive_interval = keepalive_interval
        # a missing pong must be noticed before the next ping is due, so that a dead
        # connection is found within two keepalive intervals
        self.pong_timeout = min(pong_timeout, keepalive_interval / 2) if keepalive_interval \
            else pong_timeout
        self.idle_timeout = idle_timeout
        self._sent_by: tuple[str, int] | None = None
        self._keepalive = None
        self._pong = None
        self._idle = None
        if idle_timeout > 0:
            self._idle = owner.wheel.call_later(idle_timeout, _idle_check, self)
        metrics.flow_opened(transport)

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def sent_by(self) -> tuple[str, int]:
        """Our address for a Via sent-by on this flow: the local address, or, for a socket
        bound to the wildcard (0.0.0.0, ::), the source address the kernel uses to reach
        the peer. (Behind a NAT, `observed` says what the peer really sees.)"""
        if self._sent_by is None:
            host = self.local[0]
            if ipaddress.ip_address(host).is_unspecified:
                host = _source_address(self.remote)
            self._sent_by = (host, self.local[1])
        return self._sent_by

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"users={self.users}"
        return (f"<Flow {self.transport} {_addr(self.local)} -> {_addr(self.remote)}"
                f"{' sni=' + self.server_name if self.server_name else ''} {state}>")

    # -- sending ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send one SIP message (bytes). Raises TransportError on a closed flow."""
        if self.closed:
            raise TransportError(f"{self!r} is closed")
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("send %s\n%s", self, redact(data))
        self.owner._write(self, data)
        metrics.sip_sent(self.transport, data)
        self.last_activity = time.monotonic()

    # -- sharing and keepalive -----------------------------------------------------------

    def acquire(self) -> "Flow":
        """Hold the flow (a registration uses it): keepalives run while anyone holds it."""
        if self.closed:
            raise TransportError(f"{self!r} is closed")
        self.users += 1
        if self.users == 1 and self.keepalive_interval > 0:
            self._schedule_ping()
        return self

    def release(self) -> None:
        """Stop holding it; the last holder's release stops keepalives (the idle timer
        closes it later if nothing else uses it)."""
        if self.users == 0:
            return
        self.users -= 1
        if self.users == 0:
            _cancel(self._keepalive)
            _cancel(self._pong)
            self._keepalive = self._pong = None

    def _schedule_ping(self) -> None:
        delay = jitter(self.keepalive_interval, 0.2)  # 80-100 %, RFC 5626 4.4.1
        self._keepalive = self.owner.wheel.call_later(delay, _send_ping, self)

    @property
    def awaiting_pong(self) -> bool:
        return self._pong is not None

    def pong_received(self) -> None:
        self.last_activity = time.monotonic()
        _cancel(self._pong)
        self._pong = None

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # -- the end --------------------------------------------------------------------------

    def fail(self, reason: Exception) -> None:
        """The flow broke (connection lost, pong missing, write failed): close it and
        tell the layer once."""
        if self.closed:
            return
        self._shut()
        log.info("%r failed: %s", self, reason)
        self.owner._flow_failed(self, reason)

    def close(self) -> None:
        """Close on purpose (idle, shutdown); nobody is told it failed."""
        if self.closed:
            return
        self._shut()
        self.owner._flow_idle(self)

    def _shut(self) -> None:
        self.closed = True
        metrics.flow_closed(self.transport)
        for handle in (self._keepalive, self._pong, self._idle):
            _cancel(handle)
        self._keepalive = self._pong = self._idle = None
        if self.reliable and self.connection is not None:
            self.connection.close()  # a UDP flow's "connection" is the shared socket


def _send_ping(flow: Flow) -> None:
    flow._keepalive = None
    if flow.closed or flow.users == 0:
        return
    try:
        flow.owner._write(flow, PING)
    except TransportError as exc:
        metrics.keepalive_failed(flow.transport)
        flow.fail(exc)
        return
    if flow.reliable and flow._pong is None:
        flow._pong = flow.owner.wheel.call_later(flow.pong_timeout, _pong_missing, flow)
    flow._schedule_ping()


def _pong_missing(flow: Flow) -> None:
    flow._pong = None
    if not flow.closed:
        metrics.keepalive_failed(flow.transport)
        flow.fail(TransportError(f"no keepalive pong within {flow.pong_timeout:g}s"))


def _idle_check(flow: Flow) -> None:
    flow._idle = None
    if flow.closed:
        return
    quiet = time.monotonic() - flow.last_activity
    if flow.users == 0 and quiet >= flow.idle_timeout:
        log.debug("%r idle for %.0fs: closing", flow, quiet)
        flow.close()
        return
    # held flows are looked at again later; a flow with recent traffic waits for the rest
    remaining = flow.idle_timeout - quiet if flow.users == 0 else flow.idle_timeout
    flow._idle = flow.owner.wheel.call_later(max(remaining, 0.001), _idle_check, flow)


def _source_address(remote: tuple) -> str:
    """The local address the routing table picks for `remote` (connecting a UDP socket
    sends nothing)."""
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(remote[:2])
        return probe.getsockname()[0]


def _cancel(handle) -> None:
    if handle is not None:
        handle.cancel()


def _addr(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
