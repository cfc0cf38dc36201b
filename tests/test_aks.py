"""The AKS port (shared.ports.azure.aks) through the real ContainerServiceClient against the ARM test
server, and Cluster.from_endpoint against the Kubernetes API test server in its Entra ID mode."""

from __future__ import annotations

import base64

import jwt
import pytest
import yaml

from shared import errors
from shared.ports.azure.aks import (
    AKS_SCOPE,
    AksClient,
    ClusterResourceId,
    TokenProvider,
)
from shared.ports.kube import Cluster
from tests.peers.arm import API_VERSION
from tests.peers.entra_tokens import AKS_SERVER_APP_ID, DEFAULT_OID, JwtTestCredential, make_jwt

SUB = "00000000-0000-0000-0000-0000000000a1"


@pytest.fixture
def aks_kube(kube_server):
    """The Kubernetes API test server as an Entra-integrated AKS cluster; the Function's identity is
    RBAC Cluster Admin there."""
    kube_server.enable_entra()
    kube_server.bind(DEFAULT_OID, "cluster-admin")
    return kube_server


@pytest.fixture
def aks(arm_server, arm_credential):
    client = AksClient(arm_credential, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    yield client
    client.close()


def rid(mc) -> ClusterResourceId:
    return ClusterResourceId.parse(mc.id)


# -- resource IDs -----------------------------------------------------------------------------------


def test_resource_id_is_parsed_case_insensitively():
    a = ClusterResourceId.parse(f"/subscriptions/{SUB.upper()}/resourcegroups/RG-Fleet/providers/"
                                "microsoft.containerservice/MANAGEDCLUSTERS/Aks-Weu-1")
    b = ClusterResourceId.parse(f"/subscriptions/{SUB}/resourceGroups/rg-fleet/providers/"
                                "Microsoft.ContainerService/managedClusters/aks-weu-1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert (a.subscription_id, a.resource_group, a.name) == (SUB, "RG-Fleet", "Aks-Weu-1")
    assert str(a) == (f"/subscriptions/{SUB}/resourceGroups/RG-Fleet/providers/Microsoft.ContainerService/"
                      "managedClusters/Aks-Weu-1")


@pytest.mark.parametrize("value", [
    "", "aks-weu-1", f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks/",
    f"/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/aks",
    f"/subscriptions/{SUB}/resourceGroups/rg./providers/Microsoft.ContainerService/managedClusters/aks",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/" + "a" * 64,
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks/agentPools/x",
    f" /subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks",
    42, None,
])
def test_malformed_resource_id_names_the_field(value):
    with pytest.raises(errors.InvalidInput) as e:
        ClusterResourceId.parse(value)
    assert e.value.field == "clusterResourceId" and e.value.status == 400
    assert "managedClusters/{name}" in e.value.message


# -- ARM through ContainerServiceClient ---------------------------------------------------------------


def test_endpoint_from_arm_keeps_only_server_and_ca(arm_server, arm_credential, aks, aks_kube):
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    ep = aks.endpoint(rid(mc))

    assert ep.server == aks_kube.url and ep.ca_data == aks_kube.ca_pem and not ep.local_accounts
    assert ep.admin_kubeconfig is None
    info = ep.info
    assert (info.power_state, info.entra, info.azure_rbac, info.private, info.workload_identity) == ("Running", True, True, False, True)
    assert info.oidc_issuer_url.startswith("https://westeurope.oic.prod-aks.azure.com/")
    # what went over the wire: a GET then listClusterUserCredential, with the SDK's api-version and an ARM token
    assert [(r.method, r.action, r.status, r.query.get("api-version")) for r in arm_server.request_log] == [
        ("GET", "read", 200, API_VERSION), ("POST", "listclusterusercredential", 200, API_VERSION)]
    assert {r.oid for r in arm_server.request_log} == {DEFAULT_OID}
    assert arm_credential.requests == [("https://management.azure.com/.default",)]

    # the Kubernetes API with an Entra ID token for the AKS server application; kubelogin never runs
    cluster = Cluster.from_endpoint(ep.server, ep.ca_data, TokenProvider(arm_credential))
    with cluster:
        assert cluster.server_version() == "v1.36.2"
    assert (AKS_SCOPE,) in arm_credential.requests and aks_kube.entra_callers == [DEFAULT_OID]


def test_endpoint_is_cached_per_process_and_expires(arm_server, arm_credential, aks_kube):
    now = [1000.0]
    aks = AksClient(arm_credential, base_url=arm_server.url, connection_verify=arm_server.ca_file,
                    cache_ttl=600, clock=lambda: now[0])
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    first = aks.endpoint(rid(mc))
    again = aks.endpoint(ClusterResourceId.parse(mc.id.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")))
    assert again is first and arm_server.count() == 2  # case-insensitive key, no ARM call
    now[0] += 601
    aks.endpoint(rid(mc))
    assert arm_server.count() == 4
    aks.invalidate(rid(mc))
    aks.endpoint(rid(mc))
    assert arm_server.count() == 6
    aks.close()


@pytest.mark.parametrize("where,code", [("cluster", "ResourceNotFound"), ("group", "ResourceGroupNotFound"),
                                        ("subscription", "SubscriptionNotFound")])
def test_not_found_is_a_400_on_cluster_resource_id(arm_server, aks, aks_kube, where, code):
    arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    target = {"cluster": ("rg-fleet", "aks-missing", SUB), "group": ("rg-other", "aks-weu-1", SUB),
              "subscription": ("rg-fleet", "aks-weu-1", "00000000-0000-0000-0000-0000000000ff")}[where]
    ref = ClusterResourceId(target[2], target[0], target[1])
    with pytest.raises(errors.InvalidInput) as e:
        aks.endpoint(ref)
    assert e.value.field == "clusterResourceId" and e.value.status == 400
    assert f"managed cluster {ref} not found" in e.value.message and f"({code})" in e.value.message
    assert arm_server.count("listclusterusercredential") == 0


def test_authorization_failed_names_the_role_to_assign(arm_server, aks, aks_kube):
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    arm_server.forbid(mc, "listclusterusercredential")
    with pytest.raises(errors.AuthenticationFailed) as e:
        aks.endpoint(rid(mc))
    msg = str(e.value)
    assert e.value.status == 502 and e.value.code == "AuthenticationFailed" and e.value.field == "clusterResourceId"
    assert "ARM refused listClusterUserCredential" in msg and "(AuthorizationFailed)" in msg
    assert "Azure Kubernetes Service Cluster User Role (4abbcc35-e782-43d8-92c5-2d3f1bd2253f)" in msg
    arm_server.forbid(mc, "read")
    with pytest.raises(errors.AuthenticationFailed, match="managedClusters/read"):
        aks.endpoint(rid(mc))


def test_stopped_cluster_is_a_409_before_any_credential_call(arm_server, aks, aks_kube):
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube, power_state="Stopped")
    with pytest.raises(errors.Conflict) as e:
        aks.endpoint(rid(mc))
    assert e.value.status == 409 and e.value.field == "clusterResourceId"
    assert "is stopped (powerState.code: Stopped)" in str(e.value) and "az aks start" in str(e.value)
    assert [r.action for r in arm_server.request_log] == ["read"]


def test_cluster_without_entra_needs_local_accounts(arm_server, aks, aks_kube):
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube, entra=False, azure_rbac=False)
    with pytest.raises(errors.Conflict) as e:
        aks.endpoint(rid(mc))
    assert e.value.field == "clusterResourceId"
    assert "no Microsoft Entra ID integration (properties.aadProfile is absent)" in str(e.value)
    assert "--enable-aad" in str(e.value) and "localAccounts" in str(e.value)
    assert arm_server.count("listclusterusercredential") == 0

    ep = aks.endpoint(rid(mc), local_accounts=True)
    assert ep.local_accounts and arm_server.count("listclusteradmincredential") == 1
    user = yaml.safe_load(ep.admin_kubeconfig)["users"][0]["user"]
    assert "client-certificate-data" in user and ep.server == aks_kube.url
    with Cluster.from_kubeconfig(ep.admin_kubeconfig) as cluster:  # the static admin credential works
        assert cluster.server_version() == "v1.36.2"


def test_local_accounts_refused_when_disabled(arm_server, aks, aks_kube):
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube, disable_local_accounts=True)
    with pytest.raises(errors.Conflict) as e:
        aks.endpoint(rid(mc), local_accounts=True)
    assert e.value.status == 409 and e.value.field == "localAccounts"
    assert "disableLocalAccounts: true" in str(e.value)
    assert "Getting static credential is not allowed because this cluster is set to disable local accounts." in str(e.value)
    assert [(r.action, r.status) for r in arm_server.request_log] == [("read", 200), ("listclusteradmincredential", 400)]


def test_private_cluster_is_reached_at_its_private_fqdn(arm_server, aks, aks_kube):
    mc = arm_server.add_cluster("aks-private", kube=aks_kube, private=True, private_fqdn="localhost")
    ep = aks.endpoint(rid(mc))
    port = aks_kube.url.rsplit(":", 1)[1]
    assert ep.info.private and ep.info.private_fqdn == "localhost" and ep.info.fqdn.endswith(".azmk8s.io")
    assert ep.server == f"https://localhost:{port}"


def test_arm_cae_challenge_is_answered_with_a_new_token(arm_server, arm_credential, aks_kube):
    aks = AksClient(arm_credential, base_url=arm_server.url, connection_verify=arm_server.ca_file, cache_ttl=0)
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    aks.managed_cluster(rid(mc))
    arm_server.revoke_sessions()
    assert aks.managed_cluster(rid(mc)).power_state == "Running"
    assert [r.status for r in arm_server.request_log] == [200, 401, 200]
    assert len(arm_credential.claims) == 1 and '"nbf"' in arm_credential.claims[0]
    aks.close()


def test_arm_refuses_a_token_it_did_not_issue(arm_server, aks_kube):
    class Forged(JwtTestCredential):
        def get_token(self, *scopes, **kw):
            from azure.core.credentials import AccessToken

            return AccessToken(make_jwt(exp=2**31 - 1, aud="https://management.azure.com", key=b"k" * 32), 2**31 - 1)

    aks = AksClient(Forged(), base_url=arm_server.url, connection_verify=arm_server.ca_file)
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    with pytest.raises(errors.AuthenticationFailed) as e:
        aks.endpoint(rid(mc))
    assert "ARM did not accept the Function's token" in str(e.value) and "InvalidAuthenticationToken" in str(e.value)
    aks.close()


def test_api_version_is_checked(arm_server, arm_credential, aks_kube):
    aks = AksClient(arm_credential, base_url=arm_server.url, connection_verify=arm_server.ca_file,
                    api_version="2099-01-01")
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    with pytest.raises(errors.UpstreamError) as e:
        aks.endpoint(rid(mc))
    assert "ARM answered 400" in str(e.value) and "NoRegisteredProviderFound" in str(e.value)
    aks.close()


def test_arm_unreachable_and_credential_failures(arm_server, aks_kube):
    from azure.identity import CredentialUnavailableError

    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    failing = JwtTestCredential()
    failing.fail = CredentialUnavailableError("no managed identity endpoint")
    aks = AksClient(failing, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    with pytest.raises(errors.AuthenticationFailed, match="token for Azure Resource Manager"):
        aks.endpoint(rid(mc))
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    aks = AksClient(JwtTestCredential(), base_url=f"https://127.0.0.1:{port}", connection_verify=arm_server.ca_file,
                    retry_total=0)
    with pytest.raises(errors.UpstreamError, match="Azure Resource Manager unreachable"):
        aks.endpoint(rid(mc))


def test_settings():
    aks = AksClient.from_settings(JwtTestCredential(), {"AZURE_RESOURCE_MANAGER_ENDPOINT": "https://management.usgovcloudapi.net/",
                                                       "AKS_ENDPOINT_CACHE_SECONDS": "60"})
    assert aks.base_url == "https://management.usgovcloudapi.net" and aks.cache_ttl == 60
    for env, name in (({"AZURE_RESOURCE_MANAGER_ENDPOINT": "http://arm"}, "AZURE_RESOURCE_MANAGER_ENDPOINT"),
                      ({"AKS_ENDPOINT_CACHE_SECONDS": "ten"}, "AKS_ENDPOINT_CACHE_SECONDS")):
        with pytest.raises(errors.SettingError) as e:
            AksClient.from_settings(JwtTestCredential(), env)
        assert e.value.field == name


# -- tokens -------------------------------------------------------------------------------------------


def test_token_provider_refreshes_before_expiry():
    now = [10_000.0]

    class Clocked(JwtTestCredential):  # expires_on on the test's clock
        def get_token(self, *scopes, **kw):
            from azure.core.credentials import AccessToken

            self.requests.append(tuple(scopes))
            return AccessToken(self.issue(scopes[0])[0], int(now[0]) + 3600)

    cred = Clocked()
    provider = TokenProvider(cred, clock=lambda: now[0])
    first = provider()
    now[0] += 3600 - 301  # still more than the 300 s refresh window left
    assert provider() == first and len(cred.issued) == 1
    now[0] += 2  # inside the window: a new token before the old one expires
    second = provider()
    assert second != first and len(cred.issued) == 2
    assert cred.requests == [(AKS_SCOPE,), (AKS_SCOPE,)]


def test_token_provider_errors_carry_no_token():
    from azure.identity import CredentialUnavailableError

    cred = JwtTestCredential()
    cred.fail = CredentialUnavailableError("ManagedIdentityCredential: no identity at http://169.254.169.254")
    with pytest.raises(errors.AuthenticationFailed) as e:
        TokenProvider(cred)()
    assert str(e.value) == (f"cannot get an Entra ID token for {AKS_SCOPE} with the Function's identity "
                            "(CredentialUnavailableError)")


# -- the Kubernetes API in Entra ID mode -------------------------------------------------------------------


def _cluster(kube, cred: JwtTestCredential) -> Cluster:
    return Cluster.from_endpoint(kube.url, kube.ca_pem, TokenProvider(cred))


def test_entra_mode_accepts_only_aks_tokens_of_the_token_peer(aks_kube):
    with _cluster(aks_kube, JwtTestCredential()) as c:
        assert c.get("v1", "Namespace", "flux-system") is None  # authorized: 404, not 401
    bad_tokens = {
        "static token": aks_kube.token,
        "other audience": make_jwt(exp=2**31 - 1, aud="https://management.azure.com"),
        "other signer": make_jwt(exp=2**31 - 1, aud=AKS_SERVER_APP_ID, key=b"x" * 32),
        "expired": make_jwt(exp=1_000_000, aud=AKS_SERVER_APP_ID, iat=999_000),
    }
    for what, token in bad_tokens.items():
        with Cluster.from_endpoint(aks_kube.url, aks_kube.ca_pem, lambda t=token: t) as c:
            with pytest.raises(errors.AuthenticationFailed, match=r"\(401 Unauthorized\)"):
                c.server_version()
    with Cluster.from_kubeconfig(aks_kube.kubeconfig()) as c:  # the static token of the normal mode
        with pytest.raises(errors.AuthenticationFailed, match="401"):
            c.server_version()


def test_entra_mode_identity_without_binding_gets_403_with_the_hint(aks_kube):
    stranger = JwtTestCredential(oid="99999999-0000-0000-0000-000000000000")
    with _cluster(aks_kube, stranger) as c:
        c.forbidden_hint = "assign the Function's identity the Azure Kubernetes Service RBAC Cluster Admin role"
        assert c.server_version() == "v1.36.2"  # non-resource URLs and discovery stay open
        with pytest.raises(errors.AuthenticationFailed) as e:
            c.reconcile_secret("default", "x", {"k": "secret-value"})
    msg = str(e.value)
    assert '(403 Forbidden)' in msg and 'User "99999999-0000-0000-0000-000000000000" cannot get resource "secrets"' in msg
    assert "User does not have access to the resource in Azure" in msg
    assert msg.endswith("; assign the Function's identity the Azure Kubernetes Service RBAC Cluster Admin role")
    assert "secret-value" not in msg


def test_entra_mode_namespace_roles(aks_kube):
    """As the AKS built-in roles: Admin covers everything in its namespace, custom resources included;
    Writer the built-in kinds only (Secrets, not a Flux GitRepository); Reader no Secrets."""
    writer = JwtTestCredential(oid="22222222-0000-0000-0000-000000000000")
    reader = JwtTestCredential(oid="33333333-0000-0000-0000-000000000000")
    ns_admin = JwtTestCredential(oid="55555555-0000-0000-0000-000000000000")
    aks_kube.bind(writer.oid, "writer", "flux-system")
    aks_kube.bind(reader.oid, "reader", "flux-system")
    aks_kube.bind(ns_admin.oid, "admin", "flux-system")
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gitrepositories.source.toolkit.fluxcd.io"},
           "spec": {"group": "source.toolkit.fluxcd.io", "scope": "Namespaced",
                    "names": {"kind": "GitRepository", "plural": "gitrepositories", "singular": "gitrepository",
                              "listKind": "GitRepositoryList"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    repo = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": "flux-system"}, "spec": {"url": "https://example.com/x"}}
    with _cluster(aks_kube, JwtTestCredential()) as admin:
        admin.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}},
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}, crd], poll_interval=0.05)
        admin.apply([repo])
    with _cluster(aks_kube, writer) as c:
        assert c.reconcile_secret("flux-system", "flux-system", {"password": "p"}).action == "created"
        with pytest.raises(errors.AuthenticationFailed, match='in the namespace "other"'):
            c.reconcile_secret("other", "flux-system", {"password": "p"})
        with pytest.raises(errors.AuthenticationFailed, match="at the cluster scope"):
            c.get("v1", "Namespace", "flux-system")
        with pytest.raises(errors.AuthenticationFailed, match='cannot get resource "gitrepositories"'):
            c.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    with _cluster(aks_kube, ns_admin) as c:
        c.annotate("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system", {"a": "b"})
        assert c.read_secret_data("flux-system", "flux-system") == {"password": "p"}
        with pytest.raises(errors.AuthenticationFailed, match="at the cluster scope"):
            c.get("v1", "Namespace", "flux-system")
    with _cluster(aks_kube, reader) as c:
        assert c.get("v1", "ConfigMap", "absent", "flux-system") is None
        with pytest.raises(errors.AuthenticationFailed, match='cannot get resource "secrets"'):
            c.read_secret_data("flux-system", "flux-system")


def test_from_endpoint_refreshes_the_token_between_requests(aks_kube):
    now = [50_000.0]

    class Clocked(JwtTestCredential):
        def get_token(self, *scopes, **kw):
            from azure.core.credentials import AccessToken

            token, _ = self.issue(scopes[0])
            return AccessToken(token, int(now[0]) + 3600)

    cred = Clocked()
    provider = TokenProvider(cred, clock=lambda: now[0])
    with Cluster.from_endpoint(aks_kube.url, aks_kube.ca_pem, provider) as c:
        c.server_version()
        c.server_version()
        assert len(cred.issued) == 1
        now[0] += 3400
        c.server_version()
        assert len(cred.issued) == 2
    assert len(aks_kube.entra_callers) == 3
    # each token was for the AKS server application
    assert {jwt.decode(t, options={"verify_signature": False})["aud"] for t in cred.issued} == {AKS_SERVER_APP_ID}


def test_from_endpoint_refuses_plain_http():
    with pytest.raises(errors.InvalidInput):
        Cluster.from_endpoint("http://127.0.0.1:1", b"", lambda: "t")


def test_user_credential_kubeconfig_is_the_kubelogin_form(arm_server, arm_credential, aks_kube):
    """What ARM returns (and what `az aks get-credentials` stores): an exec user for kubelogin."""
    from azure.mgmt.containerservice import ContainerServiceClient

    arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    client = ContainerServiceClient(arm_credential, SUB, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    creds = client.managed_clusters.list_cluster_user_credentials("rg-fleet", "aks-weu-1")
    doc = yaml.safe_load(creds.kubeconfigs[0].value)
    user = doc["users"][0]["user"]
    assert user["exec"]["command"] == "kubelogin" and AKS_SERVER_APP_ID in user["exec"]["args"]
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == aks_kube.ca_pem
    azure = yaml.safe_load(client.managed_clusters.list_cluster_user_credentials("rg-fleet", "aks-weu-1", format="azure").kubeconfigs[0].value)
    assert azure["users"][0]["user"]["auth-provider"]["config"]["apiserver-id"] == AKS_SERVER_APP_ID
    client.close()


def test_default_azure_credential_with_a_user_assigned_identity(arm_server, aks_kube, monkeypatch):
    """The real DefaultAzureCredential over the App Service managed identity endpoint, AZURE_CLIENT_ID
    selecting a user-assigned identity: ARM and the cluster see that identity."""
    from azure.identity import DefaultAzureCredential

    from tests.peers.entra_tokens import ManagedIdentityEndpoint

    uami = "44444444-0000-0000-0000-000000000000"
    mc = arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    aks_kube.bind(uami, "cluster-admin")
    with ManagedIdentityEndpoint(user_assigned={"uami-client-id": uami}) as mi:
        for key in ("AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT"):
            monkeypatch.delenv(key, raising=False)
        for key, value in {**mi.env(), "AZURE_CLIENT_ID": "uami-client-id"}.items():
            monkeypatch.setenv(key, value)
        cred = DefaultAzureCredential()
        aks = AksClient(cred, base_url=arm_server.url, connection_verify=arm_server.ca_file)
        ep = aks.endpoint(rid(mc))
        with Cluster.from_endpoint(ep.server, ep.ca_data, TokenProvider(cred)) as cluster:
            assert cluster.server_version() == "v1.36.2"
        aks.close()
    assert {r.oid for r in arm_server.request_log} == {uami} and aks_kube.entra_callers == [uami]
    assert mi.requests == [("https://management.azure.com", "uami-client-id"), (AKS_SERVER_APP_ID, "uami-client-id")]


def test_kubelogin_forms_are_served_by_the_token_provider_never_run(arm_server, arm_credential, aks_kube):
    from azure.mgmt.containerservice import ContainerServiceClient

    arm_server.add_cluster("aks-weu-1", kube=aks_kube)
    client = ContainerServiceClient(arm_credential, SUB, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    provider = TokenProvider(arm_credential)
    for fmt in ("exec", "azure"):
        text = client.managed_clusters.list_cluster_user_credentials("rg-fleet", "aks-weu-1", format=fmt).kubeconfigs[0].value.decode()
        with Cluster.from_kubeconfig(text, aks_token_provider=provider) as c:
            assert c.auth == "aks-entra" and c.server_version() == "v1.36.2"
        with pytest.raises(errors.InvalidInput, match="never run"):  # without a provider: a plugin like any other
            Cluster.from_kubeconfig(text)
        doc = yaml.safe_load(text)
        doc["clusters"][0]["cluster"]["server"] = doc["clusters"][0]["cluster"]["server"].replace("https://", "http://")
        with pytest.raises(errors.InvalidInput, match="only sent to an https:// server"):
            Cluster.from_kubeconfig(yaml.safe_dump(doc), aks_token_provider=provider)
    client.close()
    assert len(aks_kube.entra_callers) == 2


def test_an_unreachable_private_api_says_vnet_and_drops_the_cached_endpoint(arm_server, aks, aks_kube):
    from shared.clusters import ClusterAccess, ClusterRef

    mc = arm_server.add_cluster("aks-private", kube=aks_kube, private=True, private_fqdn="localhost")
    access = ClusterAccess(aks=aks, token_provider=TokenProvider(JwtTestCredential()))
    cluster = access.connect(ClusterRef.parse(cluster_resource_id=mc.id))
    aks.endpoint(rid(mc))
    assert arm_server.count() == 2  # cached
    aks_kube.stop()
    with cluster, pytest.raises(errors.UpstreamError) as e:
        cluster.server_version()
    assert e.value.field == "clusterResourceId"
    assert f"cluster unreachable: https://localhost:{aks_kube.url.rsplit(':', 1)[1]}" in str(e.value)
    assert "is a private cluster" in str(e.value) and "the Function needs VNet integration" in str(e.value)
    aks.endpoint(rid(mc))  # read again from ARM
    assert arm_server.count() == 4


def test_arm_answers_409_for_credentials_of_a_stopped_cluster(arm_server, arm_credential, aks_kube):
    """The peer's 409, through the SDK's own error map (the port stops at the GET before this)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.mgmt.containerservice import ContainerServiceClient

    arm_server.add_cluster("aks-weu-1", kube=aks_kube, power_state="Stopped")
    client = ContainerServiceClient(arm_credential, SUB, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    with pytest.raises(ResourceExistsError) as e:
        client.managed_clusters.list_cluster_user_credentials("rg-fleet", "aks-weu-1")
    assert e.value.status_code == 409 and e.value.error.code == "OperationNotAllowed"
    client.close()
