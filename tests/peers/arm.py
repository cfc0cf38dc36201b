"""Azure Resource Manager test server for AKS: HTTPS on 127.0.0.1, used through the REAL
``azure.mgmt.containerservice.ContainerServiceClient`` (``base_url`` = :attr:`ArmServer.url`,
``connection_verify`` = :attr:`ArmServer.ca_file`).

No ARM emulator is installable here, so this is a small wire-level fake of the three
``Microsoft.ContainerService/managedClusters`` operations the app uses (REST reference:
learn.microsoft.com/rest/api/aks/managed-clusters; shapes as ``azure-mgmt-containerservice`` 41.8.0
deserialises them, api-version ``2026-08-01``):

- ``GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}``
  → the ManagedCluster (``properties.powerState.code``, ``aadProfile``, ``disableLocalAccounts``,
  ``apiServerAccessProfile.enablePrivateCluster``, ``fqdn``, ``privateFQDN``, ``oidcIssuerProfile``,
  ``securityProfile.workloadIdentity``, ...);
- ``POST .../listClusterUserCredential[?format=exec|azure][&server-fqdn=...]`` → ``{"kubeconfigs":
  [{"name": "clusterUser", "value": <base64 kubeconfig>}]}``: for an Entra cluster the kubeconfig ``az aks
  get-credentials`` writes (an ``exec`` user running ``kubelogin get-token ... --server-id 6dae42f8-...``,
  or with ``format=azure`` the legacy ``azure`` auth-provider); for a cluster without Entra ID a client
  certificate user; ``server`` is the Kubernetes API test server (the private FQDN for a private cluster);
- ``POST .../listClusterAdminCredential`` → ``clusterAdmin`` with a client certificate issued by the
  Kubernetes API test server's CA; refused with ARM's ``400 BadRequest`` when ``disableLocalAccounts``.

As ARM does: paths are case-insensitive; ``api-version`` is required and checked; every request needs
``Authorization: Bearer`` with a token of the token peer (:mod:`tests.peers.entra_tokens`) for
``https://management.azure.com`` (401 with ``WWW-Authenticate: Bearer authorization_uri=...,
error="invalid_token"`` otherwise); :meth:`ArmServer.revoke_sessions` makes ARM answer tokens seen so far
with the CAE challenge (``error="insufficient_claims", claims=...``) that the SDK's
``ARMChallengeAuthenticationPolicy`` answers with a new token. Errors are ARM's bodies
``{"error": {"code", "message"}}``: 404 ``SubscriptionNotFound`` / ``ResourceGroupNotFound`` /
``ResourceNotFound``, 403 ``AuthorizationFailed`` (:meth:`ArmServer.forbid`), 409
``OperationNotAllowed`` for credentials of a stopped cluster, 400 ``NoRegisteredProviderFound`` for an
unknown api-version.

It also serves the user-assigned managed identities the app federates (``Microsoft.ManagedIdentity``,
REST reference learn.microsoft.com/rest/api/managedidentity; shapes as ``azure-mgmt-msi`` 7.1.0 deserialises
them, api-version ``2024-11-30``), with the rules of "Considerations and restrictions for federated identity
credentials" (learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations):

- ``GET .../providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}`` → the identity
  (``properties.clientId``, ``principalId``, ``tenantId``);
- ``GET .../userAssignedIdentities/{name}/federatedIdentityCredentials`` → ``{"value": [...]}``;
- ``GET|PUT|DELETE .../federatedIdentityCredentials/{fic}``: ``PUT`` answers 201 when it creates, 200 when it
  updates. Names match ``^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$``; ``issuer`` an https URL, ``subject`` and one
  audience, each at most 600 characters; at most 20 credentials per identity, an issuer and subject pair only
  once (400 ``BadRequest``); writes to one identity while another is in flight are refused with 409
  ``ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity`` (:attr:`UserAssignedIdentity.write_delay`
  widens the window a write holds).

:meth:`ArmServer.add_identity` → :class:`UserAssignedIdentity`; ``forbid`` takes one too (actions
``identity-read``, ``fic-read``, ``fic-write``, ``fic-delete``).

Fixtures: ``arm_server`` (a started :class:`ArmServer`), ``arm_credential`` (a
:class:`~tests.peers.entra_tokens.JwtTestCredential` whose tokens it accepts).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from tests.peers._serving import HttpsPeer, TLSHTTPServer, write_json
from tests.peers.entra_tokens import AKS_SERVER_APP_ID, TENANT_ID, verify_jwt

API_VERSION = "2026-08-01"
API_VERSIONS = frozenset({API_VERSION, "2026-06-01", "2026-04-01", "2025-10-01", "2025-08-01", "2025-05-01"})
#: what ARM accepts as ``aud`` (its 401 ``InvalidAuthenticationTokenAudience`` lists them)
ARM_AUDIENCES = ["https://management.core.windows.net/", "https://management.core.windows.net",
                 "https://management.azure.com/", "https://management.azure.com"]
PROVIDER = "Microsoft.ContainerService"
#: kubelogin's client for interactive logins, as AKS writes it into user kubeconfigs
AZURE_CLI_CLIENT_ID = "80faf920-1908-4b52-b5ef-a8e7bedfc67a"
ACTIONS = {
    "read": "Microsoft.ContainerService/managedClusters/read",
    "listclusterusercredential": "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
    "listclusteradmincredential": "Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action",
}


@dataclass
class ManagedCluster:
    """One AKS cluster as ARM knows it. ``kube`` is the Kubernetes API test server it stands for (its URL,
    CA and client certificates), or ``server`` + ``ca_pem`` name another endpoint."""

    subscription: str
    resource_group: str
    name: str
    kube: Any = None
    server: str | None = None
    ca_pem: bytes | None = None
    location: str = "westeurope"
    entra: bool = True
    azure_rbac: bool = True
    power_state: str = "Running"
    disable_local_accounts: bool = False
    private: bool = False
    private_fqdn: str | None = None
    oidc_issuer: bool = True
    workload_identity: bool = True
    kubernetes_version: str = "1.36.2"
    forbidden: set = field(default_factory=set)  # actions answered 403 (ACTIONS keys)

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourcegroups/{self.resource_group}/providers/"
                f"{PROVIDER}/managedClusters/{self.name}")

    @property
    def endpoint(self) -> str:
        return (self.server or self.kube.url).rstrip("/")

    @property
    def ca(self) -> bytes:
        return self.ca_pem if self.ca_pem is not None else self.kube.ca_pem

    def fqdns(self) -> tuple[str, str | None]:
        host = urlsplit(self.endpoint).hostname or ""
        public = f"{self.name}-dns-{uuid.uuid5(uuid.NAMESPACE_URL, self.id).hex[:8]}.hcp.{self.location}.azmk8s.io"
        if self.private:
            return public, self.private_fqdn or host
        return host, None

    def to_json(self) -> dict:
        fqdn, private_fqdn = self.fqdns()
        props: dict[str, Any] = {
            "provisioningState": "Succeeded" if self.power_state == "Running" else "Stopped",
            "powerState": {"code": self.power_state},
            "kubernetesVersion": self.kubernetes_version.rsplit(".", 1)[0],
            "currentKubernetesVersion": self.kubernetes_version,
            "dnsPrefix": f"{self.name}-dns",
            "fqdn": fqdn,
            "azurePortalFQDN": fqdn.replace(".hcp.", ".portal.hcp."),
            "agentPoolProfiles": [{"name": "system", "count": 1, "vmSize": "Standard_D2s_v5", "mode": "System",
                                   "osType": "Linux", "powerState": {"code": self.power_state}}],
            "nodeResourceGroup": f"MC_{self.resource_group}_{self.name}_{self.location}",
            "enableRBAC": True,
            "supportPlan": "KubernetesOfficial",
            "disableLocalAccounts": self.disable_local_accounts,
            "oidcIssuerProfile": {"enabled": self.oidc_issuer},
            "securityProfile": {"workloadIdentity": {"enabled": self.workload_identity}} if self.workload_identity else {},
            "apiServerAccessProfile": {"enablePrivateCluster": self.private},
        }
        if self.private:
            props["privateFQDN"] = private_fqdn
            props["apiServerAccessProfile"].update({"privateDNSZone": "system", "enablePrivateClusterPublicFQDN": True})
        if self.entra:
            props["aadProfile"] = {"managed": True, "enableAzureRBAC": self.azure_rbac, "tenantID": TENANT_ID}
        if self.oidc_issuer:
            props["oidcIssuerProfile"]["issuerURL"] = (
                f"https://{self.location}.oic.prod-aks.azure.com/{TENANT_ID}/{uuid.uuid5(uuid.NAMESPACE_URL, self.id)}/")
        return {
            "id": self.id,
            "location": self.location,
            "name": self.name,
            "type": f"{PROVIDER}/ManagedClusters",
            "sku": {"name": "Base", "tier": "Free"},
            "identity": {"type": "SystemAssigned", "principalId": str(uuid.uuid4()), "tenantId": TENANT_ID},
            "properties": props,
        }

    # kubeconfigs ---------------------------------------------------------------------------------
    def _kubeconfig(self, user_name: str, user: dict) -> str:
        fqdn, private_fqdn = self.fqdns()
        server = self.endpoint
        if self.private:  # the private FQDN, with the test server's port
            parts = urlsplit(server)
            server = f"https://{private_fqdn}:{parts.port or 443}"
        doc = {
            "apiVersion": "v1",
            "clusters": [{"cluster": {"certificate-authority-data": base64.b64encode(self.ca).decode(),
                                      "server": server}, "name": self.name}],
            "contexts": [{"context": {"cluster": self.name, "user": user_name}, "name": self.name}],
            "current-context": self.name,
            "kind": "Config",
            "preferences": {},
            "users": [{"name": user_name, "user": user}],
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def _cert_user(self, common_name: str, organization: str) -> dict:
        if self.kube is None:
            raise _error(500, "InternalServerError", "test server: no Kubernetes API test server to issue certificates")
        leaf = self.kube.ca.issue_cert(common_name, common_name=common_name, organization_name=organization)
        return {"client-certificate-data": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
                "client-key-data": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
                "token": uuid.uuid4().hex}

    def user_kubeconfig(self, fmt: str | None) -> str:
        user_name = f"clusterUser_{self.resource_group}_{self.name}"
        if not self.entra:
            return self._kubeconfig(user_name, self._cert_user("masterclient", "system:masters"))
        if fmt == "azure":
            return self._kubeconfig(user_name, {"auth-provider": {"name": "azure", "config": {
                "apiserver-id": AKS_SERVER_APP_ID, "client-id": AZURE_CLI_CLIENT_ID, "config-mode": "1",
                "environment": "AzurePublicCloud", "tenant-id": TENANT_ID}}})
        return self._kubeconfig(user_name, {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "args": ["get-token", "--environment", "AzurePublicCloud", "--server-id", AKS_SERVER_APP_ID,
                     "--client-id", AZURE_CLI_CLIENT_ID, "--tenant-id", TENANT_ID, "--login", "devicecode"],
            "command": "kubelogin",
            "env": None,
            "installHint": "\nkubelogin is not installed which is required to connect to AAD enabled cluster.\n\n"
                           "To learn more, please go to https://aka.ms/aks/kubelogin\n",
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": False}})

    def admin_kubeconfig(self) -> str:
        return self._kubeconfig(f"clusterAdmin_{self.resource_group}_{self.name}",
                                self._cert_user("masterclient", "system:masters"))


MSI_PROVIDER = "Microsoft.ManagedIdentity"
MSI_API_VERSION = "2024-11-30"
MSI_API_VERSIONS = frozenset({MSI_API_VERSION, "2023-07-31-preview", "2023-01-31", "2022-01-31-preview",
                              "2021-09-30-preview", "2018-11-30"})
MSI_ACTIONS = {
    "identity-read": "Microsoft.ManagedIdentity/userAssignedIdentities/read",
    "fic-read": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
    "fic-write": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
    "fic-delete": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
}
MAX_FEDERATED_CREDENTIALS = 20
_FIC_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}$")


@dataclass
class UserAssignedIdentity:
    """A user-assigned managed identity as ARM knows it, with its federated identity credentials
    (``federated``: lower-case name → the stored JSON resource, in creation order)."""

    subscription: str
    resource_group: str
    name: str
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    location: str = "westeurope"
    federated: dict = field(default_factory=dict)
    forbidden: set = field(default_factory=set)  # MSI_ACTIONS keys answered 403
    write_delay: float = 0.05  # seconds a credential write holds the identity (concurrent writes: 409)
    writing: bool = False

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourcegroups/{self.resource_group}/providers/"
                f"{MSI_PROVIDER}/userAssignedIdentities/{self.name}")

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "type": f"{MSI_PROVIDER}/userAssignedIdentities",
                "location": self.location, "tags": {},
                "properties": {"tenantId": TENANT_ID, "principalId": self.principal_id, "clientId": self.client_id,
                               "isolationScope": "None"}}

    def credentials(self) -> list[dict]:
        """The stored federated credentials as ``{"name", "issuer", "subject", "audiences"}`` (for assertions)."""
        return [{"name": f["name"], **f["properties"]} for f in self.federated.values()]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as ARM saw it: ``action`` is ``read``, ``listclusterusercredential``,
    ``listclusteradmincredential``, one of :data:`MSI_ACTIONS` or ``fic-list``, or None; ``oid`` the caller's object id when the token was accepted."""

    method: str
    path: str
    query: dict
    status: int
    action: str | None
    oid: str | None


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, code: str, message: str, headers: dict | None = None) -> _Reply:
    return _Reply(status, {"error": {"code": code, "message": message}}, headers)


def _forbidden(oid: str | None, action: str, scope: str) -> _Reply:
    return _error(403, "AuthorizationFailed",
                  f"The client '{oid}' with object id '{oid}' does not have authorization to perform action "
                  f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently "
                  "granted, please refresh your credentials.")


_CHALLENGE = 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="{}"'


class ArmServer(HttpsPeer):
    """ARM for managed clusters on ``https://127.0.0.1:<port>``. See the module docstring.

    ``add_cluster(...)`` → :class:`ManagedCluster` (its ``id`` is the resource ID; ``ManagedCluster`` fields
    can be changed afterwards: ``power_state``, ``entra``, ``private``...); ``add_resource_group(sub, rg)``;
    ``forbid(cluster, *actions)``; ``revoke_sessions()``; ``request_log``; ``count(action)``.
    """

    def __init__(self, *, subscription: str = "00000000-0000-0000-0000-0000000000a1"):
        self.subscription = subscription
        self.request_log: list[LoggedRequest] = []
        self._groups: dict[tuple[str, str], str] = {}  # (sub, rg lower) -> rg as created
        self._clusters: dict[tuple[str, str, str], ManagedCluster] = {}
        self._identities: dict[tuple[str, str, str], UserAssignedIdentity] = {}
        self._seen_tokens: set[str] = set()
        self._revoked: set[str] = set()
        self._lock = threading.RLock()

    name = "arm-test-server"

    def _server(self, ssl_context: ssl.SSLContext) -> "_HTTPServer":
        return _HTTPServer(("127.0.0.1", 0), _Handler, ssl_context, self)

    # test helpers ------------------------------------------------------------------------------
    def add_resource_group(self, subscription: str, resource_group: str) -> None:
        with self._lock:
            self._groups.setdefault((subscription.lower(), resource_group.lower()), resource_group)

    def add_cluster(self, name: str, *, resource_group: str = "rg-fleet", subscription: str | None = None,
                    **kwargs) -> ManagedCluster:
        sub = subscription or self.subscription
        self.add_resource_group(sub, resource_group)
        mc = ManagedCluster(sub, resource_group, name, **kwargs)
        with self._lock:
            self._clusters[(sub.lower(), resource_group.lower(), name.lower())] = mc
        return mc

    def add_identity(self, name: str, *, resource_group: str = "rg-identities", subscription: str | None = None,
                     **kwargs) -> UserAssignedIdentity:
        sub = subscription or self.subscription
        self.add_resource_group(sub, resource_group)
        identity = UserAssignedIdentity(sub, resource_group, name, **kwargs)
        with self._lock:
            self._identities[(sub.lower(), resource_group.lower(), name.lower())] = identity
        return identity

    def forbid(self, resource, *actions: str) -> None:
        """Answer ``403 AuthorizationFailed`` to these actions on ``resource`` (a :class:`ManagedCluster` or a
        :class:`UserAssignedIdentity`; all of its actions when none are given)."""
        resource.forbidden.update(actions or (MSI_ACTIONS if isinstance(resource, UserAssignedIdentity) else ACTIONS).keys())

    def revoke_sessions(self) -> None:
        """CAE: every token presented so far gets the ``insufficient_claims`` challenge from now on."""
        with self._lock:
            self._revoked |= self._seen_tokens

    def count(self, action: str | None = None) -> int:
        """Requests answered (any status) for ``action`` (None: all)."""
        with self._lock:
            return sum(1 for r in self.request_log if action is None or r.action == action)

    # dispatch -------------------------------------------------------------------------------------
    def _authenticate(self, authorization: str | None) -> str:
        import jwt

        if not authorization:
            raise _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                         {"WWW-Authenticate": _CHALLENGE.format(
                             "The authentication failed because of missing 'Authorization' header.")})
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is provided "
                         "in an invalid format.", {"WWW-Authenticate": _CHALLENGE.format("The access token is invalid.")})
        token = token.strip()
        try:
            claims = verify_jwt(token, audience=ARM_AUDIENCES)
        except jwt.ExpiredSignatureError:
            raise _error(401, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current "
                         "UTC time.", {"WWW-Authenticate": _CHALLENGE.format("The access token has expired.")}) from None
        except jwt.InvalidAudienceError:
            raise _error(401, "InvalidAuthenticationTokenAudience", "The access token has been obtained for wrong "
                         "audience or resource. It should exactly match with one of the allowed audiences "
                         "'https://management.core.windows.net/','https://management.core.windows.net',"
                         "'https://management.azure.com/','https://management.azure.com'.",
                         {"WWW-Authenticate": _CHALLENGE.format("The access token has been obtained for wrong audience.")}) from None
        except jwt.PyJWTError:
            raise _error(401, "InvalidAuthenticationToken", "The access token is invalid.",
                         {"WWW-Authenticate": _CHALLENGE.format("The access token is invalid.")}) from None
        with self._lock:
            if token in self._revoked:
                claims_challenge = base64.urlsafe_b64encode(json.dumps(
                    {"access_token": {"nbf": {"essential": True, "value": str(int(time.time()))}}}).encode()).decode().rstrip("=")
                raise _error(401, "InvalidAuthenticationToken", "The access token has been revoked.", {
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", '
                                        f'error="insufficient_claims", claims="{claims_challenge}"'})
            self._seen_tokens.add(token)
        return str(claims.get("oid"))

    def _handle(self, method: str, path: str, query: dict, authorization: str | None,
                body: bytes = b"") -> tuple[_Reply, str | None, str | None]:
        action: str | None = None
        oid: str | None = None
        try:
            oid = self._authenticate(authorization)
            parts = [unquote(p) for p in path.strip("/").split("/")]
            low = [p.lower() for p in parts]
            if len(low) > 5 and low[4] == "providers" and low[5] == MSI_PROVIDER.lower():
                return self._handle_msi(method, parts, low, query, body, oid)
            if len(parts) < 8 or low[0] != "subscriptions" or low[2] != "resourcegroups" or low[4] != "providers" \
                    or low[5] != PROVIDER.lower() or low[6] != "managedclusters" or len(parts) > 9:
                raise _error(404, "InvalidResourceType", f"The resource type could not be found in the namespace for "
                             f"api version '{query.get('api-version')}'. ({method} {path} is not served by the ARM test server)")
            action = "read" if len(parts) == 8 else low[8]
            if action not in ACTIONS or (action == "read") != (method == "GET") or (action != "read" and method != "POST"):
                raise _error(405 if action in ACTIONS else 404, "InvalidResourceType" if action not in ACTIONS else "MethodNotAllowed",
                             f"{method} {path} is not supported by the ARM test server.")
            mc, sub, rg, name = self._locate(parts, query, API_VERSIONS, "managedClusters", self._clusters)
            scope = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROVIDER}/managedClusters/{name}"
            if mc is not None and action in mc.forbidden:
                raise _forbidden(oid, ACTIONS[action], scope)
            if mc is None:
                raise _error(404, "ResourceNotFound", f"The Resource '{PROVIDER}/managedClusters/{name}' under resource "
                             f"group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
            if action == "read":
                return _Reply(200, mc.to_json()), action, oid
            if mc.power_state != "Running":
                raise _error(409, "OperationNotAllowed", "Operation is not allowed because the managed cluster is in "
                             f"{mc.power_state.lower()} state. Start the cluster first.")
            if action == "listclusteradmincredential":
                if mc.disable_local_accounts:
                    raise _error(400, "BadRequest", "Getting static credential is not allowed because this cluster is "
                                 "set to disable local accounts.")
                kubeconfig, cred_name = mc.admin_kubeconfig(), "clusterAdmin"
            else:
                fmt = query.get("format")
                if fmt not in (None, "exec", "azure"):
                    raise _error(400, "InvalidParameter", f"format '{fmt}' is not supported; use 'azure' or 'exec'.")
                kubeconfig, cred_name = mc.user_kubeconfig(fmt), "clusterUser"
            return _Reply(200, {"kubeconfigs": [{"name": cred_name, "value": base64.b64encode(kubeconfig.encode()).decode()}]}), action, oid
        except _Reply as reply:
            return reply, action, oid


    def _locate(self, parts: list[str], query: dict, versions: frozenset, type_name: str, resources: dict):
        """Check ``api-version``, the subscription and the resource group as ARM does (400, 404), then
        ``(resource or None, subscription, resource group, name)``."""
        api_version = query.get("api-version")
        if not api_version:
            raise _error(400, "MissingApiVersionParameter",
                         "The api-version query parameter (?api-version=) is required for all requests.")
        if api_version not in versions:
            raise _error(400, "NoRegisteredProviderFound",
                         f"No registered resource provider found for location 'westeurope' and API version "
                         f"'{api_version}' for type '{type_name}'. The supported api-versions are "
                         f"'{', '.join(sorted(versions))}'.")
        sub, rg, name = parts[1], parts[3], parts[7]
        with self._lock:
            if not any(s == sub.lower() for s, _ in self._groups):
                raise _error(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
            if (sub.lower(), rg.lower()) not in self._groups:
                raise _error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
            return resources.get((sub.lower(), rg.lower(), name.lower())), sub, rg, name

    # Microsoft.ManagedIdentity ----------------------------------------------------------------------
    def _msi_action(self, method: str, low: list[str]) -> str:
        if len(low) == 8 and method == "GET":
            return "identity-read"
        if len(low) == 9 and low[8] == "federatedidentitycredentials" and method == "GET":
            return "fic-list"
        if len(low) == 10 and low[8] == "federatedidentitycredentials":
            action = {"GET": "fic-read", "PUT": "fic-write", "DELETE": "fic-delete"}.get(method)
            if action:
                return action
        raise _error(405 if len(low) in (8, 9, 10) else 404, "MethodNotAllowed" if len(low) in (8, 9, 10) else "InvalidResourceType",
                     f"{method} {'/'.join(low)} is not supported by the ARM test server.")

    def _handle_msi(self, method: str, parts: list[str], low: list[str], query: dict, body: bytes,
                    oid: str | None) -> tuple[_Reply, str | None, str | None]:
        action: str | None = None
        try:
            if len(low) < 8 or low[0] != "subscriptions" or low[2] != "resourcegroups" or low[6] != "userassignedidentities":
                raise _error(404, "InvalidResourceType", "The resource type could not be found in the namespace "
                             f"'{MSI_PROVIDER}' for api version '{query.get('api-version')}'.")
            action = self._msi_action(method, low)
            identity, sub, rg, name = self._locate(parts, query, MSI_API_VERSIONS, "userAssignedIdentities", self._identities)
            scope = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{MSI_PROVIDER}/userAssignedIdentities/{name}"
            needed = "fic-read" if action == "fic-list" else action
            if identity is not None and needed in identity.forbidden:
                raise _forbidden(oid, MSI_ACTIONS[needed], scope)
            if identity is None:
                raise _error(404, "ResourceNotFound", f"The Resource '{MSI_PROVIDER}/userAssignedIdentities/{name}' under "
                             f"resource group '{rg}' was not found. For more details please go to "
                             "https://aka.ms/ARMResourceNotFoundFix")
            if action == "identity-read":
                return _Reply(200, identity.to_json()), action, oid
            if action == "fic-list":
                with self._lock:
                    return _Reply(200, {"value": list(identity.federated.values())}), action, oid
            fic = parts[9]
            with self._lock:
                current = identity.federated.get(fic.lower())
            if action == "fic-read":
                if current is None:
                    raise _error(404, "ResourceNotFound", f"The Resource '{MSI_PROVIDER}/userAssignedIdentities/{name}/"
                                 f"federatedIdentityCredentials/{fic}' under resource group '{rg}' was not found.")
                return _Reply(200, current), action, oid
            with self._lock:  # a write: one at a time per identity, as the service demands
                if identity.writing:
                    raise _error(409, "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
                                 "Too many Federated Identity Credentials are written concurrently for the managed "
                                 f"identity {scope}. Concurrent Federated Identity Credentials writes under the same "
                                 "managed identity are not supported.")
                identity.writing = True
            try:
                time.sleep(identity.write_delay)
                if action == "fic-delete":
                    with self._lock:
                        found = identity.federated.pop(fic.lower(), None)
                    return _Reply(200 if found else 204), action, oid
                return self._put_fic(identity, fic, current, body), action, oid
            finally:
                with self._lock:
                    identity.writing = False
        except _Reply as reply:
            return reply, action, oid

    def _put_fic(self, identity: UserAssignedIdentity, fic: str, current: dict | None, body: bytes) -> _Reply:
        if not _FIC_NAME.fullmatch(fic):
            raise _error(400, "BadRequest", f"The federated identity credential name '{fic}' is invalid: it must start "
                         "with a letter or number and have 3 to 120 letters, numbers, '-' or '_'.")
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            raise _error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.") from None
        props = doc.get("properties") if isinstance(doc, dict) else None
        if not isinstance(props, dict):
            raise _error(400, "BadRequest", "The request body must have properties.")
        issuer, subject, audiences = props.get("issuer"), props.get("subject"), props.get("audiences")
        if not isinstance(issuer, str) or not issuer.startswith("https://") or len(issuer) > 600:
            raise _error(400, "BadRequest", "Issuer must be a valid https URL of at most 600 characters.")
        if not isinstance(subject, str) or not subject or len(subject) > 600:
            raise _error(400, "BadRequest", "Subject is required and must be at most 600 characters.")
        if (not isinstance(audiences, list) or len(audiences) != 1 or not isinstance(audiences[0], str)
                or not audiences[0] or len(audiences[0]) > 600):
            raise _error(400, "BadRequest", "Audiences must have exactly one value of at most 600 characters.")
        with self._lock:
            for key, other in identity.federated.items():
                if key != fic.lower() and (other["properties"]["issuer"], other["properties"]["subject"]) == (issuer, subject):
                    raise _error(400, "BadRequest", f"Federated identity credential '{other['name']}' of this identity "
                                 "already has the same issuer and subject.")
            if current is None and len(identity.federated) >= MAX_FEDERATED_CREDENTIALS:
                raise _error(400, "BadRequest", f"Too many federated identity credentials: an identity can have at most "
                             f"{MAX_FEDERATED_CREDENTIALS}.")
            name = current["name"] if current is not None else fic
            stored = {"id": f"{identity.id}/federatedIdentityCredentials/{name}", "name": name,
                      "type": f"{MSI_PROVIDER}/userAssignedIdentities/federatedIdentityCredentials",
                      "properties": {"issuer": issuer, "subject": subject, "audiences": list(audiences)}}
            identity.federated[fic.lower()] = stored
        return _Reply(201 if current is None else 200, stored)


class _HTTPServer(TLSHTTPServer):
    def __init__(self, addr, handler, ssl_context: ssl.SSLContext, arm: ArmServer):
        super().__init__(addr, handler, ssl_context)
        self.arm = arm


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ArmTestServer/1.0"
    timeout = 10
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _serve(self) -> None:
        arm: ArmServer = self.server.arm
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            reply, action, oid = arm._handle(self.command, split.path, query, self.headers.get("Authorization"), body)
        except Exception as exc:  # a bug in the fake: answer 500 so the test sees it
            reply, action, oid = _error(500, "InternalServerError", f"test server bug: {type(exc).__name__}: {exc}"), None, None
        with arm._lock:
            arm.request_log.append(LoggedRequest(self.command, split.path, query, reply.status, action, oid))
        write_json(self, reply.status, reply.body, {"x-ms-correlation-request-id": str(uuid.uuid4()), **reply.headers})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


@pytest.fixture
def arm_server():
    """A started :class:`ArmServer` (fresh per test)."""
    with ArmServer() as server:
        yield server


@pytest.fixture
def arm_credential():
    """A token credential whose tokens the ARM test server (and the Kubernetes API test server in its Entra
    mode) accept: the Function's managed identity."""
    from tests.peers.entra_tokens import JwtTestCredential

    return JwtTestCredential()
