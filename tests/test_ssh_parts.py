"""The pure parts of SSH bootstrap: URLs as Flux builds them, known_hosts lines, key pairs, tags."""

from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.flux import keypair
from shared.flux.options import is_azure_devops_ssh, ssh_sync_url
from shared.flux.sourcesecret import known_host_keys, known_hosts_line, string_data
from shared.trust import DestinationRefused, GitPolicy, parse_git_url


@pytest.mark.parametrize("url, kwargs, expected", [
    # cmd/flux/bootstrap_git.go: the URL's user stays unless --username is not "git"; --ssh-hostname replaces host[:port]
    ("ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet", {}, "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet"),
    ("ssh://ssh.dev.azure.com/v3/contoso/platform/fleet", {}, "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet"),
    ("ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet", {"username": "flux"}, "ssh://flux@ssh.dev.azure.com/v3/contoso/platform/fleet"),
    ("ssh://org@vs-ssh.visualstudio.com/v3/org/p/r", {}, "ssh://org@vs-ssh.visualstudio.com/v3/org/p/r"),
    ("ssh://git@host:2222/v3/o/p/r", {"ssh_hostname": "mirror:22"}, "ssh://git@mirror:22/v3/o/p/r"),
    # https + --ssh-hostname: Azure DevOps Services gets its SSH path (Flux would keep /_git/)
    ("https://dev.azure.com/contoso/platform/_git/fleet", {"ssh_hostname": "ssh.dev.azure.com"}, "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet"),
    ("https://contoso@dev.azure.com/contoso/My%20Project/_git/fleet", {"ssh_hostname": "ssh.dev.azure.com"}, "ssh://git@ssh.dev.azure.com/v3/contoso/My%20Project/fleet"),
    ("https://dev.azure.com/contoso/_git/fleet", {"ssh_hostname": "ssh.dev.azure.com"}, "ssh://git@ssh.dev.azure.com/v3/contoso/fleet/fleet"),
    ("https://contoso.visualstudio.com/DefaultCollection/platform/_git/fleet", {"ssh_hostname": "vs-ssh.visualstudio.com"}, "ssh://git@vs-ssh.visualstudio.com/v3/contoso/platform/fleet"),
    # another server (Azure DevOps Server): the path as Flux keeps it
    ("https://ado.corp.example/tfs/platform/_git/fleet", {"ssh_hostname": "ado.corp.example:22"}, "ssh://git@ado.corp.example:22/tfs/platform/_git/fleet"),
])
def test_ssh_sync_url_follows_flux(url, kwargs, expected):
    assert ssh_sync_url(url, **kwargs) == expected


def test_an_https_url_that_is_not_a_repository_has_no_ssh_path():
    with pytest.raises(InvalidInput) as err:
        ssh_sync_url("https://dev.azure.com/contoso/platform", ssh_hostname="ssh.dev.azure.com")
    assert err.value.field == "url" and "Clone → SSH" in err.value.message


@pytest.mark.parametrize("url, expected", [
    ("ssh://git@ssh.dev.azure.com/v3/o/p/r", True), ("ssh://git@vs-ssh.visualstudio.com/v3/o/p/r", True),
    ("ssh://git@127.0.0.1:2222/v3/o/p/r", True), ("ssh://git@ado.corp/tfs/p/_git/r", False),
    ("ssh://git@github.com/o/r", False), ("https://dev.azure.com/o/p/_git/r", False),
])
def test_azure_devops_ssh_urls(url, expected):
    assert is_azure_devops_ssh(url) is expected


def test_known_hosts_lines_as_flux_writes_them():
    assert known_hosts_line("ssh.dev.azure.com", 22, "ssh-rsa", "AAAAB3") == "ssh.dev.azure.com ssh-rsa AAAAB3"
    assert known_hosts_line("127.0.0.1", 2222, "ssh-rsa", "AAAAB3") == "[127.0.0.1]:2222 ssh-rsa AAAAB3"
    assert known_hosts_line("::1", 22, "ssh-rsa", "AAAAB3") == "[::1] ssh-rsa AAAAB3"
    text = ("# comment\n|1|hashed= ssh-rsa HASHED\n@revoked ssh.dev.azure.com ssh-rsa REVOKED\n"
            "other,ssh.dev.azure.com ssh-rsa KEY1\n[ssh.dev.azure.com]:2222 ssh-rsa KEY2\nssh.dev.azure.com ecdsa-sha2-nistp256 KEY3\n")
    assert known_host_keys(text, "ssh.dev.azure.com", 22) == [("ssh-rsa", "KEY1"), ("ecdsa-sha2-nistp256", "KEY3")]
    assert known_host_keys(text, "ssh.dev.azure.com", 2222) == [("ssh-rsa", "KEY2")]
    assert known_host_keys("", "h", 22) == []


def test_ssh_source_secret_keys():
    data = string_data(identity="PEM", identity_pub="ssh-rsa AAAA\n", known_hosts="host ssh-rsa K\n")
    assert data == {"identity": "PEM", "identity.pub": "ssh-rsa AAAA\n", "known_hosts": "host ssh-rsa K"}
    assert string_data(identity="PEM", identity_pub="p\n", known_hosts="k", password="pass")["password"] == "pass"


def test_generated_rsa_key_pair_is_flux_shaped():
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pair = keypair.generate_rsa(2048)
    assert pair.private_key.startswith("-----BEGIN PRIVATE KEY-----\n") and pair.private_key.endswith("-----END PRIVATE KEY-----\n")
    assert load_pem_private_key(pair.private_key.encode(), None).key_size == 2048
    assert pair.public_key.startswith("ssh-rsa ") and pair.public_key.endswith("\n") and pair.public_key.count("\n") == 1
    assert len(pair.public_key.split()) == 2  # no comment, as ssh.MarshalAuthorizedKey
    assert pair.is_rsa and pair.bits == 2048
    assert "PRIVATE" not in repr(pair)


def _formats():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + "\n"
    return key, public, {
        "pkcs1": key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()).decode(),
        "pkcs8": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
        "pkcs8-encrypted": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")).decode(),
        "openssh-encrypted": key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, serialization.BestAvailableEncryption(b"pw")).decode(),
    }


def test_loading_keys_keeps_their_bytes_and_derives_the_public_key():
    _, public, texts = _formats()
    for name, text in texts.items():
        pair = keypair.load(text, "pw" if "encrypted" in name else None)
        assert pair.private_key == text and pair.public_key == public, name
    with pytest.raises(InvalidInput, match="encrypted; give its passphrase"):
        keypair.load(texts["pkcs8-encrypted"])
    with pytest.raises(InvalidInput, match="wrong passphrase"):
        keypair.load(texts["openssh-encrypted"], "nope")
    with pytest.raises(InvalidInput, match="not encrypted, but a passphrase"):
        keypair.load(texts["pkcs1"], "pw")
    with pytest.raises(InvalidInput, match="not a private key") as err:
        keypair.load("ssh-rsa AAAA not a private key")
    assert err.value.field == "privateKeySecret"


def test_ssh_urls_and_tags():
    url = parse_git_url("ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet")
    assert (url.scheme, url.host, url.effective_port, url.user) == ("ssh", "ssh.dev.azure.com", 22, "git")
    assert url.url == "ssh://git@ssh.dev.azure.com/v3/contoso/platform/fleet"
    covers = [
        ("ssh://ssh.dev.azure.com/v3/contoso/", True), ("ssh://git@ssh.dev.azure.com/v3/contoso/", True),
        ("ssh://git@ssh.dev.azure.com/v3/Contoso", True), ("ssh://other@ssh.dev.azure.com/v3/contoso/", False),
        ("ssh://git@ssh.dev.azure.com/v3/contoso.evil/", False), ("ssh://git@ssh.dev.azure.com:2222/v3/contoso/", False),
        ("https://dev.azure.com/contoso/", False),
    ]
    for prefix, expected in covers:
        assert url.covered_by(parse_git_url(prefix, prefix=True)) is expected, prefix
    with pytest.raises(DestinationRefused):
        parse_git_url("ssh://git:secret@ssh.dev.azure.com/v3/c/p/r")  # never a password
    policy = GitPolicy.from_settings({})
    assert policy.destination("ssh://git@ssh.dev.azure.com/v3/c/p/r").url.user == "git"  # in the default allowlist
    with pytest.raises(DestinationRefused):
        policy.destination("ssh://git@github.com/c/r")
