"""``kustomization.yaml`` for the ``flux-system`` folder, written only when absent.

Follows fluxcd/flux2 ``pkg/manifestgen/kustomization/kustomization.go``: walk the folder in
lexical order; a sub-folder holding a kustomization file is one entry and is not descended into;
every other file is listed when kustomize's resource factory accepts it, which includes
comment-only files such as a README.md made of ``#`` lines (golden set
``clickhouse_deployment-v2.8.3``). Marshalled with sorted keys and unindented lists.

Symlinks, as Flux's walker sees them: ``filepath.Walk`` lstat's each entry, so a symlink is never
descended into (a link loop cannot make the walk repeat) and is handled as a file: its target is
read, through ``fluxcd/pkg/kustomize/filesys`` ``MakeFsOnDiskSecureBuild`` rooted at the clone.
So a link to a file inside the clone is listed (under the link's name) when that file is a
resource; a link to a folder, outside the clone, or dangling makes Flux's generation fail, and
here the :class:`Tree` raises (409 naming it). A sub-folder "has a kustomization file" when one
of :data:`KUSTOMIZATION_FILE_NAMES` exists there, a link counting when it resolves in the clone
(``fs.Exists``).

What a repository holds is untrusted: files are parsed with :mod:`shared.safe_yaml` (a file over
its limits, e.g. a "billion laughs", is refused naming the file rather than judged), the walk
lists at most :data:`MAX_ENTRIES` entries and calls ``check`` before each (the run's deadline).
"""

from __future__ import annotations

import posixpath
from typing import Callable, Iterable, Protocol

from .. import safe_yaml
from ..errors import Conflict
from . import Manifest
from .yamlfmt import marshal

#: sigs.k8s.io/kustomize/api/konfig RecognizedKustomizationFileNames: a sub-folder holding one of
#: these is listed as one resource.
KUSTOMIZATION_FILE_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
#: konfig.DefaultKustomizationFileName(): the file generated (and the one Flux builds to install).
KUSTOMIZATION_FILE = "kustomization.yaml"
KUSTOMIZATION_API = "kustomize.config.k8s.io/v1beta1"

#: Most entries (files, folders, links) one walk looks at before it gives up (409).
MAX_ENTRIES = 10_000


class Tree(Protocol):
    """The folder the walk lists, as Flux's on-disk file system shows it; paths are relative to
    the folder, ``/``-separated, ``""`` being the folder itself."""

    def entries(self, rel: str) -> Iterable[tuple[str, str]]:
        """``(name, kind)`` of the entries of folder ``rel``, kind ``file``/``dir``/``symlink``/``other``."""

    def read(self, rel: str) -> bytes:
        """The bytes of file ``rel``, a symlink resolved inside the clone; raises (409) for a link
        Flux's secure file system refuses or fails on, and for a file over the size limit."""

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists, a symlink counting when it resolves inside the clone."""


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
    ``items`` must hold such objects. Raises :class:`shared.safe_yaml.YAMLLimitExceeded` for a
    file over :data:`shared.safe_yaml.REPOSITORY` (too big, too deep, too many nodes by alias)."""
    try:
        docs = safe_yaml.load_all(data, safe_yaml.REPOSITORY)
    except safe_yaml.YAMLLimitExceeded:
        raise
    except safe_yaml.YAMLRefused:
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


def scan(tree: Tree, base: str = "", *, where: str = "", check: Callable[[str], None] | None = None,
         _seen: list[int] | None = None) -> list[str]:
    """Resources of the folder, relative to it, in Flux's order (see the module docstring).

    ``where`` (the folder's repository path) prefixes paths in errors and in ``check(path)``, called
    before each entry (to stop at the run's deadline). Raises ``Conflict`` naming the file for a
    file over the YAML limits or more than :data:`MAX_ENTRIES` entries, and whatever ``tree`` raises."""
    seen = _seen if _seen is not None else [0]
    out: list[str] = []
    for name, kind in sorted(tree.entries(base)):
        rel = posixpath.join(base, name) if base else name
        seen[0] += 1
        if seen[0] > MAX_ENTRIES:
            raise Conflict(f"{where or '.'}: more than {MAX_ENTRIES} entries to list for kustomization.yaml; "
                           "add a kustomization.yaml of your own")
        if check is not None:
            check(posixpath.join(where, rel) if where else rel)
        if kind == "dir":
            if any(tree.exists(posixpath.join(rel, k)) for k in KUSTOMIZATION_FILE_NAMES):
                out.append(rel)
            else:
                out.extend(scan(tree, rel, where=where, check=check, _seen=seen))
            continue
        try:
            accepted = accepted_as_resource(tree.read(rel))
        except safe_yaml.YAMLLimitExceeded as exc:
            path = posixpath.join(where, rel) if where else rel
            raise Conflict(f"{path} is refused as YAML ({exc}); nothing was written") from None
        if accepted:
            out.append(rel)
    return out


def render(resources: list[str]) -> str:
    """The kustomization text for ``resources`` (already in order)."""
    doc: dict = {"apiVersion": KUSTOMIZATION_API, "kind": "Kustomization"}
    if resources:
        doc["resources"] = list(resources)
    return marshal(doc)


def generate(folder: str, tree: Tree, *, check: Callable[[str], None] | None = None) -> Manifest:
    """``<folder>/kustomization.yaml`` listing what :func:`scan` finds in ``tree`` (the folder).
    The caller writes it only when the folder has no kustomization file yet, and keeps an existing
    one byte for byte. (Flux checks for ``kustomization.yaml`` only,
    ``konfig.DefaultKustomizationFileName()``, and so would add a second file next to a
    ``kustomization.yml`` that kustomize then refuses; the runner checks every name in
    :data:`KUSTOMIZATION_FILE_NAMES`.)"""
    return Manifest(posixpath.join(folder, "kustomization.yaml"), render(scan(tree, where=folder, check=check)))
