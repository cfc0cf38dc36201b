"""Deliver one event to one target: Azure DevOps commit status, Teams, Slack, generic(-hmac) webhook.

Payloads are those of Flux's own providers (fluxcd/notification-controller ``internal/notifier``), byte
for byte: built in the Go structs' field order and written as ``json.Marshal`` writes them
(:mod:`.gojson`: compact, raw UTF-8, ``<>&`` escaped), within each provider's size limit:

- ``msteams`` (``teams.go``): Adaptive Card 1.4 in a ``message`` attachment for Workflows URLs; the
  legacy ``MessageCard`` when the host ends with ``.webhook.office.com``. Title ``kind/name.namespace``,
  message (``color: attention`` for errors), facts = metadata, ``summary`` first then sorted.
- ``slack`` (``slack.go``): ``{"channel", "username", "attachments": [{"fallback", "color": good|danger,
  "author_name", "text", "mrkdwn_in", "fields"}]}``; a bot token (``tokenSecret``) goes as Bearer.
- ``generic`` / ``generic-hmac`` (``forwarder.go``): the event as Go marshals Flux's event struct
  (:meth:`.events.FluxEvent.body`), ``gotk-component`` header (always, as Flux sets it);
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
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from shared import errors
from shared.ports.azure.devops import (CommitStatus, DevOpsHTTPError, DevOpsStatuses, credential_auth, pat_auth,
                           retry_after_seconds)

from .events import FluxEvent, InvalidEvent, commit_sha
from .gojson import marshal
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


# Provider limits. Teams refuses a message over 28 KB (learn.microsoft.com/microsoftteams/platform/
# webhooks-and-connectors/how-to/connectors-using: "The message size limit is 28 KB"); the card is kept
# under 28,000 bytes. Slack truncates ``text`` past 40,000 characters (api.slack.com/methods/
# chat.postMessage, "Truncating content"); counted here in UTF-16 code units, the stricter reading. The
# Azure DevOps statuses API documents no lengths; its fields are kept within what Flux can produce
# (a Kubernetes condition reason is at most 1,024 characters, an Alert summary at most 255).
TEAMS_MAX_BYTES = 28_000
SLACK_MAX_TEXT = 40_000
ADO_MAX_DESCRIPTION = 1024
ADO_MAX_SUMMARY = 255
FACT_CHARS = 1_000  # a metadata value shown in a Teams card, when the card would not fit otherwise


def _utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def shorten(text: str, fits: Callable[[str], bool], provider: str, sep: str = "\n") -> str:
    """``text`` unchanged if ``fits(text)``; else its longest beginning that fits with a marker
    (``<sep>… [cut to fit <provider>: N of M characters]``; ``sep`` a space for one-line fields), cut at a
    line end when one lies in the second half of what fits, since Flux puts what matters in the first
    lines. Cuts fall between characters, so the UTF-8 stays valid."""
    if fits(text):
        return text
    total = len(text)

    def candidate(n: int) -> str:
        return text[:n] + f"{sep}… [cut to fit {provider}: {n:,} of {total:,} characters]"

    lo, hi = 0, total  # the largest n with fits(candidate(n)), by bisection (fits is monotonic in n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(candidate(mid)):
            lo = mid
        else:
            hi = mid - 1
    line_end = text.rfind("\n", 0, lo)
    if line_end >= lo // 2 and fits(candidate(line_end)):
        lo = line_end
    return candidate(lo)


def teams_payload(event: FluxEvent, url: str) -> dict:
    """The JSON body for a Teams webhook ``url`` (``teams.go``), as the Go structs order it: an Adaptive
    Card 1.4 for Workflows URLs, the legacy MessageCard for hosts ending in ``.webhook.office.com``. The
    message is shortened (:func:`shorten`) so the card stays under :data:`TEAMS_MAX_BYTES`."""
    legacy = (urlsplit(url).hostname or "").lower().endswith(".webhook.office.com")
    meta = dict(event.metadata)

    def build(message: str, facts_meta: dict) -> dict:
        return _message_card(event, message, facts_meta) if legacy else _adaptive_card(event, message, facts_meta)

    def fits(message: str, facts_meta: dict = meta) -> bool:
        return len(marshal(build(message, facts_meta))) <= TEAMS_MAX_BYTES

    if not fits("", meta):  # huge metadata values: shorten those first
        meta = {k: shorten(v, lambda t: len(t) <= FACT_CHARS, "Teams") for k, v in meta.items()}
    message = shorten(event.message, lambda m: fits(m, meta), "Teams")
    return build(message, meta)


def _message_card(event: FluxEvent, message: str, meta: dict) -> dict:
    obj = object_name(event)
    # Go ranges over the metadata map in random order; sorted is one of Flux's orders
    return {"@type": "MessageCard", "@context": "http://schema.org/extensions",
            "themeColor": "FF0000" if event.severity == "error" else "0076D7", "summary": obj,
            "sections": [{"activityTitle": message, "activitySubtitle": obj,
                          "facts": [{"name": k, "value": v} for k, v in sorted(meta.items())]}]}


def _adaptive_card(event: FluxEvent, message: str, meta: dict) -> dict:
    meta = dict(meta)
    facts = []
    if "summary" in meta:
        facts.append({"title": "summary", "value": meta.pop("summary")})
    facts += [{"title": k, "value": v} for k, v in sorted(meta.items())]
    # msAdaptiveCardTextBlock: text, size, weight, color, wrap (all omitempty)
    text: dict = {"type": "TextBlock"}
    if message:
        text["text"] = message
    if event.severity == "error":
        text["color"] = "attention"
    text["wrap"] = True
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "Container", "items": [
                        {"type": "TextBlock", "text": object_name(event), "size": "large", "weight": "bolder",
                         "wrap": True},
                        text,
                        {"type": "FactSet", **({"facts": facts} if facts else {})}]}],
                    "msteams": {"width": "Full"}}}]}


def slack_payload(event: FluxEvent, target: Target) -> dict:
    """The JSON body for Slack (``slack.go`` ``SlackPayload``/``SlackAttachment``, in their field order);
    ``channel``/``username`` from the target, else ``""`` and the reporting controller; ``fields`` =
    metadata sorted by key; ``text`` (and ``fallback``) within :data:`SLACK_MAX_TEXT`."""
    obj = object_name(event)

    def fits(text: str) -> bool:
        return _utf16_len(text) <= SLACK_MAX_TEXT

    first_line = event.message.split("\n", 1)[0]
    return {"channel": target.options.get("channel", ""),
            "username": target.options.get("username") or event.reporting_controller,
            "icon_url": "", "icon_emoji": "",
            "attachments": [{"fallback": shorten(f"{obj}: {first_line}", fits, "Slack"),
                             "color": "danger" if event.severity == "error" else "good",
                             "author_name": obj, "text": shorten(event.message, fits, "Slack"),
                             "mrkdwn_in": ["text"],
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


@dataclass(frozen=True)
class Skip:
    """An event a target cannot represent, skipped as Flux's provider skips it; ``reason`` is logged."""

    reason: str


def commit_status_for(event: FluxEvent) -> tuple[str, CommitStatus] | Skip:
    """(sha, status) for the Azure DevOps target, or a :class:`Skip`: as Flux's ``azuredevops`` provider
    (``internal/notifier/azure_devops.go``), which returns without posting for ``Progressing`` events and
    logs and drops events without a commit revision.

    Revision: metadata ``commit``, else ``originRevision``, else ``revision`` (:func:`.events.commit_sha`);
    none, or one that is no Git commit (an OCI digest, a chart version like ``6.7.1``) is skipped. State:
    info → ``succeeded``, error → ``error`` (any other severity is skipped). Genre ``fluxcd`` or
    ``fluxcd:<summary>`` (``commitStatusGenre``). Name ``<kind>/<name>/<uid prefix>/<cluster>``, lower-case:
    Flux's default ``kind/name/<first '-' segment of the Provider's UID>`` (``generateCommitStatusID``);
    with no Provider here, the involved object's UID is used (omitted when the event has none), and the
    cluster suffix keeps clusters that share a repository from overwriting each other. Description: the
    reason split on camel case, lower-case (``formatNameAndDescription``), e.g. ``health check failed``;
    description and summary are kept within :data:`ADO_MAX_DESCRIPTION` and :data:`ADO_MAX_SUMMARY`
    characters, cut with :func:`shorten`'s marker (``… [cut to fit Azure DevOps: N of M characters]``).
    """
    if event.reason == "Progressing":
        return Skip("Progressing events are not posted as commit statuses (as Flux)")
    revision = event.revision()
    if not revision:
        return Skip("the event has no commit, originRevision or revision metadata")
    try:
        sha = commit_sha(revision)
    except InvalidEvent:
        return Skip(f"revision {revision[:80]!r} is not a Git commit")
    if event.severity == "info":
        state = "succeeded"
    elif event.severity == "error":
        state = "error"
    else:
        return Skip(f"severity {event.severity!r} has no Azure DevOps state")
    uid = event.involved_object.get("uid", "").split("-", 1)[0]
    parts = [event.kind, event.name] + ([uid] if uid else []) + [event.cluster]
    # one-line fields: the marker follows a space, not a line break
    summary = shorten(event.metadata.get("summary", ""), lambda t: len(t) <= ADO_MAX_SUMMARY, "Azure DevOps", " ")
    description = shorten(_split_camel(event.reason), lambda d: len(d) <= ADO_MAX_DESCRIPTION, "Azure DevOps", " ")
    return sha, CommitStatus(state=state, description=description, name="/".join(parts).lower(),
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


def _env_proxies() -> bool:
    from urllib.request import getproxies

    proxies = getproxies()
    return bool(proxies.get("http") or proxies.get("https"))


class Sender:
    """Sends events to targets. Thread-safe.

    Webhooks go over one ``urllib3.PoolManager`` (pooled keep-alive connections, certificates verified
    against certifi's bundle, no redirects, no retries here): requests' per-call work (settings merge,
    ``.netrc`` look-up, hooks) was a third of the forwarder's CPU per delivery. With an HTTP(S) proxy in
    the environment they go through ``session`` (``requests``, which honours it). Azure DevOps uses
    ``session`` through :class:`shared.ports.azure.devops.DevOpsStatuses`. Payloads are rendered once per
    event and target kind (:attr:`FluxEvent.cache`)."""

    def __init__(self, session, secrets: SecretCache, *, devops_credential: Callable[[], object] | None = None,
                 pool_size: int = 32):
        import certifi
        import urllib3

        pool_log = logging.getLogger("urllib3.connectionpool")
        if _hide_paths not in pool_log.filters:
            pool_log.addFilter(_hide_paths)
        self.session = session
        self.secrets = secrets
        self._devops_credential = devops_credential
        self._pool = None if _env_proxies() else urllib3.PoolManager(
            num_pools=64, maxsize=pool_size, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()

    def body(self, target: Target, event: FluxEvent, url: str) -> bytes:
        """The bytes ``target`` gets for ``event`` (Go's ``json.Marshal`` of Flux's payload struct)."""
        if target.type == "msteams":
            key = ("msteams", (urlsplit(url).hostname or "").lower().endswith(".webhook.office.com"))
            build = lambda: teams_payload(event, url)  # noqa: E731
        elif target.type == "slack":
            key = ("slack", target.options.get("channel", ""), target.options.get("username", ""))
            build = lambda: slack_payload(event, target)  # noqa: E731
        else:
            return event.body()
        cached = event.cache.get(key)
        if cached is None:
            cached = event.cache[key] = marshal(build())
        return cached

    def send(self, target: Target, event: FluxEvent, plan=None) -> str:
        """Deliver once (no retries). Returns ``delivered``, ``unchanged`` (ADO status already set) or
        ``skipped`` (what Azure DevOps cannot take; ``plan`` is :func:`commit_status_for`'s answer when the
        caller has it). Raises :class:`DeliveryError`."""
        if target.type == "azuredevops":
            return self._devops(target, event, plan)
        url = self.secrets.get(target.options["urlSecret"]).strip()
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise DeliveryError(f"{target.type} target {target.name!r}: Key Vault secret "
                                f"{target.options['urlSecret']!r} is not an http(s) URL", retryable=False)
        headers = {"Content-Type": "application/json"}
        body = self.body(target, event, url)
        if target.type == "slack" and target.options.get("tokenSecret"):
            headers["Authorization"] = "Bearer " + self.secrets.get(target.options["tokenSecret"])
        elif target.type in ("generic", "generic-hmac"):
            headers["gotk-component"] = event.reporting_controller  # Flux sets it even when empty
            if target.type == "generic-hmac":
                headers["X-Signature"] = hmac_signature(body, self.secrets.get(target.options["hmacSecret"]))
        status, retry_after, data = self._post(target, url, body, headers)
        if status >= 300:
            raise DeliveryError(f"{target.type} target {target.name!r}: HTTP {status}",
                                retryable=status in RETRYABLE_STATUS, status=status,
                                retry_after=retry_after_seconds(retry_after))
        if target.type == "slack" and url.rstrip("/").endswith("slack.com/api/chat.postMessage"):
            try:
                answer = json.loads(data or b"{}")
            except ValueError:
                answer = {}
            if not isinstance(answer, dict) or not answer.get("ok", False):
                error = answer.get("error", "unknown") if isinstance(answer, dict) else "unknown"
                raise DeliveryError(f"slack target {target.name!r}: Slack API error {str(error)[:80]}",
                                    retryable=False)
        return DELIVERED

    def _post(self, target: Target, url: str, body: bytes, headers: dict) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body) of one POST; connection failures and timeouts raise
        :class:`DeliveryError` naming the exception class only (urllib3's and requests' texts hold the URL)."""
        try:
            if self._pool is None:
                resp = self.session.post(url, data=body, headers=headers, timeout=target.timeout,
                                         allow_redirects=False)
                return resp.status_code, resp.headers.get("Retry-After"), resp.content
            resp = self._pool.urlopen("POST", url, body=body, headers=headers, timeout=target.timeout,
                                      retries=False, redirect=False, preload_content=True)
            return resp.status, resp.headers.get("Retry-After"), resp.data
        except Exception as exc:  # connection refused/reset, timeouts, TLS
            raise _request_failure(target, exc) from None

    def _devops(self, target: Target, event: FluxEvent, plan=None) -> str:
        planned = commit_status_for(event) if plan is None else plan
        if isinstance(planned, Skip):
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
