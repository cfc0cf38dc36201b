"""End to end: clusters named by their AKS resource ID, reached with the Function's managed identity.

Peers on 127.0.0.1: the ARM test server (through the real ContainerServiceClient), the Kubernetes API
test server in its Entra ID mode (only tokens of the token peer for the AKS server application), the
git server, the Key Vault test server and Azurite (registry). The bootstrap goes through the indexed
HTTP trigger and through the CLI in a subprocess (DefaultAzureCredential over the managed identity
endpoint peer); rotation through the timer's code and the registry's PUT endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func
import pytest
import yaml

from shared import rotation, services
from shared.ports.azure.aks import AksClient
from shared.ports.kube import Cluster
from shared.rotation import RotationSettings, digest
from shared.rotation.registry import Registry
from tests.peers.entra_tokens import AKS_SERVER_APP_ID, DEFAULT_OID, JwtTestCredential, ManagedIdentityEndpoint
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
KUBELOGIN = "kubelogin"


@dataclass
class Env:
    url: str
    bare: Path
    git: object
    pat: str
    vault: object
    arm: object
    kube: object
    mc: object  # tests.peers.arm.ManagedCluster
    cred: JwtTestCredential
    aks: AksClient
    registry: Registry

    @property
    def rid(self) -> str:
        return self.mc.id

    def admin(self) -> Cluster:
        """The test's own view of the cluster (a local admin certificate), for assertions."""
        return Cluster.from_kubeconfig(self.kube.kubeconfig(client_cert=True))


@pytest.fixture
def env(ado_git_server, git_pat, keyvault_server, keyvault, kube_server, arm_server, azurite, monkeypatch):
    ado_git_server.create_repo("contoso", "platform", "fleet")
    keyvault_server.seed_pat("fleet-pat", git_pat, _org(ado_git_server.url("contoso", "platform", "fleet")))
    kube_server.enable_entra()
    kube_server.bind(DEFAULT_OID, "cluster-admin")
    mc = arm_server.add_cluster("aks-weu-1", kube=kube_server)
    cred = JwtTestCredential()
    registry = Registry.from_connection_string(azurite.connection_string, f"reg{uuid.uuid4().hex[:12]}")
    aks = AksClient(cred, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    services.set_keyvault_factory(lambda: keyvault)
    services.set_registry_factory(lambda: registry)
    services.set_credential_factory(lambda: cred)
    services.set_aks_factory(lambda: aks)
    try:
        yield Env(ado_git_server.url("contoso", "platform", "fleet"), ado_git_server.bare_path("contoso", "platform", "fleet"),
                  ado_git_server, git_pat, keyvault_server, arm_server, kube_server, mc, cred, aks, registry)
    finally:
        for reset in (services.set_keyvault_factory, services.set_registry_factory, services.set_credential_factory,
                      services.set_aks_factory):
            reset(None)
        aks.close()
        registry.close()


def _org(url: str) -> str:
    """The URL prefix the PAT is tagged with (flux-git-url-prefixes): the organisation."""
    return url.split("/platform/")[0] + "/"


def call(functions_by_name, body) -> tuple[int, dict]:
    req = func.HttpRequest("POST", "http://localhost/api/bootstrap", headers={"Content-Type": "application/json"},
                           body=json.dumps(body).encode())
    resp = functions_by_name["bootstrap"].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body())


def request(env: Env, **overrides) -> dict:
    body = {"url": env.url, "path": "clusters/aks-weu-1", "allowInsecureHttp": True, "passwordSecret": "fleet-pat",
            "clusterResourceId": env.rid}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def kube_writes(kube) -> list:
    """Writes that persisted (server-side dry runs excluded)."""
    return [r for r, q in zip(kube.request_log, kube.request_queries) if r.method != "GET" and q.get("dryRun") != "All"]


def assert_nothing_written(env: Env) -> None:
    assert git_log(env.bare, "main") == []
    assert kube_writes(env.kube) == []
    assert env.kube.get_object("v1", "Namespace", "flux-system") is None


# -- bootstrap through the HTTP trigger --------------------------------------------------------------


def test_bootstrap_by_cluster_resource_id(functions_by_name, env, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    # ARM IDs are case-insensitive: a differently cased ID names the same cluster
    shouted = env.rid.replace("resourcegroups/rg-fleet", "resourceGroups/RG-FLEET")
    status, body = call(functions_by_name, request(env, clusterResourceId=shouted))
    assert status == 200, body
    assert [c["message"] for c in body["repository"]["commits"]] == ["Add Flux v2.9.2 component manifests",
                                                                    "Add Flux sync manifests"]
    # every Kubernetes call of the run carried the identity's token for the AKS server application
    assert set(env.kube.entra_callers) == {DEFAULT_OID} and len(env.kube.entra_callers) == len(env.kube.request_log)
    tree = read_tree(env.bare, "main")
    assert tree["clusters/aks-weu-1/flux-system/gotk-components.yaml"] == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()
    with env.admin() as c:
        assert c.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")["spec"]["url"] == env.url
        assert c.read_secret_data("flux-system", "flux-system")["password"] == env.pat
        assert c.get("apps/v1", "Deployment", "source-controller", "flux-system") is not None

    # two ARM round trips (GET, listClusterUserCredential)
    assert [(r.method, r.action, r.status) for r in env.arm.request_log] == [
        ("GET", "read", 200), ("POST", "listclusterusercredential", 200)]
    assert env.cred.scopes_asked(f"{AKS_SERVER_APP_ID}/.default") >= 1

    # registered for rotation by resource ID (canonical spelling), no kubeconfig secret
    assert body["registry"] == {"status": "registered", "cluster": "aks-weu-1"}
    record = env.registry.get("aks-weu-1")
    assert record.cluster_resource_id == str(env.aks.endpoint(record.cluster_ref.resource_id).resource_id)
    assert record.kubeconfig_secret is None and record.to_dict()["clusterResourceId"].endswith("/managedClusters/aks-weu-1")

    # a re-run within the process: no ARM call (endpoint + CA cached), no commit, nothing changed
    before = env.arm.count()
    status, again = call(functions_by_name, request(env))
    assert status == 200, again
    assert env.arm.count() == before and again["repository"]["commits"] == []
    assert again["cluster"]["created"] == 0 and again["cluster"]["configured"] == 0
    assert env.pat not in caplog.text and not any(t in caplog.text for t in env.cred.issued)


def test_bootstrap_with_local_accounts_on_a_cluster_without_entra(functions_by_name, env):
    env.mc.entra = False
    status, body = call(functions_by_name, request(env))
    assert status == 409, body
    assert body["error"]["code"] == "Conflict" and body["error"]["field"] == "clusterResourceId"
    assert "no Microsoft Entra ID integration (properties.aadProfile is absent)" in body["error"]["message"]
    assert_nothing_written(env)

    status, body = call(functions_by_name, request(env, localAccounts=True))
    assert status == 200, body
    assert env.arm.count("listclusteradmincredential") == 1 and env.arm.count("listclusterusercredential") == 0
    assert env.kube.entra_callers == []  # the admin client certificate, not a token
    assert env.registry.get("aks-weu-1").local_accounts is True


def test_private_cluster_is_bootstrapped_at_its_private_fqdn(functions_by_name, env):
    env.mc.private, env.mc.private_fqdn = True, "localhost"
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert env.aks.endpoint(env.registry.get("aks-weu-1").cluster_ref.resource_id).server.startswith("https://localhost:")


def test_kubelogin_form_kubeconfig_secret_is_served_by_the_managed_identity(functions_by_name, env, tmp_path, monkeypatch):
    """What `az aks get-credentials` writes (an exec user running kubelogin, here in devicecode mode) is
    stored in Key Vault: the bootstrap uses the identity's AKS token, and kubelogin never runs."""
    from azure.mgmt.containerservice import ContainerServiceClient

    marker = tmp_path / "KUBELOGIN-RAN"
    fake = tmp_path / "bin" / KUBELOGIN
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    client = ContainerServiceClient(env.cred, env.mc.subscription, base_url=env.arm.url, connection_verify=env.arm.ca_file)
    kubeconfig = client.managed_clusters.list_cluster_user_credentials("rg-fleet", "aks-weu-1").kubeconfigs[0].value.decode()
    client.close()
    assert yaml.safe_load(kubeconfig)["users"][0]["user"]["exec"]["command"] == KUBELOGIN
    env.vault.seed_kubeconfig("aks-weu-1-kubeconfig", kubeconfig)
    env.arm.request_log.clear()

    status, body = call(functions_by_name, request(env, clusterResourceId=None, kubeconfigSecret="aks-weu-1-kubeconfig"))
    assert status == 200, body
    assert not marker.exists() and env.arm.count() == 0
    assert set(env.kube.entra_callers) == {DEFAULT_OID} and env.kube.entra_callers
    assert env.registry.get("aks-weu-1").kubeconfig_secret == "aks-weu-1-kubeconfig"

    # the legacy azure auth-provider form too; a kubelogin user for another server application is refused
    other = yaml.safe_load(kubeconfig)
    other["users"][0]["user"]["exec"]["args"][4] = "11111111-0000-0000-0000-000000000000"
    env.vault.seed_kubeconfig("other-kubeconfig", yaml.safe_dump(other))
    env.kube.request_log.clear()
    status, body = call(functions_by_name, request(env, clusterResourceId=None, kubeconfigSecret="other-kubeconfig"))
    assert status == 400 and body["error"]["field"] == "kubeconfigSecret", body
    assert "only the AKS Entra server application" in body["error"]["message"] and not marker.exists()


# -- failures: status, field, message, and nothing written -------------------------------------------------


def _case_malformed(env):
    return {"clusterResourceId": "/subscriptions/abc/resourceGroups/rg"}, (400, "InvalidInput", "clusterResourceId",
                                                                          "is not the resource ID of an AKS cluster")


def _case_both(env):
    return {"kubeconfigSecret": "aks-weu-1-kubeconfig"}, (400, "InvalidInput", "clusterResourceId",
                                                         "either clusterResourceId or kubeconfigSecret, not both")


def _case_not_found(env):
    return {"clusterResourceId": env.rid.replace("aks-weu-1", "aks-gone")}, (
        400, "InvalidInput", "clusterResourceId", "not found: The Resource 'Microsoft.ContainerService/managedClusters/aks-gone'")


def _case_no_group(env):
    return {"clusterResourceId": env.rid.replace("rg-fleet", "rg-gone")}, (
        400, "InvalidInput", "clusterResourceId", "Resource group 'rg-gone' could not be found. (ResourceGroupNotFound)")


def _case_forbidden(env):
    env.arm.forbid(env.mc, "listclusterusercredential")
    return {}, (502, "AuthenticationFailed", "clusterResourceId",
                "Azure Kubernetes Service Cluster User Role (4abbcc35-e782-43d8-92c5-2d3f1bd2253f)")


def _case_stopped(env):
    env.mc.power_state = "Stopped"
    return {}, (409, "Conflict", "clusterResourceId", "is stopped (powerState.code: Stopped)")


def _case_local_accounts_disabled(env):
    env.mc.disable_local_accounts = True
    return {"localAccounts": True}, (409, "Conflict", "localAccounts",
                                     "Getting static credential is not allowed because this cluster is set to disable local accounts.")


def _case_no_rbac_role(env):
    env.kube.entra_bindings.clear()  # the identity has no role on the cluster
    return {}, (502, "AuthenticationFailed", "clusterResourceId",
                "Azure Kubernetes Service RBAC Cluster Admin (b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b)")


def _case_reader_only(env):
    env.kube.entra_bindings.clear()
    env.kube.bind(DEFAULT_OID, "reader", "flux-system")
    return {}, (502, "AuthenticationFailed", "clusterResourceId", "User does not have access to the resource in Azure")


def _case_neither(env):
    return {"clusterResourceId": None}, (400, "InvalidInput", "clusterResourceId",
                                         "is required: the AKS cluster's resource ID (az aks show --query id), or kubeconfigSecret")


def _case_private_unreachable(env):
    env.mc.private, env.mc.private_fqdn = True, "localhost"
    env.kube.stop()
    return {}, (502, "UpstreamError", "clusterResourceId", "the Function needs VNet integration")


@pytest.mark.parametrize("case", [_case_malformed, _case_both, _case_not_found, _case_no_group, _case_forbidden,
                                  _case_stopped, _case_local_accounts_disabled, _case_no_rbac_role, _case_reader_only,
                                  _case_private_unreachable, _case_neither], ids=lambda c: c.__name__[6:])
def test_failures_answer_status_field_message_and_write_nothing(functions_by_name, env, case):
    overrides, (status, code, field, text) = case(env)
    got, body = call(functions_by_name, request(env, **overrides))
    assert got == status, body
    assert body["error"]["code"] == code and body["error"].get("field") == field, body
    assert text in body["error"]["message"], body["error"]["message"]
    assert git_log(env.bare, "main") == []
    if case is not _case_private_unreachable:
        assert kube_writes(env.kube) == []
    if case in (_case_malformed, _case_both, _case_neither):
        assert env.arm.request_log == []  # refused before any call
    if case is _case_reader_only:  # a reader of flux-system cannot even read the CRDs: the hint names the role to grant
        assert "Azure Kubernetes Service RBAC Cluster Admin (b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b)" in body["error"]["message"]
        refused = [r for r in env.kube.request_log if r.status == 403]
        assert refused and "/customresourcedefinitions/" in refused[0].path, env.kube.request_log
    if case in (_case_forbidden, _case_stopped, _case_not_found):
        assert env.kube.request_log == []  # stopped at ARM


# -- the CLI, as a user runs it -----------------------------------------------------------------------------


def test_cli_bootstrap_by_cluster_resource_id(env, tmp_path):
    """``python -m shared bootstrap git --cluster-resource-id ...`` in a subprocess: its
    DefaultAzureCredential gets tokens from the managed identity endpoint peer (as in App Service),
    ARM is the test server (AZURE_RESOURCE_MANAGER_ENDPOINT, CA via REQUESTS_CA_BUNDLE)."""
    with ManagedIdentityEndpoint() as mi:
        child_env = {k: v for k, v in os.environ.items()
                     if k not in ("FLUX_MANIFESTS", "GIT_PASSWORD") and not k.startswith(("AZURE_", "MSI_", "IDENTITY_"))}
        child_env.update(mi.env(), AZURE_RESOURCE_MANAGER_ENDPOINT=env.arm.url, REQUESTS_CA_BUNDLE=env.arm.ca_file,
                         GIT_PASSWORD=env.pat)
        args = [sys.executable, "-m", "shared", "bootstrap", "git", "--url", env.url, "--path", "clusters/aks-weu-1",
                "--token-auth", "--allow-insecure-http", "--manifests", str(V292), "--timeout", "0s",
                "--cluster-resource-id", env.rid]
        out = subprocess.run(args, cwd=ROOT, env=child_env, capture_output=True, timeout=180)
        err = out.stderr.decode()
        assert out.returncode == 0, err
        assert "✔ reconciled sync configuration" in err and env.pat not in err
        assert len(git_log(env.bare, "main")) == 2
        assert [(r.action, r.oid) for r in env.arm.request_log] == [("read", DEFAULT_OID), ("listclusterusercredential", DEFAULT_OID)]
        assert set(env.kube.entra_callers) == {DEFAULT_OID}
        assert ("https://management.azure.com", None) in mi.requests and (AKS_SERVER_APP_ID, None) in mi.requests

        # a failure is one ✗ line naming the flag
        bad = subprocess.run([*args[:-1], env.rid.replace("aks-weu-1", "aks-gone")], cwd=ROOT, env=child_env,
                             capture_output=True, timeout=180)
        lines = bad.stderr.decode().strip().splitlines()
        assert bad.returncode == 1 and lines[-1].startswith("✗ --cluster-resource-id: managed cluster "), lines
        malformed = subprocess.run([*args[:-1], "aks-weu-1"], cwd=ROOT, env=child_env, capture_output=True, timeout=180)
        lines = malformed.stderr.decode().strip().splitlines()
        assert malformed.returncode == 1 and lines == [lines[0]] and lines[0].startswith("✗ --cluster-resource-id: 'aks-weu-1' is not")


# -- rotation -------------------------------------------------------------------------------------------


def _put(functions_by_name, name: str, body: dict) -> tuple[int, dict]:
    req = func.HttpRequest("PUT", f"/api/registry/clusters/{name}", route_params={"name": name},
                           body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    resp = functions_by_name["registry_cluster"].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body())


def test_rotation_of_clusters_registered_by_resource_id(functions_by_name, env, monkeypatch):
    import secrets

    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    # a second record for the same cluster (another Flux namespace), registered by the PUT endpoint
    with env.admin() as c:
        c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-a"}}])
        repo = c.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
        c.apply([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                  "metadata": {"name": "flux-system", "namespace": "tenant-a"}, "spec": repo["spec"]}])
        c.reconcile_secret("tenant-a", "flux-system", {"username": "git", "password": env.pat})
    status, rec = _put(functions_by_name, "aks-weu-1-tenant-a", {
        "clusterResourceId": env.rid.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"), "namespace": "tenant-a",
        "patSecret": "fleet-pat", "allowInsecureHttp": True, "gitUrl": env.url})
    assert status == 201, rec
    assert rec["clusterResourceId"] == (f"/subscriptions/{env.mc.subscription}/resourceGroups/RG-FLEET/providers/"
                                        "Microsoft.ContainerService/managedClusters/AKS-WEU-1")  # canonical spelling
    status, bad = _put(functions_by_name, "x", {"clusterResourceId": "nope", "patSecret": "fleet-pat"})
    assert status == 400 and bad["error"]["field"] == "clusterResourceId"
    status, bad = _put(functions_by_name, "x", {"clusterResourceId": env.rid, "kubeconfigSecret": "k", "patSecret": "p"})
    assert status == 400 and bad["error"]["field"] == "clusterResourceId"

    new = secrets.token_urlsafe(32)
    env.vault.seed_pat("fleet-pat", new, _org(env.url))
    env.git.pat = new
    env.aks.cache_ttl = 0  # no process cache: the run's own memo makes the single read
    env.aks.invalidate(env.registry.get("aks-weu-1").cluster_ref.resource_id)
    env.arm.request_log.clear()
    settings = RotationSettings(concurrency=16)
    summary = rotation.rotate_all(settings=settings)
    d = summary.to_dict()
    assert (d["checked"], d["updated"], d["failed"]) == (2, 2, 0), d
    with env.admin() as c:
        for ns in ("flux-system", "tenant-a"):
            assert digest(c.read_secret_data(ns, "flux-system")["password"]) == digest(new)
    # at most one ARM read of the cluster for the whole run (both records name it)
    assert [r.action for r in env.arm.request_log] == ["read", "listclusterusercredential"]
    assert new not in json.dumps(d)

    # RBAC Admin on the namespace is enough for rotation; RBAC Writer is not (the GitRepository is a custom
    # resource), and the error names the role to assign on that namespace
    env.kube.entra_bindings.clear()
    env.kube.bind(DEFAULT_OID, "admin", "tenant-a")
    env.kube.bind(DEFAULT_OID, "writer", "flux-system")
    env.vault.seed_pat("fleet-pat", newer := secrets.token_urlsafe(32), _org(env.url))
    env.git.pat = newer
    by_name = {c.cluster: c for c in rotation.rotate_all(settings=settings).clusters}
    assert by_name["aks-weu-1-tenant-a"].status == "updated"
    failed = by_name["aks-weu-1"]
    assert failed.status == "failed", failed
    assert 'cannot get resource "gitrepositories"' in failed.errors[0]
    assert ("Azure Kubernetes Service RBAC Admin (3498e952-d568-435e-9b2c-8d77e338d7f7) role on "
            f"{env.registry.get('aks-weu-1').cluster_resource_id}/namespaces/flux-system") in failed.errors[0]
    with env.admin() as c:  # nothing written where the run failed
        assert digest(c.read_secret_data("flux-system", "flux-system")["password"]) == digest(new)

    # a stopped cluster fails that cluster only, naming the state
    env.mc.power_state = "Stopped"
    by_name = {c.cluster: c for c in rotation.rotate_all(settings=settings).clusters}
    assert all("is stopped (powerState.code: Stopped)" in c.errors[0] for c in by_name.values())


def test_cli_registry_add_by_cluster_resource_id(env, capsys):
    from shared import cli

    shouted = env.rid.replace("rg-fleet", "RG-Fleet")
    assert cli.main(["registry", "add", "aks-weu-1", "--cluster-resource-id", shouted, "--pat-secret", "fleet-pat",
                     "--git-url", env.url, "--allow-insecure-http"]) == 0
    record = env.registry.get("aks-weu-1")
    assert record.kubeconfig_secret is None and record.local_accounts is False
    assert record.cluster_resource_id == (f"/subscriptions/{env.mc.subscription}/resourceGroups/RG-Fleet/providers/"
                                          "Microsoft.ContainerService/managedClusters/aks-weu-1")
    capsys.readouterr()
    for argv, line in (
        (["--cluster-resource-id", "aks-weu-1"], "✗ --cluster-resource-id: 'aks-weu-1' is not the resource ID of an AKS cluster"),
        (["--kubeconfig-secret", "k", "--local-accounts"], "✗ --local-accounts: is only used with clusterResourceId"),
    ):
        assert cli.main(["registry", "add", "x", *argv, "--pat-secret", "fleet-pat", "--git-url", env.url,
                         "--allow-insecure-http"]) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(line)
    assert env.arm.request_log == []  # registering reads nothing from ARM
