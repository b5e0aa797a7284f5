"""Fixtures for the store tests: a key file and an open SQLite store in a temporary dir."""

from __future__ import annotations

import pytest

from gateway.store import open_store
from gateway.store.crypto import SecretBox


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "gateway.db")


@pytest.fixture
def key_path(tmp_path):
    return str(tmp_path / "store.key")


@pytest.fixture
def box(key_path):
    return SecretBox.load_or_create(key_path)


@pytest.fixture
async def store(db_path, key_path):
    store = open_store(db_path, key_path)
    await store.open()
    yield store
    await store.close()
