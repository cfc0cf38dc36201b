"""Azure Storage accounts from app settings: the one place the app turns its storage settings into
Table, Queue and Blob clients (``azure-data-tables`` 12.7, ``azure-storage-queue`` 12.x,
``azure-storage-blob`` 12.31). Used by the cluster registry, the fleet's table and queue and the
forwarder's dedupe table and blobs.

:func:`storage_account` reads, first match wins:

1. ``connection``, when the caller names a setting of its own (``REGISTRY_STORAGE_CONNECTION``,
   ``NOTIFY_STORAGE_CONNECTION``): a connection string (Azurite's, or a dedicated account);
2. ``AzureWebJobsStorage``: the Functions host's storage connection string;
3. identity-based, the way the Functions host reads it (learn.microsoft.com/azure/azure-functions/
   functions-reference#connecting-to-host-storage-with-an-identity), per service:
   ``AzureWebJobsStorage__blobServiceUri`` / ``__queueServiceUri`` / ``__tableServiceUri``, else
   ``AzureWebJobsStorage__accountName`` as ``https://<name>.<service>.core.windows.net``; the clients
   then sign in with ``DefaultAzureCredential`` (``AZURE_CLIENT_ID`` selects the user-assigned
   identity), which needs the service's data role (Storage Table/Queue/Blob Data Contributor).

Values are stripped; an empty one counts as unset. The SDKs and azure-identity are imported only when a
client is built (Functions cold start).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Callable, Mapping

from shared import errors

#: the services :func:`storage_account` knows, as the Functions host names their endpoint settings
SERVICES = ("blob", "queue", "table")
#: what the app's tables (registry, fleet state) pass to ``TableClient``: two retries, and connect /
#: read timeouts in seconds, so that an outage fails a request or a run within seconds
TABLE_CLIENT_KWARGS = {"retry_total": 2, "connection_timeout": 10, "read_timeout": 30}


class StorageAccount:
    """One storage account: a connection string, or per-service endpoint URLs (``endpoints``:
    ``{"table": "https://<name>.table.core.windows.net", ...}``) reached with one
    ``DefaultAzureCredential``, made on first use and shared by the account's clients.

    ``table_client``/``queue_client``/``container_client`` build the SDK client for one table, queue
    or container; keyword arguments go to the SDK (retries, timeouts, transport, message encoding)."""

    def __init__(self, *, connection_string: str | None = None, endpoints: Mapping[str, str] | None = None):
        if not connection_string and not endpoints:
            raise ValueError("a storage account needs a connection string or endpoints")
        self.connection_string = connection_string
        self.endpoints = dict(endpoints or {})
        self._credential = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the connection string: it may hold the account key
        return f"StorageAccount(endpoints={self.endpoints!r})" if not self.connection_string \
            else "StorageAccount(connection_string=<hidden>)"

    def credential(self):
        """The ``DefaultAzureCredential`` of identity-based accounts (one per account)."""
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            return self._credential

    def endpoint(self, service: str) -> str:
        """The ``service`` endpoint URL of an identity-based account; ``KeyError`` when it was not read."""
        return self.endpoints[service]

    def table_client(self, table: str, **kwargs):
        """An ``azure.data.tables.TableClient`` for ``table``."""
        from azure.data.tables import TableClient

        if self.connection_string:
            return TableClient.from_connection_string(self.connection_string, table_name=table, **kwargs)
        return TableClient(self.endpoint("table"), table_name=table, credential=self.credential(), **kwargs)

    def queue_client(self, queue: str, **kwargs):
        """An ``azure.storage.queue.QueueClient`` for ``queue``."""
        from azure.storage.queue import QueueClient

        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, queue, **kwargs)
        return QueueClient(self.endpoint("queue"), queue, credential=self.credential(), **kwargs)

    def container_client(self, container: str, **kwargs):
        """An ``azure.storage.blob.ContainerClient`` for ``container``."""
        from azure.storage.blob import ContainerClient

        if self.connection_string:
            return ContainerClient.from_connection_string(self.connection_string, container_name=container, **kwargs)
        return ContainerClient(self.endpoint("blob"), container_name=container, credential=self.credential(), **kwargs)


def storage_account(environ: Mapping[str, str] = os.environ, connection: str | None = None, *,
                    services: tuple[str, ...] = ("table",), purpose: str = "") -> StorageAccount:
    """The storage account the settings name (order in the module doc), with the endpoints of
    ``services`` (a subset of :data:`SERVICES`) when it is identity-based.

    Raises :class:`shared.errors.SettingError` naming ``connection`` (``AzureWebJobsStorage`` when
    the caller has no setting of its own) when no connection string is set and some service has
    neither its ``__<service>ServiceUri`` nor ``__accountName``; the message lists the settings
    looked at, then ``purpose`` (e.g. ``"the registry lives in Azure Table storage"``)."""
    unknown = set(services) - set(SERVICES)
    if unknown or not services:
        raise ValueError(f"unknown storage services {sorted(unknown)}")
    conn = ((environ.get(connection) if connection else "") or environ.get("AzureWebJobsStorage") or "").strip()
    if conn:
        return StorageAccount(connection_string=conn)
    # read by literal name: tests/app_settings.py collects the settings the code reads for the infra
    # and README checks
    uris = {"blob": environ.get("AzureWebJobsStorage__blobServiceUri"),
            "queue": environ.get("AzureWebJobsStorage__queueServiceUri"),
            "table": environ.get("AzureWebJobsStorage__tableServiceUri")}
    account = (environ.get("AzureWebJobsStorage__accountName") or "").strip()
    endpoints = {}
    for service in services:
        url = (uris[service] or "").strip()
        if not url and account:
            url = f"https://{account}.{service}.core.windows.net"
        if not url:
            looked_at = ["AzureWebJobsStorage"] if connection else []
            looked_at += ["AzureWebJobsStorage__accountName", f"AzureWebJobsStorage__{service}ServiceUri"]
            message = f"app setting is missing (nor is {', '.join(looked_at[:-1])} or {looked_at[-1]} set)"
            raise errors.SettingError(connection or "AzureWebJobsStorage", f"{message}; {purpose}" if purpose else message)
        endpoints[service] = url
    return StorageAccount(endpoints=endpoints)


#: an Azure table name (learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model)
TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")


def check_table_name(name: str, field: str, *, setting: bool = True) -> str:
    """``name`` if it is an Azure table name (3-63 letters and digits, starting with a letter), else
    :class:`shared.errors.SettingError` naming ``field`` (an app setting), or with ``setting`` false
    :class:`shared.errors.InvalidInput`."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise (errors.SettingError if setting else errors.InvalidInput)(
            field, "must be an Azure table name (3-63 letters and digits, starting with a letter)")
    return name


class CreatedOnce:
    """A table, queue or container that one client creates on first use (the template creates them in
    Azure; local runs and tests start with none). Thread-safe."""

    def __init__(self):
        self._ready = False
        self._lock = threading.Lock()

    def ensure(self, create: Callable[[], object], fail: Callable[[BaseException], Exception]) -> bool:
        """Call ``create()`` unless an earlier call succeeded; an "already exists" answer counts as
        success. Another error raises ``fail(exc)`` (the caller's error naming the resource; never the
        SDK's text, which may quote the account) and the next call tries again. Returns True when this
        call created the resource."""
        if self._ready:
            return False
        from azure.core.exceptions import ResourceExistsError

        with self._lock:
            if self._ready:
                return False
            try:
                create()
                created = True
            except ResourceExistsError:
                created = False
            except Exception as exc:  # noqa: BLE001 - mapped by the caller
                raise fail(exc) from None
            self._ready = True
            return created


__all__ = ["SERVICES", "TABLE_CLIENT_KWARGS", "TABLE_NAME", "CreatedOnce", "StorageAccount", "check_table_name",
           "storage_account"]
