"""The transport layer on the wire: against a real Kamailio over UDP, TCP and TLS, and
against raw sockets for the server side (RFC 3581, limits, bad input)."""

import asyncio
import os
import socket
import time

import pytest
import trustme

from gateway import metrics
from gateway.errors import TransportError
from gateway.sip.dns import Target
from gateway.sip.parsing import parse_message
from gateway.sip.transaction import build_response
from gateway.sip.flow import redact
from gateway.sip.transport import BATCHED_UDP, TlsIdentity, TransportSettings
from tests.support.relay import TcpRelay

pytestmark = pytest.mark.kamailio


async def wait_until(predicate, timeout=3.0, step=0.01):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def target(kamailio, transport, name="kamailio.test"):
    return Target("127.0.0.1", kamailio.port(transport), transport, name)


class UdpPeer(asyncio.DatagramProtocol):
    """A raw UDP socket for tests: keeps what it receives."""

    def __init__(self):
        self.received = asyncio.Queue()
        self.transport = None

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    @classmethod
    async def open(cls):
        peer = cls()
        peer.transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: peer, local_addr=("127.0.0.1", 0))
        peer.port = peer.transport.get_extra_info("sockname")[1]
        return peer


def raw_options(via: str, branch="z9hG4bKraw1") -> bytes:
    return (f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: {via};branch={branch}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:raw@test>;tag=r\r\nTo: <sip:gw@127.0.0.1>\r\n"
            f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def answer_200(request, tx):
    tx.respond(build_response(request, 200, "OK"))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_options_gets_200(kamailio, make_stack, transport):
    stack = make_stack(TransportSettings(tls_ca_file=str(kamailio.ca_file)))
    await stack.transport.listen("udp", "127.0.0.1")
    flow = await stack.transport.connect(target(kamailio, transport))
    assert flow.transport == transport and flow.reliable == (transport != "udp")
    response = await stack.transactions.send(
        stack.request("OPTIONS", flow, "sip:kamailio.test"), flow)
    assert response.status == 200
    # RFC 3581: Kamailio told us the address it saw
    assert flow.observed == ("127.0.0.1", flow.local[1])


async def test_connections_are_shared_per_peer_and_server_name(kamailio, make_stack):
    stack = make_stack(TransportSettings(tls_ca_file=str(kamailio.ca_file)))
    flows = await asyncio.gather(*(stack.transport.connect(target(kamailio, "tcp"))
                                   for _ in range(5)))
    assert all(f is flows[0] for f in flows) and stack.transport.connections == 1
    tls_a = await stack.transport.connect(target(kamailio, "tls", "kamailio.test"))
    tls_b = await stack.transport.connect(target(kamailio, "tls", "localhost"))
    assert tls_a is not tls_b and tls_a.server_name == "kamailio.test"
    assert await stack.transport.connect(target(kamailio, "tls", "localhost")) is tls_b
    assert stack.transport.connections == 3


async def test_tls_verifies_the_server_by_default(kamailio, make_stack):
    stack = make_stack()  # the system's CAs do not know the test CA
    with pytest.raises(TransportError, match="(?i)certificate"):
        await stack.transport.connect(target(kamailio, "tls"))
    stack = make_stack(TransportSettings(tls_ca_file=str(kamailio.ca_file)))
    with pytest.raises(TransportError):  # a name the certificate does not carry
        await stack.transport.connect(target(kamailio, "tls", "other.test"))
    stack = make_stack(TransportSettings(tls_verify=False))
    flow = await stack.transport.connect(target(kamailio, "tls", "other.test"))
    assert not flow.closed and stack.transport.connections == 1


async def test_tls_server_and_client_certificate(tmp_path, make_stack):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert = ca.issue_cert("gw.test")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_cert = ca.issue_cert("registrar-client.test")
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))

    server = make_stack()
    server.user.on_request = answer_200
    host, port = await server.transport.listen(
        "tls", "127.0.0.1", tls=TlsIdentity(str(tmp_path / "server.pem"), ca_file=str(ca_file),
                                            require_client_cert=True))
    client = make_stack(TransportSettings(tls_ca_file=str(ca_file)))
    there = Target(host, port, "tls", "gw.test")
    flow = await client.transport.connect(there, TlsIdentity(str(tmp_path / "client.pem")))
    response = await client.transactions.send(client.request("OPTIONS", flow, "sip:gw.test"), flow)
    assert response.status == 200 and len(server.user.requests) == 1

    # without a client certificate the server refuses us: no answer ever comes
    anonymous = make_stack(TransportSettings(tls_ca_file=str(ca_file)))
    with pytest.raises(TransportError):
        flow = await anonymous.transport.connect(there)
        await anonymous.transactions.send(anonymous.request("OPTIONS", flow, "sip:gw.test"), flow)
    assert len(server.user.requests) == 1


@pytest.mark.parametrize("how", ["freeze", "cut"])
async def test_killed_tcp_connection_is_detected_within_two_intervals(kamailio, make_stack, how):
    interval = 0.4
    relay = await TcpRelay(("127.0.0.1", kamailio.tcp_port)).start()
    try:
        stack = make_stack(TransportSettings(keepalive_interval=interval))
        flow = (await stack.transport.connect(Target("127.0.0.1", relay.port, "tcp", "k"))).acquire()
        response = await stack.transactions.send(
            stack.request("OPTIONS", flow, "sip:kamailio.test"), flow)
        assert response.status == 200
        await asyncio.sleep(2.5 * interval)  # pings are answered: the flow stays up
        assert not stack.user.failed and not flow.closed
        killed = time.monotonic()
        if how == "freeze":
            relay.freeze()
            # a request caught on the dead flow fails with it, long before timer F
            pending = stack.transactions.request(
                stack.request("OPTIONS", flow, "sip:kamailio.test"), flow)
        else:
            relay.cut()
        assert await wait_until(lambda: stack.user.failed, timeout=4 * interval)
        detected = time.monotonic() - killed
        assert detected < 2 * interval, detected
        assert stack.user.failed[0][0] is flow and flow.closed
        if how == "freeze":
            with pytest.raises(TransportError):
                await pending.final
        assert stack.transport.connections == 0
        # the next connect opens a new connection instead of reusing the dead one
        relay.frozen = False
        again = await stack.transport.connect(Target("127.0.0.1", relay.port, "tcp", "k"))
        assert again is not flow and not again.closed
    finally:
        await relay.close()


async def test_idle_connections_close_and_held_ones_stay(kamailio, make_stack):
    stack = make_stack(TransportSettings(idle_timeout=0.3, keepalive_interval=0.2,
                                         tls_ca_file=str(kamailio.ca_file)))
    idle = await stack.transport.connect(target(kamailio, "tcp"))
    held = (await stack.transport.connect(target(kamailio, "tls"))).acquire()
    assert await wait_until(lambda: idle.closed, timeout=1.5)
    await asyncio.sleep(0.5)
    assert not held.closed and stack.transport.connections == 1 and not stack.user.failed
    held.release()
    assert await wait_until(lambda: held.closed, timeout=1.5)
    assert stack.transport.connections == 0


async def test_rport_and_received_on_requests_we_get(make_stack):
    stack = make_stack()
    stack.user.on_request = answer_200
    _, port = await stack.transport.listen("udp", "127.0.0.1")
    peer = await UdpPeer.open()
    try:
        # rport asked: the answer goes to the source port, with received and rport filled
        peer.transport.sendto(raw_options("SIP/2.0/UDP 192.0.2.7:5099;rport"),
                              ("127.0.0.1", port))
        data, _ = await asyncio.wait_for(peer.received.get(), 2)
        via = parse_message(data).via[0]
        assert (via.received, via.rport, via.host) == ("127.0.0.1", peer.port, "192.0.2.7")
        # no rport: received only, and the answer goes to the sent-by port (ours here)
        peer.transport.sendto(raw_options(f"SIP/2.0/UDP localhost:{peer.port}", "z9hG4bKraw2"),
                              ("127.0.0.1", port))
        data, _ = await asyncio.wait_for(peer.received.get(), 2)
        via = parse_message(data).via[0]
        assert (via.received, via.has_rport) == ("127.0.0.1", False)
    finally:
        peer.transport.close()


def _rmem(name: str) -> int:
    with open(f"/proc/sys/net/core/{name}") as f:
        return int(f.read())


async def test_a_burst_while_the_loop_is_busy_loses_no_datagram(make_stack):
    """1,000 requests arrive while the loop is busy (a collector pass, a slow callback):
    the socket's enlarged receive buffer holds them all; the default one holds a few
    hundred and the kernel drops the rest."""
    from gateway.sip.transport import UDP_RECEIVE_BUFFER
    if _rmem("rmem_max") < UDP_RECEIVE_BUFFER:
        pytest.skip("net.core.rmem_max caps receive buffers below what the gateway asks")
    stack = make_stack()
    seen = set()
    stack.user.on_request = lambda request, tx: seen.add(request.call_id)
    _, port = await stack.transport.listen("udp", "127.0.0.1")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in range(1000):  # the loop does not run meanwhile: they queue in the socket
            sender.sendto(raw_options("SIP/2.0/UDP 127.0.0.1:9;rport", f"z9hG4bKburst{n}"),
                          ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while len(seen) < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        sender.close()
    assert len(seen) == 1000


async def test_udp_crlf_keepalives_are_absorbed_and_leading_crlfs_allowed(make_stack):
    stack = make_stack()
    stack.user.on_request = answer_200
    _, port = await stack.transport.listen("udp", "127.0.0.1")
    peer = await UdpPeer.open()
    errors = metrics.SIP_PARSE_ERRORS.total()
    try:
        for keepalive in (b"\r\n\r\n", b"\r\n", b"\n\r\n", b""):
            peer.transport.sendto(keepalive, ("127.0.0.1", port))
        # CRLFs before a start line are allowed (RFC 3261 7.5): this one is answered
        peer.transport.sendto(b"\r\n" + raw_options("SIP/2.0/UDP 127.0.0.1:1;rport"),
                              ("127.0.0.1", port))
        data, _ = await asyncio.wait_for(peer.received.get(), 2)
        assert data.startswith(b"SIP/2.0 200")
        await asyncio.sleep(0.05)
        assert peer.received.empty()  # nothing answered the keepalives
        assert metrics.SIP_PARSE_ERRORS.total() == errors
    finally:
        peer.transport.close()


async def test_bad_input_is_dropped_and_the_stream_closed(make_stack):
    stack = make_stack()
    stack.user.on_request = answer_200
    _, udp_port = await stack.transport.listen("udp", "127.0.0.1")
    _, tcp_port = await stack.transport.listen("tcp", "127.0.0.1")
    peer = await UdpPeer.open()
    try:
        peer.transport.sendto(b"\x00\xffnot sip at all\r\n\r\n", ("127.0.0.1", udp_port))
        peer.transport.sendto(raw_options("SIP/2.0/UDP 127.0.0.1:1;rport"), ("127.0.0.1", udp_port))
        data, _ = await asyncio.wait_for(peer.received.get(), 2)
        assert data.startswith(b"SIP/2.0 200")
    finally:
        peer.transport.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    writer.write(b"\r\n\r\n")  # an RFC 5626 ping gets its pong
    assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    # a good request and garbage in one read: the request is answered, then we close
    writer.write(raw_options("SIP/2.0/TCP 127.0.0.1:1", "z9hG4bKtcp1")
                 + b"GARBAGE \x01\x02 nonsense\r\nNo-Colon-Here\r\n\r\n")
    rest = await asyncio.wait_for(reader.read(), 2)  # read() ends: we closed the stream
    assert rest.startswith(b"SIP/2.0 200 OK\r\n")
    writer.close()
    assert await wait_until(lambda: stack.transport.connections == 0)


@pytest.mark.parametrize("stage, good, broken", [
    ("framing", b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"),  # the parser refuses it
    ("lazy", b"127.0.0.1:1", b"127.0.0.1:99999"),  # the Via's port, read by the transactions
])
async def test_malformed_requests_get_a_400_when_they_can_be_addressed(make_stack, stage, good, broken):
    stack = make_stack()
    stack.user.on_request = answer_200
    _, udp_port = await stack.transport.listen("udp", "127.0.0.1")
    _, tcp_port = await stack.transport.listen("tcp", "127.0.0.1")
    request = raw_options("SIP/2.0/UDP 127.0.0.1:1;rport", "z9hG4bKbad1")
    bad = request.replace(good, broken, 1)
    assert bad != request
    peer = await UdpPeer.open()
    try:
        peer.transport.sendto(bad, ("127.0.0.1", udp_port))
        data, _ = await asyncio.wait_for(peer.received.get(), 2)
    finally:
        peer.transport.close()
    head = data.split(b"\r\n")
    assert head[0].startswith(b"SIP/2.0 400 Bad Request (malformed")
    assert any(line.startswith(b"Via: ") and b"z9hG4bKbad1" in line for line in head)
    assert b"Call-ID: z9hG4bKbad1" in head

    if stage == "framing":  # a stream that cannot be framed is answered, then closed
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        writer.write(bad.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        rest = await asyncio.wait_for(reader.read(), 2)
        assert rest.startswith(b"SIP/2.0 400 Bad Request")
        writer.close()


async def test_connection_limit(kamailio, make_stack):
    stack = make_stack(TransportSettings(max_connections=1))
    _, port = await stack.transport.listen("tcp", "127.0.0.1")
    first = await asyncio.open_connection("127.0.0.1", port)
    assert await wait_until(lambda: stack.transport.connections == 1)
    second = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(second[0].read(), 2) == b""  # refused at once
    first[1].write(b"\r\n\r\n")
    assert await asyncio.wait_for(first[0].readexactly(2), 2) == b"\r\n"
    with pytest.raises(TransportError, match="limit"):
        await stack.transport.connect(target(kamailio, "tcp"))
    for _, writer in (first, second):
        writer.close()


async def test_closed_flow_refuses_to_send(kamailio, make_stack):
    stack = make_stack()
    flow = await stack.transport.connect(target(kamailio, "tcp"))
    flow.close()
    with pytest.raises(TransportError):
        flow.send(b"OPTIONS")
    with pytest.raises(TransportError):
        flow.acquire()
    with pytest.raises(TransportError):
        await stack.transport.connect(Target("127.0.0.1", 1, "tcp", "x"))  # refused
    with pytest.raises(TransportError):
        await stack.transport.connect(Target("127.0.0.1", 1, "sctp", "x"))


async def test_udp_keepalives_run_while_held(make_stack):
    stack = make_stack(TransportSettings(keepalive_interval=0.1))
    peer = await UdpPeer.open()
    try:
        flow = await stack.transport.connect(Target("127.0.0.1", peer.port, "udp", "p"))
        assert stack.transport.local_address("udp") == flow.local
        assert stack.transport.local_address("tcp") is None
        flow.acquire()
        await asyncio.sleep(0.35)
        flow.release()
        pings = peer.received.qsize()
        assert pings >= 3
        assert all(peer.received.get_nowait()[0] == b"\r\n\r\n" for _ in range(pings))
        await asyncio.sleep(0.25)
        assert peer.received.empty() and not stack.user.failed  # UDP expects no pong
        with pytest.raises(TransportError, match="UDP datagram"):
            flow.send(b"x" * 70_000)
    finally:
        peer.transport.close()


def open_sockets() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
               for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.skipif(not BATCHED_UDP, reason="uvloop's datagram transport pins no peer")
async def test_a_busy_udp_peer_gets_a_connected_socket_of_its_own(make_stack):
    """`connect(..., busy=True)` (the registration client's) gives the peer a socket
    connected to it on the listening port, once; a plain `connect` (a call's next hop)
    does not. Either way the peer sees one source address and its answers come back."""
    stack = make_stack()
    registrar, other = await UdpPeer.open(), await UdpPeer.open()
    try:
        await stack.transport.listen("udp", "127.0.0.1")
        before = open_sockets()
        busy = await stack.transport.connect(Target("127.0.0.1", registrar.port, "udp", "r"),
                                             busy=True)
        assert open_sockets() == before + 1
        assert await stack.transport.connect(Target("127.0.0.1", registrar.port, "udp", "r"),
                                             busy=True) is busy
        plain = await stack.transport.connect(Target("127.0.0.1", other.port, "udp", "o"))
        assert open_sockets() == before + 1
        for n, (flow, peer) in enumerate(((busy, registrar), (plain, other))):
            flow.send(raw_options(f"SIP/2.0/UDP 127.0.0.1:{flow.local[1]}"))
            data, source = await asyncio.wait_for(peer.received.get(), 2)
            assert source == flow.local and data.startswith(b"OPTIONS")
            peer.transport.sendto(raw_options(f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
                                              branch=f"z9hG4bKback{n}"), flow.local)
            for _ in range(200):
                if len(stack.user.requests) > n:
                    break
                await asyncio.sleep(0.01)
            request, _ = stack.user.requests[n]
            assert request.call_id == f"z9hG4bKback{n}"
    finally:
        registrar.transport.close()
        other.transport.close()


SECRET_REGISTER = (b"REGISTER sip:example.test SIP/2.0\r\n"
                   b"Via: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKsecret;rport\r\n"
                   b"From: <sip:a@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\n"
                   b"Call-ID: c1\r\nCSeq: 2 REGISTER\r\n"
                   b'Authorization: Digest username="a", response="0123456789abcdef"\r\n'
                   b'proxy-authorization: Digest response="fedcba9876543210"\r\n'
                   b"Content-Length: 0\r\n\r\n")


def test_redact_removes_credentials():
    text = redact(SECRET_REGISTER)
    assert "0123456789abcdef" not in text and "fedcba9876543210" not in text
    assert "Authorization: <redacted>" in text and "CSeq: 2 REGISTER" in text


async def test_sip_trace_never_logs_credentials(make_stack, caplog):
    stack = make_stack()
    _, port = await stack.transport.listen("udp", "127.0.0.1")
    peer = await UdpPeer.open()
    try:
        with caplog.at_level("DEBUG", logger="gateway.sip.trace"):
            flow = await stack.transport.connect(Target("127.0.0.1", peer.port, "udp", "p"))
            flow.send(SECRET_REGISTER)  # outgoing
            peer.transport.sendto(SECRET_REGISTER, ("127.0.0.1", port))  # incoming
            assert await wait_until(lambda: stack.user.requests)
    finally:
        peer.transport.close()
    assert "send" in caplog.text and "recv" in caplog.text and "REGISTER" in caplog.text
    assert "0123456789abcdef" not in caplog.text and "fedcba9876543210" not in caplog.text


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_ipv6_loopback(make_stack, transport):
    server = make_stack()
    server.user.on_request = answer_200
    host, port = await server.transport.listen(transport, "::1")
    client = make_stack()  # client only: UDP gets an ephemeral wildcard socket
    flow = await client.transport.connect(Target(host, port, transport, "::1"))
    assert flow.sent_by[0] == "::1"
    response = await client.transactions.send(client.request("OPTIONS", flow, "sip:[::1]"), flow)
    assert response.status == 200
    request = server.user.requests[0][0]
    via = request.via[0]
    assert (via.host, via.received, via.rport) == ("[::1]", "::1", flow.local[1])


async def test_client_only_udp_uses_a_routable_sent_by(kamailio, make_stack):
    stack = make_stack()  # no listen(): the wildcard socket
    flow = await stack.transport.connect(target(kamailio, "udp"))
    assert flow.local[0] == "0.0.0.0" and flow.sent_by == ("127.0.0.1", flow.local[1])
    response = await stack.transactions.send(
        stack.request("OPTIONS", flow, "sip:kamailio.test"), flow)
    assert response.status == 200
