"""Flux notification events: decode, validate, revision and dedupe key.

The body of every Event Hub message (and of every ``generic-hmac`` POST) is one Flux event, the JSON
of ``fluxcd/pkg/apis/event/v1beta1`` ``Event``::

    {"involvedObject": {"kind", "namespace", "name", "uid", "apiVersion", "resourceVersion"},
     "severity": "info"|"error", "timestamp": RFC 3339, "message": str (<= 39,000 chars),
     "reason": str, "metadata": {str: str} (optional), "reportingController": str,
     "reportingInstance": str (optional)}

notification-controller strips the API-group prefixes from ``metadata`` before any provider sees it
(``internal/server/event_handlers.go`` ``combineEventMetadata``), so keys arrive as ``revision``,
``originRevision``, ``commit``, ``commit_status``, ``summary`` and the Alert's ``spec.eventMetadata``
keys, e.g. ``cluster: prod-weu-1``. The azureeventhub provider sends no message properties
(``internal/notifier/azure_eventhub.go``), so the cluster must come from that metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from shared import errors

from .gojson import go_map, marshal

MAX_BODY_BYTES = 3 * 1024 * 1024  # notification-controller's event body limit (internal/server/limits.go)
MAX_MESSAGE_CHARS = 39_000  # fluxcd/pkg event.go: messages are truncated to this by the emitter
SEVERITIES = ("info", "error", "trace")
CLUSTER_RE = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")  # use fullmatch: '$' lets a "\n" through
# RFC 3339 as Go's time.Parse(time.RFC3339) takes it (metav1.Time): fractional seconds allowed
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_OBJECT_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")


def is_cluster_name(name: object) -> bool:
    """Whether ``name`` is a cluster name: 1-63 lower-case letters, digits, ``.``, ``_``, ``-``, starting and
    ending with a letter or digit (the whole string: no trailing newline)."""
    return isinstance(name, str) and CLUSTER_RE.fullmatch(name) is not None


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (``2026-08-07T10:00:00Z``, fractions and offsets allowed) as an aware UTC datetime.
    Raises ``ValueError``."""
    if not _RFC3339_RE.fullmatch(value):
        raise ValueError(value)
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python takes at most 6 fractional digits; Go keeps 9 and marshals none
        head, _, rest = text.partition(".")
        digits = re.match(r"\d+", rest).group(0)
        text = head + "." + digits[:6].ljust(6, "0") + rest[len(digits):]
    return datetime.fromisoformat(text).astimezone(timezone.utc)


class InvalidEvent(errors.InvalidInput):
    """The body is not a Flux event. ``field`` names the offending JSON field (``body`` for the whole)."""


@dataclass(frozen=True)
class FluxEvent:
    """One decoded event. ``cluster`` is resolved from metadata (or the caller's default);
    ``data`` is the JSON object as received (forwarded as is by the generic targets)."""

    involved_object: dict[str, str]
    severity: str
    timestamp: str
    message: str
    reason: str
    metadata: dict[str, str]
    reporting_controller: str
    reporting_instance: str
    cluster: str
    data: dict[str, Any] = field(repr=False, compare=False)
    time: datetime | None = field(default=None, repr=False, compare=False)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # payloads rendered for this event

    @property
    def kind(self) -> str:
        """``involvedObject.kind`` (also ``name``, ``namespace``; ``""`` when absent)."""
        return self.involved_object.get("kind", "")

    @property
    def name(self) -> str:
        return self.involved_object.get("name", "")

    @property
    def namespace(self) -> str:
        return self.involved_object.get("namespace", "")

    def revision(self) -> str | None:
        """``commit``, else ``originRevision``, else ``revision`` (``eventv1.Event.GetRevision``)."""
        for key in ("commit", "originRevision", "revision"):
            if self.metadata.get(key):
                return self.metadata[key]
        return None

    def is_commit_status_update(self) -> bool:
        """The "Reconciliation finished" success event (metadata ``commit_status: update``)."""
        return self.metadata.get("commit_status") == "update"

    def dedupe_key(self) -> str:
        """64 hex chars: sha256 of ``event/cluster=…/name=…/namespace=…/kind=…/message=…`` plus
        ``/originRevision=…``, ``/revision=…``, ``/token=…`` when present: notification-controller's
        ``EventKey`` (``internal/notifier/eventkey.go``; ``eventKeyFunc`` before) with the cluster added,
        since one hub carries the whole fleet."""
        comps = ["event", "cluster=" + self.cluster, "name=" + self.name, "namespace=" + self.namespace,
                 "kind=" + self.kind, "message=" + self.message]
        for key in ("originRevision", "revision", "token"):
            if key in self.metadata:
                comps.append(f"{key}={self.metadata[key]}")
        return hashlib.sha256("/".join(comps).encode("utf-8")).hexdigest()

    def struct(self) -> dict:
        """The event as notification-controller holds it (``eventv1.Event``, fluxcd/pkg
        ``apis/event/v1beta1/event.go``), in its field order with its ``omitempty`` rules: what
        ``json.Marshal`` writes. Unknown fields are dropped, metadata keys sorted, the timestamp is
        ``metav1.Time``'s UTC second (``2006-01-02T15:04:05Z``)."""
        obj = {k: self.involved_object[k] for k in _OBJECT_FIELDS if self.involved_object.get(k)}
        out: dict[str, Any] = {"involvedObject": obj, "severity": self.severity,
                               "timestamp": self.time.strftime("%Y-%m-%dT%H:%M:%SZ") if self.time else self.timestamp,
                               "message": self.message, "reason": self.reason}
        if self.metadata:
            out["metadata"] = go_map(self.metadata)
        out["reportingController"] = self.reporting_controller
        if self.reporting_instance:
            out["reportingInstance"] = self.reporting_instance
        return out

    @cached_property
    def _body(self) -> bytes:
        return marshal(self.struct())

    def body(self) -> bytes:
        """The bytes Flux's ``generic``/``generic-hmac`` provider posts (``forwarder.go``: ``json.Marshal``
        of the event; the ``X-Signature`` HMAC is over them). Rendered once per event."""
        return self._body


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _go_text(value: str) -> str:
    """As Go's decoder reads it: an escaped lone surrogate (``"\\ud800"``) becomes U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", value) if _SURROGATE_RE.search(value) else value


def _str(data: dict, key: str, *, required: bool, where: str = "") -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidEvent(where + key, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(where + key, f"must be a string, not {type(value).__name__}")
    return _go_text(value)


def parse_event(body: bytes | str | dict, *, cluster_key: str = "cluster",
                default_cluster: str | None = None, cluster: str | None = None) -> FluxEvent:
    """Decode and validate one event.

    ``cluster`` (the HTTP route's cluster) wins; else ``metadata[cluster_key]``; else
    ``default_cluster``. Raises :class:`InvalidEvent` naming the field: not UTF-8/JSON, not an
    object, missing ``involvedObject.kind``/``name``, ``severity`` not info/error/trace, a
    ``timestamp`` that is not RFC 3339, non-string metadata values, a body over 3 MiB, or no cluster.
    """
    if isinstance(body, dict):
        data = body
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidEvent("body", f"is {len(raw)} bytes; Flux events are at most {MAX_BODY_BYTES}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidEvent("body", "is not UTF-8") from None
        except RecursionError:
            raise InvalidEvent("body", "is nested too deeply") from None
        except ValueError as exc:
            raise InvalidEvent("body", f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InvalidEvent("body", f"must be a JSON object, not {type(data).__name__}")
    obj = data.get("involvedObject")
    if not isinstance(obj, dict):
        raise InvalidEvent("involvedObject", "is required and must be an object")
    involved = {}
    for key in _OBJECT_FIELDS:
        val = _str(obj, key, required=key in ("kind", "name"), where="involvedObject.")
        if val:
            involved[key] = val
    if not involved.get("kind") or not involved.get("name"):
        raise InvalidEvent("involvedObject", "kind and name must be non-empty")
    severity = _str(data, "severity", required=True)
    if severity not in SEVERITIES:
        raise InvalidEvent("severity", f"{_echo(severity)} is not one of {', '.join(SEVERITIES)}")
    timestamp = _str(data, "timestamp", required=True)
    try:
        when = parse_time(timestamp)
    except ValueError:
        raise InvalidEvent("timestamp", f"{_echo(timestamp)} is not an RFC 3339 time") from None
    message = _str(data, "message", required=True)
    if len(message) > MAX_MESSAGE_CHARS:
        raise InvalidEvent("message", f"is {len(message)} characters; Flux sends at most {MAX_MESSAGE_CHARS}")
    meta_in = data.get("metadata") or {}
    if not isinstance(meta_in, dict):
        raise InvalidEvent("metadata", "must be an object of strings")
    metadata: dict[str, str] = {}
    for key, val in meta_in.items():
        if not isinstance(val, str):
            raise InvalidEvent(f"metadata.{_safe(key)}", f"must be a string, not {type(val).__name__}")
        metadata[_go_text(key)] = _go_text(val)
    resolved = cluster or metadata.get(cluster_key) or default_cluster
    if not resolved:
        raise InvalidEvent(f"metadata.{cluster_key}",
                           "names no cluster and the routing configuration has no defaultCluster")
    if not is_cluster_name(resolved):
        raise InvalidEvent(f"metadata.{cluster_key}", f"{_echo(resolved)} is not a cluster name "
                           "(lower-case letters, digits, '.', '_' and '-', at most 63)")
    return FluxEvent(
        involved_object=involved, severity=severity, timestamp=timestamp, message=message,
        reason=_str(data, "reason", required=True), metadata=metadata,
        reporting_controller=_str(data, "reportingController", required=False),
        reporting_instance=_str(data, "reportingInstance", required=False),
        cluster=resolved, data=data, time=when)


def commit_sha(revision: str) -> str:
    """The 40-hex SHA-1 of a Flux revision, as ``fluxcd/pkg/git`` ``TransformRevision`` +
    ``ExtractHashFromRevision``: ``main@sha1:<sha>``, ``sha1:<sha>``, legacy ``main/<sha>`` and
    ``HEAD/<sha>``, or a bare SHA. Raises :class:`InvalidEvent` (``metadata.revision``) otherwise,
    e.g. for OCI digests (``sha256:...``), which have no commit.
    """
    rev = revision.strip()
    if ":" in rev:
        candidate = rev.rsplit(":", 1)[1]
    elif "/" in rev:
        candidate = rev.rsplit("/", 1)[1]
    else:
        candidate = rev
    candidate = candidate.lower()
    if not _SHA1_RE.fullmatch(candidate):
        raise InvalidEvent("metadata.revision", f"failed to extract a commit hash from {_echo(revision)}")
    return candidate


def _safe(key: str, limit: int = 40) -> str:
    """A field name built from untrusted text: cut, lone surrogates and controls escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in key[:limit]) \
        .encode("utf-8", "backslashreplace").decode("utf-8")


def _echo(value: str, limit: int = 64) -> str:
    """``repr`` of the first ``limit`` characters, for messages that repeat untrusted input."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")
