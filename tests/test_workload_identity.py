"""End to end: bootstrap without secrets, Flux on Microsoft Entra workload identity (issue 10).

Through the indexed HTTP trigger against the local peers: the Azure DevOps git server (which takes the
Function's Entra ID token as ``Authorization: Bearer`` for the app's pushes), the ARM test server (the AKS
cluster with its OIDC issuer, the user-assigned identity and its federated identity credentials, through the
real ContainerServiceClient and ManagedServiceIdentityClient), the Kubernetes API test server in its Entra mode,
the Key Vault test server (never read here: there is no PAT) and Azurite (the registry). Rotation goes through
its own code against the same peers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from shared import rotation, services
from shared.flux import patches
from shared.ports.azure.aks import AksClient
from shared.ports.azure.msi import AUDIENCE, MsiClient
from shared.ports.kube import Cluster
from shared.rotation.registry import ClusterRecord, Registry
from tests.peers.entra_tokens import DEFAULT_OID, JwtTestCredential, make_jwt
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree, seed
from tests.test_aks_e2e import call, kube_writes
from tests.test_bootstrap_patches import USER  # a user's kustomization.yaml: comment, own patch, images

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
ADO_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
CLIENT_ID = "8f3a0c4e-6b1d-4e2a-9c7f-0a1b2c3d4e5f"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
FOLDER = "clusters/aks-weu-1/flux-system"
WI_CONTROLLERS = ["source-controller", "kustomize-controller", "notification-controller"]


@dataclass
class Env:
    url: str
    bare: Path
    git: object
    vault: object
    arm: object
    kube: object
    mc: object  # tests.peers.arm.ManagedCluster
    identity: object  # tests.peers.arm.UserAssignedIdentity
    cred: JwtTestCredential
    registry: Registry

    def admin(self) -> Cluster:
        return Cluster.from_kubeconfig(self.kube.kubeconfig(client_cert=True))


@pytest.fixture
def env(ado_git_server, keyvault_server, keyvault, kube_server, arm_server, azurite, entra_git_hosts, monkeypatch):
    ado_git_server.create_repo("contoso", "platform", "fleet")
    kube_server.enable_entra()
    kube_server.bind(DEFAULT_OID, "cluster-admin")
    mc = arm_server.add_cluster("aks-weu-1", kube=kube_server)
    identity = arm_server.add_identity("id-flux-weu", client_id=CLIENT_ID)
    cred = JwtTestCredential()
    # the git server takes the Function's Entra ID tokens for Azure DevOps, as Azure DevOps does
    cred.on_issue.append(lambda scope, token: ado_git_server.bearer_tokens.add(token) if scope == ADO_SCOPE else None)
    registry = Registry.from_connection_string(azurite.connection_string, f"reg{uuid.uuid4().hex[:12]}")
    aks = AksClient(cred, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    msi = MsiClient(cred, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    services.set_keyvault_factory(lambda: keyvault)
    services.set_registry_factory(lambda: registry)
    services.set_credential_factory(lambda: cred)
    services.set_aks_factory(lambda: aks)
    services.set_msi_factory(lambda: msi)
    try:
        yield Env(ado_git_server.url("contoso", "platform", "fleet"), ado_git_server.bare_path("contoso", "platform", "fleet"),
                  ado_git_server, keyvault_server, arm_server, kube_server, mc, identity, cred, registry)
    finally:
        for reset in (services.set_keyvault_factory, services.set_registry_factory, services.set_credential_factory,
                      services.set_aks_factory, services.set_msi_factory):
            reset(None)
        aks.close()
        msi.close()
        registry.close()


def request(env: Env, **overrides) -> dict:
    body = {"url": env.url, "path": "clusters/aks-weu-1", "allowInsecureHttp": True, "clusterResourceId": env.mc.id,
            "sourceProvider": "azure",
            "workloadIdentity": {"clientId": CLIENT_ID, "tenantId": TENANT_ID, "identityResourceId": env.identity.id},
            "sops": {"provider": "azure-keyvault"}}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def fic_writes(arm) -> list:
    return [r for r in arm.request_log if r.action in ("fic-write", "fic-delete")]


def expected_kustomization() -> str:
    """Flux's generated kustomization.yaml, then the documented patches (shared.flux.patches, tested against
    kubectl kustomize in test_flux_patches)."""
    entries = patches.workload_identity(WI_CONTROLLERS, CLIENT_ID, TENANT_ID) + [patches.sops_decryption("flux-system")]
    return patches.render(["gotk-components.yaml", "gotk-sync.yaml"], entries)


# -- the whole thing ---------------------------------------------------------------------------------


def test_bootstrap_on_workload_identity_without_any_secret(functions_by_name, env, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert [c["message"] for c in body["repository"]["commits"]] == ["Add Flux v2.9.2 component manifests",
                                                                    "Add Flux sync manifests"]

    # the commits: provider azure and no secretRef in gotk-sync.yaml, the patches in kustomization.yaml
    tree = read_tree(env.bare, "main")
    sync_text = tree[f"{FOLDER}/gotk-sync.yaml"].decode()
    assert "  interval: 1m0s\n  provider: azure\n  ref:\n    branch: main\n  url: " in sync_text
    assert "secretRef" not in sync_text
    assert tree[f"{FOLDER}/kustomization.yaml"].decode() == expected_kustomization()
    # pushed with the Function's Entra ID token (no PAT exists; Key Vault is never asked for one)
    assert any(r.user == "<bearer>" and "git-receive-pack" in r.path for r in env.git.requests)
    assert not any(r.user not in (None, "<bearer>") for r in env.git.requests)
    assert [r for r in env.vault.request_log if "/secrets/" in r.path] == []

    # the cluster: the components carry the identity, the Kustomization decrypts, no Secret at all
    with env.admin() as c:
        for name in WI_CONTROLLERS:
            sa = c.get("v1", "ServiceAccount", name, "flux-system")
            assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": CLIENT_ID,
                                                     "azure.workload.identity/tenant-id": TENANT_ID}, name
            pod = c.get("apps/v1", "Deployment", name, "flux-system")["spec"]["template"]["metadata"]
            assert pod["labels"]["azure.workload.identity/use"] == "true", name
        helm_sa = c.get("v1", "ServiceAccount", "helm-controller", "flux-system")
        assert "azure.workload.identity/client-id" not in (helm_sa["metadata"].get("annotations") or {})
        assert "azure.workload.identity/use" not in c.get("apps/v1", "Deployment", "helm-controller", "flux-system")[
            "spec"]["template"]["metadata"]["labels"]
        repo = c.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
        assert repo["spec"]["provider"] == "azure" and "secretRef" not in repo["spec"] and repo["spec"]["url"] == env.url
        ks = c.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
        assert ks["spec"]["decryption"] == {"provider": "sops"}
    assert env.kube.objects("v1", "Secret", "flux-system") == []

    # the federated identity credentials, on the identity, trusting the cluster's OIDC issuer
    issuer = env.mc.to_json()["properties"]["oidcIssuerProfile"]["issuerURL"]
    creds = env.identity.credentials()
    assert [(f["subject"], f["issuer"], f["audiences"]) for f in creds] == [
        (f"system:serviceaccount:flux-system:{n}", issuer, [AUDIENCE]) for n in WI_CONTROLLERS]
    assert all(f["name"].startswith(f"flux-aks-weu-1-{n}-") for f, n in zip(creds, WI_CONTROLLERS))

    # the response: per controller its client ID, federated credential and patches
    wi = body["workloadIdentity"]
    assert wi["clientId"] == CLIENT_ID and wi["oidcIssuer"] == issuer and wi["kustomization"] == f"{FOLDER}/kustomization.yaml"
    assert [c["name"] for c in wi["controllers"]] == WI_CONTROLLERS
    source = wi["controllers"][0]
    assert source["serviceAccount"] == "flux-system/source-controller" and source["clientId"] == CLIENT_ID
    assert source["federatedCredential"] == {**{k: creds[0][k] for k in ("name", "issuer", "subject", "audiences")},
                                             "action": "created"}
    assert source["patches"][0]["annotations"]["azure.workload.identity/client-id"] == CLIENT_ID
    assert wi["sops"]["provider"] == "azure-keyvault"
    assert "no source secret: the GitRepository signs in with workload identity (provider azure)" in "\n".join(body["log"])

    # registered: rotation leaves its Git credential alone
    record = env.registry.get("aks-weu-1")
    assert record.git_auth == "workload-identity" and record.pat_secret is None and record.git_url == env.url
    assert not any(t in caplog.text for t in env.cred.issued)

    # a re-run changes nothing: no commit, no object changed, no credential written
    # (the first unchanged re-apply of a custom object bumps its resourceVersion once, as kube-apiserver
    # does: ../shared/kube-contract 06b; its content must not move)
    watched = [("v1", "ServiceAccount", n) for n in WI_CONTROLLERS] + [("apps/v1", "Deployment", n) for n in WI_CONTROLLERS] + [
        ("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system"), ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system")]

    def versions() -> list:
        out = []
        for api, kind, name in watched:
            obj = env.kube.get_object(api, kind, name, "flux-system")
            meta = dict(obj["metadata"])
            if api.startswith(("source.", "kustomize.")):
                meta.pop("resourceVersion")
            out.append((meta, obj.get("spec")))
        return out

    before, fic_before = versions(), len(fic_writes(env.arm))
    status, again = call(functions_by_name, request(env))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert again["cluster"]["created"] == 0 and again["cluster"]["configured"] == 0
    assert len(fic_writes(env.arm)) == fic_before
    assert [c["federatedCredential"]["action"] for c in again["workloadIdentity"]["controllers"]] == ["unchanged"] * 3
    assert [f["name"] for f in env.identity.credentials()] == [f["name"] for f in creds]
    assert read_tree(env.bare, "main") == tree
    assert versions() == before
    assert env.kube.objects("v1", "Secret", "flux-system") == []


def test_default_components_follow_the_selection(functions_by_name, env):
    """Without ``components``: the selected controllers that talk to Azure, the image controllers when they
    are selected; ``federate`` defaults to true with ``identityResourceId``; no tenant annotation unless given."""
    status, body = call(functions_by_name, request(
        env, sops=None, componentsExtra=["image-reflector-controller", "image-automation-controller"],
        workloadIdentity={"clientId": CLIENT_ID.upper(), "identityResourceId": env.identity.id}))
    assert status == 200, body
    names = WI_CONTROLLERS + ["image-reflector-controller", "image-automation-controller"]
    assert [c["name"] for c in body["workloadIdentity"]["controllers"]] == names
    assert [f["subject"].rsplit(":", 1)[1] for f in env.identity.credentials()] == names
    with env.admin() as c:
        sa = c.get("v1", "ServiceAccount", "image-automation-controller", "flux-system")
        assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": CLIENT_ID}
        assert "decryption" not in c.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")["spec"]


def test_moving_a_pat_cluster_to_workload_identity(functions_by_name, env, git_pat):
    """A cluster bootstrapped with a PAT, then again with sourceProvider azure: the GitRepository loses its
    secretRef on the cluster too (server-side apply drops the field the app no longer sets), the leftover
    Secret is reported, and the registry record moves to workload-identity."""
    env.vault.seed_pat("fleet-pat", git_pat, env.url.split("/platform/")[0] + "/")
    status, body = call(functions_by_name, request(env, sourceProvider=None, workloadIdentity=None, sops=None,
                                                   passwordSecret="fleet-pat"))
    assert status == 200, body
    assert env.registry.get("aks-weu-1").git_auth == "pat"
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    with env.admin() as c:
        repo = c.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
        assert repo["spec"]["provider"] == "azure" and "secretRef" not in repo["spec"]
    assert any("source secret \"flux-system/flux-system\" is left from an earlier bootstrap" in line for line in body["log"])
    assert env.registry.get("aks-weu-1").git_auth == "workload-identity"


def test_kubeconfig_cluster_without_federation_is_vouched_for(functions_by_name, env):
    """A cluster named by kubeconfigSecret has no ARM view: with federate false the operator vouches for the
    webhook and the credentials, and the run says what it could not check."""
    kubeconfig = env.kube.kubeconfig(client_cert=True)
    env.vault.seed_kubeconfig("aks-weu-1-kubeconfig", kubeconfig)
    status, body = call(functions_by_name, request(env, clusterResourceId=None, kubeconfigSecret="aks-weu-1-kubeconfig",
                                                   workloadIdentity={"clientId": CLIENT_ID, "federate": False}))
    assert status == 200, body
    assert any("cannot be read from ARM" in line and "az aks update --enable-oidc-issuer --enable-workload-identity" in line
               for line in body["log"])
    assert env.identity.credentials() == [] and body["workloadIdentity"]["oidcIssuer"] is None
    assert [c["federatedCredential"] for c in body["workloadIdentity"]["controllers"]] == [None] * 3


# -- bad input: the field, and nothing written ----------------------------------------------------------


def _nothing_written(env: Env) -> None:
    assert git_log(env.bare, "main") == []
    assert kube_writes(env.kube) == []
    assert fic_writes(env.arm) == []
    assert env.identity.credentials() == []


@pytest.mark.parametrize("overrides, field, words", [
    ({"workloadIdentity": {"clientId": CLIENT_ID, "components": ["source-controller", "sops-controller"]}},
     "workloadIdentity.components", "'sops-controller' is not a Flux component"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "components": ["source-controller", "image-reflector-controller"]}},
     "workloadIdentity.components", "image-reflector-controller is not installed"),
    ({"workloadIdentity": {"clientId": "not-a-guid"}}, "workloadIdentity.clientId", "is not a GUID"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "tenantId": "contoso.onmicrosoft.com"}}, "workloadIdentity.tenantId",
     "is not a GUID"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "roles": ["x"]}}, "workloadIdentity.roles", "unknown field"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "federate": True}}, "workloadIdentity.identityResourceId", "is required"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "identityResourceId": "/subscriptions/x/id"}},
     "workloadIdentity.identityResourceId", "is not the resource ID of a user-assigned managed identity"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "components": ["kustomize-controller"]}}, "workloadIdentity.components",
     "must include source-controller"),
    ({"workloadIdentity": None}, "workloadIdentity", "is required with sourceProvider azure"),
    ({"workloadIdentity": "8f3a0c4e"}, "workloadIdentity", "must be an object"),
    ({"url": "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet"}, "url", "not a ssh:// URL"),
    ({"url": "https://github.com/contoso/fleet"}, "url", "needs an Azure DevOps repository URL"),
    ({"url": "https://contoso.visualstudio.com/platform/_git/fleet"}, "url",
     "https://dev.azure.com/contoso/platform/_git/fleet"),
    ({"sourceProvider": "github"}, "sourceProvider", "must be one of generic, azure"),
    ({"passwordSecret": "fleet-pat"}, "passwordSecret", "is not used with sourceProvider azure"),
    ({"sshHostname": "ssh.dev.azure.com"}, "sshHostname", "is not used with sourceProvider azure"),
    ({"caFileSecret": "fleet-ca"}, "caFileSecret", "is not used with sourceProvider azure"),
    ({"withBearerToken": True}, "withBearerToken", "is not used with sourceProvider azure"),
    ({"version": "v2.3.0"}, "version", "came with Flux v2.4.0"),
    ({"sops": {"provider": "age"}}, "sops.provider", "must be one of azure-keyvault"),
    ({"workloadIdentity": {"clientId": CLIENT_ID, "components": ["source-controller"]}}, "sops.provider",
     "kustomize-controller's workload identity"),
])
def test_bad_input_is_a_400_naming_the_field(functions_by_name, env, overrides, field, words):
    status, body = call(functions_by_name, request(env, **overrides))
    assert status == 400, body
    assert body["error"]["field"] == field and words in body["error"]["message"], body["error"]
    _nothing_written(env)
    assert fic_writes(env.arm) == [] and env.arm.request_log == []  # offline: not even a read


def test_non_azure_devops_host_is_refused(functions_by_name, env, monkeypatch):
    """A host that GIT_ALLOWED_HOSTS lets a PAT go to, but that is not listed as taking Entra ID tokens."""
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1,git.contoso.com")
    status, body = call(functions_by_name, request(env, url="https://git.contoso.com/contoso/platform/_git/fleet"))
    assert status == 400 and body["error"]["field"] == "url"
    assert "is not Azure DevOps Services" in body["error"]["message"] and "GIT_BEARER_TOKEN_HOSTS" in body["error"]["message"]
    _nothing_written(env)


@pytest.mark.parametrize("oidc_issuer, workload_identity, missing", [
    (False, True, "the OIDC issuer"), (True, False, "workload identity"), (False, False, "the OIDC issuer and workload identity"),
])
def test_cluster_without_oidc_issuer_or_workload_identity_is_a_409(functions_by_name, env, oidc_issuer, workload_identity, missing):
    env.mc.oidc_issuer, env.mc.workload_identity = oidc_issuer, workload_identity
    status, body = call(functions_by_name, request(env))
    assert status == 409, body
    assert body["error"]["field"] == "clusterResourceId"
    assert f"has {missing} disabled" in body["error"]["message"]
    assert "az aks update --enable-oidc-issuer --enable-workload-identity --resource-group rg-fleet --name aks-weu-1" \
        in body["error"]["message"]
    _nothing_written(env)


def test_client_id_of_another_identity_is_refused_before_anything_is_written(functions_by_name, env):
    other = "0f0e0d0c-0b0a-4908-8706-050403020100"
    status, body = call(functions_by_name, request(env, workloadIdentity={"clientId": other, "identityResourceId": env.identity.id}))
    assert status == 400 and body["error"]["field"] == "workloadIdentity.clientId"
    assert f"its client ID is {CLIENT_ID}" in body["error"]["message"]
    _nothing_written(env)


def test_federate_needs_the_cluster_resource_id(functions_by_name, env):
    env.vault.seed_kubeconfig("aks-weu-1-kubeconfig", env.kube.kubeconfig(client_cert=True))
    status, body = call(functions_by_name, request(env, clusterResourceId=None, kubeconfigSecret="aks-weu-1-kubeconfig"))
    assert status == 400 and body["error"]["field"] == "workloadIdentity.federate"
    _nothing_written(env)


def test_forbidden_federated_credential_write_is_a_502_naming_the_role(functions_by_name, env):
    env.arm.forbid(env.identity, "fic-write")
    status, body = call(functions_by_name, request(env))
    assert status == 502, body
    assert body["error"]["code"] == "AuthenticationFailed" and body["error"]["field"] == "workloadIdentity.identityResourceId"
    assert "Managed Identity Contributor (e40ec5ca-96e0-45a2-b4ff-59039f2c2b59) role on the identity" in body["error"]["message"]
    assert git_log(env.bare, "main") == [] and kube_writes(env.kube) == []  # before the first push and install


def test_missing_identity_is_a_400(functions_by_name, env):
    gone = env.identity.id.replace("id-flux-weu", "id-gone")
    status, body = call(functions_by_name, request(env, workloadIdentity={"clientId": CLIENT_ID, "identityResourceId": gone}))
    assert status == 400 and body["error"]["field"] == "workloadIdentity.identityResourceId"
    _nothing_written(env)


# -- rotation -------------------------------------------------------------------------------------------


def test_rotation_leaves_workload_identity_git_alone_and_warns_about_a_static_event_hub_jwt(env, keyvault):
    """A workload-identity cluster with a (deprecated) static Event Hub JWT: rotation sends nothing for Git, reads
    no PAT, and refreshes the JWT with a warning that points at the workload identity Provider."""
    import time

    env.kube.bind(DEFAULT_OID, "cluster-admin")
    with env.admin() as c:
        c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}])
        c.reconcile_secret("flux-system", "eventhub-token", {"token": make_jwt(exp=time.time() + 60), "address": "flux-events"})
    record = ClusterRecord(name="aks-weu-1", cluster_resource_id=env.mc.id, git_auth="workload-identity", git_url=env.url,
                           eventhub_secret="eventhub-token", eventhub_name="flux-events",
                           eventhub_namespace="contoso-flux.servicebus.windows.net").validate()
    env.git.requests.clear()
    summary = rotation.rotate([record], keyvault=keyvault, credential=env.cred, aks=services.aks())
    result = summary.clusters[0]
    assert result.errors == [] and result.status == "updated", result
    # the Provider's channel is the namespace's name, even when the record holds its host name
    assert any("deprecated since Flux 2.7" in w and "channel contoso-flux, address flux-events" in w
               for w in result.warnings)
    assert env.git.requests == []  # no ls-remote: nothing to check or write for Git
    assert [r for r in env.vault.request_log if "/secrets/" in r.path] == []
    assert env.cred.scopes_asked(ADO_SCOPE) == 0
    with env.admin() as c:
        assert c.read_secret_data("flux-system", "flux-system") is None


def test_registry_accepts_workload_identity_without_a_git_url():
    record = ClusterRecord(name="aks-weu-1", kubeconfig_secret="k", git_auth="workload-identity").validate()
    assert record.to_dict()["gitAuth"] == "workload-identity"
    assert yaml.safe_dump(record.to_dict())  # JSON-ready


# -- the CLI ----------------------------------------------------------------------------------------------


def test_cli_bootstrap_on_workload_identity(env, capsys, monkeypatch):
    """``python -m shared bootstrap git --source-provider azure --workload-identity-*``: no PAT in the
    environment, your Entra ID token pushes, the same files, objects and federated credentials; a bad value is
    one ✗ line naming its flag."""
    from shared import cli

    monkeypatch.delenv("GIT_PASSWORD", raising=False)
    argv = ["bootstrap", "git", "--url", env.url, "--path", "clusters/aks-weu-1", "--allow-insecure-http",
            "--manifests", str(V292), "--timeout", "0s", "--cluster-resource-id", env.mc.id, "--source-provider", "azure",
            "--workload-identity-client-id", CLIENT_ID, "--workload-identity-tenant-id", TENANT_ID,
            "--workload-identity-resource-id", env.identity.id, "--sops-provider", "azure-keyvault"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "✔ reconciled sync configuration" in err and "created" in err
    tree = read_tree(env.bare, "main")
    assert tree[f"{FOLDER}/kustomization.yaml"].decode() == expected_kustomization()
    assert "provider: azure" in tree[f"{FOLDER}/gotk-sync.yaml"].decode()
    assert [f["subject"].rsplit(":", 1)[1] for f in env.identity.credentials()] == WI_CONTROLLERS
    assert env.kube.objects("v1", "Secret", "flux-system") == []

    for extra, line in (
        (["--workload-identity-client-id", "nope"], "✗ --workload-identity-client-id: 'nope' is not a GUID"),
        (["--workload-identity-components", "source-controller,sops-controller"],
         "✗ --workload-identity-components: 'sops-controller' is not a Flux component"),
        (["--workload-identity-federate=false", "--workload-identity-components", "source-controller"],
         "✗ --sops-provider: azure-keyvault decrypts with kustomize-controller's workload identity"),
    ):
        assert cli.main([*argv, *extra]) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(line)


# -- re-runs that drop a controller: stale federated credentials are reported, never deleted ---------------


def _seed_credential(identity, name: str, issuer: str, subject: str) -> None:
    """A federated credential someone else made on the identity (as ARM stores one)."""
    identity.federated[name.lower()] = {
        "id": f"{identity.id}/federatedIdentityCredentials/{name}", "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {"issuer": issuer, "subject": subject, "audiences": [AUDIENCE]}}


def test_a_dropped_controller_s_credential_is_reported_stale_and_kept(functions_by_name, env):
    """Components source- and notification-controller, then source-controller only: notification-controller's
    credential (named by the app for this cluster) is listed in ``stale`` with the command that deletes it, and
    nothing is deleted; credentials the app did not name (another hash, another name) are never reported. With
    both controllers again, nothing is stale."""
    issuer = env.mc.to_json()["properties"]["oidcIssuerProfile"]["issuerURL"]
    # someone else's, on the same identity: our prefix with another hash (another cluster's), and a free name
    _seed_credential(env.identity, "flux-aks-weu-1-helm-controller-0badc0de", issuer,
                     "system:serviceaccount:flux-system:helm-controller")
    _seed_credential(env.identity, "team-a-app", issuer, "system:serviceaccount:team-a:app")
    both = {"clientId": CLIENT_ID, "identityResourceId": env.identity.id,
            "components": ["source-controller", "notification-controller"]}
    status, body = call(functions_by_name, request(env, sops=None, workloadIdentity=both))
    assert status == 200, body
    assert body["workloadIdentity"]["stale"] == []
    notification = body["workloadIdentity"]["controllers"][1]["federatedCredential"]
    assert notification["action"] == "created" and notification["name"].startswith("flux-aks-weu-1-notification-controller-")
    names = [f["name"] for f in env.identity.credentials()]

    status, body = call(functions_by_name, request(env, sops=None, workloadIdentity={**both, "components": ["source-controller"]}))
    assert status == 200, body
    subject = "system:serviceaccount:flux-system:notification-controller"
    assert body["workloadIdentity"]["stale"] == [{"name": notification["name"], "subject": subject}]
    command = (f"az identity federated-credential delete --name {notification['name']} --identity-name id-flux-weu "
               f"--resource-group rg-identities --subscription {env.identity.subscription} --yes")
    warnings = [line for line in body["log"] if line.startswith("⚠️") and "federated identity credential" in line]
    assert len(warnings) == 1, body["log"]
    assert f"\"{notification['name']}\" ({subject})" in warnings[0] and "notification-controller, which is no longer in " \
        "workloadIdentity.components" in warnings[0] and warnings[0].endswith(command), warnings[0]
    # reported, not deleted: the ARM peer saw no DELETE and the identity holds every credential it held
    assert [r for r in env.arm.request_log if r.method == "DELETE" or r.action == "fic-delete"] == []
    assert [f["name"] for f in env.identity.credentials()] == names

    status, body = call(functions_by_name, request(env, sops=None, workloadIdentity=both))
    assert status == 200, body
    assert body["workloadIdentity"]["stale"] == []
    assert [c["federatedCredential"]["action"] for c in body["workloadIdentity"]["controllers"]] == ["unchanged"] * 2
    assert not any("no longer in workloadIdentity.components" in line for line in body["log"])
    assert [r for r in env.arm.request_log if r.method == "DELETE"] == []


# -- a user's own kustomization.yaml ---------------------------------------------------------------------


def test_a_user_kustomization_keeps_its_own_and_gets_the_workload_identity_patches_once(functions_by_name, env):
    """The folder already holds the user's kustomization.yaml: every byte of it is kept, the workload identity
    and SOPS entries join its patches list once (in its indentation, before ``images``), the components are
    installed with the user's patch and ours, and a re-run changes nothing."""
    kfile = f"{FOLDER}/kustomization.yaml"
    seed(env.bare, {kfile: USER})
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    text = read_tree(env.bare, "main")[kfile]
    # ours: the entries of a generated file (expected_kustomization), in the user's list indentation
    ours = expected_kustomization().encode().split(b"\npatches:\n", 1)[1]
    indented = b"".join(b"  " + line for line in ours.splitlines(keepends=True))
    assert text == USER.replace(b"images:\n", indented + b"images:\n")
    doc = yaml.safe_load(text)
    assert doc["resources"] == ["gotk-components.yaml", "gotk-sync.yaml"] and doc["images"][0]["newTag"] == "v1.4.0"
    entries = patches.workload_identity(WI_CONTROLLERS, CLIENT_ID, TENANT_ID) + [patches.sops_decryption("flux-system")]
    assert doc["patches"] == [yaml.safe_load(USER)["patches"][0], *entries]
    assert body["workloadIdentity"]["kustomization"] == kfile
    with env.admin() as c:
        kc = c.get("apps/v1", "Deployment", "kustomize-controller", "flux-system")
        assert kc["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--concurrent=20"
        assert kc["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        for name in WI_CONTROLLERS:
            sa = c.get("v1", "ServiceAccount", name, "flux-system")
            assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == CLIENT_ID, name

    status, again = call(functions_by_name, request(env))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert again["cluster"]["created"] == 0 and again["cluster"]["configured"] == 0, again["cluster"]
    assert read_tree(env.bare, "main")[kfile] == text
