"""The common registration cycle (`gateway.sip.regcycle` and its compiled twin
`gateway._regcycle`): started on the wire, ended (bound, refresh on the wheel, state
reported, slot given back) and ramped the same way by both twins, with the same requests
on the wire. Against a scripted registrar on loopback UDP."""

import asyncio
import re
import time
from contextlib import asynccontextmanager

import pytest

from gateway.errors import ParseError
from gateway.sip.digest import DigestClient
from gateway.sip import registration
from gateway.sip.registration import RegistrationClient, contact_token, instance_urn
from tests.support.scripted_registrar import ScriptedRegistrar
from tests.twins import load_both

from .conftest import settled, udp_client
from .test_regwire import SCRIPTS

CYCLES = load_both("_regcycle", "sip.regcycle")
HEADERS = ("Max-Forwards", "Route", "From", "To", "Call-ID", "CSeq", "Contact", "Expires",
           "User-Agent", "Authorization")


@pytest.fixture
def use_cycle(monkeypatch):
    def use(module):
        monkeypatch.setattr(registration, "_cycle", module)
    return use


def seen(registrar, client) -> list:
    """The client's requests as the registrar read them, its own ids and the stack's
    ports and digest (they differ from one run to the next) masked."""
    out = []
    for request in registrar.requests:
        if request.call_id != client.call_id:
            continue
        assert request.from_tag == client.from_tag
        text = repr([request.get(name) for name in HEADERS] + [request.uri_text])
        for value in (client.call_id, client.from_tag):
            text = text.replace(value, "<id>")
        out.append(re.sub(r':\d{4,5}\b|response="\w+"|cnonce="\w+"', "~", text))
    return out


async def register_kinds(make_stack, module, use_cycle) -> list:
    use_cycle(module)
    ctx = await make_stack(registration._wire)
    # every client challenged once (they register one after the other)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"] * 20).start()
    port = registrar.port
    proxy = f"sip:127.0.0.1:{port};transport=udp"
    reports = []
    ctx.report = lambda client, state, error, until: reports.append(
        (client.key, state, error, round(until - time.time() - (client.granted or 0))
         if until else None))
    try:
        # the first client of a hop learns its address on the general code
        for outbound in (None, proxy):
            warm = udp_client(ctx, port, outbound_proxy=outbound)
            warm.start()
            assert await settled(warm, 5.0) == "registered"
            warm.close()
        # an AOR that cannot be written: an error state, and nothing of it in the next
        bad = RegistrationClient(ctx, key="bad", token="gwbad", instance_urn="urn:uuid:b",
                                 aor="sip:\ud800@example.com", username="bob",
                                 password_source=lambda: "pw", registrar=warm.target.__str__())
        bad.start()
        assert await settled(bad, 5.0) == "error"
        bad.close()
        kinds = [
            udp_client(ctx, port, expires=600),
            RegistrationClient(ctx, key="zoë-2", aor="sip:zoë@example.com", username="zoë",
                               password_source=lambda: "pwé",
                               registrar=f"sip:127.0.0.1:{port};transport=udp"),
            RegistrationClient(ctx, key="i3", token="gw3", instance_urn="urn:uuid:3",
                               aor="sip:carol@example.com", username="carol",
                               password_source=lambda: "pw", outbound_proxy=proxy,
                               registrar="sip:example.com", expires=300),
        ]
        outcome = []
        for c in kinds:
            reports.clear()
            c.start(announce=False)
            on_wire = c.exchange_task is not None and not isinstance(c.exchange_task,
                                                                     asyncio.Task)
            state = await settled(c, 5.0)
            delay = c.next_attempt - time.monotonic() if c.next_attempt else None
            outcome.append((c.key, on_wire, state, c.granted, c.last_error, list(reports),
                            delay is not None and 0 < delay <= 108.0,
                            c.flow is not None and c.flow.users, ctx.in_flight.free,
                            bool(ctx.wire.pending), seen(registrar, c)))
            c.close()
        return outcome
    finally:
        registrar.close()


async def test_both_cycles_write_the_same_requests_to_the_same_end(make_stack, use_cycle):
    outcomes = [await register_kinds(make_stack, module.values[0], use_cycle)
                for module in CYCLES]
    first = outcomes[0]
    assert all(outcome == first for outcome in outcomes[1:]), outcomes
    plain, derived, proxied = first
    assert plain[1:5] == (True, "registered", 120, None)
    assert plain[5] == [("i1", "registered", None, 0)]  # reported once, until = now + 120
    assert plain[6:10] == (True, 1, 200, False)  # refresh due, bound, slot back, no branch
    first_request, answer = plain[10]
    assert "'600'" in first_request and "'2 REGISTER'" in answer
    assert 'Digest username="alice", realm="example.com", nonce="abc123"' in answer
    assert derived[1:3] == (True, "registered")
    contact = derived[10][0]
    assert contact_token("zoë-2") in contact and instance_urn("zoë-2") in contact
    assert "<sip:zoë@example.com>;tag=<id>" in contact
    assert "'None'" not in repr(derived) and "None, '<sip:zo" in contact  # no Route
    assert proxied[1:3] == (True, "registered") and len(proxied[10]) == 2
    assert "'<sip:127.0.0.1~;transport=udp;lr>'" in proxied[10][0]
    assert "'sip:example.com'" in proxied[10][0]


@pytest.mark.parametrize("module", CYCLES)
async def test_a_ramp_registers_every_client_through_its_window(make_stack, use_cycle, module):
    use_cycle(module)
    ctx = await make_stack(registration._wire)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"]).start()
    try:
        warm = udp_client(ctx, registrar.port)
        warm.start()
        assert await settled(warm, 5.0) == "registered"
        clients = [RegistrationClient(ctx, key=f"k{n}", token=f"gw{n}", instance_urn=f"urn:{n}",
                                      aor=f"sip:u{n}@example.com", username=f"u{n}",
                                      password_source=lambda: "pw",
                                      registrar=f"sip:127.0.0.1:{registrar.port};transport=udp")
                   for n in range(30)]
        clients[3].start()  # started meanwhile: the ramp passes it over
        await ctx.ramp(clients, 5, wanted=lambda client: client.key != "k7")
        assert ctx.in_flight.free >= 195  # never more than the window under way
        for c in clients:
            if c.key != "k7":
                assert await settled(c, 5.0) == "registered", c.key
        assert clients[7].state == "idle" and not clients[7].active
        assert ctx.in_flight.free == 200 and not ctx._ramping and not ctx.wire.pending
        now = time.monotonic()
        for c in clients:
            if c.key != "k7":
                assert 97.2 - 1 <= c.next_attempt - now <= 108.0  # 120 s granted: 10 % jitter
        assert len(registrar.requests) == 2 + 29  # (the registrar challenges the first only)
        for c in clients + [warm]:
            c.close()
    finally:
        registrar.close()


@pytest.mark.parametrize("module", CYCLES)
def test_ids_are_144_random_bits_each_drawn_once(module):
    ids = [module.new_ids() for _ in range(2000)]  # several pools' worth
    assert len(set(ids)) == len(ids) and all(0 <= value < 1 << 144 for value in ids)
    assert max(ids).bit_length() > 136  # the whole width is used


@pytest.mark.parametrize("module", CYCLES)
async def test_with_sip_tracing_on_the_exchange_goes_in_a_task_and_gives_its_slot_back(
        make_stack, use_cycle, module):
    from gateway.sip.flow import trace

    use_cycle(module)
    ctx = await make_stack(registration._wire)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"]).start()
    level = trace.level
    try:
        warm = udp_client(ctx, registrar.port)
        warm.start()
        assert await settled(warm, 5.0) == "registered"
        trace.setLevel("DEBUG")  # requests and responses logged: the general path
        c = udp_client(ctx, registrar.port, expires=300)
        c.start()
        assert isinstance(c.exchange_task, asyncio.Task)
        assert await settled(c, 5.0) == "registered"
        await asyncio.sleep(0)  # (the task ends)
        assert ctx.in_flight.free == 200 and c.exchange_task is None
        warm.close()
        c.close()
    finally:
        trace.setLevel(level)
        registrar.close()


@pytest.mark.parametrize("module", CYCLES)
async def test_the_metrics_hook_hears_each_common_registration_and_the_default_one_nothing(
        make_stack, use_cycle, module):
    use_cycle(module)
    ctx = await make_stack(registration._wire)
    assert ctx.on_register_result is registration.ignore_result
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"] * 3).start()
    try:
        warm = udp_client(ctx, registrar.port)  # (learns the hop's address: general code)
        warm.start()
        assert await settled(warm, 5.0) == "registered"  # heard by nobody: no error
        results = []
        ctx.on_register_result = lambda outcome, rtt: results.append((outcome, rtt))
        c = udp_client(ctx, registrar.port, expires=300)
        c.start()
        assert c.exchange_task is not None and not isinstance(c.exchange_task, asyncio.Task)
        assert await settled(c, 5.0) == "registered"
        assert [outcome for outcome, _ in results] == ["registered"]
        assert 0.0 <= results[0][1] < 5.0
        warm.close()
        c.close()
    finally:
        registrar.close()


@pytest.mark.parametrize("module", CYCLES)
def test_a_client_class_given_to_construct_fast_is_built_as_the_ordinary_call_builds_it(
        module):
    class Client(module.ClientState):
        __slots__ = ("__weakref__",)

    module.construct_fast(Client)
    registrar = "sip:127.0.0.1:5999;transport=udp"
    password = lambda: "pw"  # noqa: E731
    common = dict(aor="sip:k@example.com", username="k", password_source=password,
                  registrar=registrar)

    plain = Client(None, key="k", **common)
    assert (plain.ctx, plain.key, plain._token, plain.instance_urn, plain.aor,
            plain.outbound_proxy, plain.expires, plain.state, plain.cseq, plain.flow,
            plain.active) == (None, "k", None, None, "sip:k@example.com", None, 3600,
                              "idle", 0, None, False)
    assert plain.target is registration._shared_uri(registrar, True)
    # its digest client as `DigestClient(username, password_source)` makes one
    reference = DigestClient("k", password)
    fields = ("username", "password_source", "_ha1", "_ha1_key", "_challenge", "_nonce",
              "_nc", "_cnonce", "algorithm", "realm")
    assert type(plain.digest) is type(reference)
    assert [getattr(plain.digest, f) for f in fields] == [getattr(reference, f) for f in fields]
    full = Client("ctx", key="k", token="t", instance_urn="urn:x", outbound_proxy=
                  "sip:proxy.example.com", expires=60, **common)
    assert (full.ctx, full._token, full.instance_urn, full.expires) == ("ctx", "t",
                                                                       "urn:x", 60)
    assert full.outbound_proxy is registration._shared_uri("sip:proxy.example.com", False)
    assert plain._ids != full._ids
    # keywords spelled at run time (not interned), in any order
    spelled = Client(None, **{"".join(["ke", "y"]): "k2"}, **dict(reversed(common.items())))
    assert (spelled.key, spelled.aor) == ("k2", "sip:k@example.com")

    # what the ordinary call refuses is refused the same way
    with pytest.raises(TypeError, match="key"):
        Client(None, **common)
    with pytest.raises(TypeError, match="bogus"):
        Client(None, key="k", bogus=1, **common)
    with pytest.raises(TypeError):
        Client(None, None, key="k", **common)
    with pytest.raises(TypeError):
        Client(key="k", **common)
    with pytest.raises(ParseError):
        Client(None, key="k", **{**common, "registrar": "nonsense"})
    with pytest.raises(TypeError):
        module.construct_fast(object)

    # a subclass with its own constructor, or one given later, has it run
    class Own(Client):
        __slots__ = ()

        def __init__(self, ctx, **kwargs):
            super().__init__(ctx, **kwargs)
            self.state = "own"

    assert Own(None, key="k", **common).state == "own"
    ordinary = Client.__init__

    def patched(self, ctx, **kwargs):
        ordinary(self, ctx, **kwargs)
        self.state = "patched"

    Client.__init__ = patched
    assert Client(None, key="k", **common).state == "patched"


@asynccontextmanager
async def warmed_up(make_stack, use_cycle, module):
    """(ctx, registrar): a context on `module`'s cycle and a scripted registrar (401,
    then 200, to every client), one client registered already (it learnt the hop's
    address on the general code, so the next ones take the wire path)."""
    use_cycle(module)
    ctx = await make_stack(registration._wire)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"] * 2).start()
    try:
        warm = udp_client(ctx, registrar.port)
        warm.start()
        assert await settled(warm, 5.0) == "registered"
        yield ctx, registrar
        warm.close()
    finally:
        registrar.close()


@pytest.mark.parametrize("module", CYCLES)
async def test_the_ids_a_client_is_given_are_the_ones_its_requests_carry(
        make_stack, use_cycle, module):
    # (compiled, `_ids` is kept as 18 bytes in the client's struct and read from there
    # when a REGISTER is written: set, read back and written out, it stays the same)
    async with warmed_up(make_stack, use_cycle, module) as (ctx, registrar):
        c = udp_client(ctx, registrar.port, expires=300)
        value = int("0123456789abcdef0011223344556677889a", 16)  # (144 bits)
        c._ids = value
        assert c._ids == value and type(c._ids) is int
        assert (c.call_id, c.from_tag) == (f"{value >> 48:024x}", f"{value & 0xFFFFFFFFFFFF:012x}")
        c.start()
        assert c.exchange_task is not None and not isinstance(c.exchange_task, asyncio.Task)
        assert await settled(c, 5.0) == "registered"
        mine = [r for r in registrar.requests if r.call_id == c.call_id]
        assert len(mine) == 2 and {r.from_tag for r in mine} == {c.from_tag}
        c._ids = 0  # (the smallest: written with its leading zeros)
        assert (c.call_id, c.from_tag) == ("0" * 24, "0" * 12)
        c.close()


@pytest.mark.parametrize("module", CYCLES[1:])  # (the twin keeps whatever it is given)
def test_compiled_ids_refuse_what_does_not_fit_in_144_bits_and_keep_theirs(module):
    client = module.ClientState(None, key="k", aor="sip:k@example.com", username="k",
                                  password_source=lambda: "pw",
                                  registrar="sip:127.0.0.1:5999;transport=udp")
    before = client._ids
    for wrong in (1 << 144, -1):
        with pytest.raises(OverflowError):
            client._ids = wrong
    with pytest.raises(TypeError):
        client._ids = "1"
    assert client._ids == before


@pytest.mark.parametrize("module", CYCLES)
async def test_a_ready_flow_that_is_not_udp_goes_to_the_general_path_after_udp_ones(
        make_stack, use_cycle, module):
    # (compiled, the flow last found to be UDP is kept: another flow is asked again)
    async with warmed_up(make_stack, use_cycle, module) as (ctx, registrar):
        on_wire = udp_client(ctx, registrar.port, expires=300)
        on_wire.start()
        assert not isinstance(on_wire.exchange_task, asyncio.Task)  # the UDP flow, kept
        assert await settled(on_wire, 5.0) == "registered"
        hop, flow = ctx.last_ready
        assert flow.transport == "udp"

        class NotUdp:
            closed = False
            transport = "tcp"

        ctx.last_ready = (hop, NotUdp())
        other = udp_client(ctx, registrar.port, expires=300)
        other.start()
        assert isinstance(other.exchange_task, asyncio.Task)
        other.close()
        ctx.last_ready = (hop, flow)  # the UDP flow again: the wire path again
        again = udp_client(ctx, registrar.port, expires=300)
        again.start()
        assert not isinstance(again.exchange_task, asyncio.Task)
        for c in (on_wire, again):
            c.close()
