"""HTTP trigger ``POST /api/bootstrap``: ``flux bootstrap git`` as a service.

The body mirrors the flags (see :func:`shared.bootstrap.options_from_request`); the PAT (or the SSH
key, :mod:`shared.bootstrap.sshkeys`) is read
from Key Vault by name; the cluster is named by its AKS resource ID (reached through ARM with the
Function's managed identity) or by the Key Vault secret holding its kubeconfig. Answers 200 with what was committed and
applied, 202 ``{"status": "awaitingDeployKey", "sshKey": {"secret", "publicKey", "created"}, ...}``
when an SSH run generated and stored its key (nothing else written: add the public key in Azure
DevOps, then call again), 400 with ``{"error": {"code", "field", "message"}}`` for bad input (nothing touched),
and the status of the typed error otherwise (404 missing repository or branch, 409 conflicting
sync path or Flux managed by another tool, 500 a missing app setting, 502 a peer refused our
credentials or failed, or a health check failed after the push). The whole run is bounded by
:data:`shared.bootstrap.HTTP_BUDGET_SECONDS` so the answer comes within Azure's 230 s. The run itself
is :mod:`shared.bootstrap.service`, which the fleet's queue worker drives too. Once the request is
known good, the outcome is also published as the app's own event (``BootstrapSucceeded``, or
``BootstrapFailed`` for anything but bad input, which the 400 answers; :mod:`shared.notify.app_events`;
at most ``NOTIFY_PUBLISH_TIMEOUT_SECONDS`` more), and the answer (200, 502 and the error bodies after
that point) carries ``"events": {"published", "failed"}``: a hub that is down shows as ``failed: 1``.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions._auth import operation_auth_level, require_operator
from functions._http import error_response, json_response, read_json

bp = func.Blueprint()
log = logging.getLogger("functions.bootstrap")


def _error(status: int, code: str, message: str, field: str | None = None, run=None, ssh_key=None,
           events: dict | None = None) -> func.HttpResponse:
    """``{"error": {"code", "message"[, "field"]}}``; when the bootstrap had started (``run``, a
    :class:`shared.bootstrap.Bootstrapper`), also what it did before failing: ``commits`` pushed
    and the progress ``log``, so a caller knows what a re-run will find; ``sshKey`` (the public
    side of the run's :class:`~shared.bootstrap.sshkeys.SSHKey`) when it used one; ``events``
    (:func:`_announce`'s counts) when the failure was announced."""
    extra: dict = {}
    if events is not None:
        extra["events"] = events
    if ssh_key is not None:
        extra["sshKey"] = ssh_key.summary()
    if run is not None:
        run.progress.failure(message)
        extra["commits"] = [{"sha": c.sha, "message": c.message} for c in run.result.commits]
        extra["log"] = run.result.log
    return error_response(status, code, message, field, **extra)


def _announce(request, result=None, error: str | None = None) -> dict | None:
    """Publish the outcome as the app's own event (``BootstrapSucceeded``, or ``BootstrapFailed`` with
    ``error``; :mod:`shared.notify.app_events`) once the request is known good (``request``, a checked
    :class:`shared.bootstrap.service.Request`): best effort and bounded (``NOTIFY_PUBLISH_TIMEOUT_SECONDS``),
    it never changes the status. Returns the answer's ``events``: ``{"published": 0|1, "failed": 0|1}``
    (both 0 when publishing is off), or None before the request is known good (no event)."""
    if request is None:
        return None
    from shared.notify import app_events

    opts = request.opts
    sent = app_events.announce_bootstrap(request.refs["clusterName"], namespace=opts.namespace, url=opts.sync_url,
                                         branch=opts.branch, path=opts.path, result=result, error=error)
    return {"published": sent.sent if sent else 0, "failed": sent.failed if sent else 0}


@bp.function_name("bootstrap")
@bp.route(route="bootstrap", methods=["POST"], auth_level=operation_auth_level())
def bootstrap(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/bootstrap``: decode and check the body, load the distribution, read the PAT (or
    get an Entra token) and the kubeconfig from Key Vault, then run the bootstrap within
    :data:`shared.bootstrap.HTTP_BUDGET_SECONDS` and register the cluster for rotation."""
    if (denied := require_operator(req)) is not None:
        return denied
    import time

    from shared.bootstrap import HTTP_BUDGET_SECONDS, service
    from shared.errors import FluxOpsError, InvalidInput, SettingError

    deadline = time.monotonic() + HTTP_BUDGET_SECONDS
    request = None
    try:
        request = service.check_request(read_json(req))  # shape, allowlists, distribution: no call made yet
        outcome = service.run(request, deadline=deadline)
    except SettingError as exc:
        log.error("bootstrap cannot run: app setting %s", exc)
        events = _announce(request, error=f"app setting {exc}")
        return _error(exc.status, exc.code, f"app setting {exc}", events=events)
    except InvalidInput as exc:  # the caller's to fix: the 400 says what, no event
        log.warning("bootstrap rejected: %s", exc)
        return _error(400, exc.code, str(exc), exc.field)
    except FluxOpsError as exc:
        log.error("bootstrap failed: %s", exc)
        events = _announce(request, error=str(exc))
        return _error(exc.status, exc.code, str(exc), exc.field, events=events)
    except service.RunFailed as failed:
        exc = failed.error
        result = failed.run.result if failed.run is not None else None
        if isinstance(exc, FluxOpsError):
            log.error("bootstrap failed: %s", exc)
            events = _announce(request, result, str(exc))
            return _error(exc.status, exc.code, str(exc), exc.field, run=failed.run, ssh_key=failed.ssh_key,
                          events=events)
        log.error("bootstrap failed unexpectedly (%s)", type(exc).__name__, exc_info=exc)
        events = _announce(request, result, f"internal error ({type(exc).__name__})")
        return _error(500, "InternalError", f"internal error ({type(exc).__name__}); see the Function's log", run=failed.run,
                      events=events)
    except Exception as exc:  # a bug: answer in the same JSON shape; the traceback goes to the log
        log.error("bootstrap failed unexpectedly (%s)", type(exc).__name__, exc_info=True)
        events = _announce(request, error=f"internal error ({type(exc).__name__})")
        return _error(500, "InternalError", f"internal error ({type(exc).__name__}); see the Function's log",
                      events=events)
    summary = outcome.summary()
    if outcome.awaiting_deploy_key:  # Flux's "Please give the key access to your repository"
        return json_response(summary, 202)
    summary["events"] = _announce(request, outcome.result, outcome.failure)
    if outcome.failure:
        # As the Flux CLI: the files are pushed and applied, but the run failed its health checks.
        log.error("bootstrap health check failed: %s", outcome.failure)
        return json_response(summary, 502)
    return json_response(summary)
