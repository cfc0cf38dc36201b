"""Fleet state in Azure Table storage: operations, one row per cluster, idempotency keys, and the last
operation and rotation result of each cluster (what the fleet status shows).

Table ``FLEET_TABLE`` (default ``fluxfleet``) in the Functions storage account (the queue's, see
:func:`shared.ports.azure.storage.storage_account`: ``AzureWebJobsStorage`` or identity-based
``AzureWebJobsStorage__tableServiceUri``/``__accountName``; role *Storage Table Data Contributor*).

=====================  ===================  =============================================================
PartitionKey           RowKey               what
=====================  ===================  =============================================================
``op``                 operation id         :class:`Operation` (kind, state, waves, the shared request)
``op-<id>``            ``00000``…           :class:`Item`: one cluster of the operation (state, lease,
                                            attempt, result, error, progress)
``idem``               sha256 of the key    ``Idempotency-Key`` → operation id and request digest
``last``               cluster name         the cluster's last operation (id, kind, state, when)
``rotation``           cluster name         the cluster's last rotation result
``patwarning``         secret.version       when the app last warned about this PAT secret version, per
                                            reason (``PATExpiringSoon``, ``PATExpired``)
=====================  ===================  =============================================================

Times are ISO 8601 UTC text, structured values JSON text (a table property holds no object). Rows are
changed with ``If-Match`` on their ETag where two workers could race (claiming an item, moving to the
next wave); a lost race is :class:`Conflict`. ``azure-data-tables`` is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from shared import errors
from shared.ports.azure.storage import TABLE_CLIENT_KWARGS, CreatedOnce, StorageAccount, check_table_name, storage_account

log = logging.getLogger(__name__)

DEFAULT_TABLE = "fluxfleet"
PK_OPERATIONS = "op"
PK_IDEMPOTENCY = "idem"
PK_LAST = "last"
PK_ROTATION = "rotation"
PK_PAT_WARNING = "patwarning"

#: an item's states; the last three are final
PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "pending", "running", "succeeded", "failed", "skipped"
FINAL = (SUCCEEDED, FAILED, SKIPPED)
#: the longest text kept in one property (the service allows 64 KiB of UTF-16)
MAX_PROPERTY_CHARS = 30_000


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _json(value: Any) -> str:
    """``value`` as JSON text that fits a table property: a result or log too large to keep whole is
    replaced by a note of what it was (the operation must still record the cluster's state)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text) <= MAX_PROPERTY_CHARS:
        return text
    if isinstance(value, list):
        while value and len(text) > MAX_PROPERTY_CHARS:
            value = value[len(value) // 4 + 1:]
            text = json.dumps(["…"] + value, separators=(",", ":"))
        return text
    keys = sorted(value)[:50] if isinstance(value, dict) else []
    return json.dumps({"truncated": True, "characters": len(text), "keys": keys}, separators=(",", ":"))


def _loads(text: Any, default: Any = None) -> Any:
    if not isinstance(text, str) or not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _pat_row(secret: str, version: str) -> str:
    """RowKey of a PAT secret version: ``<secret>.<version>`` (Key Vault's alphabet has no ``.``), or the
    sha256 of both for names outside it (a RowKey may not hold ``/``, ``\\``, ``#``, ``?``)."""
    import re

    if re.fullmatch(r"[0-9A-Za-z-]{1,127}", secret) and re.fullmatch(r"[0-9A-Za-z]{0,64}", version):
        return f"{secret}.{version}"
    import hashlib

    return hashlib.sha256(f"{secret}\n{version}".encode()).hexdigest()


class Conflict(errors.Conflict):
    """Someone else changed the row first (its ETag moved)."""


@dataclass
class Operation:
    """One fleet operation. ``kind``: ``bootstrap`` or ``upgrade``; ``state``: ``running``,
    ``succeeded`` or ``failed``; ``spec``: what applies to every cluster (the shared request fields, the
    resolved ``version``, ``timeoutSeconds``, ``dryRun``); ``waves``: how many; ``current_wave``: the
    one being run (a later wave is queued only when this one succeeded)."""

    id: str
    kind: str
    spec: dict
    waves: int = 1
    current_wave: int = 0
    state: str = RUNNING
    total: int = 0
    created_at: datetime = field(default_factory=now)
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""
    etag: str | None = None

    def entity(self) -> dict:
        return {"PartitionKey": PK_OPERATIONS, "RowKey": self.id, "kind": self.kind, "spec": _json(self.spec),
                "waves": self.waves, "currentWave": self.current_wave, "state": self.state, "total": self.total,
                "createdAt": iso(self.created_at), "updatedAt": iso(self.updated_at or self.created_at),
                "finishedAt": iso(self.finished_at) or "", "message": self.message}

    @classmethod
    def from_entity(cls, e: Mapping) -> "Operation":
        return cls(id=e["RowKey"], kind=e.get("kind", ""), spec=_loads(e.get("spec"), {}), waves=int(e.get("waves", 1)),
                   current_wave=int(e.get("currentWave", 0)), state=e.get("state", RUNNING), total=int(e.get("total", 0)),
                   created_at=parse_time(e.get("createdAt")) or now(), updated_at=parse_time(e.get("updatedAt")),
                   finished_at=parse_time(e.get("finishedAt")), message=e.get("message", ""),
                   etag=getattr(e, "metadata", {}).get("etag"))


@dataclass
class Item:
    """One cluster of an operation. ``index`` is its place in the request (``clusters[i]``, or the
    order of the waves for an upgrade); ``name`` the cluster's registry name; ``request`` what is its
    own (path and cluster reference of a bootstrap). ``attempt`` is the queue message's dequeue count
    when it was claimed, ``message_id`` that message; ``lease_until`` when a running item counts as
    abandoned. ``result``/``error`` are JSON objects; ``log`` the last progress lines."""

    op_id: str
    index: int
    name: str
    wave: int = 0
    state: str = PENDING
    request: dict = field(default_factory=dict)
    attempt: int = 0
    message_id: str = ""
    lease_until: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: str = ""
    result: dict | None = None
    error: dict | None = None
    log: list = field(default_factory=list)
    etag: str | None = None

    @property
    def row_key(self) -> str:
        return f"{self.index:05d}"

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def entity(self) -> dict:
        return {"PartitionKey": f"op-{self.op_id}", "RowKey": self.row_key, "name": self.name, "wave": self.wave,
                "state": self.state, "request": _json(self.request), "attempt": self.attempt,
                "messageId": self.message_id, "leaseUntil": iso(self.lease_until) or "",
                "queuedAt": iso(self.queued_at) or "", "startedAt": iso(self.started_at) or "",
                "finishedAt": iso(self.finished_at) or "", "progress": self.progress[:1000],
                "result": _json(self.result) if self.result is not None else "",
                "error": _json(self.error) if self.error is not None else "", "log": _json(self.log)}

    @classmethod
    def from_entity(cls, e: Mapping) -> "Item":
        return cls(op_id=e["PartitionKey"][3:], index=int(e["RowKey"]), name=e.get("name", ""), wave=int(e.get("wave", 0)),
                   state=e.get("state", PENDING), request=_loads(e.get("request"), {}), attempt=int(e.get("attempt", 0)),
                   message_id=e.get("messageId", ""), lease_until=parse_time(e.get("leaseUntil")),
                   queued_at=parse_time(e.get("queuedAt")), started_at=parse_time(e.get("startedAt")),
                   finished_at=parse_time(e.get("finishedAt")), progress=e.get("progress", ""),
                   result=_loads(e.get("result")), error=_loads(e.get("error")), log=_loads(e.get("log"), []),
                   etag=getattr(e, "metadata", {}).get("etag"))


def _fields(values: Mapping[str, Any]) -> dict:
    """Item/operation attributes → entity properties (the same spelling as :meth:`Item.entity`)."""
    names = {"lease_until": "leaseUntil", "queued_at": "queuedAt", "started_at": "startedAt",
             "finished_at": "finishedAt", "message_id": "messageId", "current_wave": "currentWave",
             "updated_at": "updatedAt"}
    out = {}
    for key, value in values.items():
        if isinstance(value, datetime):
            value = iso(value)
        elif value is None:
            value = ""
        elif key in ("result", "error", "log", "request", "spec"):
            value = _json(value)
        elif key == "progress":
            value = str(value)[:1000]
        out[names.get(key, key)] = value
    return out


class OperationStore:
    """The fleet table. ``table_client``: an ``azure.data.tables.TableClient`` (tests, or
    :meth:`from_settings`). Thread-safe; the table is created on first use. Storage failures are
    :class:`shared.errors.UpstreamError` naming the table."""

    def __init__(self, table_client):
        self._table = table_client
        self._created = CreatedOnce()

    @classmethod
    def from_connection_string(cls, connection_string: str, table: str = DEFAULT_TABLE) -> "OperationStore":
        return cls(StorageAccount(connection_string=connection_string).table_client(table, **TABLE_CLIENT_KWARGS))

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ) -> "OperationStore":
        """``FLEET_TABLE`` in the Functions storage account. Raises :class:`shared.errors.SettingError`."""
        table = check_table_name((environ.get("FLEET_TABLE") or DEFAULT_TABLE).strip(), "FLEET_TABLE")
        return cls(storage_account(environ, services=("table",)).table_client(table, **TABLE_CLIENT_KWARGS))

    @property
    def table_name(self) -> str:
        return self._table.table_name

    def close(self) -> None:
        self._table.close()

    # -- plumbing -----------------------------------------------------------------------------------

    def _upstream(self, action: str, exc: BaseException) -> errors.UpstreamError:
        detail = getattr(exc, "error_code", None) or type(exc).__name__
        return errors.UpstreamError(f"fleet state (table {self.table_name}): {action} failed ({detail})")

    def _ensure(self) -> None:
        self._created.ensure(self._table.create_table, lambda exc: self._upstream("create table", exc))

    def _get(self, pk: str, rk: str):
        from azure.core.exceptions import ResourceNotFoundError

        self._ensure()
        try:
            return self._table.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"read {pk}/{rk}", exc) from None

    def _query(self, pk: str) -> list:
        self._ensure()
        try:
            return list(self._table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}))
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"list {pk}", exc) from None

    def _update(self, entity: dict, etag: str | None) -> str | None:
        """Merge ``entity`` (``If-Match: etag`` when given); returns the new ETag. :class:`Conflict`
        when the row moved (412) or is gone."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        self._ensure()
        try:
            if etag:
                meta = self._table.update_entity(entity, mode=UpdateMode.MERGE, etag=etag,
                                                 match_condition=MatchConditions.IfNotModified)
            else:
                meta = self._table.upsert_entity(entity, mode=UpdateMode.MERGE)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise Conflict(f"{entity['PartitionKey']}/{entity['RowKey']} was changed meanwhile") from None
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status_code", None) == 412:
                raise Conflict(f"{entity['PartitionKey']}/{entity['RowKey']} was changed meanwhile") from None
            raise self._upstream(f"write {entity['PartitionKey']}/{entity['RowKey']}", exc) from None
        return (meta or {}).get("etag")

    # -- operations ---------------------------------------------------------------------------------

    def create(self, op: Operation, items: Iterable[Item]) -> None:
        """Store a new operation and its items (the items first, in transactions of 100, so an
        operation is never seen without them)."""
        from shared.notify.tablebatch import TX_LIMIT, TableBatch

        self._ensure()
        items = list(items)
        batch = TableBatch(self._table)
        try:
            for start in range(0, len(items), TX_LIMIT):
                batch.submit([("create", i.entity()) for i in items[start:start + TX_LIMIT]])
            self._table.create_entity(op.entity())
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"create operation {op.id}", exc) from None

    def delete(self, op_id: str) -> None:
        """Remove an operation and its items (the loser of an ``Idempotency-Key`` race; never queued)."""
        from shared.notify.tablebatch import TX_LIMIT, TableBatch

        try:
            entities = self._query(f"op-{op_id}")
            batch = TableBatch(self._table)
            for start in range(0, len(entities), TX_LIMIT):
                batch.submit([("delete", dict(e)) for e in entities[start:start + TX_LIMIT]])
            self._table.delete_entity(PK_OPERATIONS, op_id)
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"delete operation {op_id}", exc) from None

    def get(self, op_id: str) -> Operation | None:
        entity = self._get(PK_OPERATIONS, op_id)
        return Operation.from_entity(entity) if entity is not None else None

    def operations(self, limit: int = 50) -> list[Operation]:
        """The newest ``limit`` operations, newest first."""
        ops = [Operation.from_entity(e) for e in self._query(PK_OPERATIONS)]
        return sorted(ops, key=lambda o: o.created_at, reverse=True)[:limit]

    def update_operation(self, op: Operation, *, etag: str | None = None, **values) -> str | None:
        """Merge ``values`` (attribute names of :class:`Operation`) into the operation's row, with
        ``If-Match`` when ``etag`` is given; ``updated_at`` is set. Returns the new ETag."""
        values.setdefault("updated_at", now())
        entity = {"PartitionKey": PK_OPERATIONS, "RowKey": op.id, **_fields(values)}
        new = self._update(entity, etag)
        for key, value in values.items():
            setattr(op, key, value)
        op.etag = new
        return new

    # -- items --------------------------------------------------------------------------------------

    def items(self, op_id: str) -> list[Item]:
        return sorted((Item.from_entity(e) for e in self._query(f"op-{op_id}")), key=lambda i: i.index)

    def item(self, op_id: str, index: int) -> Item | None:
        entity = self._get(f"op-{op_id}", f"{index:05d}")
        return Item.from_entity(entity) if entity is not None else None

    def update_item(self, item: Item, *, etag: str | None = None, **values) -> str | None:
        """Merge ``values`` (attribute names of :class:`Item`) into the item's row; with ``etag``,
        only if the row has not moved (:class:`Conflict` otherwise). Updates ``item`` and returns the
        new ETag."""
        entity = {"PartitionKey": f"op-{item.op_id}", "RowKey": item.row_key, **_fields(values)}
        new = self._update(entity, etag)
        for key, value in values.items():
            setattr(item, key, value)
        item.etag = new
        return new

    # -- idempotency keys -----------------------------------------------------------------------------

    def claim_key(self, key_digest: str, op_id: str, request_digest: str) -> tuple[str, str] | None:
        """Bind an ``Idempotency-Key`` (its digest) to ``op_id``. None when this call bound it; else
        ``(operation id, request digest)`` of the earlier request with that key."""
        from azure.core.exceptions import ResourceExistsError

        self._ensure()
        try:
            self._table.create_entity({"PartitionKey": PK_IDEMPOTENCY, "RowKey": key_digest, "operation": op_id,
                                       "requestDigest": request_digest, "createdAt": iso(now())})
            return None
        except ResourceExistsError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._upstream("record Idempotency-Key", exc) from None
        existing = self._get(PK_IDEMPOTENCY, key_digest) or {}
        return str(existing.get("operation", "")), str(existing.get("requestDigest", ""))

    def key(self, key_digest: str) -> tuple[str, str] | None:
        existing = self._get(PK_IDEMPOTENCY, key_digest)
        return (str(existing.get("operation", "")), str(existing.get("requestDigest", ""))) if existing else None

    # -- per-cluster history (fleet status) ---------------------------------------------------------

    def set_last(self, cluster: str, value: Mapping[str, Any]) -> None:
        """The cluster's last operation: ``{"operation", "kind", "state", "at", "message"}``."""
        self._update({"PartitionKey": PK_LAST, "RowKey": cluster, "value": _json(dict(value))}, None)

    def set_rotation(self, cluster: str, value: Mapping[str, Any]) -> None:
        """The cluster's last rotation result (:meth:`shared.rotation.ClusterResult.to_dict` + ``at``)."""
        self._update({"PartitionKey": PK_ROTATION, "RowKey": cluster, "value": _json(dict(value))}, None)

    def pat_warning(self, secret: str, version: str) -> dict[str, datetime]:
        """When the app last warned about Key Vault secret ``secret`` at ``version``: reason
        (``PATExpiringSoon``, ``PATExpired``) → aware UTC datetime; empty when never."""
        entity = self._get(PK_PAT_WARNING, _pat_row(secret, version)) or {}
        out = {}
        for key, value in entity.items():
            when = parse_time(value) if key.startswith("PAT") else None
            if when is not None:
                out[key] = when
        return out

    def set_pat_warning(self, secret: str, version: str, reason: str, at: datetime) -> None:
        """Remember that a ``reason`` warning about ``secret`` at ``version`` was published at ``at``
        (other reasons of the same version are kept: the row is merged)."""
        import re

        if not re.fullmatch(r"PAT[A-Za-z]{1,60}", reason):
            raise ValueError(f"not a PAT warning reason: {reason!r}")
        self._update({"PartitionKey": PK_PAT_WARNING, "RowKey": _pat_row(secret, version), "secret": secret,
                      "secretVersion": version, reason: iso(at)}, None)

    def last_operations(self) -> dict[str, dict]:
        return {e["RowKey"]: _loads(e.get("value"), {}) for e in self._query(PK_LAST)}

    def rotations(self) -> dict[str, dict]:
        return {e["RowKey"]: _loads(e.get("value"), {}) for e in self._query(PK_ROTATION)}


__all__ = ["Conflict", "FAILED", "FINAL", "Item", "Operation", "OperationStore", "PENDING", "RUNNING", "SKIPPED",
           "SUCCEEDED", "iso", "now", "parse_time"]
