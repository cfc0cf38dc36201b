"""Fleet operations end to end (issue #12, points 1 and 5): ``POST /api/fleet/bootstrap`` through the
indexed HTTP function, work items on an Azurite queue, the queue trigger driven with real
``func.QueueMessage`` objects by the host's listener (:mod:`tests.peers.functions_host`: dequeue
counts, redelivery, poison queue), state in Azurite Table storage, ``GET /api/operations/{id}``,
against one shared git repository and one Kubernetes API test server per cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.fleet import operations
from shared.fleet.store import FAILED, RUNNING, SUCCEEDED
from tests.fleet_peers import fleet  # noqa: F401 - fixture
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree


def _accepted(fleet, body, headers=None) -> str:
    resp, payload = fleet.post_bootstrap(body, headers)
    assert resp.status_code == 202, payload
    op_id = payload["id"]
    assert resp.headers["Location"] == f"/api/operations/{op_id}" == payload["location"]
    assert int(resp.headers["Retry-After"]) > 0
    return op_id


def _done(fleet, op_id):
    return lambda: fleet.store.get(op_id).state != RUNNING


def test_twenty_clusters_end_to_end_through_the_queue(fleet):
    clusters = fleet.add_clusters(20)
    op_id = _accepted(fleet, fleet.request(clusters))
    assert fleet.queued() == 20
    status = fleet.operation(op_id)
    assert status["state"] == "running" and status["counts"]["pending"] == 20
    assert [c["name"] for c in status["clusters"]] == [f"c{i:02d}" for i in range(20)]

    listener = fleet.listener()
    listener.drain(_done(fleet, op_id), timeout=180)
    status = fleet.operation(op_id)
    assert status["state"] == "succeeded", [(c["name"], c["error"]) for c in status["clusters"] if c["error"]]
    assert status["counts"]["succeeded"] == 20 and status["version"] == "v2.9.2"
    assert fleet.queued() == 0
    # every call got a real QueueMessage from the host's listener, once per cluster
    assert len(listener.calls) == 20 and {c["dequeueCount"] for c in listener.calls} == {1}

    # one repository, one folder per cluster, two Flux commits each; each cluster has Flux installed
    tree = read_tree(fleet.bare, "main")
    for i, server in enumerate(fleet.servers):
        assert f"clusters/c{i:02d}/flux-system/gotk-components.yaml" in tree
        assert f"clusters/c{i:02d}/flux-system/gotk-sync.yaml" in tree
        assert server.get_object("apps/v1", "Deployment", "source-controller", "flux-system") is not None
        assert server.get_object("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")["spec"]["path"] == f"./clusters/c{i:02d}"
    messages = [c["message"].strip() for c in git_log(fleet.bare, "main")]
    assert messages.count("Add Flux v2.9.2 component manifests") == 20 and messages.count("Add Flux sync manifests") == 20
    first = status["clusters"][0]
    assert first["result"]["repository"]["path"] == "./clusters/c00" and first["result"]["status"] == "succeeded"
    assert first["result"]["registry"] == {"status": "registered", "cluster": "c00"}
    # registered for rotation and upgrades, with the install options
    assert {r.name for r in fleet.registry.list()} == {f"c{i:02d}" for i in range(20)}
    assert fleet.registry.get("c07").install["path"] == "./clusters/c07"
    last = fleet.store.last_operations()
    assert last["c19"]["operation"] == op_id and last["c19"]["state"] == "succeeded"


def test_bad_input_is_refused_whole_naming_the_cluster_before_anything_is_queued(fleet):
    clusters = fleet.add_clusters(4)
    cases = [
        ({**clusters[3], "path": "../escape"}, None, "clusters[3].path"),
        ({"path": "clusters/x", "kubeconfigSecret": "c01-kubeconfig", "clusterResourceId": "/subscriptions/x"}, None,
         "clusters[3].clusterResourceId"),
        ({**clusters[3], "url": "https://example.com/x"}, None, "clusters[3].url"),
        ({**clusters[3], "path": "clusters/c01"}, None, "clusters[3].clusterName"),  # same name as clusters[1]
        ({**clusters[3], "kubeconfigSecret": "missing-kubeconfig"}, None, "clusters[3].kubeconfigSecret"),
        (clusters[3], {"components": ["flux-ui"]}, "components"),
        (clusters[3], {"path": "clusters/all"}, "path"),
        (clusters[3], {"timeout": "9m"}, "timeout"),
        (clusters[3], {"passwordSecret": "no-such-pat"}, "passwordSecret"),
        (clusters[3], {"registry": "evil.example/fluxcd"}, "registry"),  # not in FLUX_ALLOWED_REGISTRIES
        (clusters[3], {"namespace": "kube-system"}, "namespace"),  # a Kubernetes system namespace
    ]
    for last, shared, field in cases:
        body = fleet.request(clusters[:3] + [last], **(shared or {}))
        resp, payload = fleet.post_bootstrap(body)
        assert resp.status_code == 400, (field, payload)
        assert payload["error"]["field"] == field, payload
    resp, payload = fleet.post_bootstrap(fleet.request([]))
    assert resp.status_code == 400 and payload["error"]["field"] == "clusters"
    resp, payload = fleet.post_bootstrap(b"{not json")
    assert resp.status_code == 400 and payload["error"]["field"] == "body"
    assert fleet.store.operations() == [] and fleet.queued() == 0
    assert git_log(fleet.bare, "main") == []


def test_an_idempotency_key_returns_the_same_operation(fleet):
    body = fleet.request(fleet.add_clusters(2))
    key = {"Idempotency-Key": "3f1c7e2a-deploy-42"}
    first = _accepted(fleet, body, key)
    resp, again = fleet.post_bootstrap(body, key)
    assert resp.status_code == 202 and again["id"] == first and resp.headers["Idempotent-Replayed"] == "true"
    assert fleet.queued() == 2 and len(fleet.store.operations()) == 1
    resp, other = fleet.post_bootstrap({**body, "branch": "other"}, key)
    assert resp.status_code == 422 and other["error"]["code"] == "IdempotencyKeyReused"
    resp, bad = fleet.post_bootstrap(body, {"Idempotency-Key": "has space"})
    assert resp.status_code == 400 and bad["error"]["field"] == "Idempotency-Key"
    assert _accepted(fleet, body) != first  # no key: a new operation


def test_a_transient_failure_is_delivered_again_and_then_succeeds(fleet):
    clusters = fleet.add_clusters(1)
    good = fleet.vault_server.stored("c00-kubeconfig")["value"]
    # the cluster's API is down on the first attempt (its kubeconfig names a port nobody listens on)
    down = fleet.servers[0].kubeconfig(server="https://127.0.0.1:9")
    fleet.vault_server.seed_kubeconfig("c00-kubeconfig", down)
    op_id = _accepted(fleet, fleet.request(clusters))
    listener = fleet.listener()
    assert listener.step() == 1
    item = fleet.store.item(op_id, 0)
    assert item.state == "pending" and item.error["retrying"] and "cluster unreachable" in item.error["message"]
    fleet.vault_server.seed_kubeconfig("c00-kubeconfig", good)  # the API is back
    listener.drain(_done(fleet, op_id), timeout=60)
    status = fleet.operation(op_id)
    assert status["state"] == "succeeded" and status["clusters"][0]["attempt"] == 2
    assert [c["dequeueCount"] for c in listener.calls] == [1, 2]
    assert listener.calls[0]["outcome"].startswith("RetryLater")


def test_past_max_dequeue_count_the_cluster_fails_with_the_reason(fleet):
    clusters = fleet.add_clusters(2)
    fleet.vault_server.seed_kubeconfig("c01-kubeconfig", fleet.servers[1].kubeconfig(server="https://127.0.0.1:9"))
    op_id = _accepted(fleet, fleet.request(clusters))
    listener = fleet.listener()
    listener.drain(_done(fleet, op_id), timeout=120)
    status = fleet.operation(op_id)
    assert status["state"] == "failed" and status["counts"] == {**status["counts"], "succeeded": 1, "failed": 1}
    bad = status["clusters"][1]
    assert bad["attempt"] == operations.MAX_DEQUEUE_COUNT == 5
    assert bad["error"]["code"] == "UpstreamError" and bad["error"]["message"].startswith("gave up after 5 attempts")
    assert [c["dequeueCount"] for c in listener.calls if c["dequeueCount"] > 1] == [2, 3, 4, 5]
    assert fleet.queued() == 0


def test_a_message_whose_worker_always_died_goes_to_poison_and_fails_its_cluster(fleet):
    from azure.storage.queue import QueueClient

    clusters = fleet.add_clusters(1)
    op_id = _accepted(fleet, fleet.request(clusters))
    raw = QueueClient.from_connection_string(fleet.azurite.connection_string, fleet.queue_name)
    for _ in range(5):  # five deliveries whose instance was lost before the call completed
        got = list(raw.receive_messages(max_messages=1, visibility_timeout=1))
        assert got
        raw.update_message(got[0].id, got[0].pop_receipt, visibility_timeout=0)
    listener = fleet.listener()
    assert listener.poll_once() == 0  # past maxDequeueCount: moved to the poison queue, not called
    assert fleet.queued() == 0 and listener.calls == []
    poison = fleet.poison_listener()
    poison.drain(_done(fleet, op_id), timeout=30)
    status = fleet.operation(op_id)
    assert status["state"] == "failed"
    assert status["clusters"][0]["error"]["code"] == "Poison"
    assert "gave up after 5 attempts" in status["clusters"][0]["error"]["message"]


def test_killing_the_worker_between_two_items_loses_nothing(fleet, monkeypatch):
    from shared.fleet import worker
    from tests.peers.functions_host import _Killed, host_queue_settings

    clusters = fleet.add_clusters(3)
    op_id = _accepted(fleet, fleet.request(clusters))
    one_at_a_time = {**host_queue_settings(), "batchSize": 1, "newBatchThreshold": 0}
    listener = fleet.listener(settings=one_at_a_time, processing_visibility=2)
    original = worker.RUNNERS["bootstrap"]
    started = []

    def bootstrap_then_die(op, item, progress, deadline):
        started.append(item.name)
        if len(started) == 2:  # the instance is lost after the first cluster, as the second begins
            listener.kill()
            raise _Killed()
        return original(op, item, progress, deadline)

    monkeypatch.setitem(worker.RUNNERS, "bootstrap", bootstrap_then_die)
    listener.start()
    listener._thread.join(timeout=60)
    status = fleet.operation(op_id)
    assert status["counts"]["succeeded"] == 1 and status["counts"]["running"] == 1, status["counts"]
    assert status["state"] == "running"

    monkeypatch.setitem(worker.RUNNERS, "bootstrap", original)
    restarted = fleet.listener(settings=one_at_a_time)  # a new instance
    restarted.drain(_done(fleet, op_id), timeout=120)
    status = fleet.operation(op_id)
    assert status["state"] == "succeeded", status["clusters"]
    taken_over = next(c for c in status["clusters"] if c["name"] == started[1])
    assert taken_over["attempt"] == 2  # the same message, delivered again once its visibility ended
    messages = [c["message"].strip() for c in git_log(fleet.bare, "main")]
    assert messages.count("Add Flux sync manifests") == 3  # nothing done twice, nothing lost


def test_a_lease_that_runs_out_does_not_leave_a_cluster_running(fleet):
    from datetime import timedelta

    from shared.fleet.store import now

    clusters = fleet.add_clusters(1)
    op_id = _accepted(fleet, fleet.request(clusters))
    item = fleet.store.item(op_id, 0)
    # claimed by a worker that then vanished, its message gone too: only the lease is left
    fleet.store.update_item(item, state=RUNNING, attempt=1, message_id="gone", started_at=now() - timedelta(hours=1),
                            lease_until=now() - timedelta(minutes=1))
    status = fleet.operation(op_id)
    assert status["state"] == "failed"
    assert status["clusters"][0]["state"] == FAILED and status["clusters"][0]["error"]["code"] == "LeaseExpired"


def test_operation_endpoints_need_the_operator(fleet, monkeypatch):
    monkeypatch.setenv("AUTH_REQUIRED_ROLE", "Flux.Admin")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    resp, body = fleet.post_bootstrap(fleet.request([{"path": "clusters/x", "kubeconfigSecret": "x"}]))
    assert resp.status_code == 401
    resp, body = fleet.http("operation_status", "GET", "/api/operations/" + "0" * 32, route_params={"id": "0" * 32})
    assert resp.status_code == 401
    monkeypatch.delenv("AUTH_REQUIRED_ROLE")
    resp, body = fleet.http("operation_status", "GET", "/api/operations/" + "0" * 32, route_params={"id": "0" * 32})
    assert resp.status_code == 404
    resp, body = fleet.http("operation_status", "GET", "/api/operations/x'y", route_params={"id": "x'y"})
    assert resp.status_code == 404


def test_host_json_has_the_queue_settings_the_worker_counts_on():
    from tests.peers.functions_host import host_queue_settings

    settings = host_queue_settings()
    assert settings["maxDequeueCount"] == operations.MAX_DEQUEUE_COUNT
    assert settings["messageEncoding"] == "base64"  # what shared.ports.azure.queue sends
    hours, minutes, _ = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())["functionTimeout"].split(":")
    assert operations.RUN_BUDGET_SECONDS < int(hours) * 3600 + int(minutes) * 60 <= operations.LEASE_SECONDS
    assert operations.MAX_TIMEOUT_SECONDS < operations.RUN_BUDGET_SECONDS


def test_each_cluster_and_the_operation_are_announced_as_app_events(fleet, eventhub_peer):
    from shared import services
    from tests.test_eventhub_publish import publisher_for

    services.set_eventhub_publisher_factory(lambda: publisher_for(eventhub_peer))
    try:
        op_id = _accepted(fleet, fleet.request(fleet.add_clusters(2)))
        fleet.listener().drain(_done(fleet, op_id), timeout=60)
    finally:
        services.set_eventhub_publisher_factory(None)
    events = [json.loads(b) for b in eventhub_peer.bodies()]
    reasons = sorted(e["reason"] for e in events)
    assert reasons == ["BootstrapSucceeded", "BootstrapSucceeded", "FleetBootstrapSucceeded"]
    done = next(e for e in events if e["reason"] == "FleetBootstrapSucceeded")
    assert (done["involvedObject"]["kind"], done["involvedObject"]["name"]) == ("FleetCluster", "fleet")
    assert done["metadata"]["operationId"] == op_id and done["metadata"]["succeededClusters"] == "2"
    assert done["message"] == "bootstrap of 2 cluster(s): 2 succeeded"
    assert fleet.pat.encode() not in b"".join(eventhub_peer.bodies())
