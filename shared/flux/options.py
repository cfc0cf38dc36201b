"""Validation and normalisation of the options `flux bootstrap git` takes, shared by the HTTP
trigger and the CLI. Each check raises :class:`shared.errors.InvalidInput` naming the field."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidInput
from . import DEFAULT_COMPONENTS, EXTRA_COMPONENTS, REQUIRED_COMPONENTS

_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VERSION_RE = re.compile(r"^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")
_BRANCH_BAD = re.compile(r"(^[/.-])|(\.\.)|([\x00-\x20~^:?*\[\\])|(/$)|(\.lock$)|(@\{)|(//)")


def parse_duration(value: str, field: str) -> int:
    """Parse a Go duration (``1m``, ``1h30m``, ``90s``) into nanoseconds, as ``time.ParseDuration``.

    Raises InvalidInput(field) for anything else (negative, empty or unit-less values)."""
    if not isinstance(value, str) or not _DURATION_RE.match(value):
        raise InvalidInput(field, f"{value!r} is not a duration such as 1m, 30s or 1h30m")
    total = 0
    for number, unit in _DURATION_PART.findall(value):
        total += int(float(number) * _UNIT_NS[unit])
    if total <= 0:
        raise InvalidInput(field, "must be greater than zero")
    return total


def format_duration(nanoseconds: int) -> str:
    """Format as Go's ``time.Duration.String`` does for whole seconds and up (``1m0s``, ``1h0m0s``,
    ``10m0s``, ``1m30s``); sub-second values print as ``500ms``."""
    if nanoseconds < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if nanoseconds % size == 0 or unit == "ns":
                return f"{nanoseconds // size}{unit}" if nanoseconds % size == 0 else f"{nanoseconds}ns"
    seconds, rest = divmod(nanoseconds, 10**9)
    frac = f".{rest:09d}".rstrip("0") if rest else ""
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    out = f"{seconds}{frac}s"
    if hours or minutes:
        out = f"{minutes}m" + out
    if hours:
        out = f"{hours}h" + out
    return out


def normalize_duration(value: str, field: str) -> str:
    """``1m`` → ``1m0s``: the Go-style string Flux writes for a duration flag."""
    return format_duration(parse_duration(value, field))


def normalize_path(value: str | None, field: str = "path") -> str:
    """Flux's ``SafeRelativePath`` (internal/flags/safe_relative_path.go): ``clusters/x/`` becomes
    ``./clusters/x``; empty stays empty. Paths that leave the repository (``..``) are refused rather
    than clamped, so a typo never writes somewhere unexpected."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    value = value.strip()
    if value in ("", ".", "./"):
        return ""
    parts = []
    for part in value.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidInput(field, f"{value!r} must stay inside the repository (no '..')")
        parts.append(part)
    if not parts:
        return ""
    return "./" + "/".join(parts)


def validate_branch(value: str, field: str = "branch") -> str:
    """A git branch name (git check-ref-format rules, the common subset)."""
    if not isinstance(value, str) or not value or _BRANCH_BAD.search(value):
        raise InvalidInput(field, f"{value!r} is not a valid branch name")
    return value


def validate_namespace(value: str, field: str = "namespace") -> str:
    """A DNS-1123 label, as cmd/flux/main.go requires of ``--namespace``."""
    if not isinstance(value, str) or len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise InvalidInput(field, f"{value!r} is not a valid namespace (DNS-1123 label)")
    return value


def validate_version(value: str, field: str = "version") -> str:
    """``vX.Y.Z``; Flux requires the ``v`` prefix (cmd/flux/version_utils.go)."""
    if not isinstance(value, str) or not _VERSION_RE.match(value):
        raise InvalidInput(field, f"{value!r} is not a Flux version such as v2.9.2")
    return value


def resolve_components(
    components: list[str] | tuple[str, ...] | None,
    components_extra: list[str] | tuple[str, ...] | None,
) -> list[str]:
    """``components`` + ``components-extra`` as Flux combines them, validated as
    ``utils.ValidateComponents`` and ``bootstrapValidate`` do (cmd/flux/bootstrap.go): every name
    known, source- and kustomize-controller present, no duplicates."""
    components = list(DEFAULT_COMPONENTS if components is None else components)
    extra = list(components_extra or [])
    for field, names in (("components", components), ("componentsExtra", extra)):
        if not all(isinstance(n, str) for n in names):
            raise InvalidInput(field, "must be a list of component names")
    known = DEFAULT_COMPONENTS + EXTRA_COMPONENTS
    for field, names in (("components", components), ("componentsExtra", extra)):
        for name in names:
            if name not in known:
                raise InvalidInput(field, f"component {name} is not available (known: {', '.join(known)})")
    for name in extra:
        if name not in EXTRA_COMPONENTS:
            raise InvalidInput("componentsExtra", f"{name} is not an extra component (valid: {', '.join(EXTRA_COMPONENTS)})")
    combined = components + extra
    for required in REQUIRED_COMPONENTS:
        if required not in combined:
            raise InvalidInput("components", f"component {required} is required")
    seen = set()
    for name in combined:
        if name in seen:
            raise InvalidInput("components", f"component {name} is listed twice")
        seen.add(name)
    return combined


def sync_url(url: str, *, token_auth: bool, allow_insecure_http: bool, field: str = "url") -> str:
    """The GitRepository ``spec.url`` Flux derives from ``--url`` (cmd/flux/bootstrap_git.go).

    With token auth the user info is dropped (``https://org@dev.azure.com/...`` →
    ``https://dev.azure.com/...``), a non-http(s) scheme loses its port, and the scheme becomes
    ``https`` unless ``allow_insecure_http`` keeps ``http``. Other URLs are returned as given after
    the scheme checks."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(field, "is required")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http", "ssh"):
        raise InvalidInput(field, f"scheme {parts.scheme or '(none)'!r} is not supported; use https:// (or ssh://)")
    if not parts.hostname:
        raise InvalidInput(field, "has no host")
    if parts.scheme == "http" and not allow_insecure_http:
        raise InvalidInput(field, "http:// needs allowInsecureHttp (--allow-insecure-http)")
    if not token_auth:
        return url.strip()
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if parts.port and parts.scheme in ("http", "https"):
        host = f"{host}:{parts.port}"
    scheme = "http" if (parts.scheme == "http" and allow_insecure_http) else "https"
    return urlunsplit((scheme, host, parts.path, parts.query, parts.fragment))
