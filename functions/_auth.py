"""Who may call the operation endpoints (bootstrap, registry, rotation, dead letters, and any later one).

Two modes, chosen by app setting ``AUTH_REQUIRED_ROLE`` when the functions are indexed (the host fixes
an HTTP function's auth level at indexing, and re-indexes after an app-setting change):

- unset (default): the endpoints are ``ADMIN`` level, so only the host's master key opens them
  (:func:`operation_auth_level`); :func:`require_operator` lets every request through;
- set to an app role name (e.g. ``Flux.Admin``): the endpoints are ``ANONYMOUS`` at the host, and
  App Service Authentication (Easy Auth) with Microsoft Entra ID is expected in front of the app.
  :func:`require_operator` then requires the ``X-MS-CLIENT-PRINCIPAL`` header that Easy Auth injects
  (external requests cannot set it while Easy Auth is on) and the role in its ``roles`` claims.

The header (learn.microsoft.com/azure/app-service/configure-authentication-user-identities,
"Decode the client principal header") is base64 of
``{"auth_typ": "aad", "claims": [{"typ": "...", "val": "..."}], "name_typ": "...", "role_typ": "..."}``.
A role is a claim whose ``typ`` is ``roles`` (Entra v2 tokens), ``role_typ``'s value, or
``http://schemas.microsoft.com/ws/2008/06/identity/claims/role``. App roles granted to a user, a group
or an application (client-credentials tokens of automation) all arrive this way.

Answers (``{"error": {"code", "message"}}``): 401 ``Unauthorized`` (no or undecodable header), 403
``Forbidden`` (not signed in with Entra ID, or without the role), 500 ``InvalidSetting`` when the
mode cannot be trusted: App Service Authentication is off (``WEBSITE_AUTH_ENABLED`` is not ``True``,
so anyone could forge the header) or ``AUTH_REQUIRED_ROLE`` was set at indexing and is empty now.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Mapping

import azure.functions as func

from functions._http import echo, error_response

log = logging.getLogger("functions.auth")

SETTING = "AUTH_REQUIRED_ROLE"
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
MAX_PRINCIPAL_BYTES = 64 * 1024  # far above Easy Auth's real headers; a bound on what is decoded
_ROLE_CLAIMS = ("roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAME_CLAIMS = ("preferred_username", "name", "appid", "azp",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
_OID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")

# True once any operation endpoint was indexed ANONYMOUS in this process: from then on an empty
# AUTH_REQUIRED_ROLE must not turn those endpoints into open ones.
_indexed_anonymous = False


def required_role(environ: Mapping[str, str] = os.environ) -> str:
    """The app role named by ``AUTH_REQUIRED_ROLE`` (stripped), or ``""``."""
    return (environ.get("AUTH_REQUIRED_ROLE") or "").strip()


def operation_auth_level(environ: Mapping[str, str] = os.environ) -> func.AuthLevel:
    """The ``auth_level`` of an operation endpoint, decided when the blueprint is built:
    ``ANONYMOUS`` when ``AUTH_REQUIRED_ROLE`` is set (Easy Auth and :func:`require_operator` guard
    it), else ``ADMIN`` (the master key)."""
    global _indexed_anonymous
    if required_role(environ):
        _indexed_anonymous = True
        return func.AuthLevel.ANONYMOUS
    return func.AuthLevel.ADMIN


class _Denied(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _principal(header: str) -> dict:
    if len(header) > MAX_PRINCIPAL_BYTES:
        raise _Denied(401, "Unauthorized", f"{PRINCIPAL_HEADER} is too large")
    try:
        raw = base64.b64decode(header.strip() + "=" * (-len(header.strip()) % 4), validate=True)
        principal = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _Denied(401, "Unauthorized", f"{PRINCIPAL_HEADER} is not a base64 JSON client principal") from None
    claims = principal.get("claims") if isinstance(principal, dict) else None
    if not isinstance(claims, list) or not all(
            isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str) for c in claims):
        raise _Denied(401, "Unauthorized", f"{PRINCIPAL_HEADER} has no claims list of {{typ, val}} strings")
    return principal


def _claim(claims: list[dict], types: tuple[str, ...]) -> str:
    return next((c["val"] for t in types for c in claims if c["typ"] == t), "")


def check_operator(headers: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> dict | None:
    """The decoded principal (None in master-key mode). Raises ``_Denied`` (see the module doc)."""
    role = required_role(environ)
    if not role:
        if _indexed_anonymous:
            raise _Denied(500, "InvalidSetting", f"{SETTING}: app setting was set when the functions were "
                          "indexed and is empty now; restart the app")
        return None
    if (environ.get("WEBSITE_AUTH_ENABLED") or "").strip().lower() != "true":
        raise _Denied(500, "InvalidSetting", f"{SETTING}: App Service Authentication is not enabled on this app "
                      "(WEBSITE_AUTH_ENABLED is not True), so the client principal cannot be trusted")
    header = headers.get(PRINCIPAL_HEADER) or headers.get(PRINCIPAL_HEADER.lower())
    if not header:
        raise _Denied(401, "Unauthorized", f"sign in with Microsoft Entra ID: no {PRINCIPAL_HEADER} header "
                      "(send an Entra access token for the app as Authorization: Bearer)")
    principal = _principal(header)
    if str(principal.get("auth_typ") or "").lower() != "aad":
        raise _Denied(403, "Forbidden", f"signed in with {echo(principal.get('auth_typ'))}; "
                      "operation endpoints take Microsoft Entra ID only")
    claims = principal["claims"]
    role_types = _ROLE_CLAIMS + ((principal["role_typ"],) if isinstance(principal.get("role_typ"), str) else ())
    roles = {c["val"] for c in claims if c["typ"] in role_types}
    if role not in roles:
        raise _Denied(403, "Forbidden", f"the caller does not have the app role {role!r}")
    return principal


def require_operator(req: func.HttpRequest) -> func.HttpResponse | None:
    """None when ``req`` may run an operation endpoint; otherwise the 401/403/500 JSON answer to return
    at once (nothing has been read or written). Logs who called, by name and object id, never a token."""
    try:
        principal = check_operator(req.headers)
    except _Denied as exc:
        if exc.status == 500:
            log.error("operation endpoint %s refused: %s", echo(req.url, 120), exc.message)
        else:
            log.warning("operation endpoint %s refused (%d): %s", echo(req.url, 120), exc.status, exc.message)
        return error_response(exc.status, exc.code, exc.message)
    if principal is not None:
        claims = principal["claims"]
        log.info("operation endpoint %s called by %s (object id %s)", echo(req.url, 120),
                 echo(_claim(claims, _NAME_CLAIMS) or "?"), echo(_claim(claims, _OID_CLAIMS) or "?"))
    return None
