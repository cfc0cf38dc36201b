"""Golden tests: the generators reproduce real `flux bootstrap git` output byte for byte
(../shared/flux/golden, Flux v2.3.0 to v2.9.2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.errors import InvalidInput
from shared.flux import distribution, install, kustomization, sourcesecret, sync
from shared.flux.options import normalize_duration, normalize_interval, normalize_path, sync_url, validate_version

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"
SETS = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"


def source_txt(name: str) -> dict[str, str]:
    out = {}
    for line in (GOLDEN / name / "SOURCE.txt").read_text().splitlines():
        if ": " in line and not line.startswith(" "):
            key, value = line.split(": ", 1)
            out[key] = value
    return out


def golden_sync_inputs(name: str) -> tuple[str, str, str]:
    """URL, branch and path as the user gave them, read back from the golden file."""
    text = (GOLDEN / name / "gotk-sync.yaml").read_text()
    url = re.search(r"^  url: (\S+)$", text, re.M).group(1)
    branch = re.search(r"^    branch: (\S+)$", text, re.M).group(1)
    path = re.search(r"^  path: (\S+)$", text, re.M).group(1)
    return url, branch, path


def test_golden_sets_present():
    assert len(SETS) == 6, SETS


def test_v292_distribution_renders_default_components_byte_for_byte():
    dist = distribution.load(str(V292))
    out = install.generate(dist, install.InstallOptions(target_path="./clusters/my-cluster"))
    assert out.path == "clusters/my-cluster/flux-system/gotk-components.yaml"
    assert out.content == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_text()
    assert out.content.count("\n---\n") + 1 == 32


def test_v292_distribution_renders_image_extras_byte_for_byte():
    dist = distribution.load(str(V292))
    opts = install.InstallOptions(components_extra=("image-reflector-controller", "image-automation-controller"))
    out = install.generate(dist, opts)
    assert out.content == V292.read_text()
    assert out.content.count("\n---\n") + 1 == 39


@pytest.mark.parametrize("name", SETS)
def test_every_golden_components_file_is_reproduced(name):
    meta = source_txt(name)
    selected = meta["components"].split(",")
    dist = distribution.load(str(GOLDEN / name / "gotk-components.yaml"))
    assert dist.version == meta["flux_version"]
    out = install.generate(dist, install.InstallOptions(components=tuple(selected[:4]), components_extra=tuple(selected[4:])))
    assert out.content == (GOLDEN / name / "gotk-components.yaml").read_text()


@pytest.mark.parametrize("name", SETS)
def test_every_golden_sync_file_is_reproduced(name):
    url, branch, path = golden_sync_inputs(name)
    token_auth = url.startswith("https://")
    opts = sync.SyncOptions(
        url=sync_url(url, token_auth=token_auth, allow_insecure_http=False),
        branch=branch,
        interval=normalize_duration("1m", "interval"),
        target_path=normalize_path(path.removeprefix("./") + "/"),
    )
    out = sync.generate(opts)
    assert out.content.encode() == (GOLDEN / name / "gotk-sync.yaml").read_bytes()
    assert out.path == source_txt(name)["directory"] + "/gotk-sync.yaml"


class _DirTree:
    """A plain folder as a kustomization.Tree (the runner's tree over a clone is tested end to end)."""

    def __init__(self, root: Path, hidden=()):
        self.root, self.hidden = root, set(hidden)

    def entries(self, rel):
        return [(p.name, "dir" if p.is_dir() else "file") for p in (self.root / rel).iterdir() if p.name not in self.hidden]

    def read(self, rel):
        return (self.root / rel).read_bytes()

    def exists(self, rel):
        return (self.root / rel).exists()


@pytest.mark.parametrize("name", SETS)
def test_every_golden_kustomization_is_reproduced(name):
    tree = _DirTree(GOLDEN / name, hidden=("SOURCE.txt", "kustomization.yaml"))
    out = kustomization.generate("clusters/x/flux-system", tree)
    assert out.content.encode() == (GOLDEN / name / "kustomization.yaml").read_bytes()


def test_default_kustomization_is_115_bytes():
    assert len(kustomization.render(["gotk-components.yaml", "gotk-sync.yaml"]).encode()) == 115


def test_kustomization_lists_what_kustomize_accepts_and_takes_kustomized_subfolders(tmp_path):
    """As kustomization.Generate: lexical walk; a sub-folder with a kustomization file is one entry;
    files are listed when kustomize's resource factory accepts them (kind, metadata.name)."""
    (tmp_path / "gotk-sync.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    (tmp_path / "notes.txt").write_text("just some words, not yaml: [\n")
    (tmp_path / "scalar.md").write_text("hello world\n")
    (tmp_path / "unnamed.yaml").write_text("kind: ConfigMap\n")  # kyaml: missing metadata.name
    (tmp_path / "nil-item.yaml").write_text("kind: ConfigMap\nmetadata:\n  name: n\nlist:\n- null\n")
    (tmp_path / "list.yaml").write_text("apiVersion: v1\nkind: ConfigMapList\nitems:\n- kind: ConfigMap\n  metadata:\n    name: x\n")
    (tmp_path / "bad-list.yaml").write_text("apiVersion: v1\nkind: ConfigMapList\nitems:\n- kind: ConfigMap\n")
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "kustomization.yml").write_text("resources: []\n")
    (tmp_path / "apps" / "inner.yaml").write_text("kind: X\n")
    (tmp_path / "apps-extra.yaml").write_text("# only a comment\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "cm.yaml").write_text("kind: ConfigMap\nmetadata:\n  name: b\n")
    assert kustomization.scan(_DirTree(tmp_path)) == [
        "apps", "apps-extra.yaml", "gotk-sync.yaml", "list.yaml", "more/cm.yaml"]


def test_token_auth_url_drops_user_info_and_forces_https():
    assert sync_url("https://contoso@dev.azure.com/contoso/web/_git/fleet", token_auth=True, allow_insecure_http=False) == "https://dev.azure.com/contoso/web/_git/fleet"
    assert sync_url("ssh://git@dev.azure.com:22/c/w/_git/f", token_auth=True, allow_insecure_http=False) == "https://dev.azure.com/c/w/_git/f"
    assert sync_url("http://127.0.0.1:9/o/p/_git/r", token_auth=True, allow_insecure_http=True) == "http://127.0.0.1:9/o/p/_git/r"
    # Go's url.URL.String: a space in an Azure DevOps project name is escaped, valid escapes are kept
    assert sync_url("https://dev.azure.com/contoso/My Project/_git/fleet", token_auth=True, allow_insecure_http=False) == "https://dev.azure.com/contoso/My%20Project/_git/fleet"
    assert sync_url("https://dev.azure.com/contoso/My%20Project/_git/fleet", token_auth=True, allow_insecure_http=False) == "https://dev.azure.com/contoso/My%20Project/_git/fleet"
    with pytest.raises(InvalidInput) as err:
        sync_url("http://127.0.0.1:9/o/p/_git/r", token_auth=True, allow_insecure_http=False)
    assert err.value.field == "url"


def test_a_password_in_the_url_is_refused_without_repeating_it():
    with pytest.raises(InvalidInput) as err:
        sync_url("https://user:s3cret-pat@dev.azure.com/o/p/_git/r", token_auth=True, allow_insecure_http=False)
    assert err.value.field == "url" and "s3cret-pat" not in str(err.value)


@pytest.mark.parametrize(
    "given, expected",
    [("clusters/x/", "./clusters/x"), (" ./clusters//x ", "./clusters/x"), ("/clusters/x", "./clusters/x"),
     ("a/../b", "./b"), ("a/./b/..", "./a"), ("", ""), (".", ""), ("./", ""), (None, "")],
)
def test_path_is_cleaned_as_safe_relative_path(given, expected):
    assert normalize_path(given) == expected


@pytest.mark.parametrize("given", ["../escape", "a/../../b", "..", ".git/hooks", "x/.GIT"])
def test_path_leaving_the_worktree_is_refused(given):
    with pytest.raises(InvalidInput) as err:
        normalize_path(given)
    assert err.value.field == "path"


@pytest.mark.parametrize(
    "given, expected",
    [("1m", "1m0s"), ("10m", "10m0s"), ("1h", "1h0m0s"), ("90s", "1m30s"), ("1.5s", "1.5s"), (".5s", "500ms"),
     ("0.29s", "290ms"), ("1h30m", "1h30m0s"), ("2h45m30.5s", "2h45m30.5s"), ("1500ms", "1.5s"), ("1.5ms", "1.5ms")],
)
def test_interval_is_printed_as_go_prints_durations(given, expected):
    assert normalize_interval(given) == expected


@pytest.mark.parametrize("given", ["5 minutes", "1", "-1m", "0s", "1.5us", "500ns", ""])
def test_interval_the_gitrepository_api_would_reject_is_refused(given):
    with pytest.raises(InvalidInput) as err:
        normalize_interval(given)
    assert err.value.field == "interval"


@pytest.mark.parametrize(
    "given, message",
    [("2.9.2", "targeted version '2.9.2' must be prefixed with 'v'"),
     ("v2.9", "targeted version 'v2.9' is not a Flux release"),
     ("v0.41.2", "targeted version 'v0.41.2' is not compatible")],
)
def test_version_is_checked_as_flux_does(given, message):
    with pytest.raises(InvalidInput) as err:
        validate_version(given)
    assert err.value.field == "version" and message in err.value.message
    assert validate_version("v2.9.2") == "v2.9.2" and validate_version("latest") == "latest"


@pytest.mark.parametrize(
    "components, extra, field, message",
    [
        # bootstrapValidate: the required components first, then utils.ValidateComponents
        (["source-controller", "kustomize-controller", "flux-ui"], [], "components", "component flux-ui is not available"),
        (["source-controller", "helm-controller"], [], "components", "component kustomize-controller is required"),
        (["source-controller", "bogus"], [], "components", "component kustomize-controller is required"),
        (None, ["bogus"], "componentsExtra", "component bogus is not available"),
        (None, ["helm-controller"], "componentsExtra", "component helm-controller is listed twice"),
        (None, ["source-watcher"], "componentsExtra", "component source-watcher is not in the Flux v2.9.2 distribution"),
    ],
)
def test_component_errors_name_the_component(components, extra, field, message):
    dist = distribution.load(str(V292))
    opts = install.InstallOptions(components=tuple(components) if components else install.InstallOptions.components, components_extra=tuple(extra))
    with pytest.raises(InvalidInput) as err:
        install.generate(dist, opts)
    assert err.value.field == field
    assert err.value.message.startswith(message)


def test_any_known_component_may_come_through_components_extra():
    """Flux appends --components-extra to --components and checks the whole list, so a default
    component left out of --components can come back through --components-extra."""
    dist = distribution.load(str(V292))
    out = install.generate(dist, install.InstallOptions(components=("source-controller", "kustomize-controller"), components_extra=("helm-controller",)))
    assert "# Components: source-controller,kustomize-controller,helm-controller\n" in out.content


def test_custom_namespace_renames_everything_flux_renames():
    dist = distribution.load(str(V292))
    out = install.generate(dist, install.InstallOptions(namespace="gitops", target_path="./clusters/x"))
    assert out.path == "clusters/x/gitops/gotk-components.yaml"
    assert "flux-system" not in out.content
    assert "name: crd-controller-gitops\n" in out.content and "  namespace: gitops\n" in out.content
    assert out.content.replace("gitops", "flux-system") == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_text()
    synced = sync.generate(sync.SyncOptions(url="https://e/x", namespace="gitops", name="gitops", target_path="./clusters/x"))
    assert synced.path == "clusters/x/gitops/gotk-sync.yaml"
    # the objects are named after the namespace; --secret-name keeps its own default
    assert "  name: gitops\n  namespace: gitops\n" in synced.content and "secretRef:\n    name: flux-system\n" in synced.content


def test_without_notification_controller_events_addr_is_empty():
    dist = distribution.load(str(V292))
    out = install.generate(dist, install.InstallOptions(components=("source-controller", "kustomize-controller")))
    assert re.findall(r"- --events-addr=.*", out.content) == ["- --events-addr="] * 2
    assert "# Components: source-controller,kustomize-controller\n" in out.content
    assert "notification-controller" not in out.content.split("kind: Deployment")[-1]


def test_version_mismatch_is_refused():
    with pytest.raises(InvalidInput) as err:
        distribution.load(str(V292), version="v2.8.3")
    assert err.value.field == "version"


def test_not_a_distribution_is_refused(tmp_path):
    bad = tmp_path / "gotk-components.yaml"
    bad.write_text("<html>rate limited</html>\n")
    with pytest.raises(Exception) as err:
        distribution.load(str(bad))
    assert "not a Flux distribution" in str(err.value)


def test_source_secret_for_token_auth():
    secret = sourcesecret.generate(username="git", password="pat-value")
    assert secret["stringData"] == {"username": "git", "password": "pat-value"}
    assert secret["metadata"] == {"name": "flux-system", "namespace": "flux-system"}
    assert "type" not in secret and "labels" not in secret["metadata"]
    assert sourcesecret.string_data(bearer_token="t") == {"bearerToken": "t"}
    with pytest.raises(InvalidInput):
        sourcesecret.string_data(username="git", password="")


def test_sync_with_provider_azure_and_no_source_secret():
    """``provider: azure`` in sync.Options.Provider's place (sorted keys: right after ``interval``), and no
    ``secretRef`` when there is no source Secret: the rest is byte for byte the golden file's."""
    url = "https://dev.azure.com/contoso/platform/_git/fleet"
    golden = sync.generate(sync.SyncOptions(url=url, target_path="./clusters/aks-weu-1")).content
    out = sync.generate(sync.SyncOptions(url=url, target_path="./clusters/aks-weu-1", provider="azure", secret=""))
    assert out.content == golden.replace("  interval: 1m0s\n", "  interval: 1m0s\n  provider: azure\n").replace(
        "  secretRef:\n    name: flux-system\n", "")
    assert out.content.split("---\n")[1] == (
        "apiVersion: source.toolkit.fluxcd.io/v1\n"
        "kind: GitRepository\n"
        "metadata:\n"
        "  name: flux-system\n"
        "  namespace: flux-system\n"
        "spec:\n"
        "  interval: 1m0s\n"
        "  provider: azure\n"
        "  ref:\n"
        "    branch: main\n"
        f"  url: {url}\n")
    gitrepository, _ = sync.objects(sync.SyncOptions(url=url, provider="azure", secret=""))
    assert gitrepository["spec"] == {"interval": "1m0s", "provider": "azure", "ref": {"branch": "main"}, "url": url}
    # a provider with a secret keeps both, in Flux's key order (the CodeCommit form of v2.9)
    both = sync.generate(sync.SyncOptions(url=url, provider="aws")).content
    assert "  interval: 1m0s\n  provider: aws\n  ref:\n    branch: main\n  secretRef:\n    name: flux-system\n  url: " in both
