"""Fleet upgrades (issue #12, point 2): ``POST /api/fleet/upgrade`` re-renders each registered cluster's
gotk-components.yaml at the new version with its recorded options and pushes it; Flux's controllers
(played on the Kubernetes API test servers by :mod:`tests.peers.flux_controllers`) apply it from Git; the
worker checks health up to the new revision and the new controller images; waves run in order and a
failed wave skips the later ones; a dry run gives each cluster's diff and writes nothing."""

from __future__ import annotations

import pytest

from shared.fleet.store import RUNNING
from tests.fleet_peers import GOLDEN, fleet, fleet_queue  # noqa: F401 - fixture
from tests.test_bootstrap_e2e import cluster_registry  # noqa: F401 - fixture
from tests.peers.flux_controllers import FluxControllers
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree

V283 = GOLDEN / "clickhouse_deployment-v2.8.3" / "gotk-components.yaml"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
V292_4 = GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml"  # the four default components, as Flux writes them
NAMES = ["dev-a", "dev-b", "prod-a"]


@pytest.fixture
def fleet_at_283(fleet, monkeypatch):
    """Three clusters bootstrapped at Flux v2.8.3 through the fleet, Flux's controllers following Git."""
    monkeypatch.setenv("FLUX_MANIFESTS", str(V283))
    clusters = fleet.add_clusters(3)
    for entry, name in zip(clusters, NAMES):
        entry.update(path=f"clusters/{name}", clusterName=name)
    resp, body = fleet.post_bootstrap(fleet.request(clusters, version="v2.8.3"))
    assert resp.status_code == 202, body
    listener = fleet.listener()
    listener.drain(lambda: fleet.store.get(body["id"]).state != RUNNING, timeout=120)
    assert fleet.operation(body["id"])["state"] == "succeeded"
    controllers = FluxControllers(fleet.bare, fleet.servers)
    controllers.reconcile()  # Flux has synced: from now on it upgrades itself from Git
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    fleet.controllers = controllers
    yield fleet
    controllers.stop()


def _upgrade(fleet, body) -> str:
    resp, payload = fleet.http("fleet_upgrade", "POST", "/api/fleet/upgrade", body)
    assert resp.status_code == 202, payload
    return payload["id"]


def _images(server, name="source-controller"):
    dep = server.get_object("apps/v1", "Deployment", name, "flux-system")
    return [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]


def test_an_upgrade_rolls_out_wave_after_wave_and_checks_revision_and_images(fleet_at_283):
    fleet = fleet_at_283
    assert _images(fleet.servers[0]) == ["ghcr.io/fluxcd/source-controller:v1.8.1"] or \
        _images(fleet.servers[0])[0].startswith("ghcr.io/fluxcd/source-controller:")
    before = {s.url: _images(s) for s in fleet.servers}
    fleet.controllers.start()
    op_id = _upgrade(fleet, {"version": "v2.9.2", "waves": [["dev-*"], ["prod-*"]], "timeout": "60s"})
    status = fleet.operation(op_id)
    assert [w["clusters"] for w in status["waves"]] == [["dev-a", "dev-b"], ["prod-a"]]
    fleet.listener().drain(lambda: fleet.store.get(op_id).state != RUNNING, timeout=180)
    status = fleet.operation(op_id)
    assert status["state"] == "succeeded", [(c["name"], c["error"]) for c in status["clusters"]]
    assert [w["state"] for w in status["waves"]] == ["succeeded", "succeeded"]
    # wave 2 started only after wave 1 was done
    dev_done = max(c["finishedAt"] for c in status["clusters"] if c["wave"] == 1)
    prod = next(c for c in status["clusters"] if c["name"] == "prod-a")
    assert prod["startedAt"] > dev_done
    result = prod["result"]
    assert (result["fromVersion"], result["toVersion"]) == ("v2.8.3", "v2.9.2")
    assert result["health"]["Kustomization"]["status"] == "ready"
    assert result["health"]["images"]["status"] == "ready"
    tree = read_tree(fleet.bare, "main")
    for name, server in zip(NAMES, fleet.servers):
        assert tree[f"clusters/{name}/flux-system/gotk-components.yaml"] == V292_4.read_bytes()
        assert _images(server) != before[server.url]
        assert _images(server)[0].startswith("ghcr.io/fluxcd/source-controller:")
        assert fleet.registry.get(name).install["version"] == "v2.9.2"
    upgrades = [c for c in git_log(fleet.bare, "main") if c["message"].strip() == "Add Flux v2.9.2 component manifests"]
    assert len(upgrades) == 3


def test_a_failed_wave_stops_the_later_ones(fleet_at_283):
    fleet = fleet_at_283
    fleet.controllers.fail(fleet.servers[1], "kustomize build failed: accumulating resources")
    prod_before = read_tree(fleet.bare, "main")["clusters/prod-a/flux-system/gotk-components.yaml"]
    fleet.controllers.start()
    op_id = _upgrade(fleet, {"version": "v2.9.2", "waves": [["dev-*"], ["prod-a"]], "timeout": "5s"})
    fleet.listener().drain(lambda: fleet.store.get(op_id).state != RUNNING, timeout=120)
    status = fleet.operation(op_id)
    assert status["state"] == "failed"
    by_name = {c["name"]: c for c in status["clusters"]}
    assert by_name["dev-a"]["state"] == "succeeded"
    assert by_name["dev-b"]["state"] == "failed" and by_name["dev-b"]["error"]["code"] == "HealthCheckFailed"
    assert "kustomize build failed" in by_name["dev-b"]["error"]["message"]
    assert by_name["prod-a"]["state"] == "skipped" and "wave 1 failed" in by_name["prod-a"]["error"]["message"]
    assert [w["state"] for w in status["waves"]] == ["failed", "skipped"]
    tree = read_tree(fleet.bare, "main")
    assert tree["clusters/prod-a/flux-system/gotk-components.yaml"] == prod_before  # never touched


def test_a_dry_run_gives_each_clusters_diff_and_writes_nothing(fleet_at_283):
    fleet = fleet_at_283
    commits = git_log(fleet.bare, "main")
    writes = [len([r for r in s.request_log if r.method != "GET"]) for s in fleet.servers]
    op_id = _upgrade(fleet, {"version": "v2.9.2", "waves": [["dev-*"], ["prod-*"]], "dryRun": True})
    fleet.listener().drain(lambda: fleet.store.get(op_id).state != RUNNING, timeout=60)
    status = fleet.operation(op_id)
    assert status["state"] == "succeeded" and status["dryRun"] is True
    assert len(status["waves"]) == 1  # nothing is written: no reason to wait between waves
    result = status["clusters"][0]["result"]
    assert result["dryRun"] and (result["fromVersion"], result["toVersion"]) == ("v2.8.3", "v2.9.2")
    file = result["diff"]["file"]
    assert file["path"] == "clusters/dev-a/flux-system/gotk-components.yaml" and file["changed"]
    assert "-# Flux Version: v2.8.3\n+# Flux Version: v2.9.2\n" in file["diff"]
    changed = {c["object"]: c for c in result["diff"]["objects"]["changed"]}
    images = changed["Deployment/flux-system/source-controller"]["images"]
    assert images["from"] != images["to"] and images["to"][0].startswith("ghcr.io/fluxcd/source-controller:")
    assert git_log(fleet.bare, "main") == commits
    assert [len([r for r in s.request_log if r.method != "GET"]) for s in fleet.servers] == writes


BAD_UPGRADES = [
    ({"waves": [["dev-*"]]}, "version"),
    ({"version": "2.9", "waves": [["dev-*"]]}, "version"),
    ({"version": "v2.9.2"}, "waves"),
    ({"version": "v2.9.2", "clusters": ["dev-a"], "waves": [["dev-a"]]}, "waves"),
    ({"version": "v2.9.2", "waves": [["dev-*"], ["staging-*"]]}, "waves[1][0]"),
    ({"version": "v2.9.2", "waves": [["dev-*"], []]}, "waves[1]"),
    ({"version": "v2.9.2", "clusters": ["Dev_A"]}, "clusters[0]"),
    ({"version": "v2.9.2", "clusters": ["*"], "dryRun": "yes"}, "dryRun"),
    ({"version": "v2.9.2", "clusters": ["*"], "force": True}, "force"),
    ({"version": "v9.9.9", "clusters": ["*"]}, "version"),
]


def test_bad_upgrade_requests_are_refused_naming_the_field(fleet_at_283):
    fleet = fleet_at_283
    for body, field in BAD_UPGRADES:
        resp, payload = fleet.http("fleet_upgrade", "POST", "/api/fleet/upgrade", body)
        assert resp.status_code == 400, (body, payload)
        assert payload["error"]["field"] == field, (body, payload)
    assert len(fleet.store.operations()) == 1  # the bootstrap only


def test_a_cluster_registered_without_install_options_is_refused(fleet):
    from shared.rotation.registry import ClusterRecord

    fleet.registry.upsert(ClusterRecord(name="by-hand", kubeconfig_secret="x-kubeconfig", pat_secret="fleet-pat",
                                        git_url=fleet.url, allow_insecure_http=True))
    resp, payload = fleet.http("fleet_upgrade", "POST", "/api/fleet/upgrade", {"version": "v2.9.2", "clusters": ["by-*"]})
    assert resp.status_code == 400 and payload["error"]["field"] == "clusters[0]"
    assert "no recorded install options" in payload["error"]["message"]


@pytest.mark.parametrize("fields, message", [
    # a workload identity record of an earlier release: no sourceProvider recorded next to its options
    ({"git_auth": "workload-identity", "pat_secret": None}, "before its workload identity options were recorded"),
    # synced over SSH, pushed over https: without the PAT's name the upgrade could not push
    ({"git_auth": "ssh", "pat_secret": None, "git_url": "ssh://git@127.0.0.1:2222/contoso/platform/_git/fleet",
      "install": {"sshHostname": "127.0.0.1:2222"}}, "names no PAT to push with"),
    # the Entra token as a password is rotated, but a bootstrap never registers it: no push credential recorded
    ({"git_auth": "entra-password", "pat_secret": None}, "uses Git auth 'entra-password'"),
])
def test_a_record_an_upgrade_cannot_push_for_is_refused_before_anything_runs(fleet, fields, message):
    from shared.rotation.registry import ClusterRecord

    install = {"version": "v2.8.3", "branch": "main", "path": "./clusters/old", **fields.pop("install", {})}
    if "sshHostname" in install:
        install["url"] = fleet.url
    record = {"name": "old-a", "kubeconfig_secret": "x-kubeconfig", "pat_secret": "fleet-pat", "git_url": fleet.url,
              "allow_insecure_http": True, "install": install, **fields}
    fleet.registry.upsert(ClusterRecord(**record))
    commits = git_log(fleet.bare, "main")
    resp, payload = fleet.http("fleet_upgrade", "POST", "/api/fleet/upgrade", {"version": "v2.9.2", "clusters": ["old-*"]})
    assert resp.status_code == 400 and payload["error"]["field"] == "clusters[0]", payload
    assert message in payload["error"]["message"]
    assert fleet.store.operations() == [] and git_log(fleet.bare, "main") == commits


def test_a_workload_identity_record_without_identity_patches_is_upgradable():
    """``sourceProvider: azure`` with the controllers' identity set up outside the app (no
    ``workloadIdentity`` at bootstrap): re-rendered as bootstrapped, without patches."""
    from shared.fleet.upgrade import _check_record, _options_body
    from shared.rotation.registry import ClusterRecord

    record = ClusterRecord(name="wi-a", kubeconfig_secret="x-kubeconfig", git_auth="workload-identity",
                           git_url="https://dev.azure.com/contoso/platform/_git/fleet",
                           install={"version": "v2.8.3", "branch": "main", "sourceProvider": "azure"}).validate()
    _check_record(record, "clusters[0]")
    body = _options_body(record, "v2.9.2")
    assert body["sourceProvider"] == "azure" and "workloadIdentity" not in body and "passwordSecret" not in body


# -- options the record keeps for the upgrade --------------------------------------------------------


def _drain_ok(fleet, op_id: str, timeout: float = 120) -> dict:
    fleet.listener().drain(lambda: fleet.store.get(op_id).state != RUNNING, timeout=timeout)
    status = fleet.operation(op_id)
    assert status["state"] == "succeeded", [(c["name"], c["error"]) for c in status["clusters"]]
    return status


def test_an_upgrade_keeps_the_git_repository_options_of_the_bootstrap(fleet, monkeypatch):
    """``recurseSubmodules`` and ``sparseCheckout`` are recorded, so the upgrade renders gotk-sync.yaml
    byte for byte as the bootstrap did and the GitRepository keeps them."""
    monkeypatch.setenv("FLUX_MANIFESTS", str(V283))
    clusters = fleet.add_clusters(1)
    clusters[0].update(path="clusters/dev-a", clusterName="dev-a")
    resp, body = fleet.post_bootstrap(fleet.request(clusters, version="v2.8.3", recurseSubmodules=True,
                                                    sparseCheckout=["clusters/dev-a", "infrastructure"]))
    assert resp.status_code == 202, body
    _drain_ok(fleet, body["id"])
    install = fleet.registry.get("dev-a").install
    assert install["recurseSubmodules"] is True and install["sparseCheckout"] == ["clusters/dev-a", "infrastructure"]
    sync_file = "clusters/dev-a/flux-system/gotk-sync.yaml"
    before = read_tree(fleet.bare, "main")[sync_file]
    assert b"  recurseSubmodules: true\n" in before and b"  sparseCheckout:\n  - clusters/dev-a\n  - infrastructure\n" in before
    controllers = FluxControllers(fleet.bare, fleet.servers)
    controllers.reconcile()
    monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
    controllers.start()
    try:
        status = _drain_ok(fleet, _upgrade(fleet, {"version": "v2.9.2", "clusters": ["dev-a"], "timeout": "60s"}))
    finally:
        controllers.stop()
    assert [c["message"] for c in status["clusters"][0]["result"]["repository"]["commits"]] == \
        ["Add Flux v2.9.2 component manifests"]
    tree = read_tree(fleet.bare, "main")
    assert tree[sync_file] == before
    assert tree["clusters/dev-a/flux-system/gotk-components.yaml"] == V292_4.read_bytes()
    spec = fleet.servers[0].get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")["spec"]
    assert spec["recurseSubmodules"] is True and spec["sparseCheckout"] == ["clusters/dev-a", "infrastructure"]
    assert fleet.registry.get("dev-a").install["sparseCheckout"] == ["clusters/dev-a", "infrastructure"]


def test_an_upgrade_of_a_git_server_behind_a_private_ca_keeps_its_ca(functions_by_name, ado_git_server_tls, git_pat,
                                                                     git_tls_ca, keyvault_server, keyvault, kube_server,
                                                                     cluster_registry, fleet_queue, monkeypatch):
    """``caFileSecret`` is recorded: the upgrade clones and pushes trusting that CA (dulwich) and the
    source Secret keeps ``ca.crt``; the registry credentials' secret (``registryCredsSecret``) is read
    again and the image pull Secret stays."""
    from shared import services
    from tests.test_bootstrap_e2e import call
    from tests.test_bootstrap_flags import REGISTRY_CREDS, _docker_config, _secret

    server = ado_git_server_tls
    server.create_repo("contoso", "platform", "fleet")
    url, bare = server.url("contoso", "platform", "fleet"), server.bare_path("contoso", "platform", "fleet")
    ca_pem = git_tls_ca.cert_pem.bytes().decode()
    keyvault_server.seed_pat("fleet-pat", git_pat, url.split("/platform/")[0] + "/")
    keyvault_server.seed("git-ca", ca_pem)
    keyvault_server.seed("acr-pull", REGISTRY_CREDS, tags={"flux-registries": "ghcr.io"})
    keyvault_server.seed_kubeconfig("tls-a-kubeconfig", kube_server.kubeconfig())
    services.set_keyvault_factory(lambda: keyvault)
    monkeypatch.setenv("FLUX_MANIFESTS", str(V283))
    try:
        status, body = call(functions_by_name, {
            "url": url, "path": "clusters/tls-a", "passwordSecret": "fleet-pat", "kubeconfigSecret": "tls-a-kubeconfig",
            "version": "v2.8.3", "caFileSecret": "git-ca", "imagePullSecret": "regcred", "registryCredsSecret": "acr-pull"})
        assert status == 200, body
        install = cluster_registry.get("tls-a").install
        assert (install["caFileSecret"], install["registryCredsSecret"]) == ("git-ca", "acr-pull")
        assert ca_pem not in str(install) and "s3cr3t" not in str(install)  # names only
        controllers = FluxControllers(bare, [kube_server])
        controllers.reconcile()
        monkeypatch.setenv("FLUX_MANIFESTS", str(V292))
        fleet = fleet_queue(git=server, url=url, bare=bare, vault_server=keyvault_server, registry=cluster_registry)
        sync_before = read_tree(bare, "main")["clusters/tls-a/flux-system/gotk-sync.yaml"]
        controllers.start()
        try:
            op = _drain_ok(fleet, _upgrade(fleet, {"version": "v2.9.2", "clusters": ["tls-a"], "timeout": "60s"}))
        finally:
            controllers.stop()
        result = op["clusters"][0]["result"]
        assert [c["message"] for c in result["repository"]["commits"]] == ["Add Flux v2.9.2 component manifests"]
        assert result["health"]["images"]["status"] == "ready"
        tree = read_tree(bare, "main")
        assert tree["clusters/tls-a/flux-system/gotk-sync.yaml"] == sync_before
        assert b"# Flux Version: v2.9.2\n" in tree["clusters/tls-a/flux-system/gotk-components.yaml"]
        from shared.ports.kube import Cluster

        with Cluster.from_kubeconfig(kube_server.kubeconfig()) as cluster:
            source = _secret(cluster, "flux-system")
            assert source["ca.crt"] == ca_pem and source["password"] == git_pat
            assert _secret(cluster, "regcred")[".dockerconfigjson"] == _docker_config("ghcr.io/fluxcd", REGISTRY_CREDS)
        assert "s3cr3t" not in str(op)
    finally:
        services.set_keyvault_factory(None)


# -- health failure, app events, latest ------------------------------------------------------------


def _events(peer) -> list[dict]:
    import json

    return [json.loads(b) for b in peer.bodies()]


def test_a_cluster_whose_flux_does_not_follow_git_fails_its_wave_and_the_events_say_so(fleet_at_283, eventhub_peer):
    """dev-b's controllers do not follow Git: it stays Ready at the revision it had, on the old images.
    Its item fails with HealthCheckFailed after ``timeout``, prod-a's wave is skipped (nothing pushed for
    it), and the wave's and the operation's failure reach the Event Hub as the app's own events."""
    from shared import services
    from tests.test_eventhub_publish import publisher_for

    fleet = fleet_at_283
    dev_a, dev_b, prod_a = fleet.servers
    old_revision = dev_b.get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")[
        "status"]["artifact"]["revision"]
    old_images = {s.url: _images(s) for s in fleet.servers}
    prod_before = read_tree(fleet.bare, "main")["clusters/prod-a/flux-system/gotk-components.yaml"]
    following = FluxControllers(fleet.bare, [dev_a, prod_a]).start()  # the fixture's (over all three) never starts
    services.set_eventhub_publisher_factory(lambda: publisher_for(eventhub_peer))
    try:
        op_id = _upgrade(fleet, {"version": "v2.9.2", "waves": [["dev-*"], ["prod-*"]], "timeout": "8s"})
        fleet.listener().drain(lambda: fleet.store.get(op_id).state != RUNNING, timeout=120)
    finally:
        services.set_eventhub_publisher_factory(None)
        following.stop()
    status = fleet.operation(op_id)
    assert status["state"] == "failed" and [w["state"] for w in status["waves"]] == ["failed", "skipped"]
    by_name = {c["name"]: c for c in status["clusters"]}
    assert by_name["dev-a"]["state"] == "succeeded", by_name["dev-a"]["error"]
    failed = by_name["dev-b"]
    assert failed["state"] == "failed" and failed["error"]["code"] == "HealthCheckFailed", failed["error"]
    assert f"at revision {old_revision}, waiting for main@sha1:" in failed["error"]["message"]
    assert failed["result"]["repository"]["commits"][0]["message"] == "Add Flux v2.9.2 component manifests"  # pushed
    assert by_name["prod-a"]["state"] == "skipped" and "wave 1 failed" in by_name["prod-a"]["error"]["message"]

    # dev-b: still at the revision and the images it had; prod-a never touched
    repo = dev_b.get_object("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["status"]["artifact"]["revision"] == old_revision
    assert _images(dev_b) == old_images[dev_b.url] and _images(prod_a) == old_images[prod_a.url]
    assert _images(dev_a) != old_images[dev_a.url]
    assert read_tree(fleet.bare, "main")["clusters/prod-a/flux-system/gotk-components.yaml"] == prod_before
    # the record follows Git, which holds v2.9.2 for dev-b too: a new upgrade pushes nothing and waits again
    assert {fleet.registry.get(n).install["version"] for n in ("dev-a", "dev-b")} == {"v2.9.2"}
    assert fleet.registry.get("prod-a").install["version"] == "v2.8.3"

    # the app's events: the failed wave, then the failed operation (about the fleet, with the counts)
    events = _events(eventhub_peer)
    assert [e["reason"] for e in events] == ["UpgradeWaveFailed", "FleetUpgradeFailed"], events
    wave, done = events
    for event in events:
        assert (event["involvedObject"]["kind"], event["involvedObject"]["name"]) == ("FleetCluster", "fleet")
        assert event["severity"] == "error" and event["metadata"]["operationId"] == op_id
        assert event["metadata"]["version"] == "v2.9.2"
    assert (wave["metadata"]["wave"], wave["metadata"]["waves"]) == ("1", "2")
    assert "dev-b" in wave["message"] and "dev-a" not in wave["message"]
    assert (done["metadata"]["succeededClusters"], done["metadata"]["failedClusters"], done["metadata"]["skippedClusters"]) == \
        ("1", "1", "1")
    assert fleet.pat.encode() not in b"".join(eventhub_peer.bodies())


def test_a_successful_rollout_announces_each_wave_and_the_operation(fleet_at_283, eventhub_peer):
    """``version: latest`` is resolved once, when the operation is accepted: every cluster gets that
    release (the distribution's, here v2.9.2) and records it, never ``latest``; each wave's success and
    the operation's reach the Event Hub."""
    from shared import services
    from tests.test_eventhub_publish import publisher_for

    fleet = fleet_at_283
    fleet.controllers.start()
    services.set_eventhub_publisher_factory(lambda: publisher_for(eventhub_peer))
    try:
        op_id = _upgrade(fleet, {"version": "latest", "waves": [["dev-a"], ["dev-b", "prod-a"]], "timeout": "60s"})
        assert fleet.store.get(op_id).spec["version"] == "v2.9.2" and fleet.store.get(op_id).spec["requested"] == "latest"
        status = _drain_ok(fleet, op_id, timeout=180)
    finally:
        services.set_eventhub_publisher_factory(None)
    assert status["version"] == "v2.9.2"
    assert {c["result"]["toVersion"] for c in status["clusters"]} == {"v2.9.2"}
    for name in NAMES:
        assert fleet.registry.get(name).install["version"] == "v2.9.2"
        assert read_tree(fleet.bare, "main")[f"clusters/{name}/flux-system/gotk-components.yaml"] == V292_4.read_bytes()
    events = _events(eventhub_peer)
    assert [e["reason"] for e in events] == ["UpgradeWaveSucceeded", "UpgradeWaveSucceeded", "FleetUpgradeSucceeded"], events
    assert [e["metadata"].get("wave") for e in events] == ["1", "2", None]
    assert {e["metadata"]["version"] for e in events} == {"v2.9.2"} and {e["severity"] for e in events} == {"info"}
    assert events[2]["metadata"]["succeededClusters"] == "3" and events[2]["metadata"]["operationId"] == op_id
