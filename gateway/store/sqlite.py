"""The SQLite backend of the store: one thread owns the connection and batches writes.

Every call from the event loop becomes a job on a queue and returns a future; the loop
never touches the disk. The writer thread takes the first job, drains whatever else is
already queued (up to `max_batch`), runs them all in ONE transaction (each inside its own
savepoint, so one failing job does not undo the others) and commits once: under load, a
hundred writes cost one fsync. Futures are resolved on the loop, in one hop per batch,
only after the commit, so an awaited write is durable. Reads travel the same queue, so
a read always sees every write awaited before it.

Erasure: the connection runs with `secure_delete=ON`, so SQLite overwrites deleted
content with zeros in the pages it writes. Older copies of those pages still sit in the
write-ahead log, so after a batch that erased credentials (DELETE, a replaced instance,
a new password, secret or push target) the thread runs `wal_checkpoint(TRUNCATE)`, which
copies the zeroed pages into the database file and cuts the WAL to zero bytes. When a
reader in another process keeps the checkpoint from finishing, it is retried until it
does. Futures of the erasing batch are resolved after the checkpoint.

Layout: instance fields are columns named as the record's fields; `push` is the
msgpack of the push target list, `premium` an integer.

Depends on sqlite3, msgspec and the store's own modules; never on the API, SIP, push or
instance layers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from gateway.errors import ConfigError, TransientError
from gateway.store.crypto import SecretBox
from gateway.store.migrations import CURRENT_VERSION, MIGRATIONS, Migration, migrate, schema_version
from gateway.store.records import UPDATABLE_FIELDS, InstanceRecord, PushTarget

log = logging.getLogger(__name__)

_COLUMNS: tuple[str, ...] = InstanceRecord.__struct_fields__
_PUSH = _COLUMNS.index("push")
_PREMIUM = _COLUMNS.index("premium")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM instances"
_INSERT = f"INSERT INTO instances ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
#: fields whose old value is a credential or personal data to scrub from the WAL
_SENSITIVE = frozenset({"password_ct", "secret_ha1", "secret_ha1_sha256", "secret_bearer", "push", "auth_username"})

#: how long to wait before retrying a checkpoint that a reader kept from truncating the WAL
SCRUB_RETRY = 0.5
DEFAULT_MAX_BATCH = 256


def _validated(rec: InstanceRecord) -> InstanceRecord:
    """A checked copy of `rec`: a struct built by hand is not type-checked, and a bad
    value stored now would make the row unreadable later."""
    try:
        checked = msgspec.msgpack.decode(msgspec.msgpack.encode(rec), type=InstanceRecord)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ValueError(f"invalid instance record: {exc}") from None
    if not checked.id or not checked.password_ct:
        raise ValueError("invalid instance record: empty id or password ciphertext")
    return checked


def _to_row(rec: InstanceRecord) -> list[Any]:
    values = list(msgspec.structs.astuple(rec))
    values[_PUSH] = msgspec.msgpack.encode(rec.push)
    values[_PREMIUM] = int(rec.premium)
    return values


def _from_row(row: Sequence[Any]) -> InstanceRecord:
    values = list(row)
    values[_PUSH] = msgspec.msgpack.decode(values[_PUSH], type=list[PushTarget])
    values[_PREMIUM] = bool(values[_PREMIUM])
    return InstanceRecord(*values)


def _select_all(conn: sqlite3.Connection, where: str = "", args: Sequence[Any] = (), limit: int | None = None) -> list[InstanceRecord]:
    sql = f"{_SELECT} {where} ORDER BY expires_at, id"
    if limit is not None:
        sql += " LIMIT ?"
        args = (*args, int(limit))
    return [_from_row(row) for row in conn.execute(sql, args)]


def _select_one(conn: sqlite3.Connection, instance_id: str) -> InstanceRecord | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (instance_id,)).fetchone()
    return None if row is None else _from_row(row)


class _Batch:
    """What the jobs of one transaction tell the writer: whether to scrub the WAL."""

    __slots__ = ("scrub",)

    def __init__(self) -> None:
        self.scrub = False


Work = Callable[[sqlite3.Connection, _Batch], Any]


class _Job:
    __slots__ = ("work", "future", "outcome", "failed")

    def __init__(self, work: Work | None, future: asyncio.Future[Any]):
        self.work = work  # None: the stop request
        self.future = future
        self.outcome: Any = None
        self.failed = False

    def fail(self, exc: BaseException) -> None:
        self.outcome = exc
        self.failed = True


def _settle(jobs: list[_Job]) -> None:
    """Runs on the loop: hand each job's outcome to whoever awaits it."""
    for job in jobs:
        if job.future.cancelled():
            continue  # the caller gave up waiting; the write still happened
        if job.failed:
            job.future.set_exception(job.outcome)
        else:
            job.future.set_result(job.outcome)


def _store_failure(exc: sqlite3.Error) -> TransientError:
    # The disk is full, the file went away, another process holds the lock...: the caller
    # answers 503 and may retry. sqlite3 messages carry no bound values, so no secrets.
    return TransientError(f"the store failed: {exc}", retry_after=1.0)


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
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"store synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = os.fspath(path)
        self.secret_box = secret_box
        self.max_batch = max_batch
        # FULL: a commit is on disk before its future resolves (an app told "created" must
        # not lose its instance to a power cut); batching makes the fsync affordable.
        self._synchronous = synchronous.upper()
        self._migrations = tuple(migrations)
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state = "new"  # new -> open -> closing -> closed
        self._crashed: BaseException | None = None
        self._scrub_pending = False
        #: batches committed and jobs run, for the stats page and the benchmark
        self.batches = 0
        self.jobs = 0

    def __repr__(self) -> str:
        return f"SQLiteStore(path={self.path!r}, state={self._state})"

    @property
    def writer_thread(self) -> threading.Thread | None:
        """The thread that owns the connection (None before open)."""
        return self._thread

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Start the writer thread, open the file and migrate it. ConfigError when the
        file cannot be opened, is not a database, or is newer than this code."""
        if self._state != "new":
            raise RuntimeError(f"the store was already opened ({self._state})")
        self._loop = asyncio.get_running_loop()
        started = self._loop.create_future()
        self._state = "opening"
        self._thread = threading.Thread(target=self._serve, args=(started,), name="store-writer", daemon=True)
        self._thread.start()
        try:
            await started
        except BaseException:
            self._state = "closed"
            raise
        self._state = "open"

    async def close(self) -> None:
        """Run what is queued, checkpoint, close the file and stop the thread."""
        if self._state != "open":
            return
        self._state = "closing"
        assert self._loop is not None
        stopped = self._loop.create_future()
        self._queue.put(_Job(None, stopped))
        try:
            await stopped
        finally:
            self._state = "closed"

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the Store interface ----------------------------------------------------------

    async def put_instance(self, rec: InstanceRecord) -> str | None:
        row = _to_row(_validated(rec))
        triple = (rec.app_id, rec.aor, rec.device_id)

        def work(conn: sqlite3.Connection, batch: _Batch) -> str | None:
            old = conn.execute(
                "SELECT id FROM instances WHERE app_id = ? AND aor = ? AND device_id = ?", triple
            ).fetchone()
            if old is not None:
                conn.execute("DELETE FROM instances WHERE id = ?", (old[0],))
                batch.scrub = True
            try:
                conn.execute(_INSERT, row)
            except sqlite3.IntegrityError:
                raise ValueError(f"instance id {rec.id!r} is already in use by another instance") from None
            return None if old is None else old[0]

        return await self._submit(work)

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return await self._submit(lambda conn, batch: _select_one(conn, instance_id))

    async def update_instance(self, instance_id: str, **fields: Any) -> InstanceRecord | None:
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))} of an instance")
        fields.setdefault("updated_at", time.time())

        def work(conn: sqlite3.Connection, batch: _Batch) -> InstanceRecord | None:
            current = _select_one(conn, instance_id)
            if current is None:
                return None
            updated = _validated(msgspec.structs.replace(current, **fields))
            new_row = _to_row(updated)
            changed = [name for name in fields if getattr(current, name) != getattr(updated, name)]
            if changed:
                assignments = ", ".join(f"{name} = ?" for name in changed)
                values = [new_row[_COLUMNS.index(name)] for name in changed]
                conn.execute(f"UPDATE instances SET {assignments} WHERE id = ?", (*values, instance_id))
                if _SENSITIVE.intersection(changed):
                    batch.scrub = True
            return updated

        return await self._submit(work)

    async def erase_instance(self, instance_id: str) -> bool:
        def work(conn: sqlite3.Connection, batch: _Batch) -> bool:
            gone = conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,)).rowcount > 0
            batch.scrub = batch.scrub or gone
            return gone

        return await self._submit(work)

    async def erase_expired(self, now: float) -> list[str]:
        """Erase every instance with expires_at <= now, in one transaction; their ids."""

        def work(conn: sqlite3.Connection, batch: _Batch) -> list[str]:
            ids = [row[0] for row in conn.execute("DELETE FROM instances WHERE expires_at <= ? RETURNING id", (now,))]
            batch.scrub = batch.scrub or bool(ids)
            return ids

        return await self._submit(work)

    async def list_instances(self, limit: int | None = None) -> list[InstanceRecord]:
        return await self._submit(lambda conn, batch: _select_all(conn, limit=limit))

    async def count_instances(self) -> int:
        return await self._submit(lambda conn, batch: conn.execute("SELECT count(*) FROM instances").fetchone()[0])

    async def expiring_before(self, ts: float) -> list[InstanceRecord]:
        return await self._submit(lambda conn, batch: _select_all(conn, "WHERE expires_at < ?", (ts,)))

    # --- synchronous reads for the CLI (no loop, no writer thread) ----------------------

    def sync_list(self, limit: int | None = None) -> list[InstanceRecord]:
        """The instances by expiry, read through a short-lived read-only connection."""
        with self._reader() as conn:
            return _select_all(conn, limit=limit)

    def sync_count(self) -> int:
        with self._reader() as conn:
            return conn.execute("SELECT count(*) FROM instances").fetchone()[0]

    def _reader(self) -> _ReadOnly:
        return _ReadOnly(self.path, self._migrations[-1].version if self._migrations else 0)

    # --- the writer thread ------------------------------------------------------------

    async def _submit(self, work: Work) -> Any:
        if self._state != "open":
            raise RuntimeError(f"the store is not open ({self._state})")
        if self._crashed is not None:
            raise TransientError(f"the store's writer thread stopped: {self._crashed!r}")
        assert self._loop is not None
        future = self._loop.create_future()
        self._queue.put(_Job(work, future))  # SimpleQueue.put never blocks
        if self._crashed is not None:  # it died between the check and the put
            self._fail_queued(self._crashed)
        return await future

    def _call_loop(self, jobs: list[_Job]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_settle, jobs)
        except RuntimeError:
            log.warning("store: the event loop closed before %d store calls were answered", len(jobs))

    def _serve(self, started: asyncio.Future[None]) -> None:
        opener = _Job(None, started)
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to open(), which raises it
            opener.fail(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            self._call_loop([opener])
            return
        self._call_loop([opener])
        stop: _Job | None = None
        try:
            while stop is None:
                try:
                    first = self._queue.get(timeout=SCRUB_RETRY if self._scrub_pending else None)
                except queue.Empty:
                    self._checkpoint(conn)
                    continue
                jobs: list[_Job] = []
                item: _Job | None = first
                while item is not None:
                    if item.work is None:
                        stop = item
                        break
                    jobs.append(item)
                    if len(jobs) >= self.max_batch:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                if jobs:
                    self._execute(conn, jobs)
        except BaseException as exc:  # a bug: fail everyone rather than hang them forever
            log.exception("store: the writer thread crashed")
            self._crashed = exc
            self._fail_queued(exc)
        finally:
            self._shut(conn)
            if stop is not None:
                self._call_loop([stop])

    def _execute(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        batch = _Batch()
        in_transaction: list[_Job] = []  # jobs whose effects ride on the open transaction
        try:
            conn.execute("BEGIN")
            for job in jobs:
                assert job.work is not None
                conn.execute("SAVEPOINT job")
                try:
                    job.outcome = job.work(conn, batch)
                except Exception as exc:
                    job.fail(_store_failure(exc) if isinstance(exc, sqlite3.Error) else exc)
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    else:
                        # SQLite rolled the whole transaction back (disk full, I/O error):
                        # the jobs before this one were lost with it.
                        for earlier in in_transaction:
                            earlier.fail(job.outcome)
                        in_transaction.clear()
                        conn.execute("BEGIN")
                    continue
                conn.execute("RELEASE job")
                in_transaction.append(job)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            failure = _store_failure(exc)
            log.warning("store: a batch of %d jobs failed: %s", len(jobs), exc)
            # Whatever had not failed on its own was in the lost transaction or never ran.
            for job in jobs:
                if not job.failed:
                    job.fail(failure)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        self.batches += 1
        self.jobs += len(jobs)
        if batch.scrub or self._scrub_pending:
            self._checkpoint(conn)
        self._call_loop(jobs)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the file and cut it to zero bytes, so that erased values
        survive in neither. A reader in another process can keep it from finishing."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("store: WAL checkpoint failed (%s); retrying", exc)
            busy = 1
        if busy and not self._scrub_pending:
            log.info("store: a reader holds the WAL; the checkpoint that scrubs it will be retried")
        self._scrub_pending = bool(busy)

    def _fail_queued(self, exc: BaseException) -> None:
        failure = TransientError(f"the store's writer thread stopped: {exc!r}")
        jobs = []
        while True:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for job in jobs:
            if job.work is not None:
                job.fail(failure)
        if jobs:
            self._call_loop(jobs)

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
        return conn

    def _shut(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA optimize")
            self._checkpoint(conn)
        except sqlite3.Error as exc:
            log.warning("store: closing %s: %s", self.path, exc)
        finally:
            conn.close()


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


__all__ = ["SQLiteStore", "CURRENT_VERSION", "SCRUB_RETRY"]
