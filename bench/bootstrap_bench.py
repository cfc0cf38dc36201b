"""Bootstrap benchmark: prints cold-start import time, manifest rendering time and the time of a
first and a repeated bootstrap against the local peers (git smart-HTTP, Kubernetes API test server),
with the cluster named two ways side by side: a kubeconfig, and an AKS resource ID (the ARM test
server through the real ContainerServiceClient, the Kubernetes API test server in its Entra ID mode,
the managed identity's token), counting the ARM round trips of each run (two the first time, none on
a re-run within the process). Run: ``.venv/bin/python -m bench.bootstrap_bench [--runs N]``."""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V292 = ROOT.parent / "shared" / "flux" / "golden" / "talos-v2.9.2-6comp" / "gotk-components.yaml"
sys.path.insert(0, str(ROOT))


def cold_import_ms() -> float:
    code = "import time; t=time.perf_counter(); import function_app; print((time.perf_counter()-t)*1000)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    imports = [cold_import_ms() for _ in range(3)]
    print(f"cold import of function_app:        median {statistics.median(imports):7.1f} ms")

    from shared.flux import distribution, install

    dist = distribution.load(str(V292))
    times = []
    for _ in range(20):
        t = time.perf_counter()
        install.generate(dist, install.InstallOptions())
        times.append((time.perf_counter() - t) * 1000)
    print(f"render gotk-components.yaml (4 of 6): median {statistics.median(times):7.1f} ms")

    from shared import bootstrap as runner
    from shared.clusters import BOOTSTRAP, ClusterAccess, ClusterRef
    from shared.ports.azure.aks import AksClient, TokenProvider
    from shared.ports.kube import Cluster
    from tests.peers.arm import ArmServer
    from tests.peers.entra_tokens import DEFAULT_OID, JwtTestCredential
    from tests.peers.git_server import AzureDevOpsGitServer
    from tests.peers.kube_api import KubeApiServer

    os.environ.setdefault("GIT_ALLOWED_HOSTS", "127.0.0.1")  # the local git peer, listed as an operator would
    cred = JwtTestCredential()
    times: dict[str, list[float]] = {k: [] for k in ("kc-first", "kc-rerun", "arm-first", "arm-rerun")}
    connect_ms: dict[str, list[float]] = {"arm-first": [], "arm-rerun": []}
    trips: dict[str, list[int]] = {"arm-first": [], "arm-rerun": []}
    with ArmServer() as arm:
        # one ARM client and token provider for the whole process, as the Function has
        access = ClusterAccess(aks=AksClient(cred, base_url=arm.url, connection_verify=arm.ca_file),
                               token_provider=TokenProvider(cred))
        for i in range(args.runs):
            pat = secrets.token_urlsafe(24)
            with tempfile.TemporaryDirectory() as tmp, AzureDevOpsGitServer(Path(tmp), pat) as git:
                kube, aks_kube = KubeApiServer().start(), KubeApiServer().start()
                aks_kube.enable_entra()
                aks_kube.bind(DEFAULT_OID, "cluster-admin")
                ref = ClusterRef.parse(cluster_resource_id=arm.add_cluster(f"aks-bench-{i}", kube=aks_kube).id)
                try:
                    for kind in ("kc", "arm"):
                        git.create_repo("o", "p", f"{kind}{i}")
                        opts = runner.BootstrapOptions(url=git.url("o", "p", f"{kind}{i}"), path="./clusters/bench",
                                                       allow_insecure_http=True)
                        for key in (f"{kind}-first", f"{kind}-rerun"):
                            n0 = arm.count()
                            t = time.perf_counter()
                            if kind == "kc":
                                cluster = Cluster.from_kubeconfig(kube.kubeconfig())
                            else:
                                cluster = access.connect(ref, purpose=BOOTSTRAP)
                                connect_ms[key].append((time.perf_counter() - t) * 1000)
                                trips[key].append(arm.count() - n0)
                            with cluster:
                                runner.Bootstrapper(opts, runner.Credentials(password=pat), cluster, dist).run()
                            times[key].append(time.perf_counter() - t)
                finally:
                    kube.stop()
                    aks_kube.stop()

    def line(label: str, key: str, extra: str = "") -> None:
        xs = times[key]
        print(f"{label} median {statistics.median(xs):5.2f} s  max {max(xs):5.2f} s  (n={len(xs)}){extra}")

    def arm_extra(key: str) -> str:
        return (f"  ARM round trips {min(trips[key])}-{max(trips[key])}, endpoint from ARM "
                f"{statistics.median(connect_ms[key]):6.1f} ms")

    print("bootstrap by kubeconfig:")
    line("  first run (2 commits, 35 objects):  ", "kc-first")
    line("  re-run (no commit, 35 unchanged):   ", "kc-rerun")
    print("bootstrap by clusterResourceId (ARM + managed identity, Entra ID tokens for the AKS server app):")
    line("  first run (2 commits, 35 objects):  ", "arm-first", arm_extra("arm-first"))
    line("  re-run (no commit, 35 unchanged):   ", "arm-rerun", arm_extra("arm-rerun"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
