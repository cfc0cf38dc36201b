"""Fixtures of the fleet tests: the Functions storage account on Azurite (work queue, poison queue,
fleet table, registry), one Azure DevOps-style git repository for the whole fleet, the Key Vault test
server holding the PAT and one kubeconfig per cluster, and as many Kubernetes API test servers as a
test asks for; helpers to call the indexed functions as the host would."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import azure.functions as func
import pytest

from shared import services

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"


class Fleet:
    """What a fleet test works with (see :func:`fleet`)."""

    def __init__(self, *, azurite, git, url, bare, vault_server, store, queue, queue_name, registry, pat, functions):
        self.azurite, self.git, self.url, self.bare = azurite, git, url, bare
        self.vault_server, self.store, self.queue, self.queue_name = vault_server, store, queue, queue_name
        self.registry, self.pat, self.functions = registry, pat, functions
        self.servers: list = []

    # -- clusters ---------------------------------------------------------------------------------

    def add_clusters(self, n: int, *, latency: float = 0.0) -> list[dict]:
        """Start ``n`` Kubernetes API test servers, store their kubeconfigs in the vault, and return
        the ``clusters`` entries of a fleet request (``clusters/c00`` ...)."""
        from tests.peers.kube_api import KubeApiServer

        out = []
        for _ in range(n):
            i = len(self.servers)
            server = KubeApiServer().start()
            server.latency = latency
            self.servers.append(server)
            self.vault_server.seed_kubeconfig(f"c{i:02d}-kubeconfig", server.kubeconfig())
            out.append({"path": f"clusters/c{i:02d}", "kubeconfigSecret": f"c{i:02d}-kubeconfig"})
        return out

    def request(self, clusters: list[dict], **shared) -> dict:
        body = {"url": self.url, "branch": "main", "allowInsecureHttp": True, "passwordSecret": "fleet-pat",
                "timeout": "0s", "clusters": clusters}
        body.update(shared)
        return body

    # -- the functions, as the host calls them -------------------------------------------------------

    def http(self, name: str, method: str, url: str, body=None, headers=None, route_params=None):
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = func.HttpRequest(method, f"http://localhost{url}", headers={"Content-Type": "application/json", **(headers or {})},
                               body=raw, route_params=route_params or {})
        resp = self.functions[name].get_user_function()(req)
        payload = json.loads(resp.get_body()) if resp.mimetype == "application/json" and resp.get_body() else None
        return resp, payload

    def post_bootstrap(self, body, headers=None):
        return self.http("fleet_bootstrap", "POST", "/api/fleet/bootstrap", body, headers)

    def operation(self, op_id: str) -> dict:
        resp, body = self.http("operation_status", "GET", f"/api/operations/{op_id}", route_params={"id": op_id})
        assert resp.status_code == 200, body
        return body

    def listener(self, **kw):
        """A :class:`tests.peers.functions_host.QueueListener` for the worker on the work queue."""
        from azure.storage.queue import QueueClient

        from tests.peers.functions_host import QueueListener

        conn = self.azurite.connection_string
        queue = QueueClient.from_connection_string(conn, self.queue_name)
        poison = QueueClient.from_connection_string(conn, f"{self.queue_name}-poison")
        for q in (queue, poison):
            try:
                q.create_queue()
            except Exception:  # noqa: BLE001 - exists
                pass
        kw.setdefault("visibility_timeout", 0)
        return QueueListener(self.functions["fleet_worker"].get_user_function(), queue, poison, **kw)

    def poison_listener(self, **kw):
        from azure.storage.queue import QueueClient

        from tests.peers.functions_host import QueueListener

        conn = self.azurite.connection_string
        poison = QueueClient.from_connection_string(conn, f"{self.queue_name}-poison")
        dead = QueueClient.from_connection_string(conn, f"{self.queue_name}-poison-poison")
        try:
            dead.create_queue()
        except Exception:  # noqa: BLE001
            pass
        kw.setdefault("visibility_timeout", 0)
        return QueueListener(self.functions["fleet_poison"].get_user_function(), poison, dead, **kw)

    def queued(self) -> int:
        from azure.storage.queue import QueueClient

        q = QueueClient.from_connection_string(self.azurite.connection_string, self.queue_name)
        try:
            return q.get_queue_properties().approximate_message_count
        except Exception:  # noqa: BLE001 - not created: nothing was ever queued
            return 0

    def close(self) -> None:
        for s in self.servers:
            s.stop()


@pytest.fixture
def fleet(azurite, ado_git_server, git_pat, keyvault_server, keyvault, functions_by_name, monkeypatch):
    """A fleet test's world (:class:`Fleet`): every service of the app wired to the local peers, a
    fresh fleet table, work queue and registry table on the session's Azurite."""
    from shared.fleet.store import OperationStore
    from shared.ports.azure.queue import WorkQueue
    from shared.rotation.registry import Registry

    suffix = uuid.uuid4().hex[:10]
    conn = azurite.connection_string
    store = OperationStore.from_connection_string(conn, f"fleet{suffix}")
    queue_name = f"fleet-{suffix}"
    queue = WorkQueue.from_connection_string(conn, queue_name)
    registry = Registry.from_connection_string(conn, f"reg{suffix}")
    ado_git_server.create_repo("contoso", "platform", "fleet")
    url = ado_git_server.url("contoso", "platform", "fleet")
    keyvault_server.seed_pat("fleet-pat", git_pat, url.split("/platform/")[0] + "/")
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    monkeypatch.setenv("FLEET_QUEUE", queue_name)
    services.set_keyvault_factory(lambda: keyvault)
    services.set_fleet_store_factory(lambda: store)
    services.set_work_queue_factory(lambda: queue)
    services.set_registry_factory(lambda: registry)
    world = Fleet(azurite=azurite, git=ado_git_server, url=url, bare=ado_git_server.bare_path("contoso", "platform", "fleet"),
                  vault_server=keyvault_server, store=store, queue=queue, queue_name=queue_name, registry=registry,
                  pat=git_pat, functions=functions_by_name)
    try:
        yield world
    finally:
        world.close()
        for setter in (services.set_keyvault_factory, services.set_fleet_store_factory,
                       services.set_work_queue_factory, services.set_registry_factory):
            setter(None)
        store.close()
        queue.close()
        registry.close()


@pytest.fixture
def fleet_queue(azurite, functions_by_name, monkeypatch):
    """The fleet's own storage alone (a fresh fleet table and work queue on the session's Azurite, wired
    into :mod:`shared.services`), for tests whose repository, vault, registry and clusters come from
    other fixtures: ``fleet_queue(git=..., url=..., bare=..., vault_server=..., registry=...)`` returns
    the :class:`Fleet` over them (its ``http``, ``operation`` and ``listener`` helpers)."""
    from shared.fleet.store import OperationStore
    from shared.ports.azure.queue import WorkQueue

    suffix = uuid.uuid4().hex[:10]
    store = OperationStore.from_connection_string(azurite.connection_string, f"fleet{suffix}")
    queue_name = f"fleet-{suffix}"
    queue = WorkQueue.from_connection_string(azurite.connection_string, queue_name)
    monkeypatch.setenv("FLEET_QUEUE", queue_name)
    services.set_fleet_store_factory(lambda: store)
    services.set_work_queue_factory(lambda: queue)

    def make(*, git, url, bare, vault_server, registry, pat=None) -> Fleet:
        return Fleet(azurite=azurite, git=git, url=url, bare=bare, vault_server=vault_server, store=store, queue=queue,
                     queue_name=queue_name, registry=registry, pat=pat, functions=functions_by_name)

    try:
        yield make
    finally:
        services.set_fleet_store_factory(None)
        services.set_work_queue_factory(None)
        store.close()
        queue.close()
