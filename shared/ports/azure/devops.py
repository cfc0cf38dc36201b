"""Azure DevOps Git commit statuses over REST (api-version 7.1), with ``requests``.

- List: ``GET {base}/{org}/{project}/_apis/git/repositories/{repo}/commits/{sha}/statuses?api-version=7.1``
  → ``{"count": n, "value": [GitStatus, ...]}``, newest first.
- Create: ``POST`` on the same URL, body ``GitStatus`` ``{"state", "description", "targetUrl"?,
  "context": {"name", "genre"}}``; states ``notSet|pending|succeeded|failed|error|notApplicable``.

References: learn.microsoft.com/rest/api/azure/devops/git/statuses/create and .../statuses/list;
Flux's ``azuredevops`` provider (fluxcd/notification-controller ``internal/notifier/azure_devops.go``)
lists first and creates only when the newest status with the same context differs in state or description.

Auth: a PAT as ``Basic base64(":" + pat)``, or an Entra ID access token for the Azure DevOps resource
(``499b84ac-1321-427f-aa17-267ca6975798/.default``) as ``Bearer``. Neither ever appears in an error.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

log = logging.getLogger(__name__)

API_VERSION = "7.1"
DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"
STATES = ("notSet", "pending", "succeeded", "failed", "error", "notApplicable")


class DevOpsHTTPError(Exception):
    """A non-2xx answer. ``status`` and ``retry_after`` (seconds or None); the message has the method,
    the path without host or query, and the service's ``message`` field, never the Authorization."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class CommitStatus:
    """A ``GitStatus`` to create: ``state`` one of :data:`STATES`; ``name``/``genre`` form its context."""

    state: str
    description: str
    name: str
    genre: str
    target_url: str | None = None

    def to_json(self) -> dict:
        body = {"state": self.state, "description": self.description,
                "context": {"name": self.name, "genre": self.genre}}
        if self.target_url:
            body["targetUrl"] = self.target_url
        return body


def pat_auth(pat: str) -> str:
    """``Authorization`` value for a PAT (any user name; ADO checks the password)."""
    return "Basic " + base64.b64encode((":" + pat).encode("utf-8")).decode("ascii")


def credential_auth(credential) -> Callable[[], str]:
    """An ``Authorization`` factory from a ``TokenCredential`` (the Function's managed identity)."""

    def header() -> str:
        return "Bearer " + credential.get_token(DEVOPS_SCOPE).token

    return header


class DevOpsStatuses:
    """Commit statuses of one repository. ``session`` is a shared ``requests.Session`` (pooled);
    ``authorization`` returns the header value per request (tokens refresh themselves)."""

    def __init__(self, session, *, organization: str, project: str, repository: str,
                 authorization: Callable[[], str], base_url: str = "https://dev.azure.com", timeout: float = 15.0):
        self._session = session
        self._auth = authorization
        self._timeout = timeout
        self._base = (f"{base_url.rstrip('/')}/{quote(organization, safe='')}/{quote(project, safe='')}"
                      f"/_apis/git/repositories/{quote(repository, safe='')}")

    def _url(self, sha: str) -> str:
        return f"{self._base}/commits/{sha}/statuses"

    def _call(self, method: str, sha: str, body: dict | None = None):
        headers = {"Authorization": self._auth(), "Accept": "application/json"}
        resp = self._session.request(method, self._url(sha), params={"api-version": API_VERSION}, json=body,
                                     headers=headers, timeout=self._timeout)
        if resp.status_code >= 300:
            detail = ""
            try:
                detail = str(resp.json().get("message") or "")[:300]
            except Exception:
                pass
            hint = " (check the PAT or identity has Code (status) rights)" if resp.status_code in (401, 403) else ""
            raise DevOpsHTTPError(resp.status_code,
                                  f"Azure DevOps {method} commits/{sha[:12]}/statuses: HTTP {resp.status_code}"
                                  + (f": {detail}" if detail else "") + hint,
                                  retry_after=retry_after_seconds(resp.headers.get("Retry-After")))
        return resp

    def list(self, sha: str) -> list[dict]:
        """Statuses of ``sha``, newest first (the service's order)."""
        data = self._call("GET", sha).json()
        return list(data.get("value") or []) if isinstance(data, dict) else []

    def create(self, sha: str, status: CommitStatus) -> dict:
        """POST ``status`` on commit ``sha``; returns the created ``GitStatus``. Raises
        :class:`DevOpsHTTPError` (non-2xx) or ``ValueError`` for an unknown state."""
        if status.state not in STATES:
            raise ValueError(f"state {status.state!r} is not one of {STATES}")
        return self._call("POST", sha, status.to_json()).json()

    def post_if_changed(self, sha: str, status: CommitStatus) -> bool:
        """Flux's rule: the newest status with the same context name and genre decides; post only if its
        state or description differ. Returns True when a status was created."""
        for existing in self.list(sha):
            ctx = existing.get("context") or {}
            if ctx.get("name") == status.name and ctx.get("genre") == status.genre:
                if existing.get("state") == status.state and existing.get("description") == status.description:
                    return False
                break
        self.create(sha, status)
        return True


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    from datetime import datetime, timezone

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
