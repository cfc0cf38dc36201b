"""Routing configuration: which targets take which events, with the semantics of Flux Alerts.

A YAML (or JSON) document::

    defaultCluster: unknown          # events without metadata[clusterMetadataKey]
    clusterMetadataKey: cluster      # the Alert's spec.eventMetadata key naming the cluster
    dedupeWindow: 5m                 # same event forwarded once per target within this window
    http:
      hmacSecret: flux-hmac-{cluster}   # Key Vault secret holding each cluster's generic-hmac key
    targets:
      - name: ado-fleet              # [A-Za-z0-9_-]{1,63}, unique
        type: azuredevops            # azuredevops | msteams | slack | generic | generic-hmac
        organization: contoso
        project: platform
        repository: fleet
        patSecret: ado-status-pat    # or managedIdentity: true
        clusters: ["prod-*"]         # fnmatch patterns; default every cluster
        eventSeverity: info          # info (all) | error (errors only)
        eventSources: [{kind: Kustomization, name: "*", namespace: flux-system}]
        inclusionList: [".*"]        # regexes on message: any match keeps
        exclusionList: ["waiting"]   # any match drops
      - {name: teams-ops, type: msteams, urlSecret: teams-ops-webhook}
      - {name: slack-ops, type: slack, urlSecret: slack-ops-webhook, channel: "#ops"}
      - {name: audit, type: generic-hmac, urlSecret: audit-url, hmacSecret: audit-hmac}

Matching follows notification-controller ``filterAlertsForEvent`` (``internal/server/event_handlers.go``):
an ``eventSources`` entry matches on ``kind`` (case-insensitive), ``name`` (``*`` wildcard) and
``namespace`` (empty matches any: there is no Alert namespace to default to); ``eventSeverity: info``
passes all, ``error`` only errors; ``inclusionList`` then ``exclusionList`` (regexes on ``message``).
``matchLabels`` is out of scope and rejected. Like Flux, events with ``commit_status: update`` go only to
``azuredevops`` and generic targets, and ``azuredevops`` takes only events with ``commit``, with
``commit_status: update`` or of severity ``error`` (``getNotificationParams``, NC v1.9). Besides Flux's
kinds, ``eventSources`` may name the app's own ``FleetCluster`` (:mod:`.app_events`), which ``azuredevops``
takes only with a revision (a bootstrap's commit).

Every error is a :class:`RoutingConfigError` naming the entry, e.g. ``targets[2].inclusionList[0]``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from shared import errors
from shared.ports.azure.keyvault import NAME_RE as KEY_VAULT_NAME_RE

from .events import FluxEvent

TARGET_TYPES = ("azuredevops", "msteams", "slack", "generic", "generic-hmac")
FLUX_KINDS = ("Bucket", "GitRepository", "Kustomization", "HelmRelease", "HelmChart", "HelmRepository",
              "ImageRepository", "ImagePolicy", "ImageUpdateAutomation", "OCIRepository",
              "ArtifactGenerator", "ExternalArtifact")
APP_KINDS = ("FleetCluster",)  # the app's own events (shared.notify.app_events)
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
SECRET_RE = KEY_VAULT_NAME_RE  # names of Key Vault secrets, never URLs or keys
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_TOP_KEYS = {"defaultCluster", "clusterMetadataKey", "dedupeWindow", "http", "targets"}
_COMMON_KEYS = {"name", "type", "clusters", "eventSeverity", "eventSources", "inclusionList", "exclusionList",
                "timeout"}
_TYPE_KEYS = {
    "azuredevops": {"organization", "project", "repository", "patSecret", "managedIdentity", "baseUrl"},
    "msteams": {"urlSecret"},
    "slack": {"urlSecret", "channel", "username", "tokenSecret"},
    "generic": {"urlSecret"},
    "generic-hmac": {"urlSecret", "hmacSecret"},
}


class RoutingConfigError(errors.SettingError):
    """The routing document is invalid; ``field`` is the path of the bad entry (``NOTIFY_ROUTING`` when the
    file or blob is missing). A server-side problem: HTTP endpoints answer 500."""


@dataclass(frozen=True)
class EventSource:
    """An Alert ``eventSources`` entry: ``kind`` (case-insensitive), ``name`` (``*`` patterns), ``namespace``
    (empty: any)."""

    kind: str
    name: str = "*"
    namespace: str = ""

    def matches(self, event: FluxEvent) -> bool:
        if self.kind.lower() != event.kind.lower():
            return False
        if self.namespace and self.namespace != event.namespace:
            return False
        return self.name == "*" or fnmatch.fnmatchcase(event.name, self.name)


@dataclass(frozen=True)
class Target:
    """One destination. ``timeout`` is seconds per request; ``options`` holds the type-specific keys as
    written (no secret values: only Key Vault secret names)."""

    name: str
    type: str
    clusters: tuple[str, ...] = ()
    event_severity: str = "info"
    event_sources: tuple[EventSource, ...] = ()
    inclusion: tuple[re.Pattern, ...] = ()
    exclusion: tuple[re.Pattern, ...] = ()
    timeout: float = 15.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def accepts(self, event: FluxEvent) -> bool:
        """Whether this target takes ``event`` (cluster selector, then the Alert filters)."""
        if self.clusters and not any(fnmatch.fnmatchcase(event.cluster, c) for c in self.clusters):
            return False
        if self.event_sources and not any(s.matches(event) for s in self.event_sources):
            return False
        if self.event_severity == "error" and event.severity != "error":
            return False
        if self.inclusion and not any(p.search(event.message) for p in self.inclusion):
            return False
        if any(p.search(event.message) for p in self.exclusion):
            return False
        if self.type == "azuredevops":
            if event.kind in APP_KINDS and not event.revision():  # the app's events name a commit only after a push
                return False
            return (bool(event.metadata.get("commit")) or event.is_commit_status_update()
                    or event.severity == "error")
        if event.is_commit_status_update() and self.type not in ("generic", "generic-hmac"):
            return False
        return True


@dataclass(frozen=True)
class RoutingConfig:
    """The parsed routing document; ``dedupe_window`` in seconds."""

    targets: tuple[Target, ...]
    default_cluster: str | None = None
    cluster_metadata_key: str = "cluster"
    dedupe_window: float = 300.0
    hmac_secret_template: str | None = None

    def route(self, event: FluxEvent) -> list[Target]:
        """The targets that take ``event``, in the file's order."""
        return [t for t in self.targets if t.accepts(event)]

    def target(self, name: str) -> Target | None:
        """The target called ``name``, or None."""
        return next((t for t in self.targets if t.name == name), None)

    def hmac_secret_name(self, cluster: str) -> str | None:
        """The Key Vault secret name holding ``cluster``'s generic-hmac key: ``{cluster}`` in the template
        replaced by :func:`key_vault_part` (one secret per cluster: ``prod.weu-1``, ``prod_weu_1`` and
        ``prod-weu-1`` never share one), or None if not configured. Raises ``ValueError`` when the name
        would exceed Key Vault's 127 characters."""
        if not self.hmac_secret_template:
            return None
        name = self.hmac_secret_template.replace("{cluster}", key_vault_part(cluster))
        if not SECRET_RE.fullmatch(name):
            raise ValueError(f"the Key Vault secret name for cluster {cluster[:63]!r} would be {len(name)} characters; "
                             "Key Vault allows 127")
        return name


_PLAIN_CLUSTER_RE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_ESCAPES = {"-": "-h", ".": "-d", "_": "-u"}


def key_vault_part(cluster: str) -> str:
    """``cluster`` spelled in Key Vault's alphabet (``0-9a-zA-Z-``; names are case-insensitive), one to one.

    A name of letters, digits and single inner ``-`` (``prod-weu-1``) is kept as it is. Any other cluster
    name (with ``.``, ``_`` or ``--``) becomes ``x--`` followed by the name with ``-``, ``.``, ``_``
    written ``-h``, ``-d``, ``-u``: ``prod.weu-1`` → ``x--prod-dweu-h1``, ``prod_weu_1`` →
    ``x--prod-uweu-u1``. Kept names never contain ``--``, escaped ones always start with ``x--`` and
    decode uniquely, so no two cluster names share a secret."""
    if _PLAIN_CLUSTER_RE.fullmatch(cluster):
        return cluster
    return "x--" + "".join(_ESCAPES.get(ch, ch) for ch in cluster)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from an int/float or a Go-style ``1h2m3s`` string."""
    if isinstance(value, bool):
        raise RoutingConfigError(where, "must be a duration such as 5m or 300")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value and (m := _DURATION_RE.fullmatch(value.strip())) and any(m.groups()):
        h, mi, s = (int(x or 0) for x in m.groups())
        seconds = float(h * 3600 + mi * 60 + s)
    else:
        raise RoutingConfigError(where, f"{value!r} is not a duration such as 5m, 30s or 300")
    if seconds <= 0:
        raise RoutingConfigError(where, "must be positive")
    return seconds


def _list_of_str(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RoutingConfigError(where, "must be a list of non-empty strings")
    return value


def _regexes(value: Any, where: str) -> tuple[re.Pattern, ...]:
    out = []
    for i, text in enumerate(_list_of_str(value, where)):
        try:
            out.append(re.compile(text))
        except re.error as exc:
            raise RoutingConfigError(f"{where}[{i}]", f"invalid regular expression {text!r}: {exc}") from None
    return tuple(out)


def _secret_name(spec: dict, key: str, where: str, *, required: bool) -> str | None:
    value = spec.get(key)
    if value is None:
        if required:
            raise RoutingConfigError(f"{where}.{key}", "is required (a Key Vault secret name)")
        return None
    if not isinstance(value, str) or not SECRET_RE.fullmatch(value):
        raise RoutingConfigError(f"{where}.{key}", "must be a Key Vault secret name (letters, digits, '-'); "
                                 "URLs and keys live in Key Vault, not in this file")
    return value


def _target(spec: Any, where: str) -> Target:
    if not isinstance(spec, dict):
        raise RoutingConfigError(where, "must be a mapping")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RoutingConfigError(f"{where}.name", "is required: 1-63 letters, digits, '_' or '-'")
    kind = spec.get("type")
    if kind not in TARGET_TYPES:
        raise RoutingConfigError(f"{where}.type", f"{kind!r} is not one of {', '.join(TARGET_TYPES)}")
    unknown = set(spec) - _COMMON_KEYS - _TYPE_KEYS[kind]
    if unknown:
        raise RoutingConfigError(f"{where}.{sorted(unknown)[0]}", f"is not a field of a {kind} target")
    severity = spec.get("eventSeverity", "info")
    if severity not in ("info", "error"):
        raise RoutingConfigError(f"{where}.eventSeverity", f"{severity!r} is not info or error")
    sources = []
    raw_sources = spec.get("eventSources") or []
    if not isinstance(raw_sources, list):
        raise RoutingConfigError(f"{where}.eventSources", "must be a list")
    for i, src in enumerate(raw_sources):
        sw = f"{where}.eventSources[{i}]"
        if not isinstance(src, dict):
            raise RoutingConfigError(sw, "must be a mapping with kind, name, namespace")
        if "matchLabels" in src:
            raise RoutingConfigError(f"{sw}.matchLabels", "is not supported (the forwarder cannot read the cluster)")
        extra = set(src) - {"kind", "name", "namespace", "apiVersion"}
        if extra:
            raise RoutingConfigError(f"{sw}.{sorted(extra)[0]}", "is not a field of an event source")
        kind_ = src.get("kind")
        canon = next((k for k in FLUX_KINDS + APP_KINDS if isinstance(kind_, str) and k.lower() == kind_.lower()),
                     None)
        if canon is None:
            raise RoutingConfigError(f"{sw}.kind", f"{kind_!r} is not a Flux kind ({', '.join(FLUX_KINDS)}) "
                                     f"or the app's ({', '.join(APP_KINDS)})")
        sname = src.get("name", "*")
        sns = src.get("namespace", "")
        if not isinstance(sname, str) or not sname or not isinstance(sns, str):
            raise RoutingConfigError(sw, "name and namespace must be strings (name may be '*')")
        sources.append(EventSource(canon, sname, sns))
    clusters = _list_of_str(spec.get("clusters"), f"{where}.clusters")
    timeout = parse_duration(spec.get("timeout", 15), f"{where}.timeout")
    options: dict[str, Any] = {}
    if kind == "azuredevops":
        for key in ("organization", "project", "repository"):
            val = spec.get(key)
            if not isinstance(val, str) or not val.strip() or "/" in val:
                raise RoutingConfigError(f"{where}.{key}", "is required: a non-empty name without '/'")
            options[key] = val
        pat = _secret_name(spec, "patSecret", where, required=False)
        mi = spec.get("managedIdentity", False)
        if not isinstance(mi, bool):
            raise RoutingConfigError(f"{where}.managedIdentity", "must be true or false")
        if bool(pat) == mi:
            raise RoutingConfigError(f"{where}.patSecret", "set exactly one of patSecret and managedIdentity: true")
        options["patSecret"] = pat
        options["managedIdentity"] = mi
        base = spec.get("baseUrl", "https://dev.azure.com")
        if not isinstance(base, str) or not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", base):
            raise RoutingConfigError(f"{where}.baseUrl", "must be an http(s) URL such as https://dev.azure.com")
        options["baseUrl"] = base.rstrip("/")
    else:
        options["urlSecret"] = _secret_name(spec, "urlSecret", where, required=True)
        if kind == "generic-hmac":
            options["hmacSecret"] = _secret_name(spec, "hmacSecret", where, required=True)
        if kind == "slack":
            for key in ("channel", "username"):
                if key in spec and not isinstance(spec[key], str):
                    raise RoutingConfigError(f"{where}.{key}", "must be a string")
                options[key] = spec.get(key, "")
            options["tokenSecret"] = _secret_name(spec, "tokenSecret", where, required=False)
    return Target(name=name, type=kind, clusters=tuple(clusters), event_severity=severity,
                  event_sources=tuple(sources), inclusion=_regexes(spec.get("inclusionList"), f"{where}.inclusionList"),
                  exclusion=_regexes(spec.get("exclusionList"), f"{where}.exclusionList"), timeout=timeout,
                  options=options)


def parse_routing(text: str | bytes, source: str = "routing") -> RoutingConfig:
    """Parse and validate a routing document (YAML or JSON). Raises :class:`RoutingConfigError`
    whose ``field`` is the path of the bad entry and whose message names ``source``."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RoutingConfigError(source, f"is not valid YAML/JSON{where}") from None
    if not isinstance(doc, dict):
        raise RoutingConfigError(source, "must be a mapping with a targets list")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise RoutingConfigError(sorted(unknown)[0], f"is not a field of the routing document ({source})")
    targets_in = doc.get("targets")
    if not isinstance(targets_in, list) or not targets_in:
        raise RoutingConfigError("targets", f"must be a non-empty list ({source})")
    targets, seen = [], set()
    for i, spec in enumerate(targets_in):
        t = _target(spec, f"targets[{i}]")
        if t.name in seen:
            raise RoutingConfigError(f"targets[{i}].name", f"{t.name!r} is used twice")
        seen.add(t.name)
        targets.append(t)
    default = doc.get("defaultCluster")
    if default is not None and not isinstance(default, str):
        raise RoutingConfigError("defaultCluster", "must be a string")
    key = doc.get("clusterMetadataKey", "cluster")
    if not isinstance(key, str) or not key:
        raise RoutingConfigError("clusterMetadataKey", "must be a non-empty string")
    http = doc.get("http") or {}
    if not isinstance(http, dict) or set(http) - {"hmacSecret"}:
        raise RoutingConfigError("http", "must be a mapping with hmacSecret only")
    template = http.get("hmacSecret")
    if template is not None and (not isinstance(template, str)
                                 or not SECRET_RE.fullmatch(template.replace("{cluster}", "x"))):
        raise RoutingConfigError("http.hmacSecret", "must be a Key Vault secret name, optionally with {cluster}")
    return RoutingConfig(targets=tuple(targets), default_cluster=default or None, cluster_metadata_key=key,
                         dedupe_window=parse_duration(doc.get("dedupeWindow", 300), "dedupeWindow"),
                         hmac_secret_template=template)


def load_routing(location: str, *, blob_reader=None) -> RoutingConfig:
    """Load from ``location``: a file path, or ``blob:<container>/<name>`` read with
    ``blob_reader(container, name) -> bytes``. Raises :class:`RoutingConfigError` (field
    ``NOTIFY_ROUTING`` for a missing file or blob), or :class:`shared.errors.UpstreamError` when storage fails."""
    if location.startswith("blob:"):
        container, _, name = location[5:].partition("/")
        if not container or not name:
            raise RoutingConfigError("NOTIFY_ROUTING", "blob locations are blob:<container>/<name>")
        if blob_reader is None:
            raise RoutingConfigError("NOTIFY_ROUTING", "no blob storage is configured to read " + location)
        try:
            text = blob_reader(container, name)
        except errors.NotFound:
            raise RoutingConfigError("NOTIFY_ROUTING", f"blob {container}/{name} does not exist") from None
    else:
        if not os.path.isfile(location):
            raise RoutingConfigError("NOTIFY_ROUTING", f"no such file: {location}")
        with open(location, "rb") as fh:
            text = fh.read()
    return parse_routing(text, location)
