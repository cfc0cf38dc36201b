"""Typed errors of the core. Triggers map them to HTTP status codes, the CLI to exit codes.

No message ever carries a secret value (PAT, token, private key): messages name the secret
(Key Vault name, environment variable) instead.
"""

from __future__ import annotations


class FluxOpsError(Exception):
    """Base class. ``str(err)`` is one line fit for a log or an HTTP error body."""

    status = 500
    code = "InternalError"
    #: the request field (or CLI flag) the error is about, when there is one
    field: str | None = None

    def __init__(self, *args, field: str | None = None):
        super().__init__(*args)
        if field is not None:
            self.field = field


class InvalidInput(FluxOpsError):
    """A request field or CLI flag is invalid. ``field`` names it (request-body spelling)."""

    status = 400
    code = "InvalidInput"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SettingError(InvalidInput):
    """An app setting is missing or invalid (``field`` names the setting). A server-side problem:
    HTTP endpoints answer 500, not 400, and timers fail their invocation."""

    status = 500
    code = "InvalidSetting"


class NotFound(FluxOpsError):
    """A named thing (secret, repository, branch, object) does not exist."""

    status = 404
    code = "NotFound"


class AuthenticationFailed(FluxOpsError):
    """A peer (git server, Key Vault, cluster, registry) rejected our credentials."""

    status = 502
    code = "AuthenticationFailed"


class Conflict(FluxOpsError):
    """The target state conflicts with what exists (e.g. another sync path, a field manager)."""

    status = 409
    code = "Conflict"


class UpstreamError(FluxOpsError):
    """A peer failed or answered something we cannot use."""

    status = 502
    code = "UpstreamError"


class DeadlineExceeded(UpstreamError):
    """A peer did not answer before the caller's deadline (a run's ``--timeout``), at which the
    ports cap their requests (git, Kubernetes)."""


#: How much of a caller's input a message or log line repeats (:func:`shown`).
ECHO_LIMIT = 64


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of an input value cut to its first ``limit`` characters (``'aaaa…'``), for messages
    and logs that echo what a caller sent: a hostile input never floods a log or a response."""
    if isinstance(value, str):
        cut = value if len(value) <= limit else value[:limit]
        text = repr(cut)
        return text if cut is value else text[:-1] + "…" + text[-1]
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
