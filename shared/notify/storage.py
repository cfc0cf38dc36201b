"""Azure Storage (Table + Blob) clients for the forwarder: azure-data-tables 12.7, azure-storage-blob 12.31.

From app settings, first match wins:

1. ``NOTIFY_STORAGE_CONNECTION``: a connection string (e.g. Azurite's, or a dedicated account);
2. ``AzureWebJobsStorage``: the Function's own storage connection string;
3. identity-based ``AzureWebJobsStorage__blobServiceUri`` + ``AzureWebJobsStorage__tableServiceUri``, or
   ``AzureWebJobsStorage__accountName`` (``https://<name>.blob|table.core.windows.net``), with
   ``DefaultAzureCredential`` (roles: Storage Table Data Contributor, Storage Blob Data Contributor).

All clients share one ``requests`` session whose pool holds ``pool_size`` connections, so the
forwarder's worker threads do not open a connection per call.
"""

from __future__ import annotations

import os
from typing import Mapping

from shared import errors


def _session(pool_size: int):
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Storage:
    """Factories of Table and Blob clients for one account."""

    def __init__(self, *, connection_string: str | None = None, blob_url: str | None = None,
                 table_url: str | None = None, credential=None, pool_size: int = 32):
        if not connection_string and not (blob_url and table_url):
            raise errors.SettingError("NOTIFY_STORAGE_CONNECTION", "no storage account is configured")
        self._conn = connection_string
        self._blob_url, self._table_url, self._credential = blob_url, table_url, credential
        self._pool_size = pool_size
        self._transport = None

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ, pool_size: int = 32) -> "Storage":
        """From app settings (order in the module doc); raises :class:`shared.errors.SettingError`
        (``NOTIFY_STORAGE_CONNECTION``) when none is set."""
        conn = (environ.get("NOTIFY_STORAGE_CONNECTION") or environ.get("AzureWebJobsStorage") or "").strip()
        if conn:
            return cls(connection_string=conn, pool_size=pool_size)
        blob = environ.get("AzureWebJobsStorage__blobServiceUri")
        table = environ.get("AzureWebJobsStorage__tableServiceUri")
        account = environ.get("AzureWebJobsStorage__accountName")
        if account and not (blob and table):
            blob = f"https://{account}.blob.core.windows.net"
            table = f"https://{account}.table.core.windows.net"
        if not (blob and table):
            raise errors.SettingError(
                "NOTIFY_STORAGE_CONNECTION", "app setting is missing (nor is AzureWebJobsStorage set); "
                "set a connection string or AzureWebJobsStorage__accountName for the managed identity")
        from azure.identity import DefaultAzureCredential

        return cls(blob_url=blob, table_url=table, credential=DefaultAzureCredential(), pool_size=pool_size)

    def _kwargs(self) -> dict:
        from azure.core.pipeline.transport import RequestsTransport

        if self._transport is None:
            # session_owner=False: closing one client must not close the shared pool.
            self._transport = RequestsTransport(session=_session(self._pool_size), session_owner=False,
                                                connection_timeout=10, read_timeout=30)
        return {"transport": self._transport, "retry_total": 2, "retry_backoff_factor": 0.5}

    def table_client(self, name: str):
        from azure.data.tables import TableClient

        if self._conn:
            return TableClient.from_connection_string(self._conn, table_name=name, **self._kwargs())
        return TableClient(self._table_url, table_name=name, credential=self._credential, **self._kwargs())

    def container_client(self, name: str):
        from azure.storage.blob import ContainerClient

        from azure.storage.blob import ExponentialRetry

        # the blob SDK's default first backoff is 15 s: an outage must fail the invocation within seconds
        kwargs = {"transport": self._kwargs()["transport"],
                  "retry_policy": ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=2)}
        if self._conn:
            return ContainerClient.from_connection_string(self._conn, container_name=name, **kwargs)
        return ContainerClient(self._blob_url, container_name=name, credential=self._credential, **kwargs)

    def read_blob(self, container: str, name: str) -> bytes:
        """Whole blob (the routing file); raises :class:`shared.errors.NotFound` / UpstreamError."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self.container_client(container).download_blob(name).readall()
        except ResourceNotFoundError:
            raise errors.NotFound(f"blob {container}/{name} not found") from None
        except AzureError as exc:
            raise errors.UpstreamError(f"blob {container}/{name}: {type(exc).__name__}") from None
