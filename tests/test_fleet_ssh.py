"""A fleet of clusters bootstrapped over SSH (issues 11 and 12): such a cluster is registered in a Git
auth mode of its own (``gitAuth: ssh``: the source Secret holds an SSH deploy key from Key Vault),
appears in fleet status (its repository read over SSH with its key, the host key pinned by the
cluster's ``known_hosts``), is left alone by rotation (no Key Vault read, nothing sent, nothing
written), and is upgraded over SSH as it was bootstrapped: the new gotk-components.yaml pushed over
SSH, ``kustomization.yaml`` keeping the controllers' SSH patch, a re-run making no commit.

Peers: the SSH git server with Azure DevOps' behaviour and the smart-HTTP server over the same bare
repository, the Key Vault test server, the Kubernetes API test server with Flux's controllers played
on it (:mod:`tests.peers.flux_controllers`), Azurite (registry, fleet table and work queue), all
through the indexed functions."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import azure.functions as func
import pytest

from shared.fleet.store import RUNNING
from tests.fleet_peers import GOLDEN, fleet_queue  # noqa: F401 - fixture
from tests.peers.flux_controllers import FluxControllers
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree
from tests.test_bootstrap_e2e import call, cluster_registry, env  # noqa: F401 - fixtures
from tests.test_bootstrap_patches import EXPECTED as PATCHED_KUSTOMIZATION
from tests.test_bootstrap_patches import FLAG, _args
from tests.test_bootstrap_ssh import FOLDER, KEY_SECRET, flux_sync_bytes, secret_data, ssh, ssh_request  # noqa: F401

V283 = GOLDEN / "clickhouse_deployment-v2.8.3" / "gotk-components.yaml"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
V292_4 = GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml"  # the four default components, as Flux writes them
UPGRADE_TITLE = "Add Flux v2.9.2 component manifests"


def _bootstrap_at_283(functions_by_name, ssh, kube_server, fleet_queue, monkeypatch, **overrides):
    """Bootstrap aks-weu-1 at Flux v2.8.3 over SSH with a key the app generates (202 with its public
    key, authorised in "Azure DevOps", then 200), let Flux sync, and serve v2.9.2 from then on."""
    monkeypatch.setenv("FLUX_MANIFESTS", str(V283))
    body = ssh_request(ssh, version="v2.8.3", **overrides)
    status, first = call(functions_by_name, body)
    assert status == 202, first
    ssh["ssh"].authorize(first["sshKey"]["publicKey"])
    status, done = call(functions_by_name, body)
    assert status == 200, done
    assert done["registry"] == {"status": "registered", "cluster": "aks-weu-1"}
    controllers = FluxControllers(ssh["bare"], [kube_server])
    controllers.reconcile()  # Flux has synced: from now on it upgrades itself from Git
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    fleet = fleet_queue(git=ssh["git"], url=ssh["url"], bare=ssh["bare"], vault_server=ssh["vault"],
                        registry=ssh["registry"])
    return SimpleNamespace(fleet=fleet, controllers=controllers, ssh=ssh, kube=kube_server, public_key=first["sshKey"]["publicKey"])


@pytest.fixture
def over_ssh(functions_by_name, ssh, kube_server, fleet_queue, monkeypatch):
    world = _bootstrap_at_283(functions_by_name, ssh, kube_server, fleet_queue, monkeypatch)
    yield world
    world.controllers.stop()


def _status(fleet) -> dict:
    req = func.HttpRequest("GET", "http://localhost/api/fleet/status", headers={}, params={}, body=b"")
    resp = fleet.functions["fleet_status"].get_user_function()(req)
    assert resp.status_code == 200, resp.get_body()
    return json.loads(resp.get_body())


def _upgrade(fleet, **body) -> dict:
    resp, payload = fleet.http("fleet_upgrade", "POST", "/api/fleet/upgrade", {"version": "v2.9.2", "clusters": ["aks-*"], **body})
    assert resp.status_code == 202, payload
    fleet.listener().drain(lambda: fleet.store.get(payload["id"]).state != RUNNING, timeout=120)
    status = fleet.operation(payload["id"])
    assert status["state"] == "succeeded", [(c["name"], c["error"]) for c in status["clusters"]]
    return status["clusters"][0]["result"]


def _execs(ssh, command: str) -> int:
    return len([r for r in ssh["ssh"].requests if r.kind == "exec" and command in r.detail])


def _image(kube, name="source-controller") -> str:
    return kube.get_object("apps/v1", "Deployment", name, "flux-system")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_an_ssh_cluster_is_registered_shown_in_fleet_status_and_left_alone_by_rotation(over_ssh):
    from azure.functions.timer import TimerRequest

    ssh, kube, fleet = over_ssh.ssh, over_ssh.kube, over_ssh.fleet
    record = ssh["registry"].get("aks-weu-1")
    assert (record.git_auth, record.git_url, record.pat_secret) == ("ssh", ssh["ssh_url"], None)
    assert record.install["version"] == "v2.8.3" and "privateKeySecret" not in record.install  # the generated key

    # fleet status: the repository read over SSH with the cluster's key, the cluster in sync
    uploads = _execs(ssh, "git-upload-pack")
    body = _status(fleet)
    row = next(r for r in body["clusters"] if r["name"] == "aks-weu-1")
    head = git_log(ssh["bare"], "main")[0]["sha"]
    assert row["git"]["url"] == ssh["ssh_url"] and row["git"]["fluxVersion"] == "v2.8.3" and row["git"]["head"] == head
    assert "error" not in row["git"], row["git"]
    assert row["flux"]["version"] == "v2.8.3" and row["inSync"] is True and row["state"] == "ready", row
    assert row["pat"] is None  # no PAT anywhere
    assert _execs(ssh, "git-upload-pack") == uploads + 1
    assert not [r for r in ssh["git"].requests if "upload-pack" in r.path]  # not over HTTPS

    # rotation, the timer and "rotate now": nothing read from Key Vault, nothing sent, nothing written
    secret_before = kube.get_object("v1", "Secret", "flux-system", "flux-system")
    vault_reads, kube_calls = len(ssh["vault"].request_log), len(kube.request_log)
    ssh_events, git_calls = len(ssh["ssh"].requests), len(ssh["git"].requests)
    assert fleet.functions["rotate_credentials"].get_user_function()(TimerRequest(past_due=False)) is None
    req = func.HttpRequest("POST", "/api/rotation/clusters/aks-weu-1", route_params={"name": "aks-weu-1"}, body=b"")
    resp = fleet.functions["rotate_cluster_now"].get_user_function()(req)
    summary = json.loads(resp.get_body())
    assert resp.status_code == 200, summary
    assert summary["clusters"] == [{"cluster": "aks-weu-1", "status": "unchanged", "changes": [], "warnings": [], "errors": [],
                                    "durationMs": summary["clusters"][0]["durationMs"]}]
    assert ssh["vault"].request_log[vault_reads:] == []  # no PAT (nor the key) read
    assert kube.request_log[kube_calls:] == []  # the cluster is not even connected to
    assert ssh["ssh"].requests[ssh_events:] == [] and ssh["git"].requests[git_calls:] == []  # no ls-remote
    assert kube.get_object("v1", "Secret", "flux-system", "flux-system") == secret_before


def test_an_ssh_cluster_is_upgraded_over_ssh_keeping_its_patch_and_a_rerun_makes_no_commit(over_ssh):
    ssh, kube, fleet = over_ssh.ssh, over_ssh.kube, over_ssh.fleet
    commits = git_log(ssh["bare"], "main")
    secret = secret_data(ssh)
    before = _image(kube)

    # a dry run reads the repository over SSH and writes nothing
    diff = _upgrade(fleet, dryRun=True)
    assert (diff["fromVersion"], diff["toVersion"]) == ("v2.8.3", "v2.9.2") and diff["diff"]["file"]["changed"]
    assert git_log(ssh["bare"], "main") == commits

    receive_packs = _execs(ssh, "git-receive-pack")
    over_ssh.controllers.start()
    result = _upgrade(fleet, timeout="60s")
    assert (result["fromVersion"], result["toVersion"]) == ("v2.8.3", "v2.9.2")
    assert result["health"]["Kustomization"]["status"] == "ready" and result["health"]["images"]["status"] == "ready"
    assert [c["message"] for c in result["repository"]["commits"]] == [UPGRADE_TITLE]

    # the new components pushed over SSH; the sync file and the kustomization with its SSH patch kept
    tree = read_tree(ssh["bare"], "main")
    assert tree[FOLDER + "gotk-components.yaml"] == V292_4.read_bytes()
    assert tree[FOLDER + "gotk-sync.yaml"] == flux_sync_bytes(ssh["ssh_url"])
    assert tree[FOLDER + "kustomization.yaml"] == PATCHED_KUSTOMIZATION
    assert [c["message"].strip() for c in git_log(ssh["bare"], "main")] == [UPGRADE_TITLE] + [c["message"].strip() for c in commits]
    assert _execs(ssh, "git-receive-pack") == receive_packs + 1
    assert not [r for r in ssh["git"].requests if "receive-pack" in r.path]  # nothing over HTTPS
    assert {r.detail for r in ssh["ssh"].requests if r.kind == "auth" and not r.detail.startswith("refused")} == {"rsa-sha2-512"}

    # the cluster: the new controllers, still patched; the same key, no new one generated
    assert _image(kube) != before and _args(ssh["cluster"], "source-controller")[-1] == FLAG
    assert secret_data(ssh) == secret
    assert len(ssh["vault"].versions(KEY_SECRET)) == 1
    record = ssh["registry"].get("aks-weu-1")
    assert record.git_auth == "ssh" and record.install["version"] == "v2.9.2"

    # again: nothing to push
    again = _upgrade(fleet, timeout="60s")
    assert again["repository"]["commits"] == [] and (again["fromVersion"], again["toVersion"]) == ("v2.9.2", "v2.9.2")
    assert len(git_log(ssh["bare"], "main")) == len(commits) + 1
    assert _execs(ssh, "git-receive-pack") == receive_packs + 1


def test_a_cluster_bootstrapped_over_https_that_syncs_over_ssh_is_upgraded_over_https(
        functions_by_name, ssh, kube_server, fleet_queue, monkeypatch):
    """``sshHostname``: the upgrade pushes as the bootstrap did, over HTTPS with the recorded PAT; the
    GitRepository keeps syncing over SSH from that host."""
    host = f"127.0.0.1:{ssh['ssh'].port}"
    world = _bootstrap_at_283(functions_by_name, ssh, kube_server, fleet_queue, monkeypatch, url=ssh["url"],
                              allowInsecureHttp=True, passwordSecret="fleet-pat", sshHostname=host,
                              sshHostkeyAlgos=["rsa-sha2-512", "rsa-sha2-256"])  # not Azure DevOps' host: given
    try:
        sync_url = f"ssh://git@{host}/contoso/platform/_git/fleet"
        assert ssh["registry"].get("aks-weu-1").git_url == sync_url
        world.controllers.start()
        before = _execs(ssh, "git-")
        result = _upgrade(world.fleet, timeout="60s")
        assert [c["message"] for c in result["repository"]["commits"]] == [UPGRADE_TITLE]
        tree = read_tree(ssh["bare"], "main")
        assert tree[FOLDER + "gotk-components.yaml"] == V292_4.read_bytes()
        assert tree[FOLDER + "gotk-sync.yaml"] == flux_sync_bytes(sync_url)
        assert tree[FOLDER + "kustomization.yaml"] == PATCHED_KUSTOMIZATION
        pushes = [r for r in ssh["git"].requests if "receive-pack" in r.path and r.method == "POST"]
        assert pushes and {r.user for r in pushes} == {"git"}  # the PAT, over HTTP(S)
        assert _execs(ssh, "git-") == before  # SSH only scanned
        assert world.kube.get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")[
            "spec"]["url"] == sync_url
    finally:
        world.controllers.stop()


# -- POST /api/fleet/bootstrap over SSH -----------------------------------------------------------------


def _fleet_over_ssh(ssh, fleet_queue):
    return fleet_queue(git=ssh["git"], url=ssh["url"], bare=ssh["bare"], vault_server=ssh["vault"], registry=ssh["registry"])


def _ssh_fleet_body(ssh, clusters, **shared) -> dict:
    return {"url": ssh["ssh_url"], "branch": "main", "timeout": "0s", "clusters": clusters, **shared}


def test_a_fleet_is_bootstrapped_over_ssh_each_cluster_with_its_own_key(functions_by_name, ssh, kube_server, fleet_queue):
    """aks-weu-1 names its deploy key (``clusters[0].privateKeySecret``); aks-weu-2 was bootstrapped
    once alone, which generated its key (202) and had it authorised: the fleet finds it. No PAT is read,
    no key generated, every push goes over SSH."""
    from shared.ports.kube import Cluster
    from tests.peers.kube_api import KubeApiServer
    from tests.test_bootstrap_ssh import _rsa_pem

    second = KubeApiServer().start()
    try:
        ssh["vault"].seed_kubeconfig("aks-weu-2-kubeconfig", second.kubeconfig())
        private, public = _rsa_pem()
        ssh["vault"].seed_pat("weu-1-deploy-key", private, ssh["ssh_prefix"])
        ssh["ssh"].authorize(public)
        status, first = call(functions_by_name, ssh_request(ssh, path="clusters/aks-weu-2", kubeconfigSecret="aks-weu-2-kubeconfig"))
        assert status == 202 and first["sshKey"]["secret"] == "flux-ssh-aks-weu-2", first
        ssh["ssh"].authorize(first["sshKey"]["publicKey"])
        assert git_log(ssh["bare"], "main") == []
        fleet = _fleet_over_ssh(ssh, fleet_queue)
        vault_reads = len(ssh["vault"].request_log)

        resp, accepted = fleet.post_bootstrap(_ssh_fleet_body(ssh, [
            {"path": "clusters/aks-weu-1", "kubeconfigSecret": "aks-weu-1-kubeconfig", "privateKeySecret": "weu-1-deploy-key"},
            {"path": "clusters/aks-weu-2", "kubeconfigSecret": "aks-weu-2-kubeconfig"}]))
        assert resp.status_code == 202, accepted
        fleet.listener().drain(lambda: fleet.store.get(accepted["id"]).state != RUNNING, timeout=120)
        op = fleet.operation(accepted["id"])
        assert op["state"] == "succeeded", [(c["name"], c["error"]) for c in op["clusters"]]

        # the repository: each cluster's two commits, pushed over SSH, Flux's SSH sync file and the SSH patch
        messages = sorted(c["message"].strip() for c in git_log(ssh["bare"], "main"))
        assert messages == sorted(["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"] * 2)
        tree = read_tree(ssh["bare"], "main")
        for name in ("aks-weu-1", "aks-weu-2"):
            folder = f"clusters/{name}/flux-system/"
            assert tree[folder + "gotk-sync.yaml"] == flux_sync_bytes(ssh["ssh_url"]).replace(
                b"./clusters/aks-weu-1", f"./clusters/{name}".encode())
            assert tree[folder + "kustomization.yaml"] == PATCHED_KUSTOMIZATION
        assert _execs(ssh, "git-receive-pack") >= 4  # (a push that lost the race to the branch is retried)
        assert not [r for r in ssh["git"].requests if "receive-pack" in r.path]  # nothing over HTTPS
        # the vault: no PAT read, no key generated or written
        reads = [r.path for r in ssh["vault"].request_log[vault_reads:]]
        assert not [p for p in reads if "fleet-pat" in p], reads
        assert not [r for r in ssh["vault"].request_log[vault_reads:] if r.method not in ("GET",)]
        assert len(ssh["vault"].versions("flux-ssh-aks-weu-2")) == 1
        with pytest.raises(KeyError):
            ssh["vault"].stored("flux-ssh-aks-weu-1")

        # the clusters: each source Secret holds its own key, the GitRepository syncs over SSH, patched controllers
        keys = {"aks-weu-1": private, "aks-weu-2": ssh["vault"].stored("flux-ssh-aks-weu-2")["value"]}
        for name, cluster in (("aks-weu-1", ssh["cluster"]), ("aks-weu-2", Cluster.from_kubeconfig(second.kubeconfig()))):
            secret = cluster.get("v1", "Secret", "flux-system", "flux-system")
            data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
            assert data["identity"] == keys[name] and data["known_hosts"] == ssh["ssh"].known_hosts_line, name
            repo = cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
            assert repo["spec"]["url"] == ssh["ssh_url"] and repo["spec"]["secretRef"] == {"name": "flux-system"}
            assert _args(cluster, "source-controller")[-1] == FLAG

        # the registry: both in the ssh mode, each with the key it was bootstrapped with
        one, two = ssh["registry"].get("aks-weu-1"), ssh["registry"].get("aks-weu-2")
        assert (one.git_auth, one.git_url, one.pat_secret) == (two.git_auth, two.git_url, two.pat_secret) == \
            ("ssh", ssh["ssh_url"], None)
        assert one.install["privateKeySecret"] == "weu-1-deploy-key" and "privateKeySecret" not in two.install
        assert "PRIVATE KEY" not in json.dumps(op)
    finally:
        second.stop()


def test_a_fleet_over_ssh_without_a_key_for_a_cluster_is_refused_whole(functions_by_name, ssh, kube_server, fleet_queue):
    """A work item cannot stop at "give this new key access": a cluster with no key named and none
    stored is a 400 naming it, before anything is queued, generated or written."""
    from tests.test_bootstrap_ssh import _rsa_pem

    private, public = _rsa_pem()
    ssh["vault"].seed_pat("weu-1-deploy-key", private, ssh["ssh_prefix"])
    ssh["vault"].seed_kubeconfig("aks-weu-2-kubeconfig", ssh["kubeconfig"])
    fleet = _fleet_over_ssh(ssh, fleet_queue)
    one = {"path": "clusters/aks-weu-1", "kubeconfigSecret": "aks-weu-1-kubeconfig", "privateKeySecret": "weu-1-deploy-key"}
    two = {"path": "clusters/aks-weu-2", "kubeconfigSecret": "aks-weu-2-kubeconfig"}
    cases = [
        (_ssh_fleet_body(ssh, [one, two]), "clusters[1].privateKeySecret", "POST /api/bootstrap"),
        (_ssh_fleet_body(ssh, [one, {**two, "privateKeySecret": "no-such-key"}]), "clusters[1].privateKeySecret", "no-such-key"),
        (_ssh_fleet_body(ssh, [two], privateKeySecret="weu-1-deploy-key"), "privateKeySecret", "clusters[i].privateKeySecret"),
    ]
    for body, field, text in cases:
        resp, payload = fleet.post_bootstrap(body)
        assert resp.status_code == 400, payload
        assert payload["error"]["field"] == field and text in payload["error"]["message"], payload
        assert "PRIVATE KEY" not in json.dumps(payload)
    assert fleet.store.operations() == [] and fleet.queued() == 0
    with pytest.raises(KeyError):
        ssh["vault"].stored("flux-ssh-aks-weu-2")  # no key generated
    assert [r for r in ssh["vault"].request_log if r.method != "GET"] == []
    assert [r for r in ssh["ssh"].requests if r.kind == "exec"] == []  # no git command
    assert git_log(ssh["bare"], "main") == []
    assert [r for r in kube_server.request_log if r[0] != "GET"] == []
