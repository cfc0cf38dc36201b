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

#: sigs.k8s.io/kustomize/api/konfig RecognizedKustomizationFileNames.
KUSTOMIZATION_FILE_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_API = "kustomize.config.k8s.io/v1beta1"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def accepted_as_resource(data: bytes) -> bool:
    """Whether kustomize's ``ResourceFactory.SliceFromBytes`` would accept ``data``: YAML (or
    JSON) whose documents are empty or Kubernetes objects (mappings with a ``kind``)."""
    try:
        docs = list(yaml.load_all(data, Loader=_Loader))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return False
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
            return False
        if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
            if not all(isinstance(i, dict) and "kind" in i for i in doc["items"]):
                return False
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
    """``<folder>/kustomization.yaml`` listing what :func:`scan` finds in ``folder``. The caller
    writes it only when no kustomization file exists yet (Flux keeps an existing one)."""
    return Manifest(posixpath.join(folder, "kustomization.yaml"), render(scan(list_dir, read)))
