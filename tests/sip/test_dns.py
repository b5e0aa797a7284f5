"""RFC 3263 resolution against a real DNS server on loopback (tests/support/dnsserver.py)."""

import random
import socket
from collections import Counter
from types import SimpleNamespace

import pytest

from gateway.errors import ConfigError, TransactionTimeout, TransportError
from gateway.sip.dns import DnsSettings, Resolver, Target, order_srv, send_with_failover
from tests.support.dnsserver import DnsServer

ZONE = {
    ("example.test", "NAPTR"): [
        (300, '20 10 "s" "SIP+D2U" "" _sip._udp.example.test.'),
        (300, '10 10 "s" "SIP+D2T" "" _sip._tcp.example.test.'),
        (300, '5 10 "s" "SIP+D2S" "" _sip._sctp.example.test.'),  # unsupported: skipped
    ],
    ("_sip._tcp.example.test", "SRV"): [
        (300, "20 0 5070 backup.example.test."),
        (300, "10 0 5062 main.example.test."),
    ],
    ("_sip._udp.example.test", "SRV"): [(300, "10 0 5060 main.example.test.")],
    ("main.example.test", "A"): [(300, "127.0.0.2")],
    ("main.example.test", "AAAA"): [(300, "::2")],
    ("backup.example.test", "A"): [(2, "127.0.0.3")],
    # no NAPTR here: SRV per transport, in our preference order
    ("srvonly.test", "A"): [(300, "127.0.0.9")],
    ("_sips._tcp.srvonly.test", "SRV"): [(300, "0 0 5061 main.example.test.")],
    ("_sip._udp.srvonly.test", "SRV"): [(300, "0 0 5060 backup.example.test.")],
    # nothing but an address
    ("plain.test", "A"): [(300, "127.0.0.4")],
}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def dns_server():
    server = await DnsServer(ZONE).start()
    yield server
    server.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def resolver(dns_server, clock):
    settings = DnsSettings(nameservers=("127.0.0.1",), port=dns_server.port,
                           timeout=0.3, lifetime=0.6)
    return Resolver(settings, clock=clock, rng=random.Random(7))


async def test_naptr_then_srv_then_addresses(resolver):
    targets = await resolver.resolve("example.test")
    assert targets == [
        Target("127.0.0.2", 5062, "tcp", "example.test"),  # NAPTR order 10, SRV prio 10
        Target("::2", 5062, "tcp", "example.test"),
        Target("127.0.0.3", 5070, "tcp", "example.test"),  # SRV prio 20
        Target("127.0.0.2", 5060, "udp", "example.test"),  # NAPTR order 20
        Target("::2", 5060, "udp", "example.test"),
    ]


async def test_sips_uses_only_tls(resolver):
    # example.test has no SIPS+D2T NAPTR: no usable NAPTR, so SRV for _sips._tcp, then A
    assert await resolver.resolve("example.test", secure=True) == []
    assert await resolver.resolve("srvonly.test", secure=True) == [
        Target("127.0.0.2", 5061, "tls", "srvonly.test"),
        Target("::2", 5061, "tls", "srvonly.test"),
    ]


async def test_srv_without_naptr_follows_our_transport_order(resolver):
    targets = await resolver.resolve("srvonly.test")
    assert [(t.transport, t.port) for t in targets] == [
        ("tls", 5061), ("tls", 5061), ("udp", 5060)]


async def test_transport_param_and_explicit_port(resolver):
    assert await resolver.resolve("example.test", transport="UDP") == [
        Target("127.0.0.2", 5060, "udp", "example.test"),
        Target("::2", 5060, "udp", "example.test"),
    ]
    assert await resolver.resolve("plain.test", transport="tcp") == [
        Target("127.0.0.4", 5060, "tcp", "plain.test")]
    # an explicit port skips NAPTR and SRV
    assert await resolver.resolve("plain.test", 5080) == [
        Target("127.0.0.4", 5080, "udp", "plain.test")]
    assert await resolver.resolve("plain.test") == [
        Target("127.0.0.4", 5060, "udp", "plain.test")]


async def test_numeric_addresses_need_no_dns(resolver, dns_server):
    assert await resolver.resolve("192.0.2.1") == [Target("192.0.2.1", 5060, "udp", "192.0.2.1")]
    assert await resolver.resolve("[::1]", secure=True) == [Target("::1", 5061, "tls", "::1")]
    assert await resolver.resolve("127.0.0.1", 5999, "tcp") == [
        Target("127.0.0.1", 5999, "tcp", "127.0.0.1")]
    assert sum(dns_server.queries.values()) == 0


async def test_unknown_name_and_bad_transport(resolver):
    assert await resolver.resolve("nowhere.test") == []
    with pytest.raises(TransportError):
        await resolver.resolve("example.test", transport="sctp")
    with pytest.raises(TransportError):
        await resolver.resolve("example.test", transport="udp", secure=True)


async def test_cache_honours_ttls(resolver, dns_server, clock):
    await resolver.resolve("example.test")
    first = dict(dns_server.queries)
    await resolver.resolve("example.test")
    assert dict(dns_server.queries) == first  # all from the cache
    clock.now += 3  # backup.example.test's A (TTL 2) expired, the rest (TTL 300) did not
    await resolver.resolve("example.test")
    expected = Counter(first)
    expected[("backup.example.test.", "A")] += 1
    assert dns_server.queries == expected
    clock.now += 400
    await resolver.resolve("example.test")
    assert dns_server.queries[("example.test.", "NAPTR")] == 2


async def test_negative_answers_are_cached(resolver, dns_server, clock):
    assert await resolver.resolve("nowhere.test") == []
    asked = sum(dns_server.queries.values())
    assert await resolver.resolve("nowhere.test") == []
    assert sum(dns_server.queries.values()) == asked
    clock.now += resolver.settings.negative_ttl + 1
    await resolver.resolve("nowhere.test")
    assert sum(dns_server.queries.values()) == 2 * asked


async def test_concurrent_queries_share_one_lookup(resolver, dns_server):
    import asyncio

    await asyncio.gather(*(resolver.resolve("plain.test") for _ in range(5)))
    assert dns_server.queries[("plain.test.", "A")] == 1


async def test_dns_timeout_is_a_transport_error(resolver, dns_server):
    dns_server.silent.add(("plain.test.", "A"))
    dns_server.silent.add(("plain.test.", "AAAA"))
    with pytest.raises(TransportError):
        await resolver.resolve("plain.test", 5060)
    # a failure is not cached: once the server answers again, so do we
    dns_server.silent.clear()
    assert await resolver.resolve("plain.test", 5060) == [
        Target("127.0.0.4", 5060, "udp", "plain.test")]


async def test_srv_target_without_address_is_skipped(resolver, dns_server):
    dns_server.set("_sip._tcp.gap.test", "SRV", [(60, "1 0 5060 missing.test."),
                                                  (60, "2 0 5061 main.example.test.")])
    assert await resolver.resolve("gap.test", transport="tcp") == [
        Target("127.0.0.2", 5061, "tcp", "gap.test"), Target("::2", 5061, "tcp", "gap.test")]


def test_srv_weights_follow_rfc2782():
    records = [SimpleNamespace(priority=1, weight=w, name=n) for n, w in
               (("a", 60), ("b", 30), ("c", 10), ("z", 0))]
    records.append(SimpleNamespace(priority=0, weight=5, name="first"))
    rng = random.Random(1)
    firsts = Counter()
    for _ in range(4000):
        ordered = order_srv(records, rng)
        assert ordered[0].name == "first"  # lower priority value always first
        assert sorted(r.name for r in ordered) == ["a", "b", "c", "first", "z"]
        firsts[ordered[1].name] += 1
    assert firsts["a"] / 4000 == pytest.approx(0.6, abs=0.04)
    assert firsts["b"] / 4000 == pytest.approx(0.3, abs=0.04)
    assert firsts["c"] / 4000 == pytest.approx(0.1, abs=0.03)
    assert firsts["z"] < 40  # weight 0: a very small chance only


def test_settings_are_validated():
    with pytest.raises(ConfigError):
        DnsSettings(nameservers=("dns.example",))
    with pytest.raises(ConfigError):
        DnsSettings(transports=("udp", "ws"))
    with pytest.raises(ConfigError):
        DnsSettings(port=0)


async def test_failover_order_and_outcomes():
    targets = [Target(f"127.0.0.{i}", 5060, "udp", "x") for i in range(1, 5)]
    tried = []

    def attempt_with(outcomes):
        async def attempt(target):
            tried.append(target.address)
            outcome = outcomes[target.address]
            if isinstance(outcome, Exception):
                raise outcome
            return SimpleNamespace(status=outcome)
        return attempt

    outcomes = {"127.0.0.1": TransportError("refused"), "127.0.0.2": TransactionTimeout("F"),
                "127.0.0.3": 503, "127.0.0.4": 200}
    response = await send_with_failover(targets, attempt_with(outcomes))
    assert response.status == 200 and tried == [t.address for t in targets]

    tried.clear()
    outcomes["127.0.0.2"] = 404  # a final answer other than 503 stops the walk
    assert (await send_with_failover(targets, attempt_with(outcomes))).status == 404
    assert tried == ["127.0.0.1", "127.0.0.2"]

    outcomes = {a: 503 for a in outcomes}
    assert (await send_with_failover(targets, attempt_with(outcomes))).status == 503
    outcomes = {a: TransportError("down") for a in outcomes}
    with pytest.raises(TransportError):
        await send_with_failover(targets, attempt_with(outcomes))
    with pytest.raises(TransportError):
        await send_with_failover([], attempt_with(outcomes))


# ---- RFC 3263 failover against real Kamailio servers -------------------------------------

@pytest.fixture(scope="module")
def busy_kamailio(tmp_path_factory, kamailio):
    """A second Kamailio that answers 503 to everything (a server being drained)."""
    from tests.support.kamailio import Kamailio, KamailioConfig

    busy = Kamailio(tmp_path_factory.mktemp("busy"), KamailioConfig(
        request_hook='    sl_send_reply("503", "Service Unavailable");\n    exit;'))
    busy.start()
    yield busy
    busy.stop()


@pytest.fixture
async def sip_zone(kamailio, busy_kamailio):
    from tests.support.kamailio import free_port

    dead_tcp, dead_udp = free_port(), free_port(socket.SOCK_DGRAM)  # nobody listens there
    domain = kamailio.domain
    zone = {
        (domain, "NAPTR"): [(60, f'10 10 "s" "SIPS+D2T" "" _sips._tcp.{domain}.'),
                            (60, f'20 10 "s" "SIP+D2T" "" _sip._tcp.{domain}.'),
                            (60, f'30 10 "s" "SIP+D2U" "" _sip._udp.{domain}.')],
        (f"_sips._tcp.{domain}", "SRV"): [(60, f"10 0 {dead_tcp} dead.{domain}."),
                                          (60, f"20 0 {kamailio.tls_port} kam.{domain}.")],
        (f"_sip._tcp.{domain}", "SRV"): [(60, f"10 0 {dead_tcp} dead.{domain}."),
                                         (60, f"20 0 {busy_kamailio.tcp_port} busy.{domain}."),
                                         (60, f"30 0 {kamailio.tcp_port} kam.{domain}.")],
        (f"_sip._udp.{domain}", "SRV"): [(60, f"10 0 {dead_udp} dead.{domain}."),
                                         (60, f"20 0 {kamailio.udp_port} kam.{domain}.")],
        (f"dead.{domain}", "A"): [(60, "127.0.0.1")],
        (f"busy.{domain}", "A"): [(60, "127.0.0.1")],
        (f"kam.{domain}", "A"): [(60, "127.0.0.1")],
    }
    server = await DnsServer(zone).start()
    yield server
    server.close()


@pytest.mark.kamailio
@pytest.mark.parametrize("transport, secure", [("tcp", False), ("udp", False), (None, True)])
async def test_failover_reaches_kamailio_after_dead_and_busy_targets(
        kamailio, sip_zone, make_stack, transport, secure):
    from gateway.sip.transaction import TimerSettings
    from gateway.sip.transport import TransportSettings

    resolver = Resolver(DnsSettings(nameservers=("127.0.0.1",), port=sip_zone.port))
    targets = await resolver.resolve(kamailio.domain, transport=transport, secure=secure)
    assert targets[0].port != targets[-1].port and targets[-1].address == "127.0.0.1"
    stack = make_stack(TransportSettings(tls_ca_file=str(kamailio.ca_file)),
                       TimerSettings(t1=0.02, t2=0.1, t4=0.1))
    await stack.transport.listen("udp", "127.0.0.1")
    outcomes = []

    async def attempt(target):
        try:
            flow = await stack.transport.connect(target)
            request = stack.request("OPTIONS", flow, f"sip:{kamailio.domain}")
            response = await stack.transactions.send(request, flow)
        except Exception as exc:
            outcomes.append((target.port, type(exc).__name__))
            raise
        outcomes.append((target.port, response.status))
        return response

    response = await send_with_failover(targets, attempt)
    assert response.status == 200
    assert outcomes[-1] == (kamailio.port(transport or "tls"), 200)
    expected_first = {"tcp": "TransportError", "udp": "TransactionTimeout", None: "TransportError"}
    assert outcomes[0][1] == expected_first[transport]
    if transport == "tcp":
        assert [o[1] for o in outcomes] == ["TransportError", 503, 200]
    else:
        assert len(outcomes) == 2
    assert all(t.server_name == kamailio.domain for t in targets)


async def test_in_flight_work_is_shared_and_a_cancelled_owner_fails_the_rest():
    import asyncio

    from gateway.sip.inflight import InFlight

    flight = InFlight("lookup")
    gate, calls = asyncio.Event(), []

    async def work():
        calls.append(1)
        await gate.wait()
        return 42

    owner = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    follower = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    owner.cancel()
    with pytest.raises(TransportError, match="lookup abandoned"):
        await follower
    assert len(calls) == 1 and len(flight) == 0
    both = asyncio.gather(flight.run("k", work), flight.run("k", work))
    await asyncio.sleep(0)
    gate.set()
    assert await both == [42, 42] and len(calls) == 2
