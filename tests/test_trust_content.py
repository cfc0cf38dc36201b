"""Issue 7, items 3 and 4: what a kubeconfig, a cloned repository or a Flux distribution says can
run no command, read no local file, write nothing outside the clone and stall nothing. Each attack
goes through the real peers (git smart-HTTP server, Key Vault and Kubernetes API test servers,
the indexed HTTP trigger) and asserts what did not happen: no marker file, no request received,
no commit pushed, no file outside the clone changed, and the documented 4xx."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
import yaml

from tests.peers.git_server import log as git_log
from tests.test_bootstrap_e2e import call, cluster_registry, env, request  # noqa: F401 - fixtures

BILLION_LAUGHS = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\n"
    'data: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"l{i}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
)


# -- item 3: kubeconfigs ---------------------------------------------------------------------------


def _hostile_kubeconfig(kube_server, **user) -> str:
    return kube_server.kubeconfig(user=user)


def test_exec_kubeconfig_runs_nothing_and_is_400(functions_by_name, env, kube_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    marker = tmp_path / "MARKER"
    env["vault"].seed("aks-weu-1-kubeconfig", _hostile_kubeconfig(kube_server, exec={
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/bin/sh",
        "args": ["-c", f"touch {marker}; env >&2"]}))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["field"] == "kubeconfigSecret"
    assert body["error"]["message"].startswith("kubeconfigSecret: users[0].user.exec: exec credential plugins are never run")
    assert not marker.exists()
    assert kube_server.received == []
    assert git_log(env["bare"], "main") == []


def test_auth_provider_kubeconfig_runs_nothing_and_is_400(functions_by_name, env, kube_server, tmp_path):
    marker = tmp_path / "MARKER"
    env["vault"].seed("aks-weu-1-kubeconfig", _hostile_kubeconfig(kube_server, **{"auth-provider": {
        "name": "gcp", "config": {"cmd-path": "/bin/sh", "cmd-args": f"-c 'touch {marker}'"}}}))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert "users[0].user.auth-provider" in body["error"]["message"]
    assert not marker.exists() and kube_server.received == []


def test_token_file_is_never_read_nor_sent(functions_by_name, env, kube_server):
    env["vault"].seed("aks-weu-1-kubeconfig", _hostile_kubeconfig(kube_server, tokenFile="/proc/self/environ"))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["message"].startswith("kubeconfigSecret: users[0].user.tokenFile: names a local file")
    assert kube_server.received == []  # no request at all, so none carrying the environment
    assert git_log(env["bare"], "main") == []


@pytest.mark.parametrize("key", ["certificate-authority", "client-certificate", "client-key"])
def test_local_certificate_paths_are_400(functions_by_name, env, kube_server, key):
    cfg = yaml.safe_load(kube_server.kubeconfig())
    section = cfg["clusters"][0]["cluster"] if key == "certificate-authority" else cfg["users"][0]["user"]
    section[key] = "/etc/passwd"
    env["vault"].seed("aks-weu-1-kubeconfig", yaml.safe_dump(cfg))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    where = "clusters[0].cluster" if key == "certificate-authority" else "users[0].user"
    assert f"{where}.{key}: names a local file" in body["error"]["message"]
    assert kube_server.received == []


def test_a_token_with_a_line_break_is_400_and_never_logged(functions_by_name, env, kube_server, caplog):
    caplog.set_level(logging.DEBUG)
    token = f"tok-{uuid.uuid4().hex}"
    env["vault"].seed("aks-weu-1-kubeconfig", kube_server.kubeconfig(token=f"{token}\nX-Injected: yes"))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["field"] == "kubeconfigSecret"
    assert token not in json.dumps(body) and token not in caplog.text
    assert kube_server.received == []


def test_rotation_refuses_exec_kubeconfigs_per_cluster(functions_by_name, env, kube_server, keyvault, tmp_path):
    from shared.rotation import Rotator, RotationSettings
    from shared.rotation.registry import ClusterRecord
    from tests.peers.entra_tokens import JwtTestCredential

    marker = tmp_path / "MARKER"
    env["vault"].seed("evil-kubeconfig", _hostile_kubeconfig(kube_server, exec={
        "apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", f"touch {marker}"]}))
    env["vault"].seed("file-kubeconfig", _hostile_kubeconfig(kube_server, tokenFile="/proc/self/environ"))
    records = [ClusterRecord(name=n, kubeconfig_secret=f"{n}-kubeconfig", pat_secret="fleet-pat") for n in ("evil", "file")]
    summary = Rotator(keyvault=keyvault, credential=JwtTestCredential(), settings=RotationSettings(concurrency=2)).run(records)
    by_name = {c.cluster: c for c in summary.clusters}
    assert by_name["evil"].status == "failed"
    assert by_name["evil"].errors == [by_name["evil"].errors[0]]
    assert by_name["evil"].errors[0].startswith("cluster access: kubeconfig: users[0].user.exec: exec credential plugins")
    assert by_name["file"].errors[0].startswith("cluster access: kubeconfig: users[0].user.tokenFile: names a local file")
    assert not marker.exists() and kube_server.received == []
