"""HTTP trigger ``POST /api/bootstrap``: ``flux bootstrap git --token-auth`` as a service.

The body mirrors the flags (see :func:`shared.bootstrap.options_from_request`); the PAT is read
from Key Vault by name; the cluster is named by its AKS resource ID (reached through ARM with the
Function's managed identity) or by the Key Vault secret holding its kubeconfig. Answers 200 with what was committed and
applied, 400 with ``{"error": {"code", "field", "message"}}`` for bad input (nothing touched),
and the status of the typed error otherwise (404 missing repository or branch, 409 conflicting
sync path or Flux managed by another tool, 500 a missing app setting, 502 a peer refused our
credentials or failed, or a health check failed after the push). The whole run is bounded by
:data:`shared.bootstrap.HTTP_BUDGET_SECONDS` so the answer comes within Azure's 230 s.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions._auth import operation_auth_level, require_operator
from functions._http import error_response, json_response, read_json

bp = func.Blueprint()
log = logging.getLogger("functions.bootstrap")


def _error(status: int, code: str, message: str, field: str | None = None, run=None) -> func.HttpResponse:
    """``{"error": {"code", "message"[, "field"]}}``; when the bootstrap had started (``run``, a
    :class:`shared.bootstrap.Bootstrapper`), also what it did before failing: ``commits`` pushed
    and the progress ``log``, so a caller knows what a re-run will find."""
    extra: dict = {}
    if run is not None:
        run.progress.failure(message)
        extra["commits"] = [{"sha": c.sha, "message": c.message} for c in run.result.commits]
        extra["log"] = run.result.log
    return error_response(status, code, message, field, **extra)


def _entra_token() -> str:
    """An Entra ID access token of the Function's managed identity for Azure DevOps."""
    from shared import services
    from shared.bootstrap import AZURE_DEVOPS_SCOPE
    from shared.errors import AuthenticationFailed

    try:
        token = services.credential().get_token(AZURE_DEVOPS_SCOPE).token
    except Exception as exc:  # azure-identity raises several types; none carries a token
        raise AuthenticationFailed(f"cannot get an Entra ID token for Azure DevOps: {type(exc).__name__}") from None
    if not token:
        raise AuthenticationFailed("the Entra ID token for Azure DevOps is empty")
    return token


def _register(opts, refs) -> dict:
    """Register the cluster for credential rotation. The bootstrap has succeeded by now, so a
    registry failure is reported in the response and logged, not turned into a failed request."""
    from shared import services
    from shared.errors import FluxOpsError
    from shared.rotation.registry import register_from_bootstrap

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
            registry=services.registry(),
        )
    except FluxOpsError as exc:
        log.error("cluster %s not registered for rotation: %s", refs["clusterName"], exc)
        return {"status": "failed", "cluster": refs["clusterName"], "message": str(exc)}
    return {"status": "registered", "cluster": record.name}


@bp.function_name("bootstrap")
@bp.route(route="bootstrap", methods=["POST"], auth_level=operation_auth_level())
def bootstrap(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/bootstrap``: decode and check the body, load the distribution, read the PAT (or
    get an Entra token) and the kubeconfig from Key Vault, then run the bootstrap within
    :data:`shared.bootstrap.HTTP_BUDGET_SECONDS` and register the cluster for rotation."""
    if (denied := require_operator(req)) is not None:
        return denied
    import time

    from shared.errors import FluxOpsError, InvalidInput, NotFound, SettingError
    from shared import bootstrap as runner
    from shared import services
    from shared.clusters import BOOTSTRAP, ClusterAccess

    from shared.trust import GitPolicy, git_credential

    started = time.monotonic()
    cluster = run = None
    try:
        body = read_json(req)
        opts, refs = runner.options_from_request(body)  # shape and allowlists: no call made yet
        GitPolicy.from_settings().check_resolution(refs["destination"], field="url")
        dist = runner.prepare(opts)
        vault = services.keyvault()
        if opts.with_bearer_token:
            credentials = runner.Credentials(bearer_token=_entra_token())
        else:
            try:
                secret = vault.get_secret(refs["passwordSecret"], field="passwordSecret")
            except NotFound as exc:
                raise InvalidInput("passwordSecret", str(exc)) from None
            pat = git_credential(secret, refs["destination"], field="passwordSecret")  # the vault owner's tag
            if not pat:
                raise InvalidInput("passwordSecret", f"Key Vault secret {refs['passwordSecret']!r} is empty")
            credentials = runner.Credentials(password=pat)
        # by resource ID (ARM, the managed identity) or by kubeconfig secret: nothing is written yet
        cluster = ClusterAccess(keyvault=vault).connect(refs["cluster"], purpose=BOOTSTRAP, namespace=opts.namespace)
        deadline = started + runner.HTTP_BUDGET_SECONDS
        run = runner.Bootstrapper(opts, credentials, cluster, dist, deadline=deadline)
        result = run.run()
    except SettingError as exc:
        log.error("bootstrap cannot run: app setting %s", exc)
        return _error(exc.status, exc.code, f"app setting {exc}")
    except InvalidInput as exc:
        log.warning("bootstrap rejected: %s", exc)
        return _error(400, exc.code, str(exc), exc.field)
    except FluxOpsError as exc:
        log.error("bootstrap failed: %s", exc)
        return _error(exc.status, exc.code, str(exc), exc.field, run=run)
    except Exception as exc:  # a bug: answer in the same JSON shape; the traceback goes to the log
        log.error("bootstrap failed unexpectedly (%s)", type(exc).__name__, exc_info=True)
        return _error(500, "InternalError", f"internal error ({type(exc).__name__}); see the Function's log", run=run)
    finally:
        if cluster is not None:
            cluster.close()
    summary = result.summary()
    summary["registry"] = _register(opts, refs)
    failure = result.health_error()
    summary["status"] = "failed" if failure else "succeeded"
    if failure:
        # As the Flux CLI: the files are pushed and applied, but the run failed its health checks.
        summary["error"] = {"code": "HealthCheckFailed", "message": failure}
        log.error("bootstrap health check failed: %s", failure)
        return json_response(summary, 502)
    log.info("bootstrap of %s succeeded in %.1f s: %d commit(s)", opts.sync_url, time.monotonic() - started, len(result.commits))
    return json_response(summary)
