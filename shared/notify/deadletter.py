"""Dead letters: events that could not be delivered or were rejected, as JSON blobs.

One blob per (event, target) failure or per rejected message, in container ``NOTIFY_DEADLETTER_CONTAINER``
(default ``flux-notify-deadletter``), named ``<kind>/<yyyy>/<mm>/<dd>/<target or "-">/<uuid>.json``
with ``kind`` = ``undeliverable`` or ``rejected``. Record (JSON)::

    {"id", "kind", "time" (RFC 3339 UTC), "target" (name or null), "cluster" (or null),
     "error" (one line, no secret), "attempts" (int), "dedupeKey" (or null),
     "source": {"trigger": "eventhub"|"http"|"replay", "partition", "sequenceNumber", "offset", "enqueuedTime"},
     "event" (the event JSON object, when it parsed) | "body" (text, at most 256 KiB) + "bodyTruncated",
     "replayable": false (only on HTTP posts refused for their signature: replay skips them)}

No secret is written: targets are named, never their URLs; errors come from :class:`DeliveryError`.
Any storage failure raises :class:`StorageUnavailable` so the invocation fails and the batch is retried.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

from shared import errors

from .dedupe import StorageUnavailable

MAX_BODY_CHARS = 256 * 1024
UNDELIVERABLE, REJECTED = "undeliverable", "rejected"


def make_record(kind: str, *, error: str, attempts: int = 0, target: str | None = None,
                cluster: str | None = None, event: dict | None = None, body: bytes | str | None = None,
                dedupe_key: str | None = None, source: dict | None = None) -> dict:
    """A dead-letter record (shape above); ``error`` is folded to one line of at most 1,000 characters."""
    now = datetime.now(timezone.utc)
    record: dict[str, Any] = {"id": str(uuid.uuid4()), "kind": kind, "time": now.isoformat().replace("+00:00", "Z"),
                              "target": target, "cluster": cluster, "error": " ".join(str(error).split())[:1000],
                              "attempts": attempts, "dedupeKey": dedupe_key, "source": source or {}}
    if event is not None:
        record["event"] = event
    elif body is not None:
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
        record["body"] = text[:MAX_BODY_CHARS]
        record["bodyTruncated"] = len(text) > MAX_BODY_CHARS
    return record


def blob_name(record: dict) -> str:
    """``<kind>/<yyyy>/<mm>/<dd>/<target or "-">/<id>.json``."""
    day = record["time"][:10].replace("-", "/")
    return f"{record['kind']}/{day}/{record.get('target') or '-'}/{record['id']}.json"


class DeadLetterStore:
    """Dead letters in one blob container (``azure.storage.blob.ContainerClient``; thread-safe)."""

    def __init__(self, container_client):
        self.container = container_client

    def _fail(self, exc: Exception):
        return StorageUnavailable(f"dead-letter container {self.container.container_name}: {type(exc).__name__}")

    def ensure_container(self) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise self._fail(exc) from None

    def put(self, record: dict, name: str | None = None) -> str:
        """Write ``record`` (to ``name``, else :func:`blob_name`); returns the blob name."""
        from azure.core.exceptions import AzureError

        name = name or blob_name(record)
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8")
        try:
            from azure.storage.blob import ContentSettings

            self.container.upload_blob(name, data, overwrite=True,
                                       content_settings=ContentSettings(content_type="application/json"))
        except AzureError as exc:
            raise self._fail(exc) from None
        return name

    def names(self, prefix: str | None = None, limit: int | None = None) -> Iterator[str]:
        """Blob names under ``prefix`` in name order (oldest day first), at most ``limit``."""
        from azure.core.exceptions import AzureError

        try:
            for i, blob in enumerate(self.container.list_blobs(name_starts_with=prefix or None)):
                if limit is not None and i >= limit:
                    return
                yield blob.name
        except AzureError as exc:
            raise self._fail(exc) from None

    def get(self, name: str) -> dict:
        """Raises :class:`shared.errors.NotFound` for an unknown name."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return json.loads(self.container.download_blob(name).readall())
        except ResourceNotFoundError:
            raise errors.NotFound(f"dead letter {name!r} not found") from None
        except AzureError as exc:
            raise self._fail(exc) from None

    def delete(self, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self.container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._fail(exc) from None


class MemoryDeadLetterStore:
    """Same interface, in memory (CLI dry runs, bench, unit tests)."""

    def __init__(self):
        self.blobs: dict[str, dict] = {}

    def ensure_container(self) -> None:
        pass

    def put(self, record: dict, name: str | None = None) -> str:
        name = name or blob_name(record)
        self.blobs[name] = json.loads(json.dumps(record))
        return name

    def names(self, prefix: str | None = None, limit: int | None = None) -> Iterator[str]:
        out = sorted(n for n in self.blobs if n.startswith(prefix or ""))
        return iter(out[:limit] if limit is not None else out)

    def get(self, name: str) -> dict:
        if name not in self.blobs:
            raise errors.NotFound(f"dead letter {name!r} not found")
        return self.blobs[name]

    def delete(self, name: str) -> None:
        self.blobs.pop(name, None)
