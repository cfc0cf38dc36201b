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


def test_oci_distribution_renders_golden_and_is_cached(oci_registry, cache_dir):
    ref = oci_registry.push("fluxcd/flux-manifests", "v2.9.2", V292.read_bytes())
    dist = distribution.load(ref, "v2.9.2", ca_file=oci_registry.ca_file)
    assert dist.version == "v2.9.2"
    out = install.generate(dist, install.InstallOptions())
    assert out.content == (GOLDEN / "talos-v2.9.2-4comp" / "gotk-components.yaml").read_text()
    assert len(list(cache_dir.iterdir())) == 1
    # A new process (empty memory cache) reads the disk cache: without the test CA, asking the
    # registry again would fail certificate verification.
    distribution._cache.clear()
    assert distribution.load(ref, "v2.9.2").text == dist.text
    distribution._cache.clear()
    for f in cache_dir.iterdir():
        f.unlink()
    with pytest.raises(UpstreamError):  # the same reference, uncached, does go to the registry
        distribution.load(ref, "v2.9.2")


def test_a_latest_tag_is_read_again_every_time(oci_registry, cache_dir):
    older = GOLDEN / "finops-k3s-lab-v2.8.5" / "gotk-components.yaml"
    ref = oci_registry.push("fluxcd/flux-manifests", "latest", older.read_bytes())
    assert distribution.load(ref, "latest", ca_file=oci_registry.ca_file).version == "v2.8.5"
    oci_registry.push("fluxcd/flux-manifests", "latest", V292.read_bytes())
    assert distribution.load(ref, "latest", ca_file=oci_registry.ca_file).version == "v2.9.2"
    assert not cache_dir.exists() or not list(cache_dir.iterdir())


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
    assert len(list(cache_dir.iterdir())) == 1  # the broken download was not cached
