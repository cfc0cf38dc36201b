"""shared.ports.oci against a real registry (Debian docker-registry, tests/peers/oci_registry.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from shared.errors import AuthenticationFailed, InvalidInput, NotFound
from shared.ports import oci
from shared.ports.oci import OCIError, parse_reference, pull_flux_manifests, push_flux_manifests

GOLDEN = str(Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"  # ../shared beside the checkout
         / "talos-v2.9.2-6comp" / "gotk-components.yaml")

# Spelled out here (not imported) so a typo in shared.ports.oci cannot hide in both places.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gotk() -> bytes:
    with open(GOLDEN, "rb") as f:
        data = f.read()
    assert b"kind: Deployment" in data and len(data) > 100_000
    return data


def make_layer(members, *, compress=True) -> bytes:
    """members: (name, bytes) for files, (name, None) for dirs, (name, "->target") for symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue()) if compress else buf.getvalue()


def _gzip_bomb(size: int) -> bytes:
    """A tar.gz of a few hundred KiB that decompresses to over ``size`` bytes: one member
    ``flux-system/padding`` of ``size`` zero bytes, written as 1 MiB gzip members one after the
    other (RFC 1952 allows several members in one stream; gzip readers join them)."""
    info = tarfile.TarInfo("flux-system/padding")
    info.size = size
    zeros = gzip.compress(b"\0" * MIB)
    return gzip.compress(info.tobuf(tarfile.USTAR_FORMAT)) + zeros * (size // MIB)


def craft(reg, repo, tag, *, layers, config_type=FLUX_CONFIG, media_type=OCI_MANIFEST, body_media_type=None):
    """Upload blobs and a hand-made manifest; ``layers`` is a list of (media_type, bytes)."""
    config = reg.put_blob(repo, b"{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": body_media_type or media_type,
        "config": {"mediaType": config_type, **config},
        "layers": [{"mediaType": mt, **reg.put_blob(repo, data)} for mt, data in layers],
    }
    reg.put_manifest(repo, tag, manifest, media_type)
    return reg.ref(repo, tag)


# --------------------------------------------------------------------------------------------
# Round trips


def test_push_then_pull_is_byte_identical(oci_registry, gotk):
    ref = oci_registry.ref("fluxcd/flux-manifests", "v2.9.2")
    digest = push_flux_manifests(ref, gotk, ca_file=oci_registry.ca_file,
                                 source="https://github.com/fluxcd/flux2", revision="v2.9.2@sha1:0123abcd")
    assert pull_flux_manifests(ref, ca_file=oci_registry.ca_file) == gotk

    # What was pushed looks like `flux push artifact` output, checked with raw API calls.
    r = oci_registry.get("/v2/fluxcd/flux-manifests/manifests/v2.9.2", Accept=OCI_MANIFEST)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert r.headers["Docker-Content-Digest"] == digest == "sha256:" + hashlib.sha256(r.content).hexdigest()
    manifest = r.json()
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["config"]["mediaType"] == FLUX_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [FLUX_CONTENT]
    ann = manifest["annotations"]
    assert ann["org.opencontainers.image.source"] == "https://github.com/fluxcd/flux2"
    assert ann["org.opencontainers.image.revision"] == "v2.9.2@sha1:0123abcd"
    assert ann["org.opencontainers.image.created"].endswith("Z")
    blob = oci_registry.get(f"/v2/fluxcd/flux-manifests/blobs/{manifest['layers'][0]['digest']}").content
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        assert tar.getnames() == ["flux-system", "flux-system/gotk-components.yaml"]
        assert tar.extractfile("flux-system/gotk-components.yaml").read() == gotk

    # Pull by digest as well.
    assert pull_flux_manifests(f"oci://{oci_registry.host}/fluxcd/flux-manifests@{digest}",
                               ca_file=oci_registry.ca_file) == gotk


def test_pull_hand_made_flux_artifact(oci_registry, gotk):
    """An artifact built without shared.ports.oci (member spelled ./flux-system/… as a relative walk may)."""
    layer = make_layer([("./flux-system", None), ("./flux-system/gotk-components.yaml", gotk)])
    ref = craft(oci_registry, "hand/made", "v1", layers=[(FLUX_CONTENT, layer)])
    assert pull_flux_manifests(ref, ca_file=oci_registry.ca_file) == gotk


def test_pull_through_anonymous_token_front(oci_registry, oci_token_front, gotk):
    oci_registry.push("fluxcd/flux-manifests", "v2.9.2", gotk)
    n_log, n_tok = len(oci_token_front.log), len(oci_token_front.token_requests)
    ref = oci_token_front.ref("fluxcd/flux-manifests", "v2.9.2")
    assert pull_flux_manifests(ref, ca_file=oci_token_front.ca_file) == gotk
    log = oci_token_front.log[n_log:]
    assert log[0] == ("GET", "/v2/fluxcd/flux-manifests/manifests/v2.9.2", 401)
    assert log[1] == ("GET", "/v2/fluxcd/flux-manifests/manifests/v2.9.2", 200)
    assert log[2][0] == "GET" and log[2][1].startswith("/v2/fluxcd/flux-manifests/blobs/sha256:") and log[2][2] == 200
    assert len(log) == 3  # the token is reused for the blob
    assert oci_token_front.token_requests[n_tok:] == [
        {"service": "oci-test-registry", "scope": "repository:fluxcd/flux-manifests:pull"}
    ]


def test_token_refused_is_authentication_failed(oci_token_front):
    oci_token_front.token_status = 403
    try:
        with pytest.raises(AuthenticationFailed, match="refused an anonymous token"):
            pull_flux_manifests(oci_token_front.ref("fluxcd/flux-manifests", "v2.9.2"), ca_file=oci_token_front.ca_file)
    finally:
        oci_token_front.token_status = 200


def test_push_through_token_front(oci_token_front, oci_registry, gotk):
    """The bearer flow also covers push (scope pull,push), and the upload Location round-trips."""
    ref = oci_token_front.ref("via/front", "v1")
    push_flux_manifests(ref, gotk + b"# via front\n", ca_file=oci_token_front.ca_file)
    assert pull_flux_manifests(oci_registry.ref("via/front", "v1"), ca_file=oci_registry.ca_file) == gotk + b"# via front\n"
    assert any(q.get("scope") == "repository:via/front:pull,push" for q in oci_token_front.token_requests)


def test_insecure_http_registry(oci_registry_http, gotk):
    ref = oci_registry_http.push("plain/http", "v2.9.2", gotk)
    assert pull_flux_manifests(ref, insecure_http=True) == gotk
    with pytest.raises(OCIError):  # the same registry over https: no TLS there
        pull_flux_manifests(ref, timeout=5)


def test_insecure_http_only_for_loopback():
    with pytest.raises(InvalidInput, match="loopback"):
        pull_flux_manifests("oci://ghcr.io/fluxcd/flux-manifests:v2.9.2", insecure_http=True)


def test_tls_without_ca_file_fails(oci_registry, gotk):
    ref = oci_registry.push("tls/check", "v1", gotk)
    with pytest.raises(OCIError, match="TLS"):
        pull_flux_manifests(ref, timeout=5)


# --------------------------------------------------------------------------------------------
# Not a (valid) Flux artifact


def test_missing_tag_and_repo_are_not_found(oci_registry, gotk):
    oci_registry.push("fluxcd/flux-manifests", "v2.9.2", gotk)
    ref = oci_registry.ref("fluxcd/flux-manifests", "v9.9.9")
    with pytest.raises(NotFound, match=ref.replace(".", r"\.")):
        pull_flux_manifests(ref, ca_file=oci_registry.ca_file)
    with pytest.raises(NotFound, match="no/such-repo"):
        pull_flux_manifests(oci_registry.ref("no/such-repo", "v1"), ca_file=oci_registry.ca_file)


def _good_layer(gotk):
    return make_layer([("flux-system", None), ("flux-system/gotk-components.yaml", gotk)])


@pytest.mark.parametrize(
    "case, match",
    [
        ("docker_manifest", "manifest media type is 'application/vnd.docker"),
        ("config_type", "config media type is 'application/vnd.oci.image.config.v1\\+json'"),
        ("layer_type", "layer media type is 'application/vnd.oci.image.layer.v1.tar\\+gzip'"),
        ("two_layers", "has 2 layers"),
        ("no_layers", "has 0 layers"),
    ],
)
def test_wrong_manifest_shapes(oci_registry, gotk, case, match):
    layer = (FLUX_CONTENT, _good_layer(gotk))
    repo = f"bad/{case.replace('_', '-')}"
    kwargs = {
        "docker_manifest": dict(layers=[layer], media_type=DOCKER_MANIFEST),
        "config_type": dict(layers=[layer], config_type="application/vnd.oci.image.config.v1+json"),
        "layer_type": dict(layers=[("application/vnd.oci.image.layer.v1.tar+gzip", layer[1])]),
        "two_layers": dict(layers=[layer, (FLUX_CONTENT, make_layer([("x", b"y")]))]),
        "no_layers": dict(layers=[]),
    }[case]
    ref = craft(oci_registry, repo, "v1", **kwargs)
    with pytest.raises(OCIError, match=match):
        pull_flux_manifests(ref, ca_file=oci_registry.ca_file)


def test_image_index_is_refused(oci_registry, gotk):
    inner = craft(oci_registry, "bad/index", "inner", layers=[(FLUX_CONTENT, _good_layer(gotk))])
    assert pull_flux_manifests(inner, ca_file=oci_registry.ca_file) == gotk
    body = oci_registry.get("/v2/bad/index/manifests/inner", Accept=OCI_MANIFEST).content
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + hashlib.sha256(body).hexdigest(), "size": len(body)}]}
    oci_registry.put_manifest("bad/index", "v1", index, OCI_INDEX)
    with pytest.raises(OCIError, match="manifest media type is 'application/vnd.oci.image.index"):
        pull_flux_manifests(oci_registry.ref("bad/index", "v1"), ca_file=oci_registry.ca_file)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_member", "does not contain flux-system/gotk-components.yaml"),
        ("dotdot_member", "does not contain flux-system/gotk-components.yaml"),
        ("absolute_member", "does not contain flux-system/gotk-components.yaml"),
        ("symlink_member", "not a regular file"),
        ("duplicate_member", "more than once"),
        ("not_gzip", "not a valid tar.gz"),
        ("gzip_bomb", f"decompresses to more than {oci.MAX_UNCOMPRESSED_BYTES} bytes"),
        ("too_many_members", f"more than {oci.MAX_TAR_MEMBERS} entries"),
        ("member_too_large", f"{oci.GOTK_MEMBER} is larger than {oci.MAX_MEMBER_BYTES} bytes"),
    ],
)
def test_bad_content_layer(oci_registry, gotk, case, match):
    layer = {
        "gzip_bomb": lambda: _gzip_bomb(oci.MAX_UNCOMPRESSED_BYTES + MIB),
        "too_many_members": lambda: make_layer([(f"flux-system/{i}.yaml", b"") for i in range(oci.MAX_TAR_MEMBERS)]
                                               + [("flux-system/gotk-components.yaml", gotk)]),
        "member_too_large": lambda: make_layer([("flux-system/gotk-components.yaml", b"#" * (oci.MAX_MEMBER_BYTES + 1))]),
        "missing_member": lambda: make_layer([("flux-system/other.yaml", gotk)]),
        "dotdot_member": lambda: make_layer([("../flux-system/gotk-components.yaml", gotk)]),
        "absolute_member": lambda: make_layer([("/flux-system/gotk-components.yaml", gotk)]),
        "symlink_member": lambda: make_layer([("flux-system/gotk-components.yaml", "->/etc/passwd")]),
        "duplicate_member": lambda: make_layer([("flux-system/gotk-components.yaml", gotk),
                                                ("flux-system/gotk-components.yaml", b"kind: Evil\n")]),
        "not_gzip": lambda: make_layer([("flux-system/gotk-components.yaml", gotk)], compress=False),
    }[case]()
    ref = craft(oci_registry, f"bad/{case.replace('_', '-')}", "v1", layers=[(FLUX_CONTENT, layer)])
    with pytest.raises(OCIError, match=match):
        pull_flux_manifests(ref, ca_file=oci_registry.ca_file)


def test_the_member_bound_is_the_distribution_bound():
    """What the README says of a distribution (16 MiB) holds for every source: an OCI artifact's
    gotk-components.yaml as a file or a download, and as the YAML loader takes it."""
    from shared import safe_yaml
    from shared.flux.distribution import MAX_DISTRIBUTION_BYTES

    assert oci.MAX_MEMBER_BYTES == MAX_DISTRIBUTION_BYTES == safe_yaml.DISTRIBUTION.max_bytes == 16 * MIB


def test_layer_digest_mismatch(oci_registry, gotk):
    """Corrupt the stored blob (same size): the registry serves bytes that do not hash to the digest."""
    unique = gotk + b"# digest-mismatch test\n"
    ref = oci_registry.push("bad/digest", "v1", unique)
    assert pull_flux_manifests(ref, ca_file=oci_registry.ca_file) == unique
    manifest = oci_registry.get("/v2/bad/digest/manifests/v1", Accept=OCI_MANIFEST).json()
    path = oci_registry.blob_path(manifest["layers"][0]["digest"])
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        f.seek(0)
        f.write(data)
    with pytest.raises(OCIError, match="layer digest mismatch"):
        pull_flux_manifests(ref, ca_file=oci_registry.ca_file)


@pytest.mark.parametrize("delta, match", [(-1, "is larger than"), (+1, "the manifest says")])
def test_layer_size_mismatch(oci_registry, gotk, delta, match):
    """The registry does not check descriptor sizes on manifest PUT; the puller must."""
    layer = _good_layer(gotk)
    config = oci_registry.put_blob("bad/size", b"{}")
    desc = oci_registry.put_blob("bad/size", layer)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": FLUX_CONFIG, **config},
                "layers": [{"mediaType": FLUX_CONTENT, "digest": desc["digest"], "size": desc["size"] + delta}]}
    oci_registry.put_manifest("bad/size", f"v{delta + 1}", manifest)
    with pytest.raises(OCIError, match=match):
        pull_flux_manifests(oci_registry.ref("bad/size", f"v{delta + 1}"), ca_file=oci_registry.ca_file)


# --------------------------------------------------------------------------------------------
# parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("oci://ghcr.io/fluxcd/flux-manifests:v2.9.2", ("ghcr.io", "fluxcd/flux-manifests", "v2.9.2")),
        (f"oci://ghcr.io/fluxcd/flux-manifests@{DIGEST}", ("ghcr.io", "fluxcd/flux-manifests", DIGEST)),
        (f"oci://ghcr.io/fluxcd/flux-manifests:v2.9.2@{DIGEST}", ("ghcr.io", "fluxcd/flux-manifests", DIGEST)),
        ("oci://127.0.0.1:5000/a/b/c:latest", ("127.0.0.1:5000", "a/b/c", "latest")),
        ("oci://localhost:5000/flux_manifests:v2.9.2-rc.1", ("localhost:5000", "flux_manifests", "v2.9.2-rc.1")),
        ("oci://[::1]:5000/x:y", ("[::1]:5000", "x", "y")),
        ("oci://docker.io/fluxcd/flux-manifests:v2.9.2", ("docker.io", "fluxcd/flux-manifests", "v2.9.2")),
    ],
)
def test_parse_reference_ok(ref, expected):
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "ghcr.io/fluxcd/flux-manifests:v2.9.2",  # no oci://
        "https://ghcr.io/fluxcd/flux-manifests:v2.9.2",
        "oci://ghcr.io/fluxcd/flux-manifests",  # no tag
        "oci://ghcr.io:v2.9.2",  # no repository
        "oci://ghcr.io/FluxCD/flux-manifests:v2.9.2",  # uppercase repository
        "oci://ghcr.io/fluxcd/flux-manifests:.v2",  # tag may not start with '.'
        "oci://ghcr.io/fluxcd/flux-manifests:" + "v" * 129,
        "oci://ghcr.io/fluxcd/flux-manifests@sha256:abc",  # short digest
        "oci://ghcr.io/fluxcd/flux-manifests@md5:" + "a" * 32,
        "oci://ghcr.io/fluxcd/../flux-manifests:v1",
        "oci://ghcr.io/fluxcd//flux-manifests:v1",
        "oci://ghcr.io/fluxcd/flux-manifests:v1 ",
        "oci://ghcr.io/fluxcd/flux-manifests:v1?x=y",
        "oci://user@ghcr.io/fluxcd/flux-manifests:v1",
        "oci://ghcr.io:99999/fluxcd/flux-manifests:v1",
        "oci://-ghcr.io/fluxcd/flux-manifests:v1",
    ],
)
def test_parse_reference_invalid(ref):
    with pytest.raises(InvalidInput) as exc:
        parse_reference(ref)
    assert exc.value.field == "manifests"


def test_parse_reference_names_the_missing_scheme():
    with pytest.raises(InvalidInput, match="must start with oci://"):
        parse_reference("ghcr.io/fluxcd/flux-manifests:v2.9.2")


def test_push_refuses_digest_ref():
    with pytest.raises(InvalidInput, match="tag"):
        push_flux_manifests(f"oci://127.0.0.1:1/a/b@{DIGEST}", b"x", insecure_http=True)


def test_oci_error_is_upstream_error():
    from shared.errors import UpstreamError

    assert issubclass(OCIError, UpstreamError) and OCIError.status == 502
