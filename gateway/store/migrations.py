"""Versioned schema of the SQLite store.

The schema version lives in `PRAGMA user_version`. Each `Migration` is one numbered step;
opening a store applies the missing steps in order, each in its own transaction together
with the new version number, so a database is always at exactly one released version and
a failing step leaves it at the previous one. Released steps are never edited: a change of
schema is a new step appended to `MIGRATIONS` (the stored SIP messages, for instance,
will be a step that creates a `messages` table referencing `instances(id)` with
ON DELETE CASCADE, so erasing an instance erases its messages in the same statement).

A database newer than this code is refused rather than guessed at.

Depends on sqlite3 and `gateway.errors` only; knows nothing of records or threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import NamedTuple

from gateway.errors import ConfigError


class Migration(NamedTuple):
    """Step `version`: SQL statements run in order (or a function given the connection,
    for a step that has to move data in Python)."""

    version: int
    summary: str
    steps: tuple[str, ...] | Callable[[sqlite3.Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "instances",
        (
            """
            CREATE TABLE instances (
                id                TEXT PRIMARY KEY NOT NULL,
                app_id            TEXT NOT NULL,
                device_id         TEXT NOT NULL,
                aor               TEXT NOT NULL,
                auth_username     TEXT NOT NULL,
                password_ct       BLOB NOT NULL,
                registrar         TEXT NOT NULL,
                outbound_proxy    TEXT,
                reg_expires       INTEGER NOT NULL,
                display_name      TEXT,
                push              BLOB NOT NULL,
                secret_ha1        TEXT NOT NULL,
                secret_ha1_sha256 TEXT NOT NULL,
                secret_bearer     TEXT NOT NULL,
                mode              TEXT NOT NULL,
                state             TEXT NOT NULL,
                last_error        TEXT,
                created_at        REAL NOT NULL,
                updated_at        REAL NOT NULL,
                expires_at        REAL NOT NULL,
                registered_until  REAL
            )
            """,
            # One instance per (app, account, device): a new hand-over replaces the old one.
            "CREATE UNIQUE INDEX instances_owner ON instances (app_id, aor, device_id)",
            # The expiry sweep and the listings walk instances by expiry time.
            "CREATE INDEX instances_expiry ON instances (expires_at)",
            # Facts about the store itself, e.g. a value sealed with its key, to tell at
            # start whether the key file is the one the database was written with.
            "CREATE TABLE store_meta (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)",
        ),
    ),
    Migration(
        2,
        "premium accounts (longer retention)",
        ("ALTER TABLE instances ADD COLUMN premium INTEGER NOT NULL DEFAULT 0",),
    ),
    Migration(
        3,
        "stored SIP messages",
        (
            # The content is one sealed blob; only what the queries need is in the clear.
            # ON DELETE CASCADE: erasing an instance erases its messages in the same statement.
            """
            CREATE TABLE messages (
                id           TEXT PRIMARY KEY NOT NULL,
                instance_id  TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
                received_at  REAL NOT NULL,
                sealed       BLOB NOT NULL
            )
            """,
            "CREATE INDEX messages_instance ON messages (instance_id, received_at)",
        ),
    ),
)

CURRENT_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Migrations must be numbered 1, 2, 3... with no gap: a gap would skip a step."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.version} ({migration.summary}) should be number {expected}")


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS, where: str = "") -> tuple[int, int]:
    """Bring the database up to the last of `migrations`; returns (version before, after).

    `conn` must be in autocommit mode (isolation_level=None): each step runs in its own
    BEGIN IMMEDIATE ... COMMIT, which also keeps a second process from migrating at once.
    """
    check_sequence(migrations)
    target = migrations[-1].version if migrations else 0
    before = schema_version(conn)
    if before > target:
        raise ConfigError(
            f"the database {where or '(store)'} has schema version {before}, newer than this "
            f"gateway knows ({target}): it was written by a newer release; upgrade the gateway"
        )
    for migration in migrations[before:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if schema_version(conn) >= migration.version:
                conn.execute("COMMIT")
                continue
            if callable(migration.steps):
                migration.steps(conn)
            else:
                for statement in migration.steps:
                    conn.execute(statement)
            # PRAGMA takes no parameters; the version is an int we own.
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return before, schema_version(conn)
