"""The bootstrap runner: what ``flux bootstrap git`` does, over a git repository and a cluster.

The steps follow fluxcd/flux2 ``pkg/bootstrap/bootstrap.go`` (``Run``) and
``pkg/bootstrap/bootstrap_plain_git.go`` (see ``../shared/docs/flux-bootstrap-spec.md`` §2), with
Flux's progress messages:

1. ``reconcile_components``: clone the branch, write ``<path>/<ns>/gotk-components.yaml``, commit
   ``Add Flux <version> component manifests`` and push when the bytes changed; install the
   components on the cluster unless Kustomization ``<ns>/<ns>`` already has a
   ``lastAppliedRevision`` (Flux then upgrades itself from Git).
2. ``reconcile_source_secret``: create or update the source Secret (``username``/``password``, or
   ``bearerToken``; SSH: ``identity``, ``identity.pub``, ``known_hosts``); none with
   ``sourceProvider: azure`` (workload identity).
3. ``reconcile_sync``: write ``gotk-sync.yaml`` (always) and ``kustomization.yaml`` (when absent,
   or to add the options' patches, :meth:`BootstrapOptions.kustomization_patches`), commit ``Add
   Flux sync manifests`` and push when changed (on a non-fast-forward push: ``git conflict
   detected, retrying with a fresh clone``), apply the GitRepository and Kustomization.
4. ``report_health``: the GitRepository and Kustomization must be Ready at the pushed revision and
   the component Deployments available, waiting up to ``timeout``.

Deliberate differences from the CLI, so that bad input touches nothing and a run fits in an HTTP
request:

* everything that can be checked before the first write is checked first (options, distribution,
  component rendering, cluster reachability, credentials and write access by a server-side dry
  run, the sync path of an existing Kustomization, the git credentials by cloning, and the clone
  itself: no symlink on ``<path>/<namespace>``, a valid user kustomization file, a folder the
  kustomization walk can list; see :meth:`Bootstrapper._check_repository`);
* the sync step applies the two sync objects, not ``kustomize build`` of the folder (no kustomize
  here): extra resources a user lists in ``kustomization.yaml`` are left to kustomize-controller.
  The components and sync objects are applied with the patches of the kustomization file the run
  leaves in the folder (ours and the user's, as far as :mod:`shared.flux.kustomize` applies them;
  the rest is reported, for kustomize-controller to apply once it syncs), as Flux installs
  ``kustomize build`` of an existing kustomization;
* an overall ``deadline`` bounds the waits (Azure answers an HTTP trigger within 230 s);
* with ``workloadIdentity`` and ``federate``, the federated identity credentials are written on the
  user-assigned identity after the first clone's checks and before the first push
  (:class:`shared.bootstrap.workload_identity.Federation`).
"""

from __future__ import annotations

import functools
import logging
import posixpath
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..errors import Conflict, InvalidInput, UpstreamError
from ..flux import Manifest
from ..flux import distribution as flux_distribution
from ..flux import install, kustomization, kustomize, patches, sourcesecret, sync
from ..flux.options import check_supported_version
from .options import BootstrapOptions, Credentials

log = logging.getLogger(__name__)

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
#: Flux's wait for CRDs and Namespaces to become ready (internal/utils/apply.go), seconds.
CRD_WAIT_SECONDS = 60.0
#: Longest a kustomization walk may take, seconds; within a run's deadline, at least WALK_MIN_SECONDS.
WALK_SECONDS = 60.0
WALK_MIN_SECONDS = 5.0


class RunTimedOut(UpstreamError):
    """The run's ``--timeout`` passed (the CLI's deadline, as Flux's context deadline)."""

    code = "Timeout"


@dataclass
class Commit:
    """A commit the run pushed: ``sha`` (40 hex) and the title it was made with."""

    sha: str
    message: str


@dataclass
class BootstrapResult:
    """What the run did: ``commits`` pushed (oldest first), ``head`` (the branch's sha after the
    pushes), ``changes`` (:class:`shared.ports.kube.Change` per object applied), ``health`` (see
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
    #: with ``workloadIdentity``: :meth:`shared.bootstrap.workload_identity.Federation.summary` (and ``sops``)
    workload_identity: dict | None = None

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
            **({"workloadIdentity": self.workload_identity} if self.workload_identity is not None else {}),
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


def load_objects(text: str | bytes, limits=None) -> list:
    """Parse multi-document YAML into objects, skipping empty documents, with the safe loader
    (:mod:`shared.safe_yaml`; ``limits`` default :data:`shared.safe_yaml.DISTRIBUTION`). Raises
    :class:`shared.safe_yaml.YAMLRefused` (callers name the file)."""
    from .. import safe_yaml

    return [doc for doc in safe_yaml.load_all(text, limits or safe_yaml.DISTRIBUTION) if doc]


class _FolderTree:
    """The flux-system folder of a clone as :func:`shared.flux.kustomization.scan` walks it: what
    Flux's secure on-disk file system shows (links resolved only inside the clone, never
    descended into), with ``replaced`` files (name → bytes) read from memory instead of the clone."""

    def __init__(self, repo, folder: str, replaced: dict[str, bytes] | None = None):
        self.repo, self.folder, self.replaced = repo, folder, replaced or {}

    def _path(self, rel: str) -> str:
        return posixpath.join(self.folder, rel) if rel else self.folder

    def entries(self, rel: str):
        found = self.repo.entries(self._path(rel))
        if rel or not self.replaced:
            return found
        names = {name for name, _ in found}  # the files the run writes, as if written already
        return sorted(found + [(name, "file") for name in self.replaced if name not in names])

    def read(self, rel: str) -> bytes:
        from .. import safe_yaml

        if rel in self.replaced:
            return self.replaced[rel]
        path = self._path(rel)
        if self.repo.entry_kind(path) == "other":
            raise Conflict(f"{path} is not a regular file")
        data = self.repo.read_file(path, max_bytes=safe_yaml.REPOSITORY.max_bytes, resolve_links=True)
        return data or b""

    def exists(self, rel: str) -> bool:
        from ..ports.git import SymlinkRefused

        path = self._path(rel)
        kind = self.repo.entry_kind(path)
        if kind != "symlink":
            return kind is not None
        try:
            self.repo.resolve(path)
        except SymlinkRefused:
            return False
        return True


@dataclass(frozen=True)
class KustomizationPlan:
    """The flux-system kustomization file as this run leaves it (see
    :meth:`Bootstrapper._plan_kustomization`): ``path`` (repository path), ``text``, ``write``
    (whether the run writes it: a new file, or our patches added to the user's), ``user`` (the
    folder had its own kustomization file) and ``kept`` (:attr:`shared.flux.patches.Merge.kept`)."""

    path: str
    text: str
    write: bool
    user: bool = False
    kept: tuple[str, ...] = ()


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
    ``cluster`` a :class:`shared.ports.kube.Cluster` (not closed here); ``distribution`` a loaded
    :class:`shared.flux.distribution.Distribution` (see :func:`prepare`). ``progress`` receives
    Flux's progress lines; ``workdir`` is where the temporary clone goes (default: the system temp
    folder); ``deadline`` is a ``clock()`` value (monotonic seconds) by which the run should be
    done: waits (CRDs established, health) are cut short to meet it. With ``deadline_is_timeout``
    the deadline is the user's ``--timeout`` for the whole run, as Flux's context: a step that would
    start after it fails the run (:class:`RunTimedOut`) and health checks still pending when it comes
    are failed (``timed out …``) rather than reported pending. ``clock``/``sleep`` are injectable
    for the health polling."""

    #: pushes tried per step when the branch moved meanwhile (a fleet worker pushing many clusters of
    #: one branch at once sets more)
    push_attempts = 3
    #: None, or a callable returning a context manager held around each clone-to-push section (a
    #: fleet worker serialises the pushes to one branch within its process; between processes the
    #: non-fast-forward retries do)
    git_lock = None

    def __init__(self, opts: BootstrapOptions, credentials: Credentials, cluster, distribution, *, progress: Progress | None = None, workdir: str | None = None, deadline: float | None = None, deadline_is_timeout: bool = False, clock=time.monotonic, sleep=time.sleep,
                 federation=None):
        self.opts = opts
        #: the Azure side of workload identity (:class:`shared.bootstrap.workload_identity.Federation`), read
        #: before the run; its federated identity credentials are written after the first clone's checks
        self.federation = federation
        self._federated = False
        self.credentials = credentials
        self.cluster = cluster
        self.dist = distribution
        self.progress = progress or Progress()
        self.workdir = workdir
        self.deadline = deadline
        self.deadline_is_timeout = deadline_is_timeout and deadline is not None
        self._clock = clock
        self._sleep = sleep
        self.components_manifest: Manifest = install.generate(distribution, opts.install_options())
        #: SSH: the host keys scanned by preflight (shared.ports.ssh.HostKey): the one pinned for
        #: clone and push (an ssh:// url) and the sync host's, written to known_hosts.
        self.host_key = None
        self.sync_host_key = None
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
        self._descendants: dict[str, bool] = {}  # revision sha -> contains the head we pushed
        self._existing: dict | None = None
        self._user_kustomization: tuple[str, str] | None = None  # (path, text), see _check_repository
        #: The options' kustomization patches (the seam: BootstrapOptions.kustomization_patches).
        self.patches: list[dict] = opts.kustomization_patches()
        self.kustomization: KustomizationPlan | None = None  # per clone, see _plan_kustomization

    # -- helpers -------------------------------------------------------------------------------
    @functools.cached_property
    def component_objects(self) -> list[dict]:
        """gotk-components.yaml parsed once (the dry run and the install both use it; ~25 ms)."""
        from .. import safe_yaml

        try:
            return load_objects(self.components_manifest.content)
        except safe_yaml.YAMLRefused as exc:
            raise UpstreamError(f"the Flux distribution {self.dist.source} is not usable YAML: {exc}") from None

    def _walk_check(self, folder: str) -> Callable[[str], None]:
        """The ``check`` for one kustomization walk of ``folder``: it raises ``Conflict`` once the walk
        has taken :data:`WALK_SECONDS`, or less when the run's deadline is nearer, but never less than
        :data:`WALK_MIN_SECONDS` (as waits, a slow earlier step does not fail a walk that would take
        milliseconds). A hostile folder cannot hold the run past its deadline by more than that."""
        started = self._clock()
        budget = WALK_SECONDS
        if self.deadline is not None:
            budget = max(WALK_MIN_SECONDS, min(WALK_SECONDS, self.deadline - started))

        def check(where: str) -> None:
            if self._clock() - started > budget:
                raise Conflict(f"listing {folder} for kustomization.yaml took more than {budget:.0f} s (at {where}); "
                               "the folder is too large to list: add a kustomization.yaml of your own")

        return check

    def _remaining(self, wanted: float) -> float:
        """``wanted`` seconds, or less when the deadline is nearer (never below 1 s)."""
        if self.deadline is None:
            return wanted
        return max(1.0, min(wanted, self.deadline - self._clock()))

    def _git_auth(self):
        """The run's GitAuth; every git request it makes is capped at the run's deadline (the port
        reads ``time.monotonic()``: with an injected ``clock`` the port gets no deadline)."""
        import dataclasses

        auth = git_auth(self.opts, self.credentials, self.host_key)
        if self.deadline is None or self._clock is not time.monotonic:
            return auth
        return dataclasses.replace(auth, deadline=self.deadline)

    def _source_secret_data(self) -> dict[str, str]:
        """The source Secret's ``stringData`` (:func:`shared.flux.sourcesecret.string_data`): the PAT
        or bearer token, or for SSH the key pair, its passphrase and the sync host's key line."""
        if self.opts.ssh:
            key = self.credentials.ssh_key
            return sourcesecret.string_data(identity=key.private_key, identity_pub=key.public_key,
                                            known_hosts=self.sync_host_key.known_hosts,
                                            password=self.credentials.ssh_passphrase, ca_crt=self.credentials.ca_crt)
        return sourcesecret.string_data(username=self.opts.username, password=self.credentials.password,
                                        bearer_token=self.credentials.bearer_token, ca_crt=self.credentials.ca_crt)

    def _image_pull_secret(self) -> dict | None:
        """The docker-registry Secret of ``--registry-creds`` (None without them)."""
        if not (self.credentials.registry_creds and self.opts.image_pull_secret):
            return None
        user, password = self.credentials.registry_creds
        return sourcesecret.image_pull_secret(name=self.opts.image_pull_secret, namespace=self.opts.namespace,
                                              registry=self.opts.registry, username=user, password=password)

    def _check_deadline(self, step: str) -> None:
        """With ``deadline_is_timeout``: fail before ``step`` once the run's timeout has passed."""
        if self.deadline_is_timeout and self._clock() >= self.deadline:
            raise RunTimedOut(f"timed out before {step}: the run took longer than --timeout; what was pushed and "
                              "applied stays, a re-run with a longer --timeout picks up from there")

    def _scan_host_keys(self) -> None:
        """SSH: :func:`scan_host_keys` (the sync host's key for ``known_hosts``, the key pinned for
        clone and push, checked against the source Secret's ``known_hosts``)."""
        self.sync_host_key, self.host_key = scan_host_keys(self.opts, self.cluster, self.progress)

    def _clone(self, *, quiet: bool = False):
        from ..ports.git import Repository

        self._close_repo()
        self._tmp = tempfile.TemporaryDirectory(prefix="flux-bootstrap-", dir=self.workdir)
        if not quiet:
            self.progress.action(f"cloning branch \"{self.opts.branch}\" from Git repository \"{self.opts.git_url}\"")
        repo = Repository.clone(self.opts.git_url, self.opts.branch, self._git_auth(), self._tmp.name, allow_insecure_http=self.opts.allow_insecure_http)
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
        self.progress.action(f"pushing {what} to \"{self.opts.git_url}\"")
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

        Raises Conflict, AuthenticationFailed, UpstreamError, ApplyError (shared.ports.kube)."""
        self.progress.action("checking cluster access")
        self._confirm_takeover()
        self._existing = self._existing_kustomization()
        self._check_sync_path(self._existing)
        if self.opts.ssh:
            self._scan_host_keys()
        # Everything the run will write, as far as the cluster can check it now (objects whose
        # Namespace or CRD is still to be created are skipped by dry_run_apply).
        planned = list(self.component_objects) if self._must_install() else []
        if self._uses_source_secret():
            planned.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": self.opts.secret_name, "namespace": self.opts.namespace},
                            "stringData": self._source_secret_data()})
        pull_secret = self._image_pull_secret()
        if pull_secret is not None:
            planned.append(pull_secret)
        planned.extend(sync.objects(self.opts.sync_options()))
        if self.patches:  # ours; a user's kustomization is known once cloned
            planned = kustomize.apply(planned, self.patches).objects
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

    def _check_repository(self) -> None:
        """Check the clone (:meth:`_check_clone`), then plan the kustomization file the run leaves
        in the folder (:meth:`_plan_kustomization`, into :attr:`kustomization`); both before
        anything is written, so a file the patches cannot be merged into fails before the first
        push. Raises Conflict (409) naming the path."""
        self._user_kustomization = None
        self._check_clone()
        self.kustomization = self._plan_kustomization()

    def _check_clone(self) -> None:
        """What the clone must be before anything is written to it (409 ``Conflict`` naming the
        path otherwise; the clone is untrusted content):

        * no component of ``<path>/<namespace>`` is a symlink or a file, and
          ``gotk-components.yaml``/``gotk-sync.yaml`` there are not symlinks or folders (writes do
          not follow symlinks either, see :meth:`shared.ports.git.Repository.write_file`);
        * an existing kustomization file (any of :data:`~shared.flux.kustomization.KUSTOMIZATION_FILE_NAMES`)
          is a regular file of valid YAML within :data:`shared.safe_yaml.REPOSITORY`: it is read here,
          so a broken one is found before the first push, not after (otherwise the walk of
          :meth:`_plan_kustomization` checks the folder: symlinks Flux fails on, files over the
          limits, too many entries, the run's deadline)."""
        from .. import safe_yaml
        from ..ports.git import SymlinkRefused

        repo = self._repo
        folder = self._flux_dir()
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            kind = repo.entry_kind(prefix)
            if kind is None:
                return  # nothing there yet: nothing to check
            if kind == "symlink":
                raise SymlinkRefused(prefix)
            if kind != "dir":
                raise Conflict(f"{prefix} is a file, not a folder; nothing was written")
        entries = dict(repo.entries(folder))
        written = (posixpath.basename(self.components_manifest.path),
                   posixpath.basename(sync.generate(self.opts.sync_options()).path))
        for name in written:
            kind = entries.get(name)
            if kind == "symlink":
                raise SymlinkRefused(posixpath.join(folder, name))
            if kind not in (None, "file"):
                raise Conflict(f"{posixpath.join(folder, name)} is not a regular file; nothing was written")
        kname = next((n for n in kustomization.KUSTOMIZATION_FILE_NAMES if n in entries), None)
        if kname is not None:
            kfile = posixpath.join(folder, kname)
            text = repo.read_file(kfile, max_bytes=safe_yaml.REPOSITORY.max_bytes)  # refuses a symlink
            if text is None:
                raise Conflict(f"{kfile} is not a regular file; nothing was written")
            try:
                load_objects(text, safe_yaml.REPOSITORY)
            except safe_yaml.YAMLRefused as exc:
                raise Conflict(f"{kfile} is not valid YAML ({exc}); fix it before bootstrapping, nothing was written") from None
            try:
                self._user_kustomization = (kfile, text.decode("utf-8"))
            except UnicodeDecodeError:
                raise Conflict(f"{kfile} is not UTF-8 text; fix it before bootstrapping, nothing was written") from None
            return
        # The walk of a folder without a kustomization file (symlinks Flux fails on, files over the
        # limits, too many entries, the deadline) is _plan_kustomization's.

    def _plan_kustomization(self) -> KustomizationPlan:
        """The kustomization file of ``<path>/<namespace>`` as the sync step will leave it, from
        the clone as :meth:`_check_clone` found it:

        * the folder has a kustomization file of its own: kept, with :attr:`patches` added or
          updated in it (:func:`shared.flux.patches.update`: every other byte kept; ``write`` only
          when that changed the text);
        * otherwise ``kustomization.yaml`` as Flux generates it (the folder's resources, the two
          files the run writes included), followed by :attr:`patches`
          (:func:`shared.flux.patches.render`; with no patches, Flux's bytes).

        Raises Conflict naming the file when the patches cannot be merged into it."""
        from ..errors import InvalidInput

        folder = self._flux_dir()
        if self._user_kustomization is not None:
            kfile, text = self._user_kustomization
            if not self.patches:
                return KustomizationPlan(kfile, text, write=False, user=True)
            try:
                merge = patches.update(text, self.patches, field=kfile)
            except InvalidInput as exc:
                raise Conflict(f"{kfile}: {exc.message}; nothing was written") from None
            return KustomizationPlan(kfile, merge.text, write=merge.changed, user=True, kept=merge.kept)
        written = {posixpath.basename(self.components_manifest.path): b"",
                   posixpath.basename(sync.generate(self.opts.sync_options()).path): b""}
        resources = kustomization.scan(_FolderTree(self._repo, folder, written), where=folder, check=self._walk_check(folder))
        return KustomizationPlan(posixpath.join(folder, kustomization.KUSTOMIZATION_FILE), patches.render(resources, self.patches), write=True)

    def _patched(self, objects: list, *, report: bool = False) -> list:
        """``objects`` with the patches of the planned kustomization file applied, as kustomize
        would (:func:`shared.flux.kustomize.apply_kustomization`); unchanged when there are none.
        With ``report``, what is left to kustomize-controller (other patch forms, fields such as
        ``images``) is reported as warnings. Raises Conflict naming the file where kustomize would
        fail (an ``add`` whose parent path is missing)."""
        from ..errors import InvalidInput

        plan = self.kustomization
        if plan is None or not (plan.user or self.patches):
            return objects
        try:
            result = kustomize.apply_kustomization(objects, plan.text, field=plan.path)
        except InvalidInput as exc:
            raise Conflict(f"{plan.path}: {exc.field}: {exc.message}; kustomize would fail on it, nothing was written") from None
        if report:
            for line in result.not_applied:
                self.progress.warning(f"{plan.path}: {line}; installed without it, kustomize-controller applies it once it syncs")
        return result.objects

    def reconcile_components(self) -> None:
        """Flux's ``ReconcileComponents``: clone, write and commit gotk-components.yaml, push, and
        install the components unless Flux already applies them from Git. A non-fast-forward push
        (another cluster of the same branch pushed first) is retried with a fresh clone, as the sync
        step does, at most :attr:`push_attempts` times."""
        from ..ports.git import NonFastForward

        with self._git_section():
            self._clone()
            self._check_repository()
            self._federate()
            for attempt in range(1, self.push_attempts + 1):
                # planned from this clone, before its push (kustomize errors are found before any write)
                install_objects = self._patched(self.component_objects, report=attempt == 1) if self._must_install() else None
                try:
                    self._write_components()
                    break
                except NonFastForward:
                    if attempt == self.push_attempts:
                        raise
                    self._conflict_retry(attempt)

        if install_objects is not None:
            self.progress.action(f"installing components in \"{self.opts.namespace}\" namespace")
            changes = self.cluster.apply(install_objects, wait_timeout=self._remaining(CRD_WAIT_SECONDS))
            self.result.changes.extend(changes)
            self.result.components_installed = True
            self.progress.success("installed components")
        pull_secret = self._image_pull_secret()
        if pull_secret is not None:  # after the install, which creates the namespace (pkg/bootstrap/bootstrap_plain_git.go)
            self.progress.action(f"reconciling image pull secret {self.opts.image_pull_secret}")
            data = pull_secret["stringData"]
            self.result.changes.append(self.cluster.reconcile_secret(self.opts.namespace, self.opts.image_pull_secret, data,
                                                                     secret_type=sourcesecret.DOCKER_CONFIG_TYPE))
            self.progress.success(f"reconciled image pull secret {self.opts.image_pull_secret}")
        self.progress.success("reconciled components")

    def _uses_source_secret(self) -> bool:
        """Whether the GitRepository reads a source Secret (not with ``sourceProvider: azure``)."""
        return self.opts.source_provider != "azure"

    def _federate(self) -> None:
        """With ``workloadIdentity``: write the federated identity credentials (once, after the first clone's
        checks, before the first push, so the controllers can sign in as soon as they start)."""
        if self.federation is not None and not self._federated:
            self.federation.apply(self.progress)
            self._federated = True

    def _write_components(self) -> None:
        self.progress.action("generating component manifests")
        manifest = self.components_manifest
        self._repo.write_file(manifest.path, manifest.content.encode())
        self.progress.success("generated component manifests")
        self._commit_and_push(f"Add Flux {self.dist.version} component manifests", "component manifests")

    def _git_section(self):
        import contextlib

        return self.git_lock() if self.git_lock is not None else contextlib.nullcontext()

    def _conflict_retry(self, attempt: int) -> None:
        """After a non-fast-forward push: a pause (random, growing with ``attempt``, so clusters of one
        branch pushing together do not collide again in step), a fresh clone and its checks."""
        import random

        self.progress.waiting("git conflict detected, retrying with a fresh clone")
        if self.git_lock is None or attempt > 1:  # under the lock the first retry cannot meet a local push
            self._sleep(random.uniform(0, 0.2 * attempt))
        self._clone(quiet=True)
        self._check_repository()

    def reconcile_source_secret(self) -> None:
        """Flux's ``ReconcileSourceSecret``: the Secret always carries the credential (a PAT, a
        bearer token, or an SSH key pair with the scanned ``known_hosts``), so it is created or
        updated (keys not written here survive, as in Flux; a leftover ``bearerToken`` next to a
        new PAT, or a leftover ``password`` next to an SSH key without passphrase, is reported as a
        warning). SSH: the public key is printed, as Flux prints it. With ``sourceProvider: azure``
        there is none: nothing is written, and a Secret left by an earlier bootstrap (a PAT the
        GitRepository no longer reads) is reported as a warning."""
        key = f"{self.opts.namespace}/{self.opts.secret_name}"
        if not self._uses_source_secret():
            self.progress.success("no source secret: the GitRepository signs in with workload identity (provider azure)")
            if self.cluster.read_secret_data(self.opts.namespace, self.opts.secret_name) is not None:
                self.progress.warning(f"source secret \"{key}\" is left from an earlier bootstrap and no longer used; "
                                      f"delete it (kubectl -n {self.opts.namespace} delete secret {self.opts.secret_name})")
            return
        self.progress.action(f"determining if source secret \"{key}\" exists")
        self.progress.action("generating source secret")
        data = self._source_secret_data()
        if self.opts.ssh:
            self.progress.success(f"public key: {data[sourcesecret.PUBLIC_KEY].strip()}")
            current = self.cluster.read_secret_data(self.opts.namespace, self.opts.secret_name) or {}
            if "password" in current and "password" not in data:  # source-controller: the key's passphrase
                self.progress.warning(
                    f"source secret \"{key}\" also holds key password, which source-controller takes as the SSH key's "
                    "passphrase; delete that key"
                )
        elif "bearerToken" not in data:
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

    def reconcile_sync(self, attempts: int | None = None) -> None:
        """Flux's ``ReconcileSyncConfig``: write gotk-sync.yaml and (when absent)
        kustomization.yaml, commit and push; on a non-fast-forward push re-clone and redo the step
        (sync path check included), at most ``attempts`` (default :attr:`push_attempts`) times; then
        apply the sync objects."""
        from ..ports.git import NonFastForward

        attempts = attempts or self.push_attempts
        with self._git_section():
            for attempt in range(1, attempts + 1):
                try:
                    self._write_sync()
                    break
                except NonFastForward:
                    if attempt == attempts:
                        raise
                    self._conflict_retry(attempt)
                    self._check_sync_path(self._existing_kustomization())
        self.progress.action("applying sync manifests")
        objects = self._patched(list(sync.objects(self.opts.sync_options())))
        self.result.changes.extend(self.cluster.apply(objects, wait_timeout=self._remaining(CRD_WAIT_SECONDS)))
        self.progress.success("reconciled sync configuration")

    def _write_sync(self) -> None:
        repo = self._repo
        self.progress.action("generating sync manifests")
        manifest = sync.generate(self.opts.sync_options())
        repo.write_file(manifest.path, manifest.content.encode())
        # Planned from this clone before its first write (_check_repository). Flux looks for
        # kustomization.yaml only and would add one next to a kustomization.yml, which kustomize
        # then refuses ("Found multiple kustomization files"): any recognised name counts here.
        plan = self.kustomization
        if plan.write:
            repo.write_file(plan.path, plan.text.encode())
        for line in plan.kept:
            self.progress.warning(f"{plan.path}: kept {line}, which also patches what ours does; kustomize applies both, in file order")
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
        cut_short = self.deadline is not None and self.deadline < deadline and not self.deadline_is_timeout
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
        if expected and revision != expected and not self._later_revision(revision):
            return {"status": "pending", "message": f"at revision {revision}, waiting for {expected}"}
        return {"status": "ready", "message": ready.get("message", ""), "revision": revision}

    def _later_revision(self, revision: str | None) -> bool:
        """Whether ``revision`` (``<branch>@sha1:<sha>``) is a later commit of the branch that contains
        the one pushed: another push (a cluster of the same branch, a person) came after ours and the
        controller reports that one. Each revision is asked of git once."""
        branch, _, sha = (revision or "").partition("@sha1:")
        if branch != self.opts.branch or not sha or not self.result.head or self._repo is None:
            return False
        known = self._descendants.get(sha)
        if known is None:
            from ..errors import FluxOpsError

            try:
                known = self._repo.is_ancestor(self.result.head, sha)
            except FluxOpsError as exc:  # asked again at the next poll
                log.warning("cannot tell whether %s contains %s: %s", revision, self.result.head, exc)
                return False
            self._descendants[sha] = known
        return known

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
        failure stays in ``result``. The temporary clone is removed either way. A git request the
        ``--timeout`` deadline cut short (:class:`shared.errors.DeadlineExceeded`: git, Kubernetes) is
        :class:`RunTimedOut`."""
        from ..errors import DeadlineExceeded

        try:
            for step, name in ((self.preflight, "checking the cluster"), (self.reconcile_components, "the components"),
                               (self.reconcile_source_secret, "the source secret"), (self.reconcile_sync, "the sync manifests"),
                               (self.report_health, "the health checks")):
                if step == self.report_health:
                    self._report_workload_identity()  # what was written, before the waits
                self._check_deadline(name)
                try:
                    step()
                except DeadlineExceeded as exc:  # a request cut short by the run's deadline
                    if not self.deadline_is_timeout:
                        raise
                    raise RunTimedOut(f"timed out ({name}): {exc}: the run took longer than --timeout; what was "
                                      "pushed and applied stays, a re-run with a longer --timeout picks up from there") from None
            return self.result
        finally:
            self._close_repo()

    def _report_workload_identity(self) -> None:
        """``result.workload_identity``: per controller its identity, federated credential and patches; SOPS."""
        if self.federation is None and self.opts.sops_provider is None:
            return
        plan = self.kustomization
        summary = self.federation.summary(plan.path if plan else None) if self.federation is not None else {}
        if self.opts.sops_provider is not None:
            summary["sops"] = {"provider": self.opts.sops_provider,
                               "patch": {"target": f"Kustomization/{self.opts.namespace}",
                                         "decryption": {"provider": "sops"}}}
        self.result.workload_identity = summary

    def _close_repo(self) -> None:
        if self._repo is not None:
            self._repo.close()
        self._repo = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def git_auth(opts: BootstrapOptions, credentials: Credentials, host_key=None):
    """The :class:`shared.ports.git.GitAuth` a run clones and pushes ``opts.git_url`` with: over SSH
    (an ``ssh://`` url) the key of ``credentials`` and the pinned ``host_key``
    (:func:`scan_host_keys`), offering :attr:`BootstrapOptions.hostkey_algos`; else the PAT or the
    bearer token, with the Git server's CA."""
    from ..ports.git import GitAuth

    if opts.git_url.startswith("ssh://"):
        import paramiko

        from ..ports.ssh import SSHIdentity

        identity = SSHIdentity(pkey=paramiko.RSAKey(key=credentials.ssh_key.key), host_key=host_key,
                               algos=opts.hostkey_algos)
        return GitAuth(username=opts.username, ssh=identity)
    return GitAuth(username=opts.username, password=credentials.password, bearer_token=credentials.bearer_token,
                   ca_pem=credentials.ca_crt)


def scan_host_keys(opts: BootstrapOptions, cluster, progress: Progress | None = None):
    """SSH: the host key of the sync URL's server (for ``known_hosts``) and of the URL pushed to
    (pinned for clone and push; the same scan when it is the same server), offering only
    :attr:`BootstrapOptions.hostkey_algos`, as Flux's ``ScanHostKey``; then
    :func:`check_known_host` against ``cluster``'s source Secret. Returns ``(sync host key, pinned
    key or None for an https url)`` (:class:`shared.ports.ssh.HostKey`). Raises
    :class:`HostKeyChanged` (409), and the scan's errors."""
    from ..ports.ssh import fingerprint, scan_host_key
    from ..trust import GitPolicy, parse_git_url

    progress = progress or Progress()
    policy = GitPolicy.from_settings()
    algos = opts.hostkey_algos
    sync_url = parse_git_url(opts.sync_url, "url")
    field = "sshHostname" if opts.ssh_hostname else "url"
    targets = [(sync_url.host, sync_url.effective_port, field)]
    git_url = parse_git_url(opts.git_url, "url")
    if git_url.scheme == "ssh" and (git_url.host, git_url.effective_port) != targets[0][:2]:
        targets.append((git_url.host, git_url.effective_port, "url"))
    keys = []
    for host, port, where in targets:
        progress.action(f"scanning the SSH host key of {host}:{port}" + (f" ({','.join(algos)})" if algos else ""))
        keys.append(scan_host_key(host, port, algos, policy=policy, field=where))
        progress.success(f"host key {keys[-1].key_type} {fingerprint(keys[-1].key)}")
    check_known_host(opts, cluster, keys[0], progress)
    return keys[0], (keys[-1] if git_url.scheme == "ssh" else None)


def check_known_host(opts: BootstrapOptions, cluster, scanned, progress: Progress | None = None) -> None:
    """A host key that changed since the last run: the existing source Secret's ``known_hosts``
    pins another key for the sync host than ``scanned``. :class:`HostKeyChanged` (409) unless
    ``opts.force``, which pins the new one (a warning says so)."""
    from ..flux.sourcesecret import KNOWN_HOSTS, known_host_keys
    from ..ports.ssh import fingerprint

    current = cluster.read_secret_data(opts.namespace, opts.secret_name) or {}
    pinned = known_host_keys(current.get(KNOWN_HOSTS, ""), scanned.host, scanned.port)
    if not pinned or (scanned.key_type, scanned.key) in pinned:
        return
    where = f"{scanned.host}:{scanned.port}"
    message = (f"the SSH host key of {where} changed: source secret \"{opts.namespace}/{opts.secret_name}\" pins "
               f"{', '.join(f'{t} {fingerprint(k)}' for t, k in pinned)}, the server now presents "
               f"{scanned.key_type} {fingerprint(scanned.key)}")
    if not opts.force:
        raise HostKeyChanged(f"{message}; if the server's key was replaced on purpose, set force to pin the new key; "
                             "nothing was written")
    (progress or Progress()).warning(f"{message}; pinning the new key (force)")


class HostKeyChanged(Conflict):
    """The SSH server's host key is not the one the source Secret's ``known_hosts`` pins (409)."""


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


def prepare(opts: BootstrapOptions, *, manifests: str | None = None, ca_file: str | None = None, insecure_http: bool = False,
            distribution=None):
    """Validate ``opts`` and load the distribution; touches neither repository nor cluster.

    ``manifests`` overrides the distribution source (else ``FLUX_MANIFESTS``, else the default OCI
    artifact of ``opts.version``, which defaults to :data:`shared.flux.DEFAULT_VERSION`); a
    ``distribution`` already loaded is checked instead. Renders the components once, so unknown or
    missing components fail here. Returns the :class:`~shared.flux.distribution.Distribution`.

    Raises InvalidInput (a field, including ``version`` for a release that does not exist or
    predates v2.0.0), NotFound (a named ``manifests`` source is missing), UpstreamError."""
    opts.validate()
    dist = distribution or flux_distribution.load(manifests, opts.version, ca_file=ca_file, insecure_http=insecure_http)
    if distribution is not None and opts.version not in (None, "latest") and dist.version != opts.version:
        raise InvalidInput("version", f"requested {opts.version} but the distribution {dist.source} is {dist.version}")
    check_supported_version(dist.version)
    if opts.source_provider == "azure":  # the distribution's version, also when none was asked for
        from .workload_identity import check_version

        check_version(dist.version)
    install.generate(dist, opts.install_options())  # raises InvalidInput for unknown/missing components
    return dist

