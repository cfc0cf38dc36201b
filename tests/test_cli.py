"""The CLI as a user runs it: ``python -m shared ...`` in a subprocess, against the local peers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("FLUX_MANIFESTS", "GIT_PASSWORD")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "shared", *args], cwd=ROOT, env=full_env, capture_output=True, timeout=120)


def test_install_export_prints_flux_bytes():
    out = run("install", "--export", "--manifests", str(V292))
    assert out.returncode == 0, out.stderr
    assert out.stdout == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()
    out = run("install", "--export", "--version", "v2.9.2", "--components-extra", "image-reflector-controller,image-automation-controller", env={"FLUX_MANIFESTS": str(V292)})
    assert out.returncode == 0, out.stderr
    assert out.stdout == V292.read_bytes()


def test_install_export_unknown_component_fails_with_one_line():
    out = run("install", "--export", "--manifests", str(V292), "--components", "source-controller,kustomize-controller,bogus")
    assert out.returncode == 1
    assert out.stdout == b""
    assert out.stderr.decode().strip().splitlines() == ["✗ --components: component bogus is not available (known: source-controller, kustomize-controller, helm-controller, notification-controller, image-reflector-controller, image-automation-controller, source-watcher)"]


def test_bootstrap_git_end_to_end(ado_git_server, git_pat, kubeconfig_text, tmp_path):
    ado_git_server.create_repo("contoso", "platform", "fleet")
    url = ado_git_server.url("contoso", "platform", "fleet")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    args = ["bootstrap", "git", "--url", url, "--branch", "main", "--path", "clusters/cli-1", "--token-auth",
            "--password-env", "FLEET_PAT", "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292),
            "--timeout", "0s"]
    out = run(*args, env={"FLEET_PAT": git_pat})
    err = out.stderr.decode()
    assert out.returncode == 0, err
    assert "► cloning branch \"main\"" in err and "✔ reconciled sync configuration" in err
    assert "► applying source secret \"flux-system/flux-system\"\n✔ reconciled source secret\n" in err
    assert git_pat not in err and git_pat.encode() not in out.stdout
    bare = ado_git_server.bare_path("contoso", "platform", "fleet")
    assert [c["message"].strip() for c in git_log(bare)] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"]
    assert read_tree(bare)["clusters/cli-1/flux-system/gotk-components.yaml"] == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()

    # GIT_PASSWORD works as in Flux; a re-run makes no commit.
    again = run(*[a for a in args if a not in ("--password-env", "FLEET_PAT")], env={"GIT_PASSWORD": git_pat})
    assert again.returncode == 0, again.stderr
    assert "✔ component manifests are up to date" in again.stderr.decode()
    assert len(git_log(bare)) == 2


def test_bootstrap_git_wrong_pat_and_password_on_argv(ado_git_server, kubeconfig_text, tmp_path):
    ado_git_server.create_repo("contoso", "platform", "fleet")
    url = ado_git_server.url("contoso", "platform", "fleet")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    base = ["bootstrap", "git", "--url", url, "--token-auth", "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292)]
    out = run(*base, env={"GIT_PASSWORD": "wrong-pat-value"})
    err = out.stderr.decode()
    assert out.returncode == 1
    assert err.strip().splitlines()[-1].startswith("✗ git server rejected the credentials")
    assert "wrong-pat-value" not in err
    assert git_log(ado_git_server.bare_path("contoso", "platform", "fleet")) == []

    out = run(*base, "--password", "inline-pat")
    assert out.returncode == 1
    assert "--password-env" in out.stderr.decode() and "inline-pat" not in out.stderr.decode()

    out = run(*base)
    assert out.returncode == 1
    assert "GIT_PASSWORD is empty or unset" in out.stderr.decode()


def test_bootstrap_git_with_bearer_token(ado_git_server, kubeconfig_text, tmp_path, entra_git_hosts):
    ado_git_server.create_repo("contoso", "platform", "fleet")
    ado_git_server.bearer_tokens.add("entra-token-for-test")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    out = run("bootstrap", "git", "--url", ado_git_server.url("contoso", "platform", "fleet"), "--with-bearer-token",
              "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292), "--timeout", "0s",
              env={"GIT_PASSWORD": "entra-token-for-test"})
    assert out.returncode == 0, out.stderr.decode()
    assert len(git_log(ado_git_server.bare_path("contoso", "platform", "fleet"))) == 2
    assert {r.user for r in ado_git_server.requests} == {"<bearer>"}


def test_bootstrap_git_fails_like_flux_when_nothing_becomes_ready_in_time(ado_git_server, git_pat, kubeconfig_text, tmp_path):
    """No controllers run on the test server: with a --timeout (Flux's default is 5m) the health
    checks time out and the command fails with Flux's aggregate message, after pushing."""
    if os.environ.get("TEST_KUBECONFIG"):
        import pytest

        pytest.skip("a real cluster may well become ready")
    ado_git_server.create_repo("contoso", "platform", "fleet")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    out = run("bootstrap", "git", "--url", ado_git_server.url("contoso", "platform", "fleet"), "--token-auth",
              "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292), "--timeout", "1s",
              env={"GIT_PASSWORD": git_pat})
    last = out.stderr.decode().strip().splitlines()[-1]
    assert out.returncode == 1
    assert last.startswith("✗ bootstrap failed with 3 health check failure(s): GitRepository: timed out waiting for GitRepository")
    assert "components: timed out waiting for components: Deployment/flux-system/source-controller" in last
    assert len(git_log(ado_git_server.bare_path("contoso", "platform", "fleet"))) == 2


def test_bootstrap_git_bad_flags_name_the_flag(tmp_path):
    base = ["bootstrap", "git", "--token-auth", "--kubeconfig", str(tmp_path / "none"), "--manifests", str(V292)]
    for extra, line in (
        (["--url", "https://dev.azure.com/o/p/_git/r", "--interval", "5 minutes"], "✗ --interval: '5 minutes' is not a duration"),
        (["--url", "https://dev.azure.com/o/p/_git/r", "--path", "../x"], "✗ --path: '../x' must stay inside the repository"),
        (["--url", "https://dev.azure.com/o/p/_git/r", "--version", "2.9.2"], "✗ --version: targeted version '2.9.2' must be prefixed with 'v'"),
        (["--url", "https://dev.azure.com/o/p/_git/r", "--components-extra", "bogus"], "✗ --components-extra: component bogus is not available"),
        (["--url", "ssh://git@ssh.dev.azure.com/v3/o/p/r"], "✗ --url: ssh:// needs SSH auth"),
        (["--url", "https://dev.azure.com/o/p/_git/r"], "✗ --kubeconfig: cannot read"),
    ):
        out = run(*base, *extra, env={"GIT_PASSWORD": "pat-value"})
        lines = out.stderr.decode().strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith(line), (extra, lines)
