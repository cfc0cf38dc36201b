"""Credential rotation into every registered cluster's Secrets (issue #4): the timer's work.

For each :class:`shared.rotation.registry.ClusterRecord`, on a thread pool of ``concurrency`` workers, each
cluster isolated from the others' failures (an error is recorded in its :class:`ClusterResult`, never
raised), with what each Flux consumer reads (``../shared/docs/notifications-and-rotation.md`` D3, A, B1):

* **Git, ``pat`` mode.** The latest version of Key Vault secret ``patSecret`` is compared (SHA-256
  digests, never the values) with ``password`` (and ``username``) of the source Secret. When they differ,
  the PAT is first checked against the GitRepository's ``spec.url`` with a ``git ls-remote`` (dulwich,
  :func:`shared.ports.git.ls_remote`); only a PAT the server accepts is written (keys ``username``/``password``,
  as ``flux bootstrap git --token-auth``; other keys survive), then the GitRepository gets
  ``reconcile.fluxcd.io/requestedAt`` = the time in Go's RFC3339Nano form, as ``flux reconcile`` writes
  it (``fluxcd/pkg/apis/meta/annotations.go``; source-controller re-reads the Secret on every reconcile).
  Key Vault's ``exp`` is informational (Key Vault still returns an expired secret, about-secrets):
  within ``pat_warning_days`` → a warning; passed → an error and nothing written. A managed identity
  cannot mint PATs (Azure DevOps: "You can't use service principals or managed identities to create or
  revoke PATs", research D2), so a human stores each new PAT as a new version.
* **Git, ``entra-bearer`` / ``entra-password``.** When the token in the Secret (``bearerToken``, or
  ``password`` with ``username``) has less than ``token_min_remaining`` left (its JWT ``exp``, read with
  PyJWT without verifying the signature; absent or unreadable counts as expired), an Entra ID token for
  Azure DevOps (scope ``499b84ac-1321-427f-aa17-267ca6975798/.default``) is minted with the Function's
  identity, checked with ``git ls-remote`` (Bearer, or Basic with the token as password), written, and
  the GitRepository annotated (source-controller ``api/v1`` secretRef keys ``bearerToken``,
  ``username``/``password``).
* **Where credentials go** (:mod:`shared.trust`). A Git credential is sent (``ls-remote``) and written
  only for the URL recorded when the cluster was registered (``gitUrl``): it must still pass
  ``GIT_ALLOWED_HOSTS`` (``GIT_BEARER_TOKEN_HOSTS`` for the Entra token), checked before any Key Vault
  or cluster call; the PAT's Key Vault secret must carry tag ``flux-git-url-prefixes`` covering it;
  and the cluster's GitRepository must still name that repository. A GitRepository whose
  ``spec.url`` names another one (anyone who can push to the synced repository can change it) fails
  that cluster as possible tampering, nothing sent, until it is re-registered with the new URL.
  Kubeconfig secrets must be marked ``application/x-kubeconfig``.
* source-controller uses ``bearerToken`` instead of ``username``/``password`` when both are present
  (``fluxcd/pkg/git`` ``NewAuthOptions``), so in ``pat``/``entra-password`` mode a ``bearerToken`` key in
  the Secret is reported as an error (the new password is still written; that key is not ours to remove).
* **Event Hub JWT.** For a record with a notification Provider, when the Provider Secret's ``token``
  expires within ``token_min_remaining`` (or ``address`` is not the hub name), a token for
  ``https://eventhubs.azure.net/.default`` is minted and written as ``token`` with ``address`` = hub name
  (the keys of fluxcd/flux2 ``manifests/integrations/eventhub-credentials-sync``; notification-controller
  re-reads the Provider Secret for every event). Only a JWT that decodes, is not expired and, when it
  names an audience, names Event Hubs is written. Static Event Hub JWTs are deprecated since Flux 2.7
  (notification-controller v1.7.0): every run that refreshes one also warns, pointing at the
  workload-identity form of the ``azureeventhub`` Provider (Flux 2.6+).
* **Git, ``workload-identity``** (``sourceProvider: azure`` at bootstrap): source-controller signs in with
  its own workload identity, so there is no Git credential to rotate: nothing is read or sent for Git.
* **Git, ``ssh``** (a bootstrap over SSH): the source Secret holds an SSH deploy key from Key Vault
  (``identity``, ``identity.pub``, ``known_hosts``); a key is not rotated, so nothing is read or sent
  for Git either (no Key Vault read, no ``ls-remote``, no write to the source Secret): only the Event
  Hub JWT, when the record has one, and otherwise the cluster is not even connected to.

* **Reaching the cluster** (:class:`shared.clusters.ClusterAccess`, as bootstrap does): by its AKS
  resource ID (``clusterResourceId``: ARM with the Function's managed identity, endpoint and CA read at
  most once per cluster per run and kept per process; a 403 names the Azure RBAC Admin role on the
  namespace), or by the kubeconfig in Key Vault secret ``kubeconfigSecret`` (its kubelogin form served by
  the same identity).

No credential value is logged, returned or put in an error: results name the Key Vault secret, its
version and the Kubernetes Secret. A failed cluster is retried by the next run (nothing is remembered).
A missing or invalid app setting (``KEY_VAULT_URL``, ``ROTATION_*``, registry storage) is not a cluster's
failure: it raises :class:`shared.rotation.registry.SettingError` before any cluster is touched.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from shared import errors
from shared.clusters import ROTATION
from shared.rotation.registry import NO_GIT_CREDENTIAL
from shared.errors import SettingError
from shared.memo import Memo

log = logging.getLogger(__name__)

ADO_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
EVENTHUB_SCOPE = "https://eventhubs.azure.net/.default"
EVENTHUB_AUDIENCE = "https://eventhubs.azure.net"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
GITREPOSITORY_API = "source.toolkit.fluxcd.io/v1"


@dataclass(frozen=True)
class RotationSettings:
    """Tuning, from app settings (:meth:`from_settings`).

    ``pat_warning_days`` (``ROTATION_PAT_WARNING_DAYS``, default 7): warn when the PAT's Key Vault
    ``exp`` is closer than this. ``token_min_remaining`` (``ROTATION_TOKEN_MIN_REMAINING_MINUTES``, default
    20): refresh Entra/Event Hub tokens with less lifetime left. ``concurrency``
    (``ROTATION_CONCURRENCY``, default 16): clusters handled at once. ``pat_warning_interval``
    (``ROTATION_PAT_WARNING_INTERVAL``, default ``24h``, at most ``720h``; ``0`` warns every run): the
    app's own ``PATExpiringSoon``/``PATExpired`` event about one PAT secret version is published at most
    once per interval (:func:`shared.notify.app_events.announce_rotation`); the run's result and log
    still carry the warning every run.
    """

    pat_warning_days: float = 7.0
    token_min_remaining: timedelta = timedelta(minutes=20)
    concurrency: int = 16
    pat_warning_interval: timedelta = timedelta(hours=24)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ) -> "RotationSettings":
        """Raises :class:`shared.rotation.registry.SettingError` (field = the setting's name) for a value that is
        not a number in range (days 0-365, minutes 0-1440, concurrency a whole number 1-128) or, for the
        warning interval, not a duration of 0-720h."""
        from shared.settings import duration, number

        return cls(pat_warning_days=number(environ, "ROTATION_PAT_WARNING_DAYS", 7, maximum=365),
                   token_min_remaining=timedelta(minutes=number(environ, "ROTATION_TOKEN_MIN_REMAINING_MINUTES", 20, maximum=1440)),
                   concurrency=number(environ, "ROTATION_CONCURRENCY", 16, integer=True, minimum=1, maximum=128),
                   pat_warning_interval=timedelta(seconds=duration(environ, "ROTATION_PAT_WARNING_INTERVAL", 86400,
                                                                   maximum=720 * 3600)))


@dataclass
class ClusterResult:
    """What one run did to one cluster. ``status``: ``updated`` (a Secret was written), ``unchanged``
    (checked, nothing to do) or ``failed`` (at least one error; other parts may still have been updated,
    see ``changes``). ``changes``/``warnings``/``errors`` are one-line texts without credential values."""

    cluster: str
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration_ms: int = 0

    @property
    def status(self) -> str:
        if self.errors:
            return "failed"
        return "updated" if self.changes else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "status": self.status, "changes": list(self.changes),
                "warnings": list(self.warnings), "errors": list(self.errors), "durationMs": self.duration_ms}


@dataclass
class RotationSummary:
    """A run: per-cluster results (in registry order) and counts. ``to_dict()`` is the JSON the HTTP
    endpoint returns: ``{"checked", "updated", "unchanged", "failed", "warnings", "startedAt",
    "durationSeconds", "events": {"published", "failed"}, "clusters": [ClusterResult.to_dict(), ...]}``;
    ``events`` counts the app's own events of the run that the hub accepted and that failed to publish
    (both 0 when there was nothing to say, publishing is off, or a reminder was held back)."""

    clusters: list[ClusterResult]
    started_at: datetime
    duration_s: float
    #: the app's own events of the run (:mod:`shared.notify.app_events`): ``{"published": n, "failed": n}``
    events: dict = field(default_factory=lambda: {"published": 0, "failed": 0})

    def count(self, status: str) -> int:
        return sum(1 for c in self.clusters if c.status == status)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def to_dict(self) -> dict[str, Any]:
        return {"checked": len(self.clusters), "updated": self.count("updated"),
                "unchanged": self.count("unchanged"), "failed": self.failed,
                "warnings": sum(len(c.warnings) for c in self.clusters),
                "startedAt": self.started_at.isoformat(), "durationSeconds": round(self.duration_s, 3),
                "events": dict(self.events), "clusters": [c.to_dict() for c in self.clusters]}

    def log(self, logger: logging.Logger = log) -> None:
        """One line per cluster that changed, warned (WARNING) or failed (ERROR), one line naming the
        unchanged clusters, then the totals. No credential values (results never hold any)."""
        unchanged = [c.cluster for c in self.clusters if c.status == "unchanged"]
        if unchanged:
            logger.info("rotation: unchanged: %s", ", ".join(unchanged))
        for c in self.clusters:
            if c.status == "failed":
                logger.error("rotation: cluster %s failed: %s%s", c.cluster, "; ".join(c.errors),
                             (" (also: " + "; ".join(c.changes) + ")") if c.changes else "")
            elif c.changes:
                logger.info("rotation: cluster %s updated: %s", c.cluster, "; ".join(c.changes))
            for w in c.warnings:
                logger.warning("rotation: cluster %s: %s", c.cluster, w)
        d = self.to_dict()
        logger.info("rotation: %d checked, %d updated, %d unchanged, %d failed, %d warnings in %.1f s",
                    d["checked"], d["updated"], d["unchanged"], d["failed"], d["warnings"], self.duration_s)


# -- helpers ----------------------------------------------------------------------------------------


def digest(value: str | None) -> str:
    """SHA-256 hex of a credential, for comparisons (never log the value; the digest is not logged either)."""
    return hashlib.sha256((value or "").encode("utf-8")).hexdigest()


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(digest(a), digest(b))


def jwt_expiry(token: str | None) -> datetime | None:
    """The ``exp`` claim of a JWT as an aware UTC datetime, read with PyJWT **without** verifying the
    signature (we only need to know when to refresh); None when absent, not a JWT, or without ``exp``."""
    if not token:
        return None
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        return None
    return datetime.fromtimestamp(exp, timezone.utc)


def _jwt_audience(token: str) -> list[str]:
    import jwt

    try:
        aud = jwt.decode(token, options={"verify_signature": False, "verify_exp": False}).get("aud")
    except jwt.PyJWTError:
        return []
    return [aud] if isinstance(aud, str) else list(aud or [])


def rfc3339nano(when: datetime) -> str:
    """``when`` as Go's ``time.RFC3339Nano`` formats it (what ``flux reconcile`` writes into
    ``reconcile.fluxcd.io/requestedAt``): UTC with ``Z``, fractional seconds without trailing zeros
    (none when zero), e.g. ``2026-08-10T12:00:00.12Z``. Python keeps microseconds, Go nanoseconds."""
    when = when.astimezone(timezone.utc)
    frac = f"{when.microsecond:06d}".rstrip("0")
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _fmt_delta(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if abs(s) >= 86400:
        return f"{s / 86400:.1f} days"
    if abs(s) >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s // 60} min"


class _Redactor:
    """Strips known credential values from a text (for unexpected exceptions' messages)."""

    def __init__(self):
        self.values: list[str] = []

    def add(self, value: str | None) -> None:
        if value and len(value) >= 4:
            self.values.append(value)

    def __call__(self, text: str) -> str:
        for v in sorted(set(self.values), key=len, reverse=True):
            text = text.replace(v, "<redacted>")
        return text


# -- the run ----------------------------------------------------------------------------------------


class Rotator:
    """One rotation run over some records.

    ``keyvault``: :class:`shared.ports.azure.keyvault.KeyVault`; ``credential``: a ``TokenCredential`` (its
    ``get_token(scope)`` → ``AccessToken(token, expires_on)``), also the one that reaches clusters named by
    resource ID; ``aks``: :class:`shared.ports.azure.aks.AksClient` (ARM; its endpoints are read at most once
    per cluster per run); ``cluster_factory(kubeconfig_text, context)`` → :class:`shared.ports.kube.Cluster`
    for clusters named by kubeconfig secret (default :meth:`~shared.ports.kube.Cluster.from_kubeconfig`,
    the kubelogin form served with ``credential``); ``clock()`` → aware UTC datetime (tests);
    ``git_ca_file``: optional CA bundle for the ``ls-remote`` check. Defaults come from :mod:`shared.services`.
    """

    def __init__(self, *, keyvault=None, credential=None, cluster_factory=None, aks=None,
                 settings: RotationSettings | None = None, clock: Callable[[], datetime] | None = None,
                 git_ca_file: str | None = None):
        self._keyvault = keyvault
        self._credential = credential
        self._aks = aks
        self.cluster_factory = cluster_factory
        self._aks_token = None
        self.settings = settings or RotationSettings.from_settings()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.git_ca_file = git_ca_file
        self.policy = None  # shared.trust.GitPolicy, read from the app settings by preflight()
        self._secrets = Memo()
        self._checks = Memo()
        self._tokens = Memo()
        self._endpoints = Memo()
        self._cluster_access = None
        self._access_lock = threading.Lock()

    @property
    def keyvault(self):
        if self._keyvault is None:
            from shared import services

            self._keyvault = services.keyvault()
        return self._keyvault

    @property
    def credential(self):
        if self._credential is None:
            from shared import services

            self._credential = services.credential()
        return self._credential

    def _access(self):
        """How this run reaches clusters (:class:`shared.clusters.ClusterAccess`, built once): Key Vault for
        kubeconfig secrets, ARM for resource IDs (memoised for the run: one read per cluster), Entra ID
        tokens of ``credential`` for AKS."""
        with self._access_lock:
            if self._cluster_access is None:
                from shared.clusters import ClusterAccess
                from shared.ports.azure.aks import AksClient, TokenProvider

                factory = None
                if self.cluster_factory is not None:
                    factory = lambda text, context, provider: self.cluster_factory(text, context)  # noqa: E731
                aks = self._aks
                if aks is None and self._credential is not None:
                    aks = AksClient.from_settings(self._credential)
                # aks None: the process-wide client of shared.services (its endpoint cache outlives the run)
                if self._credential is None:
                    from shared import services

                    token = services.aks_token_provider()
                else:
                    token = TokenProvider(self._credential)
                self._cluster_access = ClusterAccess(keyvault=self.keyvault, aks=aks, token_provider=token,
                                                     kubeconfig_factory=factory, memo=self._endpoints)
            return self._cluster_access

    # shared, memoised look-ups ------------------------------------------------------------------
    def _secret(self, name: str, field: str):
        return self._secrets.get(name, lambda: self.keyvault.get_secret(name, field=field))

    def _mint(self, scope: str) -> tuple[str, datetime]:
        """(token, expires_on) for ``scope``, minted once per run."""

        def mint():
            try:
                at = self.credential.get_token(scope)
            except errors.FluxOpsError:
                raise
            except Exception as exc:  # noqa: BLE001 - azure-identity's CredentialUnavailableError, ClientAuthenticationError...
                raise errors.AuthenticationFailed(
                    f"could not get an Entra ID token for {scope} with the Function's identity ({type(exc).__name__})") from None
            token = getattr(at, "token", None)
            if not isinstance(token, str) or not token.strip():
                raise errors.AuthenticationFailed(f"the credential returned an empty token for {scope}")
            return token, datetime.fromtimestamp(int(at.expires_on), timezone.utc)

        return self._tokens.get(scope, mint)

    def _check_git(self, url: str, auth, allow_insecure_http: bool) -> None:
        from shared.ports.git import ls_remote

        key = (url, auth.username, digest(auth.password), digest(auth.bearer_token), allow_insecure_http)
        self._checks.get(key, lambda: ls_remote(url, auth, allow_insecure_http=allow_insecure_http, policy=self.policy))

    def _destination(self, record):
        """The recorded ``gitUrl`` as the trust policy accepts it (no network call), or raises
        ``InvalidInput("gitUrl")``."""
        from shared.trust import GitPolicy

        if not record.git_url:
            raise errors.InvalidInput("gitUrl", "no gitUrl is recorded for this cluster, so no credential is sent; "
                                                "re-register it with the repository URL (gitUrl)")
        if self.policy is None:
            self.policy = GitPolicy.from_settings()
        return self.policy.destination(record.git_url, allow_insecure_http=record.allow_insecure_http,
                                       bearer=record.git_auth.startswith("entra-"), field="gitUrl")

    # run ------------------------------------------------------------------------------------------
    def preflight(self, records: Iterable = ()) -> None:
        """Build the Key Vault client (and, when a record names its cluster by resource ID, the ARM client)
        now, so a missing or invalid ``KEY_VAULT_URL`` or ARM setting raises ``SettingError`` once instead
        of failing every cluster; read the trust policy (``GIT_ALLOWED_HOSTS``...) once."""
        from shared.trust import GitPolicy

        self.policy = GitPolicy.from_settings()  # SettingError for a malformed GIT_ALLOWED_HOSTS
        try:
            self.keyvault
            access = self._access()
            if any(getattr(r, "cluster_resource_id", None) for r in records):
                access.aks
        except SettingError:
            raise
        except errors.InvalidInput as exc:  # shared.ports.azure.keyvault names the setting as the field
            raise SettingError(exc.field, exc.message) from None

    def run(self, records: Iterable) -> RotationSummary:
        """Rotate every record (:class:`shared.rotation.registry.ClusterRecord`) on at most
        ``settings.concurrency`` threads. Never raises for a cluster's failure (it is in that cluster's
        result); raises ``SettingError`` from :meth:`preflight`. Results keep ``records`` order."""
        records = list(records)
        started = self.clock()
        t0 = time.monotonic()
        if not records:
            return RotationSummary([], started, 0.0)
        self.preflight(records)
        workers = max(1, min(self.settings.concurrency, len(records)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotate") as pool:
            results = list(pool.map(self.rotate_one, records))
        return RotationSummary(results, started, time.monotonic() - t0)

    def rotate_one(self, record) -> ClusterResult:
        """Rotate one cluster; every failure becomes an entry of ``errors``."""
        t0 = time.monotonic()
        result = ClusterResult(record.name)
        redact = _Redactor()
        cluster = None
        try:
            parts = []
            if record.git_auth not in NO_GIT_CREDENTIAL:  # workload identity, an SSH key: nothing to rotate
                try:  # where the credential would go: checked before any Key Vault or cluster call
                    destination = self._destination(record)
                    parts.append(("git", functools.partial(self._rotate_git, destination=destination)))
                except errors.FluxOpsError as exc:
                    result.errors.append(f"git: {exc}; nothing sent")
            if record.has_eventhub:
                parts.append(("eventhub", self._rotate_eventhub))
            if not parts:
                return result
            try:
                cluster = self._access().connect(record.cluster_ref, purpose=ROTATION, namespace=record.namespace,
                                                 on_secret=redact.add)
            except errors.FluxOpsError as exc:
                result.errors.append(f"cluster access: {redact(str(exc))}")
                return result
            except Exception as exc:  # noqa: BLE001 - isolation: one cluster never stops the run
                result.errors.append(f"cluster access: unexpected {type(exc).__name__}: {redact(str(exc))[:300]}")
                return result
            for label, part in parts:
                try:
                    part(record, cluster, result, redact)
                except errors.FluxOpsError as exc:
                    result.errors.append(f"{label}: {redact(str(exc))}")
                except Exception as exc:  # noqa: BLE001 - isolation: one cluster never stops the run
                    result.errors.append(f"{label}: unexpected {type(exc).__name__}: {redact(str(exc))[:300]}")
            return result
        finally:
            if cluster is not None:
                try:
                    cluster.close()
                except Exception:  # noqa: BLE001
                    pass
            result.duration_ms = int((time.monotonic() - t0) * 1000)

    # parts ------------------------------------------------------------------------------------------
    def _source_secret(self, record, cluster) -> dict[str, str]:
        data = cluster.read_secret_data(record.namespace, record.source_secret)
        if data is None:
            raise errors.NotFound(f"source Secret {record.namespace}/{record.source_secret} not found "
                                  "(bootstrap the cluster first); nothing written")
        return data

    def _check_repo_url(self, record, cluster, destination) -> None:
        """The cluster's GitRepository must still name the repository recorded at registration
        (``gitUrl``); another one fails the cluster as possible tampering (``Conflict``), nothing sent."""
        from shared.errors import shown
        from shared.trust import parse_git_url

        ref = f"GitRepository {record.namespace}/{record.git_repository}"
        repo = cluster.get(GITREPOSITORY_API, "GitRepository", record.git_repository, record.namespace)
        if repo is None:
            raise errors.NotFound(f"{ref} not found; nothing written")
        url = (repo.get("spec") or {}).get("url")
        if not url:
            raise errors.InvalidInput("gitRepository", f"{ref} has no spec.url")
        try:
            same = parse_git_url(url, "spec.url").same_repository(destination.url)
        except errors.InvalidInput:
            same = False
        if not same:
            raise errors.Conflict(
                f"{ref} now names {shown(url, 200)}, not the repository recorded when the cluster was registered "
                f"({destination}): possible tampering, nothing sent; if the change is intended, re-register the "
                f"cluster with the new gitUrl (PUT /api/registry/clusters/{record.name} or python -m shared registry add "
                "--git-url)")

    def _write_and_annotate(self, record, cluster, result: ClusterResult, values: dict[str, str], what: str) -> None:
        ref = f"Secret {record.namespace}/{record.source_secret}"
        change = cluster.reconcile_secret(record.namespace, record.source_secret, values)
        if change.action == "unchanged":
            return
        result.changes.append(f"{ref}: {', '.join(sorted(values))} {change.action} ({what})")
        now = rfc3339nano(self.clock())
        try:
            cluster.annotate(GITREPOSITORY_API, "GitRepository", record.git_repository, record.namespace,
                             {REQUESTED_AT: now})
        except errors.FluxOpsError as exc:
            raise errors.UpstreamError(f"{ref} was updated but annotating GitRepository "
                                       f"{record.namespace}/{record.git_repository} failed: {exc}") from None
        result.changes.append(f"GitRepository {record.namespace}/{record.git_repository} annotated {REQUESTED_AT}")

    def _rotate_git(self, record, cluster, result: ClusterResult, redact: _Redactor, destination) -> None:
        """The source Secret's credential, per ``record.git_auth``. ``pat``/``entra-password`` write
        ``password``, which source-controller ignores while the Secret holds ``bearerToken`` (fluxcd/pkg
        git ``NewAuthOptions``); that key is not ours to delete, so it is reported as an error."""
        if record.git_auth == "pat":
            current = self._rotate_pat(record, cluster, result, redact, destination)
        else:
            current = self._rotate_entra(record, cluster, result, redact, destination)
        if record.git_auth != "entra-bearer" and "bearerToken" in current:
            raise errors.Conflict(
                f"Secret {record.namespace}/{record.source_secret} also holds key bearerToken, which "
                "source-controller uses instead of username/password; delete that key, or set gitAuth to "
                "entra-bearer")

    def _rotate_pat(self, record, cluster, result: ClusterResult, redact: _Redactor, destination) -> dict[str, str]:
        """Returns the source Secret's data as read before any write."""
        from shared.ports.git import GitAuth, GitAuthError
        from shared.trust import git_credential

        pat = self._secret(record.pat_secret, "patSecret")
        redact.add(pat.value)
        git_credential(pat, destination, field="patSecret")  # the vault owner's tag must cover gitUrl
        kv_ref = f"Key Vault secret {record.pat_secret} (version {pat.version})"
        now = self.clock()
        if pat.expires_on is not None:
            left = pat.expires_on - now
            if left <= timedelta(0):
                raise errors.AuthenticationFailed(
                    f"PAT in {kv_ref} expired {_fmt_delta(-left)} ago ({pat.expires_on:%Y-%m-%d %H:%M} UTC); "
                    "store a new PAT as a new version of the secret; nothing written")
            if left <= timedelta(days=self.settings.pat_warning_days):
                result.warnings.append(
                    f"PAT in {kv_ref} expires in {_fmt_delta(left)} ({pat.expires_on:%Y-%m-%d %H:%M} UTC); "
                    "create a new PAT in Azure DevOps and store it as a new version of the secret")
        if not pat.value.strip():
            raise errors.InvalidInput("patSecret", f"{kv_ref} is empty; nothing written")
        current = self._source_secret(record, cluster)
        redact.add(current.get("password"))
        redact.add(current.get("bearerToken"))
        self._check_repo_url(record, cluster, destination)
        if _same(current.get("password"), pat.value) and current.get("username") == record.username:
            return current
        url = str(destination)
        try:
            self._check_git(url, GitAuth(record.username, password=pat.value, ca_file=self.git_ca_file),
                            record.allow_insecure_http)
        except GitAuthError:
            raise errors.AuthenticationFailed(
                f"the PAT in {kv_ref} was refused by {url} (git ls-remote); nothing written") from None
        self._write_and_annotate(record, cluster, result, {"username": record.username, "password": pat.value},
                                 f"PAT from {kv_ref}, checked with git ls-remote")
        return current

    def _rotate_entra(self, record, cluster, result: ClusterResult, redact: _Redactor, destination) -> dict[str, str]:
        """Returns the source Secret's data as read before any write."""
        from shared.ports.git import GitAuth, GitAuthError

        bearer = record.git_auth == "entra-bearer"
        key = "bearerToken" if bearer else "password"
        current = self._source_secret(record, cluster)
        redact.add(current.get("password"))
        redact.add(current.get("bearerToken"))
        self._check_repo_url(record, cluster, destination)
        now = self.clock()
        threshold = self.settings.token_min_remaining
        exp = jwt_expiry(current.get(key))
        username_ok = bearer or current.get("username") == record.username
        if exp is not None and exp - now >= threshold and username_ok:
            return current
        token, token_exp = self._mint(ADO_SCOPE)
        redact.add(token)
        if token_exp <= now:
            raise errors.AuthenticationFailed("the Entra ID token for Azure DevOps is already expired; nothing written")
        if token_exp - now < threshold:
            result.warnings.append(f"the Entra ID token for Azure DevOps is valid for only {_fmt_delta(token_exp - now)}")
        if _same(current.get(key), token) and username_ok:
            return current  # the credential handed out the token the cluster already has
        url = str(destination)
        auth = (GitAuth(record.username, bearer_token=token, ca_file=self.git_ca_file) if bearer
                else GitAuth(record.username, password=token, ca_file=self.git_ca_file))
        try:
            self._check_git(url, auth, record.allow_insecure_http)
        except GitAuthError:
            raise errors.AuthenticationFailed(
                f"the Entra ID token for Azure DevOps was refused by {url} (git ls-remote; is the identity "
                "added to the organization with Basic access and project Readers?); nothing written") from None
        values = {key: token} if bearer else {"username": record.username, "password": token}
        self._write_and_annotate(record, cluster, result, values,
                                 f"Entra ID token valid until {token_exp:%Y-%m-%d %H:%M} UTC, checked with git ls-remote")
        return current

    def _rotate_eventhub(self, record, cluster, result: ClusterResult, redact: _Redactor) -> None:
        ns, name = record.namespace, record.eventhub_secret
        # still refreshed, but on its way out (fluxcd/notification-controller CHANGELOG 1.7.0)
        result.warnings.append(
            f"the static Event Hub JWT in Secret {ns}/{name} is deprecated since Flux 2.7: give notification-controller "
            # channel is the namespace's name: azure-event-hubs-go appends .servicebus.windows.net itself
            f"workload identity instead (Flux 2.6+: an azureeventhub Provider with channel "
            f"{record.eventhub_namespace.split('.')[0]}, "
            f"address {record.eventhub_name} and no secretRef; README \"Notification forwarding\"), then drop the Event "
            "Hub fields of this registry record")
        current = cluster.read_secret_data(ns, name) or {}
        redact.add(current.get("token"))
        now = self.clock()
        threshold = self.settings.token_min_remaining
        exp = jwt_expiry(current.get("token"))
        if exp is not None and exp - now >= threshold and current.get("address") == record.eventhub_name:
            return
        token, token_exp = self._mint(EVENTHUB_SCOPE)
        redact.add(token)
        jwt_exp = jwt_expiry(token)
        if jwt_exp is None:
            raise errors.AuthenticationFailed("the Event Hubs token is not a JWT with an exp claim; nothing written")
        if min(jwt_exp, token_exp) <= now:
            raise errors.AuthenticationFailed("the Event Hubs token is already expired; nothing written")
        audiences = _jwt_audience(token)
        if audiences and not any(a.rstrip("/") == EVENTHUB_AUDIENCE for a in audiences):
            raise errors.AuthenticationFailed("the Event Hubs token is for another audience; nothing written")
        if min(jwt_exp, token_exp) - now < threshold:
            result.warnings.append(f"the Event Hubs token is valid for only {_fmt_delta(min(jwt_exp, token_exp) - now)}")
        change = cluster.reconcile_secret(ns, name, {"token": token, "address": record.eventhub_name})
        if change.action != "unchanged":
            result.changes.append(f"Secret {ns}/{name}: token, address {change.action} "
                                  f"(Event Hubs token valid until {jwt_exp:%Y-%m-%d %H:%M} UTC)")


# -- entry points -----------------------------------------------------------------------------------


def rotate(records: Iterable, *, invalid: Iterable[tuple[str, str]] = (), **kwargs) -> RotationSummary:
    """Rotate ``records`` (see :class:`Rotator` for the keyword arguments) and log the summary.
    ``invalid``: ``(cluster name, reason)`` of registry rows that do not validate; each is listed as a
    failed cluster (nothing is done to it). Raises ``SettingError`` for a bad app setting. PAT expiry and
    failures are then published as the app's own events (:mod:`shared.notify.app_events`; best effort,
    PAT reminders at most once per ``pat_warning_interval`` per secret version), counted in
    ``summary.events``."""
    records = list(records)
    rotator = Rotator(**kwargs)
    summary = rotator.run(records)
    for name, reason in invalid:
        summary.clusters.append(ClusterResult(name, errors=[
            f"registry record is invalid ({reason}); nothing done; fix it with PUT /api/registry/clusters/{name} "
            "or python -m shared registry add"]))
    summary.log()
    from shared.notify import app_events

    published = app_events.announce_rotation(summary, records, interval=rotator.settings.pat_warning_interval,
                                             now=rotator.clock())
    if published is not None:
        summary.events = {"published": published.sent, "failed": published.failed}
    from shared.fleet.status import record_rotation

    record_rotation(summary)  # the fleet status shows each cluster's last result
    return summary


def rotate_all(**kwargs) -> RotationSummary:
    """The timer's run: every row of :func:`shared.services.registry` (invalid rows count as failed).
    Raises only when the registry cannot be read (``UpstreamError``) or an app setting is missing or
    invalid (``SettingError``)."""
    from shared import services

    records, invalid = services.registry().scan()
    return rotate(records, invalid=invalid, **kwargs)


def rotate_cluster(name: str, **kwargs) -> RotationSummary:
    """Rotate one registered cluster now. Raises ``InvalidInput("name")`` for a bad name, ``NotFound``
    when it is not registered, ``SettingError``/``UpstreamError`` as :func:`rotate_all`."""
    from shared import services

    return rotate([services.registry().get(name)], **kwargs)
