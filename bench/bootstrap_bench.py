"""Bootstrap benchmark: prints cold-start import time, manifest rendering time and the time of a
first and a repeated bootstrap against the local peers (git smart-HTTP, Key Vault, Kubernetes API
test server). Run: ``.venv/bin/python bench/bootstrap_bench.py [--runs N]``."""

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
    from shared.ports.kube import Cluster
    from tests.peers.git_server import AzureDevOpsGitServer
    from tests.peers.kube_api import KubeApiServer

    os.environ.setdefault("GIT_ALLOWED_HOSTS", "127.0.0.1")  # the local git peer, listed as an operator would
    first, rerun = [], []
    for i in range(args.runs):
        pat = secrets.token_urlsafe(24)
        with tempfile.TemporaryDirectory() as tmp, AzureDevOpsGitServer(Path(tmp), pat) as git:
            kube = KubeApiServer().start()
            try:
                git.create_repo("o", "p", f"r{i}")
                opts = runner.BootstrapOptions(url=git.url("o", "p", f"r{i}"), path="./clusters/bench", allow_insecure_http=True)
                for bucket in (first, rerun):
                    cluster = Cluster.from_kubeconfig(kube.kubeconfig())
                    t = time.perf_counter()
                    runner.Bootstrapper(opts, runner.Credentials(password=pat), cluster, dist).run()
                    bucket.append(time.perf_counter() - t)
            finally:
                kube.stop()
    print(f"bootstrap, first run (2 commits, 35 objects): median {statistics.median(first):5.2f} s  max {max(first):5.2f} s  (n={len(first)})")
    print(f"bootstrap, re-run (no commit, 35 unchanged):  median {statistics.median(rerun):5.2f} s  max {max(rerun):5.2f} s  (n={len(rerun)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
