"""What one registered instance keeps in memory on the registration side: a slotted client
whose ids, +sip.instance and digest state are small and shared where they can be, with
the wire behaviour unchanged (same Call-ID and From tag on every REGISTER, a stable
+sip.instance, nonce and nc per account)."""

import tracemalloc
import uuid

import pytest

from gateway.registrations import contact_token
from gateway.sip.digest import DigestClient
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.pacing import Pacer
from gateway.sip.parsing import parse_message
from gateway.sip.registration import (RegistrationClient, RegistrationContext,
                                      RegistrationSettings, instance_urn)
from gateway.timers import TimerWheel


def challenge(realm: str, nonce: str, algorithm: str = "MD5", stale: bool = False):
    return parse_message(
        "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
        f'WWW-Authenticate: Digest realm="{realm}", nonce="{nonce}", opaque="op", '
        f'algorithm={algorithm}, qop="auth"{", stale=true" if stale else ""}\r\n'
        "Content-Length: 0\r\n\r\n".encode())


class Passwords:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return "secret"


@pytest.fixture
async def ctx():
    wheel = TimerWheel()
    endpoint = SipEndpoint(wheel)
    yield RegistrationContext(endpoint, Pacer(wheel, 100, 10, 100, 10), RegistrationSettings())
    await endpoint.close()
    wheel.close()


def make_client(ctx, n: int) -> RegistrationClient:
    key = f"inst-{n:06d}"
    return RegistrationClient(ctx, key=key, token=contact_token(key), aor=f"sip:u{n}@example.com",
                              username=f"u{n}", password_source=Passwords(),
                              registrar="sip:127.0.0.1:5060;transport=udp", expires=300)


def test_instance_urn_is_the_uuid5_of_the_key():
    for key in ("cap-000001", "x", "é-unicode"):
        expected = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "sip-push-gateway:" + key))
        assert instance_urn(key) == expected


async def test_ids_are_stable_per_client_and_differ_between_clients(ctx):
    a, b = make_client(ctx, 1), make_client(ctx, 2)
    assert not hasattr(a, "__dict__")
    assert len(a.call_id) == 24 and len(a.from_tag) == 12
    assert int(a.call_id, 16) >= 0 and int(a.from_tag, 16) >= 0  # hex digits only
    assert a.call_id != b.call_id and a.from_tag != b.from_tag
    assert a.instance_urn is None  # derived when written: see the wire test below


async def test_register_on_the_wire_keeps_its_ids_and_instance(ctx):
    class Flow:
        transport = "udp"
        sent_by = ("127.0.0.1", 5070)

    c = make_client(ctx, 7)
    first, _ = c._request(Flow(), 300)
    second, _ = c._request(Flow(), 300)
    for request in (first, second):
        assert request.call_id == c.call_id and request.from_tag == c.from_tag
        assert f'+sip.instance="<{instance_urn(c.key)}>"' in request.get("Contact")
    assert second.cseq.number == first.cseq.number + 1


def test_accounts_share_a_challenge_but_keep_their_own_nonce():
    one, two = DigestClient("alice", Passwords()), DigestClient("bob", Passwords())
    one.challenged(challenge("example.com", "n-alice"))
    two.challenged(challenge("example.com", "n-bob"))
    assert one._challenge is two._challenge  # realm, opaque, algorithm, qop: one object
    _, value_one = one.authorization("REGISTER", "sip:example.com")
    _, value_two = two.authorization("REGISTER", "sip:example.com")
    assert 'nonce="n-alice"' in value_one and 'nonce="n-bob"' in value_two
    assert "nc=00000001" in value_one and "nc=00000001" in value_two


def test_ha1_is_kept_for_the_realm_in_use_only():
    source = Passwords()
    digest = DigestClient("alice", source)
    digest.challenged(challenge("one.example", "n1"))
    digest.authorization("REGISTER", "sip:one.example")
    digest.challenged(challenge("one.example", "n2", stale=True))  # same realm: HA1 stays
    assert source.calls == 1
    digest.authorization("REGISTER", "sip:one.example")
    digest.challenged(challenge("two.example", "n3", stale=True))  # another realm: read again
    assert source.calls == 2
    _, value = digest.authorization("REGISTER", "sip:two.example")
    assert 'realm="two.example"' in value and 'nonce="n3"' in value


async def test_a_challenged_client_stays_small(ctx):
    """A bound, not a benchmark: what 2,000 clients with their digest state hold, per
    client (the capacity scenario's goal is 2 KB per instance for everything)."""
    count = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        clients = [make_client(ctx, n) for n in range(count)]
        for n, c in enumerate(clients):
            c.digest.challenged(challenge("example.com", f"nonce-{n:032d}"))
            c.digest.authorization("REGISTER", "sip:example.com")
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    # the client, its digest state (nonce, cnonce, HA1), the key, AOR, username and token
    # strings the caller made, the password source: about 850 bytes on CPython 3.11
    assert held < 1100, f"{held:.0f} bytes per client"
