"""The SSH port's security checks (shared/ports/ssh.py), against the asyncssh peer with Azure DevOps'
behaviour (tests/peers/ssh_git_server.py) through the real git port (dulwich on paramiko):

* the host key pinned at the scan is the only one clone and push accept: a server whose key changed
  after the scan gets nothing, and the error shows both keys' SHA256 fingerprints as OpenSSH does;
* a scan offering only host key algorithms the server lacks fails with a clear SSHError.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from shared.flux import keypair
from shared.ports.git import GitAuth, Repository
from shared.ports.ssh import HostKeyMismatch, SSHError, SSHIdentity, fingerprint, scan_host_key
from shared.trust import GitPolicy
from tests.peers.git_server import log as git_log
from tests.peers.git_server import seed

ALGOS = ("rsa-sha2-512", "rsa-sha2-256")


def _openssh_fingerprint(key_b64: str) -> str:
    """``ssh-keygen -lf``'s SHA256 form, computed independently of the app."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(key_b64)).digest()).decode().rstrip("=")


@pytest.fixture
def repo(ado_git_server, ado_ssh_server):
    """A seeded repository, an authorised RSA key and the port's policy."""
    ado_git_server.create_repo("contoso", "platform", "fleet")
    bare = ado_git_server.bare_path("contoso", "platform", "fleet")
    seed(bare, {"README.md": b"fleet\n"})
    pair = keypair.generate_rsa(2048)
    ado_ssh_server.authorize(pair.public_key)
    return {"bare": bare, "url": ado_ssh_server.url("contoso", "platform", "fleet"), "key": pair,
            "server": ado_ssh_server, "policy": GitPolicy.from_settings()}


def _auth(repo, host_key) -> GitAuth:
    import paramiko

    return GitAuth(ssh=SSHIdentity(pkey=paramiko.RSAKey(key=repo["key"].key), host_key=host_key, algos=ALGOS))


def test_fingerprint_is_openssh_sha256_and_tells_rsa_keys_apart(repo):
    first = repo["server"].host_key_base64
    repo["server"].replace_host_key()
    second = repo["server"].host_key_base64
    assert first[:24] == second[:24]  # every RSA blob starts alike: a prefix shows nothing
    assert fingerprint(first) == _openssh_fingerprint(first) != fingerprint(second)
    assert fingerprint(first).startswith("SHA256:") and not fingerprint(first).endswith("=")


def test_the_host_key_pinned_at_the_scan_is_enforced_on_clone_and_push(repo, tmp_path):
    server = repo["server"]
    pinned = scan_host_key("127.0.0.1", server.port, ALGOS, policy=repo["policy"])
    assert pinned.key == server.host_key_base64
    auth = _auth(repo, pinned)
    with Repository.clone(repo["url"], "main", auth, tmp_path / "work", policy=repo["policy"]) as work:
        work.write_file("clusters/c1/a.yaml", b"a: 1\n")
        assert work.commit("Add a")
        before = git_log(repo["bare"], "main")
        old = fingerprint(server.host_key_base64)
        server.replace_host_key()  # a reinstalled server, or someone in the middle, after the scan
        new = fingerprint(server.host_key_base64)
        seen = len(server.requests)
        with pytest.raises(HostKeyMismatch) as push:
            work.push()
    message = str(push.value)
    assert f"presented host key ssh-rsa {new}, not the one pinned for this run (ssh-rsa {old})" in message
    assert "nothing was sent" in message
    assert git_log(repo["bare"], "main") == before  # nothing pushed
    assert server.requests[seen:] == []  # no git command ran; the key was not even offered
    with pytest.raises(HostKeyMismatch, match=re.escape(f"presented host key ssh-rsa {new}, not the one pinned")):
        Repository.clone(repo["url"], "main", auth, tmp_path / "again", policy=repo["policy"])
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


def test_a_scan_offering_algorithms_the_server_lacks_is_a_clear_error(repo):
    with pytest.raises(SSHError) as scan:
        scan_host_key("127.0.0.1", repo["server"].port, ("ssh-ed25519",), policy=repo["policy"])
    message = str(scan.value)
    assert message.startswith(f"ssh://127.0.0.1:{repo['server'].port}: the SSH server offers no host key algorithm "
                              "of ssh-ed25519 (sshHostkeyAlgos)"), message
    assert repo["server"].requests == [] and repo["server"].connections == 1  # connected, nothing authenticated
