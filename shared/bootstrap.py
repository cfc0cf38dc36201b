"""The bootstrap runner: what ``flux bootstrap git`` does, over a git repository and a cluster.

The steps follow fluxcd/flux2 ``pkg/bootstrap/bootstrap.go`` (``Run``) and
``pkg/bootstrap/bootstrap_plain_git.go`` (see ``../shared/docs/flux-bootstrap-spec.md`` §2), with
Flux's progress messages:

1. ``reconcile_components``: clone the branch, write ``<path>/<ns>/gotk-components.yaml``, commit
   ``Add Flux <version> component manifests`` and push when the bytes changed; install the
   components on the cluster unless Kustomization ``<ns>/<ns>`` already has a
   ``lastAppliedRevision`` (Flux then upgrades itself from Git).
2. ``reconcile_source_secret``: create or update the source Secret (``username``/``password``, or
   ``bearerToken``).
3. ``reconcile_sync``: write ``gotk-sync.yaml`` (always) and ``kustomization.yaml`` (only when
   absent), commit ``Add Flux sync manifests`` and push when changed (on a non-fast-forward push:
   ``git conflict detected, retrying with a fresh clone``), apply the GitRepository and
   Kustomization.
4. ``report_health``: the GitRepository and Kustomization must be Ready at the pushed revision and
   the component Deployments available, waiting up to ``timeout``.

Deliberate differences from the CLI, so that bad input touches nothing and a run fits in an HTTP
request:

* everything that can be checked before the first write is checked first (options, distribution,
  component rendering, cluster reachability, credentials and write access by a server-side dry
  run, the sync path of an existing Kustomization, the git credentials by cloning);
* the sync step applies the two sync objects, not ``kustomize build`` of the folder (no kustomize
  here): extra resources a user lists in ``kustomization.yaml`` are left to kustomize-controller;
* an overall ``deadline`` bounds the waits (Azure answers an HTTP trigger within 230 s).
"""

from __future__ import annotations

import functools
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
    DNS1123_SUBDOMAIN,
    check_supported_version,
    normalize_interval,
    normalize_path,
    parse_timeout,
    sync_url,
    validate_branch,
    validate_dns_label,
    validate_version,
)

log = logging.getLogger(__name__)

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
#: Azure Functions HTTP responses must come back within 230 s; keep health waits well inside.
MAX_TIMEOUT_SECONDS = 150
#: Seconds an HTTP-triggered bootstrap may run in all (the 230 s limit less a margin for the
#: response and the registry write).
HTTP_BUDGET_SECONDS = 200
#: Flux's wait for CRDs and Namespaces to become ready (internal/utils/apply.go), seconds.
CRD_WAIT_SECONDS = 60.0
#: Entra ID scope of Azure DevOps (its well-known application id), for ``withBearerToken``.
AZURE_DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"


@dataclass(frozen=True)
class BootstrapOptions:
    """Options of one bootstrap; names mirror ``flux bootstrap git`` flags, defaults are Flux's.

    ``url`` is ``--url`` as given (https, or http with ``allow_insecure_http``); ``path`` is
    normalised (``./clusters/x`` or ``""``, see :func:`shared.flux.options.normalize_path`);
    ``interval`` is in Flux's print form (``1m0s``); ``timeout`` is in seconds: how long
    :meth:`Bootstrapper.report_health` waits for the sync objects and components (0 = check once,
    and pending is then not a failure). :meth:`validate` checks them."""

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
        """The GitRepository URL (token auth: https, no user info), also the URL cloned and pushed."""
        return sync_url(self.url, token_auth=self.token_auth, allow_insecure_http=self.allow_insecure_http)

    @property
    def author(self) -> str:
        """``Name <email>``; ``Flux <>`` by default, as ``--author-name``/``--author-email``."""
        return f"{self.author_name} <{self.author_email}>"

    def install_options(self) -> install.InstallOptions:
        """The options that shape gotk-components.yaml."""
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
        """The options of gotk-sync.yaml: objects named after the namespace, as Flux names them."""
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
        """``title``, plus ``"\\n\\n" + appendix`` with ``--commit-message-appendix``."""
        return title + ("\n\n" + self.commit_message_appendix if self.commit_message_appendix else "")

    def validate(self) -> "BootstrapOptions":
        """Check every option that can be checked offline; raises InvalidInput naming the field
        (request spelling). Returns ``self``."""
        validate_branch(self.branch)
        if self.version is not None:
            validate_version(self.version)
        self.install_options().validate()
        if not self.token_auth:
            raise InvalidInput("tokenAuth", "only token auth (a PAT from Key Vault, or withBearerToken) is supported; set tokenAuth to true")
        if not isinstance(self.username, str) or not self.username or any(c in self.username for c in ":\r\n"):
            raise InvalidInput("username", "must be a non-empty user name without ':' or line breaks")
        if not isinstance(self.secret_name, str) or len(self.secret_name) > 253 or not DNS1123_SUBDOMAIN.match(self.secret_name):
            raise InvalidInput("secretName", f"{self.secret_name!r} is not a valid Secret name (DNS-1123 subdomain)")
        _ = self.sync_url  # scheme, host and password checks
        if self.url.strip().lower().startswith("ssh://"):
            raise InvalidInput("url", "ssh:// needs SSH auth, which is not supported; give the https:// URL of the repository")
        normalize_interval(self.interval)
        if not isinstance(self.timeout, (int, float)) or self.timeout < 0:
            raise InvalidInput("timeout", "must be zero or more")
        for fld, value, bad in (("authorName", self.author_name, "<>\r\n\x00"), ("authorEmail", self.author_email, "<>\r\n\x00")):
            if not isinstance(value, str) or any(c in value for c in bad):
                raise InvalidInput(fld, "must not contain '<', '>' or line breaks")
        if not isinstance(self.commit_message_appendix, str) or "\x00" in self.commit_message_appendix:
            raise InvalidInput("commitMessageAppendix", "must be text")
        return self


@dataclass
class Credentials:
    """Git credentials for token auth: the PAT (``password``) or an Entra ID ``bearer_token``."""

    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)


@dataclass
class Commit:
    """A commit the run pushed: ``sha`` (40 hex) and the title it was made with."""

    sha: str
    message: str


@dataclass
class BootstrapResult:
    """What the run did: ``commits`` pushed (oldest first), ``head`` (the branch's sha after the
    pushes), ``changes`` (:class:`shared.kube.Change` per object applied), ``health`` (see
    :meth:`Bootstrapper.report_health`) and ``log`` (the progress lines)."""

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

    def health_error(self) -> str | None:
        """Flux's aggregate, ``bootstrap failed with N health check failure(s): …``, when a health
        check failed; else None."""
        failed = [(k, v) for k, v in self.health.items() if v.get("status") == "failed"]
        if not failed:
            return None
        return f"bootstrap failed with {len(failed)} health check failure(s): " + "; ".join(f"{k}: {v['message']}" for k, v in failed)

    def summary(self) -> dict:
        """JSON-ready dict for the HTTP response: ``repository`` (url, branch, path, head, commits),
        ``flux`` (version, components), ``cluster`` (componentsInstalled, created/configured/
        unchanged counts, ``changes`` lines such as ``Secret/flux-system/flux-system created``),
        ``health`` (per check: status ``ready``/``pending``/``failed``, message) and ``log``."""
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
    """Flux's comparison form of a Kustomization path (pkg/bootstrap/bootstrap.go
    ``kustomizationPathDiffers``): one trailing ``/`` dropped unless the path is that short, then
    ``./`` in front of what follows a leading ``./``."""
    value = value or ""
    if len(value) > 2 and value.endswith("/"):
        value = value[:-1]
    return "./" + (value[2:] if value.startswith("./") else value)


class Bootstrapper:
    """Runs one bootstrap (:meth:`run`).

    ``opts`` are validated :class:`BootstrapOptions`; ``credentials`` the PAT or bearer token;
    ``cluster`` a :class:`shared.kube.Cluster` (not closed here); ``distribution`` a loaded
    :class:`shared.flux.distribution.Distribution` (see :func:`prepare`). ``progress`` receives
    Flux's progress lines; ``workdir`` is where the temporary clone goes (default: the system temp
    folder); ``deadline`` is a ``clock()`` value (monotonic seconds) by which the run should be
    done: waits (CRDs established, health) are cut short to meet it. ``clock``/``sleep`` are
    injectable for the health polling."""

    def __init__(self, opts: BootstrapOptions, credentials: Credentials, cluster, distribution, *, progress: Progress | None = None, workdir: str | None = None, deadline: float | None = None, clock=time.monotonic, sleep=time.sleep):
        self.opts = opts
        self.credentials = credentials
        self.cluster = cluster
        self.dist = distribution
        self.progress = progress or Progress()
        self.workdir = workdir
        self.deadline = deadline
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
        self._existing: dict | None = None

    # -- helpers -------------------------------------------------------------------------------
    @functools.cached_property
    def component_objects(self) -> list[dict]:
        """gotk-components.yaml parsed once (the dry run and the install both use it; ~25 ms)."""
        return load_objects(self.components_manifest.content)

    def _remaining(self, wanted: float) -> float:
        """``wanted`` seconds, or less when the deadline is nearer (never below 1 s)."""
        if self.deadline is None:
            return wanted
        return max(1.0, min(wanted, self.deadline - self._clock()))

    def _git_auth(self):
        from .git import GitAuth

        return GitAuth(username=self.opts.username, password=self.credentials.password, bearer_token=self.credentials.bearer_token)

    def _clone(self, *, quiet: bool = False):
        from .git import Repository

        self._close_repo()
        self._tmp = tempfile.TemporaryDirectory(prefix="flux-bootstrap-", dir=self.workdir)
        if not quiet:
            self.progress.action(f"cloning branch \"{self.opts.branch}\" from Git repository \"{self.opts.sync_url}\"")
        repo = Repository.clone(self.opts.sync_url, self.opts.branch, self._git_auth(), self._tmp.name, allow_insecure_http=self.opts.allow_insecure_http)
        if not quiet:
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
        """Kustomization ``<ns>/<ns>``, or None (absent, or its CRD is not installed)."""
        return self.cluster.get(KUSTOMIZE_API, "Kustomization", self.opts.namespace, self.opts.namespace)

    def _check_sync_path(self, existing: dict | None) -> None:
        """Flux's step 17: an existing Kustomization must sync the same path (Conflict otherwise,
        with Flux's message)."""
        if not existing:
            return
        current = (existing.get("spec") or {}).get("path") or ""
        if _normalize_sync_path(current) != _normalize_sync_path(self.opts.path):
            raise Conflict(
                f"sync path configuration (\"{self.opts.path}\") would overwrite path (\"{current}\") of existing Kustomization"
            )

    def _must_install(self) -> bool:
        """``mustInstallManifests``: no Kustomization ``<ns>/<ns>``, or no ``lastAppliedRevision``."""
        return not ((self._existing or {}).get("status") or {}).get("lastAppliedRevision")

    # -- steps ---------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Checks that need the cluster but write nothing: Flux there is not managed by another tool
        (unless ``force``), an existing Kustomization does not sync another path (Flux's step 17,
        done before any commit), and the cluster accepts what the run will write (the components
        when they are to be installed, the source Secret, the sync objects) in a server-side dry run
        (``dryRun=All``: credentials, RBAC, schemas), as far as it can check them yet.

        Raises Conflict, AuthenticationFailed, UpstreamError, ApplyError (shared.kube)."""
        self.progress.action("checking cluster access")
        self._confirm_takeover()
        self._existing = self._existing_kustomization()
        self._check_sync_path(self._existing)
        # Everything the run will write, as far as the cluster can check it now (objects whose
        # Namespace or CRD is still to be created are skipped by dry_run_apply).
        planned = list(self.component_objects) if self._must_install() else []
        planned.append(sourcesecret.generate(name=self.opts.secret_name, namespace=self.opts.namespace, username=self.opts.username,
                                             password=self.credentials.password, bearer_token=self.credentials.bearer_token))
        planned.extend(sync.objects(self.opts.sync_options()))
        self.cluster.dry_run_apply(planned)
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
        """Flux's ``ReconcileComponents``: clone, write and commit gotk-components.yaml, push, and
        install the components unless Flux already applies them from Git."""
        repo = self._clone()
        self.progress.action("generating component manifests")
        manifest = self.components_manifest
        repo.write_file(manifest.path, manifest.content.encode())
        self.progress.success("generated component manifests")
        self._commit_and_push(f"Add Flux {self.dist.version} component manifests", "component manifests")

        if self._must_install():
            kfile = posixpath.join(self._flux_dir(), kustomization.KUSTOMIZATION_FILE)
            text = repo.read_file(kfile)
            if text is not None:
                custom = load_objects(text.decode("utf-8", "replace"))
                if custom and isinstance(custom[0], dict) and set(custom[0]) - {"apiVersion", "kind", "resources"}:
                    self.progress.warning(
                        f"{kfile} has patches or transformers; the components are installed unpatched and "
                        "kustomize-controller applies the patches once it syncs"
                    )
            self.progress.action(f"installing components in \"{self.opts.namespace}\" namespace")
            changes = self.cluster.apply(self.component_objects, wait_timeout=self._remaining(CRD_WAIT_SECONDS))
            self.result.changes.extend(changes)
            self.result.components_installed = True
            self.progress.success("installed components")
        self.progress.success("reconciled components")

    def reconcile_source_secret(self) -> None:
        """Flux's ``ReconcileSourceSecret`` for token auth: the Secret always carries the
        credential, so it is created or updated (keys not written here survive, as in Flux; a
        leftover ``bearerToken`` next to a new PAT is reported as a warning)."""
        key = f"{self.opts.namespace}/{self.opts.secret_name}"
        self.progress.action(f"determining if source secret \"{key}\" exists")
        self.progress.action("generating source secret")
        data = sourcesecret.string_data(username=self.opts.username, password=self.credentials.password, bearer_token=self.credentials.bearer_token)
        if "bearerToken" not in data:
            current = self.cluster.read_secret_data(self.opts.namespace, self.opts.secret_name) or {}
            if "bearerToken" in current:  # kept by the update, as in Flux, and used before the PAT
                self.progress.warning(
                    f"source secret \"{key}\" also holds key bearerToken, which source-controller uses instead of "
                    "username/password; delete that key"
                )
        self.progress.action(f"applying source secret \"{key}\"")
        change = self.cluster.reconcile_secret(self.opts.namespace, self.opts.secret_name, data)
        self.result.changes.append(change)
        self.progress.success("reconciled source secret")

    def reconcile_sync(self, attempts: int = 3) -> None:
        """Flux's ``ReconcileSyncConfig``: write gotk-sync.yaml and (when absent)
        kustomization.yaml, commit and push; on a non-fast-forward push re-clone and redo the step
        (sync path check included), at most ``attempts`` times; then apply the sync objects."""
        from .git import NonFastForward

        for attempt in range(1, attempts + 1):
            try:
                self._write_sync()
                break
            except NonFastForward:
                if attempt == attempts:
                    raise
                self.progress.waiting("git conflict detected, retrying with a fresh clone")
                self._clone(quiet=True)
                self._check_sync_path(self._existing_kustomization())
        self.progress.action("applying sync manifests")
        gitrepository, kustomization_obj = sync.objects(self.opts.sync_options())
        self.result.changes.extend(self.cluster.apply([gitrepository, kustomization_obj], wait_timeout=self._remaining(CRD_WAIT_SECONDS)))
        self.progress.success("reconciled sync configuration")

    def _write_sync(self) -> None:
        repo = self._repo
        self.progress.action("generating sync manifests")
        manifest = sync.generate(self.opts.sync_options())
        repo.write_file(manifest.path, manifest.content.encode())
        folder = self._flux_dir()
        # Flux looks for kustomization.yaml only and would add one next to a kustomization.yml,
        # which kustomize then refuses ("Found multiple kustomization files"): any recognised
        # name counts here.
        if not set(repo.list_dir(folder)) & set(kustomization.KUSTOMIZATION_FILE_NAMES):

            def list_dir(rel: str):
                full = posixpath.join(folder, rel) if rel else folder
                return [(name, (repo.path / full / name).is_dir()) for name in repo.list_dir(full)]

            def read(rel: str) -> bytes:
                return repo.read_file(posixpath.join(folder, rel)) or b""

            kfile = kustomization.generate(folder, list_dir, read)
            repo.write_file(kfile.path, kfile.content.encode())
        self.progress.success("generated sync manifests")
        self._commit_and_push("Add Flux sync manifests", "sync manifests")

    def report_health(self) -> None:
        """Flux's health checks (bootstrap.go ``ReportGitRepoHealth``, ``ReportKustomizationHealth``,
        ``ReportComponentsHealth``), polled every 2 s within one wait of ``timeout`` seconds:

        * GitRepository and Kustomization ``<ns>/<ns>``: Ready=True at ``<branch>@sha1:<HEAD>``
          (``status.artifact.revision``, ``status.lastAttemptedRevision``) is ``ready``; suspended
          or Ready=False is ``failed`` at once; anything else is ``pending``;
        * the components' Deployments: ``ready`` when available as kstatus judges it (all
          replicas updated, ready and available), ``failed`` on ``ProgressDeadlineExceeded``.

        With ``timeout`` 0 each is checked once and ``pending`` stays ``pending``. With a timeout,
        still ``pending`` when it runs out is ``failed`` (``timed out …``), as in Flux, unless the
        run's ``deadline`` cut the wait short. Results go to ``result.health``."""
        head = self._repo.head() if self._repo else None
        self.result.head = head
        expected = f"{self.opts.branch}@sha1:{head}" if head else None
        start = self._clock()
        deadline = start + self.opts.timeout
        cut_short = self.deadline is not None and self.deadline < deadline
        if cut_short:
            deadline = max(start, self.deadline)
        key = f"{self.opts.namespace}/{self.opts.namespace}"
        checks = (
            ("GitRepository", f"waiting for GitRepository \"{key}\" to be reconciled",
             lambda: self._object_health(SOURCE_API, "GitRepository", ("artifact", "revision"), expected),
             "GitRepository reconciled successfully"),
            ("Kustomization", f"waiting for Kustomization \"{key}\" to be reconciled",
             lambda: self._object_health(KUSTOMIZE_API, "Kustomization", ("lastAttemptedRevision",), expected),
             "Kustomization reconciled successfully"),
            ("components", "confirming components are healthy", self._components_health, "all components are healthy"),
        )
        health: dict = {}
        for name, start_line, check, ok_line in checks:
            (self.progress.action if name == "components" else self.progress.waiting)(start_line)
            while True:
                state = check()
                if state["status"] != "pending" or self._clock() >= deadline:
                    break
                self._sleep(min(2.0, max(0.0, deadline - self._clock())))
            if state["status"] == "pending" and self.opts.timeout > 0:
                if cut_short:
                    state["message"] += " (stopped waiting to answer within the HTTP time limit)"
                else:
                    state = {**state, "status": "failed", "message": f"timed out waiting for {name}: {state['message']}"}
            health[name] = state
            if state["status"] == "ready":
                self.progress.success(ok_line)
            elif state["status"] == "failed":
                self.progress.failure(f"{name}: {state['message']}")
            else:
                self.progress.warning(f"{name} not reconciled yet: {state['message']}")
        self.result.health = health

    def _object_health(self, api: str, kind: str, revision_field: tuple[str, ...], expected: str | None) -> dict:
        """Flux's ``objectReconciled`` for one object, as ``{"status", "message"[, "revision"]}``."""
        obj = self.cluster.get(api, kind, self.opts.namespace, self.opts.namespace)
        if obj is None:
            return {"status": "pending", "message": f"{kind} '{self.opts.namespace}/{self.opts.namespace}' not found"}
        if (obj.get("spec") or {}).get("suspend"):
            return {"status": "failed", "message": f"{kind} '{self.opts.namespace}/{self.opts.namespace}' is suspended"}
        status = obj.get("status") or {}
        if "observedGeneration" in status and status["observedGeneration"] != (obj.get("metadata") or {}).get("generation"):
            return {"status": "pending", "message": "waiting for the controller to observe the latest generation"}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if not ready or ready.get("status") not in ("True", "False"):
            return {"status": "pending", "message": (ready or {}).get("message") or "no Ready condition yet"}
        if ready.get("status") == "False":
            return {"status": "failed", "message": ready.get("message", "")}
        revision = status
        for key in revision_field:
            revision = revision.get(key) if isinstance(revision, dict) else None
        revision = _normalize_revision(revision)
        if expected and revision != expected:
            return {"status": "pending", "message": f"at revision {revision}, waiting for {expected}"}
        return {"status": "ready", "message": ready.get("message", ""), "revision": revision}

    def _components_health(self) -> dict:
        """kstatus of Deployment ``<ns>/<component>`` for every selected component."""
        states = {}
        for name in self.result.components:
            obj = self.cluster.get("apps/v1", "Deployment", name, self.opts.namespace)
            states[name] = _deployment_status(obj)
        failed = {n: m for n, (s, m) in states.items() if s == "failed"}
        pending = {n: m for n, (s, m) in states.items() if s == "pending"}
        if failed:
            return {"status": "failed", "message": "; ".join(f"Deployment/{self.opts.namespace}/{n}: {m}" for n, m in failed.items())}
        if pending:
            return {"status": "pending", "message": "; ".join(f"Deployment/{self.opts.namespace}/{n}: {m}" for n, m in pending.items())}
        return {"status": "ready", "message": f"{len(states)} Deployments available"}

    def run(self) -> BootstrapResult:
        """All steps in order: :meth:`preflight`, :meth:`reconcile_components`,
        :meth:`reconcile_source_secret`, :meth:`reconcile_sync`, :meth:`report_health`.

        Returns the result (a failed health check is in ``result.health``, see
        :meth:`BootstrapResult.health_error`). Raises shared.errors types; what was done before a
        failure stays in ``result``. The temporary clone is removed either way."""
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
        self._repo = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _deployment_status(obj: dict | None) -> tuple[str, str]:
    """kstatus (sigs.k8s.io/cli-utils ``kstatus/status/core.go`` ``deploymentConditions``) of a
    Deployment as ``(status, message)``: ``ready`` (Current), ``pending`` (InProgress, NotFound) or
    ``failed`` (``ProgressDeadlineExceeded``)."""
    if obj is None:
        return "pending", "not found"
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if observed is not None and observed != generation:
        return "pending", f"Deployment generation is {generation}, but latest observed generation is {observed}"
    progressing = spec.get("progressDeadlineSeconds") == 2**31 - 1
    available = False
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing":
            if c.get("reason") == "ProgressDeadlineExceeded":
                return "failed", "Progress deadline exceeded"
            if c.get("status") == "True" and c.get("reason") == "NewReplicaSetAvailable":
                progressing = True
        elif c.get("type") == "Available" and c.get("status") == "True":
            available = True
    want = spec.get("replicas", 1)
    have, updated = status.get("replicas", 0), status.get("updatedReplicas", 0)
    ready, avail = status.get("readyReplicas", 0), status.get("availableReplicas", 0)
    if want > have:
        return "pending", f"Replicas: {have}/{want}"
    if want > updated:
        return "pending", f"Updated: {updated}/{want}"
    if have > want:
        return "pending", f"Pending termination: {have - want}"
    if updated > avail:
        return "pending", f"Available: {avail}/{updated}"
    if want > ready:
        return "pending", f"Ready: {ready}/{want}"
    if not progressing:
        return "pending", "ReplicaSet not Available"
    if not available:
        return "pending", "Deployment not Available"
    return "ready", f"Deployment is available. Replicas: {have}"


def _normalize_revision(revision: str | None) -> str | None:
    """Legacy ``main/<sha>`` becomes ``main@sha1:<sha>`` (fluxcd/pkg git revision format)."""
    if not revision or "@" in revision or "/" not in revision:
        return revision
    branch, _, sha = revision.rpartition("/")
    return f"{branch}@sha1:{sha}"


def prepare(opts: BootstrapOptions, *, manifests: str | None = None, ca_file: str | None = None, insecure_http: bool = False):
    """Validate ``opts`` and load the distribution; touches neither repository nor cluster.

    ``manifests`` overrides the distribution source (else ``FLUX_MANIFESTS``, else the default OCI
    artifact of ``opts.version``, which defaults to :data:`shared.flux.DEFAULT_VERSION`). Renders
    the components once, so unknown or missing components fail here. Returns the
    :class:`~shared.flux.distribution.Distribution`.

    Raises InvalidInput (a field, including ``version`` for a release that does not exist or
    predates v2.0.0), NotFound (a named ``manifests`` source is missing), UpstreamError."""
    opts.validate()
    dist = flux_distribution.load(manifests, opts.version, ca_file=ca_file, insecure_http=insecure_http)
    check_supported_version(dist.version)
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
    walks (default: the last segment of ``path``, else ``kubeconfigSecret``; a DNS-1123 label).
    A JSON ``null`` means the default. ``interval`` and ``timeout`` are Go durations (``1m``,
    ``90s``); ``timeout`` is at most 150 s (the whole request must finish within Azure's 230 s).
    Returns the validated options and ``{"passwordSecret", "kubeconfigSecret", "context",
    "clusterName"}``.

    Raises InvalidInput naming the first bad field; unknown fields, and credential values
    (``password``, ``token``, ``pat``, ``bearerToken``, ``kubeconfig``, a password in ``url``), are
    errors too."""
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
        value = body.get(name)
        if value is None:  # absent or JSON null: the default
            value = default
        elif not isinstance(value, typ):
            raise InvalidInput(name, f"must be a {'string' if typ is str else 'boolean' if typ is bool else 'list of strings'}")
        values[name] = value
    bearer = values["withBearerToken"]
    if bearer and values["passwordSecret"]:
        raise InvalidInput("passwordSecret", "is not used with withBearerToken (the Function's managed identity gets the token)")
    for required in ("url", "kubeconfigSecret") + (() if bearer else ("passwordSecret",)):
        if not values[required]:
            raise InvalidInput(required, "is required")
    from .keyvault import validate_secret_name

    for name in ("passwordSecret", "kubeconfigSecret"):
        if values[name] is not None:
            validate_secret_name(values[name], name)
    timeout = parse_timeout(values["timeout"], "timeout")
    if timeout > MAX_TIMEOUT_SECONDS:
        raise InvalidInput("timeout", f"must be at most {MAX_TIMEOUT_SECONDS}s (Azure answers an HTTP request within 230 s)")
    opts = BootstrapOptions(
        url=values["url"],
        branch=values["branch"],
        path=normalize_path(values["path"]),
        interval=normalize_interval(values["interval"], "interval"),
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
    if values["clusterName"] is not None:
        cluster_name = validate_dns_label(values["clusterName"], "clusterName")
    else:
        cluster_name = opts.path.rsplit("/", 1)[-1] if opts.path else values["kubeconfigSecret"]
        try:
            validate_dns_label(cluster_name, "clusterName")
        except InvalidInput:
            raise InvalidInput("clusterName", f"the default, {cluster_name!r} (the last segment of path, else kubeconfigSecret), "
                               "is not a DNS-1123 label; set clusterName") from None
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
