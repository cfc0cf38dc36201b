"""``--toleration-keys`` and ``--image-pull-secret`` in gotk-components.yaml, byte for byte as Flux
writes them.

Flux adds both through the strategic merge patch ``node-selector.yaml`` (fluxcd/flux2
``pkg/manifestgen/install/templates.go`` ``nodeSelectorTmpl``, applied by ``install.go`` to every
Deployment) and builds the result with kustomize. The fixtures under
``tests/fixtures/install_pod_fields/<case>/`` hold what ``kubectl kustomize`` (its version in
``KUSTOMIZE_VERSION``) builds from a real v2.9.2 bootstrap's gotk-components.yaml plus that patch,
rendered from Flux's template: ``node-selector.yaml`` is the patch, ``deployments.yaml`` the
Deployments kustomize wrote. Regenerate (needs kubectl) with:

    .venv/bin/python -m tests.test_install_pod_fields --regenerate

When kubectl is present, test_fixtures_are_what_kustomize_builds builds them again and also checks
that every other document comes out unchanged. The shape matches real bootstrap output with
``--toleration-keys`` (github.com/xwang2713/flux2-hpcc-cluster, clusters/dev/azure, Flux v0.16.1:
``tolerations`` after ``terminationGracePeriodSeconds``, ``- key: …`` / ``operator: Exists``); no
public v2.9 bootstrap output with either flag was found to compare against.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shared.errors import InvalidInput
from shared.flux import distribution, install

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "install_pod_fields"
EXTRA = ("image-reflector-controller", "image-automation-controller")

#: case -> (golden set, components extra, toleration keys, image pull secret)
CASES = {
    "6comp-tolerations-pull-secret": ("talos-v2.9.2-6comp", EXTRA, ("CriticalAddonsOnly", "kubernetes.azure.com/scalesetpriority"), "regcred"),
    "4comp-toleration": ("talos-v2.9.2-4comp", (), ("node-role.kubernetes.io/control-plane",), ""),
    "4comp-pull-secret": ("talos-v2.9.2-4comp", (), (), "acr-pull"),
    # keys that YAML would read as a boolean, a number or null: Flux's template quotes every key, and
    # kustomize writes back in double quotes those that need it
    "4comp-yaml-keys": ("talos-v2.9.2-4comp", (), ("true", "yes", "Y", "n", "TRUE", "on", "null", "010", "1_000", "0b1", "0o17", "0x1f", "1e3", "1.5", "12", "1a"), ""),
}


def node_selector_patch(toleration_keys, image_pull_secret: str) -> str:
    """templates.go ``nodeSelectorTmpl`` executed as Go's text/template does (v2.9.4)."""
    text = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: all\nspec:\n  template:\n    spec:\n"
    text += "      nodeSelector:\n        kubernetes.io/os: linux"
    if image_pull_secret:
        text += f"\n      imagePullSecrets:\n       - name: {image_pull_secret}"
    text += "\n"
    if toleration_keys:
        text += "\n      tolerations:"
        for key in toleration_keys:
            text += f'\n       - key: "{key}"\n         operator: "Exists"'
    return text + "\n"


def _docs(text: str) -> list[str]:
    return [d.strip("\n") for d in text.split("\n---\n") if d.strip("\n---")]


def _deployments(docs: list[str]) -> dict[str, str]:
    return {re.search(r"^  name: (\S+)$", d, re.M).group(1): d for d in docs if re.search(r"^kind: Deployment$", d, re.M)}


def ours(case: str) -> list[str]:
    golden, extra, keys, secret = CASES[case]
    dist = distribution.load(str(GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"))
    opts = install.InstallOptions(components_extra=extra, toleration_keys=keys, image_pull_secret=secret)
    return _docs(install.generate(dist, opts).content.split("\n", 4)[4])


def kustomize_build(case: str) -> list[str]:
    golden, _, keys, secret = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(GOLDEN / golden / "gotk-components.yaml", work / "gotk-components.yaml")
        (work / "node-selector.yaml").write_text(node_selector_patch(keys, secret))
        (work / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- gotk-components.yaml\n"
            "patches:\n- path: node-selector.yaml\n  target:\n    kind: Deployment\n")
        out = subprocess.run(["kubectl", "kustomize", str(work)], check=True, capture_output=True, text=True, timeout=120)
    return _docs(out.stdout)


@pytest.mark.parametrize("case", sorted(CASES))
def test_deployments_are_what_kustomize_builds_from_flux_patch(case):
    expected = (FIXTURES / case / "deployments.yaml").read_text()
    mine = _deployments(ours(case))
    assert "\n---\n".join(mine[name] for name in sorted(mine)) + "\n" == expected
    assert (FIXTURES / case / "node-selector.yaml").read_text() == node_selector_patch(*CASES[case][2:])


@pytest.mark.parametrize("case", sorted(CASES))
def test_only_the_deployments_change(case):
    golden, extra, _, _ = CASES[case]
    dist = distribution.load(str(GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"))
    plain = _docs(install.generate(dist, install.InstallOptions(components_extra=extra)).content.split("\n", 4)[4])
    patched = ours(case)
    assert len(plain) == len(patched)
    for before, after in zip(plain, patched):
        assert (before == after) != bool(re.search(r"^kind: Deployment$", before, re.M))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("case", sorted(CASES))
def test_fixtures_are_what_kustomize_builds(case):
    built = kustomize_build(case)
    assert sorted(built) == sorted(ours(case))  # every document, not only the Deployments
    deps = _deployments(built)
    assert "\n---\n".join(deps[n] for n in sorted(deps)) + "\n" == (FIXTURES / case / "deployments.yaml").read_text()


def test_bad_values_name_the_field():
    dist = distribution.load(str(GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"))
    for opts, field in (
        (install.InstallOptions(toleration_keys=("bad key",)), "tolerationKeys"),
        (install.InstallOptions(toleration_keys=("a", "a")), "tolerationKeys"),
        (install.InstallOptions(toleration_keys=("-x/y",)), "tolerationKeys"),
        (install.InstallOptions(image_pull_secret="Reg_Cred"), "imagePullSecret"),
        (install.InstallOptions(image_pull_secret="123"), "imagePullSecret"),
    ):
        with pytest.raises(InvalidInput) as err:
            install.generate(dist, opts)
        assert err.value.field == field


def _regenerate() -> None:
    version = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    for case in CASES:
        folder = FIXTURES / case
        folder.mkdir(parents=True, exist_ok=True)
        deps = _deployments(kustomize_build(case))
        (folder / "deployments.yaml").write_text("\n---\n".join(deps[n] for n in sorted(deps)) + "\n")
        (folder / "node-selector.yaml").write_text(node_selector_patch(*CASES[case][2:]))
    (FIXTURES / "KUSTOMIZE_VERSION").write_text(re.search(r"Kustomize Version: (\S+)", version).group(1) + "\n")


if __name__ == "__main__" and "--regenerate" in sys.argv:
    _regenerate()
