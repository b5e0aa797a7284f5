"""The SQLite backend of the store: instances as rows of one table, in a WAL-mode file
that a single `Writer` thread owns (see `writer` for the batching, `erasure` for how an
erased credential leaves the disk).

Layout: instance fields are columns named as the record's fields; `push` is the msgpack
of the push target list, `premium` an integer. Records are validated before they are
written, so that every stored row decodes.

Depends on sqlite3, msgspec and the store's own modules; never on the API, SIP, push or
instance layers.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from gateway import metrics
from gateway.errors import ConfigError, SealError
from gateway.store import messages as message_sql
from gateway.store.crypto import SecretBox
from gateway.store.erasure import Scrubber
from gateway.store.writer import DEFAULT_MAX_BATCH, Batch, Work, Writer
from gateway.store.migrations import CURRENT_VERSION, MIGRATIONS, Migration, migrate, schema_version
from gateway.store.records import UPDATABLE_FIELDS, InstanceRecord, PushTarget, StoredMessage

log = logging.getLogger(__name__)

_COLUMNS: tuple[str, ...] = InstanceRecord.__struct_fields__
_PUSH = _COLUMNS.index("push")
_PREMIUM = _COLUMNS.index("premium")
#: one object per app id, registrar, outbound proxy, push topic and registration expiry,
#: whatever the number of records read: values most instances share, so what is kept in
#: memory from records (one per instance) need not carry copies
_COMMON: dict = {}
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM instances"
_INSERT = f"INSERT INTO instances ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
#: fields whose old value is a credential or personal data to scrub from the WAL
_SENSITIVE = frozenset({"password_ct", "secret_ha1", "secret_ha1_sha256", "secret_bearer", "push"})
#: credentials unique to one instance, searched for in the file after they are erased: the
#: sealed password (random nonce) and the digest HA1s (the instance id is their username),
#: which would let anyone answer a digest challenge as the device
_CREDENTIALS = ("password_ct", "secret_ha1", "secret_ha1_sha256")
_RETURNING = f"RETURNING id, {', '.join(_CREDENTIALS)}"
_KEY_CHECK = "sip-push-gateway store key check"
_KEY_CHECK_AAD = b"store_meta.key_check"


def _validated(rec: InstanceRecord) -> InstanceRecord:
    """A checked copy of `rec`: a struct built by hand is not type-checked, and a bad
    value stored now would make the row unreadable later."""
    try:
        checked = msgspec.msgpack.decode(msgspec.msgpack.encode(rec), type=InstanceRecord)
    except (ValueError, TypeError, OverflowError) as exc:  # msgspec.ValidationError is a ValueError
        raise ValueError(f"invalid instance record: {exc}") from None
    if not checked.id or not checked.password_ct:
        raise ValueError("invalid instance record: empty id or password ciphertext")
    times = (checked.created_at, checked.updated_at, checked.expires_at, checked.registered_until or 0.0)
    if not all(math.isfinite(t) for t in times):  # SQLite would store NaN as NULL
        raise ValueError("invalid instance record: a time is not a finite number")
    if not 0 <= checked.reg_expires < 2**31:
        raise ValueError(f"invalid instance record: reg_expires {checked.reg_expires} out of range")
    return _shared(checked)


def _common(value):
    if value is None:
        return None
    found = _COMMON.get(value)
    if found is None:
        if len(_COMMON) >= 4096:  # bounded: a store of all-different registrars gains nothing
            return value
        found = _COMMON.setdefault(value, value)
    return found


def _shared(rec: InstanceRecord) -> InstanceRecord:
    # the id is interned: the lifecycle, the registration client and the call side each
    # read their own copy of the record at start, and keep only its id (and a few fields)
    rec.id = sys.intern(rec.id)
    rec.app_id, rec.registrar, rec.outbound_proxy, rec.reg_expires = (
        _common(rec.app_id), _common(rec.registrar), _common(rec.outbound_proxy),
        _common(rec.reg_expires))
    for target in rec.push:
        target.topic = _common(target.topic)
    return rec


def _to_row(rec: InstanceRecord) -> list[Any]:
    values = list(msgspec.structs.astuple(rec))
    values[_PUSH] = msgspec.msgpack.encode(rec.push)
    values[_PREMIUM] = int(rec.premium)
    return values


def _from_row(row: Sequence[Any]) -> InstanceRecord:
    values = list(row)
    values[_PUSH] = msgspec.msgpack.decode(values[_PUSH], type=list[PushTarget])
    values[_PREMIUM] = bool(values[_PREMIUM])
    return _shared(InstanceRecord(*values))


def _select_all(conn: sqlite3.Connection, where: str = "", args: Sequence[Any] = (), limit: int | None = None) -> list[InstanceRecord]:
    sql = f"{_SELECT} {where} ORDER BY expires_at, id"
    if limit is not None:
        sql += " LIMIT ?"
        args = (*args, int(limit))
    return [_from_row(row) for row in conn.execute(sql, args)]


def _select_one(conn: sqlite3.Connection, instance_id: str) -> InstanceRecord | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (instance_id,)).fetchone()
    return None if row is None else _from_row(row)


def _note_erased(batch: Batch, values: Sequence[bytes | str]) -> None:
    """Hand erased credentials to the scrubber as the bytes SQLite stored (TEXT is UTF-8)."""
    if values:
        batch.erased.extend(v.encode() if isinstance(v, str) else v for v in values)
        batch.scrub = True


def _note_messages(batch: Batch, sealed: list[bytes]) -> None:
    """Messages about to go with their instance: erased from disk like credentials, and
    counted as expired (never fetched)."""
    if sealed:
        _note_erased(batch, sealed)
        metrics.message_expired(len(sealed))


class SQLiteStore:
    """The `Store` on one SQLite file (WAL). See the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        secret_box: SecretBox,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        synchronous: str = "FULL",
        migrations: Sequence[Migration] = MIGRATIONS,
    ):
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"store synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = os.fspath(path)
        self.secret_box = secret_box
        # FULL: a commit is on disk before its future resolves (an app told "created" must
        # not lose its instance to a power cut); batching makes the fsync affordable.
        self._synchronous = synchronous.upper()
        self._migrations = tuple(migrations)
        self._scrubber = Scrubber(self.path)
        self._writer = Writer(self._connect, self._scrubber, max_batch)

    def __repr__(self) -> str:
        return f"SQLiteStore(path={self.path!r}, state={self._writer.state})"

    @property
    def writer_thread(self) -> threading.Thread | None:
        """The thread that owns the connection (None before open)."""
        return self._writer.thread

    @property
    def batches(self) -> int:
        """Transactions committed so far (for /stats and the benchmark)."""
        return self._writer.batches

    @property
    def jobs(self) -> int:
        """Calls run so far; jobs / batches is the mean batch size."""
        return self._writer.jobs

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Start the writer thread, open the file and migrate it. ConfigError when the
        file cannot be opened, is not a database, or is newer than this code."""
        await self._writer.start()

    async def close(self) -> None:
        """Run what is queued, checkpoint, close the file and stop the thread."""
        await self._writer.stop()

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the Store interface ----------------------------------------------------------

    async def put_instance(self, rec: InstanceRecord) -> str | None:
        row = _to_row(_validated(rec))
        triple = (rec.app_id, rec.aor, rec.device_id)

        def work(conn: sqlite3.Connection, batch: Batch) -> str | None:
            _note_messages(batch, message_sql.of_instances(
                conn, "WHERE app_id = ? AND aor = ? AND device_id = ?", triple))
            old = conn.execute(
                f"DELETE FROM instances WHERE app_id = ? AND aor = ? AND device_id = ? {_RETURNING}", triple
            ).fetchone()
            if old is not None:
                _note_erased(batch, old[1:])
            try:
                conn.execute(_INSERT, row)
            except sqlite3.IntegrityError as exc:
                if conn.execute("SELECT 1 FROM instances WHERE id = ?", (rec.id,)).fetchone():
                    raise ValueError(f"instance id {rec.id!r} is already in use by another instance") from None
                raise ValueError(f"invalid instance record: {exc}") from None
            return None if old is None else old[0]

        return await self._submit(work)

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return await self._submit(lambda conn, batch: _select_one(conn, instance_id), writes=False)

    async def update_instance(self, instance_id: str, *, if_mode: str | None = None,
                              **fields: Any) -> InstanceRecord | None:
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))} of an instance")
        fields.setdefault("updated_at", time.time())

        def work(conn: sqlite3.Connection, batch: Batch) -> InstanceRecord | None:
            current = _select_one(conn, instance_id)
            if current is None:
                return None
            if if_mode is not None and current.mode != if_mode:
                return current
            updated = _validated(msgspec.structs.replace(current, **fields))
            new_row = _to_row(updated)
            changed = [name for name in fields if getattr(current, name) != getattr(updated, name)]
            if changed:
                assignments = ", ".join(f"{name} = ?" for name in changed)
                values = [new_row[_COLUMNS.index(name)] for name in changed]
                conn.execute(f"UPDATE instances SET {assignments} WHERE id = ?", (*values, instance_id))
                _note_erased(batch, [getattr(current, name) for name in _CREDENTIALS if name in changed])
                if _SENSITIVE.intersection(changed):
                    batch.scrub = True
            return updated

        return await self._submit(work)

    async def erase_instance(self, instance_id: str) -> bool:
        def work(conn: sqlite3.Connection, batch: Batch) -> bool:
            _note_messages(batch, message_sql.of_instances(conn, "WHERE id = ?", (instance_id,)))
            gone = conn.execute(f"DELETE FROM instances WHERE id = ? {_RETURNING}", (instance_id,)).fetchone()
            if gone is None:
                return False
            _note_erased(batch, gone[1:])
            return True

        return await self._submit(work)

    async def erase_expired(self, now: float) -> list[str]:
        """Erase every instance with expires_at <= now, in one transaction; their ids."""

        def work(conn: sqlite3.Connection, batch: Batch) -> list[str]:
            _note_messages(batch, message_sql.of_instances(conn, "WHERE expires_at <= ?", (now,)))
            rows = conn.execute(f"DELETE FROM instances WHERE expires_at <= ? {_RETURNING}", (now,)).fetchall()
            for row in rows:
                _note_erased(batch, row[1:])
            return sorted(row[0] for row in rows)

        return await self._submit(work)

    async def list_instances(self, limit: int | None = None) -> list[InstanceRecord]:
        return await self._submit(lambda conn, batch: _select_all(conn, limit=limit), writes=False)

    async def iter_instances(self, page: int = 1000) -> AsyncIterator[InstanceRecord]:
        """Every instance, ordered like list_instances, read `page` at a time: a start with
        100,000 instances holds one page of records at once, not all of them."""
        after: tuple[float, str] | None = None
        while True:
            if after is None:
                rows = await self._submit(lambda conn, batch: _select_all(conn, limit=page), writes=False)
            else:
                # written so that the expiry index serves it (a row value compare is not)
                where, args = "WHERE expires_at >= ? AND (expires_at > ? OR id > ?)", (after[0], *after)
                rows = await self._submit(lambda conn, batch: _select_all(conn, where, args, limit=page),
                                          writes=False)
            for record in rows:
                yield record
            if len(rows) < page:
                return
            after = (rows[-1].expires_at, rows[-1].id)

    async def count_instances(self) -> int:
        return await self._submit(lambda conn, batch: conn.execute("SELECT count(*) FROM instances").fetchone()[0], writes=False)

    async def expiring_before(self, ts: float) -> list[InstanceRecord]:
        return await self._submit(lambda conn, batch: _select_all(conn, "WHERE expires_at < ?", (ts,)), writes=False)

    # --- stored SIP messages ------------------------------------------------------------

    async def put_message(self, message: StoredMessage, max_pending: int = 1 << 30) -> str:
        """Store a message durably: "stored", "full" or "gone" (see `messages.put`)."""
        return await self._submit(lambda conn, batch: message_sql.put(conn, message, max_pending))

    async def list_messages(self, instance_id: str, limit: int = 1000) -> list[StoredMessage]:
        return await self._submit(lambda conn, batch: message_sql.listing(conn, instance_id, limit), writes=False)

    async def count_messages(self, instance_id: str) -> int:
        return await self._submit(lambda conn, batch: message_sql.count(conn, instance_id), writes=False)

    async def delete_messages(self, instance_id: str, ids: Sequence[str]) -> int:
        """Delete (and erase from disk) the instance's messages among `ids`; how many."""

        def work(conn: sqlite3.Connection, batch: Batch) -> int:
            gone = message_sql.delete(conn, instance_id, ids)
            _note_erased(batch, gone)
            return len(gone)

        return await self._submit(work)

    # --- synchronous reads for the CLI (no loop, no writer thread) ----------------------

    def sync_list(self, limit: int | None = None) -> list[InstanceRecord]:
        """The instances by expiry, read through a short-lived read-only connection."""
        with self._reader() as conn:
            return _select_all(conn, limit=limit)

    def sync_get(self, instance_id: str) -> InstanceRecord | None:
        with self._reader() as conn:
            return _select_one(conn, instance_id)

    def sync_count(self) -> int:
        with self._reader() as conn:
            return conn.execute("SELECT count(*) FROM instances").fetchone()[0]

    def _reader(self) -> _ReadOnly:
        return _ReadOnly(self.path, self._migrations[-1].version if self._migrations else 0)

    # --- the writer thread ------------------------------------------------------------

    async def _submit(self, work: Work, writes: bool = True) -> Any:
        return await self._writer.submit(work, writes)

    def _connect(self) -> sqlite3.Connection:
        memory = self.path == ":memory:"
        if not memory:
            directory = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                # Created here with 0600 so that SQLite's -wal and -shm files, which copy
                # the database file's mode, are private too.
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise ConfigError(f"cannot open the database {self.path}: {exc.strerror}") from None
        # A clean close leaves no WAL (or an empty one); a killed process leaves its WAL,
        # possibly with an erasure not yet scrubbed.
        wal = f"{self.path}-wal"
        unclean = not memory and os.path.exists(wal) and os.path.getsize(wal) > 0
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=2.0, cached_statements=64)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the database {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA secure_delete = ON")
            if conn.execute("PRAGMA secure_delete").fetchone()[0] != 1:
                raise ConfigError("this SQLite library cannot overwrite deleted content (secure_delete)")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and not memory:
                raise ConfigError(f"the database {self.path} cannot use a write-ahead log (journal mode {mode})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA temp_store = MEMORY")  # no temporary files holding row data
            conn.execute("PRAGMA journal_size_limit = 4194304")
            before, after = migrate(conn, self._migrations, where=self.path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"cannot use the database {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        if before != after:
            log.info("store: migrated %s from schema version %d to %d", self.path, before, after)
        self._check_key(conn)
        if unclean:
            log.info("store: %s was not closed cleanly (or is open elsewhere); rebuilding it so that no erased value survives", self.path)
            self._scrubber.note_unknown()
            self._scrubber.scrub(conn)  # retried by the writer if a reader is in the way
        return conn

    def _check_key(self, conn: sqlite3.Connection) -> None:
        """Refuse to start with a key file other than the one the database was written
        with: every stored password would fail to open, one by one, at call time."""
        row = conn.execute("SELECT value FROM store_meta WHERE name = 'key_check'").fetchone()
        if row is None:
            sealed = self.secret_box.seal(_KEY_CHECK, aad=_KEY_CHECK_AAD)
            conn.execute("INSERT INTO store_meta (name, value) VALUES ('key_check', ?)", (sealed,))
            return
        try:
            self.secret_box.open(row[0], aad=_KEY_CHECK_AAD)
        except SealError:
            raise ConfigError(
                f"the key file {self.secret_box.key_path} is not the one the database {self.path} "
                "was written with: restore the original key file (the stored passwords cannot be "
                "read without it), or move the database away to start empty"
            ) from None


class _ReadOnly:
    """A read-only connection for the CLI, checked to be at the schema version we read."""

    def __init__(self, path: str, version: int):
        self.path = path
        self.version = version
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            raise ConfigError(f"there is no database at {self.path}")
        uri = pathlib.Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=2.0)
            found = schema_version(self.conn)
        except sqlite3.Error as exc:
            self.__exit__()
            raise ConfigError(f"cannot read the database {self.path}: {exc}") from None
        if found != self.version:
            self.__exit__()
            raise ConfigError(
                f"the database {self.path} is at schema version {found}, this gateway reads "
                f"version {self.version} (start the gateway once to migrate it, or upgrade)"
            )
        return self.conn

    def __exit__(self, *exc_info: object) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


__all__ = ["SQLiteStore", "CURRENT_VERSION"]
