"""The messages table: stored durably and sealed, listed in order, deleted on ack, and
gone from the disk's bytes once acknowledged or erased with their instance."""

from __future__ import annotations

from gateway.store.records import StoredMessage
from tests.support.instances import make_instance
from tests.support.store_files import disk_bytes


def _message(box, instance_id: str, n: int) -> StoredMessage:
    return StoredMessage(f"msg-{n}", instance_id, 100.0 + n, box.seal(f"secret text {n}", f"msg-{n}".encode()))


async def test_put_list_count_delete(store, box):
    rec = make_instance(box, 1)
    await store.put_instance(rec)
    for n in (2, 0, 1):
        assert await store.put_message(_message(box, rec.id, n)) == "stored"
    listed = await store.list_messages(rec.id)
    assert [m.id for m in listed] == ["msg-0", "msg-1", "msg-2"]
    assert box.open(listed[1].sealed, b"msg-1") == "secret text 1"
    assert await store.count_messages(rec.id) == 3
    # only this instance's messages are deleted; unknown ids are ignored
    other = make_instance(box, 2)
    await store.put_instance(other)
    assert await store.delete_messages(other.id, ["msg-0"]) == 0
    assert await store.delete_messages(rec.id, ["msg-0", "msg-2", "nope"]) == 2
    assert [m.id for m in await store.list_messages(rec.id)] == ["msg-1"]


async def test_full_and_gone(store, box):
    rec = make_instance(box, 1)
    await store.put_instance(rec)
    assert await store.put_message(_message(box, rec.id, 0), max_pending=1) == "stored"
    assert await store.put_message(_message(box, rec.id, 1), max_pending=1) == "full"
    assert await store.put_message(_message(box, "no-such-instance", 2)) == "gone"


async def test_acknowledged_and_erased_messages_leave_no_bytes(store, box, db_path):
    rec = make_instance(box, 1)
    await store.put_instance(rec)
    messages = [_message(box, rec.id, n) for n in range(4)]
    for message in messages:
        await store.put_message(message)
    assert all(m.sealed in disk_bytes(db_path) for m in messages)
    await store.delete_messages(rec.id, [messages[0].id])
    data = disk_bytes(db_path)
    assert messages[0].sealed not in data
    assert messages[1].sealed in data
    assert await store.erase_instance(rec.id)
    data = disk_bytes(db_path)
    assert not any(m.sealed in data for m in messages)
