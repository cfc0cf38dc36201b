"""Entity-group transactions (Table storage ``$batch``) written and read here, sent through the
``TableClient``'s own pipeline (its credential, retries and transport).

Why not ``TableClient.submit_transaction``: azure-data-tables 12.7 builds every part of a transaction
through azure-core's multipart support, which runs the pipeline policies of each part on a new thread
pool and writes and parses the parts with the ``email`` package. Profiled in ``bench/notify_bench.py``
that was 68 % of the forwarder's CPU (two claim and two mark transactions of 100 parts per 100 events);
this module's text templates cost about 1 % of it.

Wire format (learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions): one
``POST {account}/$batch`` (``multipart/mixed; boundary=batch_…``) holding one changeset
(``multipart/mixed; boundary=changeset_…``) of ``application/http`` parts, each a request line, headers
and a JSON entity. The service answers ``202`` with one ``HTTP/1.1 <status>`` part per operation, or a
single failed part (the whole changeset is rolled back), e.g. ``409`` when an inserted entity exists.
What goes over the wire was checked against what the SDK itself sends to Azurite.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Sequence
from urllib.parse import quote

TX_LIMIT = 100  # operations per entity-group transaction
_STATUS_RE = re.compile(rb"\r\nHTTP/1\.1 (\d{3}) ")


class BatchFailed(Exception):
    """The transaction was refused as a whole: ``status`` of the failed operation (or of the request),
    ``index`` of that operation when the service names it."""

    def __init__(self, status: int, index: int | None = None):
        super().__init__(f"table transaction failed: HTTP {status}" + (f" at operation {index}" if index is not None else ""))
        self.status = status
        self.index = index


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def _entity(entity: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {}
    for name, value in entity.items():
        body[name] = value
        if isinstance(value, bool):
            body[name + "@odata.type"] = "Edm.Boolean"
        elif isinstance(value, float):
            body[name + "@odata.type"] = "Edm.Double"
        elif isinstance(value, int):
            if -2 ** 31 <= value < 2 ** 31:
                body[name + "@odata.type"] = "Edm.Int32"
            else:
                body[name], body[name + "@odata.type"] = str(value), "Edm.Int64"
        else:
            body[name + "@odata.type"] = "Edm.String"
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


class TableBatch:
    """Transactions on the table of ``table_client`` (an ``azure.data.tables.TableClient``)."""

    def __init__(self, table_client):
        self._table = table_client
        self._base = f"{table_client.scheme}://{table_client._primary_hostname}"
        self._version = table_client.api_version

    def _part(self, op: str, entity: dict[str, Any], etag: str | None) -> bytes:
        pk, rk = entity["PartitionKey"], entity["RowKey"]
        row_url = f"{self._base}/{self._table.table_name}(PartitionKey='{_key(pk)}',RowKey='{_key(rk)}')"
        headers = [f"x-ms-version: {self._version}", "DataServiceVersion: 3.0"]
        if op == "create":
            line, body = f"POST {self._base}/{self._table.table_name} HTTP/1.1", _entity(entity)
            headers += ["Accept: application/json;odata=minimalmetadata", "Prefer: return-no-content"]
        elif op == "merge":  # insert-or-merge (no If-Match)
            line, body = f"PATCH {row_url} HTTP/1.1", _entity(entity)
            headers.append("Accept: application/json")
        elif op == "delete":
            line, body = f"DELETE {row_url} HTTP/1.1", b""
            headers += ["Accept: application/json;odata=minimalmetadata", f"If-Match: {etag or '*'}"]
        else:
            raise ValueError(f"unknown table operation {op!r}")
        if body:
            headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n" + line + "\r\n" \
            + "\r\n".join(headers) + "\r\n\r\n"
        return head.encode("ascii") + body

    def submit(self, operations: Sequence[tuple]) -> list[int]:
        """Run ``[(op, entity[, etag])]`` (op ``create``, ``merge`` or ``delete``; at most 100, one
        PartitionKey) as one transaction; returns each operation's status. Raises :class:`BatchFailed`
        (nothing was applied) or the pipeline's ``azure.core.exceptions.AzureError``."""
        from azure.core.rest import HttpRequest

        if not operations:
            return []
        if len(operations) > TX_LIMIT:
            raise ValueError(f"at most {TX_LIMIT} operations per transaction")
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        parts = [b"--" + changeset.encode() + b"\r\n"
                 + self._part(op[0], op[1], op[2] if len(op) > 2 else None) + b"\r\n" for op in operations]
        body = (f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()
                + b"".join(parts) + f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
        request = HttpRequest("POST", f"{self._base}/$batch", content=body, headers={
            "x-ms-version": self._version, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json"})
        response = self._table._client.send_request(request, stream=True)  # no content decoding
        content = response.read()  # also returns the connection to the pool
        if response.status_code != 202:
            raise BatchFailed(response.status_code)
        statuses = [int(s) for s in _STATUS_RE.findall(content)]
        failed = [s for s in statuses if s >= 300]
        if failed or len(statuses) != len(operations):
            index = None
            m = re.search(rb'"value":"(\d+):', content)  # "1:The specified entity already exists."
            if m:
                index = int(m.group(1))
            raise BatchFailed(failed[0] if failed else 500, index)
        return statuses
