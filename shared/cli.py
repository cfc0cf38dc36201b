"""The command line, running the same core as the Functions.

``python -m shared install --export`` prints gotk-components.yaml, as ``flux install --export``;
``python -m shared bootstrap git --url ... --token-auth`` bootstraps, as ``flux bootstrap git``.
Flag names and defaults follow the Flux CLI (cmd/flux/bootstrap.go, bootstrap_git.go,
install.go). The PAT is read from the environment variable named by ``--password-env`` or, as in
Flux, ``GIT_PASSWORD``; never from argv, where it would land in shell history and process lists.
Progress goes to stderr (``► …``/``✔ …``); failures end with one ``✗`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .flux import DEFAULT_COMPONENTS, DEFAULT_NAMESPACE, DEFAULT_REGISTRY


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean")


def _add_install_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--version", default=None, help="Flux version, e.g. v2.9.2 (default: the distribution's, or the newest known)")
    p.add_argument("--manifests", default=None, help="distribution source: file, folder, https:// URL or oci:// reference (default: $FLUX_MANIFESTS, else oci://ghcr.io/fluxcd/flux-manifests:<version>)")
    p.add_argument("--components", type=_csv, default=list(DEFAULT_COMPONENTS), help="comma-separated components (default: %(default)s)")
    p.add_argument("--components-extra", type=_csv, default=[], help="image-reflector-controller,image-automation-controller,source-watcher")
    p.add_argument("-n", "--namespace", default=os.environ.get("FLUX_SYSTEM_NAMESPACE", DEFAULT_NAMESPACE))
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--network-policy", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--watch-all-namespaces", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "error"])
    p.add_argument("--cluster-domain", default="cluster.local")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description="Flux bootstrap for AKS and Azure DevOps, as the Function runs it.")
    sub = parser.add_subparsers(dest="command", required=True)

    inst = sub.add_parser("install", help="render the Flux components")
    inst.add_argument("--export", action="store_true", required=True, help="print gotk-components.yaml to stdout")
    _add_install_flags(inst)

    boot = sub.add_parser("bootstrap", help="bootstrap Flux")
    bsub = boot.add_subparsers(dest="provider", required=True)
    git = bsub.add_parser("git", help="bootstrap from a plain Git (Azure DevOps) repository")
    _add_install_flags(git)
    git.add_argument("--url", required=True, help="Git URL, e.g. https://dev.azure.com/org/project/_git/repo")
    git.add_argument("--branch", default="main")
    git.add_argument("--path", default="", help="path in the repository, e.g. clusters/my-cluster")
    git.add_argument("--interval", default="1m", help="GitRepository interval (default %(default)s)")
    git.add_argument("-u", "--username", default="git")
    git.add_argument("-p", "--password", default=None, help=argparse.SUPPRESS)
    git.add_argument("--password-env", default="GIT_PASSWORD", metavar="VAR", help="environment variable holding the PAT (default %(default)s)")
    git.add_argument("--token-auth", action="store_true", help="use the PAT for HTTPS; the sync URL loses its user info")
    git.add_argument("--with-bearer-token", action="store_true", help="send the password as 'Authorization: Bearer' (an Entra ID token for Azure DevOps); implies --token-auth")
    git.add_argument("--allow-insecure-http", action="store_true")
    git.add_argument("--secret-name", default=DEFAULT_NAMESPACE)
    git.add_argument("--author-name", default="Flux")
    git.add_argument("--author-email", default="")
    git.add_argument("--commit-message-appendix", default="")
    target = git.add_mutually_exclusive_group()
    target.add_argument("--cluster-resource-id", default=None, metavar="ID",
                        help="the AKS cluster's Azure resource ID (az aks show --query id), reached through ARM with "
                             "your Azure identity (DefaultAzureCredential); no kubeconfig needed")
    target.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    git.add_argument("--local-accounts", action="store_true",
                     help="with --cluster-resource-id: use the cluster's static admin credential (listClusterAdminCredential)")
    git.add_argument("--context", default=None)
    git.add_argument("--timeout", default="5m", help="how long to wait for the sync objects and components to become ready, as a Go duration; 0s checks once (default %(default)s, as Flux)")
    git.add_argument("-s", "--silent", action="store_true", help="accepted for compatibility")
    git.add_argument("--force", action="store_true", help="take over a Flux installation managed by another tool (e.g. the AKS extension)")
    git.add_argument("--ssh-hostkey-algos", type=_csv, default=None, metavar="ALGOS",
                     help="SSH host key algorithms, e.g. rsa-sha2-512,rsa-sha2-256; also patched into source-controller and "
                          "image-automation-controller through flux-system/kustomization.yaml")
    _add_rotation_commands(sub)
    return parser


def _add_rotation_commands(sub) -> None:
    """``registry list|add|remove`` and ``rotate [--cluster NAME]`` (issue #4). Storage and Key Vault
    come from the app settings in the environment (``REGISTRY_STORAGE_CONNECTION`` or
    ``AzureWebJobsStorage``, ``KEY_VAULT_URL``); tokens from ``DefaultAzureCredential``."""
    reg = sub.add_parser("registry", help="list, add or remove clusters of the rotation registry")
    rsub = reg.add_subparsers(dest="action", required=True)
    rsub.add_parser("list", help="print the registered clusters as JSON")
    add = rsub.add_parser("add", help="register a cluster (replaces an existing record of the same name)")
    add.add_argument("name", help="cluster name (a-z, 0-9, '-')")
    which = add.add_mutually_exclusive_group(required=True)
    which.add_argument("--cluster-resource-id", default=None, metavar="ID",
                       help="the AKS cluster's Azure resource ID, reached with the Function's managed identity")
    which.add_argument("--kubeconfig-secret", default=None, help="Key Vault secret holding the kubeconfig")
    add.add_argument("--local-accounts", action="store_true",
                     help="with --cluster-resource-id: use the cluster's static admin credential")
    add.add_argument("--context", default=None)
    add.add_argument("-n", "--namespace", default="flux-system")
    add.add_argument("--secret-name", dest="source_secret", default="flux-system", help="source Secret (default %(default)s)")
    add.add_argument("--git-repository", default="flux-system", help="GitRepository to annotate (default %(default)s)")
    add.add_argument("--git-auth", default="pat", choices=["pat", "entra-bearer", "entra-password", "none"])
    add.add_argument("-u", "--username", default="git")
    add.add_argument("--pat-secret", default=None, help="Key Vault secret holding the PAT (gitAuth pat)")
    add.add_argument("--git-url", default=None, help="the repository URL the Git credential may be sent to "
                     "(the GitRepository's spec.url; required unless --git-auth none)")
    add.add_argument("--allow-insecure-http", action="store_true")
    add.add_argument("--eventhub-secret", default=None, help="notification Provider Secret (keys token, address)")
    add.add_argument("--eventhub-name", default=None, help="Event Hub name (written as address)")
    add.add_argument("--eventhub-namespace", default=None, help="Event Hubs namespace (the Provider's channel)")
    rm = rsub.add_parser("remove", help="unregister a cluster")
    rm.add_argument("name")
    rot = sub.add_parser("rotate", help="rotate credentials now (all registered clusters, or one)")
    rot.add_argument("--cluster", default=None, help="only this registered cluster")


def _install(args) -> int:
    """``install --export``: gotk-components.yaml on stdout, as ``flux install --export``. Errors
    raise InvalidInput naming the flag (``--components``, ``--version``...)."""
    from .errors import InvalidInput
    from .flux import distribution, install
    from .flux.options import validate_version

    opts = install.InstallOptions(
        components=tuple(args.components), components_extra=tuple(args.components_extra), namespace=args.namespace,
        registry=args.registry, network_policy=args.network_policy, watch_all_namespaces=args.watch_all_namespaces,
        log_level=args.log_level, cluster_domain=args.cluster_domain,
    )
    try:
        opts.validate()
        if args.version is not None:
            validate_version(args.version)
        dist = distribution.load(args.manifests, args.version)
        content = install.generate(dist, opts).content
    except InvalidInput as exc:
        raise InvalidInput(_BOOTSTRAP_FLAGS.get(exc.field, exc.field), exc.message) from None
    sys.stdout.write(content)
    return 0


def _bootstrap(args) -> int:
    """``bootstrap git``: the same runner as the HTTP trigger, with the PAT from the environment
    and the cluster named by ``--cluster-resource-id`` (ARM and your Azure identity) or a kubeconfig file. Exit 0; failures raise (one ``✗`` line, exit 1), including a
    failed health check (``bootstrap failed with N health check failure(s): …``)."""
    from . import bootstrap as runner
    from .errors import InvalidInput
    from .flux.options import normalize_interval, normalize_path, parse_timeout

    if args.password is not None:
        raise InvalidInput("--password", "is not read from the command line; put the PAT in an environment variable and pass --password-env VAR (default GIT_PASSWORD)")
    if not (args.token_auth or args.with_bearer_token):
        raise InvalidInput("--token-auth", "is required: only token auth (PAT or --with-bearer-token over HTTPS) is supported")
    password = os.environ.get(args.password_env) or os.environ.get("GIT_PASSWORD")
    if not password:
        raise InvalidInput("--password-env", f"environment variable {args.password_env} is empty or unset")
    from .trust import GitPolicy, check_registry, check_text

    for flag, value in vars(args).items():  # argv that is not UTF-8 arrives with lone surrogates
        check_text(value, "--" + flag.replace("_", "-"))
    timeout = parse_timeout(args.timeout, "--timeout")
    opts = runner.BootstrapOptions(
        url=args.url, branch=args.branch, path=normalize_path(args.path, "--path"),
        interval=normalize_interval(args.interval, "--interval"), version=args.version,
        components=tuple(args.components), components_extra=tuple(args.components_extra),
        namespace=args.namespace, secret_name=args.secret_name, username=args.username, token_auth=True,
        with_bearer_token=args.with_bearer_token,
        allow_insecure_http=args.allow_insecure_http, author_name=args.author_name, author_email=args.author_email,
        commit_message_appendix=args.commit_message_appendix, registry=args.registry, network_policy=args.network_policy,
        watch_all_namespaces=args.watch_all_namespaces, log_level=args.log_level, cluster_domain=args.cluster_domain,
        timeout=timeout, force=args.force,
        ssh_hostkey_algos=tuple(args.ssh_hostkey_algos) if args.ssh_hostkey_algos is not None else None,
    )
    try:
        opts.validate()
        # The PAT from the environment goes only where GIT_ALLOWED_HOSTS allows, as in the Function.
        policy = GitPolicy.from_settings()
        destination = policy.destination(opts.sync_url, allow_insecure_http=opts.allow_insecure_http,
                                         bearer=args.with_bearer_token, field="url")
        policy.check_resolution(destination, field="url")
        check_registry(opts.registry, field="registry")
        dist = runner.prepare(opts, manifests=args.manifests)
    except InvalidInput as exc:
        raise InvalidInput(_BOOTSTRAP_FLAGS.get(exc.field, exc.field), exc.message) from None
    from .clusters import BOOTSTRAP, ClusterAccess, ClusterRef

    access = ClusterAccess()
    if args.cluster_resource_id is not None:
        if args.context is not None:
            raise InvalidInput("--context", "is only used with --kubeconfig")
        try:
            ref = ClusterRef.parse(cluster_resource_id=args.cluster_resource_id, context=args.context,
                                   local_accounts=args.local_accounts)
            cluster = access.connect(ref, purpose=BOOTSTRAP, namespace=opts.namespace)
        except InvalidInput as exc:
            raise InvalidInput(_BOOTSTRAP_FLAGS.get(exc.field, exc.field), exc.message) from None
    else:
        if args.local_accounts:
            raise InvalidInput("--local-accounts", "is only used with --cluster-resource-id")
        kubeconfig_path = args.kubeconfig or (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None) or str(Path.home() / ".kube" / "config")
        try:
            kubeconfig = Path(kubeconfig_path).read_text()
        except OSError as exc:
            raise InvalidInput("--kubeconfig", f"cannot read {kubeconfig_path}: {exc.strerror}") from None
        try:  # the kubelogin form of an AKS user gets a token of your Azure identity; the plugin never runs
            cluster = access.from_kubeconfig(kubeconfig, args.context, field="--kubeconfig")
        except InvalidInput as exc:
            raise InvalidInput("--kubeconfig", f"{kubeconfig_path}: {exc.message}") from None
    progress = runner.Progress(sink=lambda line: print(line, file=sys.stderr, flush=True))
    credentials = runner.Credentials(bearer_token=password) if args.with_bearer_token else runner.Credentials(password=password)
    try:
        result = runner.Bootstrapper(opts, credentials, cluster, dist, progress=progress).run()
    finally:
        cluster.close()
    failure = result.health_error()
    if failure:
        raise RuntimeError(failure)
    return 0


#: request field (JSON spelling) -> ``bootstrap git`` flag, so errors name what the user typed
_BOOTSTRAP_FLAGS = {"url": "--url", "branch": "--branch", "path": "--path", "interval": "--interval",
                    "version": "--version", "components": "--components", "componentsExtra": "--components-extra",
                    "namespace": "--namespace", "secretName": "--secret-name", "username": "--username",
                    "tokenAuth": "--token-auth", "authorName": "--author-name", "authorEmail": "--author-email",
                    "commitMessageAppendix": "--commit-message-appendix", "registry": "--registry",
                    "networkPolicy": "--network-policy", "watchAllNamespaces": "--watch-all-namespaces",
                    "logLevel": "--log-level", "clusterDomain": "--cluster-domain", "timeout": "--timeout",
                    "manifests": "--manifests", "clusterResourceId": "--cluster-resource-id",
                    "localAccounts": "--local-accounts", "context": "--context",
                    "sshHostkeyAlgos": "--ssh-hostkey-algos"}


#: record field (JSON spelling) -> ``registry add`` flag, so errors name what the user typed
_REGISTRY_FLAGS = {"name": "NAME", "kubeconfigSecret": "--kubeconfig-secret", "context": "--context",
                   "clusterResourceId": "--cluster-resource-id", "localAccounts": "--local-accounts",
                   "namespace": "--namespace", "sourceSecret": "--secret-name", "gitRepository": "--git-repository",
                   "gitAuth": "--git-auth", "username": "--username", "patSecret": "--pat-secret",
                   "allowInsecureHttp": "--allow-insecure-http", "gitUrl": "--git-url", "eventHubSecret": "--eventhub-secret",
                   "eventHubName": "--eventhub-name", "eventHubNamespace": "--eventhub-namespace"}


def _registry(args) -> int:
    """``registry list`` prints ``{"clusters": [...]}`` (plus ``"invalid": [{"name", "error"}]`` for
    stored rows that no longer validate); ``add``/``remove`` print one ``✔`` line to stderr. Errors
    raise ``InvalidInput`` naming the flag (``--pat-secret``), ``NotFound``, ``UpstreamError``."""
    import json

    from . import services
    from .errors import InvalidInput
    from .rotation.registry import ClusterRecord

    registry = services.registry()
    if args.action == "list":
        records, invalid = registry.scan()
        body = {"clusters": [r.to_dict() for r in records]}
        if invalid:
            body["invalid"] = [{"name": n, "error": e} for n, e in invalid]
        print(json.dumps(body, indent=2))
        return 0
    if args.action == "remove":
        registry.delete(args.name)
        print(f"✔ removed {args.name}", file=sys.stderr)
        return 0
    record = ClusterRecord(
        name=args.name, kubeconfig_secret=args.kubeconfig_secret, cluster_resource_id=args.cluster_resource_id,
        local_accounts=args.local_accounts, context=args.context, namespace=args.namespace,
        source_secret=args.source_secret, git_repository=args.git_repository, git_auth=args.git_auth,
        username=args.username, pat_secret=args.pat_secret, allow_insecure_http=args.allow_insecure_http,
        git_url=args.git_url, eventhub_secret=args.eventhub_secret, eventhub_name=args.eventhub_name,
        eventhub_namespace=args.eventhub_namespace)
    try:
        record = record.validate().canonical().check_policy()
    except InvalidInput as exc:
        raise InvalidInput(_REGISTRY_FLAGS.get(exc.field, exc.field), exc.message) from None
    _, created = registry.upsert(record)
    print(f"✔ {'added' if created else 'updated'} {args.name}", file=sys.stderr)
    return 0


def _rotate(args) -> int:
    """Prints the summary JSON (:meth:`shared.rotation.RotationSummary.to_dict`); exit 1 when a
    cluster failed. Warnings and failures are also logged to stderr."""
    import json

    from . import rotation

    summary = rotation.rotate_cluster(args.cluster) if args.cluster else rotation.rotate_all()
    print(json.dumps(summary.to_dict(), indent=2))
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .errors import FluxOpsError

    try:
        if args.command == "install":
            return _install(args)
        if args.command == "registry":
            return _registry(args)
        if args.command == "rotate":
            return _rotate(args)
        return _bootstrap(args)
    except (FluxOpsError, RuntimeError) as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("✗ interrupted", file=sys.stderr)
        return 130
