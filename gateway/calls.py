"""Incoming calls and messages for sleeping phones: who may knock, which instance, what
to push, and the wiring of the two SIP faces to the call relay and the device registrar.

`CallService(config, instances, push, registrations, provider, device, wheel)`:

Provider face (`provider.on_request`, `provider.on_ack`):
- an INVITE or MESSAGE whose Request-URI user is an instance's contact token
  (`gateway.registrations.contact_token`) is taken only from the resolved addresses of
  the instance's registrar and outbound proxy, or on the flow its registration uses (a
  flow the gateway opened); anything else gets 403 and no push, so a SIP scanner cannot
  make phones ring;
- an unknown token gets `calls.unknown_status`, an instance in the foreground
  `calls.foreground_status` (404 or 480), no push;
- an INVITE becomes a `CallPush` to every call target, written to the push service's
  connection before anything else is done for the call (`PushService.notify_started`), then
  a `CallRelay` (100, 180 Alerting-Device, T1); a push service accepting the push gives
  the second 180. The relay is keyed
  by (instance, Call-ID): a retransmission is absorbed by its transaction, another
  branch of the same call (a fork, or a merged request) gets 482 and no second push;
- the end of a call that never reached the device (cancelled, answered_elsewhere,
  no_answer) sends a `MissedCallPush` with that reason;
- a MESSAGE goes to `gateway.messages.MessageIntake`;
- CANCEL, in-dialog requests and ACKs go to the relay and the dialogs.

Device face (`device.on_request`, `device.on_ack`): REGISTER to the `DeviceRegistrar`
(digest with the instance id and the stored HA1s), whose first binding during a held call
makes the relay forward the INVITE; RFC 8599 `pn-*` parameters replace the instance's
push token; in-dialog requests and ACKs from the device go upstream. New requests from
the device (it calling out through us) get 403: media and outgoing calls are not ours.

Instances are mirrored in memory from the lifecycle's events (by contact token; `by_id`
reads the same index) as a `Callee`: only what an INVITE needs before anything could be read from the
store (id, app, mode, call push targets, the hosts that may knock), so an INVITE costs no
store read and 100,000 instances do not each keep a full record. What the rarer events
need is read from the store when they happen: the full record for a MESSAGE, a missed
call push (they may go to the other targets) and an RFC 8599 token change, the device
secret's hashes when the device registers.

Depends on the instance lifecycle (events, update), the push service, the registration
service (tokens, flows), the SIP relay and device registrar, messages, config and metrics.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from gateway import logs, metrics
from gateway.config import Config
from gateway.errors import ParseError, TransientError, TransportError
from gateway.push.payloads import CallPush, MissedCallPush
from gateway.registrations import contact_token
from gateway.sip.device_face import DeviceRegistrar, PushParams
from gateway.sip.relay import CallRelay, Dialogs, Faces
from gateway.sip.transaction import answer_head, call_on_grid, encode_answer
from gateway.store.records import InstanceRecord, PushTarget
from gateway.tasks import Background

log = logs.get_logger(__name__)

MISSED = frozenset({"cancelled", "answered_elsewhere", "no_answer"})
#: how long a missed-call push waits for others to read the store with: the store's
#: thread serves the reads queued together as one batch and hands the answers back in
#: one go, so at 500 calls/s about ten calls' records cost one wake-up of that thread
#: and of the loop instead of ten (a wake-up costs more CPU than the read). The call
#: push itself never waits.
MISSED_BATCH_DELAY = 0.02
_REASONS = {403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
            482: "Loop Detected", 400: "Bad Request"}


class CallService:
    def __init__(self, config: Config, instances: Any, push: Any, registrations: Any,
                 provider: Any, device: Any, wheel: Any, messages: Any = None):
        self.config = config
        self.settings = config.calls
        self.instances = instances
        self.push = push
        self.registrations = registrations
        self.provider = provider
        self.device = device
        self.wheel = wheel
        self.messages = messages
        public = config.sip.public_address
        self.faces = Faces(provider, device, _host_of(public) if public else "")
        self.dialogs = Dialogs(self.faces, wheel)
        self.registrar = DeviceRegistrar(config.sip.device_realm, self._credentials,
                                         user_agent=config.sip.user_agent)
        self.registrar.on_registered = self._device_registered
        self.registrar.on_push_params = self._push_params
        self.by_token: dict[str, Callee] = {}  # the one index: an INVITE names a token
        self.by_id = CalleesById(self.by_token)
        self.relays: dict[tuple[str, str], CallRelay] = {}
        self._by_tx: dict[tuple, CallRelay] = {}
        self._recent: dict[tuple[str, str], float] = {}  # ended calls: late forks get 482
        self._peers: dict[str, tuple[float, frozenset]] = {}  # host -> (until, addresses)
        self._tasks = Background(__name__)
        self._missed_waiters: list[asyncio.Future] = []  # missed pushes waiting to read
        self._unsubscribe = None
        self.connect_uri = ""

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        # a page at a time: every full record at once would set the process's memory
        # high for good (freed, but fragmented), for the few fields a Callee keeps
        async for record in self.instances.store.iter_instances():
            self._remember(record)
        self._unsubscribe = self.instances.subscribe(self._event)
        self.provider.on_request = self.provider_request
        self.provider.on_ack = self._provider_ack
        self.device.on_request = self.device_request
        self.device.on_ack = lambda ack, flow: self.dialogs.ack_from_device(ack)
        self.connect_uri = self._connect_uri()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for relay in list(self.relays.values()):
            relay.stop()
        await self.dialogs.close()
        await self._tasks.close()

    def _connect_uri(self) -> str:
        """The device face's URI for the call push: TLS first, then TCP, then UDP."""
        face = self.config.sip.device_face
        for transport in ("tls", "tcp", "udp"):
            bound = self.device.transport.local_address(transport)
            if bound:
                host = self.faces.public_host or (face.host if face.host not in ("", "0.0.0.0", "::")
                                                  else bound[0])
                if host in ("0.0.0.0", "::"):
                    host = "127.0.0.1"
                host = f"[{host}]" if ":" in host else host
                return f"sip:{host}:{bound[1]};transport={transport}"
        return ""

    # -- instances mirrored from the lifecycle ------------------------------------------

    def _remember(self, record: InstanceRecord) -> None:
        token = contact_token(record.id)
        known = self.by_token.get(token)
        if known is not None and known.same_as(record):
            return  # a state change (every refresh writes one): nothing a call needs moved
        self.by_token[token] = Callee(record)

    def _event(self, event) -> None:
        if event.kind in ("expired", "erased"):
            self.by_token.pop(contact_token(event.instance_id), None)
            self.registrar.forget(event.instance_id)
        elif event.record is not None:
            self._remember(event.record)

    async def _credentials(self, instance_id: str) -> tuple[str, str] | None:
        if instance_id not in self.by_id:
            return None
        record = await self.instances.store.get_instance(instance_id)
        return None if record is None else (record.secret_ha1, record.secret_ha1_sha256)

    # -- who may knock ------------------------------------------------------------------

    def _allowed_now(self, callee: Callee, flow: Any) -> bool | None:
        """True / False when known at once; None when a name must be resolved first."""
        client = self.registrations.clients.get(callee.id) if self.registrations else None
        if client is not None and client.flow is flow:
            return True
        source = flow.remote[0]
        unknown = False
        for host in callee.peers:
            addresses = self._cached_addresses(host)
            if addresses is None:
                unknown = True
            elif source in addresses:
                return True
        return None if unknown else False

    def _cached_addresses(self, host: str) -> frozenset | None:
        if _is_ip(host):
            return frozenset({host.strip("[]")})
        cached = self._peers.get(host)
        if cached is None or cached[0] < time.monotonic():
            return None
        return cached[1]

    async def _allowed(self, callee: Callee, flow: Any) -> bool:
        verdict = self._allowed_now(callee, flow)
        if verdict is not None:
            return verdict
        for host in callee.peers:
            if self._cached_addresses(host) is None:
                try:
                    targets = await self.provider.resolver.resolve(host)
                except (TransportError, TransientError, OSError) as exc:
                    log.info("cannot resolve a peer of an instance", host=host, error=str(exc))
                    targets = []
                until = time.monotonic() + self.settings.peer_cache_seconds
                self._peers[host] = (until, frozenset(t.address for t in targets))
        return bool(self._allowed_now(callee, flow))

    # -- the provider face --------------------------------------------------------------

    def provider_request(self, request: Any, tx: Any) -> None:
        method = request.method
        if method == "OPTIONS":
            _reply(tx, 200, "OK")
        elif method == "CANCEL":
            self._cancel(request, tx)
        elif request.to_tag is not None:
            if not self.dialogs.from_provider(request, tx):
                _reply(tx, 481)
        elif method in ("INVITE", "MESSAGE"):
            self._incoming(request, tx, time.perf_counter())
        else:
            _reply(tx, 405, extra=(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"),))

    def _provider_ack(self, ack: Any, flow: Any) -> None:
        self.dialogs.ack_from_provider(ack)

    def _cancel(self, request: Any, tx: Any) -> None:
        relay = self._by_tx.get(tx.cancels.key) if tx.cancels is not None else None
        if relay is None:
            _reply(tx, 481)
            return
        _reply(tx, 200, "OK")
        relay.cancel(request)

    def _incoming(self, request: Any, tx: Any, arrived: float) -> None:
        """A new INVITE or MESSAGE. The hot path stays synchronous (no task before the
        push's own) unless a registrar's name must be resolved first."""
        try:
            token = request.uri_user or ""
        except ParseError:
            _reply(tx, 400)
            return
        callee = self.by_token.get(token)
        if callee is None:
            _reply(tx, self.settings.unknown_status)
            return
        verdict = self._allowed_now(callee, tx.flow)
        if verdict is None:
            self._tasks.spawn(self._resolve_then(callee, request, tx, arrived))
        else:
            self._admit(verdict, callee, request, tx, arrived)

    async def _resolve_then(self, callee, request, tx, arrived: float) -> None:
        self._admit(await self._allowed(callee, tx.flow), callee, request, tx, arrived)

    def _admit(self, allowed: bool, callee: Callee, request: Any, tx: Any,
               arrived: float) -> None:
        if not allowed:
            log.warning("refused a request from a stranger", method=request.method,
                        source=f"{tx.flow.remote[0]}:{tx.flow.remote[1]}", instance=callee.id)
            _reply(tx, 403)
        elif callee.mode == "foreground":
            _reply(tx, self.settings.foreground_status)
        elif request.method == "MESSAGE":
            self._tasks.spawn(self._message(callee, request, tx))
        else:
            self._invite(callee, request, tx, arrived)

    async def _message(self, callee: Callee, request: Any, tx: Any) -> None:
        if self.messages is None:
            _reply(tx, 480)
            return
        record = await self.instances.store.get_instance(callee.id)
        if record is None:  # erased meanwhile
            _reply(tx, self.settings.unknown_status)
            return
        try:
            status, reason = await self.messages.receive(record, request)
        except TransientError:
            status, reason = 503, "Service Unavailable"
        _reply(tx, status, reason)

    def _invite(self, callee: Callee, request: Any, tx: Any, arrived: float) -> None:
        key = (callee.id, request.call_id)
        if key in self.relays or key in self._recent:
            _reply(tx, 482)  # another branch of a call we already hold: no second push
            return
        relay = CallRelay(self.faces, tx, self.wheel, self.settings.t1, self.settings.t2,
                          self._call_ended, self.dialogs, callee.id)
        self.relays[key] = relay
        self._by_tx[tx.key] = relay
        # The push first, written to its connection before anything else is done (the
        # 100 and 180 can follow it by microseconds; the phone needs seconds to wake)
        caller_name, caller_uri = request.addr_texts("From")
        payload = CallPush(instance=callee.id, call_id=request.call_id, caller_uri=caller_uri,
                           caller_name=caller_name, callee=request.addr_texts("To")[1],
                           push_id=relay.push_id, connect=self.connect_uri,
                           expires_at=time.time() + self.settings.t1 + self.settings.t2)
        pushing = self._tasks.spawn(self.push.notify_started(callee, payload))  # sent here
        relay.start()
        metrics.call_received()
        binding = self.registrar.binding(callee.id)
        if binding is not None:  # the app is awake and connected already
            relay.device_ready(binding)
        pushing.add_done_callback(lambda done: self._pushed(callee, relay, done, arrived))

    def _pushed(self, callee: Callee, relay: CallRelay, pushing: Any, arrived: float) -> None:
        if pushing.cancelled() or pushing.exception() is not None:
            return  # stopping, or a bug the Background has logged
        deliveries = pushing.result()
        if any(d.delivered for d in deliveries):
            metrics.invite_to_push(time.perf_counter() - arrived)
            relay.push_sent()
        elif relay.ringing:
            log.warning("no push service took the call push", instance=callee.id,
                        outcomes=",".join(d.result.outcome for d in deliveries) or "no target")

    def _call_ended(self, relay: CallRelay, outcome: str) -> None:
        key = (relay.instance_id, relay.invite.call_id)
        self.relays.pop(key, None)
        self._by_tx.pop(relay.tx.key, None)
        self._recent[key] = time.monotonic()
        # on the grid: at a low call rate the calls of the same 50 ms are forgotten in one
        # wake-up of the loop
        call_on_grid(self.wheel, 64 * self.config.sip.t1 + 1.0, self._forget_call, key)
        metrics.call_ended(outcome if outcome in metrics.CALL_OUTCOMES else "rejected")
        log.info("call ended", instance=relay.instance_id, outcome=outcome)
        if outcome in MISSED and relay.instance_id in self.by_id:
            caller_name, caller_uri = relay.invite.addr_texts("From")
            payload = MissedCallPush(instance=relay.instance_id, call_id=relay.invite.call_id,
                                     caller_uri=caller_uri, caller_name=caller_name,
                                     reason=outcome)
            self._tasks.spawn(self._missed(payload))

    async def _missed(self, payload: MissedCallPush) -> None:
        """The missed call push, to the targets of any usage: read from the store (the
        call side keeps only the call targets), with the other missed calls of the same
        `MISSED_BATCH_DELAY`."""
        waiter = asyncio.get_running_loop().create_future()
        if not self._missed_waiters:
            self.wheel.call_later(MISSED_BATCH_DELAY, _read_missed, self._missed_waiters)
        self._missed_waiters.append(waiter)
        await waiter
        record = await self.instances.store.get_instance(payload.instance)
        if record is not None:
            await self.push.notify_started(record, payload)  # in this task: no other

    def _forget_call(self, key: tuple[str, str]) -> None:
        self._recent.pop(key, None)

    # -- the device face ----------------------------------------------------------------

    def device_request(self, request: Any, tx: Any) -> None:
        method = request.method
        if method == "REGISTER":
            self._tasks.spawn(self.registrar.register(request, tx))
        elif method == "OPTIONS":
            _reply(tx, 200, "OK")
        elif request.to_tag is not None and method != "CANCEL":
            if not self.dialogs.from_device(request, tx):
                _reply(tx, 481)
        elif method == "CANCEL":
            _reply(tx, 481)
        else:
            _reply(tx, 403)

    def _device_registered(self, binding, first: bool) -> None:
        for (instance_id, _), relay in list(self.relays.items()):
            if instance_id == binding.instance_id:
                relay.device_ready(binding)

    def _push_params(self, instance_id: str, params: PushParams) -> None:
        if instance_id in self.by_id:
            self._tasks.spawn(self._replace_token(instance_id, params))

    async def _replace_token(self, instance_id: str, params: PushParams) -> None:
        record = await self.instances.store.get_instance(instance_id)
        if record is None:
            return
        targets = _with_token(record.push, params)
        if targets is not None:
            await self.instances.update(instance_id, push=targets)


def _read_missed(waiters: list[asyncio.Future]) -> None:
    """Let the missed pushes waiting go on together: each queues its store read in the
    same turn of the loop, so the store's thread finds them as one batch."""
    ready = waiters[:]
    waiters.clear()
    for waiter in ready:
        if not waiter.done():  # cancelled: the service stopped
            waiter.set_result(None)


def _with_token(targets: list[PushTarget], params: PushParams) -> list[PushTarget] | None:
    """The targets with the device's RFC 8599 token in place (None: nothing changes).
    APNs: pn-param is "<team id>.<topic>", a topic ending in ".voip" is a PushKit token
    (usage call). FCM: the token serves calls. Web Push needs keys pn-* cannot carry."""
    if params.provider == "apns":
        topic = (params.param or "").partition(".")[2]
        usage = "call" if topic.endswith(".voip") else "other"
    elif params.provider == "fcm":
        usage = "call"
    else:
        return None
    out, found = [], False
    for target in targets:
        if target.provider == params.provider and target.usage == usage and not found:
            found = True
            if target.token == params.prid:
                return None
            target = msgspec.structs.replace(target, token=params.prid)
        out.append(target)
    if not found:
        out.append(PushTarget(provider=params.provider, usage=usage, token=params.prid,
                              environment="production" if params.provider == "apns" else None))
    return out


class CalleesById(Mapping):
    """`CallService.by_id`: the callees by instance id, read through the token index
    (the token is a hash of the id): one dict per instance less than a second index, for
    lookups that happen on rare events only (a call's end, a device's REGISTER)."""

    __slots__ = ("_by_token",)

    def __init__(self, by_token: dict[str, Callee]):
        self._by_token = by_token

    def __getitem__(self, instance_id: str) -> Callee:
        callee = self._by_token[contact_token(instance_id)]
        if callee.id != instance_id:
            raise KeyError(instance_id)
        return callee

    def __contains__(self, instance_id: object) -> bool:
        # asked at every call's end: without the KeyError Mapping's would raise and catch
        if not isinstance(instance_id, str):
            return False
        callee = self._by_token.get(contact_token(instance_id))
        return callee is not None and callee.id == instance_id

    def __iter__(self) -> Iterator[str]:
        return (callee.id for callee in self._by_token.values())

    def __len__(self) -> int:
        return len(self._by_token)


class Callee:
    """What an incoming call needs about one instance: its id, app, mode, call push
    targets (usage "call": all a call push goes to) and the hosts its provider may knock
    from (registrar, outbound proxy). It stands in for the `InstanceRecord` that
    `PushService.notify_started` takes for the call push (which reads `id`, `app_id` and
    `push` only). Slotted, and sharing every value that most instances have in common:
    one of these per instance is all the call side keeps."""

    __slots__ = ("id", "app_id", "mode", "push", "peers")

    def __init__(self, record: InstanceRecord):
        self.id = record.id
        self.app_id = sys.intern(record.app_id)
        self.mode = sys.intern(record.mode)
        self.push = _call_targets(record.push)
        self.peers = _peer_hosts(record.registrar, record.outbound_proxy)

    def same_as(self, record: InstanceRecord) -> bool:
        """Whether `record` changes nothing a call needs (a registration state change)."""
        return (self.mode == record.mode and self.app_id == record.app_id
                and self.push == _call_targets(record.push)
                and self.peers == _peer_hosts(record.registrar, record.outbound_proxy))

    def __repr__(self) -> str:
        return f"Callee(id={self.id!r}, app_id={self.app_id!r}, mode={self.mode!r})"


def _call_targets(targets: list[PushTarget]) -> tuple[PushTarget, ...]:
    # a tuple: no spare capacity, and the one empty tuple for an instance without any
    return tuple(t for t in targets if t.usage == "call")


#: (registrar, outbound proxy) -> the lowercase hosts in them: one tuple shared by every
#: instance of a registrar, parsed once
_PEERS: dict[tuple[str, str | None], tuple[str, ...]] = {}


def _peer_hosts(registrar: str, outbound_proxy: str | None) -> tuple[str, ...]:
    from gateway.sip.message import SipUri

    key = (registrar, outbound_proxy)
    hosts = _PEERS.get(key)
    if hosts is not None:
        return hosts
    found = []
    for text in key:
        if text:
            try:
                found.append(sys.intern(SipUri.parse(text).host.lower()))
            except ParseError:
                continue
    hosts = tuple(found)
    if len(_PEERS) < 10_000:  # bounded: a store of all-different registrars gains nothing
        _PEERS[key] = hosts
    return hosts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def _reply(tx: Any, status: int, reason: str | None = None, extra=()) -> None:
    if tx.request is None:  # answered finally already: the transaction keeps only its bytes
        log.info("already answered", method=tx.method, status=status)
        return
    tag = f"gw{id(tx) & 0xffffff:x}" if status > 100 else None
    head = answer_head(tx.request, status, tag)
    try:
        tx.respond_wire(status, encode_answer(status, reason or _REASONS.get(status, ""), head, extra))
    except TransportError as exc:
        log.info("could not answer", method=tx.method, status=status, error=str(exc))
