"""The app's own events: PAT expiry, rotation failures, bootstrap results, fleet operations, as Flux events.

Each is a Flux event (``fluxcd/pkg/apis/event/v1beta1`` ``Event``, see :mod:`.events`) published to the
hub the clusters publish to (:mod:`shared.ports.azure.eventhub`), so the forwarder filters, dedupes and
delivers it like any Flux event: route them with ``eventSources: [{kind: FleetCluster, name: "*"}]``::

    {"involvedObject": {"kind": "FleetCluster", "name": "aks-weu-1", "namespace": "flux-system"},
     "severity": "error", "reason": "PATExpiringSoon",
     "message": "PAT in Key Vault secret fleet-pat (version 3f2a...) expires on 2026-09-01 00:00 UTC, in 3 days; ...",
     "metadata": {"cluster": "aks-weu-1", "secret": "fleet-pat", "secretVersion": "3f2a...",
                  "expiresAt": "2026-09-01T00:00:00Z"},
     "reportingController": "flux-aks-functions", "reportingInstance": "<host>",
     "timestamp": "2026-08-29T07:10:00Z"}

- ``involvedObject``: kind ``FleetCluster``, ``name`` = the cluster's name in the registry, ``namespace`` =
  its Flux namespace; the rotation run summary names the fleet (``name: fleet``). The app keeps no UID
  of the cluster's objects, so there is none.
- ``severity`` as Flux maps Kubernetes event types (``fluxcd/pkg`` ``runtime/events`` ``eventTypeToSeverity``):
  what needs action (a warning or a failure) is ``error``, the rest ``info``.
- ``reason``: :data:`PAT_EXPIRING` (``PATExpiringSoon``), :data:`PAT_EXPIRED`, :data:`ROTATION_FAILED` (one per
  failed cluster), :data:`ROTATION_RUN_FAILED` (the run, when a cluster failed), :data:`BOOTSTRAP_SUCCEEDED`,
  :data:`BOOTSTRAP_FAILED`; fleet operations name their own reasons through :func:`fleet_operation`.
- ``message``: stable for what it reports, so the forwarder's dedupe (object, message, revisions and the
  cluster, within ``dedupeWindow``) drops repeats: the PAT warning counts whole days ("in 3 days", "within a
  day") and no message holds a duration or a time of the run.
- ``metadata``: ``cluster``, and names and versions (``secret``, ``secretVersion``, ``expiresAt``,
  ``revision`` of a bootstrap commit as Flux writes it: ``main@sha1:<sha>``). Never a credential value:
  the texts come from results that hold none.

:func:`publish` is the one way out: best effort, bounded, never raising; a failure is logged at WARNING
and counted (:func:`stats`). :func:`announce_rotation` and :func:`announce_bootstrap` are what the rotation
and bootstrap jobs call.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

log = logging.getLogger(__name__)

KIND = "FleetCluster"
REPORTING_CONTROLLER = "flux-aks-functions"
FLEET = "fleet"  # involvedObject.name and metadata.cluster of fleet-wide events (the rotation run)
PAT_EXPIRING = "PATExpiringSoon"
PAT_EXPIRED = "PATExpired"
ROTATION_FAILED = "RotationFailed"
ROTATION_RUN_FAILED = "RotationRunFailed"
BOOTSTRAP_SUCCEEDED = "BootstrapSucceeded"
BOOTSTRAP_FAILED = "BootstrapFailed"
MAX_MESSAGE_CHARS = 39_000  # what Flux's emitter truncates to (fluxcd/pkg event.go)
_LISTED = 20  # clusters named in a run summary

# The texts shared.rotation.rotator puts in ClusterResult.warnings / .errors for the PAT's Key Vault expiry.
_PAT_WARNING_RE = re.compile(r"PAT in Key Vault secret (?P<secret>\S+) \(version (?P<version>[^)]*)\) expires in "
                             r".*?\((?P<when>\d{4}-\d\d-\d\d \d\d:\d\d) UTC\)")
_PAT_EXPIRED_RE = re.compile(r"PAT in Key Vault secret (?P<secret>\S+) \(version (?P<version>[^)]*)\) expired "
                             r".*? ago \((?P<when>\d{4}-\d\d-\d\d \d\d:\d\d) UTC\)")

_stats_lock = threading.Lock()
_stats = {"published": 0, "failed": 0, "publishes": 0, "failedPublishes": 0}


# -- building events ---------------------------------------------------------------------------------


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(cluster: str, reason: str, message: str, *, severity: str = "info", namespace: str = "",
          metadata: Mapping[str, str] | None = None, when: datetime | None = None) -> dict:
    """One app event about ``cluster`` (a registry name, or :data:`FLEET`), as a JSON-ready dict.

    ``severity``: ``info`` or ``error``; ``reason``: a CamelCase word as Flux's; ``message``: one text without
    credential values, truncated to 39,000 characters as Flux does; ``metadata``: str → str, ``cluster`` is
    added; ``when`` (default now) becomes ``timestamp`` (RFC 3339, seconds, UTC). Raises ``ValueError`` for
    another severity or an empty cluster/reason."""
    if severity not in ("info", "error"):
        raise ValueError(f"severity must be info or error, not {severity!r}")
    if not cluster or not reason:
        raise ValueError("cluster and reason are required")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["cluster"] = cluster
    obj = {"kind": KIND, "name": cluster}
    if namespace:
        obj["namespace"] = namespace
    return {"involvedObject": obj, "severity": severity, "timestamp": _rfc3339(when or datetime.now(timezone.utc)),
            "message": message[:MAX_MESSAGE_CHARS], "reason": reason, "metadata": meta,
            "reportingController": REPORTING_CONTROLLER, "reportingInstance": socket.gethostname()[:63]}


def _days(left: timedelta) -> str:
    days = int(left.total_seconds() // 86400)
    return "within a day" if days < 1 else ("in 1 day" if days == 1 else f"in {days} days")


def from_rotation(summary, records: Iterable = ()) -> list[dict]:
    """The events of a :class:`shared.rotation.RotationSummary`: per cluster, :data:`PAT_EXPIRING` for a PAT
    whose Key Vault expiry is within ``ROTATION_PAT_WARNING_DAYS``, :data:`PAT_EXPIRED` for one past it, and
    :data:`ROTATION_FAILED` for its other errors; then :data:`ROTATION_RUN_FAILED` when any cluster failed.
    ``records`` (:class:`shared.rotation.registry.ClusterRecord`) give each cluster's namespace. An
    all-well run has no events."""
    namespaces = {r.name: r.namespace for r in records}
    now = datetime.now(timezone.utc)
    out: list[dict] = []
    for c in summary.clusters:
        ns = namespaces.get(c.cluster, "")
        for w in c.warnings:
            m = _PAT_WARNING_RE.search(w)
            if not m:
                continue
            exp = datetime.strptime(m["when"], "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
            out.append(event(
                c.cluster, PAT_EXPIRING, severity="error", namespace=ns, when=now,
                message=(f"PAT in Key Vault secret {m['secret']} (version {m['version']}) expires on {m['when']} UTC, "
                         f"{_days(exp - now)}; create a new PAT in Azure DevOps and store it as a new version of "
                         "the secret"),
                metadata={"secret": m["secret"], "secretVersion": m["version"], "expiresAt": _rfc3339(exp)}))
        others = []
        for e in c.errors:
            m = _PAT_EXPIRED_RE.search(e)
            if not m:
                others.append(e)
                continue
            exp = datetime.strptime(m["when"], "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
            out.append(event(
                c.cluster, PAT_EXPIRED, severity="error", namespace=ns, when=now,
                message=(f"PAT in Key Vault secret {m['secret']} (version {m['version']}) expired on {m['when']} UTC; "
                         "nothing written, the cluster keeps its current credential until a new PAT is stored as "
                         "a new version of the secret"),
                metadata={"secret": m["secret"], "secretVersion": m["version"], "expiresAt": _rfc3339(exp)}))
        if others:
            out.append(event(c.cluster, ROTATION_FAILED, "credential rotation failed: " + "; ".join(others),
                             severity="error", namespace=ns, when=now))
    failed = [c.cluster for c in summary.clusters if c.status == "failed"]
    if failed:
        names = ", ".join(failed[:_LISTED]) + (f" (+{len(failed) - _LISTED} more)" if len(failed) > _LISTED else "")
        d = summary.to_dict()
        out.append(event(
            FLEET, ROTATION_RUN_FAILED, severity="error", when=now,
            message=(f"credential rotation: {len(failed)} of {d['checked']} cluster(s) failed: {names}; "
                     "they are tried again next run"),
            metadata={"checked": str(d["checked"]), "failed": str(len(failed)), "updated": str(d["updated"])}))
    return out


def from_bootstrap(cluster: str, *, namespace: str, url: str, branch: str, path: str, result=None,
                   error: str | None = None) -> dict:
    """The event of one bootstrap of ``cluster``: :data:`BOOTSTRAP_SUCCEEDED` (info) when ``error`` is None,
    else :data:`BOOTSTRAP_FAILED` (error) with ``error`` (one line, no secrets: the bootstrap's errors hold
    none). ``result`` (:class:`shared.bootstrap.BootstrapResult`, when the run started) adds the Flux
    version, the commits and objects, and ``metadata.revision`` = ``<branch>@sha1:<head>`` once pushed."""
    where = f"{url} branch {branch} path {path or './'}"
    meta = {"url": url, "branch": branch, "path": path or "./"}
    detail = ""
    if result is not None:
        counts = {"created": 0, "configured": 0, "unchanged": 0}
        for change in result.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        detail = (f"Flux {result.version}, {len(result.commits)} commit(s) pushed, {counts['created']} object(s) "
                  f"created, {counts['configured']} configured, {counts['unchanged']} unchanged")
        meta["version"] = result.version
        if result.head:
            meta["revision"] = f"{branch}@sha1:{result.head}"
    if error is None:
        return event(cluster, BOOTSTRAP_SUCCEEDED, f"bootstrap of {where} succeeded" + (f": {detail}" if detail else ""),
                     namespace=namespace, metadata=meta)
    # Flux's health-check aggregate already starts "bootstrap failed with N health check failure(s): …"
    failed = (f"{where} {error[len('bootstrap '):]}" if error.startswith("bootstrap failed ")
              else f"{where} failed: {error}")
    return event(cluster, BOOTSTRAP_FAILED, f"bootstrap of {failed}" + (f" ({detail})" if detail else ""),
                 severity="error", namespace=namespace, metadata=meta)


def fleet_operation(operation: str, *, succeeded: bool, message: str, cluster: str | None = None,
                    namespace: str = "", reason: str | None = None, **metadata: str) -> dict:
    """The event of a fleet operation (an upgrade wave, a fleet-wide change) that finished or failed, for the
    fleet job to :func:`publish`: about ``cluster`` when it concerns one, else the fleet (:data:`FLEET`).
    ``reason`` defaults to ``<Operation>Succeeded`` / ``<Operation>Failed`` (``operation`` in CamelCase, e.g.
    ``UpgradeWave``); severity ``info`` or ``error``; ``metadata`` (str → str, names and versions only) gets
    ``operation``. Example: ``publish([fleet_operation("UpgradeWave", succeeded=False, message="wave 2 of 3:
    2 cluster(s) failed to upgrade to Flux v2.9.2: a, b", wave="2")])``."""
    reason = reason or f"{operation}{'Succeeded' if succeeded else 'Failed'}"
    return event(cluster or FLEET, reason, message, severity="info" if succeeded else "error", namespace=namespace,
                 metadata={**metadata, "operation": operation})


# -- publishing ----------------------------------------------------------------------------------------


def publish(events: list[dict], *, publisher=None, what: str = "app events"):
    """Publish ``events`` in one batch through ``publisher`` (default :func:`shared.services.eventhub_publisher`)
    and log the outcome (INFO when sent, WARNING when not, naming the hub and the SDK's error, never a token).
    Best effort: never raises, returns the :class:`shared.ports.azure.eventhub.PublishResult`, or None when
    there is nothing to send or publishing is off (no ``NOTIFY_EVENTHUB__fullyQualifiedNamespace``)."""
    from shared.ports.azure.eventhub import PublishResult

    if not events:
        return None
    try:
        if publisher is None:
            from shared import services

            publisher = services.eventhub_publisher()
        if publisher is None:
            log.debug("%s: %d event(s) not published: NOTIFY_EVENTHUB__fullyQualifiedNamespace is not set",
                      what, len(events))
            return None
        bodies = [json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8") for e in events]
        result = publisher.publish(bodies)
    except Exception as exc:  # noqa: BLE001 - a bad setting or a bug here must not break the job
        result = PublishResult(failed=len(events), error=f"{type(exc).__name__}: {exc}"[:300])
    with _stats_lock:
        _stats["published"] += result.sent
        _stats["failed"] += result.failed
        _stats["publishes"] += 1
        _stats["failedPublishes"] += 1 if result.failed else 0
    reasons = ", ".join(sorted({e["reason"] for e in events}))
    if result.failed:
        log.warning("%s: publish failed, %d of %d event(s) not sent (%s): %s", what, result.failed, len(events),
                    reasons, result.error)
    else:
        log.info("%s: %d event(s) published in %.1f s (%s)", what, result.sent, result.duration_s, reasons)
    return result


def stats() -> dict:
    """Process-wide counts since start: ``published``/``failed`` events, ``publishes`` and ``failedPublishes``."""
    with _stats_lock:
        return dict(_stats)


def announce_rotation(summary, records: Iterable = ()):
    """Publish :func:`from_rotation` of a run (the rotation job's hook). Never raises."""
    try:
        events = from_rotation(summary, records)
    except Exception:  # noqa: BLE001 - the run's result stands whatever happens here
        log.exception("rotation events: could not be built")
        return None
    return publish(events, what="rotation events")


def announce_bootstrap(cluster: str, **kwargs):
    """Publish :func:`from_bootstrap` (the hook of ``POST /api/bootstrap``; a queue worker driving
    :mod:`shared.bootstrap.service` calls it the same way). Never raises."""
    try:
        ev = from_bootstrap(cluster, **kwargs)
    except Exception:  # noqa: BLE001
        log.exception("bootstrap event: could not be built")
        return None
    return publish([ev], what="bootstrap event")


# -- python -m shared.notify send --------------------------------------------------------------------


def send_file(path: str, out=None, err=None) -> int:
    """``python -m shared.notify send --file event.json``: publish the Flux event(s) in ``path`` (one JSON
    object, or an array of them) to the hub of the app settings, through the same publisher, to try a routing
    file end to end. Each event is checked first (as the forwarder will: :func:`.events.parse_event`).
    Prints one ``✔`` line, or one ``✗`` line naming the flag, the event's field or the setting. Exit code 0,
    or 1 (nothing sent, or the hub did not confirm)."""
    from shared import errors, services

    from .events import InvalidEvent, parse_event

    out, err = out or sys.stdout, err or sys.stderr
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        data = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        print(f"✗ --file: cannot read {path}: {exc.strerror or exc}", file=err)
        return 1
    except (UnicodeDecodeError, ValueError) as exc:
        print(f"✗ --file: {path} is not JSON ({exc})", file=err)
        return 1
    events = data if isinstance(data, list) else [data]
    if not events:
        print(f"✗ --file: {path} holds no event", file=err)
        return 1
    for i, ev in enumerate(events):
        try:
            parse_event(ev, default_cluster="unknown")
        except InvalidEvent as exc:
            where = f"[{i}]." if isinstance(data, list) else ""
            print(f"✗ --file: {path}: {where}{exc}", file=err)
            return 1
    try:
        publisher = services.eventhub_publisher()
    except errors.FluxOpsError as exc:
        print(f"✗ {exc}", file=err)
        return 1
    if publisher is None:
        print("✗ NOTIFY_EVENTHUB__fullyQualifiedNamespace: app setting is missing (the Event Hubs namespace, "
              "e.g. contoso.servicebus.windows.net)", file=err)
        return 1
    result = publish(events, publisher=publisher, what="send")
    if result is None or result.failed:
        print(f"✗ {result.failed if result else len(events)} event(s) not sent: {result.error if result else ''}",
              file=err)
        return 1
    print(f"✔ {result.sent} event(s) sent to Event Hub {publisher.eventhub_name} in {publisher.namespace}", file=out)
    return 0
