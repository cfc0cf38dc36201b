"""Flux notification forwarding (issue #3): the triggers. The work is in :mod:`shared.notify`.

- ``flux_events_eventhub``: Event Hub trigger, ``cardinality=many``; connection app setting
  ``NOTIFY_EVENTHUB`` (a connection string, or ``NOTIFY_EVENTHUB__fullyQualifiedNamespace`` for the
  managed identity), hub ``%NOTIFY_EVENTHUB_NAME%``, consumer group ``%NOTIFY_EVENTHUB_CONSUMER_GROUP%``.
  Returns once every event is delivered or dead-lettered (Event Hub then checkpoints); raises when
  storage is unavailable or the configuration is invalid (logged at error level, naming the bad entry),
  and the retry policy (exponential, unbounded) redelivers the batch.
- ``flux_events_http``: ``POST /api/flux/events/{cluster}`` (function key) for a Flux ``generic-hmac``
  Provider: ``X-Signature: sha256=<hex>`` checked in constant time against the cluster's key, the Key Vault
  secret named by the routing file's ``http.hmacSecret`` (``{cluster}`` substituted). 200 ``{"result":
  counts}``; 401 bad/missing signature and 400 malformed event (both dead-lettered, with the reason;
  unsigned ones are never replayed); 503 when Key Vault or storage fails (Flux retries 5xx); 500 naming
  the bad entry while the routing file or an app setting is invalid.
- ``flux_deadletters_list``: ``GET /api/flux/deadletters?prefix=&limit=`` (operation endpoint, :mod:`functions._auth`) → ``{"names": [...]}``.
- ``flux_deadletters_replay``: ``POST /api/flux/deadletters/replay`` (operation endpoint), body ``{"names": [...]}``
  or ``{"prefix": "undeliverable/2026/", "limit": 100}`` → the replay report.
"""

from __future__ import annotations

import logging
import uuid

import azure.functions as func

from functions._auth import operation_auth_level, require_operator
from functions._http import error_response, json_response

bp = func.Blueprint()
log = logging.getLogger("functions.notifications")


def _messages(events: list[func.EventHubEvent]):
    from shared.notify.delivery import Message

    meta = (events[0].metadata or {}) if events else {}
    context = meta.get("PartitionContext") or {}
    hub = context.get("EventHubName") or "hub"
    partition = str(context.get("PartitionId") or "")
    out = []
    for i, ev in enumerate(events):
        seq = ev.sequence_number
        source = {"trigger": "eventhub", "eventHub": hub, "partition": partition, "sequenceNumber": seq,
                  "offset": ev.offset, "enqueuedTime": ev.enqueued_time.isoformat() if ev.enqueued_time else None}
        # stable per message, so a redelivered batch reclaims its own dedupe claims
        owner = f"{hub}/{partition}/{seq}" if seq is not None else f"{hub}/{partition}/i{i}/{uuid.uuid4()}"
        out.append(Message(body=ev.get_body(), source=source, owner=owner))
    return out


@bp.function_name("flux_events_eventhub")
@bp.retry(strategy="exponential_backoff", max_retry_count="-1",
          minimum_interval="00:00:10", maximum_interval="00:15:00")
@bp.event_hub_message_trigger(arg_name="events", connection="NOTIFY_EVENTHUB",
                              event_hub_name="%NOTIFY_EVENTHUB_NAME%",
                              consumer_group="%NOTIFY_EVENTHUB_CONSUMER_GROUP%",
                              cardinality=func.Cardinality.MANY)
def flux_events_eventhub(events: list[func.EventHubEvent]) -> None:
    """Forward one Event Hub batch (see the module doc)."""
    from shared.errors import FluxOpsError
    from shared.notify import forwarder
    from shared.notify.dedupe import StorageUnavailable

    try:
        fwd = forwarder()
    except (FluxOpsError, StorageUnavailable) as exc:  # e.g. targets[2].exclusionList[0]: kept until fixed
        log.error("notification forwarder cannot start, %d event(s) kept in Event Hub for retry: %s",
                  len(events), exc)
        raise
    result = fwd.forward(_messages(events))
    log.info("flux events from Event Hub: %s", result.summary())


@bp.function_name("flux_events_http")
@bp.route(route="flux/events/{cluster}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def flux_events_http(req: func.HttpRequest) -> func.HttpResponse:
    """One ``generic-hmac`` POST of cluster ``{cluster}`` (see the module doc)."""
    from shared.errors import FluxOpsError, NotFound
    from shared import services
    from shared.notify import forwarder
    from shared.notify.dedupe import StorageUnavailable
    from shared.notify.delivery import Message
    from shared.notify.events import CLUSTER_RE
    from shared.notify.targets import verify_signature

    cluster = req.route_params.get("cluster") or ""
    body = req.get_body() or b""
    try:
        fwd = forwarder()
    except StorageUnavailable as exc:
        log.error("flux events for %s: %s", cluster[:80], exc)
        return error_response(503, "StorageUnavailable", "dead-letter or dedupe storage is unavailable; retry later")
    except FluxOpsError as exc:
        log.error("notification forwarder is not configured: %s", exc)
        return error_response(500, exc.code, str(exc), getattr(exc, "field", None))
    message = Message(body=body, source={"trigger": "http", "cluster": cluster[:80]}, owner=f"http/{uuid.uuid4()}",
                      cluster=cluster if CLUSTER_RE.match(cluster) else None)
    try:
        if not CLUSTER_RE.match(cluster):
            fwd.reject(message, f"route cluster {cluster[:80]!r} is not a cluster name", replayable=False)
            return error_response(400, "InvalidInput", "cluster: not a cluster name (lower-case letters, digits, '.', '_', '-')",
                          "cluster")
        secret_name = fwd.config.hmac_secret_name(cluster)
        if secret_name is None:
            fwd.reject(message, "routing file has no http.hmacSecret: the HTTP endpoint is disabled",
                       replayable=False)
            return error_response(401, "Unauthorized", "no HMAC key is configured for this endpoint")
        try:
            key = services.keyvault().get_secret(secret_name, field="http.hmacSecret").value
        except NotFound:
            key = ""
        except FluxOpsError as exc:
            log.error("flux events for %s: Key Vault failed: %s", cluster, exc)
            return error_response(503, "KeyVaultUnavailable", "the HMAC key could not be read; retry later")
        if not key or not verify_signature(body, req.headers.get("X-Signature"), key):
            fwd.reject(message, "missing or invalid X-Signature for cluster " + cluster, replayable=False)
            log.warning("flux events for %s: rejected, missing or invalid X-Signature", cluster)
            return error_response(401, "Unauthorized", "missing or invalid X-Signature")
        result = fwd.forward([message])
    except StorageUnavailable as exc:
        log.error("flux events for %s: %s", cluster, exc)
        return error_response(503, "StorageUnavailable", "dead-letter or dedupe storage is unavailable; retry later")
    if result.rejected:
        # parse again only to name the field in the answer (the reason is in the dead letter)
        from shared.notify.events import InvalidEvent

        try:
            fwd.parse(message)
        except InvalidEvent as exc:
            return error_response(400, exc.code, str(exc), exc.field)
    return json_response({"result": result.summary()})


@bp.function_name("flux_deadletters_list")
@bp.route(route="flux/deadletters", methods=["GET"], auth_level=operation_auth_level())
def flux_deadletters_list(req: func.HttpRequest) -> func.HttpResponse:
    """``{"names": [...]}`` under ``prefix``, at most ``limit`` (1-5000, default 100); 400 naming a bad field."""
    if (denied := require_operator(req)) is not None:
        return denied
    from shared.errors import FluxOpsError
    from shared.notify import forwarder
    from shared.notify.dedupe import StorageUnavailable

    try:
        limit = int(req.params.get("limit") or 100)
    except ValueError:
        return error_response(400, "InvalidInput", "limit: must be a whole number", "limit")
    try:
        names = list(forwarder().deadletters.names(req.params.get("prefix"), max(1, min(limit, 5000))))
    except StorageUnavailable as exc:
        return error_response(503, "StorageUnavailable", str(exc))
    except FluxOpsError as exc:
        return error_response(exc.status, exc.code, str(exc), getattr(exc, "field", None))
    return json_response({"names": names})


@bp.function_name("flux_deadletters_replay")
@bp.route(route="flux/deadletters/replay", methods=["POST"], auth_level=operation_auth_level())
def flux_deadletters_replay(req: func.HttpRequest) -> func.HttpResponse:
    """The :meth:`Forwarder.replay` report; 400 naming a bad field, 503 when storage fails."""
    if (denied := require_operator(req)) is not None:
        return denied
    from shared.errors import FluxOpsError
    from shared.notify import forwarder
    from shared.notify.dedupe import StorageUnavailable

    try:
        body = req.get_json() if req.get_body() else {}
    except ValueError:
        return error_response(400, "InvalidInput", "body: must be a JSON object", "body")
    if not isinstance(body, dict):
        return error_response(400, "InvalidInput", "body: must be a JSON object", "body")
    names, prefix, limit = body.get("names"), body.get("prefix"), body.get("limit", 100)
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        return error_response(400, "InvalidInput", "names: must be a list of blob names", "names")
    if prefix is not None and not isinstance(prefix, str):
        return error_response(400, "InvalidInput", "prefix: must be a string", "prefix")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 5000:
        return error_response(400, "InvalidInput", "limit: must be a whole number from 1 to 5000", "limit")
    try:
        report = forwarder().replay(names=names, prefix=prefix, limit=limit)
    except StorageUnavailable as exc:
        return error_response(503, "StorageUnavailable", str(exc))
    except FluxOpsError as exc:
        return error_response(exc.status, exc.code, str(exc), getattr(exc, "field", None))
    return json_response(report)
