"""What the app's Azure Resource Manager clients share: the ARM endpoint setting, one SDK client per subscription,
and the mapping of ARM's answers to the core's typed errors (``shared.errors``).

Used by :mod:`shared.ports.azure.aks` (``azure-mgmt-containerservice``) and :mod:`shared.ports.azure.msi`
(``azure-mgmt-msi``). ARM errors are ``{"error": {"code", "message"}}`` bodies (azure-core ``HttpResponseError``):
404 → ``InvalidInput`` (the request named a resource that does not exist), 403 ``AuthorizationFailed`` →
``AuthenticationFailed`` (502) naming the role to assign, 401 → ``AuthenticationFailed``, 409 → ``Conflict``,
anything else → ``UpstreamError``; no token, no credential of a resource in any message.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping
from urllib.parse import urlsplit

from shared import errors


@dataclass(frozen=True)
class Role:
    """An Azure built-in role: its name and its role definition GUID (functions-platform.md §5.3)."""

    name: str
    id: str

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


@dataclass(frozen=True, eq=False)
class ArmResourceId:
    """An Azure resource ID of one type (``/subscriptions/<id>/resourceGroups/<rg>/providers/<type>/<name>``),
    compared case-insensitively as ARM does. ``str()`` is the canonical spelling (the subscription in lower case,
    group and name as given); :attr:`key` is its lower case (cache and memo keys). Subclasses set ``TYPE`` (e.g.
    ``Microsoft.ContainerService/managedClusters``), ``NAME`` (the regexp of a name), ``WHAT`` (for messages),
    ``HINT`` (where to find the ID) and ``FIELD`` (the default request field)."""

    TYPE: ClassVar[str] = ""
    NAME: ClassVar[str] = ""
    WHAT: ClassVar[str] = ""
    HINT: ClassVar[str] = ""
    FIELD: ClassVar[str] = ""

    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, value: Any, field: str | None = None):
        """Raises ``InvalidInput(field)`` for anything but a resource ID of this type."""
        pattern = re.compile(
            r"^/subscriptions/(?P<sub>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
            r"/resourcegroups/(?P<rg>[-\w.()]{0,89}[-\w()])"
            rf"/providers/{re.escape(cls.TYPE)}/(?P<name>{cls.NAME})$", re.IGNORECASE)
        if not isinstance(value, str) or len(value) > 400 or not (m := pattern.match(value)):
            shown = repr(value) if isinstance(value, str) and len(value) <= 200 else type(value).__name__
            raise errors.InvalidInput(field or cls.FIELD, f"{shown} is not the resource ID of {cls.WHAT}; expected "
                                      f"/subscriptions/{{id}}/resourceGroups/{{rg}}/providers/{cls.TYPE}/{{name}} ({cls.HINT})")
        return cls(m["sub"].lower(), m["rg"], m["name"])

    def __str__(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/{self.TYPE}/{self.name}"

    @property
    def key(self) -> str:
        return str(self).lower()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


def arm_endpoint_setting(environ: Mapping[str, str] = os.environ) -> str | None:
    """App setting ``AZURE_RESOURCE_MANAGER_ENDPOINT``: an https:// ARM URL (e.g. Azure Stack Hub), or None for
    the ``AZURE_CLOUD`` cloud's. Raises ``SettingError`` naming the setting."""
    base_url = (environ.get("AZURE_RESOURCE_MANAGER_ENDPOINT") or "").strip() or None
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise errors.SettingError("AZURE_RESOURCE_MANAGER_ENDPOINT", "app setting must be an https:// URL")
    return base_url


def arm_detail(exc: Any) -> tuple[int | None, str, str]:
    """(status, ARM error code, ARM message: first line, at most 500 characters) of an ``HttpResponseError``."""
    status = getattr(exc, "status_code", None)
    err = getattr(exc, "error", None)
    code = str(getattr(err, "code", None) or getattr(exc, "reason", None) or "")
    message = str(getattr(err, "message", None) or "").strip() or str(getattr(exc, "message", "") or "").strip()
    return status, code, message.splitlines()[0][:500] if message else ""


class ArmClients:
    """One SDK client per subscription, built by ``factory(credential, subscription_id, base_url=..., **kwargs)``
    on first use with ``credential`` (a ``TokenCredential``). ``base_url``: the ARM endpoint (None: the cloud's);
    ``connection_verify``: a CA bundle path for a test ARM; other keyword arguments go to the SDK client, with
    short retries and timeouts by default (a bootstrap answers within an HTTP request). Thread-safe."""

    def __init__(self, credential, factory: Callable[..., Any], *, base_url: str | None = None,
                 connection_verify: str | bool | None = None, **client_kwargs: Any):
        self.credential = credential
        self.base_url = base_url.rstrip("/") if base_url else None
        self._factory = factory
        self._client_kwargs = dict(client_kwargs)
        if connection_verify is not None:
            self._client_kwargs["connection_verify"] = connection_verify
        self._client_kwargs.setdefault("retry_total", 2)
        self._client_kwargs.setdefault("connection_timeout", 10)
        self._client_kwargs.setdefault("read_timeout", 30)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    def client(self, subscription_id: str):
        with self._clients_lock:
            client = self._clients.get(subscription_id)
            if client is None:
                client = self._factory(self.credential, subscription_id, base_url=self.base_url, **self._client_kwargs)
                self._clients[subscription_id] = client
            return client

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()

    def map_error(self, exc: BaseException, resource: object, action: str, *, field: str, what: str, role: Role,
                  scope: str) -> errors.FluxOpsError:
        """The typed error for ``exc`` raised by ``action`` on ``resource`` (``what`` it is, e.g. ``managed
        cluster``; ``scope`` where ``role`` is to be assigned, e.g. ``the cluster``); ``field`` is the request
        field that named the resource."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        if isinstance(exc, errors.FluxOpsError):
            return exc
        if isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None):
            status, code, message = arm_detail(exc)
            detail = f"{message} ({code})" if code else message
            if status == 404:
                return errors.InvalidInput(field, f"{what} {resource} not found: {detail}")
            if status == 403:
                return errors.AuthenticationFailed(
                    f"ARM refused {action} on {resource}: {detail}; assign the Function's managed identity the "
                    f"{role} role on {scope}", field=field)
            if status == 401:
                return errors.AuthenticationFailed(f"ARM did not accept the Function's token for {action} on {resource}: "
                                                   f"{detail}", field=field)
            if status == 409:
                return errors.Conflict(f"ARM refused {action} on {resource}: {detail}", field=field)
            return errors.UpstreamError(f"ARM answered {status} to {action} on {resource}: {detail}", field=field)
        if isinstance(exc, ClientAuthenticationError):  # the credential could not get an ARM token
            return errors.AuthenticationFailed(
                f"cannot get an Entra ID token for Azure Resource Manager with the Function's identity "
                f"({type(exc).__name__})", field=field)
        if isinstance(exc, ServiceRequestError):
            return errors.UpstreamError(f"Azure Resource Manager unreachable ({self.base_url or 'https://management.azure.com'}) "
                                        f"for {action} on {resource}", field=field)
        return errors.UpstreamError(f"{action} on {resource} failed ({type(exc).__name__})", field=field)


__all__ = ["ArmClients", "ArmResourceId", "Role", "arm_detail", "arm_endpoint_setting"]
