"""Versioned schema: fresh databases, reopening, upgrading older files, refusing newer."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from gateway.errors import ConfigError
from gateway.store import open_store
from gateway.store.records import StoredMessage
from gateway.store.migrations import CURRENT_VERSION, MIGRATIONS, Migration, check_sequence, migrate
from gateway.store.records import InstanceRecord
from tests.support.instances import make_instance, password_for
from tests.support.store_files import raw_connection


def _version(db_path: str) -> int:
    with raw_connection(db_path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


async def test_fresh_database_is_at_the_current_version(store, db_path):
    assert CURRENT_VERSION == len(MIGRATIONS) >= 2
    assert _version(db_path) == CURRENT_VERSION
    conn = raw_connection(db_path)
    # The schema and the record must agree field for field: the store maps one onto the other.
    assert sorted(_columns(conn, "instances")) == sorted(InstanceRecord.__struct_fields__)
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(instances)")}
    assert {"instances_owner", "instances_expiry"} <= indexes
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"instances", "store_meta", "messages"}
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_reopening_is_idempotent(db_path, key_path):
    for round_ in range(3):
        store = open_store(db_path, key_path)
        await store.open()
        if round_ == 0:
            await store.put_instance(make_instance(store.secret_box, 1))
        assert await store.count_instances() == 1
        await store.close()
        assert _version(db_path) == CURRENT_VERSION
    conn = sqlite3.connect(db_path, isolation_level=None)
    assert migrate(conn) == (CURRENT_VERSION, CURRENT_VERSION)
    conn.close()


def _v1_database(db_path: str, box) -> InstanceRecord:
    """A database as the first release wrote it, holding one instance."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == (0, 1)
    rec = make_instance(box, 7)
    v1_fields = [f for f in InstanceRecord.__struct_fields__ if f != "premium"]
    assert sorted(_columns(conn, "instances")) == sorted(v1_fields)
    values = [getattr(rec, f) if f != "push" else msgspec.msgpack.encode(rec.push) for f in v1_fields]
    conn.execute(f"INSERT INTO instances ({', '.join(v1_fields)}) VALUES ({', '.join('?' * len(values))})", values)
    conn.close()
    return rec


async def test_upgrade_from_v1_keeps_the_data(db_path, key_path, box):
    old = _v1_database(db_path, box)
    assert _version(db_path) == 1
    store = open_store(db_path, key_path)
    await store.open()
    try:
        assert _version(db_path) == CURRENT_VERSION
        got = await store.get_instance(old.id)
        assert got == old and got.premium is False
        assert store.secret_box.open(got.password_ct, aad=old.id.encode()) == password_for(7)
        # The upgraded file takes the new column.
        updated = await store.update_instance(old.id, premium=True)
        assert updated is not None and updated.premium is True
    finally:
        await store.close()


FUTURE = Migration(
    CURRENT_VERSION + 1,
    "a step a later release adds",
    ("CREATE TABLE later_things (id INTEGER PRIMARY KEY)",),
)


async def test_a_v1_file_gets_the_messages_table_and_erasure_cascades(db_path, key_path, box):
    """Step 3 adds the messages table to an old file; erasing an instance then erases
    its messages too (foreign keys are on), leaving no orphan rows."""
    old = _v1_database(db_path, box)
    store = open_store(db_path, key_path)
    await store.open()
    try:
        assert _version(db_path) == CURRENT_VERSION
        for n in range(2):
            message = StoredMessage(f"m{n}", old.id, 1.0 + n, box.seal(f"hello {n}", f"m{n}".encode()))
            assert await store.put_message(message) == "stored"
        assert await store.count_messages(old.id) == 2
        assert await store.erase_instance(old.id)
        with raw_connection(db_path) as conn:
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    finally:
        await store.close()


async def test_a_newer_file_is_refused(db_path, key_path):
    store = open_store(db_path, key_path, migrations=(*MIGRATIONS, FUTURE))
    await store.open()
    await store.close()
    # This release's code refuses the newer file rather than guessing.
    with pytest.raises(ConfigError, match="newer"):
        store = open_store(db_path, key_path)
        await store.open()


async def test_a_failing_step_leaves_the_previous_version(db_path, key_path):
    broken = Migration(
        CURRENT_VERSION + 1,
        "broken",
        ("CREATE TABLE half_done (x INTEGER)", "ALTER TABLE no_such_table ADD COLUMN y"),
    )
    store = open_store(db_path, key_path)
    await store.open()
    await store.put_instance(make_instance(store.secret_box, 1))
    await store.close()
    store = open_store(db_path, key_path, migrations=(*MIGRATIONS, broken))
    with pytest.raises(ConfigError, match="no_such_table"):
        await store.open()
    assert _version(db_path) == CURRENT_VERSION
    with raw_connection(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 1


async def test_newer_database_is_refused(db_path, key_path):
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    store = open_store(db_path, key_path)
    with pytest.raises(ConfigError, match="version 99"):
        await store.open()


async def test_a_file_that_is_not_a_database_is_refused(db_path, key_path):
    with open(db_path, "wb") as f:
        f.write(b"this is not an SQLite database, just some text. " * 100)
    store = open_store(db_path, key_path)
    with pytest.raises(ConfigError, match=db_path):
        await store.open()


def test_migrations_are_numbered_without_gaps():
    check_sequence(MIGRATIONS)
    with pytest.raises(ValueError, match="should be number 2"):
        check_sequence((MIGRATIONS[0], Migration(3, "gap", ())))
