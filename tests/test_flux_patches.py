"""The flux-system kustomization patches (shared/flux/patches.py) and their application
(shared/flux/kustomize.py), checked against what kustomize itself builds.

The kustomize outputs are committed under tests/fixtures/flux_patches/<case>/: ``expected.yaml``
holds, byte for byte, the documents of ``kubectl kustomize`` output that the patches changed, and
``digests.txt`` one SHA-256 per output object (of its canonical JSON), so the offline tests
compare every object without keeping whole Flux distributions in the tree. Regenerate them
(needs kubectl with kustomize) with:

    .venv/bin/python -m tests.test_flux_patches --regenerate

When kubectl is present, test_fixtures_are_what_kustomize_builds re-runs it and checks the
fixtures are still what kustomize says.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared import safe_yaml
from shared.errors import InvalidInput
from shared.flux import kustomization, kustomize, patches

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "flux_patches"
CLIENT_ID = "6d3f8a1e-2b4c-4e7f-9a0b-1c2d3e4f5a6b"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ALL6 = [
    "source-controller",
    "kustomize-controller",
    "helm-controller",
    "notification-controller",
    "image-reflector-controller",
    "image-automation-controller",
]
GOTK = ["gotk-components.yaml", "gotk-sync.yaml"]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _case_6comp() -> str:
    ours = patches.workload_identity(ALL6, CLIENT_ID, TENANT_ID) + [patches.sops_decryption(), patches.ssh_hostkey_algos()]
    return patches.render(GOTK + ["extra.yaml"], ours)


def _case_update_4comp() -> str:
    ours = patches.workload_identity(["source-controller", "kustomize-controller", "notification-controller"], CLIENT_ID)
    ours.append(patches.ssh_hostkey_algos())
    return patches.update((FIXTURES / "update-user-4comp" / "input.yaml").read_text(), ours).text


#: case -> (golden set holding gotk-components.yaml and gotk-sync.yaml, kustomization builder)
CASES = {
    "wi-sops-ssh-6comp": ("talos-v2.9.2-6comp", _case_6comp),
    "update-user-4comp": ("talos-v2.9.2-4comp", _case_update_4comp),
}


def _objects(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]


def _id(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj['apiVersion']} {obj['kind']} {meta.get('namespace', '')} {meta['name']}"


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _resource_path(case: str, name: str) -> Path:
    return GOLDEN / CASES[case][0] / name if name in GOTK else FIXTURES / case / name


def _inputs(case: str) -> tuple[str, list[dict]]:
    text = (FIXTURES / case / "kustomization.yaml").read_text()
    objs: list[dict] = []
    for name in yaml.safe_load(text)["resources"]:
        objs.extend(_objects(_resource_path(case, name).read_text()))
    return text, objs


def _kustomize_build(case: str, workdir: Path, text: str) -> str:
    for name in yaml.safe_load(text)["resources"]:
        shutil.copy(_resource_path(case, name), workdir / name)
    (workdir / "kustomization.yaml").write_text(text)
    return subprocess.run(["kubectl", "kustomize", str(workdir)], check=True, capture_output=True, text=True, timeout=120).stdout


def _kubectl_kustomize_version() -> str:
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    match = re.search(r"Kustomize Version: (\S+)", out)
    return match.group(1) if match else "unknown"


def _fixtures_from_build(output: str, inputs: list[dict]) -> tuple[str, str]:
    """(expected.yaml, digests.txt) from a kustomize build output."""
    before = {_id(o): o for o in inputs}
    raw = [d for d in re.split(r"^---\n", output, flags=re.M) if d.strip()]
    changed, digests = [], []
    for doc in raw:
        obj = yaml.load(doc, Loader=_Loader)
        digests.append(f"{_id(obj)} {_digest(obj)}")
        if before.get(_id(obj)) != obj:
            changed.append(doc)
    return "---\n".join(changed), "\n".join(digests) + "\n"


def regenerate() -> None:
    """Rewrite every case's kustomization.yaml, expected.yaml and digests.txt with kubectl."""
    import tempfile

    for case, (_, build) in CASES.items():
        text = build()
        (FIXTURES / case / "kustomization.yaml").write_text(text)
        with tempfile.TemporaryDirectory() as tmp:
            output = _kustomize_build(case, Path(tmp), text)
        _, inputs = _inputs(case)
        expected, digests = _fixtures_from_build(output, inputs)
        (FIXTURES / case / "expected.yaml").write_text(expected)
        (FIXTURES / case / "digests.txt").write_text(digests)
    (FIXTURES / "KUSTOMIZE_VERSION").write_text(_kubectl_kustomize_version() + "\n")


# --- against kustomize ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixture_kustomization_is_what_we_write(case):
    assert CASES[case][1]() == (FIXTURES / case / "kustomization.yaml").read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_applied_objects_equal_kustomize_build(case):
    text, inputs = _inputs(case)
    result = kustomize.apply_kustomization(inputs, text)
    assert result.not_applied == ()
    assert result.applied == tuple(range(len(yaml.safe_load(text)["patches"])))

    digests = dict(line.rsplit(" ", 1) for line in (FIXTURES / case / "digests.txt").read_text().splitlines())
    ours = {_id(o): o for o in result.objects}
    assert len(ours) == len(result.objects) == len(digests)
    assert set(ours) == set(digests)
    expected = {_id(o): o for o in _objects((FIXTURES / case / "expected.yaml").read_text())}
    for key, obj in expected.items():
        assert ours[key] == obj, key
    assert {k for k in ours if _digest(ours[k]) != digests[k]} == set()
    # The patches changed exactly the objects kustomize changed.
    before = {_id(o): o for o in inputs}
    assert {k for k in ours if ours[k] != before[k]} == set(expected)


def test_fixtures_cover_every_patch_kind():
    expected = _objects((FIXTURES / "wi-sops-ssh-6comp" / "expected.yaml").read_text())
    kinds = sorted({o["kind"] for o in expected})
    assert kinds == ["Deployment", "Kustomization", "ServiceAccount"]
    assert len(expected) == 13  # 6 ServiceAccounts, 6 Deployments, the flux-system Kustomization
    for obj in expected:
        if obj["kind"] == "ServiceAccount":
            assert obj["metadata"]["annotations"] == {patches.WORKLOAD_IDENTITY_CLIENT_ID: CLIENT_ID, patches.WORKLOAD_IDENTITY_TENANT_ID: TENANT_ID}
        elif obj["kind"] == "Deployment":
            assert obj["spec"]["template"]["metadata"]["labels"][patches.WORKLOAD_IDENTITY_USE] == "true"
            args = obj["spec"]["template"]["spec"]["containers"][0]["args"]
            ssh = obj["metadata"]["name"] in ("source-controller", "image-automation-controller")
            assert (args[-1] == "--ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256") == ssh
        else:
            assert obj["metadata"]["name"] == "flux-system"
            assert obj["spec"]["decryption"] == {"provider": "sops"}
    assert (FIXTURES / "KUSTOMIZE_VERSION").read_text().strip() == "v5.5.0"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("case", sorted(CASES))
def test_fixtures_are_what_kustomize_builds(case, tmp_path):
    text, inputs = _inputs(case)
    output = _kustomize_build(case, tmp_path, text)
    expected, digests = _fixtures_from_build(output, inputs)
    version = _kubectl_kustomize_version()
    assert _objects(expected) == _objects((FIXTURES / case / "expected.yaml").read_text()), f"kustomize {version}"
    assert digests == (FIXTURES / case / "digests.txt").read_text(), f"kustomize {version}"
    built = {_id(o): o for o in _objects(output)}
    assert built == {_id(o): o for o in kustomize.apply_kustomization(inputs, text).objects}


# --- the entries, as Flux's documentation writes them ----------------------------------------

#: The base every Flux doc example starts from (lists indented, unlike Flux's generator).
DOC_BASE = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - gotk-components.yaml\n  - gotk-sync.yaml\n"

#: fluxcd/website content/en/flux/installation/configuration/workload-identity.md, "Azure
#: Workload Identity", with the placeholders filled in.
DOC_WORKLOAD_IDENTITY = DOC_BASE + f"""patches:
  - patch: |
      apiVersion: v1
      kind: ServiceAccount
      metadata:
        name: controller
        annotations:
          azure.workload.identity/client-id: {CLIENT_ID}
          azure.workload.identity/tenant-id: {TENANT_ID}
    target:
      kind: ServiceAccount
      name: "(source-controller|image-reflector-controller)" # or any other target controllers
  # Azure workload identity requires also a label on the pod.
  - patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: controller
      spec:
        template:
          metadata:
            labels:
              azure.workload.identity/use: "true"
    target:
      kind: Deployment
      name: "(source-controller|image-reflector-controller)" # or any other target controllers
"""

#: fluxcd/website content/en/flux/installation/bootstrap/azure-devops.md, "Bootstrap using SSH
#: keys" (the page has trailing spaces after the value).
DOC_SSH = DOC_BASE + """patches:
  - patch: |
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256{TRAILING}
    target:
      kind: Deployment
      name: (source-controller|image-automation-controller)
""".format(TRAILING=" " * 6)

WI_DOC_CONTROLLERS = ["source-controller", "image-reflector-controller"]


def _plain(doc: str) -> str:
    """The doc text without its comments, quotes around target names and trailing spaces."""
    lines = [re.sub(r' # .*$', "", line).rstrip() for line in doc.splitlines() if not line.strip().startswith("#")]
    return "\n".join(re.sub(r'name: "(.*)"$', r"name: \1", line) for line in lines) + "\n"


def test_entries_are_the_flux_doc_forms():
    sa, deploy = patches.workload_identity(WI_DOC_CONTROLLERS, CLIENT_ID, TENANT_ID)
    assert sa == yaml.safe_load(DOC_WORKLOAD_IDENTITY)["patches"][0]
    assert deploy == yaml.safe_load(DOC_WORKLOAD_IDENTITY)["patches"][1]
    ssh = yaml.safe_load(DOC_SSH)["patches"][0]
    assert patches.ssh_hostkey_algos()["target"] == ssh["target"]
    assert patches.ssh_hostkey_algos()["patch"] == "\n".join(line.rstrip() for line in ssh["patch"].splitlines()) + "\n"


def test_update_of_the_doc_base_writes_the_doc_bytes():
    wi = patches.workload_identity(WI_DOC_CONTROLLERS, CLIENT_ID, TENANT_ID)
    assert patches.update(DOC_BASE, wi).text == _plain(DOC_WORKLOAD_IDENTITY)
    assert patches.update(DOC_BASE, [patches.ssh_hostkey_algos()]).text == _plain(DOC_SSH)


def test_render_is_flux_generator_output_then_patches():
    ours = patches.workload_identity(["kustomize-controller"], CLIENT_ID) + [patches.sops_decryption("flux-system")]
    text = patches.render(GOTK, ours)
    base = kustomization.render(GOTK)
    assert text.startswith(base)
    assert text[len(base):] == (
        "patches:\n"
        "- patch: |\n"
        "    apiVersion: v1\n"
        "    kind: ServiceAccount\n"
        "    metadata:\n"
        "      name: controller\n"
        "      annotations:\n"
        f"        azure.workload.identity/client-id: {CLIENT_ID}\n"
        "  target:\n"
        "    kind: ServiceAccount\n"
        "    name: (kustomize-controller)\n"
        "- patch: |\n"
        "    apiVersion: apps/v1\n"
        "    kind: Deployment\n"
        "    metadata:\n"
        "      name: controller\n"
        "    spec:\n"
        "      template:\n"
        "        metadata:\n"
        "          labels:\n"
        '            azure.workload.identity/use: "true"\n'
        "  target:\n"
        "    kind: Deployment\n"
        "    name: (kustomize-controller)\n"
        "- patch: |\n"
        "    - op: add\n"
        "      path: /spec/decryption\n"
        "      value:\n"
        "        provider: sops\n"
        "  target:\n"
        "    kind: Kustomization\n"
        "    name: flux-system\n"
    )
    assert patches.update(base, ours).text == text
    assert patches.render(GOTK, []) == base


# --- update: add or update only ours, keep every other byte --------------------------------------


def _all_ours() -> list[dict]:
    return patches.workload_identity(ALL6[:4], CLIENT_ID, TENANT_ID) + [patches.sops_decryption(), patches.ssh_hostkey_algos()]


def test_update_is_idempotent_on_every_fixture():
    for text in (DOC_BASE, DOC_WORKLOAD_IDENTITY, DOC_SSH, kustomization.render(GOTK), (FIXTURES / "update-user-4comp" / "input.yaml").read_text()):
        once = patches.update(text, _all_ours())
        assert once.changed
        twice = patches.update(once.text, _all_ours())
        assert twice.text == once.text and not twice.changed
        assert twice.added == () and twice.removed == 0


def test_update_keeps_the_user_file_around_our_entries():
    source = (FIXTURES / "update-user-4comp" / "input.yaml").read_text()
    wi = patches.workload_identity(["source-controller", "kustomize-controller", "notification-controller"], CLIENT_ID)
    # The hand-written SSH patch is updated in place (the doc's trailing spaces go); the two
    # workload identity entries come after the user's last entry, in the file's indentation;
    # every other byte (comments, blank line, quotes, key order) is the user's.
    ssh_line = "        value: --ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256"
    ours = patches.update(DOC_BASE, wi).text.split("patches:\n", 1)[1]
    expected = source.replace(ssh_line + "      \n", ssh_line + "\n").replace("# end of patches\n", ours + "# end of patches\n")
    merge = patches.update(source, wi + [patches.ssh_hostkey_algos()])
    assert merge.text == expected == (FIXTURES / "update-user-4comp" / "kustomization.yaml").read_text()
    assert merge.added == (0, 1) and merge.replaced == (2,) and merge.removed == 0 and merge.kept == ()


def test_update_of_the_doc_file_with_its_own_values_changes_nothing():
    merge = patches.update(DOC_WORKLOAD_IDENTITY, patches.workload_identity(WI_DOC_CONTROLLERS, CLIENT_ID, TENANT_ID))
    assert merge.text == DOC_WORKLOAD_IDENTITY and not merge.changed and merge.replaced == (0, 1)


def test_update_replaces_in_place_and_keeps_comments_between_entries():
    other = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    merge = patches.update(DOC_WORKLOAD_IDENTITY, patches.workload_identity(WI_DOC_CONTROLLERS, other))
    assert merge.replaced == (0, 1) and merge.added == ()
    assert "  # Azure workload identity requires also a label on the pod.\n" in merge.text
    assert CLIENT_ID not in merge.text and TENANT_ID not in merge.text and other in merge.text
    # The Deployment entry already said what ours says: its bytes, comment included, stay.
    assert merge.text.endswith('name: "(source-controller|image-reflector-controller)" # or any other target controllers\n')
    assert yaml.safe_load(merge.text)["patches"] == patches.workload_identity(WI_DOC_CONTROLLERS, other)


def test_update_follows_a_smaller_selection_of_controllers():
    first = patches.update(DOC_BASE, patches.workload_identity(ALL6[:4], CLIENT_ID)).text
    second = patches.update(first, patches.workload_identity(ALL6[:2], CLIENT_ID))
    assert yaml.safe_load(second.text)["patches"] == patches.workload_identity(ALL6[:2], CLIENT_ID)
    assert second.replaced == (0, 1) and second.kept == ()


def test_update_keeps_another_identity_for_other_controllers():
    other = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    mine = patches.update(DOC_BASE, patches.workload_identity(["image-reflector-controller"], other)).text
    merge = patches.update(mine, patches.workload_identity(["source-controller", "kustomize-controller"], CLIENT_ID))
    entries = yaml.safe_load(merge.text)["patches"]
    assert entries[:2] == patches.workload_identity(["image-reflector-controller"], other)
    assert entries[2:] == patches.workload_identity(["source-controller", "kustomize-controller"], CLIENT_ID)
    assert merge.added == (0, 1) and merge.kept == ()


def test_update_reports_an_overlapping_identity_it_keeps():
    other = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    mine = patches.update(DOC_BASE, patches.workload_identity(["source-controller", "image-reflector-controller"], other)).text
    merge = patches.update(mine, patches.workload_identity(["source-controller"], CLIENT_ID))
    assert merge.added == (0, 1)
    assert merge.kept == (
        "ServiceAccount/(source-controller|image-reflector-controller) (workload-identity-serviceaccount)",
        "Deployment/(source-controller|image-reflector-controller) (workload-identity-deployment)",
    )


def test_update_removes_further_superseded_entries():
    split = DOC_BASE + "patches:\n" + "".join(
        f"  - patch: |\n      - op: add\n        path: /spec/template/spec/containers/0/args/-\n"
        f"        value: --ssh-hostkey-algos=rsa-sha2-512\n    target:\n      kind: Deployment\n      name: {name}\n"
        for name in ("source-controller", "image-automation-controller")
    )
    merge = patches.update(split, [patches.ssh_hostkey_algos()])
    assert merge.replaced == (0,) and merge.removed == 1
    assert merge.text == _plain(DOC_SSH)


def test_update_keeps_a_sops_patch_that_already_decrypts():
    age = DOC_BASE + (
        "patches:\n"
        "  - patch: |\n      - op: add\n        path: /spec/decryption\n        value:\n"
        "          provider: sops\n          secretRef:\n            name: sops-age\n"
        "    target:\n      kind: Kustomization\n      name: flux-system\n"
    )
    merge = patches.update(age, [patches.sops_decryption()])
    assert merge.text == age and merge.replaced == (0,)
    operator_form = age.replace("      name: flux-system\n", "")
    merge = patches.update(operator_form, [patches.sops_decryption()])
    assert merge.added == (0,) and merge.kept == ("Kustomization/* (sops-decryption)",)


def test_update_creates_patches_after_the_last_field_and_keeps_trailing_comments():
    text = "resources:\n- gotk-components.yaml\n- gotk-sync.yaml\n\n# trailing\n"
    merge = patches.update(text, [patches.sops_decryption()])
    assert merge.text == "resources:\n- gotk-components.yaml\n- gotk-sync.yaml\n" + patches.render([], [patches.sops_decryption()]).split("resources", 1)[0].split("kind: Kustomization\n", 1)[1] + "\n# trailing\n"


def test_update_without_final_newline_and_with_empty_or_flow_patches():
    sops = patches.sops_decryption()
    expected = kustomization.render(GOTK) + patches.render([], [sops]).split("kind: Kustomization\n", 1)[1]
    assert patches.update(kustomization.render(GOTK).rstrip("\n"), [sops]).text == expected
    assert patches.update(kustomization.render(GOTK) + "patches:\n", [sops]).text == expected
    assert patches.update(kustomization.render(GOTK) + "patches: []\n", [sops]).text == expected
    flow = kustomization.render(GOTK) + 'patches: [{patch: "- op: add\\n  path: /spec/suspend\\n  value: false\\n", target: {kind: GitRepository}}]\n'
    merged = patches.update(flow, [sops]).text
    assert yaml.safe_load(merged)["patches"] == [yaml.safe_load(flow)["patches"][0], sops]
    assert patches.update(merged, [sops]).text == merged


def test_update_keeps_crlf_line_ends():
    text = DOC_SSH.replace("      \n", "\n").replace("\n", "\r\n")
    merge = patches.update(text, [patches.sops_decryption()])
    assert merge.text.count("\r\n") == merge.text.count("\n") and merge.text.startswith(text)
    assert patches.update(merge.text, [patches.sops_decryption(), patches.ssh_hostkey_algos()]).text == merge.text


def test_update_refuses_what_is_not_a_kustomization():
    for text in ("", "- a\n- b\n", "a: [\n", "{apiVersion: v1}\n"):
        with pytest.raises(InvalidInput) as err:
            patches.update(text, [patches.sops_decryption()])
        assert err.value.field == "kustomization.yaml"
    with pytest.raises(InvalidInput, match="bytes, more than"):
        patches.update("a: " + "x" * safe_yaml.REPOSITORY.max_bytes + "\n", [patches.sops_decryption()])
    with pytest.raises(InvalidInput, match="nested deeper"):
        patches.update("a: " + "[" * 5000 + "]" * 5000 + "\n", [patches.sops_decryption()])
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    with pytest.raises(InvalidInput, match="nodes"):
        patches.update(laughs, [patches.sops_decryption()])
    with pytest.raises(InvalidInput, match="nodes"):
        kustomize.apply_kustomization([], laughs)
    with pytest.raises(InvalidInput, match="patches is not a list"):
        patches.update("patches: 3\n", [patches.sops_decryption()])
    with pytest.raises(ValueError):
        patches.update(DOC_BASE, [{"patch": "x", "target": {"kind": "Deployment"}}])


def test_inputs_are_validated_before_any_yaml_is_written():
    with pytest.raises(InvalidInput) as err:
        patches.workload_identity(["source-controller"], f"{CLIENT_ID}\n    evil: x")
    assert err.value.field == "workloadIdentity.clientId"
    with pytest.raises(InvalidInput) as err:
        patches.workload_identity(["source-controller"], CLIENT_ID, "not-a-guid")
    assert err.value.field == "workloadIdentity.tenantId"
    with pytest.raises(InvalidInput) as err:
        patches.workload_identity(["source-controller", "tf-controller"], CLIENT_ID)
    assert err.value.field == "workloadIdentity.components"
    with pytest.raises(InvalidInput):
        patches.workload_identity([], CLIENT_ID)
    with pytest.raises(InvalidInput) as err:
        patches.ssh_hostkey_algos(["rsa-sha2-512", "ssh-rsa,ssh-dss"])
    assert err.value.field == "sshHostkeyAlgos"
    with pytest.raises(InvalidInput):
        patches.ssh_hostkey_algos([])
    with pytest.raises(InvalidInput):
        patches.sops_decryption("Flux_System")
    assert patches.ssh_hostkey_algos(["rsa-sha2-256"])["patch"].endswith("value: --ssh-hostkey-algos=rsa-sha2-256\n")
    assert patches.workload_identity(["kustomize-controller", "kustomize-controller"], CLIENT_ID)[0]["target"]["name"] == "(kustomize-controller)"


def test_role_of_recognises_only_our_shapes():
    assert [patches.role_of(p) for p in _all_ours()] == [
        patches.WORKLOAD_IDENTITY_SERVICEACCOUNT,
        patches.WORKLOAD_IDENTITY_DEPLOYMENT,
        patches.SOPS_DECRYPTION,
        patches.SSH_HOSTKEY_ALGOS_ROLE,
    ]
    concurrent = {"patch": "- op: add\n  path: /spec/template/spec/containers/0/args/-\n  value: --concurrent=5\n", "target": {"kind": "Deployment"}}
    two_ops = {"patch": patches.ssh_hostkey_algos()["patch"] + concurrent["patch"], "target": {"kind": "Deployment"}}
    with_labels = dict(patches.workload_identity_serviceaccount(["source-controller"], CLIENT_ID), target={"kind": "ServiceAccount", "labelSelector": "a=b"})
    more = {"patch": patches.workload_identity_serviceaccount(["source-controller"], CLIENT_ID)["patch"] + "  labels:\n    a: b\n", "target": {"kind": "ServiceAccount"}}
    for entry in (concurrent, two_ops, with_labels, more, {"path": "p.yaml"}, "x", {"patch": "[", "target": {"kind": "Deployment"}}):
        assert patches.role_of(entry) is None


def test_pattern_matches_is_anchored_and_refuses_what_it_cannot_evaluate():
    assert patches.pattern_matches("source-controller", "source-controller")
    assert not patches.pattern_matches("source-controller", "source-controller-canary")
    assert not patches.pattern_matches("(a|b)", "xa") and not patches.pattern_matches("a|b", "bx")
    assert patches.pattern_matches("kustomize.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io")
    for pattern in (".*-controller", "(a+)+$", "[a-z]+", "(a|b)|(c)", "", None):
        assert patches.pattern_matches(pattern, "a") is None


# --- apply: what is and is not applied at install ----------------------------------------------


def _components() -> list[dict]:
    return _objects((GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_text())


def test_apply_reports_what_it_leaves_to_kustomize_controller():
    objects = _components()
    user = [
        {"path": "patch.yaml", "target": {"kind": "Deployment"}},
        {"patch": "- op: replace\n  path: /spec/replicas\n  value: 2\n", "target": {"kind": "Deployment"}},
        {"patch": patches.sops_decryption()["patch"], "target": {"kind": "Kustomization", "labelSelector": "a=b"}},
        {"patch": patches.sops_decryption()["patch"], "target": {"kind": "Kustomization", "namespace": "flux-system"}},
        {"patch": patches.sops_decryption()["patch"], "target": {"kind": "Kustomization", "name": "flux-.*"}},
        {"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n      - name: manager\n        resources: {}\n", "target": {"kind": "Deployment"}},
        {"patch": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  annotations:\n    a: null\n", "target": {"kind": "ServiceAccount"}},
        {"patch": patches.ssh_hostkey_algos()["patch"], "target": {"kind": "Deployment"}, "options": {"allowNameChange": True}},
        {"patch": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n", "target": {"kind": "ServiceAccount"}},
        patches.ssh_hostkey_algos(),
    ]
    text = yaml.safe_dump({"resources": GOTK, "patches": user, "images": [{"name": "x", "newTag": "y"}], "namespace": "flux"})
    result = kustomize.apply_kustomization(objects, text)
    assert result.applied == (9,)
    assert [line.split(":", 1)[0] for line in result.not_applied] == [f"patches[{i}] ({e['target'].get('kind')}/{e['target'].get('name', '*')})" for i, e in enumerate(user[:9])] + ["images", "namespace"]
    source = next(o for o in result.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "source-controller")
    assert source["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256"
    assert result.objects[0] is objects[0]  # untouched objects are not copied
    assert "--ssh-hostkey-algos=rsa-sha2-512,rsa-sha2-256" not in json.dumps(objects)  # the input is not modified


def test_apply_fails_where_kustomize_fails():
    objects = _components()
    for path in ("/spec/nothere/x", "/spec/template/spec/containers/0/args/99", "/spec/template/spec/containers/0/args/x"):
        entry = {"patch": f"- op: add\n  path: {path}\n  value: x\n", "target": {"kind": "Deployment", "name": "source-controller"}}
        with pytest.raises(kustomize.PatchError) as err:
            kustomize.apply(objects, [entry])
        assert err.value.field == "patches[0]" and "Deployment/source-controller" in str(err.value)
    with pytest.raises(InvalidInput):
        kustomize.apply_kustomization(objects, "patches: {}\n")
    with pytest.raises(InvalidInput):
        kustomize.apply_kustomization(objects, "- a\n")


def test_apply_selects_by_group_version_kind_and_name():
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "source-controller"}}
    assert kustomize.selects({"group": "apps", "version": "v1", "kind": "Deployment", "name": "(source-controller|x)"}, deploy)
    assert not kustomize.selects({"group": "", "kind": "Deployment", "version": "v2"}, deploy)
    assert not kustomize.selects({"kind": "Deploy"}, deploy)
    assert kustomize.selects({"version": "v1"}, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}})


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
    else:
        sys.exit("usage: python -m tests.test_flux_patches --regenerate")
