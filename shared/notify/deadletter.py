"""Dead letters: events that could not be delivered or were rejected, as JSON blobs.

One blob per (event, target) failure or per rejected message, in container ``NOTIFY_DEADLETTER_CONTAINER``
(default ``flux-notify-deadletter``). The name is derived from what failed, so a redelivered message
writes no second letter:

- ``undeliverable/<yyyy>/<mm>/<dd>/<target>/<id>.json``: ``id`` is the first 32 hex digits of the sha256
  of the target and the event's dedupe key, the day the message's Event Hub enqueued day (the arrival
  day for HTTP posts), so the same event failing again on a later day is a letter of that day;
- ``rejected/-/<id>.json``: ``id`` from the body alone (with the route's cluster for HTTP posts), no day,
  so the same body redelivered with another sequence number or on another day is still one letter.
  Letters written before rejected names lost their day (``rejected/<yyyy>/<mm>/<dd>/-/<id>.json``) stay
  valid names: listed, read and replayed as before (:data:`NAME_RE` takes both).

Letters are created only if absent (``If-None-Match: *``). Record (JSON)::

    {"id", "kind", "time" (RFC 3339 UTC), "target" (name or null), "cluster" (or null),
     "error" (one line, no secret), "attempts" (int), "dedupeKey" (or null),
     "source": {"trigger": "eventhub"|"http"|"replay", "partition", "sequenceNumber", "offset", "enqueuedTime"},
     "event" (the event JSON object, when it parsed) | "body" (text) + "bodyTruncated" (+ "bodyBytes",
     "bodySha256" when cut to the first bytes of a refused post),
     "replayable": false (only on HTTP posts refused for their signature: replay skips them),
     "resolved": {"time", "reason"} (the pair was delivered after all: replay skips it)}

No secret is written: targets are named, never their URLs; errors come from :class:`DeliveryError`.
Any storage failure raises :class:`StorageUnavailable` so the invocation fails and the batch is retried.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

from shared import errors

from .dedupe import StorageUnavailable

MAX_BODY_CHARS = 256 * 1024
REFUSED_BODY_BYTES = 4096  # what is kept of a post refused before it was authenticated
UNDELIVERABLE, REJECTED = "undeliverable", "rejected"
#: a dead letter's name: ``<kind>/[<yyyy>/<mm>/<dd>/]<target or "-">/<id>.json`` (rejected letters have no day)
NAME_RE = re.compile(r"(undeliverable|rejected)/(?:\d{4}/\d{2}/\d{2}/)?[A-Za-z0-9_.-]{1,63}/[0-9a-f-]{32,36}\.json")
PREFIX_RE = re.compile(r"[A-Za-z0-9_./-]{0,200}")


def letter_id(*parts: str | bytes) -> str:
    """32 hex digits naming a letter after what failed (stable across redeliveries)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def make_record(kind: str, *, error: str, attempts: int = 0, target: str | None = None,
                cluster: str | None = None, event: dict | None = None, body: bytes | str | None = None,
                dedupe_key: str | None = None, source: dict | None = None, record_id: str | None = None,
                body_limit: int | None = None) -> dict:
    """A dead-letter record (shape above); ``error`` is folded to one line of at most 1,000 characters.
    ``body_limit`` keeps only the first bytes of ``body`` (a post that was never authenticated)."""
    now = datetime.now(timezone.utc)
    record: dict[str, Any] = {"id": record_id or uuid.uuid4().hex, "kind": kind,
                              "time": now.isoformat().replace("+00:00", "Z"),
                              "target": target, "cluster": cluster, "error": " ".join(str(error).split())[:1000],
                              "attempts": attempts, "dedupeKey": dedupe_key, "source": source or {}}
    if event is not None:
        record["event"] = event
    elif body is not None:
        raw = body if isinstance(body, (bytes, bytearray)) else str(body).encode("utf-8", "surrogatepass")
        if body_limit is not None and len(raw) > body_limit:
            record["bodyBytes"] = len(raw)
            record["bodySha256"] = hashlib.sha256(raw).hexdigest()
            record["body"] = raw[:body_limit].decode("utf-8", "replace")
            record["bodyTruncated"] = True
        else:
            text = raw.decode("utf-8", "replace")
            record["body"] = text[:MAX_BODY_CHARS]
            record["bodyTruncated"] = len(text) > MAX_BODY_CHARS
    return record


def blob_name(record: dict) -> str:
    """``undeliverable/<yyyy>/<mm>/<dd>/<target>/<id>.json`` (the day is the Event Hub enqueued day when the
    record has one, else the record's time) or ``rejected/<target or "-">/<id>.json`` (named by content
    alone: a redelivery on another day finds the letter)."""
    if record["kind"] == REJECTED:
        return f"{REJECTED}/{record.get('target') or '-'}/{record['id']}.json"
    day = str((record.get("source") or {}).get("enqueuedTime") or "")[:10]
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        day = record["time"][:10]
    return f"{record['kind']}/{day.replace('-', '/')}/{record.get('target') or '-'}/{record['id']}.json"


def _encode(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8", "backslashreplace")


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
        """Write ``record`` (to ``name``, else :func:`blob_name`), replacing it; returns the blob name."""
        return self._upload(record, name or blob_name(record), overwrite=True)[0]

    def put_once(self, record: dict) -> tuple[str, bool]:
        """Create ``record`` at :func:`blob_name` unless a letter is there already (a redelivery):
        (name, created)."""
        return self._upload(record, blob_name(record), overwrite=False)

    def _upload(self, record: dict, name: str, *, overwrite: bool) -> tuple[str, bool]:
        from azure.core.exceptions import AzureError, ResourceExistsError
        from azure.storage.blob import ContentSettings

        try:
            self.container.upload_blob(name, _encode(record), overwrite=overwrite,
                                       content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:
            return name, False
        except AzureError as exc:
            raise self._fail(exc) from None
        return name, True

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

    def resolve(self, name: str, reason: str) -> None:
        """Mark the letter resolved (kept, skipped by replay); a letter gone meanwhile is left gone."""
        try:
            record = self.get(name)
        except errors.NotFound:
            return
        record["resolved"] = {"time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"), "reason": reason}
        self.put(record, name)


class MemoryDeadLetterStore:
    """Same interface, in memory (CLI dry runs, bench, unit tests)."""

    def __init__(self):
        self.blobs: dict[str, dict] = {}

    def ensure_container(self) -> None:
        pass

    def put(self, record: dict, name: str | None = None) -> str:
        name = name or blob_name(record)
        self.blobs[name] = json.loads(_encode(record))
        return name

    def put_once(self, record: dict) -> tuple[str, bool]:
        name = blob_name(record)
        if name in self.blobs:
            return name, False
        return self.put(record, name), True

    def names(self, prefix: str | None = None, limit: int | None = None) -> Iterator[str]:
        out = sorted(n for n in self.blobs if n.startswith(prefix or ""))
        return iter(out[:limit] if limit is not None else out)

    def get(self, name: str) -> dict:
        if name not in self.blobs:
            raise errors.NotFound(f"dead letter {name!r} not found")
        return self.blobs[name]

    def delete(self, name: str) -> None:
        self.blobs.pop(name, None)

    def resolve(self, name: str, reason: str) -> None:
        if name in self.blobs:
            self.blobs[name]["resolved"] = {"time": datetime.now(timezone.utc).isoformat(), "reason": reason}
