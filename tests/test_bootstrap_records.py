"""What a bootstrap leaves for the fleet (issue #12): the registry record keeps the install options a
fleet upgrade renders again, and a push that loses a race with another cluster of the same branch is
retried with a fresh clone instead of failing the bootstrap."""

from __future__ import annotations

import json

import pytest

from shared import errors
from shared.rotation.registry import ClusterRecord
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree, seed
from tests.test_bootstrap_e2e import call, cluster_registry, env, request  # noqa: F401 - fixtures


def test_the_bootstrap_records_its_install_options(functions_by_name, env):
    status, body = call(functions_by_name, request(env, componentsExtra=["image-reflector-controller"],
                                                   logLevel="debug", interval="5m", authorName="Fleet Bot"))
    assert status == 200, body
    record = env["registry"].get("aks-weu-1")
    assert record.install == {
        "version": "v2.9.2", "branch": "main", "path": "./clusters/aks-weu-1", "interval": "5m0s",
        "components": ["source-controller", "kustomize-controller", "helm-controller", "notification-controller"],
        "componentsExtra": ["image-reflector-controller"], "registry": "ghcr.io/fluxcd", "networkPolicy": True,
        "watchAllNamespaces": True, "logLevel": "debug", "clusterDomain": "cluster.local",
        "authorName": "Fleet Bot", "authorEmail": "", "commitMessageAppendix": "", "tolerationKeys": [], "imagePullSecret": ""}
    # in the table: one property holding JSON text; over the API: an object
    entity = env["registry"]._table.get_entity("cluster", "aks-weu-1")
    assert json.loads(entity["install"])["logLevel"] == "debug"
    assert record.to_dict()["install"]["componentsExtra"] == ["image-reflector-controller"]


@pytest.mark.parametrize("install, field", [
    ({"branch": "main"}, "install.version"),
    ({"version": "v2.9.2"}, "install.branch"),
    ({"version": "latest", "branch": "main"}, "install.version"),
    ({"version": "v2.9.2", "branch": "main", "components": ["flux-ui"]}, "install.components"),
    ({"version": "v2.9.2", "branch": "main", "path": "clusters/x/"}, "install.path"),
    ({"version": "v2.9.2", "branch": "main", "logLevel": 3}, "install.logLevel"),
    ({"version": "v2.9.2", "branch": "main", "kubeconfig": "x"}, "install.kubeconfig"),
    ("{not json", "install"),
    ({"version": "v2.9.2", "branch": "main", "recurseSubmodules": "yes"}, "install.recurseSubmodules"),
    ({"version": "v2.9.2", "branch": "main", "path": "./clusters/x", "sparseCheckout": ["infrastructure"]},
     "install.sparseCheckout"),  # would not hold the sync path
    ({"version": "v2.9.2", "branch": "main", "sparseCheckout": ["../etc"]}, "install.sparseCheckout"),
    ({"version": "v2.9.2", "branch": "main", "caFileSecret": "not_a_secret_name"}, "install.caFileSecret"),
    ({"version": "v2.9.2", "branch": "main", "registryCredsSecret": "acr-pull"}, "install.registryCredsSecret"),
])
def test_install_options_are_checked_naming_the_field(install, field):
    base = {"name": "c1", "kubeconfigSecret": "c1-kubeconfig", "patSecret": "pat",
            "gitUrl": "https://dev.azure.com/o/p/_git/r"}
    with pytest.raises(errors.InvalidInput) as info:
        ClusterRecord.from_dict({**base, "install": install})
    assert info.value.field == field


def test_a_components_push_that_lost_a_race_is_retried_with_a_fresh_clone(functions_by_name, env, monkeypatch):
    from shared.bootstrap.runner import Bootstrapper

    seed(env["bare"], {"README.md": b"# fleet\n"}, message="initial")
    original = Bootstrapper._write_components
    raced = []

    def write_after_someone_else(self):
        if not raced:
            raced.append(True)
            # another cluster's bootstrap lands between our clone and our push
            seed(env["bare"], {"clusters/other/app.yaml": b"# another cluster\n"}, message="other cluster")
        return original(self)

    monkeypatch.setattr(Bootstrapper, "_write_components", write_after_someone_else)
    status, body = call(functions_by_name, request(env, path="clusters/aks-weu-1"))
    assert status == 200, body
    assert "◎ git conflict detected, retrying with a fresh clone" in body["log"]
    messages = [c["message"].strip() for c in git_log(env["bare"], "main")]
    assert messages[:3] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests", "other cluster"]
    tree = read_tree(env["bare"], "main")
    assert "clusters/other/app.yaml" in tree and "clusters/aks-weu-1/flux-system/gotk-components.yaml" in tree
