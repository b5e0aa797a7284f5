"""Instances outlive the process: a gateway killed without warning (SIGKILL, no close)
finds every write it had awaited when it starts again; a second process (the CLI) can
write to the same file while the gateway runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from gateway.store import Store, open_store
from tests.support.instances import make_instance, password_for
from tests.support.store_files import disk_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = """
import asyncio, os, sqlite3, sys, time
import uvloop
from gateway.store import open_store
from tests.support.instances import make_instance

async def main(db, key):
    store = open_store(db, key)
    await store.open()
{body}

uvloop.run(main(sys.argv[1], sys.argv[2]))
"""


def _gateway_process(body: str, db_path: str, key_path: str) -> subprocess.Popen:
    """A separate Python process that opens the store on the same files and runs `body`."""
    script = CHILD.format(body=textwrap.indent(textwrap.dedent(body), "    "))
    return subprocess.Popen(
        [sys.executable, "-c", script, db_path, key_path],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_awaited_writes_survive_a_killed_process(db_path, key_path):
    child = _gateway_process(
        """
        await asyncio.gather(*(store.put_instance(make_instance(store.secret_box, n)) for n in range(50)))
        await store.update_instance("inst-00003", state="registered", registered_until=1234.5)
        await store.erase_instance("inst-00004")
        print("written", flush=True)
        time.sleep(60)  # killed here, the store never closed
        """,
        db_path,
        key_path,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.strip() == "written", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stderr.close()

    store = open_store(db_path, key_path)
    await store.open()
    try:
        assert await store.count_instances() == 49
        rec = await store.get_instance("inst-00003")
        assert (rec.state, rec.registered_until) == ("registered", 1234.5)
        assert await store.get_instance("inst-00004") is None
        assert store.secret_box.open(rec.password_ct, aad=rec.id.encode()) == password_for(3)
    finally:
        await store.close()


async def test_two_stores_on_one_file_both_write(db_path, key_path):
    """The CLI may open the gateway's file while it runs: writes interleave, none lost."""
    first = open_store(db_path, key_path)
    second = open_store(db_path, key_path)
    await first.open()
    await second.open()
    try:
        await asyncio.gather(
            *(first.put_instance(make_instance(first.secret_box, n)) for n in range(0, 100)),
            *(second.put_instance(make_instance(second.secret_box, n)) for n in range(100, 200)),
        )
        assert await second.erase_instance("inst-00007")
        assert await first.get_instance("inst-00007") is None
        assert await first.count_instances() == await second.count_instances() == 199
    finally:
        await first.close()
        await second.close()


def test_the_sqlite_backend_is_a_store(db_path, key_path):
    assert isinstance(open_store(db_path, key_path), Store)


async def test_an_erasure_cut_short_by_a_crash_is_finished_at_the_next_start(db_path, key_path):
    child = _gateway_process(
        """
        recs = [make_instance(store.secret_box, n) for n in range(20)]
        await asyncio.gather(*(store.put_instance(r) for r in recs))
        # A delete committed without its scrub, then the process dies: what a kill
        # between an erasure's commit and its checkpoint leaves behind.
        raw = sqlite3.connect(db, isolation_level=None)
        raw.execute("DELETE FROM instances WHERE id = 'inst-00005'")
        print(recs[5].password_ct.hex(), flush=True)
        os._exit(0)
        """,
        db_path,
        key_path,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    erased_ct = bytes.fromhex(out.strip())
    assert os.path.getsize(db_path + "-wal") > 0
    assert erased_ct in disk_bytes(db_path)  # the crash left it behind

    store = open_store(db_path, key_path)
    await store.open()
    try:
        assert await store.count_instances() == 19
        left = disk_bytes(db_path)
        assert erased_ct not in left
        assert all(r.password_ct in left for r in await store.list_instances())
    finally:
        await store.close()
