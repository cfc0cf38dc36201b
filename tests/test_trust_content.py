"""Issue 7, items 3 and 4: what a kubeconfig, a cloned repository or a Flux distribution says can
run no command, read no local file, write nothing outside the clone and stall nothing. Each attack
goes through the real peers (git smart-HTTP server, Key Vault and Kubernetes API test servers,
the indexed HTTP trigger) and asserts what did not happen: no marker file, no request received,
no commit pushed, no file outside the clone changed, and the documented 4xx."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
import yaml

from tests.peers.git_server import log as git_log
from tests.test_bootstrap_e2e import call, cluster_registry, env, request  # noqa: F401 - fixtures

BILLION_LAUGHS = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\n"
    'data: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"l{i}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
)


# -- item 3: kubeconfigs ---------------------------------------------------------------------------


def _hostile_kubeconfig(kube_server, **user) -> str:
    return kube_server.kubeconfig(user=user)


def test_exec_kubeconfig_runs_nothing_and_is_400(functions_by_name, env, kube_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    marker = tmp_path / "MARKER"
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", _hostile_kubeconfig(kube_server, exec={
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/bin/sh",
        "args": ["-c", f"touch {marker}; env >&2"]}))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["field"] == "kubeconfigSecret"
    assert body["error"]["message"].startswith("kubeconfigSecret: users[0].user.exec: exec credential plugins are never run")
    assert not marker.exists()
    assert kube_server.received == []
    assert git_log(env["bare"], "main") == []


def test_auth_provider_kubeconfig_runs_nothing_and_is_400(functions_by_name, env, kube_server, tmp_path):
    marker = tmp_path / "MARKER"
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", _hostile_kubeconfig(kube_server, **{"auth-provider": {
        "name": "gcp", "config": {"cmd-path": "/bin/sh", "cmd-args": f"-c 'touch {marker}'"}}}))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert "users[0].user.auth-provider" in body["error"]["message"]
    assert not marker.exists() and kube_server.received == []


def test_token_file_is_never_read_nor_sent(functions_by_name, env, kube_server):
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", _hostile_kubeconfig(kube_server, tokenFile="/proc/self/environ"))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["message"].startswith("kubeconfigSecret: users[0].user.tokenFile: names a local file")
    assert kube_server.received == []  # no request at all, so none carrying the environment
    assert git_log(env["bare"], "main") == []


@pytest.mark.parametrize("key", ["certificate-authority", "client-certificate", "client-key"])
def test_local_certificate_paths_are_400(functions_by_name, env, kube_server, key):
    cfg = yaml.safe_load(kube_server.kubeconfig())
    section = cfg["clusters"][0]["cluster"] if key == "certificate-authority" else cfg["users"][0]["user"]
    section[key] = "/etc/passwd"
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", yaml.safe_dump(cfg))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    where = "clusters[0].cluster" if key == "certificate-authority" else "users[0].user"
    assert f"{where}.{key}: names a local file" in body["error"]["message"]
    assert kube_server.received == []


def test_a_token_with_a_line_break_is_400_and_never_logged(functions_by_name, env, kube_server, caplog):
    caplog.set_level(logging.DEBUG)
    token = f"tok-{uuid.uuid4().hex}"
    env["vault"].seed_kubeconfig("aks-weu-1-kubeconfig", kube_server.kubeconfig(token=f"{token}\nX-Injected: yes"))
    status, body = call(functions_by_name, request(env))
    assert status == 400, body
    assert body["error"]["field"] == "kubeconfigSecret"
    assert token not in json.dumps(body) and token not in caplog.text
    assert kube_server.received == []


def test_rotation_refuses_exec_kubeconfigs_per_cluster(functions_by_name, env, kube_server, keyvault, tmp_path):
    from shared.rotation import Rotator, RotationSettings
    from shared.rotation.registry import ClusterRecord
    from tests.peers.entra_tokens import JwtTestCredential

    marker = tmp_path / "MARKER"
    env["vault"].seed_kubeconfig("evil-kubeconfig", _hostile_kubeconfig(kube_server, exec={
        "apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", f"touch {marker}"]}))
    env["vault"].seed_kubeconfig("file-kubeconfig", _hostile_kubeconfig(kube_server, tokenFile="/proc/self/environ"))
    records = [ClusterRecord(name=n, kubeconfig_secret=f"{n}-kubeconfig", pat_secret="fleet-pat", git_url=env["url"],
                             allow_insecure_http=True) for n in ("evil", "file")]
    summary = Rotator(keyvault=keyvault, credential=JwtTestCredential(), settings=RotationSettings(concurrency=2)).run(records)
    by_name = {c.cluster: c for c in summary.clusters}
    assert by_name["evil"].status == "failed"
    assert by_name["evil"].errors == [by_name["evil"].errors[0]]
    assert by_name["evil"].errors[0].startswith("cluster access: kubeconfigSecret: users[0].user.exec: exec credential plugins")
    assert by_name["file"].errors[0].startswith("cluster access: kubeconfigSecret: users[0].user.tokenFile: names a local file")
    assert not marker.exists() and kube_server.received == []


# -- item 4: the clone is untrusted content -----------------------------------------------------------

FLUX = "clusters/aks-weu-1/flux-system"


@pytest.fixture
def clones_in(tmp_path, monkeypatch):
    """Clones go to ``tmp_path/tmp`` (the system temp folder stand-in), and ``tmp_path/outside``
    holds a folder and a file that relative links from a clone can reach."""
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.yaml").write_bytes(b"original\n")
    return outside


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused_409(functions_by_name, env, path: str, *, why: str = "symbolic link") -> dict:
    status, body = call(functions_by_name, request(env))
    assert status == 409, body
    assert body["error"]["code"] == "Conflict"
    assert body["error"]["message"].startswith(path + " "), body["error"]["message"]
    assert why in body["error"]["message"]
    assert body["commits"] == []
    assert [c["message"].strip() for c in git_log(env["bare"], "main")] == ["seed"]  # nothing pushed
    return body


@pytest.mark.parametrize("target", ["relative", "absolute"])
def test_a_symlinked_cluster_folder_is_refused_before_anything_is_written(functions_by_name, env, clones_in, target):
    from tests.peers.git_server import Symlink, seed

    # clone: <tmp>/flux-bootstrap-*/clusters/aks-weu-1 -> ../../../outside
    link = "../../../outside" if target == "relative" else str(clones_in)
    seed(env["bare"], {"clusters/aks-weu-1": Symlink(link), "README.md": b"fleet\n"})
    before = _files(clones_in)
    _refused_409(functions_by_name, env, "clusters/aks-weu-1")
    assert _files(clones_in) == before and sorted(p.name for p in clones_in.iterdir()) == ["victim.yaml"]


@pytest.mark.parametrize("target", [".git/config", "outside"])
def test_a_symlinked_gotk_sync_yaml_is_refused_before_the_first_push(functions_by_name, env, clones_in, target):
    from tests.peers.git_server import Symlink, seed

    link = "../../../.git/config" if target == ".git/config" else str(clones_in / "victim.yaml")
    seed(env["bare"], {f"{FLUX}/gotk-sync.yaml": Symlink(link)})
    _refused_409(functions_by_name, env, f"{FLUX}/gotk-sync.yaml")
    assert (clones_in / "victim.yaml").read_bytes() == b"original\n"


def test_etc_linked_into_flux_system_lists_nothing_of_the_host(functions_by_name, env, clones_in):
    from tests.peers.git_server import Symlink, seed

    seed(env["bare"], {f"{FLUX}/etc": Symlink("/etc"), f"{FLUX}/cm.yaml": b"kind: ConfigMap\nmetadata: {name: a}\n"})
    body = _refused_409(functions_by_name, env, f"{FLUX}/etc", why="outside the repository")
    assert "passwd" not in json.dumps(body)


@pytest.mark.parametrize("links", [{"loop": "."}, {"a": "b", "b": "a"}, {"up": ".."}])
def test_symlink_loops_do_not_make_the_walk_repeat(functions_by_name, env, clones_in, links):
    from tests.peers.git_server import Symlink, seed

    seed(env["bare"], {**{f"{FLUX}/{k}": Symlink(v) for k, v in links.items()}, f"{FLUX}/cm.yaml": b"kind: ConfigMap\n"})
    started = time.monotonic()
    status, body = call(functions_by_name, request(env))
    assert status == 409, body
    assert body["error"]["message"].startswith(f"{FLUX}/{sorted(links)[0]} ")
    assert time.monotonic() - started < 30
    assert body["commits"] == []


def test_a_symlink_to_a_manifest_inside_the_clone_is_listed_as_flux_does(functions_by_name, env):
    """Flux's walker treats a link as a file and reads its target through its secure file system:
    a link to a resource inside the clone is listed under the link's name."""
    from tests.peers.git_server import Symlink, read_tree, seed

    seed(env["bare"], {"apps/cm.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n",
                       f"{FLUX}/shared.yaml": Symlink("../../../apps/cm.yaml"),
                       f"{FLUX}/words.txt": b"just words: [\n"})
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    kfile = read_tree(env["bare"], "main")[f"{FLUX}/kustomization.yaml"]
    assert yaml.safe_load(kfile)["resources"] == ["gotk-components.yaml", "gotk-sync.yaml", "shared.yaml"]


def test_a_billion_laughs_kustomization_fails_fast_before_the_first_push(functions_by_name, env):
    from tests.peers.git_server import seed

    seed(env["bare"], {f"{FLUX}/kustomization.yaml": BILLION_LAUGHS.encode()})
    assert len(BILLION_LAUGHS) < 500
    started = time.monotonic()
    body = _refused_409(functions_by_name, env, f"{FLUX}/kustomization.yaml", why="is not valid YAML")
    assert "aliases counted" in body["error"]["message"]
    assert time.monotonic() - started < 15  # the whole request; the YAML itself is refused in < 1 ms


def test_a_billion_laughs_manifest_in_the_folder_fails_fast_naming_it(functions_by_name, env):
    from shared.flux import kustomization
    from tests.peers.git_server import seed

    started = time.monotonic()
    with pytest.raises(Exception) as err:
        kustomization.accepted_as_resource(BILLION_LAUGHS.encode())
    assert time.monotonic() - started < 0.5 and "nodes" in str(err.value)
    seed(env["bare"], {f"{FLUX}/lol.yaml": BILLION_LAUGHS.encode()})
    _refused_409(functions_by_name, env, f"{FLUX}/lol.yaml", why="refused as YAML")


def test_an_invalid_user_kustomization_is_found_before_the_first_push(functions_by_name, env, kube_server):
    from tests.peers.git_server import seed

    seed(env["bare"], {f"{FLUX}/kustomization.yaml": b"resources: [gotk-components.yaml\npatches:\n"})
    body = _refused_409(functions_by_name, env, f"{FLUX}/kustomization.yaml", why="is not valid YAML (line")
    assert "nothing was written" in body["error"]["message"]
    if kube_server.request_log:  # the local server: only the dry run reached it
        assert {q.get("dryRun") for r, q in zip(kube_server.request_log, kube_server.request_queries) if r.method != "GET"} <= {"All"}


def test_files_over_the_size_limit_are_refused_naming_them(functions_by_name, env):
    from tests.peers.git_server import seed

    big = b"# " + b"x" * (4 * 1024 * 1024) + b"\n"
    seed(env["bare"], {f"{FLUX}/huge.yaml": big})
    _refused_409(functions_by_name, env, f"{FLUX}/huge.yaml", why="bytes the app reads")


def test_a_symlinked_kustomization_file_is_refused(functions_by_name, env, clones_in):
    from tests.peers.git_server import Symlink, seed

    seed(env["bare"], {f"{FLUX}/kustomization.yaml": Symlink(str(clones_in / "victim.yaml"))})
    _refused_409(functions_by_name, env, f"{FLUX}/kustomization.yaml")


def test_the_walk_stops_at_the_runs_deadline(env, kubeconfig_text, git_pat):
    """A walk gets what is left of the run's deadline (at least 5 s): here a clock that moves one
    second per look makes a 20-file folder take longer, and the run stops before any push."""
    import itertools

    from shared import bootstrap as runner
    from shared.errors import Conflict
    from shared.flux import distribution
    from shared.ports.kube import Cluster
    from tests.peers.git_server import seed
    from tests.test_bootstrap_e2e import V292

    seed(env["bare"], {f"{FLUX}/m{i:02}.yaml": b"kind: ConfigMap\n" for i in range(20)})
    opts = runner.BootstrapOptions(url=env["url"], path="./clusters/aks-weu-1", allow_insecure_http=True).validate()
    ticks = itertools.count(1000.0, 1.0)
    with Cluster.from_kubeconfig(kubeconfig_text) as cluster:
        run = runner.Bootstrapper(opts, runner.Credentials(password=git_pat), cluster, distribution.load(str(V292)),
                                  deadline=1003.0, clock=lambda: next(ticks))
        with pytest.raises(Conflict) as err:
            run.run()
    assert f"listing {FLUX} for kustomization.yaml took more than 5 s (at {FLUX}/m" in str(err.value)
    assert run.result.commits == []
    assert [c["message"].strip() for c in git_log(env["bare"], "main")] == ["seed"]


def test_the_chained_cache_attack_fails_at_both_links(functions_by_name, env, oci_token_front, oci_registry,
                                                      kubeconfig_text, git_pat, tmp_path, monkeypatch):
    """Issue 7's chain: bootstrap 1 (an attacker's repository) wrote through a symlink into the
    distribution cache; bootstrap 2 (unrelated) then installed controller images from the
    attacker's registry. Now the write is refused (409), and an entry tampered with on disk by any
    other means is detected on read and fetched again: bootstrap 2 commits Flux's own images."""
    from shared import bootstrap as runner
    from shared.flux import distribution
    from shared.ports.kube import Cluster
    from shared.ports.oci import build_flux_layer
    from tests.peers.git_server import Symlink, read_tree, seed
    from tests.test_bootstrap_e2e import GOLDEN, V292

    cache = tmp_path / "flux-cache"
    monkeypatch.setenv("FLUX_CACHE_DIR", str(cache))
    distribution._cache.clear()
    genuine = V292.read_bytes()
    oci_registry.push("fluxcd/flux-manifests", "v2.9.2", genuine)
    ref = oci_token_front.ref("fluxcd/flux-manifests", "v2.9.2")
    distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file)
    (entry,) = cache.iterdir()
    layer = entry.read_bytes()

    # link 1: the attacker's repository points gotk-components.yaml at the cache entry
    seed(env["bare"], {f"{FLUX}/gotk-components.yaml": Symlink(str(entry))})
    _refused_409(functions_by_name, env, f"{FLUX}/gotk-components.yaml")
    assert entry.read_bytes() == layer

    # link 2: the entry rewritten anyway (attacker images); an unrelated bootstrap in a new process
    entry.write_bytes(build_flux_layer(genuine.replace(b"ghcr.io/fluxcd/", b"evil.example/fluxcd/")))
    distribution._cache.clear()
    env["git"].create_repo("contoso", "platform", "other")
    url = env["git"].url("contoso", "platform", "other")
    opts = runner.BootstrapOptions(url=url, path="./clusters/aks-weu-1", allow_insecure_http=True).validate()
    dist = runner.prepare(opts, manifests=ref, ca_file=oci_registry.ca_file)
    with Cluster.from_kubeconfig(kubeconfig_text) as cluster:
        runner.Bootstrapper(opts, runner.Credentials(password=git_pat), cluster, dist).run()
    bare = env["git"].bare_path("contoso", "platform", "other")
    components = read_tree(bare, "main")[f"{FLUX}/gotk-components.yaml"]
    assert b"evil.example" not in components
    assert components == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_bytes()
    assert entry.read_bytes() == layer  # fetched again and stored under its digest
    distribution._cache.clear()
