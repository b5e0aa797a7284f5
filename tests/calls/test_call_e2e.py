"""bob (pjsua2, registered at Kamailio) calls alice (registered by the gateway): the gateway
pushes to the APNs emulator, the test then starts alice's device (a pjsua2 account
registering with the device face), which answers; the call is confirmed and a BYE from
either side ends it. Over UDP and TLS on the device face."""

from __future__ import annotations

import asyncio

import pytest

from gateway import metrics

from .conftest import register_bob, wake_device

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]


@pytest.mark.parametrize("transport,hangup_by", [("udp", "bob"), ("tls", "device"), ("tcp", "bob")])
async def test_push_wakes_the_device_and_the_call_is_relayed(bed, phones, transport, hangup_by):
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    answered_before = metrics.CALLS.total(outcome="answered")

    await phone.send("call", account="bob", to=f"sip:alice@{testbed.kam.domain}")
    [push] = await testbed.wait_push("call", alice)
    assert push["_push_type"] == "voip" and push["_token"] == alice["voip"]
    assert push["caller_uri"] == f"sip:bob@{testbed.kam.domain}"
    assert push["push_id"] and push["connect"].startswith("sip:127.0.0.1:")
    # the caller heard the gateway's progress while the phone slept
    await phone.expect("call_state", account="bob", state="EARLY", code=180)

    device = await phones(ca_file=str(testbed.kam.ca_file))
    await wake_device(device, testbed, alice, transport)
    await device.expect("reg_state", account="device", code=200)
    incoming = await device.expect("incoming_call", account="device")
    assert f"bob@{testbed.kam.domain}" in incoming["remote"]
    await phone.expect("call_state", account="bob", state="CONFIRMED", timeout=10)
    await device.expect("call_state", account="device", state="CONFIRMED", timeout=10)

    ender, other = (phone, device) if hangup_by == "bob" else (device, phone)
    other_name = "device" if hangup_by == "bob" else "bob"
    await ender.send("hangup", account=hangup_by)
    await other.expect("call_state", account=other_name, state="DISCONNECTED", timeout=10)
    await ender.expect("call_state", account=hangup_by, state="DISCONNECTED", timeout=10)
    assert not testbed.gateway.calls.dialogs.table  # the BYE ended the relayed dialog
    assert metrics.CALLS.total(outcome="answered") == answered_before + 1
    assert len(testbed.pushes("call", alice)) == 1
    assert not testbed.pushes("missed_call", alice)


async def test_in_dialog_requests_both_ways(bed, phones):
    """re-INVITE (hold, unhold) and UPDATE from either side cross the gateway."""
    testbed = await bed(t1=10.0)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    await phone.send("call", account="bob", to=f"sip:alice@{testbed.kam.domain}")
    await testbed.wait_push("call", alice)
    device = await phones()
    await wake_device(device, testbed, alice, "udp")
    await phone.expect("call_state", account="bob", state="CONFIRMED")
    await device.expect("call_state", account="device", state="CONFIRMED")

    await phone.send("hold", account="bob")  # re-INVITE provider side -> device
    await device.expect("media_state", account="device", status="remote_hold")
    await phone.expect("media_state", account="bob", status="local_hold")
    device.events.clear()
    phone.events.clear()
    await phone.send("unhold", account="bob")
    await device.expect("media_state", account="device", status="active")
    await phone.expect("media_state", account="bob", status="active")
    await asyncio.sleep(0.3)  # the ACK crosses before the next re-INVITE (no glare, 491)
    phone.events.clear()
    device.events.clear()
    await device.send("hold", account="device")  # re-INVITE device -> provider side
    await phone.expect("media_state", account="bob", status="remote_hold")
    await device.expect("media_state", account="device", status="local_hold")
    await asyncio.sleep(0.3)
    phone.events.clear()
    device.events.clear()
    await device.send("unhold", account="device")
    await phone.expect("media_state", account="bob", status="active")
    await device.expect("media_state", account="device", status="active")
    await asyncio.sleep(0.3)
    device.events.clear()
    await device.send("update", account="device")  # UPDATE device -> provider side
    await device.expect("media_state", account="device", status="active")
    assert phone.find("call_state", state="DISCONNECTED") is None
    await phone.send("hangup", account="bob")
    await device.expect("call_state", account="device", state="DISCONNECTED")
