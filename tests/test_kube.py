"""shared.ports.kube against ``kubeconfig_text``: the local Kubernetes API test server, or the real cluster named by
TEST_KUBECONFIG (then assertions that need the test server's ``request_log``/``set_status`` are skipped)."""

from __future__ import annotations

import base64
import copy
import logging
import socket
import time
import uuid
from pathlib import Path

import pytest
import yaml

from shared.errors import AuthenticationFailed, NotFound, UpstreamError
from shared.ports.kube import ApplyError, Change, Cluster

GOLDEN_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"  # ../shared beside the checkout
         / "talos-v2.9.2-4comp")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
GITREPO_CRD = "gitrepositories.source.toolkit.fluxcd.io"


def _load(name: str) -> list[dict]:
    with open(f"{GOLDEN_DIR}/{name}", encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=_Loader) if d]


@pytest.fixture(scope="module")
def components() -> list[dict]:
    return _load("gotk-components.yaml")


@pytest.fixture(scope="module")
def sync_objects() -> list[dict]:
    return _load("gotk-sync.yaml")


@pytest.fixture
def cluster(kubeconfig_text):
    with Cluster.from_kubeconfig(kubeconfig_text) as c:
        yield c


@pytest.fixture
def scratch_ns(cluster):
    """A throw-away namespace (deleted afterwards, so tests can also run against a real cluster)."""
    name = f"fluxops-test-{uuid.uuid4().hex[:8]}"
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
    yield name
    from kubernetes import client

    try:
        client.CoreV1Api(cluster.api).delete_namespace(name)
    except Exception:  # noqa: BLE001 - best effort cleanup
        pass


def _by_kind(objs: list[dict], *kinds: str) -> list[dict]:
    return [o for o in objs if o["kind"] in kinds]


def _gitrepo(name: str, **spec) -> dict:
    base = {"interval": "1m0s", "ref": {"branch": "main"}, "url": "ssh://git@example.com/org/repo"}
    base.update(spec)
    return {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": name, "namespace": "flux-system"}, "spec": {k: v for k, v in base.items()
                                                                              if v is not None}}


def _install_gitrepo_crd(cluster: Cluster, components: list[dict]) -> None:
    cluster.apply([o for o in components if o["kind"] == "Namespace" or o["metadata"]["name"] == GITREPO_CRD])


# --------------------------------------------------------------------------------------------------------


def test_change_str_like_flux():
    assert str(Change("CustomResourceDefinition", GITREPO_CRD, None, "created")) == \
        f"CustomResourceDefinition/{GITREPO_CRD} created"
    assert str(Change("Secret", "flux-system", "flux-system", "unchanged")) == "Secret/flux-system/flux-system unchanged"


def test_apply_components_created_then_unchanged(cluster, components, local_kube_server):
    assert len(components) == 32
    started = time.monotonic()
    changes = cluster.apply(components)
    elapsed = time.monotonic() - started

    # Flux's staging: Namespace and CRDs first (in their order), then the rest in file order
    stage_one = _by_kind(components, "Namespace", "CustomResourceDefinition")
    rest = [o for o in components if o not in stage_one]
    assert [(c.kind, c.name) for c in changes] == [(o["kind"], o["metadata"]["name"]) for o in stage_one + rest]
    assert str(changes[0]) in ("Namespace/flux-system created", "Namespace/flux-system unchanged",
                               "Namespace/flux-system configured")
    deployment = next(c for c in changes if c.kind == "Deployment")
    assert deployment.namespace == "flux-system"
    for crd in _by_kind(components, "CustomResourceDefinition"):
        live = cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])
        conds = {c["type"]: c["status"] for c in live["status"]["conditions"]}
        assert conds["Established"] == "True" and conds["NamesAccepted"] == "True"
    # the GitRepository kind is served: reading one answers "absent", not "unknown kind"
    assert cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "nope", "flux-system") is None

    if local_kube_server is not None:
        assert {c.action for c in changes} == {"created"}
        assert elapsed < 2.0, f"install took {elapsed:.2f}s"
        log = local_kube_server.request_log
        assert ("GET", "/apis/source.toolkit.fluxcd.io/v1", 200) in log
        discovery = [r for r in log if r.method == "GET" and r.path.count("/") <= 3 and
                     (r.path.startswith("/apis/") or r.path == "/api/v1")]
        assert len(discovery) <= 12, discovery  # one discovery per group/version, not per object
        writes = [r for r in log if r.method == "PATCH"]
        assert len(writes) == 32 and all(r.status == 201 for r in writes)
        q = local_kube_server.request_queries[log.index(writes[0])]
        assert q == {"fieldManager": "flux", "force": "true"}
        deploy = local_kube_server.get_object("apps/v1", "Deployment", "source-controller", "flux-system")
        rv = deploy["metadata"]["resourceVersion"]
        assert [e["manager"] for e in deploy["metadata"]["managedFields"]] == ["flux"]

    again = cluster.apply(components)
    assert [c.action for c in again] == ["unchanged"] * 32, [str(c) for c in again if c.action != "unchanged"]
    if local_kube_server is not None:
        deploy = local_kube_server.get_object("apps/v1", "Deployment", "source-controller", "flux-system")
        assert deploy["metadata"]["resourceVersion"] == rv  # a no-op apply writes nothing


def test_apply_sync_objects_and_status_is_bookkeeping(cluster, components, sync_objects, local_kube_server):
    cluster.apply(components)
    first = cluster.apply(sync_objects)
    assert [(c.kind, c.name, c.namespace) for c in first] == [
        ("GitRepository", "flux-system", "flux-system"), ("Kustomization", "flux-system", "flux-system")]
    repo = cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["spec"]["url"] == sync_objects[0]["spec"]["url"]
    assert repo["spec"]["timeout"] == "60s"  # CRD default
    rv1 = repo["metadata"]["resourceVersion"]

    second = cluster.apply(sync_objects)
    assert [c.action for c in second] == ["unchanged", "unchanged"]
    if local_kube_server is not None:
        assert {c.action for c in first} == {"created"}
        # contract 06b: the first unchanged re-apply of a custom object bumps resourceVersion once
        rv2 = cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system",
                          "flux-system")["metadata"]["resourceVersion"]
        assert rv2 != rv1
        # a controller reports status: still unchanged for the next apply
        local_kube_server.set_status("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system",
                                     {"observedGeneration": 1, "conditions": [
                                         {"type": "Ready", "status": "True", "reason": "Succeeded",
                                          "message": "stored artifact", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        assert [c.action for c in cluster.apply(sync_objects)] == ["unchanged", "unchanged"]
        live = cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
        assert live["status"]["conditions"][0]["type"] == "Ready"

    changed = copy.deepcopy(sync_objects)
    changed[1]["spec"]["interval"] = "5m0s"
    third = cluster.apply(changed)
    assert [c.action for c in third] == ["unchanged", "configured"]
    cluster.apply(sync_objects)  # restore (real cluster)


def test_field_owned_by_another_manager_is_taken_over(cluster, scratch_ns, local_kube_server):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "namespace": scratch_ns},
          "data": {"k": "from-other", "o": "other-only"}}
    with Cluster(cluster.api, field_manager="other") as other:
        assert [c.action for c in other.apply([cm])] == ["created"]
    # without force the API refuses (409 Conflict, contract 09a) ...
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    mine = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "namespace": scratch_ns},
            "data": {"k": "from-flux"}}
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(cluster.api).patch_namespaced_config_map(
            "owned", scratch_ns, mine, field_manager="flux", _content_type="application/apply-patch+yaml")
    assert refused.value.status == 409
    # ... so Flux forces: the field moves to "flux", the other manager keeps what it alone sets
    assert [c.action for c in cluster.apply([mine])] == ["configured"]
    live = cluster.get("v1", "ConfigMap", "owned", scratch_ns)
    assert live["data"] == {"k": "from-flux", "o": "other-only"}
    owners = {e["manager"]: e["fieldsV1"] for e in live["metadata"]["managedFields"]}
    assert owners["flux"] == {"f:data": {"f:k": {}}}
    assert owners["other"] == {"f:data": {"f:o": {}}}


def test_reconcile_secret_create_unchanged_update(cluster, scratch_ns, local_kube_server):
    name = "flux-system"
    created = cluster.reconcile_secret(scratch_ns, name, {"username": "git", "password": "pat-1", "ca.crt": "CA"})
    assert created == Change("Secret", name, scratch_ns, "created")
    assert cluster.read_secret_data(scratch_ns, name) == {"username": "git", "password": "pat-1", "ca.crt": "CA"}
    secret = cluster.get("v1", "Secret", name, scratch_ns)
    assert secret["type"] == "Opaque" and "stringData" not in secret

    before = len(local_kube_server.request_log) if local_kube_server else 0
    assert cluster.reconcile_secret(scratch_ns, name, {"username": "git", "password": "pat-1"}).action == "unchanged"
    if local_kube_server is not None:
        assert [r.method for r in local_kube_server.request_log[before:]] == ["GET"]  # no write

    updated = cluster.reconcile_secret(scratch_ns, name, {"username": "git", "password": "pat-2"},
                                       labels={"app.kubernetes.io/part-of": "flux"})
    assert str(updated) == f"Secret/{scratch_ns}/{name} configured"
    # keys not in the new stringData survive (Flux: existing.StringData = new.StringData; Update)
    assert cluster.read_secret_data(scratch_ns, name) == {"username": "git", "password": "pat-2", "ca.crt": "CA"}
    labels = cluster.get("v1", "Secret", name, scratch_ns)["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "flux"
    assert cluster.read_secret_data(scratch_ns, "absent") is None


def test_invalid_gitrepository_is_apply_error(cluster, components, local_kube_server):
    _install_gitrepo_crd(cluster, components)
    with pytest.raises(ApplyError) as bad_pattern:
        cluster.apply([_gitrepo("bad-pattern", interval="5 minutes")])
    err = bad_pattern.value
    assert (err.kind, err.name, err.namespace, err.http_status) == ("GitRepository", "bad-pattern", "flux-system", 422)
    assert str(err).startswith("GitRepository/flux-system/bad-pattern: ")
    assert "spec.interval" in str(err)

    with pytest.raises(ApplyError) as no_url:
        cluster.apply([_gitrepo("no-url", url=None)])
    assert no_url.value.http_status == 422 and "spec.url: Required value" in str(no_url.value)

    with pytest.raises(ApplyError) as wrong_type:  # SSA typed-patch error: a 500 (contract 07a)
        cluster.apply([_gitrepo("int-interval", interval=5)])
    assert wrong_type.value.http_status == 500 and ".spec.interval" in wrong_type.value.message

    with pytest.raises(ApplyError) as dry:
        cluster.dry_run_apply([_gitrepo("dry-bad", url="ftp://example.com/repo")])
    assert dry.value.name == "dry-bad" and "spec.url" in str(dry.value)
    for name in ("bad-pattern", "no-url", "int-interval", "dry-bad"):
        assert cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", name, "flux-system") is None

    with pytest.raises(ApplyError) as unknown:
        cluster.apply([{"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {"name": "x"}}])
    assert 'no matches for kind "Nope"' in str(unknown.value)


def test_dry_run_apply_persists_nothing(cluster, components, sync_objects, local_kube_server):
    fresh = local_kube_server is not None
    cluster.dry_run_apply(components + sync_objects)  # namespace and CRDs not there yet: skipped, not failed
    if fresh:
        assert cluster.get("v1", "Namespace", "flux-system") is None
        assert cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", GITREPO_CRD) is None
        dry = [q for q in local_kube_server.request_queries if q.get("dryRun")]
        assert dry and all(q["dryRun"] == "All" for q in dry)
    cluster.apply(components)
    cluster.dry_run_apply(components + sync_objects)
    if fresh:
        assert cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system") is None


def test_annotate_requested_at(cluster, components, sync_objects, local_kube_server):
    cluster.apply(components + sync_objects)
    stamp = f"{time.time():.0f}"
    cluster.annotate("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system",
                     {"reconcile.fluxcd.io/requestedAt": stamp})
    repo = cluster.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == stamp
    if local_kube_server is not None:
        assert repo["metadata"]["generation"] == 1
        update = [e for e in repo["metadata"]["managedFields"] if e["operation"] == "Update"]
        assert update[0]["manager"] == "flux"
    with pytest.raises(NotFound):
        cluster.annotate("source.toolkit.fluxcd.io/v1", "GitRepository", "absent", "flux-system", {"a": "b"})


def test_server_version(cluster, local_kube_server):
    version = cluster.server_version()
    assert version.startswith("v1.")
    if local_kube_server is not None:
        assert version == "v1.36.2"


def test_wrong_token_is_authentication_failed(kubeconfig_text):
    cfg = yaml.safe_load(kubeconfig_text)
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    for user in cfg["users"]:
        if user["name"] == ctx["user"]:
            user["user"] = {"token": "not-the-token"}
    with Cluster.from_kubeconfig(yaml.safe_dump(cfg)) as wrong:
        with pytest.raises(AuthenticationFailed) as err:
            wrong.server_version()
        assert "401" in str(err.value) and "not-the-token" not in str(err.value)
        with pytest.raises(AuthenticationFailed):
            wrong.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}])


def test_client_certificate_kubeconfig_stays_in_memory(kube_server):
    with Cluster.from_kubeconfig(kube_server.kubeconfig(client_cert=True)) as c:
        assert c.api.configuration.cert_file.startswith("/proc/self/fd/")
        assert c.server_version() == "v1.36.2"


def test_unreachable_cluster(local_kube_server):
    if local_kube_server is not None:
        text = local_kube_server.kubeconfig()
        url = local_kube_server.url
        local_kube_server.unreachable()
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"https://127.0.0.1:{port}"
        text = yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                               "clusters": [{"name": "c", "cluster": {"server": url}}],
                               "users": [{"name": "u", "user": {"token": "t"}}],
                               "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]})
    with Cluster.from_kubeconfig(text) as c:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}])
        assert str(err.value) == f"cluster unreachable: {url}"
        assert time.monotonic() - started < 5
        assert err.value.__cause__ is None and err.value.__suppress_context__


def test_secret_values_never_in_errors_or_logs(cluster, scratch_ns, caplog):
    caplog.set_level(logging.DEBUG)
    password = "s3cr3t-Pa55-" + uuid.uuid4().hex
    number = 918273645546372819
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "no-such-ns-x1"},
              "stringData": {"username": "git", "password": password}}
    texts = []
    with pytest.raises(NotFound) as missing_ns:
        cluster.apply([secret])
    texts.append(str(missing_ns.value))
    assert "no-such-ns-x1" in str(missing_ns.value)

    typed = copy.deepcopy(secret)
    typed["metadata"]["namespace"] = scratch_ns
    typed["stringData"]["password"] = number  # not a string: the server quotes the value in its 500 message
    with pytest.raises(ApplyError) as bad:
        cluster.apply([typed])
    texts.append(str(bad.value))
    assert bad.value.kind == "Secret" and bad.value.http_status == 500

    with pytest.raises(NotFound) as rec:
        cluster.reconcile_secret("no-such-ns-x1", "creds", {"password": password})
    texts.append(str(rec.value))

    cluster.apply([dict(secret, metadata={"name": "creds", "namespace": scratch_ns})])
    cluster.reconcile_secret(scratch_ns, "creds", {"password": password + "-2"})
    b64 = base64.b64encode(password.encode()).decode()
    for text in texts + [caplog.text]:
        for value in (password, b64, str(number)):
            assert value not in text
    for err in (missing_ns.value, bad.value, rec.value):
        assert err.__cause__ is None and err.__suppress_context__  # the client's exception holds raw bodies


# -- kubeconfigs are untrusted: nothing in them runs a command, reads a file or leaks a token ------


def _refused(text: str) -> str:
    from shared.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        Cluster.from_kubeconfig(text)
    assert err.value.field == "kubeconfig"
    assert err.value.__cause__ is None
    return err.value.message


def test_exec_and_auth_provider_users_never_run(kube_server, tmp_path):
    marker = tmp_path / "MARKER"
    users = {
        "users[0].user.exec": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh",
                                        "args": ["-c", f"touch {marker}"], "interactiveMode": "Never"}},
        "users[0].user.auth-provider": {"auth-provider": {"name": "gcp", "config": {
            "cmd-path": "/bin/sh", "cmd-args": f"-c 'touch {marker}'", "token-key": "{.token}"}}},
    }
    for where, user in users.items():
        message = _refused(kube_server.kubeconfig(user=user))
        assert message.startswith(f"{where}: ") and "never run" in message
    assert not marker.exists()
    assert kube_server.received == []


@pytest.mark.parametrize("section, key, value", [
    ("user", "tokenFile", "/proc/self/environ"),
    ("user", "client-certificate", "/etc/passwd"),
    ("user", "client-key", "/etc/passwd"),
    ("cluster", "certificate-authority", "/etc/passwd"),
    ("user", "token-file", "/proc/self/environ"),  # not a client-go key, but it names a file
    ("cluster", "caFile", "/etc/passwd"),
])
def test_keys_that_name_a_local_file_are_refused_naming_the_key(kube_server, section, key, value):
    base = yaml.safe_load(kube_server.kubeconfig())
    body = dict(base["users"][0]["user"] if section == "user" else base["clusters"][0]["cluster"])
    if key in ("tokenFile", "token-file"):
        body.pop("token")
    body[key] = value
    text = kube_server.kubeconfig(**{section: body})
    message = _refused(text)
    assert message.startswith(f"{section}s[0].{section}.{key}: names a local file")
    assert kube_server.received == []  # nothing was sent, /proc/self/environ least of all


def test_impersonation_and_unknown_user_keys_are_refused(kube_server):
    assert _refused(kube_server.kubeconfig(user={"token": kube_server.token, "as": "system:admin"})).startswith(
        "users[0].user.as: impersonation is not supported")
    assert _refused(kube_server.kubeconfig(user={"tokn": "x"})).startswith("users[0].user.tokn: not a kubeconfig field")
    assert _refused(kube_server.kubeconfig(user={"client-certificate-data": "QQ=="})).startswith(
        "users[0].user.client-key-data: needed with client-certificate-data")


@pytest.mark.parametrize("token", ["tok\nen", "token\r\nX-Injected: 1", "tok en", "tök", "tok\x00en", "tok\x7f"])
def test_a_token_that_cannot_be_a_header_is_refused_without_echo(kube_server, caplog, token):
    caplog.set_level(logging.DEBUG)
    secret = f"SECRET{uuid.uuid4().hex}"
    value = token.replace("tok", secret)
    message = _refused(kube_server.kubeconfig(token=value))
    assert message.startswith("users[0].user.token: contains a line break")
    assert secret not in message and secret not in caplog.text
    assert kube_server.received == []


def test_basic_auth_user_is_sent_as_a_basic_header(kube_server):
    with Cluster.from_kubeconfig(kube_server.kubeconfig(basic=True)) as c:
        assert c.server_version() == "v1.36.2"
    sent = kube_server.received[-1].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(":".join(kube_server.basic_auth).encode()).decode()


def test_insecure_skip_tls_verify_is_kept_with_a_warning_but_not_with_a_ca(kube_server, caplog):
    base = yaml.safe_load(kube_server.kubeconfig())["clusters"][0]["cluster"]
    assert "insecure flag is not allowed" in _refused(kube_server.kubeconfig(cluster={**base, "insecure-skip-tls-verify": True}))
    insecure = {"server": kube_server.url, "insecure-skip-tls-verify": True}
    with caplog.at_level(logging.WARNING), Cluster.from_kubeconfig(kube_server.kubeconfig(cluster=insecure)) as c:
        assert c.server_version() == "v1.36.2"
    assert "without verifying its TLS certificate" in caplog.text


class _ConnectProxy:
    """A recording HTTP proxy: answers CONNECT by tunnelling bytes; records each request head."""

    def __init__(self):
        import threading

        self.heads: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        import threading

        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        self.heads.append(head)
        method, target = head.split(b" ")[:2]
        if method != b"CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        host, port = target.decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(a, b):
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)

    def close(self):
        self.sock.close()


def test_proxy_url_only_relays_a_tls_tunnel(kube_server):
    base = yaml.safe_load(kube_server.kubeconfig())["clusters"][0]["cluster"]
    proxy = _ConnectProxy()
    try:
        with Cluster.from_kubeconfig(kube_server.kubeconfig(cluster={**base, "proxy-url": proxy.url})) as c:
            assert c.server_version() == "v1.36.2"
        port = kube_server.url.rsplit(":", 1)[1]
        assert proxy.heads and all(h.startswith(f"CONNECT 127.0.0.1:{port} ".encode()) for h in proxy.heads)
        assert not any(kube_server.token.encode() in h for h in proxy.heads)
    finally:
        proxy.close()
    for bad, why in ((f"socks5://127.0.0.1:1080", "only http:// or https:// proxies"),
                     ("http://user:pw@127.0.0.1:3128", "must not carry credentials")):
        assert why in _refused(kube_server.kubeconfig(cluster={**base, "proxy-url": bad}))
    insecure = {"server": kube_server.url, "insecure-skip-tls-verify": True, "proxy-url": "http://127.0.0.1:3128"}
    assert "refused together with insecure-skip-tls-verify" in _refused(kube_server.kubeconfig(cluster=insecure))
    assert "only used for an https:// server" in _refused(kube_server.kubeconfig(
        cluster={"server": "http://127.0.0.1:1", "proxy-url": "http://127.0.0.1:3128"}))


def test_kubeconfig_yaml_bombs_fail_fast_without_quoting(kube_server):
    lol = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    started = time.monotonic()
    assert _refused(lol).startswith("not valid YAML (line")
    assert _refused("[" * 200_000 + "]" * 200_000).startswith("not valid YAML")  # libyaml's composer would crash
    assert time.monotonic() - started < 1.0
    text = kube_server.kubeconfig(token="tok-" + uuid.uuid4().hex) + "broken: [\n"
    assert "tok-" not in _refused(text)
