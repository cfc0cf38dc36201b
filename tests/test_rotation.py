"""Credential rotation (issue #4) against real peers on 127.0.0.1: several Kubernetes API test servers
(cluster ``c0`` is the real cluster named by ``TEST_KUBECONFIG`` when set), the Key Vault test server
(secret versions with ``exp``), the Azure DevOps-style git server (accepts only its current PAT / bearer
tokens), Azurite for the registry, and a token credential issuing JWTs with chosen ``exp``.

Credential values never reach assertion output: tests compare SHA-256 digests and booleans.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from shared import rotation, services
from shared.ports.kube import Cluster
from shared.rotation.registry import ClusterRecord, Registry, SettingError
from shared.rotation import REQUESTED_AT, RotationSettings, Rotator, digest, jwt_expiry, rfc3339nano
from tests.peers.entra_tokens import JwtTestCredential, make_jwt
from tests.peers.kube_api import KubeApiServer

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "flux", "golden", "talos-v2.9.2-4comp",
                      "gotk-components.yaml")  # ../shared beside the checkout
GITREPO_CRD = "gitrepositories.source.toolkit.fluxcd.io"
GITREPO_API = "source.toolkit.fluxcd.io/v1"
REAL = bool(os.environ.get("TEST_KUBECONFIG"))
FAST = RotationSettings(concurrency=8)
# Go's time.RFC3339Nano in UTC, as `flux reconcile` writes reconcile.fluxcd.io/requestedAt
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z$")


@pytest.fixture(scope="module")
def gitrepo_crd() -> dict:
    with open(GOLDEN, encoding="utf-8") as f:
        docs = [d for d in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
    return next(d for d in docs if d["kind"] == "CustomResourceDefinition" and d["metadata"]["name"] == GITREPO_CRD)


@dataclass
class Member:
    """One cluster of the test fleet."""

    name: str
    kubeconfig: str
    namespace: str
    server: KubeApiServer | None  # None for the real cluster

    def client(self) -> Cluster:
        return Cluster.from_kubeconfig(self.kubeconfig)

    def secret(self, name: str = "flux-system") -> dict:
        with self.client() as c:
            return c.read_secret_data(self.namespace, name) or {}

    def resource_version(self, name: str = "flux-system") -> str | None:
        with self.client() as c:
            obj = c.get("v1", "Secret", name, self.namespace)
        return obj["metadata"]["resourceVersion"] if obj else None

    def annotations(self) -> dict:
        with self.client() as c:
            repo = c.get(GITREPO_API, "GitRepository", "flux-system", self.namespace)
        return (repo or {}).get("metadata", {}).get("annotations") or {}

    def writes(self) -> list:
        """Writes the local server saw (empty for the real cluster: checked through resourceVersion)."""
        if self.server is None:
            return []
        return [r for r in self.server.request_log if r.method in ("PUT", "PATCH", "POST", "DELETE")]


class Fleet:
    """Clusters with Flux's GitRepository CRD, a GitRepository and a source Secret holding ``old_pat``;
    their kubeconfigs in Key Vault; the repository on the git server."""

    def __init__(self, crd, vault, git_server, old_pat: str):
        self.crd, self.vault, self.git = crd, vault, git_server
        self.old_pat = old_pat
        self.url = ""
        self.members: list[Member] = []
        self.servers: list[KubeApiServer] = []
        self._cleanup: list = []

    def add(self, name: str, *, kubeconfig: str | None = None, namespace: str = "flux-system",
            secret_data: dict | None = None) -> Member:
        server = None
        if kubeconfig is None:
            server = KubeApiServer().start()
            self.servers.append(server)
            kubeconfig = server.kubeconfig()
        member = Member(name, kubeconfig, namespace, server)
        with member.client() as c:
            # a real cluster keeps its own Flux CRDs (never downgrade them); test servers get v2.9.2's
            crd = [] if server is None and c.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                                 GITREPO_CRD) else [self.crd]
            c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, *crd],
                    poll_interval=0.05)
            c.apply([{"apiVersion": GITREPO_API, "kind": "GitRepository",
                      "metadata": {"name": "flux-system", "namespace": namespace},
                      "spec": {"interval": "1m0s", "ref": {"branch": "main"}, "url": self.url,
                               "secretRef": {"name": "flux-system"}}}], poll_interval=0.05)
            data = {"username": "git", "password": self.old_pat, "ca.crt": "not-a-secret"} if secret_data is None else secret_data
            c.reconcile_secret(namespace, "flux-system", data)
        if server is None:
            self._cleanup.append(member)
        else:
            server.request_log.clear()
        self.vault.seed_kubeconfig(f"{name}-kubeconfig", kubeconfig)
        self.members.append(member)
        return member

    def record(self, member: Member, **kw) -> ClusterRecord:
        base = dict(name=member.name, kubeconfig_secret=f"{member.name}-kubeconfig", namespace=member.namespace,
                    pat_secret="fleet-pat", allow_insecure_http=True, git_url=self.url)
        base.update(kw)
        return ClusterRecord(**base).validate()

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        for m in self._cleanup:  # real cluster: drop the scratch namespace
            from kubernetes import client

            try:
                with m.client() as c:
                    client.CoreV1Api(c.api).delete_namespace(m.namespace)
            except Exception:  # noqa: BLE001 - best effort
                pass


@pytest.fixture
def fleet(gitrepo_crd, keyvault_server, ado_git_server, git_pat):
    """Three clusters (c0 real when TEST_KUBECONFIG is set) syncing one repository with ``git_pat``."""
    ado_git_server.create_repo("contoso", "platform", "fleet")
    f = Fleet(gitrepo_crd, keyvault_server, ado_git_server, git_pat)
    f.url = ado_git_server.url("contoso", "platform", "fleet")
    try:
        if REAL:
            from tests.peers.kube_api import flatten_kubeconfig

            f.add("c0", kubeconfig=flatten_kubeconfig(os.environ["TEST_KUBECONFIG"]),
                  namespace=f"fluxrot-{uuid.uuid4().hex[:8]}")
        else:
            f.add("c0")
        f.add("c1")
        f.add("c2")
        yield f
    finally:
        f.close()


def PREFIX(git_server) -> str:
    """The URL prefix the fleet's PAT is tagged with (flux-git-url-prefixes): the organisation."""
    return git_server.url("contoso", "platform", "fleet").split("/platform/")[0] + "/"


def rotator(keyvault, credential=None, **kw) -> Rotator:
    return Rotator(keyvault=keyvault, credential=credential or JwtTestCredential(), settings=kw.pop("settings", FAST), **kw)


def new_pat_version(keyvault_server, ado_git_server, *, accept: bool = True, expires_on=None) -> str:
    pat = secrets.token_urlsafe(32)
    keyvault_server.seed_pat("fleet-pat", pat, PREFIX(ado_git_server), expires_on=expires_on)
    if accept:
        ado_git_server.pat = pat
    return pat


def assert_no_leak(text: str, *values: str) -> None:
    leaked = any(v and v in text for v in values)
    assert not leaked, "a credential value appeared in logs or the summary"


# -- PAT mode ---------------------------------------------------------------------------------------


def test_pat_changed_in_key_vault_updates_and_annotates_every_cluster(fleet, keyvault_server, keyvault,
                                                                      ado_git_server, caplog):
    caplog.set_level(logging.DEBUG)
    new = new_pat_version(keyvault_server, ado_git_server)
    records = [fleet.record(m) for m in fleet.members]

    summary = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=FAST)

    d = summary.to_dict()
    assert (d["checked"], d["updated"], d["unchanged"], d["failed"]) == (3, 3, 0, 0), d
    for m in fleet.members:
        data = m.secret()
        assert digest(data["password"]) == digest(new)
        assert data["username"] == "git" and data["ca.crt"] == "not-a-secret"  # other keys survive
        stamp = m.annotations().get(REQUESTED_AT)
        assert stamp and RFC3339NANO.match(stamp), stamp
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(datetime.now(timezone.utc) - when) < timedelta(minutes=1)
    # one ls-remote for the shared repository and PAT (memoised per run), with the new PAT only
    checks = [r for r in ado_git_server.requests if "info/refs" in r.path]
    assert len(checks) == 1 and checks[0].status == 200
    assert_no_leak(caplog.text + json.dumps(d), new, fleet.old_pat)


def test_pat_unchanged_writes_nothing(fleet, keyvault_server, keyvault, ado_git_server, git_pat):
    keyvault_server.seed_pat("fleet-pat", git_pat, PREFIX(ado_git_server))  # the PAT the clusters already have
    before = [m.resource_version() for m in fleet.members]
    for m in fleet.members:
        if m.server:
            m.server.request_log.clear()

    summary = rotator(keyvault).run([fleet.record(m) for m in fleet.members])

    assert [c.status for c in summary.clusters] == ["unchanged"] * 3, summary.to_dict()
    assert [m.resource_version() for m in fleet.members] == before
    assert all(m.writes() == [] for m in fleet.members)
    assert all(REQUESTED_AT not in m.annotations() for m in fleet.members)
    assert ado_git_server.requests == []  # nothing to check, so no ls-remote


def test_new_pat_refused_by_git_is_not_written(fleet, keyvault_server, keyvault, ado_git_server, caplog):
    bad = new_pat_version(keyvault_server, ado_git_server, accept=False)  # server still takes the old PAT
    before = [m.resource_version() for m in fleet.members]

    summary = rotation.rotate([fleet.record(m) for m in fleet.members], keyvault=keyvault,
                              credential=JwtTestCredential(), settings=FAST)

    assert summary.failed == 3
    for c in summary.clusters:
        assert c.changes == [] and "refused" in c.errors[0] and "nothing written" in c.errors[0], c.errors
    for m in fleet.members:
        assert digest(m.secret()["password"]) == digest(fleet.old_pat)
        assert REQUESTED_AT not in m.annotations()
    assert [m.resource_version() for m in fleet.members] == before
    assert "failed" in caplog.text
    assert_no_leak(caplog.text + json.dumps(summary.to_dict()), bad, fleet.old_pat)


def test_unreachable_cluster_does_not_stop_the_others(fleet, keyvault_server, keyvault, ado_git_server):
    new = new_pat_version(keyvault_server, ado_git_server)
    down = fleet.members[1]
    down.server.unreachable()
    records = [fleet.record(m) for m in fleet.members]
    records.append(ClusterRecord(name="no-kubeconfig", kubeconfig_secret="missing-kubeconfig", pat_secret="fleet-pat",
                                 git_url=fleet.url, allow_insecure_http=True))

    records.append(ClusterRecord(name="boom", kubeconfig_secret="boom-kubeconfig", pat_secret="fleet-pat",
                                 git_url=fleet.url, allow_insecure_http=True))
    keyvault_server.seed_kubeconfig("boom-kubeconfig", "apiVersion: v1")

    def factory(kubeconfig, context):  # an unexpected error for one cluster (e.g. a client bug)
        if kubeconfig == "apiVersion: v1":
            raise RuntimeError("client bug")
        return Cluster.from_kubeconfig(kubeconfig, context=context)

    t0 = time.monotonic()
    summary = rotator(keyvault, cluster_factory=factory).run(records)

    by_name = {c.cluster: c for c in summary.clusters}
    assert by_name["c1"].status == "failed" and "unreachable" in by_name["c1"].errors[0]
    assert by_name["no-kubeconfig"].status == "failed" and "missing-kubeconfig" in by_name["no-kubeconfig"].errors[0]
    for m in (fleet.members[0], fleet.members[2]):
        assert by_name[m.name].status == "updated"
        assert digest(m.secret()["password"]) == digest(new)
    assert by_name["boom"].status == "failed" and "unexpected RuntimeError" in by_name["boom"].errors[0]
    assert summary.failed == 3 and time.monotonic() - t0 < 15


def test_pat_expiry_warns_before_and_fails_after(fleet, keyvault_server, keyvault, ado_git_server):
    now = datetime.now(timezone.utc)
    new = new_pat_version(keyvault_server, ado_git_server, expires_on=now + timedelta(days=3))
    m = fleet.members[0]

    summary = rotator(keyvault).run([fleet.record(m)])
    result = summary.clusters[0]
    assert result.status == "updated" and len(result.warnings) == 1
    assert "expires in 3.0 days" in result.warnings[0] and "fleet-pat" in result.warnings[0]
    assert digest(m.secret()["password"]) == digest(new)

    # far from expiry: no warning (default threshold 7 days)
    keyvault_server.seed_pat("fleet-pat", new, PREFIX(ado_git_server), expires_on=now + timedelta(days=30))
    assert rotator(keyvault).run([fleet.record(m)]).clusters[0].warnings == []

    expired = new_pat_version(keyvault_server, ado_git_server, expires_on=now - timedelta(hours=2))
    result = rotator(keyvault).run([fleet.record(m)]).clusters[0]
    assert result.status == "failed" and "expired" in result.errors[0]
    assert digest(m.secret()["password"]) == digest(new)  # the expired one was not written
    assert digest(expired) != digest(new)


def test_empty_pat_is_never_written(fleet, keyvault_server, keyvault, ado_git_server):
    keyvault_server.seed_pat("fleet-pat", "", PREFIX(ado_git_server))
    ado_git_server.pat = ""
    m = fleet.members[0]
    result = rotator(keyvault).run([fleet.record(m)]).clusters[0]
    assert result.status == "failed" and "empty" in result.errors[0]
    assert digest(m.secret()["password"]) == digest(fleet.old_pat)


def test_pat_warning_days_is_configurable_and_logged(fleet, keyvault_server, keyvault, ado_git_server,
                                                    monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    expires = datetime.now(timezone.utc) + timedelta(days=3, hours=1)
    new_pat_version(keyvault_server, ado_git_server, expires_on=expires)
    m = fleet.members[0]

    monkeypatch.setenv("ROTATION_PAT_WARNING_DAYS", "2")  # 3 days left: no warning
    summary = rotation.rotate([fleet.record(m)], keyvault=keyvault, credential=JwtTestCredential())
    assert summary.clusters[0].status == "updated" and summary.clusters[0].warnings == []
    assert "expires in" not in caplog.text

    monkeypatch.setenv("ROTATION_PAT_WARNING_DAYS", "5")
    summary = rotation.rotate([fleet.record(m)], keyvault=keyvault, credential=JwtTestCredential())
    assert summary.clusters[0].status == "unchanged" and summary.to_dict()["warnings"] == 1
    # what the README shows: a WARNING log line per cluster using the PAT, naming the secret and version
    lines = [r for r in caplog.records if r.levelno == logging.WARNING and "expires in 3.0 days" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].getMessage().startswith("rotation: cluster c0: PAT in Key Vault secret fleet-pat (version ")
    assert "store it as a new version of the secret" in lines[0].getMessage()


def test_bearer_token_key_shadowing_the_password_is_reported(fleet, keyvault_server, keyvault, ado_git_server):
    """source-controller uses bearerToken over username/password: a PAT written next to one would be
    ignored, so the run says so (the key is not ours to delete)."""
    m = fleet.members[0]
    stale = make_jwt(exp=time.time() + 600, aud=rotation.ADO_SCOPE[:-9])
    with m.client() as c:
        c.reconcile_secret(m.namespace, "flux-system", {"bearerToken": stale})
    new = new_pat_version(keyvault_server, ado_git_server)

    result = rotator(keyvault).run([fleet.record(m)]).clusters[0]

    assert result.status == "failed" and "bearerToken" in result.errors[0], result.errors
    data = m.secret()
    assert digest(data["password"]) == digest(new)  # written and checked all the same
    assert digest(data["bearerToken"]) == digest(stale)  # not removed
    result = rotator(keyvault).run([fleet.record(m)]).clusters[0]  # still reported while the key is there
    assert result.status == "failed" and result.changes == [] and "bearerToken" in result.errors[0]


# -- Entra token mode -------------------------------------------------------------------------------


def test_entra_token_near_expiry_is_refreshed_far_is_untouched(fleet, keyvault, ado_git_server, entra_git_hosts):
    now = time.time()
    near = make_jwt(exp=now + 5 * 60, aud=rotation.ADO_SCOPE[:-9])
    far = make_jwt(exp=now + 50 * 60, aud=rotation.ADO_SCOPE[:-9])
    c0, c1, c2 = fleet.members
    for m, token in ((c0, near), (c1, far)):
        with m.client() as c:
            c.reconcile_secret(m.namespace, "flux-system", {"bearerToken": token})
    cred = JwtTestCredential(lifetime=3600)
    # Azure DevOps takes an Entra token as Bearer or as the Basic password (research D1); the test server
    # takes Basic passwords equal to its ``pat``, so the minted token becomes that too
    cred.on_issue.append(lambda scope, token: ado_git_server.bearer_tokens.add(token))
    cred.on_issue.append(lambda scope, token: setattr(ado_git_server, "pat", token))
    rv_far = c1.resource_version()
    records = [fleet.record(c0, git_auth="entra-bearer", pat_secret=None),
               fleet.record(c1, git_auth="entra-bearer", pat_secret=None),
               fleet.record(c2, git_auth="entra-password", pat_secret=None)]  # password holds a PAT, not a JWT

    summary = rotator(keyvault, cred).run(records)

    assert [c.status for c in summary.clusters] == ["updated", "unchanged", "updated"], summary.to_dict()
    assert cred.requests == [(rotation.ADO_SCOPE,)]  # minted once per run, for both clusters
    minted = cred.issued[0]
    d0 = c0.secret()
    assert digest(d0["bearerToken"]) == digest(minted)
    assert digest(d0["password"]) == digest(fleet.old_pat) and d0["ca.crt"] == "not-a-secret"  # not owned
    assert jwt_expiry(d0["bearerToken"]) > datetime.now(timezone.utc) + timedelta(minutes=55)
    assert REQUESTED_AT in c0.annotations()
    assert digest(c1.secret()["bearerToken"]) == digest(far) and c1.resource_version() == rv_far
    assert REQUESTED_AT not in c1.annotations()
    d2 = c2.secret()
    assert digest(d2["password"]) == digest(minted) and d2["username"] == "git" and "bearerToken" not in d2
    users = {r.user for r in ado_git_server.requests if r.status == 200}
    assert users == {"<bearer>", "git"}  # checked as bearer (c0) and as Basic password (c2)


def test_entra_token_refused_or_unavailable_is_not_written(fleet, keyvault, ado_git_server, entra_git_hosts):
    m = fleet.members[0]
    with m.client() as c:
        c.reconcile_secret(m.namespace, "flux-system", {"bearerToken": make_jwt(exp=time.time() + 60)})
    before = m.secret()["bearerToken"]
    record = fleet.record(m, git_auth="entra-bearer", pat_secret=None)

    refused = rotator(keyvault, JwtTestCredential()).run([record]).clusters[0]  # identity not onboarded in ADO
    assert refused.status == "failed" and "refused" in refused.errors[0]
    assert digest(m.secret()["bearerToken"]) == digest(before)

    cred = JwtTestCredential()
    cred.fail = RuntimeError("ManagedIdentityCredential authentication unavailable")
    unavailable = rotator(keyvault, cred).run([record]).clusters[0]
    assert unavailable.status == "failed" and "could not get an Entra ID token" in unavailable.errors[0]
    assert digest(m.secret()["bearerToken"]) == digest(before)


# -- Event Hub JWT ----------------------------------------------------------------------------------


def test_eventhub_token_near_expiry_is_refreshed_far_is_untouched(fleet, keyvault_server, keyvault, git_pat, ado_git_server):
    keyvault_server.seed_pat("fleet-pat", git_pat, PREFIX(ado_git_server))  # git part unchanged
    now = time.time()
    c0, c1, c2 = fleet.members
    far = make_jwt(exp=now + 45 * 60)
    with c0.client() as c:
        c.reconcile_secret(c0.namespace, "eventhub-token", {"token": make_jwt(exp=now + 10 * 60),
                                                            "address": "flux-events", "extra": "kept"})
    with c1.client() as c:
        c.reconcile_secret(c1.namespace, "eventhub-token", {"token": far, "address": "flux-events"})
    rv_far = c1.resource_version("eventhub-token")
    eh = dict(eventhub_secret="eventhub-token", eventhub_name="flux-events", eventhub_namespace="contoso-flux")
    cred = JwtTestCredential(lifetime=3600)

    summary = rotator(keyvault, cred).run([fleet.record(m, **eh) for m in fleet.members])

    assert [c.status for c in summary.clusters] == ["updated", "unchanged", "updated"], summary.to_dict()
    assert cred.requests == [(rotation.EVENTHUB_SCOPE,)]
    minted = cred.issued[0]
    d0 = c0.secret("eventhub-token")
    assert digest(d0["token"]) == digest(minted) and d0["address"] == "flux-events" and d0["extra"] == "kept"
    assert jwt_expiry(d0["token"]) > datetime.now(timezone.utc) + timedelta(minutes=55)
    assert digest(c1.secret("eventhub-token")["token"]) == digest(far)
    assert c1.resource_version("eventhub-token") == rv_far
    d2 = c2.secret("eventhub-token")  # absent before: created
    assert digest(d2["token"]) == digest(minted) and d2["address"] == "flux-events"
    assert all(digest(m.secret()["password"]) == digest(git_pat) for m in fleet.members)  # git untouched


def test_eventhub_token_that_is_not_a_valid_jwt_is_not_written(fleet, keyvault_server, keyvault, git_pat, ado_git_server):
    keyvault_server.seed_pat("fleet-pat", git_pat, PREFIX(ado_git_server))
    m = fleet.members[0]

    class Opaque(JwtTestCredential):
        def get_token(self, *scopes, **kw):
            from azure.core.credentials import AccessToken

            return AccessToken("opaque-" + secrets.token_hex(8), int(time.time()) + 3600)

    eh = dict(eventhub_secret="eventhub-token", eventhub_name="flux-events", eventhub_namespace="contoso-flux")
    result = rotator(keyvault, Opaque()).run([fleet.record(m, **eh)]).clusters[0]
    assert result.status == "failed" and "not a JWT" in result.errors[0]
    assert list(m.secret("eventhub-token")) == []  # keys only: values never reach assertion output

    result = rotator(keyvault, _Audience("https://storage.azure.com")).run([fleet.record(m, **eh)]).clusters[0]
    assert result.status == "failed" and "another audience" in result.errors[0]
    assert list(m.secret("eventhub-token")) == []


class _Audience:
    """Wraps a credential to issue tokens for the wrong audience."""

    def __init__(self, aud):
        self.aud = aud

    def get_token(self, *scopes, **kw):
        from azure.core.credentials import AccessToken

        exp = int(time.time()) + 3600
        return AccessToken(make_jwt(exp=exp, aud=self.aud), exp)


def test_requested_at_is_go_rfc3339nano():
    t = datetime(2026, 8, 10, 12, 0, 0, tzinfo=timezone.utc)
    assert rfc3339nano(t) == "2026-08-10T12:00:00Z"
    assert rfc3339nano(t.replace(microsecond=120000)) == "2026-08-10T12:00:00.12Z"
    assert rfc3339nano(t.replace(microsecond=5)) == "2026-08-10T12:00:00.000005Z"
    assert rfc3339nano(t.astimezone(timezone(timedelta(hours=2)))) == "2026-08-10T12:00:00Z"


def test_jwt_expiry_reads_exp_without_verifying():
    exp = int(time.time()) + 123
    assert jwt_expiry(make_jwt(exp=exp)) == datetime.fromtimestamp(exp, timezone.utc)
    assert jwt_expiry(make_jwt(exp=time.time() - 60)) is not None  # expired still readable
    assert jwt_expiry("not-a-jwt") is None and jwt_expiry(None) is None and jwt_expiry("") is None


def test_settings_from_app_settings():
    s = RotationSettings.from_settings({"ROTATION_PAT_WARNING_DAYS": "3", "ROTATION_TOKEN_MIN_REMAINING_MINUTES": "30",
                                        "ROTATION_CONCURRENCY": "4"})
    assert (s.pat_warning_days, s.token_min_remaining, s.concurrency) == (3, timedelta(minutes=30), 4)
    assert RotationSettings.from_settings({}) == RotationSettings()
    from shared.errors import InvalidInput

    for bad in ({"ROTATION_CONCURRENCY": "zero"}, {"ROTATION_CONCURRENCY": "2.5"}, {"ROTATION_CONCURRENCY": "0"}):
        with pytest.raises(InvalidInput) as err:
            RotationSettings.from_settings(bad)
        assert err.value.field == "ROTATION_CONCURRENCY" and err.value.status == 500  # a server setting


# -- the Functions: timer through the indexed app, rotate-now and registry endpoints ----------------


@pytest.fixture(scope="session")
def rotation_functions(functions_by_name):
    return functions_by_name


@pytest.fixture
def wired(azurite, keyvault, monkeypatch):
    """services wired to the local peers: registry on Azurite (fresh table), the test vault, a JWT credential."""
    registry = Registry.from_connection_string(azurite.connection_string, f"reg{uuid.uuid4().hex[:12]}")
    cred = JwtTestCredential()
    services.set_registry_factory(lambda: registry)
    services.set_keyvault_factory(lambda: keyvault)
    services.set_credential_factory(lambda: cred)
    monkeypatch.setenv("ROTATION_CONCURRENCY", "8")
    try:
        yield registry, cred
    finally:
        services.set_registry_factory(None)
        services.set_keyvault_factory(None)
        services.set_credential_factory(None)
        registry.close()


def test_timer_function_rotates_registered_clusters(rotation_functions, wired, fleet, keyvault_server,
                                                    ado_git_server, caplog):
    from azure.functions.timer import TimerRequest

    registry, _ = wired
    fn = rotation_functions["rotate_credentials"]
    trigger = fn.get_trigger().get_dict_repr()
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == "%ROTATION_SCHEDULE%"
    assert trigger["runOnStartup"] is False
    for m in fleet.members:
        registry.upsert(fleet.record(m))
    registry._table.upsert_entity({"PartitionKey": "cluster", "RowKey": "hand-edited", "name": "hand-edited",
                                   "kubeconfigSecret": "k", "gitAuth": "kerberos"})  # a row edited by hand
    new = new_pat_version(keyvault_server, ado_git_server)
    fleet.members[2].server.unreachable()
    caplog.set_level(logging.INFO)

    assert fn.get_user_function()(TimerRequest(past_due=True)) is None  # per-cluster failures do not raise

    assert digest(fleet.members[0].secret()["password"]) == digest(new)
    assert digest(fleet.members[1].secret()["password"]) == digest(new)
    assert "rotation: 4 checked, 2 updated, 0 unchanged, 2 failed" in caplog.text
    assert "past due" in caplog.text and "cluster c2 failed: git: cluster unreachable" in caplog.text
    assert "cluster hand-edited failed: registry record is invalid (gitAuth" in caplog.text
    assert_no_leak(caplog.text, new, fleet.old_pat)

    caplog.clear()  # next run: nothing to do; the log names the unchanged clusters
    registry.delete("hand-edited")
    registry.delete("c2")
    assert fn.get_user_function()(TimerRequest(past_due=False)) is None
    assert "rotation: unchanged: c0, c1" in caplog.text and "2 checked, 0 updated, 2 unchanged, 0 failed" in caplog.text


def test_missing_app_setting_fails_the_run_not_each_cluster(rotation_functions, wired, fleet, monkeypatch, caplog):
    """No KEY_VAULT_URL: the timer invocation fails once with the setting's name (nothing touched);
    the rotate-now endpoint answers 500, not 400 (the caller sent nothing wrong)."""
    import azure.functions as func
    from azure.functions.timer import TimerRequest

    registry, _ = wired
    registry.upsert(fleet.record(fleet.members[0]))
    services.set_keyvault_factory(None)
    monkeypatch.delenv("KEY_VAULT_URL", raising=False)
    caplog.set_level(logging.INFO)

    with pytest.raises(SettingError) as err:
        rotation_functions["rotate_credentials"].get_user_function()(TimerRequest())
    assert err.value.field == "KEY_VAULT_URL"
    assert "rotation: run not started: KEY_VAULT_URL" in caplog.text
    assert "cluster c0 failed" not in caplog.text

    req = func.HttpRequest("POST", "/api/rotation/clusters/c0", route_params={"name": "c0"}, body=b"")
    resp = rotation_functions["rotate_cluster_now"].get_user_function()(req)
    body = json.loads(resp.get_body())
    assert resp.status_code == 500 and body["error"]["field"] == "KEY_VAULT_URL", body
    monkeypatch.setenv("ROTATION_CONCURRENCY", "lots")
    services.set_keyvault_factory(lambda: None)
    resp = rotation_functions["rotate_cluster_now"].get_user_function()(req)
    assert resp.status_code == 500 and json.loads(resp.get_body())["error"]["field"] == "ROTATION_CONCURRENCY"


def test_rotate_now_endpoint_returns_the_summary(rotation_functions, wired, fleet, keyvault_server, ado_git_server):
    import azure.functions as func

    registry, _ = wired
    fn = rotation_functions["rotate_cluster_now"]
    assert fn.get_trigger().get_dict_repr()["authLevel"].value == "admin"
    m = fleet.members[1]
    registry.upsert(fleet.record(m))
    new = new_pat_version(keyvault_server, ado_git_server)

    req = func.HttpRequest("POST", f"/api/rotation/clusters/{m.name}", route_params={"name": m.name}, body=b"")
    resp = fn.get_user_function()(req)
    body = json.loads(resp.get_body())
    assert resp.status_code == 200 and body["checked"] == 1 and body["updated"] == 1
    assert body["clusters"][0]["cluster"] == "c1" and body["clusters"][0]["status"] == "updated"
    assert digest(m.secret()["password"]) == digest(new)
    assert digest(fleet.members[0].secret()["password"]) == digest(fleet.old_pat)  # only that cluster
    assert_no_leak(resp.get_body().decode(), new)

    ado_git_server.pat = "another"
    keyvault_server.seed_pat("fleet-pat", secrets.token_urlsafe(32), PREFIX(ado_git_server))
    resp = fn.get_user_function()(req)
    assert resp.status_code == 502 and json.loads(resp.get_body())["failed"] == 1

    missing = func.HttpRequest("POST", "/api/rotation/clusters/nope", route_params={"name": "nope"}, body=b"")
    resp = fn.get_user_function()(missing)
    assert resp.status_code == 404 and json.loads(resp.get_body())["error"]["code"] == "NotFound"
    bad = func.HttpRequest("POST", "/api/rotation/clusters/Bad_Name", route_params={"name": "Bad_Name"}, body=b"")
    resp = fn.get_user_function()(bad)
    assert resp.status_code == 400 and json.loads(resp.get_body())["error"]["field"] == "name"


def test_cli_rotate_prints_the_summary(wired, fleet, keyvault_server, ado_git_server, capsys):
    from shared import cli

    registry, _ = wired
    for m in fleet.members:
        registry.upsert(fleet.record(m))
    new = new_pat_version(keyvault_server, ado_git_server)

    assert cli.main(["rotate", "--cluster", "c2"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["updated"] == 1
    assert cli.main(["rotate"]) == 0
    out = capsys.readouterr().out
    body = json.loads(out)
    assert (body["checked"], body["updated"], body["unchanged"]) == (3, 2, 1)
    assert_no_leak(out, new, fleet.old_pat)
    fleet.members[1].server.unreachable()
    assert cli.main(["rotate"]) == 1  # a failed cluster → exit code 1
    assert json.loads(capsys.readouterr().out)["failed"] == 1
