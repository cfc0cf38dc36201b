"""Azure Storage (Table + Blob) clients for the forwarder: azure-data-tables 12.7, azure-storage-blob 12.31.

From app settings, first match wins (read by :func:`shared.ports.azure.storage.storage_account`):

1. ``NOTIFY_STORAGE_CONNECTION``: a connection string (e.g. Azurite's, or a dedicated account);
2. ``AzureWebJobsStorage``: the Function's own storage connection string;
3. identity-based, per service ``AzureWebJobsStorage__blobServiceUri`` / ``__tableServiceUri``, else
   ``AzureWebJobsStorage__accountName`` (``https://<name>.blob|table.core.windows.net``), with one
   ``DefaultAzureCredential`` (roles: Storage Table Data Contributor, Storage Blob Data Contributor).

All clients share one ``requests`` session whose pool holds ``pool_size`` connections, so the
forwarder's worker threads do not open a connection per call.
"""

from __future__ import annotations

import os
from typing import Mapping

from shared import errors
from shared.ports.azure.storage import StorageAccount, storage_account


def _session(pool_size: int):
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Storage:
    """Factories of Table and Blob clients for one account: ``account`` (a
    :class:`shared.ports.azure.storage.StorageAccount`), or ``connection_string`` (tests, Azurite)."""

    def __init__(self, account: StorageAccount | None = None, *, connection_string: str | None = None,
                 pool_size: int = 32):
        if account is None:
            if not connection_string:
                raise errors.SettingError("NOTIFY_STORAGE_CONNECTION", "no storage account is configured")
            account = StorageAccount(connection_string=connection_string)
        self._account = account
        self._pool_size = pool_size
        self._transport = None

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ, pool_size: int = 32) -> "Storage":
        """From app settings (order in the module doc); raises :class:`shared.errors.SettingError`
        (``NOTIFY_STORAGE_CONNECTION``) when none is set."""
        return cls(storage_account(environ, "NOTIFY_STORAGE_CONNECTION", services=("blob", "table"),
                                   purpose="set a connection string or AzureWebJobsStorage__accountName for the "
                                           "managed identity"),
                   pool_size=pool_size)

    def _kwargs(self) -> dict:
        from azure.core.pipeline.transport import RequestsTransport

        if self._transport is None:
            # session_owner=False: closing one client must not close the shared pool.
            self._transport = RequestsTransport(session=_session(self._pool_size), session_owner=False,
                                                connection_timeout=10, read_timeout=30)
        return {"transport": self._transport, "retry_total": 2, "retry_backoff_factor": 0.5}

    def table_client(self, name: str):
        return self._account.table_client(name, **self._kwargs())

    def container_client(self, name: str):
        from azure.storage.blob import ExponentialRetry

        # the blob SDK's default first backoff is 15 s: an outage must fail the invocation within seconds
        return self._account.container_client(
            name, transport=self._kwargs()["transport"],
            retry_policy=ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=2))

    def read_blob(self, container: str, name: str) -> bytes:
        """Whole blob (the routing file); raises :class:`shared.errors.NotFound` / UpstreamError."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self.container_client(container).download_blob(name).readall()
        except ResourceNotFoundError:
            raise errors.NotFound(f"blob {container}/{name} not found") from None
        except AzureError as exc:
            raise errors.UpstreamError(f"blob {container}/{name}: {type(exc).__name__}") from None
