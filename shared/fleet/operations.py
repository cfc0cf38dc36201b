"""Fleet operations: accept a bootstrap (or upgrade) of many clusters, queue one work item per
cluster, move through the waves, and show progress.

An operation is created whole or not at all: the request is checked for every cluster before anything
is stored or queued (400 naming the field and the cluster, ``clusters[3].path``). Then its items are
stored (:mod:`shared.fleet.store`), the first wave's work items are sent to the queue, and the caller
gets the operation's id. The queue worker (:mod:`shared.fleet.worker`) runs each item; when the last
item of a wave is final, :func:`advance` queues the next wave if every item of this one succeeded,
and otherwise marks the later waves ``skipped`` (a failed wave stops the rollout). :func:`advance` is
idempotent and is called by the worker, the poison handler and every read of the operation, so an
interrupted step (an instance lost between two writes) is finished by whoever comes next: a work item
that was stored but never sent is sent then, a running item whose lease expired is failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from shared import errors
from shared.errors import InvalidInput, shown

from . import events
from .store import FAILED, FINAL, PENDING, RUNNING, SKIPPED, SUCCEEDED, Conflict, Item, Operation, OperationStore, now

log = logging.getLogger(__name__)

#: host.json ``extensions.queues.maxDequeueCount``: attempts per work item before it is poison
MAX_DEQUEUE_COUNT = 5
#: seconds one work item may run (host.json ``functionTimeout`` is 10 min; the rest is a margin)
RUN_BUDGET_SECONDS = 540
#: a running item whose worker has not finished this long after it started counts as abandoned
LEASE_SECONDS = 900
#: Flux's ``--timeout`` default, and the longest the worker waits for health within its budget
DEFAULT_TIMEOUT = "5m"
MAX_TIMEOUT_SECONDS = 480
#: clusters in one operation
MAX_CLUSTERS = 1000
#: seconds a caller is asked to wait before polling again (``Retry-After``)
RETRY_AFTER_SECONDS = 10
#: the request fields that belong to one cluster of a fleet bootstrap (the rest are shared)
CLUSTER_FIELDS = ("path", "clusterName", "kubeconfigSecret", "context", "clusterResourceId", "localAccounts",
                  "privateKeySecret")
#: body size accepted by the operation endpoints
MAX_BODY_BYTES = 1024 * 1024
_SHARED_HINTS = frozenset({"url", "branch", "version", "passwordSecret", "withBearerToken", "components",
                           "componentsExtra", "namespace", "registry", "interval", "timeout", "force"})
_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass
class Plan:
    """A checked operation, ready to store: ``spec`` (shared), one :class:`Item` per cluster,
    ``waves`` (how many)."""

    kind: str
    spec: dict
    items: list[Item] = field(default_factory=list)
    waves: int = 1


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(op_id: Any) -> str:
    """``op_id`` if it has the shape of an operation id (32 hex); NotFound otherwise (no lookup)."""
    if not isinstance(op_id, str) or not _ID.fullmatch(op_id):
        raise errors.NotFound(f"operation {shown(op_id)} not found")
    return op_id


def check_idempotency_key(value: Any) -> str | None:
    """The ``Idempotency-Key`` header (1-255 visible ASCII characters), None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise InvalidInput("Idempotency-Key", "must be 1-255 visible ASCII characters (e.g. a UUID)")
    return value


def digest(kind: str, body: Any) -> str:
    """What makes two requests the same request: the kind and the body's canonical JSON."""
    text = json.dumps({"kind": kind, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _timeout(body: dict) -> float:
    from shared.flux.options import parse_timeout

    value = body.get("timeout")
    if value is None:
        value = DEFAULT_TIMEOUT
    if not isinstance(value, str):
        raise InvalidInput("timeout", "must be a string (a Go duration such as 5m)")
    seconds = parse_timeout(value, "timeout")
    if seconds > MAX_TIMEOUT_SECONDS:
        raise InvalidInput("timeout", f"must be at most {MAX_TIMEOUT_SECONDS // 60}m (a work item runs within the "
                                      "Function's 10-minute timeout)")
    return seconds


# -- bootstrap ----------------------------------------------------------------------------------------


def plan_bootstrap(body: Any, *, vault=None, access=None, concurrency: int = 8) -> Plan:
    """Check a fleet bootstrap request and return its :class:`Plan`; nothing is written anywhere.

    ``body``: the fields of ``POST /api/bootstrap`` shared by every cluster (``url``, ``branch``,
    ``version``, ``components``, ``passwordSecret``...), ``timeout`` (Flux's ``--timeout``, default
    ``5m``, at most 8m: each cluster waits this long for health on the queue worker), and ``clusters``:
    a list of objects holding what is each cluster's own: ``path``, ``clusterName``, the cluster
    reference (``kubeconfigSecret`` [+ ``context``] or ``clusterResourceId`` [+ ``localAccounts``]) and,
    over SSH, ``privateKeySecret`` (its deploy key).

    Checked for every cluster, before any write: the fields as a single bootstrap checks them, names
    given twice (``clusterName``, or the same ``path`` of the same branch), the sync URL's resolution,
    the distribution (loaded once: every cluster gets the same release, ``latest`` resolved now), the
    PAT secret and its tag (read once, when the app pushes with a PAT: not with ``withBearerToken``,
    ``sourceProvider: azure`` or an ``ssh://`` url, :func:`shared.bootstrap.service.git_credential`),
    each kubeconfig secret (exists, marked as a kubeconfig) and over SSH each cluster's key (named or
    generated by an earlier single bootstrap, :func:`_check_ssh_key`: a fleet never generates one),
    ``concurrency`` clusters at a time. ``vault``/``access`` default to the app's.

    Raises ``InvalidInput`` whose ``field`` names the shared field (``url``) or the cluster's
    (``clusters[3].path``); ``SettingError``, ``UpstreamError`` (Key Vault, the distribution)."""
    from concurrent.futures import ThreadPoolExecutor

    from shared import services
    from shared.bootstrap import options_from_request, service
    from shared.clusters import ClusterAccess

    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    clusters = body.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        raise InvalidInput("clusters", "is required: a list of clusters, each with its path and cluster reference "
                                       "(kubeconfigSecret or clusterResourceId)")
    if len(clusters) > MAX_CLUSTERS:
        raise InvalidInput("clusters", f"has {len(clusters)} entries; at most {MAX_CLUSTERS} per operation")
    shared = {k: v for k, v in body.items() if k not in ("clusters", "timeout")}
    for key in CLUSTER_FIELDS:
        if key in shared:
            raise InvalidInput(key, f"belongs to each cluster: give it as clusters[i].{key}")
    timeout = _timeout(body)
    requests = []
    seen_names: dict[str, int] = {}
    seen_paths: dict[tuple, int] = {}
    for i, cluster in enumerate(clusters):
        where = f"clusters[{i}]"
        if not isinstance(cluster, dict):
            raise InvalidInput(where, "must be an object with the cluster's path and reference")
        for key in cluster:
            if key not in CLUSTER_FIELDS:
                from shared.trust import safe_field_name

                name = safe_field_name(key)
                hint = " (a shared field: give it once, next to clusters)" if key in _SHARED_HINTS else ""
                raise InvalidInput(f"{where}.{name}", f"is not a field of one cluster{hint}; a cluster takes "
                                                      f"{', '.join(CLUSTER_FIELDS)}")
        try:
            opts, refs = options_from_request({**shared, **cluster})
        except InvalidInput as exc:
            name = f"{where}.{exc.field}" if exc.field in CLUSTER_FIELDS else exc.field
            raise InvalidInput(name, exc.message) from None
        name = refs["clusterName"]
        if name in seen_names:
            raise InvalidInput(f"{where}.clusterName", f"{name!r} is also the name of clusters[{seen_names[name]}]; "
                                                       "give each cluster its own path or clusterName")
        seen_names[name] = i
        key = (opts.sync_url, opts.branch, opts.path)
        if key in seen_paths:
            raise InvalidInput(f"{where}.path", f"{shown(opts.path or '.')} of branch {opts.branch!r} is also "
                                                f"clusters[{seen_paths[key]}]'s; each cluster syncs its own folder")
        seen_paths[key] = i
        requests.append((opts, refs))
    opts, refs = requests[0]
    request = service.check_request({**shared, **clusters[0]})  # resolution and distribution, once
    vault = vault or services.keyvault()
    if service.git_credential(opts) == service.PAT:  # as a single bootstrap reads it (service.credentials)
        service.pat(vault, refs["passwordSecret"], refs["destination"])
    access = access or ClusterAccess(keyvault=vault)

    def check_cluster(i: int) -> None:
        cluster_opts, cluster_refs = requests[i]
        secret = cluster_refs["kubeconfigSecret"]
        if secret is not None:
            try:
                access.kubeconfig(secret)
            except InvalidInput as exc:
                raise InvalidInput(f"clusters[{i}].kubeconfigSecret", exc.message) from None
        if cluster_opts.ssh:
            _check_ssh_key(vault, cluster_opts, cluster_refs, f"clusters[{i}]")

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        list(pool.map(check_cluster, range(len(requests))))  # the first error, in order
    spec = {"request": {**shared, "version": request.dist.version}, "version": request.dist.version,
            "timeoutSeconds": timeout}
    items = [Item(op_id="", index=i, name=refs["clusterName"], request=dict(clusters[i]))
             for i, (_, refs) in enumerate(requests)]
    return Plan("bootstrap", spec, items, 1)


def _check_ssh_key(vault, opts, refs: dict, where: str) -> None:
    """A cluster of a fleet bootstrap over SSH must have its key already: a work item cannot stop at
    "authorise this new key" (``POST /api/bootstrap`` answers 202 with the public key), so the key named
    by ``privateKeySecret``, or else the one a single bootstrap generated for the cluster
    (``flux-ssh-<clusterName>``), is read and checked now as the run will (:func:`shared.bootstrap.sshkeys.resolve`
    with nothing generated: its tag covers the URLs, an RSA key of 2048 bits or more, its passphrase).
    Raises ``InvalidInput("<where>.privateKeySecret")`` (``passwordSecret`` for the shared passphrase)."""
    from shared.bootstrap import sshkeys

    try:
        sshkeys.resolve(vault, opts, refs, generate=False)
    except sshkeys.KeyMissing as exc:
        raise InvalidInput(f"{where}.privateKeySecret", (
            f"no SSH key is named and Key Vault secret {shown(exc.secret)} (the key generated for cluster "
            f"{refs['clusterName']!r}) does not exist; a fleet bootstrap cannot wait for a new key to be given access "
            "to the repository: bootstrap this cluster once alone (POST /api/bootstrap generates its key and answers "
            f"with the public key to add in Azure DevOps), or name a key of your own ({where}.privateKeySecret)")) from None
    except InvalidInput as exc:
        name = f"{where}.privateKeySecret" if exc.field == "privateKeySecret" else exc.field
        raise InvalidInput(name, exc.message) from None


# -- submission -----------------------------------------------------------------------------------------


@dataclass
class Submitted:
    """The answer to a POST: the operation, and whether it was an earlier one (``replayed``)."""

    operation: Operation
    replayed: bool = False


class KeyReused(errors.FluxOpsError):
    """An ``Idempotency-Key`` sent again with another request (422, as the IETF
    ``draft-ietf-httpapi-idempotency-key-header`` asks)."""

    status = 422
    code = "IdempotencyKeyReused"
    field = "Idempotency-Key"


def submit(kind: str, body: Any, plan: Callable[[Any], Plan], *, store: OperationStore, queue,
           idempotency_key: str | None = None) -> Submitted:
    """Create the operation ``plan(body)`` describes and queue its first wave; or, when
    ``idempotency_key`` was seen before with the same ``kind`` and ``body``, return that operation
    (queueing whatever of it had not been queued yet). Raises what ``plan`` raises, :class:`KeyReused`,
    ``UpstreamError`` (storage)."""
    request_digest = digest(kind, body)
    key_digest = hashlib.sha256(idempotency_key.encode("ascii")).hexdigest() if idempotency_key else None
    if key_digest:
        earlier = store.key(key_digest)
        if earlier is not None:
            return _replay(store, queue, earlier, request_digest)
    checked = plan(body)
    op = Operation(id=new_id(), kind=kind, spec=checked.spec, waves=checked.waves, total=len(checked.items))
    for item in checked.items:
        item.op_id = op.id
    store.create(op, checked.items)
    if key_digest:
        earlier = store.claim_key(key_digest, op.id, request_digest)
        if earlier is not None:  # another request with this key won the race: ours was never queued
            store.delete(op.id)
            return _replay(store, queue, earlier, request_digest)
    log.info("fleet %s operation %s accepted: %d cluster(s) in %d wave(s)", kind, op.id, op.total, op.waves)
    advance(store, queue, op.id)
    return Submitted(store.get(op.id) or op)


def _replay(store: OperationStore, queue, earlier: tuple[str, str], request_digest: str) -> Submitted:
    op_id, earlier_digest = earlier
    if earlier_digest != request_digest:
        raise KeyReused("Idempotency-Key: was already used for a different request; use a new key for a new operation")
    op = store.get(op_id)
    if op is None:
        raise errors.UpstreamError(f"operation {op_id} of this Idempotency-Key is missing from the fleet table")
    advance(store, queue, op_id)  # queue what an interrupted first request left unqueued
    return Submitted(store.get(op_id) or op, replayed=True)


# -- progress -------------------------------------------------------------------------------------------


def message(op_id: str, index: int) -> str:
    """The work item's queue message: which item of which operation (the rest is in the table)."""
    return json.dumps({"v": 1, "op": op_id, "item": index}, separators=(",", ":"))


def expire_leases(store: OperationStore, items: list[Item]) -> None:
    """Fail every running item whose lease has passed: its worker is gone (instance lost, crash or
    function timeout) and no redelivery took it over. A later redelivery of its message may still
    run it again (:mod:`shared.fleet.worker`)."""
    t = now()
    for item in items:
        if item.state == RUNNING and item.lease_until is not None and item.lease_until < t:
            try:
                store.update_item(item, etag=item.etag, state=FAILED, finished_at=t, error={
                    "code": "LeaseExpired",
                    "message": f"the worker of attempt {item.attempt} stopped without finishing (instance lost, crash or "
                               f"function timeout); its lease ran out at {item.lease_until:%Y-%m-%d %H:%M:%S} UTC"})
                log.warning("fleet operation %s: %s's lease expired", item.op_id, item.name)
            except Conflict:
                pass  # a worker moved it meanwhile


def advance(store: OperationStore, queue, op_id: str) -> Operation | None:
    """Bring operation ``op_id`` forward as far as its items allow (idempotent, safe to call from
    anywhere at any time): expire lost leases; queue the current wave's items that were never queued;
    when the current wave is final, queue the next one (all succeeded) or skip the later waves (one
    failed); when everything is final, mark the operation succeeded or failed. Returns the operation
    (None when unknown)."""
    op = store.get(op_id)
    if op is None:
        return None
    items = store.items(op_id)
    expire_leases(store, items)
    for _ in range(op.waves + 1):
        if op.state != RUNNING:
            return op
        wave = [i for i in items if i.wave == op.current_wave]
        for item in wave:
            if item.state == PENDING and item.queued_at is None:
                queue.send(message(op_id, item.index))
                store.update_item(item, queued_at=now())
        if not all(i.final for i in wave):
            return op
        failed = [i for i in wave if i.state != SUCCEEDED]
        counts = _counts(items)
        last = op.current_wave >= op.waves - 1
        if failed and op.waves > 1 and not last:
            reason = f"wave {op.current_wave + 1} failed ({len(failed)} of {len(wave)} cluster(s)): later waves skipped"
            for item in items:
                if item.wave > op.current_wave and not item.final:
                    store.update_item(item, state=SKIPPED, finished_at=now(),
                                      error={"code": "Skipped", "message": reason})
            counts = _counts(items)
            if _finish(store, op, FAILED, reason):
                events.emit(op, succeeded=False, message=f"{reason}: {_names(failed)}", counts=counts, wave=op.current_wave)
                events.emit(op, succeeded=False, message=reason, counts=counts)
            return op
        if last:
            state = FAILED if any(i.state != SUCCEEDED for i in items) else SUCCEEDED
            text = _summary(counts)
            if _finish(store, op, state, text):
                if op.waves > 1:
                    events.emit(op, succeeded=not failed, counts=counts, wave=op.current_wave,
                                message=f"wave {op.current_wave + 1} of {op.waves}: " +
                                        (f"{len(failed)} cluster(s) failed: {_names(failed)}" if failed else "succeeded"))
                bad = [i for i in items if i.state != SUCCEEDED]
                events.emit(op, succeeded=state == SUCCEEDED, counts=counts,
                            message=f"{op.kind} of {op.total} cluster(s): {text}" + (f" ({_names(bad)})" if bad else ""))
            return op
        try:  # one caller moves the operation on; the others see the new wave next time round
            store.update_operation(op, etag=op.etag, current_wave=op.current_wave + 1)
        except Conflict:
            op = store.get(op_id) or op
            items = store.items(op_id)
            continue
        events.emit(op, succeeded=True, counts=counts, wave=op.current_wave - 1,
                    message=f"wave {op.current_wave} of {op.waves} succeeded: {_names(wave)}")
        log.info("fleet operation %s: wave %d succeeded, starting wave %d", op_id, op.current_wave, op.current_wave + 1)
    return op


def _finish(store: OperationStore, op: Operation, state: str, text: str) -> bool:
    """Mark ``op`` final; False when another caller did it first."""
    try:
        store.update_operation(op, etag=op.etag, state=state, finished_at=now(), message=text)
    except Conflict:
        return False
    log.log(logging.INFO if state == SUCCEEDED else logging.WARNING, "fleet operation %s %s: %s", op.id, state, text)
    return True


def _counts(items: list[Item]) -> dict[str, int]:
    counts = {s: 0 for s in (PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED)}
    for item in items:
        counts[item.state] = counts.get(item.state, 0) + 1
    return counts


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n)


def _names(items: list[Item], limit: int = 20) -> str:
    names = [i.name for i in items]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def view(store: OperationStore, queue, op_id: str) -> dict:
    """``GET /api/operations/{id}``: the operation and its clusters, after :func:`advance`.

    ``{"id", "kind", "state", "createdAt", "updatedAt", "finishedAt", "message", "version", "dryRun",
    "timeoutSeconds", "counts": {state: n}, "waves": [{"wave", "state", "clusters": [name]}],
    "clusters": [{"index", "name", "wave", "state", "attempt", "startedAt", "finishedAt", "progress",
    "result", "error"}]}``. Raises NotFound."""
    from .store import iso

    check_id(op_id)
    op = advance(store, queue, op_id)
    if op is None:
        raise errors.NotFound(f"operation {op_id} not found")
    items = store.items(op_id)
    waves = []
    for w in range(op.waves):
        members = [i for i in items if i.wave == w]
        states = {i.state for i in members}
        if states <= set(FINAL):
            state = SUCCEEDED if states == {SUCCEEDED} else SKIPPED if states == {SKIPPED} else FAILED
        else:
            state = RUNNING if w == op.current_wave else PENDING
        waves.append({"wave": w + 1, "state": state, "clusters": [i.name for i in members]})
    return {
        "id": op.id, "kind": op.kind, "state": op.state, "createdAt": iso(op.created_at), "updatedAt": iso(op.updated_at),
        "finishedAt": iso(op.finished_at), "message": op.message, "version": op.spec.get("version"),
        "dryRun": bool(op.spec.get("dryRun")), "timeoutSeconds": op.spec.get("timeoutSeconds"),
        "counts": _counts(items), "waves": waves,
        "clusters": [{"index": i.index, "name": i.name, "wave": i.wave + 1, "state": i.state, "attempt": i.attempt,
                      "startedAt": iso(i.started_at), "finishedAt": iso(i.finished_at), "progress": i.progress,
                      "result": i.result, "error": i.error} for i in items],
    }


def recent(store: OperationStore, limit: int = 20) -> list[dict]:
    """The newest operations, newest first: ``[{"id", "kind", "state", "createdAt", "finishedAt",
    "total", "message", "version"}]`` (no per-cluster rows: :func:`view` has them)."""
    from .store import iso

    return [{"id": o.id, "kind": o.kind, "state": o.state, "createdAt": iso(o.created_at),
             "finishedAt": iso(o.finished_at), "total": o.total, "message": o.message,
             "version": o.spec.get("version"), "dryRun": bool(o.spec.get("dryRun"))}
            for o in store.operations(limit)]


def lease_until() -> Any:
    return now() + timedelta(seconds=LEASE_SECONDS)


__all__ = ["CLUSTER_FIELDS", "DEFAULT_TIMEOUT", "KeyReused", "LEASE_SECONDS", "MAX_CLUSTERS", "MAX_DEQUEUE_COUNT",
           "MAX_TIMEOUT_SECONDS", "Plan", "RETRY_AFTER_SECONDS", "RUN_BUDGET_SECONDS", "Submitted", "advance",
           "check_id", "check_idempotency_key", "digest", "expire_leases", "message", "plan_bootstrap", "recent",
           "submit", "view"]
