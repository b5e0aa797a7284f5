"""The store: where instances live between a phone's hand-over and their erasure.

`Store` is the interface the rest of the gateway codes against; `open_store()` builds the
backend for a path. The embedded SQLite backend (`gateway.store.sqlite`) is the default;
a PostgreSQL backend for cluster mode would implement the same protocol. Every method is
a coroutine called from the event loop; a backend never blocks the loop on disk or
network, and resolves a write only once it is durable.

Usage::

    store = open_store("/var/lib/sip-push-gateway/gateway.db", "/var/lib/sip-push-gateway/store.key")
    await store.open()
    rec = InstanceRecord(..., password_ct=store.secret_box.seal(password, aad=instance_id.encode()), ...)
    replaced = await store.put_instance(rec)   # the id of the instance it replaced, or None
    ...
    await store.close()

Depends on the store's own modules, `gateway.errors` and (for write latency) `gateway.metrics`.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator, Protocol, runtime_checkable

from gateway.errors import ConfigError
from gateway.store.crypto import SecretBox, bearer_hash, digest_ha1, same_digest
from gateway.store.records import InstanceRecord, PushTarget


@runtime_checkable
class Store(Protocol):
    """What the gateway needs from a store. Records are values: changing one returned by
    a read changes nothing stored; `update_instance` does."""

    path: str
    secret_box: SecretBox

    async def open(self) -> None:
        """Open (and migrate) the store. ConfigError when it cannot be used."""

    async def close(self) -> None:
        """Finish queued work and release the store. Safe to call twice."""

    async def put_instance(self, rec: InstanceRecord) -> str | None:
        """Insert `rec`. An instance with the same (app_id, aor, device_id) is erased in the
        same transaction; its id is returned (None when there was none). ValueError when
        the record is invalid or its id is taken by another instance."""

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        """The instance, or None."""

    async def update_instance(self, instance_id: str, *, if_mode: str | None = None,
                              **fields: Any) -> InstanceRecord | None:
        """Change some fields (not id, app_id, device_id, aor, created_at); `updated_at`
        is set to now unless given. Returns the updated record, None when it is gone.
        Replaced credentials are erased from disk like deleted ones. With `if_mode`, the
        change applies only while the instance is in that mode (checked in the same
        transaction); otherwise the record is returned unchanged."""

    async def erase_instance(self, instance_id: str) -> bool:
        """Delete the instance and erase its bytes from disk; True if it existed."""

    async def erase_expired(self, now: float) -> list[str]:
        """Erase every instance with expires_at <= now; their ids."""

    async def list_instances(self, limit: int | None = None) -> list[InstanceRecord]:
        """Instances ordered by expires_at (then id)."""

    def iter_instances(self, page: int = 1000) -> AsyncIterator[InstanceRecord]:
        """Every instance in list_instances' order, read `page` records at a time (for the
        start, which must not hold every record at once). An instance changed while the
        pages are read may be missed or seen twice: meant for before the gateway listens."""

    async def count_instances(self) -> int:
        """How many instances are stored."""

    async def expiring_before(self, ts: float) -> list[InstanceRecord]:
        """Instances with expires_at < ts, ordered by expires_at."""

    def sync_list(self, limit: int | None = None) -> list[InstanceRecord]:
        """Like list_instances, without a loop (for the CLI); works on an unopened store."""

    def sync_get(self, instance_id: str) -> InstanceRecord | None:
        """Like get_instance, without a loop (for the CLI)."""

    def sync_count(self) -> int:
        """Like count_instances, without a loop (for the CLI)."""


def open_store(path: str | os.PathLike[str], key_path: str | os.PathLike[str], **options: Any) -> Store:
    """The store for `path` with the key in `key_path` (created 0600 when missing).

    The result is not open yet: `await store.open()`. `options` go to the backend
    (SQLite: max_batch, synchronous). ConfigError for a bad key file or an unknown kind
    of store.
    """
    target = os.fspath(path)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        # Cluster mode will add postgresql:// here, behind the same protocol.
        raise ConfigError(f"unsupported store {scheme}:// (only an SQLite file path is supported)")
    from gateway.store.sqlite import SQLiteStore

    return SQLiteStore(target, SecretBox.load_or_create(key_path), **options)


__all__ = [
    "Store",
    "open_store",
    "InstanceRecord",
    "PushTarget",
    "SecretBox",
    "digest_ha1",
    "bearer_hash",
    "same_digest",
]
