"""The queue worker: runs one work item (one cluster of a fleet operation) per queue message.

What the Functions host guarantees (learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger,
"Poison messages", "Concurrency"): a message is invisible while its function runs and is redelivered
with a higher ``DequeueCount`` when the function fails (after host.json's ``visibilityTimeout``) or its
instance is lost (after the 10-minute visibility the host keeps renewing); after ``maxDequeueCount``
attempts (:data:`~shared.fleet.operations.MAX_DEQUEUE_COUNT`) it goes to ``<queue>-poison``. A
message may therefore come more than once, also after its item was finished. So each delivery:

1. reads its item; a final item, an operation that is over, or an item running under another message
   whose lease holds is left alone (the message is completed);
2. claims the item with ``If-Match`` on its row (``running``, this attempt, a lease of
   :data:`~shared.fleet.operations.LEASE_SECONDS`): two deliveries never run one item at once. A
   redelivery of the same message with a higher dequeue count takes over an item left ``running``
   (its previous attempt's instance is gone, else the message would still be invisible);
3. runs it (a bootstrap: :func:`shared.bootstrap.service.run` with Flux's full ``timeout`` and
   :data:`~shared.fleet.operations.RUN_BUDGET_SECONDS`; an upgrade: :mod:`shared.fleet.upgrade`),
   writing the last progress line to the row every few seconds;
4. records ``succeeded`` or ``failed`` with the result or the error, and the cluster's last operation;
   a transient failure (a peer failed or could not be reached) before the last attempt puts the item
   back to ``pending`` and raises :class:`RetryLater`, so the host delivers it again;
5. calls :func:`shared.fleet.operations.advance` (next wave, end of the operation).

:func:`handle_poison` is the poison queue's trigger: the item of a message that used all its attempts
without finishing (its worker crashed or timed out each time) is failed with that reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from shared import errors

from . import operations
from .operations import MAX_DEQUEUE_COUNT, RUN_BUDGET_SECONDS
from .store import FAILED, PENDING, RUNNING, SUCCEEDED, Conflict, Item, Operation, now

log = logging.getLogger(__name__)

#: pushes tried per step when other clusters of the branch push at the same time
PUSH_ATTEMPTS = 10
#: the last progress lines kept on the item's row
LOG_LINES = 40
#: seconds between two progress writes of one item
PROGRESS_EVERY_SECONDS = 2.0


_branch_locks: dict[tuple[str, str], threading.Lock] = {}
_branch_locks_guard = threading.Lock()


def branch_lock(url: str, branch: str):
    """A callable returning this process's lock of ``url``'s ``branch``: concurrent work items of one
    instance push to a branch one at a time (each push would otherwise make the others start over
    from a fresh clone); instances still race, and the runner's retries settle that."""
    with _branch_locks_guard:
        lock = _branch_locks.setdefault((url, branch), threading.Lock())
    return lambda: lock


class RetryLater(Exception):
    """Raised to the Functions host so it delivers the message again (the item is ``pending`` with
    the error in its row). ``str()`` says why, without credentials."""


class ItemFailed(Exception):
    """A work item that ran and failed: ``error`` (``{"code", "message"[, "field"]}``), ``result``
    (what it did before failing, or None), ``retryable``."""

    def __init__(self, error: dict, result: dict | None = None, *, retryable: bool = False):
        super().__init__(error.get("message", ""))
        self.error, self.result, self.retryable = error, result, retryable


def _services(store, queue):
    from shared import services

    return store or services.fleet_store(), queue or services.work_queue()


def parse(body: bytes | str) -> tuple[str, int] | None:
    """``(operation id, item index)`` of a work item message, None when it is not one (logged)."""
    try:
        doc = json.loads(body)
        op_id, index = doc["op"], doc["item"]
        operations.check_id(op_id)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < operations.MAX_CLUSTERS:
            raise ValueError("item")
    except (ValueError, KeyError, TypeError, errors.NotFound, RecursionError):
        log.error("fleet worker: dropping a queue message that is not a fleet work item (%d bytes)", len(body or b""))
        return None
    return op_id, index


class _Progress:
    """Progress sink of one item: keeps the last lines and writes the newest to the row at most every
    :data:`PROGRESS_EVERY_SECONDS` (merge, no ETag: the claim already holds the item)."""

    def __init__(self, store, item: Item, final_attempt: bool = False):
        self.store, self.item = store, item
        #: no redelivery follows this attempt (a failure now is the item's last word)
        self.final_attempt = final_attempt
        self.lines: list[str] = []
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line[:500])
            del self.lines[:-LOG_LINES]
            t = time.monotonic()
            if t - self._last < PROGRESS_EVERY_SECONDS:
                return
            self._last = t
        try:
            self.store.update_item(self.item, progress=line)
        except errors.FluxOpsError as exc:  # progress is a courtesy: never fail the run for it
            log.warning("fleet worker: progress of %s not recorded: %s", self.item.name, exc)


def handle(body: bytes | str, *, dequeue_count: int, message_id: str, store=None, queue=None, runners=None) -> None:
    """Process one delivery of a work item message (see the module doc). ``dequeue_count`` and
    ``message_id`` are the host's (``func.QueueMessage``). Returns normally when the message is done
    with (the host deletes it); raises :class:`RetryLater` for the host to deliver it again. Storage
    failures raise too (the host retries them like any failure)."""
    ref = parse(body)
    if ref is None:
        return
    store, queue = _services(store, queue)
    op_id, index = ref
    dequeue_count = max(1, int(dequeue_count or 1))
    for _ in range(3):  # a lost If-Match race: read again and decide again
        op, item = store.get(op_id), store.item(op_id, index)
        if op is None or item is None:
            log.error("fleet worker: operation %s item %d not found; dropping the message", op_id, index)
            return
        if not _should_run(op, item, dequeue_count, message_id):
            operations.advance(store, queue, op_id)
            return
        try:
            store.update_item(item, etag=item.etag, state=RUNNING, attempt=dequeue_count, message_id=message_id or "",
                              started_at=now(), finished_at=None, lease_until=operations.lease_until(),
                              progress="started", error=None)
            break
        except Conflict:
            continue
    else:
        log.warning("fleet worker: operation %s item %d kept changing; leaving the message to another delivery", op_id, index)
        return
    _run(store, queue, op, item, dequeue_count, runners or RUNNERS)


def _should_run(op: Operation, item: Item, dequeue_count: int, message_id: str) -> bool:
    if op.state != RUNNING or item.wave != op.current_wave:
        log.info("fleet worker: %s of operation %s is not due (operation %s, wave %d of %d); message completed",
                 item.name, op.id, op.state, item.wave + 1, op.waves)
        return False
    if item.state == PENDING:
        return True
    if item.state == RUNNING:
        same_message = not item.message_id or item.message_id == message_id
        if same_message and dequeue_count > item.attempt:
            log.warning("fleet worker: attempt %d of %s (operation %s) did not finish (its instance is gone); "
                        "attempt %d takes over", item.attempt, item.name, op.id, dequeue_count)
            return True
        if item.lease_until is not None and item.lease_until < now():
            log.warning("fleet worker: the lease of %s (operation %s) has expired; taking over", item.name, op.id)
            return True
        log.info("fleet worker: %s (operation %s) is being run by another delivery; message completed", item.name, op.id)
        return False
    if item.state == FAILED and (item.error or {}).get("code") == "LeaseExpired" and dequeue_count > item.attempt:
        log.warning("fleet worker: %s (operation %s) was failed when its lease ran out; attempt %d runs it again",
                    item.name, op.id, dequeue_count)
        return True
    log.info("fleet worker: %s of operation %s is already %s; message completed", item.name, op.id, item.state)
    return False


def _run(store, queue, op: Operation, item: Item, dequeue_count: int, runners: dict) -> None:
    progress = _Progress(store, item, final_attempt=dequeue_count >= MAX_DEQUEUE_COUNT)
    deadline = time.monotonic() + RUN_BUDGET_SECONDS
    started = time.monotonic()
    log.info("fleet worker: %s %s (operation %s, attempt %d)", op.kind, item.name, op.id, dequeue_count)
    try:
        result = runners[op.kind](op, item, progress, deadline)
    except ItemFailed as failed:
        if failed.retryable and dequeue_count < MAX_DEQUEUE_COUNT:
            store.update_item(item, state=PENDING, lease_until=None, error={**failed.error, "retrying": True},
                              progress=f"attempt {dequeue_count} failed; retrying", log=progress.lines)
            log.warning("fleet worker: %s of operation %s failed (attempt %d of %d), retrying: %s", item.name, op.id,
                        dequeue_count, MAX_DEQUEUE_COUNT, failed.error.get("message"))
            raise RetryLater(f"{item.name}: {failed.error.get('message')}") from None
        if failed.retryable:
            failed.error["message"] = f"gave up after {dequeue_count} attempts: {failed.error.get('message')}"
        _final(store, op, item, FAILED, result=failed.result, error=failed.error, lines=progress.lines)
        log.error("fleet worker: %s of operation %s failed: %s", item.name, op.id, failed.error.get("message"))
    else:
        _final(store, op, item, SUCCEEDED, result=result, lines=progress.lines)
        log.info("fleet worker: %s of operation %s succeeded in %.1f s", item.name, op.id, time.monotonic() - started)
    operations.advance(store, queue, op.id)


def _final(store, op: Operation, item: Item, state: str, *, result=None, error=None, lines=()) -> None:
    t = now()
    store.update_item(item, state=state, finished_at=t, lease_until=None, result=result, error=error, log=list(lines),
                      progress=(error or {}).get("message", "") if state == FAILED else (list(lines)[-1:] or [""])[0])
    try:
        store.set_last(item.name, {"operation": op.id, "kind": op.kind, "state": state, "at": t.isoformat(),
                                   "message": (error or {}).get("message", "")[:300], "version": op.spec.get("version")})
    except errors.FluxOpsError as exc:
        log.warning("fleet worker: last operation of %s not recorded: %s", item.name, exc)


def handle_poison(body: bytes | str, *, store=None, queue=None) -> None:
    """The poison queue's trigger: fail the item of a message that used every attempt without its
    worker finishing (a crash, a lost instance or a function timeout each time), then advance."""
    ref = parse(body)
    if ref is None:
        return
    store, queue = _services(store, queue)
    op_id, index = ref
    op, item = store.get(op_id), store.item(op_id, index)
    if op is None or item is None:
        log.error("fleet poison: operation %s item %d not found", op_id, index)
        return
    if not item.final:
        last = (item.error or {}).get("message")
        reason = (f"gave up after {MAX_DEQUEUE_COUNT} attempts, the last of which did not finish: {last}" if last else
                  f"gave up after {MAX_DEQUEUE_COUNT} attempts: each stopped without finishing (crash, lost instance or "
                  "function timeout)")
        _final(store, op, item, FAILED, error={"code": "Poison", "message": reason}, lines=item.log)
        log.error("fleet poison: %s of operation %s failed: %s", item.name, op_id, reason)
    operations.advance(store, queue, op_id)


# -- what one item does ----------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    """A peer that failed or could not be reached may answer next time; bad input, refused
    credentials, conflicts and a rejected object will not."""
    if isinstance(exc, errors.FluxOpsError):
        return isinstance(exc, errors.UpstreamError) and getattr(exc, "code", "") != "ApplyFailed"
    return True  # a bug or an SDK error: the last attempt fails the item with it


def _error(exc: BaseException) -> dict:
    if isinstance(exc, errors.FluxOpsError):
        out = {"code": exc.code, "message": str(exc)}
        if exc.field:
            out["field"] = exc.field
        return out
    return {"code": "InternalError", "message": f"internal error ({type(exc).__name__}); see the Function's log"}


def _compact(summary: dict) -> dict:
    """A bootstrap's answer without its progress log (kept apart) and with the changes counted."""
    out = {k: v for k, v in summary.items() if k != "log"}
    cluster = dict(out.get("cluster") or {})
    changes = cluster.pop("changes", [])
    cluster["changed"] = [c for c in changes if not c.endswith(" unchanged")][:60]
    out["cluster"] = cluster
    return out


def run_bootstrap(op: Operation, item: Item, progress, deadline: float) -> dict:
    """One cluster of a fleet bootstrap: the shared request with the cluster's own fields, the release
    resolved when the operation was accepted, Flux's ``timeout``; the same drive as ``POST
    /api/bootstrap`` (:mod:`shared.bootstrap.service`). Returns the result; raises :class:`ItemFailed`."""
    from shared.bootstrap import service

    from . import events

    body = {**op.spec.get("request", {}), **item.request}
    request = None
    try:
        request = service.check_request(body, timeout=float(op.spec.get("timeoutSeconds") or 0))
        outcome = service.run(request, deadline=deadline, progress_sink=progress, push_attempts=PUSH_ATTEMPTS,
                              git_lock=branch_lock(request.opts.sync_url, request.opts.branch),
                              generate_key=False)  # checked when accepted: a work item cannot wait for a new key
    except service.RunFailed as failed:
        done = None
        if failed.run is not None:
            done = {"commits": [{"sha": c.sha, "message": c.message} for c in failed.run.result.commits]}
        if not isinstance(failed.error, errors.FluxOpsError):
            log.error("fleet worker: %s failed unexpectedly", item.name, exc_info=failed.error)
        error = _error(failed.error)
        if not _retryable(failed.error) or progress.final_attempt:
            events.announce_cluster(request, failed.run.result if failed.run else None, error["message"])
        raise ItemFailed(error, done, retryable=_retryable(failed.error)) from None
    except errors.FluxOpsError as exc:
        if request is not None and (not _retryable(exc) or progress.final_attempt):
            events.announce_cluster(request, error=str(exc))
        raise ItemFailed(_error(exc), retryable=_retryable(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback, retried, then failed
        log.error("fleet worker: %s failed unexpectedly", item.name, exc_info=True)
        raise ItemFailed(_error(exc), retryable=True) from None
    result = _compact(outcome.summary())
    events.announce_cluster(request, outcome.result, outcome.failure)
    if outcome.failure:
        raise ItemFailed({"code": "HealthCheckFailed", "message": outcome.failure}, result)
    return result


def _run_upgrade(op: Operation, item: Item, progress, deadline: float) -> dict:
    from .upgrade import run_upgrade

    return run_upgrade(op, item, progress, deadline)


#: what runs an item, by operation kind
RUNNERS: dict[str, Any] = {"bootstrap": run_bootstrap, "upgrade": _run_upgrade}

__all__ = ["ItemFailed", "PUSH_ATTEMPTS", "RUNNERS", "RetryLater", "handle", "handle_poison", "parse", "run_bootstrap"]
