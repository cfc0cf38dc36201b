"""The Functions host's HTTP front for tests: the app's indexed HTTP functions served on 127.0.0.1, so a
browser (headless Chromium) can load the fleet page and its API calls.

:class:`FunctionsHttpServer` does what the host does for an HTTP trigger: routes ``/api/<route>`` by
the indexed route templates (``operations/{id}`` → ``route_params``), checks the function's auth level
the host's way (``ADMIN``: the master key as the ``x-functions-key`` header or the ``code`` query
parameter, else 401; ``ANONYMOUS``: anyone), builds a real ``func.HttpRequest`` (method, URL, headers,
query, body) and writes the ``func.HttpResponse`` back (status, headers, mimetype, body).
"""

from __future__ import annotations

import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class FunctionsHttpServer:
    def __init__(self, functions: dict, *, master_key: str | None = None):
        import azure.functions as func

        self.master_key = master_key or secrets.token_urlsafe(24)
        self.routes = []
        for name, fn in functions.items():
            trigger = fn.get_trigger()
            if trigger.get_binding_name() != "httpTrigger":
                continue
            pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(trigger.route)) + "$"
            methods = {str(getattr(m, "value", m)).upper() for m in trigger.methods}
            self.routes.append((re.compile(pattern), methods, trigger.auth_level, fn.get_user_function()))
        self.requests: list[tuple[str, str, int]] = []
        self._func = func
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        func = self._func
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        status, headers, payload = 404, {"Content-Type": "text/plain"}, b"not found"
        if parts.path.startswith("/api/"):
            route = parts.path[len("/api/"):]
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            for pattern, methods, level, user_function in self.routes:
                m = pattern.match(route)
                if not m:
                    continue
                if handler.command not in methods:
                    status, payload = 405, b"method not allowed"
                    continue
                key = handler.headers.get("x-functions-key") or query.get("code")
                if getattr(level, "name", str(level)).upper() == "ADMIN" and key != self.master_key:
                    status, headers, payload = 401, {"Content-Type": "text/plain"}, b"Unauthorized"
                    break
                req = func.HttpRequest(handler.command, f"http://{handler.headers.get('Host', '127.0.0.1')}{handler.path}",
                                       headers=dict(handler.headers.items()), params=query,
                                       route_params=m.groupdict(), body=body)
                resp = user_function(req)
                status = resp.status_code
                headers = dict(resp.headers.items())
                headers["Content-Type"] = (resp.mimetype or "text/plain") + (f"; charset={resp.charset}" if resp.charset else "")
                payload = resp.get_body() or b""
                break
        self.requests.append((handler.command, handler.path.split("?")[0], status))
        handler.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding"):
                handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def start(self) -> "FunctionsHttpServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_GET(self):
                server._dispatch(self)

            do_POST = do_PUT = do_DELETE = do_GET

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--hide-scrollbars", "--mute-audio"]


def chromium(url: str, *, dump_dom: bool = False, screenshot: str | None = None, size: str = "1280,720",
             budget_ms: int = 8000, timeout: float = 60.0) -> str:
    """Load ``url`` in Debian's headless Chromium (``/usr/bin/chromium``, a new empty profile) and return
    the DOM after the page's scripts ran (``--virtual-time-budget`` lets its fetches finish), or write a
    PNG to ``screenshot``. Raises ``RuntimeError`` with Chromium's output when it fails."""
    import shutil
    import subprocess
    import tempfile

    binary = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
               f"--virtual-time-budget={budget_ms}"]
        cmd += ["--dump-dom"] if dump_dom else [f"--screenshot={screenshot}"]
        out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"chromium exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout
