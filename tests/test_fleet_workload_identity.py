"""A fleet upgrade of a cluster bootstrapped on Microsoft Entra workload identity (issues 10 and 12):
the registry record keeps what the bootstrap rendered (``sourceProvider``, ``workloadIdentity`` with
its components, ``sops``), so the upgrade re-renders it exactly: gotk-sync.yaml keeps ``provider:
azure``, kustomization.yaml keeps the identity and decryption patches, no Secret appears in
flux-system, and the federated identity credentials are left as they are (read and found right,
never written again).

Peers as in tests/test_workload_identity.py (the ARM test server with the AKS cluster and the
user-assigned identity, the Kubernetes API test server in its Entra mode, the git server taking the
Function's Entra ID token) plus the fleet's table and work queue on Azurite; Flux's controllers are
played on the cluster (:mod:`tests.peers.flux_controllers`)."""

from __future__ import annotations

import json

import azure.functions as func

from shared.fleet.store import RUNNING
from tests.fleet_peers import GOLDEN, fleet_queue  # noqa: F401 - fixture
from tests.peers.flux_controllers import FluxControllers
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree
from tests.test_workload_identity import (CLIENT_ID, FOLDER, TENANT_ID, WI_CONTROLLERS, call, env,  # noqa: F401 - fixture
                                          expected_kustomization, fic_writes, request)

V283 = GOLDEN / "clickhouse_deployment-v2.8.3" / "gotk-components.yaml"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
V292_4 = GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml"


def test_a_workload_identity_cluster_is_upgraded_keeping_its_identity(functions_by_name, env, fleet_queue, monkeypatch):
    monkeypatch.setenv("FLUX_MANIFESTS", str(V283))
    status, body = call(functions_by_name, request(env, version="v2.8.3"))
    assert status == 200, body
    record = env.registry.get("aks-weu-1")
    assert record.git_auth == "workload-identity"
    assert record.install["sourceProvider"] == "azure" and record.install["sops"] == {"provider": "azure-keyvault"}
    recorded = dict(record.install["workloadIdentity"])
    assert recorded.pop("identityResourceId").lower() == env.identity.id.lower()  # in its canonical spelling
    assert recorded == {"clientId": CLIENT_ID, "tenantId": TENANT_ID, "components": WI_CONTROLLERS, "federate": True}
    controllers = FluxControllers(env.bare, [env.kube], kubeconfig=lambda s: s.kubeconfig(client_cert=True))
    controllers.reconcile()  # Flux has synced
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    fleet = fleet_queue(git=env.git, url=env.url, bare=env.bare, vault_server=env.vault, registry=env.registry)

    # fleet status reads its repository with the Function's Entra ID token
    req = func.HttpRequest("GET", "http://localhost/api/fleet/status", headers={}, params={}, body=b"")
    row = json.loads(fleet.functions["fleet_status"].get_user_function()(req).get_body())["clusters"][0]
    assert row["git"]["fluxVersion"] == "v2.8.3" and row["state"] == "ready", row

    tree_before = read_tree(env.bare, "main")
    commits = git_log(env.bare, "main")
    fics, fic_count = env.identity.credentials(), len(fic_writes(env.arm))
    controllers.start()
    try:
        resp, payload = fleet.http("fleet_upgrade", "POST", "/api/fleet/upgrade",
                                   {"version": "v2.9.2", "clusters": ["aks-weu-1"], "timeout": "60s"})
        assert resp.status_code == 202, payload
        fleet.listener().drain(lambda: fleet.store.get(payload["id"]).state != RUNNING, timeout=120)
        op = fleet.operation(payload["id"])
        assert op["state"] == "succeeded", [(c["name"], c["error"]) for c in op["clusters"]]
        result = op["clusters"][0]["result"]
        assert (result["fromVersion"], result["toVersion"]) == ("v2.8.3", "v2.9.2")
        assert result["health"]["images"]["status"] == "ready"
    finally:
        controllers.stop()

    # Git: one commit, the components only; provider azure and the patches kept
    tree = read_tree(env.bare, "main")
    assert [c["message"].strip() for c in git_log(env.bare, "main")] == \
        ["Add Flux v2.9.2 component manifests"] + [c["message"].strip() for c in commits]
    assert tree[f"{FOLDER}/gotk-components.yaml"] == V292_4.read_bytes()
    assert tree[f"{FOLDER}/gotk-sync.yaml"] == tree_before[f"{FOLDER}/gotk-sync.yaml"]
    assert "  provider: azure\n" in tree[f"{FOLDER}/gotk-sync.yaml"].decode()
    assert tree[f"{FOLDER}/kustomization.yaml"].decode() == expected_kustomization()
    assert any(r.user == "<bearer>" and "git-receive-pack" in r.path for r in env.git.requests)
    assert not any(r.user not in (None, "<bearer>") for r in env.git.requests)  # no PAT, ever
    assert [r for r in env.vault.request_log if "/secrets/" in r.path] == []

    # the cluster: new controllers with their identity, still no Secret, the same federated credentials
    for name in WI_CONTROLLERS:
        sa = env.kube.get_object("v1", "ServiceAccount", name, "flux-system")
        assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": CLIENT_ID,
                                                 "azure.workload.identity/tenant-id": TENANT_ID}, name
        dep = env.kube.get_object("apps/v1", "Deployment", name, "flux-system")
        assert dep["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true", name
    assert env.kube.get_object("apps/v1", "Deployment", "source-controller", "flux-system")["spec"]["template"]["spec"][
        "containers"][0]["image"] == result["health"]["images"]["components"]["source-controller"]["expected"][0]
    assert env.kube.objects("v1", "Secret", "flux-system") == []
    repo = env.kube.get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["spec"]["provider"] == "azure" and "secretRef" not in repo["spec"]
    assert len(fic_writes(env.arm)) == fic_count and env.identity.credentials() == fics
    assert env.registry.get("aks-weu-1").install["version"] == "v2.9.2"


def test_a_fleet_is_bootstrapped_on_workload_identity_without_any_secret(functions_by_name, env, fleet_queue, arm_server):
    """``POST /api/fleet/bootstrap`` with ``sourceProvider: azure`` and one ``workloadIdentity`` for two AKS
    clusters: no PAT is asked for (none exists), each cluster gets its commits with ``provider: azure``
    and the identity patches, its federated credentials, its annotated controllers and no Secret, and
    is registered in the workload-identity mode."""
    from tests.peers.entra_tokens import DEFAULT_OID
    from tests.peers.kube_api import KubeApiServer

    second = KubeApiServer().start()
    try:
        second.enable_entra()
        second.bind(DEFAULT_OID, "cluster-admin")
        mc2 = arm_server.add_cluster("aks-weu-2", kube=second)
        fleet = fleet_queue(git=env.git, url=env.url, bare=env.bare, vault_server=env.vault, registry=env.registry)
        shared = {k: v for k, v in request(env).items() if k not in ("path", "clusterResourceId")}
        resp, accepted = fleet.post_bootstrap({**shared, "timeout": "0s", "clusters": [
            {"path": "clusters/aks-weu-1", "clusterResourceId": env.mc.id},
            {"path": "clusters/aks-weu-2", "clusterResourceId": mc2.id}]})
        assert resp.status_code == 202, accepted
        fleet.listener().drain(lambda: fleet.store.get(accepted["id"]).state != RUNNING, timeout=120)
        op = fleet.operation(accepted["id"])
        assert op["state"] == "succeeded", [(c["name"], c["error"]) for c in op["clusters"]]

        # Git: each cluster's two commits, pushed with the Function's Entra ID token; no PAT anywhere
        messages = sorted(c["message"].strip() for c in git_log(env.bare, "main"))
        assert messages == sorted(["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"] * 2)
        tree = read_tree(env.bare, "main")
        for name in ("aks-weu-1", "aks-weu-2"):
            sync_text = tree[f"clusters/{name}/flux-system/gotk-sync.yaml"].decode()
            assert "  provider: azure\n" in sync_text and "secretRef" not in sync_text
            assert f"path: ./clusters/{name}\n" in sync_text
            assert tree[f"clusters/{name}/flux-system/kustomization.yaml"].decode() == expected_kustomization()
        assert any(r.user == "<bearer>" and "git-receive-pack" in r.path for r in env.git.requests)
        assert not any(r.user not in (None, "<bearer>") for r in env.git.requests)
        assert [r for r in env.vault.request_log if "/secrets/" in r.path] == []

        # the clusters: the controllers carry the identity, no Secret; one federated credential per
        # controller and cluster, each trusting its cluster's issuer
        for kube in (env.kube, second):
            for name in WI_CONTROLLERS:
                sa = kube.get_object("v1", "ServiceAccount", name, "flux-system")
                assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == CLIENT_ID, name
            assert kube.objects("v1", "Secret", "flux-system") == []
            repo = kube.get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
            assert repo["spec"]["provider"] == "azure" and "secretRef" not in repo["spec"]
        fics = env.identity.credentials()
        assert sorted(f["subject"] for f in fics) == sorted(f"system:serviceaccount:flux-system:{c}"
                                                            for c in WI_CONTROLLERS * 2)
        assert len({f["issuer"] for f in fics}) == 2

        # the registry: both in the workload-identity mode, with what an upgrade renders again
        for name in ("aks-weu-1", "aks-weu-2"):
            record = env.registry.get(name)
            assert (record.git_auth, record.pat_secret) == ("workload-identity", None), name
            assert record.install["sourceProvider"] == "azure" and record.install["workloadIdentity"]["clientId"] == CLIENT_ID
    finally:
        second.stop()
