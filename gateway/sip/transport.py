"""The SIP transport layer (RFC 3261 section 18) on asyncio/uvloop: UDP, TCP and TLS, as
client and server, with shared flows.

`TransportLayer(user, wheel, settings)` listens (`listen(...)`), opens or reuses flows
(`connect(target)`), frames what arrives and hands it up:
    user.message_received(message, flow)   a parsed Request or Response
    user.flow_failed(flow, reason)         a flow broke (lost connection, missing pong)
Outbound connections are shared: one per (host, port, transport, TLS server name, client
certificate). Inbound requests get RFC 3261 18.2.1 / RFC 3581 treatment (`received`,
`rport` on the top Via); responses tell the flow how the peer saw us (`flow.observed`).
TLS verifies the server's certificate by default (system CAs or `tls_ca_file`); a
registrar may ask for a client certificate (`TlsIdentity`). A limit caps the number of
connections, and connections nobody uses close after the idle timeout.

UDP sockets are `BatchedDatagramSocket`s (`gateway.sip.udpsock`, compiled as
`gateway._udpsock`): read off the loop in batches until empty (recvmmsg), what is
sent while a batch is handled leaving together (sendmmsg), to a registrar
(`connect(..., busy=True)`) through a socket connected to it on the same port (`pin`).
Each datagram goes to `datagram_hook` first, then to the general path, where the user's
`absorb(data)` (the transaction layer) may take a repeat of a transaction it holds
unparsed (the ACK of a 487, a retransmission). GATEWAY_UDP_SOCKET=loop uses uvloop's
datagram transport instead (one system call and one protocol call per datagram; on the
registration bench it cost 114-124 us of CPU per registration against 84-87 us for
the batched socket, 4 alternated runs of 20,000).

Counts what it receives, parse errors and parse time (every 16th read) in
`gateway.metrics`; the flows count what they send.

Depends on `gateway.sip.flow`, the parser (`gateway.sip.parsing`, for framing only),
the batched UDP socket, `gateway.errors` and `gateway.metrics`. It knows nothing of transactions: those sit above and use the callbacks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import ssl
import time
from typing import Any, Protocol

import msgspec

from gateway import _accel, metrics
from gateway.errors import ConfigError, ParseError, TransportError
from gateway.sip import parsing
from gateway.sip.grammar import bad
from gateway.sip.message import Request, error_reply, redacted
from gateway.sip.flow import PONG, Flow, trace
from gateway.sip.inflight import InFlight

#: bytes asked for each UDP socket's receive buffer (SO_RCVBUF)
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

#: UDP sockets read and written in batches (`gateway.sip.udpsock` or its compiled twin)
#: rather than through uvloop's datagram transport; GATEWAY_UDP_SOCKET=loop for the latter
_udpsock = _accel.load("_udpsock", "sip.udpsock")
BATCHED_UDP = os.environ.get("GATEWAY_UDP_SOCKET", "batched") != "loop"

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp", "tls")
MAX_DATAGRAM = 65_507  # the largest UDP payload over IPv4


class TransportSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: seconds between CRLF keepalives on held flows (0: none). RFC 5626 suggests 95-120
    #: s for TCP; NATs in front of phones want less.
    keepalive_interval: float = 30.0
    #: seconds to wait for the CRLF pong (RFC 5626: 10), capped at half the interval
    pong_timeout: float = 10.0
    #: close connections and forget UDP flows nobody holds after this many quiet seconds
    idle_timeout: float = 300.0
    #: at most this many TCP/TLS connections, in and out together
    max_connections: int = 10_000
    connect_timeout: float = 5.0
    #: a peer that leaves this much unsent data in our buffer is dropped
    max_write_buffer: int = 1 << 20
    tls_verify: bool = True
    #: CA bundle for verifying servers (None: the system's)
    tls_ca_file: str | None = None
    #: the largest message framed on a TCP/TLS connection (a datagram is at most 65535
    #: bytes anyway); the provider face raises it so that a SIP MESSAGE up to the
    #: configured body limit arrives whole and gets its 413 from the message rules
    max_stream_message: int = 65535

    def __post_init__(self) -> None:
        for name in ("keepalive_interval", "pong_timeout", "idle_timeout", "connect_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"transport.{name}: must not be negative")
        if self.max_connections < 1:
            raise ConfigError("transport.max_connections: must be at least 1")
        if self.max_stream_message < 1024:
            raise ConfigError("transport.max_stream_message: must be at least 1024")


class TlsIdentity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A certificate we present: a client certificate for a registrar, or the server
    certificate of a TLS listener (`ca_file` then verifies client certificates)."""

    cert_file: str
    key_file: str | None = None
    ca_file: str | None = None
    require_client_cert: bool = False


class TransportUser(Protocol):
    def message_received(self, message: Any, flow: Flow) -> None: ...
    def flow_failed(self, flow: Flow, reason: Exception) -> None: ...


class _UdpSocket(asyncio.DatagramProtocol):
    """One bound UDP socket; every UDP flow through it shares it."""

    def __init__(self, layer: "TransportLayer"):
        self.layer = layer
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple = ()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr) -> None:
        layer = self.layer
        hook = layer.datagram_hook  # called here: one Python frame less per datagram
        if hook is None or not hook(data, addr):
            layer._datagram(self, data, addr[:2])

    def received(self, data: bytes, addr) -> None:
        """What a batched socket's hook did not take (it calls the hook itself)."""
        self.layer._datagram(self, data, addr[:2])

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like; the transaction's timers handle the loss
        log.debug("UDP %s: %s", self.local, exc)

    def pin(self, remote: tuple) -> None:
        """Datagrams to `remote`, a busy peer we chose (a registrar, its outbound proxy),
        through a socket connected to it (`BatchedDatagramSocket.pin`; uvloop's transport
        has none)."""
        pin = getattr(self.transport, "pin", None)
        if pin is not None:
            pin(remote)


class _Connection(asyncio.Protocol):
    """One TCP or TLS connection, framed by the parser's StreamParser."""

    def __init__(self, layer: "TransportLayer", transport_name: str, outbound_key=None,
                 server_name: str | None = None):
        self.layer = layer
        self.name = transport_name
        self.outbound_key = outbound_key
        self.server_name = server_name
        self.parser = parsing.StreamParser(layer.stream_limits)
        self.flow: Flow | None = None

    def connection_made(self, transport) -> None:
        self.flow = self.layer._connection_made(self, transport)

    def data_received(self, data: bytes) -> None:
        flow = self.flow
        if flow is None or flow.closed:
            return
        flow.touch()
        try:
            items = self.layer._parse(self.parser.feed, data)
        except ParseError as exc:
            # the byte stream cannot be framed any more: nothing after this is trustworthy;
            # answer the bad request when we can say which one it was, then close
            metrics.sip_parse_error(self.name)
            reply = error_reply(exc)
            if reply is not None:
                self.layer._write(flow, reply)
                metrics.sip_sent(self.name, reply)
            flow.fail(TransportError(f"unparsable stream: {exc}"))
            return
        for item in items:
            if item is parsing.KEEPALIVE_PONG or (
                    item is parsing.KEEPALIVE_PING and flow.awaiting_pong):
                # two pongs in two reads look like one ping split in two to the framer:
                # while we wait for a pong, a "ping" is our pong
                flow.pong_received()
            elif item is parsing.KEEPALIVE_PING:
                self.layer._write(flow, PONG)  # RFC 5626 4.4.1: answer the ping
            else:
                self.layer._deliver(item, flow)
            if flow.closed:
                return
        if self.parser.failed:  # a bad message followed good ones in the same read
            metrics.sip_parse_error(self.name)
            flow.fail(TransportError("unparsable stream"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.flow is not None and not self.flow.closed:
            self.flow.fail(TransportError(f"connection lost: {exc or 'closed by peer'}"))


class TransportLayer:
    """Listeners, connectors and the table of flows. See the module docstring."""

    def __init__(self, user: TransportUser, wheel: Any,
                 settings: TransportSettings | None = None):
        self.user = user
        self.wheel = wheel
        self.settings = settings or TransportSettings()
        self.stream_limits = parsing.ParseLimits(max_message_size=self.settings.max_stream_message)
        self._udp: list[_UdpSocket] = []
        self._servers: list[tuple[asyncio.AbstractServer, str]] = []
        self._outbound: dict[tuple, Flow] = {}      # shared connections we opened
        self._connecting = InFlight("connect")
        self._by_remote: dict[tuple, Flow] = {}     # (transport, remote) -> flow
        self.connections = 0
        self._ssl_contexts: dict[Any, ssl.SSLContext] = {}
        self._reads = 0  # every 16th read is timed for the parse-time histogram
        self._hook = None
        # the transaction layer's `absorb(data)`: repeats of its transactions, unparsed
        self._absorb = getattr(user, "absorb", None)

    @property
    def datagram_hook(self):
        """`hook(data, addr) -> bool` sees each datagram first; True: it took it (the
        registration client's wire path, `gateway.sip.regwire`)."""
        return self._hook

    @datagram_hook.setter
    def datagram_hook(self, hook) -> None:
        self._hook = hook
        for proto in self._udp:
            if isinstance(proto.transport, _udpsock.BatchedDatagramSocket):
                proto.transport.hook = hook

    # -- listening ------------------------------------------------------------------------

    async def listen(self, transport: str, host: str, port: int = 0,
                     tls: TlsIdentity | None = None) -> tuple:
        """Listen on host:port (0: any free port); returns the bound address."""
        loop = asyncio.get_running_loop()
        if transport == "udp":
            if BATCHED_UDP:
                proto = await self._batched_udp(loop, host, port)
            else:
                udp, proto = await loop.create_datagram_endpoint(
                    lambda: _UdpSocket(self), local_addr=(host, port))
                udp.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            self._udp.append(proto)
            return proto.local
        if transport not in ("tcp", "tls"):
            raise ConfigError(f"unknown SIP transport {transport!r}")
        context = None
        if transport == "tls":
            if tls is None:
                raise ConfigError("a TLS listener needs a certificate (TlsIdentity)")
            context = self._server_context(tls)
        server = await loop.create_server(lambda: _Connection(self, transport), host, port,
                                          ssl=context, reuse_address=True)
        self._servers.append((server, transport))
        return server.sockets[0].getsockname()[:2]

    async def _batched_udp(self, loop, host: str, port: int) -> _UdpSocket:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, kind, proto_number, _, address = infos[0]
        sock = socket.socket(family, kind, proto_number)
        try:
            # room for the datagrams of a burst, or of a moment the loop is busy: the
            # default (~200 KiB, a few hundred datagrams) drops INVITEs at a few hundred
            # calls a second; the kernel caps this at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        proto = _UdpSocket(self)
        udp = _udpsock.BatchedDatagramSocket(sock, proto.received, proto.error_received, loop)
        udp.hook = self._hook
        proto.connection_made(udp)
        return proto

    def local_address(self, transport: str) -> tuple | None:
        """Where we listen for a transport (for Via sent-by and Contact), if we do."""
        if transport == "udp":
            return self._udp[0].local if self._udp else None
        for server, name in self._servers:
            if name == transport:
                return server.sockets[0].getsockname()[:2]
        return None

    # -- connecting -----------------------------------------------------------------------

    async def connect(self, target: Any, identity: TlsIdentity | None = None,
                      busy: bool = False) -> Flow:
        """The flow to `target` (anything with .address .port .transport .server_name,
        e.g. `gateway.sip.dns.Target`), shared with every other user of the same peer.
        `busy`: a peer that gets many datagrams (a registrar), which a UDP flow sends to
        through a socket connected to it (`pin` in `gateway.sip.udpsock`)."""
        flow = self.connect_now(target, identity, busy)
        if flow is not None:
            return flow
        remote = (target.address, int(target.port))
        transport = target.transport.lower()
        if transport == "udp":  # no socket of the family yet: a client-only one
            await self.listen("udp", "::" if ":" in remote[0] else "0.0.0.0")
            return self._udp_flow_for(self._udp[-1], remote, busy)
        server_name = getattr(target, "server_name", None) or target.address
        key = _outbound_key(target, transport, server_name, identity)
        return await self._connecting.run(
            key, lambda: self._open(key, remote, transport, server_name, identity))

    def connect_now(self, target: Any, identity: TlsIdentity | None = None,
                    busy: bool = False) -> Flow | None:
        """`connect()` when it needs no waiting (a UDP socket of the family is there, the
        connection is open), else None. Per-request callers (the registration client)
        skip a coroutine per request this way."""
        transport = target.transport.lower()
        if transport not in TRANSPORTS:
            raise TransportError(f"unsupported SIP transport {transport!r}")
        if transport == "udp":
            remote = (target.address, int(target.port))
            v6 = ":" in remote[0]
            for sock in self._udp:
                if (":" in sock.local[0]) == v6:
                    return self._udp_flow_for(sock, remote, busy)
            return None
        server_name = getattr(target, "server_name", None) or target.address
        flow = self._outbound.get(_outbound_key(target, transport, server_name, identity))
        return flow if flow is not None and not flow.closed else None

    async def _open(self, key, remote, transport, server_name, identity) -> Flow:
        # connections being opened count too (this one is among them)
        if self.connections + len(self._connecting) > self.settings.max_connections:
            raise TransportError(f"connection limit ({self.settings.max_connections}) reached")
        loop = asyncio.get_running_loop()
        context = self._client_context(identity) if transport == "tls" else None
        tls_args = {}
        if context is not None:
            tls_args = {"ssl": context, "server_hostname": server_name,
                        "ssl_handshake_timeout": self.settings.connect_timeout}
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, transport, key, server_name),
                                       remote[0], remote[1], **tls_args),
                self.settings.connect_timeout)
        except asyncio.TimeoutError:
            raise TransportError(f"{transport} connect to {remote} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"{transport} connect to {remote}: {exc}") from exc
        return conn.flow

    def _udp_flow_for(self, sock: _UdpSocket, remote: tuple, busy: bool = False) -> Flow:
        """The flow to `remote` through `sock` (`busy`: see `connect`)."""
        key = ("udp", sock.local, remote)
        flow = self._by_remote.get(key)
        if busy:
            sock.pin(remote)  # (the socket remembers the peers it pinned)
        if flow is None or flow.closed:
            flow = Flow(self, "udp", sock.local, remote, key=key, outbound=False,
                        connection=sock, keepalive_interval=self.settings.keepalive_interval,
                        pong_timeout=self.settings.pong_timeout,
                        idle_timeout=self.settings.idle_timeout)
            self._by_remote[key] = flow
        return flow

    # -- what the connections and sockets report ---------------------------------------

    def _connection_made(self, conn: _Connection, transport) -> Flow | None:
        local = transport.get_extra_info("sockname")[:2]
        remote = transport.get_extra_info("peername")[:2]
        outbound = conn.outbound_key is not None
        if not outbound and self.connections >= self.settings.max_connections:
            log.warning("connection limit (%d) reached: refusing %s from %s",
                        self.settings.max_connections, conn.name, remote)
            transport.abort()
            return None
        key = conn.outbound_key or (conn.name, local, remote)
        flow = Flow(self, conn.name, local, remote, key=key, outbound=outbound,
                    server_name=conn.server_name, connection=transport,
                    keepalive_interval=self.settings.keepalive_interval,
                    pong_timeout=self.settings.pong_timeout,
                    idle_timeout=self.settings.idle_timeout)
        self.connections += 1
        if outbound:
            self._outbound[key] = flow
        self._by_remote[(conn.name, local, remote)] = flow
        log.debug("%r open", flow)
        return flow

    def _datagram(self, sock: _UdpSocket, data: bytes, remote: tuple) -> None:
        # a CRLF keepalive from a NAT-minded peer: nothing to answer on UDP (looked for
        # only when the datagram starts like one: stripping copies the whole datagram)
        if not data or (data[0] in (10, 13) and not data.strip(b"\r\n")):
            return
        if self._absorb is not None and not trace.isEnabledFor(logging.DEBUG):
            method = self._absorb(data)
            if method is not None:  # an ACK or retransmission its transaction took
                self._udp_flow_for(sock, remote).touch()
                metrics.sip_request("in", "udp", method)
                return
        try:
            message = self._parse(parsing.parse_message, data)
        except ParseError as exc:
            metrics.sip_parse_error("udp")
            reply = error_reply(exc)
            log.info("unparsable datagram from %s: %s (%s)", remote, exc,
                     "answered" if reply else "dropped")
            if reply is not None and sock.transport is not None:
                sock.transport.sendto(reply, remote)
                metrics.sip_sent("udp", reply)
            return
        flow = self._udp_flow_for(sock, remote)
        flow.touch()
        self._deliver(message, flow)

    def _parse(self, parse, data: bytes):
        """`parse(data)`, timed on every 16th read (two clock reads on each would cost
        more than the figure is worth)."""
        self._reads += 1
        if self._reads & 15:
            return parse(data)
        started = time.perf_counter()
        result = parse(data)
        metrics.sip_parsed(time.perf_counter() - started, len(result) if isinstance(result, list) else 1)
        return result

    def _deliver(self, message: Any, flow: Flow) -> None:
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("recv %s\n%s", flow, redacted(message))
        try:
            if isinstance(message, Request):
                metrics.sip_request("in", flow.transport, message.method)
                stamp_via(message, flow.remote)
            else:
                metrics.sip_response("in", flow.transport, message.status)
                observe_via(message, flow)
            self.user.message_received(message, flow)
        except ParseError as exc:  # a field parsed lazily (Via, CSeq...) was malformed
            reply = None
            if isinstance(message, Request):
                exc.raw = exc.raw or message.encode()
                reply = error_reply(exc)
            log.info("malformed message from %r: %s (%s)", flow, exc,
                     "answered" if reply else "dropped")
            if reply is not None:
                self._write(flow, reply)
                metrics.sip_sent(flow.transport, reply)
        except Exception:  # noqa: BLE001 - one bad message must not take the flow down
            log.exception("handling a message from %r failed", flow)

    def _write(self, flow: Flow, data: bytes) -> None:
        conn = flow.connection
        if flow.transport == "udp":
            if len(data) > MAX_DATAGRAM:
                # RFC 3261 18.1.1: such a request belongs on TCP; the TU picks the flow
                raise TransportError(f"{len(data)} bytes do not fit in a UDP datagram")
            conn.transport.sendto(data, flow.remote)
            return
        if conn.is_closing():
            raise TransportError(f"{flow!r}: connection is closing")
        conn.write(data)
        if conn.get_write_buffer_size() > self.settings.max_write_buffer:
            error = TransportError(f"{flow!r}: peer does not read (write buffer full)")
            flow.fail(error)
            raise error

    def _forget(self, flow: Flow) -> None:
        if self._by_remote.get(_remote_key(flow)) is flow:
            del self._by_remote[_remote_key(flow)]
        if flow.outbound and self._outbound.get(flow.key) is flow:
            del self._outbound[flow.key]
        if flow.reliable:
            self.connections -= 1

    def _flow_failed(self, flow: Flow, reason: Exception) -> None:
        self._forget(flow)
        try:
            self.user.flow_failed(flow, reason)
        except Exception:  # noqa: BLE001
            log.exception("flow_failed handler for %r failed", flow)

    def _flow_idle(self, flow: Flow) -> None:
        self._forget(flow)

    # -- TLS contexts ---------------------------------------------------------------------

    def _client_context(self, identity: TlsIdentity | None) -> ssl.SSLContext:
        cache_key = ("client", identity)
        context = self._ssl_contexts.get(cache_key)
        if context is None:
            settings = self.settings
            try:
                context = ssl.create_default_context(cafile=settings.tls_ca_file)
                if not settings.tls_verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                if identity is not None:
                    context.load_cert_chain(identity.cert_file, identity.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"TLS client settings: {exc}") from exc
            self._ssl_contexts[cache_key] = context
        return context

    def _server_context(self, identity: TlsIdentity) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=identity.ca_file)
            context.load_cert_chain(identity.cert_file, identity.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS listener certificate: {exc}") from exc
        context.verify_mode = (ssl.CERT_REQUIRED if identity.require_client_cert
                               else ssl.CERT_OPTIONAL if identity.ca_file else ssl.CERT_NONE)
        return context

    # -- responses (RFC 3261 18.2.2, RFC 3581) -------------------------------------------

    def response_flow(self, request: Any, flow: Flow) -> Flow:
        """Where the responses to `request` (received on `flow`) go: the same connection
        for TCP/TLS; over UDP the source address when the client asked for rport (RFC
        3581), else the source IP and the port of the Via's sent-by."""
        if flow.reliable:
            return flow
        via = request.top_via
        if via.has_rport:
            return flow
        port = via.port or 5060
        if port == flow.remote[1]:
            return flow
        return self._udp_flow_for(flow.connection, (flow.remote[0], port))

    def flows(self) -> list[Flow]:
        return [f for f in self._by_remote.values() if not f.closed]

    async def close(self) -> None:
        """Close every flow, listener and socket (graceful shutdown)."""
        for flow in list(self._by_remote.values()) + list(self._outbound.values()):
            flow.close()
        for server, _ in self._servers:
            server.close()
        for sock in self._udp:
            if sock.transport is not None:
                sock.transport.close()
        for server, _ in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()


def _outbound_key(target: Any, transport: str, server_name: str,
                  identity: TlsIdentity | None) -> tuple:
    """What shared outbound connections are keyed by (see `Flow`)."""
    tls = transport == "tls"
    return (target.address, int(target.port), transport, server_name if tls else None,
            identity.cert_file if identity and tls else None)


def _remote_key(flow: Flow) -> tuple:
    return (flow.transport, flow.local, flow.remote)


def stamp_via(request: Any, source: tuple) -> None:
    """RFC 3261 18.2.1 and RFC 3581: note on the top Via where the request really came
    from, so that responses find their way back through NATs.

    Only the top Via is parsed (and so checked): it is the one a server acts on; the
    others are copied as text into responses, and parsed only by whoever reads them
    (the whole list cost a seventh of an incoming call's CPU)."""
    via = request.top_via
    if via is None:
        raise bad("missing Via")
    if via.has_rport:  # the client asked: tell it its source address and port
        via.params["received"] = source[0]
        via.params["rport"] = str(source[1])
    elif _host_differs(via.host, source[0]):
        via.params["received"] = source[0]
    else:
        return
    # the wire form comes from the header fields: rewrite the Via list, top one changed
    rest = request.headers.get_all("Via")[1:]
    request.headers.set("Via", ", ".join([str(via)] + rest))
    request.headers._cache["top_via"] = via  # what the text now says; spares a parse


_RECEIVED = re.compile(r";\s*received\s*=\s*([^;,\s]+)", re.I)
_RPORT = re.compile(r";\s*rport\s*=\s*(\d{1,5})\b", re.I)


def observe_via(response: Any, flow: Flow) -> None:
    """Remember how the peer saw us (the received/rport it put on our Via).

    Read from the top Via's raw text: this runs for every response, and a full Via parse
    (every Via of the list) cost more than the rest of the response's handling."""
    raw = response.headers.get("Via")
    if raw is not None:
        observe_top_via(raw.split(",", 1)[0], flow)


def observe_top_via(top: str, flow: Flow) -> None:
    """`observe_via` from the top Via's text (for readers that have only that)."""
    received = _RECEIVED.search(top)
    if received is None:
        return
    rport = _RPORT.search(top)
    port = int(rport.group(1)) if rport else flow.local[1]
    if port > 65535:
        return
    flow.observed = (received.group(1).strip('"[]'), port)


def _host_differs(host: str, address: str) -> bool:
    if host == address:  # the usual case, without parsing two addresses per request
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")) != ipaddress.ip_address(address)
    except ValueError:
        return True  # a name in sent-by: always add received
