"""Process-wide providers of the peers a Function talks to (Key Vault, clusters).

In Azure they are built from app settings with the Function's managed identity. A local run or a
test swaps a provider for one wired to local peers (``set_keyvault_factory``); the code under test
is still the real client code, only the endpoint and credential differ.
"""

from __future__ import annotations

import threading
from typing import Callable

_lock = threading.Lock()
_keyvault = None
_keyvault_factory: Callable[[], object] | None = None


def set_keyvault_factory(factory: Callable[[], object] | None) -> None:
    """Use ``factory()`` to build the Key Vault client (None restores the app-settings default)."""
    global _keyvault, _keyvault_factory
    with _lock:
        _keyvault_factory = factory
        _keyvault = None


def keyvault():
    """The shared :class:`shared.keyvault.KeyVault` (built once per process: cold start)."""
    global _keyvault
    with _lock:
        if _keyvault is None:
            if _keyvault_factory is not None:
                _keyvault = _keyvault_factory()
            else:
                from .keyvault import KeyVault

                _keyvault = KeyVault.from_settings()
        return _keyvault


def cluster_from_kubeconfig(kubeconfig: str, context: str | None = None):
    """A :class:`shared.kube.Cluster` for a kubeconfig held in Key Vault."""
    from .kube import Cluster

    return Cluster.from_kubeconfig(kubeconfig, context=context)
