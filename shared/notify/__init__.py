"""Forwarding of Flux notification events (issue #3): Event Hub / generic-hmac HTTP in, Azure DevOps
commit statuses, Teams, Slack and webhooks out, with dedupe, retries and dead letters.

Modules: :mod:`.events` (decode), :mod:`.routing` (config and Alert semantics), :mod:`.targets`
(payloads, one send), :mod:`.delivery` (batch, retries), :mod:`.dedupe` (Table), :mod:`.deadletter`
(Blob), :mod:`.storage` (clients). :func:`forwarder` builds the process-wide instance from app settings:

- ``NOTIFY_ROUTING`` (required): routing file path, or ``blob:<container>/<name>`` in the storage account;
- ``NOTIFY_DEDUPE_TABLE`` (``fluxnotifydedupe``), ``NOTIFY_DEADLETTER_CONTAINER`` (``flux-notify-deadletter``);
- storage as :class:`.storage.Storage.from_settings`, delivery tunables as
  :class:`.delivery.DeliverySettings.from_env`; secrets from ``shared.services.keyvault()``.

An invalid routing file raises :class:`.routing.RoutingConfigError` on the first invocation of the
process (every invocation fails, loudly, naming the entry, until it is fixed: Event Hub keeps the batch).
"""

from __future__ import annotations

import os
import threading
from typing import Mapping

_lock = threading.Lock()
_forwarder = None


def build_forwarder(environ: Mapping[str, str] = os.environ):
    """A new :class:`.delivery.Forwarder` wired from app settings and ``shared.services``."""
    from shared import errors, services

    from .deadletter import DeadLetterStore
    from .dedupe import TableDedupeStore
    from .delivery import DeliverySettings, Forwarder
    from .routing import load_routing
    from .storage import _session
    from .targets import SecretCache, Sender

    location = (environ.get("NOTIFY_ROUTING") or "").strip()
    if not location:
        raise errors.SettingError("NOTIFY_ROUTING", "app setting is missing: a routing file path or blob:<container>/<name>")
    settings = DeliverySettings.from_env(environ)
    storage = services.storage()
    config = load_routing(location, blob_reader=storage.read_blob)
    dedupe = TableDedupeStore(storage.table_client(environ.get("NOTIFY_DEDUPE_TABLE") or "fluxnotifydedupe"),
                              window=config.dedupe_window)
    deadletters = DeadLetterStore(storage.container_client(
        environ.get("NOTIFY_DEADLETTER_CONTAINER") or "flux-notify-deadletter"))
    dedupe.ensure_table()
    deadletters.ensure_container()
    sender = Sender(_session(settings.concurrency), SecretCache(services.keyvault, ttl=settings.secret_ttl),
                    devops_credential=services.devops_credential, pool_size=settings.concurrency)
    return Forwarder(config, sender, dedupe, deadletters, settings)


def forwarder():
    """The process-wide forwarder (built on first use; cold start stays light)."""
    global _forwarder
    with _lock:
        if _forwarder is None:
            _forwarder = build_forwarder()
        return _forwarder


def reset_forwarder() -> None:
    """Forget the process-wide forwarder (tests, or after changing the routing file)."""
    global _forwarder
    with _lock:
        old, _forwarder = _forwarder, None
    if old is not None:
        old.close()
