"""Start and stop a ``socketserver`` server on a daemon thread, and serve HTTPS with the tests' CA
(shared by the HTTP test peers)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import threading
import uuid
from http.server import ThreadingHTTPServer


def serve_in_thread(httpd, name: str) -> threading.Thread:
    """Run ``httpd.serve_forever`` on a daemon thread named ``name`` (polls shutdown every 50 ms)."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    return thread


def stop_server(httpd, thread: threading.Thread | None) -> None:
    """Shut ``httpd`` down, close its socket and join its thread (either may be None)."""
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()
    if thread is not None:
        thread.join(timeout=5)


class TLSHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server behind TLS (``ssl_context``): the handshake runs in each connection's
    thread, not in the accept loop; client resets and TLS aborts are not test failures."""

    daemon_threads = True
    block_on_close = False  # keep-alive connections must not block stop()

    def __init__(self, addr, handler, ssl_context: ssl.SSLContext):
        super().__init__(addr, handler)
        self.ssl_context = ssl_context

    def finish_request(self, request, client_address):
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass


def write_json(handler, status: int, body, headers: dict | None = None) -> None:
    """Answer an Azure-style JSON reply on a ``BaseHTTPRequestHandler``: ``body`` (None: no content) with
    ``Content-Length``, an ``x-ms-request-id`` and ``headers``."""
    payload = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    if payload:
        handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(payload)))
    handler.send_header("x-ms-request-id", str(uuid.uuid4()))
    for key, val in (headers or {}).items():
        handler.send_header(key, val)
    handler.end_headers()
    if payload:
        handler.wfile.write(payload)


_CA_LOCK = threading.Lock()
_CA_AND_CERT: tuple | None = None


def test_ca():
    """The tests' CA and one server certificate (127.0.0.1, localhost) signed by it, made once per process
    with trustme (~18 ms) and shared by the HTTPS peers: ``(ca, cert)``."""
    global _CA_AND_CERT
    with _CA_LOCK:
        if _CA_AND_CERT is None:
            import trustme

            ca = trustme.CA()
            _CA_AND_CERT = (ca, ca.issue_cert("127.0.0.1", "localhost"))
        return _CA_AND_CERT


class HttpsPeer:
    """``start()``/``stop()`` (or ``with``) of an HTTPS test peer on ``https://127.0.0.1:<random port>``
    (:attr:`url`) with a certificate of :func:`test_ca`, whose CA is written to :attr:`ca_file` for the
    clients' ``connection_verify``. Subclasses set ``name`` and build their server in ``_server(ctx)``."""

    name = "https-peer"
    url = ""
    ca_file = ""
    _httpd: TLSHTTPServer | None = None
    _thread: threading.Thread | None = None
    _tmpdir: str | None = None

    def _server(self, ssl_context: ssl.SSLContext) -> TLSHTTPServer:
        raise NotImplementedError

    def start(self):
        ca, cert = test_ca()
        self._tmpdir = tempfile.mkdtemp(prefix=f"{self.name}-")
        self.ca_file = os.path.join(self._tmpdir, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        self._httpd = self._server(ctx)
        port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{port}"
        self._thread = serve_in_thread(self._httpd, f"{self.name}:{port}")
        return self

    def stop(self) -> None:
        stop_server(self._httpd, self._thread)
        self._httpd = self._thread = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
