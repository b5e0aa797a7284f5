"""The writer thread: SQL never runs on the event loop's thread, writes are batched, and
a caller that stops waiting or a broken job cannot wedge the store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import threading
import time

import pytest

from gateway.errors import TransientError
from gateway.store import open_store
from tests.support.instances import make_instance


async def _lag_probe(samples: list[float], stop: asyncio.Event) -> None:
    """How late the loop wakes a 1 ms sleeper: what a blocked loop would show."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.001)
        samples.append(loop.time() - start - 0.001)


async def test_sql_runs_on_the_writer_thread_and_the_loop_keeps_running(store, record_property):
    statement_threads: set[int] = set()
    await store._submit(lambda conn, batch: conn.set_trace_callback(lambda sql: statement_threads.add(threading.get_ident())))
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_lag_probe(lags, stop))
    box = store.secret_box
    started = time.perf_counter()
    for chunk in range(10):
        await asyncio.gather(*(store.put_instance(make_instance(box, n)) for n in range(chunk * 100, chunk * 100 + 100)))
    elapsed = time.perf_counter() - started
    await store.update_instance("inst-00001", state="registered")
    assert await store.erase_instance("inst-00002")
    assert await store.count_instances() == 999
    stop.set()
    await probe

    assert statement_threads == {store.writer_thread.ident}
    assert threading.get_ident() not in statement_threads
    # Measured, not asserted (timing on a shared machine is not a test): the probe's lag.
    record_property("writes_per_second", round(1000 / elapsed))
    record_property("loop_lag_max_ms", round(max(lags) * 1000, 2))
    record_property("loop_lag_median_ms", round(statistics.median(lags) * 1000, 3))
    print(f"1000 writes in {elapsed:.3f}s; loop lag max {max(lags) * 1000:.2f} ms, median {statistics.median(lags) * 1000:.3f} ms over {len(lags)} probes")


async def test_writes_are_batched(store):
    await asyncio.gather(*(store.put_instance(make_instance(store.secret_box, n)) for n in range(300)))
    assert store.jobs == 300
    assert store.batches < store.jobs


async def test_max_batch_one_commits_each_write(db_path, key_path):
    async with open_store(db_path, key_path, max_batch=1) as store:
        await asyncio.gather(*(store.put_instance(make_instance(store.secret_box, n)) for n in range(50)))
        assert store.batches == store.jobs == 50
        assert await store.count_instances() == 50


async def test_a_caller_that_stops_waiting_does_not_undo_its_write(store):
    rec = make_instance(store.secret_box, 1)
    task = asyncio.create_task(store.put_instance(rec))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Reads queue behind writes, so this one sees it.
    assert await store.get_instance(rec.id) == rec


async def test_a_crashed_writer_fails_calls_instead_of_hanging(db_path, key_path):
    store = open_store(db_path, key_path)
    await store.open()
    await store.put_instance(make_instance(store.secret_box, 1))

    def escapes(conn, batch):
        raise SystemExit("a bug that escapes the job")  # not an Exception: not caught per job

    queued = [store.get_instance("inst-00001") for _ in range(3)]
    results = await asyncio.wait_for(asyncio.gather(store._submit(escapes), *queued, return_exceptions=True), 10)
    assert all(isinstance(r, TransientError) for r in results), results
    with pytest.raises(TransientError, match="writer thread stopped"):
        await asyncio.wait_for(store.count_instances(), 10)
    await asyncio.wait_for(store.close(), 10)
    store.writer_thread.join(5)
    assert not store.writer_thread.is_alive()
    # Nothing committed was lost.
    async with open_store(db_path, key_path) as again:
        assert await again.count_instances() == 1


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_synchronous_setting_is_applied(db_path, key_path, synchronous):
    async with open_store(db_path, key_path, synchronous=synchronous) as store:
        level = await store._submit(lambda conn, batch: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert level == {"NORMAL": 1, "FULL": 2}[synchronous]


def test_bad_options_are_refused(db_path, key_path):
    with pytest.raises(ValueError, match="max_batch"):
        open_store(db_path, key_path, max_batch=0)
    with pytest.raises(ValueError, match="synchronous"):
        open_store(db_path, key_path, synchronous="SOMETIMES")


async def test_a_foreign_write_lock_blocks_writes_not_reads(store, db_path):
    """Another process holding the write lock (a CLI mid-transaction): reads go on, a write
    waits out the busy timeout and fails as a TransientError (the API answers 503); once
    the lock is gone, writes work again."""
    rec = make_instance(store.secret_box, 1)
    await store.put_instance(rec)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert await asyncio.wait_for(store.get_instance(rec.id), 1.5) == rec
        with pytest.raises(TransientError, match="locked"):
            await asyncio.wait_for(store.update_instance(rec.id, state="off"), 10)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await store.update_instance(rec.id, state="off")).state == "off"


async def test_close_finishes_the_calls_already_made(db_path, key_path):
    store = open_store(db_path, key_path)
    await store.open()
    puts = [asyncio.create_task(store.put_instance(make_instance(store.secret_box, n))) for n in range(40)]
    await asyncio.sleep(0)  # every put is queued
    await store.close()
    assert await asyncio.gather(*puts) == [None] * 40
    with pytest.raises(RuntimeError, match="not open"):
        await store.put_instance(make_instance(store.secret_box, 99))
    async with open_store(db_path, key_path) as again:
        assert await again.count_instances() == 40


async def test_only_erasures_checkpoint(store, db_path):
    """Routine updates (state, expiry) leave the WAL alone: checkpointing is the price of
    erasing, not of every write."""
    await asyncio.gather(*(store.put_instance(make_instance(store.secret_box, n)) for n in range(20)))
    for n in range(20):
        await store.update_instance(f"inst-{n:05d}", state="registered", registered_until=1.0 + n)
    assert os.path.getsize(db_path + "-wal") > 0
    await store.update_instance("inst-00003", password_ct=store.secret_box.seal("new", aad=b"inst-00003"))
    assert os.path.getsize(db_path + "-wal") == 0
