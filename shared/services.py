"""Process-wide providers of the peers a Function talks to (Key Vault, storage, credentials, the
cluster registry, the Event Hub the app publishes its own events to).

In Azure each is built once per process from app settings with the Function's managed identity
(cold start: nothing is built until first use). A local run or a test swaps a provider's factory
for one wired to local peers (``set_keyvault_factory`` and friends); the code under test is still
the real client code, only the endpoint and credential differ.
"""

from __future__ import annotations

import threading
from typing import Callable


class _Provider:
    """A lazily built singleton with a replaceable factory."""

    def __init__(self, default: Callable[[], object]):
        self._default = default
        self._factory: Callable[[], object] | None = None
        self._value: object | None = None
        self._lock = threading.Lock()

    def set_factory(self, factory: Callable[[], object] | None) -> None:
        with self._lock:
            self._factory = factory
            self._value = None

    def get(self):
        with self._lock:
            if self._value is None:
                self._value = (self._factory or self._default)()
            return self._value


def _default_keyvault():
    from .ports.azure.keyvault import KeyVault

    return KeyVault.from_settings()


def _default_storage():
    from .notify.storage import Storage

    return Storage.from_settings()


def _default_registry():
    from .rotation.registry import Registry

    return Registry.from_settings()


def _default_eventhub_publisher():
    from .ports.azure.eventhub import EventHubPublisher

    return EventHubPublisher.from_settings()


def _default_fleet_store():
    from .fleet.store import OperationStore

    return OperationStore.from_settings()


def _default_work_queue():
    from .ports.azure.queue import WorkQueue

    return WorkQueue.from_settings()


def _default_credential():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _default_aks():
    from .ports.azure.aks import AksClient

    return AksClient.from_settings(credential())


def _default_aks_token():
    from .ports.azure.aks import TokenProvider

    return TokenProvider(credential())


def _default_msi():
    from .ports.azure.msi import MsiClient

    return MsiClient.from_settings(credential())


_keyvault = _Provider(_default_keyvault)
_storage = _Provider(_default_storage)
_registry = _Provider(_default_registry)
_credential = _Provider(_default_credential)
_fleet_store = _Provider(_default_fleet_store)
_work_queue = _Provider(_default_work_queue)
_devops_credential = _Provider(_default_credential)
_fleet_store = _Provider(_default_fleet_store)
_work_queue = _Provider(_default_work_queue)
_aks = _Provider(_default_aks)
_aks_token = _Provider(_default_aks_token)
_msi = _Provider(_default_msi)
_eventhub_publisher = _Provider(_default_eventhub_publisher)


def keyvault():
    """The shared :class:`shared.ports.azure.keyvault.KeyVault` (app setting ``KEY_VAULT_URL``)."""
    return _keyvault.get()


def set_keyvault_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the Key Vault client (None restores the app-settings default)."""
    _keyvault.set_factory(factory)


def storage():
    """The shared :class:`shared.notify.storage.Storage` (Table + Blob clients for the forwarder)."""
    return _storage.get()


def set_storage_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the notification storage (None restores the app-settings default)."""
    _storage.set_factory(factory)


def registry():
    """The shared :class:`shared.rotation.registry.Registry` (the cluster registry on Azure Table storage)."""
    return _registry.get()


def set_registry_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the cluster registry (None restores the app-settings default)."""
    _registry.set_factory(factory)


def fleet_store():
    """The shared :class:`shared.fleet.store.OperationStore` (app setting ``FLEET_TABLE``)."""
    return _fleet_store.get()


def set_fleet_store_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the fleet's table store (None restores the app-settings default)."""
    _fleet_store.set_factory(factory)


def work_queue():
    """The shared :class:`shared.ports.azure.queue.WorkQueue` of fleet work items (``FLEET_QUEUE``)."""
    return _work_queue.get()


def set_work_queue_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the fleet's work queue (None restores the app-settings default)."""
    _work_queue.set_factory(factory)


def credential():
    """A ``TokenCredential`` (the Function's managed identity through ``DefaultAzureCredential``;
    ``AZURE_CLIENT_ID`` selects a user-assigned one) used by :mod:`shared.rotation` to mint tokens for
    Azure DevOps (``499b84ac-1321-427f-aa17-267ca6975798/.default``) and Event Hubs
    (``https://eventhubs.azure.net/.default``)."""
    return _credential.get()


def set_credential_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` for the rotation's token credential (None restores ``DefaultAzureCredential``).
    The ARM client and the AKS token provider built on it are rebuilt on next use."""
    _credential.set_factory(factory)
    _aks.set_factory(None)
    _aks_token.set_factory(None)
    _msi.set_factory(None)


def aks():
    """The shared :class:`shared.ports.azure.aks.AksClient` (ARM with :func:`credential`; app settings
    ``AZURE_RESOURCE_MANAGER_ENDPOINT``, ``AKS_ENDPOINT_CACHE_SECONDS``): one endpoint cache per process."""
    return _aks.get()


def set_aks_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the ARM client for AKS (None restores the app-settings default)."""
    _aks.set_factory(factory)


def aks_token_provider():
    """The shared :class:`shared.ports.azure.aks.TokenProvider`: Entra ID tokens of :func:`credential` for
    the AKS server application (``6dae42f8-4368-4678-94ff-3960e28e3630/.default``)."""
    return _aks_token.get()


def msi():
    """The shared :class:`shared.ports.azure.msi.MsiClient` (ARM with :func:`credential`; app setting
    ``AZURE_RESOURCE_MANAGER_ENDPOINT``): user-assigned identities and their federated identity credentials."""
    return _msi.get()


def set_msi_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the ARM client for managed identities (None restores the default)."""
    _msi.set_factory(factory)


def devops_credential():
    """A ``TokenCredential`` for Azure DevOps REST calls of the forwarder (managed identity)."""
    return _devops_credential.get()


def set_devops_credential_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` for the Azure DevOps token credential (None restores ``DefaultAzureCredential``)."""
    _devops_credential.set_factory(factory)


def eventhub_publisher():
    """The :class:`shared.ports.azure.eventhub.EventHubPublisher` for the app's own events (app settings
    ``NOTIFY_EVENTHUB__fullyQualifiedNamespace``, ``NOTIFY_EVENTHUB_NAME``), or None when publishing is off.
    Raises ``SettingError`` for an invalid setting."""
    return _eventhub_publisher.get()


def set_eventhub_publisher_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the app-event publisher (None restores the app-settings default)."""
    _eventhub_publisher.set_factory(factory)

