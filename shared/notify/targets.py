"""Deliver one event to one target: Azure DevOps commit status, Teams, Slack, generic(-hmac) webhook.

Payloads are those of Flux's own providers (fluxcd/notification-controller ``internal/notifier``):

- ``msteams`` (``teams.go``): Adaptive Card 1.4 in a ``message`` attachment for Workflows URLs; the
  legacy ``MessageCard`` when the host ends with ``.webhook.office.com``. Title ``kind/name.namespace``,
  message (``color: attention`` for errors), facts = metadata, ``summary`` first then sorted.
- ``slack`` (``slack.go``): ``{"channel", "username", "attachments": [{"fallback", "color": good|danger,
  "author_name", "text", "mrkdwn_in", "fields"}]}``; a bot token (``tokenSecret``) goes as Bearer.
- ``generic`` / ``generic-hmac`` (``forwarder.go``): the event JSON, ``gotk-component`` header;
  ``X-Signature: sha256=<hex HMAC-SHA256(body, key)>`` for generic-hmac.
- ``azuredevops`` (``azure_devops.go``): see :func:`commit_status_for`.

Webhook URLs, HMAC keys, bot tokens and PATs are Key Vault secrets named in the routing file. Errors
raised here (:class:`DeliveryError`) name the target and the HTTP status or the exception class, never a
URL, header or secret: ``requests`` exception texts contain the URL, so they are not used.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from shared import errors
from shared.ports.azure.devops import (CommitStatus, DevOpsHTTPError, DevOpsStatuses, credential_auth, pat_auth,
                           retry_after_seconds)

from .events import FluxEvent, InvalidEvent, commit_sha
from .routing import Target

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DELIVERED, UNCHANGED, SKIPPED = "delivered", "unchanged", "skipped"


class DeliveryError(Exception):
    """A failed delivery. ``retryable``: 429/5xx/connection errors/timeouts; ``retry_after`` seconds."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class SecretCache:
    """Key Vault reads cached for ``ttl`` seconds (a batch of 10,000 events reads each secret once;
    a rotated URL is picked up within ``ttl``). One fetch per name at a time."""

    def __init__(self, vault_factory: Callable[[], object], ttl: float = 300.0):
        self._vault_factory = vault_factory
        self._ttl = ttl
        self._values: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> str:
        """The secret's value. Raises :class:`DeliveryError`: not found or empty (not retryable), Key Vault
        failing (retryable); the message names the secret, never its value."""
        now = time.monotonic()
        hit = self._values.get(name)
        if hit and now - hit[0] < self._ttl:
            return hit[1]
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            hit = self._values.get(name)
            if hit and time.monotonic() - hit[0] < self._ttl:
                return hit[1]
            try:
                value = self._vault_factory().get_secret(name, field=name).value
            except errors.NotFound as exc:
                raise DeliveryError(f"Key Vault secret {name!r} not found", retryable=False) from exc
            except errors.FluxOpsError as exc:
                raise DeliveryError(f"Key Vault secret {name!r}: {type(exc).__name__}", retryable=True) from exc
            if not value:
                raise DeliveryError(f"Key Vault secret {name!r} is empty", retryable=False)
            self._values[name] = (time.monotonic(), value)
            return value


def object_name(event: FluxEvent) -> str:
    """``<lower kind>/<name>.<namespace>``, the title Flux's Teams and Slack providers use."""
    return f"{event.kind.lower()}/{event.name}.{event.namespace}"


def teams_payload(event: FluxEvent, url: str) -> dict:
    """The JSON body for a Teams webhook ``url`` (``teams.go``): an Adaptive Card 1.4 for Workflows URLs,
    the legacy MessageCard for hosts ending in ``.webhook.office.com``."""
    obj = object_name(event)
    meta = dict(event.metadata)
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".webhook.office.com"):  # retired O365 connectors: MessageCard
        return {"@type": "MessageCard", "@context": "http://schema.org/extensions",
                "themeColor": "FF0000" if event.severity == "error" else "0076D7", "summary": obj,
                "sections": [{"activityTitle": event.message, "activitySubtitle": obj,
                              "facts": [{"name": k, "value": v} for k, v in sorted(meta.items())]}]}
    facts = []
    if "summary" in meta:
        facts.append({"title": "summary", "value": meta.pop("summary")})
    facts += [{"title": k, "value": v} for k, v in sorted(meta.items())]
    # Go's omitempty: no "text" for an empty message, no "facts" for empty metadata
    text = {"type": "TextBlock", **({"text": event.message} if event.message else {}), "wrap": True}
    if event.severity == "error":
        text["color"] = "attention"
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                    "version": "1.4", "msteams": {"width": "Full"},
                    "body": [{"type": "Container", "items": [
                        {"type": "TextBlock", "text": obj, "size": "large", "weight": "bolder", "wrap": True},
                        text,
                        {"type": "FactSet", **({"facts": facts} if facts else {})}]}]}}]}


def slack_payload(event: FluxEvent, target: Target) -> dict:
    """The JSON body for Slack (``slack.go``); ``channel``/``username`` from the target, else ``""`` and
    the reporting controller; ``fields`` = metadata sorted by key."""
    obj = object_name(event)
    first_line = event.message.split("\n", 1)[0]
    return {"channel": target.options.get("channel", ""),
            "username": target.options.get("username") or event.reporting_controller,
            "icon_url": "", "icon_emoji": "",
            "attachments": [{"fallback": f"{obj}: {first_line}",
                             "color": "danger" if event.severity == "error" else "good",
                             "author_name": obj, "text": event.message, "mrkdwn_in": ["text"],
                             "fields": [{"title": k, "value": v, "short": False}
                                        for k, v in sorted(event.metadata.items())]}]}


def hmac_signature(body: bytes, key: str) -> str:
    """``X-Signature`` value as Flux's generic-hmac sends it."""
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, key: str) -> bool:
    """Constant-time check of ``X-Signature: <alg>=<hex>`` (sha224/256/384/512, as Flux's docs verify)."""
    if not header or "=" not in header:
        return False
    alg, _, given = header.strip().partition("=")
    if alg.lower() not in ("sha224", "sha256", "sha384", "sha512"):
        return False
    expected = hmac.new(key.encode("utf-8"), body, alg.lower()).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace"))


def _char_class(ch: str) -> int:
    if ch.islower():
        return 1
    if ch.isupper():
        return 2
    if ch.isdigit():
        return 3
    return 4


def split_camel_case(src: str) -> list[str]:
    """Flux's ``splitCamelcase`` (``internal/notifier/util.go``): runs of lower-case letters, upper-case
    letters, digits and other characters, with an upper-case run's last letter moved to a following
    lower-case run (``"PDFLoader"`` → ``["PDF", "Loader"]``)."""
    runs: list[list[str]] = []
    last = 0
    for ch in src:
        cls = _char_class(ch)
        if runs and cls == last:
            runs[-1].append(ch)
        else:
            runs.append([ch])
        last = cls
    for i in range(len(runs) - 1):
        if runs[i][0].isupper() and runs[i + 1][0].islower():
            runs[i + 1].insert(0, runs[i].pop())
    return ["".join(r) for r in runs if r]


def _split_camel(reason: str) -> str:
    return " ".join(split_camel_case(reason)).lower()


def commit_status_for(event: FluxEvent) -> tuple[str, CommitStatus] | None:
    """(sha, status) for the Azure DevOps target, or None for ``Progressing`` events (skipped as Flux does).

    Revision: metadata ``commit``, else ``originRevision``, else ``revision`` (:func:`.events.commit_sha`).
    State: info → ``succeeded``, error → ``error``. Genre ``fluxcd`` or ``fluxcd:<summary>``
    (``commitStatusGenre``). Name ``<kind>/<name>/<uid prefix>/<cluster>``, lower-case: Flux's default
    ``kind/name/<first '-' segment of the Provider's UID>`` (``generateCommitStatusID``); with no Provider
    here, the involved object's UID is used (omitted when the event has none), and the cluster suffix
    keeps clusters that share a repository from overwriting each other. Description: the reason split
    on camel case, lower-case (``formatNameAndDescription``), e.g. ``health check failed``.
    Raises :class:`InvalidEvent` for a missing or non-SHA-1 revision.
    """
    if event.reason == "Progressing":
        return None
    revision = event.revision()
    if not revision:
        raise InvalidEvent("metadata.revision", "missing revision metadata")
    sha = commit_sha(revision)
    if event.severity == "info":
        state = "succeeded"
    elif event.severity == "error":
        state = "error"
    else:
        raise InvalidEvent("severity", f"can't convert {event.severity!r} to an Azure DevOps state")
    uid = event.involved_object.get("uid", "").split("-", 1)[0]
    parts = [event.kind, event.name] + ([uid] if uid else []) + [event.cluster]
    summary = event.metadata.get("summary")
    return sha, CommitStatus(state=state, description=_split_camel(event.reason), name="/".join(parts).lower(),
                             genre="fluxcd:" + summary if summary else "fluxcd")


def _request_failure(target: Target, exc: Exception) -> DeliveryError:
    # str(exc) of requests exceptions contains the URL (a secret for webhooks): class name only.
    return DeliveryError(f"{target.type} target {target.name!r}: {type(exc).__name__}", retryable=True)


class _HidePaths(logging.Filter):
    """urllib3 logs each request line at DEBUG (``"POST /path HTTP/1.1" 200``); a webhook's path is its
    secret, so it is replaced by ``/…`` (the host stays, for debugging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 5 and '"%s %s %s"' in str(record.msg):
            args = list(record.args)
            args[4] = "/…"
            record.args = tuple(args)
        return True


_hide_paths = _HidePaths()


class Sender:
    """Sends events to targets over one pooled ``requests.Session``. Thread-safe."""

    def __init__(self, session, secrets: SecretCache, *, devops_credential: Callable[[], object] | None = None):
        pool_log = logging.getLogger("urllib3.connectionpool")
        if _hide_paths not in pool_log.filters:
            pool_log.addFilter(_hide_paths)
        self.session = session
        self.secrets = secrets
        self._devops_credential = devops_credential

    def send(self, target: Target, event: FluxEvent) -> str:
        """Deliver once (no retries). Returns ``delivered``, ``unchanged`` (ADO status already set) or
        ``skipped`` (Progressing for ADO). Raises :class:`DeliveryError` / :class:`InvalidEvent`."""
        if target.type == "azuredevops":
            return self._devops(target, event)
        url = self.secrets.get(target.options["urlSecret"])
        split = urlsplit(url.strip())
        if split.scheme not in ("http", "https") or not split.netloc:
            raise DeliveryError(f"{target.type} target {target.name!r}: Key Vault secret "
                                f"{target.options['urlSecret']!r} is not an http(s) URL", retryable=False)
        url = url.strip()
        headers = {"Content-Type": "application/json"}
        if target.type == "msteams":
            body = json.dumps(teams_payload(event, url)).encode("utf-8")
        elif target.type == "slack":
            body = json.dumps(slack_payload(event, target)).encode("utf-8")
            if target.options.get("tokenSecret"):
                headers["Authorization"] = "Bearer " + self.secrets.get(target.options["tokenSecret"])
        else:
            body = event.body()
            if event.reporting_controller:
                headers["gotk-component"] = event.reporting_controller
            if target.type == "generic-hmac":
                headers["X-Signature"] = hmac_signature(body, self.secrets.get(target.options["hmacSecret"]))
        try:
            resp = self.session.post(url, data=body, headers=headers, timeout=target.timeout)
        except Exception as exc:  # connection refused/reset, timeouts, TLS
            raise _request_failure(target, exc) from None
        if resp.status_code >= 300:
            raise DeliveryError(f"{target.type} target {target.name!r}: HTTP {resp.status_code}",
                                retryable=resp.status_code in RETRYABLE_STATUS, status=resp.status_code,
                                retry_after=retry_after_seconds(resp.headers.get("Retry-After")))
        if target.type == "slack" and url.rstrip("/").endswith("slack.com/api/chat.postMessage"):
            try:
                answer = resp.json()
            except ValueError:
                answer = {}
            if not answer.get("ok", False):
                raise DeliveryError(f"slack target {target.name!r}: Slack API error "
                                    f"{str(answer.get('error', 'unknown'))[:80]}", retryable=False)
        return DELIVERED

    def _devops(self, target: Target, event: FluxEvent) -> str:
        planned = commit_status_for(event)
        if planned is None:
            return SKIPPED
        sha, status = planned
        opts = target.options
        if opts.get("managedIdentity"):
            if self._devops_credential is None:
                raise DeliveryError(f"azuredevops target {target.name!r}: no managed identity credential",
                                    retryable=False)
            auth = credential_auth(self._devops_credential())
        else:
            pat = self.secrets.get(opts["patSecret"])
            header = pat_auth(pat)
            auth = lambda: header  # noqa: E731
        client = DevOpsStatuses(self.session, organization=opts["organization"], project=opts["project"],
                                repository=opts["repository"], authorization=auth, base_url=opts["baseUrl"],
                                timeout=target.timeout)
        try:
            changed = client.post_if_changed(sha, status)
        except DevOpsHTTPError as exc:
            raise DeliveryError(f"azuredevops target {target.name!r}: {exc}", status=exc.status,
                                retryable=exc.status in RETRYABLE_STATUS, retry_after=exc.retry_after) from None
        except DeliveryError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise _request_failure(target, exc) from None
            # credential failures (azure.identity) carry no secret but can be long: class name only
            raise DeliveryError(f"azuredevops target {target.name!r}: {type(exc).__name__}", retryable=True) from None
        return DELIVERED if changed else UNCHANGED
