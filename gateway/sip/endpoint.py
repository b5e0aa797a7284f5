"""One SIP face of the gateway as a whole: transport, transactions and DNS, wired together.

    face = SipEndpoint(wheel, transport_settings, timer_settings, dns_settings)
    await face.listen("udp", "0.0.0.0", 5060)
    face.on_flow_failed(callback)        # callback(flow, reason), e.g. re-register
    face.on_request = handler            # handler(request, server_transaction)
    face.on_ack = handler                # handler(ack, flow): an ACK of a 2xx (no transaction)

It is the transaction layer's user: OPTIONS to the face are answered 200 here (peers use
them as keepalives); other requests go to `on_request`, or get 480 while nothing that
takes them is wired in. Responses nobody waits for are dropped.

Depends on the transport, transaction and DNS modules; knows nothing of registrations,
instances or calls, which use it from above.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from gateway.errors import TransportError
from gateway.sip.dns import DnsSettings, Resolver
from gateway.sip.transaction import TimerSettings, TransactionLayer, build_response
from gateway.sip.transport import TlsIdentity, TransportLayer, TransportSettings

log = logging.getLogger(__name__)


class SipEndpoint:
    def __init__(self, wheel: Any, transport: TransportSettings | None = None,
                 timers: TimerSettings | None = None, dns: DnsSettings | None = None, *,
                 user_agent: str = "sip-push-gateway", resolver: Resolver | None = None):
        self.wheel = wheel
        self.user_agent = user_agent
        self.transactions = TransactionLayer(self, wheel, timers or TimerSettings())
        self.transport = TransportLayer(self.transactions, wheel,
                                        transport or TransportSettings())
        self.resolver = resolver or Resolver(dns or DnsSettings())
        self.on_request: Callable[[Any, Any], None] | None = None
        self.on_ack: Callable[[Any, Any], None] | None = None
        self._flow_failed: list[Callable[[Any, Exception], None]] = []

    async def listen(self, transport: str, host: str, port: int = 0,
                     tls: TlsIdentity | None = None) -> tuple:
        return await self.transport.listen(transport, host, port, tls)

    def on_flow_failed(self, callback: Callable[[Any, Exception], None]) -> None:
        self._flow_failed.append(callback)

    async def close(self) -> None:
        await self.transport.close()

    # -- TransactionUser ------------------------------------------------------------------

    def request_received(self, request: Any, transaction: Any) -> None:
        if request.method == "OPTIONS" and self.on_request is None:
            self._answer(transaction, 200, "OK")
        elif self.on_request is not None:
            self.on_request(request, transaction)
        elif request.method != "ACK":
            self._answer(transaction, 480, "Temporarily Unavailable")

    def _answer(self, transaction: Any, status: int, reason: str) -> None:
        if transaction.request is None:  # answered finally already: only bytes are kept
            log.info("%s already answered, not with %d", transaction.method, status)
            return
        response = build_response(transaction.request, status, reason)
        if response.to_tag is None and status > 100:
            response.headers.set("To", f"{transaction.request.get('To')};tag=gw{id(self):x}")
        response.headers.add("Server", self.user_agent)
        try:
            transaction.respond(response)
        except TransportError as exc:
            log.info("could not answer %s: %s", transaction.method, exc)

    def ack_received(self, ack: Any, flow: Any) -> None:
        if self.on_ack is not None:
            self.on_ack(ack, flow)

    def response_received(self, response: Any, flow: Any) -> None:
        pass  # a late retransmission of a final response: its transaction is gone

    def flow_failed(self, flow: Any, reason: Exception) -> None:
        for callback in list(self._flow_failed):
            try:
                callback(flow, reason)
            except Exception:  # noqa: BLE001 - one listener's bug must not hide the flow loss
                log.exception("flow_failed listener failed")
