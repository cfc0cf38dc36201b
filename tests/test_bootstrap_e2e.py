"""End to end: the indexed HTTP trigger bootstraps a cluster from an Azure DevOps-style repository.

Peers (all on 127.0.0.1): the git smart-HTTP server (git http-backend, ADO URL layout, PAT Basic
auth), the Key Vault HTTPS test server behind the real SecretClient, and the Kubernetes API test
server behind the real kubernetes client, or the real cluster named by TEST_KUBECONFIG.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import azure.functions as func
import pytest

from shared import services
from shared.ports.kube import Cluster
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
REAL_CLUSTER = bool(os.environ.get("TEST_KUBECONFIG"))


@pytest.fixture
def cluster_registry(azurite):
    """The cluster registry on Azurite (Table storage), as the Function gets it."""
    import uuid

    from shared.rotation.registry import Registry

    reg = Registry.from_connection_string(azurite.connection_string, f"reg{uuid.uuid4().hex[:12]}")
    services.set_registry_factory(lambda: reg)
    yield reg
    services.set_registry_factory(None)
    reg.close()


@pytest.fixture
def env(ado_git_server, git_pat, keyvault_server, keyvault, kubeconfig_text, cluster_registry, monkeypatch):
    """A repository, a vault holding the PAT and the kubeconfig, and the distribution setting."""
    ado_git_server.create_repo("contoso", "platform", "fleet")
    # as the vault's owner stores them: the PAT tagged with where it may go, the kubeconfig marked
    org_prefix = ado_git_server.url("contoso", "platform", "fleet").split("/platform/")[0] + "/"
    keyvault_server.seed_pat("fleet-pat", git_pat, org_prefix)
    keyvault_server.seed_kubeconfig("aks-weu-1-kubeconfig", kubeconfig_text)
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    services.set_keyvault_factory(lambda: keyvault)
    yield {
        "git": ado_git_server,
        "bare": ado_git_server.bare_path("contoso", "platform", "fleet"),
        "url": ado_git_server.url("contoso", "platform", "fleet"),
        "cluster": Cluster.from_kubeconfig(kubeconfig_text),
        "pat": git_pat,
        "vault": keyvault_server,
        "registry": cluster_registry,
        "prefix": org_prefix,
        "kubeconfig": kubeconfig_text,
    }
    services.set_keyvault_factory(None)


def call(functions_by_name, body) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = func.HttpRequest("POST", "http://localhost/api/bootstrap", headers={"Content-Type": "application/json"}, body=raw)
    resp = functions_by_name["bootstrap"].get_user_function()(req)
    assert resp.mimetype == "application/json"
    return resp.status_code, json.loads(resp.get_body())


def request(env, **overrides) -> dict:
    body = {
        "url": env["url"],
        "branch": "main",
        "path": "clusters/aks-weu-1",
        "allowInsecureHttp": True,
        "passwordSecret": "fleet-pat",
        "kubeconfigSecret": "aks-weu-1-kubeconfig",
    }
    body.update(overrides)
    return body


def expected_sync(url: str) -> bytes:
    from shared.flux import sync

    return sync.generate(sync.SyncOptions(url=url, target_path="./clusters/aks-weu-1")).content.encode()


def snapshot(cluster: Cluster) -> dict:
    """resourceVersions of what bootstrap owns, to prove a re-run writes nothing."""
    objs = {
        ("v1", "Namespace", "flux-system", None),
        ("v1", "Secret", "flux-system", "flux-system"),
        ("apps/v1", "Deployment", "source-controller", "flux-system"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io", None),
        ("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system"),
    }
    out = {}
    for api, kind, name, ns in objs:
        obj = cluster.get(api, kind, name, ns)
        out[(kind, name)] = obj and (obj["metadata"].get("generation"), obj.get("spec"), obj.get("data"))
    return out


def test_bootstrap_end_to_end_then_rerun_changes_nothing(functions_by_name, env, caplog):
    import logging

    caplog.set_level(logging.DEBUG)  # every library's log lines, to check none carries the PAT
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert body["status"] == "succeeded"

    # The repository: two commits by Flux <>, files equal to Flux's bytes.
    commits = git_log(env["bare"], "main")
    assert [c["message"].strip() for c in commits] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"]
    assert {c["author"] for c in commits} == {"Flux <>"}
    tree = read_tree(env["bare"], "main")
    assert tree["clusters/aks-weu-1/flux-system/gotk-components.yaml"] == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()
    assert tree["clusters/aks-weu-1/flux-system/gotk-sync.yaml"] == expected_sync(env["url"])
    assert tree["clusters/aks-weu-1/flux-system/kustomization.yaml"] == (GOLDEN / "talos-v2.9.2-4comp" / "kustomization.yaml").read_bytes()
    assert body["repository"]["head"] == commits[0]["sha"]
    assert [c["sha"] for c in body["repository"]["commits"]] == [c["sha"] for c in reversed(commits)]

    # The cluster: components, the source secret and the sync objects.
    cluster = env["cluster"]
    crd = cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io")
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    for name in ("source-controller", "kustomize-controller", "helm-controller", "notification-controller"):
        assert cluster.get("apps/v1", "Deployment", name, "flux-system") is not None
    secret = cluster.get("v1", "Secret", "flux-system", "flux-system")
    assert base64.b64decode(secret["data"]["username"]) == b"git"
    assert base64.b64decode(secret["data"]["password"]).decode() == env["pat"]
    repo_obj = cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo_obj["spec"]["url"] == env["url"] and repo_obj["spec"]["ref"] == {"branch": "main"}
    ks = cluster.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    assert ks["spec"]["path"] == "./clusters/aks-weu-1"
    assert body["cluster"]["componentsInstalled"] is True
    counts = body["cluster"]
    assert counts["created"] + counts["configured"] + counts["unchanged"] == 32 + 1 + 2  # components, secret, sync
    if not REAL_CLUSTER:  # a real cluster may hold them from an earlier run
        assert counts["created"] == 35
    # Nothing reconciles on the test server: health is reported as pending, not invented.
    if not REAL_CLUSTER:
        assert {v["status"] for v in body["health"].values()} == {"pending"}

    # Second run: no commit, nothing changed on the cluster.
    before = snapshot(cluster)
    status, again = call(functions_by_name, request(env))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert len(git_log(env["bare"], "main")) == 2
    assert again["cluster"]["created"] == 0 and again["cluster"]["configured"] == 0, again["cluster"]["changes"]
    assert snapshot(cluster) == before

    # The cluster is registered for credential rotation, by name, with the secrets' names only.
    assert body["registry"] == {"status": "registered", "cluster": "aks-weu-1"}
    record = env["registry"].get("aks-weu-1")
    assert (record.kubeconfig_secret, record.pat_secret, record.git_auth, record.source_secret) == ("aks-weu-1-kubeconfig", "fleet-pat", "pat", "flux-system")
    assert record.git_url == env["url"]  # rotation sends the PAT only there

    # The PAT never shows in responses or logs (in plain text or base64, as in a Basic header).
    pat_b64 = base64.b64encode(f"git:{env['pat']}".encode()).decode()
    for text in (json.dumps(body) + json.dumps(again), caplog.text):
        assert env["pat"] not in text and pat_b64 not in text
    assert "► applying source secret \"flux-system/flux-system\"" in caplog.text


def test_rerun_skips_install_once_flux_has_applied(functions_by_name, env, kube_server):
    if REAL_CLUSTER:
        pytest.skip("plays kustomize-controller by writing status on the test server")
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    kube_server.set_status("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system", {"lastAppliedRevision": "main@sha1:" + body["repository"]["head"]})
    status, again = call(functions_by_name, request(env, componentsExtra=["image-reflector-controller", "image-automation-controller"]))
    assert status == 200, again
    # The new components are committed for Flux to apply; the runner does not install them itself.
    assert [c["message"] for c in again["repository"]["commits"]] == ["Add Flux v2.9.2 component manifests"]
    assert again["cluster"]["componentsInstalled"] is False
    assert env["cluster"].get("apps/v1", "Deployment", "image-reflector-controller", "flux-system") is None
    tree = read_tree(env["bare"], "main")
    assert tree["clusters/aks-weu-1/flux-system/gotk-components.yaml"] == V292.read_bytes()


def test_health_ready_when_controllers_report_the_pushed_revision(functions_by_name, env, kube_server):
    if REAL_CLUSTER:
        pytest.skip("plays the controllers by writing status on the test server")
    status, body = call(functions_by_name, request(env))
    head = body["repository"]["head"]
    for api, kind, rev in (
        ("source.toolkit.fluxcd.io/v1", "GitRepository", {"artifact": {
            "revision": f"main@sha1:{head}", "digest": "sha256:" + "0" * 64, "lastUpdateTime": "2026-11-21T00:00:00Z",
            "path": "gitrepository/flux-system/flux-system/x.tar.gz", "url": "http://source-controller/x.tar.gz"}}),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", {"lastAttemptedRevision": f"main/{head}"}),
    ):
        obj = kube_server.get_object(api, kind, "flux-system", "flux-system")
        kube_server.set_status(api, kind, "flux-system", "flux-system", {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok", "lastTransitionTime": "2026-11-21T00:00:00Z"}],
            **rev,
        })
    status, again = call(functions_by_name, request(env))
    assert status == 200
    assert again["health"]["GitRepository"]["status"] == "ready"
    assert again["health"]["Kustomization"]["status"] == "ready"


def _assert_untouched(env, kube_server):
    """No commit, and no write to the cluster that persisted (server-side dry runs only)."""
    assert git_log(env["bare"], "main") == []
    if not REAL_CLUSTER:
        writes = [r for r, q in zip(kube_server.request_log, kube_server.request_queries)
                  if r[0] != "GET" and q.get("dryRun") != "All"]
        assert writes == [], writes
        assert kube_server.get_object("v1", "Namespace", "flux-system") is None


def test_wrong_pat_fails_clearly_and_touches_nothing(functions_by_name, env, kube_server):
    env["vault"].seed_pat("fleet-pat", "not-the-pat", env["prefix"])
    status, body = call(functions_by_name, request(env))
    assert status == 502
    assert body["error"]["code"] == "AuthenticationFailed"
    assert "contoso/platform/_git/fleet" in body["error"]["message"]
    assert "not-the-pat" not in json.dumps(body)
    _assert_untouched(env, kube_server)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"components": ["source-controller", "kustomize-controller", "flux-ui"]}, "components"),
        ({"components": ["source-controller", "helm-controller"]}, "components"),
        ({"componentsExtra": ["source-watcher"]}, "componentsExtra"),
        ({"url": None}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"allowInsecureHttp": False}, "url"),
        ({"interval": "5 minutes"}, "interval"),
        ({"path": "../escape"}, "path"),
        ({"branch": "bad..name"}, "branch"),
        ({"version": "2.9.2"}, "version"),
        ({"version": "v2.8.3"}, "version"),
        ({"password": "inline-secret"}, "password"),
        ({"passwordSecret": "no-such-secret"}, "passwordSecret"),
        ({"kubeconfigSecret": "bad name!"}, "kubeconfigSecret"),
        ({"logLevel": "trace"}, "logLevel"),
        ({"tokenAuth": "yes"}, "tokenAuth"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_touches_nothing(functions_by_name, env, kube_server, overrides, field):
    body = {k: v for k, v in request(env, **overrides).items() if v is not None}
    status, resp = call(functions_by_name, body)
    assert status == 400, resp
    assert resp["error"]["field"] == field
    assert resp["error"]["message"]
    _assert_untouched(env, kube_server)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_malformed_body_is_400(functions_by_name, env, kube_server, raw):
    status, resp = call(functions_by_name, raw)
    assert status == 400
    assert resp["error"]["field"] == "body"
    _assert_untouched(env, kube_server)


def test_function_wiring(functions_by_name):
    fn = functions_by_name["bootstrap"]
    trigger = next(b for b in fn.get_bindings() if b.type == "httpTrigger")
    assert trigger.route == "bootstrap"
    assert [m.value if hasattr(m, "value") else m for m in trigger.methods] == ["POST"]
    assert str(trigger.auth_level).lower().endswith("admin")  # an operation endpoint (functions._auth)


def test_existing_folder_files_are_listed_and_a_user_kustomization_is_kept(functions_by_name, env):
    from tests.peers.git_server import seed

    readme = (GOLDEN / "clickhouse_deployment-v2.8.3" / "README.md").read_bytes()
    seed(env["bare"], {"clusters/aks-weu-1/flux-system/README.md": readme, "README.md": b"# fleet\n"})
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    tree = read_tree(env["bare"], "main")
    # As the clickhouse_deployment golden set: a comment-only README.md is listed as a resource.
    assert tree["clusters/aks-weu-1/flux-system/kustomization.yaml"] == (GOLDEN / "clickhouse_deployment-v2.8.3" / "kustomization.yaml").read_bytes()
    assert tree["README.md"] == b"# fleet\n"

    # A user's kustomization.yaml (e.g. the ADO SSH patch) is kept byte for byte on a re-run.
    custom = tree["clusters/aks-weu-1/flux-system/kustomization.yaml"] + b"patches:\n- patch: |\n    - op: add\n      path: /spec/template/spec/containers/0/args/-\n      value: --ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256\n  target:\n    kind: Deployment\n    name: (source-controller|image-automation-controller)\n"
    seed(env["bare"], {"clusters/aks-weu-1/flux-system/kustomization.yaml": custom})
    status, again = call(functions_by_name, request(env))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert read_tree(env["bare"], "main")["clusters/aks-weu-1/flux-system/kustomization.yaml"] == custom


def test_missing_branch_in_non_empty_repository_is_404(functions_by_name, env, kube_server):
    from tests.peers.git_server import seed

    seed(env["bare"], {"README.md": b"x\n"}, branch="develop")
    status, body = call(functions_by_name, request(env, branch="release"))
    assert status == 404, body
    assert "release" in body["error"]["message"]
    assert git_log(env["bare"], "develop")[0]["message"].strip() == "seed"
    assert len(git_log(env["bare"], "develop")) == 1


def test_sync_path_conflict_is_409_before_any_commit(functions_by_name, env):
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    status, body = call(functions_by_name, request(env, path="clusters/other"))
    assert status == 409, body
    assert 'sync path configuration ("./clusters/other") would overwrite path ("./clusters/aks-weu-1")' in body["error"]["message"]
    assert len(git_log(env["bare"], "main")) == 2
    assert "clusters/other/flux-system/gotk-components.yaml" not in read_tree(env["bare"], "main")


def test_unreachable_cluster_fails_before_any_commit(functions_by_name, env, kube_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", kube_server.kubeconfig(server=f"https://127.0.0.1:{port}"))
    status, body = call(functions_by_name, request(env))
    assert status == 502, body
    assert body["error"]["code"] == "UpstreamError"
    assert git_log(env["bare"], "main") == []


def test_rejected_cluster_credentials_fail_before_any_commit(functions_by_name, env, kube_server):
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", kube_server.kubeconfig(token="wrong-token-value"))
    status, body = call(functions_by_name, request(env))
    assert status == 502, body
    assert body["error"]["code"] == "AuthenticationFailed"
    assert "wrong-token-value" not in json.dumps(body)
    assert git_log(env["bare"], "main") == []


def test_garbage_kubeconfig_is_400(functions_by_name, env):
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", "this is not a kubeconfig")
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["field"] == "kubeconfigSecret"
    assert git_log(env["bare"], "main") == []


def test_registry_outage_is_reported_but_the_bootstrap_stands(functions_by_name, env, azurite):
    """Table storage unreachable (the real registry client, pointed at a closed port)."""
    import socket

    from shared.rotation.registry import Registry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Registry.from_connection_string(azurite.connection_string.replace(
        azurite.table_endpoint, f"http://127.0.0.1:{port}/devstoreaccount1"), "fluxclusters")
    services.set_registry_factory(lambda: down)
    status, body = call(functions_by_name, request(env, clusterName="weu-prod"))
    assert status == 200, body
    assert body["registry"]["status"] == "failed" and body["registry"]["cluster"] == "weu-prod"
    assert body["registry"]["message"]
    assert env["pat"] not in json.dumps(body)
    assert len(git_log(env["bare"], "main")) == 2


def test_bootstrap_with_an_entra_token_instead_of_a_pat(functions_by_name, env, entra_git_hosts):
    """``withBearerToken``: the Function's managed identity gets a token for Azure DevOps; the git
    server takes it as ``Authorization: Bearer``; the source Secret holds only ``bearerToken``."""
    from tests.peers.entra_tokens import JwtTestCredential

    cred = JwtTestCredential()
    services.set_credential_factory(lambda: cred)
    try:
        cred.on_issue.append(lambda scope, issued: env["git"].bearer_tokens.add(issued))
        body = {k: v for k, v in request(env, withBearerToken=True).items() if k != "passwordSecret"}
        status, resp = call(functions_by_name, body)
    finally:
        services.set_credential_factory(None)
    assert status == 200, resp
    assert cred.requests == [("499b84ac-1321-427f-aa17-267ca6975798/.default",)]
    token = cred.issued[-1]
    assert [c["message"].strip() for c in git_log(env["bare"], "main")] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"]
    assert any(r.user == "<bearer>" and "git-receive-pack" in r.path for r in env["git"].requests)
    secret = env["cluster"].get("v1", "Secret", "flux-system", "flux-system")
    assert base64.b64decode(secret["data"]["bearerToken"]).decode() == token
    if not REAL_CLUSTER:
        assert set(secret["data"]) == {"bearerToken"}
    assert token not in json.dumps(resp)
    assert resp["registry"]["status"] == "registered"
    assert env["registry"].get("aks-weu-1").git_auth == "entra-bearer"


def test_bearer_token_and_password_secret_together_is_400(functions_by_name, env):
    status, resp = call(functions_by_name, request(env, withBearerToken=True))
    assert status == 400
    assert resp["error"]["field"] == "passwordSecret"


def test_missing_key_vault_setting_is_a_500_naming_the_setting(functions_by_name, monkeypatch, tmp_path):
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    services.set_keyvault_factory(None)
    status, body = call(functions_by_name, {"url": "https://dev.azure.com/o/p/_git/r", "passwordSecret": "p", "kubeconfigSecret": "k"})
    assert status == 500
    assert body["error"]["code"] == "InvalidSetting"
    assert "KEY_VAULT_URL" in body["error"]["message"]


def test_flux_managed_by_another_tool_needs_force(functions_by_name, env, kubeconfig_text):
    """As ``flux bootstrap``'s confirmation: the AKS microsoft.flux extension installs Flux with Helm."""
    from shared.bootstrap import load_objects

    if REAL_CLUSTER:
        pytest.skip("would relabel the Flux CRDs of a real cluster")
    crd = next(o for o in load_objects(V292.read_text()) if o["metadata"]["name"] == "gitrepositories.source.toolkit.fluxcd.io")
    crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
    Cluster.from_kubeconfig(kubeconfig_text, field_manager="helm").apply([crd])

    status, body = call(functions_by_name, request(env))
    assert status == 409, body
    assert "managed by 'Helm'" in body["error"]["message"] and "force" in body["error"]["message"]
    assert git_log(env["bare"], "main") == []

    status, body = call(functions_by_name, request(env, force=True))
    assert status == 200, body
    assert any("taking over Flux managed by 'Helm'" in line for line in body["log"])


def _install_hook(bare: Path, name: str, script: str) -> None:
    hook = bare / "hooks" / name
    hook.write_text(script)
    hook.chmod(0o755)


def test_a_push_racing_the_sync_commit_is_retried_on_a_fresh_clone(functions_by_name, env):
    """Someone pushes to the branch between our two pushes (a real receive hook does it after the
    components push): the sync push is non-fast-forward, so, as Flux, the step is redone on a fresh
    clone and the other commit is kept."""
    _install_hook(env["bare"], "post-receive", """#!/bin/sh
[ -e moved ] && exit 0
touch moved
read old new ref
export GIT_INDEX_FILE="$PWD/race-index" GIT_AUTHOR_NAME=Other GIT_AUTHOR_EMAIL=o@example.com GIT_COMMITTER_NAME=Other GIT_COMMITTER_EMAIL=o@example.com
git read-tree "$new"
blob=$(echo "pushed meanwhile" | git hash-object -w --stdin)
git update-index --add --cacheinfo "100644,$blob,OTHER.md"
commit=$(git commit-tree "$(git write-tree)" -p "$new" -m "concurrent change")
git update-ref "$ref" "$commit" "$new"
rm -f "$GIT_INDEX_FILE"
""")
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert "◎ git conflict detected, retrying with a fresh clone" in body["log"]
    assert [c["message"].strip() for c in git_log(env["bare"], "main")] == [
        "Add Flux sync manifests", "concurrent change", "Add Flux v2.9.2 component manifests"]
    tree = read_tree(env["bare"], "main")
    assert tree["OTHER.md"] == b"pushed meanwhile\n"
    assert tree["clusters/aks-weu-1/flux-system/gotk-sync.yaml"] == expected_sync(env["url"])
    assert body["repository"]["head"] == git_log(env["bare"], "main")[0]["sha"]


def test_custom_namespace_and_empty_path(functions_by_name, env):
    """--namespace names the folder, the objects and their namespace; --secret-name keeps its
    default; an empty --path syncs the repository root (``./``)."""
    status, body = call(functions_by_name, request(env, namespace="gitops", path=""))
    assert status == 200, body
    tree = read_tree(env["bare"], "main")
    assert sorted(tree) == ["gitops/gotk-components.yaml", "gitops/gotk-sync.yaml", "gitops/kustomization.yaml"]
    assert "flux-system" not in tree["gitops/gotk-components.yaml"].decode()
    sync_text = tree["gitops/gotk-sync.yaml"].decode()
    assert "  path: ./\n" in sync_text and "  name: gitops\n  namespace: gitops\n" in sync_text
    cluster = env["cluster"]
    assert cluster.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "gitops", "gitops")["spec"]["path"] == "./"
    assert cluster.get("v1", "Secret", "flux-system", "gitops") is not None
    assert cluster.get("apps/v1", "Deployment", "source-controller", "gitops") is not None
    assert body["registry"] == {"status": "registered", "cluster": "aks-weu-1-kubeconfig"}
    assert env["registry"].get("aks-weu-1-kubeconfig").namespace == "gitops"

    status, again = call(functions_by_name, request(env, namespace="gitops", path=None))
    assert status == 200, again
    assert again["repository"]["commits"] == [] and again["cluster"]["created"] == again["cluster"]["configured"] == 0


def test_sync_path_is_compared_as_flux_normalises_it(functions_by_name, env, kubeconfig_text):
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    # The Kustomization as a user may have written it: no ./, a trailing slash.
    ks = env["cluster"].get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    Cluster.from_kubeconfig(kubeconfig_text, field_manager="kubectl").apply([{
        "apiVersion": ks["apiVersion"], "kind": "Kustomization",
        "metadata": {"name": "flux-system", "namespace": "flux-system"}, "spec": {**ks["spec"], "path": "clusters/aks-weu-1/"}}])
    # Flux's message quotes both paths as they are (the request's after SafeRelativePath).
    status, other = call(functions_by_name, request(env, path="clusters/other"))
    assert status == 409
    assert other["error"]["message"] == 'sync path configuration ("./clusters/other") would overwrite path ("clusters/aks-weu-1/") of existing Kustomization'
    status, root = call(functions_by_name, request(env, path=""))
    assert status == 409 and root["error"]["message"].startswith('sync path configuration ("") would overwrite')
    status, again = call(functions_by_name, request(env, path="./clusters/aks-weu-1/"))
    assert status == 200, again


def test_rerun_after_a_run_that_died_after_the_components_push(functions_by_name, env):
    """The repository already holds the component manifests (a previous run pushed them and
    failed before installing): the re-run commits only the sync manifests and installs."""
    from tests.peers.git_server import seed

    components = (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()
    seed(env["bare"], {"clusters/aks-weu-1/flux-system/gotk-components.yaml": components},
         message="Add Flux v2.9.2 component manifests", author="Flux <>")
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert "✔ component manifests are up to date" in body["log"]
    assert [c["message"] for c in body["repository"]["commits"]] == ["Add Flux sync manifests"]
    assert body["cluster"]["componentsInstalled"] is True
    assert env["cluster"].get("apps/v1", "Deployment", "kustomize-controller", "flux-system") is not None


def test_health_failure_is_reported_as_flux_does(functions_by_name, env, kube_server):
    if REAL_CLUSTER:
        pytest.skip("plays source-controller by writing status on the test server")
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    obj = kube_server.get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    kube_server.set_status("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system", {
        "observedGeneration": obj["metadata"]["generation"],
        "conditions": [{"type": "Ready", "status": "False", "reason": "AuthenticationFailed",
                        "message": "authentication required", "lastTransitionTime": "2026-11-21T00:00:00Z"}]})
    status, again = call(functions_by_name, request(env))
    assert status == 502
    assert again["status"] == "failed"
    assert again["error"] == {"code": "HealthCheckFailed",
                              "message": "bootstrap failed with 1 health check failure(s): GitRepository: authentication required"}
    assert "✗ GitRepository: authentication required" in again["log"]


def test_components_health_reads_the_deployments(functions_by_name, env, kube_server):
    if REAL_CLUSTER:
        pytest.skip("plays the Deployment controller by writing status on the test server")
    status, body = call(functions_by_name, request(env))
    assert body["health"]["components"]["status"] == "pending"
    assert "Deployment/flux-system/source-controller: Replicas: 0/1" in body["health"]["components"]["message"]
    for name in ("source-controller", "kustomize-controller", "helm-controller", "notification-controller"):
        dep = kube_server.get_object("apps/v1", "Deployment", name, "flux-system")
        kube_server.set_status("apps/v1", "Deployment", name, "flux-system", {
            "observedGeneration": dep["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})
    status, again = call(functions_by_name, request(env))
    assert again["health"]["components"] == {"status": "ready", "message": "4 Deployments available"}
    assert "✔ all components are healthy" in again["log"]


def test_the_run_stops_waiting_at_its_deadline(env, kubeconfig_text, git_pat):
    """The HTTP trigger gives the run a deadline inside Azure's 230 s: health waits are cut short
    there and reported as pending, not as failures of the user's timeout."""
    import time

    from shared import bootstrap as runner
    from shared.flux import distribution

    if REAL_CLUSTER:
        pytest.skip("a real cluster may become ready")
    opts = runner.BootstrapOptions(url=env["url"], path="./clusters/aks-weu-1", allow_insecure_http=True, timeout=120).validate()
    cluster = Cluster.from_kubeconfig(kubeconfig_text)
    slept = []

    def sleep(seconds):  # the run's waits, measured as asked for: a loaded machine makes the work slower, not them
        slept.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    result = runner.Bootstrapper(opts, runner.Credentials(password=git_pat), cluster, distribution.load(str(V292)),
                                 deadline=started + 1, sleep=sleep).run()
    cluster.close()
    # The health waits end at the deadline (1 s after the start, so at most 1 s of them), not after
    # the user's 120 s; the wall time bounds the rest (clone, push, apply) well below those 120 s.
    assert sum(slept) < 1.01, slept
    assert time.monotonic() - started < 90
    assert {v["status"] for v in result.health.values()} == {"pending"}
    assert all("HTTP time limit" in v["message"] for v in result.health.values())
    assert result.health_error() is None


@pytest.mark.parametrize(
    "overrides, field, absent",
    [
        ({"url": "https://user:hunter2-pat@dev.azure.com/o/p/_git/r"}, "url", "hunter2-pat"),
        ({"url": "ssh://git@ssh.dev.azure.com/v3/o/p/r"}, "url", None),
        ({"interval": "1.5us"}, "interval", None),
        ({"timeout": "151s"}, "timeout", None),
        ({"secretName": "Bad_Name"}, "secretName", None),
        ({"clusterName": "Not A Label"}, "clusterName", None),
        ({"path": "clusters/AKS_WEU"}, "clusterName", None),
        ({"authorEmail": "a>b"}, "authorEmail", None),
        ({"components": ["source-controller", "kustomize-controller"], "componentsExtra": ["bogus"]}, "componentsExtra", None),
    ],
)
def test_more_bad_input_is_400_before_anything_is_touched(functions_by_name, env, kube_server, overrides, field, absent):
    status, resp = call(functions_by_name, request(env, **overrides))
    assert status == 400, resp
    assert resp["error"]["field"] == field
    if absent:
        assert absent not in json.dumps(resp)
    _assert_untouched(env, kube_server)


def test_json_null_means_the_default(functions_by_name, env):
    status, body = call(functions_by_name, request(env, branch=None, componentsExtra=None, authorName=None, interval=None, timeout=None))
    assert status == 200, body
    assert {c["author"] for c in git_log(env["bare"], "main")} == {"Flux <>"}


def test_a_kustomization_file_of_another_recognised_name_is_kept(functions_by_name, env):
    from tests.peers.git_server import seed

    user = b"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- gotk-components.yaml\n- gotk-sync.yaml\n"
    seed(env["bare"], {"clusters/aks-weu-1/flux-system/kustomization.yml": user})
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    folder = {p for p in read_tree(env["bare"], "main") if p.startswith("clusters/aks-weu-1/flux-system/")}
    assert folder == {"clusters/aks-weu-1/flux-system/" + n for n in ("gotk-components.yaml", "gotk-sync.yaml", "kustomization.yml")}


def test_components_the_cluster_refuses_are_found_before_any_commit(functions_by_name, env, kube_server, tmp_path, monkeypatch):
    """A server-side dry run of the components (credentials, RBAC, schemas) runs before the first
    push: here the cluster refuses a CRD of a damaged distribution, and the repository stays empty."""
    damaged = tmp_path / "gotk-components.yaml"
    damaged.write_text(V292.read_text().replace("  scope: Namespaced\n", "  scope: Somewhere\n", 1))
    monkeypatch.setenv("FLUX_MANIFESTS", str(damaged))
    status, body = call(functions_by_name, request(env))
    assert status == 502, body
    assert body["error"]["code"] == "ApplyFailed"
    assert body["error"]["message"].startswith("CustomResourceDefinition/")
    _assert_untouched(env, kube_server)


def test_waiting_for_crds_is_cut_short_by_the_deadline(env, git_pat):
    """CRDs that take long to become Established do not hold the run past its deadline."""
    import time

    from shared import bootstrap as runner
    from shared.errors import UpstreamError
    from shared.flux import distribution
    from tests.peers.kube_api import KubeApiServer

    slow = KubeApiServer(crd_establish_delay=60).start()
    try:
        cluster = Cluster.from_kubeconfig(slow.kubeconfig())
        opts = runner.BootstrapOptions(url=env["url"], allow_insecure_http=True).validate()
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            runner.Bootstrapper(opts, runner.Credentials(password=git_pat), cluster, distribution.load(str(V292)),
                                deadline=started + 3).run()
        cluster.close()
    finally:
        slow.stop()
    assert "timed out" in str(err.value)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "spec, status, expected",
    [
        ({}, {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
              "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
         "ready"),
        ({}, {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 1,
              "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
         "pending"),  # Ready: 0/1
        ({}, {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
              "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
         "pending"),  # Pending termination: 1
        ({}, {"observedGeneration": 0, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
              "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
         "pending"),  # not observed yet
        ({}, {}, "pending"),  # no status at all: Replicas: 0/1
        ({}, {"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}, "failed"),
        ({"progressDeadlineSeconds": 2**31 - 1}, {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                                                  "availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}, "ready"),
    ],
)
def test_deployment_health_follows_kstatus(spec, status, expected):
    from shared.bootstrap.runner import _deployment_status

    dep = {"metadata": {"generation": 1}, "spec": {"replicas": 1, **spec}, "status": status}
    assert _deployment_status(dep)[0] == expected


def test_repeated_bootstraps_do_not_leak_file_descriptors(functions_by_name, env, kube_server):
    """Each request builds a cluster client (client certificates in memory files, a connection pool)
    and closes it: a warm Function host serves many requests."""
    if REAL_CLUSTER:
        pytest.skip("the local test server's client-certificate kubeconfig")
    import os as _os

    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", kube_server.kubeconfig(client_cert=True))
    for _ in range(2):  # warm up: pools of the vault and registry clients
        assert call(functions_by_name, request(env))[0] == 200
    before = len(_os.listdir("/proc/self/fd"))
    for _ in range(3):
        assert call(functions_by_name, request(env))[0] == 200
    assert len(_os.listdir("/proc/self/fd")) <= before


def test_a_leftover_bearer_token_in_the_source_secret_is_reported(functions_by_name, env):
    """Keys already in the Secret survive the update (Flux's reconcileSecret); source-controller
    would use a leftover bearerToken instead of the PAT, so the run says so."""
    cluster = env["cluster"]
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}])
    cluster.reconcile_secret("flux-system", "flux-system", {"bearerToken": "old-entra-token"})
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert any(line.startswith('⚠️ source secret "flux-system/flux-system" also holds key bearerToken') for line in body["log"])
    secret = cluster.get("v1", "Secret", "flux-system", "flux-system")
    assert set(secret["data"]) >= {"username", "password", "bearerToken"}
    assert "old-entra-token" not in json.dumps(body)


def test_a_failure_after_the_first_push_says_what_was_pushed(functions_by_name, env):
    """The server refuses the second push (as an Azure DevOps branch policy would): the error
    answer lists the commit already pushed and the progress log, and a re-run completes."""
    _install_hook(env["bare"], "pre-receive", """#!/bin/sh
if [ -e pushed-once ]; then echo "TF402455: Pushes to this branch are not permitted" >&2; exit 1; fi
touch pushed-once
""")
    status, body = call(functions_by_name, request(env))
    assert status == 502, body
    assert body["error"]["code"] == "UpstreamError" and "pre-receive hook declined" in body["error"]["message"]
    assert [c["message"] for c in body["commits"]] == ["Add Flux v2.9.2 component manifests"]
    assert body["log"][-1] == "✗ " + body["error"]["message"]
    assert env["pat"] not in json.dumps(body)

    (env["bare"] / "hooks" / "pre-receive").unlink()
    status, again = call(functions_by_name, request(env))
    assert status == 200, again
    assert [c["message"] for c in again["repository"]["commits"]] == ["Add Flux sync manifests"]


def test_read_only_cluster_credentials_fail_before_any_commit(functions_by_name, env, kube_server):
    """A kubeconfig whose user may only read (RBAC): the server-side dry run is refused with 403
    before anything is pushed, and nothing is written to the cluster."""
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", kube_server.kubeconfig(token=kube_server.readonly_token))
    status, body = call(functions_by_name, request(env))
    assert status == 502, body
    assert body["error"]["code"] == "AuthenticationFailed"
    assert git_log(env["bare"], "main") == []
    assert kube_server.get_object("v1", "Namespace", "flux-system") is None
    assert {r.status for r in kube_server.request_log if r.method != "GET"} <= {403}
