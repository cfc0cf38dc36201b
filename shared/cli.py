"""The command line, running the same core as the Functions.

``.venv/bin/python -m shared install --export`` prints gotk-components.yaml, as ``flux install --export``;
``.venv/bin/python -m shared bootstrap git --url ... --token-auth`` bootstraps, as ``flux bootstrap git``
(``--url ssh://...`` over SSH: the key from ``--private-key-file``, or from Key Vault, generated
there on first use and printed, as Flux prints its deploy key).
Flag names, defaults and help texts follow the Flux CLI v2.9.4 (cmd/flux/main.go, bootstrap.go,
bootstrap_git.go, install.go); ``--help`` prints each default as cobra does (``(default "main")``,
``(default [a,b])``, ``(default 5m0s)``). The PAT is read from the environment variable named by
``--password-env`` or, as in Flux, ``GIT_PASSWORD``; never from argv, where it would land in shell
history and process lists.

Progress goes to stderr (``► …``/``✔ …``). Every failure, a bad flag that the argument parser finds
included, ends with one ``✗ <flag>: <what is wrong and what to do>`` line and exit code 1.

Adding a flag: declare it with :func:`flag` (or :func:`bool_flag`) in the group it belongs to; its help
text and default then show in ``--help``, and parser errors about it name it. Errors raised with a
request field (``InvalidInput("sshHostname", ...)``) name the flag through :func:`flag_for`
(camelCase → ``--kebab-case``, plus the few names that differ in :data:`FIELD_FLAGS`).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path

from .flux import DEFAULT_COMPONENTS, DEFAULT_NAMESPACE, DEFAULT_REGISTRY
from .flux.keypair import DEFAULT_RSA_BITS

#: How the README and every message spell the command (the interpreter that has the dependencies).
PROG = ".venv/bin/python -m shared"
#: Go strconv.ParseBool, which cobra uses for ``--flag=value`` of a bool flag.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


# -- errors ---------------------------------------------------------------------------------------


class UsageError(Exception):
    """A command line the parser refused: ``flag`` (``--url``, or the command word) and what to do."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag, self.message = flag, message


#: Request/record field (JSON spelling) → flag, where :func:`flag_for`'s camelCase rule does not give it.
FIELD_FLAGS = {"sourceSecret": "--secret-name", "eventHubSecret": "--eventhub-secret", "eventHubName": "--eventhub-name",
               "eventHubNamespace": "--eventhub-namespace", "name": "NAME", "caFileSecret": "--ca-file",
               "registryCredsSecret": "--registry-creds", "passwordSecret": "--password-env",
               "workloadIdentity": "--workload-identity-client-id", "workloadIdentity.clientId": "--workload-identity-client-id",
               "workloadIdentity.tenantId": "--workload-identity-tenant-id",
               "workloadIdentity.identityResourceId": "--workload-identity-resource-id",
               "workloadIdentity.components": "--workload-identity-components",
               "workloadIdentity.federate": "--workload-identity-federate",
               "sops": "--sops-provider", "sops.provider": "--sops-provider"}


#: Flags of older Flux releases that Flux v2.9 no longer has either → what to do (fluxcd/flux2 cmd/flux/bootstrap.go).
REMOVED_FLAGS = {"--arch": "Flux v2.9 has no --arch either (deprecated, then removed: the controller images are "
                           "multi-arch, AMD64, ARM64 and ARMv7); drop it"}
#: Flux v2.9 flags that are known here but refused → why, and what to do (see _refuse_unsupported).
UNSUPPORTED_FLAGS = {
    "--gpg-key-ring": "commit signing with GPG is not supported: the bootstrap commits are pushed unsigned; drop the "
                      "--gpg-* flags",
    "--gpg-key-id": "commit signing with GPG is not supported: the bootstrap commits are pushed unsigned; drop the "
                    "--gpg-* flags",
    "--gpg-passphrase": "commit signing with GPG is not supported: the bootstrap commits are pushed unsigned; drop the "
                        "--gpg-* flags (a passphrase on the command line also lands in shell history)",
    "--ssh-signing-key-file": "commit signing with an SSH key is not supported: the bootstrap commits are pushed "
                              "unsigned; drop the --ssh-signing-* flags",
    "--ssh-signing-password": "commit signing with an SSH key is not supported: the bootstrap commits are pushed "
                              "unsigned; drop the --ssh-signing-* flags (a passphrase on the command line also lands in "
                              "shell history)",
    "--ssh-signing-passphrase": "commit signing with an SSH key is not supported: the bootstrap commits are pushed "
                                "unsigned; drop the --ssh-signing-* flags (a passphrase on the command line also lands "
                                "in shell history)",
    "--ssh-signing-reuse-private-key": "commit signing with an SSH key is not supported: the bootstrap commits are "
                                       "pushed unsigned; drop the --ssh-signing-* flags",
    "--ssh-ecdsa-curve": "ECDSA keys are not generated: Azure DevOps accepts only RSA SSH keys; drop it (the generated "
                         "key is RSA, --ssh-rsa-bits sets its size)",
}


def flag_for(field: str) -> str:
    """The flag a field error is about: ``componentsExtra`` → ``--components-extra``; names that are
    already flags (``--url``), environment variables (``FLUX_MANIFESTS``) or positionals pass through."""
    if field in FIELD_FLAGS:
        return FIELD_FLAGS[field]
    if not field or field.startswith("-") or field.isupper() or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", field):
        return field
    return "--" + re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", field).lower()


# -- parser ---------------------------------------------------------------------------------------


def _go_bool(value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean; use true or false (e.g. --flag=false)")


def _go_int(value: str) -> int:
    """Go strconv.Atoi, which Flux's int flags use: an optional sign and decimal digits."""
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer, e.g. 4096")
    return int(value)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help as cobra prints it: the value type as metavar, each default after the text."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=40, width=120)

    def _get_help_string(self, action):
        text = action.help or ""
        shown = getattr(action, "default_shown", None)
        if shown:
            text += f" (default {shown})"
        return text.replace("%", "%%")

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _format_usage(self, usage, actions, groups, prefix):
        # bool flags take an optional value (--flag=false); show them as cobra does, without one
        return re.sub(r" \]", "]", super()._format_usage(usage, actions, groups, prefix))

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        if action.nargs == 0 or getattr(action, "is_bool", False):
            return ", ".join(action.option_strings)
        return ", ".join(action.option_strings) + " " + self._metavar_formatter(action, action.dest)(1)[0]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` naming the flag (one ``✗`` line,
    exit 1) instead of printing the usage and exiting 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's hook for every parse error
        raise _usage_error(self, message)

    def parse_args(self, args=None, namespace=None):
        # argparse reports a subcommand's unknown flags from the top-level parser; name the subcommand's.
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            raise _usage_error(_deepest(self, ns), "unrecognized arguments: " + " ".join(extras))
        return ns


def _deepest(parser: argparse.ArgumentParser, ns) -> argparse.ArgumentParser:
    """The (sub)command parser ``ns`` was parsed by: ``bootstrap git``'s for ``bootstrap git --x``."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(ns, sub.dest, None) if sub else None
        if chosen not in (sub.choices if sub else {}):
            return parser
        parser = sub.choices[chosen]


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _action(parser: argparse.ArgumentParser, flag: str):
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> UsageError:
    """Turn argparse's message into ``(flag, what to do)``."""
    help_hint = f"run '{parser.prog} --help' for the flags"
    m = re.match(r"the following arguments are required: (.+)$", message)
    if m:
        flag = m.group(1).split(", ")[0]
        action = _action(parser, flag)
        example = getattr(action, "example", None)
        return UsageError(flag, "is required" + (f", e.g. {flag} {example}" if example else "") + f"; {help_hint}")
    m = re.match(r"argument ([^:]+): (.+)$", message, re.S)
    if m:
        names, why = m.group(1), m.group(2)
        flag = names.split("/")[-1]
        if why.startswith("invalid choice:"):
            if not flag.startswith("-"):  # a command word
                return UsageError(parser.prog, why.replace("invalid choice", "unknown command") + f"; {help_hint}")
            m = re.match(r"invalid choice: (.+) \(choose from (.+)\)$", why)
            given, choices = (m.group(1), m.group(2).replace("'", "")) if m else (why, "")
            return UsageError(flag, f"{given} is not one of {choices}")
        if why.startswith("expected one argument"):
            action = _action(parser, flag)
            example = getattr(action, "example", None)
            return UsageError(flag, "needs a value" + (f", e.g. {flag} {example}" if example else "") + f"; {help_hint}")
        if why.startswith("not allowed with argument"):
            other = why.rsplit(" ", 1)[-1]
            return UsageError(flag, f"cannot be combined with {other}; give one of the two")
        if why.startswith("ignored explicit argument"):
            return UsageError(flag, f"takes no value ({why}); give it alone")
        return UsageError(flag, why)
    m = re.match(r"unrecognized arguments: (.+)$", message)
    if m:
        token = m.group(1).split(" ")[0]
        flag = token.split("=", 1)[0]
        if not flag.startswith("-"):
            return UsageError(parser.prog, f"unexpected argument {token!r}; {help_hint}")
        if flag in REMOVED_FLAGS:
            return UsageError(flag, f"unknown flag: {REMOVED_FLAGS[flag]}")
        close = difflib.get_close_matches(flag, _option_strings(parser), n=1, cutoff=0.6)
        return UsageError(flag, "unknown flag" + (f"; did you mean {close[0]}?" if close else "") + f" ({help_hint})")
    m = re.match(r"ambiguous option: (\S+) could match (.+)$", message)
    if m:
        return UsageError(m.group(1).split("=", 1)[0], f"is ambiguous: it could be {m.group(2)}; spell the flag out")
    return UsageError(parser.prog, f"{message}; {help_hint}")


def flag(group, *names: str, default=None, help: str, metavar: str | None = None, example: str | None = None,
         shown: str | None = None, **kwargs):
    """Declare a value flag on ``group`` (a parser or argument group) with Flux's help ``text``;
    ``--help`` shows the default as cobra does unless it is empty (``shown`` overrides that text);
    ``example`` completes "is required"/"needs a value" errors."""
    if metavar is None:
        metavar = "strings" if isinstance(default, list) or kwargs.get("type") is _csv else "string"
    action = group.add_argument(*names, default=default, help=help, metavar=metavar, **kwargs)
    if shown is None:
        if isinstance(default, (list, tuple)):
            shown = f"[{','.join(default)}]" if default else None
        elif isinstance(default, str):
            shown = f'"{default}"' if default else None
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            shown = f"{default:g}" if isinstance(default, float) else str(default)
    action.default_shown = shown
    action.example = example
    return action


def bool_flag(group, *names: str, default: bool = False, help: str):
    """A bool flag as cobra has them: ``--flag`` sets true, ``--flag=false`` (or ``--flag false``)
    sets false; any other value is an error naming the flag."""
    action = group.add_argument(*names, nargs="?", const=True, default=default, type=_go_bool, help=help, metavar="")
    action.default_shown = "true" if default else None
    action.is_bool = True
    return action


# -- commands -------------------------------------------------------------------------------------


def _add_install_flags(p) -> None:
    """Flags of ``flux install`` / ``flux bootstrap`` that shape gotk-components.yaml (cmd/flux/bootstrap.go)."""
    flag(p, "-v", "--version", help="toolkit version, when specified the manifests are downloaded from "
         "https://github.com/fluxcd/flux2/releases (here: the distribution's version, else v2.9.4)", example="v2.9.4")
    flag(p, "--manifests", help="path to the manifest directory: the Flux distribution, a gotk-components.yaml file, "
         "a folder holding one, an https:// URL or an oci:// reference (default: $FLUX_MANIFESTS, else "
         "oci://ghcr.io/fluxcd/flux-manifests:<version>)", example="../shared/flux/golden/talos-v2.9.2-6comp/gotk-components.yaml")
    flag(p, "--components", type=_csv, default=list(DEFAULT_COMPONENTS),
         help="list of components, accepts comma-separated values")
    flag(p, "--components-extra", type=_csv, default=[],
         help="list of components in addition to those supplied or defaulted, accepts values such as "
              "'image-reflector-controller,image-automation-controller,source-watcher'")
    flag(p, "--registry", default=DEFAULT_REGISTRY, example="myacr.azurecr.io/fluxcd",
         help="container registry where the Flux controller images are published (must be in FLUX_ALLOWED_REGISTRIES)")
    bool_flag(p, "--watch-all-namespaces", default=True,
              help="watch for custom resources in all namespaces, if set to false it will only watch the namespace "
                   "where the Flux controllers are installed")
    bool_flag(p, "--network-policy", default=True,
              help="setup Kubernetes network policies to deny ingress access to the Flux controllers from other namespaces")
    flag(p, "--log-level", default="info", choices=["debug", "info", "error"],
         help="log level, available options are: (debug, info, error)")
    flag(p, "--cluster-domain", default="cluster.local", help="internal cluster domain")


def _add_global_flags(p, *, kube: bool) -> None:
    """Flux's root flags (cmd/flux/main.go) that make sense here."""
    flag(p, "-n", "--namespace", default=os.environ.get("FLUX_SYSTEM_NAMESPACE") or DEFAULT_NAMESPACE,
         help="the namespace scope for this operation (environment variable FLUX_SYSTEM_NAMESPACE sets the default)")
    if kube:
        flag(p, "--timeout", default="5m", shown="5m0s", metavar="duration", example="10m",
             help="timeout for this operation: the whole bootstrap, health checks included; 0s checks health once "
                  "and bounds nothing")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Flux bootstrap for AKS and Azure DevOps, as the Function runs it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=Parser)

    inst = sub.add_parser("install", help="print the Flux components (flux install --export)",
                          description="Render gotk-components.yaml as 'flux install --export' does.")
    bool_flag(inst, "--export", help="write the install manifests to stdout and exit (required: this command only exports)")
    _add_install_flags(inst)
    _add_pod_flags(inst)
    _add_global_flags(inst, kube=False)

    boot = sub.add_parser("bootstrap", help="deploy Flux on a cluster the GitOps way",
                          description="The bootstrap sub-commands push the Flux manifests to a Git repository "
                                      "and deploy Flux on the cluster.")
    bsub = boot.add_subparsers(dest="provider", required=True, metavar="provider", parser_class=Parser)
    git = bsub.add_parser("git", help="deploy Flux on a cluster connected to a Git repository (Azure DevOps)",
                          description=_GIT_DESCRIPTION)
    _add_bootstrap_git_flags(git)
    _add_rotation_commands(sub)
    _add_fleet_commands(sub)
    return parser


_GIT_DESCRIPTION = """\
The bootstrap git command commits the Flux manifests to the branch of a Git repository. And then it
configures the target cluster to synchronize with that repository. If the Flux components are present
on the cluster, the bootstrap command will perform an upgrade if needed.

examples:
  # Azure DevOps over HTTPS with a PAT from the environment
  GIT_PASSWORD=<PAT> .venv/bin/python -m shared bootstrap git --token-auth \\
    --url=https://dev.azure.com/<org>/<project>/_git/<repository> --path=clusters/my-cluster

  # An AKS cluster named by its resource ID (no kubeconfig needed)
  .venv/bin/python -m shared bootstrap git --token-auth --url=... \\
    --cluster-resource-id=$(az aks show -g <rg> -n <cluster> --query id -o tsv)
"""


def _add_pod_flags(p) -> None:
    """Flags that change every controller Deployment (pkg/manifestgen/install/templates.go node-selector patch)."""
    flag(p, "--toleration-keys", type=_csv, default=[], example="CriticalAddonsOnly",
         help="list of toleration keys used to schedule the controller pods onto nodes with matching taints")
    flag(p, "--image-pull-secret", default="", example="regcred",
         help="Kubernetes secret name used for pulling the controller images from a private registry")


def _add_bootstrap_git_flags(git) -> None:
    g = git.add_argument_group("bootstrap git flags")
    flag(g, "--url", required=True, example="https://dev.azure.com/<org>/<project>/_git/<repository>",
         help="Git repository URL")
    flag(g, "--interval", default="1m", shown="1m0s", metavar="duration", help="sync interval")
    flag(g, "--path", default="", example="clusters/my-cluster",
         help="path relative to the repository root, when specified the cluster sync will be scoped to this path")
    flag(g, "-u", "--username", default="git", help="basic authentication username")
    g.add_argument("-p", "--password", default=None, help=argparse.SUPPRESS)
    flag(g, "--password-env", default="GIT_PASSWORD", metavar="VAR", example="FLEET_PAT",
         help="environment variable holding the basic authentication password (the PAT, or with --with-bearer-token "
              "the token; over SSH the passphrase of --private-key-file or --private-key-secret); the password is never "
              "read from the command line")
    bool_flag(g, "-s", "--silent", help="assumes the deploy key is already setup, skips confirmation")
    bool_flag(g, "--allow-insecure-http", help="allows insecure HTTP connections (only to a host listed exactly in GIT_ALLOWED_HOSTS)")
    bool_flag(g, "--with-bearer-token", help="use the password as a bearer token for Git authentication (an Entra ID "
              "token for Azure DevOps); implies --token-auth")

    b = git.add_argument_group("bootstrap flags")
    _add_install_flags(b)
    _add_pod_flags(b)
    flag(b, "--branch", default="main", help="Git branch")
    bool_flag(b, "--recurse-submodules", help="when enabled, configures the GitRepository source to initialize and include "
              "Git submodules in the artifact it produces")
    flag(b, "--sparse-checkout", type=_csv, default=[], example="clusters/my-cluster,infrastructure",
         help="list of directories of the repository that the GitRepository source checks out, accepts comma-separated "
              "values (all of the repository by default)")
    bool_flag(b, "--token-auth", help="when enabled, the personal access token will be used instead of the SSH deploy "
              "key (required for an https --url, unless --with-bearer-token or --ssh-hostname)")
    flag(b, "--ssh-hostkey-algos", type=_csv, default=None, metavar="strings", example="rsa-sha2-512,rsa-sha2-256",
         help="list of host key algorithms to be used by the CLI for SSH connections (default for Azure DevOps: "
              "rsa-sha2-512,rsa-sha2-256); also patched into source-controller and image-automation-controller "
              "through flux-system/kustomization.yaml")
    flag(b, "--ssh-hostname", example="ssh.dev.azure.com",
         help="SSH hostname, to be used when the SSH host differs from the HTTPS one (an https --url is pushed to "
              "with the PAT; the cluster syncs over SSH)")
    flag(b, "--ssh-key-algorithm", default="rsa", choices=["rsa", "ecdsa", "ed25519"], metavar="publicKeyAlgorithm",
         help="SSH public key algorithm (rsa, ecdsa, ed25519) of a generated key: only rsa here, the one Azure DevOps "
              "accepts (Flux's default, ecdsa, is refused with the reason)")
    flag(b, "--ssh-rsa-bits", type=_go_int, default=None, shown=str(DEFAULT_RSA_BITS), metavar="rsaKeyBits", example="4096",
         help="SSH RSA public key bit size of a generated key (multiples of 8; here from 2048, the least Azure DevOps "
              "accepts, to 8192; Flux's default is 2048)")
    flag(b, "--ssh-ecdsa-curve", metavar="ecdsaCurve", example="p384",
         help="SSH ECDSA public key curve (p256, p384, p521); not supported: Azure DevOps accepts only RSA keys")
    flag(b, "--private-key-file", example="~/.ssh/flux-azure",
         help="path to a private key file used for authenticating to the Git SSH server (RSA; its passphrase in "
              "--password-env)")
    flag(b, "--private-key-secret", example="fleet-ssh-key",
         help="Key Vault secret (KEY_VAULT_URL) holding the SSH private key; with neither this nor --private-key-file, "
              "the key of secret flux-ssh-<last segment of --path>, generated there on first use")
    flag(b, "--secret-name", default=DEFAULT_NAMESPACE,
         help="name of the secret the sync credentials can be found in or stored to")
    flag(b, "--ca-file", example="ado-server-ca.pem",
         help="path to TLS CA file used for validating self-signed certificates (PEM; trusted for the Git server "
              "besides the system CAs and written to the source secret as ca.crt)")
    flag(b, "--registry-creds", help="container registry credentials in the format 'user:password', requires "
         "--image-pull-secret to be set; never given on the command line here: use --registry-creds-env")
    flag(b, "--registry-creds-env", metavar="VAR", example="FLUX_REGISTRY_CREDS",
         help="environment variable holding the container registry credentials as 'user:password' (Flux's "
              "--registry-creds); the docker-registry secret --image-pull-secret is created from them")
    flag(b, "--author-name", default="Flux", help="author name for Git commits")
    flag(b, "--author-email", default="", help="author email for Git commits")
    # Commit signing (Flux's --gpg-* and, since v2.9, --ssh-signing-*): known, so that a script using
    # them gets the reason (_refuse_unsupported), not "unknown flag" and a wrong "did you mean".
    flag(b, "--gpg-key-ring", help="path to GPG key ring for signing commits; not supported: the commits are pushed unsigned")
    flag(b, "--gpg-passphrase", help="passphrase for decrypting GPG private key; not supported (and never read from the "
         "command line)")
    flag(b, "--gpg-key-id", help="key id for selecting a particular key; not supported: the commits are pushed unsigned")
    flag(b, "--ssh-signing-key-file", help="path to an SSH private key file for signing commits; not supported: the "
         "commits are pushed unsigned")
    flag(b, "--ssh-signing-password", help="passphrase of --ssh-signing-key-file; not supported (and never read from the "
         "command line)")
    b.add_argument("--ssh-signing-passphrase", default=None, help=argparse.SUPPRESS)  # Flux's hidden alias
    bool_flag(b, "--ssh-signing-reuse-private-key", help="sign commits with the --private-key-file key; not supported: "
              "the commits are pushed unsigned")
    flag(b, "--commit-message-appendix", default="", help="string to add to the commit messages, e.g. '[ci skip]'")
    bool_flag(b, "--force", help="override existing Flux installation if it's managed by a different tool such as Helm "
              "(e.g. the AKS microsoft.flux extension)")

    k = git.add_argument_group("cluster flags")
    target = k.add_mutually_exclusive_group()
    flag(target, "--cluster-resource-id", metavar="ID", example="/subscriptions/<sub>/resourceGroups/<rg>/providers/"
         "Microsoft.ContainerService/managedClusters/<cluster>",
         help="the AKS cluster's Azure resource ID (az aks show --query id), reached through ARM with your Azure "
              "identity (DefaultAzureCredential); no kubeconfig needed")
    flag(target, "--kubeconfig", help="Path to the kubeconfig file to use for CLI requests (default: $KUBECONFIG, "
         "then ~/.kube/config)", example="~/.kube/config")
    bool_flag(k, "--local-accounts", help="with --cluster-resource-id: use the cluster's static admin credential "
              "(listClusterAdminCredential) instead of your Entra ID identity")
    flag(k, "--context", help="The name of the kubeconfig context to use (default: the current context)")
    flag(k, "--kube-api-qps", type=float, default=50.0, metavar="float32",
         help="The maximum queries-per-second of requests sent to the Kubernetes API. Accepted for Flux parity and "
              "ignored: this CLI sends a few dozen requests, one at a time")
    flag(k, "--kube-api-burst", type=int, default=300, metavar="int",
         help="The maximum burst queries-per-second of requests sent to the Kubernetes API. Accepted for Flux parity "
              "and ignored")

    w = git.add_argument_group("workload identity flags (no secrets: Flux on Microsoft Entra workload identity)")
    flag(w, "--source-provider", default="generic", choices=["generic", "azure"],
         help="the GitRepository's provider: azure signs source-controller in to Azure DevOps with its workload identity "
              "(Flux v2.4+); no source Secret and no PAT, the CLI pushes with your Entra ID token")
    flag(w, "--workload-identity-client-id", metavar="GUID", example="00000000-0000-0000-0000-000000000000",
         help="client ID of the user-assigned managed identity the controllers use (az identity show --query clientId)")
    flag(w, "--workload-identity-tenant-id", metavar="GUID", help="its Microsoft Entra tenant ID (optional annotation)")
    flag(w, "--workload-identity-resource-id", metavar="ID", help="its resource ID (az identity show --query id): the "
         "client ID is checked against it, and the federated identity credentials are created on it")
    flag(w, "--workload-identity-components", type=_csv, default=None, metavar="strings",
         help="the controllers given the identity (default: the selected ones that talk to Azure: source-, kustomize-, "
              "notification-, image-reflector- and image-automation-controller)")
    w.add_argument("--workload-identity-federate", nargs="?", const=True, default=None, type=_go_bool, metavar="",
                   help="create the federated identity credentials (default: true with --workload-identity-resource-id; "
                        "needs --cluster-resource-id)")
    flag(w, "--sops-provider", choices=["azure-keyvault"], help="turn on SOPS decryption in the flux-system Kustomization "
         "(kustomize-controller decrypts with its workload identity)")

    r = git.add_argument_group("global flags")
    _add_global_flags(r, kube=True)
    bool_flag(r, "--verbose", help="print generated objects (the sync manifests, and the names and keys of the "
              "Secrets, never their values) and debug logs")


def _add_fleet_commands(sub) -> None:
    """``fleet status [-o table|json] [--names GLOB] [--concurrency N]`` (issue #12): the fleet's status,
    as ``GET /api/fleet/status``, with the app settings in the environment."""
    fleet = sub.add_parser("fleet", help="the fleet's status")
    fsub = fleet.add_subparsers(dest="action", required=True)
    st = fsub.add_parser("status", help="per registered cluster: Flux in Git and on the cluster, Ready, revisions, "
                                        "rotation, PAT expiry, last operation")
    st.add_argument("-o", "--output", choices=["table", "json"], default="table")
    st.add_argument("--names", default=None, metavar="GLOB", help="only clusters whose registry name matches")
    st.add_argument("--concurrency", type=int, default=None, help="clusters read at once (default $FLEET_STATUS_CONCURRENCY or 16)")


def _fleet(args) -> int:
    """Prints the status (a table, or ``-o json`` the JSON of ``GET /api/fleet/status``); exit 1 when a
    cluster is failed or unreachable."""
    import json

    from .errors import InvalidInput
    from .fleet.status import fleet_status, format_table

    if args.concurrency is not None and not 1 <= args.concurrency <= 64:
        raise InvalidInput("--concurrency", "must be from 1 to 64")
    status = fleet_status(names=args.names, concurrency=args.concurrency)
    print(json.dumps(status, indent=2) if args.output == "json" else format_table(status))
    return 1 if any(r["state"] in ("failed", "unreachable") for r in status["clusters"]) else 0


def _add_rotation_commands(sub) -> None:
    """``registry list|add|remove`` and ``rotate [--cluster NAME]`` (issue #4). Storage and Key Vault
    come from the app settings in the environment (``REGISTRY_STORAGE_CONNECTION`` or
    ``AzureWebJobsStorage``, ``KEY_VAULT_URL``); tokens from ``DefaultAzureCredential``."""
    reg = sub.add_parser("registry", help="list, add or remove clusters of the rotation registry")
    rsub = reg.add_subparsers(dest="action", required=True, metavar="action", parser_class=Parser)
    rsub.add_parser("list", help="print the registered clusters as JSON")
    add = rsub.add_parser("add", help="register a cluster (replaces an existing record of the same name)")
    add.add_argument("name", help="cluster name (a-z, 0-9, '-')")
    which = add.add_mutually_exclusive_group(required=True)
    flag(which, "--cluster-resource-id", metavar="ID",
         help="the AKS cluster's Azure resource ID, reached with the Function's managed identity")
    flag(which, "--kubeconfig-secret", help="Key Vault secret holding the kubeconfig")
    bool_flag(add, "--local-accounts", help="with --cluster-resource-id: use the cluster's static admin credential")
    flag(add, "--context", help="kubeconfig context (default: the current context)")
    flag(add, "-n", "--namespace", default="flux-system", help="namespace of the Flux objects")
    flag(add, "--secret-name", dest="source_secret", default="flux-system", help="source Secret")
    flag(add, "--git-repository", default="flux-system", help="GitRepository to annotate")
    flag(add, "--git-auth", default="pat", choices=["pat", "entra-bearer", "entra-password", "workload-identity", "ssh", "none"],
         help="how source-controller authenticates: pat, entra-bearer, entra-password, workload-identity, ssh (an SSH "
              "key in the source Secret, not rotated; --git-url is the ssh:// URL it syncs from) or none")
    flag(add, "-u", "--username", default="git", help="basic authentication username")
    flag(add, "--pat-secret", help="Key Vault secret holding the PAT (git auth pat)")
    flag(add, "--git-url", help="the repository URL the Git credential may be sent to "
         "(the GitRepository's spec.url; required unless --git-auth none or workload-identity)")
    bool_flag(add, "--allow-insecure-http", help="allows insecure HTTP connections")
    flag(add, "--eventhub-secret", help="notification Provider Secret (keys token, address)")
    flag(add, "--eventhub-name", help="Event Hub name (written as address)")
    flag(add, "--eventhub-namespace", help="Event Hubs namespace (the Provider's channel)")
    rm = rsub.add_parser("remove", help="unregister a cluster")
    rm.add_argument("name", help="cluster name")
    rot = sub.add_parser("rotate", help="rotate credentials now (all registered clusters, or one)")
    flag(rot, "--cluster", help="only this registered cluster (default: all)")


# -- running --------------------------------------------------------------------------------------


def _distribution(args, deadline: float | None = None):
    """The Flux distribution named by ``--manifests`` (else ``FLUX_MANIFESTS``, else the OCI artifact),
    with errors that say which of the three to fix; a download is capped at ``deadline`` (the
    ``--timeout`` of ``bootstrap git``, monotonic seconds), and a download it cut short names
    ``--timeout``."""
    import time

    from .errors import InvalidInput, NotFound, UpstreamError
    from .flux import distribution

    source = args.manifests
    named = "--manifests" if source else ("FLUX_MANIFESTS" if os.environ.get("FLUX_MANIFESTS") else None)
    try:
        return distribution.load(source, args.version, deadline=deadline)
    except NotFound as exc:
        where = named or "--version"
        raise InvalidInput(where, f"{exc}; give a gotk-components.yaml file (flux install --export output with every "
                                  "component), a folder holding one, an https:// URL or an oci:// reference") from None
    except UpstreamError as exc:
        if deadline is not None and time.monotonic() >= deadline:
            raise InvalidInput("--timeout", f"{exc}: the run took longer than --timeout while loading the Flux "
                                            "distribution; give a longer --timeout, or a local one with --manifests FILE") from None
        if named:
            raise InvalidInput(named, str(exc)) from None
        raise InvalidInput("--manifests", f"{exc}; with no access to ghcr.io, pass --manifests FILE or set FLUX_MANIFESTS "
                                          "(a Flux distribution: flux install --export output with every component, e.g. "
                                          "../shared/flux/golden/talos-v2.9.2-6comp/gotk-components.yaml)") from None


def _install(args) -> int:
    """``install --export``: gotk-components.yaml on stdout, as ``flux install --export``. Errors
    raise InvalidInput naming the flag (``--components``, ``--version``...)."""
    from .errors import InvalidInput
    from .flux import install
    from .flux.options import validate_version
    from .trust import check_registry

    if not args.export:
        raise InvalidInput("--export", "is required: this command only prints the manifests (install --export); "
                                       "bootstrap a cluster with 'bootstrap git'")
    opts = install.InstallOptions(
        components=tuple(args.components), components_extra=tuple(args.components_extra), namespace=args.namespace,
        registry=args.registry, network_policy=args.network_policy, watch_all_namespaces=args.watch_all_namespaces,
        log_level=args.log_level, cluster_domain=args.cluster_domain,
        toleration_keys=tuple(args.toleration_keys), image_pull_secret=args.image_pull_secret,
    )
    opts.validate()
    check_registry(opts.registry, field="registry")
    if args.version is not None:
        validate_version(args.version)
    content = install.generate(_distribution(args), opts).content
    sys.stdout.write(content)
    return 0


def _bootstrap(args) -> int:
    """``bootstrap git``: the same runner as the HTTP trigger, with the PAT from the environment
    and the cluster named by ``--cluster-resource-id`` (ARM and your Azure identity) or a kubeconfig
    file. ``--timeout`` bounds the whole run from here on. Exit 0; failures raise (one ``✗`` line,
    exit 1), including a failed health check (``bootstrap failed with N health check failure(s): …``)."""
    import time

    from . import bootstrap as runner
    from .errors import InvalidInput
    from .flux.options import normalize_interval, normalize_path, parse_timeout

    started = time.monotonic()
    _refuse_unsupported(args)
    if args.password is not None:
        raise InvalidInput("--password", "is not read from the command line; put the PAT in an environment variable and pass --password-env VAR (default GIT_PASSWORD)")
    if args.registry_creds is not None:
        raise InvalidInput("--registry-creds", "is not read from the command line; put 'user:password' in an environment "
                                               "variable and pass --registry-creds-env VAR")
    if "://" not in args.url:  # the scp-like form (or no scheme): refused with the spelling to use
        from .flux.options import sync_url

        sync_url(args.url, token_auth=True, allow_insecure_http=args.allow_insecure_http, field="--url")
    ssh_url = args.url.strip().lower().startswith("ssh://")
    ssh = ssh_url or args.ssh_hostname is not None  # Flux's bootstrap without --token-auth
    if ssh_url and (args.token_auth or args.with_bearer_token):
        raise InvalidInput("--with-bearer-token" if args.with_bearer_token else "--token-auth",
                           "is for https URLs; an ssh:// url authenticates with an SSH key (--private-key-file, "
                           "--private-key-secret, or one generated into Key Vault)")
    azure = args.source_provider == "azure"  # workload identity: your Entra ID token pushes, no PAT
    if azure and args.ssh_hostname is not None:
        raise InvalidInput("--ssh-hostname", "is not used with --source-provider azure: source-controller syncs over https "
                                             "with its workload identity")
    if not ssh and not (args.token_auth or args.with_bearer_token or azure):
        raise InvalidInput("--token-auth", "is required: this CLI authenticates with a token (a PAT over HTTPS, or "
                                           "--with-bearer-token), or with an SSH key for an ssh:// url; add --token-auth")
    if (args.private_key_file or args.private_key_secret) and not ssh:
        raise InvalidInput("--private-key-file" if args.private_key_file else "--private-key-secret",
                           "is used with an ssh:// url or --ssh-hostname")
    from .trust import GitPolicy, check_registry, check_text

    for name, value in vars(args).items():  # argv that is not UTF-8 arrives with lone surrogates
        check_text(value, "--" + name.replace("_", "-"))
    timeout = parse_timeout(args.timeout, "--timeout")
    from .bootstrap import workload_identity as wi

    wi_flags = {"clientId": args.workload_identity_client_id, "tenantId": args.workload_identity_tenant_id,
                "identityResourceId": args.workload_identity_resource_id, "components": args.workload_identity_components,
                "federate": args.workload_identity_federate}
    workload = (wi.parse_workload_identity({k: v for k, v in wi_flags.items() if v is not None},
                                           tuple(args.components) + tuple(args.components_extra))
                if any(v is not None for v in wi_flags.values()) else None)
    opts = runner.BootstrapOptions(
        url=args.url, branch=args.branch, path=normalize_path(args.path, "--path"),
        interval=normalize_interval(args.interval, "--interval"), version=args.version,
        components=tuple(args.components), components_extra=tuple(args.components_extra),
        namespace=args.namespace, secret_name=args.secret_name, username=args.username, token_auth=not ssh,
        with_bearer_token=args.with_bearer_token,
        allow_insecure_http=args.allow_insecure_http, author_name=args.author_name, author_email=args.author_email,
        commit_message_appendix=args.commit_message_appendix, registry=args.registry, network_policy=args.network_policy,
        watch_all_namespaces=args.watch_all_namespaces, log_level=args.log_level, cluster_domain=args.cluster_domain,
        timeout=timeout, force=args.force,
        ssh_hostkey_algos=tuple(args.ssh_hostkey_algos) if args.ssh_hostkey_algos is not None else None,
        toleration_keys=tuple(args.toleration_keys), image_pull_secret=args.image_pull_secret,
        recurse_submodules=args.recurse_submodules, sparse_checkout=tuple(args.sparse_checkout),
        ssh_hostname=args.ssh_hostname, ssh_rsa_bits=args.ssh_rsa_bits,
        source_provider=wi.parse_source_provider(args.source_provider),
        workload_identity=workload,
        sops_provider=wi.parse_sops({"provider": args.sops_provider} if args.sops_provider else None),
    )
    opts.validate()
    if azure and args.ca_file:
        raise InvalidInput("--ca-file", "is not used with --source-provider azure: there is no source Secret to hold ca.crt")
    ca_crt = _ca_file(args.ca_file)
    registry_creds = _registry_creds(args)
    password = None if azure else os.environ.get(args.password_env) or os.environ.get("GIT_PASSWORD")
    if not password and not ssh_url and not azure:
        raise InvalidInput("--password-env", f"environment variable {args.password_env} is empty or unset; export the PAT "
                                             f"in it ({args.password_env}=<PAT>) or name another with --password-env VAR")
    # The PAT (or the SSH key) goes only where GIT_ALLOWED_HOSTS allows, as in the Function.
    policy = GitPolicy.from_settings()
    destination = policy.destination(opts.git_url, allow_insecure_http=opts.allow_insecure_http,
                                     bearer=args.with_bearer_token or azure, field="url")
    policy.check_resolution(destination, field="url")
    sync_destination = destination
    if opts.sync_url != opts.git_url:  # SSH: where the cluster sends its key
        where = "sshHostname" if opts.ssh_hostname else "url"
        sync_destination = policy.destination(opts.sync_url, field=where)
        policy.check_resolution(sync_destination, field=where)
    check_registry(opts.registry, field="registry")
    dist = _distribution(args, started + timeout if timeout > 0 else None)
    runner.prepare(opts, distribution=dist)
    # the passphrase of a key of your own (an ssh:// url: GIT_PASSWORD is the passphrase, as Flux's --password)
    passphrase = password if ssh_url and (args.private_key_file or args.private_key_secret) else None
    ssh_key, ssh_refs = _cli_ssh_key(args, opts, destination, sync_destination, passphrase) if ssh else (None, None)
    from .clusters import BOOTSTRAP, ClusterAccess, ClusterRef

    access = ClusterAccess()
    if args.cluster_resource_id is not None:
        if args.context is not None:
            raise InvalidInput("--context", "is only used with --kubeconfig")
        ref = ClusterRef.parse(cluster_resource_id=args.cluster_resource_id, context=args.context,
                               local_accounts=args.local_accounts)
        wi.check_cluster(opts.workload_identity, ref)
        cluster = access.connect(ref, purpose=BOOTSTRAP, namespace=opts.namespace)
    else:
        if args.local_accounts:
            raise InvalidInput("--local-accounts", "is only used with --cluster-resource-id")
        ref = ClusterRef()  # a kubeconfig file: no ARM view of the cluster
        wi.check_cluster(opts.workload_identity, ref)
        kubeconfig_path = args.kubeconfig or (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None) or str(Path.home() / ".kube" / "config")
        try:
            kubeconfig = Path(kubeconfig_path).expanduser().read_text()
        except OSError as exc:
            raise InvalidInput("--kubeconfig", f"cannot read {kubeconfig_path}: {exc.strerror}; name the cluster's kubeconfig "
                                               "file with --kubeconfig FILE, or an AKS cluster with --cluster-resource-id") from None
        try:  # the kubelogin form of an AKS user gets a token of your Azure identity; the plugin never runs
            from .ports.kube import flatten_local_files

            # your own file may name its certificates and token files (minikube's do), as kubectl reads them
            kubeconfig = flatten_local_files(kubeconfig, Path(kubeconfig_path).expanduser().parent)
            cluster = access.from_kubeconfig(kubeconfig, args.context, field="--kubeconfig")
        except InvalidInput as exc:
            raise InvalidInput("--kubeconfig", f"{kubeconfig_path}: {exc.message}") from None
        cluster.unreachable_hint = cluster.unreachable_hint or (
            f"check that {kubeconfig_path}" + (f" (context {args.context})" if args.context else "")
            + " names a running cluster this machine can reach, or name another with --kubeconfig/--context")
    if timeout > 0:  # every request to the cluster is capped at what is left of --timeout
        cluster.deadline = started + timeout
    progress = runner.Progress(sink=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        federation = None
        if opts.workload_identity is not None:  # ARM reads: the OIDC issuer, the identity; nothing written yet
            federation = wi.Federation.prepare(opts, ref, aks=access.aks if ref.resource_id is not None else None)
        if azure:
            from .bootstrap.service import entra_token

            credentials = runner.Credentials(bearer_token=entra_token())
        elif args.with_bearer_token:
            credentials = runner.Credentials(bearer_token=password)
        elif ssh:  # with --ssh-hostname the PAT pushes over https; the key goes to the source Secret
            credentials = runner.Credentials(password=None if ssh_url else password, ssh_key=ssh_key.key,
                                             ssh_passphrase=ssh_key.passphrase)
        else:
            credentials = runner.Credentials(password=password)
    except BaseException:
        cluster.close()
        raise
    credentials.ca_crt, credentials.registry_creds = ca_crt, registry_creds
    if args.verbose:
        _print_generated(opts, credentials)
    try:
        bootstrapper = runner.Bootstrapper(opts, credentials, cluster, dist, progress=progress,
                                           deadline=started + timeout if timeout > 0 else None, deadline_is_timeout=True,
                                           federation=federation)
        if ssh_key is not None and ssh_key.created and not _deploy_key_ready(bootstrapper, ssh_key, ssh_refs, silent=args.silent):
            return 0
        result = bootstrapper.run()
    finally:
        cluster.close()
    failure = result.health_error()
    if failure:
        raise RuntimeError(failure)
    return 0


def _refuse_unsupported(args) -> None:
    """Flux v2.9 flags this CLI knows but does not do (:data:`UNSUPPORTED_FLAGS`: commit signing,
    ECDSA keys), and ``--ssh-key-algorithm`` other than ``rsa`` (Azure DevOps takes RSA keys only):
    InvalidInput naming the first one given, before anything is read or sent. Their values (a
    passphrase) are never shown."""
    from .errors import InvalidInput

    for name, why in UNSUPPORTED_FLAGS.items():
        if getattr(args, name[2:].replace("-", "_")) not in (None, False):
            raise InvalidInput(name, why)
    if args.ssh_key_algorithm != "rsa":
        raise InvalidInput("--ssh-key-algorithm", f"{args.ssh_key_algorithm} keys are refused by Azure DevOps, which accepts "
                                                  "only RSA SSH keys; use --ssh-key-algorithm rsa (the default here) and "
                                                  "--ssh-rsa-bits for its size")


def _cli_ssh_key(args, opts, destination, sync_destination, passphrase):
    """``(SSHKey, refs)`` for an SSH bootstrap: ``--private-key-file`` (read here, never stored), or
    the key of Key Vault secret ``--private-key-secret``, or the stored generated key
    ``flux-ssh-<name>`` (a new one, not stored yet, when absent): :mod:`shared.bootstrap.sshkeys`."""
    from . import services
    from .bootstrap import sshkeys
    from .bootstrap.options import default_ssh_key_secret
    from .errors import InvalidInput
    from .flux import keypair
    from .flux.options import validate_dns_label

    refs = {"destination": destination, "syncDestination": sync_destination, "privateKeySecret": args.private_key_secret,
            "passwordSecret": None}
    if args.private_key_file:
        try:
            text = Path(args.private_key_file).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput("--private-key-file", f"failed to open private key file {args.private_key_file}: "
                                                     f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            key = sshkeys.check_usable(keypair.load(text, passphrase, field="--private-key-file",
                                                    passphrase_from="--password-env or GIT_PASSWORD"),
                                       args.private_key_file, field="--private-key-file")
        except InvalidInput as exc:
            raise InvalidInput("--private-key-file", exc.message) from None
        return sshkeys.SSHKey(args.private_key_file, key, passphrase), refs
    if args.private_key_secret:
        refs["sshKeySecret"] = args.private_key_secret
    else:
        name = opts.path.rsplit("/", 1)[-1] if opts.path else None
        if not name and args.cluster_resource_id:
            name = args.cluster_resource_id.rstrip("/").rsplit("/", 1)[-1].lower()
        try:
            refs["sshKeySecret"] = default_ssh_key_secret(validate_dns_label(name or "", "--private-key-secret"))
        except InvalidInput:
            raise InvalidInput("--private-key-secret", "is required: no --path (or --cluster-resource-id) names the key to "
                                                       "generate; or give --private-key-file") from None
    return sshkeys.resolve(services.keyvault(), opts, refs, passphrase=passphrase), refs


def _deploy_key_ready(run, key, refs, *, silent: bool) -> bool:
    """A key generated by this run: checked as far as it can be (preflight), stored in Key Vault and
    printed, public key on stdout too, as Flux prints its deploy key. Then, as Flux, ask "Please
    give the key access to your repository" on a terminal (``--silent`` assumes it is done). Returns
    whether the bootstrap goes on; without a terminal it stops (exit 0): run it again once the key
    has access."""
    from . import services
    from .bootstrap import sshkeys

    run.preflight()
    sshkeys.store(services.keyvault(), key, refs)
    public = key.key.public_key.strip()
    run.progress.success(f"public key: {public}")
    print(public, flush=True)
    run.progress.success(f"stored the new SSH key in Key Vault secret {key.secret}")
    if silent:
        return True
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input("Please give the key access to your repository [y/N]: ")
        if answer.strip().lower() in ("y", "yes"):
            return True
        raise RuntimeError("aborting")
    run.progress.warning(f"Please give the key access to your repository: {sshkeys.AWAITING_DEPLOY_KEY}")
    return False


def _ca_file(path: str | None) -> str | None:
    """``--ca-file``: the file's PEM certificates, as Flux reads them (``os.ReadFile``), checked before use."""
    from .errors import InvalidInput

    if path is None:
        return None
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidInput("--ca-file", f"unable to read TLS CA file {path}: {exc.strerror}") from None
    from cryptography import x509

    try:
        if not x509.load_pem_x509_certificates(data):
            raise ValueError
        return data.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("--ca-file", f"{path} holds no PEM certificates (-----BEGIN CERTIFICATE-----); give the CA "
                                        "the Git server's certificate chains to, in PEM") from None


def _registry_creds(args) -> tuple[str, str] | None:
    """``--registry-creds-env VAR``: ``user:password`` from that environment variable (Flux's
    ``--registry-creds``), which needs ``--image-pull-secret``."""
    from .errors import InvalidInput
    from .flux.sourcesecret import parse_registry_creds

    if args.registry_creds_env is None:
        return None
    if not args.image_pull_secret:
        raise InvalidInput("--registry-creds-env", "requires --image-pull-secret to be set (the name of the docker-registry "
                                                   "Secret the credentials are written to), as --registry-creds does")
    value = os.environ.get(args.registry_creds_env)
    if not value:
        raise InvalidInput("--registry-creds-env", f"environment variable {args.registry_creds_env} is empty or unset; "
                                                   f"export 'user:password' in it")
    return parse_registry_creds(value, "--registry-creds-env")


def _print_generated(opts, credentials) -> None:
    """``--verbose``: the generated sync manifests, and the Secrets by name and keys (never values)."""
    from .flux import sync

    manifest = sync.generate(opts.sync_options())
    print(f"--- {manifest.path}\n{manifest.content}", file=sys.stderr, end="")
    if opts.source_provider == "azure":
        print("--- no source Secret (provider azure: source-controller's workload identity)", file=sys.stderr)
    else:
        if credentials.ssh_key is not None:
            keys = ["identity", "identity.pub", "known_hosts"] + (["password"] if credentials.ssh_passphrase else [])
        else:
            keys = ["bearerToken"] if credentials.bearer_token else ["username", "password"]
        keys += ["ca.crt"] if credentials.ca_crt else []
        print(f"--- Secret {opts.namespace}/{opts.secret_name} (keys: {', '.join(keys)})", file=sys.stderr)
    if credentials.registry_creds and opts.image_pull_secret:
        print(f"--- Secret {opts.namespace}/{opts.image_pull_secret} (type kubernetes.io/dockerconfigjson, "
              f"registry {opts.registry})", file=sys.stderr)


def _registry(args) -> int:
    """``registry list`` prints ``{"clusters": [...]}`` (plus ``"invalid": [{"name", "error"}]`` for
    stored rows that no longer validate); ``add``/``remove`` print one ``✔`` line to stderr. Errors
    raise ``InvalidInput`` naming the flag (``--pat-secret``), ``NotFound``, ``UpstreamError``."""
    import json

    from . import services
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
    record = record.validate().canonical().check_policy()
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


def _configure_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # urllib3 logs each retry of an unreachable host ("Retrying (Retry(total=2...)) after connection
    # broken by ...") before the one ✗ line that says the same; the kubernetes client retries 3 times.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if verbose:  # our own debug lines (never a secret); libraries stay at INFO (request bodies are DEBUG)
        logging.getLogger("shared").setLevel(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0, 1 on any failure, 130 when interrupted)."""
    from .errors import FluxOpsError, InvalidInput

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    _configure_logging(bool(getattr(args, "verbose", False)))
    try:
        if args.command == "install":
            return _install(args)
        if args.command == "registry":
            return _registry(args)
        if args.command == "fleet":
            return _fleet(args)
        if args.command == "rotate":
            return _rotate(args)
        return _bootstrap(args)
    except InvalidInput as exc:
        if exc.field:
            print(f"✗ {flag_for(exc.field)}: {exc.message}", file=sys.stderr)
        else:
            print(f"✗ {exc}", file=sys.stderr)
        return 1
    except (FluxOpsError, RuntimeError) as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("✗ interrupted", file=sys.stderr)
        return 130
