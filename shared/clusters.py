"""Cluster references, and the one place that turns them into a :class:`shared.ports.kube.Cluster`.

A bootstrap request, the CLI and a registry record name their cluster in one of two ways, exactly one
of them (:class:`ClusterRef`):

* ``clusterResourceId``: an AKS managed cluster's Azure resource ID. The app reads it through ARM and
  reaches its API with the Function's managed identity (:mod:`shared.ports.azure.aks`): no cluster
  credential is stored anywhere. ``localAccounts: true`` uses the cluster's static admin credential
  (``listClusterAdminCredential``) instead, for a cluster without Microsoft Entra ID.
* ``kubeconfigSecret`` (with an optional ``context``): a kubeconfig in Key Vault. The kubelogin form
  ``az aks get-credentials`` writes is served by the same managed-identity token; the plugin never runs.

:class:`ClusterAccess` connects: bootstrap, rotation and the CLI all go through it, so they reach a
cluster the same way, with the same errors (``field`` names the reference) and the same hints: a 403 of
the cluster's API names the Azure RBAC role the identity lacks for the job (RBAC Cluster Admin for a
bootstrap, RBAC Admin on the namespace for rotation); a private cluster that cannot be reached says
the Function needs VNet integration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from . import errors
from .ports.azure.aks import RBAC_ADMIN_ROLE, RBAC_CLUSTER_ADMIN_ROLE, RBAC_WRITER_ROLE, ClusterResourceId

log = logging.getLogger(__name__)

#: what a connection is for: the role a 403 names depends on it
BOOTSTRAP = "bootstrap"
ROTATION = "rotation"


@dataclass(frozen=True)
class ClusterRef:
    """How a cluster is named: ``resource_id`` (+ ``local_accounts``) or ``kubeconfig_secret`` (+ ``context``).
    Build it with :meth:`parse`, which checks the fields."""

    kubeconfig_secret: str | None = None
    context: str | None = None
    resource_id: ClusterResourceId | None = None
    local_accounts: bool = False

    @classmethod
    def parse(cls, *, kubeconfig_secret: Any = None, cluster_resource_id: Any = None, context: Any = None,
              local_accounts: Any = False) -> "ClusterRef":
        """Exactly one of ``cluster_resource_id`` and ``kubeconfig_secret``; ``context`` only with the
        latter, ``local_accounts`` only with the former. Raises ``InvalidInput`` naming the field in
        request spelling (``clusterResourceId``, ``kubeconfigSecret``, ``context``, ``localAccounts``)."""
        from .ports.azure.keyvault import validate_secret_name

        if cluster_resource_id is not None and kubeconfig_secret is not None:
            raise errors.InvalidInput("clusterResourceId", "give either clusterResourceId or kubeconfigSecret, not both")
        if cluster_resource_id is None and kubeconfig_secret is None:
            raise errors.InvalidInput("clusterResourceId", "is required: the AKS cluster's resource ID (az aks show "
                                                           "--query id), or kubeconfigSecret, a Key Vault secret holding its kubeconfig")
        if not isinstance(local_accounts, bool):
            raise errors.InvalidInput("localAccounts", "must be true or false")
        if cluster_resource_id is not None:
            rid = ClusterResourceId.parse(cluster_resource_id, "clusterResourceId")
            if context is not None:
                raise errors.InvalidInput("context", "is only used with kubeconfigSecret")
            return cls(resource_id=rid, local_accounts=local_accounts)
        validate_secret_name(kubeconfig_secret, "kubeconfigSecret")
        if local_accounts:
            raise errors.InvalidInput("localAccounts", "is only used with clusterResourceId")
        if context is not None and (not isinstance(context, str) or not context.strip()):
            raise errors.InvalidInput("context", "must be a non-empty kubeconfig context name when given")
        return cls(kubeconfig_secret=kubeconfig_secret, context=context)

    @property
    def field(self) -> str:
        """The request field that names the cluster."""
        return "clusterResourceId" if self.resource_id is not None else "kubeconfigSecret"

    def default_name(self) -> str:
        """A registry name when none is given: the managed cluster's name in lower case, else the secret."""
        if self.resource_id is not None:
            return self.resource_id.name.lower().replace("_", "-")
        return self.kubeconfig_secret or ""

    def __str__(self) -> str:
        if self.resource_id is not None:
            return f"AKS cluster {self.resource_id}" + (" (local accounts)" if self.local_accounts else "")
        return f"kubeconfig in Key Vault secret {self.kubeconfig_secret}"


class _Once:
    """No memo: every call runs (the process cache of :class:`~shared.ports.azure.aks.AksClient` still applies)."""

    @staticmethod
    def get(key, fn):
        return fn()


class ClusterAccess:
    """Connects to clusters named by :class:`ClusterRef` or by kubeconfig text.

    ``keyvault``, ``aks`` (:class:`shared.ports.azure.aks.AksClient`) and ``token_provider`` (Entra ID
    tokens for the AKS server application) default to :mod:`shared.services`, built on first use;
    ``kubeconfig_factory(text, context, aks_token_provider)`` builds a cluster from kubeconfig text
    (default :meth:`shared.ports.kube.Cluster.from_kubeconfig`); ``memo`` (``get(key, fn)``, e.g. a
    rotation run's) makes one ARM read per cluster per run whatever the cache does."""

    def __init__(self, *, keyvault=None, aks=None, token_provider: Callable[[], str] | None = None,
                 kubeconfig_factory: Callable[..., Any] | None = None, memo=None):
        self._keyvault = keyvault
        self._aks = aks
        self._token_provider = token_provider
        self._kubeconfig_factory = kubeconfig_factory
        self._memo = memo or _Once()

    def _service(self, attr: str, name: str):
        """``self.<attr>``, else :mod:`shared.services`' ``<name>()``, kept."""
        value = getattr(self, attr)
        if value is None:
            from . import services

            value = getattr(services, name)()
            setattr(self, attr, value)
        return value

    @property
    def keyvault(self):
        return self._service("_keyvault", "keyvault")

    @property
    def aks(self):
        return self._service("_aks", "aks")

    def token(self) -> str:
        """An Entra ID token for the AKS server application (refreshed before it expires)."""
        return self._service("_token_provider", "aks_token_provider")()

    # -- connecting -------------------------------------------------------------------------------

    def connect(self, ref: ClusterRef, *, purpose: str = BOOTSTRAP, namespace: str = "flux-system",
                on_secret: Callable[[str], None] | None = None):
        """A :class:`~shared.ports.kube.Cluster` for ``ref``, for ``purpose`` (:data:`BOOTSTRAP` or
        :data:`ROTATION`, in ``namespace``). Nothing is written anywhere. ``on_secret`` sees the
        kubeconfig text read from Key Vault (to redact it from error texts).

        Raises ``InvalidInput`` (``kubeconfigSecret``: missing secret or unusable kubeconfig;
        ``clusterResourceId``: no such cluster), ``Conflict`` (stopped, no Entra ID, local accounts
        disabled), ``AuthenticationFailed`` (a role is missing on the cluster resource), ``UpstreamError``."""
        if ref.resource_id is not None:
            return self.from_resource_id(ref.resource_id, local_accounts=ref.local_accounts, purpose=purpose,
                                         namespace=namespace)
        text = self.kubeconfig(ref.kubeconfig_secret)
        if on_secret is not None:
            on_secret(text)
        cluster = self.from_kubeconfig(text, ref.context, field="kubeconfigSecret")
        if cluster.auth == "aks-entra":
            cluster.forbidden_hint = _forbidden_hint(purpose, namespace, None)
        return cluster

    def kubeconfig(self, secret_name: str) -> str:
        """The kubeconfig text of Key Vault secret ``secret_name``; ``InvalidInput("kubeconfigSecret")`` when
        it does not exist, is empty, or is not marked as a kubeconfig by its owner (content type
        ``application/x-kubeconfig``, :func:`shared.trust.kubeconfig_text`)."""
        from .trust import kubeconfig_text

        try:
            value = kubeconfig_text(self.keyvault.get_secret(secret_name, field="kubeconfigSecret"))
        except errors.NotFound as exc:
            raise errors.InvalidInput("kubeconfigSecret", str(exc)) from None
        if not value or not value.strip():
            raise errors.InvalidInput("kubeconfigSecret", f"Key Vault secret {secret_name!r} is empty")
        return value

    def from_kubeconfig(self, text: str, context: str | None = None, *, field: str = "kubeconfigSecret"):
        """A cluster from kubeconfig text (Key Vault's, or the CLI's ``--kubeconfig`` file); the kubelogin
        form of an AKS user gets the managed-identity token. Errors of the kubeconfig are
        ``InvalidInput(field)``."""
        from .ports.kube import Cluster

        factory = self._kubeconfig_factory or (
            lambda t, c, provider: Cluster.from_kubeconfig(t, context=c, aks_token_provider=provider))
        try:
            cluster = factory(text, context, self.token)
        except errors.InvalidInput as exc:
            raise errors.InvalidInput(field, exc.message) from None
        cluster.ref_field = field
        return cluster

    def from_resource_id(self, rid: ClusterResourceId, *, local_accounts: bool = False, purpose: str = BOOTSTRAP,
                         namespace: str = "flux-system"):
        """A cluster for an AKS managed cluster: its endpoint from ARM (cached), then the managed-identity
        token, or with ``local_accounts`` the static admin credential ARM returned."""
        from .ports.kube import Cluster

        endpoint = self._memo.get(("aks-endpoint", rid.key, local_accounts),
                                  lambda: self.aks.endpoint(rid, local_accounts=local_accounts))
        if local_accounts:
            try:
                cluster = Cluster.from_kubeconfig(endpoint.admin_kubeconfig)
            except errors.InvalidInput as exc:
                raise errors.UpstreamError(f"ARM returned an unusable admin kubeconfig for {rid}: {exc.message}",
                                           field="clusterResourceId") from None
        else:
            cluster = Cluster.from_endpoint(endpoint.server, endpoint.ca_data, self.token)
            cluster.forbidden_hint = _forbidden_hint(purpose, namespace, endpoint)
        cluster.ref_field = "clusterResourceId"
        info = endpoint.info
        if info.private:
            cluster.unreachable_hint = (
                f"{rid} is a private cluster (API server at its private FQDN {info.private_fqdn}): the Function needs "
                "VNet integration with a subnet that can reach the cluster's virtual network and its private DNS zone")
        cluster.on_unreachable = lambda: self.aks.invalidate(rid)
        return cluster


def _forbidden_hint(purpose: str, namespace: str, endpoint) -> str:
    """What to grant when the cluster's API answers 403 to the Function's identity."""
    rid = endpoint.resource_id if endpoint is not None else None
    scope = str(rid) if rid is not None else "the cluster"
    if endpoint is not None and not endpoint.info.azure_rbac:
        # Entra ID authentication with Kubernetes RBAC: roles are bound inside the cluster
        need = "cluster-admin" if purpose == BOOTSTRAP else f"edit in namespace {namespace}"
        return (f"the cluster uses Kubernetes RBAC, not Azure RBAC: bind the Function's identity (its object id, "
                f"the User in the message) to {need} with a {'Cluster' if purpose == BOOTSTRAP else ''}RoleBinding, "
                "or enable Azure RBAC (az aks update --enable-azure-rbac)")
    if purpose == ROTATION:
        where = f"{rid}/namespaces/{namespace}" if rid is not None else f"namespace {namespace} of the cluster"
        return (f"assign the Function's identity the {RBAC_ADMIN_ROLE} role on {where}: rotation writes Secrets and "
                f"annotates the GitRepository there ({RBAC_WRITER_ROLE.name} covers the Secrets but no custom resource)")
    return f"assign the Function's identity the {RBAC_CLUSTER_ADMIN_ROLE} role on {scope} (bootstrap installs CRDs and cluster-wide RBAC)"


__all__ = ["BOOTSTRAP", "ROTATION", "ClusterAccess", "ClusterRef"]
