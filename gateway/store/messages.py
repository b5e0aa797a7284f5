"""The messages table: SQL work run on the store's writer thread for `SQLiteStore`.

Each function is a writer job (`work(conn, batch)`). A message's content is one sealed
blob (see `records.MessageContent`); deleting messages (acknowledged, or erased with
their instance by ON DELETE CASCADE) hands the blobs to the scrubber like erased
credentials, so no copy of a message outlives its deletion on disk.

Depends on sqlite3 and the store's records only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.store.records import StoredMessage

_FIELDS = "id, instance_id, received_at, sealed"


def put(conn: sqlite3.Connection, message: StoredMessage, max_pending: int) -> str:
    """Insert a message: "stored", "full" (the instance has `max_pending` waiting) or
    "gone" (no such instance: erased meanwhile)."""
    if conn.execute("SELECT 1 FROM instances WHERE id = ?", (message.instance_id,)).fetchone() is None:
        return "gone"
    waiting = conn.execute("SELECT count(*) FROM messages WHERE instance_id = ?", (message.instance_id,)).fetchone()[0]
    if waiting >= max_pending:
        return "full"
    conn.execute(f"INSERT INTO messages ({_FIELDS}) VALUES (?, ?, ?, ?)",
                 (message.id, message.instance_id, message.received_at, message.sealed))
    return "stored"


def listing(conn: sqlite3.Connection, instance_id: str, limit: int) -> list[StoredMessage]:
    rows = conn.execute(f"SELECT {_FIELDS} FROM messages WHERE instance_id = ? ORDER BY received_at, id LIMIT ?",
                        (instance_id, int(limit)))
    return [StoredMessage(*row) for row in rows]


def count(conn: sqlite3.Connection, instance_id: str) -> int:
    return conn.execute("SELECT count(*) FROM messages WHERE instance_id = ?", (instance_id,)).fetchone()[0]


def delete(conn: sqlite3.Connection, instance_id: str, ids: Sequence[str]) -> list[bytes]:
    """Delete the instance's messages among `ids`; their sealed blobs (to scrub)."""
    gone: list[bytes] = []
    for message_id in ids:
        row = conn.execute("DELETE FROM messages WHERE id = ? AND instance_id = ? RETURNING sealed",
                           (message_id, instance_id)).fetchone()
        if row is not None:
            gone.append(row[0])
    return gone


def of_instances(conn: sqlite3.Connection, where: str, args: Sequence) -> list[bytes]:
    """The sealed blobs of the messages of the instances matching `where` (run before
    those instances are deleted: the cascade would take them silently)."""
    sql = f"SELECT sealed FROM messages WHERE instance_id IN (SELECT id FROM instances {where})"
    return [row[0] for row in conn.execute(sql, args)]
