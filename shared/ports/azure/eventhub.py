"""Publishing events to Azure Event Hubs with ``azure-eventhub``'s ``EventHubProducerClient`` (5.15).

The app publishes its own events (:mod:`shared.notify.app_events`) to the hub its clusters'
notification-controllers publish to, so they are routed, deduped and delivered like Flux's.

- **Where**: app settings ``NOTIFY_EVENTHUB__fullyQualifiedNamespace`` (``<namespace>.servicebus.windows.net``)
  and ``NOTIFY_EVENTHUB_NAME``: the same settings the Event Hub trigger's identity-based connection reads
  (learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs-trigger, "Identity-based
  connections"). Unset namespace: publishing is off (:meth:`EventHubPublisher.from_settings` returns None).
- **Identity**: the Function's managed identity, ``DefaultAzureCredential`` (``AZURE_CLIENT_ID`` selects a
  user-assigned one), or ``ManagedIdentityCredential(client_id=NOTIFY_EVENTHUB__clientId)`` when that
  binding setting is present. The identity needs the role **Azure Event Hubs Data Sender** on the hub (the
  trigger needs Data Receiver). The SDK asks for ``https://eventhubs.azure.net//.default`` and puts the token
  to the namespace's ``$cbs`` node (AMQP CBS ``put-token``, audience ``sb://<namespace>/<hub>``).
- **How**: one ``EventHubProducerClient`` per call, one ``EventDataBatch`` (one AMQP transfer, message format
  ``0x80013700``) holding every event, sent to the hub (the service picks the partition); only events that
  do not fit the hub's maximum message size (1 MiB on Standard) start a further batch. The body of each
  event is the bytes given, with no properties, as notification-controller's ``azureeventhub`` provider
  sends them (``internal/notifier/azure_eventhub.go``).
- **Bound**: :meth:`EventHubPublisher.publish` never raises and returns within ``timeout`` seconds
  (``NOTIFY_PUBLISH_TIMEOUT_SECONDS``, default 10): the SDK's own retries are cut to fit (2 retries,
  backoff up to 2 s, ``auth_timeout`` = ``timeout``), and the send runs on a worker thread (daemon) with the
  async client (``azure.eventhub.aio``) on its own event loop; what was not confirmed when the time is up counts
  as failed, and the send is cancelled then, which closes the client and its connection, so a hub that never
  answers leaves no thread or socket behind (the sync client could not be stopped from outside).

``azure.eventhub`` and ``azure.identity`` are imported only when something is published (cold start).
Errors name the namespace, the hub and the SDK's exception class, never a token.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from shared.errors import SettingError

log = logging.getLogger(__name__)

NAMESPACE_SETTING = "NOTIFY_EVENTHUB__fullyQualifiedNamespace"  # settings are read by literal name (tests/test_infra.py)
HUB_SETTING = "NOTIFY_EVENTHUB_NAME"
DEFAULT_TIMEOUT = 10.0
# a DNS name (optionally :port); Event Hubs entity names: letters, digits, '.', '_', '-', 1-256
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:\d{1,5})?$")
_HUB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")


@dataclass
class PublishResult:
    """What one :meth:`EventHubPublisher.publish` did: ``sent`` events confirmed by the service,
    ``failed`` events not confirmed (``error`` says why, one line), ``batches`` sent, ``duration_s``."""

    sent: int = 0
    failed: int = 0
    batches: int = 0
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "batches": self.batches, "error": self.error,
                "durationSeconds": round(self.duration_s, 3)}


class EventHubPublisher:
    """Publishes to hub ``eventhub_name`` of ``fully_qualified_namespace`` with ``credential`` (a
    ``TokenCredential``). ``timeout``: seconds one :meth:`publish` may take. ``client_kwargs`` go to
    ``EventHubProducerClient`` as they are (e.g. ``custom_endpoint_address`` and ``connection_verify``
    for a private endpoint or a test peer)."""

    def __init__(self, fully_qualified_namespace: str, eventhub_name: str, credential, *,
                 timeout: float = DEFAULT_TIMEOUT, client_kwargs: Mapping[str, Any] | None = None):
        self.namespace = fully_qualified_namespace
        self.eventhub_name = eventhub_name
        self.credential = credential
        self.timeout = float(timeout)
        self.client_kwargs = dict(client_kwargs or {})

    def __repr__(self) -> str:
        return f"EventHubPublisher({self.namespace!r}, {self.eventhub_name!r})"

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ, *, credential=None,
                      **client_kwargs) -> "EventHubPublisher | None":
        """The publisher the app settings describe, or None when ``NOTIFY_EVENTHUB__fullyQualifiedNamespace``
        is unset (publishing off). ``credential`` defaults to ``ManagedIdentityCredential(client_id=...)``
        with ``NOTIFY_EVENTHUB__clientId``, else :func:`shared.services.credential`. Raises
        :class:`shared.errors.SettingError` naming the setting: a namespace that is not a host name, a
        missing or invalid ``NOTIFY_EVENTHUB_NAME``, a timeout outside 1-120 s."""
        from shared.settings import number

        namespace = (environ.get("NOTIFY_EVENTHUB__fullyQualifiedNamespace") or "").strip()
        if not namespace:
            return None
        if not _HOST_RE.match(namespace):
            raise SettingError(NAMESPACE_SETTING, "app setting must be the namespace's host name, "
                               "e.g. contoso.servicebus.windows.net")
        hub = (environ.get("NOTIFY_EVENTHUB_NAME") or "").strip()
        if not hub:
            raise SettingError(HUB_SETTING, "app setting is missing: the Event Hub the clusters publish to")
        if not _HUB_RE.match(hub):
            raise SettingError(HUB_SETTING, "app setting is not an Event Hub name")
        timeout = number(environ, "NOTIFY_PUBLISH_TIMEOUT_SECONDS", DEFAULT_TIMEOUT, minimum=1, maximum=120)
        if credential is None:
            client_id = (environ.get("NOTIFY_EVENTHUB__clientId") or "").strip()
            if client_id:
                from azure.identity import ManagedIdentityCredential

                credential = ManagedIdentityCredential(client_id=client_id)
            else:
                from shared import services

                credential = services.credential()
        return cls(namespace, hub, credential, timeout=timeout, client_kwargs=client_kwargs)

    def publish(self, bodies: Sequence[bytes]) -> PublishResult:
        """Send ``bodies`` (one event each) in one ``EventDataBatch``; never raises. Returns within
        :attr:`timeout` seconds (plus a few milliseconds); see the module docstring."""
        bodies = [bytes(b) for b in bodies]
        result = PublishResult()
        if not bodies:
            return result
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        progress = PublishResult()
        lock = threading.Lock()

        def work():
            try:
                self._send(bodies, deadline, progress, lock)
            except Exception as exc:  # noqa: BLE001 - the SDK raises many types; the caller gets one line
                with lock:
                    progress.error = _describe(exc)

        worker = threading.Thread(target=work, name="eventhub-publish", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        with lock:
            result.sent, result.batches, result.error = progress.sent, progress.batches, progress.error
            if worker.is_alive():
                result.error = (f"no confirmation from {self.namespace} within {self.timeout:g} s"
                                + (f" (last error: {progress.error})" if progress.error else ""))
        result.failed = len(bodies) - result.sent
        if result.failed and not result.error:
            result.error = "not confirmed"
        if result.failed:
            result.error = f"hub {self.eventhub_name} in {self.namespace}: {result.error}"
        result.duration_s = time.monotonic() - t0
        return result

    def _send(self, bodies: list[bytes], deadline: float, progress: PublishResult, lock: threading.Lock) -> None:
        """The worker: the send on its own event loop, cancelled at ``deadline``. The sync client cannot be
        stopped from outside (its open loop waits for the service's answer with no end of its own, holding the
        client's lock, so ``close()`` blocks too): a hub that takes the connection and never answers kept the
        worker and its socket for the life of the instance. Cancelling the async client's task ends it, and
        ``async with`` closes the client (links, connection, socket) on the way out."""
        import asyncio

        async def bounded() -> None:
            try:
                await asyncio.wait_for(self._send_async(bodies, deadline, progress, lock),
                                       max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                with lock:
                    progress.error = progress.error or "TimeoutError: the time for publishing is up"

        asyncio.run(bounded())

    async def _send_async(self, bodies: list[bytes], deadline: float, progress: PublishResult,
                          lock: threading.Lock) -> None:
        import asyncio

        from azure.eventhub import EventData
        from azure.eventhub.aio import EventHubProducerClient

        budget = max(1.0, deadline - time.monotonic())
        client = EventHubProducerClient(
            fully_qualified_namespace=self.namespace, eventhub_name=self.eventhub_name,
            credential=_AsyncCredential(self.credential),
            retry_total=2, retry_backoff_factor=0.5, retry_backoff_max=2, auth_timeout=budget,
            **self.client_kwargs)
        too_big: list[int] = []

        async def send(batch) -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the time for publishing is up")
            await client.send_batch(batch, timeout=left)
            with lock:
                progress.sent += len(batch)
                progress.batches += 1

        async with client:
            try:
                batch = await client.create_batch()
                for body in bodies:
                    try:
                        batch.add(EventData(body))
                        continue
                    except ValueError:  # the batch is full (or this one event is over the hub's limit)
                        pass
                    if len(batch):
                        await send(batch)
                        batch = await client.create_batch()
                    try:
                        batch.add(EventData(body))
                    except ValueError:
                        too_big.append(len(body))
                if len(batch):
                    await send(batch)
            except asyncio.CancelledError:
                await _close_half_open(client)
                raise
        if too_big:
            with lock:
                progress.error = (f"{len(too_big)} event(s) over the hub's maximum message size "
                                  f"({max(too_big)} bytes) not sent")


async def _close_half_open(client) -> None:
    """Close the AMQP connection of a producer cancelled while it was opening. azure-eventhub 5.15's
    ``close_async`` of a handler with no session yet returns early (``_pyamqp/aio/_client_async.py``) and
    leaves the connection, and its socket, to the garbage collector. Best effort over the SDK's private
    attributes (looked up with ``getattr``: a later SDK without them is left to its own ``close``), bounded to 1 s."""
    import asyncio

    for producer in list((getattr(client, "_producers", None) or {}).values()):
        handler = getattr(producer, "_handler", None)
        connection = getattr(handler, "_connection", None)
        if connection is None or getattr(handler, "_session", True) is not None \
                or getattr(handler, "_external_connection", False):
            continue
        try:
            await asyncio.wait_for(connection.close(), 1.0)
        except Exception as exc:  # noqa: BLE001 - closing after a timeout; the result already says why
            log.debug("closing a half-open Event Hubs connection: %s", _describe(exc))


class _AsyncCredential:
    """A sync ``TokenCredential`` as the ``AsyncTokenCredential`` the async client awaits: ``get_token`` runs
    on a thread (azure-identity's sync credentials bound their own requests). The wrapped credential is the
    caller's: :meth:`close` leaves it open."""

    def __init__(self, credential):
        self._credential = credential

    async def get_token(self, *scopes, **kwargs):
        import asyncio

        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        pass


def _describe(exc: BaseException) -> str:
    """``Class: first line of the message``, at most 300 characters (SDK messages carry no token)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
