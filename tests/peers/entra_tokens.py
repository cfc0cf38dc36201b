"""A token credential under test control: issues real JWTs (HS256, PyJWT) with a chosen ``exp``.

:class:`JwtTestCredential` implements ``azure.core.credentials.TokenCredential.get_token`` as
``DefaultAzureCredential`` does for the Function's managed identity: one call per scope, returning
``AccessToken(token, expires_on)``. The JWT carries ``aud`` (the scope without ``/.default``, as Entra
ID does), ``iat``, ``nbf``, ``exp``, ``oid`` and a unique ``jti``; the signature key is random and known
to no one else (consumers read ``exp`` without verifying, as notification-controller's users do).

``lifetime`` (seconds, default 3600) sets ``exp - now`` of new tokens; ``lifetimes`` overrides it per
scope. ``on_issue`` callbacks see ``(scope, token)`` (e.g. to make the Azure DevOps git test server
accept the token: ``cred.on_issue.append(lambda s, t: git_server.bearer_tokens.add(t))``).
``fail`` (an exception instance) makes ``get_token`` raise it, like an unavailable managed identity.
``make_jwt(exp=..., aud=...)`` builds a token for seeding a cluster's Secret with a known expiry.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from typing import Callable

import jwt

_KEY = secrets.token_bytes(32)


def make_jwt(*, exp: float, aud: str = "https://eventhubs.azure.net", iat: float | None = None) -> str:
    now = int(time.time()) if iat is None else int(iat)
    claims = {"aud": aud, "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
              "iat": now, "nbf": now, "exp": int(exp), "oid": "11111111-2222-3333-4444-555555555555",
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, _KEY, algorithm="HS256")


class JwtTestCredential:
    """See the module docstring. ``requests`` lists the scopes asked, ``issued`` the tokens handed out."""

    def __init__(self, *, lifetime: int = 3600, lifetimes: dict[str, int] | None = None):
        self.lifetime = lifetime
        self.lifetimes = dict(lifetimes or {})
        self.on_issue: list[Callable[[str, str], None]] = []
        self.fail: BaseException | None = None
        self.requests: list[tuple[str, ...]] = []
        self.issued: list[str] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, **kwargs):
        from azure.core.credentials import AccessToken

        with self._lock:
            self.requests.append(tuple(scopes))
        if self.fail is not None:
            raise self.fail
        scope = scopes[0]
        exp = int(time.time()) + self.lifetimes.get(scope, self.lifetime)
        aud = scope[: -len("/.default")] if scope.endswith("/.default") else scope
        token = make_jwt(exp=exp, aud=aud.rstrip("/"))
        with self._lock:
            self.issued.append(token)
        for callback in self.on_issue:
            callback(scope, token)
        return AccessToken(token, exp)

    def close(self) -> None:
        pass
