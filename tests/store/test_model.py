"""Random bursts of concurrent calls against a plain dict model of the store.

Calls issued together (asyncio.gather) reach the writer in the order they were made and
run batched in one transaction; each result and the final contents must be what the
same calls, applied one by one to a dict, give.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import msgspec
import pytest

from tests.support.instances import make_instance
from tests.support.store_files import raw_connection

NOW = 1_700_000_000.0


@pytest.mark.parametrize("seed", range(4))
async def test_random_bursts_match_a_dict_model(store, db_path, seed):
    rng = random.Random(seed)
    box = store.secret_box
    model: dict = {}  # id -> record
    owner_of: dict = {}  # id -> n (the triple's number)
    numbers = itertools.count()
    ids = itertools.count()

    def pick_id():
        if model and rng.random() < 0.85:
            return rng.choice(sorted(model))
        return f"missing-{rng.randrange(1000)}"

    for _ in range(30):
        calls, expected = [], []
        for _ in range(rng.randint(1, 60)):
            op = rng.choice(["put", "put", "replace", "update", "update", "erase", "get", "expire"])
            if op == "put" or (op == "replace" and not model):
                n = next(numbers)
                rec = make_instance(box, n, id=f"i{next(ids)}", now=NOW, expires_at=NOW + rng.randrange(10_000))
                calls.append(store.put_instance(rec))
                expected.append(None)
                model[rec.id], owner_of[rec.id] = rec, n
            elif op == "replace":
                old_id = rng.choice(sorted(model))
                n = owner_of.pop(old_id)
                rec = make_instance(box, n, id=f"i{next(ids)}", now=NOW, expires_at=NOW + rng.randrange(10_000))
                calls.append(store.put_instance(rec))
                expected.append(old_id)
                del model[old_id]
                model[rec.id], owner_of[rec.id] = rec, n
            elif op == "update":
                target = pick_id()
                fields = rng.choice(
                    [
                        {"state": rng.choice(["registering", "registered", "error"]), "last_error": rng.choice([None, "408"])},
                        {"expires_at": NOW + rng.randrange(10_000)},
                        {"password_ct": box.seal(f"new-{rng.random()}", aad=target.encode())},
                        {"display_name": "x" * rng.randrange(300), "mode": "foreground"},
                    ]
                )
                fields["updated_at"] = NOW + rng.randrange(100)
                calls.append(store.update_instance(target, **fields))
                if target in model:
                    model[target] = msgspec.structs.replace(model[target], **fields)
                expected.append(model.get(target))
            elif op == "erase":
                target = pick_id()
                calls.append(store.erase_instance(target))
                expected.append(model.pop(target, None) is not None)
                owner_of.pop(target, None)
            elif op == "get":
                target = pick_id()
                calls.append(store.get_instance(target))
                expected.append(model.get(target))
            else:
                cutoff = NOW + rng.randrange(2_000)
                gone = sorted(i for i, r in model.items() if r.expires_at <= cutoff)
                calls.append(store.erase_expired(cutoff))
                expected.append(gone)
                for i in gone:
                    del model[i]
                    del owner_of[i]
        assert await asyncio.gather(*calls) == expected
        assert await store.list_instances() == sorted(model.values(), key=lambda r: (r.expires_at, r.id))

    with raw_connection(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert {row[0] for row in conn.execute("SELECT id FROM instances")} == set(model)
    assert store.batches < store.jobs  # calls did share transactions
