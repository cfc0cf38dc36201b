"""Fleets: asynchronous operations over many clusters, the queue worker, and the fleet's status.

- ``POST /api/fleet/bootstrap``: a bootstrap of many clusters (the shared fields of ``POST
  /api/bootstrap`` plus ``clusters: [{path, kubeconfigSecret | clusterResourceId, ...}]``,
  :func:`shared.fleet.operations.plan_bootstrap`). ``202 Accepted`` with ``Location:
  /api/operations/{id}`` and ``Retry-After``; 400 naming the field (``clusters[3].path``) with nothing
  stored or queued; an ``Idempotency-Key`` header sent again with the same body answers with the same
  operation (422 with another body).
- ``POST /api/fleet/upgrade``: a new Flux ``version`` for registered clusters (names or globs) in
  ``waves``, or a ``dryRun`` giving each cluster's diff (:func:`shared.fleet.upgrade.plan_upgrade`);
  the same answers.
- ``GET /api/operations/{id}``: the operation and each cluster's state, result and error (200; 404);
  ``GET /api/operations``: the newest operations.
- ``GET /api/fleet/status``: per registered cluster, Flux in Git and on the cluster, Ready, revisions,
  suspension, last rotation, PAT expiry, last operation (:mod:`shared.fleet.status`).
- ``GET /api/fleet``: the fleet page (functions/fleet_page.html: no build step) over those two APIs.
- ``fleet_worker``: queue trigger on ``FLEET_QUEUE`` (one cluster per message,
  :func:`shared.fleet.worker.handle`); ``fleet_poison``: its ``-poison`` queue.

Operation endpoints use the operator auth of :mod:`functions._auth`. Error bodies are
``{"error": {"code", "message"[, "field"]}}``.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions._auth import operation_auth_level, require_operator
from functions._http import error_response, json_response, read_json

bp = func.Blueprint()
log = logging.getLogger("functions.fleet")


def _failure(exc) -> func.HttpResponse:
    from shared.errors import FluxOpsError, SettingError

    if isinstance(exc, SettingError):
        log.error("fleet endpoint cannot run: app setting %s", exc)
        return error_response(exc.status, exc.code, f"app setting {exc}")
    if isinstance(exc, FluxOpsError):
        (log.warning if exc.status < 500 else log.error)("fleet request refused: %s", exc)
        return error_response(exc.status, exc.code, str(exc), exc.field)
    log.error("fleet endpoint failed unexpectedly (%s)", type(exc).__name__, exc_info=exc)
    return error_response(500, "InternalError", f"internal error ({type(exc).__name__}); see the Function's log")


def _accepted(submitted) -> func.HttpResponse:
    import json

    from shared.fleet.operations import RETRY_AFTER_SECONDS

    op = submitted.operation
    location = f"/api/operations/{op.id}"
    body = {"id": op.id, "kind": op.kind, "state": op.state, "clusters": op.total, "waves": op.waves,
            "version": op.spec.get("version"), "location": location}
    headers = {"Location": location, "Retry-After": str(RETRY_AFTER_SECONDS)}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return func.HttpResponse(json.dumps(body), status_code=202, mimetype="application/json", headers=headers)


def _submit(req: func.HttpRequest, kind: str, plan) -> func.HttpResponse:
    from shared import services
    from shared.fleet import operations

    try:
        key = operations.check_idempotency_key(req.headers.get("Idempotency-Key"))
        body = read_json(req, max_bytes=operations.MAX_BODY_BYTES)
        submitted = operations.submit(kind, body, plan, store=services.fleet_store(), queue=services.work_queue(),
                                      idempotency_key=key)
    except Exception as exc:  # noqa: BLE001 - every failure answers in the JSON error shape
        return _failure(exc)
    return _accepted(submitted)


@bp.function_name("fleet_bootstrap")
@bp.route(route="fleet/bootstrap", methods=["POST"], auth_level=operation_auth_level())
def fleet_bootstrap(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared.fleet.operations import plan_bootstrap

    return _submit(req, "bootstrap", plan_bootstrap)


@bp.function_name("fleet_upgrade")
@bp.route(route="fleet/upgrade", methods=["POST"], auth_level=operation_auth_level())
def fleet_upgrade(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared.fleet.upgrade import plan_upgrade

    return _submit(req, "upgrade", plan_upgrade)


@bp.function_name("operation_status")
@bp.route(route="operations/{id}", methods=["GET"], auth_level=operation_auth_level())
def operation_status(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared import services
    from shared.fleet import operations

    try:
        body = operations.view(services.fleet_store(), services.work_queue(), req.route_params.get("id", ""))
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)
    resp = json_response(body)
    if body["state"] == "running":
        resp.headers["Retry-After"] = str(operations.RETRY_AFTER_SECONDS)
    return resp


@bp.function_name("operations_list")
@bp.route(route="operations", methods=["GET"], auth_level=operation_auth_level())
def operations_list(req: func.HttpRequest) -> func.HttpResponse:
    if (denied := require_operator(req)) is not None:
        return denied
    from shared import services
    from shared.fleet import operations

    raw = req.params.get("limit") or "20"
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        return error_response(400, "InvalidInput", "limit: must be a whole number from 1 to 200", "limit")
    try:
        return json_response({"operations": operations.recent(services.fleet_store(), int(raw))})
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)


@bp.function_name("fleet_status")
@bp.route(route="fleet/status", methods=["GET"], auth_level=operation_auth_level())
def fleet_status(req: func.HttpRequest) -> func.HttpResponse:
    """Every registered cluster's Flux, from Git and from the cluster (:mod:`shared.fleet.status`);
    ``?names=<glob>`` narrows it."""
    if (denied := require_operator(req)) is not None:
        return denied
    import re

    from shared.fleet.status import fleet_status as read

    names = req.params.get("names") or None
    if names is not None and not re.fullmatch(r"[a-z0-9*?\[\]-]{1,63}", names):
        return error_response(400, "InvalidInput", "names: must be a cluster name or glob (a-z, 0-9, '-', '*', '?')", "names")
    try:
        return json_response(read(names=names))
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)


_PAGE = None


def _page() -> tuple[bytes, str]:
    """The page (functions/fleet_page.html, the app's own file) and its Content-Security-Policy: its
    one inline script and style allowed by hash, everything else only from this origin."""
    global _PAGE
    if _PAGE is None:
        import base64
        import hashlib
        import re
        from pathlib import Path

        text = (Path(__file__).with_name("fleet_page.html")).read_text(encoding="utf-8")

        def sha(tag: str) -> str:
            body = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S).group(1)
            return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"

        csp = (f"default-src 'none'; script-src {sha('script')}; style-src {sha('style')}; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        _PAGE = (text.encode("utf-8"), csp)
    return _PAGE


@bp.function_name("fleet_page")
@bp.route(route="fleet", methods=["GET"], auth_level=operation_auth_level())
def fleet_page(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/fleet``: one HTML page over ``/api/fleet/status`` and ``/api/operations``, behind the
    same operator auth (master key as ``?code=``, which the page sends on as ``x-functions-key``, or
    the Easy Auth session)."""
    if (denied := require_operator(req)) is not None:
        return denied
    body, csp = _page()
    return func.HttpResponse(body, status_code=200, mimetype="text/html", charset="utf-8", headers={
        "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store", "X-Frame-Options": "DENY"})


@bp.function_name("fleet_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%FLEET_QUEUE%", connection="AzureWebJobsStorage")
def fleet_worker(msg: func.QueueMessage) -> None:
    """One work item per message; raising makes the host deliver it again (host.json
    ``extensions.queues``)."""
    from shared.fleet import worker

    worker.handle(msg.get_body(), dequeue_count=msg.dequeue_count or 1, message_id=msg.id or "")


@bp.function_name("fleet_poison")
@bp.queue_trigger(arg_name="msg", queue_name="%FLEET_QUEUE%-poison", connection="AzureWebJobsStorage")
def fleet_poison(msg: func.QueueMessage) -> None:
    """Messages that used every attempt: their clusters are failed with the reason."""
    from shared.fleet import worker

    worker.handle_poison(msg.get_body())
