"""Reading every instance a page at a time (`iter_instances`): the same records in the
same order as `list_instances`, whatever the page size, ties on expires_at included."""

from __future__ import annotations

import pytest

from tests.support.instances import make_instance


async def _all(store, page):
    return [record async for record in store.iter_instances(page=page)]


@pytest.mark.parametrize("page", [1, 2, 3, 7, 1000])
async def test_pages_give_the_listing(store, page):
    now = 10_000.0
    # several instances share an expiry: the pages must neither skip nor repeat them
    expiries = [500.0, 100.0, 300.0, 100.0, 200.0, 100.0, 400.0, 300.0]
    for n, expires in enumerate(expiries):
        await store.put_instance(make_instance(store.secret_box, n, id=f"i-{7 - n}", now=now,
                                               expires_at=now + expires))
    listed = await store.list_instances()
    assert await _all(store, page) == listed
    assert [r.id for r in listed[:3]] == ["i-2", "i-4", "i-6"]  # ties: by id


async def test_no_instances_no_pages(store):
    assert await _all(store, 10) == []


async def test_an_exact_number_of_pages(store):
    for n in range(6):
        await store.put_instance(make_instance(store.secret_box, n, expires_at=1e9 + n))
    assert [r.id for r in await _all(store, 3)] == [f"inst-{n:05d}" for n in range(6)]
