"""Dedupe of forwarded events per target, shared by every instance through Azure Table storage.

notification-controller drops an event whose key (``EventKey``: object, message, revisions) was seen in
the last ``--rate-limit-interval`` (5 m) (``internal/server/event_server.go``). Here the key is
:meth:`FluxEvent.dedupe_key` and the window comes from the routing file. Because one event fans out to
several targets and a target may fail alone, the record is per (target, key): one entity with
``PartitionKey`` = target name, ``RowKey`` = key (sha256 hex), ``state`` = ``claimed`` | ``delivered`` |
``dead-lettered``, ``at`` = Unix seconds (float) of the claim, ``owner`` = who claimed it, and for
``dead-lettered`` the dead letter's blob name (``letter``).

Protocol, safe across instances (inserts are atomic; replacements and purges carry the ETag, ``If-Match``):

1. :meth:`claim_many` inserts up to 100 ``claimed`` entities of one target in one entity-group
   transaction (one request, :mod:`.tablebatch`). If any of them exists the transaction fails as a whole
   and each entity is claimed alone (:meth:`claim`): ``delivered`` within the window → duplicate;
   ``claimed`` by another owner within ``lease`` → duplicate in flight elsewhere; otherwise (window or lease
   over, a ``dead-lettered`` pair, or our own claim from an earlier attempt of the same Event Hub message)
   it is replaced with an ETag condition, and a lost race is a duplicate. A reclaimed ``dead-lettered``
   pair reports its letter, so the forwarder can mark it resolved once the pair is delivered.
2. After deliveries, :meth:`delivered_many` marks them (merge, 100 per transaction); after a final
   failure, :meth:`dead_lettered` records the letter in place of the claim, so a replay or a later copy
   goes through and a later delivery resolves the letter.
3. :meth:`purge` deletes rows older than ``max(window, lease)`` (they no longer decide anything), and
   ``dead-lettered`` rows after :data:`LETTER_RETENTION`, with an ETag condition, within a time budget,
   resuming where the previous run stopped. The forwarder calls it after a batch at most once per
   ``NOTIFY_DEDUPE_PURGE_INTERVAL_SECONDS`` per process.

The same table holds, for the generic-hmac receiver, the digests of received bodies (``PartitionKey`` =
``http.<cluster>``, ``state`` = ``received``; :meth:`claim_digest`) and hourly counters of refused posts
(``PartitionKey`` = ``refused``, ``state`` = ``count``; :meth:`allow_refused`). Target names cannot contain
``.``, so neither collides with a target's rows.

``owner`` for Event Hub messages is ``<hub>/<partition>/<sequence number>``: a batch redelivered after a
failed invocation carries the same owners, so its events reclaim their own claims instead of being lost.
Storage failures raise :class:`StorageUnavailable` (the invocation then fails and Event Hub retries).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, Sequence

from .tablebatch import TX_LIMIT, BatchFailed, TableBatch

LETTER_RETENTION = 7 * 24 * 3600.0  # dead-lettered rows: as long as Event Hub may redeliver (its retention)
CLAIMED, DELIVERED, DEAD_LETTERED, IN_FLIGHT = "claimed", "delivered", "dead-lettered", "in-flight"


class StorageUnavailable(Exception):
    """Table or Blob storage failed: nothing can be guaranteed, so the invocation must fail."""


class DedupeStore(Protocol):
    """What the forwarder needs: ``claim``/``claim_many`` → True to send, False for a duplicate; marks,
    dead-letter records, replay look-ups; digests and refusal counters of the HTTP receiver;
    ``purge(budget seconds)`` → rows deleted. Storage failures raise :class:`StorageUnavailable`."""

    def claim(self, target: str, key: str, owner: str, reclaimed: dict | None = None) -> bool: ...
    def claim_many(self, target: str, items: Sequence[tuple[str, str]], reclaimed: dict | None = None) -> list[bool]: ...
    def claim_state(self, target: str, key: str, owner: str) -> str: ...
    def delivered(self, target: str, key: str, at: float | None = None) -> None: ...
    def delivered_many(self, target: str, keys: Sequence[str]) -> None: ...
    def dead_lettered(self, target: str, key: str, letter: str) -> None: ...
    def state(self, target: str, key: str) -> str | None: ...
    def claim_digest(self, scope: str, digest: str, at: float) -> bool: ...
    def release_digest(self, scope: str, digest: str) -> None: ...
    def allow_refused(self, bucket: str, limit: int, period: float = 3600.0) -> bool: ...
    def purge(self, budget: float = 2.0) -> int: ...


def _decide(row, owner: str, now: float, window: float, lease: float) -> str:
    """What a claim of an existing ``row`` means: ``claimed`` (take it over), ``delivered`` (a duplicate
    within the window) or ``in-flight`` (claimed by another owner within the lease)."""
    state = row.get("state")
    age = now - float(row.get("at") or 0)
    if state == DEAD_LETTERED:
        return CLAIMED
    if state == DELIVERED:
        return DELIVERED if age < window else CLAIMED
    return CLAIMED if row.get("owner") == owner or age >= lease else IN_FLIGHT


class MemoryDedupeStore:
    """In-process store (one instance only), for the CLI, the bench and unit tests."""

    def __init__(self, window: float, lease: float = 600.0, clock=time.time):
        self.window, self.lease, self.clock = window, lease, clock
        self._rows: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def claim_state(self, target: str, key: str, owner: str, reclaimed: dict | None = None) -> str:
        now = self.clock()
        with self._lock:
            row = self._rows.get((target, key))
            if row is not None:
                decision = _decide(row, owner, now, self.window, self.lease)
                if decision != CLAIMED:
                    return decision
                if row.get("state") == DEAD_LETTERED and reclaimed is not None:
                    reclaimed[key] = row.get("letter")
            self._rows[(target, key)] = {"state": CLAIMED, "at": now, "owner": owner}
            return CLAIMED

    def claim(self, target: str, key: str, owner: str, reclaimed: dict | None = None) -> bool:
        return self.claim_state(target, key, owner, reclaimed) == CLAIMED

    def claim_many(self, target: str, items: Sequence[tuple[str, str]], reclaimed: dict | None = None) -> list[bool]:
        return [self.claim(target, key, owner, reclaimed) for key, owner in items]

    def delivered(self, target: str, key: str, at: float | None = None) -> None:
        with self._lock:
            row = self._rows.setdefault((target, key), {"at": self.clock() if at is None else at, "owner": ""})
            row["state"] = DELIVERED
            if at is not None:
                row["at"] = at

    def delivered_many(self, target: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.delivered(target, key)

    def dead_lettered(self, target: str, key: str, letter: str) -> None:
        with self._lock:
            self._rows[(target, key)] = {"state": DEAD_LETTERED, "at": self.clock(), "owner": "", "letter": letter}

    def state(self, target: str, key: str) -> str | None:
        with self._lock:
            row = self._rows.get((target, key))
            return None if row is None else row.get("state")

    def claim_digest(self, scope: str, digest: str, at: float) -> bool:
        with self._lock:
            if (scope, digest) in self._rows:
                return False
            self._rows[(scope, digest)] = {"state": "received", "at": at}
            return True

    def release_digest(self, scope: str, digest: str) -> None:
        with self._lock:
            self._rows.pop((scope, digest), None)

    def allow_refused(self, bucket: str, limit: int, period: float = 3600.0) -> bool:
        now = self.clock()
        with self._lock:
            row = self._rows.setdefault(("refused", f"{bucket}.{int(now // period)}"), {"state": "count", "at": now, "n": 0})
            if row["n"] >= limit:
                return False
            row["n"] += 1
            return True

    def purge(self, budget: float = 2.0) -> int:
        now = self.clock()
        cutoff, letters = now - max(self.window, self.lease), now - LETTER_RETENTION
        with self._lock:
            old = [k for k, row in self._rows.items()
                   if float(row.get("at") or 0) < (letters if row.get("state") == DEAD_LETTERED else cutoff)]
            for k in old:
                del self._rows[k]
        return len(old)

    def __len__(self) -> int:
        return len(self._rows)


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
        self.batch = TableBatch(table_client)
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

    def claim_state(self, target: str, key: str, owner: str, reclaimed: dict | None = None) -> str:
        """Claim one (target, key) for ``owner``: ``claimed`` (send it), ``delivered`` or ``in-flight``
        (a duplicate; see the module doc). A reclaimed ``dead-lettered`` row puts its letter in
        ``reclaimed[key]``."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (AzureError, ResourceExistsError, ResourceModifiedError,
                                           ResourceNotFoundError)
        from azure.data.tables import UpdateMode

        now = self.clock()
        entity = {"PartitionKey": target, "RowKey": key, "state": CLAIMED, "at": float(now), "owner": owner}
        try:
            try:
                _transient(self.table.create_entity, entity)
                return CLAIMED
            except ResourceExistsError:
                pass
            try:
                row = _transient(self.table.get_entity, target, key)
            except ResourceNotFoundError:  # purged in between: try once more
                try:
                    _transient(self.table.create_entity, entity)
                    return CLAIMED
                except ResourceExistsError:
                    return IN_FLIGHT
            decision = _decide(row, owner, now, self.window, self.lease)
            if decision != CLAIMED:
                return decision
            try:
                _transient(self.table.update_entity, entity, mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                           match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                # another instance won the race, unless our own replace landed before a dropped answer
                try:
                    now_row = self.table.get_entity(target, key)
                except ResourceNotFoundError:
                    return IN_FLIGHT
                if not (now_row.get("owner") == owner and float(now_row.get("at") or 0) == float(now)):
                    return IN_FLIGHT
            if row.get("state") == DEAD_LETTERED and reclaimed is not None and row.get("letter"):
                reclaimed[key] = row.get("letter")
            return CLAIMED
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return IN_FLIGHT
            raise self._fail(exc) from None

    def claim(self, target: str, key: str, owner: str, reclaimed: dict | None = None) -> bool:
        """Claim one (target, key) for ``owner``; False if it is a duplicate (see the module doc)."""
        return self.claim_state(target, key, owner, reclaimed) == CLAIMED

    def claim_many(self, target: str, items: Sequence[tuple[str, str]], reclaimed: dict | None = None) -> list[bool]:
        """Claim ``[(key, owner), ...]`` (distinct keys) of one target; one bool per item, in order.
        One transaction per 100 items when none exists yet (the common case)."""
        from azure.core.exceptions import AzureError

        out: list[bool] = []
        for chunk in _chunks(list(items)):
            if len(chunk) == 1:
                out.append(self.claim(target, *chunk[0], reclaimed=reclaimed))
                continue
            at = float(self.clock())
            ops = [("create", {"PartitionKey": target, "RowKey": key, "state": CLAIMED, "at": at, "owner": owner})
                   for key, owner in chunk]
            try:
                _transient(self.batch.submit, ops)
                out.extend([True] * len(chunk))
                continue
            except BatchFailed as exc:
                if exc.status not in (409, 412):  # some exist: decide one by one
                    raise self._fail(exc) from None
            except AzureError as exc:
                raise self._fail(exc) from None
            out.extend(self.claim(target, key, owner, reclaimed) for key, owner in chunk)
        return out

    def _merge(self, entity: dict) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        try:
            _transient(self.table.upsert_entity, entity, mode=UpdateMode.MERGE)
        except AzureError as exc:
            raise self._fail(exc) from None

    def delivered(self, target: str, key: str, at: float | None = None) -> None:
        """Mark delivered (upsert: a replayed dead letter has no claim left; ``at`` restarts the window)."""
        entity = {"PartitionKey": target, "RowKey": key, "state": DELIVERED}
        if at is not None:
            entity["at"] = float(at)
        self._merge(entity)

    def delivered_many(self, target: str, keys: Sequence[str]) -> None:
        """Mark ``keys`` of one target delivered (merge; 100 per transaction). The window still counts
        from the claim."""
        from azure.core.exceptions import AzureError

        for chunk in _chunks(list(keys)):
            ops = [("merge", {"PartitionKey": target, "RowKey": key, "state": DELIVERED}) for key in chunk]
            try:
                _transient(self.batch.submit, ops)
            except (BatchFailed, AzureError) as exc:
                raise self._fail(exc) from None

    def dead_lettered(self, target: str, key: str, letter: str) -> None:
        """Record that the pair went to dead letter ``letter``: a later claim takes it over at once."""
        self._merge({"PartitionKey": target, "RowKey": key, "state": DEAD_LETTERED, "at": float(self.clock()),
                     "owner": "", "letter": letter})

    def state(self, target: str, key: str) -> str | None:
        """The pair's ``state`` (``claimed``, ``delivered``, ``dead-lettered``), None without a row."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return _transient(self.table.get_entity, target, key, select=["state"]).get("state")
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._fail(exc) from None

    def claim_digest(self, scope: str, digest: str, at: float) -> bool:
        """Record a received body digest (``scope`` = ``http.<cluster>``); False if it was seen before. ``at``
        (the later of arrival and the event's time) keeps the row until the event is too old to replay."""
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            _transient(self.table.create_entity, {"PartitionKey": scope, "RowKey": digest, "state": "received",
                                                  "at": float(at)})
            return True
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise self._fail(exc) from None

    def release_digest(self, scope: str, digest: str) -> None:
        """Forget a digest (its post failed with a 5xx, so the sender's retry must be taken)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            _transient(self.table.delete_entity, scope, digest)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._fail(exc) from None

    def allow_refused(self, bucket: str, limit: int, period: float = 3600.0) -> bool:
        """Count one refused post in ``bucket`` for the current ``period``; False once ``limit`` were
        counted (then nothing is written). Optimistic concurrency on one counter row per bucket and period."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (AzureError, ResourceExistsError, ResourceModifiedError,
                                           ResourceNotFoundError)
        from azure.data.tables import UpdateMode

        now = self.clock()
        row_key = f"{bucket}.{int(now // period)}"
        try:
            for _ in range(8):
                try:
                    row = _transient(self.table.get_entity, "refused", row_key)
                except ResourceNotFoundError:
                    try:
                        _transient(self.table.create_entity, {"PartitionKey": "refused", "RowKey": row_key,
                                                              "state": "count", "at": float(now), "n": 1})
                        return True
                    except ResourceExistsError:
                        continue
                count = int(row.get("n") or 0)
                if count >= limit:
                    return False
                try:
                    _transient(self.table.update_entity, {"PartitionKey": "refused", "RowKey": row_key,
                                                          "state": "count", "at": float(now), "n": count + 1},
                               mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                               match_condition=MatchConditions.IfNotModified)
                    return True
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
            return False  # heavy contention: count it as over the bound
        except AzureError as exc:
            raise self._fail(exc) from None

    def purge(self, budget: float = 2.0) -> int:
        """Delete rows whose ``at`` is older than ``max(window, lease)`` (``dead-lettered`` ones: older than
        :data:`LETTER_RETENTION`), for at most ``budget`` seconds (plus one request); the next call resumes
        after the last page read. Returns how many were deleted. Raises :class:`StorageUnavailable`. A row
        re-claimed meanwhile is kept (ETag check)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        if not self._purge_lock.acquire(blocking=False):
            return 0  # another thread of this process is purging
        try:
            deadline = time.monotonic() + budget
            now = self.clock()
            cutoff, letters = float(now - max(self.window, self.lease)), float(now - LETTER_RETENTION)
            deleted = 0
            pages = self.table.query_entities(
                "(at lt @cutoff and state ne 'dead-lettered') or at lt @letters",
                parameters={"cutoff": cutoff, "letters": letters},
                select=["PartitionKey", "RowKey", "at"], results_per_page=TX_LIMIT,
            ).by_page(continuation_token=self._purge_cursor)
            for page in pages:
                by_partition: dict[str, list] = {}
                for row in page:
                    by_partition.setdefault(row["PartitionKey"], []).append(row)
                for partition_rows in by_partition.values():
                    ops = [("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]}, r.metadata["etag"])
                           for r in partition_rows]
                    try:
                        _transient(self.batch.submit, ops)
                        deleted += len(ops)
                        continue
                    except BatchFailed as exc:
                        if exc.status not in (404, 409, 412):
                            raise self._fail(exc) from None
                    for r in partition_rows:  # one changed or vanished meanwhile: delete the others alone
                        try:
                            self.table.delete_entity(r["PartitionKey"], r["RowKey"], etag=r.metadata["etag"],
                                                     match_condition=MatchConditions.IfNotModified)
                            deleted += 1
                        except (ResourceModifiedError, ResourceNotFoundError):
                            pass
                self._purge_cursor = pages.continuation_token
                if self._purge_cursor is None or time.monotonic() >= deadline:
                    break
            return deleted
        except AzureError as exc:
            raise self._fail(exc) from None
        finally:
            self._purge_lock.release()
