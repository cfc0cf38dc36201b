"""Azure Key Vault test server: HTTPS on 127.0.0.1, used through the REAL ``SecretClient``.

No Key Vault emulator is installable here (``../shared/docs/test-peers.md`` §4), so this is a small
wire-level fake of the Key Vault secrets REST API that ``azure-keyvault-secrets`` 4.12 talks to:

- TLS with a ``trustme`` CA (the SDK refuses bearer auth on ``http://``); clients pass
  ``connection_verify=server.ca_file`` and ``verify_challenge_resource=False`` (the vault is ``127.0.0.1``).
- The challenge handshake: any request without ``Authorization`` gets ``401`` with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``. Bearer tokens are accepted only when issued by
  :meth:`KeyVaultServer.credential` for scope ``https://vault.azure.net/.default`` and the server's tenant;
  any other token gets the same ``401`` + challenge (the SDK then retries once and gives up:
  ``ClientAuthenticationError``).
- ``api-version`` is required on every call (the SDK versions, default ``2026-04-01``).
- Endpoints (shapes as in the Key Vault REST reference, ``learn.microsoft.com/rest/api/keyvault/secrets``):
  ``PUT /secrets/{name}``, ``GET /secrets/{name}[/]`` (latest), ``GET /secrets/{name}/{version}``,
  ``GET /secrets/{name}/versions``, ``GET /secrets`` (paged: ``maxresults`` 1-25, default 25, ``nextLink``),
  ``PATCH /secrets/{name}/{version}`` (``contentType``, ``tags``, ``attributes`` enabled/nbf/exp),
  ``DELETE /secrets/{name}`` (soft delete), ``GET`` / ``DELETE`` ``/deletedsecrets/{name}`` (purge → 204).
- Errors as the service: ``404 SecretNotFound``; ``403 Forbidden`` "Operation get is not allowed on a disabled
  secret." (innererror ``SecretDisabled``); ``400 BadParameter`` for bad names, bodies, api-version and
  ``maxresults``; ``409 Conflict`` when setting a name that is deleted but not purged.
- Secret names are case-insensitive (stored with the casing of their first creation); versions are 32 hex
  chars; times (``created``, ``updated``, ``nbf``, ``exp``) are Unix seconds from :attr:`KeyVaultServer.clock`.
  ``exp``/``nbf`` are informational, as in the service: ``get`` still works outside the window.
- The versions list is ordered by version id, i.e. NOT creation order (the service promises no order).

Fixtures: ``keyvault_server`` (a started :class:`KeyVaultServer`, one per test so that the challenge
round trip is observable; the challenge cache of the SDK is per host:port) and ``keyvault``
(a ``shared.ports.azure.keyvault.KeyVault`` connected to it).
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from tests.peers._serving import HttpsPeer, TLSHTTPServer, write_json

RESOURCE = "https://vault.azure.net"
SCOPE = RESOURCE + "/.default"
DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000c0de"
API_VERSIONS = frozenset(
    {"2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01"}
)
PAGE_SIZE = 25  # service default and maximum of ``maxresults``
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------------------------------
# Credential


@dataclass(frozen=True)
class TokenRequest:
    """One ``get_token`` call: what the SDK asked for."""

    scopes: tuple[str, ...]
    tenant_id: str | None
    claims: str | None
    enable_cae: bool


class KeyVaultTestCredential:
    """A ``TokenCredential`` (``azure.core.credentials``) issuing random bearer tokens.

    Bound to a server (``server.credential()``), its tokens are trusted by that server; unbound
    (``KeyVaultTestCredential()``), its tokens are rejected with 401 (a "wrong token" credential).
    ``requests`` records every call; ``scopes`` flattens the scopes asked.
    """

    def __init__(self, server: "KeyVaultServer | None" = None, *, lifetime: int = 3600):
        self._server = server
        self._lifetime = lifetime
        self.requests: list[TokenRequest] = []
        self.tokens: list[str] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any):
        from azure.core.credentials import AccessToken

        token = "kvtest-" + secrets.token_urlsafe(24)
        self.requests.append(TokenRequest(tuple(scopes), tenant_id, claims, enable_cae))
        self.tokens.append(token)
        if self._server is not None:
            self._server._trust(token, scopes, tenant_id)
        return AccessToken(token, int(time.time()) + self._lifetime)

    @property
    def scopes(self) -> list[str]:
        return [s for r in self.requests for s in r.scopes]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------------
# Store


@dataclass
class _Version:
    version: str
    value: str
    content_type: str | None
    tags: dict | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int


@dataclass
class _Secret:
    name: str  # casing of the first creation
    versions: list[_Version] = field(default_factory=list)  # creation order

    @property
    def latest(self) -> _Version:
        return self.versions[-1]


@dataclass
class _Deleted:
    secret: _Secret
    deleted_date: int
    scheduled_purge_date: int


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it (``authorization`` is the raw header or None)."""

    method: str
    path: str
    query: dict
    authorization: str | None
    content_length: int
    status: int


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, code: str, message: str, inner: str | None = None) -> _Reply:
    err: dict[str, Any] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return _Reply(status, {"error": err})


def _not_found(name: str) -> _Reply:
    return _error(
        404, "SecretNotFound",
        f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret "
        "you may be able to recover it using the correct recovery command. For help resolving this issue, "
        "please see https://go.microsoft.com/fwlink/?linkid=2125182")


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(400, "BadParameter", f"Invalid value for {what}: must be a number (Unix seconds).")
    return int(value)


# --------------------------------------------------------------------------------------------------
# Server

class KeyVaultServer(HttpsPeer):
    """Key Vault secrets REST API on ``https://127.0.0.1:<random port>`` (one thread per connection).

    ``vault_url``, ``ca_file``, ``tenant_id``, ``request_log`` (list of :class:`LoggedRequest`),
    ``credential()``, ``seed()``, ``stored()``, ``revoke_tokens()``. ``clock`` (callable → Unix seconds,
    default ``time.time``) may be replaced by a test to control ``created``/``updated``. Tokens of
    the token peer (:mod:`tests.peers.entra_tokens`, audience ``https://vault.azure.net``) are
    accepted too, for processes that get theirs through ``DefaultAzureCredential`` (the CLI).
    ``read_only = True`` answers writes as Key Vault answers an identity with *Key Vault Secrets
    User* only (403 ``Forbidden``, inner ``ForbiddenByRbac``).
    """

    def __init__(self, *, tenant_id: str = DEFAULT_TENANT, clock: Callable[[], float] = time.time):
        self.tenant_id = tenant_id
        self.clock = clock
        self.request_log: list[LoggedRequest] = []
        self._secrets: dict[str, _Secret] = {}
        self._deleted: dict[str, _Deleted] = {}
        self._tokens: dict[str, tuple[tuple[str, ...], str | None]] = {}
        self._lock = threading.RLock()
        self.read_only = False

    name = "keyvault-test-server"

    def _server(self, ssl_context: ssl.SSLContext) -> "_HTTPServer":
        return _HTTPServer(("127.0.0.1", 0), _Handler, ssl_context, self)

    @property
    def vault_url(self) -> str:
        """``https://127.0.0.1:<port>`` once started."""
        return self.url

    # test helpers ------------------------------------------------------------------------------
    def credential(self, *, lifetime: int = 3600) -> KeyVaultTestCredential:
        """A credential whose tokens this server accepts."""
        return KeyVaultTestCredential(self, lifetime=lifetime)

    def revoke_tokens(self) -> None:
        """Forget every issued token: the next authorized request gets 401 + challenge."""
        with self._lock:
            self._tokens.clear()

    def seed(self, name: str, value: str, *, expires_on: datetime | None = None, enabled: bool = True,
             content_type: str | None = None, not_before: datetime | None = None,
             tags: dict | None = None) -> str:
        """Write a new version straight into the store (no HTTP); returns its version id."""
        if not NAME_RE.match(name):
            raise ValueError(f"invalid Key Vault secret name {name!r}")
        with self._lock:
            if name.lower() in self._deleted:
                raise ValueError(f"secret {name!r} is deleted but not purged")
            ver = self._add_version(name, value, content_type=content_type, tags=tags, enabled=enabled,
                                    nbf=_ts(not_before), exp=_ts(expires_on))
            return ver.version

    def seed_pat(self, name: str, value: str, url_prefixes: str | list[str], **kw) -> str:
        """Seed a PAT as its owner would store it: tagged ``flux-git-url-prefixes`` with the URL
        prefixes it may be sent to (``az keyvault secret set --tags flux-git-url-prefixes=...``)."""
        prefixes = url_prefixes if isinstance(url_prefixes, str) else ",".join(url_prefixes)
        tags = {**(kw.pop("tags", None) or {}), "flux-git-url-prefixes": prefixes}
        return self.seed(name, value, tags=tags, **kw)

    def seed_kubeconfig(self, name: str, text: str, **kw) -> str:
        """Seed a kubeconfig as its owner would store it: content type ``application/x-kubeconfig``
        (``az keyvault secret set --content-type application/x-kubeconfig``)."""
        return self.seed(name, text, content_type=kw.pop("content_type", "application/x-kubeconfig"), **kw)

    def stored(self, name: str, version: str | None = None) -> dict:
        """A copy of a stored version (latest by default): value, contentType, tags, enabled, nbf, exp,
        created, updated, version. KeyError if absent."""
        with self._lock:
            sec = self._secrets[name.lower()]
            ver = sec.latest if version is None else next(v for v in sec.versions if v.version == version)
            return {"name": sec.name, "version": ver.version, "value": ver.value, "contentType": ver.content_type,
                    "tags": dict(ver.tags) if ver.tags else ver.tags, "enabled": ver.enabled, "nbf": ver.nbf,
                    "exp": ver.exp, "created": ver.created, "updated": ver.updated}

    def versions(self, name: str) -> list[str]:
        """Version ids of a secret, in creation order."""
        with self._lock:
            return [v.version for v in self._secrets[name.lower()].versions]

    # auth ----------------------------------------------------------------------------------------
    def _trust(self, token: str, scopes, tenant_id: str | None) -> None:
        with self._lock:
            self._tokens[token] = (tuple(scopes), tenant_id)

    def _token_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            grant = self._tokens.get(token.strip())
        if grant is None:
            from tests.peers.entra_tokens import verify_jwt

            try:
                verify_jwt(token.strip(), audience=RESOURCE)
            except Exception:
                return False
            return True
        scopes, tenant = grant
        return SCOPE in scopes and tenant in (None, self.tenant_id)

    @property
    def challenge(self) -> str:
        return (f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                f'resource="{RESOURCE}"')

    # store ---------------------------------------------------------------------------------------
    def _now(self) -> int:
        return int(self.clock())

    def _add_version(self, name, value, *, content_type, tags, enabled, nbf, exp) -> _Version:
        now = self._now()
        sec = self._secrets.get(name.lower())
        if sec is None:
            sec = self._secrets[name.lower()] = _Secret(name)
        ver = _Version(uuid.uuid4().hex, value, content_type, dict(tags) if tags else None,
                       bool(enabled), nbf, exp, now, now)
        sec.versions.append(ver)
        return ver

    def _find(self, name: str, version: str) -> tuple[_Secret, _Version]:
        sec = self._secrets.get(name.lower())
        if sec is None:
            raise _not_found(name)
        if not version:
            return sec, sec.latest
        for ver in sec.versions:
            if ver.version == version.lower():
                return sec, ver
        raise _not_found(f"{name}/{version}")

    # JSON shapes ---------------------------------------------------------------------------------
    def _attributes(self, ver: _Version) -> dict:
        attrs: dict[str, Any] = {"enabled": ver.enabled}
        if ver.nbf is not None:
            attrs["nbf"] = ver.nbf
        if ver.exp is not None:
            attrs["exp"] = ver.exp
        attrs.update(created=ver.created, updated=ver.updated, recoveryLevel=RECOVERY_LEVEL,
                     recoverableDays=RECOVERABLE_DAYS)
        return attrs

    def _id(self, sec: _Secret, ver: _Version | None = None) -> str:
        base = f"{self.vault_url}/secrets/{sec.name}"
        return f"{base}/{ver.version}" if ver is not None else base

    def _item(self, sec: _Secret, ver: _Version, *, with_version: bool) -> dict:
        item: dict[str, Any] = {"id": self._id(sec, ver if with_version else None),
                                "attributes": self._attributes(ver)}
        if ver.content_type is not None:
            item["contentType"] = ver.content_type
        if ver.tags:
            item["tags"] = dict(ver.tags)
        return item

    def _bundle(self, sec: _Secret, ver: _Version, *, with_value: bool = True) -> dict:
        bundle = self._item(sec, ver, with_version=True)
        if with_value:
            bundle = {"value": ver.value, **bundle}
        return bundle

    def _deleted_bundle(self, d: _Deleted) -> dict:
        bundle = self._bundle(d.secret, d.secret.latest, with_value=False)
        return {"recoveryId": f"{self.vault_url}/deletedsecrets/{d.secret.name}",
                "deletedDate": d.deleted_date, "scheduledPurgeDate": d.scheduled_purge_date, **bundle}

    def _page(self, items: list, path: str, query: dict) -> dict:
        raw = query.get("maxresults")
        try:
            size = PAGE_SIZE if raw in (None, "") else int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= PAGE_SIZE:
            raise _error(400, "BadParameter", f"Invalid value for maxresults: {raw}. It must be between 1 and 25.")
        token = query.get("$skiptoken") or ""
        if token and not token.isdigit():
            raise _error(400, "BadParameter", "Invalid $skiptoken.")
        start = int(token or 0)
        end = start + size
        next_link = None
        if end < len(items):
            next_link = (f"{self.vault_url}{quote(path)}?api-version={query['api-version']}"
                         f"&$skiptoken={end}&maxresults={size}")
        return {"value": items[start:end], "nextLink": next_link}

    # dispatch ------------------------------------------------------------------------------------
    def _handle(self, method: str, path: str, query: dict, body: bytes, authorization: str | None) -> _Reply:
        if not self._token_ok(authorization):
            return _Reply(401, {"error": {"code": "Unauthorized",
                                          "message": "AKV10000: Request is missing a Bearer or PoP token."
                                          if not authorization else "AKV10032: Invalid token."}},
                          {"WWW-Authenticate": self.challenge})
        api_version = query.get("api-version")
        if not api_version:
            return _error(400, "BadParameter", "The request URI is missing the required api-version parameter.")
        if api_version not in API_VERSIONS:
            return _error(400, "BadParameter", f"The specified version ({api_version}) is not recognized. "
                          "Consider using the latest supported version (2026-04-01).")
        parts = [unquote(p) for p in path.split("/")[1:]]
        with self._lock:
            try:
                return self._route(method, parts, path, query, body)
            except _Reply as reply:
                return reply

    def _route(self, method: str, parts: list[str], path: str, query: dict, body: bytes) -> _Reply:
        if parts == ["secrets"] and method == "GET":
            items = [self._item(s, s.latest, with_version=False)
                     for s in sorted(self._secrets.values(), key=lambda s: s.name.lower())]
            return _Reply(200, self._page(items, path, query))
        if len(parts) >= 2 and parts[0] in ("secrets", "deletedsecrets"):
            name = parts[1]
            if not NAME_RE.match(name):
                raise _error(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        if parts[0:1] == ["secrets"] and len(parts) == 2:
            if method == "PUT":
                return self._set(parts[1], body)
            if method == "GET":
                return self._get(parts[1], "")
            if method == "DELETE":
                return self._delete(parts[1])
        if parts[0:1] == ["secrets"] and len(parts) == 3:
            name, version = parts[1], parts[2]
            if version == "versions" and method == "GET":
                sec = self._secrets.get(name.lower())
                vers = sorted(sec.versions, key=lambda v: v.version) if sec else []
                items = [self._item(sec, v, with_version=True) for v in vers]
                return _Reply(200, self._page(items, path, query))
            if version and not VERSION_RE.match(version.lower()):
                raise _not_found(f"{name}/{version}")
            if method == "GET":
                return self._get(name, version)
            if method == "PATCH":
                return self._update(name, version, body)
        if parts[0:1] == ["deletedsecrets"] and len(parts) == 2:
            key = parts[1].lower()
            deleted = self._deleted.get(key)
            if deleted is None:
                raise _error(404, "SecretNotFound", f"Deleted Secret not found: {parts[1]}")
            if method == "GET":
                return _Reply(200, self._deleted_bundle(deleted))
            if method == "DELETE":
                del self._deleted[key]
                return _Reply(204)
        return _error(405 if parts[0:1] in (["secrets"], ["deletedsecrets"]) else 404,
                      "BadParameter", f"{method} {path} is not supported by the Key Vault test server.")

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise _error(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise _error(400, "BadParameter", "The request body must be a JSON object.")
        return data

    def _set(self, name: str, body: bytes) -> _Reply:
        if self.read_only:
            raise _error(403, "Forbidden", "Caller is not authorized to perform action on resource. Action: "
                         "'Microsoft.KeyVault/vaults/secrets/setSecret/action'", inner="ForbiddenByRbac")
        data = self._json(body)
        if name.lower() in self._deleted:
            raise _error(409, "Conflict",
                         f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                         "reused; in this state, the secret can only be recovered or purged.")
        value = data.get("value")
        if not isinstance(value, str):
            raise _error(400, "BadParameter", "Property value is required and must be a string.")
        attrs = data.get("attributes") or {}
        ver = self._add_version(name, value, content_type=data.get("contentType"), tags=data.get("tags"),
                                enabled=attrs.get("enabled", True) is not False,
                                nbf=_int_or_none(attrs.get("nbf"), "nbf"), exp=_int_or_none(attrs.get("exp"), "exp"))
        return _Reply(200, self._bundle(self._secrets[name.lower()], ver))

    def _get(self, name: str, version: str) -> _Reply:
        sec, ver = self._find(name, version)
        if not ver.enabled:
            raise _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return _Reply(200, self._bundle(sec, ver))

    def _update(self, name: str, version: str, body: bytes) -> _Reply:
        data = self._json(body)
        sec, ver = self._find(name, version)
        if "contentType" in data:
            ver.content_type = data["contentType"]
        if "tags" in data:
            ver.tags = dict(data["tags"]) if data["tags"] else None
        attrs = data.get("attributes") or {}
        if attrs.get("enabled") is not None:
            ver.enabled = bool(attrs["enabled"])
        if "nbf" in attrs:
            ver.nbf = _int_or_none(attrs["nbf"], "nbf")
        if "exp" in attrs:
            ver.exp = _int_or_none(attrs["exp"], "exp")
        ver.updated = self._now()
        return _Reply(200, self._bundle(sec, ver, with_value=False))

    def _delete(self, name: str) -> _Reply:
        sec = self._secrets.pop(name.lower(), None)
        if sec is None:
            raise _not_found(name)
        now = self._now()
        deleted = self._deleted[name.lower()] = _Deleted(sec, now, now + RECOVERABLE_DAYS * 86400)
        return _Reply(200, self._deleted_bundle(deleted))


def _ts(when: datetime | None) -> int | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return int(when.timestamp())


class _HTTPServer(TLSHTTPServer):
    def __init__(self, addr, handler, ssl_context: ssl.SSLContext, vault: KeyVaultServer):
        super().__init__(addr, handler, ssl_context)
        self.vault = vault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KeyVaultTestServer/1.0"
    timeout = 10
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
        pass

    def _serve(self) -> None:
        vault: KeyVaultServer = self.server.vault
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization")
        try:
            reply = vault._handle(self.command, split.path, query, body, authorization)
        except _Reply as r:  # pragma: no cover - _handle returns replies
            reply = r
        except Exception as exc:  # a bug in the fake: answer 500 so the test sees it
            reply = _error(500, "InternalServerError", f"test server bug: {type(exc).__name__}: {exc}")
        # logged before answering, so a test sees every request its client got a response to
        with vault._lock:
            vault.request_log.append(LoggedRequest(self.command, split.path, query, authorization, length,
                                                   reply.status))
        write_json(self, reply.status, reply.body, {"x-ms-keyvault-service-version": "1.9.0.0", **reply.headers})

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def keyvault_server():
    """A started :class:`KeyVaultServer` (fresh per test: empty store, empty log, new port)."""
    with KeyVaultServer() as server:
        yield server


@pytest.fixture
def keyvault(keyvault_server):
    """``shared.ports.azure.keyvault.KeyVault`` on ``keyvault_server`` with a credential the server trusts."""
    from shared.ports.azure.keyvault import KeyVault

    kv = KeyVault(keyvault_server.vault_url, keyvault_server.credential(),
                  connection_verify=keyvault_server.ca_file, verify_challenge_resource=False)
    try:
        yield kv
    finally:
        kv.close()
