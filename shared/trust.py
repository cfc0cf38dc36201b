"""Trust boundaries: where a credential may go, and which powerful options a caller may choose.

The app holds the keys of a fleet (PATs, kubeconfigs, the Function's Entra identity); a caller of the
HTTP trigger, a registry record or a cluster's GitRepository only *names* destinations. This module is
the one place that decides whether a destination is allowed; the git port, the bootstrap, the rotation
and the CLI all ask it.

**Git destinations** (:class:`GitPolicy`, app setting ``GIT_ALLOWED_HOSTS``, default
``dev.azure.com,ssh.dev.azure.com,*.visualstudio.com``). A comma-separated list of host entries:

* ``host`` (any port) or ``host:port`` (that port only); ``[v6]`` / ``[v6]:port`` for IPv6 literals;
* ``*.suffix``: exactly one more DNS label in front of ``suffix`` (``*.visualstudio.com`` covers
  ``contoso.visualstudio.com``, not ``a.b.visualstudio.com``), as a TLS wildcard does.

A git URL's host must match an entry. An entry other than a wildcard is an *exact* entry, and only
an exact entry may be an IP literal (``127.0.0.1`` as written: ``2130706433``, ``0x7f000001``,
``0177.0.0.1``, ``127.1`` or ``[::ffff:127.0.0.1]`` are other spellings and are refused) or resolve
to, and connect to, a non-public address (loopback, link-local, private, shared, reserved, multicast,
or a cloud metadata address such as 169.254.169.254 or Azure's 168.63.129.16). A host matched only by
a wildcard must resolve to public addresses, and the address actually connected is checked again after
connect (:meth:`GitPolicy.check_peer`, called from the git port's urllib3 connection), so a DNS answer
that changes between the check and the connection (DNS rebinding) is caught before a byte is sent.
``http://`` (``allowInsecureHttp``) is allowed only to exact entries, and never to Azure DevOps
Services (``dev.azure.com``, ``*.visualstudio.com``), which serves git over https only.

**The Entra ID token** of the Function's managed identity (``withBearerToken``, rotation's ``entra-*``
modes) goes only to hosts in app setting ``GIT_BEARER_TOKEN_HOSTS`` (default
``dev.azure.com,*.visualstudio.com``: Azure DevOps Services; Azure DevOps Server does not take Entra
ID tokens, so it is not there unless an operator adds it), which must also pass ``GIT_ALLOWED_HOSTS``.

**Credentials bound by the vault's owner.** A Key Vault secret is sent as a Git credential only to a
URL covered by its tag ``flux-git-url-prefixes`` (:data:`URL_PREFIXES_TAG`): comma-separated URL
prefixes such as ``https://dev.azure.com/contoso/``. A prefix covers a URL when (:meth:`GitURL.covered_by`)
the schemes are equal, the hosts are equal (ASCII case-insensitive, no wildcard), the ports are equal
(the scheme's default when absent: 443 / 80), and the prefix's path is a leading run of whole path
segments of the URL's (``https://dev.azure.com/contoso`` and ``.../contoso/`` both cover
``.../contoso/platform/_git/fleet`` but not ``.../contoso.evil/...`` nor ``.../contosox/...``).
SSH private keys are bound the same way to ``ssh://`` URLs (port 22 when absent): Azure DevOps'
organisation prefix is ``ssh://ssh.dev.azure.com/v3/contoso/``, or ``ssh://git@ssh.dev.azure.com/v3/contoso/``
to cover user ``git`` only (an ``ssh://`` prefix may name the user; an https one may not).
Segments are compared percent-decoded and case-insensitively, as Azure DevOps resolves organisation,
project and repository names. A prefix with user info, a query or a fragment covers nothing. A secret
whose content type is ``application/x-kubeconfig`` (:data:`KUBECONFIG_CONTENT_TYPE`) is never sent
as a Git credential, and only such a secret is used as a kubeconfig (:func:`kubeconfig_text`).

**Git URLs** (:func:`parse_git_url`: ``https://``, ``http://`` and ``ssh://user@host[:port]/path``)
are refused when different
parsers could disagree on where they go: control characters, whitespace or ``\\`` in the scheme and authority, a backslash anywhere, a
password, a query or fragment, ``.``/``..`` path segments (urllib3 removes them before sending), or an
encoded ``/``, ``\\`` or NUL in the path; host names must be ASCII (punycode for IDNs) without a trailing
dot.

**Flux options**: ``registry`` must be in app setting ``FLUX_ALLOWED_REGISTRIES`` (default
``ghcr.io/fluxcd``; an entry also covers repositories below it, ``ghcr.io/fluxcd/mirror``), and the Flux
namespace may not be one of :data:`RESERVED_NAMESPACES`.

Every refusal is a :class:`DestinationRefused` (an ``InvalidInput``: HTTP 400 naming the field), and
its message says which setting or tag to change. Inputs are echoed cut short (:func:`shared.errors.shown`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote, urlsplit

from shared import errors
from shared.errors import shown
from shared.flux.options import REGISTRY

GIT_ALLOWED_HOSTS = "GIT_ALLOWED_HOSTS"
DEFAULT_GIT_ALLOWED_HOSTS = "dev.azure.com,ssh.dev.azure.com,*.visualstudio.com"
GIT_BEARER_TOKEN_HOSTS = "GIT_BEARER_TOKEN_HOSTS"
DEFAULT_GIT_BEARER_TOKEN_HOSTS = "dev.azure.com,*.visualstudio.com"
FLUX_ALLOWED_REGISTRIES = "FLUX_ALLOWED_REGISTRIES"
DEFAULT_FLUX_ALLOWED_REGISTRIES = "ghcr.io/fluxcd"
#: Tag of a Key Vault secret: the URL prefixes it may be sent to as a Git credential.
URL_PREFIXES_TAG = "flux-git-url-prefixes"
#: Content type marking a Key Vault secret as a kubeconfig.
KUBECONFIG_CONTENT_TYPE = "application/x-kubeconfig"
#: Namespaces Flux is never installed into (Kubernetes' own).
RESERVED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "default")
#: Azure DevOps Services: https only, so never ``http://`` even when listed.
_ADO_SERVICES = ("dev.azure.com", "ssh.dev.azure.com", "*.visualstudio.com")
#: Cloud metadata and platform endpoints (Azure IMDS and WireServer, AWS, GCP, Alibaba).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "168.63.129.16", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22}
#: An SSH user name in a git URL (``git``; Azure DevOps Services' older hosts use the organisation).
_SSH_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
#: YAML 1.1 / 1.2 plain scalars that do not load as strings (names written unquoted into Flux YAML).
_YAML_NON_STRING = re.compile(
    r"(y|n|yes|no|on|off|true|false|null|[-+]?[0-9][0-9_]*|0x[0-9a-f_]+|0o[0-7_]+|0b[01_]+"
    r"|[-+]?[0-9][0-9_]*(\.[0-9_]*)?(e[-+]?[0-9]+)?|[0-9][0-9_]*(:[0-5]?[0-9])+)")
MAX_URL_LENGTH = 2048


class DestinationRefused(errors.InvalidInput):
    """A destination (git host, URL, registry) or a credential's use was refused by the trust policy.
    HTTP 400 with ``field``; nothing was sent."""


# -- input hygiene -------------------------------------------------------------------------------


def check_text(value: Any, field: str) -> Any:
    """``value`` unchanged when it holds no lone surrogate (a JSON ``"\\ud800"``, or argv bytes that
    are not UTF-8), else ``InvalidInput(field)``. Lists are checked item by item. Such text cannot be
    encoded for git, HTTP or storage, so it is refused up front rather than failing later."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise errors.InvalidInput(field, "must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def safe_field_name(key: Any) -> str:
    """A request key fit to be echoed as an error's ``field``: as sent when it is short printable
    text, else :func:`shared.errors.shown` of it (escaped, cut short)."""
    if isinstance(key, str) and len(key) <= 64 and key.isprintable():
        try:
            key.encode("utf-8")
            return key
        except UnicodeEncodeError:
            pass
    return shown(key).encode("ascii", "backslashreplace").decode("ascii")


def check_username(value: Any, field: str = "username") -> str:
    """A Git (HTTP Basic) user name: 1-256 Latin-1 characters without ``:`` or control characters
    (Basic auth encodes the user name as Latin-1; ``:`` ends it)."""
    if not isinstance(value, str) or not value or len(value) > 256:
        raise errors.InvalidInput(field, "must be a non-empty user name of at most 256 characters")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise errors.InvalidInput(field, "must be Latin-1 text (HTTP Basic auth sends the user name as Latin-1)") from None
    if ":" in value or any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in value):
        raise errors.InvalidInput(field, "must not contain ':' or control characters such as line breaks")
    return value


def yaml_ambiguous(value: str) -> bool:
    """True when ``value`` written as a plain YAML scalar would load as a boolean, null or number
    (``true``, ``yes``, ``on``, ``1``, ``010``, ``0x1f``, ``1e3``...), in YAML 1.1 or 1.2."""
    return bool(_YAML_NON_STRING.fullmatch(value.lower()))


def check_namespace(value: str, field: str = "namespace") -> str:
    """The Flux namespace of a bootstrap or a registry record: not one of :data:`RESERVED_NAMESPACES`
    (Flux runs with cluster-admin; it gets a namespace of its own). Shape checks are
    :func:`shared.flux.options.validate_namespace`'s."""
    if value in RESERVED_NAMESPACES:
        raise DestinationRefused(field, f"{value!r} is a Kubernetes system namespace; Flux needs its own "
                                        f"(not {', '.join(RESERVED_NAMESPACES)}), e.g. flux-system")
    return value


# -- addresses -----------------------------------------------------------------------------------


def address_kind(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an IP address is not a public destination (``"loopback"``, ``"link-local"``, ``"private"``,
    ``"metadata"``, ...), or None for a public (globally routable) address. IPv4-mapped IPv6
    addresses are judged as the IPv4 address they map. An unparsable address is ``"invalid"``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return "invalid"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "metadata"
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


def _ip_like(host: str) -> bool:
    """True for anything a resolver or URL parser may take as an IP address: IPv6 and dotted IPv4
    literals, and the BSD ``inet_aton`` forms (``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
    ``127.1``); also any name whose last label is numeric (WHATWG's "ends in a number")."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except (OSError, ValueError):
        pass
    return bool(_NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]))


# -- git URLs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitURL:
    """A parsed git URL (see :func:`parse_git_url`): ``scheme`` (``https``/``http``/``ssh``),
    ``host`` (lower-case; IPv6 without brackets), ``port`` (as written, or None), ``path`` (as
    written, no trailing ``/``), ``url``: the URL as sent (https: without user info; ssh: with its
    user, ``ssh://git@host/path``), and ``user`` (the SSH user, or None)."""

    scheme: str
    host: str
    port: int | None
    path: str
    url: str
    user: str | None = None

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.scheme]

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, percent-decoded and case-folded (Azure DevOps' comparison)."""
        return tuple(unquote(s).casefold() for s in self.path.split("/") if s)

    def same_repository(self, other: "GitURL") -> bool:
        """Whether ``other`` names the same repository: same scheme, host, port and path (segments
        compared as :attr:`segments`)."""
        return (self.scheme, self.host, self.effective_port, self.segments) == \
            (other.scheme, other.host, other.effective_port, other.segments)

    def covered_by(self, prefix: "GitURL") -> bool:
        """Whether URL prefix ``prefix`` covers this URL (see the module docstring); an ``ssh://``
        prefix with a user (``ssh://git@ssh.dev.azure.com/v3/contoso/``) covers that user only."""
        if (self.scheme, self.host, self.effective_port) != (prefix.scheme, prefix.host, prefix.effective_port):
            return False
        if prefix.user is not None and prefix.user != self.user:
            return False
        want = prefix.segments
        return self.segments[: len(want)] == want

    def __str__(self) -> str:
        return self.url


def _refuse(field: str, message: str) -> DestinationRefused:
    return DestinationRefused(field, message)


def parse_git_url(url: Any, field: str = "url", *, prefix: bool = False) -> GitURL:
    """Parse and check the shape of an https/http/ssh git URL (no policy: see :class:`GitPolicy`).

    https/http: user info without a password is dropped (``https://org@dev.azure.com/...``, as Azure
    DevOps' clone dialog writes it). ssh: the user is kept (``ssh://git@ssh.dev.azure.com/v3/...``);
    the scp-like form (``git@ssh.dev.azure.com:v3/...``) has no scheme and is refused (the bootstrap
    options say how to write it first: :func:`shared.flux.options.sync_url`). With ``prefix`` (a tag's URL prefix) the path may be empty and https user
    info is refused (an ssh prefix may name the user). Raises :class:`DestinationRefused` naming
    ``field``; a password is never echoed."""
    if not isinstance(url, str) or not url.strip():
        raise _refuse(field, "is required")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(field, f"is longer than {MAX_URL_LENGTH} characters")
    check_text(url, field)
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in url) or "\\" in url:
        raise _refuse(field, "must not contain control characters or backslashes")
    scheme_end = url.find("://")
    authority = url[scheme_end + 3:].split("/", 1)[0] if scheme_end >= 0 else ""
    if any(c.isspace() for c in url[: max(scheme_end, 0)] + authority) or not authority.isascii():
        raise _refuse(field, "must have an ASCII host without spaces (use the punycode form of an international name)")
    try:
        parts = urlsplit(url)
        host, port, password, username = parts.hostname, parts.port, parts.password, parts.username
    except ValueError:
        raise _refuse(field, "is not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if password is not None:
        raise _refuse(field, "must not carry a password; the PAT is read from Key Vault (passwordSecret) or the environment")
    if scheme not in _DEFAULT_PORTS:
        raise _refuse(field, f"scheme {shown(parts.scheme or '(none)')} is not supported; use https:// or ssh://")
    if not host:
        raise _refuse(field, "has no host")
    if scheme == "ssh":
        if username is not None and not _SSH_USER.fullmatch(unquote(username)):
            raise _refuse(field, "has an SSH user name that is not a plain name such as git")
        username = unquote(username) if username is not None else None
    elif prefix and (username is not None or "@" in parts.netloc):
        raise _refuse(field, "a URL prefix must not carry user info")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _refuse(field, "must not have a query or fragment")
    if port == 0:
        raise _refuse(field, "has port 0")
    host = host.lower()
    if ":" not in host:  # not IPv6: a DNS name or an IPv4 literal
        if host.endswith("."):
            raise _refuse(field, f"host {shown(host)} must not end with '.'")
        if not _ip_like(host) and (len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split("."))):
            raise _refuse(field, f"host {shown(host)} is not a valid host name")
    else:
        if "%" in host:
            raise _refuse(field, "an IPv6 zone id is not supported")
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise _refuse(field, f"host {shown(host)} is not a valid IPv6 address") from None
    path = parts.path.rstrip("/")
    for segment in path.split("/")[1:]:
        lowered = segment.lower()
        if "%2f" in lowered or "%5c" in lowered or "%00" in lowered:
            raise _refuse(field, "must not contain an encoded '/', '\\' or NUL in its path")
        if unquote(segment) in (".", ".."):
            raise _refuse(field, "must not contain '.' or '..' path segments")
    if not path and not prefix:
        raise _refuse(field, "has no repository path")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if scheme == "ssh":
        userinfo = f"{username}@" if username is not None else ""
        return GitURL(scheme=scheme, host=host, port=port, path=path, url=f"ssh://{userinfo}{netloc}{path}", user=username)
    return GitURL(scheme=scheme, host=host, port=port, path=path, url=f"{scheme}://{netloc}{path}")


# -- host entries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostEntry:
    """One entry of a host list: ``host`` (lower-case; IPv6 compressed, no brackets), ``port`` (None:
    any), ``wildcard`` (``*.suffix``: ``host`` is the suffix)."""

    host: str
    port: int | None = None
    wildcard: bool = False

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            head, dot, tail = host.partition(".")
            return bool(dot) and tail == self.host and bool(_LABEL.fullmatch(head)) and not _ip_like(host)
        return host == self.host

    def __str__(self) -> str:
        text = ("*." if self.wildcard else "") + (f"[{self.host}]" if ":" in self.host else self.host)
        return text + (f":{self.port}" if self.port is not None else "")


def parse_host_entries(text: str, setting: str) -> tuple[HostEntry, ...]:
    """Entries of a comma-separated host list (see the module docstring). Raises
    :class:`shared.errors.SettingError` naming ``setting`` for a malformed entry."""
    entries: list[HostEntry] = []
    for raw in (text or "").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        bad = errors.SettingError(setting, f"entry {shown(item)} is not a host, host:port or *.domain")
        port: int | None = None
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise bad
                port = int(rest[1:])
            try:
                host = ipaddress.IPv6Address(host).compressed
            except ValueError:
                raise bad from None
            entries.append(HostEntry(host, port))
            continue
        host, _, port_text = item.partition(":")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise bad
            port = int(port_text)
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        if _ip_like(host):
            try:
                canonical = str(ipaddress.IPv4Address(host))
            except ValueError:
                canonical = None
            if wildcard or canonical != host:
                raise errors.SettingError(setting, f"entry {shown(item)}: write an IPv4 address in dotted-decimal form (e.g. 127.0.0.1)")
        elif not all(_LABEL.fullmatch(label) for label in host.split(".")) or len(host) > 253:
            raise bad
        entries.append(HostEntry(host, port, wildcard))
    return tuple(entries)


def _match(entries: Iterable[HostEntry], host: str, port: int) -> HostEntry | None:
    found = [e for e in entries if e.matches(host, port)]
    exact = [e for e in found if not e.wildcard]
    return (exact or found or [None])[0]


_ADO_ENTRIES = parse_host_entries(",".join(_ADO_SERVICES), "ado")


def is_azure_devops_services(host: str) -> bool:
    """Whether ``host`` is Azure DevOps Services (``dev.azure.com``, ``*.visualstudio.com``)."""
    return any(e.matches(host, 443) for e in _ADO_ENTRIES)


# -- the git policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitDestination:
    """A git URL the policy accepted: ``url`` (:class:`GitURL`), and ``exact`` (its host is an
    exact entry, so any address it resolves to is accepted)."""

    url: GitURL
    exact: bool

    def __str__(self) -> str:
        return self.url.url


@dataclass(frozen=True)
class GitPolicy:
    """Where git credentials may go: ``allowed`` (``GIT_ALLOWED_HOSTS``) and ``bearer``
    (``GIT_BEARER_TOKEN_HOSTS``) host entries. :meth:`from_settings` reads the app settings."""

    allowed: tuple[HostEntry, ...]
    bearer: tuple[HostEntry, ...]

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ) -> "GitPolicy":
        """From app settings ``GIT_ALLOWED_HOSTS`` and ``GIT_BEARER_TOKEN_HOSTS`` (defaults when unset
        or blank). Raises :class:`shared.errors.SettingError` for a malformed entry."""
        allowed = (environ.get("GIT_ALLOWED_HOSTS") or "").strip() or DEFAULT_GIT_ALLOWED_HOSTS
        bearer = (environ.get("GIT_BEARER_TOKEN_HOSTS") or "").strip() or DEFAULT_GIT_BEARER_TOKEN_HOSTS
        return cls(parse_host_entries(allowed, GIT_ALLOWED_HOSTS), parse_host_entries(bearer, GIT_BEARER_TOKEN_HOSTS))

    def _listed(self) -> str:
        return ",".join(str(e) for e in self.allowed)

    def destination(self, url: Any, *, allow_insecure_http: bool = False, bearer: bool = False,
                    field: str = "url") -> GitDestination:
        """Check ``url`` against the policy without any network call: shape
        (:func:`parse_git_url`), host listed, IP literal only when listed exactly, ``http://`` only
        with ``allow_insecure_http`` and to an exact entry, an Entra token (``bearer``) only to
        ``GIT_BEARER_TOKEN_HOSTS``. Raises :class:`DestinationRefused` naming ``field``."""
        parsed = parse_git_url(url, field)
        host, port = parsed.host, parsed.effective_port
        entry = _match(self.allowed, host, port)
        ip = _ip_like(host)
        if entry is None or (ip and entry.wildcard):
            what = "is an IP address" if ip else "is not an allowed git host"
            raise _refuse(field, f"host {shown(host)} {what}: app setting {GIT_ALLOWED_HOSTS} lists the hosts git "
                                 f"credentials may go to ({self._listed()}); an IP address or a private host must be "
                                 "listed exactly as written")
        if parsed.scheme == "http":
            if not allow_insecure_http:
                raise _refuse(field, "scheme http is insecure, set allowInsecureHttp (--allow-insecure-http) to allow it")
            if entry.wildcard or is_azure_devops_services(host):
                raise _refuse(field, f"http:// is allowed only to a host listed exactly in {GIT_ALLOWED_HOSTS} (and never "
                                     "to Azure DevOps Services, which serves git over https only); use https://")
        if bearer and _match(self.bearer, host, port) is None:
            raise _refuse(field, f"host {shown(host)} is not an Azure DevOps host that takes the Function's Entra ID token "
                                 f"(app setting {GIT_BEARER_TOKEN_HOSTS}: {','.join(str(e) for e in self.bearer)}); "
                                 "use a PAT (passwordSecret) for it")
        return GitDestination(parsed, exact=not entry.wildcard)

    def check_resolution(self, dest: GitDestination, *, field: str = "url",
                         resolve: Callable[..., list] | None = None) -> None:
        """For a host matched by a wildcard only: every address it resolves to must be public.
        A name that does not resolve passes (the connection then fails on its own). Raises
        :class:`DestinationRefused` naming ``field``."""
        if dest.exact:
            return
        try:
            infos = (resolve or socket.getaddrinfo)(dest.url.host, dest.url.effective_port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        for info in infos:
            kind = address_kind(info[4][0])
            if kind:
                raise _refuse(field, f"host {shown(dest.url.host)} resolves to {info[4][0]}, a {kind} address; only a "
                                     f"host listed exactly in {GIT_ALLOWED_HOSTS} may be private")

    def check_connection_host(self, host: str, port: int, *, field: str = "url") -> HostEntry:
        """Called before each connection is opened (redirects included): its ``host`` must be
        allowed, so a redirect cannot leave the list. Returns the matching entry; raises
        :class:`DestinationRefused` naming ``field``."""
        host = (host or "").strip("[]").lower()
        entry = _match(self.allowed, host, port)
        if entry is None or (entry.wildcard and _ip_like(host)):
            raise _refuse(field, f"connection to {shown(host)} refused: not an allowed git host ({GIT_ALLOWED_HOSTS})")
        return entry

    def check_peer(self, host: str, port: int, address: str, *, field: str = "url") -> None:
        """Called right after a connection is made, before anything (TLS included) is sent on it:
        unless ``host`` is an exact entry, the ``address`` actually connected must be public (DNS
        rebinding). Raises :class:`DestinationRefused` naming ``field``."""
        host = (host or "").strip("[]").lower()
        entry = self.check_connection_host(host, port, field=field)
        if entry.wildcard:
            kind = address_kind(address)
            if kind:
                raise _refuse(field, f"connection to {shown(host)} refused: it reached {address}, a {kind} address "
                                     "(the name changed its answer after it was checked); nothing was sent")


# -- credentials bound by the vault's owner ---------------------------------------------------------


def is_kubeconfig(secret) -> bool:
    """Whether a Key Vault secret (:class:`shared.ports.azure.keyvault.SecretValue`) is marked as a
    kubeconfig: content type ``application/x-kubeconfig`` (case and parameters ignored)."""
    content_type = (getattr(secret, "content_type", None) or "").split(";", 1)[0].strip().lower()
    return content_type == KUBECONFIG_CONTENT_TYPE


def kubeconfig_text(secret, *, field: str = "kubeconfigSecret") -> str:
    """The kubeconfig held by Key Vault secret ``secret``, which its owner must have marked with
    content type ``application/x-kubeconfig``. The one check every kubeconfig read goes through.
    Raises :class:`DestinationRefused` naming ``field``."""
    if not is_kubeconfig(secret):
        raise _refuse(field, f"Key Vault secret {shown(secret.name)} is not marked as a kubeconfig; set its content type "
                             f"to {KUBECONFIG_CONTENT_TYPE} (az keyvault secret set --vault-name <vault> --name "
                             f"{secret.name} --file <kubeconfig> --content-type {KUBECONFIG_CONTENT_TYPE})")
    return secret.value


def url_prefixes(secret) -> list[GitURL]:
    """The valid URL prefixes of a secret's :data:`URL_PREFIXES_TAG` tag (invalid ones are skipped)."""
    raw = ((getattr(secret, "tags", None) or {}).get(URL_PREFIXES_TAG) or "")
    out = []
    for item in raw.split(","):
        if item.strip():
            try:
                out.append(parse_git_url(item, URL_PREFIXES_TAG, prefix=True))
            except errors.InvalidInput:
                continue
    return out


def git_credential(secret, dest: GitDestination | GitURL, *, field: str) -> str:
    """The value of Key Vault secret ``secret`` (a PAT), if its owner allowed it to go to ``dest``:
    not marked as a kubeconfig, and tag ``flux-git-url-prefixes`` covering the URL. Raises
    :class:`DestinationRefused` naming ``field`` (the request field naming the secret), saying which
    tag to set; nothing has been sent."""
    url = dest.url if isinstance(dest, GitDestination) else dest
    name = secret.name
    if is_kubeconfig(secret):
        raise _refuse(field, f"Key Vault secret {shown(name)} is marked as a kubeconfig (content type "
                             f"{KUBECONFIG_CONTENT_TYPE}) and is never sent as a Git credential; name the PAT's secret")
    segments = url.path.strip("/").split("/")
    # The organisation: .../contoso/ (https), .../v3/contoso/ (Azure DevOps SSH)
    keep = 2 if url.scheme == "ssh" and segments[0] == "v3" and len(segments) > 1 else 1
    example = f"{url.scheme}://" + (f"{url.user}@" if url.user else "") + url.host + (f":{url.port}" if url.port else "") + \
        ("/" + "/".join(segments[:keep]) + "/" if url.path.strip("/") else "/")
    value = "--file <private key file>" if url.scheme == "ssh" else "--value <PAT>"
    how = (f"az keyvault secret set --vault-name <vault> --name {name} {value} --tags "
           f"{URL_PREFIXES_TAG}={example}")
    raw = (getattr(secret, "tags", None) or {}).get(URL_PREFIXES_TAG)
    if not raw or not raw.strip():
        raise _refuse(field, f"Key Vault secret {shown(name)} has no tag {URL_PREFIXES_TAG}, so it is not sent anywhere; "
                             f"tag it with the URL prefixes it may be sent to ({how})")
    if not any(url.covered_by(p) for p in url_prefixes(secret)):
        raise _refuse(field, f"Key Vault secret {shown(name)} may not be sent to {url.url}: its tag {URL_PREFIXES_TAG} "
                             f"({shown(raw, 120)}) does not cover that URL; nothing was sent. Add a prefix of the URL to "
                             f"the tag of the secret's current version ({how})")
    return secret.value


#: Tag of a Key Vault secret holding container registry credentials (``user:password``): the
#: comma-separated registries (``myacr.azurecr.io``, ``myacr.azurecr.io/fluxcd``) they may be written for.
REGISTRIES_TAG = "flux-registries"


def ca_bundle(secret, *, field: str = "caFileSecret") -> str:
    """The CA certificates (PEM) held by Key Vault secret ``secret`` for ``--ca-file``: only PEM
    certificates pass (public data, so no tag is needed; a PAT or a key named here is refused, and
    nothing of it is echoed or written anywhere). Raises :class:`DestinationRefused` naming ``field``."""
    from cryptography import x509

    value = secret.value or ""
    if is_kubeconfig(secret) or "PRIVATE KEY" in value:
        raise _refuse(field, f"Key Vault secret {shown(secret.name)} is not a CA certificate; name the secret holding the "
                             "Git server's CA in PEM (az keyvault secret set --vault-name <vault> --name <name> --file ca.pem)")
    try:
        certs = x509.load_pem_x509_certificates(value.encode())
    except (ValueError, UnicodeEncodeError):
        certs = []
    if not certs:
        raise _refuse(field, f"Key Vault secret {shown(secret.name)} does not hold PEM certificates (-----BEGIN CERTIFICATE-----); "
                             "store the Git server's CA there (az keyvault secret set --vault-name <vault> --name <name> --file ca.pem)")
    return value


def registry_credential(secret, registry: str, *, field: str = "registryCredsSecret") -> str:
    """The ``user:password`` held by Key Vault secret ``secret``, if its owner allowed it for image
    registry ``registry``: tag :data:`REGISTRIES_TAG` lists the registry or a registry above it, and
    the secret is not a kubeconfig. The credential is written to the cluster (a docker-registry
    Secret the kubelet sends to that registry). Raises :class:`DestinationRefused` naming ``field``."""
    name = secret.name
    how = (f"az keyvault secret set --vault-name <vault> --name {name} --value '<user>:<password>' --tags "
           f"{REGISTRIES_TAG}={registry.split('/', 1)[0]}")
    if is_kubeconfig(secret):
        raise _refuse(field, f"Key Vault secret {shown(name)} is marked as a kubeconfig and is never written as registry credentials")
    raw = (getattr(secret, "tags", None) or {}).get(REGISTRIES_TAG)
    if not raw or not raw.strip():
        raise _refuse(field, f"Key Vault secret {shown(name)} has no tag {REGISTRIES_TAG}, so it is not written anywhere; tag it "
                             f"with the registries it may be used for ({how})")
    host, _, path = registry.partition("/")
    candidate = host.lower() + ("/" + path if path else "")
    allowed = [e.strip().rstrip("/").lower() for e in raw.split(",") if e.strip()]
    if not any(candidate == e or candidate.startswith(e + "/") for e in allowed):
        raise _refuse(field, f"Key Vault secret {shown(name)} may not be used for registry {shown(registry)}: its tag "
                             f"{REGISTRIES_TAG} ({shown(raw, 120)}) does not list it; nothing was written ({how})")
    return secret.value


# -- Flux options -------------------------------------------------------------------------------------


def allowed_registries(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Entries of app setting ``FLUX_ALLOWED_REGISTRIES`` (default ``ghcr.io/fluxcd``), lower-case,
    without a trailing ``/``. Raises :class:`shared.errors.SettingError` for a malformed entry."""
    text = (environ.get("FLUX_ALLOWED_REGISTRIES") or "").strip() or DEFAULT_FLUX_ALLOWED_REGISTRIES
    out = []
    for raw in text.split(","):
        item = raw.strip().rstrip("/").lower()
        if not item:
            continue
        if not REGISTRY.fullmatch(item):
            raise errors.SettingError(FLUX_ALLOWED_REGISTRIES, f"entry {shown(item)} is not a registry such as ghcr.io/fluxcd")
        out.append(item)
    return tuple(out)


def check_registry(registry: str, *, field: str = "registry", environ: Mapping[str, str] = os.environ) -> str:
    """``registry`` (the image registry of the Flux controllers, which run with cluster-admin) must be
    an entry of ``FLUX_ALLOWED_REGISTRIES`` or a repository below one (``ghcr.io/fluxcd`` covers
    ``ghcr.io/fluxcd/mirror``; registry host names compare case-insensitively). Raises
    :class:`DestinationRefused` naming ``field``."""
    allowed = allowed_registries(environ)
    host, _, path = (registry or "").partition("/")
    candidate = host.lower() + ("/" + path if path else "")
    for entry in allowed:
        if candidate == entry or candidate.startswith(entry + "/"):
            return registry
    raise _refuse(field, f"{shown(registry)} is not an allowed image registry: app setting {FLUX_ALLOWED_REGISTRIES} "
                         f"lists them ({','.join(allowed)}); add a mirror such as an ACR there")
