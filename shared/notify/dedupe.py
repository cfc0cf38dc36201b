"""Dedupe of forwarded events per target, shared by every instance through Azure Table storage.

notification-controller drops an event whose key (``eventKeyFunc``: object, message, revision) was seen
in the last ``--rate-limit-interval`` (5 m) (``internal/server/event_server.go``). Here the key is
:meth:`FluxEvent.dedupe_key` and the window comes from the routing file. Because one event fans out to
several targets and a target may fail alone, the record is per (target, key): one entity with
``PartitionKey`` = target name, ``RowKey`` = key (sha256 hex), ``state`` = ``claimed`` | ``delivered``,
``at`` = Unix seconds of the claim, ``owner`` = who claimed it.

Protocol, safe across instances (insert is atomic; replacements carry the ETag, ``If-Match``):

1. :meth:`claim` inserts a ``claimed`` entity. If one exists: ``delivered`` within the window → duplicate;
   ``claimed`` by another owner within ``lease`` → duplicate in flight elsewhere; otherwise (window or
   lease over, or our own claim from an earlier attempt of the same Event Hub message) it is replaced
   with an ETag condition, and a lost race is a duplicate.
2. After a delivery, :meth:`delivered` marks it; after a final failure (dead-lettered), :meth:`release`
   deletes it so a replay or a later copy can go through.

``owner`` for Event Hub messages is ``<partition>/<sequence number>``: a batch redelivered after a failed
invocation carries the same owners, so its events reclaim their own claims instead of being lost.
Storage failures raise :class:`StorageUnavailable` (the invocation then fails and Event Hub retries).
Entities are not expired by the service: a lifecycle job or ``purge(older_than)`` removes old ones.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class StorageUnavailable(Exception):
    """Table or Blob storage failed: nothing can be guaranteed, so the invocation must fail."""


class DedupeStore(Protocol):
    def claim(self, target: str, key: str, owner: str) -> bool: ...
    def delivered(self, target: str, key: str, at: float | None = None) -> None: ...
    def release(self, target: str, key: str) -> None: ...


class MemoryDedupeStore:
    """In-process store (one instance only), for the CLI, the bench and unit tests."""

    def __init__(self, window: float, lease: float = 600.0, clock=time.time):
        self.window, self.lease, self.clock = window, lease, clock
        self._rows: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def claim(self, target: str, key: str, owner: str) -> bool:
        now = self.clock()
        with self._lock:
            row = self._rows.get((target, key))
            if row is not None and not _reclaimable(row, owner, now, self.window, self.lease):
                return False
            self._rows[(target, key)] = {"state": "claimed", "at": now, "owner": owner}
            return True

    def delivered(self, target: str, key: str, at: float | None = None) -> None:
        with self._lock:
            row = self._rows.setdefault((target, key), {"at": self.clock() if at is None else at, "owner": ""})
            row["state"] = "delivered"
            if at is not None:
                row["at"] = at

    def release(self, target: str, key: str) -> None:
        with self._lock:
            self._rows.pop((target, key), None)


def _reclaimable(row, owner: str, now: float, window: float, lease: float) -> bool:
    age = now - float(row.get("at") or 0)
    if row.get("state") == "delivered":
        return age >= window
    return row.get("owner") == owner or age >= lease


def _transient(call, *args, **kwargs):
    """``call`` again (3 tries) after a dropped connection: azure-core does not retry read errors of
    POST/PATCH. Safe here: a repeated insert finds our own claim (same owner), merges and deletes are
    idempotent."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    for attempt in range(3):
        try:
            return call(*args, **kwargs)
        except (ServiceRequestError, ServiceResponseError):
            if attempt == 2:
                raise
            time.sleep(0.05 * (attempt + 1))


class TableDedupeStore:
    """The store on an ``azure.data.tables.TableClient`` (thread-safe; one per process)."""

    def __init__(self, table_client, window: float, lease: float = 600.0, clock=time.time):
        self.table, self.window, self.lease, self.clock = table_client, window, lease, clock

    def ensure_table(self) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self.table.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"dedupe table {self.table.table_name}: {type(exc).__name__}") from None

    def claim(self, target: str, key: str, owner: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import (AzureError, ResourceExistsError, ResourceModifiedError,
                                           ResourceNotFoundError)
        from azure.data.tables import UpdateMode

        now = self.clock()
        entity = {"PartitionKey": target, "RowKey": key, "state": "claimed", "at": float(now), "owner": owner}
        try:
            try:
                _transient(self.table.create_entity, entity)
                return True
            except ResourceExistsError:
                pass
            try:
                row = _transient(self.table.get_entity, target, key)
            except ResourceNotFoundError:  # released in between: try once more
                try:
                    _transient(self.table.create_entity, entity)
                    return True
                except ResourceExistsError:
                    return False
            if not _reclaimable(row, owner, now, self.window, self.lease):
                return False
            try:
                _transient(self.table.update_entity, entity, mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                           match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                # another instance won the race, unless our own replace landed before a dropped answer
                try:
                    now_row = self.table.get_entity(target, key)
                except ResourceNotFoundError:
                    return False
                return now_row.get("owner") == owner and float(now_row.get("at") or 0) == float(now)
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return False
            raise StorageUnavailable(f"dedupe table {self.table.table_name}: {type(exc).__name__}") from None

    def delivered(self, target: str, key: str, at: float | None = None) -> None:
        """Mark delivered (upsert: a replayed dead letter has no claim left; ``at`` restarts the window)."""
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": target, "RowKey": key, "state": "delivered"}
        if at is not None:
            entity["at"] = float(at)
        try:
            _transient(self.table.upsert_entity, entity, mode=UpdateMode.MERGE)
        except AzureError as exc:
            raise StorageUnavailable(f"dedupe table {self.table.table_name}: {type(exc).__name__}") from None

    def release(self, target: str, key: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            _transient(self.table.delete_entity, target, key)
        except AzureError as exc:
            raise StorageUnavailable(f"dedupe table {self.table.table_name}: {type(exc).__name__}") from None

    def purge(self, older_than: float) -> int:
        """Delete entities claimed more than ``older_than`` seconds ago; returns how many."""
        cutoff = self.clock() - older_than
        count = 0
        for row in self.table.query_entities("at lt @cutoff", parameters={"cutoff": float(cutoff)}):
            self.table.delete_entity(row["PartitionKey"], row["RowKey"])
            count += 1
        return count
