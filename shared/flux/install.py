"""``gotk-components.yaml``: the Flux components for a selection, rendered from a distribution.

Flux builds this file with kustomize from per-component bases (fluxcd/flux2
``pkg/manifestgen/install/{install.go,templates.go}``). A distribution is that very build for
*every* component with default options, so the file for a selection is obtained from it without
kustomize, by the same transforms expressed on the rendered text:

- keep the shared objects (Namespace, NetworkPolicies, ResourceQuota, RBAC) and, per component in
  the requested order, its objects (those labelled ``app.kubernetes.io/component: <name>``), each
  in the distribution's order, as kustomize keeps resource order;
- ``--events-addr`` points at notification-controller only when it is selected, else it is empty
  (``templates.go`` sets ``EventsAddr`` only then);
- ``--feature-gates=ExternalArtifact=true`` stays on kustomize- and helm-controller only when
  source-watcher is selected (``install.go`` adds it only then);
- ``--watch-all-namespaces``, ``--log-level``, the cluster domain of ``--storage-adv-addr`` and the
  image registry are set from the options (``templates.go`` JSON6902 patches and ``images``);
- ``--image-pull-secret`` and ``--toleration-keys`` add ``imagePullSecrets`` (one ``name``) and
  ``tolerations`` (``key``, ``operator: Exists`` each) to the pod spec of every Deployment, as the
  strategic merge patch ``node-selector.yaml`` of ``templates.go`` does, at the place kustomize's
  sorted output puts them (:func:`_pod_spec_fields`);
- without network policies the NetworkPolicy objects are left out;
- a namespace other than ``flux-system`` replaces it everywhere, as the kustomize namespace
  transformer, the RBAC name suffix and ``rbac.yaml``'s string replacement do together;
- Flux's header (``GetGenWarning``): warning, ``# Flux Version:`` and ``# Components:`` lines.

The golden files under ``../shared/flux/golden`` hold this byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InvalidInput, shown
from . import DEFAULT_COMPONENTS, DEFAULT_NAMESPACE, DEFAULT_REGISTRY, GEN_WARNING, Manifest
from .distribution import Distribution
from .options import resolve_components, validate_namespace, validate_registry
from .sync import manifest_path

_COMPONENT_LABEL = re.compile(r"^    app\.kubernetes\.io/component: (\S+)$", re.M)
_KIND = re.compile(r"^kind: (\S+)$", re.M)
_EVENTS_ADDR = re.compile(r"^(\s+- --events-addr=)\S*$", re.M)
_WATCH_ALL = re.compile(r"^(\s+- --watch-all-namespaces=)\S+$", re.M)
_LOG_LEVEL = re.compile(r"^(\s+- --log-level=)\S+$", re.M)
_STORAGE_ADV = re.compile(r"^(\s+- --storage-adv-addr=\S+\.\$\(RUNTIME_NAMESPACE\)\.svc\.)\S+\.$", re.M)
_GATE_LINE = re.compile(r"^\s+- --feature-gates=ExternalArtifact=true\n", re.M)
_LOG_LEVELS = ("debug", "info", "error")
_CLUSTER_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class InstallOptions:
    """Options of ``flux install`` / ``flux bootstrap`` that shape gotk-components.yaml, with
    Flux's defaults (pkg/manifestgen/install/options.go)."""

    components: tuple[str, ...] = DEFAULT_COMPONENTS
    components_extra: tuple[str, ...] = ()
    namespace: str = DEFAULT_NAMESPACE
    registry: str = DEFAULT_REGISTRY
    watch_all_namespaces: bool = True
    network_policy: bool = True
    log_level: str = "info"
    cluster_domain: str = "cluster.local"
    target_path: str = ""
    toleration_keys: tuple[str, ...] = field(default=())
    image_pull_secret: str = ""

    def selected(self) -> list[str]:
        """``components + components_extra``, validated (InvalidInput naming the field)."""
        return resolve_components(self.components, self.components_extra)

    def validate(self) -> None:
        """Check every option; raises InvalidInput naming the request field."""
        self.selected()
        validate_namespace(self.namespace)
        if self.log_level not in _LOG_LEVELS:
            raise InvalidInput("logLevel", f"{shown(self.log_level)} is not one of {', '.join(_LOG_LEVELS)}")
        if not _CLUSTER_DOMAIN.fullmatch(self.cluster_domain or ""):
            raise InvalidInput("clusterDomain", f"{shown(self.cluster_domain)} is not a DNS domain")
        validate_registry(self.registry, "registry")
        from .options import DNS1123_SUBDOMAIN

        for key in self.toleration_keys:
            if not _is_label_key(key):
                raise InvalidInput("tolerationKeys", f"{shown(key)} is not a Kubernetes taint key such as "
                                                     "CriticalAddonsOnly or kubernetes.azure.com/scalesetpriority")
        if len(set(self.toleration_keys)) != len(self.toleration_keys):
            raise InvalidInput("tolerationKeys", "lists a key twice")
        if self.image_pull_secret:
            if (not isinstance(self.image_pull_secret, str) or len(self.image_pull_secret) > 253
                    or not DNS1123_SUBDOMAIN.fullmatch(self.image_pull_secret) or _yaml_ambiguous(self.image_pull_secret)):
                raise InvalidInput("imagePullSecret", f"{shown(self.image_pull_secret)} is not a valid Secret name "
                                                      "(a DNS-1123 subdomain such as regcred)")


def _split(dist: Distribution) -> list[str]:
    lines = dist.text.split("\n", 4)
    if len(lines) < 5 or not lines[3].startswith("# Components:"):
        raise InvalidInput("manifests", f"{dist.source}: unexpected header")
    return [doc.rstrip("\n") for doc in lines[4].split("\n---\n")]


def generate(dist: Distribution, opts: InstallOptions) -> Manifest:
    """Render ``<path>/<namespace>/gotk-components.yaml`` for ``opts`` from ``dist``.

    Raises InvalidInput when an option is invalid or a component is not in the distribution."""
    opts.validate()
    selected = opts.selected()
    missing = [c for c in selected if c not in dist.components]
    if missing:
        raise InvalidInput(
            "componentsExtra" if all(m not in DEFAULT_COMPONENTS for m in missing) else "components",
            f"component {missing[0]} is not in the Flux {dist.version} distribution {dist.source}",
        )
    shared_docs: list[str] = []
    by_component: dict[str, list[str]] = {}
    for doc in _split(dist):
        label = _COMPONENT_LABEL.search(doc)
        if label:
            by_component.setdefault(label.group(1), []).append(doc)
        else:
            kind = _KIND.search(doc)
            if not opts.network_policy and kind and kind.group(1) == "NetworkPolicy":
                continue
            shared_docs.append(doc)
    docs = shared_docs + [d for c in selected for d in by_component.get(c, [])]
    body = "\n---\n".join(docs) + "\n"

    if "notification-controller" in selected:
        # Keep the distribution's host form: $(RUNTIME_NAMESPACE) since v2.4, the namespace before.
        if opts.cluster_domain != "cluster.local":
            body = _EVENTS_ADDR.sub(lambda m: m.group(0).replace(".svc.cluster.local./", f".svc.{opts.cluster_domain}./"), body)
    else:
        body = _EVENTS_ADDR.sub(lambda m: m.group(1), body)
    if "source-watcher" not in selected:
        body = _GATE_LINE.sub("", body)
    body = _WATCH_ALL.sub(lambda m: m.group(1) + ("true" if opts.watch_all_namespaces else "false"), body)
    body = _LOG_LEVEL.sub(lambda m: m.group(1) + opts.log_level, body)
    body = _STORAGE_ADV.sub(lambda m: m.group(1) + opts.cluster_domain + ".", body)
    if opts.registry != DEFAULT_REGISTRY:
        for component in selected:
            body = re.sub(
                rf"^(\s+image: )\S+/{re.escape(component)}:",
                lambda m, c=component: f"{m.group(1)}{opts.registry}/{c}:",
                body,
                flags=re.M,
            )
    if opts.namespace != DEFAULT_NAMESPACE:
        body = body.replace(DEFAULT_NAMESPACE, opts.namespace)
    if opts.image_pull_secret or opts.toleration_keys:
        body = "\n---\n".join(_pod_spec_fields(doc, opts) for doc in body.rstrip("\n").split("\n---\n")) + "\n"

    header = f"---\n{GEN_WARNING}\n# Flux Version: {dist.version}\n# Components: {','.join(selected)}\n"
    return Manifest(manifest_path(opts.target_path, opts.namespace, "gotk-components.yaml"), header + body)


#: A Kubernetes label (and taint) key: an optional DNS subdomain prefix and ``/``, then a name of at
#: most 63 characters (k8s.io/apimachinery validation.IsQualifiedName).
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_POD_SPEC_KEY = re.compile(r"^      ([A-Za-z][A-Za-z0-9]*):", re.M)


def _is_label_key(key: object) -> bool:
    from .options import DNS1123_SUBDOMAIN

    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _yaml_scalar(value: str) -> str:
    """A validated label key as kustomize (kyaml) writes it: double-quoted when plain it would not
    load as a string."""
    return f'"{value}"' if _yaml_ambiguous(value) else value


def _yaml_ambiguous(value: str) -> bool:
    from ..trust import yaml_ambiguous

    return yaml_ambiguous(value)


def _pod_spec_fields(doc: str, opts: InstallOptions) -> str:
    """A Deployment document with ``imagePullSecrets``/``tolerations`` set in its pod template, as
    ``kustomize build`` writes the result of Flux's ``node-selector.yaml`` patch (templates.go
    ``nodeSelectorTmpl``, target ``kind: Deployment``): pod spec keys stay sorted (the distribution
    is kustomize output, whose maps are sorted), list items are not indented, values plain (the
    names are validated not to need quotes). Other documents are returned as they are."""
    if not _KIND.search(doc) or _KIND.search(doc).group(1) != "Deployment":
        return doc
    marker = doc.find("\n  template:\n")
    spec = doc.find("\n    spec:\n", marker)
    if marker < 0 or spec < 0:
        raise InvalidInput("manifests", "a Deployment of the distribution has no pod template")
    start = spec + len("\n    spec:\n")
    newline = doc.endswith("\n")
    head, pod = doc[:start], doc[start:] + ("" if newline else "\n")
    fields = []
    if opts.image_pull_secret:
        fields.append(("imagePullSecrets", f"      imagePullSecrets:\n      - name: {opts.image_pull_secret}\n"))
    if opts.toleration_keys:
        # Flux's template quotes every key; kustomize writes back in double quotes the ones YAML would
        # read as a boolean, a number or null (true, yes, 010, 1e3...), the others plain
        items = "".join(f"      - key: {_yaml_scalar(key)}\n        operator: Exists\n" for key in opts.toleration_keys)
        fields.append(("tolerations", "      tolerations:\n" + items))
    for name, text in fields:
        if re.search(rf"^      {name}:", pod, re.M):
            raise InvalidInput("manifests", f"a Deployment of the distribution already sets {name}; it is not a Flux distribution")
        after = next((m.start() for m in _POD_SPEC_KEY.finditer(pod) if m.group(1) > name), len(pod))
        pod = pod[:after] + text + pod[after:]
    return head + (pod if newline else pod[:-1])
