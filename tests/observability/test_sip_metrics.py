"""The SIP core counts its failures: a transaction ended by timer F, a flow failed by a
missing keepalive pong, an unparsable datagram. Real sockets on loopback, short timers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway import metrics
from gateway.errors import TransactionTimeout, TransportError
from gateway.sip.dns import Target
from gateway.sip.transaction import TimerSettings
from gateway.sip.transport import TransportSettings


async def test_timer_f_counts_a_client_timeout(make_stack):
    stack = make_stack(timer_settings=TimerSettings(t1=0.01, t2=0.04, t4=0.05))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # receives, never answers
        silent.bind(("127.0.0.1", 0))
        flow = await stack.transport.connect(Target("127.0.0.1", silent.getsockname()[1], "udp", "x"))
        before = metrics.TRANSACTION_TIMEOUTS.values[("client", "OPTIONS")]
        sent = metrics.SIP_REQUESTS.values[("out", "udp", "OPTIONS")]
        tx = stack.transactions.request(stack.request("OPTIONS", flow, "sip:silent.test"), flow)
        with pytest.raises(TransactionTimeout):
            await asyncio.wait_for(tx.final, 5)
    assert metrics.TRANSACTION_TIMEOUTS.values[("client", "OPTIONS")] - before == 1
    # the first send and every retransmission (timer E) went out
    assert metrics.SIP_REQUESTS.values[("out", "udp", "OPTIONS")] - sent == 1 + tx.retransmissions


async def test_missing_pong_counts_a_keepalive_failure(make_stack):
    async def mute(reader, writer):  # reads everything, answers nothing
        while await reader.read(1024):
            pass

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    try:
        stack = make_stack(TransportSettings(keepalive_interval=0.2, pong_timeout=0.05))
        port = server.sockets[0].getsockname()[1]
        before = metrics.KEEPALIVE_FAILURES.values[("tcp",)]
        opened = metrics.FLOWS_OPENED.values[("tcp",)]
        closed = metrics.FLOWS_CLOSED.values[("tcp",)]
        flow = await stack.transport.connect(Target("127.0.0.1", port, "tcp", "mute.test"))
        flow.acquire()
        for _ in range(100):
            if flow.closed:
                break
            await asyncio.sleep(0.02)
        assert flow.closed and stack.user.failed and isinstance(stack.user.failed[0][1], TransportError)
        assert metrics.KEEPALIVE_FAILURES.values[("tcp",)] - before == 1
        assert metrics.FLOWS_OPENED.values[("tcp",)] - opened == 1
        assert metrics.FLOWS_CLOSED.values[("tcp",)] - closed == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_an_unparsable_datagram_is_counted(make_stack):
    stack = make_stack()
    _, port = await stack.transport.listen("udp", "127.0.0.1")
    before = metrics.SIP_PARSE_ERRORS.values[("udp",)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"INVITE this is not SIP\r\n\r\n", ("127.0.0.1", port))
    for _ in range(100):
        if metrics.SIP_PARSE_ERRORS.values[("udp",)] != before:
            break
        await asyncio.sleep(0.01)
    assert metrics.SIP_PARSE_ERRORS.values[("udp",)] - before == 1
