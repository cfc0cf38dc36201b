"""The one YAML loader for untrusted text: repository files, Flux distributions, kubeconfigs.

``yaml.load(..., Loader=CSafeLoader)`` runs no code, but it trusts the *shape* of what it reads:

* **aliases** are shared, not copied, so a 435-byte "billion laughs" file (nine levels of nine
  aliases) loads at once but is a tree of 9⁹ nodes to whoever walks it (our kustomize resource
  check took 87 s);
* **nesting**: libyaml's composer recurses in C, so ``[[[[…]]]]`` 100 000 levels deep kills the
  process with a segmentation fault (no Python exception);
* **size** is unbounded.

This module composes the node graph itself, iteratively, from libyaml's event stream (the C
parser, so still fast: ~60 ms for the 320 KiB Flux v2.9 distribution, as ``load_all``), and
counts as it goes: bytes (before parsing), nesting depth and nodes **with alias multiplicity**
(an alias counts as many nodes as the tree it names, recursive aliases are refused). Only a
document within :class:`Limits` is constructed, by PyYAML's ``SafeConstructor`` (plain data:
dict, list, str, int, float, bool, None, datetime). Aliases are allowed within the node limit,
as Go's ``gopkg.in/yaml.v3`` (kustomize, Flux) allows them within its alias-ratio limit, so a
manifest Flux accepts is accepted here. An anchor may be redefined (YAML 1.2, yaml.v3); the
alias names the latest definition.

Errors are :class:`YAMLRefused` (a ``ValueError``): ``str()`` is one line with the position
(``line 3, column 7: …``) and libyaml's problem text, never a snippet of the input. Callers name
the file or field (``shared.bootstrap.runner``: 409 naming the repository file; kubeconfigs:
400 naming ``kubeconfigSecret`` without the problem text, since a kubeconfig holds secrets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Limits", "YAMLRefused", "YAMLLimitExceeded", "load", "load_all", "REPOSITORY", "DISTRIBUTION",
           "KUBECONFIG"]


@dataclass(frozen=True)
class Limits:
    """``max_bytes``: input size (UTF-8 bytes); ``max_nodes``: scalars + collections of all
    documents together, aliases counted as the size of the tree they name; ``max_depth``:
    collections nested in each other (aliases included); ``max_documents``: ``---`` documents."""

    max_bytes: int
    max_nodes: int
    max_depth: int = 100
    max_documents: int = 10_000


#: Files of a cloned repository (kustomization.yaml, manifests of the flux-system folder). The
#: v2.9 distribution, which is also such a file once committed, is 320 KiB, 10 600 nodes and 20
#: levels deep; these limits leave room for twelve times that.
REPOSITORY = Limits(max_bytes=4 * 1024 * 1024, max_nodes=250_000, max_depth=100)
#: A Flux distribution (``flux install --export`` with every component).
DISTRIBUTION = Limits(max_bytes=16 * 1024 * 1024, max_nodes=1_000_000, max_depth=100)
#: A kubeconfig (an AKS one is ~10 KiB).
KUBECONFIG = Limits(max_bytes=1024 * 1024, max_nodes=20_000, max_depth=30, max_documents=1)


class YAMLRefused(ValueError):
    """The text is not YAML, or exceeds :class:`Limits`. ``reason`` is the problem without the
    position; ``line``/``column`` are 1-based, or None when the whole input is concerned."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None):
        self.reason = reason
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + reason)


class YAMLLimitExceeded(YAMLRefused):
    """The text may be valid YAML but exceeds :class:`Limits` (bytes, nodes, depth, documents), or
    its aliases are recursive: a reader cannot tell what it would mean, so it is not merely "not a
    manifest" (kustomize's ``yaml.v3`` also refuses excessive aliasing)."""


def _pos(mark) -> tuple[int | None, int | None]:
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def _refuse(reason: str, mark=None, *, limit: bool = True) -> YAMLRefused:
    return (YAMLLimitExceeded if limit else YAMLRefused)(reason, *_pos(mark))


def load_all(data: bytes | str, limits: Limits = REPOSITORY) -> list[Any]:
    """Every document of ``data`` (bytes in UTF-8/16 with or without BOM, or str), constructed
    as plain data; an empty document is ``None``. Raises :class:`YAMLRefused`."""
    return list(_documents(data, limits))


def load(data: bytes | str, limits: Limits = REPOSITORY) -> Any:
    """The single document of ``data`` (``None`` when empty). Raises :class:`YAMLRefused`, also
    when there is more than one document."""
    docs = list(_documents(data, limits))
    if len(docs) > 1:
        raise YAMLRefused("expected a single document, found several")
    return docs[0] if docs else None


def _documents(data: bytes | str, limits: Limits):
    import yaml
    from yaml import events as ev
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    size = len(data) if isinstance(data, (bytes, bytearray)) else len(data.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise YAMLLimitExceeded(f"{size} bytes, more than the {limits.max_bytes} allowed")
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(data)
    total = 0  # nodes so far, all documents, with alias multiplicity
    documents = 0
    try:
        try:
            loader.get_event()  # StreamStart
            while not loader.check_event(ev.StreamEndEvent):
                loader.get_event()  # DocumentStart
                documents += 1
                if documents > limits.max_documents:
                    raise _refuse(f"more than {limits.max_documents} documents")
                anchors: dict[str, tuple[Any, int, int]] = {}  # anchor -> (node, size, height)
                # open collections: [node, size so far, height of children so far, anchor, key-is-next]
                stack: list[list] = []
                root = None
                while not loader.check_event(ev.DocumentEndEvent):
                    event = loader.get_event()
                    if isinstance(event, (ev.SequenceEndEvent, ev.MappingEndEvent)):
                        node, nsize, height, anchor = stack.pop()
                        node.end_mark = event.end_mark
                        done = (node, nsize, height + 1)
                    elif isinstance(event, ev.AliasEvent):
                        if event.anchor not in anchors:
                            if any(frame[3] == event.anchor for frame in stack):
                                raise _refuse(f"recursive alias *{event.anchor}", event.start_mark)
                            raise _refuse(f"found undefined alias *{event.anchor}", event.start_mark, limit=False)
                        done = anchors[event.anchor]
                        total += done[1]
                    elif isinstance(event, ev.ScalarEvent):
                        tag = event.tag
                        if tag is None or tag == "!":
                            tag = loader.resolve(ScalarNode, event.value, event.implicit)
                        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
                        total += 1
                        done = (node, 1, 0)
                        if event.anchor is not None:
                            anchors[event.anchor] = done
                    elif isinstance(event, (ev.SequenceStartEvent, ev.MappingStartEvent)):
                        total += 1
                        if len(stack) + 1 > limits.max_depth:
                            raise _refuse(f"nested deeper than {limits.max_depth} levels", event.start_mark)
                        tag = event.tag
                        seq = isinstance(event, ev.SequenceStartEvent)
                        kind = SequenceNode if seq else MappingNode
                        if tag is None or tag == "!":
                            tag = loader.resolve(kind, None, event.implicit)
                        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
                        if event.anchor is not None:
                            anchors.pop(event.anchor, None)  # an alias inside it is recursive
                        stack.append([node, 1, 0, event.anchor])
                        if total > limits.max_nodes:
                            raise _refuse(f"more than {limits.max_nodes} nodes (aliases counted as what they expand to)",
                                          event.start_mark)
                        continue
                    else:  # pragma: no cover - the parser emits nothing else inside a document
                        raise _refuse(f"unexpected {type(event).__name__}", event.start_mark, limit=False)
                    if total > limits.max_nodes:
                        raise _refuse(f"more than {limits.max_nodes} nodes (aliases counted as what they expand to)",
                                      event.start_mark)
                    node, nsize, height = done
                    if isinstance(event, (ev.SequenceEndEvent, ev.MappingEndEvent)) and anchor is not None:
                        anchors[anchor] = done
                    if stack:
                        parent = stack[-1]
                        if len(stack) + height > limits.max_depth:
                            raise _refuse(f"nested deeper than {limits.max_depth} levels (through aliases)",
                                          event.start_mark)
                        parent[1] += nsize
                        parent[2] = max(parent[2], height)
                        pnode = parent[0]
                        if isinstance(pnode, SequenceNode):
                            pnode.value.append(node)
                        elif pnode.value and len(pnode.value[-1]) == 1:
                            pnode.value[-1] = (pnode.value[-1][0], node)
                        else:
                            pnode.value.append((node,))
                    else:
                        root = node
                loader.get_event()  # DocumentEnd
                yield None if root is None else loader.construct_document(root)
        except YAMLRefused:
            raise
        except yaml.MarkedYAMLError as exc:
            raise _refuse(str(exc.problem or exc.context or "not valid YAML"), exc.problem_mark, limit=False) from None
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "not valid YAML"
            raise YAMLRefused(reason[:200]) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # a constructor's own errors (timestamp 2024-13-99, an int of 5000 digits), bad
            # encodings: the message may quote the input, so only the type is given
            raise YAMLRefused(f"not valid YAML ({type(exc).__name__})") from None
    finally:
        loader.dispose()
