"""Test peer: a real OCI registry on 127.0.0.1, plus an anonymous bearer-token front.

The registry is Debian's Docker Distribution (package ``docker-registry``, binary
``/usr/bin/docker-registry``, upstream ``distribution/distribution`` 2.8): started per test
session from a YAML config written to a tmp dir — filesystem storage in that dir,
``http.addr: 127.0.0.1:<free port>``, TLS with a trustme CA (cert for IP 127.0.0.1),
``relativeurls: true`` so upload ``Location`` headers work behind the front. A second,
plain-HTTP instance serves ``insecure_http`` tests. The package's own systemd unit is not used.

The token front (:class:`TokenFront`) is an in-process HTTPS proxy in front of the registry that
behaves like ghcr.io for anonymous pulls: ``/v2/…`` without a valid token answers 401 with
``WWW-Authenticate: Bearer realm="https://127.0.0.1:<port>/token",service=…,scope=…``;
``GET /token?service=…&scope=…`` issues a random token for that scope; authorized requests
are forwarded to the registry.

Fixtures: ``oci_registry`` (TLS), ``oci_registry_http`` (plain HTTP), ``oci_token_front``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

REGISTRY_BINARY = "docker-registry"
INSTALL_HINT = (
    "Debian's OCI registry binary `docker-registry` was not found on PATH. "
    "Install it with: apt-get install -y docker-registry (Docker Distribution 2.8)."
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OCIRegistry:
    """A running ``docker-registry`` process. ``host`` is ``127.0.0.1:<port>``."""

    def __init__(self, workdir: str, *, tls_cert=None, ca_file: str | None = None):
        import requests

        binary = shutil.which(REGISTRY_BINARY) or ("/usr/bin/docker-registry" if os.access(
            "/usr/bin/docker-registry", os.X_OK) else None)
        if not binary:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.storage_dir = os.path.join(workdir, "storage")
        os.makedirs(self.storage_dir, exist_ok=True)
        self.ca_file = ca_file
        self.insecure_http = tls_cert is None
        self.scheme = "http" if self.insecure_http else "https"
        tls_yaml = ""
        if tls_cert is not None:
            cert_path = os.path.join(workdir, "server.pem")
            key_path = os.path.join(workdir, "server.key")
            tls_cert.cert_chain_pems[0].write_to_path(cert_path)
            tls_cert.private_key_pem.write_to_path(key_path)
            tls_yaml = f"  tls:\n    certificate: {cert_path}\n    key: {key_path}\n"
        self._session = requests.Session()
        self._session.trust_env = False
        self.verify = ca_file if ca_file else False
        self.log_path = os.path.join(workdir, "registry.log")
        last_error = ""
        for _ in range(3):  # the free port may be taken between probe and bind: retry
            port = _free_port()
            self.host = f"127.0.0.1:{port}"
            self.url = f"{self.scheme}://{self.host}"
            config_path = os.path.join(workdir, "config.yml")
            with open(config_path, "w") as f:
                f.write(
                    "version: 0.1\n"
                    "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
                    "storage:\n"
                    f"  filesystem:\n    rootdirectory: {self.storage_dir}\n"
                    "  delete:\n    enabled: true\n"
                    "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                    "http:\n"
                    f"  addr: 127.0.0.1:{port}\n"
                    "  relativeurls: true\n"
                    f"{tls_yaml}"
                )
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([binary, "serve", config_path], stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            last_error = self._wait_ready()
            if not last_error:
                return
            self.stop()
        with open(self.log_path, "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace")
        pytest.fail(f"docker-registry did not start: {last_error}\n{tail}", pytrace=False)

    def _wait_ready(self, deadline_s: float = 15.0) -> str:
        import requests

        deadline = time.monotonic() + deadline_s
        error = "timeout"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            try:
                r = self._session.get(f"{self.url}/v2/", verify=self.verify, timeout=2)
                if r.status_code == 200:
                    return ""
                error = f"/v2/ answered {r.status_code}"
            except requests.RequestException as exc:
                error = str(exc)
            time.sleep(0.05)
        return error

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    # -- high level ----------------------------------------------------------------------------

    def ref(self, repo: str, tag: str) -> str:
        return f"oci://{self.host}/{repo}:{tag}"

    def push(self, repo: str, tag: str, gotk_bytes: bytes, **kwargs) -> str:
        """Push like ``flux push artifact`` (via ``shared.ports.oci``); return ``oci://host/repo:tag``."""
        from shared.ports.oci import push_flux_manifests

        ref = self.ref(repo, tag)
        push_flux_manifests(ref, gotk_bytes, ca_file=self.ca_file, insecure_http=self.insecure_http, **kwargs)
        return ref

    # -- raw distribution API, independent of shared.ports.oci (to craft bad artifacts) --------------

    def put_blob(self, repo: str, data: bytes) -> dict:
        """Upload ``data`` (POST + PUT); return its descriptor fields ``{"digest", "size"}``."""
        digest = _sha256(data)
        r = self._session.post(f"{self.url}/v2/{repo}/blobs/uploads/", verify=self.verify, timeout=10)
        assert r.status_code == 202, (r.status_code, r.text)
        location = r.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        r = self._session.put(f"{location}{sep}digest={digest}", data=data, verify=self.verify, timeout=10,
                              headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.status_code, r.text)
        return {"digest": digest, "size": len(data)}

    def put_manifest(self, repo: str, tag: str, manifest: dict | bytes, media_type: str = OCI_MANIFEST) -> str:
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        r = self._session.put(f"{self.url}/v2/{repo}/manifests/{tag}", data=body, verify=self.verify, timeout=10,
                              headers={"Content-Type": media_type})
        assert r.status_code == 201, (r.status_code, r.text)
        return r.headers.get("Docker-Content-Digest", _sha256(body))

    def get(self, path: str, **headers):
        return self._session.get(f"{self.url}{path}", verify=self.verify, timeout=10, headers=headers)

    def blob_path(self, digest: str) -> str:
        """Where the filesystem driver stores a blob (to corrupt it on purpose)."""
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.storage_dir, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")


class TokenFront:
    """ghcr.io-like anonymous bearer-token front for a registry (in-process, TLS).

    ``token_requests``: list of the ``/token`` query dicts; ``log``: ``(method, path, status)``
    of /v2 requests. ``token_status``: set to e.g. 403 to refuse tokens.
    """

    SERVICE = "oci-test-registry"

    def __init__(self, registry: OCIRegistry, server_cert, ca_file: str):
        import requests

        self.registry = registry
        self.ca_file = ca_file
        self.insecure_http = False
        self.tokens: dict[str, str] = {}
        self.token_requests: list[dict] = []
        self.log: list[tuple[str, str, int]] = []
        self.token_status = 200
        self._lock = threading.Lock()
        self._upstream = requests.Session()
        self._upstream.trust_env = False
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status, headers=(), body=b""):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if not any(k.lower() == "content-length" for k, _ in headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                if url.path == "/token":
                    return self._token(parse_qs(url.query))
                if not url.path.startswith("/v2/"):
                    return self._reply(404)
                status = front._forward_status(self)
                if status is not None:
                    return status
                r = front._upstream.request(self.command, front.registry.url + self.path, data=body or None,
                                            headers={k: v for k, v in self.headers.items() if k.lower() in (
                                                "accept", "content-type", "range")},
                                            verify=front.registry.verify, allow_redirects=False, timeout=30)
                headers = [(k, v) for k, v in r.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length")]
                payload = r.content
                headers.append(("Content-Length", r.headers.get("Content-Length", "0") if self.command == "HEAD"
                                else str(len(payload))))
                front.log.append((self.command, url.path, r.status_code))
                self._reply(r.status_code, headers, payload)

            def _token(self, query):
                q = {k: v[0] for k, v in query.items()}
                front.token_requests.append(q)
                if front.token_status != 200:
                    return self._reply(front.token_status, [("Content-Type", "application/json")],
                                       b'{"errors":[{"code":"DENIED"}]}')
                token = secrets.token_urlsafe(24)
                with front._lock:
                    front.tokens[token] = q.get("scope", "")
                body = json.dumps({"token": token, "expires_in": 300}).encode()
                self._reply(200, [("Content-Type", "application/json")], body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self._Handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_cert.configure_cert(ctx)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"https://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="oci-token-front", daemon=True)
        self._thread.start()

    def _forward_status(self, handler) -> bool | None:
        """Answer 401 unless the request carries a token whose scope covers it."""
        path = urlsplit(handler.path).path
        m = re.match(r"^/v2/(.+?)/(manifests|blobs|tags)/", path)
        action = "pull" if handler.command in ("GET", "HEAD") else "push"
        scope = f"repository:{m.group(1)}:{'pull' if action == 'pull' else 'pull,push'}" if m else ""
        auth = handler.headers.get("Authorization", "")
        granted = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if granted is not None and (not m or (granted.startswith(f"repository:{m.group(1)}:")
                                              and action in granted.rsplit(":", 1)[1].split(","))):
            return None
        challenge = f'Bearer realm="{self.url}/token",service="{self.SERVICE}"'
        if scope:
            challenge += f',scope="{scope}"'
        self.log.append((handler.command, path, 401))
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        handler._reply(401, [("WWW-Authenticate", challenge), ("Content-Type", "application/json")], body)
        return True

    def ref(self, repo: str, tag: str) -> str:
        return f"oci://{self.host}/{repo}:{tag}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session")
def oci_ca():
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory, oci_ca):
    """Debian ``docker-registry`` over TLS on 127.0.0.1; ``.ca_file`` verifies it."""
    workdir = str(tmp_path_factory.mktemp("oci-registry"))
    ca_file = os.path.join(workdir, "ca.pem")
    oci_ca.cert_pem.write_to_path(ca_file)
    reg = OCIRegistry(workdir, tls_cert=oci_ca.issue_cert("127.0.0.1"), ca_file=ca_file)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def oci_registry_http(tmp_path_factory):
    """Debian ``docker-registry`` over plain HTTP on 127.0.0.1 (``.insecure_http`` is True)."""
    reg = OCIRegistry(str(tmp_path_factory.mktemp("oci-registry-http")))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def oci_token_front(oci_registry, oci_ca):
    """Anonymous bearer-token front (HTTPS, same CA) forwarding to ``oci_registry``."""
    front = TokenFront(oci_registry, oci_ca.issue_cert("127.0.0.1"), oci_registry.ca_file)
    yield front
    front.stop()
