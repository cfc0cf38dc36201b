"""Options of one bootstrap, as ``flux bootstrap git`` flags (CLI) or request fields (HTTP).

:class:`BootstrapOptions` holds the flags with Flux's defaults and checks them offline;
:func:`options_from_request` decodes the JSON body of ``POST /api/bootstrap`` into options and the
Key Vault references of the run. Nothing here touches a repository, a cluster or a vault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import InvalidInput, shown
from ..flux import DEFAULT_COMPONENTS, DEFAULT_NAMESPACE, DEFAULT_REGISTRY
from ..flux import install, sync
from ..flux.options import (
    DNS1123_SUBDOMAIN,
    AZURE_DEVOPS_HOSTKEY_ALGOS,
    is_azure_devops_ssh,
    normalize_interval,
    normalize_path,
    parse_timeout,
    ssh_sync_url,
    sync_url,
    validate_branch,
    validate_dns_label,
    validate_version,
)

if TYPE_CHECKING:
    from .workload_identity import WorkloadIdentity

#: Azure Functions HTTP responses must come back within 230 s; keep health waits well inside.
MAX_TIMEOUT_SECONDS = 150
#: Seconds an HTTP-triggered bootstrap may run in all (the 230 s limit less a margin for the
#: response and the registry write).
HTTP_BUDGET_SECONDS = 200
#: Entra ID scope of Azure DevOps (its well-known application id), for ``withBearerToken``.
AZURE_DEVOPS_SCOPE = "499b84ac-1321-427f-aa17-267ca6975798/.default"



@dataclass(frozen=True)
class BootstrapOptions:
    """Options of one bootstrap; names mirror ``flux bootstrap git`` flags, defaults are Flux's.

    ``url`` is ``--url`` as given (https, or http with ``allow_insecure_http``; or ``ssh://``, with
    ``token_auth`` false: SSH auth, see :attr:`ssh`); ``path`` is
    normalised (``./clusters/x`` or ``""``, see :func:`shared.flux.options.normalize_path`);
    ``interval`` is in Flux's print form (``1m0s``); ``timeout`` is in seconds: how long
    :meth:`Bootstrapper.report_health` waits for the sync objects and components (0 = check once,
    and pending is then not a failure). :meth:`validate` checks them."""

    url: str
    branch: str = "main"
    path: str = ""
    interval: str = "1m0s"
    version: str | None = None
    components: tuple[str, ...] = DEFAULT_COMPONENTS
    components_extra: tuple[str, ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    secret_name: str = DEFAULT_NAMESPACE
    username: str = "git"
    token_auth: bool = True
    with_bearer_token: bool = False
    allow_insecure_http: bool = False
    author_name: str = "Flux"
    author_email: str = ""
    commit_message_appendix: str = ""
    registry: str = DEFAULT_REGISTRY
    network_policy: bool = True
    watch_all_namespaces: bool = True
    log_level: str = "info"
    cluster_domain: str = "cluster.local"
    timeout: float = 0.0
    force: bool = False
    #: ``--ssh-hostkey-algos``; None: the default for the URL (:attr:`hostkey_algos`).
    ssh_hostkey_algos: tuple[str, ...] | None = None
    #: ``--toleration-keys``, ``--image-pull-secret``: every controller Deployment (gotk-components.yaml).
    toleration_keys: tuple[str, ...] = ()
    image_pull_secret: str = ""
    #: ``--recurse-submodules``, ``--sparse-checkout``: the GitRepository (gotk-sync.yaml).
    recurse_submodules: bool = False
    sparse_checkout: tuple[str, ...] = ()
    #: ``--ssh-hostname``: the host[:port] the cluster syncs from over SSH (an https ``url`` is then
    #: pushed to with the PAT, and synced over SSH).
    ssh_hostname: str | None = None
    #: ``--ssh-rsa-bits``: the size of an SSH key the run generates (None: 4096,
    #: :data:`shared.flux.keypair.DEFAULT_RSA_BITS`); a key given or already stored is used as it is.
    ssh_rsa_bits: int | None = None
    #: ``sourceProvider``: ``azure`` (GitRepository ``provider: azure``: workload identity, no source Secret,
    #: the app pushes with its Entra ID token) or None (secret-based); see :mod:`.workload_identity`.
    source_provider: str | None = None
    #: ``workloadIdentity``: a :class:`.workload_identity.WorkloadIdentity`, or None.
    workload_identity: "WorkloadIdentity | None" = None
    #: ``sops.provider``: ``azure-keyvault`` turns on SOPS decryption in the flux-system Kustomization.
    sops_provider: str | None = None

    @property
    def ssh(self) -> bool:
        """Whether the cluster syncs over SSH (an ``ssh://`` url, or ``ssh_hostname``): Flux's
        bootstrap without ``--token-auth``; the source Secret holds an SSH key."""
        return not self.token_auth

    @property
    def git_url(self) -> str:
        """The URL the bootstrap clones and pushes: an ``ssh://`` url as given (its user is the SSH
        user, as go-git takes it), else the https URL without user info."""
        if self.url.strip().lower().startswith("ssh://"):
            from ..trust import parse_git_url

            return parse_git_url(self.url, "url").url
        return sync_url(self.url, token_auth=True, allow_insecure_http=self.allow_insecure_http)

    @property
    def sync_url(self) -> str:
        """The GitRepository URL: token auth, https without user info
        (:func:`shared.flux.options.sync_url`); SSH, Flux's SSH URL with ``ssh_hostname``
        (:func:`shared.flux.options.ssh_sync_url`)."""
        if self.ssh:
            return ssh_sync_url(self.url, username=self.username, ssh_hostname=self.ssh_hostname)
        return sync_url(self.url, token_auth=self.token_auth, allow_insecure_http=self.allow_insecure_http)

    @property
    def hostkey_algos(self) -> tuple[str, ...]:
        """The SSH host key algorithms offered (scan, clone, push) and patched into the controllers:
        ``ssh_hostkey_algos``, else ``rsa-sha2-512,rsa-sha2-256`` when the cluster syncs from Azure
        DevOps over SSH (:func:`shared.flux.options.is_azure_devops_ssh`), else none (the client's
        defaults, SHA-1 ``ssh-rsa`` never among them)."""
        if self.ssh_hostkey_algos is not None:
            return tuple(self.ssh_hostkey_algos)
        if self.ssh and is_azure_devops_ssh(self.sync_url):
            return AZURE_DEVOPS_HOSTKEY_ALGOS
        return ()

    @property
    def author(self) -> str:
        """``Name <email>``; ``Flux <>`` by default, as ``--author-name``/``--author-email``."""
        return f"{self.author_name} <{self.author_email}>"

    def install_options(self) -> install.InstallOptions:
        """The options that shape gotk-components.yaml."""
        return install.InstallOptions(
            components=self.components,
            components_extra=self.components_extra,
            namespace=self.namespace,
            registry=self.registry,
            watch_all_namespaces=self.watch_all_namespaces,
            network_policy=self.network_policy,
            log_level=self.log_level,
            cluster_domain=self.cluster_domain,
            target_path=self.path,
            toleration_keys=self.toleration_keys,
            image_pull_secret=self.image_pull_secret,
        )

    def sync_options(self) -> sync.SyncOptions:
        """The options of gotk-sync.yaml: objects named after the namespace, as Flux names them."""
        return sync.SyncOptions(
            url=self.sync_url,
            branch=self.branch,
            interval=self.interval,
            target_path=self.path,
            namespace=self.namespace,
            name=self.namespace,
            # with workload identity there is no source Secret, and no secretRef (shared.flux.sync)
            secret="" if self.source_provider == "azure" else self.secret_name,
            recurse_submodules=self.recurse_submodules,
            sparse_checkout=list(self.sparse_checkout),
            provider=self.source_provider,
        )

    def kustomization_patches(self) -> list[dict]:
        """The patch entries this bootstrap writes into ``<path>/<namespace>/kustomization.yaml``,
        in order: the one seam through which an option patches the controllers. Each entry is one of
        :mod:`shared.flux.patches` (a ``{"patch", "target"}`` dict in Flux's documented form);
        :class:`~shared.bootstrap.runner.Bootstrapper` merges them into the file
        (:func:`shared.flux.patches.update` / :func:`~shared.flux.patches.render`: idempotent, a
        user's own entries kept) and installs the components and sync objects with the file's
        patches applied (:func:`shared.flux.kustomize.apply_kustomization`), so the first pods start
        patched. Empty by default: then the file and the install are Flux's own, byte for byte.

        An option that needs a patch adds its entries here (one block per option, in the order
        below); every entry must be recognised by :func:`shared.flux.patches.role_of`. Raises
        InvalidInput naming the option's field for a value the patch cannot hold.

        * ``sshHostkeyAlgos`` (given, or the Azure DevOps default of an SSH sync,
          :attr:`hostkey_algos`): ``--ssh-hostkey-algos=<algos>`` on source-controller and
          image-automation-controller (Flux's Azure DevOps SSH page).
        * ``workloadIdentity``: the ServiceAccount annotation ``azure.workload.identity/client-id`` (and
          ``tenant-id``) and the pod-template label ``azure.workload.identity/use: "true"`` on its
          components (Flux's workload identity page).
        * ``sops``: ``spec.decryption.provider: sops`` on the flux-system Kustomization."""
        from ..flux import patches

        entries: list[dict] = []
        if self.ssh_hostkey_algos is not None or self.hostkey_algos:
            entries.append(patches.ssh_hostkey_algos(self.ssh_hostkey_algos if self.ssh_hostkey_algos is not None
                                                     else self.hostkey_algos, field="sshHostkeyAlgos"))
        if self.workload_identity is not None:
            entries.extend(self.workload_identity.patches())
        if self.sops_provider is not None:
            entries.append(patches.sops_decryption(self.namespace, field="sops"))
        return entries

    def _check_sparse_checkout(self) -> None:
        check_sparse_checkout(self.sparse_checkout, self.path)

    def commit_message(self, title: str) -> str:
        """``title``, plus ``"\\n\\n" + appendix`` with ``--commit-message-appendix``."""
        return title + ("\n\n" + self.commit_message_appendix if self.commit_message_appendix else "")

    def validate(self) -> "BootstrapOptions":
        """Check every option that can be checked offline; raises InvalidInput naming the field
        (request spelling). Returns ``self``."""
        from ..trust import check_namespace, check_text, check_username

        for fld, value in (("branch", self.branch), ("authorName", self.author_name), ("authorEmail", self.author_email),
                           ("commitMessageAppendix", self.commit_message_appendix), ("path", self.path), ("url", self.url)):
            check_text(value, fld)
        check_username(self.username, "username")
        check_namespace(self.namespace, "namespace")
        validate_branch(self.branch)
        if self.version is not None:
            validate_version(self.version)
        self.install_options().validate()
        if not isinstance(self.secret_name, str) or len(self.secret_name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(self.secret_name):
            raise InvalidInput("secretName", f"{shown(self.secret_name)} is not a valid Secret name (DNS-1123 subdomain)")
        if self.source_provider is not None:  # before the generic URL checks, for the provider's message
            from .workload_identity import check_source_url

            check_source_url(self.url, allow_insecure_http=self.allow_insecure_http)
        self._validate_auth_mode()
        _ = self.git_url, self.sync_url  # scheme, host and password checks
        normalize_interval(self.interval)
        if not isinstance(self.timeout, (int, float)) or self.timeout < 0:
            raise InvalidInput("timeout", "must be zero or more")
        for fld, value, bad in (("authorName", self.author_name, "<>\r\n\x00"), ("authorEmail", self.author_email, "<>\r\n\x00")):
            if not isinstance(value, str) or any(c in value for c in bad):
                raise InvalidInput(fld, "must not contain '<', '>' or line breaks")
        if not isinstance(self.commit_message_appendix, str) or "\x00" in self.commit_message_appendix:
            raise InvalidInput("commitMessageAppendix", "must be text")
        if self.ssh_hostkey_algos is not None:
            from ..ports.ssh import check_algorithms

            check_text(list(self.ssh_hostkey_algos), "sshHostkeyAlgos")
            if not isinstance(self.ssh_hostkey_algos, (list, tuple)) or not all(isinstance(a, str) for a in self.ssh_hostkey_algos):
                raise InvalidInput("sshHostkeyAlgos", "must be a list of SSH host key algorithm names such as rsa-sha2-512")
            check_algorithms(self.ssh_hostkey_algos)
        if self.ssh_rsa_bits is not None:
            check_rsa_bits(self.ssh_rsa_bits)
        check_text(list(self.toleration_keys), "tolerationKeys")
        check_text(self.image_pull_secret, "imagePullSecret")
        self._check_sparse_checkout()
        from .workload_identity import check_options

        check_options(self)  # sourceProvider, workloadIdentity, sops
        self.kustomization_patches()  # each option's patch can be written
        return self

    def _validate_auth_mode(self) -> None:
        """Token auth over https (a PAT or ``withBearerToken``), or SSH: an ``ssh://`` url, or an
        https url with ``ssh_hostname`` (pushed to with the PAT, synced over SSH)."""
        from ..trust import check_text, parse_git_url

        ssh_url = isinstance(self.url, str) and self.url.strip().lower().startswith("ssh://")
        if isinstance(self.url, str) and "://" not in self.url:  # the scp-like form: its ssh:// spelling as a hint
            sync_url(self.url, token_auth=True, allow_insecure_http=self.allow_insecure_http)
        if self.ssh_hostname is not None:
            check_text(self.ssh_hostname, "sshHostname")
            if not isinstance(self.ssh_hostname, str) or "@" in self.ssh_hostname or "/" in self.ssh_hostname:
                raise InvalidInput("sshHostname", "must be a host or host:port, such as ssh.dev.azure.com")
            parse_git_url(f"ssh://{self.ssh_hostname}/x", "sshHostname")
        if self.with_bearer_token and (ssh_url or self.ssh_hostname is not None):
            raise InvalidInput("withBearerToken", "is for https; an SSH sync (ssh:// url or sshHostname) authenticates with an SSH key")
        if ssh_url and self.token_auth:
            raise InvalidInput("tokenAuth", "is for https URLs; an ssh:// url authenticates with an SSH key (privateKeySecret)")
        if not ssh_url and self.ssh_hostname is not None and self.token_auth:
            raise InvalidInput("sshHostname", "makes the cluster sync over SSH, which token auth does not do; leave tokenAuth unset")
        if not ssh_url and self.ssh_hostname is None and not self.token_auth:
            raise InvalidInput("tokenAuth", "SSH auth needs an ssh:// url, or sshHostname with an https url; otherwise leave "
                                            "tokenAuth true (a PAT from Key Vault, or withBearerToken)")


#: Largest ``sshRsaBits``: generating an RSA key of 8192 bits takes seconds, of 16384 minutes, within a run.
MAX_RSA_BITS = 8192


def check_rsa_bits(bits, field: str = "sshRsaBits") -> int:
    """``bits`` if it is a size the app generates an RSA key of: Flux's rule (fluxcd/flux2
    ``internal/flags/rsa_key_bits.go``: a multiple of 8, at least 1024), at least
    :data:`shared.bootstrap.sshkeys.MIN_RSA_BITS` (Azure DevOps' least) and at most
    :data:`MAX_RSA_BITS`. Raises InvalidInput(``field``)."""
    from .sshkeys import MIN_RSA_BITS

    if isinstance(bits, bool) or not isinstance(bits, int):
        raise InvalidInput(field, "must be an integer number of bits, e.g. 4096")
    if bits % 8 != 0:
        raise InvalidInput(field, f"RSA key bit size must be a multiple of 8 ({bits} is not), e.g. 4096")
    if bits < MIN_RSA_BITS:
        raise InvalidInput(field, f"RSA key bit size must be at least {MIN_RSA_BITS}: Azure DevOps refuses smaller RSA keys "
                                  f"(Flux allows 1024); e.g. 4096")
    if bits > MAX_RSA_BITS:
        raise InvalidInput(field, f"RSA key bit size must be at most {MAX_RSA_BITS} here (a larger key takes minutes to "
                                  "generate); e.g. 4096")
    return bits


@dataclass
class Credentials:
    """Git credentials for token auth: the PAT (``password``) or an Entra ID ``bearer_token``; the CA
    PEM that the Git server's certificate chains to (``ca_crt``, Flux's ``--ca-file``: trusted for
    the clone and pushes, written to the source Secret as ``ca.crt``); the container registry's
    ``(user, password)`` (``registry_creds``, Flux's ``--registry-creds``: written to the
    docker-registry Secret ``image_pull_secret``). For SSH the ``ssh_key``
    (:class:`shared.flux.keypair.KeyPair`, also written to the source Secret) with its
    ``ssh_passphrase``, and, with ``sshHostname``, the PAT (``password``) the bootstrap pushes over
    https with (it does not go into the source Secret)."""

    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_crt: str | None = field(default=None, repr=False)
    registry_creds: tuple[str, str] | None = field(default=None, repr=False)
    ssh_key: object | None = field(default=None, repr=False)
    ssh_passphrase: str | None = field(default=None, repr=False)


_TYPE_NAMES = {str: "a string", bool: "a boolean", list: "a list of strings", dict: "an object", int: "an integer"}


def check_sparse_checkout(entries, path: str, field: str = "sparseCheckout") -> None:
    """``sparseCheckout`` (``--sparse-checkout``) ``entries`` are folders of the repository (relative,
    no ``..``, at most 100), and one of them must hold the sync ``path``: source-controller's artifact
    has only those folders, so the Kustomization would find nothing to sync. Raises
    ``InvalidInput(field)``."""
    from ..trust import check_text

    entries = check_text(list(entries), field)
    if len(entries) > 100:
        raise InvalidInput(field, "lists more than 100 folders")
    cleaned = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip() or any(c in entry for c in "\r\n\x00"):
            raise InvalidInput(field, "entries must be folder paths such as clusters/my-cluster")
        parts = [p for p in entry.strip().split("/") if p not in ("", ".")]
        if entry.strip().startswith("/") or ".." in parts or not parts:
            raise InvalidInput(field, f"{shown(entry)} must be a folder inside the repository, such as clusters/my-cluster")
        cleaned.append(parts)
    if cleaned and path:
        target = [p for p in path.split("/") if p not in ("", ".")]
        if not any(target[:len(c)] == c for c in cleaned):
            raise InvalidInput(field, f"does not include the sync path {path}: source-controller would check "
                                      "out only the folders listed and the Kustomization would find nothing; add it")


def options_from_request(body: object) -> tuple[BootstrapOptions, dict]:
    """Decode the JSON body of ``POST /api/bootstrap``.

    Fields mirror ``flux bootstrap git`` flags in camelCase: ``url`` (required), ``branch``,
    ``path``, ``interval``, ``version``, ``components``, ``componentsExtra``, ``namespace``,
    ``secretName``, ``username``, ``tokenAuth``, ``withBearerToken``, ``allowInsecureHttp``, ``authorName``,
    ``authorEmail``, ``commitMessageAppendix``, ``registry``, ``networkPolicy``,
    ``watchAllNamespaces``, ``logLevel``, ``clusterDomain``, ``timeout``, ``force``, ``sshHostkeyAlgos``
    (a list of SSH host key algorithm names), ``sshHostname``, ``sshRsaBits`` (the size of a generated
    SSH key, 2048 to 8192, default 4096), ``tolerationKeys``, ``imagePullSecret``,
    ``recurseSubmodules``, ``sparseCheckout``, and for Microsoft Entra workload identity
    (:mod:`.workload_identity`) ``sourceProvider`` (``azure``: no source Secret and no PAT, the app
    pushes with the Function's Entra ID token), ``workloadIdentity`` (``{clientId, tenantId?,
    identityResourceId?, components?, federate?}``) and ``sops`` (``{provider: azure-keyvault}``). Credentials are named,
    never sent: ``passwordSecret`` (Key Vault secret holding the PAT, required for an https url unless
    ``withBearerToken``, where the Function's managed identity gets an Entra ID token for Azure
    DevOps instead, as ``flux bootstrap git --with-bearer-token`` sends a token; with an ``ssh://``
    url, optional: the passphrase of the private key), ``privateKeySecret`` (SSH: the Key Vault
    secret holding the private key, PEM or OpenSSH; when absent, the key of Key Vault secret
    ``flux-ssh-<clusterName>``, generated there on first use: see
    :mod:`shared.bootstrap.sshkeys`). SSH auth (``tokenAuth`` false, its default with an ``ssh://``
    url or ``sshHostname``) mirrors ``flux bootstrap git`` without ``--token-auth``. The cluster is
    named by exactly one of ``clusterResourceId`` (an AKS managed cluster's Azure resource ID, reached
    with the Function's managed identity; ``localAccounts: true`` uses its static admin credential
    instead) and ``kubeconfigSecret`` (Key Vault secret holding the cluster's kubeconfig, optional
    ``context``): see :class:`shared.clusters.ClusterRef`. ``clusterName`` is the cluster's name in the
    registry that credential rotation walks (default: the last segment of ``path``, else
    ``kubeconfigSecret``, else the managed cluster's name; a DNS-1123 label).
    A JSON ``null`` means the default. ``interval`` and ``timeout`` are Go durations (``1m``,
    ``90s``); ``timeout`` is at most 150 s (the whole request must finish within Azure's 230 s).
    Returns the validated options and ``{"passwordSecret", "kubeconfigSecret", "context",
    "clusterResourceId", "localAccounts", "cluster", "clusterName", "destination", "privateKeySecret",
    "sshKeySecret", "syncDestination"}`` (``cluster``: the
    :class:`~shared.clusters.ClusterRef`; ``clusterResourceId`` in its canonical spelling;
    ``destination``: the :class:`shared.trust.GitDestination` the URL cloned and pushed passed,
    ``GIT_ALLOWED_HOSTS``; ``syncDestination``: the same for the sync URL, where the source
    Secret's key goes; ``sshKeySecret``: the Key Vault secret of the SSH key, ``privateKeySecret``
    or the generated key's name, None for token auth; ``caFileSecret``/``registryCredsSecret``: Key
    Vault secrets holding the Git server's CA (PEM) and the registry's ``user:password`` (needs
    ``imagePullSecret``), read by :mod:`shared.bootstrap.service`; ``registry`` passed
    ``FLUX_ALLOWED_REGISTRIES``).

    Raises InvalidInput naming the first bad field (text with a lone surrogate included; a refused
    destination or registry is a :class:`shared.trust.DestinationRefused`); unknown fields, and credential values
    (``password``, ``token``, ``pat``, ``bearerToken``, ``kubeconfig``, a password in ``url``), are
    errors too."""
    from ..trust import GitPolicy, check_registry, check_text, safe_field_name

    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    for forbidden in ("password", "token", "pat", "bearerToken", "kubeconfig"):
        if forbidden in body:
            raise InvalidInput(forbidden, "credentials are never sent in the request; name the Key Vault secret instead (passwordSecret, kubeconfigSecret)")
    if "registryCreds" in body:
        raise InvalidInput("registryCreds", "credentials are never sent in the request; name the Key Vault secret holding "
                                            "'user:password' instead (registryCredsSecret)")
    if "caFile" in body:
        raise InvalidInput("caFile", "the app reads no local file named by a request; put the CA's PEM in a Key Vault "
                                     "secret and name it (caFileSecret)")
    spec: dict[str, tuple[type, object]] = {
        "url": (str, None), "branch": (str, "main"), "path": (str, ""), "interval": (str, "1m"),
        "version": (str, None), "components": (list, None), "componentsExtra": (list, []),
        "namespace": (str, DEFAULT_NAMESPACE), "secretName": (str, DEFAULT_NAMESPACE),
        "username": (str, "git"), "tokenAuth": (bool, None), "withBearerToken": (bool, False),
        "allowInsecureHttp": (bool, False),
        "authorName": (str, "Flux"), "authorEmail": (str, ""), "commitMessageAppendix": (str, ""),
        "registry": (str, DEFAULT_REGISTRY), "networkPolicy": (bool, True), "watchAllNamespaces": (bool, True),
        "logLevel": (str, "info"), "clusterDomain": (str, "cluster.local"), "timeout": (str, "0s"),
        "passwordSecret": (str, None), "kubeconfigSecret": (str, None), "context": (str, None),
        "clusterName": (str, None), "force": (bool, False),
        "clusterResourceId": (str, None), "localAccounts": (bool, False),
        "sshHostkeyAlgos": (list, None),
        "tolerationKeys": (list, []), "imagePullSecret": (str, ""), "registryCredsSecret": (str, None),
        "recurseSubmodules": (bool, False), "sparseCheckout": (list, []), "caFileSecret": (str, None),
        "privateKeySecret": (str, None), "sshHostname": (str, None), "sshRsaBits": (int, None),
        "sourceProvider": (str, None), "workloadIdentity": (dict, None), "sops": (dict, None),
    }
    unknown = sorted(set(body) - set(spec), key=repr)
    if unknown:
        raise InvalidInput(safe_field_name(unknown[0]), "unknown field")
    values = {}
    for name, (typ, default) in spec.items():
        value = body.get(name)
        if value is None:  # absent or JSON null: the default
            value = default
        elif not isinstance(value, typ):
            raise InvalidInput(name, f"must be {_TYPE_NAMES[typ]}")
        check_text(value, name)
        values[name] = value
    from . import workload_identity as wi

    source_provider = wi.parse_source_provider(values["sourceProvider"])
    bearer = values["withBearerToken"]
    if not values["url"]:
        raise InvalidInput("url", "is required")
    if "://" not in values["url"]:  # the scp-like form: refused with its ssh:// spelling
        sync_url(values["url"], token_auth=True, allow_insecure_http=False)
    ssh_url = values["url"].strip().lower().startswith("ssh://")
    token_auth = values["tokenAuth"]
    if token_auth is None:  # Flux's --token-auth is a choice; here it follows from the URL
        token_auth = bearer or not (ssh_url or values["sshHostname"] is not None)
    if bearer and values["passwordSecret"]:
        raise InvalidInput("passwordSecret", "is not used with withBearerToken (the Function's managed identity gets the token)")
    if source_provider == wi.AZURE:
        for name in ("passwordSecret", "caFileSecret", "privateKeySecret", "sshHostname"):
            if values[name]:
                raise InvalidInput(name, "is not used with sourceProvider azure: source-controller signs in to Azure DevOps "
                                         "over https with workload identity, and the app pushes with the Function's Entra "
                                         "ID token (no source Secret: nothing to hold a PAT, a CA or an SSH key)")
    entra = bearer or source_provider == wi.AZURE  # the app's git credential is its Entra ID token
    if not entra and not ssh_url and not values["passwordSecret"]:
        raise InvalidInput("passwordSecret", "is required")
    if values["privateKeySecret"] is not None and token_auth:
        raise InvalidInput("privateKeySecret", "is used with SSH auth only: an ssh:// url, or sshHostname")
    from ..clusters import ClusterRef
    from ..ports.azure.keyvault import validate_secret_name

    for name in ("passwordSecret", "privateKeySecret"):
        if values[name] is not None:
            validate_secret_name(values[name], name)
    cluster = ClusterRef.parse(kubeconfig_secret=values["kubeconfigSecret"] or None,
                               cluster_resource_id=values["clusterResourceId"],
                               context=values["context"], local_accounts=values["localAccounts"])
    components = tuple(values["components"]) if values["components"] is not None else DEFAULT_COMPONENTS
    workload = wi.parse_workload_identity(values["workloadIdentity"], components + tuple(values["componentsExtra"]))
    wi.check_cluster(workload, cluster)
    timeout = parse_timeout(values["timeout"], "timeout")
    if timeout > MAX_TIMEOUT_SECONDS:
        raise InvalidInput("timeout", f"must be at most {MAX_TIMEOUT_SECONDS}s (Azure answers an HTTP request within 230 s)")
    opts = BootstrapOptions(
        url=values["url"],
        branch=values["branch"],
        path=normalize_path(values["path"]),
        interval=normalize_interval(values["interval"], "interval"),
        version=values["version"],
        components=components,
        components_extra=tuple(values["componentsExtra"]),
        namespace=values["namespace"],
        secret_name=values["secretName"],
        username=values["username"],
        token_auth=token_auth,
        with_bearer_token=bearer,
        allow_insecure_http=values["allowInsecureHttp"],
        author_name=values["authorName"],
        author_email=values["authorEmail"],
        commit_message_appendix=values["commitMessageAppendix"],
        registry=values["registry"],
        network_policy=values["networkPolicy"],
        watch_all_namespaces=values["watchAllNamespaces"],
        log_level=values["logLevel"],
        cluster_domain=values["clusterDomain"],
        timeout=timeout,
        force=values["force"],
        ssh_hostkey_algos=tuple(values["sshHostkeyAlgos"]) if values["sshHostkeyAlgos"] is not None else None,
        toleration_keys=tuple(values["tolerationKeys"]),
        image_pull_secret=values["imagePullSecret"],
        recurse_submodules=values["recurseSubmodules"],
        sparse_checkout=tuple(values["sparseCheckout"]),
        ssh_hostname=values["sshHostname"],
        ssh_rsa_bits=values["sshRsaBits"],
        source_provider=source_provider,
        workload_identity=workload,
        sops_provider=wi.parse_sops(values["sops"]),
    ).validate()
    for name in ("caFileSecret", "registryCredsSecret"):
        if values[name] is not None:
            validate_secret_name(values[name], name)
    if values["registryCredsSecret"] and not opts.image_pull_secret:
        raise InvalidInput("registryCredsSecret", "requires imagePullSecret to be set (the name of the docker-registry "
                                                  "Secret the credentials are written to), as --registry-creds needs --image-pull-secret")
    # Where the credential will go, and the image registry: app-setting allowlists (shared.trust),
    # checked before any Key Vault, cluster or git call.
    policy = GitPolicy.from_settings()
    destination = policy.destination(opts.git_url, allow_insecure_http=opts.allow_insecure_http, bearer=entra, field="url")
    sync_destination = destination if opts.sync_url == opts.git_url else policy.destination(
        opts.sync_url, field="sshHostname" if opts.ssh_hostname else "url")
    check_registry(opts.registry, field="registry")
    if values["clusterName"] is not None:
        cluster_name = validate_dns_label(values["clusterName"], "clusterName")
    else:
        cluster_name = opts.path.rsplit("/", 1)[-1] if opts.path else cluster.default_name()
        try:
            validate_dns_label(cluster_name, "clusterName")
        except InvalidInput:
            raise InvalidInput("clusterName", f"the default, {shown(cluster_name)} (the last segment of path, else "
                               f"{cluster.field}), is not a DNS-1123 label; set clusterName") from None
    refs = {
        "passwordSecret": values["passwordSecret"],
        "kubeconfigSecret": cluster.kubeconfig_secret,
        "context": cluster.context,
        "clusterResourceId": str(cluster.resource_id) if cluster.resource_id is not None else None,
        "localAccounts": cluster.local_accounts,
        "cluster": cluster,
        "clusterName": cluster_name,
        "destination": destination,
        "caFileSecret": values["caFileSecret"],
        "registryCredsSecret": values["registryCredsSecret"],
        "syncDestination": sync_destination,
        "privateKeySecret": values["privateKeySecret"],
        "sshKeySecret": (values["privateKeySecret"] or default_ssh_key_secret(cluster_name)) if opts.ssh else None,
    }
    return opts, refs


def default_ssh_key_secret(cluster_name: str) -> str:
    """The Key Vault secret of the SSH key generated for cluster ``cluster_name`` (a DNS-1123
    label, so the name is valid): ``flux-ssh-<clusterName>``."""
    return f"flux-ssh-{cluster_name}"

