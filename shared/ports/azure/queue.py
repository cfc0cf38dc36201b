"""Azure Storage queue port: the fleet's work items (``azure-storage-queue`` 12.18 ``QueueClient``).

The queue is the one the fleet worker's queue trigger listens on, so it lives in the Functions storage
account (the trigger's ``connection`` is ``AzureWebJobsStorage``), as
:func:`shared.ports.azure.storage.storage_account` reads it: ``AzureWebJobsStorage`` (a connection
string: Azurite's locally), else identity-based ``AzureWebJobsStorage__queueServiceUri`` or
``__accountName`` with ``DefaultAzureCredential``; the identity needs *Storage Queue Data Contributor*
(``974c5e8b-45b9-4653-ba55-5f855dd0fb88``), as the trigger does.

Messages are base64 text (``TextBase64EncodePolicy``): the Functions host's default
``messageEncoding`` (host.json ``extensions.queues``) decodes them before the trigger sees them.
Names: 3-63 lower-case letters, digits and single hyphens (learn.microsoft.com/rest/api/storageservices/
naming-queues-and-metadata). The SDK is imported lazily (cold start).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Mapping

from shared import errors
from shared.ports.azure.storage import CreatedOnce, StorageAccount, storage_account

log = logging.getLogger(__name__)

_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
#: the longest a message may stay invisible when sent (7 days, the service's limit), seconds
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600


def check_queue_name(name: str, setting: str) -> str:
    """``name`` if it is a valid queue name, else :class:`shared.errors.SettingError` naming ``setting``."""
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise errors.SettingError(setting, f"app setting {name!r} is not a queue name (3-63 lower-case letters, "
                                           "digits and single hyphens)")
    return name


class WorkQueue:
    """One queue. ``client`` is an ``azure.storage.queue.QueueClient`` (tests, or :meth:`from_settings`).
    The queue is created on first send when it does not exist. Thread-safe. Errors are
    :class:`shared.errors.UpstreamError` naming the queue, never the account key."""

    def __init__(self, client):
        self._client = client
        self._created = CreatedOnce()

    @classmethod
    def from_connection_string(cls, connection_string: str, name: str) -> "WorkQueue":
        return cls(StorageAccount(connection_string=connection_string).queue_client(name, **_client_kwargs()))

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ) -> "WorkQueue":
        """The queue named by ``FLEET_QUEUE`` (default ``flux-fleet``) in the Functions storage account.
        Raises :class:`shared.errors.SettingError`."""
        name = check_queue_name((environ.get("FLEET_QUEUE") or "flux-fleet").strip(), "FLEET_QUEUE")
        return cls(storage_account(environ, services=("queue",)).queue_client(name, **_client_kwargs()))

    @property
    def name(self) -> str:
        return self._client.queue_name

    def close(self) -> None:
        self._client.close()

    def _upstream(self, action: str, exc: BaseException) -> errors.UpstreamError:
        detail = getattr(exc, "error_code", None) or type(exc).__name__
        return errors.UpstreamError(f"queue {self.name}: {action} failed ({detail})")

    def ensure(self) -> None:
        """Create the queue if it does not exist (the template creates it in Azure)."""
        self._created.ensure(self._client.create_queue, lambda exc: self._upstream("create", exc))

    def send(self, text: str, *, delay_seconds: float = 0) -> str:
        """Enqueue ``text`` (at most 48 KiB once base64-encoded, the service's 64 KiB limit), visible
        after ``delay_seconds``. Returns the message id."""
        self.ensure()
        try:
            msg = self._client.send_message(text, visibility_timeout=int(max(0, min(delay_seconds, MAX_VISIBILITY_SECONDS))) or None)
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._upstream("send", exc) from None
        return msg.id


def _client_kwargs() -> dict:
    from azure.storage.queue import BinaryBase64DecodePolicy, ExponentialRetry, TextBase64EncodePolicy

    # the Functions host reads base64 (messageEncoding default); the storage SDK's first backoff is
    # 15 s by default: an outage must fail the request within seconds
    return {"message_encode_policy": TextBase64EncodePolicy(), "message_decode_policy": BinaryBase64DecodePolicy(),
            "retry_policy": ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=2),
            "connection_timeout": 10, "read_timeout": 30}


__all__ = ["MAX_VISIBILITY_SECONDS", "WorkQueue", "check_queue_name"]
