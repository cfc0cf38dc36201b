"""The patches this project writes into the flux-system ``kustomization.yaml``, and merging them
into that file.

Each patch is one entry of the kustomization's ``patches:`` list, a dict
``{"patch": <text>, "target": {"kind": ..., "name": ...}}``, in the form Flux's documentation
prescribes:

- :func:`workload_identity_serviceaccount` and :func:`workload_identity_deployment`: "Flux Workload
  Identity", fluxcd.io/flux/installation/configuration/workload-identity (fluxcd/website
  ``content/en/flux/installation/configuration/workload-identity.md``, "Azure Workload Identity"),
  and the controller-level section of fluxcd.io/flux/integrations/azure: a strategic merge patch
  of the controllers' ServiceAccounts with ``azure.workload.identity/client-id`` (and
  ``azure.workload.identity/tenant-id``), and one of their Deployments with the pod-template label
  ``azure.workload.identity/use: "true"`` that the AKS webhook looks for;
- :func:`sops_decryption`: ``spec.decryption.provider: sops`` on the flux-system Kustomization, as
  the JSON6902 ``add /spec/decryption`` the Flux Operator documents for the cluster sync
  (controlplaneio-fluxcd/flux-operator ``docs/guides/instance/instance-customization.md``, "Cluster
  sync SOPS decryption"), without ``secretRef``: with Azure Key Vault, kustomize-controller
  authenticates with its own (workload) identity, and the Azure integration page says to leave
  ``decryption.serviceAccountName`` unset for that;
- :func:`ssh_hostkey_algos`: the JSON6902 ``add`` of ``--ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256``
  to container 0's args of ``(source-controller|image-automation-controller)`` (fluxcd/website
  ``content/en/flux/installation/bootstrap/azure-devops.md``, "Bootstrap using SSH keys").

:func:`render` writes a new kustomization file (Flux's generator output, then ``patches:``);
:func:`update` adds or updates only these entries in an existing file and keeps every other byte.
:mod:`shared.flux.kustomize` applies the patches to objects as kustomize does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import yaml

from .. import safe_yaml
from ..errors import InvalidInput
from . import DEFAULT_COMPONENTS, DEFAULT_NAMESPACE, EXTRA_COMPONENTS
from . import kustomization as _kustomization
from .options import DNS1123_LABEL
from .yamlfmt import marshal

WORKLOAD_IDENTITY_CLIENT_ID = "azure.workload.identity/client-id"
WORKLOAD_IDENTITY_TENANT_ID = "azure.workload.identity/tenant-id"
#: The pod label the Azure Workload Identity webhook mutates (azure.github.io/azure-workload-identity).
WORKLOAD_IDENTITY_USE = "azure.workload.identity/use"
#: Azure DevOps SSH accepts RSA keys with SHA-2 signatures only (azure-devops.md).
SSH_HOSTKEY_ALGOS = ("rsa-sha2-512", "rsa-sha2-256")
#: The controllers that speak SSH to Git, as the Azure DevOps bootstrap page targets them.
SSH_CONTROLLERS = ("source-controller", "image-automation-controller")
#: Container 0's args, appended to (RFC 6902 ``-``).
ARGS_PATH = "/spec/template/spec/containers/0/args/-"
DECRYPTION_PATH = "/spec/decryption"
#: Every Flux component name, the controllers a workload identity patch may target.
COMPONENTS = DEFAULT_COMPONENTS + EXTRA_COMPONENTS

#: Roles: what each of our entries does; an existing entry with the same role is ours to update.
WORKLOAD_IDENTITY_SERVICEACCOUNT = "workload-identity-serviceaccount"
WORKLOAD_IDENTITY_DEPLOYMENT = "workload-identity-deployment"
SOPS_DECRYPTION = "sops-decryption"
SSH_HOSTKEY_ALGOS_ROLE = "ssh-hostkey-algos"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: An SSH algorithm name (RFC 4251 section 6: printable US-ASCII, no comma or whitespace).
_ALGO = re.compile(r"^[a-z0-9][a-z0-9@.+_-]*$")
#: Target patterns evaluated here: alternatives of literals and ``.``, in at most one group.
_SIMPLE_PATTERN = re.compile(r"^(?:\((?:[A-Za-z0-9_.-]+\|)*[A-Za-z0-9_.-]+\)|(?:[A-Za-z0-9_.-]+\|)*[A-Za-z0-9_.-]+)$")


# --- the patches -------------------------------------------------------------------------------


def is_guid(value: object) -> bool:
    """Whether ``value`` is a GUID (``8-4-4-4-12`` hex digits), as Entra client and tenant IDs are."""
    return isinstance(value, str) and _GUID.match(value) is not None


def _controllers(controllers: Iterable[str], field: str) -> list[str]:
    out: list[str] = []
    for name in controllers:
        if name not in COMPONENTS:
            raise InvalidInput(field, f"{name!r} is not a Flux component (one of {', '.join(COMPONENTS)})")
        if name not in out:
            out.append(name)
    if not out:
        raise InvalidInput(field, "at least one controller is required")
    return out


def _name_regex(controllers: Sequence[str]) -> str:
    # The docs' form, "(source-controller|image-reflector-controller)"; kustomize anchors it.
    return "(" + "|".join(controllers) + ")"


def workload_identity_serviceaccount(
    controllers: Iterable[str],
    client_id: str,
    tenant_id: str | None = None,
    *,
    field: str = "workloadIdentity",
) -> dict:
    """The ServiceAccount patch of Azure workload identity for ``controllers`` (Flux component
    names, deduplicated, order kept)::

        {"patch": "apiVersion: v1\\nkind: ServiceAccount\\nmetadata:\\n  name: controller\\n"
                  "  annotations:\\n    azure.workload.identity/client-id: <client_id>\\n"
                  "    azure.workload.identity/tenant-id: <tenant_id>\\n",
         "target": {"kind": "ServiceAccount", "name": "(source-controller|kustomize-controller)"}}

    The ``tenant-id`` line only when ``tenant_id`` is given. Raises InvalidInput
    (``<field>.components``, ``<field>.clientId``, ``<field>.tenantId``) for an unknown
    component or an ID that is not a GUID (which also keeps the YAML free of injected text)."""
    names = _controllers(controllers, f"{field}.components")
    if not is_guid(client_id):
        raise InvalidInput(f"{field}.clientId", "must be a GUID (the managed identity's client ID)")
    if tenant_id is not None and not is_guid(tenant_id):
        raise InvalidInput(f"{field}.tenantId", "must be a GUID (the Microsoft Entra tenant ID)")
    text = (
        "apiVersion: v1\n"
        "kind: ServiceAccount\n"
        "metadata:\n"
        "  name: controller\n"
        "  annotations:\n"
        f"    {WORKLOAD_IDENTITY_CLIENT_ID}: {client_id}\n"
    )
    if tenant_id:
        text += f"    {WORKLOAD_IDENTITY_TENANT_ID}: {tenant_id}\n"
    return {"patch": text, "target": {"kind": "ServiceAccount", "name": _name_regex(names)}}


def workload_identity_deployment(controllers: Iterable[str], *, field: str = "workloadIdentity") -> dict:
    """The Deployment patch of Azure workload identity for ``controllers``: the pod-template
    label ``azure.workload.identity/use: "true"``, which the AKS mutating webhook needs to inject
    the token volume and ``AZURE_*`` variables::

        {"patch": "apiVersion: apps/v1\\nkind: Deployment\\nmetadata:\\n  name: controller\\n"
                  "spec:\\n  template:\\n    metadata:\\n      labels:\\n"
                  "        azure.workload.identity/use: \\"true\\"\\n",
         "target": {"kind": "Deployment", "name": "(source-controller|kustomize-controller)"}}

    Raises InvalidInput(``<field>.components``) for an unknown component."""
    names = _controllers(controllers, f"{field}.components")
    text = (
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        "  name: controller\n"
        "spec:\n"
        "  template:\n"
        "    metadata:\n"
        "      labels:\n"
        f'        {WORKLOAD_IDENTITY_USE}: "true"\n'
    )
    return {"patch": text, "target": {"kind": "Deployment", "name": _name_regex(names)}}


def workload_identity(
    controllers: Iterable[str], client_id: str, tenant_id: str | None = None, *, field: str = "workloadIdentity"
) -> list[dict]:
    """Both workload identity patches, ServiceAccount first, as the Flux docs list them."""
    names = list(controllers)
    return [
        workload_identity_serviceaccount(names, client_id, tenant_id, field=field),
        workload_identity_deployment(names, field=field),
    ]


def sops_decryption(name: str = DEFAULT_NAMESPACE, *, field: str = "sops") -> dict:
    """SOPS decryption on the flux-system Kustomization ``name`` (the sync name, the namespace
    by default)::

        {"patch": "- op: add\\n  path: /spec/decryption\\n  value:\\n    provider: sops\\n",
         "target": {"kind": "Kustomization", "name": "flux-system"}}

    No ``secretRef``: with Azure Key Vault, kustomize-controller decrypts with its workload
    identity (fluxcd.io/flux/integrations/azure, "At the controller level")."""
    if not isinstance(name, str) or not DNS1123_LABEL.match(name):
        raise InvalidInput(field, f"{name!r} is not a Kustomization name")
    text = f"- op: add\n  path: {DECRYPTION_PATH}\n  value:\n    provider: sops\n"
    return {"patch": text, "target": {"kind": "Kustomization", "name": name}}


def ssh_hostkey_algos(
    algos: Iterable[str] = SSH_HOSTKEY_ALGOS,
    controllers: Iterable[str] = SSH_CONTROLLERS,
    *,
    field: str = "sshHostkeyAlgos",
) -> dict:
    """The SSH host key algorithms flag for the controllers that clone over SSH::

        {"patch": "- op: add\\n  path: /spec/template/spec/containers/0/args/-\\n"
                  "  value: --ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256\\n",
         "target": {"kind": "Deployment", "name": "(source-controller|image-automation-controller)"}}

    The target names image-automation-controller even when it is not installed, as the Flux doc
    does (the pattern then selects source-controller only). Raises InvalidInput(``field``) for an
    empty list or a name that is not an SSH algorithm name."""
    names = list(algos)
    if not names or any(not isinstance(a, str) or not _ALGO.match(a) for a in names):
        raise InvalidInput(field, "must be a non-empty list of SSH host key algorithm names such as rsa-sha2-512")
    targets = _controllers(controllers, f"{field}.controllers")
    text = f"- op: add\n  path: {ARGS_PATH}\n  value: --ssh-hostkey-algos={','.join(names)}\n"
    return {"patch": text, "target": {"kind": "Deployment", "name": _name_regex(targets)}}


# --- recognising our entries -------------------------------------------------------------------


def pattern_matches(pattern: object, value: str) -> bool | None:
    """Whether a target ``name`` or ``kind`` (or ``group``, ``version``) selects ``value``, for
    patterns made of literal names, ``.`` and ``|`` with at most one group around the whole
    (``source-controller``, ``(source-controller|kustomize-controller)``,
    ``kustomize.toolkit.fluxcd.io``); None for any other pattern.

    kustomize compiles each selector field as the Go regexp ``^(?:<pattern>)$``
    (sigs.k8s.io/kustomize ``api/types/selector.go`` ``anchorRegex``): ``source-controller`` does
    not select ``source-controller-canary``, nor ``(a|b)`` ``xa``. On this subset Go's and
    Python's regexps agree, and without quantifiers a hostile pattern cannot backtrack for long;
    other patterns are left to kustomize."""
    if not isinstance(pattern, str) or not _SIMPLE_PATTERN.match(pattern):
        return None
    return re.fullmatch(f"(?:{pattern})", value) is not None


def _load_patch(text: object) -> object:
    if not isinstance(text, str):
        return None
    try:
        return safe_yaml.load(text)
    except safe_yaml.YAMLRefused:
        return None


def _single_add(ops: object, path: str) -> object:
    """The value of a JSON6902 patch that is one ``add`` at ``path``, else a sentinel."""
    if isinstance(ops, list) and len(ops) == 1 and isinstance(ops[0], dict):
        op = ops[0]
        if set(op) == {"op", "path", "value"} and op["op"] == "add" and op["path"] == path:
            return op["value"]
    return _NONE


_NONE = object()


def _keys_within(obj: object, allowed: set[str]) -> bool:
    return isinstance(obj, dict) and set(obj) <= allowed


def role_of(entry: object) -> str | None:
    """Which of our patches ``entry`` (an item of ``patches:``) is, judged by its target kind and
    the shape of its patch, whatever the values (client ID, algorithms) and target names: the
    Flux doc forms count, so a patch a user wrote by hand from those pages is updated in place
    rather than doubled. None for any other entry."""
    if not isinstance(entry, dict) or set(entry) != {"patch", "target"}:
        return None
    target = entry["target"]
    if not _keys_within(target, {"kind", "name"}) or not isinstance(target.get("kind"), str):
        return None
    kind = target["kind"]
    patch = _load_patch(entry["patch"])
    if kind == "ServiceAccount" and isinstance(patch, dict) and patch.get("kind") == "ServiceAccount":
        meta = patch.get("metadata")
        if _keys_within(patch, {"apiVersion", "kind", "metadata"}) and _keys_within(meta, {"name", "namespace", "annotations"}):
            notes = meta.get("annotations")
            if _keys_within(notes, {WORKLOAD_IDENTITY_CLIENT_ID, WORKLOAD_IDENTITY_TENANT_ID}) and WORKLOAD_IDENTITY_CLIENT_ID in notes:
                return WORKLOAD_IDENTITY_SERVICEACCOUNT
    if kind == "Deployment" and isinstance(patch, dict) and patch.get("kind") == "Deployment":
        meta, spec = patch.get("metadata"), patch.get("spec")
        if (
            _keys_within(patch, {"apiVersion", "kind", "metadata", "spec"})
            and _keys_within(meta, {"name", "namespace", "labels"})
            and (meta.get("labels") is None or _keys_within(meta["labels"], {WORKLOAD_IDENTITY_USE}))
            and _keys_within(spec, {"template"})
            and _keys_within(spec.get("template"), {"metadata"})
            and _keys_within(spec["template"].get("metadata"), {"labels"})
            and _keys_within(spec["template"]["metadata"].get("labels"), {WORKLOAD_IDENTITY_USE})
            and spec["template"]["metadata"]["labels"]
        ):
            return WORKLOAD_IDENTITY_DEPLOYMENT
    if kind == "Deployment":
        value = _single_add(patch, ARGS_PATH)
        if isinstance(value, str) and value.startswith("--ssh-hostkey-algos="):
            return SSH_HOSTKEY_ALGOS_ROLE
    if kind == "Kustomization":
        value = _single_add(patch, DECRYPTION_PATH)
        if isinstance(value, dict) and value.get("provider") == "sops":
            return SOPS_DECRYPTION
    return None


def _selected_components(target: dict) -> frozenset[str] | None:
    if "name" not in target:
        return frozenset(COMPONENTS)
    if pattern_matches(target["name"], "") is None:
        return None
    return frozenset(c for c in COMPONENTS if pattern_matches(target["name"], c))


# --- kustomization.yaml text -------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """What :func:`update` did.

    ``text``: the new file; ``changed``: whether it differs from the input; ``added``: indexes
    (into the ``patches`` argument) of our entries appended; ``replaced``: of those that took the
    place of an existing entry of the same role (or found it already equal and kept its bytes);
    ``removed``: how many further entries of a role were dropped as superseded; ``kept``: one
    line per existing entry of one of our roles that overlaps ours but was kept (it also targets
    other controllers, or carries another client ID), for the caller to warn about: kustomize
    applies both, in file order."""

    text: str
    changed: bool
    added: tuple[int, ...] = ()
    replaced: tuple[int, ...] = ()
    removed: int = 0
    kept: tuple[str, ...] = ()


def render(resources: Sequence[str], patches: Sequence[dict]) -> str:
    """A new flux-system ``kustomization.yaml``: Flux's generator output for ``resources``
    (:func:`shared.flux.kustomization.render`, e.g. ``["gotk-components.yaml", "gotk-sync.yaml"]``)
    followed by ``patches:`` in Flux's Go-YAML style (unindented list, sorted keys, literal block
    for the patch text). Equal to ``update(kustomization.render(resources), patches).text``."""
    base = _kustomization.render(list(resources))
    if not patches:
        return base
    return base + marshal({"patches": list(patches)})


class _Span:
    """An item of the ``patches`` block sequence: its text (whole lines, from the ``-`` line to
    the line of its last scalar) and its value."""

    def __init__(self, text: str, value: object):
        self.text = text
        self.value = value


def _last_line(node: yaml.Node, first: int) -> int:
    """Line of the end of ``node``'s last scalar (a block node's own end mark lies at the next
    token, past any comment lines that follow it), not before ``first``."""
    while not getattr(node, "flow_style", True) and node.value:
        node = node.value[-1][1] if isinstance(node, yaml.MappingNode) else node.value[-1]
    mark = node.end_mark
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        # A block scalar ends after its line breaks (and any blank lines it kept).
        last = mark.line - 1 if mark.column == 0 else mark.line
    else:
        last = mark.line
    return max(last, first)


def _render_item(entry: dict, column: int) -> str:
    pad = " " * column
    return "".join(pad + line if line.strip() else line for line in marshal([entry]).splitlines(keepends=True))


def _describe(entry: object) -> str:
    target = entry.get("target") if isinstance(entry, dict) else None
    if isinstance(target, dict):
        return f"{target.get('kind', '*')}/{target.get('name', '*')}"
    return "?"


def _split(text: str, field: str) -> tuple[str, list, str, int]:
    """``head``, ``items`` (spans and the text between them), ``tail`` and the column of the
    ``patches`` list, such that ``head + items + tail`` is ``text`` (with a final newline) and
    appending to ``items`` appends to ``patches:``. A ``patches`` field that is not a non-empty
    block list is taken out and its entries re-rendered, in place."""
    try:
        safe_yaml.load(text)  # size, depth and aliases within bounds before PyYAML composes it
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (safe_yaml.YAMLRefused, yaml.YAMLError) as err:
        raise InvalidInput(field, f"is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(root, yaml.MappingNode) or root.flow_style or not root.value:
        raise InvalidInput(field, "is not a YAML block mapping (a kustomization file)")
    lines = text.splitlines(keepends=True)
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    constructor = yaml.SafeLoader("")

    def value_of(node: yaml.Node) -> object:
        return constructor.construct_object(node, deep=True)

    key_node = seq = None
    column = 0
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "patches":
            key_node, seq = key, value
    for key, value in root.value:  # the list indentation the file uses (resources first)
        if isinstance(value, yaml.SequenceNode) and not value.flow_style and value.value:
            column = value.start_mark.column
            break

    if isinstance(seq, yaml.SequenceNode) and not seq.flow_style and seq.value:
        column = seq.start_mark.column
        items: list = []
        previous = None
        for item in seq.value:
            first = item.start_mark.line
            while first > 0 and not (lines[first][column : column + 1] == "-" and not lines[first][:column].strip()):
                first -= 1
            last = _last_line(item, first)
            while last > first and not lines[last].strip():
                last -= 1
            if previous is None:
                head = "".join(lines[:first])
            elif first > previous:
                items.append("".join(lines[previous:first]))
            items.append(_Span("".join(lines[first : last + 1]), value_of(item)))
            previous = last + 1
        return head, items, "".join(lines[previous:]), column

    if key_node is not None:
        existing = value_of(seq)
        if existing is not None and not isinstance(existing, list):
            raise InvalidInput(field, "patches is not a list")
        first = key_node.start_mark.line
        cut, rest = first, lines[_last_line(seq, first) + 1 :]
        lines = lines[:first] + rest
    else:
        existing = None
        cut = _last_line(root.value[-1][1], root.value[-1][0].start_mark.line) + 1
    items = [_Span(_render_item(entry, column), entry) for entry in existing or []]
    return "".join(lines[:cut]) + "patches:\n", items, "".join(lines[cut:]), column


def update(text: str, patches: Sequence[dict], *, field: str = "kustomization.yaml") -> Merge:
    """Add or update ``patches`` (entries from the functions above) in the kustomization file
    ``text``, keeping every byte that is not one of our entries: other patches, resources,
    comments, blank lines, indentation and key order.

    Each of our entries goes in place of the first existing entry of the same role (see
    :func:`role_of`) that it supersedes: one whose target selects only controllers ours selects
    (a previous run's entry, or the Flux doc form written by hand); for the ServiceAccount, also
    one that carries the same client ID; for the Deployment, also one with the target of a
    replaced ServiceAccount entry; for SOPS, one on the same Kustomization, which is kept as it
    is (it already sets ``provider: sops``, perhaps with an age ``secretRef`` that must stay). An
    entry already equal to ours keeps its bytes. Further superseded entries are removed;
    overlapping ones (they also select other controllers, or carry another client ID) are kept
    and listed in :attr:`Merge.kept`. Otherwise the entry is appended to ``patches``, which is
    created after the last top-level field, its list indented as the file's ``resources``.
    Running it again changes no byte.

    The file is parsed with PyYAML's composer for the line of each node, and each edit is a
    splice of whole lines (PyYAML's emitter would drop comments). A ``patches`` field that is a
    flow list or empty is rewritten, in place, as a block list. Raises InvalidInput(``field``)
    when ``text`` is not YAML within :data:`shared.safe_yaml.REPOSITORY` limits, or is not a
    mapping; ValueError when an entry of ``patches`` is not one of ours."""
    roles = [role_of(ours) for ours in patches]
    if None in roles:
        raise ValueError(f"patches[{roles.index(None)}] is not one of the patches this module writes")
    if not patches:
        return Merge(text, False)
    # A file written with CRLF line ends keeps them (our lines get them too).
    crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
    source = text.replace("\r\n", "\n") if crlf else text
    head, items, tail, column = _split(source, field)

    added: list[int] = []
    replaced: list[int] = []
    kept: list[str] = []
    removed = 0
    replaced_sa_targets: set[object] = set()
    ours_spans: list[_Span] = []
    for index, (ours, role) in enumerate(zip(patches, roles)):
        ours_components = _selected_components(ours["target"]) or frozenset()
        superseded: list[_Span] = []
        for span in items:
            if not isinstance(span, _Span) or span in ours_spans or role_of(span.value) != role:
                continue
            relation = _relation(role, span.value, ours, ours_components, replaced_sa_targets)
            if relation == "superseded":
                superseded.append(span)
            elif relation == "overlap":
                kept.append(f"{_describe(span.value)} ({role})")
        if superseded:
            first = superseded[0]
            if role == WORKLOAD_IDENTITY_SERVICEACCOUNT:
                replaced_sa_targets.update(s.value["target"].get("name") for s in superseded)
            if first.value != ours and role != SOPS_DECRYPTION:
                first.text, first.value = _render_item(ours, column), ours
            ours_spans.append(first)
            replaced.append(index)
            for span in superseded[1:]:
                items.remove(span)
                removed += 1
        else:
            span = _Span(_render_item(ours, column), ours)
            at = max((i for i, it in enumerate(items) if isinstance(it, _Span)), default=len(items) - 1)
            items.insert(at + 1, span)
            ours_spans.append(span)
            added.append(index)

    out = head + "".join(it.text if isinstance(it, _Span) else it for it in items) + tail
    _check(out, patches, field)
    if crlf:
        out = out.replace("\n", "\r\n")
    return Merge(out, out != text, tuple(added), tuple(replaced), removed, tuple(kept))


def _relation(role: str, entry: dict, ours: dict, ours_components: frozenset[str], replaced_sa_targets: set) -> str | None:
    """``superseded`` (ours takes its place), ``overlap`` (both select some object) or None."""
    target, ours_target = entry["target"], ours["target"]
    if role == SOPS_DECRYPTION:
        if target.get("name") == ours_target["name"]:
            return "superseded"
        if "name" not in target:
            return "overlap"
        return "overlap" if pattern_matches(target["name"], ours_target["name"]) is not False else None
    selected = _selected_components(target)
    if selected is None:  # a pattern we do not evaluate: it may select ours
        return "overlap"
    if not selected or not selected & ours_components:
        return None
    if selected <= ours_components:
        return "superseded"
    if role == WORKLOAD_IDENTITY_SERVICEACCOUNT:
        theirs = _load_patch(entry["patch"])["metadata"]["annotations"].get(WORKLOAD_IDENTITY_CLIENT_ID)
        mine = _load_patch(ours["patch"])["metadata"]["annotations"].get(WORKLOAD_IDENTITY_CLIENT_ID)
        if str(theirs).lower() == str(mine).lower():
            return "superseded"
    if role == WORKLOAD_IDENTITY_DEPLOYMENT and target.get("name", "") in replaced_sa_targets:
        return "superseded"
    return "overlap"


def _check(text: str, patches: Sequence[dict], field: str) -> None:
    """The spliced file must parse and hold our entries (SOPS: one with provider sops)."""
    try:
        doc = safe_yaml.load(text)
    except safe_yaml.YAMLRefused as err:  # pragma: no cover - a defect of the splice, not of the input
        raise InvalidInput(field, f"could not be updated: {str(err).splitlines()[0]}") from None
    have = doc.get("patches") or [] if isinstance(doc, dict) else []
    for ours in patches:
        if ours in have:
            continue
        if role_of(ours) == SOPS_DECRYPTION and any(role_of(h) == SOPS_DECRYPTION and h["target"] == ours["target"] for h in have):
            continue
        raise InvalidInput(field, f"could not be updated with the {role_of(ours)} patch")  # pragma: no cover
