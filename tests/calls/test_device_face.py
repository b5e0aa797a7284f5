"""The device face's registrar, spoken to by the gateway's own SIP stack as a device:
digest with the instance id and secret (SHA-256 chosen when offered, MD5 too), a wrong
secret or another instance's id gets 403, an expired nonce is answered stale=true, the
binding follows the REGISTER's flow and Expires, and RFC 8599 pn-* parameters replace
the instance's push token."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sip.digest import DigestClient
from gateway.sip.dns import Target
from tests.support.sipstack import Stack

pytestmark = pytest.mark.kamailio


class Device:
    """A device registering with the device face over UDP through our own stack."""

    def __init__(self, testbed, instance, secret: str | None = None):
        self.testbed = testbed
        self.instance = instance
        self.stack = Stack()
        self.digest = DigestClient(instance["id"], lambda: secret or instance["secret"])
        self.cseq = 0
        self.flow = None
        self.challenges = []  # the 401s seen

    async def register(self, contact_params: str = "", expires: int = 600, algorithm: str | None = None):
        if self.flow is None:
            await self.stack.transport.listen("udp", "127.0.0.1", 0)
            port = self.testbed.config.sip.device_face.udp_port
            self.flow = await self.stack.transport.connect(Target("127.0.0.1", port, "udp", None))
        uri = "sip:127.0.0.1"
        for _ in range(3):
            self.cseq += 1
            host, port = self.flow.sent_by
            request = self.stack.request("REGISTER", self.flow, uri, cseq=self.cseq, extra=(
                ("Contact", f"<sip:{self.instance['id']}@{host}:{port}{contact_params}>"),
                ("Expires", str(expires))))
            request.headers.set("To", f"<sip:{self.instance['id']}@127.0.0.1>")
            request.headers.set("Call-ID", f"reg-{self.instance['id']}")
            credentials = self.digest.authorization("REGISTER", uri)
            if credentials is not None:
                request.headers.add(*credentials)
            response = await self.stack.transactions.send(request, self.flow)
            if response.status != 401:
                return response
            self.challenges.append(response)
            if algorithm is not None:  # pretend we only know this algorithm
                kept = [v for v in response.headers.fields("WWW-Authenticate") if algorithm in v]
                response.headers.remove("WWW-Authenticate")
                for value in kept:
                    response.headers.add("WWW-Authenticate", value)
            self.digest.challenged(response)
        return response

    async def close(self):
        await self.stack.close()


@pytest.fixture
async def devices():
    made = []

    def make(*args, **kwargs):
        device = Device(*args, **kwargs)
        made.append(device)
        return device

    yield make
    for device in made:
        await device.close()


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_register_with_the_instance_secret(bed, devices, algorithm):
    testbed = await bed()
    alice = await testbed.create_instance("alice")
    device = devices(testbed, alice)
    response = await device.register(algorithm=algorithm)
    assert response.status == 200
    assert device.digest.algorithm == algorithm
    assert "expires=" in response.get("Contact")
    binding = testbed.gateway.calls.registrar.binding(alice["id"])
    assert binding is not None and binding.flow.remote == device.flow.local
    # Expires: 0 removes the binding
    response = await device.register(expires=0)
    assert response.status == 200
    assert testbed.gateway.calls.registrar.binding(alice["id"]) is None


async def test_wrong_secret_or_other_instance_gets_403(bed, devices):
    testbed = await bed()
    alice = await testbed.create_instance("alice")
    bob = await testbed.create_instance("bob")
    assert (await devices(testbed, alice, secret="not-the-secret").register()).status == 403
    # bob's secret does not open alice's binding
    impostor = devices(testbed, alice, secret=bob["secret"])
    assert (await impostor.register()).status == 403
    assert testbed.gateway.calls.registrar.binding(alice["id"]) is None


async def test_expired_nonce_is_stale(bed, devices):
    testbed = await bed()
    alice = await testbed.create_instance("alice")
    device = devices(testbed, alice)
    assert (await device.register()).status == 200
    assert len(device.challenges) == 1
    assert "stale" not in device.challenges[0].get("WWW-Authenticate")
    testbed.gateway.calls.registrar.nonce_ttl = 0.2
    await asyncio.sleep(0.3)
    # the reused nonce is now old: 401 stale=true, then a fresh nonce works
    response = await device.register()
    assert response.status == 200
    assert len(device.challenges) == 2
    assert "stale=true" in device.challenges[1].get("WWW-Authenticate")


async def test_pn_parameters_replace_the_push_token(bed, devices):
    testbed = await bed()
    alice = await testbed.create_instance("alice")
    device = devices(testbed, alice)
    fresh = "ab" * 32
    params = f";pn-provider=apns;pn-prid={fresh};pn-param=TEAM123456.com.example.phone.voip"
    assert (await device.register(contact_params=params)).status == 200
    for _ in range(50):
        record = await testbed.gateway.instances.get(alice["id"])
        if any(t.token == fresh for t in record.push):
            break
        await asyncio.sleep(0.02)
    tokens = {(t.usage, t.token) for t in record.push}
    assert tokens == {("call", fresh), ("other", alice["alert"])}
