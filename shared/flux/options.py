"""Validation and normalisation of the options `flux bootstrap git` takes, shared by the HTTP
trigger and the CLI. Each check raises :class:`shared.errors.InvalidInput` naming the field (the
request-body spelling, or the CLI flag when the caller passes one).

Sources (fluxcd/flux2 v2.9.4): Go's ``time.ParseDuration``/``Duration.String`` for ``--interval``
and ``--timeout``; ``internal/flags/safe_relative_path.go`` for ``--path``;
``cmd/flux/bootstrap.go`` ``bootstrapValidate`` and ``internal/utils`` ``ValidateComponents`` for
``--components``/``--components-extra``; ``cmd/flux/version_utils.go`` ``getVersion`` for
``--version``; ``cmd/flux/bootstrap_git.go`` for the sync URL.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..errors import InvalidInput, shown
from . import DEFAULT_COMPONENTS, EXTRA_COMPONENTS, REQUIRED_COMPONENTS

#: Go time.ParseDuration units, in nanoseconds (µ is U+00B5, μ is U+03BC; Go takes both).
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_RE = re.compile(r"^[+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_MAX_DURATION_NS = 2**63 - 1
#: The ``spec.interval`` pattern of the GitRepository and Kustomization CRDs (v1).
_CRD_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
#: Kubernetes names (k8s.io/apimachinery validation): a DNS-1123 label (namespaces; 1-63 chars) and
#: a DNS-1123 subdomain (most object names, such as Secrets; also at most 253 chars, checked apart).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VERSION_RE = re.compile(r"^v([0-9]+)\.([0-9]+)\.([0-9]+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_BRANCH_BAD = re.compile(r"(^[/.-])|(\.\.)|([\x00-\x20\x7f~^:?*\[\\])|(/$)|(\.lock$)|(\.lock/)|(/\.)|(\.$)|(@\{)|(//)|(^@$)")
#: ``--version`` value that Flux resolves to the newest release.
LATEST = "latest"
#: gotk-sync.yaml is written with the ``v1`` GitRepository and Kustomization APIs, which Flux
#: distributions serve from v2.0.0 on (fluxcd/flux2 commit 24452ecd).
MIN_VERSION = (2, 0, 0)
#: ``user@host:path``, git's scp-like SSH syntax (not a URL; Flux's url.Parse takes no scheme from it).
_SCP_LIKE = re.compile(r"([A-Za-z0-9._~-]+)@([A-Za-z0-9.-]+):(?!//)([^\s]+)")
#: ``host/path`` written without a scheme (``dev.azure.com/org/project/_git/repo``).
_HOST_PATH = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:[0-9]+)?/\S*")
#: Characters Go's ``url.URL.EscapedPath`` keeps as they are in a path (``validEncoded``).
_PATH_KEEP = "/!$&'()*+,;=:@[]-._~"


def parse_duration(value: str, field: str) -> int:
    """Parse a Go duration (``1m``, ``1h30m``, ``90s``, ``1.5s``, ``500ms``) into nanoseconds,
    as ``time.ParseDuration`` does (the fractional part scaled as Go does it).

    Raises InvalidInput(field) for anything else, and for zero or negative values (Flux's intervals
    and timeouts must be positive; callers that accept ``0s`` check for it first)."""
    if not isinstance(value, str) or not _DURATION_RE.fullmatch(value):
        raise InvalidInput(field, f"{shown(value)} is not a duration such as 1m, 30s or 1h30m")
    total = 0
    for whole, frac, unit in _DURATION_PART.findall(value.lstrip("+")):
        size = _UNIT_NS[unit]
        total += int(whole or "0") * size
        if frac and int(frac):
            # Go: v += uint64(float64(f) * (float64(unit) / scale))
            total += int(float(int(frac)) * (float(size) / float(10 ** len(frac))))
        if total > _MAX_DURATION_NS:
            raise InvalidInput(field, f"{shown(value)} is out of range")
    if total <= 0:
        raise InvalidInput(field, "must be greater than zero")
    return total


def parse_timeout(value: str, field: str) -> float:
    """A wait as ``--timeout`` takes it, in seconds: ``0``/``0s`` (check once, do not wait) or a
    positive Go duration (see :func:`parse_duration`). Raises InvalidInput(field)."""
    if value in ("0", "0s"):
        return 0.0
    return parse_duration(value, field) / 1e9


def _frac(value: int, digits: int) -> tuple[str, int]:
    """Go's ``fmtFrac``: the fraction of ``value / 10**digits`` without trailing zeros (``.5``, or
    ``""``), and the integer part."""
    whole, rest = divmod(value, 10**digits)
    if not rest:
        return "", whole
    return "." + f"{rest:0{digits}d}".rstrip("0"), whole


def format_duration(nanoseconds: int) -> str:
    """Format as Go's ``time.Duration.String``: ``1m0s``, ``1h0m0s``, ``10m0s``, ``1m30s``,
    ``1.5s``, ``500ms``, ``1.5µs``, ``0s``."""
    if nanoseconds < 0:
        return "-" + format_duration(-nanoseconds)
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 10**9:
        if nanoseconds < 10**3:
            return f"{nanoseconds}ns"
        if nanoseconds < 10**6:
            frac, whole = _frac(nanoseconds, 3)
            return f"{whole}{frac}µs"
        frac, whole = _frac(nanoseconds, 6)
        return f"{whole}{frac}ms"
    frac, seconds = _frac(nanoseconds, 9)
    minutes, seconds = divmod(seconds, 60)
    out = f"{seconds}{frac}s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        out = f"{minutes}m" + out
        if hours:
            out = f"{hours}h" + out
    return out


def normalize_duration(value: str, field: str) -> str:
    """``1m`` → ``1m0s``: the Go-style string Flux writes for a duration flag."""
    return format_duration(parse_duration(value, field))


def normalize_interval(value: str, field: str = "interval") -> str:
    """``--interval`` as Flux writes it to ``GitRepository.spec.interval`` (``1m`` → ``1m0s``).

    Also refuses what Flux would write but the GitRepository CRD rejects (its pattern
    ``^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$`` has no ``µs``/``ns``), so such a value fails with
    InvalidInput(field) before anything is committed rather than at apply time."""
    text = normalize_duration(value, field)
    if not _CRD_DURATION.fullmatch(text):
        raise InvalidInput(field, f"{shown(value)} ({text}) is shorter than the 1ms the GitRepository API accepts")
    return text


def normalize_path(value: str | None, field: str = "path") -> str:
    """Flux's ``SafeRelativePath`` (internal/flags/safe_relative_path.go): the path is trimmed and
    cleaned as ``securejoin("./", path)`` does (``clusters/x/`` → ``./clusters/x``,
    ``/clusters//x`` → ``./clusters/x``, ``a/../b`` → ``./b``); empty (or ``.``) stays ``""``.

    One deliberate difference: where securejoin clamps a path that climbs above the repository root
    (``../x`` becomes ``./x``), this raises InvalidInput(field), so a typo never writes somewhere
    other than the caller meant."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    value = value.strip()
    parts: list[str] = []
    for part in value.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidInput(field, f"{shown(value)} must stay inside the repository ('..' climbs above its root)")
            parts.pop()
            continue
        if "\x00" in part:
            raise InvalidInput(field, "must not contain NUL characters")
        if part.lower() == ".git":
            raise InvalidInput(field, f"{shown(value)} would write into the repository's .git folder")
        parts.append(part)
    if not parts:
        return ""
    return "./" + "/".join(parts)


def validate_branch(value: str, field: str = "branch") -> str:
    """A git branch name (the rules of ``git check-ref-format --branch``)."""
    if not isinstance(value, str) or not value or _BRANCH_BAD.search(value):
        raise InvalidInput(field, f"{shown(value)} is not a valid branch name")
    return value


def validate_namespace(value: str, field: str = "namespace") -> str:
    """A DNS-1123 label, as cmd/flux/main.go requires of ``--namespace``, that YAML reads as a
    string: ``true``, ``yes``, ``on``, ``1``, ``010``, ``0x1f`` are labels, but written unquoted
    into gotk-components.yaml (as the namespace transform writes it) they would load as a boolean
    or a number, so they are refused (:func:`shared.trust.yaml_ambiguous`)."""
    from ..trust import yaml_ambiguous

    if not isinstance(value, str) or len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        raise InvalidInput(field, f"{shown(value)} is not a valid namespace (DNS-1123 label)")
    if yaml_ambiguous(value):
        raise InvalidInput(field, f"{shown(value)} would be read as a boolean or a number in YAML; choose another namespace")
    return value


def validate_dns_label(value: str, field: str) -> str:
    """A DNS-1123 label (1-63 of ``a-z``, ``0-9``, ``-``; alphanumeric at both ends)."""
    if not isinstance(value, str) or len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        raise InvalidInput(field, f"{shown(value)} is not a DNS-1123 label (a-z, 0-9 and '-', at most 63)")
    return value


def parse_version(value: str) -> tuple[int, int, int]:
    """``v2.9.2`` → ``(2, 9, 2)``. Raises ValueError for anything else."""
    m = _VERSION_RE.fullmatch(value or "")
    if not m:
        raise ValueError(value)
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def validate_version(value: str, field: str = "version") -> str:
    """``--version`` as ``getVersion`` checks it (cmd/flux/version_utils.go): ``latest`` or a
    ``v``-prefixed release (``targeted version '2.9.2' must be prefixed with 'v'``). Whether the
    release exists is known when its distribution is loaded. Versions before v2.0.0 are refused:
    their CRDs do not serve the ``v1`` APIs that gotk-sync.yaml is written with (Flux's own rule,
    ``CompatibleVersion``, ties a version to the CLI of the same MINOR)."""
    if value == LATEST:
        return value
    if not isinstance(value, str) or not value.startswith("v"):
        raise InvalidInput(field, f"targeted version '{value}' must be prefixed with 'v'")
    try:
        parse_version(value)
    except ValueError:
        raise InvalidInput(field, f"targeted version '{value}' is not a Flux release such as v2.9.2") from None
    check_supported_version(value, field)
    return value


def check_supported_version(value: str, field: str = "version") -> None:
    """Raise InvalidInput(field) when Flux ``value`` predates the ``v1`` sync APIs (v2.0.0)."""
    try:
        version = parse_version(value)
    except ValueError:
        raise InvalidInput(field, f"'{value}' is not a Flux release such as v2.9.2") from None
    if version < MIN_VERSION:
        raise InvalidInput(
            field,
            f"targeted version '{value}' is not compatible: gotk-sync.yaml uses the v1 GitRepository and "
            "Kustomization APIs, served by Flux v2.0.0 and later",
        )


def resolve_components(
    components: list[str] | tuple[str, ...] | None,
    components_extra: list[str] | tuple[str, ...] | None,
) -> list[str]:
    """``components`` + ``components-extra`` as Flux combines them (``bootstrapComponents``),
    validated as ``bootstrapValidate`` does: first ``component <name> is required`` for a missing
    source- or kustomize-controller, then ``component <name> is not available`` for a name outside
    the seven Flux knows (``utils.ValidateComponents``). A name listed twice is refused too (Flux
    fails later, when kustomize finds the component's objects twice). Returns the combined list in
    order; the error's field is ``components`` or ``componentsExtra``, whichever holds the name."""
    components = list(DEFAULT_COMPONENTS if components is None else components)
    extra = list(components_extra or [])
    for field, names in (("components", components), ("componentsExtra", extra)):
        if not all(isinstance(n, str) for n in names):
            raise InvalidInput(field, "must be a list of component names")
    combined = components + extra
    for required in REQUIRED_COMPONENTS:
        if required not in combined:
            raise InvalidInput("components", f"component {required} is required")
    known = DEFAULT_COMPONENTS + EXTRA_COMPONENTS
    for field, names in (("components", components), ("componentsExtra", extra)):
        for name in names:
            if name not in known:
                raise InvalidInput(field, f"component {name} is not available (known: {', '.join(known)})")
    seen: set[str] = set()
    for i, name in enumerate(combined):
        if name in seen:
            raise InvalidInput("components" if i < len(components) else "componentsExtra", f"component {name} is listed twice")
        seen.add(name)
    return combined


def _go_escaped_path(path: str) -> str:
    """The path as Go's ``url.URL.String`` writes it: kept when it is already a valid encoding,
    else percent-encoded (``My Project`` → ``My%20Project``)."""
    if re.fullmatch(r"(?:[A-Za-z0-9" + re.escape(_PATH_KEEP) + r"]|%[0-9A-Fa-f]{2})*", path):
        return path
    return quote(unquote(path), safe="/$&+,;=:@-._~")


def sync_url(url: str, *, token_auth: bool, allow_insecure_http: bool, field: str = "url") -> str:
    """The GitRepository ``spec.url`` Flux derives from ``--url`` (cmd/flux/bootstrap_git.go).

    With token auth the user info is dropped (``https://org@dev.azure.com/...`` →
    ``https://dev.azure.com/...``), a non-http(s) scheme loses its port, and the scheme becomes
    ``https`` unless ``allow_insecure_http`` keeps ``http``; the path is escaped as Go's
    ``url.URL.String`` does (``My Project`` → ``My%20Project``). Other URLs are returned as given
    after the scheme checks.

    Raises InvalidInput(field) for a missing or unparsable URL, a scheme other than
    https/http/ssh, ``http://`` without ``allow_insecure_http``, and a password in the user info
    (credentials are never taken from the URL; the message does not repeat it)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(field, "is required")
    try:
        parts = urlsplit(url.strip())
        hostname, port, password = parts.hostname, parts.port, parts.password
    except ValueError:
        raise InvalidInput(field, "is not a valid URL") from None
    if password:
        raise InvalidInput(field, "must not carry a password; the PAT is read from Key Vault (passwordSecret) or the environment")
    if parts.scheme not in ("https", "http", "ssh"):
        scp = _SCP_LIKE.fullmatch(url.strip())
        if scp:  # git@ssh.dev.azure.com:v3/org/project/repo, as Azure DevOps shows it for "Clone with SSH"
            user, host, path = scp.groups()
            raise InvalidInput(field, f"{shown(url.strip())} is an scp-like SSH address, which Flux does not take; write it as "
                                      f"the URL ssh://{user}@{host}/{path.lstrip('/')} (Azure DevOps: "
                                      "ssh://git@ssh.dev.azure.com/v3/<org>/<project>/<repository>), or give the repository's "
                                      "https:// URL for token auth")
        if not parts.scheme and _HOST_PATH.fullmatch(url.strip()):
            raise InvalidInput(field, f"{shown(url.strip())} has no scheme; write https://{url.strip()}")
        raise InvalidInput(field, f"scheme {shown(parts.scheme or '(none)')} is not supported; use an https:// URL "
                                  "(http:// with allowInsecureHttp, or ssh://)")
    if not hostname:
        raise InvalidInput(field, "has no host")
    if parts.scheme == "http" and not allow_insecure_http:
        raise InvalidInput(field, "scheme http is insecure, set allowInsecureHttp (--allow-insecure-http) to allow it")
    if not token_auth:
        return url.strip()
    host = f"[{hostname}]" if ":" in hostname else hostname
    if port and parts.scheme in ("http", "https"):
        host = f"{host}:{port}"
    scheme = "http" if (parts.scheme == "http" and allow_insecure_http) else "https"
    return urlunsplit((scheme, host, _go_escaped_path(parts.path), parts.query, parts.fragment))


#: An image reference's registry part as the distribution/reference grammar has it (the part Flux
#: copies before ``/<component>:<tag>``): a domain (``myacr.azurecr.io``, ``localhost``, ``[::1]``) with
#: an optional port, then repository path components (lower-case, ``.``/``_``/``__``/``-`` separators).
_REF_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
_REF_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REGISTRY = re.compile(rf"{_REF_DOMAIN}(?:/{_REF_COMPONENT})*")


def validate_registry(value: object, field: str = "registry") -> str:
    """``--registry``: what Flux copies verbatim into every controller image reference
    (``<registry>/<component>:<version>``, templates.go ``images``), so it must make a valid image
    reference: ``ghcr.io/fluxcd``, ``myacr.azurecr.io:443/fluxcd``, ``localhost:5000/fluxcd``. A scheme
    (``https://``) or a trailing ``/`` would make every image name invalid (the kubelet refuses
    ``https://...`` as InvalidImageName), so they are refused with the spelling to use. Raises
    InvalidInput(field)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "is required, e.g. ghcr.io/fluxcd")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", value)
    if scheme:
        raise InvalidInput(field, f"{shown(value)} has a scheme; image references have none: write {shown(scheme.group(2).rstrip('/'))}")
    if value.endswith("/"):
        raise InvalidInput(field, f"{shown(value)} ends with '/'; write {shown(value.rstrip('/'))}")
    if len(value) > 255 or not REGISTRY.fullmatch(value):
        raise InvalidInput(field, f"{shown(value)} is not a registry such as ghcr.io/fluxcd or myacr.azurecr.io:443/fluxcd "
                                  "(host[:port] then lower-case repository path)")
    return value



#: Azure DevOps Services' SSH hosts: the current one and the one of ``*.visualstudio.com``
#: organisations (learn.microsoft.com/azure/devops/repos/git/use-ssh-keys-to-authenticate).
AZURE_DEVOPS_SSH_HOSTS = ("ssh.dev.azure.com", "vs-ssh.visualstudio.com")
#: Host key algorithms for Azure DevOps SSH (RSA with SHA-2 only; fluxcd/website
#: ``content/en/flux/installation/bootstrap/azure-devops.md``).
AZURE_DEVOPS_HOSTKEY_ALGOS = ("rsa-sha2-512", "rsa-sha2-256")


def is_azure_devops_ssh(url: str) -> bool:
    """Whether ``url`` is an Azure DevOps Services SSH URL: an ``ssh://`` URL whose host is one of
    :data:`AZURE_DEVOPS_SSH_HOSTS` or whose path has Azure DevOps' SSH layout
    ``/v3/{org}/{project}/{repo}`` (which no other server uses; Azure DevOps Server's SSH paths are
    ``/{collection}/{project}/_git/{repo}``)."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except (ValueError, AttributeError):
        return False
    if parts.scheme.lower() != "ssh":
        return False
    segments = [s for s in parts.path.split("/") if s]
    return host in AZURE_DEVOPS_SSH_HOSTS or (len(segments) == 4 and segments[0] == "v3")


def _azure_devops_ssh_path(host: str, path: str, field: str) -> str:
    """``/v3/{org}/{project}/{repo}`` for the https path of an Azure DevOps Services repository:
    ``dev.azure.com/{org}/{project}/_git/{repo}`` (``{org}/_git/{repo}`` when the project is
    named as the repository) or ``{org}.visualstudio.com/[DefaultCollection/]{project}/_git/{repo}``."""
    segments = [s for s in path.split("/") if s]
    if host == "dev.azure.com":
        org, rest = (segments[0], segments[1:]) if segments else ("", [])
    else:
        org, rest = host.split(".", 1)[0], segments
        if rest and rest[0].lower() == "defaultcollection":
            rest = rest[1:]
    if len(rest) == 2 and rest[0] == "_git":
        rest = [rest[1]] + rest
    if not org or len(rest) != 3 or rest[1] != "_git":
        raise InvalidInput(field, "is not an Azure DevOps repository URL (https://dev.azure.com/{org}/{project}/_git/{repo}); "
                                  "give the ssh:// URL Azure DevOps shows under Clone → SSH")
    return f"/v3/{org}/{rest[0]}/{rest[2]}"


def ssh_sync_url(url: str, *, username: str = "git", ssh_hostname: str | None = None, field: str = "url") -> str:
    """The GitRepository ``spec.url`` with SSH auth (cmd/flux/bootstrap_git.go, no
    ``--token-auth``): the user becomes ``username`` when the URL has none or ``username`` is not
    ``git``; the scheme ``ssh``; the host (``host[:port]``) ``ssh_hostname`` when given
    (``--ssh-hostname``); the path escaped as Go writes it.

    One difference, for Azure DevOps Services: an ``https://dev.azure.com/...`` (or
    ``*.visualstudio.com``) URL gets Azure DevOps' SSH path ``/v3/{org}/{project}/{repo}``, where
    Flux keeps the https path, which Azure DevOps does not serve over SSH (``flux bootstrap git
    --ssh-hostname=ssh.dev.azure.com`` with an https URL writes a sync URL that cannot fetch).
    Other servers (Azure DevOps Server included) keep the path, as in Flux. The user info of an
    https URL (Azure DevOps' clone dialog puts the organisation there) is not taken as the SSH
    user, which Flux would do. Raises InvalidInput(field)."""
    try:
        parts = urlsplit(url.strip())
        hostname = (parts.hostname or "").lower()
    except ValueError:
        raise InvalidInput(field, "is not a valid URL") from None
    # An https URL's user info is an HTTP login (Azure DevOps' clone dialog puts the organisation
    # there), not the SSH user: only an ssh:// URL's user is kept.
    user = parts.username if parts.scheme.lower() == "ssh" else None
    if user is None or username != "git":
        user = username
    host = ssh_hostname or parts.netloc.rpartition("@")[2]
    path = parts.path
    if parts.scheme.lower() in ("http", "https"):
        from ..trust import is_azure_devops_services

        if is_azure_devops_services(hostname):
            path = _azure_devops_ssh_path(hostname, path, field)
    return urlunsplit(("ssh", f"{quote(user, safe='')}@{host}", _go_escaped_path(path), "", ""))
