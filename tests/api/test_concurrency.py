"""Many requests at once through the HTTP stack: nothing lost, nothing left behind."""

from __future__ import annotations

import asyncio
import sqlite3

from .harness import PASSWORD, app_auth, create_body, disk_bytes

N = 100


async def test_100_concurrent_creates_then_deletes_lose_nothing(gw):
    async def create(i):
        resp = await gw.client.post(
            "/v1/instances", json=create_body(device_id=f"device-{i}", password=f"{PASSWORD}-{i}"),
            headers=app_auth(),
        )
        assert resp.status == 201, await resp.text()
        return await resp.json()

    created = await asyncio.gather(*(create(i) for i in range(N)))
    ids = {inst["id"] for inst in created}
    assert len(ids) == N
    assert await gw.store.count_instances() == N
    cts = {r.id: r.password_ct for r in await gw.store.list_instances()}
    assert set(cts) == ids

    # half are deleted while the other half is replaced by a second create, all at once
    async def delete(inst):
        resp = await gw.client.delete(f"/v1/instances/{inst['id']}",
                                      headers={"Authorization": f"Bearer {inst['secret']}"})
        assert resp.status == 204, await resp.text()

    replaced = created[N // 2:]
    results = await asyncio.gather(
        *(delete(inst) for inst in created[: N // 2]),
        *(create(i) for i in range(N // 2, N)),
    )
    new_ids = {inst["id"] for inst in results[N // 2:]}
    stored = {r.id for r in await gw.store.list_instances()}
    assert stored == new_ids
    assert len(gw.service._timers) == N // 2  # one wheel handle per live instance
    for inst in replaced:
        assert inst["id"] not in stored

    # delete the rest concurrently: the table is empty, nothing of the passwords is left
    await asyncio.gather(*(delete(inst) for inst in results[N // 2:]))
    assert await gw.store.count_instances() == 0
    assert len(gw.wheel) == 0
    with sqlite3.connect(gw.config.store.path) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table == "instances" or "instance" in table:
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    data = disk_bytes(gw.config.store.path)
    for ct in cts.values():
        assert ct not in data
    assert PASSWORD.encode() not in data
