"""The bootstrap runner: what ``flux bootstrap git`` does, over a git repository and a cluster.

The steps follow fluxcd/flux2 ``pkg/bootstrap/bootstrap.go`` (``Run``) and
``pkg/bootstrap/bootstrap_plain_git.go`` (see ``../shared/docs/flux-bootstrap-spec.md`` §2):

1. ``reconcile_components``: clone the branch, write ``<path>/<ns>/gotk-components.yaml``, commit
   ``Add Flux <version> component manifests`` and push when the bytes changed; install the
   components on the cluster unless Kustomization ``<ns>/<ns>`` already has a
   ``lastAppliedRevision`` (Flux then upgrades itself from Git).
2. ``reconcile_source_secret``: create or update the source Secret (``username``/``password``).
3. ``reconcile_sync``: write ``gotk-sync.yaml`` (always) and ``kustomization.yaml`` (only when
   absent), commit ``Add Flux sync manifests`` and push when changed (re-clone and retry on a
   non-fast-forward push), apply the GitRepository and Kustomization.
4. ``report_health``: read the GitRepository and Kustomization status, waiting up to ``timeout``.

Two deliberate differences from the CLI, both so that bad input touches nothing: everything that
can be checked before the first write is checked first (options, distribution, component
rendering, cluster reachability and credentials, the sync path of an existing Kustomization,
the git credentials), and the sync path conflict is detected before the components commit.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .errors import Conflict, InvalidInput
from .flux import DEFAULT_COMPONENTS, DEFAULT_NAMESPACE, DEFAULT_REGISTRY, Manifest
from .flux import distribution as flux_distribution
from .flux import install, kustomization, sourcesecret, sync
from .flux.options import (
    normalize_duration,
    normalize_path,
    parse_duration,
    sync_url,
    validate_branch,
    validate_version,
)

log = logging.getLogger(__name__)

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
#: Azure Functions HTTP responses must come back within 230 s; keep health waits well inside.
MAX_TIMEOUT_SECONDS = 150
#: Entra ID scope of Azure DevOps (its well-known application id), for ``withBearerToken``.
AZURE_DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"


@dataclass(frozen=True)
class BootstrapOptions:
    """Validated options of one bootstrap; names mirror ``flux bootstrap git`` flags.

    ``path`` is normalised (``./clusters/x`` or ``""``), ``interval`` in Flux's print form
    (``1m0s``), ``timeout`` in seconds (health wait; 0 = check once)."""

    url: str
    branch: str = "main"
    path: str = ""
    interval: str = "1m0s"
    version: str | None = None
    components: tuple[str, ...] = DEFAULT_COMPONENTS
    components_extra: tuple[str, ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    secret_name: str = DEFAULT_NAMESPACE
    username: str = "git"
    token_auth: bool = True
    with_bearer_token: bool = False
    allow_insecure_http: bool = False
    author_name: str = "Flux"
    author_email: str = ""
    commit_message_appendix: str = ""
    registry: str = DEFAULT_REGISTRY
    network_policy: bool = True
    watch_all_namespaces: bool = True
    log_level: str = "info"
    cluster_domain: str = "cluster.local"
    timeout: float = 0.0
    force: bool = False

    @property
    def sync_url(self) -> str:
        return sync_url(self.url, token_auth=self.token_auth, allow_insecure_http=self.allow_insecure_http)

    @property
    def author(self) -> str:
        return f"{self.author_name} <{self.author_email}>"

    def install_options(self) -> install.InstallOptions:
        return install.InstallOptions(
            components=self.components,
            components_extra=self.components_extra,
            namespace=self.namespace,
            registry=self.registry,
            watch_all_namespaces=self.watch_all_namespaces,
            network_policy=self.network_policy,
            log_level=self.log_level,
            cluster_domain=self.cluster_domain,
            target_path=self.path,
        )

    def sync_options(self) -> sync.SyncOptions:
        return sync.SyncOptions(
            url=self.sync_url,
            branch=self.branch,
            interval=self.interval,
            target_path=self.path,
            namespace=self.namespace,
            name=self.namespace,
            secret=self.secret_name,
        )

    def commit_message(self, title: str) -> str:
        return title + ("\n\n" + self.commit_message_appendix if self.commit_message_appendix else "")

    def validate(self) -> "BootstrapOptions":
        """Check every option that can be checked offline; raises InvalidInput naming the field."""
        validate_branch(self.branch)
        if self.version is not None:
            validate_version(self.version)
        self.install_options().validate()
        if not self.token_auth:
            raise InvalidInput("tokenAuth", "only token auth (a PAT from Key Vault, or withBearerToken) is supported; set tokenAuth to true")
        if not self.username:
            raise InvalidInput("username", "must not be empty")
        self.sync_options()  # builds the sync URL: scheme and host checks
        _ = self.sync_url
        if not 0 <= self.timeout <= MAX_TIMEOUT_SECONDS:
            raise InvalidInput("timeout", f"must be between 0s and {MAX_TIMEOUT_SECONDS}s")
        if "\n" in self.author_name or "<" in self.author_name or ">" in self.author_email:
            raise InvalidInput("authorName", "must be a plain name")
        return self


@dataclass
class Credentials:
    """Git credentials for token auth: the PAT (``password``) or an Entra ID ``bearer_token``."""

    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)


@dataclass
class Commit:
    sha: str
    message: str


@dataclass
class BootstrapResult:
    """What the run did: commits pushed, objects applied (``str(change)`` lines), health."""

    url: str
    branch: str
    path: str
    version: str
    components: list[str]
    commits: list[Commit] = field(default_factory=list)
    head: str | None = None
    components_installed: bool = False
    changes: list = field(default_factory=list)
    health: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready dict for the HTTP response."""
        counts: dict[str, int] = {"created": 0, "configured": 0, "unchanged": 0}
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return {
            "repository": {
                "url": self.url,
                "branch": self.branch,
                "path": self.path,
                "head": self.head,
                "commits": [asdict(c) for c in self.commits],
            },
            "flux": {"version": self.version, "components": self.components},
            "cluster": {
                "componentsInstalled": self.components_installed,
                **counts,
                "changes": [str(c) for c in self.changes],
            },
            "health": self.health,
            "log": self.log,
        }


class Progress:
    """Flux-style progress lines (``► action``, ``✔ success``, ``◎ waiting``, ``⚠️ warning``).

    Every line is kept in ``lines`` and passed to ``sink`` (the CLI prints them; the Function logs
    them). Lines never carry secret values."""

    def __init__(self, sink: Callable[[str], None] | None = None):
        self.lines: list[str] = []
        self._sink = sink

    def _emit(self, symbol: str, message: str) -> None:
        line = f"{symbol} {message}"
        self.lines.append(line)
        log.info(line)
        if self._sink:
            self._sink(line)

    def action(self, message: str) -> None:
        self._emit("►", message)

    def success(self, message: str) -> None:
        self._emit("✔", message)

    def waiting(self, message: str) -> None:
        self._emit("◎", message)

    def warning(self, message: str) -> None:
        self._emit("⚠️", message)

    def failure(self, message: str) -> None:
        self._emit("✗", message)


def load_objects(text: str) -> list[dict]:
    """Parse multi-document YAML (libyaml) into objects, skipping empty documents."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


def _normalize_sync_path(value: str) -> str:
    """Flux's comparison form of a Kustomization path (bootstrap_plain_git.go ReconcileSyncConfig)."""
    value = value or "./"
    if value != "./":
        value = value.rstrip("/")
    if not value.startswith("./"):
        value = "./" + value.lstrip("./") if not value.startswith(".") else value
    return value


class Bootstrapper:
    """Runs one bootstrap. ``cluster`` is a :class:`shared.kube.Cluster`; ``distribution`` a
    loaded :class:`shared.flux.distribution.Distribution` (see :func:`prepare`)."""

    def __init__(self, opts: BootstrapOptions, credentials: Credentials, cluster, distribution, *, progress: Progress | None = None, workdir: str | None = None, clock=time.monotonic, sleep=time.sleep):
        self.opts = opts
        self.credentials = credentials
        self.cluster = cluster
        self.dist = distribution
        self.progress = progress or Progress()
        self.workdir = workdir
        self._clock = clock
        self._sleep = sleep
        self.components_manifest: Manifest = install.generate(distribution, opts.install_options())
        self.result = BootstrapResult(
            url=opts.sync_url,
            branch=opts.branch,
            path=opts.path,
            version=distribution.version,
            components=opts.install_options().selected(),
            log=self.progress.lines,
        )
        self._repo = None
        self._tmp = None

    # -- helpers -------------------------------------------------------------------------------
    def _git_auth(self):
        from .git import GitAuth

        return GitAuth(username=self.opts.username, password=self.credentials.password, bearer_token=self.credentials.bearer_token)

    def _clone(self):
        from .git import Repository

        self._close_repo()
        self._tmp = tempfile.TemporaryDirectory(prefix="flux-bootstrap-", dir=self.workdir)
        self.progress.action(f"cloning branch \"{self.opts.branch}\" from Git repository \"{self.opts.sync_url}\"")
        repo = Repository.clone(self.opts.url, self.opts.branch, self._git_auth(), self._tmp.name, allow_insecure_http=self.opts.allow_insecure_http)
        self.progress.success("cloned repository")
        self._repo = repo
        return repo

    def _commit_and_push(self, title: str, what: str) -> bool:
        repo = self._repo
        sha = repo.commit(self.opts.commit_message(title), author=self.opts.author)
        if sha is None:
            self.progress.success(f"{what} are up to date")
            return False
        self.progress.success(f"committed {what} to \"{self.opts.branch}\" (\"{sha}\")")
        self.progress.action(f"pushing {what} to \"{self.opts.sync_url}\"")
        repo.push()
        self.result.commits.append(Commit(sha=sha, message=title))
        return True

    def _flux_dir(self) -> str:
        return posixpath.normpath(posixpath.join(self.opts.path or ".", self.opts.namespace))

    def _existing_kustomization(self) -> dict | None:
        from .errors import NotFound as _NotFound

        try:
            return self.cluster.get(KUSTOMIZE_API, "Kustomization", self.opts.namespace, self.opts.namespace)
        except _NotFound:  # CRD not installed yet
            return None

    # -- steps ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Checks that need peers but write nothing: the cluster answers with our credentials,
        and an existing Kustomization does not sync another path (Flux's step 17, done early)."""
        self.progress.action("checking cluster access")
        self._confirm_takeover()
        existing = self._existing_kustomization()
        self._existing = existing
        if existing:
            current = _normalize_sync_path(existing.get("spec", {}).get("path", ""))
            wanted = _normalize_sync_path(self.opts.path)
            if current != wanted:
                raise Conflict(
                    f"sync path configuration (\"{wanted}\") would overwrite path (\"{current}\") of existing Kustomization"
                )
        self.progress.success("cluster is reachable")

    def _confirm_takeover(self) -> None:
        """Flux's ``confirmBootstrap`` (cmd/flux/bootstrap.go, cluster_info.go): when the Flux CRDs
        carry ``app.kubernetes.io/managed-by`` other than ``flux`` (e.g. ``Helm`` for the AKS
        ``microsoft.flux`` extension), another tool owns Flux here; the CLI prompts, a service
        refuses unless ``force``."""
        crd = self.cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io")
        labels = ((crd or {}).get("metadata") or {}).get("labels") or {}
        manager = labels.get("app.kubernetes.io/managed-by", "")
        if manager and manager != "flux":
            if not self.opts.force:
                raise Conflict(
                    f"Flux on this cluster is managed by {manager!r} (the AKS microsoft.flux extension installs it with Helm); "
                    "bootstrapping would take it over: set force to override"
                )
            self.progress.warning(f"taking over Flux managed by {manager!r} (force)")

    def reconcile_components(self) -> None:
        repo = self._clone()
        self.progress.action("generating component manifests")
        manifest = self.components_manifest
        repo.write_file(manifest.path, manifest.content.encode())
        self.progress.success("generated component manifests")
        self._commit_and_push(f"Add Flux {self.dist.version} component manifests", "component manifests")

        existing = self._existing
        applied = (existing or {}).get("status", {}).get("lastAppliedRevision")
        if applied:
            self.progress.success(f"components are managed by Flux (last applied revision {applied}); skipping install")
            return
        kfile = posixpath.join(self._flux_dir(), "kustomization.yaml")
        if repo.read_file(kfile) is not None:
            custom = load_objects(repo.read_file(kfile).decode())
            if custom and set(custom[0]) - {"apiVersion", "kind", "resources"}:
                self.progress.warning(
                    f"{kfile} has patches or transformers; the components are installed unpatched and "
                    "kustomize-controller applies the patches once it syncs"
                )
        self.progress.action(f"installing components in \"{self.opts.namespace}\" namespace")
        changes = self.cluster.apply(load_objects(manifest.content))
        self.result.changes.extend(changes)
        self.result.components_installed = True
        self.progress.success("installed components")
        self.progress.success("reconciled components")

    def reconcile_source_secret(self) -> None:
        name = f"{self.opts.namespace}/{self.opts.secret_name}"
        self.progress.action(f"determining if source secret \"{name}\" exists")
        self.progress.action("generating source secret")
        data = sourcesecret.string_data(username=self.opts.username, password=self.credentials.password, bearer_token=self.credentials.bearer_token)
        self.progress.action("applying source secret")
        change = self.cluster.reconcile_secret(self.opts.namespace, self.opts.secret_name, data)
        self.result.changes.append(change)
        self.progress.success(f"reconciled source secret ({change.action})")

    def reconcile_sync(self, attempts: int = 3) -> None:
        from .git import NonFastForward

        for attempt in range(1, attempts + 1):
            try:
                self._write_sync()
                break
            except NonFastForward:
                if attempt == attempts:
                    raise
                self.progress.warning("the branch moved while pushing; cloning again")
                self._clone()
        self.progress.action("applying sync manifests")
        gitrepository, kustomization_obj = sync.objects(self.opts.sync_options())
        self.result.changes.extend(self.cluster.apply([gitrepository, kustomization_obj]))
        self.progress.success("reconciled sync configuration")

    def _write_sync(self) -> None:
        repo = self._repo
        self.progress.action("generating sync manifests")
        manifest = sync.generate(self.opts.sync_options())
        repo.write_file(manifest.path, manifest.content.encode())
        folder = self._flux_dir()
        names = set(repo.list_dir(folder))
        if not names & set(kustomization.KUSTOMIZATION_FILE_NAMES):

            def list_dir(rel: str):
                full = posixpath.join(folder, rel) if rel else folder
                out = []
                for name in repo.list_dir(full):
                    path = posixpath.join(full, name)
                    out.append((name, repo.read_file(path) is None))
                return out

            def read(rel: str) -> bytes:
                return repo.read_file(posixpath.join(folder, rel)) or b""

            kfile = kustomization.generate(folder, list_dir, read)
            repo.write_file(kfile.path, kfile.content.encode())
        self.progress.success("generated sync manifests")
        self._commit_and_push("Add Flux sync manifests", "sync manifests")

    def report_health(self) -> None:
        """Flux's health checks (bootstrap.go ``ReportGitRepoHealth``/``ReportKustomizationHealth``):
        Ready=True with the pushed revision is healthy, Ready=False fails, anything else is pending
        until ``timeout`` (seconds) runs out."""
        head = self._repo.head() if self._repo else None
        self.result.head = head
        expected = f"{self.opts.branch}@sha1:{head}" if head else None
        deadline = self._clock() + self.opts.timeout
        health: dict = {}
        for kind, api, revision_field in (
            ("GitRepository", SOURCE_API, ("artifact", "revision")),
            ("Kustomization", KUSTOMIZE_API, ("lastAttemptedRevision",)),
        ):
            self.progress.waiting(f"waiting for {kind} \"{self.opts.namespace}/{self.opts.namespace}\" to be reconciled")
            while True:
                state = self._object_health(api, kind, revision_field, expected)
                if state["status"] != "pending" or self._clock() >= deadline:
                    break
                self._sleep(min(2.0, max(0.0, deadline - self._clock())))
            health[kind] = state
            if state["status"] == "ready":
                self.progress.success(f"{kind} reconciled successfully")
            elif state["status"] == "failed":
                self.progress.failure(f"{kind}: {state['message']}")
            else:
                self.progress.warning(f"{kind} not reconciled yet: {state['message']}")
        self.result.health = health

    def _object_health(self, api: str, kind: str, revision_field: tuple[str, ...], expected: str | None) -> dict:
        obj = self.cluster.get(api, kind, self.opts.namespace, self.opts.namespace) or {}
        if obj.get("spec", {}).get("suspend"):
            return {"status": "failed", "message": f"{kind} is suspended"}
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj.get("metadata", {}).get("generation"):
            return {"status": "pending", "message": "waiting for the controller to observe the latest generation"}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if not ready or ready.get("status") == "Unknown":
            return {"status": "pending", "message": (ready or {}).get("message") or "no Ready condition yet"}
        if ready.get("status") == "False":
            return {"status": "failed", "message": ready.get("message", "")}
        revision = status
        for key in revision_field:
            revision = (revision or {}).get(key) if isinstance(revision, dict) else None
        revision = _normalize_revision(revision)
        if expected and revision != expected:
            return {"status": "pending", "message": f"at revision {revision}, waiting for {expected}"}
        return {"status": "ready", "message": ready.get("message", ""), "revision": revision}

    def run(self) -> BootstrapResult:
        """All steps in order. Raises shared.errors types; partial results stay in ``result``."""
        try:
            self.preflight()
            self.reconcile_components()
            self.reconcile_source_secret()
            self.reconcile_sync()
            self.report_health()
            return self.result
        finally:
            self._close_repo()

    def _close_repo(self) -> None:
        if self._repo is not None:
            self._repo.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _normalize_revision(revision: str | None) -> str | None:
    """Legacy ``main/<sha>`` becomes ``main@sha1:<sha>`` (fluxcd/pkg git revision format)."""
    if not revision or "@" in revision or "/" not in revision:
        return revision
    branch, _, sha = revision.rpartition("/")
    return f"{branch}@sha1:{sha}"


def prepare(opts: BootstrapOptions, *, manifests: str | None = None, ca_file: str | None = None, insecure_http: bool = False):
    """Validate ``opts`` and load the distribution (pure with respect to repo and cluster).

    ``manifests`` overrides the distribution source (else ``FLUX_MANIFESTS`` or the default
    OCI artifact of ``opts.version``, defaulting to :data:`shared.flux.DEFAULT_VERSION`)."""
    from .flux import DEFAULT_VERSION
    import os

    opts.validate()
    version = opts.version
    if version is None and not (manifests or os.environ.get("FLUX_MANIFESTS")):
        version = DEFAULT_VERSION
    dist = flux_distribution.load(manifests, version, ca_file=ca_file, insecure_http=insecure_http)
    install.generate(dist, opts.install_options())  # raises InvalidInput for unknown/missing components
    return dist


def options_from_request(body: object) -> tuple[BootstrapOptions, dict]:
    """Decode the JSON body of ``POST /api/bootstrap``.

    Fields mirror ``flux bootstrap git`` flags in camelCase: ``url`` (required), ``branch``,
    ``path``, ``interval``, ``version``, ``components``, ``componentsExtra``, ``namespace``,
    ``secretName``, ``username``, ``tokenAuth``, ``withBearerToken``, ``allowInsecureHttp``, ``authorName``,
    ``authorEmail``, ``commitMessageAppendix``, ``registry``, ``networkPolicy``,
    ``watchAllNamespaces``, ``logLevel``, ``clusterDomain``, ``timeout``, ``force``. Credentials are named,
    never sent: ``passwordSecret`` (Key Vault secret holding the PAT, required unless
    ``withBearerToken``, where the Function's managed identity gets an Entra ID token for Azure
    DevOps instead, as ``flux bootstrap git --with-bearer-token`` sends a token) and
    ``kubeconfigSecret`` (Key Vault secret holding the cluster's kubeconfig, required), optional
    ``context``, and ``clusterName``, the cluster's name in the registry that credential rotation
    walks (default: the last segment of ``path``, else ``kubeconfigSecret``). Returns the options and
    ``{"passwordSecret", "kubeconfigSecret", "context", "clusterName"}``.

    Raises InvalidInput naming the first bad field; unknown fields are errors too."""
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    for forbidden in ("password", "token", "pat", "bearerToken", "kubeconfig"):
        if forbidden in body:
            raise InvalidInput(forbidden, "credentials are never sent in the request; name the Key Vault secret instead (passwordSecret, kubeconfigSecret)")
    spec: dict[str, tuple[type, object]] = {
        "url": (str, None), "branch": (str, "main"), "path": (str, ""), "interval": (str, "1m"),
        "version": (str, None), "components": (list, None), "componentsExtra": (list, []),
        "namespace": (str, DEFAULT_NAMESPACE), "secretName": (str, DEFAULT_NAMESPACE),
        "username": (str, "git"), "tokenAuth": (bool, True), "withBearerToken": (bool, False),
        "allowInsecureHttp": (bool, False),
        "authorName": (str, "Flux"), "authorEmail": (str, ""), "commitMessageAppendix": (str, ""),
        "registry": (str, DEFAULT_REGISTRY), "networkPolicy": (bool, True), "watchAllNamespaces": (bool, True),
        "logLevel": (str, "info"), "clusterDomain": (str, "cluster.local"), "timeout": (str, "0s"),
        "passwordSecret": (str, None), "kubeconfigSecret": (str, None), "context": (str, None),
        "clusterName": (str, None), "force": (bool, False),
    }
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise InvalidInput(unknown[0], "unknown field")
    values = {}
    for name, (typ, default) in spec.items():
        value = body.get(name, default)
        if value is not None and not isinstance(value, typ):
            raise InvalidInput(name, f"must be a {'string' if typ is str else 'boolean' if typ is bool else 'list of strings'}")
        values[name] = value
    bearer = values["withBearerToken"]
    if bearer and values["passwordSecret"]:
        raise InvalidInput("passwordSecret", "is not used with withBearerToken (the Function's managed identity gets the token)")
    for required in ("url", "kubeconfigSecret") + (() if bearer else ("passwordSecret",)):
        if not values[required]:
            raise InvalidInput(required, "is required")
    timeout = 0.0 if values["timeout"] in ("0", "0s") else parse_duration(values["timeout"], "timeout") / 1e9
    opts = BootstrapOptions(
        url=values["url"],
        branch=values["branch"],
        path=normalize_path(values["path"]),
        interval=normalize_duration(values["interval"], "interval"),
        version=values["version"],
        components=tuple(values["components"]) if values["components"] is not None else DEFAULT_COMPONENTS,
        components_extra=tuple(values["componentsExtra"]),
        namespace=values["namespace"],
        secret_name=values["secretName"],
        username=values["username"],
        token_auth=values["tokenAuth"] or bearer,
        with_bearer_token=bearer,
        allow_insecure_http=values["allowInsecureHttp"],
        author_name=values["authorName"],
        author_email=values["authorEmail"],
        commit_message_appendix=values["commitMessageAppendix"],
        registry=values["registry"],
        network_policy=values["networkPolicy"],
        watch_all_namespaces=values["watchAllNamespaces"],
        log_level=values["logLevel"],
        cluster_domain=values["clusterDomain"],
        timeout=timeout,
        force=values["force"],
    ).validate()
    cluster_name = values["clusterName"] or (opts.path.rsplit("/", 1)[-1] if opts.path else values["kubeconfigSecret"])
    refs = {
        "passwordSecret": values["passwordSecret"],
        "kubeconfigSecret": values["kubeconfigSecret"],
        "context": values["context"],
        "clusterName": cluster_name,
    }
    return opts, refs


__all__ = [
    "BootstrapOptions",
    "BootstrapResult",
    "Bootstrapper",
    "Credentials",
    "Progress",
    "options_from_request",
    "prepare",
]
