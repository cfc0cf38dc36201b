"""The cluster registry: one Azure Table storage entity per cluster the app manages (issue #4).

Table ``REGISTRY_TABLE`` (default ``fluxclusters``) in the Functions storage account; ``PartitionKey``
is ``"cluster"``, ``RowKey`` the cluster name. Entity properties use the JSON (request-body) spelling
of :class:`ClusterRecord` fields, so ``GET /api/registry/clusters`` shows what the table holds.

Storage account, first match wins (the same account the Functions host uses; read by
:func:`shared.ports.azure.storage.storage_account`):

1. ``REGISTRY_STORAGE_CONNECTION``: a connection string (Azurite's, or a dedicated account);
2. ``AzureWebJobsStorage``: the Function's own storage connection string;
3. identity-based ``AzureWebJobsStorage__tableServiceUri``, or ``AzureWebJobsStorage__accountName``
   (``https://<name>.table.core.windows.net``), with ``DefaultAzureCredential``; the identity needs the
   "Storage Table Data Contributor" role (``0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3``).

``azure-data-tables`` (12.7) is imported lazily (Functions cold start). Records hold **names** of
secrets (Key Vault secret names, Kubernetes Secret names), never secret values.
References: learn.microsoft.com/azure/storage/tables/table-storage-overview (entities, keys);
learn.microsoft.com/python/api/overview/azure/data-tables-readme (``TableClient``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from shared import errors
from shared.flux.options import DNS1123_LABEL, DNS1123_SUBDOMAIN
from shared.ports.azure.keyvault import validate_secret_name
from shared.ports.azure.storage import TABLE_CLIENT_KWARGS, CreatedOnce, StorageAccount, check_table_name, storage_account

log = logging.getLogger(__name__)

PARTITION = "cluster"
DEFAULT_TABLE = "fluxclusters"

#: Git auth modes. ``pat``: the PAT from Key Vault secret ``patSecret`` goes to ``username``/``password``
#: (what ``flux bootstrap git --token-auth`` writes). ``entra-bearer``: an Entra ID access token for Azure
#: DevOps goes to ``bearerToken``. ``entra-password``: the same token goes to ``password`` with
#: ``username``. ``workload-identity``: the GitRepository signs in with source-controller's own workload
#: identity (``provider: azure``, ``sourceProvider: azure`` at bootstrap): there is no Git credential to rotate.
#: ``ssh``: the source Secret holds an SSH deploy key from Key Vault (``identity``, ``identity.pub``,
#: ``known_hosts``: a bootstrap over SSH, an ``ssh://`` url or ``sshHostname``); a key is not rotated, so
#: rotation writes no Git credential; ``gitUrl`` is the ``ssh://`` URL the GitRepository syncs from.
#: ``none``: the app does not manage the Git credential (Event Hub only).
GIT_AUTH_MODES = ("pat", "entra-bearer", "entra-password", "workload-identity", "ssh", "none")
#: Modes in which rotation writes no Git credential (and reads none: no Key Vault read, no ``ls-remote``).
NO_GIT_CREDENTIAL = ("workload-identity", "ssh", "none")
#: Modes in which ``gitUrl`` may be left out (nothing of the app's goes to the repository for the cluster).
_GIT_URL_OPTIONAL = ("workload-identity", "none")
#: ``install`` fields that only a bootstrap over SSH records (``gitAuth: ssh``).
SSH_INSTALL_FIELDS = ("sshHostkeyAlgos", "sshHostname", "privateKeySecret", "passwordSecret", "url")

_CLUSTER_NAME = DNS1123_LABEL  # also safe as a RowKey
_EVENTHUB_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,254}[A-Za-z0-9])?$")  # 1-256 chars
_EVENTHUB_NS = re.compile(r"^[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9](\.servicebus\.[a-z0-9.]+)?$")


SettingError = errors.SettingError  # re-exported: callers import it from here too


def _subdomain(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise errors.InvalidInput(field, "must be a Kubernetes object name (lower-case DNS-1123 subdomain, at most 253 characters)")
    return value


@dataclass(frozen=True)
class ClusterRecord:
    """One managed cluster. JSON (and table entity) spelling in brackets.

    * ``name`` [``name``]: cluster name, a DNS-1123 label (1-63 ``a-z 0-9 -``); the table's RowKey.
    * The cluster, exactly one of (:class:`shared.clusters.ClusterRef`): ``cluster_resource_id``
      [``clusterResourceId``], an AKS managed cluster's resource ID (stored in its canonical spelling),
      reached through ARM with the Function's managed identity (``local_accounts`` [``localAccounts``]:
      with its static admin credential instead); or ``kubeconfig_secret`` [``kubeconfigSecret``], a Key
      Vault secret holding the cluster's kubeconfig YAML, with ``context`` [``context``] (None:
      ``current-context``).
    * ``namespace`` [``namespace``]: Flux namespace (default ``flux-system``).
    * ``source_secret`` [``sourceSecret``]: the GitRepository's ``spec.secretRef`` Secret (default
      ``flux-system``); ``git_repository`` [``gitRepository``]: the GitRepository annotated with
      ``reconcile.fluxcd.io/requestedAt`` after a change and whose ``spec.url`` the new credential is
      checked against (default ``flux-system``, as ``flux bootstrap``).
    * ``git_auth`` [``gitAuth``]: one of :data:`GIT_AUTH_MODES` (default ``pat``; ``workload-identity``,
      ``ssh`` and ``none`` leave the Git credential alone: :data:`NO_GIT_CREDENTIAL`); ``username``
      [``username``]: written with ``password`` in ``pat``/``entra-password`` modes (default ``git``).
    * ``pat_secret`` [``patSecret``]: Key Vault secret holding the PAT (required in ``pat`` mode).
    * ``git_url`` [``gitUrl``]: the repository URL recorded when the cluster was registered (bootstrap
      records its sync URL), required unless ``gitAuth`` is ``none`` or ``workload-identity``. Rotation sends a credential only
      there: a GitRepository whose ``spec.url`` names another repository fails the cluster (possible
      tampering; re-register to accept the new URL). It must pass ``GIT_ALLOWED_HOSTS``
      (:mod:`shared.trust`), checked on registration and on every rotation. With ``gitAuth: ssh`` it is
      the ``ssh://`` URL the cluster syncs from (its source Secret's key goes there): the bootstrap's
      ``url``, or with ``sshHostname`` the SSH URL on that host (``install.url`` then keeps the https
      URL the bootstrap pushed to).
    * ``allow_insecure_http`` [``allowInsecureHttp``]: allow an ``http://`` ``gitUrl`` (only to a host
      listed exactly in ``GIT_ALLOWED_HOSTS``, e.g. local test servers; default false).
    * ``eventhub_secret`` [``eventHubSecret``], ``eventhub_name`` [``eventHubName``],
      ``eventhub_namespace`` [``eventHubNamespace``]: for a cluster whose notification Provider
      (``azureeventhub``) publishes with a JWT: the Provider's Secret (in ``namespace``; keys ``token`` and
      ``address``), the hub name (written as ``address``) and the Event Hubs namespace (the Provider's
      ``spec.channel``; recorded for operators). All three or none.
    * ``install`` [``install``]: the options the cluster was bootstrapped with, recorded by the
      bootstrap so a fleet upgrade can render its gotk-components.yaml again (:data:`INSTALL_FIELDS`,
      request spelling: ``version``, ``branch``, ``path``, ``interval``, ``components``,
      ``componentsExtra``, ``registry``, ``networkPolicy``, ``watchAllNamespaces``, ``logLevel``,
      ``clusterDomain``, ``authorName``, ``authorEmail``, ``commitMessageAppendix``, ``tolerationKeys``,
      ``imagePullSecret``, ``recurseSubmodules``, ``sparseCheckout`` (folders, one holding ``path``),
      ``caFileSecret`` (the Git server's CA, not with workload identity) and ``registryCredsSecret``
      (with ``imagePullSecret``): Key Vault secret names, read again and checked as at bootstrap; for
      workload identity ``sourceProvider``, ``workloadIdentity`` (``{clientId,
      tenantId?, identityResourceId?, components, federate}``, components resolved) and ``sops``; over SSH
      (``gitAuth: ssh`` only, :data:`SSH_INSTALL_FIELDS`) ``sshHostkeyAlgos``, ``sshHostname``, ``url``
      (with ``sshHostname``: the https URL pushed to), ``privateKeySecret`` (absent: the generated key
      ``flux-ssh-<name>``) and ``passwordSecret`` (the key's passphrase with an ``ssh://`` url, the PAT
      pushed with when ``sshHostname`` is set: Key Vault secret names, bound by their tags as at
      bootstrap); the namespace, sync URL, source Secret and username are the record's own fields; a
      field left out is the bootstrap's default). None for a cluster registered by hand.
      Stored in the table as JSON text.
    """

    name: str
    kubeconfig_secret: str | None = None
    namespace: str = "flux-system"
    source_secret: str = "flux-system"
    git_repository: str = "flux-system"
    git_auth: str = "pat"
    username: str = "git"
    pat_secret: str | None = None
    context: str | None = None
    allow_insecure_http: bool = False
    git_url: str | None = None
    eventhub_secret: str | None = None
    eventhub_name: str | None = None
    eventhub_namespace: str | None = None
    cluster_resource_id: str | None = None
    local_accounts: bool = False
    install: Mapping[str, Any] | None = None

    # JSON field name <-> attribute
    _JSON = {"name": "name", "kubeconfigSecret": "kubeconfig_secret", "clusterResourceId": "cluster_resource_id",
             "localAccounts": "local_accounts", "namespace": "namespace",
             "sourceSecret": "source_secret", "gitRepository": "git_repository", "gitAuth": "git_auth",
             "username": "username", "patSecret": "pat_secret", "context": "context",
             "allowInsecureHttp": "allow_insecure_http", "gitUrl": "git_url", "eventHubSecret": "eventhub_secret",
             "eventHubName": "eventhub_name", "eventHubNamespace": "eventhub_namespace", "install": "install"}

    @property
    def has_eventhub(self) -> bool:
        return bool(self.eventhub_secret)

    @property
    def cluster_ref(self):
        """The :class:`shared.clusters.ClusterRef` of the record (raises ``InvalidInput`` as :meth:`validate`)."""
        from shared.clusters import ClusterRef

        return ClusterRef.parse(kubeconfig_secret=self.kubeconfig_secret, cluster_resource_id=self.cluster_resource_id,
                                context=self.context, local_accounts=self.local_accounts)

    def validate(self) -> "ClusterRecord":
        """Check every field's shape (no app setting is read: see :meth:`check_policy`); returns self.
        Raises ``InvalidInput(<JSON field name>, message)``."""
        from shared.flux.options import validate_namespace
        from shared.trust import check_namespace, check_text, check_username, parse_git_url

        for json_name, attr in self._JSON.items():
            if attr != "install":
                check_text(getattr(self, attr), json_name)
        if self.install is not None:
            _check_install(self.install)
        if not isinstance(self.name, str) or not _CLUSTER_NAME.fullmatch(self.name):
            raise errors.InvalidInput("name", "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
        self.cluster_ref  # exactly one of clusterResourceId and kubeconfigSecret; context, localAccounts
        if not isinstance(self.namespace, str) or not DNS1123_LABEL.fullmatch(self.namespace):
            raise errors.InvalidInput("namespace", "must be a Kubernetes namespace name (DNS-1123 label)")
        validate_namespace(self.namespace, "namespace")
        check_namespace(self.namespace, "namespace")
        _subdomain(self.source_secret, "sourceSecret")
        _subdomain(self.git_repository, "gitRepository")
        if self.git_auth not in GIT_AUTH_MODES:
            raise errors.InvalidInput("gitAuth", f"must be one of {', '.join(GIT_AUTH_MODES)}")
        check_username(self.username, "username")
        if self.git_auth == "pat":
            if self.pat_secret is None:
                raise errors.InvalidInput("patSecret", "is required in the 'pat' Git auth mode (the Key Vault secret holding the PAT)")
            validate_secret_name(self.pat_secret, "patSecret")
        elif self.pat_secret is not None:
            validate_secret_name(self.pat_secret, "patSecret")
        if not isinstance(self.allow_insecure_http, bool):
            raise errors.InvalidInput("allowInsecureHttp", "must be true or false")
        if self.git_url is not None:
            parsed = parse_git_url(self.git_url, "gitUrl")
            if self.git_auth == "ssh" and parsed.scheme != "ssh":
                raise errors.InvalidInput("gitUrl", "must be the ssh:// URL the cluster's GitRepository syncs from in the "
                                                    "'ssh' Git auth mode (with sshHostname: ssh://git@<sshHostname>/...)")
        elif self.git_auth == "ssh":
            raise errors.InvalidInput("gitUrl", "is required in the 'ssh' Git auth mode: the ssh:// URL the cluster's "
                                                "GitRepository syncs from, where its SSH key goes")
        elif self.git_auth not in _GIT_URL_OPTIONAL:
            raise errors.InvalidInput("gitUrl", "is required: the repository URL the Git credential may be sent to "
                                                "(the GitRepository's spec.url when the cluster was bootstrapped)")
        if self.install is not None:
            self._check_install_mode()
        eh = {"eventHubSecret": self.eventhub_secret, "eventHubName": self.eventhub_name,
              "eventHubNamespace": self.eventhub_namespace}
        given = [k for k, v in eh.items() if v is not None]
        if given and len(given) != 3:
            missing = next(k for k in eh if k not in given)
            raise errors.InvalidInput(missing, "is required: the Event Hub secret, name and namespace go together (all three or none)")
        if given:
            _subdomain(self.eventhub_secret, "eventHubSecret")
            if not isinstance(self.eventhub_name, str) or not _EVENTHUB_NAME.fullmatch(self.eventhub_name):
                raise errors.InvalidInput("eventHubName", "must be an Event Hub name (1-256 letters, digits, '.', '_', '-')")
            if not isinstance(self.eventhub_namespace, str) or not _EVENTHUB_NS.fullmatch(self.eventhub_namespace):
                raise errors.InvalidInput(
                    "eventHubNamespace", "must be an Event Hubs namespace name (6-50 characters) or its "
                    "<name>.servicebus.windows.net host name")
        if self.git_auth == "none" and not given:
            raise errors.InvalidInput("gitAuth", "'none' leaves nothing to rotate unless the Event Hub fields are set")
        return self

    def _check_install_mode(self) -> None:
        """``install`` fields that belong to one Git auth mode: ``sourceProvider: azure`` to
        ``workload-identity``, the SSH fields (:data:`SSH_INSTALL_FIELDS`) to ``ssh``, whose recorded
        ``url``/``sshHostname`` must give the SSH URL ``gitUrl`` names (what a fleet upgrade renders into
        gotk-sync.yaml again). Raises ``InvalidInput("install.<field>")`` or ``InvalidInput("gitUrl")``."""
        from shared.flux.options import ssh_sync_url
        from shared.trust import parse_git_url

        install = self.install
        if install.get("sourceProvider") == "azure" and self.git_auth != "workload-identity":
            raise errors.InvalidInput("install.sourceProvider", "azure is recorded for gitAuth workload-identity only")
        if self.git_auth == "workload-identity" and install.get("sourceProvider", "azure") != "azure":
            raise errors.InvalidInput("install.sourceProvider", "must be azure with gitAuth workload-identity")
        if self.git_auth == "workload-identity" and "caFileSecret" in install:
            raise errors.InvalidInput("install.caFileSecret", "is not recorded with gitAuth workload-identity (no "
                                                              "source Secret holds a CA)")
        if self.git_auth != "ssh":
            extra = next((k for k in SSH_INSTALL_FIELDS if k in install), None)
            if extra is not None:
                raise errors.InvalidInput(f"install.{extra}", "is recorded for gitAuth ssh only (a bootstrap over SSH)")
            return
        if "url" in install and "sshHostname" not in install:
            raise errors.InvalidInput("install.url", "is recorded with sshHostname only (the https URL pushed to while "
                                                     "the cluster syncs over SSH); otherwise gitUrl is the URL")
        pushed = install.get("url", self.git_url)
        parse_git_url(pushed, "install.url")
        synced = ssh_sync_url(pushed, username=self.username, ssh_hostname=install.get("sshHostname"), field="install.url")
        synced_url, recorded = parse_git_url(synced, "gitUrl"), parse_git_url(self.git_url, "gitUrl")
        if not synced_url.same_repository(recorded) or synced_url.user != recorded.user:
            from shared.errors import shown

            raise errors.InvalidInput("gitUrl", f"is not the URL the recorded install options sync from ({shown(synced, 200)}); "
                                                "with sshHostname, gitUrl is the SSH URL on that host and install.url the "
                                                "https URL pushed to")

    def check_policy(self, environ: Mapping[str, str] = os.environ) -> "ClusterRecord":
        """Check the record against the app settings' trust policy (:mod:`shared.trust`): ``gitUrl``
        must pass ``GIT_ALLOWED_HOSTS`` (and ``GIT_BEARER_TOKEN_HOSTS`` in an ``entra-*`` mode).
        Done when a record is added or replaced, and again by every rotation. Raises
        ``InvalidInput("gitUrl")`` or ``SettingError``; returns self."""
        from shared.trust import GitPolicy

        # ssh: rotation sends nothing, but the cluster sends its key there and upgrades push there
        if self.git_url is not None and self.git_auth not in _GIT_URL_OPTIONAL:
            GitPolicy.from_settings(environ).destination(
                self.git_url, allow_insecure_http=self.allow_insecure_http,
                bearer=self.git_auth.startswith("entra-"), field="gitUrl")
        return self

    @classmethod
    def from_dict(cls, body: Any) -> "ClusterRecord":
        """Build and validate from a JSON object (request body or table entity; ``PartitionKey``,
        ``RowKey`` and unknown ``odata``/timestamp keys of an entity are ignored). Unknown fields of a
        request are refused: ``InvalidInput(<field>, "unknown field")``."""
        if not isinstance(body, Mapping):
            raise errors.InvalidInput("body", "must be a JSON object")
        kwargs: dict[str, Any] = {}
        for key, value in body.items():
            if key in ("PartitionKey", "RowKey", "Timestamp", "etag") or key.startswith("odata"):
                continue
            attr = cls._JSON.get(key)
            if attr is None:
                from shared.trust import safe_field_name

                raise errors.InvalidInput(safe_field_name(key), "unknown field")
            if value is None or (isinstance(value, str) and value == "" and attr not in ("name", "kubeconfig_secret",
                                                                                      "cluster_resource_id")):
                continue  # null/empty = default
            if attr == "install" and isinstance(value, str):  # the table holds it as JSON text
                value = _install_from_text(value)
            kwargs[attr] = value
        if "name" not in kwargs:
            raise errors.InvalidInput("name", "is required")
        return cls(**kwargs).validate().canonical()

    def canonical(self) -> "ClusterRecord":
        """The same record with ``clusterResourceId`` in its canonical spelling (ARM IDs are case-insensitive)."""
        if self.cluster_resource_id is None:
            return self
        return replace(self, cluster_resource_id=str(self.cluster_ref.resource_id))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (fields that are None, and ``localAccounts`` when false, are left out)."""
        values = asdict(self)
        return {k: values[a] for k, a in self._JSON.items()
                if values[a] is not None and not (a == "local_accounts" and values[a] is False)}


class InvalidRecord(errors.Conflict):
    """A stored row no longer validates (edited in the table by hand, or an older schema). 409; replace
    it (PUT, ``registry add``) or remove it. ``name``: the cluster; ``reason``: the validation error."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"the stored record of cluster {name!r} is invalid ({reason}); replace it with "
                         f"PUT /api/registry/clusters/{name} or 'python -m shared registry add', or remove it")
        self.name, self.reason = name, reason


class Registry:
    """The records in one table. Thread-safe; the table is created on first use.

    ``table_client``: an ``azure.data.tables.TableClient`` (tests, or :meth:`from_settings`).
    Errors: :class:`shared.errors.NotFound` (no such cluster), ``InvalidInput`` (bad record or name;
    ``field`` in JSON spelling), :class:`InvalidRecord` (a stored row that no longer validates),
    :class:`shared.errors.UpstreamError` (storage failed or unreachable; message names the table).
    """

    def __init__(self, table_client):
        self._table = table_client
        self._created = CreatedOnce()

    @classmethod
    def from_connection_string(cls, connection_string: str, table: str = DEFAULT_TABLE) -> "Registry":
        return cls(StorageAccount(connection_string=connection_string).table_client(check_table_name(table, "table", setting=False),
                                                                                   **TABLE_CLIENT_KWARGS))

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] = os.environ) -> "Registry":
        """From app settings (see the module docstring); ``REGISTRY_TABLE`` names the table.
        Raises :class:`SettingError` (``REGISTRY_STORAGE_CONNECTION`` when no account is configured,
        ``REGISTRY_TABLE`` for a bad table name)."""
        table = check_table_name((environ.get("REGISTRY_TABLE") or DEFAULT_TABLE).strip(), "REGISTRY_TABLE")
        account = storage_account(environ, "REGISTRY_STORAGE_CONNECTION", services=("table",),
                                  purpose="the registry lives in Azure Table storage")
        return cls(account.table_client(table, **TABLE_CLIENT_KWARGS))

    @property
    def table_name(self) -> str:
        return self._table.table_name

    def close(self) -> None:
        self._table.close()

    def _ensure_table(self) -> None:
        if self._created.ensure(self._table.create_table, lambda exc: self._upstream("create table", exc)):
            log.info("registry: created table %s", self.table_name)

    def _upstream(self, action: str, exc: BaseException) -> errors.UpstreamError:
        detail = getattr(exc, "error_code", None) or type(exc).__name__
        return errors.UpstreamError(f"cluster registry (table {self.table_name}): {action} failed ({detail})")

    def scan(self) -> tuple[list[ClusterRecord], list[tuple[str, str]]]:
        """Every row: (valid records sorted by name, ``[(RowKey, reason), ...]`` for rows that no longer
        validate, e.g. edited by hand in the table). Raises ``UpstreamError`` when storage fails."""
        self._ensure_table()
        try:
            entities = list(self._table.query_entities(f"PartitionKey eq '{PARTITION}'"))
        except Exception as exc:  # noqa: BLE001
            raise self._upstream("list", exc) from None
        out, invalid = [], []
        for entity in entities:
            try:
                out.append(ClusterRecord.from_dict(dict(entity)))
            except errors.InvalidInput as exc:
                invalid.append((str(entity.get("RowKey")), str(exc)))
        return sorted(out, key=lambda r: r.name), sorted(invalid)

    def list(self) -> list[ClusterRecord]:
        """Every valid record, sorted by name. Rows that no longer validate are skipped with a warning
        (one bad row must not hide the fleet; :meth:`scan` returns them)."""
        records, invalid = self.scan()
        for name, reason in invalid:
            log.warning("registry: skipping invalid record %r: %s", name, reason)
        return records

    def _entity(self, name: str) -> dict | None:
        """The raw row of ``name`` (not validated), or None."""
        _check_name(name)
        self._ensure_table()
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self._table.get_entity(PARTITION, name))
        except ResourceNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"get {name}", exc) from None

    def get(self, name: str) -> ClusterRecord:
        """The record of ``name``. Raises ``NotFound`` if not registered, ``InvalidInput("name")`` for a
        bad name, :class:`InvalidRecord` when the stored row no longer validates."""
        entity = self._entity(name)
        if entity is None:
            raise errors.NotFound(f"cluster {name!r} is not registered")
        try:
            return ClusterRecord.from_dict(entity)
        except errors.InvalidInput as exc:
            raise InvalidRecord(name, str(exc)) from None

    def upsert(self, record: ClusterRecord) -> tuple[ClusterRecord, bool]:
        """Validate and store ``record`` (replacing an existing one). Returns (record, created)."""
        record = record.validate().canonical()
        self._ensure_table()
        from azure.data.tables import UpdateMode

        created = not self.exists(record.name)
        entity = {"PartitionKey": PARTITION, "RowKey": record.name, **record.to_dict()}
        if "install" in entity:  # a table property holds no object: JSON text
            import json

            entity["install"] = json.dumps(entity["install"], sort_keys=True, separators=(",", ":"))
        try:
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"upsert {record.name}", exc) from None
        log.info("registry: %s cluster %s", "added" if created else "updated", record.name)
        return record, created

    def exists(self, name: str) -> bool:
        """Whether a row (valid or not) exists for ``name``."""
        return self._entity(name) is not None

    def delete(self, name: str) -> None:
        """Remove ``name``'s record (also an invalid one); ``NotFound`` if it was not registered."""
        if not self.exists(name):
            raise errors.NotFound(f"cluster {name!r} is not registered")
        try:
            self._table.delete_entity(PARTITION, name)
        except Exception as exc:  # noqa: BLE001
            raise self._upstream(f"delete {name}", exc) from None
        log.info("registry: removed cluster %s", name)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _CLUSTER_NAME.fullmatch(name):
        raise errors.InvalidInput("name", "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
    return name


#: ``install`` fields (request spelling) and their JSON types
INSTALL_FIELDS: dict[str, type] = {
    "version": str, "branch": str, "path": str, "interval": str, "components": list, "componentsExtra": list,
    "registry": str, "networkPolicy": bool, "watchAllNamespaces": bool, "logLevel": str, "clusterDomain": str,
    "authorName": str, "authorEmail": str, "commitMessageAppendix": str, "tolerationKeys": list, "imagePullSecret": str,
    # the GitRepository (gotk-sync.yaml), and Key Vault secret names (never values) whose values the run writes
    "recurseSubmodules": bool, "sparseCheckout": list, "caFileSecret": str, "registryCredsSecret": str,
    # workload identity (shared.bootstrap.workload_identity)
    "sourceProvider": str, "workloadIdentity": dict, "sops": dict,
    # SSH (gitAuth ssh): SSH_INSTALL_FIELDS
    "sshHostkeyAlgos": list, "sshHostname": str, "privateKeySecret": str, "passwordSecret": str, "url": str,
}
_TYPE_NAMES = {str: "string", bool: "bool", list: "list of strings", dict: "JSON object"}
_INSTALL_MAX_CHARS = 16 * 1024


def _install_from_text(text: str) -> Any:
    import json

    if len(text) > _INSTALL_MAX_CHARS:
        raise errors.InvalidInput("install", f"is longer than {_INSTALL_MAX_CHARS} characters")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise errors.InvalidInput("install", "is not a JSON object") from None


def _check_install(value: Any) -> None:
    """The shape of ``install`` (no app setting read): known fields of the right JSON type, a
    component selection and options :class:`shared.flux.install.InstallOptions` accepts, a release
    version and a branch. Raises ``InvalidInput("install.<field>")``."""
    from shared.flux import install as flux_install
    from shared.flux.options import normalize_interval, normalize_path, validate_branch, validate_version
    from shared.trust import check_text

    if not isinstance(value, Mapping):
        raise errors.InvalidInput("install", "must be a JSON object")
    for key, item in value.items():
        typ = INSTALL_FIELDS.get(key) if isinstance(key, str) else None
        if typ is None:
            from shared.trust import safe_field_name

            raise errors.InvalidInput(f"install.{safe_field_name(key)}", "unknown field")
        if not isinstance(item, typ) or (typ is list and not all(isinstance(i, str) for i in item)):
            raise errors.InvalidInput(f"install.{key}", f"must be a {_TYPE_NAMES[typ]}")
        check_text(item, f"install.{key}")
    for key in ("version", "branch"):
        if key not in value:
            raise errors.InvalidInput(f"install.{key}", "is required")
    try:
        validate_version(value["version"])
        if value["version"] == "latest":
            raise errors.InvalidInput("version", "must be the release installed, not 'latest'")
        validate_branch(value["branch"])
        if normalize_path(value.get("path", "")) != value.get("path", ""):
            raise errors.InvalidInput("path", "must be in Flux's normalised form (./clusters/x)")
        if "interval" in value:
            normalize_interval(value["interval"])
        options = flux_install.InstallOptions(
            components=tuple(value.get("components", flux_install.DEFAULT_COMPONENTS)),
            components_extra=tuple(value.get("componentsExtra", ())),
            registry=value.get("registry", flux_install.DEFAULT_REGISTRY),
            log_level=value.get("logLevel", "info"), cluster_domain=value.get("clusterDomain", "cluster.local"),
        )
        options.validate()
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(f"install.{exc.field}", exc.message) from None
    _check_install_extras(value, tuple(options.selected()))


def _check_install_extras(value: Mapping[str, Any], selected: tuple[str, ...]) -> None:
    """The sparse checkout, Key Vault secret, workload identity and SSH fields of ``install``, as the
    bootstrap request's are checked (offline: no app setting read). Raises ``InvalidInput("install.<field>[.<key>]")``."""
    from shared.bootstrap import workload_identity as wi
    from shared.ports.azure.keyvault import validate_secret_name
    from shared.ports.ssh import check_algorithms
    from shared.trust import parse_git_url

    if "sourceProvider" in value:
        wi.parse_source_provider(value["sourceProvider"], where="install.sourceProvider")
    if "workloadIdentity" in value:
        # (federate needs clusterResourceId: checked when an upgrade decodes the record's request)
        wi.parse_workload_identity(value["workloadIdentity"], selected, where="install.workloadIdentity")
    if "sops" in value:
        wi.parse_sops(value["sops"], where="install.sops")
    if "sshHostkeyAlgos" in value:
        check_algorithms(value["sshHostkeyAlgos"], field="install.sshHostkeyAlgos")
    if "sshHostname" in value:
        host = value["sshHostname"]
        if "@" in host or "/" in host:
            raise errors.InvalidInput("install.sshHostname", "must be a host name with an optional port (host[:port])")
        parse_git_url(f"ssh://{host}/x", "install.sshHostname")
    for key in ("privateKeySecret", "passwordSecret", "caFileSecret", "registryCredsSecret"):
        if key in value:
            validate_secret_name(value[key], f"install.{key}")
    if "registryCredsSecret" in value and not value.get("imagePullSecret"):
        raise errors.InvalidInput("install.registryCredsSecret", "is recorded with imagePullSecret only (the Secret the "
                                                                 "credentials are written to)")
    if "sparseCheckout" in value:
        from shared.bootstrap.options import check_sparse_checkout

        check_sparse_checkout(value["sparseCheckout"], value.get("path", ""), field="install.sparseCheckout")
    if "url" in value:
        parse_git_url(value["url"], "install.url")


def register_from_bootstrap(*, name: str, kubeconfig_secret: str | None = None, cluster_resource_id: str | None = None,
                            local_accounts: bool = False, password_secret: str | None = None,
                            git_auth: str = "pat", namespace: str = "flux-system",
                            secret_name: str = "flux-system", username: str = "git", context: str | None = None,
                            allow_insecure_http: bool = False, git_url: str | None = None,
                            install: Mapping[str, Any] | None = None, registry: Registry) -> ClusterRecord:
    """Register (or update) the cluster a bootstrap just set up.

    Arguments are the bootstrap request's: the cluster, ``cluster_resource_id`` (``clusterResourceId``, with
    ``local_accounts``) or ``kubeconfig_secret`` (``kubeconfigSecret``),
    ``password_secret`` (``passwordSecret``, the PAT's Key Vault secret; required when ``git_auth`` is
    ``pat``), ``git_auth`` (``pat`` for a PAT bootstrap, ``workload-identity`` for ``sourceProvider: azure``,
    ``ssh`` for a bootstrap over SSH (an ``ssh://`` url or ``sshHostname``: ``git_url`` is then the SSH sync
    URL, and ``install`` keeps the SSH options), ``entra-bearer`` for ``withBearerToken``, which
    writes ``bearerToken`` as ``flux bootstrap git --with-bearer-token`` does), ``namespace``,
    ``secret_name`` (``secretName``, the source Secret), ``username``, ``context``, ``allow_insecure_http``
    (``allowInsecureHttp``), ``git_url`` (the sync URL the GitRepository got: rotation sends credentials
    only there), ``install`` (the install options, :data:`INSTALL_FIELDS`; None keeps what the record
    had); ``name`` is the cluster's registry name. The GitRepository is named after
    the namespace, as ``flux bootstrap`` does. Fields a bootstrap does not know (the Event Hub fields)
    are kept from an existing record. ``registry`` is where the record goes (the Function passes
    :func:`shared.services.registry`).
    Returns the stored record; raises ``InvalidInput`` (bad field, JSON spelling) or ``UpstreamError``.
    """
    try:
        current = registry.get(name)
    except errors.NotFound:
        current = None
    except InvalidRecord as exc:  # replaced by what the bootstrap knows
        log.warning("registry: replacing the invalid record of cluster %s: %s", name, exc.reason)
        current = None
    record = ClusterRecord(name=name) if current is None else current
    record = replace(record, kubeconfig_secret=kubeconfig_secret, cluster_resource_id=cluster_resource_id,
                     local_accounts=local_accounts, context=context, namespace=namespace,
                     source_secret=secret_name, git_repository=namespace, git_auth=git_auth, username=username,
                     pat_secret=password_secret, allow_insecure_http=allow_insecure_http, git_url=git_url,
                     install=install if install is not None else record.install)
    stored, _ = registry.upsert(record)
    return stored


__all__ = ["ClusterRecord", "InvalidRecord", "Registry", "SettingError", "GIT_AUTH_MODES", "INSTALL_FIELDS",
           "NO_GIT_CREDENTIAL", "SSH_INSTALL_FIELDS",
           "register_from_bootstrap"]
