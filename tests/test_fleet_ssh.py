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
