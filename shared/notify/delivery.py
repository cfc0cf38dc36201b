"""The forwarder: decode → route → dedupe → deliver with retries → dead-letter, for one batch.

Guarantees (issues #3, #13):

- every message ends as *delivered* (or *unchanged*/*skipped* for Azure DevOps, or a *duplicate*) for each
  target that takes it, or as a dead-letter record (rejected message, or undeliverable (event, target)
  with the error and the attempt count); a redelivered message finds its letter and writes no second one;
- what a target cannot represent (Azure DevOps: no Git commit, ``Progressing``) is *skipped* with the reason,
  logged at info, before any claim, as Flux's provider skips it;
- retries: 429, 408/425, 5xx, connection errors and timeouts are retried with exponential backoff and full
  jitter (``min(max, base * 2^(n-1))``), waiting at least ``Retry-After``; at most ``max_attempts`` per
  (event, target), and never past the batch budget (``batch_budget`` seconds from the start, well inside
  host.json's ``functionTimeout``): what is still failing then is dead-lettered;
- dedupe costs about two Table requests per 100 (event, target) pairs: claims go in one entity-group
  transaction per target and 100 events, "delivered" marks likewise (:mod:`.dedupe`, :mod:`.tablebatch`); a
  repeat of an (event, target) pair inside the batch is a duplicate without a request;
- each target has its own ``concurrency`` worker threads (so a slow target does not hold the others'),
  deliveries starting as soon as their chunk is claimed; payloads are rendered once per event and kind;
- delivery is at least once: a request that timed out may still have reached the target, and is sent again;
- a storage failure (dedupe table or dead-letter container) raises :class:`StorageUnavailable` after the
  other jobs finished: the invocation fails and Event Hub delivers the batch again (the dedupe records
  make that retry skip what was already marked delivered);
- :meth:`Forwarder.replay` respects dedupe: pairs delivered meanwhile are skipped (``force`` resends);
- after a batch, at most once per ``purge_interval`` per process, dedupe rows past the window and the
  lease are purged for at most 2 s (:meth:`.dedupe.TableDedupeStore.purge`); a purge failure is logged only.

Settings (app settings, :meth:`DeliverySettings.from_env`): ``NOTIFY_MAX_ATTEMPTS`` (5),
``NOTIFY_BACKOFF_BASE_SECONDS`` (0.5), ``NOTIFY_BACKOFF_MAX_SECONDS`` (30), ``NOTIFY_BATCH_BUDGET_SECONDS``
(240), ``NOTIFY_CONCURRENCY`` (32), ``NOTIFY_SECRET_TTL_SECONDS`` (300),
``NOTIFY_DEDUPE_PURGE_INTERVAL_SECONDS`` (60; 0 turns the purge off).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Mapping

from shared import errors
from shared.settings import number

from .deadletter import REJECTED, UNDELIVERABLE, letter_id, make_record
from .dedupe import DELIVERED as DELIVERED_STATE
from .dedupe import IN_FLIGHT, TX_LIMIT, StorageUnavailable
from .events import FluxEvent, InvalidEvent, parse_event
from .routing import RoutingConfig, Target
from .targets import DELIVERED, SKIPPED, UNCHANGED, DeliveryError, Sender, Skip, commit_status_for

log = logging.getLogger(__name__)

DUPLICATE, FAILED = "duplicate", "dead-lettered"
CLAIM_WORKERS = 4  # dedupe transactions in flight (each claims up to 100 pairs)


@dataclass(frozen=True)
class DeliverySettings:
    """Delivery tunables; durations in seconds, ``concurrency`` = requests in flight per target (worker
    threads of each target, and pooled connections per host)."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    batch_budget: float = 240.0
    concurrency: int = 32
    secret_ttl: float = 300.0
    purge_interval: float = 60.0
    purge_budget: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "DeliverySettings":
        """Raises :class:`shared.errors.SettingError` naming the bad app setting."""
        return cls(max_attempts=number(environ, "NOTIFY_MAX_ATTEMPTS", 5, integer=True, minimum=1),
                   backoff_base=number(environ, "NOTIFY_BACKOFF_BASE_SECONDS", 0.5),
                   backoff_max=number(environ, "NOTIFY_BACKOFF_MAX_SECONDS", 30.0),
                   batch_budget=number(environ, "NOTIFY_BATCH_BUDGET_SECONDS", 240.0, minimum=1),
                   concurrency=number(environ, "NOTIFY_CONCURRENCY", 32, integer=True, minimum=1),
                   secret_ttl=number(environ, "NOTIFY_SECRET_TTL_SECONDS", 300.0),
                   purge_interval=number(environ, "NOTIFY_DEDUPE_PURGE_INTERVAL_SECONDS", 60.0))

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: full jitter over ``min(max, base * 2^(attempt-1))``,
        at least ``retry_after``."""
        delay = random.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1))))
        return max(delay, retry_after or 0.0)


@dataclass
class Message:
    """One incoming message: raw ``body``, where it came from (``source``, kept in dead letters),
    ``owner`` (dedupe claim owner: stable across redeliveries of the same message), ``cluster``
    (from the HTTP route; None for Event Hub) and ``event`` when the caller already decoded it."""

    body: bytes
    source: dict = field(default_factory=dict)
    owner: str = ""
    cluster: str | None = None
    event: FluxEvent | None = None


@dataclass
class Delivery:
    """The outcome of one (event, target) pair: ``delivered``, ``unchanged``, ``skipped`` (then ``reason``
    says why), ``duplicate`` or ``dead-lettered`` (then ``dead_letter`` is the blob name)."""

    target: str
    dedupe_key: str
    outcome: str
    attempts: int
    latency: float  # seconds from the first send attempt to the outcome (retries included; 0 for duplicates)
    finished: float  # seconds from the batch start to the outcome
    dead_letter: str | None = None
    reason: str | None = None


@dataclass
class BatchResult:
    """Counts of one batch; ``deliveries`` lists every (event, target) job, ``dead_letters`` blob names."""

    received: int = 0
    rejected: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for d in self.deliveries if d.outcome == outcome)

    def summary(self) -> dict:
        """Counts: messages ``received``/``rejected``; (event, target) pairs by outcome; ``deadLettered`` blobs."""
        return {"received": self.received, "rejected": self.rejected,
                "delivered": self.count(DELIVERED), "unchanged": self.count(UNCHANGED),
                "skipped": self.count(SKIPPED), "duplicates": self.count(DUPLICATE),
                "deadLettered": len(self.dead_letters)}


@dataclass
class _Job:
    message: Message
    event: FluxEvent
    target: Target
    key: str
    plan: object = None  # commit_status_for's answer, for azuredevops targets
    letter: str | None = None  # the dead letter of an earlier failure of this pair, reclaimed


class _Marks:
    """Buffered "delivered" marks, written per target 100 to a transaction; the first storage error is
    kept (the forwarder raises it once the batch is done)."""

    def __init__(self, dedupe):
        self._dedupe = dedupe
        self._pending: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.error: StorageUnavailable | None = None

    def add(self, target: str, key: str) -> None:
        with self._lock:
            keys = self._pending.setdefault(target, [])
            keys.append(key)
            full = keys if len(keys) >= TX_LIMIT else None
            if full is not None:
                self._pending[target] = []
        if full is not None:
            self._write(target, full)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for target, keys in pending.items():
            if keys:
                self._write(target, keys)

    def _write(self, target: str, keys: list[str]) -> None:
        try:
            self._dedupe.delivered_many(target, keys)
        except StorageUnavailable as exc:
            self.error = self.error or exc


class Forwarder:
    """One per process (built by :func:`shared.notify.forwarder`); ``forward`` is thread-safe.

    ``dedupe`` is a :class:`.dedupe.TableDedupeStore` (or the in-memory one), ``deadletters`` a
    :class:`.deadletter.DeadLetterStore`; ``sleep`` is what retries wait with (seconds)."""

    def __init__(self, config: RoutingConfig, sender: Sender, dedupe, deadletters,
                 settings: DeliverySettings | None = None, *, sleep=time.sleep):
        self.config = config
        self.sender = sender
        self.dedupe = dedupe
        self.deadletters = deadletters
        self.settings = settings or DeliverySettings()
        self._sleep = sleep
        self._pools: dict[str | None, ThreadPoolExecutor] = {}
        self._pool_lock = threading.Lock()
        self._last_purge: float | None = None

    def _executor(self, target: str | None = None) -> ThreadPoolExecutor:
        """The worker pool of ``target`` (``concurrency`` threads: a slow target never holds the others'
        workers), or the pool that runs dedupe claims (``None``)."""
        with self._pool_lock:
            pool = self._pools.get(target)
            if pool is None:
                size = self.settings.concurrency if target is not None else CLAIM_WORKERS
                pool = self._pools[target] = ThreadPoolExecutor(size, thread_name_prefix=f"notify-{target or 'claims'}")
            return pool

    def close(self) -> None:
        with self._pool_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True)
        close = getattr(self.sender, "close", None)
        if close is not None:
            close()

    def parse(self, message: Message) -> FluxEvent:
        """Decode ``message`` with the routing file's cluster settings; raises :class:`InvalidEvent`."""
        if message.event is not None:
            return message.event
        return parse_event(message.body, cluster_key=self.config.cluster_metadata_key,
                           default_cluster=self.config.default_cluster, cluster=message.cluster)

    def reject(self, message: Message, reason: str, *, event: dict | None = None, replayable: bool = True,
               body_limit: int | None = None) -> str:
        """Dead-letter a message that will not be forwarded (malformed, bad signature); returns the blob
        name. The letter is named after the body (and the route's cluster), so a redelivery writes none.
        ``replayable=False`` (unsigned HTTP posts) makes :meth:`replay` refuse it: it was never
        authenticated; ``body_limit`` keeps only the first bytes. Raises :class:`StorageUnavailable`."""
        record = make_record(REJECTED, error=reason, cluster=message.cluster, event=event,
                             body=None if event is not None else message.body, source=message.source,
                             record_id=letter_id(message.cluster or "", message.body), body_limit=body_limit)
        if not replayable:
            record["replayable"] = False
        return self.deadletters.put_once(record)[0]

    def forward(self, messages: list[Message]) -> BatchResult:
        """Process one batch; returns when every message is delivered or dead-lettered.
        Raises :class:`StorageUnavailable` if dedupe or dead-lettering failed for any of them."""
        start = time.monotonic()
        deadline = start + self.settings.batch_budget
        result = BatchResult(received=len(messages))
        storage_error: StorageUnavailable | None = None
        by_target: dict[str, list[_Job]] = {}
        seen: set[tuple[str, str]] = set()
        for message in messages:
            try:
                event = self.parse(message)
            except InvalidEvent as exc:
                result.rejected += 1
                log.warning("notify: rejected message %s: %s", _where(message.source), exc)
                try:
                    result.dead_letters.append(self.reject(message, str(exc)))
                except StorageUnavailable as err:
                    storage_error = storage_error or err
                continue
            key = event.dedupe_key()
            for target in self.config.route(event):
                if (target.name, key) in seen:  # same event twice in this batch
                    result.deliveries.append(Delivery(target.name, key, DUPLICATE, 0, 0.0, time.monotonic() - start))
                    continue
                seen.add((target.name, key))
                plan = None
                if target.type == "azuredevops":
                    plan = commit_status_for(event)
                    if isinstance(plan, Skip):  # as Flux: nothing to post, nothing to claim or dead-letter
                        log.info("notify: %s target %s skips %s/%s of cluster %s: %s", target.type, target.name,
                                 event.kind, event.name, event.cluster, plan.reason)
                        result.deliveries.append(Delivery(target.name, key, SKIPPED, 0, 0.0,
                                                          time.monotonic() - start, reason=plan.reason))
                        continue
                by_target.setdefault(target.name, []).append(_Job(message, event, target, key, plan))
        claim_pool = self._executor(None)
        marks = _Marks(self.dedupe)
        claims = {claim_pool.submit(self._claim, chunk): chunk
                  for jobs in by_target.values() for chunk in _chunks(jobs, TX_LIMIT)}
        sends = []
        for fut in as_completed(claims):  # deliver each chunk as soon as it is claimed
            try:
                claimed, reclaimed = fut.result()
            except StorageUnavailable as err:
                storage_error = storage_error or err
                continue
            for job, ok in zip(claims[fut], claimed):
                if ok:
                    job.letter = reclaimed.get(job.key)
                    sends.append(self._executor(job.target.name).submit(self._job, job, start, deadline, marks))
                else:
                    result.deliveries.append(Delivery(job.target.name, job.key, DUPLICATE, 0, 0.0,
                                                      time.monotonic() - start))
        for fut in sends:
            try:
                delivery = fut.result()
            except StorageUnavailable as err:
                storage_error = storage_error or err
                continue
            result.deliveries.append(delivery)
            if delivery.dead_letter:
                result.dead_letters.append(delivery.dead_letter)
        marks.flush()
        storage_error = storage_error or marks.error
        log.info("notify: batch %s", result.summary())
        if storage_error is not None:
            log.error("notify: storage unavailable, failing the invocation so the batch is retried: %s",
                      storage_error)
            raise storage_error
        self._maybe_purge()
        return result

    def _claim(self, jobs: list[_Job]) -> tuple[list[bool], dict]:
        reclaimed: dict = {}
        claimed = self.dedupe.claim_many(jobs[0].target.name, [(j.key, j.message.owner) for j in jobs], reclaimed)
        return claimed, reclaimed

    def _maybe_purge(self) -> None:
        """Purge old dedupe rows, at most once per ``purge_interval`` per process, for ``purge_budget`` s."""
        purge = getattr(self.dedupe, "purge", None)
        if not self.settings.purge_interval or purge is None:
            return
        with self._pool_lock:
            now = time.monotonic()
            if self._last_purge is not None and now - self._last_purge < self.settings.purge_interval:
                return
            self._last_purge = now
        try:
            removed = purge(budget=self.settings.purge_budget)
        except StorageUnavailable as exc:  # nothing is lost: the rows wait for the next purge
            log.warning("notify: dedupe purge skipped: %s", exc)
            return
        if removed:
            log.info("notify: purged %d expired dedupe row(s)", removed)

    def _deliver(self, target: Target, event: FluxEvent, deadline: float, plan=None) -> tuple[str | None, int, str]:
        """(outcome or None, attempts, last error)."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return self.sender.send(target, event, plan), attempts, ""
            except DeliveryError as exc:
                if not exc.retryable:
                    return None, attempts, str(exc)
                if attempts >= self.settings.max_attempts:
                    return None, attempts, f"{exc} (gave up after {attempts} attempts)"
                delay = self.settings.backoff(attempts, exc.retry_after)
                if time.monotonic() + delay > deadline:
                    return None, attempts, f"{exc} (batch retry budget exhausted)"
                self._sleep(delay)

    def _job(self, job: _Job, start: float, deadline: float, marks: _Marks) -> Delivery:
        began = time.monotonic()
        target, event, key = job.target, job.event, job.key
        outcome, attempts, error = self._deliver(target, event, deadline, job.plan)
        if outcome is not None:
            marks.add(target.name, key)
            if job.letter:  # delivered after all: an earlier failure's letter no longer needs a replay
                self.deadletters.resolve(job.letter, "delivered by a later copy of the event")
            now = time.monotonic()
            return Delivery(target.name, key, outcome, attempts, now - began, now - start)
        log.warning("notify: dead-lettering %s/%s for target %s after %d attempt(s): %s",
                    event.kind, event.name, target.name, attempts, error)
        name = self._dead_letter(job.message, event, target, key, error, attempts)
        now = time.monotonic()
        return Delivery(target.name, key, FAILED, attempts, now - began, now - start, dead_letter=name)

    def _dead_letter(self, message: Message, event: FluxEvent, target: Target, key: str, error: str,
                     attempts: int) -> str:
        """One letter per (event, target) and day: a redelivered failure finds its letter and writes none
        (unless that letter was resolved meanwhile: then the new failure replaces it)."""
        record = make_record(UNDELIVERABLE, error=error, attempts=attempts, target=target.name,
                             cluster=event.cluster, event=event.data, dedupe_key=key, source=message.source,
                             record_id=letter_id(target.name, key))
        name, created = self.deadletters.put_once(record)
        if not created:
            try:
                if self.deadletters.get(name).get("resolved"):
                    self.deadletters.put(record, name)
            except errors.NotFound:
                self.deadletters.put(record, name)
        self.dedupe.dead_lettered(target.name, key, name)
        return name

    # replay ----------------------------------------------------------------------------------------
    def replay(self, names: list[str] | None = None, prefix: str | None = None, limit: int = 100,
               force: bool = False) -> dict:
        """Re-send dead letters (``names``, else the first ``limit`` under ``prefix``).

        ``undeliverable``: sent again to its target only, unless the pair was delivered meanwhile (its
        dedupe row says ``delivered``, or the letter is marked resolved) or is being delivered elsewhere:
        then it is skipped, and a delivered pair's letter is marked resolved. ``force`` sends anyway. The
        pair is claimed first (as the Event Hub path does), marked delivered and its letter deleted when
        delivered, else the letter is rewritten with the new error and the attempts added up.
        ``rejected``: decoded again and forwarded to every matching target as a new message (with the usual
        dedupe); deleted once forwarded (new failures become new dead letters); kept if still invalid, and
        never replayed when it was refused before being authenticated (``"replayable": false``).
        Returns ``{"delivered", "skipped", "failed", "invalid": counts, "results": [{"name", "outcome",
        "reason"?}]}``. Raises :class:`StorageUnavailable`.
        """
        chosen = list(names) if names else list(self.deadletters.names(prefix, limit))
        report: dict = {"delivered": 0, "skipped": 0, "failed": 0, "invalid": 0, "results": []}

        def note(name: str, outcome: str, reason: str | None = None) -> None:
            report[outcome] += 1
            report["results"].append({"name": name, "outcome": outcome, **({"reason": reason} if reason else {})})

        deadline = time.monotonic() + self.settings.batch_budget
        for name in chosen:
            try:
                record = self.deadletters.get(name)
            except errors.NotFound as exc:
                note(name, "failed", str(exc))
                continue
            if record.get("resolved") and not force:
                note(name, "skipped", "resolved: " + str(record["resolved"].get("reason") or ""))
                continue
            if record.get("kind") == UNDELIVERABLE:
                self._replay_undeliverable(name, record, force, deadline, note)
            elif record.get("replayable") is False:
                note(name, "invalid", "refused before it was authenticated; not replayed: "
                     + str(record.get("error") or "")[:200])
            else:
                self._replay_rejected(name, record, note)
        return report

    def _replay_undeliverable(self, name: str, record: dict, force: bool, deadline: float, note) -> None:
        target = self.config.target(record.get("target") or "")
        if target is None:
            note(name, "failed", f"target {str(record.get('target'))[:63]!r} is not configured")
            return
        try:
            event = parse_event(record["event"], cluster=record.get("cluster"))
        except (InvalidEvent, KeyError) as exc:
            note(name, "invalid", str(exc))
            return
        key = event.dedupe_key()
        if not force:
            if self.dedupe.state(target.name, key) == DELIVERED_STATE:
                self.deadletters.resolve(name, "already delivered")
                note(name, "skipped", "already delivered")
                return
            claim = self.dedupe.claim_state(target.name, key, f"replay/{name}")
            if claim == DELIVERED_STATE:
                self.deadletters.resolve(name, "already delivered")
                note(name, "skipped", "already delivered")
                return
            if claim == IN_FLIGHT:
                note(name, "skipped", "being delivered by another invocation")
                return
        plan = commit_status_for(event) if target.type == "azuredevops" else None
        if isinstance(plan, Skip):
            self.deadletters.resolve(name, plan.reason)
            note(name, "skipped", plan.reason)
            return
        outcome, attempts, error = self._deliver(target, event, deadline, plan)
        if outcome is not None:
            self.dedupe.delivered(target.name, key, at=time.time())
            self.deadletters.delete(name)
            note(name, "delivered")
            return
        record["attempts"] = int(record.get("attempts") or 0) + attempts
        record["error"] = error
        self.deadletters.put(record, name)
        self.dedupe.dead_lettered(target.name, key, name)
        note(name, "failed", error)

    def _replay_rejected(self, name: str, record: dict, note) -> None:
        raw = record.get("event")
        body = json.dumps(raw).encode() if raw is not None else str(record.get("body") or "").encode(
            "utf-8", "surrogatepass")
        message = Message(body=body, source={"trigger": "replay", "deadLetter": name}, owner=f"replay/{name}",
                          cluster=record.get("cluster"))
        try:
            message.event = self.parse(message)
        except InvalidEvent as exc:
            note(name, "invalid", str(exc))
            return
        result = self.forward([message])
        self.deadletters.delete(name)
        if result.dead_letters:
            note(name, "failed", "dead-lettered again: " + ", ".join(result.dead_letters))
        elif result.count(DELIVERED) or result.count(UNCHANGED):
            note(name, "delivered")
        else:
            note(name, "skipped", "no target took it, or each had it already")


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _where(source: dict) -> str:
    if source.get("trigger") == "eventhub":
        return f"partition {source.get('partition')} sequence {source.get('sequenceNumber')}"
    return str(source.get("trigger") or "message")
