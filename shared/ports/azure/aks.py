"""AKS through Azure Resource Manager: from a managed cluster's resource ID to the endpoint the app talks to.

The Function reaches an AKS cluster with its own managed identity, as kubelogin's managed-identity
login does, with no cluster credential stored anywhere (``../shared/docs/functions-platform.md`` §6):

1. ``GET`` the managed cluster (``ContainerServiceClient.managed_clusters.get``, action
   ``Microsoft.ContainerService/managedClusters/read``) and stop, before anything is written, when it
   cannot be reached that way: stopped (``properties.powerState.code``), or without Microsoft Entra ID
   integration (no ``properties.aadProfile``) unless local accounts were asked for;
2. ``POST listClusterUserCredential`` (``list_cluster_user_credentials``): of the kubeconfig it returns
   (its user runs the ``kubelogin`` exec plugin, which is never run here) only the cluster's ``server``
   and ``certificate-authority-data`` are kept; requests then carry an Entra ID token of the same
   credential for the AKS server application, :data:`AKS_SCOPE` (kubelogin
   ``docs/book/src/concepts/aks.md``: "The access token accessing AKS clusters need to be issued for
   this app"), from :class:`TokenProvider`, refreshed before it expires;
3. with local accounts, ``POST listClusterAdminCredential`` instead: the cluster's static admin
   credential (ARM refuses it with ``400 BadRequest`` when ``disableLocalAccounts`` is true).

A private cluster (``apiServerAccessProfile.enablePrivateCluster``) is reached at its private FQDN, which
only resolves and routes inside its virtual network: the Function needs VNet integration there.

Both calls together take two ARM round trips; :class:`AksClient` keeps the endpoint per process for
``cache_ttl`` seconds (``AKS_ENDPOINT_CACHE_SECONDS``, default 600), so a re-run makes none.

Errors (``shared.errors``, ``field`` = ``clusterResourceId`` unless said otherwise): not found
(``ResourceNotFound``, ``ResourceGroupNotFound``, ``SubscriptionNotFound``) → ``InvalidInput`` (400);
``403 AuthorizationFailed`` → ``AuthenticationFailed`` (502) naming the role to assign (:data:`CLUSTER_USER_ROLE`
on the cluster); ARM refusing the token → ``AuthenticationFailed``; stopped, no Entra ID, local accounts
disabled (``field`` ``localAccounts``) → ``Conflict`` (409); anything else ARM answers, or ARM unreachable →
``UpstreamError`` (502). No message carries a token or a credential of the cluster.

``azure-mgmt-containerservice`` (41.8.0, api-version ``2026-08-01``) is imported lazily (cold start).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from shared import errors
from shared.ports.azure.arm import ArmClients, ArmResourceId, Role, arm_detail, arm_endpoint_setting

log = logging.getLogger(__name__)

#: The AKS Microsoft Entra server application (the same in every cloud; kubelogin docs, concepts/aks.md).
AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
#: Scope of the tokens the Kubernetes API of an Entra-integrated AKS cluster accepts.
AKS_SCOPE = f"{AKS_SERVER_APP_ID}/.default"
#: Seconds before ``expires_on`` at which a cached token is replaced (azure-core's refresh window).
TOKEN_REFRESH_SECONDS = 300.0
#: Seconds a cluster's endpoint and CA are kept per process (app setting ``AKS_ENDPOINT_CACHE_SECONDS``).
DEFAULT_CACHE_SECONDS = 600.0


#: ARM: ``managedClusters/read`` and ``listClusterUserCredential``: what the ARM path needs on the cluster.
CLUSTER_USER_ROLE = Role("Azure Kubernetes Service Cluster User Role", "4abbcc35-e782-43d8-92c5-2d3f1bd2253f")
#: ARM: ``listClusterAdminCredential`` (only with ``localAccounts``).
CLUSTER_ADMIN_ROLE = Role("Azure Kubernetes Service Cluster Admin Role", "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8")
#: Kubernetes (Azure RBAC): every resource of the cluster; what a bootstrap writes (CRDs, Namespace, ...).
RBAC_CLUSTER_ADMIN_ROLE = Role("Azure Kubernetes Service RBAC Cluster Admin", "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b")
#: Kubernetes (Azure RBAC): every resource of a namespace, custom resources included (``managedClusters/*``
#: but namespace and quota writes); on the Flux namespace, what rotation needs (Secrets, the GitRepository).
RBAC_ADMIN_ROLE = Role("Azure Kubernetes Service RBAC Admin", "3498e952-d568-435e-9b2c-8d77e338d7f7")
#: Kubernetes (Azure RBAC): the built-in kinds of a namespace, Secrets included, but no custom resource
#: (learn.microsoft.com/azure/aks/entra-id-authorization): not enough for a Flux GitRepository.
RBAC_WRITER_ROLE = Role("Azure Kubernetes Service RBAC Writer", "a7ffa36f-339b-4b5c-8bdf-e2c188b2c0eb")

@dataclass(frozen=True, eq=False)
class ClusterResourceId(ArmResourceId):
    """An AKS managed cluster's Azure resource ID (``/subscriptions/<id>/resourceGroups/<rg>/providers/
    Microsoft.ContainerService/managedClusters/<name>``), compared case-insensitively as ARM does; see
    :class:`~shared.ports.azure.arm.ArmResourceId`."""

    TYPE = "Microsoft.ContainerService/managedClusters"
    NAME = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
    WHAT = "an AKS cluster"
    HINT = "az aks show --query id"
    FIELD = "clusterResourceId"


@dataclass(frozen=True)
class ManagedClusterInfo:
    """What the app reads of a ManagedCluster (``properties.*`` of the ARM resource).

    ``power_state`` (``Running``/``Stopped``), ``entra`` (``aadProfile`` present), ``azure_rbac``
    (``aadProfile.enableAzureRBAC``), ``disable_local_accounts``, ``private``
    (``apiServerAccessProfile.enablePrivateCluster``), ``fqdn``, ``private_fqdn``, ``oidc_issuer_url``
    (``oidcIssuerProfile.issuerURL`` when enabled) and ``workload_identity``
    (``securityProfile.workloadIdentity.enabled``), for workload identity federation."""

    resource_id: ClusterResourceId
    location: str | None
    power_state: str | None
    kubernetes_version: str | None
    entra: bool
    azure_rbac: bool
    disable_local_accounts: bool
    private: bool
    fqdn: str | None
    private_fqdn: str | None
    oidc_issuer_url: str | None
    workload_identity: bool

    @classmethod
    def from_model(cls, rid: ClusterResourceId, mc: Any) -> "ManagedClusterInfo":
        """From ``azure.mgmt.containerservice.models.ManagedCluster``."""
        p = mc.properties
        if p is None:
            raise errors.UpstreamError(f"ARM returned managed cluster {rid} without properties")
        aad = p.aad_profile
        access = p.api_server_access_profile
        oidc = p.oidc_issuer_profile
        wi = p.security_profile.workload_identity if p.security_profile is not None else None
        return cls(
            resource_id=rid,
            location=mc.location,
            power_state=_text(p.power_state.code) if p.power_state is not None else None,
            kubernetes_version=p.current_kubernetes_version or p.kubernetes_version,
            entra=aad is not None,
            azure_rbac=bool(aad is not None and aad.enable_azure_rbac),
            disable_local_accounts=bool(p.disable_local_accounts),
            private=bool(access is not None and access.enable_private_cluster),
            fqdn=p.fqdn,
            private_fqdn=p.private_fqdn,
            oidc_issuer_url=oidc.issuer_url if oidc is not None and oidc.enabled else None,
            workload_identity=bool(wi is not None and wi.enabled),
        )


@dataclass(frozen=True)
class ClusterEndpoint:
    """Where and how to reach a cluster's Kubernetes API.

    ``server`` (``https://<fqdn>:443``; the private FQDN for a private cluster), ``ca_data`` (PEM bytes of
    the cluster CA), ``info`` (the managed cluster), ``local_accounts`` (True: ``admin_kubeconfig`` holds the
    static admin credential from ``listClusterAdminCredential``; False: authenticate with an Entra ID token
    for :data:`AKS_SCOPE`)."""

    server: str
    ca_data: bytes = field(repr=False)
    info: ManagedClusterInfo
    local_accounts: bool = False
    admin_kubeconfig: str | None = field(default=None, repr=False)

    @property
    def resource_id(self) -> ClusterResourceId:
        return self.info.resource_id


class TokenProvider:
    """``provider()`` → an access token (str) for ``scope`` from ``credential`` (a ``TokenCredential``).

    The token is kept and replaced ``refresh_seconds`` before its ``expires_on`` (or at its
    ``refresh_on``, when the credential gives one), so each request carries a token that is still valid
    when it arrives. Thread-safe; one provider serves every cluster (the audience is the same).
    Raises ``AuthenticationFailed`` when the credential fails (its message is not passed on: it can be
    long and may name local paths) or returns an empty token. ``clock`` → Unix seconds (tests)."""

    def __init__(self, credential, scope: str = AKS_SCOPE, *, refresh_seconds: float = TOKEN_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.time):
        self.credential = credential
        self.scope = scope
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._refresh_on = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._refresh_on:
                self._fetch(now)
            return self._token  # type: ignore[return-value]

    def _fetch(self, now: float) -> None:
        try:
            at = self.credential.get_token(self.scope)
        except errors.FluxOpsError:
            raise
        except Exception as exc:  # azure-identity: CredentialUnavailableError, ClientAuthenticationError, ...
            raise errors.AuthenticationFailed(
                f"cannot get an Entra ID token for {self.scope} with the Function's identity ({type(exc).__name__})") from None
        token = getattr(at, "token", None)
        if not isinstance(token, str) or not token.strip():
            raise errors.AuthenticationFailed(f"the credential returned an empty token for {self.scope}")
        expires_on = float(at.expires_on)
        if expires_on <= now:
            raise errors.AuthenticationFailed(f"the credential returned an expired token for {self.scope}")
        refresh_on = expires_on - self.refresh_seconds
        given = getattr(at, "refresh_on", None)
        if given:
            refresh_on = min(refresh_on, float(given))
        # a short-lived token is still used once rather than fetched again for every request
        self._token, self._expires_on, self._refresh_on = token, expires_on, max(refresh_on, now + 1.0)


def _text(value: Any) -> str | None:
    """An SDK enum member (a ``str`` subclass whose ``str()`` is ``Code.RUNNING``) or text, as the wire's text."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


class AksClient:
    """ARM reads of AKS managed clusters with one ``TokenCredential`` (the Function's managed identity).

    ``base_url``: the ARM endpoint (None: the cloud's, ``AZURE_CLOUD``; https://management.azure.com);
    ``connection_verify``: a CA bundle path for a test ARM; ``cache_ttl``: seconds an endpoint is kept
    (0: never); other keyword arguments go to ``ContainerServiceClient``. One client per subscription,
    created on first use. Thread-safe; concurrent calls for the same cluster make one ARM read."""

    def __init__(self, credential, *, base_url: str | None = None, connection_verify: str | bool | None = None,
                 cache_ttl: float = DEFAULT_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic,
                 **client_kwargs: Any):
        self._arm = ArmClients(credential, _container_service_client, base_url=base_url,
                               connection_verify=connection_verify, **client_kwargs)
        self.credential = credential
        self.base_url = self._arm.base_url
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[tuple[str, bool], tuple[float, ClusterEndpoint]] = {}
        self._key_locks: dict[tuple[str, bool], threading.Lock] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, credential, environ: Mapping[str, str] = os.environ) -> "AksClient":
        """App settings: ``AZURE_RESOURCE_MANAGER_ENDPOINT`` (optional ARM URL, e.g. Azure Stack Hub; default
        the ``AZURE_CLOUD`` cloud's), ``AKS_ENDPOINT_CACHE_SECONDS`` (0-86400, default 600). Raises
        ``SettingError`` naming the setting."""
        from shared.settings import number

        ttl = number(environ, "AKS_ENDPOINT_CACHE_SECONDS", DEFAULT_CACHE_SECONDS, maximum=86400)
        return cls(credential, base_url=arm_endpoint_setting(environ), cache_ttl=ttl)

    def close(self) -> None:
        self._arm.close()

    def _client(self, subscription_id: str):
        return self._arm.client(subscription_id)

    def _map(self, exc: BaseException, rid: ClusterResourceId, action: str, role: Role) -> errors.FluxOpsError:
        return self._arm.map_error(exc, rid, action, field="clusterResourceId", what="managed cluster", role=role,
                                   scope="the cluster")

    # -- reads --------------------------------------------------------------------------------------

    def managed_cluster(self, rid: ClusterResourceId) -> ManagedClusterInfo:
        """``GET`` the managed cluster (one ARM round trip). Raises as the module docstring says."""
        try:
            mc = self._client(rid.subscription_id).managed_clusters.get(rid.resource_group, rid.name)
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._map(exc, rid, "managedClusters/read", CLUSTER_USER_ROLE) from None
        return ManagedClusterInfo.from_model(rid, mc)

    def endpoint(self, rid: ClusterResourceId, *, local_accounts: bool = False) -> ClusterEndpoint:
        """The cluster's endpoint: from the per-process cache, else ``GET`` + ``listClusterUserCredential``
        (or ``listClusterAdminCredential`` with ``local_accounts``): two ARM round trips."""
        key = (rid.key, bool(local_accounts))
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() < cached[0]:
                return cached[1]
            endpoint = self._resolve(rid, bool(local_accounts))
            if self.cache_ttl > 0:
                self._cache[key] = (self._clock() + self.cache_ttl, endpoint)
            return endpoint

    def invalidate(self, rid: ClusterResourceId) -> None:
        """Forget the cached endpoint of ``rid`` (e.g. after its API could not be reached)."""
        with self._lock:
            for local in (False, True):
                self._cache.pop((rid.key, local), None)

    def _resolve(self, rid: ClusterResourceId, local_accounts: bool) -> ClusterEndpoint:
        info = self.managed_cluster(rid)
        if (info.power_state or "").lower() == "stopped":
            raise errors.Conflict(f"managed cluster {rid} is stopped (powerState.code: Stopped); start it "
                                  "(az aks start) and try again", field="clusterResourceId")
        ops = self._client(rid.subscription_id).managed_clusters
        if local_accounts:
            action, role = "listClusterAdminCredential", CLUSTER_ADMIN_ROLE
            try:
                creds = ops.list_cluster_admin_credentials(rid.resource_group, rid.name)
            except Exception as exc:  # noqa: BLE001 - mapped
                status, code, message = arm_detail(exc)
                if status == 400 and "local account" in message.lower():
                    raise errors.Conflict(
                        f"managed cluster {rid} has local accounts disabled (disableLocalAccounts: true), so ARM refused "
                        f"listClusterAdminCredential: {message}; drop localAccounts to reach it with the Function's "
                        "managed identity through Microsoft Entra ID", field="localAccounts") from None
                raise self._map(exc, rid, action, role) from None
        else:
            if not info.entra:
                raise errors.Conflict(
                    f"managed cluster {rid} has no Microsoft Entra ID integration (properties.aadProfile is absent), so "
                    "the Function's managed identity cannot sign in to its API; enable it (az aks update --enable-aad "
                    "--enable-azure-rbac), or set localAccounts to use the cluster's static admin credential "
                    "(listClusterAdminCredential)", field="clusterResourceId")
            action, role = "listClusterUserCredential", CLUSTER_USER_ROLE
            try:
                creds = ops.list_cluster_user_credentials(rid.resource_group, rid.name)
            except Exception as exc:  # noqa: BLE001 - mapped
                raise self._map(exc, rid, action, role) from None
        kubeconfig = _first_kubeconfig(creds, rid, action)
        server, ca_data = _server_and_ca(kubeconfig, rid, action)
        if info.private and info.private_fqdn:
            parts = urlsplit(server)
            if (parts.hostname or "").lower() != info.private_fqdn.lower():
                server = f"https://{info.private_fqdn}:{parts.port or 443}"
        log.info("aks: %s: API server %s%s (%s)", rid, server, " (private cluster)" if info.private else "",
                 "local admin account" if local_accounts else "Entra ID token")
        return ClusterEndpoint(server=server, ca_data=ca_data, info=info, local_accounts=local_accounts,
                               admin_kubeconfig=kubeconfig if local_accounts else None)


def _container_service_client(credential, subscription_id: str, **kwargs: Any):
    from azure.mgmt.containerservice import ContainerServiceClient

    return ContainerServiceClient(credential, subscription_id, **kwargs)


def _first_kubeconfig(creds: Any, rid: ClusterResourceId, action: str) -> str:
    items = list(getattr(creds, "kubeconfigs", None) or [])
    if not items or not getattr(items[0], "value", None):
        raise errors.UpstreamError(f"ARM returned no kubeconfig for {action} on {rid}")
    value = items[0].value
    try:
        return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
    except UnicodeDecodeError:
        raise errors.UpstreamError(f"ARM returned a kubeconfig that is not UTF-8 for {action} on {rid}") from None


def _server_and_ca(kubeconfig: str, rid: ClusterResourceId, action: str) -> tuple[str, bytes]:
    """The current context's cluster ``server`` (https only) and decoded ``certificate-authority-data``.
    Nothing else of the kubeconfig is used (its user runs kubelogin)."""
    import yaml

    bad = errors.UpstreamError(f"ARM returned an unusable kubeconfig for {action} on {rid}")
    try:
        doc = yaml.load(kubeconfig, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        raise bad from None
    if not isinstance(doc, dict):
        raise bad
    ctx_name = doc.get("current-context")
    ctx = next((c.get("context") or {} for c in doc.get("contexts") or [] if isinstance(c, dict) and c.get("name") == ctx_name), None)
    name = (ctx or {}).get("cluster")
    cluster = next((c.get("cluster") or {} for c in doc.get("clusters") or [] if isinstance(c, dict) and c.get("name") == name), None)
    if cluster is None and len(doc.get("clusters") or []) == 1:
        cluster = (doc["clusters"][0] or {}).get("cluster") or {}
    if not isinstance(cluster, dict):
        raise bad
    server = str(cluster.get("server") or "").rstrip("/")
    if urlsplit(server).scheme != "https" or not urlsplit(server).hostname:
        raise errors.UpstreamError(f"ARM returned a kubeconfig whose server is not an https:// URL for {action} on {rid}")
    try:
        ca = base64.b64decode(str(cluster.get("certificate-authority-data") or ""), validate=True)
    except ValueError:
        raise bad from None
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        raise errors.UpstreamError(f"ARM returned a kubeconfig without the cluster CA for {action} on {rid}")
    return server, ca


__all__ = ["AKS_SCOPE", "AKS_SERVER_APP_ID", "AksClient", "CLUSTER_ADMIN_ROLE", "CLUSTER_USER_ROLE", "ClusterEndpoint",
           "ClusterResourceId", "ManagedClusterInfo", "RBAC_ADMIN_ROLE", "RBAC_CLUSTER_ADMIN_ROLE", "RBAC_WRITER_ROLE", "Role",
           "TokenProvider"]
