"""Bootstrap without secrets: Flux on Microsoft Entra workload identity.

Three request fields (``flux bootstrap git`` has no flags for them; the CLI spells them
``--source-provider``, ``--workload-identity-*`` and ``--sops-provider``):

* ``sourceProvider: "azure"``: the GitRepository gets ``spec.provider: azure`` (source-controller v1.4,
  Flux v2.4.0 and later): source-controller clones Azure DevOps with an Entra ID token of its own workload
  identity. No source Secret is written (``gotk-sync.yaml`` has no ``secretRef``, see
  :mod:`shared.flux.sync`) and no PAT is read: the app clones and pushes with the Function's Entra ID token,
  which goes only to ``GIT_BEARER_TOKEN_HOSTS``. source-controller takes only
  ``https://dev.azure.com/{organization}/{project}/_git/{repository}`` with this provider
  (fluxcd/source-controller ``docs/spec/v1/gitrepositories.md``, "Provider"), so that is the URL it needs.
* ``workloadIdentity: {clientId, tenantId?, identityResourceId?, components?, federate?}``: the controllers in
  ``components`` (default: those selected that talk to Azure, :data:`AZURE_CONTROLLERS`) get Flux's documented
  patches (:func:`shared.flux.patches.workload_identity`: the ServiceAccount annotation
  ``azure.workload.identity/client-id``, and ``tenant-id`` when given; the pod-template label
  ``azure.workload.identity/use: "true"``), written into the flux-system ``kustomization.yaml`` and applied
  at install. ``identityResourceId`` names the user-assigned identity of ``clientId``: the app reads it and
  refuses a ``clientId`` that is not its own; ``federate`` (default: true when ``identityResourceId`` is given)
  makes the app create the federated identity credentials (:class:`Federation`).
* ``sops: {provider: "azure-keyvault"}``: SOPS decryption on the flux-system Kustomization
  (:func:`shared.flux.patches.sops_decryption`); kustomize-controller decrypts with its workload identity, so
  it must be one of the ``components``.

The cluster's side (:class:`Federation`, before anything is written): with ``clusterResourceId`` the managed
cluster is read from ARM; without an OIDC issuer or with workload identity disabled that is a 409 naming
``az aks update --enable-oidc-issuer --enable-workload-identity``. A cluster named by ``kubeconfigSecret`` has no
ARM view: the app cannot read its issuer, so ``federate`` needs ``clusterResourceId`` (400); without it the
operator vouches that the cluster runs the workload identity webhook and that the identity trusts the service
accounts, and the run says so in a warning.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import Conflict, InvalidInput, shown

log = logging.getLogger(__name__)

AZURE = "azure"
#: ``sourceProvider`` values: source-controller's GitRepository providers this app can bootstrap with.
SOURCE_PROVIDERS = ("generic", AZURE)
SOPS_AZURE_KEYVAULT = "azure-keyvault"
SOPS_PROVIDERS = (SOPS_AZURE_KEYVAULT,)
#: The first Flux release whose source-controller (v1.4.0) takes GitRepository ``provider: azure``.
MIN_AZURE_VERSION = (2, 4, 0)
#: The controllers that talk to Azure, the default ``components``: source-controller (Azure DevOps, ACR for Helm
#: OCI charts), kustomize-controller (SOPS with Key Vault), notification-controller (Event Hubs, Azure DevOps
#: commit statuses), image-reflector-controller (ACR) and image-automation-controller (Azure DevOps pushes).
AZURE_CONTROLLERS = ("source-controller", "kustomize-controller", "notification-controller",
                     "image-reflector-controller", "image-automation-controller")
ENABLE_COMMAND = "az aks update --enable-oidc-issuer --enable-workload-identity"
FIELD = "workloadIdentity"


@dataclass(frozen=True)
class WorkloadIdentity:
    """``workloadIdentity`` of a request, decoded: ``client_id`` (GUID), ``components`` (the controllers
    patched, in Flux's order), ``tenant_id`` (GUID or None), ``identity_resource_id``
    (:class:`shared.ports.azure.msi.IdentityResourceId` or None), ``federate``."""

    client_id: str
    components: tuple[str, ...]
    tenant_id: str | None = None
    identity_resource_id: Any = None
    federate: bool = False

    def patches(self) -> list[dict]:
        """Flux's two workload identity entries (ServiceAccount, then Deployment) for :attr:`components`."""
        from ..flux import patches

        return patches.workload_identity(self.components, self.client_id, self.tenant_id, field=FIELD)


def default_components(selected: Sequence[str]) -> tuple[str, ...]:
    """The selected controllers that talk to Azure (:data:`AZURE_CONTROLLERS`), in the selection's order."""
    return tuple(c for c in selected if c in AZURE_CONTROLLERS)


def _optional_str(body: dict, key: str, where: str) -> str | None:
    from ..trust import check_text

    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{where}.{key}", "must be a string")
    return check_text(value, f"{where}.{key}")


def parse_workload_identity(value: Any, selected: Sequence[str], *, where: str = FIELD) -> WorkloadIdentity | None:
    """Decode the ``workloadIdentity`` object (None: absent). ``selected`` are the components the bootstrap
    installs. Raises ``InvalidInput(workloadIdentity.<key>)`` for an unknown key, a wrong type, a client or
    tenant ID that is not a GUID, a malformed identity resource ID, an unknown component or one that is not
    installed, or ``federate`` without ``identityResourceId``."""
    from ..flux import patches
    from ..ports.azure.msi import IdentityResourceId
    from ..trust import check_text, safe_field_name

    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(where, "must be an object: {clientId, tenantId?, identityResourceId?, components?, federate?}")
    keys = ("clientId", "tenantId", "identityResourceId", "components", "federate")
    unknown = sorted(set(value) - set(keys), key=repr)
    if unknown:
        raise InvalidInput(f"{where}.{safe_field_name(unknown[0])}", "unknown field")
    client_id = _optional_str(value, "clientId", where)
    if not client_id:
        raise InvalidInput(f"{where}.clientId", "is required: the client ID of the managed identity the controllers use "
                                                "(az identity show --query clientId)")
    tenant_id = _optional_str(value, "tenantId", where)
    for key, guid in (("clientId", client_id), ("tenantId", tenant_id)):
        if guid is not None and not patches.is_guid(guid):
            raise InvalidInput(f"{where}.{key}", f"{shown(guid)} is not a GUID")
    rid_text = _optional_str(value, "identityResourceId", where)
    rid = IdentityResourceId.parse(rid_text, f"{where}.identityResourceId") if rid_text is not None else None
    components = value.get("components")
    if components is None:
        components = list(default_components(selected))
        if not components:
            raise InvalidInput(f"{where}.components", "none of the selected components talks to Azure; name the controllers")
    elif not isinstance(components, list) or not all(isinstance(c, str) for c in components) or not components:
        raise InvalidInput(f"{where}.components", "must be a non-empty list of Flux component names")
    check_text(components, f"{where}.components")
    for name in components:
        if name not in patches.COMPONENTS:
            raise InvalidInput(f"{where}.components", f"{shown(name)} is not a Flux component (one of {', '.join(patches.COMPONENTS)})")
        if name not in selected:
            raise InvalidInput(f"{where}.components", f"{name} is not installed by this bootstrap; add it to components or "
                                                      "componentsExtra, or leave it out")
    ordered = tuple(c for c in selected if c in components)  # Flux's order, duplicates dropped
    federate = value.get("federate")
    if federate is not None and not isinstance(federate, bool):
        raise InvalidInput(f"{where}.federate", "must be true or false")
    if federate is None:
        federate = rid is not None
    if federate and rid is None:
        raise InvalidInput(f"{where}.identityResourceId", "is required with federate: the user-assigned identity the "
                                                          "federated identity credentials are created on")
    return WorkloadIdentity(client_id.lower(), ordered, tenant_id.lower() if tenant_id else None, rid, federate)


def parse_sops(value: Any, *, where: str = "sops") -> str | None:
    """Decode the ``sops`` object (None: absent) to its provider. Raises ``InvalidInput(sops.<key>)``."""
    from ..trust import safe_field_name

    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(where, 'must be an object: {"provider": "azure-keyvault"}')
    unknown = sorted(set(value) - {"provider"}, key=repr)
    if unknown:
        raise InvalidInput(f"{where}.{safe_field_name(unknown[0])}", "unknown field")
    provider = _optional_str(value, "provider", where)
    if provider not in SOPS_PROVIDERS:
        raise InvalidInput(f"{where}.provider", f"must be one of {', '.join(SOPS_PROVIDERS)} (got {shown(provider)})")
    return provider


def parse_source_provider(value: Any, *, where: str = "sourceProvider") -> str | None:
    """``sourceProvider``: None or ``generic`` (secret-based, the default) → None; ``azure`` → ``azure``."""
    if value is None or value == "generic":
        return None
    if value not in SOURCE_PROVIDERS:
        raise InvalidInput(where, f"must be one of {', '.join(SOURCE_PROVIDERS)} (got {shown(value)})")
    return value


def check_source_url(url: str, *, allow_insecure_http: bool, where: str = "url") -> None:
    """With ``sourceProvider: azure``, the URL source-controller's azure provider takes:
    ``https://dev.azure.com/{organization}/{project}/_git/{repository}`` (an ``ssh://`` URL or another layout is
    refused; an ``{org}.visualstudio.com`` URL gets its dev.azure.com form in the message). A host other than
    dev.azure.com must be one that ``GIT_BEARER_TOKEN_HOSTS`` lists as taking Entra ID tokens (the operator
    vouches that it serves Azure DevOps), with the same layout. Raises ``InvalidInput(where)``."""
    from ..trust import GitPolicy, parse_git_url

    need = "https://dev.azure.com/{organization}/{project}/_git/{repository}"
    text = url.strip() if isinstance(url, str) else url
    if isinstance(text, str) and "://" in text and text.split("://", 1)[0].lower() not in ("https", "http"):
        raise InvalidInput(where, f"sourceProvider azure authenticates to Azure DevOps over HTTPS with workload identity: "
                                  f"give {need}, not a {text.split('://', 1)[0]}:// URL")
    parsed = parse_git_url(text, where)
    if parsed.scheme == "http" and not allow_insecure_http:
        raise InvalidInput(where, f"sourceProvider azure needs {need}")
    segments = [s for s in parsed.path.split("/") if s]
    if parsed.host.endswith(".visualstudio.com"):
        org = parsed.host.split(".", 1)[0]
        rest = segments[1:] if segments and segments[0].lower() == "defaultcollection" else segments
        hint = f"https://dev.azure.com/{org}/{rest[0]}/_git/{rest[2]}" if len(rest) == 3 and rest[1] == "_git" else need
        raise InvalidInput(where, f"source-controller's azure provider takes the dev.azure.com form of the URL: {hint}")
    if len(segments) != 4 or segments[2] != "_git":
        raise InvalidInput(where, f"sourceProvider azure needs an Azure DevOps repository URL, {need} (source-controller "
                                  f"takes no other form with this provider); {shown(parsed.url)} is not one")
    policy = GitPolicy.from_settings()
    if not any(e.matches(parsed.host, parsed.effective_port) for e in policy.bearer):
        raise InvalidInput(where, f"host {shown(parsed.host)} is not Azure DevOps Services: sourceProvider azure needs {need} "
                                  f"(app setting GIT_BEARER_TOKEN_HOSTS lists the hosts that take Entra ID tokens: "
                                  f"{','.join(str(e) for e in policy.bearer)})")


def check_options(opts) -> None:
    """Cross-field rules of :class:`~shared.bootstrap.options.BootstrapOptions` (request spelling in errors):
    ``sourceProvider: azure`` needs ``workloadIdentity`` on source-controller, excludes ``withBearerToken`` and
    a Flux older than v2.4.0; ``sops`` with Azure Key Vault needs kustomize-controller's identity."""
    from ..flux.options import LATEST

    wi = opts.workload_identity
    if opts.source_provider == AZURE:
        if opts.with_bearer_token:
            raise InvalidInput("withBearerToken", "is not used with sourceProvider azure: source-controller gets its own "
                                                  "token through workload identity, and no source Secret is written")
        if wi is None:
            raise InvalidInput(FIELD, "is required with sourceProvider azure: the client ID of the managed identity that "
                                      "source-controller signs in to Azure DevOps with")
        if "source-controller" not in wi.components:
            raise InvalidInput(f"{FIELD}.components", "must include source-controller with sourceProvider azure")
        if opts.version not in (None, LATEST):
            check_version(opts.version)
    if opts.sops_provider == SOPS_AZURE_KEYVAULT and (wi is None or "kustomize-controller" not in wi.components):
        raise InvalidInput("sops.provider", "azure-keyvault decrypts with kustomize-controller's workload identity: set "
                                            "workloadIdentity with kustomize-controller among its components")
    if wi is not None:
        selected = opts.install_options().selected()
        missing = [c for c in wi.components if c not in selected]
        if missing:
            raise InvalidInput(f"{FIELD}.components", f"{', '.join(missing)} is not installed by this bootstrap")


def check_version(version: str, where: str = "version") -> None:
    """Raise ``InvalidInput(where)`` when Flux ``version`` predates GitRepository ``provider: azure`` (v2.4.0)."""
    from ..flux.options import parse_version

    try:
        parsed = parse_version(version)
    except ValueError:
        return  # validate_version names a malformed version
    if parsed < MIN_AZURE_VERSION:
        raise InvalidInput(where, f"Flux {version} cannot use sourceProvider azure: GitRepository provider azure came with "
                                  "Flux v2.4.0 (source-controller v1.4.0); use v2.4.0 or later")


def check_cluster(wi: WorkloadIdentity | None, cluster_ref) -> None:
    """``federate`` needs the cluster's OIDC issuer from ARM, hence ``clusterResourceId``."""
    if wi is not None and wi.federate and cluster_ref.resource_id is None:
        raise InvalidInput(f"{FIELD}.federate", "needs clusterResourceId: the federated identity credentials trust the "
                                                "cluster's OIDC issuer, which the app reads from ARM; with kubeconfigSecret "
                                                "create them yourself and set federate to false")


def credential_name(cluster_rid, namespace: str, controller: str) -> str:
    """The federated identity credential of ``controller`` for one cluster: ``flux-<cluster>-<controller>-<8 hex>``,
    the hex from the cluster's resource ID and the namespace (two clusters of one name in other resource groups,
    or two Flux namespaces of one cluster, get their own), so a re-run finds its own credential."""
    digest = hashlib.sha256(f"{cluster_rid.key}\n{namespace}".encode()).hexdigest()[:8]
    return f"flux-{cluster_rid.name.lower()}-{controller}-{digest}"


def own_credential_names(cluster_rid, namespace: str) -> dict[str, str]:
    """The names :func:`credential_name` gives this cluster's credentials, one per Flux component: lower-case
    name → controller. Only a credential of one of these names is the app's own (another's is never reported)."""
    from ..flux.patches import COMPONENTS

    return {credential_name(cluster_rid, namespace, c).lower(): c for c in COMPONENTS}


def stale_credentials(existing: Sequence, cluster_rid, namespace: str, components: Sequence[str],
                      kept: Sequence[str] = ()) -> list[tuple[Any, str]]:
    """The app's own credentials for this cluster and namespace (:func:`own_credential_names`) among ``existing``
    whose controller is not in ``components`` (dropped by a re-run) and whose name is not in ``kept`` (the
    credentials the plan writes or keeps): ``(credential, controller)`` pairs, in the identity's order. They still
    trust their service account; they are reported, never deleted."""
    own = own_credential_names(cluster_rid, namespace)
    keep = {n.lower() for n in kept}
    return [(c, own[c.name.lower()]) for c in existing
            if c.name.lower() in own and own[c.name.lower()] not in components and c.name.lower() not in keep]


def delete_command(identity_rid, name: str) -> str:
    """The Azure CLI command that deletes federated identity credential ``name`` of the identity."""
    return (f"az identity federated-credential delete --name {name} --identity-name {identity_rid.name} "
            f"--resource-group {identity_rid.resource_group} --subscription {identity_rid.subscription_id} --yes")


@dataclass
class Federation:
    """The Azure side of one bootstrap with ``workloadIdentity``: what was read from ARM (:meth:`prepare`,
    nothing written) and the federated identity credentials written (:meth:`apply`).

    ``issuer`` is the cluster's OIDC issuer (None for a cluster named by kubeconfig); ``identity`` the
    :class:`~shared.ports.azure.msi.IdentityInfo` of ``identityResourceId``; ``planned`` the credentials
    :func:`shared.ports.azure.msi.plan` will write or keep; ``done`` what :meth:`apply` did; ``stale`` the
    app's own credentials of this cluster for controllers no longer in ``components`` (:func:`stale_credentials`,
    ``(credential, controller)``), reported by :meth:`apply` and :meth:`summary`, never deleted."""

    workload: WorkloadIdentity
    namespace: str
    cluster: Any = None  # ClusterResourceId
    issuer: str | None = None
    identity: Any = None
    existing: list = field(default_factory=list)
    planned: list = field(default_factory=list)
    done: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    msi: Any = field(default=None, repr=False)

    @classmethod
    def prepare(cls, opts, cluster_ref, *, aks=None, msi=None) -> "Federation":
        """Read what the run needs of Azure, writing nothing: the managed cluster's OIDC issuer and
        workload identity state (ARM ``managedClusters/read``; 409 ``Conflict`` naming
        :data:`ENABLE_COMMAND` when either is off), the identity (its client ID must be ``clientId``:
        400 otherwise) and, with ``federate``, its federated credentials (409 when the 20 allowed would not
        hold ours) and which of the app's own are stale (:func:`stale_credentials`). ``aks``/``msi`` default to :mod:`shared.services`'."""
        from .. import services
        from ..ports.azure.msi import FederatedCredential, plan

        wi = opts.workload_identity
        check_cluster(wi, cluster_ref)
        fed = cls(wi, opts.namespace, cluster_ref.resource_id)
        rid = cluster_ref.resource_id
        if rid is not None:
            info = (aks or services.aks()).managed_cluster(rid)
            off = [what for what, on in (("the OIDC issuer", info.oidc_issuer_url), ("workload identity", info.workload_identity))
                   if not on]
            if off:
                raise Conflict(f"managed cluster {rid} has {' and '.join(off)} disabled, so its Flux controllers cannot sign "
                               f"in with workload identity; enable them ({ENABLE_COMMAND} --resource-group "
                               f"{rid.resource_group} --name {rid.name}) and run the bootstrap again", field="clusterResourceId")
            fed.issuer = info.oidc_issuer_url
        else:
            fed.warnings.append(
                "the cluster is named by kubeconfigSecret, so its OIDC issuer and workload identity state cannot be read "
                f"from ARM: the cluster must run the workload identity webhook ({ENABLE_COMMAND}) and the identity must "
                "have a federated identity credential for each patched service account")
        if wi.identity_resource_id is not None:
            fed.msi = msi or services.msi()
            fed.identity = fed.msi.identity(wi.identity_resource_id, field=f"{FIELD}.identityResourceId")
            if (fed.identity.client_id or "").lower() != wi.client_id:
                raise InvalidInput(f"{FIELD}.clientId", f"{wi.client_id} is not the client ID of {wi.identity_resource_id} "
                                                        f"(its client ID is {fed.identity.client_id})")
            if wi.federate:
                fed.existing = fed.msi.federated_credentials(wi.identity_resource_id, field=f"{FIELD}.identityResourceId")
                wanted = [FederatedCredential(credential_name(rid, opts.namespace, c), fed.issuer,
                                              f"system:serviceaccount:{opts.namespace}:{c}") for c in wi.components]
                fed.planned = plan(wanted, fed.existing, f"{FIELD}.identityResourceId")
                fed.stale = stale_credentials(fed.existing, rid, opts.namespace, wi.components,
                                              [c.name for c, _ in fed.planned])
        return fed

    def apply(self, progress) -> None:
        """Create or update the planned federated identity credentials (``federate``), one write at a time;
        Flux-style ``progress`` lines, and a warning per stale credential with the command that deletes it. Raises as :meth:`shared.ports.azure.msi.MsiClient.ensure`."""
        for line in self.warnings:
            progress.warning(line)
        if not self.workload.federate:
            return
        rid = self.workload.identity_resource_id
        progress.action(f"federating identity \"{rid.name}\" with the OIDC issuer of \"{self.cluster.name}\"")
        self.done = self.msi.ensure(rid, [c for c, _ in self.planned], existing=self.existing,
                                    field=f"{FIELD}.identityResourceId")
        for item in self.done:
            what = "is up to date" if item.action == "unchanged" else item.action
            progress.success(f"federated identity credential \"{item.credential.name}\" ({item.credential.subject}) {what}")
        for cred, controller in self.stale:
            progress.warning(f"federated identity credential \"{cred.name}\" ({cred.subject}) was created by this app for "
                             f"{controller}, which is no longer in {FIELD}.components, and still trusts that service "
                             f"account; it is left in place: delete it with {delete_command(rid, cred.name)}")

    def summary(self, kustomization_path: str | None = None) -> dict:
        """The response's ``workloadIdentity``: the identity, the issuer, and per controller its service account,
        client ID, federated credential (None when the app did not federate) and the patches written; ``stale``:
        ``[{"name", "subject"}]``, the app's own credentials for controllers no longer selected (left in place)."""
        wi = self.workload
        done = {item.credential.subject: item for item in self.done}
        planned = {c.subject: (c, step) for c, step in self.planned}
        target = "(" + "|".join(wi.components) + ")"
        controllers = []
        for name in wi.components:
            subject = f"system:serviceaccount:{self.namespace}:{name}"
            cred = None
            if subject in done:
                cred = done[subject].to_dict()
            elif subject in planned:
                cred = {**planned[subject][0].to_dict(), "action": "planned"}
            notes = {"azure.workload.identity/client-id": wi.client_id}
            if wi.tenant_id:
                notes["azure.workload.identity/tenant-id"] = wi.tenant_id
            controllers.append({
                "name": name,
                "serviceAccount": f"{self.namespace}/{name}",
                "clientId": wi.client_id,
                "federatedCredential": cred,
                "patches": [
                    {"target": f"ServiceAccount/{target}", "annotations": notes},
                    {"target": f"Deployment/{target}", "podLabels": {"azure.workload.identity/use": "true"}},
                ],
            })
        return {
            "clientId": wi.client_id,
            "tenantId": wi.tenant_id,
            "identityResourceId": str(wi.identity_resource_id) if wi.identity_resource_id is not None else None,
            "oidcIssuer": self.issuer,
            "federate": wi.federate,
            "kustomization": kustomization_path,
            "controllers": controllers,
            "stale": [{"name": c.name, "subject": c.subject} for c, _ in self.stale],
        }


__all__ = ["AZURE", "AZURE_CONTROLLERS", "ENABLE_COMMAND", "Federation", "MIN_AZURE_VERSION", "SOPS_AZURE_KEYVAULT",
           "WorkloadIdentity", "check_cluster", "check_options", "check_source_url", "check_version", "credential_name",
           "default_components", "delete_command", "own_credential_names", "parse_sops", "parse_source_provider",
           "parse_workload_identity", "stale_credentials"]
