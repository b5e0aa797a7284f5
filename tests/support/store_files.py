"""What the store left on disk, for tests that must see erased values gone from the bytes."""

from __future__ import annotations

import os
import sqlite3


def disk_bytes(db_path: str) -> bytes:
    """Everything SQLite keeps on disk for the database: the file, its WAL and its
    shared-memory index, concatenated with separators so no match spans two files."""
    parts = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(db_path + suffix):
            with open(db_path + suffix, "rb") as f:
                parts.append(f.read())
    return b"\n--file--\n".join(parts)


def raw_connection(db_path: str) -> sqlite3.Connection:
    """A plain sqlite3 connection, read-only, to check what the store wrote."""
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
