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


#: corev1.DockerConfigJsonKey and corev1.SecretTypeDockerConfigJson.
DOCKER_CONFIG_KEY = ".dockerconfigjson"
DOCKER_CONFIG_TYPE = "kubernetes.io/dockerconfigjson"


def docker_config_json(registry: str, username: str, password: str) -> str:
    """``generateDockerConfigJson`` (sourcesecret.go): ``{"auths":{"<registry>":{"username","password",
    "auth"}}}`` as Go's ``json.Marshal`` writes it (``DockerConfigEntry`` field order, empty fields
    omitted, ``auth`` = base64 of ``user:password``). The registry key is ``--registry`` as given
    (``myacr.azurecr.io/fluxcd``): the kubelet matches it as a prefix of the image reference."""
    import base64

    from ..notify.gojson import marshal

    entry = {}
    if username:
        entry["username"] = username
    if password:
        entry["password"] = password
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    if auth:
        entry["auth"] = auth
    return marshal({"auths": {registry: entry}}).decode()


def image_pull_secret(*, name: str, namespace: str = DEFAULT_NAMESPACE, registry: str, username: str, password: str) -> dict:
    """The Secret ``flux bootstrap --registry-creds --image-pull-secret`` creates (pkg/bootstrap
    ``reconcileImagePullSecret``): ``<namespace>/<name>``, type ``kubernetes.io/dockerconfigjson``,
    ``stringData[.dockerconfigjson]`` from :func:`docker_config_json`. Holds a secret: never log it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {DOCKER_CONFIG_KEY: docker_config_json(registry, username, password)},
        "type": DOCKER_CONFIG_TYPE,
    }


def parse_registry_creds(value: str, field: str = "registryCreds") -> tuple[str, str]:
    """``user:password`` (Flux's ``--registry-creds`` format: cmd/flux/bootstrap.go ``bootstrapValidate``
    wants exactly one ``:``) into its two parts. Raises InvalidInput naming ``field`` (the value is
    never echoed)."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise InvalidInput(field, "invalid format, expected 'user:password'")
    user, password = value.split(":", 1)
    if not user or not password or any(c in value for c in "\r\n\x00"):
        raise InvalidInput(field, "invalid format, expected 'user:password' (both non-empty, one line)")
    return user, password
