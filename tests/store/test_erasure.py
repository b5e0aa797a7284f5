"""Erased credentials are gone from the bytes on disk: the database file, its WAL and
its shared-memory index are read raw and searched for the password and its ciphertext."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time

from gateway.store import open_store
from gateway.store.crypto import digest_ha1
from gateway.store.erasure import MAX_SEARCHED_VALUES, file_contains
from tests.support.instances import make_instance, password_for
from tests.support.store_files import disk_bytes


def _traces(rec, password: str) -> list[bytes]:
    """What must not survive an instance: its password, sealed or not, and the digest
    HA1s of its device secret (enough to answer a digest challenge as the device)."""
    return [password.encode(), rec.password_ct, rec.secret_ha1.encode(), rec.secret_ha1_sha256.encode()]


async def _filled(store, count: int, start: int = 0):
    recs = [make_instance(store.secret_box, n) for n in range(start, start + count)]
    await asyncio.gather(*(store.put_instance(r) for r in recs))
    return recs


async def test_erase_leaves_no_password_or_ciphertext(store, db_path):
    recs = await _filled(store, 40)
    victim = recs[17]
    on_disk = disk_bytes(db_path)
    assert victim.password_ct in on_disk  # the search can find it while it is stored
    assert password_for(17).encode() not in on_disk  # only ever the ciphertext

    assert await store.erase_instance(victim.id)
    on_disk = disk_bytes(db_path)
    for trace in _traces(victim, password_for(17)):
        assert trace not in on_disk
    assert recs[18].password_ct in on_disk  # its neighbours are still there


async def test_expiry_leaves_no_password_or_ciphertext(store, db_path):
    now = time.time()
    recs = [make_instance(store.secret_box, n, now=now, expires_at=now + (-10 if n % 3 == 0 else 1000)) for n in range(30)]
    await asyncio.gather(*(store.put_instance(r) for r in recs))
    expired = [r for n, r in enumerate(recs) if n % 3 == 0]
    assert all(r.password_ct in disk_bytes(db_path) for r in expired)

    assert await store.erase_expired(now) == sorted(r.id for r in expired)
    on_disk = disk_bytes(db_path)
    for n, rec in enumerate(recs):
        if n % 3 == 0:
            assert not [t for t in _traces(rec, password_for(n)) if t in on_disk]
        else:
            assert rec.password_ct in on_disk


async def test_password_change_leaves_no_old_ciphertext(store, db_path):
    recs = await _filled(store, 20)
    rec = recs[5]
    new_ct = store.secret_box.seal("a brand new password", aad=rec.id.encode())
    assert rec.password_ct in disk_bytes(db_path)

    updated = await store.update_instance(rec.id, password_ct=new_ct)
    assert store.secret_box.open(updated.password_ct, aad=rec.id.encode()) == "a brand new password"
    on_disk = disk_bytes(db_path)
    assert rec.password_ct not in on_disk
    assert password_for(5).encode() not in on_disk
    assert new_ct in on_disk


async def test_secret_rotation_leaves_no_old_ha1(store, db_path):
    recs = await _filled(store, 20)
    rec = recs[9]
    new = {
        "secret_ha1": digest_ha1(rec.id, "gateway.test", "rotated secret"),
        "secret_ha1_sha256": digest_ha1(rec.id, "gateway.test", "rotated secret", "SHA-256"),
    }
    await store.update_instance(rec.id, **new)
    on_disk = disk_bytes(db_path)
    assert rec.secret_ha1.encode() not in on_disk and rec.secret_ha1_sha256.encode() not in on_disk
    assert new["secret_ha1"].encode() in on_disk


async def test_replacing_an_instance_erases_the_old_one(store, db_path):
    old = make_instance(store.secret_box, 1, id="old")
    await store.put_instance(old)
    await store.put_instance(make_instance(store.secret_box, 1, id="new", password="other"))
    assert not [t for t in _traces(old, password_for(1)) if t in disk_bytes(db_path)]


async def test_no_stale_copy_survives_churn(store, db_path):
    """SQLite's page rebalancing leaves copies of moved rows in unused page space, where
    secure_delete never looks; the store must find and clear those too."""
    rng = random.Random(2)
    recs = {r.id: r for r in await _filled(store, 600)}
    old_cts = []
    for _ in range(3):  # grow and shrink rows so that pages split and merge
        await asyncio.gather(
            *(store.update_instance(i, display_name="N" * rng.randint(1, 400), last_error="e" * rng.randint(0, 300)) for i in recs)
        )
    erased = rng.sample(sorted(recs), 200)
    for k in range(0, len(erased), 5):  # small batches, each with its own scan
        await asyncio.gather(*(store.erase_instance(i) for i in erased[k : k + 5]))
    changed = rng.sample(sorted(set(recs) - set(erased)), 100)
    for i in changed:
        old_cts.append(recs[i].password_ct)
    await asyncio.gather(*(store.update_instance(i, password_ct=store.secret_box.seal("new", aad=i.encode())) for i in changed))

    on_disk = disk_bytes(db_path)
    assert [i for i in erased if recs[i].password_ct in on_disk] == []
    assert [i for i in erased if recs[i].secret_ha1.encode() in on_disk] == []
    assert [ct for ct in old_cts if ct in on_disk] == []
    assert all(recs[i].password_ct in on_disk for i in set(recs) - set(erased) - set(changed))


async def test_a_large_sweep_is_erased_in_one_go(store, db_path):
    """More erased values than are worth searching for: the file is rebuilt instead."""
    now = time.time()
    count = MAX_SEARCHED_VALUES * 3
    recs = [make_instance(store.secret_box, n, now=now, expires_at=now - 1) for n in range(count)]
    recs += [make_instance(store.secret_box, n, now=now) for n in range(count, count + 10)]
    await asyncio.gather(*(store.put_instance(r) for r in recs))
    assert len(await store.erase_expired(now)) == count
    on_disk = disk_bytes(db_path)
    assert not [r for r in recs[:count] if r.password_ct in on_disk]
    assert all(r.password_ct in on_disk for r in recs[count:])


async def test_a_reader_holding_the_wal_delays_but_does_not_prevent_erasure(db_path, key_path):
    """A CLI in another process reading the database keeps the checkpoint from cutting
    the WAL; the writer retries, and the erasure completes once the reader is done."""
    store = open_store(db_path, key_path)
    await store.open()
    try:
        recs = await _filled(store, 10)
        await store.update_instance(recs[0].id, state="registered")  # some frames in the WAL
        reader = sqlite3.connect(db_path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM instances").fetchone()  # holds a snapshot
        await store.update_instance(recs[1].id, display_name="frames for the reader's snapshot")
        assert await store.erase_instance(recs[1].id)  # resolves: the row is gone for readers
        reader.execute("COMMIT")
        reader.close()
        deadline = time.monotonic() + 10
        while recs[1].password_ct in disk_bytes(db_path):
            assert time.monotonic() < deadline, "the erasure was never retried"
            await asyncio.sleep(0.05)
        assert recs[2].password_ct in disk_bytes(db_path)
    finally:
        await store.close()


def test_file_contains_finds_values_across_chunk_boundaries(tmp_path):
    path = tmp_path / "blob"
    needle = b"NEEDLE-0123456789"
    data = bytearray(b"\0" * (3 << 20))
    at = (1 << 20) - 5  # straddles the first chunk boundary
    data[at : at + len(needle)] = needle
    path.write_bytes(bytes(data))
    assert file_contains(str(path), [b"absent", needle])
    assert not file_contains(str(path), [b"absent", b"NEEDLE-X"])
