"""Fixtures for the call and message tests: a `Testbed` (Kamailio as the provider's proxy
and registrar, the APNs emulator, the gateway in this process) and pjsua2 phones in
helper processes (tests/support/phone.py)."""

from __future__ import annotations


import pytest

from tests.support.kamailio import need_kamailio
from tests.support.phone import Phone
from tests.support.testbed import Testbed


@pytest.fixture
async def bed(tmp_path):
    """bed(**Testbed options) -> a started Testbed, stopped at the end."""
    need_kamailio()
    started = []

    async def start(**options):
        testbed = Testbed(tmp_path, **options)
        started.append(testbed)
        return await testbed.start()

    yield start
    for testbed in started:
        await testbed.stop()


@pytest.fixture
async def phones():
    """phones() -> a new pjsua2 helper process; all stopped at the end."""
    started = []

    async def start(ca_file: str = "") -> Phone:
        phone = await Phone.start(ca_file=ca_file)
        started.append(phone)
        return phone

    yield start
    for phone in started:
        await phone.stop()


async def register_bob(phone, testbed, name: str = "bob"):
    kam = testbed.kam
    await phone.account(name, f"sip:{name}@{kam.domain}", registrar=f"sip:127.0.0.1:{kam.udp_port}",
                        user=name, password=kam.password(name),
                        proxy=f"sip:127.0.0.1:{kam.udp_port};lr")
    await phone.expect("reg_state", account=name, code=200)


async def wake_device(phone, testbed, instance: dict, transport: str, auto_answer: int = 200,
                      name: str = "device"):
    """What the woken app does: register with the device face as the instance."""
    await phone.account(name, f"sip:{instance['id']}@127.0.0.1", registrar=testbed.device_face(transport),
                        user=instance["id"], password=instance["secret"], auto_answer=auto_answer)
