"""Git smart-HTTP test peer with Azure DevOps' URL layout and authentication.

``AzureDevOpsGitServer`` wraps Debian's ``git http-backend`` CGI behind a ``ThreadingHTTPServer``
on 127.0.0.1 (random port, daemon thread), as measured in ``docs/test-peers.md`` §3:

* URLs: ``/{org}/{project}/_git/{repo}`` + ``/info/refs``, ``/git-upload-pack``,
  ``/git-receive-pack``; the bare repository lives at ``root/{org}/{project}/{repo}``.
* Auth like Azure DevOps: HTTP Basic with any user name and the PAT as password, or
  ``Authorization: Bearer <token>`` for a token in ``bearer_tokens``; otherwise ``401`` with
  ``WWW-Authenticate: Basic realm="..."``. Unknown repository: ``404`` with a TF401019 text.
* Non-fast-forward pushes are refused (``receive.denyNonFastForwards``), as Azure DevOps does
  for users without the "Force push" permission.
* HTTPS when a ``trustme.CA`` is given (server certificate for 127.0.0.1; ``ca_file`` is the CA PEM).

Module-level pytest fixtures: ``git_pat``, ``ado_git_server``, ``git_tls_ca``, ``ado_git_server_tls``,
``git_allowed_local`` (``GIT_ALLOWED_HOSTS=127.0.0.1``, used by both servers) and ``entra_git_hosts``
(``GIT_BEARER_TOKEN_HOSTS=127.0.0.1``, for tests that send an Entra ID token to the local peer).
Helpers independent of the code under test (they run the ``git`` binary):
``read_tree(bare, branch)`` and ``log(bare, branch)`` for assertions, ``seed(bare, files)`` to prepare a remote.
"""

from __future__ import annotations

import base64
import os
import pathlib
import re
import secrets
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.peers._serving import serve_in_thread, stop_server

GIT = shutil.which("git") or "/usr/bin/git"
REALM = "https://dev.azure.com/"
_ROUTE = re.compile(
    r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_git/(?P<repo>[^/]+)"
    r"(?P<service>/info/refs|/git-upload-pack|/git-receive-pack)$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


class RequestRecord(NamedTuple):
    """One request as the server saw it. ``path`` is the full request target (with the query);
    ``user`` is the Basic user name, ``"<bearer>"`` for a bearer token, or None when refused
    before authentication succeeded."""

    method: str
    path: str
    status: int
    user: str | None


def _git_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": os.devnull,
        "LANG": "C",
    }


def _check_name(kind: str, value: str) -> None:
    if not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"invalid {kind} name {value!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    # -- request plumbing -------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, user=None):
        self.server.owner._record(self.command, self.path, status, user)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authenticate(self) -> str | None:
        owner = self.server.owner
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            if owner.pat and secrets.compare_digest(password, owner.pat):
                return user or "git"
            return None
        if scheme.lower() == "bearer":
            token = value.strip()
            if token and token in owner.bearer_tokens:
                return "<bearer>"
        return None

    def _handle(self):
        owner = self.server.owner
        body = self._read_body() if self.command == "POST" else b""
        target = urlsplit(self.path)
        user = self._authenticate()
        if user is None:
            self._send(
                401,
                b"TF400813: The user is not authorized to access this resource.\n",
                {"WWW-Authenticate": f'Basic realm="{REALM}"', "Content-Type": "text/plain"},
            )
            return
        m = _ROUTE.match(unquote(target.path))
        if not m:
            self._send(404, b"Not Found\n", {"Content-Type": "text/plain"}, user)
            return
        org, project, repo, service = m.group("org", "project", "repo", "service")
        bare = owner.bare_path(org, project, repo)
        if not (bare / "HEAD").is_file():
            text = (
                f"TF401019: The Git repository with name or identifier {repo} does not exist "
                "or you do not have permissions for the operation you are attempting.\n"
            )
            self._send(404, text.encode(), {"Content-Type": "text/plain"}, user)
            return
        env = _git_env()
        env.update(
            {
                "GIT_PROJECT_ROOT": str(owner.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": f"/{org}/{project}/{repo}{service}",
                "QUERY_STRING": target.query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": user,
                "REMOTE_ADDR": self.client_address[0],
            }
        )
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        proc = subprocess.run(
            [GIT, "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        out = proc.stdout
        sep = out.find(b"\r\n\r\n")
        sep_len = 4
        if sep < 0 or (0 <= out.find(b"\n\n") < sep):
            sep, sep_len = out.find(b"\n\n"), 2
        if sep < 0:
            msg = b"git http-backend failed: " + proc.stderr[-500:]
            self._send(500, msg, {"Content-Type": "text/plain"}, user)
            return
        status = 200
        headers: dict[str, str] = {}
        for line in out[:sep].decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        self._send(status, out[sep + sep_len :], headers, user)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "AzureDevOpsGitServer"

    def handle_error(self, request, client_address):
        # Clients (dulwich after a 401, test teardown) drop keep-alive sockets; that is not a failure.
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class AzureDevOpsGitServer:
    """A started-on-demand git smart-HTTP server; use as a context manager.

    Attributes settable by tests: ``pat`` (the accepted Basic password; rotate it by assignment)
    and ``bearer_tokens`` (a set of accepted bearer tokens). ``requests`` lists a
    ``RequestRecord(method, path, status, user)`` per request, in arrival order.
    """

    def __init__(self, root: pathlib.Path, pat: str, *, tls_ca=None):
        self.root = pathlib.Path(root)
        self.pat = pat
        self.bearer_tokens: set[str] = set()
        self.requests: list[RequestRecord] = []
        self.tls_ca = tls_ca
        self.ca_file: str | None = None
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "AzureDevOpsGitServer":
        self.root.mkdir(parents=True, exist_ok=True)
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        if self.tls_ca is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_ca.issue_cert("127.0.0.1").configure_cert(ctx)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
            ca_path = self.root / "_tls" / "ca.pem"
            ca_path.parent.mkdir(exist_ok=True)
            self.tls_ca.cert_pem.write_to_path(str(ca_path))
            self.ca_file = str(ca_path)
        self._httpd = httpd
        self._thread = serve_in_thread(httpd, f"ado-git-server:{httpd.server_address[1]}")
        return self

    def stop(self) -> None:
        stop_server(self._httpd, self._thread)
        self._httpd = self._thread = None

    def __enter__(self) -> "AzureDevOpsGitServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- repositories -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def url(self, org: str, project: str, repo: str) -> str:
        scheme = "https" if self.tls_ca is not None else "http"
        path = "/".join(quote(part, safe="") for part in (org, project, "_git", repo))
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def bare_path(self, org: str, project: str, repo: str) -> pathlib.Path:
        for kind, value in (("organization", org), ("project", project), ("repository", repo)):
            _check_name(kind, value)
        return self.root / org / project / repo

    def create_repo(self, org: str, project: str, repo: str) -> pathlib.Path:
        """Create an empty bare repository (HEAD -> refs/heads/main) and return its path."""
        path = self.bare_path(org, project, repo)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [GIT, "init", "--bare", "-q", "--initial-branch=main", str(path)],
            env=_git_env(), check=True, capture_output=True,
        )
        subprocess.run(
            [GIT, "--git-dir", str(path), "config", "receive.denyNonFastForwards", "true"],
            env=_git_env(), check=True, capture_output=True,
        )
        return path

    def _record(self, method: str, path: str, status: int, user: str | None) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, status, user))


# -- assertion helpers (git binary; independent of shared.ports.git) -----------------------------------
def _git(bare: pathlib.Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(
        [GIT, "--git-dir", str(bare), *args],
        input=input, env=_git_env(), capture_output=True, check=True,
    )
    return proc.stdout


def _branch_sha(bare: pathlib.Path, branch: str) -> str | None:
    proc = subprocess.run(
        [GIT, "--git-dir", str(bare), "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}"],
        env=_git_env(), capture_output=True, check=False,
    )
    return proc.stdout.decode().strip() or None


def _cat_batch(bare: pathlib.Path, names: list[str]) -> list[bytes]:
    """Contents of the named objects, via one ``git cat-file --batch``."""
    if not names:
        return []
    out = _git(bare, "cat-file", "--batch", input="".join(n + "\n" for n in names).encode())
    contents, pos = [], 0
    for _ in names:
        eol = out.index(b"\n", pos)
        size = int(out[pos:eol].split()[2])
        contents.append(out[eol + 1 : eol + 1 + size])
        pos = eol + 1 + size + 1
    return contents


def read_tree(bare_path: pathlib.Path, branch: str = "main") -> dict[str, bytes]:
    """Files at the head of ``branch``: repository-relative path (``/``-separated) → bytes.
    ``{}`` when the branch does not exist."""
    sha = _branch_sha(pathlib.Path(bare_path), branch)
    if sha is None:
        return {}
    listing = _git(pathlib.Path(bare_path), "ls-tree", "-r", "-z", "--full-tree", sha)
    paths, blobs = [], []
    for entry in filter(None, listing.split(b"\0")):
        meta, _, path = entry.partition(b"\t")
        _mode, kind, obj = meta.split()
        if kind == b"blob":
            paths.append(path.decode("utf-8"))
            blobs.append(obj.decode())
    return dict(zip(paths, _cat_batch(pathlib.Path(bare_path), blobs)))


def log(bare_path: pathlib.Path, branch: str = "main") -> list[dict]:
    """Commits reachable from ``branch``, newest first, as dicts with ``sha``, ``message``
    (exactly as stored), ``author`` and ``committer`` (the identity without the timestamp,
    e.g. ``"Flux <>"``) and ``parents`` (list of shas). ``[]`` when the branch does not exist."""
    bare = pathlib.Path(bare_path)
    sha = _branch_sha(bare, branch)
    if sha is None:
        return []
    shas = _git(bare, "rev-list", sha).decode().split()
    result = []
    for sha, raw in zip(shas, _cat_batch(bare, shas)):
        header, _, message = raw.partition(b"\n\n")
        entry: dict = {"sha": sha, "message": message.decode("utf-8"), "parents": []}
        for line in header.decode("utf-8").splitlines():
            key, _, value = line.partition(" ")
            if key in ("author", "committer"):
                entry[key] = value.rsplit(" ", 2)[0]
            elif key == "parent":
                entry["parents"].append(value)
        result.append(entry)
    return result


class Symlink(NamedTuple):
    """A symbolic link to commit with :func:`seed` (git mode 120000): ``target`` as ``ln -s`` takes it."""

    target: str


def seed(
    bare_path: pathlib.Path,
    files: dict[str, "bytes | Symlink | None"],
    *,
    branch: str = "main",
    message: str = "seed",
    author: str = "Seed <seed@example.com>",
    start_from: str | None = None,
) -> str:
    """Commit ``files`` (path → bytes, :class:`Symlink`, or None to delete) on top of ``branch`` directly in the bare
    repository (no HTTP, so it does not show in ``requests``). An absent branch is created, as an
    orphan or, with ``start_from``, from the head of that branch.
    Returns the new commit sha. Use it to prepare a remote or to move it behind a clone's back."""
    import tempfile

    bare = pathlib.Path(bare_path)
    name, _, email = author.partition(" <")
    env = _git_env()
    env.update(
        GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email.rstrip(">"),
        GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email.rstrip(">"),
    )
    parent = _branch_sha(bare, branch) or (_branch_sha(bare, start_from) if start_from else None)
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = os.path.join(tmp, "index")

        def run(*args: str, input: bytes | None = None) -> str:
            return subprocess.run(
                [GIT, "--git-dir", str(bare), *args],
                input=input, env=env, capture_output=True, check=True,
            ).stdout.decode().strip()

        if parent:
            run("read-tree", parent)
        for path, data in files.items():
            if data is None:
                run("update-index", "--force-remove", "--", path)
            elif isinstance(data, Symlink):
                blob = run("hash-object", "-w", "--stdin", input=data.target.encode())
                run("update-index", "--add", "--cacheinfo", f"120000,{blob},{path}")
            else:
                blob = run("hash-object", "-w", "--stdin", input=data)
                run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        tree = run("write-tree")
        sha = run("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)
        run("update-ref", f"refs/heads/{branch}", sha)
    return sha


# -- pytest fixtures ---------------------------------------------------------------------------
@pytest.fixture
def git_pat() -> str:
    """A random PAT-like token accepted by ``ado_git_server``."""
    return secrets.token_urlsafe(32)


@pytest.fixture
def git_allowed_local(monkeypatch):
    """App setting ``GIT_ALLOWED_HOSTS`` lists ``127.0.0.1``, where the local git peers listen, as an
    operator lists an Azure DevOps Server host (an IP address must be listed exactly as written)."""
    monkeypatch.setenv("GIT_ALLOWED_HOSTS", "127.0.0.1")


@pytest.fixture
def entra_git_hosts(git_allowed_local, monkeypatch):
    """App setting ``GIT_BEARER_TOKEN_HOSTS`` lists ``127.0.0.1`` too: the local git peer stands in for
    Azure DevOps Services, which takes the Function's Entra ID token."""
    monkeypatch.setenv("GIT_BEARER_TOKEN_HOSTS", "127.0.0.1")


@pytest.fixture
def ado_git_server(tmp_path, git_pat, git_allowed_local):
    """A started plain-HTTP ``AzureDevOpsGitServer`` under ``tmp_path`` accepting ``git_pat``
    (``127.0.0.1`` listed in ``GIT_ALLOWED_HOSTS``)."""
    with AzureDevOpsGitServer(tmp_path / "ado-git", git_pat) as server:
        yield server


@pytest.fixture(scope="session")
def git_tls_ca():
    """A trustme CA for the HTTPS git server (session-scoped: key generation costs ~20 ms)."""
    import trustme

    return trustme.CA()


@pytest.fixture
def ado_git_server_tls(tmp_path, git_pat, git_tls_ca, git_allowed_local):
    """Like ``ado_git_server`` but over HTTPS; ``server.ca_file`` is the CA PEM to trust."""
    with AzureDevOpsGitServer(tmp_path / "ado-git-tls", git_pat, tls_ca=git_tls_ca) as server:
        yield server
