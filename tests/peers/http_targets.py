"""Notification targets on http://127.0.0.1:<port>: Azure DevOps commit statuses, Teams, Slack, webhooks.

One threaded HTTP/1.1 server (keep-alive) records every request and answers like the real services:

- Azure DevOps Git statuses (learn.microsoft.com/rest/api/azure/devops/git/statuses):
  ``GET|POST /{org}/{project}/_apis/git/repositories/{repo}/commits/{sha}/statuses?api-version=7.1``.
  Auth: ``Basic base64(":"+PAT)`` with a PAT from :meth:`TargetServer.allow_pat`, or ``Bearer <token>`` from
  :meth:`allow_bearer`; else 401. ``api-version`` must be 7.1 (400 otherwise); POST validates ``state``
  (GitStatusState) and a non-empty ``context.name`` (400), stores the status with ``id``, ``creationDate``
  and ``createdBy``, and answers 201 Created; GET answers
  ``{"count", "value"}`` newest first.
- Webhooks (Teams Workflows, Slack incoming webhook, generic): ``POST`` any other path, answered 200
  (Slack's ``ok`` text body, Teams 202 as Power Automate does; a Teams body over 28,000 bytes is refused
  with 413, as Teams refuses messages over 28 KB).

Faults on demand, per path prefix (:meth:`fail`): a list of planned answers (``429`` with ``Retry-After``,
``500``, ``"timeout"`` = hold the request past the client's timeout and drop it unanswered, ``"reset"`` =
close the connection), or random ones (:meth:`fail_randomly`, seeded). ``delay`` seconds are added to
every answer (the bench's 20 ms). A request counts as *delivered* only when answered 2xx
(:meth:`delivered`), which is what a sender can know.

Fixture: ``http_targets`` (a fresh started server per test).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.peers._serving import serve_in_thread, stop_server

ADO_STATES = {"notSet", "pending", "succeeded", "failed", "error", "notApplicable"}
TEAMS_MAX_BYTES = 28_000  # Teams refuses larger messages (413), the stricter reading of its 28 KB


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    status: int | str  # the answer, or "timeout"/"reset"
    at: float = field(default_factory=time.monotonic)

    def json(self):
        return json.loads(self.body)


class TargetServer:
    def __init__(self, *, delay: float = 0.0, timeout_hold: float = 1.0):
        self.delay = delay
        self.timeout_hold = timeout_hold  # how long a "timeout" fault holds the request
        self.requests: list[Recorded] = []
        self.statuses: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
        self._pats: set[str] = set()
        self._bearers: set[str] = set()
        self._plans: dict[str, list] = {}
        self._random: dict[str, tuple[float, list, random.Random]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> "TargetServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.targets = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = serve_in_thread(self._httpd, "http-targets")
        return self

    def stop(self) -> None:
        stop_server(self._httpd, getattr(self, "_thread", None))
        self._httpd = self._thread = None

    def __enter__(self) -> "TargetServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # configuration --------------------------------------------------------------------------------
    def allow_pat(self, pat: str) -> None:
        self._pats.add(pat)

    def allow_bearer(self, token: str) -> None:
        self._bearers.add(token)

    def fail(self, prefix: str, *answers) -> None:
        """Answer the next requests under ``prefix`` with ``answers`` in order: an int status, a
        ``(status, {"Retry-After": "1"})`` tuple, ``"timeout"`` or ``"reset"``; then normally."""
        with self._lock:
            self._plans.setdefault(prefix, []).extend(answers)

    def fail_randomly(self, prefix: str, rate: float, answers=(500, 503, (429, {"Retry-After": "0"}), "reset"),
                      seed: int = 1) -> None:
        with self._lock:
            self._random[prefix] = (rate, list(answers), random.Random(seed))

    def clear_faults(self) -> None:
        with self._lock:
            self._plans.clear()
            self._random.clear()

    # queries --------------------------------------------------------------------------------------
    def received(self, prefix: str = "/", method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix) and (method is None or r.method == method)]

    def delivered(self, prefix: str = "/", method: str = "POST") -> list[Recorded]:
        return [r for r in self.received(prefix, method) if isinstance(r.status, int) and 200 <= r.status < 300]

    def ado_statuses(self, org: str, project: str, repo: str, sha: str) -> list[dict]:
        with self._lock:
            return list(self.statuses[(org, project, repo, sha)])

    # internals ------------------------------------------------------------------------------------
    def _fault(self, path: str):
        with self._lock:
            for prefix, plan in self._plans.items():
                if path.startswith(prefix) and plan:
                    return plan.pop(0)
            for prefix, (rate, answers, rng) in self._random.items():
                if path.startswith(prefix) and rng.random() < rate:
                    return rng.choice(answers)
        return None

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                _, _, password = base64.b64decode(value).decode().partition(":")
            except Exception:
                return False
            return password in self._pats
        return scheme.lower() == "bearer" and value in self._bearers

    def _ado(self, method: str, parts: list[str], query: dict, headers: dict, body: bytes):
        # parts: org, project, _apis, git, repositories, repo, commits, sha, statuses
        org, project, repo, sha = parts[0], parts[1], parts[5], parts[7]
        if not self._authorized(headers.get("authorization")):
            return 401, {"message": "TF400813: The user is not authorized to access this resource."}
        if query.get("api-version") != "7.1":
            return 400, {"message": f"api-version {query.get('api-version')!r} is not supported here"}
        key = (org, project, repo, sha.lower())
        if method == "GET":
            with self._lock:
                value = list(self.statuses[key])
            return 200, {"count": len(value), "value": value}
        try:
            data = json.loads(body)
        except ValueError:
            return 400, {"message": "body is not JSON"}
        ctx = data.get("context") or {}
        if data.get("state") not in ADO_STATES or not ctx.get("name"):
            return 400, {"message": "state must be a GitStatusState and context.name is required"}
        status = {"id": 0, "state": data["state"], "description": data.get("description", ""),
                  "context": {"name": ctx["name"], "genre": ctx.get("genre")},
                  "creationDate": datetime.now(timezone.utc).isoformat(), "createdBy": {"displayName": "flux"}}
        if data.get("targetUrl"):
            status["targetUrl"] = data["targetUrl"]
        with self._lock:
            status["id"] = len(self.statuses[key]) + 1
            self.statuses[key].insert(0, status)  # newest first, as the service lists them
        return 201, status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    targets: TargetServer

    def handle_error(self, request, client_address):
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TargetTestServer/1.0"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _serve(self) -> None:
        srv: TargetServer = self.server.targets
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fault = srv._fault(split.path)
        if srv.delay:
            time.sleep(srv.delay)
        if fault == "timeout":
            srv._record(Recorded(self.command, split.path, query, headers, body, "timeout"))
            time.sleep(srv.timeout_hold)
            self.close_connection = True
            return
        if fault == "reset":
            srv._record(Recorded(self.command, split.path, query, headers, body, "reset"))
            self.close_connection = True
            return
        if fault is not None:
            status, extra = fault if isinstance(fault, tuple) else (fault, {})
            payload, ctype = json.dumps({"message": f"injected {status}"}).encode(), "application/json"
        else:
            extra = {}
            parts = [p for p in split.path.split("/") if p]
            if len(parts) == 9 and parts[2:5] == ["_apis", "git", "repositories"] and parts[6] == "commits" \
                    and parts[8] == "statuses" and self.command in ("GET", "POST"):
                status, answer = srv._ado(self.command, parts, query, headers, body)
                payload, ctype = json.dumps(answer).encode(), "application/json"
            elif self.command == "POST" and split.path.startswith("/slack/"):
                status, payload, ctype = 200, b"ok", "text/plain"
            elif self.command == "POST" and split.path.startswith("/teams/"):
                if len(body) > TEAMS_MAX_BYTES:  # as Teams: "The message size limit is 28 KB"
                    status, payload, ctype = 413, b'{"error": "MessageSizeTooBig"}', "application/json"
                else:
                    status, payload, ctype = 202, b"", "text/plain"
            elif self.command == "POST":
                status, payload, ctype = 200, b"", "text/plain"
            else:
                status, payload, ctype = 404, b"{}", "application/json"
        srv._record(Recorded(self.command, split.path, query, headers, body, status))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", str(uuid.uuid4()))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = _serve


@pytest.fixture
def http_targets():
    """A fresh started :class:`TargetServer` (no delay; "timeout" faults hold 2 s, past the 1.5 s
    client timeout the forwarder tests configure)."""
    with TargetServer(timeout_hold=2.0) as server:
        yield server
