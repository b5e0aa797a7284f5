"""SIPp scenarios against the provider face: a retransmitted INVITE and a forked INVITE
push once; an INVITE from a foreign address gets 403 and no push. (The INVITEs come
straight from 127.0.0.1, the address of alice's registrar, as the provider's proxy would
send them; the stranger sends from 127.0.0.2.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.registrations import contact_token
from tests.support.sipp import run_sipp

pytestmark = pytest.mark.kamailio
SCENARIOS = Path(__file__).parent / "sipp"


async def _run(testbed, name: str, instance: dict, local_ip: str = "127.0.0.1"):
    result = await run_sipp(str(SCENARIOS / name), ("127.0.0.1", testbed.provider_udp),
                            service=contact_token(instance["id"]), local_ip=local_ip)
    assert result.returncode == 0, result.output
    await asyncio.sleep(0.3)  # pushes that should not come get their chance to


async def test_retransmitted_invite_pushes_once(bed):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    await _run(testbed, "retransmit.xml", alice)
    assert len(testbed.pushes("call", alice)) == 1
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "answered_elsewhere"
    assert missed["caller_name"] == "Caller"


async def test_forked_invite_pushes_once(bed):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    await _run(testbed, "fork.xml", alice)
    calls = testbed.pushes("call", alice)
    assert len(calls) == 1
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "cancelled" and missed["call_id"] == calls[0]["call_id"]


async def test_invite_from_a_stranger_gets_403_and_no_push(bed):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    await _run(testbed, "foreign.xml", alice, local_ip="127.0.0.2")
    assert not testbed.pushes()
    assert not testbed.gateway.calls.relays
