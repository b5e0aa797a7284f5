"""Erasing credentials from an SQLite file for real, not just marking them deleted.

Three places can keep an erased value:

1. The page the row lived in. `PRAGMA secure_delete=ON` makes SQLite overwrite deleted
   cells and freed pages with zeros.
2. The write-ahead log, which holds older copies of changed pages until a checkpoint.
   `wal_checkpoint(TRUNCATE)` copies the zeroed pages into the file and cuts the WAL to
   zero bytes.
3. Stale copies in the unused middle of b-tree pages: when SQLite rebalances pages it
   moves cells to a sibling but does not clear the gap they leave behind, so a copy of a
   row can outlive the row itself, and secure_delete never sees it. (Measured: after a
   churn of a few thousand writes, about one erased password in two hundred still had
   such a copy.) Only rebuilding the file (`VACUUM`) clears those.

So after a batch that erased something, `Scrubber.scrub()` checkpoints, then looks for
each erased credential (the sealed password and the digest HA1s, all unique to their
instance) in the bytes of the database file, and VACUUMs only when a copy is found, or
when there are too many values to look for (a large expiry sweep) and a rebuild is
cheaper than the search. Reading the file costs about a millisecond per value per 10 MB; VACUUM about 9 ms per
thousand instances.

A reader in another process (the CLI) can keep a checkpoint from finishing; the values
then stay pending and `scrub()` is called again until it succeeds. A process killed
between an erasure's commit and its scrub leaves a non-empty WAL behind; the next start
sees it and rebuilds the file once, since the erased values are no longer known.

Runs on the store's writer thread only. Depends on sqlite3 alone.
"""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)

#: past this many values (three per instance), rebuilding the file is cheaper than
#: searching it once per value
MAX_SEARCHED_VALUES = 32
_CHUNK = 1 << 20


class Scrubber:
    """Tracks values erased in committed transactions until they are gone from disk."""

    def __init__(self, path: str):
        self.path = path
        self.on_disk = path != ":memory:" and not path.startswith("file::memory:")
        self._values: list[bytes] = []
        self._checkpoint_due = False
        self._rebuild_due = False
        #: how often the search found a stale copy and the file was rebuilt
        self.vacuums = 0

    @property
    def pending(self) -> bool:
        return self._checkpoint_due or self._rebuild_due or bool(self._values)

    def note(self, values: list[bytes], checkpoint: bool = True) -> None:
        """Values erased (or replaced) by a transaction that has committed."""
        self._values.extend(v for v in values if v)
        self._checkpoint_due = self._checkpoint_due or checkpoint or bool(values)

    def note_unknown(self) -> None:
        """Something was erased but what is not known (the last run was killed between
        an erasure and its scrub): the file is rebuilt at the next scrub."""
        self._rebuild_due = True

    def scrub(self, conn: sqlite3.Connection) -> bool:
        """Make the noted values unreadable on disk; False when it has to be retried."""
        if not self.pending or not self.on_disk:
            self._clear()
            return True
        if not _checkpoint(conn):
            return False
        if self._rebuild_due or (
            self._values and (len(self._values) > MAX_SEARCHED_VALUES or file_contains(self.path, self._values))
        ):
            try:
                conn.execute("VACUUM")
            except sqlite3.Error as exc:  # no room for the copy, a reader...: try later
                log.warning("store: VACUUM to erase stale copies failed (%s); will retry", exc)
                return False
            self.vacuums += 1
            if not _checkpoint(conn):
                return False
        self._clear()
        return True

    def _clear(self) -> None:
        self._values.clear()
        self._checkpoint_due = self._rebuild_due = False


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the whole WAL into the file and truncate it; False when a reader held it.

    It does not wait for readers (busy timeout 0 for the checkpoint): a slow reader
    would otherwise stall every write queued behind the erasure. It is retried instead.
    """
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        log.warning("store: WAL checkpoint failed (%s); will retry", exc)
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    if busy:
        log.info("store: a reader holds the WAL; the checkpoint that erases old pages will be retried")
    return not busy


def file_contains(path: str, values: list[bytes]) -> bool:
    """True when any of `values` occurs in the bytes of the file at `path` (read in
    chunks that overlap by the longest value, so a value across a boundary is found)."""
    overlap = max(len(v) for v in values) - 1
    try:
        with open(path, "rb", buffering=0) as f:
            tail = b""
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return False
                window = tail + chunk
                if any(v in window for v in values):
                    return True
                tail = window[-overlap:] if overlap > 0 else b""
    except OSError as exc:
        log.warning("store: cannot read %s to verify an erasure (%s); rebuilding it", path, exc)
        return True


__all__ = ["Scrubber", "file_contains", "MAX_SEARCHED_VALUES"]
