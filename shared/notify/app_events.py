"""The app's own events: PAT expiry, rotation failures, bootstrap results, fleet operations, as Flux events.

Each is a Flux event (``fluxcd/pkg/apis/event/v1beta1`` ``Event``, see :mod:`.events`) published to the
hub the clusters publish to (:mod:`shared.ports.azure.eventhub`), so the forwarder filters, dedupes and
delivers it like any Flux event: route them with ``eventSources: [{kind: FleetCluster, name: "*"}]``::

    {"involvedObject": {"kind": "FleetCluster", "name": "aks-weu-1", "namespace": "flux-system"},
     "severity": "error", "reason": "PATExpiringSoon",
     "message": "PAT in Key Vault secret fleet-pat (version 3f2a...) expires on 2026-09-01 00:00 UTC, in 3 days; used by 1 cluster(s): aks-weu-1; ...",
     "metadata": {"cluster": "aks-weu-1", "secret": "fleet-pat", "secretVersion": "3f2a...",
                  "expiresAt": "2026-09-01T00:00:00Z", "clusters": "aks-weu-1", "clusterCount": "1"},
     "reportingController": "flux-aks-functions", "reportingInstance": "<host>",
     "timestamp": "2026-08-29T07:10:00Z"}

- ``involvedObject``: kind ``FleetCluster``, ``name`` = the cluster's name in the registry, ``namespace`` =
  its Flux namespace; the rotation run summary, and a PAT event about a PAT several clusters use, name the
  fleet (``name: fleet``). The app keeps no UID
  of the cluster's objects, so there is none.
- ``severity`` as Flux maps Kubernetes event types (``fluxcd/pkg`` ``runtime/events`` ``eventTypeToSeverity``):
  what needs action (a warning or a failure) is ``error``, the rest ``info``.
- ``reason``: :data:`PAT_EXPIRING` (``PATExpiringSoon``) and :data:`PAT_EXPIRED` (one per PAT secret version,
  naming the clusters using it; at most once per ``ROTATION_PAT_WARNING_INTERVAL``, default 24h, per version
  and reason: :func:`hold_reminders`), :data:`ROTATION_FAILED` (one per failed cluster),
  :data:`ROTATION_RUN_FAILED` (the run, when a cluster failed), :data:`BOOTSTRAP_SUCCEEDED`,
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


def _names(names: list[str]) -> str:
    return ", ".join(names[:_LISTED]) + (f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def from_rotation(summary, records: Iterable = (), *, now: datetime | None = None) -> list[dict]:
    """The events of a :class:`shared.rotation.RotationSummary`, in this order:

    - per PAT secret version (not per cluster: 50 clusters sharing a PAT get one event), :data:`PAT_EXPIRING`
      when its Key Vault expiry is within ``ROTATION_PAT_WARNING_DAYS``, :data:`PAT_EXPIRED` when it has
      passed; the message and ``metadata.clusters`` name the clusters using it (the first 20, then
      ``(+N more)``), ``metadata.clusterCount`` counts them. ``involvedObject`` is that cluster when one
      uses it (its namespace too), else the fleet (:data:`FLEET`);
    - per cluster, :data:`ROTATION_FAILED` for its other errors;
    - :data:`ROTATION_RUN_FAILED` when any cluster failed.

    ``records`` (:class:`shared.rotation.registry.ClusterRecord`) give each cluster's namespace; ``now``
    (aware UTC, default the clock) stamps the events and counts the days left. An all-well run has no
    events. Reminders are held back by :func:`announce_rotation`, not here."""
    namespaces = {r.name: r.namespace for r in records}
    now = now or datetime.now(timezone.utc)
    pats: dict[tuple[str, str, str], dict] = {}  # (reason, secret, version) -> {"exp", "clusters"}
    others: list[dict] = []
    for c in summary.clusters:
        found = [(PAT_EXPIRING, _PAT_WARNING_RE.search(w)) for w in c.warnings]
        rest = []
        for e in c.errors:
            m = _PAT_EXPIRED_RE.search(e)
            if m:
                found.append((PAT_EXPIRED, m))
            else:
                rest.append(e)
        for reason, m in found:
            if not m:
                continue
            entry = pats.setdefault((reason, m["secret"], m["version"]), {
                "exp": datetime.strptime(m["when"], "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc), "clusters": []})
            if c.cluster not in entry["clusters"]:
                entry["clusters"].append(c.cluster)
        if rest:
            others.append(event(c.cluster, ROTATION_FAILED, "credential rotation failed: " + "; ".join(rest),
                                severity="error", namespace=namespaces.get(c.cluster, ""), when=now))
    out: list[dict] = []
    for (reason, secret, version), entry in pats.items():
        exp, clusters = entry["exp"], entry["clusters"]
        when = f"{exp:%Y-%m-%d %H:%M} UTC"
        used = f"used by {len(clusters)} cluster(s): {_names(clusters)}"
        if reason == PAT_EXPIRING:
            text = (f"expires on {when}, {_days(exp - now)}; {used}; create a new PAT in Azure DevOps and store it "
                    "as a new version of the secret")
        else:
            text = (f"expired on {when}; {used}; nothing written, they keep their current credential until a new "
                    "PAT is stored as a new version of the secret")
        one = clusters[0] if len(clusters) == 1 else None
        out.append(event(
            one or FLEET, reason, f"PAT in Key Vault secret {secret} (version {version}) {text}", severity="error",
            namespace=namespaces.get(one, "") if one else "", when=now,
            metadata={"secret": secret, "secretVersion": version, "expiresAt": _rfc3339(exp),
                      "clusters": _names(clusters), "clusterCount": str(len(clusters))}))
    out.extend(others)
    failed = [c.cluster for c in summary.clusters if c.status == "failed"]
    if failed:
        d = summary.to_dict()
        out.append(event(
            FLEET, ROTATION_RUN_FAILED, severity="error", when=now,
            message=(f"credential rotation: {len(failed)} of {d['checked']} cluster(s) failed: {_names(failed)}; "
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


def _pat_key(ev: dict) -> tuple[str, str] | None:
    if ev["reason"] not in (PAT_EXPIRING, PAT_EXPIRED):
        return None
    return ev["metadata"]["secret"], ev["metadata"]["secretVersion"]


def hold_reminders(events: list[dict], *, interval: timedelta, now: datetime, store=None) -> tuple[list[dict], list[dict]]:
    """Split :func:`from_rotation`'s ``events`` into ``(due, held)``: a :data:`PAT_EXPIRING` or
    :data:`PAT_EXPIRED` event is held when the app published one of the same reason about the same secret
    version less than ``interval`` before ``now`` (a new version is a new row, so it warns at once); then
    :data:`ROTATION_RUN_FAILED` is held too when nothing else of the run's failures is due (its only
    failures were expired PATs already reported). ``interval`` 0 holds nothing.

    The last warning times are rows of the fleet table (:meth:`shared.fleet.store.OperationStore.pat_warning`;
    ``store`` default :func:`shared.services.fleet_store`), so they outlive the instance. If that table
    cannot be read, nothing is held (a warning too many rather than none) and a WARNING is logged."""
    if interval <= timedelta(0) or not any(_pat_key(e) for e in events):
        return list(events), []
    due, held = [], []
    try:
        if store is None:
            from shared import services

            store = services.fleet_store()
        seen: dict[tuple[str, str], dict] = {}
        for ev in events:
            key = _pat_key(ev)
            if key is None:
                due.append(ev)
                continue
            if key not in seen:
                seen[key] = store.pat_warning(*key)
            last = seen[key].get(ev["reason"])
            (held if last is not None and now - last < interval else due).append(ev)
    except Exception as exc:  # noqa: BLE001 - storage down, a bad setting: warn rather than stay silent
        log.warning("rotation events: when PAT warnings were last sent could not be read (%s); sending them",
                    str(exc)[:300] or type(exc).__name__)
        return list(events), []
    if held and not any(e["reason"] in (ROTATION_FAILED, PAT_EXPIRED) for e in due):
        held += [e for e in due if e["reason"] == ROTATION_RUN_FAILED]
        due = [e for e in due if e["reason"] != ROTATION_RUN_FAILED]
    return due, held


def remember_reminders(events: list[dict], *, now: datetime, store=None) -> None:
    """Record ``now`` as the last warning time of each PAT event in ``events`` (published ones). Never
    raises: a failure is logged at WARNING (the next run warns again)."""
    keys = [(k, e["reason"]) for e in events if (k := _pat_key(e))]
    if not keys:
        return
    try:
        if store is None:
            from shared import services

            store = services.fleet_store()
        for (secret, version), reason in keys:
            store.set_pat_warning(secret, version, reason, now)
    except Exception as exc:  # noqa: BLE001
        log.warning("rotation events: could not record that PAT warnings were sent (%s); the next run sends them "
                    "again", str(exc)[:300] or type(exc).__name__)


def announce_rotation(summary, records: Iterable = (), *, interval: timedelta = timedelta(hours=24),
                      now: datetime | None = None, store=None):
    """Publish :func:`from_rotation` of a run (the rotation job's hook), PAT warnings about one secret
    version at most once per ``interval`` (``ROTATION_PAT_WARNING_INTERVAL``; :func:`hold_reminders`), and
    remember the ones the hub accepted. Returns :func:`publish`'s result (None: nothing to send or
    publishing off). Never raises."""
    now = now or datetime.now(timezone.utc)
    try:
        events = from_rotation(summary, records, now=now)
    except Exception:  # noqa: BLE001 - the run's result stands whatever happens here
        log.exception("rotation events: could not be built")
        return None
    due, held = hold_reminders(events, interval=interval, now=now, store=store)
    if held:
        log.info("rotation events: %d held back (%s): already sent within ROTATION_PAT_WARNING_INTERVAL (%s)",
                 len(held), ", ".join(sorted({e["reason"] for e in held})), _interval_text(interval))
    result = publish(due, what="rotation events")
    if result is not None and not result.failed:
        remember_reminders(due, now=now, store=store)
    return result


def _interval_text(interval: timedelta) -> str:
    """A Go-style duration: ``24h``, ``1h30m``, ``90s``."""
    s = int(interval.total_seconds())
    parts = [(s // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


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
