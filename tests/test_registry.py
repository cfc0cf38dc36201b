"""The cluster registry (issue #4) on Azurite's Table service: records, validation, the admin HTTP
endpoints through the indexed app, the CLI, and ``register_from_bootstrap``."""

from __future__ import annotations

import json
import uuid

import pytest

from shared import cli, services
from shared.errors import InvalidInput, NotFound
from shared.rotation.registry import ClusterRecord, InvalidRecord, Registry, SettingError, register_from_bootstrap


@pytest.fixture
def registry(azurite):
    reg = Registry.from_connection_string(azurite.connection_string, f"reg{uuid.uuid4().hex[:12]}")
    services.set_registry_factory(lambda: reg)
    try:
        yield reg
    finally:
        services.set_registry_factory(None)
        reg.close()


URL = "https://dev.azure.com/contoso/platform/_git/fleet"


def full(**kw) -> dict:
    body = {"name": "aks-weu-1", "kubeconfigSecret": "aks-weu-1-kubeconfig", "patSecret": "fleet-pat", "gitUrl": URL}
    body.update(kw)
    return body


@pytest.mark.parametrize("body, field", [
    (full(name="AKS_1"), "name"),
    (full(name=""), "name"),
    ({"kubeconfigSecret": "k"}, "name"),
    (full(kubeconfigSecret=None), "clusterResourceId"),  # one of the two is required
    (full(clusterResourceId="/subscriptions/x/resourceGroups/rg"), "clusterResourceId"),
    (full(clusterResourceId=f"/subscriptions/{'0' * 8}-0000-0000-0000-{'0' * 12}/resourceGroups/rg/providers/"
                            "Microsoft.ContainerService/managedClusters/aks"), "clusterResourceId"),  # and the secret too
    (full(kubeconfigSecret=None, context="admin", clusterResourceId=f"/subscriptions/{'0' * 8}-0000-0000-0000-{'0' * 12}"
          "/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks"), "context"),
    (full(localAccounts=True), "localAccounts"),
    (full(kubeconfigSecret="has space"), "kubeconfigSecret"),
    (full(namespace="Flux_System"), "namespace"),
    (full(sourceSecret="bad/name"), "sourceSecret"),
    (full(gitRepository="-x"), "gitRepository"),
    (full(gitAuth="kerberos"), "gitAuth"),
    (full(gitAuth="ssh", patSecret=None), "gitUrl"),  # an https URL: ssh records name the ssh:// URL synced from
    (full(gitAuth="ssh", patSecret=None, gitUrl=None), "gitUrl"),
    (full(patSecret=None), "patSecret"),
    (full(patSecret="bad_name"), "patSecret"),
    (full(username="a:b"), "username"),
    (full(allowInsecureHttp="yes"), "allowInsecureHttp"),
    (full(eventHubSecret="eh-token", eventHubName="flux"), "eventHubNamespace"),
    (full(eventHubSecret="eh-token", eventHubName="bad name!", eventHubNamespace="contoso-flux"), "eventHubName"),
    (full(eventHubSecret="eh-token", eventHubName="flux", eventHubNamespace="x"), "eventHubNamespace"),
    (full(gitAuth="none", patSecret=None), "gitAuth"),
    (full(color="blue"), "color"),
])
def test_invalid_records_name_the_field(body, field):
    with pytest.raises(InvalidInput) as err:
        ClusterRecord.from_dict(body)
    assert err.value.field == field


def test_record_defaults_and_json_round_trip():
    r = ClusterRecord.from_dict(full(eventHubSecret="eh-token", eventHubName="flux-events",
                                     eventHubNamespace="contoso-flux.servicebus.windows.net"))
    assert (r.namespace, r.source_secret, r.git_repository, r.git_auth, r.username) == \
        ("flux-system", "flux-system", "flux-system", "pat", "git")
    assert r.has_eventhub and ClusterRecord.from_dict(r.to_dict()) == r
    assert ClusterRecord.from_dict(full(gitAuth="entra-bearer", patSecret=None)).pat_secret is None


def test_crud_on_table_storage(registry):
    assert registry.list() == []
    a = ClusterRecord.from_dict(full(name="b-cluster"))
    b = ClusterRecord.from_dict(full(name="a-cluster", gitAuth="entra-bearer", patSecret=None))
    assert registry.upsert(a) == (a, True)
    assert registry.upsert(b) == (b, True)
    assert [r.name for r in registry.list()] == ["a-cluster", "b-cluster"]  # sorted
    changed = ClusterRecord.from_dict(full(name="b-cluster", namespace="flux"))
    assert registry.upsert(changed) == (changed, False)
    assert registry.get("b-cluster").namespace == "flux"
    registry.delete("a-cluster")
    with pytest.raises(NotFound):
        registry.get("a-cluster")
    with pytest.raises(NotFound):
        registry.delete("a-cluster")
    with pytest.raises(InvalidInput):
        registry.get("Bad Name")
    # a row that no longer validates (edited by hand) is skipped by list(), reported by scan(),
    # and can still be replaced or removed
    _break(registry, "broken")
    assert [r.name for r in registry.list()] == ["b-cluster"]
    records, invalid = registry.scan()
    assert [r.name for r in records] == ["b-cluster"] and [n for n, _ in invalid] == ["broken"]
    assert "gitAuth" in invalid[0][1]
    with pytest.raises(InvalidRecord) as err:
        registry.get("broken")
    assert err.value.status == 409 and "gitAuth" in str(err.value)
    fixed = ClusterRecord.from_dict(full(name="broken"))
    assert registry.upsert(fixed) == (fixed, False)
    assert registry.get("broken") == fixed
    _break(registry, "broken")
    registry.delete("broken")
    assert registry.scan() == ([registry.get("b-cluster")], [])


def _break(registry, name: str) -> None:
    registry._table.upsert_entity({"PartitionKey": "cluster", "RowKey": name, "name": name,
                                   "kubeconfigSecret": "k", "gitAuth": "kerberos"})


def test_register_from_bootstrap_creates_then_updates_keeping_eventhub(registry):
    r = register_from_bootstrap(registry=registry, name="aks-1", kubeconfig_secret="aks-1-kubeconfig", password_secret="pat-1",
                                git_url=URL)
    assert r.git_url == URL
    assert (r.git_auth, r.pat_secret, r.source_secret, r.git_repository) == ("pat", "pat-1", "flux-system", "flux-system")
    registry.upsert(ClusterRecord.from_dict({**r.to_dict(), "eventHubSecret": "eh", "eventHubName": "flux",
                                             "eventHubNamespace": "contoso-flux"}))
    r2 = register_from_bootstrap(registry=registry, name="aks-1", kubeconfig_secret="aks-1-kc2", password_secret="pat-2",
                                 namespace="gitops", secret_name="gitops-auth", username="flux", git_url=URL)
    stored = registry.get("aks-1")
    assert stored == r2
    assert (stored.kubeconfig_secret, stored.pat_secret, stored.namespace, stored.source_secret,
            stored.git_repository, stored.username) == ("aks-1-kc2", "pat-2", "gitops", "gitops-auth", "gitops", "flux")
    assert (stored.eventhub_secret, stored.eventhub_name, stored.eventhub_namespace) == ("eh", "flux", "contoso-flux")
    with pytest.raises(InvalidInput) as err:
        register_from_bootstrap(registry=registry, name="aks-1", kubeconfig_secret="kc", password_secret="bad_name", git_url=URL)
    assert err.value.field == "patSecret"
    # a bootstrap with withBearerToken registers the entra-bearer mode, no PAT
    r3 = register_from_bootstrap(registry=registry, name="aks-2", kubeconfig_secret="aks-2-kubeconfig", git_auth="entra-bearer",
                                 git_url=URL)
    assert (r3.git_auth, r3.pat_secret) == ("entra-bearer", None) and registry.get("aks-2") == r3
    # an invalid stored row is replaced by what the bootstrap knows
    _break(registry, "aks-3")
    assert register_from_bootstrap(registry=registry, name="aks-3", kubeconfig_secret="kc3", password_secret="pat-3",
                                   git_url=URL).git_auth == "pat"


def test_storage_settings():
    # a missing or bad app setting is the server's problem (500), named by the setting
    with pytest.raises(SettingError) as err:
        Registry.from_settings({})
    assert err.value.field == "REGISTRY_STORAGE_CONNECTION" and err.value.status == 500
    with pytest.raises(SettingError) as err:
        Registry.from_settings({"REGISTRY_TABLE": "no-dashes", "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert err.value.field == "REGISTRY_TABLE"
    reg = Registry.from_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert reg.table_name == "fluxclusters"


# -- HTTP endpoints through the indexed app -----------------------------------------------------------


@pytest.fixture(scope="session")
def registry_functions(functions_by_name):
    return functions_by_name


def _call(fn, method: str, name: str | None = None, body=None):
    import azure.functions as func

    url = "/api/registry/clusters" + (f"/{name}" if name else "")
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    resp = fn.get_user_function()(func.HttpRequest(method, url, route_params={"name": name} if name else {}, body=raw))
    text = resp.get_body().decode()
    return resp.status_code, (json.loads(text) if text else None)


def test_registry_endpoints(registry_functions, registry):
    one, many = registry_functions["registry_cluster"], registry_functions["registry_list"]
    for fn in (one, many):
        assert fn.get_trigger().get_dict_repr()["authLevel"].value == "admin"

    assert _call(many, "GET") == (200, {"clusters": []})
    status, body = _call(one, "PUT", "aks-1", {"kubeconfigSecret": "aks-1-kubeconfig", "patSecret": "pat", "gitUrl": URL})
    assert status == 201 and body["name"] == "aks-1" and body["gitAuth"] == "pat"
    status, body = _call(one, "PUT", "aks-1", {"kubeconfigSecret": "aks-1-kubeconfig", "patSecret": "pat-2", "gitUrl": URL})
    assert status == 200 and body["patSecret"] == "pat-2"
    assert _call(one, "GET", "aks-1")[1]["patSecret"] == "pat-2"
    assert [c["name"] for c in _call(many, "GET")[1]["clusters"]] == ["aks-1"]

    status, body = _call(one, "PUT", "aks-2", {"kubeconfigSecret": "k", "gitAuth": "kerberos"})
    assert status == 400 and body["error"]["field"] == "gitAuth"
    status, body = _call(one, "PUT", "aks-2", {"name": "other", "kubeconfigSecret": "k", "patSecret": "p"})
    assert status == 400 and body["error"]["field"] == "name"
    status, body = _call(one, "PUT", "aks-2", b"not json")
    assert status == 400 and body["error"]["field"] == "body"
    status, body = _call(one, "PUT", "aks-2", ["a list"])
    assert status == 400 and body["error"]["field"] == "body"
    status, body = _call(one, "PUT", "aks-2", {"kubeconfigSecret": "k", "patSecret": "p", "gitUrl": URL, "namespace": 7})
    assert status == 400 and body["error"]["field"] == "namespace"
    status, body = _call(one, "GET", "Not_A_Name")
    assert status == 400 and body["error"]["field"] == "name"
    assert _call(many, "GET")[1] == {"clusters": [_call(one, "GET", "aks-1")[1]]}  # nothing half-written

    _break(registry, "aks-9")  # an invalid stored row: listed apart, 409 on GET, replaceable
    status, body = _call(many, "GET")
    assert status == 200 and [i["name"] for i in body["invalid"]] == ["aks-9"] and "gitAuth" in body["invalid"][0]["error"]
    assert _call(one, "GET", "aks-9")[0] == 409
    assert _call(one, "PUT", "aks-9", {"kubeconfigSecret": "k9", "patSecret": "p", "gitUrl": URL})[0] == 200
    assert "invalid" not in _call(many, "GET")[1]

    assert _call(one, "DELETE", "aks-1") == (204, None)
    assert _call(one, "DELETE", "aks-1")[0] == 404
    assert _call(one, "GET", "aks-1")[0] == 404


SSH_URL = "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet"
INSTALL = {"version": "v2.9.2", "branch": "main", "path": "./clusters/aks-weu-1"}


def test_ssh_records_name_the_ssh_url_they_sync_from():
    """``gitAuth: ssh``: what an SSH bootstrap registers; rotation writes nothing for it, and its install
    options keep what an upgrade needs to render and push it again."""
    record = ClusterRecord.from_dict(full(gitAuth="ssh", patSecret=None, gitUrl=SSH_URL, install={
        **INSTALL, "sshHostkeyAlgos": ["rsa-sha2-512", "rsa-sha2-256"], "privateKeySecret": "fleet-ssh-key",
        "passwordSecret": "fleet-ssh-passphrase"}))
    assert record.git_auth == "ssh" and ClusterRecord.from_dict(record.to_dict()) == record
    # over HTTPS with a PAT, syncing over SSH from sshHostname: gitUrl is the SSH URL on that host
    hostname = ClusterRecord.from_dict(full(gitAuth="ssh", patSecret=None, gitUrl=SSH_URL, install={
        **INSTALL, "sshHostname": "ssh.dev.azure.com", "url": URL, "passwordSecret": "fleet-pat"}))
    assert hostname.install["url"] == URL


@pytest.mark.parametrize("overrides, install, field", [
    ({}, {"sshHostname": "ssh.dev.azure.com"}, "install.sshHostname"),  # SSH options on a pat record
    ({}, {"privateKeySecret": "k"}, "install.privateKeySecret"),
    ({}, {"sourceProvider": "azure"}, "install.sourceProvider"),
    ({"gitAuth": "workload-identity", "patSecret": None}, {"sourceProvider": "generic"}, "install.sourceProvider"),
    ({}, {"sourceProvider": "github"}, "install.sourceProvider"),
    ({}, {"workloadIdentity": {"clientId": "not-a-guid"}}, "install.workloadIdentity.clientId"),
    ({}, {"workloadIdentity": {"clientId": "8f3a0c4e-6b1d-4e2a-9c7f-0a1b2c3d4e5f", "components": ["image-automation-controller"]}},
     "install.workloadIdentity.components"),  # not installed
    ({}, {"workloadIdentity": "8f3a0c4e"}, "install.workloadIdentity"),
    ({}, {"sops": {"provider": "age"}}, "install.sops.provider"),
    ({"gitAuth": "ssh", "patSecret": None, "gitUrl": SSH_URL}, {"sshHostkeyAlgos": ["ssh-rsa"]}, "install.sshHostkeyAlgos"),
    ({"gitAuth": "ssh", "patSecret": None, "gitUrl": SSH_URL}, {"privateKeySecret": "bad_name"}, "install.privateKeySecret"),
    ({"gitAuth": "ssh", "patSecret": None, "gitUrl": SSH_URL}, {"url": URL}, "install.url"),  # url only with sshHostname
    ({"gitAuth": "ssh", "patSecret": None, "gitUrl": SSH_URL}, {"sshHostname": "a@b"}, "install.sshHostname"),
    # the recorded options would sync from another repository than gitUrl: an upgrade would move the cluster
    ({"gitAuth": "ssh", "patSecret": None, "gitUrl": SSH_URL}, {"sshHostname": "ssh.dev.azure.com",
                                                                "url": "https://dev.azure.com/contoso/platform/_git/other"}, "gitUrl"),
    ({"gitAuth": "ssh", "patSecret": None, "gitUrl": SSH_URL, "username": "flux"}, {}, "gitUrl"),  # user git in gitUrl
])
def test_install_options_of_each_git_auth_mode_are_checked(overrides, install, field):
    with pytest.raises(InvalidInput) as err:
        ClusterRecord.from_dict(full(**overrides, install={**INSTALL, **install}))
    assert err.value.field == field, err.value


def test_registry_put_and_cli_take_the_ssh_mode(registry_functions, registry, capsys):
    status, body = _call(registry_functions["registry_cluster"], "PUT", "aks-ssh",
                         {"kubeconfigSecret": "k", "gitAuth": "ssh", "gitUrl": SSH_URL})
    assert status == 201 and body["gitAuth"] == "ssh" and body["gitUrl"] == SSH_URL
    assert cli.main(["registry", "add", "aks-ssh-2", "--kubeconfig-secret", "k", "--git-auth", "ssh", "--git-url", SSH_URL]) == 0
    assert registry.get("aks-ssh-2").git_auth == "ssh"
    assert cli.main(["registry", "add", "aks-ssh-3", "--kubeconfig-secret", "k", "--git-auth", "ssh", "--git-url", URL]) == 1
    assert "✗ --git-url: must be the ssh:// URL" in capsys.readouterr().err


# -- CLI ----------------------------------------------------------------------------------------------


def test_cli_registry_add_list_remove(registry, capsys):
    assert cli.main(["registry", "add", "aks-1", "--kubeconfig-secret", "aks-1-kubeconfig", "--pat-secret", "fleet-pat",
                     "--git-url", URL, "--eventhub-secret", "eh", "--eventhub-name", "flux", "--eventhub-namespace", "contoso-flux"]) == 0
    assert "added aks-1" in capsys.readouterr().err
    assert cli.main(["registry", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["clusters"]
    assert [(c["name"], c["eventHubName"]) for c in listed] == [("aks-1", "flux")]
    assert cli.main(["registry", "add", "aks-2", "--kubeconfig-secret", "k", "--git-url", URL]) == 1  # pat mode needs --pat-secret
    assert "✗ --pat-secret: is required" in capsys.readouterr().err  # names the flag the user typed
    assert cli.main(["registry", "add", "aks-2", "--kubeconfig-secret", "k", "--pat-secret", "p", "--git-url", URL, "-n", "Bad"]) == 1
    assert "✗ --namespace:" in capsys.readouterr().err
    assert [r.name for r in registry.list()] == ["aks-1"]
    assert cli.main(["registry", "remove", "aks-1"]) == 0
    assert cli.main(["registry", "remove", "aks-1"]) == 1
    assert "not registered" in capsys.readouterr().err
    assert registry.list() == []


def test_cli_rotate_unknown_cluster_fails(registry, capsys):
    assert cli.main(["rotate", "--cluster", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
