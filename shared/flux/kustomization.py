"""``kustomization.yaml`` for the ``flux-system`` folder, written only when absent.

Follows fluxcd/flux2 ``pkg/manifestgen/kustomization/kustomization.go``: walk the folder in
lexical order; a sub-folder holding a kustomization file is one entry and is not descended into;
every other file is listed when kustomize's resource factory accepts it, which includes
comment-only files such as a README.md made of ``#`` lines (golden set
``clickhouse_deployment-v2.8.3``). Marshalled with sorted keys and unindented lists.
"""

from __future__ import annotations

import posixpath
from typing import Callable, Iterable

import yaml

from . import Manifest
from .yamlfmt import marshal

#: sigs.k8s.io/kustomize/api/konfig RecognizedKustomizationFileNames: a sub-folder holding one of
#: these is listed as one resource.
KUSTOMIZATION_FILE_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
#: konfig.DefaultKustomizationFileName(): the file generated (and the one Flux builds to install).
KUSTOMIZATION_FILE = "kustomization.yaml"
KUSTOMIZATION_API = "kustomize.config.k8s.io/v1beta1"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _has_nil_in_list(node: object) -> bool:
    """kyaml ``RNode.HasNilEntryInList``: a list anywhere in the object holds a null item."""
    if isinstance(node, dict):
        return any(_has_nil_in_list(v) for v in node.values())
    if isinstance(node, list):
        return any(item is None or _has_nil_in_list(item) for item in node)
    return False


def _valid_object(doc: object) -> bool:
    """kyaml ``RNode.GetValidatedMetadata`` plus kustomize's ``dropBadNodes``: a mapping with a
    ``kind`` and, unless the kind ends in ``List``, a ``metadata.name``; no null list items."""
    if not isinstance(doc, dict):
        return False
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        return False
    if not kind.endswith("List"):
        meta = doc.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            return False
    return not _has_nil_in_list(doc)


def accepted_as_resource(data: bytes) -> bool:
    """Whether kustomize's ``ResourceFactory.SliceFromBytes`` (sigs.k8s.io/kustomize/api
    ``resource/factory.go``) accepts ``data``, which is the test Flux's generator applies to each
    file: YAML (or JSON) whose documents are empty (a comment-only file counts) or Kubernetes
    objects (``kind`` and, except for ``…List`` kinds, ``metadata.name``); a ``…List`` with
    ``items`` must hold such objects."""
    try:
        docs = list(yaml.load_all(data, Loader=_Loader))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return False
    pending = [d for d in docs if d is not None]
    while pending:
        doc = pending.pop(0)
        if not _valid_object(doc):
            return False
        if doc["kind"].endswith("List") and "items" in doc:
            items = doc["items"]
            if items is None:
                continue
            if not isinstance(items, list):
                return False
            pending.extend(i for i in items if i is not None)
    return True


def scan(list_dir: Callable[[str], Iterable[tuple[str, bool]]], read: Callable[[str], bytes], base: str = "") -> list[str]:
    """Resources of the folder, relative to it. ``list_dir(rel)`` yields ``(name, is_dir)`` for a
    sub-folder (``""`` is the folder itself); ``read(rel)`` returns a file's bytes."""
    out: list[str] = []
    for name, is_dir in sorted(list_dir(base)):
        rel = posixpath.join(base, name) if base else name
        if is_dir:
            names = {n for n, _ in list_dir(rel)}
            if any(k in names for k in KUSTOMIZATION_FILE_NAMES):
                out.append(rel)
            else:
                out.extend(scan(list_dir, read, rel))
        elif accepted_as_resource(read(rel)):
            out.append(rel)
    return out


def render(resources: list[str]) -> str:
    """The kustomization text for ``resources`` (already in order)."""
    doc: dict = {"apiVersion": KUSTOMIZATION_API, "kind": "Kustomization"}
    if resources:
        doc["resources"] = list(resources)
    return marshal(doc)


def generate(folder: str, list_dir, read) -> Manifest:
    """``<folder>/kustomization.yaml`` listing what :func:`scan` finds in ``folder`` (``list_dir``
    and ``read`` as for :func:`scan`). The caller writes it only when the folder has no
    kustomization file yet, and keeps an existing one byte for byte. (Flux checks for
    ``kustomization.yaml`` only, ``konfig.DefaultKustomizationFileName()``, and so would add a second
    file next to a ``kustomization.yml`` that kustomize then refuses; the runner checks every name in
    :data:`KUSTOMIZATION_FILE_NAMES`.)"""
    return Manifest(posixpath.join(folder, "kustomization.yaml"), render(scan(list_dir, read)))
