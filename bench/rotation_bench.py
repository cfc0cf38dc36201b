"""Rotation benchmark (issue #4): N registered clusters whose Kubernetes API answers after a delay.

    .venv/bin/python -m bench.rotation_bench [--clusters 500] [--delay-ms 20] [--concurrency 16]

Starts N Kubernetes API test servers (``tests/peers/kube_api.py``, each with a latency of ``--delay-ms``
before every answer; in a child process, bench/_kube_hosts.py, so their threads do not take the GIL from the run), each with Flux's GitRepository CRD, a GitRepository and a source Secret holding the
old PAT; the Key Vault test server with the N kubeconfigs and a new PAT version; the Azure DevOps-style
git server accepting the new PAT; the registry on Azurite when it is installed (else records in memory).
Then times two runs of :func:`shared.rotation.Rotator.run`: **rotate** (new PAT: every cluster checked,
written and annotated) and **steady** (nothing changed). Prints, for each, the total time in seconds
(registry listing included), clusters per second, Kubernetes API calls per cluster (by HTTP method) and
Key Vault reads; exits 1 if a run failed a cluster or took longer than ``--budget`` seconds (default 30;
the Consumption plan's default function timeout is 5 minutes). Setup (starting the N servers) is not
timed and takes 1-3 minutes for 500 clusters.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._kube_hosts import serve  # noqa: E402 - after the checkout is on sys.path

GOLDEN = os.path.join(os.path.dirname(ROOT), "shared", "flux", "golden", "talos-v2.9.2-4comp", "gotk-components.yaml")
GITREPO_CRD = "gitrepositories.source.toolkit.fluxcd.io"


def _crd() -> dict:
    import yaml

    with open(GOLDEN, encoding="utf-8") as f:
        for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc["kind"] == "CustomResourceDefinition" and doc["metadata"]["name"] == GITREPO_CRD:
                return doc
    raise SystemExit(f"{GITREPO_CRD} not found in {GOLDEN}")


def _prepare(server, crd: dict, url: str, old_pat: str) -> None:
    from shared.ports.kube import Cluster

    with Cluster.from_kubeconfig(server.kubeconfig()) as c:
        c.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}, crd], poll_interval=0.05)
        c.apply([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                  "metadata": {"name": "flux-system", "namespace": "flux-system"},
                  "spec": {"interval": "1m0s", "ref": {"branch": "main"}, "url": url,
                           "secretRef": {"name": "flux-system"}}}], poll_interval=0.05)
        c.reconcile_secret("flux-system", "flux-system", {"username": "git", "password": old_pat})


def _prepare_all(url: str, old_pat: str, servers) -> None:
    """What each cluster holds before the run (in the child process): the GitRepository CRD, the
    flux-system GitRepository and its source Secret with the old PAT."""
    crd = _crd()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda s: _prepare(s, crd, url, old_pat), servers))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", type=int, default=500)
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--budget", type=float, default=30.0, help="seconds a run may take (default %(default)s)")
    args = p.parse_args(argv)

    from shared.rotation import RotationSettings, Rotator
    from shared.rotation.registry import ClusterRecord, Registry
    from tests.peers.azurite import AzuriteServer
    from tests.peers.entra_tokens import JwtTestCredential
    from tests.peers.git_server import AzureDevOpsGitServer
    from tests.peers.keyvault import KeyVaultServer
    from shared.ports.azure.keyvault import KeyVault

    import multiprocessing

    old_pat, new_pat = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    os.environ.setdefault("GIT_ALLOWED_HOSTS", "127.0.0.1")  # the local git peer, listed as an operator would
    tmp = tempfile.mkdtemp(prefix="rotation-bench-")
    azurite = None
    child = None
    t_setup = time.monotonic()
    with KeyVaultServer() as vault_server, AzureDevOpsGitServer(os.path.join(tmp, "git"), old_pat) as git:
        git.create_repo("contoso", "platform", "fleet")
        url = git.url("contoso", "platform", "fleet")
        print(f"starting {args.clusters} Kubernetes API test servers (setup, not timed: a minute or more for 500)...", flush=True)
        ctx = multiprocessing.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        child = ctx.Process(target=serve, args=(child_conn, args.clusters, functools.partial(_prepare_all, url, old_pat)), daemon=True)
        child.start()
        try:
            kubeconfigs = conn.recv()
            records = []
            for i, kubeconfig in enumerate(kubeconfigs):
                name = f"aks-{i:04d}"
                vault_server.seed_kubeconfig(f"{name}-kubeconfig", kubeconfig)
                records.append(ClusterRecord(name=name, kubeconfig_secret=f"{name}-kubeconfig", git_url=url,
                                             pat_secret="fleet-pat", allow_insecure_http=True).validate())
            registry = None
            try:
                azurite = AzuriteServer().start()
                registry = Registry.from_connection_string(azurite.connection_string, f"bench{uuid.uuid4().hex[:8]}")
                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(registry.upsert, records))
            except Exception as exc:  # noqa: BLE001 - Azurite not installed: records stay in memory
                print(f"(registry in memory: Azurite unavailable: {type(exc).__name__})", flush=True)
            vault_server.seed_pat("fleet-pat", new_pat, url.split("/platform/")[0] + "/")
            git.pat = new_pat
            print(f"setup: {args.clusters} clusters in {time.monotonic() - t_setup:.1f} s; "
                  f"API delay {args.delay_ms:g} ms, concurrency {args.concurrency}", flush=True)

            kv = KeyVault(vault_server.vault_url, vault_server.credential(), connection_verify=vault_server.ca_file,
                          verify_challenge_resource=False)
            settings = RotationSettings(concurrency=args.concurrency)
            ok = True
            for label in ("rotate", "steady"):
                conn.send(("delay", args.delay_ms / 1000.0))
                conn.recv()
                kv_before = len(vault_server.request_log)
                t0 = time.monotonic()
                listed = registry.list() if registry is not None else records
                t_list = time.monotonic() - t0
                summary = Rotator(keyvault=kv, credential=JwtTestCredential(), settings=settings).run(listed)
                total = time.monotonic() - t0
                conn.send(("counts",))
                calls = Counter(conn.recv())
                n = len(records)
                d = summary.to_dict()
                print(f"{label:>6}: {total:6.2f} s total ({t_list:.2f} s registry list), "
                      f"{n / total:6.1f} clusters/s; updated {d['updated']}, unchanged {d['unchanged']}, "
                      f"failed {d['failed']}; API calls/cluster {sum(calls.values()) / n:.2f} "
                      f"({', '.join(f'{k} {v / n:.2f}' for k, v in sorted(calls.items()))}); "
                      f"Key Vault reads {len(vault_server.request_log) - kv_before}", flush=True)
                if d["failed"]:
                    print("   first error:", next(c.errors for c in summary.clusters if c.errors)[0], flush=True)
                ok = ok and not d["failed"] and total <= args.budget
            kv.close()
        finally:
            conn.send(("stop",))
            child.join(timeout=30)
            if azurite is not None:
                azurite.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
