"""Dedupe of forwarded events per target, shared by every instance through Azure Table storage.

notification-controller drops an event whose key (``EventKey``: object, message, revisions) was seen in
the last ``--rate-limit-interval`` (5 m) (``internal/server/event_server.go``). Here the key is
:meth:`FluxEvent.dedupe_key` and the window comes from the routing file. Because one event fans out to
several targets and a target may fail alone, the record is per (target, key): one entity with
``PartitionKey`` = target name, ``RowKey`` = key (sha256 hex), ``state`` = ``claimed`` | ``delivered``,
``at`` = Unix seconds (float) of the claim, ``owner`` = who claimed it.

Protocol, safe across instances (inserts are atomic; replacements and purges carry the ETag, ``If-Match``):

1. :meth:`claim_many` inserts up to 100 ``claimed`` entities of one target in one entity-group
   transaction (one request). If any of them exists the transaction fails as a whole and each entity is
   claimed alone (:meth:`claim`): ``delivered`` within the window → duplicate; ``claimed`` by another owner
   within ``lease`` → duplicate in flight elsewhere; otherwise (window or lease over, or our own claim
   from an earlier attempt of the same Event Hub message) it is replaced with an ETag condition, and a
   lost race is a duplicate.
2. After deliveries, :meth:`delivered_many` marks them (merge, 100 per transaction); after a final
   failure (dead-lettered), :meth:`release` deletes the claim so a replay or a later copy can go through.
3. :meth:`purge` deletes rows older than ``max(window, lease)`` (they no longer decide anything), with
   an ETag condition, within a time budget, resuming where the previous run stopped. The forwarder
   calls it after a batch at most once per ``NOTIFY_DEDUPE_PURGE_INTERVAL_SECONDS`` per process.

``owner`` for Event Hub messages is ``<hub>/<partition>/<sequence number>``: a batch redelivered after a
failed invocation carries the same owners, so its events reclaim their own claims instead of being lost.
Storage failures raise :class:`StorageUnavailable` (the invocation then fails and Event Hub retries).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, Sequence

TX_LIMIT = 100  # operations per entity-group transaction (Azure Table storage)


class StorageUnavailable(Exception):
    """Table or Blob storage failed: nothing can be guaranteed, so the invocation must fail."""


class DedupeStore(Protocol):
    """What the forwarder needs: ``claim``/``claim_many`` → True to send, False for a duplicate; marks
    and releases; ``purge(budget seconds)`` → rows deleted. Storage failures raise :class:`StorageUnavailable`."""

    def claim(self, target: str, key: str, owner: str) -> bool: ...
    def claim_many(self, target: str, items: Sequence[tuple[str, str]]) -> list[bool]: ...
    def delivered(self, target: str, key: str, at: float | None = None) -> None: ...
    def delivered_many(self, target: str, keys: Sequence[str]) -> None: ...
    def release(self, target: str, key: str) -> None: ...
    def purge(self, budget: float = 2.0) -> int: ...


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

    def claim_many(self, target: str, items: Sequence[tuple[str, str]]) -> list[bool]:
        return [self.claim(target, key, owner) for key, owner in items]

    def delivered(self, target: str, key: str, at: float | None = None) -> None:
        with self._lock:
            row = self._rows.setdefault((target, key), {"at": self.clock() if at is None else at, "owner": ""})
            row["state"] = "delivered"
            if at is not None:
                row["at"] = at

    def delivered_many(self, target: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.delivered(target, key)

    def release(self, target: str, key: str) -> None:
        with self._lock:
            self._rows.pop((target, key), None)

    def purge(self, budget: float = 2.0) -> int:
        cutoff = self.clock() - max(self.window, self.lease)
        with self._lock:
            old = [k for k, row in self._rows.items() if float(row.get("at") or 0) < cutoff]
            for k in old:
                del self._rows[k]
        return len(old)

    def __len__(self) -> int:
        return len(self._rows)


def _reclaimable(row, owner: str, now: float, window: float, lease: float) -> bool:
    age = now - float(row.get("at") or 0)
    if row.get("state") == "delivered":
        return age >= window
    return row.get("owner") == owner or age >= lease


def _transient(call, *args, **kwargs):
    """``call`` again (3 tries) after a dropped connection: azure-core does not retry read errors of
    POST/PATCH. Safe here: a repeated insert finds our own claim (same owner), merges and deletes are
    idempotent, a repeated transaction of inserts fails as a whole and falls back to single claims."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    for attempt in range(3):
        try:
            return call(*args, **kwargs)
        except (ServiceRequestError, ServiceResponseError):
            if attempt == 2:
                raise
            time.sleep(0.05 * (attempt + 1))


def _chunks(items: Sequence, size: int = TX_LIMIT):
    for i in range(0, len(items), size):
        yield items[i:i + size]


class TableDedupeStore:
    """The store on an ``azure.data.tables.TableClient`` (thread-safe; one per process)."""

    def __init__(self, table_client, window: float, lease: float = 600.0, clock=time.time):
        self.table, self.window, self.lease, self.clock = table_client, window, lease, clock
        self._purge_cursor: dict | None = None
        self._purge_lock = threading.Lock()

    def _fail(self, exc: Exception) -> StorageUnavailable:
        return StorageUnavailable(f"dedupe table {self.table.table_name}: {type(exc).__name__}")

    def ensure_table(self) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self.table.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise self._fail(exc) from None

    def claim(self, target: str, key: str, owner: str) -> bool:
        """Claim one (target, key) for ``owner``; False if it is a duplicate (see the module doc)."""
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
            raise self._fail(exc) from None

    def claim_many(self, target: str, items: Sequence[tuple[str, str]]) -> list[bool]:
        """Claim ``[(key, owner), ...]`` (distinct keys) of one target; one bool per item, in order.
        One transaction per 100 items when none exists yet (the common case)."""
        from azure.core.exceptions import AzureError, HttpResponseError

        out: list[bool] = []
        for chunk in _chunks(list(items)):
            if len(chunk) == 1:
                out.append(self.claim(target, *chunk[0]))
                continue
            at = float(self.clock())
            ops = [("create", {"PartitionKey": target, "RowKey": key, "state": "claimed", "at": at, "owner": owner})
                   for key, owner in chunk]
            try:
                _transient(self.table.submit_transaction, ops)
                out.extend([True] * len(chunk))
                continue
            except HttpResponseError as exc:
                if exc.status_code not in (409, 412):  # some exist: decide one by one
                    raise self._fail(exc) from None
            except AzureError as exc:
                raise self._fail(exc) from None
            out.extend(self.claim(target, key, owner) for key, owner in chunk)
        return out

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
            raise self._fail(exc) from None

    def delivered_many(self, target: str, keys: Sequence[str]) -> None:
        """Mark ``keys`` of one target delivered (merge; 100 per transaction). The window still counts
        from the claim."""
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        for chunk in _chunks(list(keys)):
            ops = [("upsert", {"PartitionKey": target, "RowKey": key, "state": "delivered"}, {"mode": UpdateMode.MERGE})
                   for key in chunk]
            try:
                _transient(self.table.submit_transaction, ops)
            except AzureError as exc:
                raise self._fail(exc) from None

    def release(self, target: str, key: str) -> None:
        """Delete the claim (after a dead letter), so a replay or a later copy is not a duplicate."""
        from azure.core.exceptions import AzureError

        try:
            _transient(self.table.delete_entity, target, key)
        except AzureError as exc:
            raise self._fail(exc) from None

    def purge(self, budget: float = 2.0) -> int:
        """Delete rows whose ``at`` is older than ``max(window, lease)``, for at most ``budget`` seconds
        (plus one request); the next call resumes after the last page read. Returns how many were
        deleted. Raises :class:`StorageUnavailable`. A row re-claimed meanwhile is kept (ETag check)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceModifiedError

        if not self._purge_lock.acquire(blocking=False):
            return 0  # another thread of this process is purging
        try:
            deadline = time.monotonic() + budget
            cutoff = float(self.clock() - max(self.window, self.lease))
            deleted = 0
            pages = self.table.query_entities("at lt @cutoff", parameters={"cutoff": cutoff},
                                              select=["PartitionKey", "RowKey", "at"],
                                              results_per_page=TX_LIMIT).by_page(continuation_token=self._purge_cursor)
            for page in pages:
                rows = list(page)
                by_partition: dict[str, list] = {}
                for row in rows:
                    by_partition.setdefault(row["PartitionKey"], []).append(row)
                for partition_rows in by_partition.values():
                    ops = [("delete", r, {"etag": r.metadata["etag"], "match_condition": MatchConditions.IfNotModified})
                           for r in partition_rows]
                    try:
                        _transient(self.table.submit_transaction, ops)
                        deleted += len(ops)
                        continue
                    except HttpResponseError as exc:
                        if exc.status_code not in (404, 409, 412):
                            raise
                    for r in partition_rows:  # one changed or vanished meanwhile: delete the others alone
                        try:
                            self.table.delete_entity(r["PartitionKey"], r["RowKey"], etag=r.metadata["etag"],
                                                     match_condition=MatchConditions.IfNotModified)
                            deleted += 1
                        except ResourceModifiedError:
                            pass
                self._purge_cursor = pages.continuation_token
                if self._purge_cursor is None or time.monotonic() >= deadline:
                    break
            return deleted
        except AzureError as exc:
            raise self._fail(exc) from None
        finally:
            self._purge_lock.release()
