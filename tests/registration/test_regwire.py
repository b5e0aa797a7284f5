"""The wire path of REGISTER exchanges (`gateway.sip.regwire` and its compiled twin
`gateway._regwire`) against the general path: the same scripted answers (real responses
from tests/sip/corpus/shared, and crafted ones) must give the same requests on the wire,
the same outcome and the same metrics, whether each twin of the wire path reads them or
the general path (parser, transactions) does. Over UDP on loopback."""

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest

from gateway import metrics
from gateway.errors import TransportError
from gateway.sip.dns import Target
from gateway.sip.parsing import parse_message
from gateway.sip.registration import RegistrationClient
from tests.support.scripted_registrar import ScriptedRegistrar, response
from tests.twins import load_both

from .conftest import settled, udp_client

CORPUS = Path(__file__).parents[1] / "sip" / "corpus" / "shared"
OK = response(200, "OK", "Contact: {contact};expires=120")
MODES = load_both("_regwire", "sip.regwire") + [pytest.param(None, id="general")]


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def challenge(value: str, status: int = 401) -> bytes:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    reason = "Unauthorized" if status == 401 else "Proxy Authentication Required"
    return response(status, reason, f"{header}: {value}")


SCRIPTS = {
    "kamailio-like": [challenge('Digest realm="example.com", nonce="abc123", qop="auth"'), OK],
    "flexisip-qop-opaque": [corpus("04-flexisip-401-tls-qop-opaque.sip"), OK],
    "cirpack-stale-false": [corpus("05-cirpack-ovh-401-stale-false.sip"), OK],
    "cirpack-folded": [corpus("06-cirpack-ovh-401-empty-reason-folded.sip"), OK],
    "lync-no-digest": [corpus("12-lync2013-401-three-challenges.sip"), OK],
    "two-challenges": [response(401, "Unauthorized",
                                'WWW-Authenticate: Digest realm="r", nonce="n1", algorithm=MD5',
                                'WWW-Authenticate: Digest realm="r", nonce="n2", algorithm=SHA-256'),
                       OK],
    "escaped-nonce": [challenge(r'Digest realm="r", nonce="a\"b", algorithm=MD5'), OK],
    "sha256-sess": [challenge('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth,auth-int"'), OK],
    "auth-int-only": [challenge('Digest realm="r", nonce="n", qop="auth-int"'), OK],
    "basic": [challenge('Basic realm="r"'), OK],
    "407": [challenge('Digest realm="r", nonce="n7"', 407), OK],
    "rejected": [challenge('Digest realm="r", nonce="same"')],
    "stale-then-ok": [challenge('Digest realm="r", nonce="n1"'),
                      challenge('Digest realm="r", nonce="n2", stale=TRUE'), OK],
    "200-others-only": [corpus("16-flexisip-200-two-contacts-pn.sip")],
    "200-comma-contacts": [corpus("18-pulver-fwd-200-comma-contacts.sip")],
    "200-compact-contact": [response(200, "OK", "m: {contact};expires=77")],
    "200-expires-header": [response(200, "OK", "Contact: {contact}", "Expires: 66")],
    "200-quoted-name": [response(200, "OK", 'Contact: "a, b" {contact};expires=55')],
    "200-spaced-expires": [response(200, "OK", "Contact: {contact} ; EXPIRES = 44 ;x")],
    "200-long-expires": [response(200, "OK", "Contact: {contact};expires=12345678901")],
    "423": [corpus("24-officeserv7400-423-min-expires.sip").replace(b"__cseq__", b"1")
            .replace(b"__callid__", b"x"), OK],
    "403": [corpus("21-asterisk-403-register-blueface.sip")],
    "503-retry-after": [response(503, "Service Unavailable", "Retry-After: 42")],
}


def snapshot() -> dict:
    return {name: dict(recorder.values) for name, recorder in
            (("sent", metrics.REGISTER_SENT), ("results", metrics.REGISTER_RESULTS))} | {
        "rtt": metrics.REGISTER_RTT.count(),
        "sip_out": metrics.SIP_REQUESTS.total(direction="out", method="REGISTER"),
        "sip_in": metrics.SIP_RESPONSES.total(direction="in")}


def delta(before: dict, after: dict) -> dict:
    out = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = {k: v - before[key][k] for k, v in value.items() if v != before[key][k]}
        else:
            out[key] = value - before[key]
    return out


async def run_script(make_stack, mode, script, **kwargs):
    ctx = await make_stack(mode)
    registrar = await ScriptedRegistrar(script).start()
    try:
        c = udp_client(ctx, registrar.port, **kwargs)
        before = snapshot()
        c.start()
        state = await settled(c, 5.0)
        # ports differ from one stack to the next (and so the digest of the Request-URI),
        # cnonces from one nonce taken to the next
        seen = [re.sub(r':\d{4,5}\b|response="\w+"|cnonce="\w+"', "~", repr(
            (r.get("CSeq"), r.get("Expires"), r.get("Contact"), r.get("Authorization"),
             r.get("Proxy-Authorization"), r.uri_text))) for r in registrar.requests]
        outcome = (state, c.last_error, c.granted, c.expires, seen, delta(before, snapshot()))
        c.close()
        return outcome
    finally:
        registrar.close()


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_every_twin_answers_as_the_general_path(make_stack, name):
    outcomes = [await run_script(make_stack, mode.values[0], SCRIPTS[name]) for mode in MODES]
    assert all(outcome == outcomes[-1] for outcome in outcomes), outcomes


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_the_wire_takes_the_common_exchange(make_stack, wire):
    ctx = await make_stack(wire)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"]).start()
    try:
        c = udp_client(ctx, registrar.port)
        outcome = await c._exchange(600)
        assert outcome == 120 and not ctx.wire.pending
        assert [r.cseq.number for r in registrar.requests] == [1, 2]
        assert c.flow is not None and c.flow.users == 1  # bound, as the general path binds
        c.close()
    finally:
        registrar.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_a_started_registration_runs_without_a_task(make_stack, wire):
    """`start()` with a slot and the pacer's tokens free runs the exchange on the wire
    with no task; what the wire hands back (a 423) goes on in one, to the same end."""
    ctx = await make_stack(wire)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"] + SCRIPTS["423"]).start()
    try:
        first = udp_client(ctx, registrar.port)
        first.start()
        assert await settled(first, 5.0) == "registered"  # (learns the registrar's address)
        c = udp_client(ctx, registrar.port, expires=600)
        c.start()
        handle = c.exchange_task
        assert handle is not None and not isinstance(handle, asyncio.Task)
        assert ctx.in_flight.free == 199
        assert await settled(c, 5.0) == "registered" and c.granted == 120
        assert c.expires == 3200  # the 423's Min-Expires, taken on the general code
        assert [r.get("Expires") for r in registrar.requests[2:]] == ["600", "3200"]
        assert ctx.in_flight.free == 200 and not ctx.wire.pending and c.exchange_task is None
        first.close()
        c.close()
    finally:
        registrar.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_a_request_that_cannot_be_written_is_an_error_state_not_a_crash(make_stack, wire):
    ctx = await make_stack(wire)
    registrar = await ScriptedRegistrar(SCRIPTS["kamailio-like"]).start()
    try:
        first = udp_client(ctx, registrar.port)
        first.start()
        assert await settled(first, 5.0) == "registered"  # (learns the registrar's address)
        bad = RegistrationClient(ctx, key="i2", token="gwtoken2", instance_urn="urn:uuid:2",
                                 aor="sip:\ud800@example.com", username="bob",
                                 password_source=lambda: "pw", registrar=first.target.__str__())
        bad.start()  # the AOR cannot be written as UTF-8: nothing escapes start()
        assert await settled(bad, 5.0) == "error"
        assert bad.last_error == "internal error: UnicodeEncodeError"
        assert ctx.in_flight.free == 200 and not ctx.wire.pending
        first.close()
        bad.close()
    finally:
        registrar.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_closing_a_client_drops_its_wire_exchange_and_slot(make_stack, wire):
    ctx = await make_stack(wire)
    transport, proto, port = await answering(lambda request: [], silent=0)  # never answers
    try:
        c = udp_client(ctx, port)
        flow = await ctx.endpoint.transport.connect(Target("127.0.0.1", port, "udp", "127.0.0.1"))
        ctx.last_ready = (c.target, flow)  # as a first registration leaves it
        c.start()
        assert not isinstance(c.exchange_task, (asyncio.Task, type(None)))
        assert ctx.in_flight.free == 199 and len(ctx.wire.pending) == 1
        c.close()
        assert ctx.in_flight.free == 200 and not ctx.wire.pending
        await asyncio.sleep(0.12)  # past timer E: nothing is sent again
        assert len(proto.requests) == 1 and c.state == "registering"  # no outcome came
    finally:
        transport.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_a_flow_closed_under_an_exchange_ends_it_at_the_next_send(make_stack, wire):
    """Timer E finds the flow closed (read as it is then, not as it was when the
    exchange started): TransportError, nothing sent, nothing left pending."""
    ctx = await make_stack(wire)
    transport, proto, port = await answering(lambda request: [], silent=0)  # never answers
    try:
        c = udp_client(ctx, port)
        flow = await ctx.endpoint.transport.connect(Target("127.0.0.1", port, "udp", "127.0.0.1"))
        ctx.last_ready = (c.target, flow)
        exchange = asyncio.ensure_future(c._exchange(600))
        while not proto.requests:
            await asyncio.sleep(0.005)
        assert len(ctx.wire.pending) == 1 and not flow.closed
        flow.close()
        with pytest.raises(TransportError, match="SIP targets failed") as caught:
            await asyncio.wait_for(exchange, 2.0)
        assert "is closed" in str(caught.value.__cause__)
        assert len(proto.requests) == 1 and not ctx.wire.pending
        c.close()
    finally:
        transport.close()


class _Answering(asyncio.DatagramProtocol):
    """Answers each REGISTER with `make(request)` datagrams (a 100 first, a Via with
    received/rport...), or not at all while `silent` requests remain."""

    def __init__(self, make, silent=0):
        self.make = make
        self.silent = silent
        self.requests = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if not data.strip():
            return
        request = parse_message(data)
        self.requests.append(request)
        if self.silent > 0:
            self.silent -= 1
            return
        for datagram in self.make(request):
            self.transport.sendto(datagram, addr)


def answer(request, status, reason, via_extra="", extra=""):
    return (f"SIP/2.0 {status} {reason}\r\nVia: {request.headers.get_all('Via')[0]}{via_extra}\r\n"
            f"From: {request.get('From')}\r\nTo: {request.get('To')};tag=t\r\n"
            f"Call-ID: {request.call_id}\r\nCSeq: {request.get('CSeq')}\r\n{extra}"
            f"Content-Length: 0\r\n\r\n").encode()


async def answering(make, silent=0):
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Answering(make, silent), local_addr=("127.0.0.1", 0))
    return transport, proto, transport.get_extra_info("sockname")[1]


@pytest.mark.parametrize("mode", MODES)
async def test_provisional_received_and_retransmission(make_stack, mode):
    ctx = await make_stack(mode)

    def make(request):
        contact = request.get("Contact")
        return [answer(request, 100, "Trying"),
                answer(request, 200, "OK", ";received=192.0.2.7;rport=5099",
                       f"Contact: {contact};expires=90\r\n")]

    transport, proto, port = await answering(make, silent=1)  # the first send is lost
    try:
        c = udp_client(ctx, port)
        assert await c._exchange(600) == 90
        assert len(proto.requests) == 2  # timer E sent it again, same branch
        assert proto.requests[0].branch == proto.requests[1].branch
        assert c.flow.observed == ("192.0.2.7", 5099)
        c.close()
    finally:
        transport.close()


@pytest.mark.parametrize("mode", MODES)
async def test_each_top_via_is_noted_as_the_general_path_notes_it(make_stack, mode):
    """The flow's observed address follows every response's top Via. (The compiled wire
    remembers the last Via it read, branch aside, and what it noted from it: a Via
    that differs is read again, and a flow whose observed address changed since is
    noted again.)"""
    ctx = await make_stack(mode)
    extras = iter([";received=192.0.2.7;rport=5099", ";rport=5099",
                   ";rport=5099;ReceiveD=192.0.2.8", ";rport=5099;ReceiveD=192.0.2.8",
                   ";received=192.0.2.7;rport=5099", ";received=192.0.2.7;rport=5099"])

    def make(request):
        return [answer(request, 200, "OK", next(extras),
                       f"Contact: {request.get('Contact')};expires=90\r\n")]

    transport, proto, port = await answering(make)
    try:
        c = udp_client(ctx, port)
        seen = []
        for step in range(6):
            if step in (3, 5):
                c.flow.observed = ("198.51.100.1", 1)  # changed elsewhere meanwhile
            assert await c._exchange(600) == 90
            seen.append(c.flow.observed)
        assert seen == [("192.0.2.7", 5099), ("192.0.2.7", 5099), ("192.0.2.8", 5099),
                        ("192.0.2.8", 5099), ("192.0.2.7", 5099), ("192.0.2.7", 5099)]
        assert len({r.branch for r in proto.requests}) == 6
        c.close()
    finally:
        transport.close()


class _Timed(_Answering):
    """`_Answering` with each request's arrival time, answering the request numbered
    n (from 0) with `make(request, n)` after `delays.get(n, 0)` seconds."""

    def __init__(self, make, delays):
        super().__init__(make)
        self.delays = delays
        self.times = []

    def datagram_received(self, data, addr):
        if not data.strip():
            return
        request = parse_message(data)
        n = len(self.requests)
        self.requests.append(request)
        self.times.append(time.monotonic())
        answers = self.make(request, n)
        asyncio.get_running_loop().call_later(self.delays.get(n, 0.0), self._send, answers, addr)

    def _send(self, answers, addr):
        for datagram in answers:
            self.transport.sendto(datagram, addr)


@pytest.mark.parametrize("mode", MODES)
async def test_a_lost_answer_to_a_challenge_is_sent_again_by_timer_e(make_stack, mode):
    """The credentials' REGISTER is a new transaction: lost, it is sent again (its own
    branch) T1 after it was sent, not when the first request's timer E was due. A
    refresh (on the wire from its first request) is challenged 30 ms after it is sent,
    and the answer to that challenge is lost."""
    ctx = await make_stack(mode)

    def make(request, n):
        ok = answer(request, 200, "OK", extra=f"Contact: {request.get('Contact')};expires=70\r\n")
        # the first registration, then the refresh (later requests: retransmissions)
        return {0: [challenge_of(request, "n1")], 1: [ok],
                2: [challenge_of(request, "n2")], 3: []}.get(n, [ok])

    def challenge_of(request, nonce):
        return answer(request, 401, "Unauthorized",
                      extra=f'WWW-Authenticate: Digest realm="r", nonce="{nonce}", stale=true\r\n')

    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Timed(make, {2: 0.03}), local_addr=("127.0.0.1", 0))
    try:
        c = udp_client(ctx, transport.get_extra_info("sockname")[1])
        assert await c._exchange(600) == 70
        assert await c._exchange(600) == 70
        refresh, lost, again, *late = proto.requests[2:]
        assert 'nonce="n1"' in refresh.get("Authorization") and 'nonce="n2"' in lost.get("Authorization")
        assert again.branch == lost.branch != refresh.branch
        assert all(r.branch == lost.branch for r in late)  # (timers late on a loaded machine)
        # T1 = 50 ms after the lost one (the wheel's 10 ms tick aside), not 20 ms after
        assert proto.times[4] - proto.times[3] >= 0.035
        c.close()
    finally:
        transport.close()


async def every_other_first_request_lost(make_stack, wire) -> tuple[list, int]:
    """Six clients started 7 ms apart, the first request of every other one lost, then
    a seventh once they are registered: each one's send times, and the timers left on
    the wheel once all are closed."""
    ctx = await make_stack(wire)
    seen = {}

    def make(request):
        sends = seen.setdefault(request.call_id, [])
        sends.append(time.monotonic())
        lost = len(sends) == 1 and len(seen) % 2 == 0
        return [] if lost else [answer(request, 200, "OK", extra=(
            f"Contact: {request.get('Contact')};expires=90\r\n"))]

    transport, proto, port = await answering(make)
    try:
        clients = []
        for n in range(6):
            c = udp_client(ctx, port)
            clients.append(c)
            c.start()
            await asyncio.sleep(0.007)
        assert [await settled(c, 3.0) for c in clients] == ["registered"] * 6
        # one more, answered at once: the last to leave the queue, T1 before its timer
        last = udp_client(ctx, port)
        last.start()
        assert await settled(last, 3.0) == "registered"
        for c in clients + [last]:
            c.close()
        assert not ctx.wire.pending
        return list(seen.values()), len(ctx.endpoint.wheel)
    finally:
        transport.close()


async def test_exchanges_under_way_together_each_send_again_t1_after_their_own_request(
        make_stack):
    """Several exchanges at once: each lost first request is sent again T1 after it
    was sent, the answered ones never, on both twins. (The compiled wire keeps the
    first timers of its exchanges in one queue, oldest first, under one wheel timer;
    the oldest are answered and leave it first.) Once all are over, the compiled wire
    leaves no more timers on the wheel than the twin (the flow's)."""
    left = []
    for wire in load_both("_regwire", "sip.regwire"):
        sends, timers = await every_other_first_request_lost(make_stack, wire.values[0])
        assert [len(s) for s in sends] == [1, 2, 1, 2, 1, 2, 1]
        # T1 = 50 ms after each one's own request (the wheel's 10 ms tick aside)
        assert all(s[1] - s[0] >= 0.035 for s in sends if len(s) == 2)
        left.append(timers)
    assert len(set(left)) == 1, left


@pytest.mark.parametrize("mode", MODES)
async def test_no_answer_is_timer_f_then_error(make_stack, mode):
    ctx = await make_stack(mode)
    transport, proto, port = await answering(lambda request: [], silent=10**6)
    try:
        c = udp_client(ctx, port)
        before = snapshot()
        c.start()
        assert await settled(c, 6.0) == "error"
        assert c.last_error.startswith("all 1 SIP targets failed: REGISTER got no final response")
        # T1 = 50 ms: sends at 0, 50, 150, 350, 550, 750... ms until 3.2 s
        assert 10 <= len(proto.requests) <= 20
        change = delta(before, snapshot())
        assert change["results"] == {("transport_error",): 1} and change["sip_out"] == len(proto.requests)
        c.close()
        if ctx.wire is not None:
            assert not ctx.wire.pending
    finally:
        transport.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_a_late_final_response_is_left_to_the_general_path(make_stack, wire):
    ctx = await make_stack(wire)

    def make(request):
        contact = request.get("Contact")
        ok = answer(request, 200, "OK", extra=f"Contact: {contact};expires=90\r\n")
        return [ok, ok]  # the second is a retransmission: nobody's any more

    transport, proto, port = await answering(make)
    try:
        c = udp_client(ctx, port)
        assert await c._exchange(600) == 90
        await asyncio.sleep(0.05)
        assert not ctx.wire.pending
        assert not ctx.wire.datagram(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKnope\r\n"
                                     b"CSeq: 1 REGISTER\r\n\r\n", ("127.0.0.1", port))
        c.close()
    finally:
        transport.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_an_ended_exchange_branch_is_not_taken_by_the_next(make_stack, wire):
    """A response carrying the branch of an exchange that ended is nobody's, even once
    another exchange holds its place (the compiled wire finds exchanges by a slot
    named in the branch); only the branch sent finds its exchange."""
    ctx = await make_stack(wire)

    def ok(request):
        return answer(request, 200, "OK", extra=f"Contact: {request.get('Contact')};expires=90\r\n")

    transport, proto, port = await answering(lambda request: [ok(request)]
                                             if len(proto.requests) == 1 else [])
    try:
        c = udp_client(ctx, port)
        assert await c._exchange(600) == 90
        exchange = asyncio.ensure_future(c._exchange(600))  # never answered by the peer
        while len(proto.requests) < 2:
            await asyncio.sleep(0.005)
        first, second = proto.requests
        assert list(ctx.wire.pending) == [second.branch.encode()]
        late = ok(first).replace(first.get("CSeq").encode(), second.get("CSeq").encode())
        forged = ok(second).replace(second.branch.encode(),
                                    second.branch[:10].encode() + b"0" * 20 + second.branch[30:].encode())
        for datagram in (late, forged):
            assert not ctx.wire.datagram(datagram, ("127.0.0.1", port))
        assert not exchange.done() and len(ctx.wire.pending) == 1
        assert ctx.wire.datagram(ok(second), ("127.0.0.1", port))
        assert await exchange == 90 and not ctx.wire.pending
        c.close()
    finally:
        transport.close()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
async def test_the_sip_trace_follows_its_level_at_once(make_stack, wire, caplog):
    """Each send and receive on the wire asks whether the SIP trace is on (the compiled
    wire keeps the last "off" while logging's cache of it has not changed): turned on
    while an exchange waits for timer E, it shows the retransmission and the answer."""
    ctx = await make_stack(wire)

    def make(request):  # the first send of each exchange is lost
        if len(proto.requests) % 2:
            return []
        return [answer(request, 200, "OK", extra=f"Contact: {request.get('Contact')};expires=90\r\n")]

    transport, proto, port = await answering(make)
    trace = logging.getLogger("gateway.sip.trace")
    level = trace.level
    caplog.set_level(logging.DEBUG)  # (its handler takes what the trace logger lets by)
    try:
        c = udp_client(ctx, port)
        traced = []
        for on in (False, False, True, False, True):
            trace.setLevel(logging.INFO)
            caplog.clear()
            exchange = asyncio.ensure_future(c._exchange(600))
            sent = len(proto.requests)
            while len(proto.requests) == sent:
                await asyncio.sleep(0.002)
            if on:
                trace.setLevel(logging.DEBUG)
            assert await exchange == 90
            traced.append(sorted(r.getMessage().split(" ", 1)[0] for r in caplog.records
                                 if r.name == "gateway.sip.trace"))
        assert traced == [[], [], ["recv", "send"], [], ["recv", "send"]]
        c.close()
    finally:
        trace.setLevel(level)
        transport.close()

def accepted_pair(username: str, params: dict, password: str = "secret"):
    """Two digest clients of `username` that took the same challenge, the second given
    the first one's cnonce (each nonce taken draws one at random): what the wire writes
    for one is what the other's `authorization` says."""
    from gateway.sip.digest import DigestClient, usable

    ours, reference = (DigestClient(username, lambda: password) for _ in range(2))
    for digest in (ours, reference):
        digest.accept(401, "Authorization", params, *usable(params))
    reference._cnonce = ours._cnonce
    return ours, reference


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
@pytest.mark.parametrize("params", [
    {"realm": "example.com", "nonce": "abc", "qop": "auth"},
    {"realm": "r", "nonce": "n", "algorithm": "MD5"},
    {"realm": 'we "quote"', "nonce": "n\\x", "opaque": "o", "algorithm": "SHA-256-sess",
     "qop": "auth-int, auth"},
    {"realm": "r", "nonce": "n", "algorithm": "md5-sess", "opaque": ""},
    {"realm": "r", "nonce": "n", "algorithm": "SHA-256"},
    {"realm": '"\\"', "nonce": '\\\x00"x""\\y\x00', "algorithm": "MD5", "qop": "auth"},
])
def test_credentials_are_what_the_digest_client_writes(wire, params):
    from gateway.sip.digest import DigestClient

    ours, reference = accepted_pair("alice", params)
    assert wire.credentials(DigestClient("bob", lambda: "x"), "sip:r") == b""
    for _ in range(3):  # nc counts up in both
        name, value = reference.authorization("REGISTER", "sip:example.com;transport=udp")
        assert wire.credentials(ours, "sip:example.com;transport=udp") == \
            f"{name}: {value}\r\n".encode()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
def test_credentials_for_accounts_answering_different_challenges_in_turn(wire):
    """What the compiled wire keeps of the last challenge and URI answered is never
    used for another (the same URI under another hash, another realm or opaque)."""
    challenges = [{"realm": "r", "nonce": "n1", "qop": "auth"},
                  {"realm": "r", "nonce": "n2", "algorithm": "SHA-256", "qop": "auth"},
                  {"realm": "r2", "nonce": "n3", "opaque": "o"},
                  {"realm": "r2", "nonce": "n4", "opaque": "p", "algorithm": "MD5"}]
    for turn in range(3):
        for n, params in enumerate(challenges):
            uri = "sip:a" if (turn + n) % 3 else "sip:b"
            ours, reference = accepted_pair(f"u{n}", params, "pw")
            name, value = reference.authorization("REGISTER", uri)
            assert wire.credentials(ours, uri) == f"{name}: {value}\r\n".encode()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256"])
def test_credentials_hash_strings_of_every_length(wire, algorithm):
    """The hashed strings cross the hash block boundaries (MD5: 55/56/64 bytes, SHA-256:
    the same) as the nonce, the username and the URI grow; non-ASCII text is hashed as
    UTF-8."""
    for length in range(1, 300):
        params = {"realm": "r", "nonce": "n" * length, "algorithm": algorithm, "qop": "auth"}
        if length % 2:
            del params["qop"]
        user = "é" * (length % 7) + "u"
        uri = "sip:" + "h" * length
        ours, reference = accepted_pair(user, params)
        name, value = reference.authorization("REGISTER", uri)
        assert wire.credentials(ours, uri) == f"{name}: {value}\r\n".encode()


@pytest.mark.parametrize("wire", load_both("_regwire", "sip.regwire"))
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_the_wire_keeps_ha1_as_the_digest_client_computes_it(make_stack, wire, algorithm):
    from gateway.sip.digest import ha1

    ctx = await make_stack(wire)
    script = [challenge(f'Digest realm="réalm", nonce="n1", algorithm={algorithm}'), OK] * 2
    registrar = await ScriptedRegistrar(script).start()
    try:
        first = udp_client(ctx, registrar.port)  # (learns the registrar's address)
        first.start()
        assert await settled(first, 5.0) == "registered"
        first.close()
        c = RegistrationClient(ctx, key="i9", token="gw9", instance_urn="urn:uuid:9",
                               aor="sip:zoë@example.com", username="zoë",
                               password_source=lambda: "pâss:word",
                               registrar=f"sip:127.0.0.1:{registrar.port};transport=udp")
        exchange = asyncio.ensure_future(c._exchange(600))
        await asyncio.sleep(0)
        assert len(ctx.wire.pending) == 1  # on the wire path, which answers the 401
        assert await exchange == 120
        assert c.digest._ha1 == bytes.fromhex(ha1(algorithm, "zoë", "réalm", "pâss:word"))
        c.close()
    finally:
        registrar.close()
