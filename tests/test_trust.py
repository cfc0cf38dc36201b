"""Trust boundaries (issue 7, part A): every attack on git destinations, credential binding,
rotation's recorded URL, the Flux registry/namespace options and bad input, tried against the real
peers with listeners that record every request, and asserted to fail closed with the documented
4xx and nothing sent.

Peers: the git smart-HTTP server (its ``requests`` log), a raw TCP listener (``raw_listener``:
connections and bytes) standing in for an attacker's host or the metadata service, the Key Vault test
server through the real ``SecretClient`` (its ``request_log``), the Kubernetes API test server (its
``request_log``), Azurite for the registry. DNS answers are played by a resolver stand-in
(``socket.getaddrinfo`` replaced for one test domain only), as a rebinding DNS server would answer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import azure.functions as func
import pytest

from shared import services, trust
from shared.errors import InvalidInput
from shared.ports.git import GitAuth, ls_remote
from shared.trust import GitPolicy, parse_git_url
from tests.peers.entra_tokens import JwtTestCredential
from tests.peers.git_server import log as git_log
from tests.test_bootstrap_e2e import call, cluster_registry, env  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"
REAL_CLUSTER = bool(os.environ.get("TEST_KUBECONFIG"))


# -- the policy itself (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize("host", [
    "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.0.0.1",
    "169.254.169.254", "[::1]", "10.0.0.5", "[fd00:ec2::254]", "dev.azure.com.evil.example",
    "a.b.visualstudio.com", "dev.azure.com.", "xn--dv-bja.azure.com",
])
def test_default_allowlist_refuses_every_spelling_of_a_local_or_foreign_host(host):
    with pytest.raises(InvalidInput) as err:
        GitPolicy.from_settings({}).destination(f"https://{host}/o/p/_git/r", field="url")
    assert err.value.field == "url" and err.value.status == 400


def test_only_the_exact_listed_spelling_of_an_ip_is_allowed():
    policy = GitPolicy.from_settings({"GIT_ALLOWED_HOSTS": "127.0.0.1"})
    assert policy.destination("http://127.0.0.1:8080/o/p/_git/r", allow_insecure_http=True).exact
    for other in ("2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]", "localhost", "127.0.0.2"):
        with pytest.raises(InvalidInput):
            policy.destination(f"http://{other}:8080/o/p/_git/r", allow_insecure_http=True)


def test_default_allowlist_takes_azure_devops_and_refuses_http_there():
    policy = GitPolicy.from_settings({})
    assert str(policy.destination("https://contoso@dev.azure.com/contoso/platform/_git/fleet")) == \
        "https://dev.azure.com/contoso/platform/_git/fleet"
    assert not policy.destination("https://contoso.visualstudio.com/platform/_git/fleet").exact
    for url in ("http://dev.azure.com/contoso/p/_git/r", "http://contoso.visualstudio.com/p/_git/r"):
        with pytest.raises(InvalidInput, match="https only"):
            policy.destination(url, allow_insecure_http=True)
    # an Azure DevOps Server host: listed by the operator; http only because it is listed exactly
    server = GitPolicy.from_settings({"GIT_ALLOWED_HOSTS": "ado.corp.example:8080"})
    assert server.destination("http://ado.corp.example:8080/DefaultCollection/p/_git/r", allow_insecure_http=True)
    with pytest.raises(InvalidInput):
        server.destination("https://ado.corp.example/DefaultCollection/p/_git/r")  # another port
    with pytest.raises(InvalidInput, match="Entra ID token"):
        server.destination("http://ado.corp.example:8080/c/p/_git/r", allow_insecure_http=True, bearer=True)


@pytest.mark.parametrize("url", [
    "https://evil.example\\@dev.azure.com/o/p/_git/r",        # urllib3 and urlsplit disagree on the host
    "https://dev.azure.com/contoso/../evil/_git/r",            # urllib3 removes dot segments
    "https://dev.azure.com/contoso/%2e%2e/evil/_git/r",
    "https://dev.azure.com/contoso%2F..%2Fevil/p/_git/r",
    "https://dev.azure.com/o/p/_git/r?x=1",
    "https://dev.azure.com/o/p/_git/r#x",
    "https://dev.azure.com\n.evil.example/o/p/_git/r",
    "https://user:pat-in-url@dev.azure.com/o/p/_git/r",
    "https://dev.azure.com:0/o/p/_git/r",
    "https://[fe80::1%25eth0]/o/p/_git/r",
])
def test_ambiguous_git_urls_are_refused(url):
    with pytest.raises(InvalidInput) as err:
        GitPolicy.from_settings({"GIT_ALLOWED_HOSTS": "dev.azure.com,[fe80::1]"}).destination(url)
    assert err.value.field == "url" and "pat-in-url" not in str(err.value)


@pytest.mark.parametrize("prefix, covered", [
    ("https://dev.azure.com/contoso/", True),
    ("https://dev.azure.com/contoso", True),
    ("https://DEV.azure.com/CONTOSO/platform/", True),          # ADO names are case-insensitive
    ("https://dev.azure.com:443/contoso/My%20Project/", True),  # default port, percent-decoded
    ("https://dev.azure.com/contoso/platform/_git/fleet", True),
    ("https://dev.azure.com/", True),
    ("https://dev.azure.com/contoso.evil/", False),
    ("https://dev.azure.com/contos", False),
    ("https://dev.azure.com/contoso/platform/_git/fleet-other", False),
    ("http://dev.azure.com/contoso/", False),
    ("https://dev.azure.com:8443/contoso/", False),
    ("https://contoso@dev.azure.com/contoso/", False),            # user info: not a valid prefix
    ("https://dev.azure.com.evil.example/contoso/", False),
    ("https://evil.example/", False),
])
def test_url_prefix_matching_is_scheme_host_port_and_whole_segments(prefix, covered):
    from shared.ports.azure.keyvault import SecretValue

    url = parse_git_url("https://dev.azure.com/Contoso/My%20Project/_git/fleet" if "My%20Project" in prefix
                        else "https://dev.azure.com/contoso/platform/_git/fleet")
    secret = SecretValue("fleet-pat", "v", "1" * 32, None, None, tags={trust.URL_PREFIXES_TAG: "https://x.example/a/, " + prefix})
    if covered:
        assert trust.git_credential(secret, url, field="passwordSecret") == "v"
    else:
        with pytest.raises(InvalidInput) as err:
            trust.git_credential(secret, url, field="passwordSecret")
        assert err.value.field == "passwordSecret" and trust.URL_PREFIXES_TAG in err.value.message


def test_yaml_ambiguous_and_system_namespaces_are_refused():
    from shared.flux.options import validate_namespace

    for ns in ("true", "yes", "on", "off", "no", "y", "null", "1", "010", "0x1f", "0o17", "1e3"):
        with pytest.raises(InvalidInput):
            validate_namespace(ns)
    for ns in trust.RESERVED_NAMESPACES:
        with pytest.raises(InvalidInput):
            trust.check_namespace(ns)
    assert validate_namespace("flux-system") == "flux-system" and validate_namespace("tenant-1") == "tenant-1"


def test_registry_allowlist_covers_an_entry_and_repositories_below_it():
    env = {"FLUX_ALLOWED_REGISTRIES": "ghcr.io/fluxcd, contoso.azurecr.io/fluxcd"}
    for ok in ("ghcr.io/fluxcd", "GHCR.io/fluxcd", "ghcr.io/fluxcd/mirror", "contoso.azurecr.io/fluxcd"):
        assert trust.check_registry(ok, environ=env) == ok
    for bad in ("ghcr.io/fluxcd-evil", "ghcr.io", "evil.example/fluxcd", "contoso.azurecr.io", "ghcr.io/fluxcdx/y"):
        with pytest.raises(InvalidInput) as err:
            trust.check_registry(bad, environ=env)
        assert err.value.field == "registry"
    with pytest.raises(InvalidInput) as err:
        trust.check_registry("evil.example/fluxcd", environ={})
    assert "FLUX_ALLOWED_REGISTRIES" in err.value.message


# -- bootstrap endpoint -----------------------------------------------------------------------------------


def request(env, **overrides) -> dict:
    body = {"url": env["url"], "path": "clusters/aks-weu-1", "allowInsecureHttp": True,
            "passwordSecret": "fleet-pat", "kubeconfigSecret": "aks-weu-1-kubeconfig"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def nothing_sent(env, kube_server, *, vault_read: bool) -> None:
    """No git request, no cluster write; with ``vault_read`` False, not even a Key Vault request
    (the check came before any call; the fixtures seed the vault without a request)."""
    assert env["git"].requests == []
    assert git_log(env["bare"], "main") == []
    if not vault_read:
        assert env["vault"].request_log == []
    if not REAL_CLUSTER:
        writes = [r for r, q in zip(kube_server.request_log, kube_server.request_queries)
                  if r[0] != "GET" and q.get("dryRun") != "All"]
        assert writes == []
        if not vault_read:
            assert kube_server.request_log == []


@pytest.mark.parametrize("host", ["localhost", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]"])
def test_bootstrap_to_a_loopback_spelling_sends_nothing(functions_by_name, env, kube_server, raw_listener, host):
    """The issue's first attack: any host a caller names, with allowInsecureHttp and a real PAT."""
    status, body = call(functions_by_name, request(env, url=f"http://{host}:{raw_listener.port}/contoso/platform/_git/fleet"))
    assert status == 400, body
    assert body["error"]["field"] == "url" and "GIT_ALLOWED_HOSTS" in body["error"]["message"]
    assert raw_listener.connections == 0 and raw_listener.received == b""
    nothing_sent(env, kube_server, vault_read=False)


def test_bootstrap_to_the_metadata_address_and_an_unlisted_host_is_refused(functions_by_name, env, kube_server):
    for url in ("http://169.254.169.254/metadata/identity/_git/r", "https://evil.example/contoso/platform/_git/fleet"):
        status, body = call(functions_by_name, request(env, url=url))
        assert status == 400 and body["error"]["field"] == "url", body
    nothing_sent(env, kube_server, vault_read=False)


def test_bootstrap_with_default_setting_refuses_even_the_local_peer(functions_by_name, env, kube_server, monkeypatch):
    monkeypatch.delenv("GIT_ALLOWED_HOSTS")
    status, body = call(functions_by_name, request(env))
    assert status == 400 and body["error"]["field"] == "url", body
    assert "dev.azure.com,ssh.dev.azure.com,*.visualstudio.com" in body["error"]["message"]
    nothing_sent(env, kube_server, vault_read=False)


def test_allow_insecure_http_only_for_an_exactly_listed_host(functions_by_name, env, kube_server, monkeypatch, raw_listener):
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1,*.rebind.test")
    status, body = call(functions_by_name, request(env, url=f"http://git.rebind.test:{raw_listener.port}/contoso/p/_git/r"))
    assert status == 400 and body["error"]["field"] == "url" and "listed exactly" in body["error"]["message"], body
    assert raw_listener.connections == 0
    nothing_sent(env, kube_server, vault_read=False)


@pytest.mark.parametrize("tags, content_type, expected", [
    (None, None, "has no tag flux-git-url-prefixes"),
    ({"flux-git-url-prefixes": "https://dev.azure.com/contoso/"}, None, "does not cover"),
    ({"flux-git-url-prefixes": "PREFIX_OTHER_ORG"}, None, "does not cover"),
    ({"flux-git-url-prefixes": "PREFIX_EVIL_DOT"}, None, "does not cover"),
    ({"flux-git-url-prefixes": "PREFIX_OTHER_PORT"}, None, "does not cover"),
    ({"flux-git-url-prefixes": "PREFIX"}, "application/x-kubeconfig", "marked as a kubeconfig"),
])
def test_a_secret_not_bound_to_the_url_is_never_sent(functions_by_name, env, kube_server, tags, content_type, expected):
    """Another team's PAT (tagged for another organisation), an untagged secret, a kubeconfig: 400
    naming passwordSecret and the tag to set; the git server received nothing."""
    port = env["git"].port
    values = {"PREFIX": env["prefix"], "PREFIX_OTHER_ORG": f"http://127.0.0.1:{port}/other-team/",
              "PREFIX_EVIL_DOT": f"http://127.0.0.1:{port}/contoso.evil/", "PREFIX_OTHER_PORT": f"http://127.0.0.1:{port + 1}/contoso/"}
    if tags:
        tags = {k: values.get(v, v) for k, v in tags.items()}
    env["vault"].seed("fleet-pat", env["pat"], tags=tags, content_type=content_type)
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["field"] == "passwordSecret" and expected in body["error"]["message"]
    assert "flux-git-url-prefixes" in body["error"]["message"] or "kubeconfig" in body["error"]["message"]
    assert env["pat"] not in json.dumps(body)
    nothing_sent(env, kube_server, vault_read=True)


def test_a_kubeconfig_named_as_the_password_is_never_sent(functions_by_name, env, kube_server):
    status, body = call(functions_by_name, request(env, passwordSecret="aks-weu-1-kubeconfig"))
    assert status == 400 and body["error"]["field"] == "passwordSecret", body
    assert "kubeconfig" in body["error"]["message"]
    assert env["kubeconfig"][:40] not in json.dumps(body)
    nothing_sent(env, kube_server, vault_read=True)


def test_an_unmarked_kubeconfig_is_not_used(functions_by_name, env, kube_server):
    env["vault"].seed("aks-weu-1-kubeconfig", env["kubeconfig"])  # a new version without the content type
    status, body = call(functions_by_name, request(env))
    assert status == 400 and body["error"]["field"] == "kubeconfigSecret", body
    assert "application/x-kubeconfig" in body["error"]["message"]
    nothing_sent(env, kube_server, vault_read=True)
    if not REAL_CLUSTER:
        assert kube_server.request_log == []


def test_the_entra_token_goes_only_to_azure_devops_hosts(functions_by_name, env, kube_server):
    """withBearerToken to the local peer, which is allowed for PATs but is not listed in
    GIT_BEARER_TOKEN_HOSTS: no token is even requested."""
    cred = JwtTestCredential()
    services.set_credential_factory(lambda: cred)
    try:
        status, body = call(functions_by_name, request(env, withBearerToken=True, passwordSecret=None))
    finally:
        services.set_credential_factory(None)
    assert status == 400 and body["error"]["field"] == "url" and "GIT_BEARER_TOKEN_HOSTS" in body["error"]["message"], body
    assert cred.requests == []
    nothing_sent(env, kube_server, vault_read=False)


class _RebindingDNS:
    """Answers for ``*.rebind.test`` as an attacker's DNS server would: the ``answers`` in turn (the
    last one repeats); every other name goes to the real resolver."""

    def __init__(self, monkeypatch, *answers: str):
        self.answers = list(answers)
        self.asked = 0
        real = socket.getaddrinfo

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            if isinstance(host, str) and host.endswith(".rebind.test"):
                address = self.answers[min(self.asked, len(self.answers) - 1)]
                self.asked += 1
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]
            return real(host, port, family, type, proto, flags)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_name_that_resolves_to_loopback_is_refused_before_any_call(functions_by_name, env, kube_server, monkeypatch, raw_listener):
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1,*.rebind.test")
    _RebindingDNS(monkeypatch, "127.0.0.1")
    status, body = call(functions_by_name, request(env, url=f"https://git.rebind.test:{raw_listener.port}/contoso/p/_git/r"))
    assert status == 400 and body["error"]["field"] == "url" and "loopback" in body["error"]["message"], body
    assert raw_listener.connections == 0
    nothing_sent(env, kube_server, vault_read=False)


def test_dns_rebinding_is_caught_on_the_connected_address(functions_by_name, env, kube_server, monkeypatch, raw_listener):
    """The name resolves to a public address when checked, then to 127.0.0.1 when dulwich connects:
    the peer check on the connected socket refuses it before TLS, so not one byte reaches the listener."""
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1,*.rebind.test")
    dns = _RebindingDNS(monkeypatch, "93.184.215.14", "127.0.0.1")
    env["vault"].seed_pat("fleet-pat", env["pat"], f"https://git.rebind.test:{raw_listener.port}/contoso/")
    status, body = call(functions_by_name, request(env, url=f"https://git.rebind.test:{raw_listener.port}/contoso/p/_git/r"))
    assert dns.asked >= 2
    assert status == 400 and body["error"]["field"] == "url", body
    assert "127.0.0.1, a loopback address" in body["error"]["message"]
    assert raw_listener.received == b""  # connected (that is how the address is known), nothing sent
    nothing_sent(env, kube_server, vault_read=True)


def _accepted(listener, expected: int) -> int:
    """The listener's connection count once it reached ``expected`` (it accepts on its own thread)
    or after 5 s."""
    deadline = time.monotonic() + 5
    while listener.connections < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return listener.connections


def _ssh_key_pem() -> str:
    """A new RSA key (PKCS#8 PEM), as an operator stores one for privateKeySecret."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize("host", ["localhost", "2130706433", "169.254.169.254"])
def test_bootstrap_over_ssh_to_a_refused_host_sends_nothing(functions_by_name, env, kube_server, raw_listener, host):
    """An ``ssh://`` URL to a loopback spelling or the metadata address, with a real key named (and
    tagged for that URL, so only the host check stands): 400 naming url before any connection or any
    Key Vault read; the generated-key path (no privateKeySecret) is refused as early, nothing stored."""
    url = f"ssh://git@{host}:{raw_listener.port}/v3/contoso/platform/fleet"
    env["vault"].seed("fleet-ssh-key", _ssh_key_pem(), tags={"flux-git-url-prefixes": f"ssh://git@{host}:{raw_listener.port}/v3/contoso/"})
    for overrides in ({"privateKeySecret": "fleet-ssh-key"}, {}):
        status, body = call(functions_by_name, request(env, url=url, allowInsecureHttp=None, passwordSecret=None, **overrides))
        assert status == 400, body
        assert body["error"]["field"] == "url" and "GIT_ALLOWED_HOSTS" in body["error"]["message"], body
    assert raw_listener.connections == 0 and raw_listener.received == b""
    assert env["vault"].request_log == []  # no secret read, no key generated
    nothing_sent(env, kube_server, vault_read=False)


def test_dns_rebinding_on_the_ssh_connect_path_is_caught_on_the_connected_address(
        functions_by_name, env, kube_server, monkeypatch, raw_listener):
    """Over SSH as over HTTPS: the name resolves to a public address when the host is checked, then
    to 127.0.0.1 when the app connects to scan the host key; the connected address is checked
    before the SSH handshake, so not one byte (not even the SSH banner) reaches the listener, and
    the key is never used."""
    from shared.ports import ssh as ssh_port

    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1,*.rebind.test")
    dns = _RebindingDNS(monkeypatch, "93.184.215.14", "127.0.0.1")
    url = f"ssh://git@git.rebind.test:{raw_listener.port}/v3/contoso/platform/fleet"
    env["vault"].seed("fleet-ssh-key", _ssh_key_pem(),
                      tags={"flux-git-url-prefixes": f"ssh://git@git.rebind.test:{raw_listener.port}/v3/contoso/"})
    status, body = call(functions_by_name, request(env, url=url, allowInsecureHttp=None, passwordSecret=None,
                                                   privateKeySecret="fleet-ssh-key"))
    assert dns.asked >= 2
    assert status == 400 and body["error"]["field"] == "url", body
    assert "127.0.0.1, a loopback address" in body["error"]["message"], body
    assert _accepted(raw_listener, 1) == 1 and raw_listener.received == b""  # connected (so the address is known), nothing sent
    nothing_sent(env, kube_server, vault_read=True)

    # the port itself: every SSH connection (scan, clone, push) goes through _connect, which checks
    # the address it connected to whatever the name answered before
    dns.answers, dns.asked = ["127.0.0.1"], 0
    with pytest.raises(InvalidInput) as err:
        ssh_port.scan_host_key("git.rebind.test", raw_listener.port, ("rsa-sha2-512",),
                               policy=GitPolicy.from_settings(), field="url")
    assert dns.asked == 1 and err.value.field == "url" and "127.0.0.1, a loopback address" in err.value.message
    assert _accepted(raw_listener, 2) == 2 and raw_listener.received == b""


def test_a_redirect_to_an_unlisted_host_is_not_followed(git_allowed_local, raw_listener, git_pat):
    """A listed git server answers 302 to another host: the connection there is refused before a byte."""
    target = f"http://localhost:{raw_listener.port}/o/p/_git/r/info/refs?service=git-upload-pack"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(InvalidInput) as err:
            ls_remote(f"http://127.0.0.1:{server.server_address[1]}/o/p/_git/r", GitAuth(password=git_pat),
                      allow_insecure_http=True)
    finally:
        server.shutdown()
        server.server_close()
    assert "localhost" in str(err.value) and git_pat not in str(err.value)
    assert raw_listener.connections == 0


@pytest.mark.parametrize("overrides, field", [
    ({"registry": "evil.example/fluxcd"}, "registry"),
    ({"registry": "ghcr.io/fluxcd-evil"}, "registry"),
    ({"registry": "ghcr.io/fluxcd\n"}, "registry"),
    ({"namespace": "kube-system"}, "namespace"),
    ({"namespace": "kube-public"}, "namespace"),
    ({"namespace": "kube-node-lease"}, "namespace"),
    ({"namespace": "default"}, "namespace"),
    ({"namespace": "true"}, "namespace"),
    ({"namespace": "yes"}, "namespace"),
    ({"namespace": "on"}, "namespace"),
    ({"namespace": "1"}, "namespace"),
    ({"namespace": "010"}, "namespace"),
    ({"namespace": "0x1f"}, "namespace"),
    ({"branch": "main\ud800"}, "branch"),
    ({"authorName": "Flux \udc80"}, "authorName"),
    ({"authorEmail": "\ud83d@example.com"}, "authorEmail"),
    ({"commitMessageAppendix": "\udfff"}, "commitMessageAppendix"),
    ({"username": "gît-ü-ok-but-€"}, "username"),
    ({"username": "git\n"}, "username"),
    ({"clusterDomain": "cluster.local\n"}, "clusterDomain"),
    ({"clusterName": "aks-1\n"}, "clusterName"),
    ({"secretName": "flux-system\n"}, "secretName"),
    ({"passwordSecret": "fleet-pat\n"}, "passwordSecret"),
    ({"url\udc80": "x"}, "'url\\udc80'"),
])
def test_bad_input_is_a_400_naming_the_field_before_any_call(functions_by_name, env, kube_server, overrides, field):
    status, body = call(functions_by_name, json.dumps(request(env, **overrides)).encode())
    assert status == 400, body
    assert body["error"]["field"] == field, body
    nothing_sent(env, kube_server, vault_read=False)


def test_deeply_nested_json_is_a_400(functions_by_name, env, kube_server):
    status, body = call(functions_by_name, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and body["error"]["field"] == "body"
    status, body = call(functions_by_name, b'{"url": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 400 and body["error"]["field"] == "body"
    nothing_sent(env, kube_server, vault_read=False)


def test_echoed_input_is_cut_short(functions_by_name, env, kube_server, caplog):
    huge = "x" * 20_000
    for overrides in ({"branch": "a.." + huge}, {"namespace": huge}, {huge: 1}, {"registry": huge}):
        status, body = call(functions_by_name, request(env, **overrides))
        assert status == 400 and len(json.dumps(body)) < 1000, body
    assert huge[:200] not in caplog.text
    nothing_sent(env, kube_server, vault_read=False)


def test_a_listed_mirror_registry_is_used(functions_by_name, env, monkeypatch):
    """FLUX_ALLOWED_REGISTRIES lists a mirror (an ACR): it is taken, and the components point at it."""
    from tests.peers.git_server import read_tree

    monkeypatch.setenv("FLUX_ALLOWED_REGISTRIES", "ghcr.io/fluxcd,contoso.azurecr.io/fluxcd")
    status, body = call(functions_by_name, request(env, registry="contoso.azurecr.io/fluxcd"))
    assert status == 200, body
    components = read_tree(env["bare"], "main")["clusters/aks-weu-1/flux-system/gotk-components.yaml"].decode()
    assert "image: contoso.azurecr.io/fluxcd/source-controller:" in components and "ghcr.io/fluxcd" not in components


# -- rotation ---------------------------------------------------------------------------------------------


def _fleet_cluster(kubeconfig_text, url):
    """A cluster with Flux's GitRepository CRD, a GitRepository at ``url`` and a source Secret."""
    import yaml

    from shared.ports.kube import Cluster

    with open(GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml", encoding="utf-8") as f:
        crd = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "CustomResourceDefinition"
                   and d["metadata"]["name"] == "gitrepositories.source.toolkit.fluxcd.io")
    c = Cluster.from_kubeconfig(kubeconfig_text)
    c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}, crd], poll_interval=0.05)
    c.apply([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
              "metadata": {"name": "flux-system", "namespace": "flux-system"},
              "spec": {"interval": "1m0s", "ref": {"branch": "main"}, "url": url, "secretRef": {"name": "flux-system"}}}],
            poll_interval=0.05)
    c.reconcile_secret("flux-system", "flux-system", {"username": "git", "password": "old-pat-value"})
    return c


@pytest.fixture
def rotation_env(env, kube_server, kubeconfig_text):
    if REAL_CLUSTER:
        pytest.skip("rewrites the GitRepository of flux-system")
    cluster = _fleet_cluster(kubeconfig_text, env["url"])
    yield {**env, "cluster": cluster}
    cluster.close()


def _rotate(record, keyvault, credential=None):
    from shared.rotation import RotationSettings, Rotator

    return Rotator(keyvault=keyvault, credential=credential or JwtTestCredential(),
                   settings=RotationSettings(concurrency=2)).run([record]).clusters[0]


def _record(env, **kw):
    from shared.rotation.registry import ClusterRecord

    base = dict(name="aks-weu-1", kubeconfig_secret="aks-weu-1-kubeconfig", pat_secret="fleet-pat",
                allow_insecure_http=True, git_url=env["url"])
    base.update(kw)
    return ClusterRecord(**base).validate()


def test_rotation_refuses_a_gitrepository_that_now_names_another_url(rotation_env, keyvault, http_targets):
    """Someone who can push to the synced repository changed the GitRepository's spec.url to their
    server (on an allowed host, even): the new PAT is not sent there, the cluster fails as tampering."""
    env = rotation_env
    attacker = f"{http_targets.url}/contoso/platform/_git/fleet"
    env["cluster"].apply([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                           "metadata": {"name": "flux-system", "namespace": "flux-system"},
                           "spec": {"interval": "1m0s", "ref": {"branch": "main"}, "url": attacker,
                                    "secretRef": {"name": "flux-system"}}}], poll_interval=0.05)
    result = _rotate(_record(env), keyvault)
    assert result.status == "failed" and "possible tampering" in result.errors[0], result.errors
    assert "re-register" in result.errors[0]
    assert http_targets.requests == [] and env["git"].requests == []
    assert env["cluster"].read_secret_data("flux-system", "flux-system")["password"] == "old-pat-value"


def _git_repository(cluster, name, url, secret):
    cluster.apply([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                    "metadata": {"name": name, "namespace": "flux-system"},
                    "spec": {"interval": "1m0s", "ref": {"branch": "main"}, "url": url, "secretRef": {"name": secret}}}],
                  poll_interval=0.05)


def test_one_tampered_cluster_fails_and_the_others_go_on(rotation_env, keyvault, http_targets):
    """Two records in one run: ``good`` (its GitRepository names the recorded URL) is updated with the
    PAT, checked against the recorded repository only; ``tampered`` (its GitRepository now names
    the attacker's server) fails as possible tampering: nothing sent for it, its Secret untouched."""
    from shared.rotation import RotationSettings, Rotator

    env = rotation_env
    cluster = env["cluster"]
    attacker = f"{http_targets.url}/contoso/platform/_git/fleet"
    _git_repository(cluster, "tampered", attacker, "tampered-auth")
    cluster.reconcile_secret("flux-system", "tampered-auth", {"username": "git", "password": "old-tampered-value"})
    good = _record(env, name="good")
    tampered = _record(env, name="tampered", git_repository="tampered", source_secret="tampered-auth")
    summary = Rotator(keyvault=keyvault, credential=JwtTestCredential(),
                      settings=RotationSettings(concurrency=2)).run([tampered, good])
    results = {c.cluster: c for c in summary.clusters}
    assert results["good"].status == "updated", results["good"].errors
    assert results["tampered"].status == "failed" and "possible tampering" in results["tampered"].errors[0], \
        results["tampered"].errors
    assert http_targets.requests == []  # nothing went to the tampered URL
    recorded = env["url"].split(f":{env['git'].port}", 1)[1] + "/"
    assert env["git"].requests and all(r.path.startswith(recorded) for r in env["git"].requests)  # only the recorded repository
    assert cluster.read_secret_data("flux-system", "flux-system")["password"] == env["pat"]
    assert cluster.read_secret_data("flux-system", "tampered-auth")["password"] == "old-tampered-value"
    assert summary.failed == 1


def test_rotation_in_entra_password_mode_refuses_a_tampered_gitrepository(rotation_env, keyvault, http_targets,
                                                                          entra_git_hosts):
    """``entra-password`` (the Function's Entra ID token as the Basic password): with the GitRepository
    pointing elsewhere, no token is even requested, none is sent, the Secret is untouched. The bearer
    hosts list the local peer, so only the tampering check stands between the token and the URL."""
    env = rotation_env
    _git_repository(env["cluster"], "flux-system", f"{http_targets.url}/contoso/platform/_git/fleet", "flux-system")
    cred = JwtTestCredential()
    result = _rotate(_record(env, git_auth="entra-password", pat_secret=None), keyvault, cred)
    assert result.status == "failed" and "possible tampering" in result.errors[0], result.errors
    assert cred.requests == [] and cred.issued == []
    assert http_targets.requests == [] and env["git"].requests == []
    assert env["cluster"].read_secret_data("flux-system", "flux-system")["password"] == "old-pat-value"


def test_rotation_sends_to_the_recorded_url_only_when_allowed_and_tagged(rotation_env, keyvault, monkeypatch):
    env = rotation_env
    # 1. the PAT's tag does not cover the recorded URL: nothing sent, nothing written
    env["vault"].seed_pat("fleet-pat", env["pat"], f"http://127.0.0.1:{env['git'].port}/other-team/")
    result = _rotate(_record(env), keyvault)
    assert result.status == "failed" and "patSecret" in result.errors[0] and "flux-git-url-prefixes" in result.errors[0]
    assert env["git"].requests == []
    # 2. the recorded URL is no longer allowed (setting changed): refused before any Key Vault read
    monkeypatch.delenv("GIT_ALLOWED_HOSTS")
    env["vault"].request_log.clear()
    result = _rotate(_record(env), keyvault)
    assert result.status == "failed" and "gitUrl" in result.errors[0] and "nothing sent" in result.errors[0]
    assert env["vault"].request_log == [] and env["git"].requests == []
    # 3. allowed and tagged: the PAT is checked against the recorded URL and written
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1")
    env["vault"].seed_pat("fleet-pat", env["pat"], env["prefix"])
    result = _rotate(_record(env), keyvault)
    assert result.status == "updated", result.errors
    assert {r.user for r in env["git"].requests if r.status == 200} == {"git"}
    assert env["cluster"].read_secret_data("flux-system", "flux-system")["password"] == env["pat"]


def test_rotation_entra_token_only_to_bearer_hosts(rotation_env, keyvault):
    env = rotation_env
    cred = JwtTestCredential()
    result = _rotate(_record(env, git_auth="entra-bearer", pat_secret=None), keyvault, cred)
    assert result.status == "failed" and "GIT_BEARER_TOKEN_HOSTS" in result.errors[0], result.errors
    assert cred.requests == [] and env["git"].requests == []


def test_rotation_refuses_an_unmarked_kubeconfig(rotation_env, keyvault, kube_server):
    env = rotation_env
    env["vault"].seed("aks-weu-1-kubeconfig", env["kubeconfig"])
    kube_server.request_log.clear()
    result = _rotate(_record(env), keyvault)
    assert result.status == "failed" and "application/x-kubeconfig" in result.errors[0]
    assert kube_server.request_log == [] and env["git"].requests == []


# -- registry and rotation endpoints ------------------------------------------------------------------------


def _registry_call(functions_by_name, method, name, body=None):
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    fn = functions_by_name["registry_cluster" if method != "POST" else "rotate_cluster_now"]
    url = ("/api/registry/clusters/" if method != "POST" else "/api/rotation/clusters/") + name
    resp = fn.get_user_function()(func.HttpRequest(method, url, route_params={"name": name}, body=raw))
    text = resp.get_body().decode()
    return resp.status_code, (json.loads(text) if text else None)


GOOD = {"kubeconfigSecret": "aks-1-kubeconfig", "patSecret": "fleet-pat", "gitUrl": "https://dev.azure.com/contoso/p/_git/r"}


@pytest.mark.parametrize("body, field", [
    ({**GOOD, "gitUrl": "http://localhost:8080/o/p/_git/r", "allowInsecureHttp": True}, "gitUrl"),
    ({**GOOD, "gitUrl": "https://2130706433/o/p/_git/r"}, "gitUrl"),
    ({**GOOD, "gitUrl": "https://evil.example/o/p/_git/r"}, "gitUrl"),
    ({**GOOD, "gitUrl": None}, "gitUrl"),
    ({**GOOD, "gitAuth": "entra-bearer", "patSecret": None, "gitUrl": "https://ado.corp.example/c/p/_git/r"}, "gitUrl"),
    # an SSH cluster's key goes to its gitUrl (the cluster syncs from it, upgrades push there): the allowlist holds
    ({**GOOD, "gitAuth": "ssh", "patSecret": None, "gitUrl": "ssh://git@evil.example/v3/o/p/r"}, "gitUrl"),
    ({**GOOD, "gitAuth": "ssh", "patSecret": None, "gitUrl": "ssh://git@169.254.169.254/v3/o/p/r"}, "gitUrl"),
    ({**GOOD, "username": "git\n"}, "username"),
    ({**GOOD, "username": "gît€"}, "username"),
    ({**GOOD, "namespace": "kube-system"}, "namespace"),
    ({**GOOD, "namespace": "yes"}, "namespace"),
    ({**GOOD, "sourceSecret": "flux-system\n"}, "sourceSecret"),
    ({**GOOD, "context": "ctx\ud800"}, "context"),
    ({**GOOD, "kubeconfigSecret": "k\n"}, "kubeconfigSecret"),
])
def test_registry_put_bad_input_is_a_400_and_storage_is_untouched(functions_by_name, cluster_registry, body, field, monkeypatch):
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "dev.azure.com,*.ado.corp.example")
    status, resp = _registry_call(functions_by_name, "PUT", "aks-1", json.dumps(body).encode())
    assert status == 400, resp
    assert resp["error"]["field"] == field, resp
    assert cluster_registry.scan() == ([], [])


def test_registry_and_rotation_routes_take_no_500(functions_by_name, cluster_registry):
    assert _registry_call(functions_by_name, "PUT", "aks-1", b"[" * 100_000)[0] == 400
    for name in ("aks\udc80", "aks-1\n", "x" * 10_000):
        for method in ("GET", "PUT", "DELETE", "POST"):
            status, resp = _registry_call(functions_by_name, method, name, GOOD if method == "PUT" else None)
            assert status == 400 and resp["error"]["field"] == "name", (method, status, resp)
            assert len(json.dumps(resp)) < 1000
    assert cluster_registry.scan() == ([], [])


def test_registry_put_records_the_git_url(functions_by_name, cluster_registry):
    status, resp = _registry_call(functions_by_name, "PUT", "aks-1", GOOD)
    assert status == 201 and resp["gitUrl"] == GOOD["gitUrl"]
    assert cluster_registry.get("aks-1").git_url == GOOD["gitUrl"]


# -- CLI --------------------------------------------------------------------------------------------------


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("FLUX_MANIFESTS", "GIT_PASSWORD", "GIT_ALLOWED_HOSTS")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "shared", *args], cwd=ROOT, env=full, capture_output=True, timeout=120)


def test_cli_sends_the_environment_pat_only_to_allowed_hosts(raw_listener, tmp_path, kubeconfig_text):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    base = ["bootstrap", "git", "--token-auth", "--allow-insecure-http", "--kubeconfig", str(kubeconfig),
            "--manifests", str(V292), "--timeout", "0s"]
    for host in ("localhost", "127.0.0.1", "2130706433"):
        out = _cli(*base, "--url", f"http://{host}:{raw_listener.port}/o/p/_git/r", env={"GIT_PASSWORD": "cli-pat-value"})
        assert out.returncode == 1
        assert out.stderr.decode().strip().splitlines()[-1].startswith("✗ --url: host")
        assert "cli-pat-value" not in out.stderr.decode()
    assert raw_listener.connections == 0


def test_cli_bad_input_names_the_flag(tmp_path):
    pat = {"GIT_PASSWORD": "p", "GIT_ALLOWED_HOSTS": "dev.azure.com"}
    base = ["bootstrap", "git", "--token-auth", "--url", "https://dev.azure.com/o/p/_git/r", "--manifests", str(V292)]
    cases = [
        (["--registry", "evil.example/fluxcd"], "--registry"),
        (["--registry", "ghcr.io/fluxcd\n"], "--registry"),
        (["--namespace", "kube-system"], "--namespace"),
        (["--namespace", "0x1f"], "--namespace"),
        (["--username", "git\n"], "--username"),
        (["--cluster-domain", "cluster.local\n"], "--cluster-domain"),
        (["--secret-name", "flux-system\n"], "--secret-name"),
    ]
    for extra, flag in cases:
        out = _cli(*base, *extra, env=pat)
        last = out.stderr.decode().strip().splitlines()[-1]
        assert out.returncode == 1 and last.startswith(f"✗ {flag}:"), (extra, last)
    # argv that is not UTF-8 (a lone surrogate in Python)
    out = subprocess.run([sys.executable, "-m", "shared", *base, "--branch".encode(), b"main\xff"], cwd=ROOT,
                         env={**os.environ, **pat}, capture_output=True, timeout=120)
    assert out.returncode == 1 and out.stderr.decode().strip().splitlines()[-1].startswith("✗ --branch:")


def test_cli_registry_add_checks_the_git_url(azurite):
    env = {"REGISTRY_STORAGE_CONNECTION": azurite.connection_string, "REGISTRY_TABLE": f"reg{uuid.uuid4().hex[:12]}"}
    out = _cli("registry", "add", "aks-1", "--kubeconfig-secret", "k", "--pat-secret", "p",
               "--git-url", "http://localhost:9/o/p/_git/r", "--allow-insecure-http", env=env)
    assert out.returncode == 1 and out.stderr.decode().strip().splitlines()[-1].startswith("✗ --git-url: host 'localhost'")
    out = _cli("registry", "add", "aks-1", "--kubeconfig-secret", "k", "--pat-secret", "p", env=env)
    assert out.returncode == 1 and "✗ --git-url: is required" in out.stderr.decode()


# -- the Key Vault port returns what the vault owner set --------------------------------------------------


def test_key_vault_port_returns_tags_and_content_type_per_version(keyvault_server, keyvault):
    first = keyvault.set_secret("fleet-pat", "pat-1", tags={"flux-git-url-prefixes": "https://dev.azure.com/contoso/"})
    assert first.tags == {"flux-git-url-prefixes": "https://dev.azure.com/contoso/"} and first.content_type is None
    got = keyvault.get_secret("fleet-pat")
    assert got.tags == first.tags and got.version == first.version
    second = keyvault.set_secret("fleet-pat", "pat-2")  # a new version carries only its own tags
    assert keyvault.get_secret("fleet-pat").tags == {} and second.version != first.version
    assert keyvault.get_secret("fleet-pat", first.version).tags == first.tags
    kc = keyvault.set_secret("aks-kubeconfig", "apiVersion: v1", content_type="application/x-kubeconfig")
    assert keyvault.get_secret("aks-kubeconfig").content_type == "application/x-kubeconfig" == kc.content_type
    assert keyvault_server.stored("fleet-pat", first.version)["tags"] == first.tags
    with pytest.raises(InvalidInput) as err:
        keyvault.set_secret("x", "v", tags={"t": "v" * 257})
    assert err.value.field == "tags"
