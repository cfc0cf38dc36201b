"""HTTP trigger ``POST /api/bootstrap``: ``flux bootstrap git --token-auth`` as a service.

The body mirrors the flags (see :func:`shared.bootstrap.options_from_request`); the PAT and the
cluster's kubeconfig are read from Key Vault by name. Answers 200 with what was committed and
applied, 400 with ``{"error": {"code", "field", "message"}}`` for bad input (nothing touched),
and the status of the typed error otherwise (404 missing branch, 409 conflicting sync path,
502 a peer refused our credentials or failed, or a health check failed after the push).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("functions.bootstrap")


def _error(status: int, code: str, message: str, field: str | None = None) -> func.HttpResponse:
    body = {"error": {"code": code, "message": message}}
    if field:
        body["error"]["field"] = field
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


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
    from shared.errors import FluxOpsError
    from shared.registry import register_from_bootstrap

    try:
        record = register_from_bootstrap(
            name=refs["clusterName"],
            kubeconfig_secret=refs["kubeconfigSecret"],
            password_secret=refs["passwordSecret"],
            git_auth="entra-bearer" if opts.with_bearer_token else "pat",
            namespace=opts.namespace,
            secret_name=opts.secret_name,
            username=opts.username,
            context=refs["context"],
            allow_insecure_http=opts.allow_insecure_http,
        )
    except FluxOpsError as exc:
        log.error("cluster %s not registered for rotation: %s", refs["clusterName"], exc)
        return {"status": "failed", "cluster": refs["clusterName"], "message": str(exc)}
    return {"status": "registered", "cluster": record.name}


@bp.function_name("bootstrap")
@bp.route(route="bootstrap", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def bootstrap(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import FluxOpsError, InvalidInput, NotFound, SettingError
    from shared import bootstrap as runner
    from shared import services

    try:
        body = req.get_json()
    except ValueError:
        return _error(400, "InvalidInput", "body: must be a JSON object", "body")
    try:
        opts, refs = runner.options_from_request(body)
        dist = runner.prepare(opts)
        vault = services.keyvault()
        if opts.with_bearer_token:
            credentials = runner.Credentials(bearer_token=_entra_token())
        else:
            try:
                pat = vault.get_secret(refs["passwordSecret"], field="passwordSecret").value
            except NotFound as exc:
                raise InvalidInput("passwordSecret", str(exc)) from None
            if not pat:
                raise InvalidInput("passwordSecret", f"Key Vault secret {refs['passwordSecret']!r} is empty")
            credentials = runner.Credentials(password=pat)
        try:
            kubeconfig = vault.get_secret(refs["kubeconfigSecret"], field="kubeconfigSecret").value
        except NotFound as exc:
            raise InvalidInput("kubeconfigSecret", str(exc)) from None
        try:
            cluster = services.cluster_from_kubeconfig(kubeconfig, refs["context"])
        except InvalidInput as exc:
            raise InvalidInput("kubeconfigSecret", exc.message) from None
        result = runner.Bootstrapper(opts, credentials, cluster, dist).run()
    except SettingError as exc:
        log.error("bootstrap cannot run: app setting %s", exc)
        return _error(exc.status, exc.code, f"app setting {exc}")
    except InvalidInput as exc:
        log.warning("bootstrap rejected: %s", exc)
        return _error(400, exc.code, str(exc), exc.field)
    except FluxOpsError as exc:
        log.error("bootstrap failed: %s", exc)
        return _error(exc.status, exc.code, str(exc))
    summary = result.summary()
    summary["registry"] = _register(opts, refs)
    failed = [k for k, v in summary["health"].items() if v.get("status") == "failed"]
    summary["status"] = "failed" if failed else "succeeded"
    if failed:
        # As the Flux CLI: the files are pushed and applied, but the run failed its health checks.
        summary["error"] = {
            "code": "HealthCheckFailed",
            "message": f"bootstrap failed with {len(failed)} health check failure(s): "
            + "; ".join(f"{k}: {summary['health'][k]['message']}" for k in failed),
        }
        log.error("bootstrap health check failed: %s", summary["error"]["message"])
        return func.HttpResponse(json.dumps(summary), status_code=502, mimetype="application/json")
    log.info("bootstrap of %s succeeded: %d commit(s)", opts.sync_url, len(result.commits))
    return func.HttpResponse(json.dumps(summary), status_code=200, mimetype="application/json")
