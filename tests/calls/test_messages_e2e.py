"""bob sends alice a MESSAGE through Kamailio while her phone sleeps: the gateway stores it
(sealed), answers 200, pushes; the app fetches it over the API, acknowledges it, and it is
gone from the database. isComposing is accepted and dropped; IMDN is stored, not pushed;
a body over the limit gets 413."""

from __future__ import annotations

import asyncio

import pytest

from gateway import metrics
from tests.support.store_files import disk_bytes, raw_connection

from .conftest import register_bob

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]


async def test_message_stored_pushed_fetched_acked_and_gone(bed, phones):
    testbed = await bed(max_body=2000)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    stored_before = metrics.MESSAGES_STORED.total()
    text = "meet me at the station at noon"

    await phone.send("message", account="bob", to=f"sip:alice@{testbed.kam.domain}", body=text)
    status = await phone.expect("im_status", account="bob")
    assert status["code"] == 200
    [push] = await testbed.wait_push("message", alice)
    assert push["_token"] == alice["alert"] and push.get("count", 1) == 1  # omitted when 1
    assert push["sender"] == f"sip:bob@{testbed.kam.domain}"
    assert "body" not in push  # message_body_in_push is off: the app fetches it
    assert metrics.MESSAGES_STORED.total() == stored_before + 1

    db = testbed.config.store.path
    assert text.encode() not in disk_bytes(db)  # stored sealed
    code, info = await testbed.api("GET", alice)
    assert code == 200 and info["pending_messages"] == 1

    code, listing = await testbed.api("GET", alice, "/messages")
    assert code == 200
    [message] = listing["messages"]
    assert message["id"] == push["message_id"] and message["body"] == text
    assert message["encoding"] == "utf-8" and message["sender"] == push["sender"]
    assert message["content_type"].startswith("text/plain") and message["imdn"] is False

    code, result = await testbed.api("POST", alice, "/messages/ack", {"ids": [message["id"]]})
    assert code == 200 and result == {"deleted": 1}
    code, listing = await testbed.api("GET", alice, "/messages")
    assert listing == {"messages": []}
    with raw_connection(db) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


async def test_composing_dropped_imdn_stored_unpushed_oversize_413(bed, phones):
    testbed = await bed(max_body=2000)
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    to = f"sip:alice@{testbed.kam.domain}"

    composing = ('<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
                 '<state>active</state></isComposing>')
    await phone.send("message", account="bob", to=to, body=composing,
                     content_type="application/im-iscomposing+xml")
    await phone.send("message", account="bob", to=to, body="<imdn/>", content_type="message/imdn+xml")
    await phone.send("message", account="bob", to=to, body="x" * 2500)
    for _ in range(100):
        if len([e for e in phone.events if e["event"] == "im_status"]) >= 3:
            break
        await asyncio.sleep(0.05)
    codes = sorted(e["code"] for e in phone.events if e["event"] == "im_status")
    assert codes == [200, 200, 413]
    await asyncio.sleep(0.3)
    assert not testbed.pushes("message", alice)
    code, listing = await testbed.api("GET", alice, "/messages")
    [imdn] = listing["messages"]
    assert imdn["imdn"] is True and imdn["content_type"] == "message/imdn+xml"


async def test_unfetched_messages_go_with_the_instance(bed, phones):
    testbed = await bed()
    alice = await testbed.create_instance("alice")
    phone = await phones()
    await register_bob(phone, testbed)
    await phone.send("message", account="bob", to=f"sip:alice@{testbed.kam.domain}", body="never read")
    await testbed.wait_push("message", alice)
    expired_before = metrics.MESSAGES_EXPIRED.total()
    code, _ = await testbed.api("DELETE", alice)
    assert code == 204
    with raw_connection(testbed.config.store.path) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert metrics.MESSAGES_EXPIRED.total() == expired_before + 1
