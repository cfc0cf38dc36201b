"""Loading a Flux distribution from an OCI artifact (real registry) and an https:// URL."""

from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path

import pytest

from shared.errors import NotFound, UpstreamError
from shared.flux import distribution, install

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "flux" / "golden"
V292 = GOLDEN / "talos-v2.9.2-6comp" / "gotk-components.yaml"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FLUX_MANIFESTS", raising=False)
    distribution._cache.clear()
    yield tmp_path / "cache"
    distribution._cache.clear()


def _blobs(cache_dir) -> dict:
    return {p.name: p.read_bytes() for p in cache_dir.iterdir()} if cache_dir.exists() else {}


def test_oci_distribution_renders_golden_and_is_cached_by_digest(oci_token_front, oci_registry, cache_dir):
    import hashlib
    import os
    import stat

    oci_registry.push("fluxcd/flux-manifests", "v2.9.2", V292.read_bytes())
    ref = oci_token_front.ref("fluxcd/flux-manifests", "v2.9.2")
    oci_token_front.log.clear()
    dist = distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file)
    assert dist.version == "v2.9.2"
    out = install.generate(dist, install.InstallOptions())
    assert out.content == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_text()
    got = [(m, p.split("/")[-2]) for m, p, status in oci_token_front.log if status == 200]
    assert got == [("GET", "manifests"), ("GET", "blobs")]
    # content-addressed: one file, named by the sha256 of its bytes, in a private folder
    (name, data), = _blobs(cache_dir).items()
    assert name == "sha256-" + hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700 and stat.S_IMODE(os.stat(cache_dir / name).st_mode) == 0o600

    # A new process (empty memory cache) asks the registry which layer the tag means (the
    # manifest), and takes that layer from the disk.
    distribution._cache.clear()
    oci_token_front.log.clear()
    assert distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file).text == dist.text
    assert [(m, p.split("/")[-2]) for m, p, status in oci_token_front.log if status == 200] == [("GET", "manifests")]


def test_a_tampered_cache_entry_is_detected_and_fetched_again(oci_token_front, oci_registry, cache_dir, caplog):
    """The chained attack of issue 7: whatever rewrote the cached distribution (with controller
    images from another registry), the next load hashes the entry, drops it and downloads again."""
    import hashlib

    from shared.ports.oci import build_flux_layer

    genuine = V292.read_bytes()
    oci_registry.push("fluxcd/flux-manifests", "v2.9.2", genuine)
    ref = oci_token_front.ref("fluxcd/flux-manifests", "v2.9.2")
    distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file)
    (name, layer), = _blobs(cache_dir).items()
    evil = genuine.replace(b"ghcr.io/fluxcd/", b"evil.example/fluxcd/")
    assert evil != genuine
    evil_layer = build_flux_layer(evil)
    # the entry rewritten in place, and the attacker's layer planted under its own (correct) digest
    (cache_dir / name).write_bytes(evil_layer)
    (cache_dir / ("sha256-" + hashlib.sha256(evil_layer).hexdigest())).write_bytes(evil_layer)

    distribution._cache.clear()
    oci_token_front.log.clear()
    with caplog.at_level("WARNING"):
        dist = distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file)
    assert dist.text.encode() == genuine and b"evil.example" not in dist.text.encode()
    assert "does not match its digest" in caplog.text
    assert ("GET", "blobs") in [(m, p.split("/")[-2]) for m, p, s in oci_token_front.log if s == 200]
    assert _blobs(cache_dir)[name] == layer  # restored


@pytest.mark.parametrize("problem", ["symlink", "group-writable"])
def test_a_cache_folder_that_is_not_private_is_not_used(oci_registry, tmp_path, monkeypatch, caplog, problem):
    import os

    monkeypatch.delenv("FLUX_MANIFESTS", raising=False)
    distribution._cache.clear()
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    cache = tmp_path / "cache"
    if problem == "symlink":
        cache.symlink_to(real)
    else:
        cache.mkdir()
        os.chmod(cache, 0o770)
    monkeypatch.setenv("FLUX_CACHE_DIR", str(cache))
    ref = oci_registry.push("fluxcd/flux-manifests", "v2.9.2", V292.read_bytes())
    with caplog.at_level("WARNING"):
        assert distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file).version == "v2.9.2"
    distribution._cache.clear()
    assert "distribution cache" in caplog.text and "not used" in caplog.text
    assert list(real.iterdir()) == [] and (problem == "symlink" or list(cache.iterdir()) == [])


def test_a_latest_tag_is_read_again_every_time(oci_registry, cache_dir):
    older = GOLDEN / "finops-k3s-lab-v2.8.5" / "gotk-components.yaml"
    ref = oci_registry.push("fluxcd/flux-manifests", "latest", older.read_bytes())
    assert distribution.load(ref, "latest", ca_file=oci_registry.ca_file).version == "v2.8.5"
    oci_registry.push("fluxcd/flux-manifests", "latest", V292.read_bytes())
    assert distribution.load(ref, "latest", ca_file=oci_registry.ca_file).version == "v2.9.2"
    # what the tag means is asked every time; the layers it named are content-addressed, so both stay
    assert len(list(cache_dir.iterdir())) == 2


def test_default_source_is_the_flux_manifests_artifact():
    assert distribution.default_source("v2.9.4") == "oci://ghcr.io/fluxcd/flux-manifests:v2.9.4"


def test_oci_missing_tag_is_not_found(oci_registry, cache_dir):
    with pytest.raises(NotFound):
        distribution.load(oci_registry.ref("fluxcd/flux-manifests", "v9.9.9"), "v9.9.9", ca_file=oci_registry.ca_file)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())


def test_oci_through_anonymous_token_flow(oci_token_front, oci_registry, cache_dir):
    oci_registry.push("fluxcd/flux-manifests", "v2.9.2", V292.read_bytes())
    dist = distribution.load(oci_token_front.ref("fluxcd/flux-manifests", "v2.9.2"), "v2.9.2", ca_file=oci_registry.ca_file)
    assert dist.components[:2] == ("source-controller", "kustomize-controller")


@pytest.fixture
def https_file_server(tmp_path):
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "gotk-components.yaml").write_bytes(V292.read_bytes())
    (tmp_path / "www" / "broken.yaml").write_text("<html>404</html>\n")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.RequestHandlerClass.log_message = lambda *a: None
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", str(ca_file)
    httpd.shutdown()


def test_https_distribution(https_file_server, cache_dir):
    base, ca_file = https_file_server
    dist = distribution.load(f"{base}/gotk-components.yaml", "v2.9.2", ca_file=ca_file)
    assert dist.text == V292.read_text()
    with pytest.raises(NotFound):
        distribution.load(f"{base}/missing.yaml", None, ca_file=ca_file)
    with pytest.raises(Exception) as err:
        distribution.load(f"{base}/broken.yaml", None, ca_file=ca_file)
    assert "not a Flux distribution" in str(err.value)
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []  # https sources live in memory only


def test_https_downloads_are_bounded(https_file_server, cache_dir, monkeypatch):
    base, ca_file = https_file_server
    monkeypatch.setattr(distribution, "MAX_DISTRIBUTION_BYTES", 100_000)
    with pytest.raises(UpstreamError) as err:
        distribution.load(f"{base}/gotk-components.yaml", None, ca_file=ca_file)
    assert "larger than 100000 bytes" in str(err.value)
