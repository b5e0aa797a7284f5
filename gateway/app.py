"""Wiring and lifecycle of the running gateway: uvloop, start order, signals, graceful stop.

Start order follows the data: store, timers, instance lifecycle, then the listeners that
feed them; stop runs the same list backwards. The admin listener comes up first among the
listeners, so that /healthz answers during the start; /readyz says 200 only once every
listener is up (and the store is open), which is also when systemd (`Type=notify`) hears
READY=1. It says 503 again as soon as the stop begins.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from pathlib import Path

import uvloop
from aiohttp import web

from gateway import __version__, _accel, logs
from gateway.config import Config

log = logs.get_logger("gateway.app")


class Gateway:
    """The running appliance: owns every long-lived part and starts/stops them in order."""

    def __init__(self, config: Config):
        self.config = config
        self.store = None
        self.wheel = None
        self.instances = None
        self.provider_face = None
        self.device_face = None
        self.registrations = None
        self.push = None
        self.messages = None  # gateway.messages.MessageBox
        self.calls = None
        self.states = None  # metrics.InstanceStates
        self.registry = None  # the prometheus CollectorRegistry /metrics exposes
        self.probe = None
        self.listening = False
        #: where each listener is bound ("admin", "device_api"): (host, port)
        self.addresses: dict[str, tuple] = {}
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        from gateway import metrics
        from gateway.api.admin import create_admin, start_admin
        from gateway.api.device import create_device_api, start_device_api
        from gateway.instances import InstanceService
        from gateway.push.outcomes import LifecycleOutcomes
        from gateway.push.service import PushService
        from gateway.store import open_store
        from gateway.timers import TimerWheel

        config = self.config
        Path(config.state_dir).mkdir(parents=True, exist_ok=True, mode=0o750)
        self.store = open_store(config.store.path, config.store.key_file)
        await self.store.open()
        loop = asyncio.get_running_loop()
        self.wheel = TimerWheel(loop)
        self.instances = InstanceService(config, self.store, self.wheel)
        # counted before the lifecycle starts, so that no event is missed or counted twice
        self.states = metrics.InstanceStates()
        async for record in self.store.iter_instances():  # a page of records at a time
            self.states.load((record,))
        self.instances.subscribe(self.states.on_event)
        await self.instances.start()
        self.push = PushService(config, LifecycleOutcomes(self.instances))
        self.push.start()
        await self._start_registrations()
        await self._start_calls()
        self.probe = metrics.LoopProbe(loop, self.wheel)
        self.probe.start()
        self.registry = metrics.create_registry(self.states, self.wheel)

        admin = create_admin(config, self.registry, self.states, self.readiness_checks())
        self._listen("admin", await start_admin(config, admin))

        ssl_context = None if config.device_api.plain_http else self._device_api_tls()
        api = create_device_api(config, self.instances, self.messages)
        self._listen("device_api", await start_device_api(config, api, ssl_context))
        self.listening = True
        log.info(
            "gateway ready",
            version=__version__,
            accelerated=_accel.accelerated(),
            instances=await self.store.count_instances(),
        )
        _notify_systemd(b"READY=1")

    async def _start_registrations(self) -> None:
        """The provider face (listeners from `sip.provider_face`) and the registrations."""
        from gateway.registrations import RegistrationService

        self.provider_face = provider_face(self.config, self.wheel)
        await self._listen_sip("provider face", self.provider_face, self.config.sip.provider_face)
        if not self.config.sip.registration.enabled:
            log.info("registrations disabled (sip.registration.enabled = false)")
            return
        self.registrations = RegistrationService(self.config, self.instances,
                                                 self.provider_face, self.wheel)
        await self.registrations.start()

    async def _start_calls(self) -> None:
        """The device face (where woken phones register), incoming calls and messages."""
        from gateway.calls import CallService
        from gateway.messages import MessageBox, MessageIntake

        self.device_face = device_face(self.config, self.wheel)
        await self._listen_sip("device face", self.device_face, self.config.sip.device_face)
        self.messages = MessageBox(self.store, self.store.secret_box)
        intake = MessageIntake(self.config, self.messages, self.push)
        self.calls = CallService(self.config, self.instances, self.push, self.registrations,
                                 self.provider_face, self.device_face, self.wheel, intake)
        await self.calls.start()

    async def _listen_sip(self, name: str, endpoint, face) -> None:
        for transport in ("udp", "tcp", "tls"):
            port = getattr(face, f"{transport}_port")
            if port:
                identity = self._sip_tls_identity(face) if transport == "tls" else None
                bound = await endpoint.listen(transport, face.host, port, identity)
                log.info(f"{name} listening", transport=transport, address=str(bound))

    def _sip_tls_identity(self, face):
        from gateway import tls
        from gateway.sip.transport import TlsIdentity

        cert, key = face.tls_cert_file, face.tls_key_file
        if not cert:
            cert, key, _ = tls.ensure_self_signed(self.config.state_dir)
        return TlsIdentity(cert_file=str(cert), key_file=str(key))

    def _listen(self, name: str, runner: web.AppRunner) -> None:
        self._runners.append(runner)
        self.addresses[name] = tuple(runner.addresses[0][:2])

    def readiness_checks(self) -> dict:
        """What /readyz asks: the store's thread is alive, every listener is up."""

        def store_open() -> bool:
            thread = getattr(self.store, "writer_thread", None)
            return thread is not None and thread.is_alive()

        return {"store": store_open, "listeners": lambda: self.listening}

    def _device_api_tls(self):
        from gateway import tls

        api = self.config.device_api
        cert, key = api.tls_cert_file, api.tls_key_file
        if not cert:
            cert, key, created = tls.ensure_self_signed(self.config.state_dir)
            log.info(
                "self-signed certificate " + ("created" if created else "in use"),
                path=str(cert),
                sha256_fingerprint=tls.fingerprint(Path(cert).read_bytes()),
            )
        return tls.server_context(cert, key)

    async def stop(self) -> None:
        _notify_systemd(b"STOPPING=1")
        self.listening = False
        if self.probe is not None:
            self.probe.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.calls is not None:
            await self.calls.stop()
            await self.calls.messages.close()
        if self.device_face is not None:
            await self.device_face.close()
        if self.registrations is not None:
            await self.registrations.stop()
        if self.provider_face is not None:
            await self.provider_face.close()
        if self.push is not None:
            await self.push.close()
        if self.instances is not None:
            await self.instances.stop()
        if self.wheel is not None:
            self.wheel.close()
        if self.store is not None:
            await self.store.close()
        log.info("gateway stopped")


def provider_face(config: Config, wheel):
    """The SIP endpoint towards providers, set up from `[sip]` (no listeners yet)."""
    from gateway.sip.dns import DnsSettings
    from gateway.sip.endpoint import SipEndpoint
    from gateway.sip.transaction import TimerSettings
    from gateway.sip.transport import TransportSettings

    sip = config.sip
    # a MESSAGE body up to the configured limit (plus its header section) must be framed
    # whole on TCP/TLS, so that it gets its 413 (or is stored) rather than a 513
    transport = TransportSettings(keepalive_interval=sip.keepalive_interval,
                                  tls_verify=sip.tls_verify, tls_ca_file=sip.tls_ca_file or None,
                                  max_stream_message=max(65535, config.messages.max_body_bytes + 65536))
    timers = TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4)
    dns = DnsSettings()
    if sip.dns_server:
        host, _, port = sip.dns_server.rpartition(":") if sip.dns_server.count(":") == 1 \
            else (sip.dns_server, "", "")
        dns = DnsSettings(nameservers=(host or sip.dns_server,), port=int(port or 53))
    return SipEndpoint(wheel, transport, timers, dns, user_agent=sip.user_agent)


def device_face(config: Config, wheel):
    """The SIP endpoint woken phones register with. No keepalive pings from our side:
    the phone keeps its own connection alive (and not every SIP stack answers a ping)."""
    from gateway.sip.endpoint import SipEndpoint
    from gateway.sip.transaction import TimerSettings
    from gateway.sip.transport import TransportSettings

    sip = config.sip
    transport = TransportSettings(keepalive_interval=0.0)
    return SipEndpoint(wheel, transport, TimerSettings(t1=sip.t1, t2=sip.t2, t4=sip.t4),
                       user_agent=sip.user_agent)


def _notify_systemd(message: bytes) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, address)
    except OSError as exc:  # the manager went away; nothing to tell, nothing to fail
        log.warning("cannot notify the service manager", error=str(exc))


def tune_gc() -> None:
    """Once started: move what start-up allocated out of the collector's sight and let
    the young generation grow larger before a collection. Nearly everything the SIP path
    allocates is freed by reference counting; with the default threshold (700) the
    cyclic collector ran every registration or two and cost a fifth of its CPU time.

    The young generation stays at 5,000 objects, not 50,000: a collection walks all of
    it while the loop waits (about 0.7 us an object on a busy 2-core machine), and what
    lingers between collections (transactions absorbing retransmissions for 32 s) sits
    in it however few objects a call leaves. In 40 s runs of
    bench/test_call_push_latency.py's scenario, 5,000 gave pauses of 1.5 to 3.4 ms at
    100 calls/s. At 500 calls/s on a saturated 2-core machine the young generation also
    holds the calls queued behind the loop: 50,000 gave 40 to 80 ms, 5,000 a median of
    5 to 8 ms (max 34 to 53). The older generations keep their cadence counted in
    allocations (one middle collection per 1,000,000, one full per 50,000,000 at most)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 200, 50)


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    gateway = Gateway(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await gateway.start()
        tune_gc()
        await stopping.wait()
        log.info("stopping")
    finally:
        await gateway.stop()


def run(config: Config) -> int:
    logs.setup(config.logging.level, config.logging.format, config.logging.file)
    try:
        uvloop.run(serve(config))
    except OSError as exc:  # a port in use, a directory we may not write
        log.error("cannot start", error=str(exc))
        return 1
    return 0
