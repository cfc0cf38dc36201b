"""The bootstrap writes the options' kustomization patches (BootstrapOptions.kustomization_patches)
into flux-system/kustomization.yaml and installs the controllers already patched.

Through the indexed HTTP trigger against the local peers (git smart-HTTP server, Key Vault test
server, Kubernetes API test server), with the SSH host key algorithms patch of Flux's Azure DevOps
page (``sshHostkeyAlgos``) as the option.
"""

from __future__ import annotations

import yaml

from tests.peers.git_server import log as git_log
from tests.peers.git_server import read_tree, seed
from tests.test_bootstrap_e2e import GOLDEN, call, cluster_registry, env, request  # noqa: F401 - fixtures

KFILE = "clusters/aks-weu-1/flux-system/kustomization.yaml"
ALGOS = ["rsa-sha2-512", "rsa-sha2-256"]
FLAG = "--ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256"

#: fluxcd/website content/en/flux/installation/bootstrap/azure-devops.md, "Bootstrap using SSH
#: keys": the patch entry as the page writes it (the page's trailing spaces after the value aside),
#: here in Flux's Go-YAML style (unindented list, literal block).
ENTRY = b"""\
- patch: |
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256
  target:
    kind: Deployment
    name: (source-controller|image-automation-controller)
"""
DOC_ENTRY = yaml.safe_load(ENTRY)[0]
#: Flux's generated kustomization.yaml (golden, 115 bytes) followed by that entry.
EXPECTED = (GOLDEN / "talos-v2.9.2-4comp" / "kustomization.yaml").read_bytes() + b"patches:\n" + ENTRY


def _args(cluster, name: str) -> list[str]:
    dep = cluster.get("apps/v1", "Deployment", name, "flux-system")
    return dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_patch_is_committed_and_the_controllers_start_patched(functions_by_name, env):
    status, body = call(functions_by_name, request(env, sshHostkeyAlgos=ALGOS, componentsExtra=["image-reflector-controller", "image-automation-controller"]))
    assert status == 200, body
    assert [c["message"].strip() for c in git_log(env["bare"], "main")] == ["Add Flux sync manifests", "Add Flux v2.9.2 component manifests"]
    tree = read_tree(env["bare"], "main")
    assert tree[KFILE] == EXPECTED
    assert yaml.safe_load(tree[KFILE])["patches"] == [DOC_ENTRY]
    # gotk-components.yaml stays Flux's own bytes: the patch lives in kustomization.yaml only.
    assert tree["clusters/aks-weu-1/flux-system/gotk-components.yaml"] == (GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml").read_bytes()

    # Installed patched, as kustomize build of the folder: only the two SSH controllers.
    cluster = env["cluster"]
    for name in ("source-controller", "image-automation-controller"):
        assert _args(cluster, name)[-1] == FLAG and _args(cluster, name).count(FLAG) == 1
    for name in ("kustomize-controller", "helm-controller", "notification-controller", "image-reflector-controller"):
        assert FLAG not in _args(cluster, name)

    # A re-run: no commit, nothing changed on the cluster, the flag still there once.
    status, again = call(functions_by_name, request(env, sshHostkeyAlgos=ALGOS, componentsExtra=["image-reflector-controller", "image-automation-controller"]))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert again["cluster"]["configured"] == 0 and again["cluster"]["created"] == 0, again["cluster"]["changes"]
    assert _args(cluster, "source-controller").count(FLAG) == 1


def test_without_the_option_the_files_and_the_install_are_flux_own(functions_by_name, env):
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert read_tree(env["bare"], "main")[KFILE] == (GOLDEN / "talos-v2.9.2-4comp" / "kustomization.yaml").read_bytes()
    assert FLAG not in _args(env["cluster"], "source-controller")


#: A user's kustomization.yaml with patches of its own, a comment and an images transformer.
USER = b"""\
# fleet-wide tuning, reviewed by the platform team
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - gotk-components.yaml
  - gotk-sync.yaml
patches:
  - patch: |
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --concurrent=20
    target:
      kind: Deployment
      name: kustomize-controller
images:
  - name: ghcr.io/fluxcd/helm-controller
    newTag: v1.4.0
"""


def test_a_user_kustomization_keeps_its_patches_and_gets_ours(functions_by_name, env):
    seed(env["bare"], {KFILE: USER})
    status, body = call(functions_by_name, request(env, sshHostkeyAlgos=ALGOS))
    assert status == 200, body
    text = read_tree(env["bare"], "main")[KFILE]
    # Every byte of the user's file is kept; our entry joins the patches list, in its indentation.
    indented = b"".join(b"  " + line for line in ENTRY.splitlines(keepends=True))
    assert text == USER.replace(b"images:\n", indented + b"images:\n")
    assert yaml.safe_load(text)["patches"][1] == DOC_ENTRY
    # Installed with both patches; the images transformer is left to kustomize-controller, and said so.
    cluster = env["cluster"]
    assert _args(cluster, "kustomize-controller")[-1] == "--concurrent=20"
    assert _args(cluster, "source-controller")[-1] == FLAG
    assert any(line.startswith(f"⚠️ {KFILE}: images: kustomization field not applied at install") for line in body["log"]), body["log"]

    status, again = call(functions_by_name, request(env, sshHostkeyAlgos=ALGOS))
    assert status == 200, again
    assert again["repository"]["commits"] == []
    assert read_tree(env["bare"], "main")[KFILE] == text


def test_a_user_patch_is_applied_at_install_even_without_ours(functions_by_name, env):
    seed(env["bare"], {KFILE: USER})
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert read_tree(env["bare"], "main")[KFILE] == USER
    assert _args(env["cluster"], "kustomize-controller")[-1] == "--concurrent=20"
    assert FLAG not in _args(env["cluster"], "source-controller")


def test_a_user_patch_kustomize_would_fail_on_is_409_before_any_push(functions_by_name, env):
    broken = USER.replace(b"/spec/template/spec/containers/0/args/-", b"/spec/template/spec/nothing/here/-")
    seed(env["bare"], {KFILE: broken})
    before = git_log(env["bare"], "main")
    status, body = call(functions_by_name, request(env, sshHostkeyAlgos=ALGOS))
    assert status == 409, body
    assert KFILE in body["error"]["message"] and "patches[0]" in body["error"]["message"]
    assert git_log(env["bare"], "main") == before
    assert env["cluster"].get("apps/v1", "Deployment", "source-controller", "flux-system") is None


def test_a_hand_written_doc_patch_is_not_doubled(functions_by_name, env):
    doc = (b"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - gotk-components.yaml\n"
           b"  - gotk-sync.yaml\npatches:\n  - patch: |\n      - op: add\n        path: /spec/template/spec/containers/0/args/-\n"
           b"        value: --ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256\n    target:\n      kind: Deployment\n"
           b"      name: (source-controller|image-automation-controller)\n")
    seed(env["bare"], {KFILE: doc})
    status, body = call(functions_by_name, request(env, sshHostkeyAlgos=ALGOS))
    assert status == 200, body
    assert read_tree(env["bare"], "main")[KFILE] == doc
    assert _args(env["cluster"], "source-controller").count(FLAG) == 1


def test_bad_algorithms_are_400_naming_the_field(functions_by_name, env):
    for bad in (["rsa sha2"], [], "rsa-sha2-512", [1]):
        status, body = call(functions_by_name, request(env, sshHostkeyAlgos=bad))
        assert status == 400, (bad, body)
        assert body["error"]["field"] == "sshHostkeyAlgos"
    assert git_log(env["bare"], "main") == []


def test_the_cli_writes_the_patch_too(ado_git_server, git_pat, kubeconfig_text, tmp_path):
    from shared.ports.kube import Cluster
    from tests.test_cli import V292, run

    ado_git_server.create_repo("contoso", "platform", "fleet")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text)
    args = ["bootstrap", "git", "--url", ado_git_server.url("contoso", "platform", "fleet"), "--path", "clusters/aks-weu-1",
            "--token-auth", "--allow-insecure-http", "--kubeconfig", str(kubeconfig), "--manifests", str(V292),
            "--timeout", "0s", "--ssh-hostkey-algos", "rsa-sha2-512,rsa-sha2-256"]
    out = run(*args, env={"GIT_PASSWORD": git_pat})
    assert out.returncode == 0, out.stderr.decode()
    bare = ado_git_server.bare_path("contoso", "platform", "fleet")
    assert read_tree(bare)[KFILE] == EXPECTED
    assert _args(Cluster.from_kubeconfig(kubeconfig_text), "source-controller")[-1] == FLAG
    out = run(*args[:-1], "rsa sha2", env={"GIT_PASSWORD": git_pat})
    assert out.returncode == 1 and out.stderr.decode().strip().startswith("✗ --ssh-hostkey-algos: ")
