"""How the registration client reads what registrars answer, on the wire (UDP) against a
scripted registrar fed with real responses from tests/sip/corpus/shared: 423 with
Min-Expires, 403, 3xx to another registrar, 503 with Retry-After, a 200 listing several
contacts or not ours."""

import time
from pathlib import Path

import pytest

from gateway.errors import TransportError
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.pacing import Pacer
from gateway.sip.parsing import parse_message
from gateway.sip.registration import RegistrationClient, RegistrationContext, RegistrationSettings
from gateway.sip.transaction import TimerSettings
from gateway.timers import TimerWheel
from tests.support.ports import free_port
from tests.support.scripted_registrar import ScriptedRegistrar, response

from .conftest import settled, udp_client

CORPUS = Path(__file__).parents[1] / "sip" / "corpus" / "shared"
OK = response(200, "OK", "Contact: {contact};expires=120")


@pytest.fixture
async def stack():
    wheel = TimerWheel()
    endpoint = SipEndpoint(wheel, timers=TimerSettings(t1=0.05, t2=0.2))
    reports = []
    settings = RegistrationSettings(retry_base=5.0, retry_max=60.0, unauthorized_retry=100.0,
                                    unauthorized_retry_max=1000.0)
    ctx = RegistrationContext(endpoint, Pacer(wheel, 100, 10, 100, 10), settings,
                              report=lambda c, state, error, until: reports.append((state, error)))
    ctx.reports = reports
    registrars = []

    async def registrar(script):
        scripted = await ScriptedRegistrar(script).start()
        registrars.append(scripted)
        return scripted

    ctx.registrar = registrar
    yield ctx
    for scripted in registrars:
        scripted.close()
    await endpoint.close()
    wheel.close()


async def test_423_min_expires_from_a_real_pbx(stack):
    too_brief = (CORPUS / "24-officeserv7400-423-min-expires.sip").read_bytes()
    # its publisher left placeholders where the routing fields were; the registrar puts
    # the request's own there anyway
    too_brief = too_brief.replace(b"__cseq__", b"1").replace(b"__callid__", b"x")
    registrar = await stack.registrar([too_brief, response(200, "OK", "Contact: {contact};expires=3200")])
    c = udp_client(stack, registrar.port, expires=600)
    c.start()
    assert await settled(c) == "registered"
    asked = [r.get("Expires") for r in registrar.requests]
    assert asked == ["600", "3200"]
    assert c.granted == 3200 and c.expires == 3200  # refreshes ask for 3200 from now on
    c.close()


async def test_403_from_asterisk_is_unauthorized_with_a_slow_retry(stack):
    forbidden = (CORPUS / "21-asterisk-403-register-blueface.sip").read_bytes()
    registrar = await stack.registrar([forbidden])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "unauthorized"
    assert stack.reports[-1] == ("unauthorized", "403 Forbidden")
    # first retry between 75 and 100 % of unauthorized_retry (100 s)
    assert 74 < c.next_attempt - time.monotonic() <= 100
    assert len(registrar.requests) == 1
    c.close()


async def test_302_moves_to_the_new_registrar(stack):
    second = await stack.registrar([OK])
    first = await stack.registrar([response(
        302, "Moved Temporarily", f"Contact: <sip:127.0.0.1:{second.port};transport=udp>")])
    c = udp_client(stack, first.port)
    c.start()
    assert await settled(c) == "registered"
    assert len(first.requests) == 1 and len(second.requests) == 1
    assert second.requests[0].uri_text == f"sip:127.0.0.1:{second.port};transport=udp"
    c.close()


async def test_503_retry_after_sets_the_next_attempt(stack):
    registrar = await stack.registrar([response(503, "Service Unavailable", "Retry-After: 17")])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "error"
    assert stack.reports[-1] == ("error", "503 Service Unavailable")
    assert 16 < c.next_attempt - time.monotonic() <= 17
    c.close()


async def test_500_without_retry_after_backs_off_exponentially(stack):
    registrar = await stack.registrar([response(500, "Server Internal Error")])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "error"
    first = c.next_attempt - time.monotonic()
    assert 2.4 < first <= 5.0  # retry_base 5 s, drawn in 50-100 %
    c.failures = 4
    c._failed("error", "again", None)
    # fifth failure: 5 * 2^4 = 80 s, capped at retry_max (60 s), drawn in 50-100 %
    assert 29.9 < c.next_attempt - time.monotonic() <= 60.0
    c.close()


async def test_granted_expiry_is_read_from_our_contact_among_several(stack):
    registrar = await stack.registrar([response(
        200, "OK", "Contact: <sip:someone-else@192.0.2.9>;expires=999, {contact};expires=42")])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "registered"
    assert c.granted == 42
    # refresh a tenth early at most 2 minutes, jitter only earlier: within 37.8 .. 37.8*0.9
    assert 33.9 < c.next_attempt - time.monotonic() <= 38.0
    c.close()


async def test_200_without_our_contact_is_an_error(stack):
    registrar = await stack.registrar([response(200, "OK", "Contact: <sip:other@192.0.2.9>;expires=60")])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "error"
    assert "does not list our Contact" in stack.reports[-1][1]
    c.close()


async def test_flexisip_challenge_then_ok_on_the_wire(stack):
    challenge = (CORPUS / "04-flexisip-401-tls-qop-opaque.sip").read_bytes()
    registrar = await stack.registrar([challenge, OK])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "registered"
    second = registrar.requests[1].get("Authorization")
    assert 'opaque="+GNywA=="' in second and "qop=auth" in second and "nc=00000001" in second
    assert registrar.requests[1].cseq.number == registrar.requests[0].cseq.number + 1
    assert registrar.requests[1].call_id == registrar.requests[0].call_id
    c.close()


async def test_unregister_sends_expires_zero_for_our_contact_only(stack):
    registrar = await stack.registrar([OK, response(200, "OK")])
    c = udp_client(stack, registrar.port)
    c.start()
    assert await settled(c) == "registered"
    await c.unregister()
    last = registrar.requests[-1]
    assert last.get("Expires") == "0"
    assert last.contacts[0].uri.user == "gwtoken1" and not last.contacts[0].wildcard


async def test_each_transaction_is_counted_in_the_metrics(stack):
    from gateway import metrics

    def counts():
        results = metrics.REGISTER_RESULTS.values
        return (metrics.REGISTER_SENT.values[()], results[("challenged",)],
                results[("registered",)], results[("rejected",)], results[("unregistered",)])

    challenge = (CORPUS / "04-flexisip-401-tls-qop-opaque.sip").read_bytes()
    registrar = await stack.registrar([challenge, response(423, "Interval Too Brief", "Min-Expires: 900"),
                                       response(200, "OK", "Contact: {contact};expires=900"),
                                       response(200, "OK")])
    before = counts()
    c = udp_client(stack, registrar.port, expires=300)
    c.start()
    assert await settled(c) == "registered", stack.reports
    await c.unregister()
    after = counts()
    assert [a - b for a, b in zip(after, before)] == [4, 1, 1, 1, 1]


# -- the REGISTER as written: the bytes handed to the transaction (sent as they are, not
# re-serialized) are what the parsed request encodes to; the one-target shortcut past
# send_with_failover fails the way the general path does

CHALLENGE = (b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
             b"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>;tag=b\r\n"
             b"Call-ID: c\r\nCSeq: 1 REGISTER\r\n"
             b'WWW-Authenticate: Digest realm="example.com", nonce="n0nce", qop="auth", '
             b'opaque="op"\r\nContent-Length: 0\r\n\r\n')



@pytest.mark.parametrize("proxy", [None, "sip:127.0.0.1:5999"])
async def test_wire_is_what_the_request_encodes_to(stack, proxy):
    c = udp_client(stack, 5098, outbound_proxy=proxy)
    flow = await stack.endpoint.transport.connect(
        (await c._targets(c.outbound_proxy or c.target))[0])
    for challenged in (False, True):
        if challenged:
            c.digest.challenged(parse_message(CHALLENGE))
        request, wire = c._request(flow, 600)
        assert request.encode() == wire
        assert request.method == "REGISTER" and request.get("Expires") == "600"
        assert request.branch.startswith("z9hG4bK")
        assert (request.get("Route") is not None) == (proxy is not None)
        assert (request.get("Authorization") is not None) == challenged
    assert request.cseq.number == 2


@pytest.mark.parametrize("shortcut", [True, False])
async def test_single_target_failure_reads_like_the_failover_path(stack, shortcut):
    c = udp_client(stack, free_port())  # nobody listens there: timer F fires
    target = (await c._targets(c.target))[0]
    if shortcut:
        await stack.endpoint.transport.connect(target)  # a UDP socket: a flow at hand
        assert c._ready_flow() is not None
        failing = c._transaction(600)
    else:
        failing = c._send(600)  # through send_with_failover
    with pytest.raises(TransportError, match="all 1 SIP targets failed") as caught:
        await failing
    assert "timer F" in str(caught.value.__cause__)


async def test_unsupported_transport_fails_alike_on_every_attempt(stack):
    c = RegistrationClient(stack, key="i1", token="gwtoken1", instance_urn="urn:uuid:1",
                           aor="sip:alice@example.com", username="alice",
                           password_source=lambda: "pw",
                           registrar="sip:127.0.0.1:5060;transport=sctp")
    for _ in range(2):  # the first fills the target cache, the second may take the shortcut
        with pytest.raises(TransportError, match="all 1 SIP targets failed"):
            await c._transaction(600)
