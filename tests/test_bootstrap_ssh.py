"""Bootstrap over SSH the Azure DevOps way, end to end through the indexed HTTP trigger.

Peers on 127.0.0.1: the SSH git server with Azure DevOps' behaviour (tests/peers/ssh_git_server.py:
``v3/org/project/repo`` paths, RSA SHA-2 host key algorithms only, RSA client keys only, SHA-1
sessions refused with Azure DevOps' text) over the same bare repositories as the smart-HTTP server,
the Key Vault test server behind the real SecretClient, the Kubernetes API test server.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from shared.flux import sync
from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree, seed
from tests.test_bootstrap_e2e import GOLDEN, _assert_untouched, call, cluster_registry, env  # noqa: F401 - fixtures
from tests.test_bootstrap_patches import EXPECTED as PATCHED_KUSTOMIZATION
from tests.test_bootstrap_patches import FLAG, _args

FOLDER = "clusters/aks-weu-1/flux-system/"
KEY_SECRET = "flux-ssh-aks-weu-1"


@pytest.fixture
def ssh(env, ado_ssh_server):
    """``env`` plus the SSH side of the same repository."""
    env["ssh"] = ado_ssh_server
    env["ssh_url"] = ado_ssh_server.url("contoso", "platform", "fleet")
    env["ssh_prefix"] = f"ssh://git@127.0.0.1:{ado_ssh_server.port}/v3/contoso/"
    return env


def ssh_request(env, **overrides) -> dict:
    body = {"url": env["ssh_url"], "path": "clusters/aks-weu-1", "kubeconfigSecret": "aks-weu-1-kubeconfig"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def secret_data(env) -> dict:
    secret = env["cluster"].get("v1", "Secret", "flux-system", "flux-system")
    return {k: base64.b64decode(v).decode() for k, v in ((secret or {}).get("data") or {}).items()}


def flux_sync_bytes(url: str) -> bytes:
    """A real ``flux bootstrap git`` SSH sync file (golden talos-v2.9.2, ``ssh://git@github.com/...``)
    with this URL and path in place of the golden ones."""
    golden = (GOLDEN / "talos-v2.9.2-4comp" / "gotk-sync.yaml").read_bytes()
    return golden.replace(b"ssh://git@github.com/BenceGyurus/talos", url.encode()).replace(
        b"./clusters/my-cluster", b"./clusters/aks-weu-1")


def test_sync_manifest_of_an_ssh_url_is_flux_bytes():
    golden = (GOLDEN / "talos-v2.9.2-4comp" / "gotk-sync.yaml").read_bytes()
    opts = sync.SyncOptions(url="ssh://git@github.com/BenceGyurus/talos", target_path="./clusters/my-cluster")
    assert sync.generate(opts).content.encode() == golden


def ssh_rsa_sessions(env) -> list:
    return [r for r in env["ssh"].requests if r.kind == "auth" and not r.detail.startswith("refused")]


def test_generated_key_then_bootstrap_over_ssh_then_rerun(functions_by_name, ssh, kube_server):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    # 1. No key named: one is generated, stored, and its public key returned; nothing else written.
    status, body = call(functions_by_name, ssh_request(ssh))
    assert status == 202, body
    assert body["status"] == "awaitingDeployKey"
    key = body["sshKey"]
    assert key["secret"] == KEY_SECRET and key["created"] is True
    assert key["publicKey"].startswith("ssh-rsa ") and "\n" not in key["publicKey"]
    assert "Please give the key access to your repository" in body["message"]
    assert f"✔ public key: {key['publicKey']}" in body["log"]
    stored = ssh["vault"].stored(KEY_SECRET)
    assert stored["value"].startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, as Flux generates
    assert load_pem_private_key(stored["value"].encode(), None).key_size == 4096
    assert stored["contentType"] == "application/x-pem-file"
    assert stored["tags"] == {"flux-git-url-prefixes": ssh["ssh_url"]}
    assert "-----BEGIN" not in json.dumps(body)
    _assert_untouched(ssh, kube_server)
    assert ssh_rsa_sessions(ssh) == []  # the host key was scanned, nothing authenticated

    # 2. Not authorised yet: the stored key is found (no second key), the server refuses it.
    status, body = call(functions_by_name, ssh_request(ssh))
    assert status == 502, body
    assert body["error"]["code"] == "AuthenticationFailed"
    assert "refused the SSH key" in body["error"]["message"] and KEY_SECRET in body["error"]["message"]
    assert body["sshKey"] == {**key, "created": False}
    assert len(ssh["vault"].versions(KEY_SECRET)) == 1
    _assert_untouched(ssh, kube_server)

    # 3. Authorised in "Azure DevOps": the bootstrap pushes the two commits over SSH.
    ssh["ssh"].authorize(key["publicKey"])
    status, body = call(functions_by_name, ssh_request(ssh))
    assert status == 200, body
    assert body["sshKey"] == {**key, "created": False}
    commits = git_log(ssh["bare"], "main")
    assert [c["message"].strip() for c in commits] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"]
    assert {c["author"] for c in commits} == {"Flux <>"}
    assert [r.detail for r in ssh["ssh"].requests if r.kind == "exec" and "receive-pack" in r.detail] == \
        ["git-receive-pack '/v3/contoso/platform/fleet'"] * 2
    assert not [r for r in ssh["git"].requests if "receive-pack" in r.path]  # nothing over HTTPS
    assert {r.detail for r in ssh_rsa_sessions(ssh)} == {"rsa-sha2-512"}  # never a SHA-1 signature
    tree = read_tree(ssh["bare"], "main")
    assert tree[FOLDER + "gotk-sync.yaml"] == flux_sync_bytes(ssh["ssh_url"])
    assert tree[FOLDER + "kustomization.yaml"] == PATCHED_KUSTOMIZATION
    assert tree[FOLDER + "gotk-components.yaml"] == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()

    # The source Secret, as Flux's sourcesecret writes it for SSH.
    data = secret_data(ssh)
    assert set(data) == {"identity", "identity.pub", "known_hosts"}
    assert data["identity"] == stored["value"]
    assert data["identity.pub"] == key["publicKey"] + "\n"
    assert data["known_hosts"] == ssh["ssh"].known_hosts_line  # "[127.0.0.1]:<port> ssh-rsa AAAA...", trimmed
    repo = ssh["cluster"].get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["spec"]["url"] == ssh["ssh_url"] and repo["spec"]["secretRef"] == {"name": "flux-system"}
    assert _args(ssh["cluster"], "source-controller")[-1] == FLAG
    # Registered in its own Git auth mode: an SSH key, nothing for rotation to write (tests/test_fleet_ssh.py)
    assert body["registry"] == {"status": "registered", "cluster": "aks-weu-1"}
    record = ssh["registry"].get("aks-weu-1")
    assert (record.git_auth, record.git_url, record.pat_secret) == ("ssh", ssh["ssh_url"], None)

    # 4. A re-run: no commit, nothing changed on the cluster.
    status, again = call(functions_by_name, ssh_request(ssh))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert again["cluster"]["created"] == again["cluster"]["configured"] == 0, again["cluster"]["changes"]
    assert len(git_log(ssh["bare"], "main")) == 2

    # 5. The server's host key changed: 409 before anything is written; force pins the new key.
    ssh["ssh"].replace_host_key()
    pushes = len([r for r in ssh["ssh"].requests if r.kind == "exec"])
    status, body = call(functions_by_name, ssh_request(ssh))
    assert status == 409, body
    assert "host key" in body["error"]["message"] and "changed" in body["error"]["message"] and "force" in body["error"]["message"]
    assert secret_data(ssh)["known_hosts"] == data["known_hosts"]
    assert len([r for r in ssh["ssh"].requests if r.kind == "exec"]) == pushes  # no git command ran
    status, body = call(functions_by_name, ssh_request(ssh, force=True))
    assert status == 200, body
    assert secret_data(ssh)["known_hosts"] == ssh["ssh"].known_hosts_line != data["known_hosts"]
    assert any("pinning the new key (force)" in line for line in body["log"])


def test_ssh_rsa_bits_sets_the_size_of_the_generated_key(functions_by_name, ssh, kube_server):
    """``sshRsaBits`` (Flux's ``--ssh-rsa-bits``): the generated key's size, checked as Flux checks it
    (a multiple of 8) and at least 2048 bits (Azure DevOps), before anything is generated or stored."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for bits, why in ((1024, "at least 2048"), (3000 + 1, "multiple of 8"), (16384, "at most 8192"), ("4096", "an integer"),
                      (True, "an integer")):
        status, body = call(functions_by_name, ssh_request(ssh, sshRsaBits=bits))
        assert status == 400, body
        assert body["error"]["field"] == "sshRsaBits" and why in body["error"]["message"], body
    with pytest.raises(KeyError):  # nothing generated nor stored
        ssh["vault"].stored(KEY_SECRET)
    assert ssh["ssh"].requests == []
    status, body = call(functions_by_name, ssh_request(ssh, sshRsaBits=3072))
    assert status == 202, body
    assert load_pem_private_key(ssh["vault"].stored(KEY_SECRET)["value"].encode(), None).key_size == 3072
    _assert_untouched(ssh, kube_server)


def _rsa_pem(passphrase: bytes | None = None, *, openssh: bool = False) -> tuple[str, str]:
    """(private key text, public key line) of a new RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    fmt = serialization.PrivateFormat.OpenSSH if openssh else serialization.PrivateFormat.PKCS8
    private = key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def test_a_key_of_your_own_with_a_passphrase(functions_by_name, ssh):
    private, public = _rsa_pem(b"correct horse", openssh=True)
    ssh["vault"].seed_pat("fleet-ssh-key", private, ssh["ssh_prefix"])
    ssh["vault"].seed_pat("fleet-ssh-passphrase", "correct horse", ssh["ssh_prefix"])
    ssh["ssh"].authorize(public)
    status, body = call(functions_by_name, ssh_request(ssh, privateKeySecret="fleet-ssh-key", passwordSecret="fleet-ssh-passphrase"))
    assert status == 200, body
    assert body["sshKey"] == {"secret": "fleet-ssh-key", "publicKey": public, "created": False}
    assert len(git_log(ssh["bare"], "main")) == 2
    data = secret_data(ssh)
    assert data["identity"] == private  # the key's bytes, as Flux keeps a --private-key-file
    assert data["identity.pub"] == public + "\n"
    assert data["password"] == "correct horse"  # the passphrase, as Flux writes it
    assert "correct horse" not in json.dumps(body)
    install = ssh["registry"].get("aks-weu-1").install  # names, for an upgrade to read them again
    assert (install["privateKeySecret"], install["passwordSecret"]) == ("fleet-ssh-key", "fleet-ssh-passphrase")
    assert "correct horse" not in json.dumps(install)


def test_a_wrong_key_fails_clearly_and_writes_nothing(functions_by_name, ssh, kube_server):
    private, _ = _rsa_pem()
    ssh["vault"].seed_pat("fleet-ssh-key", private, ssh["ssh_prefix"])
    status, body = call(functions_by_name, ssh_request(ssh, privateKeySecret="fleet-ssh-key"))
    assert status == 502, body
    assert body["error"]["code"] == "AuthenticationFailed" and "refused the SSH key" in body["error"]["message"]
    _assert_untouched(ssh, kube_server)
    assert "PRIVATE KEY" not in json.dumps(body)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_a_non_rsa_key_is_refused_before_any_connection(functions_by_name, ssh, kube_server, kind):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(ValueError, match='Invalid key: Valid keys will start with "ssh-rsa".'):
        ssh["ssh"].authorize(public)  # as Azure DevOps' "Add SSH key" dialog
    ssh["vault"].seed_pat("fleet-ssh-key", private, ssh["ssh_prefix"])
    status, body = call(functions_by_name, ssh_request(ssh, privateKeySecret="fleet-ssh-key"))
    assert status == 400, body
    assert body["error"]["field"] == "privateKeySecret"
    assert "accepts only RSA keys" in body["error"]["message"]
    assert ssh["ssh"].requests == []
    _assert_untouched(ssh, kube_server)


def test_an_rsa_key_under_2048_bits_is_refused_before_any_connection(functions_by_name, ssh, kube_server):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    ssh["ssh"].authorize(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH).decode())
    ssh["vault"].seed_pat("fleet-ssh-key", private, ssh["ssh_prefix"])
    status, body = call(functions_by_name, ssh_request(ssh, privateKeySecret="fleet-ssh-key"))
    assert status == 400, body
    assert body["error"]["field"] == "privateKeySecret"
    assert "holds a 1024-bit RSA key; use at least 2048 bits" in body["error"]["message"]
    assert ssh["ssh"].connections == 0 and ssh["ssh"].requests == []
    assert "PRIVATE KEY" not in json.dumps(body)
    _assert_untouched(ssh, kube_server)


def test_an_ssh_url_to_a_host_not_allowed_is_refused_before_any_connection(functions_by_name, ssh, kube_server):
    """``localhost`` reaches the peer, but only ``127.0.0.1`` is in GIT_ALLOWED_HOSTS: no scan, no key
    generated, nothing written."""
    url = f"ssh://git@localhost:{ssh['ssh'].port}/v3/contoso/platform/fleet"
    status, body = call(functions_by_name, ssh_request(ssh, url=url))
    assert status == 400, body
    assert body["error"]["field"] == "url" and "GIT_ALLOWED_HOSTS" in body["error"]["message"], body
    assert ssh["ssh"].connections == 0 and ssh["ssh"].requests == []
    with pytest.raises(KeyError):
        ssh["vault"].stored(KEY_SECRET)
    _assert_untouched(ssh, kube_server)


def test_an_ssh_rsa_only_client_is_refused(functions_by_name, ssh, kube_server):
    status, body = call(functions_by_name, ssh_request(ssh, sshHostkeyAlgos=["ssh-rsa"]))
    assert status == 400, body
    assert body["error"]["field"] == "sshHostkeyAlgos" and "SHA-1" in body["error"]["message"]
    assert ssh["ssh"].requests == []
    _assert_untouched(ssh, kube_server)


@pytest.mark.parametrize("tags, why", [
    (None, "has no tag flux-git-url-prefixes"),
    ({"flux-git-url-prefixes": "ssh://git@127.0.0.1:1/v3/contoso/"}, "may not be sent to"),
    ({"flux-git-url-prefixes": "https://dev.azure.com/contoso/"}, "may not be sent to"),
])
def test_a_key_is_used_only_for_urls_its_tag_covers(functions_by_name, ssh, kube_server, tags, why):
    private, public = _rsa_pem()
    ssh["ssh"].authorize(public)
    ssh["vault"].seed("fleet-ssh-key", private, tags=tags)
    status, body = call(functions_by_name, ssh_request(ssh, privateKeySecret="fleet-ssh-key"))
    assert status == 400, body
    assert body["error"]["field"] == "privateKeySecret" and why in body["error"]["message"]
    assert "--file <private key file>" in body["error"]["message"]
    assert ssh["ssh"].requests == []
    _assert_untouched(ssh, kube_server)


def test_the_scp_like_form_is_refused_with_the_url_form(functions_by_name, ssh, kube_server):
    status, body = call(functions_by_name, ssh_request(ssh, url="git@ssh.dev.azure.com:v3/contoso/platform/fleet"))
    assert status == 400, body
    assert body["error"]["field"] == "url"
    assert "is an scp-like SSH address" in body["error"]["message"]
    assert "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet" in body["error"]["message"]
    _assert_untouched(ssh, kube_server)


def test_without_the_secrets_officer_role_no_key_is_generated(functions_by_name, ssh, kube_server):
    ssh["vault"].read_only = True
    status, body = call(functions_by_name, ssh_request(ssh))
    assert status == 502, body
    assert body["error"]["code"] == "AuthenticationFailed" and "Secrets Officer" in body["error"]["message"]
    _assert_untouched(ssh, kube_server)


def test_bootstrap_over_https_while_the_cluster_syncs_over_ssh(functions_by_name, ssh):
    """``sshHostname``: the commits go over HTTPS with the PAT; the GitRepository and the source
    Secret are SSH (Flux's ``--ssh-hostname``)."""
    host = f"127.0.0.1:{ssh['ssh'].port}"
    body = {"url": ssh["url"], "path": "clusters/aks-weu-1", "allowInsecureHttp": True, "passwordSecret": "fleet-pat",
            "kubeconfigSecret": "aks-weu-1-kubeconfig", "sshHostname": host, "sshHostkeyAlgos": ["rsa-sha2-512", "rsa-sha2-256"]}
    status, first = call(functions_by_name, body)
    assert status == 202, first
    sync_url = f"ssh://git@{host}/contoso/platform/_git/fleet"  # the https path, as Flux keeps it off Azure DevOps Services
    assert ssh["vault"].stored(KEY_SECRET)["tags"] == {"flux-git-url-prefixes": sync_url}
    status, done = call(functions_by_name, body)
    assert status == 200, done
    assert len(git_log(ssh["bare"], "main")) == 2
    assert {r.user for r in ssh["git"].requests if "receive-pack" in r.path} == {"git"}  # the PAT, over HTTP
    assert [r for r in ssh["ssh"].requests if r.kind != "auth"] == []  # SSH only scanned
    tree = read_tree(ssh["bare"], "main")
    assert tree[FOLDER + "gotk-sync.yaml"] == flux_sync_bytes(sync_url)
    assert yaml.safe_load(tree[FOLDER + "kustomization.yaml"])["patches"][0]["target"]["name"] == "(source-controller|image-automation-controller)"
    data = secret_data(ssh)
    assert set(data) == {"identity", "identity.pub", "known_hosts"}  # the PAT is not in the source Secret
    assert data["known_hosts"] == ssh["ssh"].known_hosts_line
    assert done["sshKey"]["publicKey"] == first["sshKey"]["publicKey"]
    # registered with the SSH URL the cluster syncs from; what an upgrade pushes with is in install
    record = ssh["registry"].get("aks-weu-1")
    assert (record.git_auth, record.git_url, record.pat_secret) == ("ssh", sync_url, None)
    assert {k: record.install.get(k) for k in ("url", "sshHostname", "sshHostkeyAlgos", "passwordSecret", "privateKeySecret")} == {
        "url": ssh["url"], "sshHostname": host, "sshHostkeyAlgos": ["rsa-sha2-512", "rsa-sha2-256"],
        "passwordSecret": "fleet-pat", "privateKeySecret": None}


def test_the_peer_refuses_sha1_clients_as_azure_devops_does(ssh):
    """What an ssh-rsa-only client meets (asyncssh configured that way, outside the app)."""
    import asyncio

    import asyncssh

    from shared.flux import keypair
    from tests.peers.ssh_git_server import SSH_RSA_REFUSED

    pair = keypair.generate_rsa(2048)
    ssh["ssh"].authorize(pair.public_key)
    client_key = asyncssh.import_private_key(pair.private_key)

    async def connect(**options):
        return await asyncssh.connect("127.0.0.1", ssh["ssh"].port, username="git", known_hosts=None,
                                      client_keys=[client_key], agent_path=None, **options)

    async def scenario():
        # A client that accepts only ssh-rsa (SHA-1) host keys cannot even negotiate.
        with pytest.raises(asyncssh.KeyExchangeFailed):
            await connect(server_host_key_algs=["ssh-rsa"])
        # A client that signs with SHA-1 ssh-rsa: authenticated, then refused with Azure DevOps' text.
        async with await connect(signature_algs=["ssh-rsa"]) as conn:
            result = await conn.run("git-receive-pack '/v3/contoso/platform/fleet'", input="")
        return result

    result = asyncio.run(scenario())
    assert result.exit_status == 7
    assert result.stderr == SSH_RSA_REFUSED.format(command="git-receive-pack")
    assert ("auth", "ssh-rsa") in [(r.kind, r.detail) for r in ssh["ssh"].requests]
    assert git_log(ssh["bare"], "main") == []


def test_the_app_never_offers_sha1_ssh_rsa():
    """The client's algorithm lists (the peer records the signature actually used: rsa-sha2-512)."""
    import socket

    import paramiko

    from shared.ports.ssh import DISABLED_ALGORITHMS

    ours, theirs = socket.socketpair()
    transport = paramiko.Transport(ours, disabled_algorithms=DISABLED_ALGORITHMS)
    try:
        assert "ssh-rsa" not in transport.preferred_pubkeys and "ssh-rsa" not in transport.preferred_keys
        assert {"rsa-sha2-512", "rsa-sha2-256"} <= set(transport.preferred_pubkeys)
    finally:
        transport.close()
        ours.close()
        theirs.close()


def test_the_cli_generates_the_key_then_bootstraps_over_ssh(ssh, kubeconfig_text, tmp_path):
    """``python -m shared bootstrap git --url ssh://...`` in a subprocess: Key Vault through the
    real DefaultAzureCredential (the managed identity endpoint peer)."""
    from tests.peers.entra_tokens import ManagedIdentityEndpoint
    from tests.test_cli import V292, run

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    # Flux's key flags as a script passes them: an RSA key of 2048 bits
    args = ["bootstrap", "git", "--url", ssh["ssh_url"], "--path", "clusters/cli-1", "--kubeconfig", str(kubeconfig),
            "--manifests", str(V292), "--timeout", "0s", "--ssh-key-algorithm=rsa", "--ssh-rsa-bits=2048"]
    with ManagedIdentityEndpoint() as mi:
        env = {**mi.env(), "KEY_VAULT_URL": ssh["vault"].vault_url, "KEY_VAULT_CA_FILE": ssh["vault"].ca_file}
        first = run(*args, env=env)
        err = first.stderr.decode()
        assert first.returncode == 0, err
        public = first.stdout.decode().strip()
        assert public.startswith("ssh-rsa ") and f"✔ public key: {public}" in err
        assert "Please give the key access to your repository" in err
        assert ssh["vault"].stored("flux-ssh-cli-1")["tags"] == {"flux-git-url-prefixes": ssh["ssh_url"]}
        assert load_pem_private_key(ssh["vault"].stored("flux-ssh-cli-1")["value"].encode(), None).key_size == 2048
        assert git_log(ssh["bare"], "main") == []

        ssh["ssh"].authorize(public)
        second = run(*args, env=env)
        assert second.returncode == 0, second.stderr.decode()
        assert second.stdout == b""  # the key existed: nothing generated, nothing to print on stdout
        assert [c["message"].strip() for c in git_log(ssh["bare"], "main")] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"]
        assert secret_data(ssh)["identity.pub"] == public + "\n"
        # source-controller is installed already patched for Azure DevOps' host key algorithms
        assert _args(ssh["cluster"], "source-controller")[-1] == FLAG
        third = run(*args, env=env)
        assert third.returncode == 0 and "✔ sync manifests are up to date" in third.stderr.decode()
        assert len(git_log(ssh["bare"], "main")) == 2
    assert "PRIVATE KEY" not in err + second.stderr.decode()


def test_the_cli_with_a_key_file_that_has_no_access(ssh, kubeconfig_text, tmp_path):
    from tests.test_cli import V292, run

    private, _ = _rsa_pem(b"passphrase", openssh=True)
    key_file = tmp_path / "id_rsa"
    key_file.write_text(private)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    base = ["bootstrap", "git", "--url", ssh["ssh_url"], "--path", "clusters/cli-1", "--kubeconfig", str(kubeconfig),
            "--manifests", str(V292), "--private-key-file", str(key_file)]
    out = run(*base, env={"GIT_PASSWORD": "passphrase"})
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1 and lines[-1].startswith("✗ the SSH server ssh://127.0.0.1:") and "refused the SSH key" in lines[-1]
    out = run(*base, env={"GIT_PASSWORD": "not-the-passphrase"})
    assert out.returncode == 1
    assert out.stderr.decode().strip().splitlines() == ["✗ --private-key-file: the private key could not be decrypted: wrong passphrase (--password-env or GIT_PASSWORD), or not a key"]
    out = run(*base[:-2], "--url", "git@ssh.dev.azure.com:v3/contoso/platform/fleet")
    assert out.returncode == 1 and "✗ --url: 'git@ssh.dev.azure.com:v3/contoso/platform/fleet' is an scp-like SSH address" in out.stderr.decode()
    assert git_log(ssh["bare"], "main") == []
