"""Flux notification forwarding (issue #3): the triggers. The work is in :mod:`shared.notify`.

- ``flux_events_eventhub``: Event Hub trigger, ``cardinality=many``; connection app setting
  ``NOTIFY_EVENTHUB`` (a connection string, or ``NOTIFY_EVENTHUB__fullyQualifiedNamespace`` for the
  managed identity), hub ``%NOTIFY_EVENTHUB_NAME%``, consumer group ``%NOTIFY_EVENTHUB_CONSUMER_GROUP%``.
  Returns once every event is delivered or dead-lettered (Event Hub then checkpoints); raises when
  storage is unavailable or the configuration is invalid (logged at error level, naming the bad entry),
  and the retry policy (exponential, unbounded) redelivers the batch.
- ``flux_events_http``: ``POST /api/flux/events/{cluster}`` (anonymous: authenticated by the cluster's
  HMAC key only) for a Flux ``generic-hmac`` Provider; the steps and answers are in
  :mod:`shared.notify.receiver` (200 ``{"result": counts}``; 400, 401, 409 replay, 413; 503 when Key Vault or
  storage fails, which Flux retries); 500 naming the bad entry while the routing file or an app setting is
  invalid.
- ``flux_deadletters_list``: ``GET /api/flux/deadletters?prefix=&limit=`` (operation endpoint, :mod:`functions._auth`) → ``{"names": [...]}``.
- ``flux_deadletters_replay``: ``POST /api/flux/deadletters/replay`` (operation endpoint), body ``{"names": [...]}``
  or ``{"prefix": "undeliverable/2026/", "limit": 100}``, optionally ``"force": true`` → the replay report.
"""

from __future__ import annotations

import logging
import uuid

import azure.functions as func

from functions._auth import operation_auth_level, require_operator
from functions._http import BadBody, echo, error_response, json_body, json_response

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
@bp.route(route="flux/events/{cluster}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def flux_events_http(req: func.HttpRequest) -> func.HttpResponse:
    """One ``generic-hmac`` POST of cluster ``{cluster}`` (see the module doc); anonymous at the host,
    authenticated by the cluster's HMAC key only (:mod:`shared.notify.receiver`)."""
    from shared import services
    from shared.errors import FluxOpsError
    from shared.notify import forwarder
    from shared.notify.dedupe import StorageUnavailable
    from shared.notify.receiver import receive

    cluster = req.route_params.get("cluster") or ""
    try:
        fwd = forwarder()
    except StorageUnavailable as exc:
        log.error("flux events for %s: %s", echo(cluster), exc)
        return error_response(503, "StorageUnavailable", "dead-letter or dedupe storage is unavailable; retry later")
    except FluxOpsError as exc:
        log.error("notification forwarder is not configured: %s", exc)
        return error_response(500, exc.code, str(exc), getattr(exc, "field", None))
    answer = receive(fwd, services.keyvault, cluster, req.get_body() or b"", req.headers.get("X-Signature"))
    return json_response(answer.body, answer.status)


_LIMIT_MAX = 5000


def _limit(value, default: int = 100) -> int:
    """``limit`` as a whole number from 1 to 5000; raises ``BadField``."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        if not value.strip().isdigit() or len(value) > 6:
            raise BadField("limit", f"must be a whole number from 1 to {_LIMIT_MAX}")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _LIMIT_MAX:
        raise BadField("limit", f"must be a whole number from 1 to {_LIMIT_MAX}")
    return value


def _prefix(value) -> str | None:
    from shared.notify.deadletter import PREFIX_RE

    if value is None or value == "":
        return None
    if not isinstance(value, str) or not PREFIX_RE.fullmatch(value):
        raise BadField("prefix", "must be a dead-letter name prefix such as undeliverable/2026/ "
                       "(letters, digits, '/', '.', '_', '-'; at most 200)")
    return value


class BadField(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _storage_or_setting_error(exc):
    from shared.notify.dedupe import StorageUnavailable

    if isinstance(exc, StorageUnavailable):
        return error_response(503, "StorageUnavailable", str(exc))
    return error_response(exc.status, exc.code, str(exc), getattr(exc, "field", None))


@bp.function_name("flux_deadletters_list")
@bp.route(route="flux/deadletters", methods=["GET"], auth_level=operation_auth_level())
def flux_deadletters_list(req: func.HttpRequest) -> func.HttpResponse:
    """``{"names": [...]}`` under ``prefix``, at most ``limit`` (1-5000, default 100); 400 naming a bad
    field, 503 when storage fails."""
    if (denied := require_operator(req)) is not None:
        return denied
    from shared.errors import FluxOpsError
    from shared.notify import forwarder
    from shared.notify.dedupe import StorageUnavailable

    try:
        limit, prefix = _limit(req.params.get("limit")), _prefix(req.params.get("prefix"))
    except BadField as exc:
        return error_response(400, "InvalidInput", str(exc), exc.field)
    try:
        names = list(forwarder().deadletters.names(prefix, limit))
    except (StorageUnavailable, FluxOpsError) as exc:
        return _storage_or_setting_error(exc)
    return json_response({"names": names})


@bp.function_name("flux_deadletters_replay")
@bp.route(route="flux/deadletters/replay", methods=["POST"], auth_level=operation_auth_level())
def flux_deadletters_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Body ``{"names": [...]}`` or ``{"prefix", "limit"}``, and ``"force": true`` to resend pairs already
    delivered: the :meth:`Forwarder.replay` report (counts ``delivered``, ``skipped``, ``failed``,
    ``invalid`` and ``results``); 400 naming a bad field, 503 when storage fails."""
    if (denied := require_operator(req)) is not None:
        return denied
    from shared.errors import FluxOpsError
    from shared.notify import forwarder
    from shared.notify.deadletter import NAME_RE
    from shared.notify.dedupe import StorageUnavailable

    try:
        body = json_body(req, empty={}, max_bytes=1024 * 1024)
    except BadBody as exc:
        return error_response(400, "InvalidInput", f"body: {exc}", "body")
    try:
        if not isinstance(body, dict):
            raise BadField("body", "must be a JSON object")
        unknown = sorted(set(body) - {"names", "prefix", "limit", "force"})
        if unknown:
            raise BadField(echo(unknown[0], 40), "is not a field of a replay request (names, prefix, limit, force)")
        names = body.get("names")
        if names is not None:
            if not isinstance(names, list) or len(names) > _LIMIT_MAX:
                raise BadField("names", f"must be a list of at most {_LIMIT_MAX} dead-letter names")
            for i, name in enumerate(names):
                if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                    raise BadField(f"names[{i}]", f"{echo(name) if isinstance(name, str) else type(name).__name__} "
                                   "is not a dead-letter name (as GET /api/flux/deadletters lists them)")
        prefix, limit = _prefix(body.get("prefix")), _limit(body.get("limit"))
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise BadField("force", "must be true or false")
    except BadField as exc:
        return error_response(400, "InvalidInput", str(exc), exc.field)
    try:
        report = forwarder().replay(names=names, prefix=prefix, limit=limit, force=force)
    except (StorageUnavailable, FluxOpsError) as exc:
        return _storage_or_setting_error(exc)
    return json_response(report)
