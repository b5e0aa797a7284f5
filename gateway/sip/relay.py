"""The call relay: a held INVITE from the provider, proxied to the woken device, and the
dialog that follows, relayed both ways (RFC 3261 16, stateful proxy).

`Faces(provider, device, public_host)` knows the two SIP endpoints and how we name
ourselves on each (Via sent-by, Record-Route, which Route entries are ours).

`CallRelay(faces, tx, wheel, t1, t2, on_end)` owns one held INVITE (its server
transaction `tx` on the provider face):
- `start()`: 100 Trying, 180 Ringing with `X-Push-Status: Alerting-Device`, timer T1;
- `push_sent()`: a second 180 with `Push-Notification-Sent` (once, while still waiting);
- `device_ready(binding)`: the first call sends 180 `Device-Making-Progress` and swaps
  T1 for T2; the INVITE goes to the device's flow (our Via, both Record-Routes,
  Max-Forwards, Request-URI = the device's Contact). Later calls change nothing (unless
  the forwarded INVITE failed on the way, then it is sent again);
- responses from the device go upstream (provisional ones, the final one, 2xx
  retransmissions); a 2xx opens a `Dialog` in `Dialogs`;
- `cancel(request)`: 487 upstream, CANCEL (with the same Reason) to the device;
- T1/T2 running out: 480 with `X-Push-Reason: No-Response-From-Device`, CANCEL to the
  device.
`on_end(relay, outcome)` hears how it ended: answered, cancelled, answered_elsewhere
(CANCEL with `Reason: SIP;cause=200`), no_answer, rejected (the device's final non-2xx)
or failed (the provider's flow died).

`Dialogs` relays in-dialog requests (BYE, re-INVITE, UPDATE, INFO, REFER, NOTIFY...) and
ACKs both ways until a BYE ends the dialog (or `max_age` passes). A device's provisional
response with a To tag opens an early dialog there, so PRACK (100rel), UPDATE and INFO
before the answer cross the gateway too; it ends with the call unless the call is
answered.

Depends on the SIP layers below (message model, proxy rules, transactions, transport via
the endpoints) and a timer wheel; never on instances, push or the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from gateway.errors import PeerError, TransactionTimeout, TransportError
from gateway.sip import proxy
from gateway.sip.ids import random_hex
from gateway.sip.message import Response, SipUri
from gateway.sip.transaction import answer_head, build_cancel, build_response, encode_answer
from gateway.tasks import Background

log = logging.getLogger(__name__)

PROVIDER_USER = "gw-p"  # the user part of our Record-Route on the provider face
DEVICE_USER = "gw-d"    # ... and on the device face
_CAUSE_200 = re.compile(r"\bcause\s*=\s*200\b", re.I)


class Faces:
    def __init__(self, provider: Any, device: Any, public_host: str = ""):
        self.provider = provider
        self.device = device
        self.public_host = public_host

    def hostport(self, endpoint: Any, flow: Any) -> str:
        listening = endpoint.transport.local_address(flow.transport)
        port = listening[1] if listening else flow.sent_by[1]
        host = self.public_host or flow.sent_by[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def via(self, endpoint: Any, flow: Any) -> str:
        return f"SIP/2.0/{flow.transport.upper()} {self.hostport(endpoint, flow)};rport"

    def record_route(self, endpoint: Any, flow: Any) -> str:
        user = PROVIDER_USER if endpoint is self.provider else DEVICE_USER
        return f"<sip:{user}@{self.hostport(endpoint, flow)};transport={flow.transport};lr>"

    def contact(self, flow: Any) -> str:
        return f"<sip:{PROVIDER_USER}@{self.hostport(self.provider, flow)};transport={flow.transport}>"

    @staticmethod
    def ours(uri: SipUri) -> bool:
        return uri.user in (PROVIDER_USER, DEVICE_USER)

    async def flow_to(self, endpoint: Any, uri: SipUri) -> Any:
        """A flow towards a next hop (RFC 3263 targets, the first that connects)."""
        targets = await endpoint.resolver.resolve(uri.host, uri.port, uri.transport,
                                                  secure=uri.scheme == "sips")
        error: Exception = TransportError(f"no SIP target for {uri.host}")
        for target in targets:
            try:
                return await endpoint.transport.connect(target)
            except TransportError as exc:
                error = exc
        raise error


def _send_response(tx: Any, response: Response) -> None:
    try:
        tx.respond(response)
    except TransportError as exc:
        log.info("could not relay %s upstream: %s", response.status, exc)


class CallRelay:
    __slots__ = ("faces", "tx", "invite", "wheel", "t1", "t2", "on_end", "dialogs", "state",
                 "to_tag", "timer", "forwarded", "branch", "binding", "outcome", "base",
                 "instance_id", "push_id", "__weakref__")

    def __init__(self, faces: Faces, tx: Any, wheel: Any, t1: float, t2: float,
                 on_end: Callable[["CallRelay", str], None], dialogs: "Dialogs",
                 instance_id: str = ""):
        self.faces = faces
        self.tx = tx
        self.invite = tx.request
        self.wheel = wheel
        self.t1, self.t2 = t1, t2
        self.on_end = on_end
        self.dialogs = dialogs
        self.instance_id = instance_id
        self.push_id = random_hex(8)
        self.state = "waiting"  # -> progress -> answered | ended
        self.to_tag = "gw" + random_hex(6)
        self.timer = None
        self.forwarded = None  # the INVITE as sent to the device
        self.branch = None     # its client transaction
        self.binding = None
        self.outcome: str | None = None
        self.base: str | None = None  # the header lines every 180 and final answer shares
        tx.on_failure = self._upstream_failed

    @property
    def ringing(self) -> bool:
        return self.state in ("waiting", "progress")

    # -- towards the provider -------------------------------------------------------------

    def _answer(self, status: int, reason: str, *extra: tuple[str, str]) -> None:
        # A call answers its INVITE four or five times (100, 180s, then 487/480): the
        # fields they copy from the INVITE, To with our tag from the 180 on, are rendered
        # once, and each answer goes straight to bytes, no message object per answer.
        if status == 100:
            head = answer_head(self.invite, status)
        else:
            head = self.base
            if head is None:
                head = self.base = answer_head(self.invite, status, self.to_tag)
            if status < 300:
                extra = (("Contact", self.faces.contact(self.tx.flow)),) + extra
        wire = encode_answer(status, reason, head,
                             extra + (("Server", self.faces.provider.user_agent),))
        try:
            self.tx.respond_wire(status, wire)
        except TransportError as exc:
            log.info("could not answer %s upstream: %s", status, exc)

    def start(self) -> None:
        self._answer(100, "Trying")
        self._answer(180, "Ringing", ("X-Push-Status", "Alerting-Device"))
        self.timer = self.wheel.call_later(self.t1, _timed_out, self)

    def push_sent(self) -> None:
        if self.state == "waiting":
            self._answer(180, "Ringing", ("X-Push-Status", "Push-Notification-Sent"))

    def _end(self, outcome: str) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        # the provider's transaction may linger for 32 s absorbing retransmissions; once
        # the call stops ringing its failures mean nothing to us, and without this the
        # relay (and its INVITE) would live as long, in a cycle only the collector frees
        self.tx.on_failure = None
        if self.state != "answered":
            self.state = "ended"
            self.dialogs.end(self.invite.call_id)  # an early dialog ends with the call
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.on_end(self, outcome)
        except Exception:  # noqa: BLE001
            log.exception("call end listener failed")

    def _upstream_failed(self, reason: Exception) -> None:
        if self.ringing:
            self._cancel_branch(None)
            self._end("failed")

    # -- the device -----------------------------------------------------------------------

    def device_ready(self, binding: Any) -> None:
        if not self.ringing:
            return
        if self.state == "waiting":
            self.state = "progress"
            self._answer(180, "Ringing", ("X-Push-Status", "Device-Making-Progress"))
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.wheel.call_later(self.t2, _timed_out, self)
        elif self.branch is not None:
            return  # later REGISTERs change nothing while the INVITE is on its way
        self._forward(binding)

    def _forward(self, binding: Any) -> None:
        faces, flow = self.faces, binding.flow
        try:
            self.forwarded = proxy.forward(
                self.invite, via=faces.via(faces.device, flow), ours=faces.ours,
                record_route=[faces.record_route(faces.device, flow),
                              faces.record_route(faces.provider, self.tx.flow)],
                uri=binding.contact)
        except PeerError as exc:  # Max-Forwards ran out
            self._answer(exc.status, exc.reason)
            self._end("rejected")
            return
        self.binding = binding
        try:
            self.branch = faces.device.transactions.request(self.forwarded, flow,
                                                            on_response=self._device_response)
        except (TransportError, ValueError) as exc:
            log.info("could not forward the INVITE to the device: %s", exc)
            self.branch = None
            return
        self.branch.final.add_done_callback(self._branch_done)

    def _branch_done(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is None:
            return
        error = future.exception()
        log.info("INVITE to the device failed: %s", error)
        if isinstance(error, (TransportError, TransactionTimeout)) and self.ringing:
            self.branch = None  # a new REGISTER may try again until T2 runs out

    def _device_response(self, response: Response) -> None:
        status = response.status
        if status == 100:
            return
        relayed = proxy.strip_via(response)
        if status < 200:
            if self.ringing:
                if response.to_tag and self.dialogs.get(self.invite.call_id) is None:
                    # an early dialog (RFC 3261 12.1): PRACK, UPDATE, INFO cross it
                    self.dialogs.add(self.invite.call_id, self.binding.flow, self.instance_id)
                _send_response(self.tx, relayed)
        elif status < 300:
            if self.state == "answered":
                self._resend_2xx(relayed)  # a retransmission: the upstream UAC ACKs each
                return
            if not self.ringing:
                return  # cancelled or timed out meanwhile; the BYE is the UAC's business
            self.state = "answered"
            _send_response(self.tx, relayed)
            self.dialogs.add(self.invite.call_id, self.binding.flow, self.instance_id)
            self._end("answered")
        elif self.ringing:
            _send_response(self.tx, relayed)
            self._end("rejected")

    def _resend_2xx(self, response: Response) -> None:
        try:
            self.tx.flow.send(response.encode())
        except TransportError as exc:
            log.info("could not relay a 2xx retransmission: %s", exc)

    def _cancel_branch(self, reason: str | None) -> None:
        if self.branch is None or self.forwarded is None:
            return
        cancel = build_cancel(self.forwarded)
        if reason:
            cancel.headers.add("Reason", reason)
        try:
            self.faces.device.transactions.request(cancel, self.branch.flow)
        except (TransportError, ValueError) as exc:
            log.info("could not cancel the device's INVITE: %s", exc)

    # -- ends -----------------------------------------------------------------------------

    def cancel(self, request: Any) -> None:
        """A CANCEL from upstream (its 200 is the caller's to send)."""
        if not self.ringing:
            return
        reason = request.get("Reason")
        elsewhere = bool(reason and _CAUSE_200.search(reason))
        self._answer(487, "Request Terminated")
        self._cancel_branch(reason)
        self._end("answered_elsewhere" if elsewhere else "cancelled")

    def timed_out(self) -> None:
        self.timer = None
        if not self.ringing:
            return
        self._answer(480, "Temporarily Unavailable",
                     ("X-Push-Reason", "No-Response-From-Device"))
        self._cancel_branch(None)
        self._end("no_answer")

    def stop(self) -> None:
        """Gateway shutdown: the held call is refused rather than left ringing."""
        if self.ringing:
            self._answer(503, "Service Unavailable")
            self._cancel_branch(None)
            self._end("failed")


def _timed_out(relay: CallRelay) -> None:
    relay.timed_out()


class Dialog:
    __slots__ = ("call_id", "device_flow", "instance_id", "timer")

    def __init__(self, call_id: str, device_flow: Any, instance_id: str):
        self.call_id = call_id
        self.device_flow = device_flow
        self.instance_id = instance_id
        self.timer = None


class Dialogs:
    """Confirmed dialogs by Call-ID, and the relaying of what flows through them."""

    def __init__(self, faces: Faces, wheel: Any, max_age: float = 12 * 3600.0):
        self.faces = faces
        self.wheel = wheel
        self.max_age = max_age
        self.table: dict[str, Dialog] = {}
        self._tasks = Background(__name__)

    def add(self, call_id: str, device_flow: Any, instance_id: str) -> Dialog:
        dialog = Dialog(call_id, device_flow, instance_id)
        old = self.table.get(call_id)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        dialog.timer = self.wheel.call_later(self.max_age, self._expire, call_id)
        self.table[call_id] = dialog
        return dialog

    def get(self, call_id: str) -> Dialog | None:
        return self.table.get(call_id)

    def end(self, call_id: str) -> None:
        dialog = self.table.pop(call_id, None)
        if dialog is not None and dialog.timer is not None:
            dialog.timer.cancel()

    def _expire(self, call_id: str) -> None:
        log.info("dialog %s forgotten after %.0f s", call_id, self.max_age)
        self.table.pop(call_id, None)

    # -- requests -------------------------------------------------------------------------

    def from_provider(self, request: Any, tx: Any) -> bool:
        """An in-dialog request from upstream; False when no dialog of ours has it."""
        dialog = self.table.get(request.call_id)
        if dialog is None:
            return False
        faces, flow = self.faces, dialog.device_flow
        try:
            fwd = proxy.forward(request, via=faces.via(faces.device, flow), ours=faces.ours)
        except PeerError as exc:
            _reply(tx, exc.status, exc.reason)
            return True
        self._send(fwd, flow, faces.device, tx)
        return True

    def from_device(self, request: Any, tx: Any) -> bool:
        dialog = self.table.get(request.call_id)
        if dialog is None:
            return False
        self._tasks.spawn(self._upstream(request, tx))
        return True

    async def _upstream(self, request: Any, tx: Any) -> None:
        faces = self.faces
        try:
            probe = proxy.forward(request, via="SIP/2.0/UDP 0.0.0.0", ours=faces.ours)
            flow = await faces.flow_to(faces.provider, proxy.next_hop(probe))
            fwd = proxy.forward(request, via=faces.via(faces.provider, flow), ours=faces.ours)
        except PeerError as exc:
            _reply(tx, exc.status, exc.reason)
            return
        except TransportError as exc:
            log.info("in-dialog %s: next hop unreachable: %s", request.method, exc)
            _reply(tx, 503, "Service Unavailable")
            return
        self._send(fwd, flow, faces.provider, tx)

    def _send(self, fwd: Any, flow: Any, endpoint: Any, tx: Any) -> None:
        call_id, method = fwd.call_id, fwd.method

        def relay(response: Response) -> None:
            if response.status == 100:
                return
            relayed = proxy.strip_via(response)
            if tx.state in ("trying", "proceeding"):
                _send_response(tx, relayed)
            elif 200 <= response.status < 300 and method == "INVITE":
                try:
                    tx.flow.send(relayed.encode())
                except TransportError:
                    pass
            if method == "BYE" and response.status >= 200:
                self.end(call_id)

        try:
            client = endpoint.transactions.request(fwd, flow, on_response=relay)
        except (TransportError, ValueError) as exc:
            log.info("could not relay %s: %s", method, exc)
            _reply(tx, 503, "Service Unavailable")
            return

        def failed(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is not None:
                _reply(tx, 408, "Request Timeout")
                if method == "BYE":
                    self.end(call_id)

        client.final.add_done_callback(failed)

    # -- ACKs (of 2xx: no transaction) ----------------------------------------------------

    def ack_from_provider(self, ack: Any) -> None:
        dialog = self.table.get(ack.call_id)
        if dialog is None:
            return
        faces, flow = self.faces, dialog.device_flow
        try:
            flow.send(proxy.forward(ack, via=faces.via(faces.device, flow), ours=faces.ours).encode())
        except (PeerError, TransportError) as exc:
            log.info("could not relay an ACK to the device: %s", exc)

    def ack_from_device(self, ack: Any) -> None:
        if ack.call_id in self.table:
            self._tasks.spawn(self._ack_upstream(ack))

    async def _ack_upstream(self, ack: Any) -> None:
        faces = self.faces
        try:
            probe = proxy.forward(ack, via="SIP/2.0/UDP 0.0.0.0", ours=faces.ours)
            flow = await faces.flow_to(faces.provider, proxy.next_hop(probe))
            flow.send(proxy.forward(ack, via=faces.via(faces.provider, flow), ours=faces.ours).encode())
        except (PeerError, TransportError) as exc:
            log.info("could not relay an ACK upstream: %s", exc)

    async def close(self) -> None:
        for dialog in self.table.values():
            if dialog.timer is not None:
                dialog.timer.cancel()
        self.table.clear()
        await self._tasks.close()


def _reply(tx: Any, status: int, reason: str) -> None:
    if tx.state not in ("trying", "proceeding"):
        return
    response = build_response(tx.request, status, reason)
    if response.to_tag is None:
        response.headers.set("To", f"{tx.request.get('To')};tag=gw{random_hex(4)}")
    _send_response(tx, response)
