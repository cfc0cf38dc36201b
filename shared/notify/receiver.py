"""The generic-hmac receiver: ``POST /api/flux/events/{cluster}`` from a Flux ``generic-hmac`` Provider.

The endpoint is anonymous at the Functions host: no function key is handed to a cluster. A post is
authenticated only by its ``X-Signature`` (``sha256=<hex HMAC-SHA256(body, key)>``, as Flux's
``forwarder.go`` signs; sha224/384/512 accepted, compared in constant time) with the cluster's own key,
the Key Vault secret ``http.hmacSecret`` names (``{cluster}`` spelled one to one in Key Vault's alphabet,
:func:`.routing.key_vault_part`). In order, each step answering at once:

1. the route's cluster must be a cluster name (400 ``cluster``; nothing stored);
2. the body at most :data:`MAX_BODY_BYTES` (413);
3. the endpoint configured (``http.hmacSecret``, else 401) and the key readable (Key Vault failing: 503);
4. the signature valid (401); a refused post is dead-lettered with its first :data:`REFUSED_BODY_BYTES`
   only, and at most :data:`REFUSED_PER_HOUR` per cluster and hour (posts for clusters without a key
   share one such bound), so unsigned posts cannot fill storage;
5. the body a Flux event (400 naming the field; dead-lettered, replayable);
6. not a replay: the event's ``timestamp`` within the routing file's ``dedupeWindow`` of now (400
   ``timestamp``), and the body's sha256 not received before (409 ``Replay``; recorded in the dedupe table,
   so across instances, until the timestamp rule refuses the body anyway);
7. forwarded (200 ``{"result": counts}``); storage failing: 503, and the digest is forgotten so that
   Flux's retry of the same post is taken.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Callable

from shared import errors

from .deadletter import REFUSED_BODY_BYTES
from .dedupe import StorageUnavailable
from .delivery import Forwarder, Message
from .events import InvalidEvent, is_cluster_name, parse_event
from .targets import verify_signature

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # Flux events are at most 39,000 characters of message plus metadata
REFUSED_PER_HOUR = 20
UNKNOWN_CLUSTERS = "-"  # the refusal bucket shared by route names without a key


@dataclass
class Answer:
    """The HTTP answer: ``status`` and the JSON ``body``."""

    status: int
    body: dict


def _error(status: int, code: str, message: str, field: str | None = None) -> Answer:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return Answer(status, {"error": error})


def echo(value: str, limit: int = 64) -> str:
    """``repr`` of at most ``limit`` characters of untrusted text (lone surrogates escaped)."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def _refuse(fwd: Forwarder, message: Message, bucket: str, reason: str) -> None:
    """Dead-letter the first bytes of a post refused before it was authenticated, within the bound."""
    try:
        if fwd.dedupe.allow_refused(bucket, REFUSED_PER_HOUR):
            fwd.reject(message, reason, replayable=False, body_limit=REFUSED_BODY_BYTES)
        else:
            log.warning("flux events: refused post for %s not dead-lettered: more than %d this hour",
                        "clusters without a key" if bucket == UNKNOWN_CLUSTERS else f"cluster {bucket}",
                        REFUSED_PER_HOUR)
    except StorageUnavailable as exc:  # evidence only: the answer stays 401
        log.warning("flux events: refused post not dead-lettered: %s", exc)


def receive(fwd: Forwarder, vault: Callable[[], object], cluster: str, body: bytes, signature: str | None,
            *, now: float | None = None) -> Answer:
    """Take one generic-hmac post (steps in the module doc). ``vault()`` returns the Key Vault port.
    Never raises for anything the caller sent; storage and Key Vault failures are 503 answers."""
    now = time.time() if now is None else now
    if not is_cluster_name(cluster):
        log.warning("flux events: refused post for route cluster %s: not a cluster name", echo(cluster))
        return _error(400, "InvalidInput", "cluster: not a cluster name (1-63 lower-case letters, digits, '.', "
                      "'_' or '-', starting and ending with a letter or digit)", "cluster")
    digest = hashlib.sha256(body).hexdigest()
    message = Message(body=body, source={"trigger": "http", "cluster": cluster}, cluster=cluster,
                      owner=f"http/{cluster}/{digest[:32]}")  # stable: Flux's retry reclaims its claims
    try:
        return _receive(fwd, vault, cluster, body, signature, message, digest, now)
    except StorageUnavailable as exc:
        log.error("flux events for %s: %s", cluster, exc)
        return _error(503, "StorageUnavailable", "dead-letter or dedupe storage is unavailable; retry later")


def _receive(fwd, vault, cluster, body, signature, message, digest, now) -> Answer:
    if len(body) > MAX_BODY_BYTES:
        log.warning("flux events for %s: refused a %d-byte body", cluster, len(body))
        _refuse(fwd, message, cluster, f"body of {len(body)} bytes is over {MAX_BODY_BYTES}")
        return _error(413, "PayloadTooLarge", f"body: is {len(body)} bytes; at most {MAX_BODY_BYTES} are taken", "body")
    try:
        secret_name = fwd.config.hmac_secret_name(cluster)
    except ValueError as exc:
        return _error(400, "InvalidInput", f"cluster: {exc}", "cluster")
    if secret_name is None:
        log.warning("flux events for %s: refused, the routing file has no http.hmacSecret", cluster)
        return _error(401, "Unauthorized", "no HMAC key is configured for this endpoint")
    try:
        key = vault().get_secret(secret_name, field="http.hmacSecret").value
    except errors.NotFound:
        key = ""
    except errors.FluxOpsError as exc:
        log.error("flux events for %s: Key Vault failed: %s", cluster, exc)
        return _error(503, "KeyVaultUnavailable", "the HMAC key could not be read; retry later")
    if not key or not verify_signature(body, signature, key):
        log.warning("flux events for %s: refused, missing or invalid X-Signature%s", cluster,
                    "" if key else " (no key in Key Vault)")
        _refuse(fwd, message, cluster if key else UNKNOWN_CLUSTERS,
                "missing or invalid X-Signature for cluster " + cluster)
        return _error(401, "Unauthorized", "missing or invalid X-Signature")
    # authenticated from here on
    try:
        event = parse_event(body, cluster=cluster, cluster_key=fwd.config.cluster_metadata_key,
                            default_cluster=fwd.config.default_cluster)
    except InvalidEvent as exc:
        log.warning("flux events for %s: rejected: %s", cluster, exc)
        fwd.reject(message, str(exc))
        return _error(400, exc.code, str(exc), exc.field)
    window = fwd.config.dedupe_window
    age = now - event.time.timestamp()
    if abs(age) > window:
        where = "older than" if age > 0 else "ahead of now by more than"
        log.warning("flux events for %s: refused as a replay: timestamp %s is %s the dedupe window (%ds)",
                    cluster, event.timestamp[:40], where, window)
        return _error(400, "InvalidInput", f"timestamp: {echo(event.timestamp, 40)} is {where} the dedupe "
                      f"window ({window:g}s); refused as a replay", "timestamp")
    scope = f"http.{cluster}"
    if not fwd.dedupe.claim_digest(scope, digest, max(now, event.time.timestamp())):
        log.warning("flux events for %s: refused as a replay: this body was received before", cluster)
        return _error(409, "Replay", "this body was received before; it is not forwarded again")
    message.event = event
    try:
        result = fwd.forward([message])
    except StorageUnavailable:
        try:
            fwd.dedupe.release_digest(scope, digest)
        except StorageUnavailable:
            pass
        raise
    return Answer(200, {"result": result.summary()})

