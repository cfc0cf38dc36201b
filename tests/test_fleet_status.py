"""Fleet status (issue #12, point 3): ``GET /api/fleet/status`` and ``python -m shared fleet status``
over clusters bootstrapped through the fleet, Flux's controllers played on the Kubernetes API test
servers: versions in Git and on the cluster, Ready with reasons, applied revision against the branch
head, suspension, the last rotation, the PAT's expiry, the last operation; an unreachable cluster is a
row with its error."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.fleet.store import RUNNING
from tests.fleet_peers import fleet  # noqa: F401 - fixture
from tests.peers.flux_controllers import FluxControllers
from tests.peers.git_server import seed


@pytest.fixture
def bootstrapped(fleet):
    """Four clusters bootstrapped through the fleet; Flux has synced them."""
    clusters = fleet.add_clusters(4)
    # the PAT expires in ten days (Key Vault's exp), as its owner set it
    fleet.vault_server.seed_pat("fleet-pat", fleet.pat, fleet.url.split("/platform/")[0] + "/",
                                expires_on=datetime.now(timezone.utc) + timedelta(days=10))
    resp, body = fleet.post_bootstrap(fleet.request(clusters))
    assert resp.status_code == 202, body
    fleet.listener().drain(lambda: fleet.store.get(body["id"]).state != RUNNING, timeout=120)
    FluxControllers(fleet.bare, fleet.servers).reconcile()
    fleet.op_id = body["id"]
    return fleet


def _status(fleet, params=None):
    from urllib.parse import urlencode

    url = "/api/fleet/status" + (f"?{urlencode(params)}" if params else "")
    import azure.functions as func

    req = func.HttpRequest("GET", f"http://localhost{url}", headers={}, params=params or {}, body=b"")
    resp = fleet.functions["fleet_status"].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body())


def test_status_shows_each_cluster_from_git_and_from_the_cluster(bootstrapped):
    fleet = bootstrapped
    from shared.ports.kube import Cluster

    # c01: suspended by its team; c02: a new commit Flux has not applied yet; c03: its API is down
    with Cluster.from_kubeconfig(fleet.servers[1].kubeconfig()) as c:
        c.annotate("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system", {"x": "y"})
    ks = fleet.servers[1].get_object("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    with Cluster.from_kubeconfig(fleet.servers[1].kubeconfig()) as c:
        c.apply([{"apiVersion": ks["apiVersion"], "kind": "Kustomization",
                  "metadata": {"name": "flux-system", "namespace": "flux-system"}, "spec": {**ks["spec"], "suspend": True}}])
    head = seed(fleet.bare, {"clusters/c02/apps.yaml": b"# new\n"}, message="more apps")
    fleet.servers[3].stop()

    status, body = _status(fleet)
    assert status == 200, body
    rows = {r["name"]: r for r in body["clusters"]}
    assert list(rows) == ["c00", "c01", "c02", "c03"]
    ok = rows["c00"]
    assert ok["git"]["fluxVersion"] == "v2.9.2" and ok["flux"]["version"] == "v2.9.2"
    assert ok["git"]["head"] == head and ok["git"]["path"] == "./clusters/c00"
    assert ok["flux"]["images"]["source-controller"] == "ghcr.io/fluxcd/source-controller:v1.9.3"
    assert ok["gitRepository"]["ready"] is True and ok["kustomization"]["ready"] is True
    assert ok["kustomization"]["reason"] == "ReconciliationSucceeded"
    assert ok["kustomization"]["revision"] != f"main@sha1:{head}" and ok["inSync"] is False  # Flux has not seen "more apps"
    assert ok["state"] == "progressing"
    assert ok["lastOperation"]["operation"] == fleet.op_id and ok["lastOperation"]["state"] == "succeeded"
    assert ok["pat"]["secret"] == "fleet-pat" and 9 < ok["pat"]["daysLeft"] <= 10
    assert rows["c01"]["suspended"] is True and rows["c01"]["state"] == "suspended"
    down = rows["c03"]
    assert down["state"] == "unreachable" and "cluster unreachable" in down["error"]
    assert down["git"]["fluxVersion"] == "v2.9.2"  # Git is still read
    assert body["counts"] == {"progressing": 2, "suspended": 1, "unreachable": 1}

    FluxControllers(fleet.bare, fleet.servers[:3]).reconcile()  # Flux catches up
    status, body = _status(fleet, {"names": "c0[02]"})
    assert [r["name"] for r in body["clusters"]] == ["c00", "c02"]
    assert all(r["inSync"] and r["state"] == "ready" for r in body["clusters"])
    assert _status(fleet, {"names": "C0'"})[0] == 400


def test_status_reads_clusters_concurrently_with_a_bound(bootstrapped):
    fleet = bootstrapped
    for s in fleet.servers:
        s.latency = 0.05
        s.max_in_flight = 0
    from shared.fleet.status import StatusReader

    body = StatusReader(concurrency=2).read()
    assert len(body["clusters"]) == 4
    assert sum(s.max_in_flight for s in fleet.servers) >= 2  # several clusters at once...
    assert all(s.max_in_flight == 1 for s in fleet.servers)  # ...each read one request at a time


def test_the_last_rotation_result_is_shown(bootstrapped):
    from shared import rotation
    from shared.rotation import RotationSettings
    from tests.peers.entra_tokens import JwtTestCredential

    fleet = bootstrapped
    rotation.rotate(fleet.registry.list(), settings=RotationSettings(concurrency=4), credential=JwtTestCredential())
    status, body = _status(fleet)
    rows = {r["name"]: r for r in body["clusters"]}
    assert rows["c00"]["rotation"]["status"] == "unchanged"
    assert rows["c00"]["rotation"]["errors"] == [] and rows["c00"]["rotation"]["at"]


def test_cli_fleet_status_prints_a_table_and_json(bootstrapped, capsys):
    from shared.cli import main

    fleet = bootstrapped
    fleet.servers[3].stop()
    assert main(["fleet", "status"]) == 1  # a cluster is unreachable
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "STATE", "GIT", "CLUSTER", "READY", "REVISION", "SUSPENDED", "ROTATION", "PAT",
                              "LAST", "OPERATION", "MESSAGE"]
    c00 = out[1].split()
    assert c00[:5] == ["c00", "ready", "v2.9.2", "v2.9.2", "True/True"]
    assert "bootstrap succeeded" in out[1]
    assert out[4].split()[:2] == ["c03", "unreachable"] and "cluster unreachable" in out[4]
    assert main(["fleet", "status", "-o", "json", "--names", "c00"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in body["clusters"]] == ["c00"] and body["clusters"][0]["state"] == "ready"
    assert main(["fleet", "status", "--concurrency", "0"]) == 1
    assert "--concurrency" in capsys.readouterr().err
    assert fleet.pat not in json.dumps(body)


def test_a_record_whose_git_url_is_no_longer_allowed_is_a_row_with_the_error(fleet, monkeypatch):
    """The settings changed after registration: ``GIT_ALLOWED_HOSTS`` no longer lists the host of a
    record's ``gitUrl``. Its row carries the refusal (naming gitUrl and the setting), the git server
    gets no request (the PAT is not sent), and the cluster is still read."""
    from shared.rotation.registry import ClusterRecord

    fleet.add_clusters(1)
    head = seed(fleet.bare, {"clusters/c00/flux-system/gotk-components.yaml": b"# Flux Version: v2.9.2\n"})
    fleet.registry.upsert(ClusterRecord(
        name="c00", kubeconfig_secret="c00-kubeconfig", pat_secret="fleet-pat", git_url=fleet.url,
        allow_insecure_http=True, install={"version": "v2.9.2", "branch": "main", "path": "./clusters/c00"}).validate())
    status, body = _status(fleet)  # allowed: the repository is read with the PAT
    assert status == 200 and body["clusters"][0]["git"]["head"] == head, body
    assert fleet.git.requests

    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "dev.azure.com,*.visualstudio.com")
    asked = len(fleet.git.requests)
    status, body = _status(fleet)
    assert status == 200, body
    [row] = body["clusters"]
    assert "head" not in row["git"] and "gitUrl" in row["git"]["error"] and "GIT_ALLOWED_HOSTS" in row["git"]["error"], row
    assert len(fleet.git.requests) == asked  # not one request to the repository
    assert "cluster unreachable" not in json.dumps(row) and not row.get("unreachable")  # the cluster is still read
    assert fleet.pat not in json.dumps(body)
