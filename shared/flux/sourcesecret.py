"""The source Secret that source-controller uses to reach the repository.

Follows fluxcd/flux2 ``pkg/manifestgen/sourcesecret/sourcesecret.go`` (``buildGitSecret``): a
``v1`` Secret without type (Opaque) and without labels, ``stringData`` keys by auth mode:
``username`` + ``password`` (both non-empty), or ``bearerToken``, plus ``ca.crt`` when a CA is
given. The values are secrets: never log the returned dict.
"""

from __future__ import annotations

from ..errors import InvalidInput
from . import DEFAULT_NAMESPACE


def string_data(*, username: str = "git", password: str | None = None, bearer_token: str | None = None, ca_crt: str | None = None) -> dict[str, str]:
    """The ``stringData`` map. Raises InvalidInput when no credential is given."""
    data: dict[str, str] = {}
    if bearer_token:
        data["bearerToken"] = bearer_token
    elif username and password:
        data["username"] = username
        data["password"] = password
    else:
        raise InvalidInput("password", "a PAT (password) or a bearer token is required for token auth")
    if ca_crt:
        data["ca.crt"] = ca_crt
    return data


def generate(*, name: str = DEFAULT_NAMESPACE, namespace: str = DEFAULT_NAMESPACE, **credentials) -> dict:
    """The Secret object (``stringData`` form) for ``credentials`` (see :func:`string_data`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": string_data(**credentials),
    }
