"""Apply kustomization ``patches`` to objects as kustomize does, for the forms this project
writes, so that the components can be installed already patched (kustomize-controller would
otherwise start the first pods from the unpatched manifests).

Follows sigs.k8s.io/kustomize v5 (``api/internal/builtins/PatchTransformer.go``,
``api/resmap/reswrangler.go``, ``api/types/selector.go``, ``api/resource/resource.go``):

- each entry is applied in file order to every object its ``target`` selects; ``kind``, ``name``
  (and ``group``, ``version``) are regexps anchored at both ends (``^(?:…)$``); the patterns
  evaluated here are literal names, ``.`` and alternations
  (``(source-controller|kustomize-controller)``), see :func:`shared.flux.patches.pattern_matches`;
- a patch text that is a YAML list is a JSON6902 patch; each ``add`` op (RFC 6902, as
  evanphx/json-patch applies it) sets an object member or inserts into a list at an index, ``-``
  appending; the parent must exist;
- otherwise it is a strategic merge patch: the object's ``apiVersion``, ``kind``, ``name`` and
  ``namespace`` are kept (``Resource.ApplySmPatch``) and the patch's mappings are merged into the
  object's, scalars replacing. This is the strategic merge of maps only (ServiceAccount
  annotations, Deployment and pod-template labels): a patch holding a list, a null (delete) or a
  ``$patch`` directive needs the OpenAPI merge keys and is not applied here.

Any other entry (``path:`` to a file, ``options``, label or annotation selectors, a
``namespace`` selector, other JSON6902 ops, a pattern name) is reported in
:attr:`Applied.not_applied`, as is every kustomization field other than ``apiVersion``, ``kind``,
``resources`` and ``patches``: kustomize-controller applies them once it syncs.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Sequence

from .. import safe_yaml
from ..errors import InvalidInput
from .patches import pattern_matches

_INDEX = re.compile(r"^-?[0-9]+$")
_TARGET_KEYS = {"group", "version", "kind", "name"}
_JSON_SCALARS = (str, int, float, bool)


class PatchError(InvalidInput):
    """kustomize would fail on this patch (e.g. an ``add`` whose parent path does not exist);
    ``field`` is ``patches[<index>]``."""


@dataclass(frozen=True)
class Applied:
    """The result of :func:`apply`: ``objects``, the input objects in their order, patched ones
    as new dicts (the input is never modified); ``applied``, the indexes of the entries applied;
    ``not_applied``, one line per entry or field left to kustomize-controller, naming it and why."""

    objects: list[dict]
    applied: tuple[int, ...] = ()
    not_applied: tuple[str, ...] = field(default=())


def _json_like(value: object) -> bool:
    if value is None or isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list):
        return all(_json_like(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v) for k, v in value.items())
    return False


def _maps_only(value: object) -> bool:
    """A strategic merge patch body that merges as plain maps: non-empty mappings down to
    non-null scalars, no lists, no ``$`` directives."""
    if isinstance(value, dict):
        return bool(value) and all(isinstance(k, str) and not k.startswith("$") and _maps_only(v) for k, v in value.items())
    return isinstance(value, _JSON_SCALARS)


def _parse(entry: object) -> tuple[str, object, dict] | str:
    """``(form, body, target)`` with form ``json6902`` (body: the ops) or ``merge`` (body: the
    patch minus the fields kustomize keeps), or the reason the entry is not applied."""
    if not isinstance(entry, dict):
        return "not a mapping"
    if "path" in entry:
        return "patch from a file (path)"
    if set(entry) - {"patch", "target"}:
        return f"has {', '.join(sorted(set(entry) - {'patch', 'target'}))}"
    target = entry.get("target")
    if not isinstance(target, dict) or not target:
        return "no target"
    if set(target) - _TARGET_KEYS:
        return f"target by {', '.join(sorted(set(target) - _TARGET_KEYS))}"
    for key in target:
        if pattern_matches(target[key], "") is None:
            return f"target {key} {target[key]!r} is a pattern"
    text = entry.get("patch")
    if not isinstance(text, str) or not text.strip():
        return "empty patch"
    try:
        docs = safe_yaml.load_all(text.strip())
    except safe_yaml.YAMLRefused:
        return "patch is not YAML"
    if len(docs) != 1 or not _json_like(docs[0]):
        return "patch is not one YAML document of JSON values"
    body = docs[0]
    if isinstance(body, list):
        for op in body:
            if not isinstance(op, dict) or op.get("op") != "add" or set(op) != {"op", "path", "value"}:
                return "JSON6902 op other than add"
            if not isinstance(op["path"], str) or not op["path"].startswith("/"):
                return "JSON6902 path is not a JSON pointer"
        return ("json6902", body, target)
    if isinstance(body, dict):
        meta = body.get("metadata")
        if not isinstance(body.get("kind"), str) or not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            return "strategic merge patch without kind and metadata.name"
        rest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")}
        rest_meta = {k: v for k, v in meta.items() if k not in ("name", "namespace")}
        if rest_meta:
            rest["metadata"] = rest_meta
        if not rest or not _maps_only(rest):
            return "strategic merge patch with lists, nulls or directives"
        return ("merge", rest, target)
    return "patch is neither a JSON6902 list nor an object"


def _gvk(obj: dict) -> tuple[str, str, str]:
    api = obj.get("apiVersion") or ""
    group, _, version = api.rpartition("/")
    return group, version, obj.get("kind") or ""


def selects(target: dict, obj: dict) -> bool:
    """Whether ``target`` (keys among group, version, kind, name, each a literal or an
    alternation) selects ``obj``, as ``resWrangler.Select`` would."""
    group, version, kind = _gvk(obj)
    name = (obj.get("metadata") or {}).get("name") or ""
    for key, actual in (("group", group), ("version", version), ("kind", kind), ("name", name)):
        if target.get(key) and not pattern_matches(target[key], actual):
            return False
    return True


def _merge(into: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _add(doc: dict, pointer: str, value: object) -> None:
    """RFC 6902 ``add`` as evanphx/json-patch does it; raises ValueError with its message."""
    tokens = [_unescape(t) for t in pointer.split("/")[1:]]
    parent: object = doc
    for token in tokens[:-1]:
        if isinstance(parent, dict) and token in parent:
            parent = parent[token]
        elif isinstance(parent, list) and _INDEX.match(token) and 0 <= int(token) < len(parent):
            parent = parent[int(token)]
        else:
            raise ValueError(f"add operation does not apply: doc is missing path: {pointer!r}")
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
            return
        if not _INDEX.match(last):
            raise ValueError(f"add operation does not apply: invalid index {last!r} in {pointer!r}")
        index = int(last)
        if index < 0:  # evanphx/json-patch SupportNegativeIndices
            index += len(parent) + 1
        if not 0 <= index <= len(parent):
            raise ValueError(f"add operation does not apply: index out of bounds in {pointer!r}")
        parent.insert(index, copy.deepcopy(value))
    else:
        raise ValueError(f"add operation does not apply: doc is missing path: {pointer!r}")


def apply(objects: Sequence[dict], patches: Sequence[object]) -> Applied:
    """Apply the kustomization ``patches`` entries (as loaded from ``patches:``) to ``objects``
    (Kubernetes objects as dicts), in order. Entries of other forms are skipped and reported.

    Raises PatchError(``patches[i]``) where kustomize would fail the build: a JSON6902 ``add``
    whose parent is missing or whose index is out of bounds."""
    out = list(objects)
    patched: set[int] = set()
    applied: list[int] = []
    not_applied: list[str] = []
    for index, entry in enumerate(patches):
        parsed = _parse(entry)
        if isinstance(parsed, str):
            target = entry.get("target") if isinstance(entry, dict) else None
            where = f" ({target.get('kind', '*')}/{target.get('name', '*')})" if isinstance(target, dict) else ""
            not_applied.append(f"patches[{index}]{where}: {parsed}")
            continue
        form, body, target = parsed
        for i, obj in enumerate(out):
            if not selects(target, obj):
                continue
            if i not in patched:
                out[i] = copy.deepcopy(obj)
                patched.add(i)
            if form == "merge":
                _merge(out[i], body)
                continue
            for op in body:
                try:
                    _add(out[i], op["path"], op["value"])
                except ValueError as err:
                    meta = out[i].get("metadata") or {}
                    raise PatchError(f"patches[{index}]", f"{out[i].get('kind')}/{meta.get('name')}: {err}") from None
        applied.append(index)
    return Applied(out, tuple(applied), tuple(not_applied))


#: Fields of a kustomization that do not transform the listed resources.
_PLAIN_FIELDS = {"apiVersion", "kind", "resources", "patches"}


def apply_kustomization(objects: Sequence[dict], text: str, *, field: str = "kustomization.yaml") -> Applied:
    """:func:`apply` with the ``patches`` of the kustomization file ``text``; every other field
    that kustomize would use to change the output (``images``, ``patchesStrategicMerge``,
    ``namespace``, ``labels``, ``components``, …) is listed in :attr:`Applied.not_applied`.
    Extra ``resources`` are the caller's to report. Raises InvalidInput(``field``) for a file
    that is not YAML within :data:`shared.safe_yaml.REPOSITORY` limits or not a mapping, or
    whose ``patches`` is not a list."""
    try:
        doc = safe_yaml.load(text)
    except safe_yaml.YAMLRefused as err:
        raise InvalidInput(field, f"is not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(field, "is not a YAML mapping (a kustomization file)")
    entries = doc.get("patches")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise InvalidInput(field, "patches is not a list")
    result = apply(objects, entries)
    others = tuple(f"{key}: kustomization field not applied at install" for key in doc if key not in _PLAIN_FIELDS)
    return Applied(result.objects, result.applied, result.not_applied + others)
