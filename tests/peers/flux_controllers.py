"""Flux's controllers, played on Kubernetes API test servers (which run no controllers): what
source-controller, kustomize-controller and the Deployment controller would do after a push, so the
fleet's health checks see a cluster that follows its Git repository.

For each cluster (a :class:`tests.peers.kube_api.KubeApiServer`), :meth:`FluxControllers.reconcile`:

1. reads the branch head of the cluster's GitRepository ``flux-system`` from the bare repository (as
   source-controller fetches it) and sets its status Ready with ``artifact.revision`` =
   ``<branch>@sha1:<head>``;
2. applies ``<path>/flux-system/gotk-components.yaml`` of that revision with the ``patches`` of the
   folder's ``kustomization.yaml`` (what kustomize-controller builds there: the SSH and workload
   identity patches included; :func:`shared.flux.kustomize.apply_kustomization`, checked against
   kustomize's bytes in test_flux_patches) with server-side apply, field manager
   ``kustomize-controller``, and sets the Kustomization Ready with
   ``lastAppliedRevision``/``lastAttemptedRevision`` = that revision;
3. marks every Deployment of the namespace available at its generation.

``fail(server, message)`` makes a cluster's Kustomization report ``Ready=False`` instead (a broken
kustomize build), ``suspend``-ed objects are left alone, as Flux leaves them.
"""

from __future__ import annotations

import subprocess
import threading

from tests.peers.git_server import GIT

_SOURCE = "source.toolkit.fluxcd.io/v1"
_KUSTOMIZE = "kustomize.toolkit.fluxcd.io/v1"


def _ready(obj: dict, extra: dict, *, ok: bool = True, message: str = "Applied revision") -> dict:
    return {"observedGeneration": obj["metadata"].get("generation", 1), **extra, "conditions": [{
        "type": "Ready", "status": "True" if ok else "False", "reason": "ReconciliationSucceeded" if ok else "BuildFailed",
        "message": message, "lastTransitionTime": "2026-12-01T00:00:00Z"}]}


class FluxControllers:
    """``kubeconfig(server)`` gives the controllers' access (default the server's token kubeconfig; a
    server in Entra ID mode takes its admin client certificate)."""

    def __init__(self, bare, servers, namespace: str = "flux-system", kubeconfig=None):
        self.bare, self.servers, self.namespace = bare, list(servers), namespace
        self.kubeconfig = kubeconfig or (lambda server: server.kubeconfig())
        self.failing: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fail(self, server, message: str) -> None:
        self.failing[id(server)] = message

    def _head(self, branch: str) -> str | None:
        out = subprocess.run([GIT, "--git-dir", str(self.bare), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                             capture_output=True, text=True)
        return out.stdout.strip() or None

    def _file(self, sha: str, path: str) -> str | None:
        out = subprocess.run([GIT, "--git-dir", str(self.bare), "show", f"{sha}:{path}"], capture_output=True)
        return out.stdout.decode() if out.returncode == 0 else None

    def reconcile(self) -> None:
        """One pass over every cluster (see the module doc)."""
        import yaml

        from shared.flux.kustomize import apply_kustomization
        from shared.ports.kube import Cluster

        ns = self.namespace
        for server in self.servers:
            repo = server.get_object(_SOURCE, "GitRepository", ns, ns)
            ks = server.get_object(_KUSTOMIZE, "Kustomization", ns, ns)
            if not repo or not ks or repo["spec"].get("suspend") or ks["spec"].get("suspend"):
                continue
            branch = repo["spec"].get("ref", {}).get("branch", "main")
            head = self._head(branch)
            if head is None:
                continue
            revision = f"{branch}@sha1:{head}"
            server.set_status(_SOURCE, "GitRepository", ns, ns, _ready(repo, {"artifact": {
                "revision": revision, "digest": "sha256:" + "0" * 64, "lastUpdateTime": "2026-12-01T00:00:00Z",
                "path": f"gitrepository/{ns}/{ns}/{head}.tar.gz", "url": f"http://source-controller/{head}.tar.gz"}},
                message=f"stored artifact for revision '{revision}'"))
            failing = self.failing.get(id(server))
            if failing:
                server.set_status(_KUSTOMIZE, "Kustomization", ns, ns, _ready(ks, {"lastAttemptedRevision": revision},
                                                                                ok=False, message=failing))
                continue
            path = (ks["spec"].get("path") or "./").strip("./") or ""
            text = self._file(head, f"{path}/{ns}/gotk-components.yaml".lstrip("/"))
            if text:
                docs = [d for d in yaml.safe_load_all(text) if d]
                kustomization = self._file(head, f"{path}/{ns}/kustomization.yaml".lstrip("/"))
                if kustomization:
                    docs = apply_kustomization(docs, kustomization).objects
                with Cluster.from_kubeconfig(self.kubeconfig(server), field_manager="kustomize-controller") as cluster:
                    cluster.apply(docs, poll_interval=0.05)
            ks = server.get_object(_KUSTOMIZE, "Kustomization", ns, ns)
            server.set_status(_KUSTOMIZE, "Kustomization", ns, ns, _ready(ks, {
                "lastAppliedRevision": revision, "lastAttemptedRevision": revision},
                message=f"Applied revision: {revision}"))
            for dep in server.objects("apps/v1", "Deployment", ns):
                replicas = dep["spec"].get("replicas", 1)
                server.set_status("apps/v1", "Deployment", dep["metadata"]["name"], ns, {
                    "observedGeneration": dep["metadata"].get("generation", 1), "replicas": replicas,
                    "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                                   {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})

    def start(self, interval: float = 0.2) -> "FluxControllers":
        def loop():
            while not self._stop.wait(interval):
                try:
                    self.reconcile()
                except Exception:  # noqa: BLE001 - a controller retries on its next interval
                    pass

        self._thread = threading.Thread(target=loop, name="flux-controllers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
