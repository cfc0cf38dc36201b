"""The token peer: Entra ID access tokens (real JWTs) under test control, and who may verify them.

:class:`JwtTestCredential` implements ``azure.core.credentials.TokenCredential.get_token`` as
``DefaultAzureCredential`` does for the Function's managed identity: one call per scope, returning
``AccessToken(token, expires_on)``. The JWT carries ``aud`` (the scope without ``/.default``, as Entra
ID does: ``6dae42f8-4368-4678-94ff-3960e28e3630`` for the AKS server application,
``https://management.azure.com`` for ARM), ``iss``, ``tid``, ``iat``, ``nbf``, ``exp``, ``oid`` (the
identity's object id, :data:`DEFAULT_OID` unless ``oid=`` says otherwise), ``appid`` and a unique
``jti``. Tokens are signed (HS256, PyJWT) with a random key of this process that only this module
knows; ``verify_jwt(token, audience=...)`` is what a resource server (the ARM test server, the
Kubernetes API test server in its Entra mode, the Event Hubs test peer) checks, so they accept exactly the tokens issued here.

``lifetime`` (seconds, default 3600) sets ``exp - now`` of new tokens; ``lifetimes`` overrides it per
scope. ``on_issue`` callbacks see ``(scope, token)`` (e.g. to make the Azure DevOps git test server
accept the token: ``cred.on_issue.append(lambda s, t: git_server.bearer_tokens.add(t))``).
``fail`` (an exception instance) makes ``get_token`` raise it, like an unavailable managed identity.
``make_jwt(exp=..., aud=...)`` builds a token for seeding a cluster's Secret with a known expiry.

:class:`ManagedIdentityEndpoint` serves the same tokens over the wire, as the App Service / Functions
managed identity endpoint does (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``, api-version 2019-08-01,
learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference), so a process
started by a test (the CLI) gets its tokens through the real ``DefaultAzureCredential``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import jwt

_KEY = secrets.token_bytes(32)
TENANT_ID = "72f988bf-0000-4000-8000-00000000c0de"
ISSUER = f"https://sts.windows.net/{TENANT_ID}/"
#: object id of the Function's (system-assigned) managed identity in the tests
DEFAULT_OID = "11111111-2222-3333-4444-555555555555"
#: the AKS Entra server application (kubelogin docs/book/src/concepts/aks.md): the audience of cluster tokens
AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"


def make_jwt(*, exp: float, aud: str = "https://eventhubs.azure.net", iat: float | None = None,
             oid: str = DEFAULT_OID, key: bytes | None = None) -> str:
    """A signed access token. ``key`` signs with another key (a token this peer did not issue)."""
    now = int(time.time()) if iat is None else int(iat)
    claims = {"aud": aud, "iss": ISSUER, "tid": TENANT_ID, "iat": now, "nbf": now, "exp": int(exp), "oid": oid,
              "sub": oid, "appid": oid, "idtyp": "app", "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key or _KEY, algorithm="HS256")


def verify_jwt(token: str, *, audience: str | list[str]) -> dict:
    """The claims of a token this module issued, checking its signature, ``exp``/``nbf`` and ``aud``
    (one of ``audience``). Raises PyJWT's errors (``InvalidAudienceError``, ``ExpiredSignatureError``,
    ``InvalidSignatureError``, ``DecodeError``)."""
    return jwt.decode(token, _KEY, algorithms=["HS256"], audience=audience)


class JwtTestCredential:
    """See the module docstring. ``requests`` lists the scopes asked, ``issued`` the tokens handed out,
    ``claims`` the CAE claims challenges passed in (``get_token(..., claims=...)``)."""

    def __init__(self, *, lifetime: int = 3600, lifetimes: dict[str, int] | None = None, oid: str = DEFAULT_OID):
        self.lifetime = lifetime
        self.lifetimes = dict(lifetimes or {})
        self.oid = oid
        self.on_issue: list[Callable[[str, str], None]] = []
        self.fail: BaseException | None = None
        self.requests: list[tuple[str, ...]] = []
        self.issued: list[str] = []
        self.claims: list[str] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, **kwargs):
        from azure.core.credentials import AccessToken

        with self._lock:
            self.requests.append(tuple(scopes))
            if claims:
                self.claims.append(claims)
        if self.fail is not None:
            raise self.fail
        scope = scopes[0]
        token, exp = self.issue(scope)
        return AccessToken(token, exp)

    def issue(self, scope: str) -> tuple[str, int]:
        """(token, exp) for ``scope``, recorded in ``issued`` and passed to ``on_issue``."""
        exp = int(time.time()) + self.lifetimes.get(scope, self.lifetime)
        aud = scope[: -len("/.default")] if scope.endswith("/.default") else scope
        token = make_jwt(exp=exp, aud=aud.rstrip("/"), oid=self.oid)
        with self._lock:
            self.issued.append(token)
        for callback in self.on_issue:
            callback(scope, token)
        return token, exp

    def scopes_asked(self, scope: str) -> int:
        """How many ``get_token`` calls asked for ``scope``."""
        with self._lock:
            return sum(1 for r in self.requests if scope in r)

    def close(self) -> None:
        pass


class ManagedIdentityEndpoint:
    """The App Service managed identity endpoint on ``http://127.0.0.1:<port>/msi/token``.

    ``GET ?api-version=2019-08-01&resource=<resource>[&client_id=<id>]`` with header ``X-IDENTITY-HEADER``
    answers ``{"access_token", "expires_on", "resource", "token_type": "Bearer", "client_id"}``. Without
    ``client_id`` the token is the system-assigned identity's (``oid`` :data:`DEFAULT_OID`); a ``client_id``
    must be one of ``user_assigned`` (client id → object id; ``AZURE_CLIENT_ID`` selects it in
    ``DefaultAzureCredential``), else 400 as the service answers. A wrong header is 401.
    ``env()`` gives the environment a child process needs; ``requests`` lists ``(resource, client_id)``.
    """

    def __init__(self, *, lifetime: int = 3600, user_assigned: dict[str, str] | None = None):
        self.lifetime = lifetime
        self.user_assigned = dict(user_assigned or {})
        self.secret = secrets.token_urlsafe(16)
        self.requests: list[tuple[str, str | None]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> "ManagedIdentityEndpoint":
        from tests.peers._serving import serve_in_thread

        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_GET(self):  # noqa: N802
                status, body = endpoint._answer(self.path, self.headers.get("X-IDENTITY-HEADER"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/msi/token"
        self._thread = serve_in_thread(self._httpd, "managed-identity-endpoint")
        return self

    def stop(self) -> None:
        from tests.peers._serving import stop_server

        stop_server(self._httpd, self._thread)
        self._httpd = self._thread = None

    def __enter__(self) -> "ManagedIdentityEndpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def _answer(self, path: str, header: str | None) -> tuple[int, dict]:
        split = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        if split.path != "/msi/token":
            return 404, {"statusCode": 404, "message": "Not found"}
        if header != self.secret:
            return 401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong"}
        if query.get("api-version") != "2019-08-01" or not query.get("resource"):
            return 400, {"error": "invalid_request", "error_description": "api-version 2019-08-01 and resource are required"}
        client_id = query.get("client_id")
        self.requests.append((query["resource"], client_id))
        if client_id is not None and client_id not in self.user_assigned:
            return 400, {"statusCode": 400, "message": "No User Assigned or Delegated Managed Identity found for "
                         "specified ClientId/ResourceId/PrincipalId.", "correlationId": str(uuid.uuid4())}
        oid = self.user_assigned.get(client_id, DEFAULT_OID) if client_id else DEFAULT_OID
        exp = int(time.time()) + self.lifetime
        token = make_jwt(exp=exp, aud=query["resource"].rstrip("/"), oid=oid)
        return 200, {"access_token": token, "expires_on": str(exp), "resource": query["resource"],
                     "token_type": "Bearer", "client_id": client_id or "00000000-0000-0000-0000-00000000a11d"}
