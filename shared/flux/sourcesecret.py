"""The source Secret that source-controller uses to reach the repository.

Follows fluxcd/flux2 ``pkg/manifestgen/sourcesecret/sourcesecret.go`` (``buildSecret``): a ``v1``
Secret without type (Opaque) and without labels, ``stringData`` keys by auth mode:
``username`` + ``password`` (both non-empty), or ``bearerToken``, plus ``ca.crt`` when a CA is
given; for SSH ``identity`` (the private key bytes), ``identity.pub`` (``ssh.MarshalAuthorizedKey``:
``"<type> <base64>\\n"``), ``known_hosts`` (the scanned host key line, trimmed) and ``password``
when the key has a passphrase. The values are secrets: never log the returned dict.
"""

from __future__ import annotations

from ..errors import InvalidInput
from . import DEFAULT_NAMESPACE

#: sourcesecret.go's key names.
PRIVATE_KEY = "identity"
PUBLIC_KEY = "identity.pub"
KNOWN_HOSTS = "known_hosts"


def string_data(*, username: str = "git", password: str | None = None, bearer_token: str | None = None,
                ca_crt: str | None = None, identity: str | None = None, identity_pub: str | None = None,
                known_hosts: str | None = None) -> dict[str, str]:
    """The ``stringData`` map. With ``identity`` (SSH): ``identity``, ``identity.pub``,
    ``known_hosts``, and ``password`` (the key's passphrase) when given. Raises InvalidInput
    when no credential is given."""
    data: dict[str, str] = {}
    if identity:
        if not identity_pub or not known_hosts:
            raise InvalidInput("privateKeySecret", "an SSH source secret needs the public key and known_hosts")
        data[PRIVATE_KEY] = identity
        data[PUBLIC_KEY] = identity_pub
        data[KNOWN_HOSTS] = known_hosts.strip()
        if password:
            data["password"] = password
    elif bearer_token:
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


def known_hosts_host(host: str, port: int) -> str:
    """golang.org/x/crypto/ssh/knownhosts ``Normalize``: ``host`` for port 22, else
    ``[host]:port``; an IPv6 address in brackets."""
    if port != 22:
        return f"[{host}]:{port}"
    return f"[{host}]" if ":" in host else host


def known_hosts_line(host: str, port: int, key_type: str, key_b64: str) -> str:
    """One ``known_hosts`` line as fluxcd/pkg ``ssh.HostKeyCollector`` writes it and
    ``sourcesecret.ScanHostKey`` trims it: ``<Normalize(host:port)> <key type> <base64>``, no
    hashed host, no trailing newline (``ssh.dev.azure.com ssh-rsa AAAAB3...``)."""
    return f"{known_hosts_host(host, port)} {key_type} {key_b64}"


def known_host_keys(text: str, host: str, port: int) -> list[tuple[str, str]]:
    """``(key type, base64)`` of every plain (not hashed, not negated) line of ``known_hosts``
    ``text`` whose host patterns name ``host:port`` exactly (markers such as ``@revoked`` and
    wildcard patterns are skipped)."""
    want = known_hosts_host(host, port)
    found = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
            continue
        if want in fields[0].split(","):
            found.append((fields[1], fields[2]))
    return found
