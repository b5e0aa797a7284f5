"""Calls that never reach the phone: bob hangs up before the answer (missed-call push,
reason cancelled, and a CANCEL to a device that is already connected), nobody answers
(480 with X-Push-Reason after a shortened T1, missed-call push no_answer), and T2 once
the device registered but does not answer."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway import metrics

from .conftest import register_bob, wake_device

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]


async def test_caller_hangs_up_before_the_answer(bed, phones):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    before = metrics.CALLS.total(outcome="cancelled")

    await phone.send("call", account="bob", to=f"sip:alice@{testbed.kam.domain}")
    await testbed.wait_push("call", alice)
    await phone.expect("call_state", account="bob", state="EARLY")
    await phone.send("hangup", account="bob")
    await phone.expect("call_state", account="bob", state="DISCONNECTED")
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "cancelled"
    assert missed["_token"] == alice["alert"] and missed["_push_type"] == "alert"
    assert missed["call_id"] == testbed.pushes("call", alice)[0]["call_id"]
    assert metrics.CALLS.total(outcome="cancelled") == before + 1
    assert not testbed.gateway.calls.relays


async def test_cancel_reaches_a_connected_device(bed, phones):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    device = await phones()
    await phone.send("call", account="bob", to=f"sip:alice@{testbed.kam.domain}")
    await testbed.wait_push("call", alice)
    await wake_device(device, testbed, alice, "udp", auto_answer=0)  # rings, does not answer
    await device.expect("incoming_call", account="device")
    await phone.send("hangup", account="bob")
    await device.expect("call_state", account="device", state="DISCONNECTED", code=487)
    await phone.expect("call_state", account="bob", state="DISCONNECTED")
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "cancelled"


async def test_nobody_answers_480_after_t1(bed, phones):
    testbed = await bed(t1=1.5)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    before = metrics.CALLS.total(outcome="no_answer")
    started = time.monotonic()
    await phone.send("call", account="bob", to=f"sip:alice@{testbed.kam.domain}")
    await testbed.wait_push("call", alice)
    ended = await phone.expect("call_state", account="bob", state="DISCONNECTED", timeout=10)
    assert ended["code"] == 480
    assert time.monotonic() - started >= 1.4
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "no_answer"
    assert metrics.CALLS.total(outcome="no_answer") == before + 1


async def test_device_registered_but_silent_480_after_t2(bed, phones):
    testbed = await bed(t1=1.0, t2=2.5)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    device = await phones()
    await phone.send("call", account="bob", to=f"sip:alice@{testbed.kam.domain}")
    await testbed.wait_push("call", alice)
    await wake_device(device, testbed, alice, "udp", auto_answer=0)
    await device.expect("incoming_call", account="device")
    registered = time.monotonic()
    await asyncio.sleep(1.2)  # past T1: T2 runs instead, the call still rings
    assert phone.find("call_state", account="bob", state="DISCONNECTED") is None
    ended = await phone.expect("call_state", account="bob", state="DISCONNECTED", timeout=10)
    assert ended["code"] == 480 and time.monotonic() - registered >= 2.0
    await device.expect("call_state", account="device", state="DISCONNECTED")
    [missed] = await testbed.wait_push("missed_call", alice)
    assert missed["reason"] == "no_answer"
