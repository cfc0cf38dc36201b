"""The ``flux bootstrap git`` flags that shape what is written (issue 14), through the HTTP trigger and
the CLI against the local peers: ``--toleration-keys``/``tolerationKeys``, ``--image-pull-secret``,
``--registry-creds`` (CLI: ``--registry-creds-env``; HTTP: ``registryCredsSecret``, a Key Vault
secret its owner tagged ``flux-registries``), ``--ca-file`` (HTTP: ``caFileSecret``),
``--recurse-submodules``, ``--sparse-checkout``, ``--registry`` with a port, and ``--timeout`` bounding
the whole run."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.flux import distribution, install, sync
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree
from tests.test_bootstrap_e2e import V292, call, cluster_registry, env, request  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_CREDS = "robot$flux:s3cr3t-registry-pass"


def _secret(cluster, name: str) -> dict:
    obj = cluster.get("v1", "Secret", name, "flux-system")
    assert obj is not None, name
    return {"type": obj.get("type", "Opaque"), **{k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}}


def _docker_config(registry: str, creds: str) -> str:
    user, password = creds.split(":")
    auth = base64.b64encode(creds.encode()).decode()
    return '{"auths":{"%s":{"username":"%s","password":"%s","auth":"%s"}}}' % (registry, user, password, auth)


def test_http_fields_shape_the_files_and_the_secrets(functions_by_name, env, git_tls_ca, monkeypatch):
    """One request with every new field: gotk-components.yaml carries the tolerations and the pull
    secret as Flux's install templates write them, gotk-sync.yaml the submodule and sparse checkout
    options, the source Secret the CA as ca.crt, and the pull secret the registry credentials from
    Key Vault (never from the request)."""
    ca_pem = git_tls_ca.cert_pem.bytes().decode()
    env["vault"].seed("git-ca", ca_pem)
    env["vault"].seed("acr-pull", REGISTRY_CREDS, tags={"flux-registries": "ghcr.io"})
    status, body = call(functions_by_name, request(
        env, tolerationKeys=["CriticalAddonsOnly"], imagePullSecret="regcred", registryCredsSecret="acr-pull",
        caFileSecret="git-ca", recurseSubmodules=True, sparseCheckout=["clusters", "infrastructure"]))
    assert status == 200, body
    tree = read_tree(env["bare"])
    expected = install.generate(distribution.load(str(V292)), install.InstallOptions(
        toleration_keys=("CriticalAddonsOnly",), image_pull_secret="regcred", target_path="./clusters/aks-weu-1")).content
    components = tree["clusters/aks-weu-1/flux-system/gotk-components.yaml"].decode()
    assert components == expected
    assert components.count("      tolerations:\n      - key: CriticalAddonsOnly\n        operator: Exists\n") == 4
    assert components.count("      imagePullSecrets:\n      - name: regcred\n") == 4
    gotk_sync = tree["clusters/aks-weu-1/flux-system/gotk-sync.yaml"].decode()
    assert gotk_sync == sync.generate(sync.SyncOptions(url=env["url"], target_path="./clusters/aks-weu-1", recurse_submodules=True,
                                                       sparse_checkout=["clusters", "infrastructure"])).content
    assert ("  interval: 1m0s\n  recurseSubmodules: true\n  ref:\n    branch: main\n  secretRef:\n    name: flux-system\n"
            "  sparseCheckout:\n  - clusters\n  - infrastructure\n  url: ") in gotk_sync
    source = _secret(env["cluster"], "flux-system")
    assert source["ca.crt"] == ca_pem and source["password"] == env["pat"]
    pull = _secret(env["cluster"], "regcred")
    assert pull == {"type": "kubernetes.io/dockerconfigjson", ".dockerconfigjson": _docker_config("ghcr.io/fluxcd", REGISTRY_CREDS)}
    assert "► reconciling image pull secret regcred" in body["log"] and "✔ reconciled image pull secret regcred" in body["log"]
    assert "s3cr3t-registry-pass" not in json.dumps(body)
    # a re-run changes nothing
    status, again = call(functions_by_name, request(
        env, tolerationKeys=["CriticalAddonsOnly"], imagePullSecret="regcred", registryCredsSecret="acr-pull",
        caFileSecret="git-ca", recurseSubmodules=True, sparseCheckout=["clusters", "infrastructure"]))
    assert status == 200 and again["repository"]["commits"] == [] and "Secret/flux-system/regcred unchanged" in again["cluster"]["changes"]


@pytest.mark.parametrize("overrides, field, seed", [
    ({"registryCredsSecret": "acr-pull", "imagePullSecret": "regcred"}, "registryCredsSecret", ("acr-pull", {})),  # no tag
    ({"registryCredsSecret": "acr-pull", "imagePullSecret": "regcred"}, "registryCredsSecret",
     ("acr-pull", {"flux-registries": "contoso.azurecr.io"})),  # tagged for another registry
    ({"registryCredsSecret": "acr-pull"}, "registryCredsSecret", None),  # no imagePullSecret to write them to
    ({"registryCreds": REGISTRY_CREDS, "imagePullSecret": "regcred"}, "registryCreds", None),  # a credential in the request
    ({"caFileSecret": "fleet-pat"}, "caFileSecret", None),  # a PAT named as the CA: refused, never written
    ({"caFile": "/etc/ssl/private/key.pem"}, "caFile", None),  # a local path: the app reads none
    ({"tolerationKeys": ["not a key"]}, "tolerationKeys", None),
    ({"imagePullSecret": "Reg_Cred"}, "imagePullSecret", None),
    ({"sparseCheckout": ["../etc"]}, "sparseCheckout", None),
    ({"sparseCheckout": ["infrastructure"]}, "sparseCheckout", None),  # would not hold the sync path
    ({"registry": "https://ghcr.io/fluxcd"}, "registry", None),
])
def test_bad_new_fields_are_400_naming_the_field_before_anything_is_written(functions_by_name, env, overrides, field, seed):
    if seed:
        env["vault"].seed(seed[0], REGISTRY_CREDS, tags=seed[1])
    status, body = call(functions_by_name, request(env, **overrides))
    assert status == 400, body
    assert body["error"]["field"] == field, body
    assert git_log(env["bare"]) == []
    assert env["cluster"].get("v1", "Namespace", "flux-system") is None
    text = json.dumps(body)
    assert env["pat"] not in text and "s3cr3t-registry-pass" not in text


def test_registry_with_a_port_is_copied_into_every_image(functions_by_name, env, monkeypatch):
    monkeypatch.setenv("FLUX_ALLOWED_REGISTRIES", "myacr.azurecr.io:443/fluxcd")
    status, body = call(functions_by_name, request(env, registry="myacr.azurecr.io:443/fluxcd"))
    assert status == 200, body
    components = read_tree(env["bare"])["clusters/aks-weu-1/flux-system/gotk-components.yaml"].decode()
    images = [line.strip() for line in components.splitlines() if line.strip().startswith("image: ")]
    assert images and all(i.startswith("image: myacr.azurecr.io:443/fluxcd/") for i in images), images


# -- CLI ------------------------------------------------------------------------------------------------

def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("FLUX_MANIFESTS", "GIT_PASSWORD")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "shared", *args], cwd=ROOT, env=full, capture_output=True, timeout=120)


def test_cli_ca_file_reaches_dulwich_and_the_source_secret(ado_git_server_tls, git_pat, kubeconfig_text, tmp_path):
    """An Azure DevOps Server behind a private CA: without --ca-file the clone fails on the
    certificate; with it the bootstrap runs and the source Secret holds the file as ca.crt."""
    server = ado_git_server_tls
    server.create_repo("contoso", "platform", "fleet")
    url = server.url("contoso", "platform", "fleet")
    assert url.startswith("https://127.0.0.1:")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    base = ["bootstrap", "git", "--url", url, "--token-auth", "--kubeconfig", str(kubeconfig), "--manifests", str(V292),
            "--path", "clusters/tls", "--timeout", "0s"]
    out = cli(*base, env={"GIT_PASSWORD": git_pat, "GIT_ALLOWED_HOSTS": "127.0.0.1"})
    assert out.returncode == 1
    assert "certificate" in out.stderr.decode().strip().splitlines()[-1].lower()
    assert git_log(server.bare_path("contoso", "platform", "fleet")) == []

    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    out = cli(*base, "--ca-file", str(not_pem), env={"GIT_PASSWORD": git_pat, "GIT_ALLOWED_HOSTS": "127.0.0.1"})
    assert out.returncode == 1 and out.stderr.decode().strip().splitlines() == [
        f"✗ --ca-file: {not_pem} holds no PEM certificates (-----BEGIN CERTIFICATE-----); give the CA the Git server's "
        "certificate chains to, in PEM"]

    out = cli(*base, "--ca-file", server.ca_file, env={"GIT_PASSWORD": git_pat, "GIT_ALLOWED_HOSTS": "127.0.0.1"})
    assert out.returncode == 0, out.stderr.decode()
    assert len(git_log(server.bare_path("contoso", "platform", "fleet"))) == 2
    from shared.ports.kube import Cluster

    cluster = Cluster.from_kubeconfig(kubeconfig_text)
    try:
        assert _secret(cluster, "flux-system")["ca.crt"] == Path(server.ca_file).read_text()
    finally:
        cluster.close()


def test_cli_flags_shape_the_files_and_the_pull_secret(ado_git_server, git_pat, kubeconfig_text, tmp_path):
    ado_git_server.create_repo("contoso", "platform", "fleet")
    url = ado_git_server.url("contoso", "platform", "fleet")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    base = ["bootstrap", "git", "--url", url, "--token-auth", "--allow-insecure-http", "--kubeconfig", str(kubeconfig),
            "--manifests", str(V292), "--path", "clusters/cli-flags", "--timeout", "0s"]
    environ = {"GIT_PASSWORD": git_pat, "ACR_CREDS": REGISTRY_CREDS}
    # credentials are never taken from argv; the env variable needs a Secret to go to
    out = cli(*base, "--registry-creds", REGISTRY_CREDS, env=environ)
    assert out.returncode == 1 and "s3cr3t" not in out.stderr.decode()
    assert out.stderr.decode().strip().splitlines()[-1].startswith("✗ --registry-creds: is not read from the command line")
    out = cli(*base, "--registry-creds-env", "ACR_CREDS", env=environ)
    assert out.stderr.decode().strip().splitlines()[-1].startswith("✗ --registry-creds-env: requires --image-pull-secret")
    out = cli(*base, "--registry-creds-env", "ACR_CREDS", "--image-pull-secret", "regcred", env={**environ, "ACR_CREDS": "nocolon"})
    assert out.stderr.decode().strip().splitlines()[-1] == "✗ --registry-creds-env: invalid format, expected 'user:password'"
    assert git_log(ado_git_server.bare_path("contoso", "platform", "fleet")) == []

    out = cli(*base, "--toleration-keys", "CriticalAddonsOnly,kubernetes.azure.com/scalesetpriority", "--image-pull-secret", "regcred",
              "--registry-creds-env", "ACR_CREDS", "--recurse-submodules", "--sparse-checkout", "clusters", "--verbose", env=environ)
    err = out.stderr.decode()
    assert out.returncode == 0, err
    assert "s3cr3t" not in err and git_pat not in err
    assert "--- Secret flux-system/regcred (type kubernetes.io/dockerconfigjson, registry ghcr.io/fluxcd)" in err  # --verbose
    tree = read_tree(ado_git_server.bare_path("contoso", "platform", "fleet"))
    expected = install.generate(distribution.load(str(V292)), install.InstallOptions(
        toleration_keys=("CriticalAddonsOnly", "kubernetes.azure.com/scalesetpriority"), image_pull_secret="regcred",
        target_path="./clusters/cli-flags")).content
    assert tree["clusters/cli-flags/flux-system/gotk-components.yaml"].decode() == expected
    assert b"  recurseSubmodules: true\n" in tree["clusters/cli-flags/flux-system/gotk-sync.yaml"]
    assert b"  sparseCheckout:\n  - clusters\n" in tree["clusters/cli-flags/flux-system/gotk-sync.yaml"]
    from shared.ports.kube import Cluster

    cluster = Cluster.from_kubeconfig(kubeconfig_text)
    try:
        assert _secret(cluster, "regcred")[".dockerconfigjson"] == _docker_config("ghcr.io/fluxcd", REGISTRY_CREDS)
    finally:
        cluster.close()


def test_cli_registry_spelling():
    """A port is copied as Flux copies it; a scheme is refused with the spelling to use."""
    out = cli("install", "--export", "--manifests", str(V292), "--registry", "myacr.azurecr.io:443/fluxcd",
              env={"FLUX_ALLOWED_REGISTRIES": "myacr.azurecr.io:443/fluxcd"})
    assert out.returncode == 0, out.stderr
    assert b"image: myacr.azurecr.io:443/fluxcd/source-controller:v1.9.3\n" in out.stdout
    out = cli("install", "--export", "--manifests", str(V292), "--registry", "https://myacr.azurecr.io:443/fluxcd")
    assert out.returncode == 1 and out.stderr.decode().strip().splitlines() == [
        "✗ --registry: 'https://myacr.azurecr.io:443/fluxcd' has a scheme; image references have none: write "
        "'myacr.azurecr.io:443/fluxcd'"]
    out = cli("install", "--export", "--manifests", str(V292), "--toleration-keys", "CriticalAddonsOnly", "--image-pull-secret", "regcred")
    assert out.returncode == 0 and out.stdout.count(b"      - key: CriticalAddonsOnly\n        operator: Exists\n") == 4


# -- --timeout bounds the whole run ------------------------------------------------------------------------

def test_timeout_bounds_the_whole_run(env, kubeconfig_text, git_pat):
    """With the CLI's deadline (deadline_is_timeout) a step that would start after --timeout fails the
    run, as Flux's context deadline does; nothing after it runs."""
    from shared import bootstrap as runner
    from shared.bootstrap.runner import RunTimedOut
    from shared.ports.kube import Cluster

    now = [1000.0]

    def clock():  # each look at the clock costs 5 s: preflight starts in time, the components do not
        now[0] += 5
        return now[0]

    opts = runner.BootstrapOptions(url=env["url"], path="./clusters/aks-weu-1", allow_insecure_http=True, timeout=8).validate()
    cluster = Cluster.from_kubeconfig(kubeconfig_text)
    try:
        run = runner.Bootstrapper(opts, runner.Credentials(password=git_pat), cluster, distribution.load(str(V292)),
                                  deadline=1008.0, deadline_is_timeout=True, clock=clock)
        with pytest.raises(RunTimedOut, match="timed out before the components"):
            run.run()
    finally:
        cluster.close()
    assert "► checking cluster access" in run.result.log and not any("cloning" in line for line in run.result.log)
    assert git_log(env["bare"]) == []

