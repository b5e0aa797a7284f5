"""Fixtures for the SIP transport, transaction and DNS tests: a real Kamailio (one per
module) and the gateway's own stack (transport + transactions on the timer wheel).

tests/sip/conftest.py imports them (fixtures and hooks must be seen there)."""

from __future__ import annotations


import pytest

from gateway.sip.message import Request
from gateway.sip.transaction import TimerSettings, TransactionLayer, new_branch
from gateway.sip.transport import TransportLayer, TransportSettings
from gateway.timers import TimerWheel
from tests.support.kamailio import Kamailio, need_kamailio


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory):
    need_kamailio()
    kam = Kamailio(tmp_path_factory.mktemp("kamailio")).start()
    yield kam
    kam.stop()


class Recorder:
    """The transaction user of the tests: keeps what comes up, answers nothing itself."""

    def __init__(self):
        self.requests, self.acks, self.strays, self.failed = [], [], [], []
        self.on_request = None

    def request_received(self, request, tx):
        self.requests.append((request, tx))
        if self.on_request is not None:
            self.on_request(request, tx)

    def ack_received(self, ack, flow):
        self.acks.append(ack)

    def response_received(self, response, flow):
        self.strays.append(response)

    def flow_failed(self, flow, reason):
        self.failed.append((flow, reason))


class Stack:
    """The gateway's SIP stack as the registration client will use it."""

    def __init__(self, transport_settings=None, timer_settings=None):
        self.wheel = TimerWheel()
        self.user = Recorder()
        self.transactions = TransactionLayer(self.user, self.wheel,
                                             timer_settings or TimerSettings())
        self.transport = TransportLayer(self.transactions, self.wheel,
                                        transport_settings or TransportSettings())

    def request(self, method, flow, uri, *, extra=(), cseq=1):
        """A request as a UAC sends it: Via from the flow's local address, with rport."""
        host, port = flow.sent_by
        host = f"[{host}]" if ":" in host else host
        branch = new_branch()
        headers = [("Via", f"SIP/2.0/{flow.transport.upper()} {host}:{port};branch={branch};rport"),
                   ("Max-Forwards", "70"), ("From", f"<sip:gw@{host}>;tag={branch[-8:]}"),
                   ("To", f"<{uri}>"), ("Call-ID", f"{branch}@gw"), ("CSeq", f"{cseq} {method}"),
                   *extra]
        return Request(method, uri, headers)

    async def close(self):
        await self.transport.close()
        self.wheel.close()


@pytest.fixture
async def make_stack():
    stacks = []

    def factory(transport_settings=None, timer_settings=None):
        stack = Stack(transport_settings, timer_settings)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        await stack.close()


def pytest_asyncio_loop_factories(config, item):
    """The transport tests run on uvloop (as the gateway does) and on stock asyncio (its
    selector loop: new_event_loop() would follow the uvloop policy), so
    nothing in the transport relies on one loop's quirks; the rest run on uvloop."""
    import asyncio

    import uvloop

    if item.module is not None and item.module.__name__.endswith("test_transport"):
        return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.SelectorEventLoop}
    return {"uvloop": uvloop.new_event_loop}
