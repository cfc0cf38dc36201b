"""Secrets in Azure Key Vault through the real ``SecretClient`` (azure-keyvault-secrets 4.12).

The vault holds the credentials the app distributes (Azure DevOps PAT, SSH keys, kubeconfigs). Each
``set_secret`` creates a new *version* (32 hex chars); ``get_secret`` without a version returns the latest
one. ``exp``/``nbf`` are informational only: Key Vault still returns an expired secret, so callers
decide what to do with :attr:`SecretValue.expires_on` (Event Grid ``SecretNearExpiry`` fires 30 days before it).
A disabled version answers 403 ``Forbidden`` "Operation get is not allowed on a disabled secret.".
References: learn.microsoft.com/azure/key-vault/secrets/about-secrets (names, attributes, 25 KB values),
learn.microsoft.com/rest/api/keyvault/secrets, learn.microsoft.com/python/api/azure-keyvault-secrets.

Authentication: the SDK's challenge policy sends the first request unauthenticated, reads the tenant and
resource from the ``401`` ``WWW-Authenticate`` header, then asks the credential for
``https://vault.azure.net/.default``. In Azure the credential is ``DefaultAzureCredential`` (managed identity;
``AZURE_CLIENT_ID`` selects a user-assigned one) with the "Key Vault Secrets User" role to read and
"Key Vault Secrets Officer" to write.

Secret values never appear in an exception message, a log line or a ``repr``; errors name the secret and
the vault. The azure SDK is imported lazily (cold start of the Functions host).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlsplit

from shared import errors

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[0-9a-zA-Z-]{1,127}")  # used with fullmatch
VERSION_RE = re.compile(r"[0-9a-fA-F]{32}")
MAX_VALUE_BYTES = 25 * 1024  # "value ... 25k bytes" (about-secrets)
MAX_CONTENT_TYPE = 255


@dataclass(frozen=True)
class SecretValue:
    """One version of a secret.

    ``value`` is excluded from ``repr`` (and so from logs of the object); it is ``""`` in listings.
    ``expires_on``/``created_on`` are timezone-aware UTC (Key Vault stores Unix seconds), or None.
    ``created_on`` is an addition to the agreed fields, for picking the newest version.
    ``content_type`` and ``tags`` (``{}`` when none) are the version's, as the vault's owner set them:
    :mod:`shared.trust` reads them to decide where the secret may be sent (tag
    ``flux-git-url-prefixes``) and whether it is a kubeconfig (``application/x-kubeconfig``). Tags
    belong to one version: a new version carries only the tags given when it was set.
    """

    name: str
    value: str = field(repr=False)
    version: str | None
    expires_on: datetime | None
    content_type: str | None
    enabled: bool = True
    created_on: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class SecretNotFound(errors.NotFound):
    """The secret (or the given version) does not exist in the vault (HTTP 404 ``SecretNotFound``)."""

    def __init__(self, name: str, vault_url: str, version: str | None = None):
        what = f'Key Vault secret "{name}"' + (f" version {version}" if version else "")
        super().__init__(f"{what} not found in {vault_url}")
        self.name = name
        self.vault_url = vault_url
        self.version = version


class KeyVaultError(errors.UpstreamError):
    """Key Vault failed, is unreachable, or refused the operation (e.g. the secret is disabled)."""


def validate_secret_name(name: Any, field: str = "name") -> str:
    """Key Vault secret names: 1-127 characters, ``0-9 a-z A-Z -`` (about-object-names).

    Raises :class:`shared.errors.InvalidInput` with ``field`` (the caller's request-field spelling).
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        what = errors.shown(name) if isinstance(name, str) else type(name).__name__
        raise errors.InvalidInput(
            field, f"{what} is not a Key Vault secret name (1-127 characters: letters, digits and '-')")
    return name


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:  # the SDK deserializes Unix seconds as UTC; be explicit anyway
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def _check_vault_url(url: Any, field: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if (parts is None or parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment
            or parts.path not in ("", "/")):
        raise errors.InvalidInput(
            field, f"{url!r} is not a Key Vault URL; expected https://<vault-name>.vault.azure.net")
    return url.rstrip("/")


class KeyVault:
    """Secrets of one vault. One ``SecretClient`` per instance, created on first use (thread-safe).

    ``credential``: any ``azure.core.credentials.TokenCredential``; None → ``DefaultAzureCredential()``,
    created on first use and closed by :meth:`close`. ``connection_verify`` (CA bundle path or bool) and
    ``verify_challenge_resource`` are passed to ``SecretClient`` only when not None (local test vaults on
    ``https://127.0.0.1:<port>`` need a CA file and ``verify_challenge_resource=False``).
    """

    def __init__(self, vault_url: str, credential=None, *, connection_verify: str | bool | None = None,
                 verify_challenge_resource: bool | None = None):
        self.vault_url = _check_vault_url(vault_url, "vault_url")
        self._credential = credential
        self._owns_credential = False
        self._connection_verify = connection_verify
        self._verify_challenge_resource = verify_challenge_resource
        self._client = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ) -> "KeyVault":
        """From app settings: ``KEY_VAULT_URL`` (required, ``https://<vault>.vault.azure.net``) and
        ``KEY_VAULT_CA_FILE`` (optional, local testing only: a CA bundle for a test vault; also turns off
        the challenge-resource domain check). Raises :class:`shared.errors.SettingError` naming the setting.
        """
        url = (environ.get("KEY_VAULT_URL") or "").strip()
        if not url:
            raise errors.SettingError(
                "KEY_VAULT_URL", "app setting is missing; set it to the vault URI, https://<vault-name>.vault.azure.net")
        try:
            url = _check_vault_url(url, "KEY_VAULT_URL")
        except errors.InvalidInput as exc:
            raise errors.SettingError(exc.field, exc.message) from None
        ca_file = (environ.get("KEY_VAULT_CA_FILE") or "").strip()
        if not ca_file:
            return cls(url)
        if not os.path.isfile(ca_file):
            raise errors.SettingError("KEY_VAULT_CA_FILE", f"no such file: {ca_file}")
        return cls(url, connection_verify=ca_file, verify_challenge_resource=False)

    def __repr__(self) -> str:
        return f"KeyVault({self.vault_url!r})"

    # client ----------------------------------------------------------------------------------------
    def _secret_client(self):
        with self._lock:
            if self._client is None:
                from azure.keyvault.secrets import SecretClient

                if self._credential is None:
                    from azure.identity import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
                    self._owns_credential = True
                kwargs: dict[str, Any] = {}
                if self._connection_verify is not None:
                    kwargs["connection_verify"] = self._connection_verify
                if self._verify_challenge_resource is not None:
                    kwargs["verify_challenge_resource"] = self._verify_challenge_resource
                self._client = SecretClient(self.vault_url, self._credential, **kwargs)
            return self._client

    def close(self) -> None:
        """Close the HTTP session (and the credential if this instance created it)."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                client.close()
            if self._owns_credential and self._credential is not None:
                close = getattr(self._credential, "close", None)
                if close is not None:
                    close()
                self._credential = None
                self._owns_credential = False

    def __enter__(self) -> "KeyVault":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # operations ------------------------------------------------------------------------------------
    def get_secret(self, name: str, version: str | None = None, *, field: str = "name") -> SecretValue:
        """The latest (or the given) version of a secret, with its value.

        Raises :class:`shared.errors.InvalidInput` (``field``; ``version`` for a bad version),
        :class:`SecretNotFound`, :class:`KeyVaultError` (disabled → names the secret; other failures),
        :class:`shared.errors.AuthenticationFailed` (token refused, credential unavailable, 403 by RBAC).
        """
        validate_secret_name(name, field)
        if version is not None and not (isinstance(version, str) and VERSION_RE.fullmatch(version)):
            raise errors.InvalidInput("version", "a Key Vault secret version is 32 hexadecimal characters")
        client = self._secret_client()
        try:
            secret = client.get_secret(name, version)
        except _sdk_errors() as exc:
            raise self._translate(exc, "get", name, version) from exc
        log.debug("Key Vault %s: read secret %s version %s", self.vault_url, name, secret.properties.version)
        return _from_properties(secret.properties, secret.value or "", name)

    def set_secret(self, name: str, value: str, *, content_type: str | None = None,
                   expires_on: datetime | None = None, tags: Mapping[str, str] | None = None,
                   field: str = "name") -> SecretValue:
        """Store ``value`` as a new version (creates the secret if needed) and return that version.
        ``tags`` (at most 15; names up to 512, values up to 256 characters, as the service allows)
        belong to that version.

        ``expires_on`` must be timezone-aware (stored as Unix seconds, so sub-seconds are dropped).
        Raises :class:`shared.errors.InvalidInput`, :class:`KeyVaultError` (e.g. 409 when the name is
        deleted but not purged), :class:`shared.errors.AuthenticationFailed`.
        """
        validate_secret_name(name, field)
        if not isinstance(value, str):
            raise errors.InvalidInput("value", f"must be a string, not {type(value).__name__}")
        size = len(value.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise errors.InvalidInput("value", f"is {size} bytes; a Key Vault secret holds at most {MAX_VALUE_BYTES}")
        if content_type is not None and (not isinstance(content_type, str) or len(content_type) > MAX_CONTENT_TYPE):
            raise errors.InvalidInput("content_type", f"must be a string of at most {MAX_CONTENT_TYPE} characters")
        if expires_on is not None and (not isinstance(expires_on, datetime) or expires_on.tzinfo is None):
            raise errors.InvalidInput("expires_on", "must be a timezone-aware datetime")
        if tags is not None and (not isinstance(tags, Mapping) or len(tags) > 15 or any(
                not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > 512 or len(v) > 256
                for k, v in tags.items())):
            raise errors.InvalidInput("tags", "at most 15 tags; names of 1-512 and values of at most 256 characters")
        client = self._secret_client()
        try:
            secret = client.set_secret(name, value, content_type=content_type, expires_on=expires_on,
                                       tags=dict(tags) if tags else None)
        except _sdk_errors() as exc:
            raise self._translate(exc, "set", name, None) from exc
        log.info("Key Vault %s: stored secret %s version %s", self.vault_url, name, secret.properties.version)
        return _from_properties(secret.properties, value, name)

    def list_versions(self, name: str, *, field: str = "name") -> list[SecretValue]:
        """Every version of a secret, without values (``value == ""``), newest first by ``created_on``
        (the service returns them in no particular order; versions created in the same second keep
        the service's order). Disabled versions are included (``enabled=False``).

        Raises :class:`SecretNotFound` when the secret has no versions, else as :meth:`get_secret`.
        """
        validate_secret_name(name, field)
        client = self._secret_client()
        try:
            items = [_from_properties(p, "", name) for p in client.list_properties_of_secret_versions(name)]
        except _sdk_errors() as exc:
            raise self._translate(exc, "list versions of", name, None) from exc
        if not items:
            raise SecretNotFound(name, self.vault_url)
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        items.sort(key=lambda s: s.created_on or epoch, reverse=True)
        return items

    # errors ----------------------------------------------------------------------------------------
    def _translate(self, exc: BaseException, action: str, name: str, version: str | None) -> Exception:
        """Map an azure-core exception to the project's errors. Messages hold the service's error code and
        message (never request content) and are one line."""
        from azure.core import exceptions as azx

        target = f'secret "{name}"' + (f" version {version}" if version else "")
        if isinstance(exc, azx.ResourceNotFoundError):
            return SecretNotFound(name, self.vault_url, version)
        if isinstance(exc, azx.ClientAuthenticationError):
            return errors.AuthenticationFailed(
                f"Key Vault {self.vault_url}: authentication failed to {action} {target}: {_detail(exc)}")
        if isinstance(exc, azx.HttpResponseError) and exc.status_code is not None:
            code, message, inner = _service_error(exc)
            if exc.status_code == 403:
                if inner == "SecretDisabled" or "disabled" in message.lower():
                    return KeyVaultError(f'Key Vault secret "{name}"' + (f" version {version}" if version else "")
                                         + f" is disabled in {self.vault_url} ({message})")
                return errors.AuthenticationFailed(
                    f"Key Vault {self.vault_url} denied {action} {target} (403 {code}: {message}); "
                    "check the identity's Key Vault role (Secrets User to read, Secrets Officer to write)")
            return KeyVaultError(
                f"Key Vault {self.vault_url} failed to {action} {target}: HTTP {exc.status_code} {code}: {message}")
        if isinstance(exc, azx.AzureError):
            return KeyVaultError(f"Key Vault {self.vault_url} unreachable to {action} {target}: {_detail(exc)}")
        # ValueError, e.g. the challenge resource does not match the vault domain
        return KeyVaultError(f"Key Vault {self.vault_url}: cannot {action} {target}: {_detail(exc)}")


def _sdk_errors() -> tuple[type[BaseException], ...]:
    """What the SDK raises: ``azure.core.exceptions.AzureError`` subclasses, and ``ValueError`` from the
    challenge policy (resource/domain mismatch, bad challenge)."""
    from azure.core.exceptions import AzureError

    return (AzureError, ValueError)


def _from_properties(props, value: str, name: str) -> SecretValue:
    enabled = props.enabled
    return SecretValue(name=props.name or name, value=value, version=props.version,
                       expires_on=_utc(props.expires_on), content_type=props.content_type,
                       enabled=True if enabled is None else bool(enabled), created_on=_utc(props.created_on),
                       tags=dict(props.tags or {}))


def _service_error(exc) -> tuple[str, str, str | None]:
    """(code, message, innererror code) from a Key Vault error body ``{"error": {...}}``."""
    code, message, inner = "", "", None
    try:
        body = exc.response.json() if exc.response is not None else None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
            if isinstance(err.get("innererror"), dict):
                inner = err["innererror"].get("code")
    except Exception:  # not JSON: fall back to the reason phrase
        pass
    if not code and exc.response is not None:
        code = str(exc.response.reason or "")
    return code, _one_line(message), inner


def _detail(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {_one_line(str(text))}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
