"""Cluster port: apply Flux manifests and reconcile Secrets on a Kubernetes cluster.

Built on the official ``kubernetes`` client (imported lazily, inside functions, to keep cold starts short),
through ``ApiClient.call_api`` with one reused ``ApiClient`` and our own per-group-version discovery
cache (the ``DynamicClient`` would write its discovery cache to a temp file and discover everything).

What it reproduces from Flux (fluxcd/flux2 v2.9.x):

* ``internal/utils/apply.go`` ``Apply``: server-side apply with field manager ``flux``
  (``ssa.Owner{Field: "flux", Group: "fluxcd.io"}``) and forced conflicts; objects that
  ``ssa.IsClusterDefinition`` (CustomResourceDefinitions and Namespaces) go first, then
  ``waitForSet`` waits for them (``Interval: 2 * time.Second, Timeout: time.Minute``), then the rest;
  the result is a change set printed as ``<Kind>/<namespace>/<name> created|configured|unchanged``.
  Within a stage the objects are applied concurrently, at most :attr:`Cluster.apply_concurrency` at a
  time, as fluxcd/pkg ``ssa`` ``ResourceManager.ApplyAll`` does (an ``errgroup`` with
  ``SetLimit(m.concurrency)``): at a 20 ms round trip a serial stage of 32 objects, each read before
  it is written, costs 1.3 s; the change set keeps the objects' order.
* ``pkg/bootstrap/bootstrap.go`` ``reconcileSecret``: Get the Secret; absent → Create; present →
  ``existing.StringData = secret.StringData`` then Update, so keys already in ``data`` that are not in
  the new ``stringData`` survive.

Errors are ``shared.errors`` types: 401/403 → ``AuthenticationFailed``; 404 → ``NotFound``;
409 → ``Conflict``; a rejected object (400/422/500 on apply, create or update) → :class:`ApplyError`
naming the object; a cluster that cannot be reached → ``UpstreamError("cluster unreachable: <url>")``.
No message or log line carries Secret data: server messages about Secret objects are redacted and
exceptions are raised without the client's exception (whose text holds the raw HTTP response) chained.

A kubeconfig is untrusted input (:meth:`Cluster.from_kubeconfig`): it never makes the app run a
command (``exec``, ``auth-provider``) or read a local file (``tokenFile``, ``certificate-authority``,
``client-certificate``, ``client-key``); such users are refused naming the key (``users[0].user.exec``),
and tokens that cannot be sent as a header are refused without being echoed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import quote

from shared.errors import AuthenticationFailed, Conflict, DeadlineExceeded, InvalidInput, NotFound, UpstreamError

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
_CRD_API_VERSION = "apiextensions.k8s.io/v1"
#: objects of one apply stage written at once (fluxcd/pkg ssa ``ResourceManager`` concurrency)
APPLY_CONCURRENCY = 8
#: Shortest timeout of a request made at or after :attr:`Cluster.deadline`, seconds.
DEADLINE_FLOOR_S = 1.0
#: connections kept per cluster (the client's default is 5 per CPU): room for a concurrent stage
POOL_SIZE = 16


@dataclass(frozen=True)
class Change:
    """What one apply did to one object, like an entry of Flux's ``ssa.ChangeSet``.

    ``namespace`` is None for cluster-scoped objects. ``action`` is ``"created"``, ``"configured"`` or
    ``"unchanged"``.
    """

    kind: str
    name: str
    namespace: str | None
    action: str

    def __str__(self) -> str:
        """``CustomResourceDefinition/gitrepositories.source.toolkit.fluxcd.io created``,
        ``Secret/flux-system/flux-system unchanged`` (Flux/kubectl style)."""
        ref = f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"
        return f"{ref} {self.action}"


class ApplyError(UpstreamError):
    """The cluster rejected an object (schema validation, type errors, bad names...).

    ``kind``, ``name``, ``namespace`` name the object; ``message`` is the server's message (redacted for
    Secrets); ``status`` is the HTTP status (422 Invalid, 500 for typed-patch errors of server-side
    apply, 400 BadRequest), or None when the object was refused before any request.
    """

    code = "ApplyFailed"

    def __init__(self, kind: str, name: str, namespace: str | None, message: str, status: int | None = None):
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.message = message
        self.http_status = status
        ref = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
        super().__init__(f"{ref}: {message}")


class _HttpError(Exception):
    """A non-2xx answer (internal; mapped to ``shared.errors`` by :meth:`Cluster._raise`)."""

    def __init__(self, status: int, reason: str, body: Any):
        super().__init__(status)
        self.status = status
        self.reason = reason
        self.body = body  # a Status dict, or text

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("message") or self.reason)
        return str(self.body or self.reason).strip()[:300]


def _ref(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def _secret_values(obj: dict) -> list[str]:
    """Every value (plain and base64) of a Secret object, to strip from messages."""
    if obj.get("kind") != "Secret":
        return []
    values: list[str] = []
    for v in (obj.get("stringData") or {}).values():
        values.append(str(v))
        values.append(base64.b64encode(str(v).encode()).decode())
    for v in (obj.get("data") or {}).values():
        values.append(str(v))
        try:
            values.append(base64.b64decode(str(v)).decode("utf-8", "replace"))
        except ValueError:
            pass
    return values


def _redact(message: str, values: Iterable[str], *, secret: bool) -> str:
    for v in sorted({v for v in values if v}, key=len, reverse=True):
        message = message.replace(v, "<redacted>")
    if secret:  # values quoted by the server in other spellings (Go %#v, JSON escapes)
        message = re.sub(r"Value:.*?}", "Value:<redacted>}", message)
        message = re.sub(r'Invalid value: ".*?"(?=:|,|$)', 'Invalid value: "<redacted>"', message)
    return message


def _comparable(obj: dict) -> dict:
    """An object without bookkeeping: resourceVersion, generation, managedFields and status."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items()
                       if k not in ("resourceVersion", "managedFields", "generation")}
    return out


def _condition(obj: dict, ctype: str) -> dict | None:
    for c in ((obj.get("status") or {}).get("conditions") or []):
        if c.get("type") == ctype:
            return c
    return None


def _in_memory_file(data: bytes, label: str) -> tuple[int | None, str]:
    """A path to ``data`` that never reaches a disk: a memfd on Linux (``/proc/self/fd/N``), else a
    0600 temp file removed by :meth:`Cluster.close`. Returns (fd or None, path)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(label, getattr(os, "MFD_CLOEXEC", 0))
        os.write(fd, data)
        return fd, f"/proc/self/fd/{fd}"
    import tempfile  # pragma: no cover - non-Linux

    fd, path = tempfile.mkstemp(prefix="kube-", suffix=".pem")  # pragma: no cover
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return None, path


def _close_all(fds: list[int], files: list[str]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    for path in files:  # pragma: no cover - non-Linux only
        try:
            os.remove(path)
        except OSError:
            pass


def _named(doc: dict, section: str, name: Any, what: str) -> tuple[str, dict]:
    """The entry ``name`` of ``doc[section]`` (``clusters``, ``users``, ``contexts``) as
    (``<section>[<i>].<what>``, its ``<what>`` mapping)."""
    items = doc.get(section)
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(what)
            where = f"{section}[{i}].{what}"
            if body is None:
                return where, {}
            if not isinstance(body, dict):
                raise InvalidInput("kubeconfig", f"{where}: must be a mapping")
            return where, body
    raise InvalidInput("kubeconfig", f"{what} {str(name)[:64]!r} not found in the kubeconfig")


# What a kubeconfig may hold, by client-go's schema (k8s.io/client-go/tools/clientcmd/api/v1
# types.go ``Cluster``/``AuthInfo``). Everything is used from the text itself: no key that names a
# local file, no credential plugin. Keys outside these sets are refused by name, so a credential we
# do not implement never silently turns into an anonymous request.
_CLUSTER_KEYS = frozenset({"server", "certificate-authority-data", "insecure-skip-tls-verify", "tls-server-name",
                           "proxy-url", "disable-compression", "extensions"})
_USER_KEYS = frozenset({"token", "username", "password", "client-certificate-data", "client-key-data", "extensions"})
#: keys that name a local file (client-go reads them from disk; the app never does)
_PATH_KEYS = frozenset({"certificate-authority", "client-certificate", "client-key", "tokenFile"})
_IMPERSONATION_KEYS = frozenset({"as", "as-uid", "as-groups", "as-user-extra"})


def _names_a_path(key: str) -> bool:
    lowered = key.lower()
    return key in _PATH_KEYS or lowered.endswith(("-file", "file", "-path", "path", "-dir", "dir"))


def _check_keys(section: dict, allowed: frozenset, where: str) -> None:
    for key in section:
        if not isinstance(key, str):
            raise InvalidInput("kubeconfig", f"{where}: keys must be strings")
        if key in allowed:
            continue
        if _names_a_path(key):
            raise InvalidInput("kubeconfig", f"{where}.{key}: names a local file, which the app never reads; "
                                             f"put the content inline ({_inline_hint(key)})")
        if key in _IMPERSONATION_KEYS:
            raise InvalidInput("kubeconfig", f"{where}.{key}: impersonation is not supported; store a kubeconfig "
                                             "of the identity itself")
        raise InvalidInput("kubeconfig", f"{where}.{key[:64]}: not a kubeconfig field the app supports")


def _inline_hint(key: str) -> str:
    if key == "tokenFile":
        return "token"
    if key in ("certificate-authority", "client-certificate", "client-key"):
        return f"{key}-data, as `kubectl config view --flatten --raw` writes it"
    return "e.g. `kubectl config view --flatten --raw`"


#: the most a file named by the operator's own kubeconfig may hold (a CA bundle, a key, a token)
_LOCAL_FILE_MAX_BYTES = 1024 * 1024


def flatten_local_files(kubeconfig: str, base_dir, *, field: str = "--kubeconfig") -> str:
    """The operator's **own** kubeconfig file (the CLI's ``--kubeconfig``, never a stored one) with
    the files its clusters and users name put inline, as ``kubectl config view --flatten --raw``
    writes it: ``certificate-authority`` → ``certificate-authority-data``, ``client-certificate`` →
    ``client-certificate-data``, ``client-key`` → ``client-key-data`` (base64 of the file's bytes),
    ``tokenFile`` → ``token`` (the file's text, surrounding whitespace trimmed as client-go's
    ``tokenFile`` reader does). A relative path is resolved against ``base_dir``, the kubeconfig
    file's folder, as client-go's ``ResolveLocalPaths`` (k8s.io/client-go/tools/clientcmd/loader.go)
    does. Text without such keys is returned as it is; anything else (plugins, unknown keys) is left
    for :meth:`Cluster.from_kubeconfig` to check and refuse.

    Returns the YAML text. Raises ``InvalidInput(field, …)`` for YAML that does not parse, or a
    named file that cannot be read or is over 1 MiB (naming the key and the path, never the
    content)."""
    from pathlib import Path

    import yaml

    from shared import safe_yaml

    try:
        doc = safe_yaml.load(kubeconfig, safe_yaml.KUBECONFIG)
    except safe_yaml.YAMLRefused as exc:
        where = f" (line {exc.line}, column {exc.column})" if exc.line is not None else ""
        raise InvalidInput(field, f"not valid YAML{where}") from None
    if not isinstance(doc, dict):
        return kubeconfig
    changed = False
    for section, inner, keys in (("clusters", "cluster", ("certificate-authority",)),
                                 ("users", "user", ("client-certificate", "client-key", "tokenFile"))):
        entries = doc.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            body = entry.get(inner) if isinstance(entry, dict) else None
            if not isinstance(body, dict):
                continue
            for key in keys:
                path = body.get(key)
                if not isinstance(path, str) or not path:
                    continue
                where = f"{section}[{i}].{inner}.{key}"
                target = Path(path) if Path(path).is_absolute() else Path(base_dir) / path
                try:
                    with open(target, "rb") as fh:
                        data = fh.read(_LOCAL_FILE_MAX_BYTES + 1)
                except OSError as exc:
                    raise InvalidInput(field, f"{where}: cannot read {str(target)[:200]}: {exc.strerror}") from None
                if len(data) > _LOCAL_FILE_MAX_BYTES:
                    raise InvalidInput(field, f"{where}: {str(target)[:200]} is over 1 MiB")
                del body[key]
                if key == "tokenFile":
                    body.setdefault("token", data.decode("utf-8", "replace").strip())
                else:
                    body.setdefault(f"{key}-data", base64.b64encode(data).decode())
                changed = True
    return yaml.safe_dump(doc, sort_keys=False) if changed else kubeconfig


def _header_value(value: Any, where: str) -> str:
    """A credential that goes into an HTTP header as it is: printable ASCII without spaces. A line
    break would otherwise reach ``http.client``, whose ``ValueError`` quotes the whole header
    (token included) into the traceback."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("kubeconfig", f"{where}: must be a non-empty string")
    if not all("!" <= c <= "~" for c in value):
        raise InvalidInput("kubeconfig", f"{where}: contains a line break, space, control or non-ASCII character, "
                                         "so it cannot be sent in an HTTP header (value not shown)")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput("kubeconfig", f"{where}: must be a string")
    return value


def _b64(value: Any, where: str) -> bytes:
    import binascii

    try:
        data = base64.b64decode(_string(value, where).strip(), validate=True)
    except binascii.Error:
        raise InvalidInput("kubeconfig", f"{where}: not valid base64") from None
    if not data:
        raise InvalidInput("kubeconfig", f"{where}: is empty")
    return data


def _aks_server_id(user: dict, where: str) -> str | None:
    """The Entra server application an AKS user of ``az aks get-credentials`` logs in to, or None when
    ``user`` is not that form: an ``exec`` user running ``kubelogin get-token ... --server-id <id>``
    (whatever its ``--login`` mode: devicecode, azurecli, msi, spn, workloadidentity...), or the legacy
    ``azure`` auth-provider (``config.apiserver-id``), which ``kubelogin convert-kubeconfig`` turns into
    the former. Nothing of it is run or read but that id."""
    plugin = user.get("exec")
    if isinstance(plugin, dict):
        command = plugin.get("command")
        args = plugin.get("args") or []
        if not isinstance(command, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return None
        if command.replace("\\", "/").rsplit("/", 1)[-1].lower() not in ("kubelogin", "kubelogin.exe") \
                or "get-token" not in args:
            return None
        for i, arg in enumerate(args):
            if arg == "--server-id" and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith("--server-id="):
                return arg.split("=", 1)[1]
        raise InvalidInput("kubeconfig", f"{where}.exec: a kubelogin user without --server-id")
    provider = user.get("auth-provider")
    if isinstance(provider, dict) and provider.get("name") == "azure":
        server_id = (provider.get("config") or {}).get("apiserver-id")
        return server_id if isinstance(server_id, str) else None
    return None


def _refuse_credential_plugin(user: dict, where: str, *, aks_entra: bool = False) -> bool:
    """The one place where users that would run something are refused: ``exec`` credential
    plugins (kubelogin, aws, gke-gcloud-auth-plugin…) and ``auth-provider`` (whose ``cmd-path``
    is a command too). client-go would run them in the Function; the app never runs a command
    named by input.

    With ``aks_entra``, the kubelogin form of an AKS user for the AKS Entra server application
    (:func:`_aks_server_id`, ``6dae42f8-4368-4678-94ff-3960e28e3630``) is accepted instead: returns
    True, and the caller authenticates with a token of its own identity for that application (the
    plugin is never run). Another server application is refused."""
    from shared.ports.azure.aks import AKS_SERVER_APP_ID

    if aks_entra:
        server_id = _aks_server_id(user, where)
        if server_id is not None:
            if server_id.lower() != AKS_SERVER_APP_ID:
                key = "exec" if "exec" in user else "auth-provider"
                raise InvalidInput("kubeconfig", f"{where}.{key}: a kubelogin user for server application "
                                                 f"{server_id[:64]!r}; only the AKS Entra server application "
                                                 f"({AKS_SERVER_APP_ID}) is served, with the Function's managed identity")
            return True
    for key in ("exec", "auth-provider"):
        if key in user:
            what = "exec credential plugins" if key == "exec" else "auth-provider plugins"
            raise InvalidInput("kubeconfig", f"{where}.{key}: {what} are never run by the app; store a kubeconfig "
                                             "whose user has a token or client-certificate-data/client-key-data")
    return False


def user_auth(user: dict, where: str, *, aks_entra: bool = False) -> str:
    """Classify a kubeconfig ``user`` mapping: ``"token"``, ``"basic"`` (username/password),
    ``"client-certificate"`` (client-certificate-data + client-key-data), ``"anonymous"``, or with
    ``aks_entra`` ``"aks-entra"`` (the kubelogin form of an AKS user, see :func:`_refuse_credential_plugin`).

    ``where`` names it in errors (``users[0].user``). Raises ``InvalidInput("kubeconfig", …)`` naming
    the key for a credential plugin (:func:`_refuse_credential_plugin`), a key that names a local
    file (``tokenFile``, ``client-certificate``, ``client-key``, any ``*-file``/``*Path`` key),
    impersonation, an unknown key, a token that cannot be sent as a header, or half a pair."""
    if _refuse_credential_plugin(user, where, aks_entra=aks_entra):
        return "aks-entra"
    _check_keys(user, _USER_KEYS, where)
    has_cert, has_key = bool(user.get("client-certificate-data")), bool(user.get("client-key-data"))
    if has_cert != has_key:
        present, missing = ("client-certificate-data", "client-key-data") if has_cert else \
            ("client-key-data", "client-certificate-data")
        raise InvalidInput("kubeconfig", f"{where}.{missing}: needed with {present}")
    if user.get("token") is not None:
        _header_value(user["token"], f"{where}.token")
        return "token"
    if user.get("username") is not None or user.get("password") is not None:
        _string(user.get("username"), f"{where}.username")
        _string(user.get("password"), f"{where}.password")
        return "basic"
    return "client-certificate" if has_cert else "anonymous"


def _proxy_url(value: Any, server: str, insecure: bool, where: str) -> str:
    """``proxy-url`` as the app accepts it: ``http(s)://host[:port]`` without credentials, to an
    ``https://`` server whose certificate is verified. The proxy then only relays a TLS tunnel
    (CONNECT) to the server named in the kubeconfig: it cannot read the token, the Secret data or
    redirect them. SOCKS proxies are refused (not supported by the client without PySocks)."""
    from urllib.parse import urlsplit

    text = _string(value, where)
    try:
        parts = urlsplit(text)
        parts.port
    except ValueError:
        raise InvalidInput("kubeconfig", f"{where}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("kubeconfig", f"{where}: only http:// or https:// proxies are supported")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("kubeconfig", f"{where}: must not carry credentials")
    if not server.lower().startswith("https://"):
        raise InvalidInput("kubeconfig", f"{where}: a proxy is only used for an https:// server")
    if insecure:
        raise InvalidInput("kubeconfig", f"{where}: a proxy is refused together with insecure-skip-tls-verify "
                                         "(the proxy could read the credentials)")
    return text


def _bearer_from(cfg, token_provider: Callable[[], str]) -> None:
    """``Authorization: Bearer <token_provider()>`` on every request (the client's ``refresh_api_key_hook``,
    functions-platform.md §6). ``auth_settings()`` only asks the hook when the key exists, so it is
    registered first."""
    cfg.api_key["BearerToken"] = "Bearer"
    cfg.refresh_api_key_hook = lambda c: c.api_key.__setitem__("BearerToken", f"Bearer {token_provider()}")


class Cluster:
    """One Kubernetes cluster, through one ``kubernetes.client.ApiClient`` (connection reuse).

    ``field_manager`` names us in ``managedFields`` for every write (``flux`` like the Flux CLI).
    """

    #: (connect, read) timeouts of every request, in seconds
    request_timeout: tuple[float, float] = (10.0, 60.0)
    #: None, or a ``time.monotonic()`` value (the CLI's ``--timeout``): each request is then capped
    #: at what is left of it, never below :data:`DEADLINE_FLOOR_S` (the health checks make one last
    #: poll at the deadline), and one that fails past it is :class:`shared.errors.DeadlineExceeded`.
    deadline: float | None = None
    #: objects of one stage applied (or dry-run applied) at once; 1 = one after the other
    apply_concurrency: int = APPLY_CONCURRENCY

    def __init__(self, api_client, *, field_manager: str = "flux"):
        self.api = api_client
        self.field_manager = field_manager
        cfg = api_client.configuration
        if getattr(cfg, "debug", False):
            # debug turns on http.client's wire dump, which prints request bodies (Secret data)
            cfg.debug = False
        self.server = cfg.host
        self._gvs: dict[str, dict[str, tuple[str, bool]]] = {}  # groupVersion -> kind -> (plural, namespaced)
        self._fds: list[int] = []
        self._files: list[str] = []
        #: appended to the message of a 403 (e.g. the Azure RBAC role the identity lacks)
        self.forbidden_hint: str | None = None
        #: appended to "cluster unreachable" (e.g. a private cluster needs VNet integration)
        self.unreachable_hint: str | None = None
        #: called when the API could not be reached (e.g. to drop a cached endpoint)
        self.on_unreachable: Callable[[], None] | None = None
        #: how requests authenticate (:func:`user_auth`'s kinds; ``aks-entra``: an Entra ID token per request)
        self.auth = "token"
        #: the request field that names the cluster (e.g. ``clusterResourceId``): refused credentials
        #: (401/403) and an unreachable API are reported on it
        self.ref_field: str | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str, *, context: str | None = None, field_manager: str = "flux",
                        aks_token_provider: Callable[[], str] | None = None) -> "Cluster":
        """Build a cluster from kubeconfig YAML **text** (as stored in Key Vault), never written to disk.

        A kubeconfig is untrusted input: nothing in it runs a command or reads a local file.
        ``context`` defaults to ``current-context``. Used from the text: ``server``,
        ``certificate-authority-data``, ``insecure-skip-tls-verify`` (logged as a warning),
        ``tls-server-name``, ``proxy-url`` (see :func:`_proxy_url`); users with ``token``,
        ``client-certificate-data``/``client-key-data`` (held in a memfd, not a file) or
        ``username``/``password`` (see :func:`user_auth`). Only the selected context's cluster and
        user are read. Raises ``InvalidInput("kubeconfig", ...)`` for text that is not a usable
        kubeconfig, naming the key (``users[0].user.exec``, ``clusters[0].cluster.certificate-authority``)
        and never quoting a value. Parsed by :mod:`shared.safe_yaml` (size, node and alias limits).

        ``aks_token_provider`` (a callable returning an Entra ID token for the AKS server application,
        e.g. :class:`shared.ports.azure.aks.TokenProvider` of the Function's managed identity) serves the
        kubelogin form of an AKS user (what ``az aks get-credentials`` writes): the plugin is never run,
        only the cluster's ``server`` (https only, certificate verified) and CA are used, and each request
        carries a fresh token from the provider (``self.auth == "aks-entra"``). Without it such users are
        refused like any other plugin.
        """
        import urllib3
        from kubernetes import client

        from shared import safe_yaml

        try:
            doc = safe_yaml.load(kubeconfig, safe_yaml.KUBECONFIG)
        except safe_yaml.YAMLRefused as exc:
            # the position only: libyaml's problem text may come from a line that holds a token
            where = f" (line {exc.line}, column {exc.column})" if exc.line is not None else ""
            raise InvalidInput("kubeconfig", f"not valid YAML{where}") from None
        if not isinstance(doc, dict):
            raise InvalidInput("kubeconfig", "not a kubeconfig document")
        ctx_name = context or doc.get("current-context")
        if not ctx_name:
            raise InvalidInput("kubeconfig", "no context given and no current-context set")
        _, ctx = _named(doc, "contexts", ctx_name, "context")
        cluster_where, cluster = _named(doc, "clusters", ctx.get("cluster"), "cluster")
        user_where, user = _named(doc, "users", ctx.get("user"), "user") if ctx.get("user") else ("user", {})
        _check_keys(cluster, _CLUSTER_KEYS, cluster_where)
        auth = user_auth(user, user_where, aks_entra=aks_token_provider is not None)
        server = cluster.get("server")
        if not server:
            raise InvalidInput("kubeconfig", f"{cluster_where}.server: missing")
        server = _string(server, f"{cluster_where}.server").rstrip("/")
        if not server.lower().startswith(("https://", "http://")) or not all("!" <= c <= "~" for c in server):
            raise InvalidInput("kubeconfig", f"{cluster_where}.server: must be an https:// (or http://) URL "
                                             "without spaces or control characters")
        insecure = cluster.get("insecure-skip-tls-verify", False)
        if not isinstance(insecure, bool):
            raise InvalidInput("kubeconfig", f"{cluster_where}.insecure-skip-tls-verify: must be true or false")
        if insecure and cluster.get("certificate-authority-data"):
            # client-go's tlsConfigFor refuses the same combination
            raise InvalidInput("kubeconfig", f"{cluster_where}.insecure-skip-tls-verify: specifying a root "
                                             "certificates file with the insecure flag is not allowed")
        if auth == "aks-entra" and (insecure or not server.lower().startswith("https://")):
            # the identity's token opens every cluster the identity may reach: only to a verified server
            raise InvalidInput("kubeconfig", f"{cluster_where}.server: the Function's Entra ID token is only sent "
                                             "to an https:// server whose certificate is verified")

        cfg = client.Configuration()
        cfg.host = server
        # connection errors are retried twice (quickly); nothing is retried once a request was sent
        cfg.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.1)
        cfg.connection_pool_maxsize = POOL_SIZE
        fds: list[int] = []
        files: list[str] = []
        try:
            if cluster.get("certificate-authority-data"):
                ca = _b64(cluster["certificate-authority-data"], f"{cluster_where}.certificate-authority-data")
                cfg.ca_cert_data = ca.decode("ascii")
            if insecure:
                log.warning("cluster %s is used without verifying its TLS certificate (insecure-skip-tls-verify)",
                            server[:200])
                cfg.verify_ssl = False
            if cluster.get("tls-server-name"):
                cfg.tls_server_name = _string(cluster["tls-server-name"], f"{cluster_where}.tls-server-name")
            if cluster.get("proxy-url"):
                cfg.proxy = _proxy_url(cluster["proxy-url"], server, insecure, f"{cluster_where}.proxy-url")
            # the client sends api_key["BearerToken"] as the Authorization header, whatever its scheme
            if auth == "aks-entra":
                _bearer_from(cfg, aks_token_provider)
            elif auth == "token":
                cfg.api_key["BearerToken"] = f"Bearer {user['token']}"
            elif auth == "basic":
                pair = f"{user['username']}:{user['password']}".encode("utf-8")
                cfg.api_key["BearerToken"] = "Basic " + base64.b64encode(pair).decode("ascii")
            if user.get("client-certificate-data"):
                for key, attr in (("client-certificate", "cert_file"), ("client-key", "key_file")):
                    data = _b64(user[f"{key}-data"], f"{user_where}.{key}-data")
                    fd, path = _in_memory_file(data, key)
                    (fds.append(fd) if fd is not None else files.append(path))
                    setattr(cfg, attr, path)
            api_client = client.ApiClient(cfg)
        except InvalidInput:
            _close_all(fds, files)
            raise
        except (ValueError, TypeError, KeyError) as e:
            _close_all(fds, files)
            raise InvalidInput("kubeconfig", f"unusable kubeconfig ({type(e).__name__})") from None
        cluster_obj = cls(api_client, field_manager=field_manager)
        cluster_obj._fds, cluster_obj._files = fds, files
        cluster_obj.auth = auth
        return cluster_obj

    @classmethod
    def from_endpoint(cls, server: str, ca_data: bytes | str, token_provider: Callable[[], str], *,
                      field_manager: str = "flux") -> "Cluster":
        """Build a cluster from its API ``server`` URL (``https://...``), the cluster CA (``ca_data``: PEM)
        and ``token_provider``: a callable returning a bearer token, called before every request (e.g.
        :class:`shared.ports.azure.aks.TokenProvider`, which keeps a token and refreshes it before it
        expires). This is how an AKS cluster with Microsoft Entra ID is reached with a managed identity,
        without kubelogin (``../shared/docs/functions-platform.md`` §6): the client's
        ``refresh_api_key_hook`` sets ``Authorization: Bearer <token>`` on each call. Nothing is written to
        disk. Raises ``InvalidInput("server")`` for a server that is not an https:// URL; the provider's
        errors (``AuthenticationFailed``) surface from the first request."""
        import urllib3
        from kubernetes import client

        if not isinstance(server, str) or not server.lower().startswith("https://"):
            raise InvalidInput("server", "the Kubernetes API server must be an https:// URL")
        cfg = client.Configuration()
        cfg.host = server.rstrip("/")
        cfg.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, backoff_factor=0.1)
        cfg.connection_pool_maxsize = POOL_SIZE
        cfg.ca_cert_data = ca_data.decode() if isinstance(ca_data, bytes) else ca_data
        _bearer_from(cfg, token_provider)
        cluster = cls(client.ApiClient(cfg), field_manager=field_manager)
        cluster.auth = "aks-entra"
        return cluster

    def close(self) -> None:
        """Close the connection pool and the in-memory certificate files."""
        self.api.close()
        _close_all(self._fds, self._files)
        self._fds, self._files = [], []

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
                 content_type: str = "application/json") -> tuple[int, Any]:
        """One request; returns (status, decoded JSON). Raises ``_HttpError`` for non-2xx answers and
        ``UpstreamError("cluster unreachable: ...")`` when no answer came."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            method, url, headers, _, _ = self.api.param_serialize(
                method=method, resource_path=path, query_params=list((query or {}).items()),
                header_params=headers, auth_settings=["BearerToken"])
            # the body goes straight to the REST client, which serialises dicts with json.dumps
            resp = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=self._timeouts())
            data = resp.read()
        except ApiException as e:  # the REST client's wrapper for TLS failures (status 0)
            detail = str(e.reason or "").strip().splitlines()[-1:] or ["TLS error"]
            raise self._unreachable(f" ({detail[0][:200]})") from None
        except (urllib3.exceptions.HTTPError, OSError):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise DeadlineExceeded(f"cluster {self.server} did not answer {method} {path} before the deadline") from None
            raise self._unreachable("") from None
        except (ValueError, TypeError) as e:
            # http.client refuses a header value with a line break and quotes the whole header (a
            # token) in its message: never chain or echo it (from_kubeconfig refuses such tokens first)
            raise UpstreamError(f"request to cluster {self.server} could not be sent ({type(e).__name__})") from None
        if 200 <= resp.status < 300:
            return resp.status, (json.loads(data) if data else None)
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        raise _HttpError(resp.status, resp.reason or "", parsed)

    def _timeouts(self) -> tuple[float, float]:
        """:attr:`request_timeout`, capped at what is left of :attr:`deadline` (at least
        :data:`DEADLINE_FLOOR_S`)."""
        if self.deadline is None:
            return self.request_timeout
        left = max(DEADLINE_FLOOR_S, self.deadline - time.monotonic())
        return (min(self.request_timeout[0], left), min(self.request_timeout[1], left))

    def _unreachable(self, detail: str) -> UpstreamError:
        if self.on_unreachable is not None:
            self.on_unreachable()
        hint = f"; {self.unreachable_hint}" if self.unreachable_hint else ""
        return UpstreamError(f"cluster unreachable: {self.server}{detail}{hint}", field=self.ref_field)

    def _raise(self, err: _HttpError, *, obj: tuple[str, str, str | None] | None = None,
               write: bool = False, secret_values: Iterable[str] = ()) -> None:
        """Map an HTTP error to ``shared.errors``; ``obj`` = (kind, name, namespace) of the object concerned."""
        is_secret = bool(obj and obj[0] == "Secret")
        message = _redact(err.message, secret_values, secret=is_secret)
        where = f"{_ref(*obj)}: " if obj else ""
        if err.status in (401, 403):
            hint = f"; {self.forbidden_hint}" if err.status == 403 and self.forbidden_hint else ""
            raise AuthenticationFailed(f"cluster {self.server} refused the request ({err.status} {err.reason}): "
                                       f"{where}{message}{hint}", field=self.ref_field) from None
        if err.status == 404:
            raise NotFound(f"{where}{message}") from None
        if err.status == 409:
            raise Conflict(f"{where}{message}") from None
        if write and obj and err.status in (400, 422, 500):
            raise ApplyError(obj[0], obj[1], obj[2], message, err.status) from None
        raise UpstreamError(f"{where}cluster answered {err.status} {err.reason}: {message}") from None

    # -- discovery --------------------------------------------------------------------------------

    def _discover(self, api_version: str) -> dict[str, tuple[str, bool]]:
        """GET the APIResourceList of one group/version (404 → nothing served) and cache it."""
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            _, doc = self._request("GET", path)
        except _HttpError as e:
            if e.status != 404:
                self._raise(e)
            doc = {}
        kinds = {r["kind"]: (r["name"], bool(r.get("namespaced")))
                 for r in (doc or {}).get("resources") or [] if "/" not in r.get("name", "/")}
        self._gvs[api_version] = kinds
        return kinds

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool] | None:
        """(plural, namespaced) of a kind; one discovery request per group/version, refreshed once on a miss."""
        kinds = self._gvs.get(api_version)
        if kinds is None or kind not in kinds:
            kinds = self._discover(api_version)
        return kinds.get(kind)

    @staticmethod
    def _path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        return path

    def _locate(self, obj: dict) -> tuple[str, str, str, str | None, str]:
        """(apiVersion, kind, name, namespace, path) of a manifest; ApplyError when the kind is not served."""
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind") \
                or not (obj.get("metadata") or {}).get("name"):
            raise InvalidInput("objects", "every object needs apiVersion, kind and metadata.name")
        api_version, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
        found = self._resource(api_version, kind)
        if found is None:
            raise ApplyError(kind, meta["name"], meta.get("namespace"),
                             f'no matches for kind "{kind}" in version "{api_version}"')
        plural, namespaced = found
        namespace = meta.get("namespace") if namespaced else None
        if namespaced and not namespace:
            raise ApplyError(kind, meta["name"], None, "namespaced object without metadata.namespace")
        return api_version, kind, meta["name"], namespace, self._path(api_version, plural, namespace, meta["name"])

    # -- reads ------------------------------------------------------------------------------------

    def _get_path(self, path: str, obj: tuple[str, str, str | None]) -> dict | None:
        try:
            return self._request("GET", path)[1]
        except _HttpError as e:
            if e.status == 404:
                return None
            self._raise(e, obj=obj)
            raise  # unreachable

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as the API returns it, or None when it (or its kind) does not exist."""
        found = self._resource(api_version, kind)
        if found is None:
            return None
        plural, namespaced = found
        return self._get_path(self._path(api_version, plural, namespace if namespaced else None, name),
                              (kind, name, namespace))

    def server_version(self) -> str:
        """The server's ``gitVersion`` (e.g. ``v1.33.2``), or ``v<major>.<minor>`` when the build is not
        version-stamped (``v0.0.0-master…`` as in the contract recordings)."""
        try:
            _, doc = self._request("GET", "/version")
        except _HttpError as e:
            self._raise(e)
            raise
        git = str(doc.get("gitVersion") or "")
        if re.match(r"^v[1-9]\d*\.\d+", git):
            return git
        return f"v{doc.get('major', '0')}.{str(doc.get('minor', '0')).rstrip('+')}"

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's ``data`` decoded (UTF-8, invalid bytes replaced), or None when absent. For
        comparisons only: never log the result."""
        secret = self._get_path(self._path("v1", "secrets", namespace, name), ("Secret", name, namespace))
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}

    # -- apply ------------------------------------------------------------------------------------

    def _apply_one(self, obj: dict, *, dry_run: bool = False) -> tuple[Change, dict]:
        api_version, kind, name, namespace, path = self._locate(obj)
        ref = (kind, name, namespace)
        before = None if dry_run else self._get_path(path, ref)
        query = {"fieldManager": self.field_manager, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        try:
            status, live = self._request("PATCH", path, query=query, body=obj, content_type=APPLY_PATCH)
        except _HttpError as e:
            self._raise(e, obj=ref, write=True, secret_values=_secret_values(obj))
            raise
        if status == 201 or before is None:
            action = "created"
        else:
            action = "unchanged" if _comparable(before) == _comparable(live) else "configured"
        return Change(kind, name, namespace, action), live

    def apply(self, objects: list[dict], *, wait_timeout: float = 60.0, poll_interval: float = 2.0) -> list[Change]:
        """Server-side apply ``objects`` (parsed manifests; ``None`` documents are skipped) like
        ``flux install``/``bootstrap`` (``internal/utils/apply.go``): with ``force=true`` and
        ``self.field_manager``; CustomResourceDefinitions and Namespaces first, then a wait until every CRD is
        ``Established`` and its kinds are served in discovery (and every Namespace is ``Active``), then the
        other objects. Within each stage up to :attr:`apply_concurrency` objects are in flight at once
        (each is read, then applied); the first stage is complete before the second starts.

        ``wait_timeout`` (s) bounds that wait (Flux: 1 m). ``poll_interval`` (s) is the longest pause between
        polls (Flux: 2 s); polls start 50 ms apart and back off to it, since CRDs are usually Established
        within 100 ms.

        Returns one :class:`Change` per object, stage one first, each stage in the given order. An object is
        ``"unchanged"`` when it existed and only bookkeeping moved (resourceVersion, generation,
        managedFields, status): the first unchanged re-apply of a custom object bumps its resourceVersion
        once (contract 06b) and still counts as unchanged.

        Raises ApplyError (object rejected or kind not served), NotFound (e.g. its namespace is missing),
        AuthenticationFailed, Conflict, UpstreamError (unreachable, or the wait timed out): the error of the
        first failing object in the given order. Objects of that stage already in flight finish; none is
        started after a failure, and the next stage is not applied.
        """
        objs = [o for o in objects if o]
        stage_one = [o for o in objs if self._is_cluster_definition(o)]
        stage_two = [o for o in objs if not self._is_cluster_definition(o)]
        changes: list[Change] = []
        applied_defs: list[dict] = []
        for change, live in self._apply_stage(stage_one):
            changes.append(change)
            applied_defs.append(live)
        if applied_defs:
            self._wait_ready(applied_defs, wait_timeout, poll_interval)
        changes.extend(change for change, _ in self._apply_stage(stage_two))
        return changes

    def _apply_stage(self, objs: list[dict], *, dry_run: bool = False) -> list[tuple[Change, dict]]:
        """``_apply_one`` for each object, at most :attr:`apply_concurrency` at a time; results in the
        objects' order. The kinds' group/versions are discovered first (once each), so concurrent
        objects do not each ask for the same discovery document."""
        if not objs:
            return []
        workers = max(1, min(int(self.apply_concurrency or 1), len(objs)))
        if workers == 1:
            out = [self._apply_one(o, dry_run=dry_run) for o in objs]
        else:
            from concurrent.futures import ThreadPoolExecutor

            versions = sorted({o.get("apiVersion") for o in objs if isinstance(o, dict)
                               and isinstance(o.get("apiVersion"), str) and o.get("apiVersion") not in self._gvs})
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube-apply") as pool:
                list(pool.map(self._discover_quietly, versions))  # errors surface again per object
                futures = [pool.submit(self._apply_one, o, dry_run=dry_run) for o in objs]
                out = []
                failure: BaseException | None = None
                for future in futures:
                    if failure is not None:
                        future.cancel()
                        continue
                    try:
                        out.append(future.result())
                    except BaseException as exc:  # noqa: BLE001 - re-raised below, first in order
                        failure = exc
                        for later in futures:
                            later.cancel()
                if failure is not None:
                    raise failure
        if not dry_run:
            for change, _ in out:
                log.info("%s", change)
        return out

    def _discover_quietly(self, api_version: str) -> None:
        """Prefetch one discovery document; an error is left for the object that needs the kind."""
        try:
            self._discover(api_version)
        except Exception:  # noqa: BLE001 - raised again, with the object named, by _locate
            pass

    @staticmethod
    def _is_cluster_definition(obj: dict) -> bool:
        """fluxcd/pkg ``ssa.IsClusterDefinition``: CRDs and Namespaces."""
        kind, api_version = obj.get("kind"), obj.get("apiVersion", "")
        return (kind == "CustomResourceDefinition" and api_version.startswith("apiextensions.k8s.io/")) or \
            (kind == "Namespace" and api_version == "v1")

    def _wait_ready(self, defs: list[dict], timeout: float, poll_interval: float) -> None:
        deadline = time.monotonic() + timeout
        delay = min(0.05, poll_interval)
        pending = {(d["kind"], d["metadata"]["name"]): d for d in defs if not self._ready(d)}

        def pause(what: str) -> None:
            nonlocal delay
            if time.monotonic() + delay > deadline:
                raise UpstreamError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 2, poll_interval)

        while pending:
            pause(", ".join(f"{k}/{n}" for k, n in pending) + " to become ready")
            for (kind, name) in list(pending):
                api_version = pending[(kind, name)]["apiVersion"]
                plural = "customresourcedefinitions" if kind == "CustomResourceDefinition" else "namespaces"
                live = self._get_path(self._path(api_version, plural, None, name), (kind, name, None))
                if live is not None and self._ready(live):
                    del pending[(kind, name)]
        # the CRDs' kinds must be served before objects of those kinds can be applied (contract 05a)
        wanted: dict[str, set[str]] = {}
        for d in defs:
            if d["kind"] == "CustomResourceDefinition":
                spec = d.get("spec") or {}
                for v in spec.get("versions") or []:
                    if v.get("served", True):
                        wanted.setdefault(f"{spec['group']}/{v['name']}", set()).add(spec["names"]["kind"])
        delay = min(0.01, poll_interval)
        for gv, kinds in wanted.items():
            while not kinds <= set(self._gvs.get(gv) or {}) and not kinds <= set(self._discover(gv)):
                pause(f"{', '.join(sorted(kinds))} to be served in {gv}")

    @staticmethod
    def _ready(obj: dict) -> bool:
        if obj.get("kind") == "Namespace":
            return (obj.get("status") or {}).get("phase", "Active") == "Active"
        names = _condition(obj, "NamesAccepted")
        if names is not None and names.get("status") == "False":
            raise ApplyError("CustomResourceDefinition", obj["metadata"]["name"], None,
                             f"names not accepted: {names.get('message', '')}")
        established = _condition(obj, "Established")
        return established is not None and established.get("status") == "True"

    def dry_run_apply(self, objects: list[dict]) -> None:
        """Validate ``objects`` with server-side apply and ``dryRun=All``; nothing is persisted.

        Objects that cannot be checked yet are skipped: custom objects whose CRD is in ``objects`` but not
        installed, and namespaced objects whose Namespace is in ``objects`` but does not exist yet. The
        others are checked concurrently (:attr:`apply_concurrency`).
        Raises ApplyError (or NotFound, AuthenticationFailed...) for the first invalid object in order.
        """
        objs = [o for o in objects if o]
        new_namespaces = {o["metadata"]["name"] for o in objs
                          if o.get("kind") == "Namespace" and o.get("apiVersion") == "v1"}
        defined_kinds = set()
        for o in objs:
            if o.get("kind") == "CustomResourceDefinition":
                spec = o.get("spec") or {}
                for v in spec.get("versions") or []:
                    defined_kinds.add((f"{spec.get('group')}/{v.get('name')}", (spec.get("names") or {}).get("kind")))
        missing_ns: dict[str, bool] = {}
        checked: list[dict] = []
        for obj in objs:
            if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                raise InvalidInput("objects", "every object needs apiVersion, kind and metadata.name")
            if (obj["apiVersion"], obj["kind"]) in defined_kinds and \
                    self._resource(obj["apiVersion"], obj["kind"]) is None:
                continue
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns in new_namespaces and obj["kind"] != "Namespace":
                if ns not in missing_ns:
                    missing_ns[ns] = self.get("v1", "Namespace", ns) is None
                if missing_ns[ns]:
                    continue
            checked.append(obj)
        self._apply_stage(checked, dry_run=True)

    # -- secrets and annotations ------------------------------------------------------------------

    def reconcile_secret(self, namespace: str, name: str, string_data: dict[str, str], *,
                         labels: dict[str, str] | None = None, secret_type: str | None = None) -> Change:
        """Create or update a Secret like Flux's ``reconcileSecret`` (``pkg/bootstrap/bootstrap.go``):
        Opaque, or ``secret_type`` when it is created (an update keeps the type, as Flux's does).

        Absent → created from ``stringData``. Present → updated (PUT with the read resourceVersion, retried
        on a concurrent write) with ``stringData`` = ``string_data``: keys already in ``data`` that are not in
        ``string_data`` survive. ``"unchanged"`` (no write) when every key already holds the same value and
        ``labels`` are already set. Values are compared decoded and never logged.
        """
        values = list(string_data.values())
        ref = ("Secret", name, namespace)
        path = self._path("v1", "secrets", namespace, name)
        for attempt in range(3):
            existing = self._get_path(path, ref)
            try:
                if existing is None:
                    meta: dict[str, Any] = {"name": name, "namespace": namespace}
                    if labels:
                        meta["labels"] = dict(labels)
                    body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": dict(string_data)}
                    if secret_type:
                        body["type"] = secret_type
                    self._request("POST", self._path("v1", "secrets", namespace), body=body,
                                  query={"fieldManager": self.field_manager})
                    change = Change("Secret", name, namespace, "created")
                else:
                    data = existing.get("data") or {}
                    same = all(k in data and base64.b64decode(data[k]) == str(v).encode()
                               for k, v in string_data.items())
                    current_labels = (existing.get("metadata") or {}).get("labels") or {}
                    if same and all(current_labels.get(k) == v for k, v in (labels or {}).items()):
                        change = Change("Secret", name, namespace, "unchanged")
                    else:
                        existing["stringData"] = dict(string_data)
                        if labels:
                            existing.setdefault("metadata", {})["labels"] = {**current_labels, **labels}
                        self._request("PUT", path, body=existing, query={"fieldManager": self.field_manager})
                        change = Change("Secret", name, namespace, "configured")
            except _HttpError as e:
                # 409: created or modified concurrently; read again and retry
                if e.status == 409 and attempt < 2:
                    continue
                self._raise(e, obj=ref, write=True, secret_values=values)
            log.info("%s", change)
            return change
        raise AssertionError("unreachable")  # pragma: no cover

    def annotate(self, api_version: str, kind: str, name: str, namespace: str | None,
                 annotations: dict[str, str]) -> None:
        """Merge-patch ``metadata.annotations`` (e.g. ``reconcile.fluxcd.io/requestedAt``, as ``flux reconcile``).
        Raises NotFound when the object or its kind does not exist."""
        found = self._resource(api_version, kind)
        if found is None:
            raise NotFound(f'{_ref(kind, name, namespace)}: no matches for kind "{kind}" in version "{api_version}"')
        plural, namespaced = found
        path = self._path(api_version, plural, namespace if namespaced else None, name)
        try:
            self._request("PATCH", path, body={"metadata": {"annotations": dict(annotations)}},
                          content_type=MERGE_PATCH, query={"fieldManager": self.field_manager})
        except _HttpError as e:
            self._raise(e, obj=(kind, name, namespace), write=True)
