"""User-assigned managed identities through Azure Resource Manager: reading one, and the federated identity
credentials that let a Kubernetes service account of an AKS cluster sign in as it (workload identity).

A Flux controller on AKS gets Entra ID tokens of a user-assigned identity when its service account carries
``azure.workload.identity/client-id`` and the identity trusts the cluster's OIDC issuer for that service account:
a federated identity credential with ``issuer`` = the cluster's ``oidcIssuerProfile.issuerURL``, ``subject`` =
``system:serviceaccount:<namespace>:<service account>`` and ``audiences`` = ``["api://AzureADTokenExchange"]``
(learn.microsoft.com/azure/aks/workload-identity-deploy-cluster, "Create the federated identity credential";
fluxcd.io/flux/integrations/azure, "At the controller level"). :class:`MsiClient` does, with
``azure-mgmt-msi`` (7.1.0, api-version ``2024-11-30``, imported lazily for cold start):

* :meth:`~MsiClient.identity`: ``GET`` the identity (its ``clientId``, ``principalId``, ``tenantId``);
* :meth:`~MsiClient.federated_credentials`: list its federated credentials;
* :meth:`~MsiClient.ensure`: create or update the wanted ones, one write at a time (the service refuses
  concurrent writes to one identity with ``409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity``;
  such a 409 is retried), leaving one that is already right untouched, so a re-run writes nothing. The rules of
  learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations hold: at most
  :data:`MAX_FEDERATED_CREDENTIALS` per identity, an issuer and subject pair only once (an existing credential of
  another name for the same pair is taken over, not doubled), names matching :data:`NAME_PATTERN`.

Errors (``shared.errors``; ``field`` is the request field naming the identity): not found → ``InvalidInput``;
``403 AuthorizationFailed`` → ``AuthenticationFailed`` (502) naming :data:`MANAGED_IDENTITY_CONTRIBUTOR` on the
identity; ARM refusing the token → ``AuthenticationFailed``; too many credentials → ``Conflict``; anything else →
``UpstreamError``. No message carries a token.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from shared import errors
from shared.ports.azure.arm import ArmClients, ArmResourceId, Role, arm_detail, arm_endpoint_setting

log = logging.getLogger(__name__)

#: Built-in role: read user-assigned identities and write their federated identity credentials
#: (``Microsoft.ManagedIdentity/userAssignedIdentities/*``), on the identity itself.
MANAGED_IDENTITY_CONTRIBUTOR = Role("Managed Identity Contributor", "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59")
#: The audience Entra ID's token exchange expects of a Kubernetes service account token.
AUDIENCE = "api://AzureADTokenExchange"
#: Federated identity credentials one user-assigned identity can hold.
MAX_FEDERATED_CREDENTIALS = 20
#: Names of federated identity credentials (the ``azure-mgmt-msi`` path pattern).
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}$")
#: Attempts of one write refused because another write to the identity was in flight.
CONCURRENT_WRITE_ATTEMPTS = 4

@dataclass(frozen=True, eq=False)
class IdentityResourceId(ArmResourceId):
    """A user-assigned managed identity's resource ID, compared case-insensitively as ARM does; see
    :class:`~shared.ports.azure.arm.ArmResourceId`."""

    TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
    NAME = r"[a-z0-9][a-z0-9_-]{2,127}"
    WHAT = "a user-assigned managed identity"
    HINT = "az identity show --query id"
    FIELD = "workloadIdentity.identityResourceId"


@dataclass(frozen=True)
class IdentityInfo:
    """What the app reads of a user-assigned identity: ``client_id`` (what service accounts are annotated
    with), ``principal_id`` (its object ID, for role assignments), ``tenant_id``, ``location``."""

    resource_id: IdentityResourceId
    client_id: str | None
    principal_id: str | None
    tenant_id: str | None
    location: str | None


@dataclass(frozen=True)
class FederatedCredential:
    """One federated identity credential: ``name``, ``issuer`` (an OIDC issuer URL), ``subject``
    (``system:serviceaccount:<ns>:<name>`` for a Kubernetes service account) and ``audiences``."""

    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (AUDIENCE,)

    def same_trust(self, other: "FederatedCredential") -> bool:
        """Whether ``other`` trusts the same tokens (issuer, subject and audiences; names aside)."""
        return (self.issuer, self.subject, tuple(self.audiences)) == (other.issuer, other.subject, tuple(other.audiences))

    def to_dict(self) -> dict:
        return {"name": self.name, "issuer": self.issuer, "subject": self.subject, "audiences": list(self.audiences)}


@dataclass(frozen=True)
class Ensured:
    """What :meth:`MsiClient.ensure` did for one wanted credential: ``credential`` as it now is on the identity
    (its name may be that of an existing credential for the same issuer and subject), ``action``
    (``created``, ``updated`` or ``unchanged``)."""

    credential: FederatedCredential
    action: str

    def to_dict(self) -> dict:
        return {**self.credential.to_dict(), "action": self.action}


def _same_subject(a: FederatedCredential, b: FederatedCredential) -> bool:
    return (a.issuer, a.subject) == (b.issuer, b.subject)


def plan(wanted: Sequence[FederatedCredential], existing: Sequence[FederatedCredential],
         field: str = "workloadIdentity.identityResourceId") -> list[tuple[FederatedCredential, str]]:
    """What :meth:`MsiClient.ensure` will do, without any call: per wanted credential, the credential to write
    (or keep) and ``create``, ``update`` or ``unchanged``. An existing credential of another name that already
    trusts the issuer and subject is kept in its place (the service allows a pair once per identity). Raises
    ``Conflict(field)`` when the identity would hold more than :data:`MAX_FEDERATED_CREDENTIALS`."""
    by_name = {c.name.lower(): c for c in existing}
    out: list[tuple[FederatedCredential, str]] = []
    creates = 0
    for want in wanted:
        if not NAME_PATTERN.fullmatch(want.name):
            raise ValueError(f"{want.name!r} is not a federated identity credential name")
        current = by_name.get(want.name.lower())
        if current is None:
            current = next((c for c in existing if _same_subject(c, want)), None)
        if current is None:
            out.append((want, "create"))
            creates += 1
            continue
        target = FederatedCredential(current.name, want.issuer, want.subject, tuple(want.audiences))
        out.append((target, "unchanged" if current.same_trust(want) else "update"))
    if len(existing) + creates > MAX_FEDERATED_CREDENTIALS:
        raise errors.Conflict(
            f"the identity has {len(existing)} federated identity credentials and needs {creates} more; an identity "
            f"holds at most {MAX_FEDERATED_CREDENTIALS}: delete unused ones (az identity federated-credential delete) "
            "or use another identity", field=field)
    return out


class MsiClient:
    """ARM calls on user-assigned identities with one ``TokenCredential`` (the Function's managed identity).

    ``base_url``: the ARM endpoint (None: the cloud's); ``connection_verify``: a CA bundle path for a test ARM;
    other keyword arguments go to ``ManagedServiceIdentityClient``. One client per subscription, created on first
    use. ``sleep`` waits between attempts of a write refused as concurrent."""

    def __init__(self, credential, *, base_url: str | None = None, connection_verify: str | bool | None = None,
                 sleep: Callable[[float], None] = time.sleep, **client_kwargs: Any):
        self._arm = ArmClients(credential, _msi_client, base_url=base_url, connection_verify=connection_verify,
                               **client_kwargs)
        self.credential = credential
        self.base_url = self._arm.base_url
        self._sleep = sleep

    @classmethod
    def from_settings(cls, credential, environ: Mapping[str, str] = os.environ) -> "MsiClient":
        """App setting ``AZURE_RESOURCE_MANAGER_ENDPOINT`` (optional, as for AKS). Raises ``SettingError``."""
        return cls(credential, base_url=arm_endpoint_setting(environ))

    def close(self) -> None:
        self._arm.close()

    def _client(self, subscription_id: str):
        return self._arm.client(subscription_id)

    def _map(self, exc: BaseException, rid: IdentityResourceId, action: str, field: str) -> errors.FluxOpsError:
        return self._arm.map_error(exc, rid, action, field=field, what="user-assigned identity",
                                   role=MANAGED_IDENTITY_CONTRIBUTOR, scope="the identity")

    # -- reads --------------------------------------------------------------------------------------

    def identity(self, rid: IdentityResourceId, *, field: str = "workloadIdentity.identityResourceId") -> IdentityInfo:
        """``GET`` the identity (``userAssignedIdentities/read``)."""
        try:
            ident = self._client(rid.subscription_id).user_assigned_identities.get(rid.resource_group, rid.name)
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._map(exc, rid, "userAssignedIdentities/read", field) from None
        return IdentityInfo(rid, ident.client_id, ident.principal_id, ident.tenant_id, ident.location)

    def federated_credentials(self, rid: IdentityResourceId, *,
                              field: str = "workloadIdentity.identityResourceId") -> list[FederatedCredential]:
        """Every federated identity credential of the identity (``federatedIdentityCredentials/read``)."""
        try:
            items = list(self._client(rid.subscription_id).federated_identity_credentials.list(rid.resource_group, rid.name))
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._map(exc, rid, "federatedIdentityCredentials/read", field) from None
        return [FederatedCredential(f.name, f.issuer, f.subject, tuple(f.audiences or ())) for f in items]

    # -- writes -------------------------------------------------------------------------------------

    def ensure(self, rid: IdentityResourceId, wanted: Iterable[FederatedCredential], *,
               existing: Sequence[FederatedCredential] | None = None,
               field: str = "workloadIdentity.identityResourceId") -> list[Ensured]:
        """Create or update ``wanted`` on the identity, in order, one write at a time; a credential that is already
        right is not written. ``existing`` is the identity's current list (read here when None). Raises as the
        module docstring says; what was written before a failure stays (a re-run finds it right)."""
        wanted = list(wanted)
        if existing is None:
            existing = self.federated_credentials(rid, field=field)
        steps = plan(wanted, existing, field)
        out: list[Ensured] = []
        for credential, step in steps:
            if step == "unchanged":
                out.append(Ensured(credential, "unchanged"))
                continue
            self._put(rid, credential, field)
            log.info("msi: %s federated identity credential %s on %s (subject %s)",
                     "created" if step == "create" else "updated", credential.name, rid, credential.subject)
            out.append(Ensured(credential, "created" if step == "create" else "updated"))
        return out

    def _put(self, rid: IdentityResourceId, credential: FederatedCredential, field: str) -> None:
        from azure.core.exceptions import HttpResponseError
        from azure.mgmt.msi.v2024_11_30.models import FederatedIdentityCredential

        body = FederatedIdentityCredential(issuer=credential.issuer, subject=credential.subject,
                                           audiences=list(credential.audiences))
        ops = self._client(rid.subscription_id).federated_identity_credentials
        for attempt in range(1, CONCURRENT_WRITE_ATTEMPTS + 1):
            try:
                ops.create_or_update(rid.resource_group, rid.name, credential.name, body)
                return
            except HttpResponseError as exc:
                status, code, _ = arm_detail(exc)
                if status == 409 and code.startswith("ConcurrentFederatedIdentityCredentialsWrites") \
                        and attempt < CONCURRENT_WRITE_ATTEMPTS:
                    self._sleep(0.5 * attempt)  # another writer (another bootstrap) holds the identity
                    continue
                raise self._map(exc, rid, "federatedIdentityCredentials/write", field) from None
            except Exception as exc:  # noqa: BLE001 - mapped
                raise self._map(exc, rid, "federatedIdentityCredentials/write", field) from None


def _msi_client(credential, subscription_id: str, **kwargs: Any):
    from azure.mgmt.msi import ManagedServiceIdentityClient

    return ManagedServiceIdentityClient(credential, subscription_id, **kwargs)


__all__ = ["AUDIENCE", "Ensured", "FederatedCredential", "IdentityInfo", "IdentityResourceId", "MANAGED_IDENTITY_CONTRIBUTOR",
           "MAX_FEDERATED_CREDENTIALS", "MsiClient", "NAME_PATTERN", "plan"]
