"""Store CRUD on the real SQLite backend: round trips, partial updates, the idempotent
replace on (app_id, aor, device_id), concurrency, and surviving a reopen."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import msgspec
import pytest

from gateway.errors import ConfigError
from gateway.store import open_store
from gateway.store.records import PushTarget
from tests.support.instances import make_instance, password_for
from tests.support.store_files import raw_connection


async def test_put_get_round_trip(store):
    rec = make_instance(store.secret_box, 1, outbound_proxy="sip:edge.example.com;lr", premium=True)
    assert await store.put_instance(rec) is None
    got = await store.get_instance(rec.id)
    assert got == rec
    assert got is not rec
    assert got.push[1].endpoint == "https://push.example.net/w/1"
    assert store.secret_box.open(got.password_ct, aad=rec.id.encode()) == password_for(1)
    assert await store.get_instance("no-such-id") is None


async def test_update_is_partial_and_stamps_updated_at(store):
    rec = make_instance(store.secret_box, 1, now=1000.0)
    await store.put_instance(rec)
    before = time.time()
    new_push = [PushTarget(provider="fcm", token="fcm-token-2")]
    got = await store.update_instance(rec.id, state="registered", registered_until=5000.0, push=new_push)
    assert got is not None
    assert (got.state, got.registered_until, got.push) == ("registered", 5000.0, new_push)
    assert got.updated_at >= before
    assert msgspec.structs.replace(got, state=rec.state, registered_until=None, push=rec.push, updated_at=rec.updated_at) == rec
    assert await store.get_instance(rec.id) == got
    explicit = await store.update_instance(rec.id, updated_at=42.0, last_error="403 Forbidden")
    assert explicit.updated_at == 42.0 and explicit.last_error == "403 Forbidden"


async def test_update_of_a_missing_instance_is_none(store):
    assert await store.update_instance("gone", state="off") is None


async def test_update_refuses_identity_and_unknown_fields(store):
    rec = make_instance(store.secret_box, 1)
    await store.put_instance(rec)
    for fields in ({"id": "x"}, {"app_id": "x"}, {"aor": "sip:x@y"}, {"device_id": "x"}, {"colour": "red"}):
        with pytest.raises(ValueError, match="cannot update"):
            await store.update_instance(rec.id, **fields)
    assert await store.get_instance(rec.id) == rec


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "sleeping"},
        {"mode": 3},
        {"reg_expires": "600"},
        {"reg_expires": 2**64},
        {"push": [{"provider": "sms"}]},
        {"password_ct": b""},
        {"expires_at": float("nan")},
        {"registered_until": float("inf")},
        {"display_name": "\udc80 lone surrogate"},
    ],
)
async def test_update_with_a_bad_value_changes_nothing(store, fields):
    rec = make_instance(store.secret_box, 1)
    await store.put_instance(rec)
    with pytest.raises(ValueError, match="invalid instance record"):
        await store.update_instance(rec.id, **fields)
    assert await store.get_instance(rec.id) == rec


async def test_put_refuses_an_invalid_record(store):
    bad = make_instance(store.secret_box, 1, push=[PushTarget(provider="carrier-pigeon")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="provider"):
        await store.put_instance(bad)
    assert await store.count_instances() == 0


async def test_erase(store):
    rec = make_instance(store.secret_box, 1)
    await store.put_instance(rec)
    assert await store.erase_instance(rec.id) is True
    assert await store.get_instance(rec.id) is None
    assert await store.erase_instance(rec.id) is False
    assert await store.count_instances() == 0


async def test_listing_is_ordered_by_expiry(store):
    now = 10_000.0
    expiries = [500.0, 100.0, 300.0, 200.0, 400.0]
    for n, expires in enumerate(expiries):
        await store.put_instance(make_instance(store.secret_box, n, now=now, expires_at=now + expires))
    listed = await store.list_instances()
    assert [r.expires_at - now for r in listed] == sorted(expiries)
    assert [r.id for r in await store.list_instances(limit=2)] == [listed[0].id, listed[1].id]
    assert await store.count_instances() == 5
    soon = await store.expiring_before(now + 300.0)
    assert [r.expires_at - now for r in soon] == [100.0, 200.0]
    assert await store.erase_expired(now + 300.0) == sorted(r.id for r in listed[:3])
    assert [r.expires_at - now for r in await store.list_instances()] == [400.0, 500.0]
    assert await store.erase_expired(now) == []


async def test_put_replaces_the_same_app_account_and_device(store):
    first = make_instance(store.secret_box, 1, id="first")
    again = make_instance(store.secret_box, 1, id="second", password="new password")
    other_device = make_instance(store.secret_box, 1, id="other-device", device_id="tablet")
    assert await store.put_instance(first) is None
    assert await store.put_instance(other_device) is None
    assert await store.put_instance(again) == "first"
    assert await store.get_instance("first") is None
    assert await store.get_instance("second") == again
    assert await store.get_instance("other-device") == other_device
    assert await store.count_instances() == 2
    # Putting the very same instance again replaces it with itself.
    assert await store.put_instance(again) == "second"
    assert await store.count_instances() == 2


async def test_put_with_a_taken_id_undoes_its_replace(store):
    """The erase-and-insert of a replace is one step: when the insert fails (the id
    belongs to another instance), the instance it would have replaced is still there."""
    owner = make_instance(store.secret_box, 1, id="taken")
    victim = make_instance(store.secret_box, 2, id="victim")
    await store.put_instance(owner)
    await store.put_instance(victim)
    clash = make_instance(store.secret_box, 2, id="taken")  # victim's triple, owner's id
    with pytest.raises(ValueError, match="already in use"):
        await store.put_instance(clash)
    assert await store.get_instance("victim") == victim
    assert await store.get_instance("taken") == owner


async def test_one_failing_call_in_a_batch_does_not_undo_the_others(store):
    await store.put_instance(make_instance(store.secret_box, 0, id="taken"))
    calls = [store.put_instance(make_instance(store.secret_box, n)) for n in range(1, 20)]
    calls.insert(10, store.put_instance(make_instance(store.secret_box, 99, id="taken")))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[10], ValueError)
    assert [r for i, r in enumerate(results) if i != 10] == [None] * 19
    assert await store.count_instances() == 20


async def test_100_concurrent_creates_and_deletes_lose_nothing(store, db_path):
    box = store.secret_box
    # 50 instances exist; then, all at once: 100 creates, half of them deleted again right
    # behind their create, 25 of the older ones deleted, 25 of them replaced by a new id.
    for n in range(50):
        await store.put_instance(make_instance(box, n, id=f"old-{n}"))
    calls = []
    expected = {f"old-{n}" for n in range(50)}
    for n in range(100, 200):
        calls.append(store.put_instance(make_instance(box, n)))
        expected.add(f"inst-{n:05d}")
        if n % 2:
            calls.append(store.erase_instance(f"inst-{n:05d}"))
            expected.discard(f"inst-{n:05d}")
    for n in range(25):
        calls.append(store.erase_instance(f"old-{n}"))
        expected.discard(f"old-{n}")
    for n in range(25, 50):
        calls.append(store.put_instance(make_instance(box, n, id=f"new-{n}")))
        expected.discard(f"old-{n}")
        expected.add(f"new-{n}")
    results = await asyncio.gather(*calls)
    assert results.count(True) == 75  # every delete found its instance
    assert sorted(r for r in results if isinstance(r, str)) == sorted(f"old-{n}" for n in range(25, 50))
    assert store.batches < store.jobs  # the writer did batch them

    conn = raw_connection(db_path)
    try:
        ids = {row[0] for row in conn.execute("SELECT id FROM instances")}
        assert ids == expected
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        owners = conn.execute("SELECT count(*), count(DISTINCT app_id || aor || device_id) FROM instances").fetchone()
        assert owners == (len(expected), len(expected))
    finally:
        conn.close()
    for rec in await store.list_instances():
        assert box.open(rec.password_ct, aad=rec.id.encode()).startswith("pw-")


async def test_instances_survive_a_reopen(db_path, key_path):
    store = open_store(db_path, key_path)
    await store.open()
    recs = [make_instance(store.secret_box, n) for n in range(30)]
    await asyncio.gather(*(store.put_instance(r) for r in recs))
    changed = await store.update_instance(recs[3].id, state="registered", registered_until=123.0)
    await store.erase_instance(recs[4].id)
    await store.close()

    reopened = open_store(db_path, key_path)  # a new process would do the same: key from the file
    await reopened.open()
    try:
        expected = sorted([r for r in recs if r.id not in (recs[3].id, recs[4].id)] + [changed], key=lambda r: r.expires_at)
        assert await reopened.list_instances() == expected
        got = await reopened.get_instance(recs[7].id)
        assert reopened.secret_box.open(got.password_ct, aad=got.id.encode()) == password_for(7)
    finally:
        await reopened.close()


async def test_sync_reads_for_the_cli(db_path, key_path):
    store = open_store(db_path, key_path)
    with pytest.raises(ConfigError, match="no database"):
        store.sync_list()
    await store.open()
    await asyncio.gather(*(store.put_instance(make_instance(store.secret_box, n)) for n in range(5)))
    assert store.sync_count() == 5  # while the writer holds the file open
    await store.close()
    reader = open_store(db_path, key_path)
    listed = reader.sync_list(limit=3)
    assert [r.id for r in listed] == [f"inst-{n:05d}" for n in range(3)]
    assert reader.sync_get("inst-00001") == listed[1]
    assert reader.sync_get("missing") is None


async def test_database_files_are_private(store, db_path):
    await store.put_instance(make_instance(store.secret_box, 1))
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            assert stat.S_IMODE(os.stat(db_path + suffix).st_mode) == 0o600, suffix


async def test_closed_store_refuses_calls(db_path, key_path):
    store = open_store(db_path, key_path)
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_instance("x")
    await store.open()
    with pytest.raises(RuntimeError, match="already"):
        await store.open()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(RuntimeError, match="not open"):
        await store.count_instances()
    store.writer_thread.join(5)
    assert not store.writer_thread.is_alive()


def test_unsupported_store_url_is_a_config_error(key_path):
    with pytest.raises(ConfigError, match="postgresql://"):
        open_store("postgresql://db.example.com/gateway", key_path)


async def test_unwritable_location_is_a_config_error(tmp_path, key_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = open_store(str(blocker / "gateway.db"), key_path)
    with pytest.raises(ConfigError, match="cannot open the database"):
        await store.open()


async def test_in_memory_store(key_path):
    async with open_store(":memory:", key_path) as store:
        rec = make_instance(store.secret_box, 1)
        await store.put_instance(rec)
        assert await store.get_instance(rec.id) == rec
        assert await store.erase_instance(rec.id)


async def test_a_foreign_key_file_is_refused_at_open(db_path, key_path, tmp_path):
    async with open_store(db_path, key_path) as store:
        await store.put_instance(make_instance(store.secret_box, 1))
    other_key = str(tmp_path / "other.key")
    store = open_store(db_path, other_key)
    with pytest.raises(ConfigError, match="not the one the database .* was written with"):
        await store.open()
    async with open_store(db_path, key_path) as store:  # the right key still works
        assert await store.count_instances() == 1
