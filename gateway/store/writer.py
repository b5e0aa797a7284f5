"""The store's single writer: one thread owns the SQLite connection and runs every
call as a job, in batches.

A call from the event loop becomes a job on a queue and returns a future; the loop never
touches the disk (`SimpleQueue.put` never blocks). The thread takes the first job, drains
whatever else is already queued (up to `max_batch`), runs them all in ONE transaction,
each inside its own savepoint so that one failing job does not undo the others, and
commits once: under load, a hundred writes cost one fsync. The futures are resolved on
the loop, one hop per batch, only after the commit, so an awaited write is durable.
Reads travel the same queue, so a read sees every write awaited before it.

After a batch that erased something, the `Scrubber` makes the erasure real on disk
before the futures resolve (see `erasure`).

A job that raises an ordinary exception fails alone. Anything worse (a bug escaping a
job) stops the thread; every pending and later call then fails with TransientError
instead of hanging.

`submit` times each write from call to durable commit for `gateway.metrics`.

Depends on sqlite3, asyncio, `erasure` and `gateway.metrics`; knows nothing of instances
or schemas.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.errors import TransientError
from gateway.store.erasure import Scrubber

log = logging.getLogger(__name__)

#: how long to wait before retrying a checkpoint that a reader kept from truncating the WAL
SCRUB_RETRY = 0.5
DEFAULT_MAX_BATCH = 256


class Batch:
    """What the jobs of one transaction tell the writer: the credentials they erased or
    replaced (`erased`, to be searched for on disk), and whether anything sensitive
    changed at all (`scrub`: checkpoint the WAL away)."""

    __slots__ = ("scrub", "erased")

    def __init__(self) -> None:
        self.scrub = False
        self.erased: list[bytes] = []


Work = Callable[[sqlite3.Connection, Batch], Any]


class _Job:
    __slots__ = ("work", "writes", "future", "outcome", "failed")

    def __init__(self, work: Work | None, future: asyncio.Future[Any], writes: bool = True):
        self.work = work  # None: the stop request
        self.writes = writes
        self.future = future
        self.outcome: Any = None
        self.failed = False

    def fail(self, exc: BaseException) -> None:
        self.outcome = exc
        self.failed = True


def _settle(jobs: list[_Job]) -> None:
    """Runs on the loop: hand each job's outcome to whoever awaits it."""
    for job in jobs:
        if job.future.done():
            continue  # the caller gave up waiting (the write still happened)
        if job.failed:
            job.future.set_exception(job.outcome)
        else:
            job.future.set_result(job.outcome)


def _store_failure(exc: sqlite3.Error) -> TransientError:
    # The disk is full, the file went away, another process holds the lock...: the caller
    # answers 503 and may retry. sqlite3 messages carry no bound values, so no secrets.
    return TransientError(f"the store failed: {exc}", retry_after=1.0)


class Writer:
    """The thread owning one connection. `connect` runs on that thread and returns the
    ready connection (or raises, and `start()` raises it)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], scrubber: Scrubber, max_batch: int = DEFAULT_MAX_BATCH):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._connect = connect
        self._scrubber = scrubber
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.state = "new"  # new -> opening -> open -> closing -> closed
        self._crashed: BaseException | None = None
        #: batches committed and jobs run, for the stats page and the benchmark
        self.batches = 0
        self.jobs = 0

    async def start(self) -> None:
        """Start the thread and connect on it; raises what `connect` raised."""
        if self.state != "new":
            raise RuntimeError(f"the store was already opened ({self.state})")
        self._loop = asyncio.get_running_loop()
        started = self._loop.create_future()
        self.state = "opening"
        self.thread = threading.Thread(target=self._serve, args=(started,), name="store-writer", daemon=True)
        self.thread.start()
        try:
            await started
        except BaseException:
            self.state = "closed"
            raise
        self.state = "open"

    async def stop(self) -> None:
        """Run what is queued, checkpoint, close the connection and end the thread."""
        if self.state != "open":
            return
        self.state = "closing"
        assert self._loop is not None and self.thread is not None
        if self._crashed is not None or not self.thread.is_alive():
            self.state = "closed"
            return
        stopped = self._loop.create_future()
        self._queue.put(_Job(None, stopped))
        try:
            await stopped
        finally:
            self.state = "closed"

    async def submit(self, work: Work, writes: bool = True) -> Any:
        """Run `work(conn, batch)` on the thread, in the next batch; its result.
        `writes=False` promises the work only reads (a batch of reads takes no lock)."""
        if self.state != "open":
            raise RuntimeError(f"the store is not open ({self.state})")
        if self._crashed is not None:
            raise TransientError(f"the store's writer thread stopped: {self._crashed!r}")
        assert self._loop is not None
        future = self._loop.create_future()
        started = time.perf_counter()
        self._queue.put(_Job(work, future, writes))  # SimpleQueue.put never blocks
        if self._crashed is not None:  # it died between the check and the put
            self._fail_queued(self._crashed)
        if not writes:
            return await future
        try:
            return await future
        finally:
            metrics.store_write(time.perf_counter() - started)

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
        jobs: list[_Job] = []
        try:
            while stop is None:
                try:
                    first = self._queue.get(timeout=SCRUB_RETRY if self._scrubber.pending else None)
                except queue.Empty:
                    self._scrubber.scrub(conn)
                    continue
                jobs = []
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
                    jobs = []  # settled: a later crash must not touch them
        except BaseException as exc:  # a bug: fail everyone rather than hang them forever
            log.exception("store: the writer thread crashed")
            self._crashed = exc
            failure = TransientError(f"the store's writer thread stopped: {exc!r}")
            for job in jobs:  # the batch it was running, if any
                if not job.failed:
                    job.fail(failure)
            self._call_loop(jobs)
            self._fail_queued(exc)
        finally:
            self._shut(conn)
            if stop is not None:
                self._call_loop([stop])

    def _execute(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        batch = Batch()
        in_transaction: list[_Job] = []  # jobs whose effects ride on the open transaction
        # IMMEDIATE: take the write lock once for the batch. Should another process hold
        # it past the busy timeout, the batch fails fast as a whole instead of each job
        # waiting its own timeout. A batch of reads only needs no lock at all.
        begin = "BEGIN IMMEDIATE" if any(job.writes for job in jobs) else "BEGIN"
        try:
            conn.execute(begin)
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
                        conn.execute(begin)
                    continue
                conn.execute("RELEASE job")
                in_transaction.append(job)
            conn.execute("COMMIT")
            self._scrubber.note(batch.erased, batch.scrub)
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
        if self._scrubber.pending:
            self._scrubber.scrub(conn)
        self._call_loop(jobs)

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

    def _shut(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA optimize")
            self._scrubber.note([], checkpoint=True)
            self._scrubber.scrub(conn)
        except sqlite3.Error as exc:
            log.warning("store: closing %s: %s", self._scrubber.path, exc)
        finally:
            conn.close()
