"""One bootstrap request, driven end to end: what ``POST /api/bootstrap`` and the fleet's queue worker
both run, so a cluster is bootstrapped the same way whichever way it was asked for.

:func:`check_request` decodes and checks a request body offline (shape, allowlists, the sync URL's
DNS resolution) and loads the Flux distribution; :func:`run` reads the credentials (the PAT from Key
Vault, checked against its owner's tag, or an Entra ID token of the Function's identity), connects
to the cluster (:class:`shared.clusters.ClusterAccess`: AKS resource ID or kubeconfig secret), runs
:class:`~shared.bootstrap.runner.Bootstrapper` within a deadline and registers the cluster for
rotation with its install options (what a fleet upgrade renders again). Credentials come from Key
Vault or the managed identity only, never from the request.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import AuthenticationFailed, FluxOpsError, InvalidInput, NotFound
from .options import AZURE_DEVOPS_SCOPE, BootstrapOptions, Credentials, options_from_request

log = logging.getLogger(__name__)


@dataclass
class Request:
    """A checked bootstrap request: ``opts`` (validated :class:`BootstrapOptions`), ``refs`` (the
    references :func:`shared.bootstrap.options_from_request` returns: secrets, cluster, registry
    name, git destination) and ``dist`` (the loaded distribution)."""

    opts: BootstrapOptions
    refs: dict
    dist: Any


@dataclass
class Outcome:
    """What :func:`run` did: ``result`` (:class:`~shared.bootstrap.runner.BootstrapResult`), the
    ``registry`` entry (``{"status": "registered"|"failed", "cluster", ["message"]}``) and
    ``summary()``, the JSON of ``POST /api/bootstrap``'s answer."""

    request: Request
    result: Any
    registry: dict = field(default_factory=dict)

    @property
    def failure(self) -> str | None:
        """Flux's health-check aggregate when a check failed (pushed and applied, not healthy)."""
        return self.result.health_error()

    def summary(self) -> dict:
        body = self.result.summary()
        body["registry"] = self.registry
        failure = self.failure
        body["status"] = "failed" if failure else "succeeded"
        if failure:
            body["error"] = {"code": "HealthCheckFailed", "message": failure}
        return body


class RunFailed(Exception):
    """An error raised once the run had started (``error``: a :class:`shared.errors.FluxOpsError`, or
    any other exception for a bug): ``run`` (the :class:`~shared.bootstrap.runner.Bootstrapper`) says
    what it had pushed and logged. ``str()`` is the error's message."""

    def __init__(self, error: BaseException, run=None):
        super().__init__(str(error))
        self.error, self.run = error, run


def check_request(body: object, *, timeout: float | None = None) -> Request:
    """Decode and check ``body`` as :func:`shared.bootstrap.options_from_request` does, check that the
    sync URL's host resolves where ``GIT_ALLOWED_HOSTS`` allows, and load the distribution
    (:func:`shared.bootstrap.prepare`: the version exists, the components render). ``timeout``
    (seconds) replaces the request's health wait (the queue worker's longer one). Nothing is read
    from Key Vault and no cluster is called. Raises ``InvalidInput`` (a field), ``SettingError``,
    ``NotFound``, ``UpstreamError``."""
    from ..trust import GitPolicy
    from .runner import prepare

    opts, refs = options_from_request(body)
    if timeout is not None:
        opts = dataclasses.replace(opts, timeout=timeout)
    GitPolicy.from_settings().check_resolution(refs["destination"], field="url")
    return Request(opts, refs, prepare(opts))


def entra_token() -> str:
    """An Entra ID access token of the Function's managed identity for Azure DevOps."""
    from .. import services

    try:
        token = services.credential().get_token(AZURE_DEVOPS_SCOPE).token
    except Exception as exc:  # azure-identity raises several types; none carries a token
        raise AuthenticationFailed(f"cannot get an Entra ID token for Azure DevOps: {type(exc).__name__}") from None
    if not token:
        raise AuthenticationFailed("the Entra ID token for Azure DevOps is empty")
    return token


def pat(vault, secret_name: str, destination, *, field: str = "passwordSecret") -> str:
    """The PAT in Key Vault secret ``secret_name``, if its owner's tag ``flux-git-url-prefixes``
    covers ``destination`` (:func:`shared.trust.git_credential`). Raises ``InvalidInput(field)`` for a
    missing or empty secret or a tag that does not cover the URL."""
    from ..trust import git_credential

    try:
        secret = vault.get_secret(secret_name, field=field)
    except NotFound as exc:
        raise InvalidInput(field, str(exc)) from None
    value = git_credential(secret, destination, field=field)
    if not value:
        raise InvalidInput(field, f"Key Vault secret {secret_name!r} is empty")
    return value


def _vault_value(vault, name: str | None, field: str, check: Callable[[Any], str]) -> str | None:
    """``check(secret)`` of Key Vault secret ``name``; None when the request does not name one."""
    if not name:
        return None
    try:
        secret = vault.get_secret(name, field=field)
    except NotFound as exc:
        raise InvalidInput(field, str(exc)) from None
    return check(secret)


def credentials(request: Request, vault) -> Credentials:
    """The credentials of ``request``: an Entra ID token (``withBearerToken``) or the PAT; the Git
    server's CA (``caFileSecret``: PEM certificates only, :func:`shared.trust.ca_bundle`); the
    registry credentials (``registryCredsSecret``: ``user:password``, only for a registry its tag
    ``flux-registries`` lists, :func:`shared.trust.registry_credential`). Raises ``InvalidInput``
    naming the field; nothing is sent or written before all of them passed."""
    from ..flux.sourcesecret import parse_registry_creds
    from ..trust import ca_bundle, registry_credential

    refs, opts = request.refs, request.opts
    creds = Credentials(bearer_token=entra_token()) if opts.with_bearer_token else \
        Credentials(password=pat(vault, refs["passwordSecret"], refs["destination"]))
    creds.ca_crt = _vault_value(vault, refs.get("caFileSecret"), "caFileSecret", lambda s: ca_bundle(s, field="caFileSecret"))
    registry = _vault_value(vault, refs.get("registryCredsSecret"), "registryCredsSecret",
                            lambda s: registry_credential(s, opts.registry, field="registryCredsSecret"))
    if registry is not None:
        creds.registry_creds = parse_registry_creds(registry, "registryCredsSecret")
    return creds


def install_record(opts: BootstrapOptions, version: str) -> dict:
    """The install options a registry record keeps (:data:`shared.rotation.registry.INSTALL_FIELDS`):
    what a fleet upgrade needs to render the cluster's gotk-components.yaml again and push it."""
    return {
        "version": version, "branch": opts.branch, "path": opts.path, "interval": opts.interval,
        "components": list(opts.components), "componentsExtra": list(opts.components_extra),
        "registry": opts.registry, "networkPolicy": opts.network_policy,
        "watchAllNamespaces": opts.watch_all_namespaces, "logLevel": opts.log_level,
        "clusterDomain": opts.cluster_domain, "authorName": opts.author_name, "authorEmail": opts.author_email,
        "commitMessageAppendix": opts.commit_message_appendix,
        "tolerationKeys": list(opts.toleration_keys), "imagePullSecret": opts.image_pull_secret,
    }


def register(request: Request, version: str) -> dict:
    """Register the cluster for credential rotation (and fleet upgrades, with its install options).
    The bootstrap has succeeded by now, so a registry failure is returned (and logged), not raised:
    ``{"status": "registered"|"failed", "cluster"[, "message"]}``."""
    from .. import services
    from ..rotation.registry import register_from_bootstrap

    opts, refs = request.opts, request.refs
    try:
        record = register_from_bootstrap(
            name=refs["clusterName"],
            kubeconfig_secret=refs["kubeconfigSecret"],
            cluster_resource_id=refs["clusterResourceId"],
            local_accounts=refs["localAccounts"],
            password_secret=refs["passwordSecret"],
            git_auth="entra-bearer" if opts.with_bearer_token else "pat",
            namespace=opts.namespace,
            secret_name=opts.secret_name,
            username=opts.username,
            context=refs["context"],
            allow_insecure_http=opts.allow_insecure_http,
            git_url=opts.sync_url,
            install=install_record(opts, version),
            registry=services.registry(),
        )
    except FluxOpsError as exc:
        log.error("cluster %s not registered for rotation: %s", refs["clusterName"], exc)
        return {"status": "failed", "cluster": refs["clusterName"], "message": str(exc)}
    return {"status": "registered", "cluster": record.name}


def run(request: Request, *, deadline: float | None = None, progress_sink: Callable[[str], None] | None = None,
        push_attempts: int | None = None, git_lock=None, vault=None, access=None) -> Outcome:
    """Bootstrap the cluster of ``request`` and register it.

    ``deadline`` (a ``time.monotonic()`` value) bounds the run's waits; ``progress_sink`` receives
    Flux's progress lines as they come; ``push_attempts`` overrides
    :attr:`~shared.bootstrap.runner.Bootstrapper.push_attempts` and ``git_lock``
    :attr:`~shared.bootstrap.runner.Bootstrapper.git_lock` (many clusters of one branch);
    ``vault``/``access`` default to :func:`shared.services.keyvault` and a
    :class:`~shared.clusters.ClusterAccess` on it.

    Returns the :class:`Outcome` (a failed health check included: see :attr:`Outcome.failure`).
    Raises :class:`shared.errors.FluxOpsError` before the run starts (credentials, cluster access:
    nothing written yet) and :class:`RunFailed` once it has started."""
    from .. import services
    from ..clusters import BOOTSTRAP, ClusterAccess
    from .runner import Bootstrapper, Progress

    vault = vault or services.keyvault()
    creds = credentials(request, vault)
    access = access or ClusterAccess(keyvault=vault)
    cluster = access.connect(request.refs["cluster"], purpose=BOOTSTRAP, namespace=request.opts.namespace)
    runner = None
    try:
        runner = Bootstrapper(request.opts, creds, cluster, request.dist, deadline=deadline,
                              progress=Progress(sink=progress_sink))
        if push_attempts:
            runner.push_attempts = push_attempts
        runner.git_lock = git_lock
        started = time.monotonic()
        result = runner.run()
    except FluxOpsError as exc:
        raise RunFailed(exc, runner) from None
    except Exception as exc:  # a bug: the caller logs it with its traceback
        raise RunFailed(exc, runner) from exc
    finally:
        cluster.close()
    outcome = Outcome(request, result, register(request, result.version))
    log.info("bootstrap of %s (%s) finished in %.1f s: %d commit(s)%s", request.opts.sync_url, request.opts.path or ".",
             time.monotonic() - started, len(result.commits), "; health check failed" if outcome.failure else "")
    return outcome


__all__ = ["Outcome", "Request", "RunFailed", "check_request", "credentials", "entra_token", "install_record",
           "pat", "register", "run"]
