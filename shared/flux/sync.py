"""``gotk-sync.yaml``: the GitRepository and Kustomization that make a cluster sync itself.

Follows fluxcd/flux2 ``pkg/manifestgen/sync/sync.go`` (v2.9.4): content is
``GenWarning + "\\n---\\n" + GitRepository + "---\\n" + Kustomization``, both marshalled with
``sigs.k8s.io/yaml`` (sorted keys), the ``creationTimestamp: null`` and ``status: {}`` lines
stripped, ``v1`` APIs of source- and kustomize-controller.

A ``provider`` (``sync.Options.Provider``, v2.9+) is the GitRepository's ``spec.provider``, an
``omitempty`` string: being marshalled with sorted keys, it comes right after ``interval``
(``interval, provider, recurseSubmodules, ref, secretRef, sparseCheckout, url``;
``../shared/docs/flux-bootstrap-spec.md`` §5). ``secretRef`` is a pointer with ``omitempty``:
bootstrap always names the source Secret (``--secret-name``), so Flux writes it even for a public
repository. Here an empty ``secret`` leaves it out, which is what ``provider: azure`` needs when
no source Secret exists: source-controller fetches the Secret a ``secretRef`` names before it
asks the provider for a token, and a missing one fails the reconcile ("failed to get auth
secret"). This is the one place where the file differs from ``flux bootstrap``'s, on purpose: the
Flux CLI cannot bootstrap with ``provider: azure`` at all (fluxcd/terraform-provider-flux#728).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from . import DEFAULT_NAMESPACE, GEN_WARNING, Manifest
from .yamlfmt import marshal

GITREPOSITORY_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZATION_API = "kustomize.toolkit.fluxcd.io/v1"
#: sync.go sets the Kustomization interval to a fixed 10 minutes.
KUSTOMIZATION_INTERVAL = "10m0s"


@dataclass(frozen=True)
class SyncOptions:
    """Inputs of :func:`generate`.

    ``url`` is the final sync URL (see :func:`shared.flux.options.sync_url`); ``interval`` a Go
    duration string as Flux prints it (``1m0s``); ``target_path`` the normalised ``--path``
    (``./clusters/x`` or ``""``); ``provider`` the GitRepository's ``spec.provider`` (``azure``:
    Microsoft Entra workload identity, source-controller v1.4+), None for none; ``secret`` the
    source Secret of ``spec.secretRef``, ``""`` for none (see the module docstring)."""

    url: str
    branch: str = "main"
    interval: str = "1m0s"
    target_path: str = ""
    namespace: str = DEFAULT_NAMESPACE
    name: str = DEFAULT_NAMESPACE
    secret: str = DEFAULT_NAMESPACE
    recurse_submodules: bool = False
    sparse_checkout: list[str] = field(default_factory=list)
    provider: str | None = None


def objects(opts: SyncOptions) -> tuple[dict, dict]:
    """The GitRepository and Kustomization as dicts (what gets applied to the cluster)."""
    repo_spec: dict = {
        "interval": opts.interval,
        "ref": {"branch": opts.branch},
        "url": opts.url,
    }
    if opts.secret:
        repo_spec["secretRef"] = {"name": opts.secret}
    if opts.provider:
        repo_spec["provider"] = opts.provider
    if opts.recurse_submodules:
        repo_spec["recurseSubmodules"] = True
    if opts.sparse_checkout:
        repo_spec["sparseCheckout"] = list(opts.sparse_checkout)
    gitrepository = {
        "apiVersion": GITREPOSITORY_API,
        "kind": "GitRepository",
        "metadata": {"name": opts.name, "namespace": opts.namespace},
        "spec": repo_spec,
    }
    kustomization = {
        "apiVersion": KUSTOMIZATION_API,
        "kind": "Kustomization",
        "metadata": {"name": opts.name, "namespace": opts.namespace},
        "spec": {
            "interval": KUSTOMIZATION_INTERVAL,
            "path": opts.target_path or "./",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": opts.name},
        },
    }
    return gitrepository, kustomization


def manifest_path(target_path: str, namespace: str, filename: str) -> str:
    """``path.Join(TargetPath, Namespace, filename)`` as Flux computes it (no leading ``./``)."""
    return posixpath.normpath(posixpath.join(target_path or ".", namespace, filename))


def generate(opts: SyncOptions) -> Manifest:
    """Render ``<path>/<namespace>/gotk-sync.yaml`` byte for byte as Flux does."""
    gitrepository, kustomization = objects(opts)
    content = GEN_WARNING + "\n---\n" + marshal(gitrepository) + "---\n" + marshal(kustomization)
    return Manifest(manifest_path(opts.target_path, opts.namespace, "gotk-sync.yaml"), content)
