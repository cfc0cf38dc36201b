"""Concurrent server-side apply in the cluster port (issue #12, point 7): each stage's objects are in
flight at once, at most ``Cluster.apply_concurrency``, with Flux's order between the stages (CRDs and
Namespaces, wait until Established, then the rest), against the Kubernetes API test server holding
every answer back 20 ms as a remote API server would."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.ports.kube import ApplyError, Cluster

GOLDEN = str(Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"  # ../shared beside the checkout
         / "talos-v2.9.2-4comp" / "gotk-components.yaml")


@pytest.fixture(scope="module")
def components() -> list[dict]:
    with open(GOLDEN, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]


@pytest.fixture
def slow_server(kube_server):
    kube_server.latency = 0.02
    return kube_server


def _is_definition(kind: str) -> bool:
    return kind in ("CustomResourceDefinition", "Namespace")


def test_a_stage_is_applied_concurrently_within_the_bound_in_flux_order(slow_server, components):
    with Cluster.from_kubeconfig(slow_server.kubeconfig()) as cluster:
        assert cluster.apply_concurrency == 8
        changes = cluster.apply(components)
    assert 4 <= slow_server.max_in_flight <= 8, slow_server.max_in_flight
    # the change set keeps the order: stage one in file order, then the rest in file order
    stage_one = [o for o in components if _is_definition(o["kind"])]
    rest = [o for o in components if not _is_definition(o["kind"])]
    assert [(c.kind, c.name) for c in changes] == [(o["kind"], o["metadata"]["name"]) for o in stage_one + rest]
    assert {c.action for c in changes} == {"created"}
    # no object of stage two was written before every CRD and the Namespace were, and were read back
    # (the Established wait)
    log = slow_server.request_log
    patches = [(i, r.path) for i, r in enumerate(log) if r.method == "PATCH"]
    defs = [i for i, path in patches if "/customresourcedefinitions/" in path or path == "/api/v1/namespaces/flux-system"]
    others = [i for i, path in patches if i not in defs]
    assert len(defs) == len(stage_one) and len(others) == len(rest)
    assert max(defs) < min(others)
    waits = [i for i, r in enumerate(log) if r.method == "GET" and "/customresourcedefinitions/" in r.path]
    assert any(max(defs) < i < min(others) for i in waits)


def test_one_at_a_time_when_the_bound_is_one(slow_server, components):
    with Cluster.from_kubeconfig(slow_server.kubeconfig()) as cluster:
        cluster.apply_concurrency = 1
        cluster.apply(components[:6])
    assert slow_server.max_in_flight == 1


def test_dry_run_is_concurrent_too_and_persists_nothing(slow_server, components):
    with Cluster.from_kubeconfig(slow_server.kubeconfig()) as cluster:
        cluster.apply([o for o in components if _is_definition(o["kind"])])
        slow_server.max_in_flight = 0
        before = len(slow_server.objects("apps/v1", "Deployment"))
        cluster.dry_run_apply(components)
    assert slow_server.max_in_flight >= 4
    assert before == len(slow_server.objects("apps/v1", "Deployment")) == 0


def test_the_first_failing_object_in_order_is_reported(slow_server, components):
    def config_map(name, data):
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "flux-system"},
                "data": data}

    # the API refuses a ConfigMap whose data is not a map of strings (422); both are in flight together
    objs = components + [config_map("bad-1", {"a": 1}), config_map("good", {"a": "1"}), config_map("bad-2", {"b": 2})]
    with Cluster.from_kubeconfig(slow_server.kubeconfig()) as cluster:
        with pytest.raises(ApplyError) as info:
            cluster.apply(objs)
    assert (info.value.kind, info.value.name) == ("ConfigMap", "bad-1")
