"""Locating SIP servers (RFC 3263): NAPTR, SRV and A/AAAA, with a cache that honours TTLs.

`Resolver.resolve(host, ...)` turns the host part of a SIP URI (plus its port, transport
parameter and sips-ness) into an ordered list of `Target`s: the first one to try first,
the rest to fail over to. `send_with_failover(targets, attempt)` walks that list, moving
on after a timeout, a transport error or a 503, as RFC 3263 section 4.3 asks.

The steps, RFC 3263 section 4:
- a numeric IP: no DNS at all; transport from the parameter, else TLS for sips, else UDP;
- an explicit port: A/AAAA of the host with that port;
- a transport parameter without port: SRV for that transport, else A/AAAA on the default;
- otherwise NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T, ordered by order then preference), then
  the SRV records they point to, else SRV for each transport we support, else A/AAAA.
SRV records are sorted by priority, and by weighted random choice within one priority
(RFC 2782). The TLS server name to verify is the SIP domain, not the SRV target
(RFC 5922 section 4.1).

Queries go through dnspython's asyncio resolver to the configured name server (or the
system's). This module depends on dnspython, `gateway.errors` and `gateway.sip.inflight` only; it knows nothing
of transports or transactions (responses are duck-typed: anything with `.status`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import msgspec

from gateway.errors import ConfigError, TransactionTimeout, TransportError
from gateway.sip.inflight import InFlight

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}
# NAPTR service field -> our transport name (SCTP is not supported, so it is skipped)
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}


class DnsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to reach DNS and how long to believe it."""

    #: name server addresses; empty means the system's (/etc/resolv.conf)
    nameservers: tuple[str, ...] = ()
    port: int = 53
    #: seconds to wait for one server's answer, and for a whole query with retries
    timeout: float = 2.0
    lifetime: float = 5.0
    #: how long "no such name / no such record" is remembered
    negative_ttl: float = 30.0
    #: upper bound on any TTL, so a mistaken week-long TTL cannot pin a dead server
    max_ttl: float = 3600.0
    #: transports we can use, in our order of preference when NAPTR says nothing
    transports: tuple[str, ...] = ("tls", "tcp", "udp")
    #: try IPv6 addresses of a host before its IPv4 ones
    prefer_ipv6: bool = False

    def __post_init__(self) -> None:
        unknown = [t for t in self.transports if t not in TRANSPORTS]
        if unknown or not self.transports:
            raise ConfigError(f"dns.transports: unknown transport(s) {unknown}, use {TRANSPORTS}")
        for address in self.nameservers:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"dns.nameservers: {address!r} is not an IP address") from None
        if not 0 < self.port < 65536:
            raise ConfigError(f"dns.port: {self.port} is not a port number")


class Target(NamedTuple):
    """One place to send a request: an IP address, a port, a transport, and the name a
    TLS server must prove (also used for connection sharing)."""

    address: str
    port: int
    transport: str
    server_name: str


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def order_srv(records: Iterable[Any], rng: random.Random | None = None) -> list[Any]:
    """RFC 2782 ordering: ascending priority; within a priority, repeatedly pick a record
    at random with probability proportional to its weight (zero weights get a small
    chance, placed first as the RFC suggests, so they are still used)."""
    rng = rng or random
    by_priority: dict[int, list[Any]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[Any] = []
    for priority in sorted(by_priority):
        pool = sorted(by_priority[priority], key=lambda r: r.weight)  # zeros first
        while pool:
            total = sum(r.weight for r in pool)
            if total == 0:
                ordered.extend(rng.sample(pool, len(pool)))
                break
            pick = rng.uniform(0, total)
            running = 0
            for index, record in enumerate(pool):
                running += record.weight
                if running >= pick and (record.weight or pick == 0):
                    break
            ordered.append(pool.pop(index))
    return ordered


class _Entry(NamedTuple):
    expires: float
    records: tuple[Any, ...]  # empty: a cached negative answer


class Resolver:
    """RFC 3263 resolution over dnspython, with its own TTL cache.

    Concurrent identical queries share one lookup; answers are kept for their TTL
    (capped by `max_ttl`), empty answers and NXDOMAIN for `negative_ttl`.
    """

    def __init__(self, settings: DnsSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.settings = settings or DnsSettings()
        self._clock = clock
        self._rng = rng or random.Random()
        if self.settings.nameservers:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = list(self.settings.nameservers)
        else:
            try:
                self._dns = dns.asyncresolver.Resolver()
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                raise ConfigError("dns.nameservers: none configured and the system has no "
                                  f"usable /etc/resolv.conf ({exc})") from exc
        self._dns.port = self.settings.port
        self._dns.timeout = self.settings.timeout
        self._dns.lifetime = self.settings.lifetime
        self._cache: dict[tuple[str, int], _Entry] = {}
        self._in_flight = InFlight("DNS lookup")
        self.queries_sent = 0  # for tests and the /stats page

    # -- the cache -------------------------------------------------------------------

    async def query(self, name: str, rdtype: int) -> tuple[Any, ...]:
        """Records of one type for a name (empty when none), from the cache when fresh.
        Raises TransportError when DNS itself fails (timeout, SERVFAIL)."""
        key = (name.lower().rstrip(".") + ".", rdtype)
        entry = self._cache.get(key)
        if entry is not None and entry.expires > self._clock():
            return entry.records
        return await self._in_flight.run(key, lambda: self._ask(*key))

    async def _ask(self, name: str, rdtype: int) -> tuple[Any, ...]:
        self.queries_sent += 1
        try:
            answer = await self._dns.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._remember(name, rdtype, (), self.settings.negative_ttl)
            return ()
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            # not cached: the next attempt may find the server back
            raise TransportError(f"DNS {dns.rdatatype.to_text(rdtype)} {name}: {exc}") from exc
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        ttl = answer.rrset.ttl if answer.rrset is not None else self.settings.negative_ttl
        self._remember(name, rdtype, records, ttl)
        return records

    def _remember(self, name: str, rdtype: int, records: tuple, ttl: float) -> None:
        ttl = min(float(ttl), self.settings.max_ttl)
        if ttl > 0:
            self._cache[(name, rdtype)] = _Entry(self._clock() + ttl, records)
        if len(self._cache) > 10_000:  # drop what has expired; bounded memory
            now = self._clock()
            self._cache = {k: e for k, e in self._cache.items() if e.expires > now}

    # -- RFC 3263 ----------------------------------------------------------------------

    async def addresses(self, host: str) -> list[str]:
        """A and AAAA of a host, in the configured family order."""
        if is_ip(host):
            return [host.strip("[]")]
        v4, v6 = await asyncio.gather(self.query(host, dns.rdatatype.A),
                                      self.query(host, dns.rdatatype.AAAA),
                                      return_exceptions=True)
        families = [v6, v4] if self.settings.prefer_ipv6 else [v4, v6]
        found = [r.address for family in families if not isinstance(family, BaseException)
                 for r in family]
        if not found:
            errors = [f for f in families if isinstance(f, BaseException)]
            if errors:
                raise errors[0]
        return found

    async def resolve(self, host: str, port: int | None = None, transport: str | None = None,
                      secure: bool = False) -> list[Target]:
        """The ordered targets for a SIP URI's host/port/transport (secure: a sips URI).
        An empty list means the name does not exist for SIP."""
        transport = transport.lower() if transport else None
        if transport is not None and transport not in TRANSPORTS:
            raise TransportError(f"unsupported SIP transport {transport!r}")
        if secure and transport not in (None, "tls", "tcp"):
            raise TransportError(f"a sips URI cannot use {transport}")
        if secure:
            transport = "tls"  # sips over "tcp" means TLS over TCP
        server_name = host.strip("[]")
        if is_ip(host) or port is not None:
            chosen = transport or "udp"
            return [Target(a, port or DEFAULT_PORT[chosen], chosen, server_name)
                    for a in await self.addresses(host)]
        if transport is not None:
            targets = await self._srv_targets(SRV_PREFIX[transport] + host, transport, server_name)
            if targets:
                return targets
            return [Target(a, DEFAULT_PORT[transport], transport, server_name)
                    for a in await self.addresses(host)]
        from_naptr = await self._naptr_targets(host, secure, server_name)
        if from_naptr is not None:
            return from_naptr
        targets = []
        for candidate in self._supported(secure):
            targets += await self._srv_targets(SRV_PREFIX[candidate] + host, candidate,
                                               server_name)
        if targets:
            return targets
        fallback = "tls" if secure else "udp"
        return [Target(a, DEFAULT_PORT[fallback], fallback, server_name)
                for a in await self.addresses(host)]

    def _supported(self, secure: bool) -> list[str]:
        return [t for t in self.settings.transports if t == "tls" or not secure]

    async def _naptr_targets(self, host: str, secure: bool,
                             server_name: str) -> list[Target] | None:
        """Targets from NAPTR, or None when the domain has no usable NAPTR records (the
        caller then tries SRV directly). Only terminal "S" records are followed."""
        records = await self.query(host, dns.rdatatype.NAPTR)
        supported = self._supported(secure)
        usable = []
        for record in records:
            service = record.service.decode("ascii", "replace").upper()
            transport = NAPTR_SERVICES.get(service)
            if transport in supported and record.flags.lower() == b"s":
                usable.append((record.order, record.preference, transport,
                               record.replacement.to_text()))
        if not usable:
            return None
        targets: list[Target] = []
        for _order, _pref, transport, srv_name in sorted(usable, key=lambda u: u[:2]):
            targets += await self._srv_targets(srv_name, transport, server_name)
        return targets

    async def _srv_targets(self, srv_name: str, transport: str,
                           server_name: str) -> list[Target]:
        records = await self.query(srv_name, dns.rdatatype.SRV)
        targets: list[Target] = []
        for record in order_srv(records, self._rng):
            target_host = record.target.to_text().rstrip(".")
            if not target_host:  # "." : the service is decidedly not available here
                continue
            try:
                addresses = await self.addresses(target_host)
            except TransportError as exc:
                log.warning("skipping SRV target %s: %s", target_host, exc)
                continue
            targets += [Target(a, record.port, transport, server_name) for a in addresses]
        return targets


async def send_with_failover(targets: Sequence[Target],
                             attempt: Callable[[Target], Awaitable[Any]]) -> Any:
    """Try `attempt(target)` on each target in turn (each attempt must be a new client
    transaction, with a new branch). Move on after TransportError, TransactionTimeout or a
    503 response; return the first other response. When every target fails, return the
    last 503 if there was one, else raise TransportError chained to the last error."""
    if not targets:
        raise TransportError("no SIP target to try (DNS found nothing)")
    last_503 = None
    last_error: BaseException | None = None
    for target in targets:
        try:
            response = await attempt(target)
        except (TransportError, TransactionTimeout) as exc:
            log.info("target %s:%s/%s failed: %s; trying the next one",
                     target.address, target.port, target.transport, exc)
            last_error = exc
            continue
        if getattr(response, "status", None) == 503:
            log.info("target %s:%s/%s answered 503; trying the next one",
                     target.address, target.port, target.transport)
            last_503 = response
            continue
        return response
    if last_503 is not None:
        return last_503
    raise TransportError(f"all {len(targets)} SIP targets failed") from last_error
