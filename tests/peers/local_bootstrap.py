"""A real bootstrap on this machine, with no Azure account: ``python -m tests.peers.local_bootstrap``.

It starts the local peers on 127.0.0.1 (an Azure DevOps-style git server, a Key Vault HTTPS test
server and, unless ``--kubeconfig`` names a real cluster, an AKS cluster: the ARM test server and the
Kubernetes API test server in its Entra ID mode, reached with a managed identity's tokens), puts a
PAT in the vault (and the kubeconfig of ``--kubeconfig``), sends ``POST /api/bootstrap`` naming the
cluster by ``clusterResourceId`` (or ``kubeconfigSecret``) through the indexed HTTP trigger of
``function_app.py`` with a real ``func.HttpRequest``, then shows the ARM calls, the commits in the
repository and the objects on the cluster, and runs the same request again to show that a re-run
changes nothing (and makes no ARM call). With no internet, the Flux distribution comes from ``FLUX_MANIFESTS`` or
the Flux v2.9.2 copy in ``../shared``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_V292 = ROOT.parent / "shared" / "flux" / "golden" / "talos-v2.9.2-6comp" / "gotk-components.yaml"


def _say(text: str = "") -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.local_bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="bootstrap this real cluster instead of the local Kubernetes API test server")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--path", default="clusters/local-1", help="path in the repository (default %(default)s)")
    parser.add_argument("--components-extra", default="", help="e.g. image-reflector-controller,image-automation-controller")
    parser.add_argument("--timeout", default="0s", help="health wait sent as the request's timeout, at most 150s (default %(default)s: check once)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    if not os.environ.get("FLUX_MANIFESTS"):
        if not SHARED_V292.is_file():
            _say(f"✗ set FLUX_MANIFESTS to a Flux distribution (no {SHARED_V292})")
            return 1
        os.environ["FLUX_MANIFESTS"] = str(SHARED_V292)
    # The local git peer listens on 127.0.0.1: listed in GIT_ALLOWED_HOSTS, as an operator lists an
    # Azure DevOps Server host (an IP address must be listed exactly).
    os.environ.setdefault("GIT_ALLOWED_HOSTS", "127.0.0.1")

    import azure.functions as func

    from shared import services
    from shared.ports.azure.keyvault import KeyVault
    from tests.peers.git_server import AzureDevOpsGitServer, log as git_log, read_tree
    from tests.peers.azurite import start_or_fail as start_azurite
    from tests.peers.keyvault import KeyVaultServer
    from shared.rotation.registry import Registry

    if args.kubeconfig:
        from shared.errors import InvalidInput
        from tests.peers.kube_api import flatten_kubeconfig

        try:
            # inlined as `kubectl config view --flatten --raw` would: the app reads no local file
            kubeconfig = flatten_kubeconfig(args.kubeconfig)
        except OSError as exc:
            _say(f"✗ --kubeconfig: cannot read {args.kubeconfig}: {exc.strerror}")
            return 1
        except InvalidInput as exc:  # a file it names cannot be read, not YAML
            _say(f"✗ --kubeconfig: {args.kubeconfig}: {exc.message}")
            return 1
    pat = secrets.token_urlsafe(32)
    # Every peer is stopped on the way out, also after a failure (Azurite is a child process).
    with tempfile.TemporaryDirectory(prefix="flux-local-bootstrap-") as work, contextlib.ExitStack() as stack:
        git = stack.enter_context(AzureDevOpsGitServer(Path(work) / "git", pat))
        vault = stack.enter_context(KeyVaultServer())
        git.create_repo("contoso", "platform", "fleet")
        url = git.url("contoso", "platform", "fleet")
        arm = None
        # As the vault's owner stores them: the PAT tagged with the URL prefix it may be sent to
        # (az keyvault secret set --tags flux-git-url-prefixes=...), a kubeconfig marked as one
        # (--content-type application/x-kubeconfig).
        prefix = url.split("/platform/")[0] + "/"
        vault.seed_pat("fleet-pat", pat, prefix)
        if args.kubeconfig:
            where = f"the cluster of {args.kubeconfig}"
            vault.seed_kubeconfig("local-1-kubeconfig", kubeconfig)
            cluster_ref = {"kubeconfigSecret": "local-1-kubeconfig"}
        else:
            from shared.ports.azure.aks import AksClient
            from tests.peers.arm import ArmServer
            from tests.peers.entra_tokens import DEFAULT_OID, JwtTestCredential
            from tests.peers.kube_api import KubeApiServer

            kube = KubeApiServer().start().enable_entra()
            stack.callback(kube.stop)
            kube.bind(DEFAULT_OID, "cluster-admin")  # Azure Kubernetes Service RBAC Cluster Admin
            arm = stack.enter_context(ArmServer())
            managed_cluster = arm.add_cluster("aks-local-1", kube=kube)
            identity = JwtTestCredential()  # the Function's managed identity
            services.set_credential_factory(lambda: identity)
            stack.callback(services.set_credential_factory, None)
            aks = AksClient(identity, base_url=arm.url, connection_verify=arm.ca_file)
            services.set_aks_factory(lambda: aks)
            stack.callback(services.set_aks_factory, None)
            where = "the local Kubernetes API TEST SERVER as an AKS cluster (no controllers run; pass --kubeconfig FILE for a real cluster)"
            cluster_ref = {"clusterResourceId": managed_cluster.id}
        services.set_keyvault_factory(
            lambda: KeyVault(vault.vault_url, vault.credential(), connection_verify=vault.ca_file, verify_challenge_resource=False)
        )
        stack.callback(services.set_keyvault_factory, None)
        azurite = start_azurite()
        stack.callback(azurite.stop)
        registry = Registry.from_connection_string(azurite.connection_string)
        services.set_registry_factory(lambda: registry)
        stack.callback(services.set_registry_factory, None)

        _say("Local peers on 127.0.0.1:")
        _say(f"  Azure DevOps-style git server  {url}  (PAT in Key Vault secret 'fleet-pat', tagged {prefix})")
        _say(f"  Key Vault test server          {vault.vault_url}")
        _say(f"  cluster                        {where}")
        if arm is not None:
            _say(f"  Azure Resource Manager         {arm.url}  (managed cluster {cluster_ref['clusterResourceId']})")
        _say(f"  cluster registry (Table)       Azurite {azurite.table_endpoint}")
        _say(f"  Flux distribution              {os.environ['FLUX_MANIFESTS']}")
        _say()

        from function_app import app

        functions = {fn.get_function_name(): fn for fn in app.get_functions()}
        body = {
            "url": url,
            "branch": "main",
            "path": args.path,
            "allowInsecureHttp": True,
            "passwordSecret": "fleet-pat",
            **cluster_ref,
        }
        if args.components_extra:
            body["componentsExtra"] = [c for c in args.components_extra.split(",") if c]
        if args.context and args.kubeconfig:
            body["context"] = args.context
        if args.timeout not in ("0", "0s"):
            body["timeout"] = args.timeout

        def send(title: str) -> tuple[int, dict]:
            _say(f"POST /api/bootstrap ({title})")
            _say("  " + json.dumps(body))
            req = func.HttpRequest("POST", "http://localhost:7071/api/bootstrap", headers={"Content-Type": "application/json"}, body=json.dumps(body).encode())
            started = time.monotonic()
            arm_before = arm.count() if arm is not None else 0
            resp = functions["bootstrap"].get_user_function()(req)
            result = json.loads(resp.get_body())
            _say(f"→ HTTP {resp.status_code} in {time.monotonic() - started:.1f}s")
            if arm is not None:
                calls = [f"{r.method} {r.path.rsplit('/', 1)[-1]} {r.status}" for r in arm.request_log[arm_before:]]
                _say(f"  ARM: {len(calls)} call(s){': ' + ', '.join(calls) if calls else ' (endpoint and CA cached)'}")
            for line in result.get("log", []):
                _say("  " + line)
            if "error" in result:
                _say(f"  error: {result['error']}")
            return resp.status_code, result

        status, result = send("first run")
        if status != 200:
            return 1
        bare = git.bare_path("contoso", "platform", "fleet")
        _say()
        _say("Commits on main:")
        for commit in git_log(bare, "main"):
            _say(f"  {commit['sha'][:12]}  {commit['author']:<8}  {commit['message'].strip()}")
        _say("Files:")
        for path, data in sorted(read_tree(bare, "main").items()):
            _say(f"  {path}  ({len(data)} bytes)")
        cluster = result["cluster"]
        _say(f"Objects applied to {where}:")
        _say(f"  {cluster['created']} created, {cluster['configured']} configured, {cluster['unchanged']} unchanged")
        for change in cluster["changes"]:
            _say(f"  {change}")
        reg = result.get("registry", {})
        _say(f"Registered for credential rotation: {reg.get('status')} as {reg.get('cluster')!r} {reg.get('message', '')}")
        _say("Health:")
        for name, state in result["health"].items():
            _say(f"  {name}: {state['status']} ({state.get('message', '')})")
        _say()

        status, again = send("second run, same request")
        if status != 200:
            return 1
        cluster = again["cluster"]
        _say(f"Re-run: {len(again['repository']['commits'])} new commit(s); {cluster['created']} created, {cluster['configured']} configured, {cluster['unchanged']} unchanged")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into `head`: the peers are stopped already
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
