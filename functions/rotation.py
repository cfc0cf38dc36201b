"""Credential rotation (issue #4): the timer, "rotate one cluster now", and the cluster registry.

- ``rotate_credentials``: timer trigger, schedule from app setting ``ROTATION_SCHEDULE`` (NCRONTAB with
  seconds, e.g. ``0 */10 * * * *``); ``run_on_startup`` off as the Functions docs advise; timers are
  singletons (blob lease). Per-cluster failures are logged in the summary and never raised, so the run
  is not retried for them; a registry or app-setting failure is logged and raised (the invocation fails).
- ``rotate_cluster_now``: ``POST /api/rotation/clusters/{name}`` (admin key): 200 with the summary
  (:meth:`shared.rotation.RotationSummary.to_dict`), 502 with the same body when the cluster failed,
  400 (bad name), 404 (not registered), 409 (stored record invalid), 500 (``InvalidSetting``: an app
  setting is missing or invalid), 502 (registry storage failed).
- ``registry_list``: ``GET /api/registry/clusters`` → ``{"clusters": [record, ...]}``, plus
  ``"invalid": [{"name", "error"}, ...]`` when stored rows no longer validate.
- ``registry_cluster``: ``GET|PUT|DELETE /api/registry/clusters/{name}`` (admin key). PUT takes a
  :class:`shared.rotation.registry.ClusterRecord` JSON object (201 created, 200 replaced, also over an invalid
  row); 400 ``{"error": {"code", "field", "message"}}`` for a bad field (``gitUrl`` outside
  ``GIT_ALLOWED_HOSTS`` included, checked before storage is touched); DELETE 204, 404.
Error bodies are ``{"error": {"code", "message"[, "field"]}}`` and never hold credential values.
Routes avoid the host-reserved ``admin`` prefix.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions._auth import operation_auth_level, require_operator
from functions._http import error_response, json_response, read_json

bp = func.Blueprint()
log = logging.getLogger("functions.rotation")


def _error(exc) -> func.HttpResponse:
    return error_response(exc.status, exc.code, str(exc), getattr(exc, "field", None))


@bp.function_name("rotate_credentials")
@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def rotate_credentials(timer: func.TimerRequest) -> None:
    from shared import rotation
    from shared.errors import FluxOpsError

    if timer.past_due:
        log.warning("rotation: the timer is past due; running now")
    try:
        summary = rotation.rotate_all()  # logs the summary
    except FluxOpsError as exc:  # settings or registry: no cluster was touched
        log.error("rotation: run not started: %s", exc)
        raise
    if summary.failed:
        log.warning("rotation: %d of %d cluster(s) failed; they are tried again next run",
                    summary.failed, len(summary.clusters))


@bp.function_name("rotate_cluster_now")
@bp.route(route="rotation/clusters/{name}", methods=["POST"], auth_level=operation_auth_level())
def rotate_cluster_now(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared import rotation
    from shared.errors import FluxOpsError

    try:
        summary = rotation.rotate_cluster(req.route_params.get("name", ""))
    except FluxOpsError as exc:
        return _error(exc)
    return json_response(summary.to_dict(), 502 if summary.failed else 200)


@bp.function_name("registry_list")
@bp.route(route="registry/clusters", methods=["GET"], auth_level=operation_auth_level())
def registry_list(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared import services
    from shared.errors import FluxOpsError

    try:
        records, invalid = services.registry().scan()
    except FluxOpsError as exc:
        return _error(exc)
    body = {"clusters": [r.to_dict() for r in records]}
    if invalid:
        body["invalid"] = [{"name": n, "error": e} for n, e in invalid]
    return json_response(body)


@bp.function_name("registry_cluster")
@bp.route(route="registry/clusters/{name}", methods=["GET", "PUT", "DELETE"], auth_level=operation_auth_level())
def registry_cluster(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared import services
    from shared.errors import FluxOpsError, InvalidInput
    from shared.rotation.registry import ClusterRecord

    name = req.route_params.get("name", "")
    try:
        registry = services.registry()
        if req.method == "GET":
            return json_response(registry.get(name).to_dict())
        if req.method == "DELETE":
            registry.delete(name)
            return func.HttpResponse(status_code=204)
        body = read_json(req)
        if not isinstance(body, dict):
            raise InvalidInput("body", "must be a JSON object")
        if body.get("name", name) != name:
            raise InvalidInput("name", "must match the name in the URL")
        record, created = registry.upsert(ClusterRecord.from_dict({**body, "name": name}).check_policy())
    except FluxOpsError as exc:
        return _error(exc)
    return json_response(record.to_dict(), 201 if created else 200)
