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
    import time

    started = time.monotonic()
    # --timeout bounds the whole run, as in Flux: the health checks get what the steps before left of it
    out = run("bootstrap", "git", "--url", ado_git_server.url("contoso", "platform", "fleet"), "--token-auth",
              "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292), "--timeout", "8s",
              env={"GIT_PASSWORD": git_pat})
    assert time.monotonic() - started < 8 + 10  # the run's deadline, plus the interpreter's start and a last poll
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
        (["--url", "ssh://git@ssh.dev.azure.com/v3/o/p/r"], "✗ --token-auth: is for https URLs; an ssh:// url authenticates with an SSH key"),
        (["--url", "https://dev.azure.com/o/p/_git/r"], "✗ --kubeconfig: cannot read"),
    ):
        out = run(*base, *extra, env={"GIT_PASSWORD": "pat-value"})
        lines = out.stderr.decode().strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith(line), (extra, lines)


# -- Flux's error behaviour: one ✗ line naming the flag, exit 1 -----------------------------------------

def _one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1 and out.stdout == b"" and len(lines) == 1, (out.returncode, out.stdout, lines)
    return lines[0]


def test_parser_errors_are_one_line_naming_the_flag():
    """argparse errors (a missing --url, a bad bool, an unknown flag...) used to print a usage dump and
    exit 2; now each is one ✗ line that names the flag and says what to do instead, exit 1."""
    git = ["bootstrap", "git"]
    cases = [
        (git + ["--token-auth"], "✗ --url: is required, e.g. --url https://dev.azure.com/<org>/<project>/_git/<repository>"),
        (git + ["--url", "https://dev.azure.com/o/p/_git/r", "--network-policy", "maybe"],
         "✗ --network-policy: 'maybe' is not a boolean; use true or false"),
        (git + ["--url", "https://dev.azure.com/o/p/_git/r", "--tokn-auth"],
         "✗ --tokn-auth: unknown flag; did you mean --token-auth? (run '.venv/bin/python -m shared bootstrap git --help'"),
        (git + ["--url", "https://dev.azure.com/o/p/_git/r", "--bogus=1"], "✗ --bogus: unknown flag"),
        (git + ["--url"], "✗ --url: needs a value, e.g. --url https://"),
        (git + ["--url", "x", "--log-level", "loud"], "✗ --log-level: 'loud' is not one of debug, info, error"),
        (git + ["--url", "x", "--kubeconfig", "k", "--cluster-resource-id", "i"],
         "✗ --cluster-resource-id: cannot be combined with --kubeconfig; give one of the two"),
        (["bootstrap", "gti"], "✗ .venv/bin/python -m shared bootstrap: unknown command: 'gti'"),
        (["install"], "✗ --export: is required"),
        (["install", "--export", "--watch-all-namespaces=maybe"], "✗ --watch-all-namespaces: 'maybe' is not a boolean"),
    ]
    for argv, start in cases:
        line = _one_line(run(*argv))
        assert line.startswith(start), (argv, line)


def test_bool_flags_take_go_values_as_cobra_does(tmp_path):
    """--network-policy=false turns the policies off, as in Flux; --network-policy alone is true."""
    out = run("install", "--export", "--manifests", str(V292), "--network-policy=false")
    assert out.returncode == 0, out.stderr
    assert b"kind: NetworkPolicy" not in out.stdout
    out = run("install", "--export", "--manifests", str(V292), "--network-policy")
    assert out.returncode == 0 and b"kind: NetworkPolicy" in out.stdout


def test_help_lists_every_flag_with_text_and_default():
    out = run("bootstrap", "git", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.decode().split())  # unwrap
    from shared.cli import build_parser

    parser = build_parser()
    git = parser._subparsers._group_actions[0].choices["bootstrap"]._subparsers._group_actions[0].choices["git"]
    for action in git._actions:
        if not action.option_strings or action.help == "==SUPPRESS==" or action.dest == "help":
            continue
        assert action.help and len(action.help) >= 10, action.option_strings
        assert action.option_strings[-1] in text, action.option_strings
        shown = getattr(action, "default_shown", None)
        if action.default not in (None, "", [], False):
            assert shown, f"{action.option_strings}: default {action.default!r} not shown"
        if shown:
            assert f"(default {shown})" in text, (action.option_strings, shown)
    # As Flux prints them (cobra): a slice comma-separated in brackets, durations in Go form, strings quoted.
    assert ("--components strings list of components, accepts comma-separated values (default "
            "[source-controller,kustomize-controller,helm-controller,notification-controller])") in text
    assert "--timeout duration timeout for this operation" in text and "(default 5m0s)" in text
    assert '--branch string Git branch (default "main")' in text
    assert "--network-policy setup Kubernetes network policies" in text
    assert "instead of the SSH deploy key (required for an https --url" in text  # --token-auth is required, and says so
    top = run("--help").stdout.decode()
    for command in ("install", "bootstrap", "registry", "rotate"):
        assert f"\n    {command}" in top, top  # every command is listed by name


def test_url_errors_say_what_to_write_instead(tmp_path):
    base = ["bootstrap", "git", "--token-auth", "--kubeconfig", str(tmp_path / "none"), "--manifests", str(V292)]
    line = _one_line(run(*base, "--url", "git@ssh.dev.azure.com:v3/contoso/platform/fleet", env={"GIT_PASSWORD": "p"}))
    assert line.startswith("✗ --url: 'git@ssh.dev.azure.com:v3/contoso/platform/fleet' is an scp-like SSH address")
    assert "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet" in line
    line = _one_line(run(*base, "--url", "dev.azure.com/contoso/platform/_git/fleet", env={"GIT_PASSWORD": "p"}))
    assert line == "✗ --url: 'dev.azure.com/contoso/platform/_git/fleet' has no scheme; write https://dev.azure.com/contoso/platform/_git/fleet"


def test_a_missing_distribution_names_the_flag_or_the_setting(tmp_path):
    line = _one_line(run("install", "--export", "--manifests", str(tmp_path / "nope.yaml")))
    assert line.startswith(f"✗ --manifests: Flux distribution file {tmp_path / 'nope.yaml'} does not exist; give a gotk-components.yaml file")
    line = _one_line(run("install", "--export", env={"FLUX_MANIFESTS": str(tmp_path / "nope.yaml")}))
    assert line.startswith("✗ FLUX_MANIFESTS: Flux distribution file")


def test_install_export_without_network_names_manifests_and_flux_manifests():
    """No network (a fresh network namespace): the default OCI source cannot be reached; the one line
    says so in words and names --manifests and FLUX_MANIFESTS, not urllib3's NameResolutionError."""
    import shutil

    import pytest

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -n (root) for a namespace without network")
    env = {k: v for k, v in os.environ.items() if k not in ("FLUX_MANIFESTS", "FLUX_CACHE_DIR")}
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env["FLUX_CACHE_DIR"] = cache  # nothing cached: the run must go to the network
        out = subprocess.run([unshare, "-n", sys.executable, "-m", "shared", "install", "--export"], cwd=ROOT, env=env,
                             capture_output=True, timeout=120)
    line = _one_line(out)
    assert line.startswith("✗ --manifests: cannot reach OCI registry ghcr.io: name resolution failed"), line
    assert "pass --manifests FILE or set FLUX_MANIFESTS" in line
    assert "NameResolutionError" not in line and "HTTPSConnectionPool" not in line


def test_unreachable_cluster_is_one_line_without_retry_warnings(tmp_path):
    """The kubernetes client retries a refused connection; urllib3's 'Retrying (...)' warnings no longer
    come before the one ✗ line, which says what to check."""
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    out = run("bootstrap", "git", "--url", "http://127.0.0.1:9/o/p/_git/r", "--allow-insecure-http", "--token-auth",
              "--kubeconfig", str(kubeconfig), "--manifests", str(V292),
              env={"GIT_PASSWORD": "p", "GIT_ALLOWED_HOSTS": "127.0.0.1:9"})
    err = out.stderr.decode()
    assert out.returncode == 1
    assert "Retrying" not in err and "urllib3" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"✗ cluster unreachable: https://127.0.0.1:{port}")
    assert f"check that {kubeconfig} names a running cluster" in err


def test_system_python_without_the_dependencies_gets_one_line_not_a_traceback():
    """``python -S`` sees no site-packages, as the system Python without the venv: the CLI says to run
    .ci/setup and use .venv/bin/python instead of ending in ModuleNotFoundError."""
    out = subprocess.run([sys.executable, "-S", "-m", "shared", "bootstrap", "git", "--url", "https://dev.azure.com/o/p/_git/r",
                          "--token-auth", "--kubeconfig", "f", "--manifests", str(V292)],
                         cwd=ROOT, env={**os.environ, "GIT_PASSWORD": "p"}, capture_output=True, timeout=60)
    line = _one_line(out)
    assert "Traceback" not in out.stderr.decode()
    assert line.startswith("✗ Python module ") and "run 'bash .ci/setup' once, then use .venv/bin/python -m shared" in line


def test_a_kubeconfig_of_your_own_may_name_its_certificate_files(ado_git_server, git_pat, kube_server, tmp_path):
    """minikube's kubeconfig names its CA and client certificate files: the CLI reads them as kubectl
    does (relative to the kubeconfig's folder), so the bootstrap runs with the client certificate;
    a file that cannot be read is one ✗ line naming the key and the path."""
    import base64

    import yaml

    ado_git_server.create_repo("contoso", "platform", "files")
    url = ado_git_server.url("contoso", "platform", "files")
    cfg = yaml.safe_load(kube_server.kubeconfig(client_cert=True))
    certs = tmp_path / "profiles"
    certs.mkdir()
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    for key, name, holder in (("certificate-authority", "ca.crt", cluster), ("client-certificate", "client.crt", user),
                              ("client-key", "client.key", user)):
        (certs / name).write_bytes(base64.b64decode(holder.pop(f"{key}-data")))
        holder[key] = str(certs / name) if key == "certificate-authority" else f"profiles/{name}"  # absolute and relative
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump(cfg))
    before = len(kube_server.received)
    out = run("bootstrap", "git", "--url", url, "--path", "clusters/files", "--token-auth", "--password-env", "FLEET_PAT",
              "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292), "--timeout", "0s",
              env={"FLEET_PAT": git_pat})
    assert out.returncode == 0, out.stderr.decode()
    assert kube_server.get_object("v1", "Secret", "flux-system", "flux-system") is not None
    received = kube_server.received[before:]  # the server takes a request without a token only with a client certificate
    assert received and not [r for r in received if "authorization" in r.headers]

    (certs / "client.key").unlink()
    out = run("bootstrap", "git", "--url", url, "--token-auth", "--password-env", "FLEET_PAT", "--allow-insecure-http",
              "--kubeconfig", str(kubeconfig), "--manifests", str(V292), env={"FLEET_PAT": git_pat})
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines() == [
        f"✗ --kubeconfig: {kubeconfig}: users[0].user.client-key: cannot read {tmp_path / 'profiles/client.key'}: "
        "No such file or directory"]


def test_flux_v29_flags_that_are_not_done_here_say_why(tmp_path):
    """Flux v2.9's key and signing flags that scripts pass: each is known (no "unknown flag", no wrong
    "did you mean") and fails with one ✗ line naming it and saying why and what to do; a passphrase
    given on the command line is never echoed."""
    base = ["bootstrap", "git", "--url", "ssh://git@ssh.dev.azure.com/v3/o/p/r", "--path", "clusters/c1",
            "--kubeconfig", str(tmp_path / "none"), "--manifests", str(V292)]
    signing_gpg = "commit signing with GPG is not supported: the bootstrap commits are pushed unsigned; drop the --gpg-* flags"
    signing_ssh = ("commit signing with an SSH key is not supported: the bootstrap commits are pushed unsigned; drop the "
                   "--ssh-signing-* flags")
    cases = [
        (["--gpg-key-id", "3AA5C34371567BD2"], "✗ --gpg-key-id: " + signing_gpg),
        (["--gpg-key-ring", str(tmp_path / "ring.gpg")], "✗ --gpg-key-ring: " + signing_gpg),
        (["--gpg-passphrase", "gpg-secret-value"], "✗ --gpg-passphrase: " + signing_gpg),
        (["--ssh-signing-key-file", str(tmp_path / "id")], "✗ --ssh-signing-key-file: " + signing_ssh),
        (["--ssh-signing-password", "ssh-secret-value"], "✗ --ssh-signing-password: " + signing_ssh),
        (["--ssh-signing-passphrase", "ssh-secret-value"], "✗ --ssh-signing-passphrase: " + signing_ssh),
        (["--ssh-signing-reuse-private-key"], "✗ --ssh-signing-reuse-private-key: " + signing_ssh),
        (["--ssh-ecdsa-curve", "p384"], "✗ --ssh-ecdsa-curve: ECDSA keys are not generated: Azure DevOps accepts only RSA SSH keys"),
        (["--ssh-key-algorithm", "ecdsa"], "✗ --ssh-key-algorithm: ecdsa keys are refused by Azure DevOps, which accepts only RSA"),
        (["--ssh-key-algorithm", "ed25519"], "✗ --ssh-key-algorithm: ed25519 keys are refused by Azure DevOps"),
        (["--ssh-key-algorithm", "dsa"], "✗ --ssh-key-algorithm: 'dsa' is not one of rsa, ecdsa, ed25519"),
        # Flux's rule (a multiple of 8), then Azure DevOps' least size, then a bound on generation time
        (["--ssh-rsa-bits", "2047"], "✗ --ssh-rsa-bits: RSA key bit size must be a multiple of 8"),
        (["--ssh-rsa-bits", "1024"], "✗ --ssh-rsa-bits: RSA key bit size must be at least 2048: Azure DevOps refuses smaller"),
        (["--ssh-rsa-bits", "16384"], "✗ --ssh-rsa-bits: RSA key bit size must be at most 8192"),
        (["--ssh-rsa-bits", "4k"], "✗ --ssh-rsa-bits: '4k' is not an integer"),
        # gone from Flux too: the reason instead of a "did you mean"
        (["--arch", "amd64"], "✗ --arch: unknown flag: Flux v2.9 has no --arch either"),
    ]
    for extra, start in cases:
        out = run(*base, *extra)
        line = _one_line(out)
        assert line.startswith(start), (extra, line)
        assert "did you mean" not in line and "secret-value" not in line, line


def test_help_names_the_ssh_key_flags_with_their_defaults():
    text = " ".join(run("bootstrap", "git", "--help").stdout.decode().split())
    assert "--ssh-key-algorithm publicKeyAlgorithm SSH public key algorithm (rsa, ecdsa, ed25519)" in text
    assert "(default \"rsa\")" in text and "--ssh-rsa-bits rsaKeyBits" in text and "(default 4096)" in text
    assert "--ssh-signing-passphrase" not in text  # Flux's hidden alias stays hidden


def test_timeout_stops_a_git_server_that_stops_answering(raw_listener, git_allowed_local, kubeconfig_text, tmp_path):
    """A git server that accepts the connection and never answers: each request used to wait 60 s (and
    urllib3 retried a GET three times) whatever --timeout said. Now each is capped at what is left of
    --timeout, and the run ends with one ✗ line naming it."""
    import time

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    url = f"http://127.0.0.1:{raw_listener.port}/contoso/platform/_git/fleet"
    started = time.monotonic()
    out = run("bootstrap", "git", "--url", url, "--token-auth", "--allow-insecure-http", "--kubeconfig", str(kubeconfig),
              "--manifests", str(V292), "--timeout", "3s", env={"GIT_PASSWORD": "stalled-pat-value"})
    elapsed = time.monotonic() - started
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1, lines
    assert lines[-1].startswith("✗ timed out (the components): git clone of " + url + " got no answer before the deadline")
    assert "the run took longer than --timeout" in lines[-1]
    assert not [line for line in lines if line.startswith("✗")][:-1]  # one ✗ line
    assert raw_listener.connections >= 1 and b"GET /contoso/platform/_git/fleet/info/refs" in raw_listener.received
    assert elapsed < 3 + 10, elapsed  # the deadline, plus the interpreter's start on a busy machine
    assert "stalled-pat-value" not in out.stderr.decode()


def test_timeout_stops_a_distribution_download_that_stalls(raw_listener, git_allowed_local, tmp_path):
    """The OCI artifact and an https:// distribution from a server that never answers: the download
    is capped at --timeout and named in the one ✗ line."""
    import time

    url = "http://127.0.0.1:1/contoso/platform/_git/fleet"  # never reached: the distribution comes first
    for manifests, why in ((f"oci://127.0.0.1:{raw_listener.port}/fluxcd/flux-manifests:v2.9.2", "talking to OCI registry"),
                           (f"https://127.0.0.1:{raw_listener.port}/gotk-components.yaml", "cannot download")):
        started = time.monotonic()
        out = run("bootstrap", "git", "--url", url, "--token-auth", "--allow-insecure-http", "--kubeconfig",
                  str(tmp_path / "none"), "--manifests", manifests, "--timeout", "2s", env={"GIT_PASSWORD": "p"})
        elapsed = time.monotonic() - started
        line = _one_line(out)
        assert line.startswith("✗ --timeout: ") and why in line, line
        assert "the run took longer than --timeout while loading the Flux distribution" in line
        assert elapsed < 2 + 10, elapsed


def test_timeout_stops_a_kubernetes_api_server_that_stops_answering(raw_listener, git_allowed_local, tmp_path):
    """The cluster's API server accepts the connection and never answers: each request used to wait
    up to 60 s; now it is capped at what is left of --timeout, and the run ends with one ✗ line."""
    import time

    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stalled",
        "clusters": [{"name": "stalled", "cluster": {"server": f"https://127.0.0.1:{raw_listener.port}",
                                                      "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "stalled-cluster-token"}}],
        "contexts": [{"name": "stalled", "context": {"cluster": "stalled", "user": "u"}}]}))
    started = time.monotonic()
    out = run("bootstrap", "git", "--url", "http://127.0.0.1:1/contoso/platform/_git/fleet", "--token-auth",
              "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292), "--timeout", "2s",
              env={"GIT_PASSWORD": "p"})
    elapsed = time.monotonic() - started
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1, lines
    assert lines[-1].startswith(f"✗ timed out (checking the cluster): cluster https://127.0.0.1:{raw_listener.port} did not "
                                "answer GET "), lines
    assert lines[-1].endswith("before the deadline: the run took longer than --timeout; what was pushed and applied "
                              "stays, a re-run with a longer --timeout picks up from there")
    assert [line for line in lines if line.startswith("✗")] == lines[-1:]
    assert elapsed < 2 + 8, elapsed
    assert "stalled-cluster-token" not in out.stderr.decode()
