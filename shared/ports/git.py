"""The git repository port: a local working clone of one branch, over smart HTTP(S) or SSH, on dulwich.

What Flux does and this module mirrors (see ``docs/flux-bootstrap-spec.md``):

* Clone (§2.2 step 8; ``fluxcd/pkg@git/v0.52.0:git/gogit/clone.go``): clone ``--branch`` with one
  retry after 2 s. An **empty remote** is initialised locally with ``HEAD → refs/heads/<branch>`` and
  the remote ``origin``; a **branch missing in a non-empty repository** fails (``BranchNotFound``).
* Commit (§2.2 step 10; ``fluxcd/pkg@git/v0.52.0:git/gogit/client.go`` ``Commit``): stage every
  path the worktree status reports (adds, modifications, deletions); author == committer, default
  ``Flux <>`` (empty e-mail); nothing changed → no commit (go-git's ``ErrNoStagedFiles``).
* Push (§2.2 step 10, §2.4 step 20): push ``HEAD`` to ``refs/heads/<branch>``; a remote that moved
  gives ``NonFastForward`` so the caller can re-clone and rerun its step.
* Auth (§2.1 step 6): https with HTTP Basic (username, default ``git``, + PAT as password) or a bearer
  token (``Authorization: Bearer``), plus an optional CA bundle; ``http://`` refused unless
  ``allow_insecure_http``. User info in the URL (``https://org@dev.azure.com/...``) is dropped (§2.1
  step 7); credentials only ever come from ``GitAuth``. ``ssh://user@host[:port]/path``: the
  private key of ``GitAuth.ssh`` and the host key pinned there, through
  :class:`shared.ports.ssh.PinnedSSHVendor` (paramiko; never SHA-1 ``ssh-rsa``).
* Destinations (:mod:`shared.trust`): every URL passes :meth:`shared.trust.GitPolicy.destination`
  (``GIT_ALLOWED_HOSTS``; a bearer token only to ``GIT_BEARER_TOKEN_HOSTS``) before any connection,
  and every connection (redirects included) is checked by :meth:`shared.trust.GitPolicy.check_peer`
  on the address actually connected, before a byte is sent on it. HTTP proxies are not used: the
  peer check needs the real peer.

Secrets never appear in exception messages or reprs: URLs are stripped of user info before dulwich
sees them, credentials travel separately (Basic via dulwich's ``username``/``password``, bearer via an
in-memory ``http.extraHeader`` config, never written to ``.git/config``), dulwich errors are re-raised
as ours without chaining (``from None``), and any echo of a credential in a server message is masked.

dulwich is imported inside functions, not at module import (Functions cold start).
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import posixpath
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from shared import errors

log = logging.getLogger(__name__)

#: Delay before the one clone retry on a connection failure, seconds (Flux: ``retry(1, 2*time.Second, ...)``).
CLONE_RETRY_DELAY_S = 2.0
#: Connect/read timeout of every HTTP request to the git server, seconds.
HTTP_TIMEOUT_S = 60.0
#: Default commit identity, as ``flux bootstrap`` (``--author-name Flux --author-email ""``).
DEFAULT_AUTHOR = "Flux <>"
#: Largest worktree file :meth:`Repository.read_file` reads, bytes (the v2.9 gotk-components.yaml
#: is 320 KiB). The same as :data:`shared.safe_yaml.REPOSITORY`'s byte limit.
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class GitAuth:
    """Credentials for one git server.

    ``password`` (a PAT) is sent as the HTTP Basic password with ``username`` (Azure DevOps accepts any
    user name). ``bearer_token`` (an Entra ID access token) is sent as ``Authorization: Bearer`` and
    wins over ``password`` when both are set. ``ca_file`` is a PEM CA bundle path trusted for https
    instead of the system store; ``ca_pem`` is PEM text trusted besides the default CAs, as go-git
    adds Flux's ``--ca-file`` bundle to the system pool (an Azure DevOps Server behind a private CA).
    Secrets are excluded from ``repr``.
    """

    username: str = "git"
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    ca_pem: str | None = field(default=None, repr=False)
    #: For ``ssh://`` URLs: the key, pinned host key and host key algorithms
    #: (:class:`shared.ports.ssh.SSHIdentity`); the URL's user name is the SSH user.
    ssh: object | None = field(default=None, repr=False)
    #: A ``time.monotonic()`` value by which the caller must be done (a run's ``--timeout``), or None:
    #: every HTTP request is then capped at min(:data:`HTTP_TIMEOUT_S`, what is left of it), is not
    #: retried after a read timeout, and none starts once it has passed (:class:`GitTimeout`).
    deadline: float | None = None

    def _secrets(self) -> list[str]:
        return [s for s in (self.password, self.bearer_token) if s]


class GitError(errors.UpstreamError):
    """A git operation failed (transport, protocol, server-side rejection, local repository)."""

    #: True when the failure was a connection-level one worth one retry (refused, reset, timeout).
    transient = False


class GitTimeout(GitError, errors.DeadlineExceeded):
    """The caller's deadline (:attr:`GitAuth.deadline`) passed before the git server answered."""

    transient = False


#: A connection-level failure this close to the deadline is the deadline's cap, seconds.
_DEADLINE_SLACK_S = 0.05


def _left(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline)."""
    return None if deadline is None else deadline - time.monotonic()


class GitAuthError(errors.AuthenticationFailed):
    """The git server rejected the credentials (HTTP 401 or 403)."""


class BranchNotFound(errors.NotFound):
    """The requested branch does not exist in a non-empty repository."""


class RepositoryNotFound(errors.NotFound):
    """The git server answered 404 for the repository URL (unknown org/project/repo, or no read access)."""


class SymlinkRefused(errors.Conflict):
    """A path the app reads or writes in the clone is, or goes through, a symbolic link (or a link
    the kustomization walk may not resolve). ``path`` is the repository path (``/``-separated)."""

    def __init__(self, path: str, why: str = "is a symbolic link"):
        self.path = path
        super().__init__(f"{path} {why}; the app does not follow symbolic links in the repository "
                         "(replace it with the folder or file itself); nothing was written")


class FileTooLarge(errors.Conflict):
    """A repository file is larger than the app reads (``size`` and ``limit`` in bytes)."""

    def __init__(self, path: str, size: int, limit: int):
        self.path, self.size, self.limit = path, size, limit
        super().__init__(f"{path} is {size} bytes, more than the {limit} bytes the app reads from a repository")


#: what a server says when the branch moved under a push: git's receive-pack (``non-fast-forward``,
#: ``fetch first``; ``failed to update ref``/``cannot lock ref`` when another push updated it between
#: the advertisement and the update) and Azure DevOps (``TF401028: The reference ... has already been
#: updated by another client``)
_MOVED = ("non-fast-forward", "fetch first", "failed to update ref", "cannot lock ref", "TF401028")


class NonFastForward(GitError):
    """The push was rejected because the remote branch moved (not an ancestor of our HEAD)."""

    status = 409
    code = "Conflict"


# -- URL and credential handling ----------------------------------------------------------------


def _clean_url(url: str, allow_insecure_http: bool, auth: "GitAuth | None" = None, policy=None) -> str:
    """Check ``url`` against the destination policy (:meth:`shared.trust.GitPolicy.destination`,
    from the app settings unless ``policy`` is given) and return it without user info.

    Raises ``InvalidInput("url", ...)`` (a :class:`shared.trust.DestinationRefused`) for a bad or
    refused URL, ``http://`` without ``allow_insecure_http``, or a bearer token for a host outside
    ``GIT_BEARER_TOKEN_HOSTS``."""
    from shared.trust import GitPolicy

    policy = policy or GitPolicy.from_settings()
    bearer = bool(auth is not None and auth.bearer_token)
    return policy.destination(url, allow_insecure_http=allow_insecure_http, bearer=bearer).url.url


def _mask(text: str, auth: GitAuth) -> str:
    for secret in auth._secrets():
        text = text.replace(secret, "***")
    return text


def _checked_pool_manager(config, base_url: str, policy, ca_pem: str | None = None, deadline: float | None = None):
    """dulwich's urllib3 pool manager (CA bundle, user agent, extra headers from ``config``) whose
    connections check their peer with ``policy.check_peer`` right after connecting, before TLS or
    any request byte; proxies are never used. ``ca_pem`` is trusted besides the CA bundle. With a
    ``deadline`` (monotonic seconds) each request's connect and read timeouts are min(dulwich's,
    the time left), a read timeout is not retried (urllib3 would retry a GET three times), and a
    request that would start after it raises :class:`GitTimeout`."""
    import urllib3
    from dulwich.client import default_urllib3_manager
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def checked(base):
        class Checked(base):
            def _new_conn(self):
                port = self.port or (443 if isinstance(self, HTTPSConnection) else 80)
                policy.check_connection_host(self.host, port)  # before connecting: a redirect stays on the list
                sock = super()._new_conn()
                try:
                    policy.check_peer(self.host, port, sock.getpeername()[0])  # the address connected
                except BaseException:
                    sock.close()
                    raise
                return sock

        return Checked

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = checked(HTTPConnection)

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = checked(HTTPSConnection)

    class Manager(urllib3.PoolManager):
        def urlopen(self, method, url, redirect=True, **kw):
            left = _left(deadline)
            if left is not None:
                if left <= 0:
                    raise GitTimeout(f"no time left for the request to {base_url} before the deadline")
                cap = min(HTTP_TIMEOUT_S, left)
                kw["timeout"] = urllib3.Timeout(connect=cap, read=cap)
                kw["retries"] = urllib3.Retry(total=3, read=0, redirect=None if redirect else False)
            response = super().urlopen(method, url, redirect=redirect, **kw)
            self.responses.append(response)
            return response

        def close(self) -> None:
            """Close every response and connection. dulwich (1.2.21) raises on a 401, 404 or other
            status without releasing its unread response (``preload_content=False``), so that connection
            is in no pool for ``clear()`` to close: a PAT check that failed left its socket to the GC."""
            responses, self.responses = self.responses, []
            for response in responses:
                try:
                    response.close()
                except Exception:  # noqa: BLE001 - closing; nothing to report
                    pass
            self.clear()

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.responses: list = []
            self.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
            if ca_pem:  # the system CAs and ca_pem, as go-git appends a CA bundle to the system pool
                import ssl

                context = ssl.create_default_context()
                context.load_verify_locations(cadata=ca_pem)
                self.connection_pool_kw["ssl_context"] = context

    def no_proxy(proxy_url, proxy_headers=None, **kwargs):
        return Manager(**kwargs)

    return default_urllib3_manager(config, pool_manager_cls=Manager, proxy_manager_cls=no_proxy,
                                   base_url=base_url, timeout=HTTP_TIMEOUT_S)


@contextmanager
def _client(clean_url: str, auth: GitAuth, policy=None):
    """A dulwich client for ``clean_url``: yields ``(client, path)``, then closes its
    connections (dulwich 1.2.21's ``Urllib3HttpGitClient.close()`` is a no-op, so the urllib3
    pool's responses and connections are closed here). Its connections are checked by ``policy`` (:class:`shared.trust.GitPolicy`,
    from the app settings by default). ``ssh://``: an SSH client on ``auth.ssh`` (each command is
    its own connection, closed with it)."""
    from dulwich.client import HttpGitClient
    from dulwich.config import ConfigDict

    from shared.trust import GitPolicy

    policy = policy or GitPolicy.from_settings()
    parts = urlsplit(clean_url)
    if parts.scheme == "ssh":
        from dulwich.client import SSHGitClient

        from shared.ports.ssh import PinnedSSHVendor

        if auth.ssh is None:
            raise errors.InvalidInput("url", "an ssh:// URL needs an SSH key (privateKeySecret)")
        from shared.ports.ssh import SSH_TIMEOUT_S

        left = _left(auth.deadline)
        if left is not None and left <= 0:
            raise GitTimeout(f"no time left to connect to {clean_url} before the deadline")
        client = SSHGitClient(parts.hostname, port=parts.port or 22, username=parts.username or auth.username or "git",
                              vendor=PinnedSSHVendor(auth.ssh, policy, timeout=SSH_TIMEOUT_S if left is None
                                                     else min(SSH_TIMEOUT_S, left)))
        yield client, parts.path
        return

    config = ConfigDict()
    if auth.ca_file:
        if not os.path.isfile(auth.ca_file):
            raise errors.InvalidInput("ca_file", f"CA bundle {auth.ca_file!r} does not exist")
        config.set((b"http",), b"sslCAInfo", os.fsencode(auth.ca_file))
    username = password = None
    if auth.bearer_token:
        if any(c in auth.bearer_token for c in "\r\n"):
            raise errors.InvalidInput("bearer_token", "contains a line break")
        config.set((b"http",), b"extraHeader", b"Authorization: Bearer " + auth.bearer_token.encode())
    elif auth.password is not None:
        username, password = auth.username or "git", auth.password
    base = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    client = HttpGitClient(
        base, config=config, username=username, password=password, timeout=HTTP_TIMEOUT_S,
        pool_manager=_checked_pool_manager(config, base, policy, auth.ca_pem, auth.deadline),
    )
    try:
        yield client, parts.path
    finally:
        client.pool_manager.close()


def _is_transient(exc: BaseException) -> bool:
    import urllib3.exceptions as u3

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, u3.SSLError | u3.ProxyError) or "CERTIFICATE" in str(exc).upper():
            return False
        if isinstance(exc, u3.MaxRetryError) and exc.reason is not None:
            exc = exc.reason
            continue
        if isinstance(exc, ConnectionError | TimeoutError | u3.NewConnectionError | u3.ProtocolError | u3.TimeoutError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@contextmanager
def _translate(clean_url: str, auth: GitAuth, action: str) -> Iterator[None]:
    """Re-raise dulwich/urllib3/OS errors as this module's errors, masked and unchained."""
    from dulwich.client import HTTPProxyUnauthorized, HTTPUnauthorized
    from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

    try:
        yield
    except (errors.FluxOpsError, KeyboardInterrupt):
        raise
    except HTTPUnauthorized:
        raise GitAuthError(f"git server rejected the credentials for {clean_url} (HTTP 401)") from None
    except HTTPProxyUnauthorized:
        raise GitError(f"{action} {clean_url}: the HTTP proxy requires authentication (HTTP 407)") from None
    except NotGitRepository:
        raise RepositoryNotFound(f"git repository {clean_url} not found (HTTP 404)") from None
    except (GitProtocolError, HangupException, OSError) as exc:
        text = _mask(str(exc), auth)
        if "TF401019" in text:  # Azure DevOps over SSH: no such repository, or no access to it
            raise RepositoryNotFound(f"git repository {clean_url} not found: {text.strip()}") from None
        if "unexpected http resp 403" in text:
            raise GitAuthError(f"git server rejected the credentials for {clean_url} (HTTP 403)") from None
        err = GitError(f"{action} {clean_url} failed: {type(exc).__name__}: {text}")
        err.transient = _is_transient(exc)
        raise err from None
    except Exception as exc:  # anything else dulwich may raise: still never chain it
        raise GitError(
            f"{action} {clean_url} failed: {type(exc).__name__}: {_mask(str(exc), auth)}"
        ) from None


def _check_branch(branch: str) -> bytes:
    from dulwich.refs import check_ref_format

    if not isinstance(branch, str) or not branch:
        raise errors.InvalidInput("branch", "must be a non-empty branch name")
    ref = b"refs/heads/" + branch.encode("utf-8")
    if not check_ref_format(ref):
        raise errors.InvalidInput("branch", f"{branch!r} is not a valid branch name")
    return ref


# -- the port ---------------------------------------------------------------------------------------


class Repository:
    """A local working clone of one branch (create it with ``Repository.clone``).

    ``url`` is the remote URL without user info, ``branch`` the branch name, ``path`` the worktree.
    Paths given to the file methods are ``/``-separated and relative to the worktree root; absolute
    paths, ``..`` escapes and ``.git`` are refused with ``InvalidInput("path", ...)``.
    """

    def __init__(self, repo, url: str, branch: str, auth: GitAuth, policy=None):
        self._repo = repo
        self._auth = auth
        self._policy = policy
        self.url = url
        self.branch = branch
        self.path = pathlib.Path(repo.path)
        self._ref = _check_branch(branch)

    def __repr__(self) -> str:
        return f"Repository(url={self.url!r}, branch={self.branch!r}, path={str(self.path)!r})"

    def close(self) -> None:
        """Release open pack files. The worktree stays on disk."""
        self._repo.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- clone --------------------------------------------------------------------------------
    @classmethod
    def clone(
        cls,
        url: str,
        branch: str,
        auth: GitAuth,
        workdir: str | os.PathLike,
        *,
        allow_insecure_http: bool = False,
        policy=None,
    ) -> "Repository":
        """Clone ``branch`` of ``url`` into ``workdir`` (created; must be absent or empty).

        Full history of that one branch (no shallow clone), checked out. Empty remote: an empty local
        repository with ``HEAD → refs/heads/<branch>`` and remote ``origin``, as go-git in Flux.
        One retry after ``CLONE_RETRY_DELAY_S`` on a connection-level failure.

        ``policy`` (:class:`shared.trust.GitPolicy`; default: from the app settings) decides where
        the URL may go; every connection, of the clone and of later pushes, is checked against it.

        Raises ``InvalidInput`` (url/branch/ca_file; a refused destination), ``GitAuthError`` (401/403), ``RepositoryNotFound``
        (404), ``BranchNotFound`` (branch missing in a non-empty repository), ``GitError`` (other).
        """
        from shared.trust import GitPolicy

        policy = policy or GitPolicy.from_settings()
        clean = _clean_url(url, allow_insecure_http, auth, policy)
        ref = _check_branch(branch)
        workdir = pathlib.Path(workdir)
        if workdir.exists() and any(workdir.iterdir()):
            raise ValueError(f"clone target {workdir} is not empty")
        for attempt in (1, 2):
            try:
                return cls._clone_once(clean, branch, ref, auth, workdir, policy)
            except GitError as exc:
                _wipe(workdir)
                left = _left(auth.deadline)
                if left is not None and left <= _DEADLINE_SLACK_S and exc.transient:  # capped at the deadline
                    raise GitTimeout(f"git clone of {clean} got no answer before the deadline") from None
                if attempt == 1 and exc.transient and (left is None or left > CLONE_RETRY_DELAY_S):
                    log.warning("git clone of %s failed (%s); retrying in %.0f s", clean, exc, CLONE_RETRY_DELAY_S)
                    time.sleep(CLONE_RETRY_DELAY_S)
                    continue
                raise
            except BaseException:
                _wipe(workdir)
                raise
        raise AssertionError("unreachable")

    @classmethod
    def _clone_once(cls, clean: str, branch: str, ref: bytes, auth: GitAuth, workdir: pathlib.Path, policy) -> "Repository":
        from dulwich.repo import Repo

        workdir.mkdir(parents=True, exist_ok=True)
        repo = Repo.init(str(workdir))
        try:
            config = repo.get_config()
            config.set((b"remote", b"origin"), b"url", clean.encode("utf-8"))
            config.set((b"remote", b"origin"), b"fetch", b"+refs/heads/*:refs/remotes/origin/*")
            config.set((b"branch", branch.encode()), b"remote", b"origin")
            config.set((b"branch", branch.encode()), b"merge", ref)
            config.write_to_path()
            repo.refs.set_symbolic_ref(b"HEAD", ref)

            def determine_wants(refs, depth=None):
                sha = refs.get(ref)
                return [sha] if sha is not None and sha not in repo.object_store else []

            with _client(clean, auth, policy) as (client, path), _translate(clean, auth, "git clone of"):
                result = client.fetch(path, repo, determine_wants=determine_wants)
            remote_refs = {k: v for k, v in result.refs.items() if v is not None and k != b"HEAD"}
            sha = remote_refs.get(ref)
            if sha is None and remote_refs:
                raise BranchNotFound(f"branch {branch!r} not found in git repository {clean}")
            if sha is not None:
                with _translate(clean, auth, "checkout of"):
                    repo.refs[ref] = sha
                    repo.refs[b"refs/remotes/origin/" + ref[len(b"refs/heads/"):]] = sha
                    repo.get_worktree().reset_index(tree=repo[sha].tree, config=_own_config(repo))
        except BaseException:
            repo.close()
            raise
        return cls(repo, clean, branch, auth, policy)

    # -- worktree -----------------------------------------------------------------------------
    # The clone is untrusted content: a symlink in it could make a read or a write reach any file
    # of the host (a write through ``clusters/x -> /tmp/flux-distributions`` rewrote the
    # distribution cache). Every file method walks the path one component at a time from a
    # descriptor of the worktree root, opening each folder with O_NOFOLLOW | O_DIRECTORY (openat
    # style, ``dir_fd``), so no component is ever a symlink and nothing can be swapped between the
    # check and the use. Writes go to a new temporary file (O_CREAT | O_EXCL | O_NOFOLLOW) in the
    # verified folder, then ``rename`` over the name, which replaces a link rather than following it.

    def _parts(self, relpath: str) -> list[str]:
        """``relpath`` as its components; refuses absolute paths, ``..`` escapes and ``.git``."""
        if not isinstance(relpath, str):
            raise errors.InvalidInput("path", "must be a string")
        slashed = relpath.replace("\\", "/")
        norm = posixpath.normpath(slashed) if slashed else "."
        parts = [] if norm == "." else norm.split("/")
        if slashed.startswith("/") or (parts and parts[0] == "..") or ".git" in parts or "\0" in slashed:
            raise errors.InvalidInput("path", f"{relpath[:200]!r} is not a path inside the repository")
        return parts

    def _open_dir(self, parts: list[str], *, create: bool = False) -> int | None:
        """A descriptor of the folder ``parts`` (close it), walked without following symlinks; None
        when a component is missing (unless ``create``, which makes the folders). Raises
        :class:`SymlinkRefused` for a symlink component, ``Conflict`` for a file in the way."""
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                    except FileExistsError:  # made concurrently, or a dangling symlink: open decides
                        pass
                    nfd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        _refuse_entry(fd, name, "/".join(parts[: i + 1]), want="folder")
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
        return fd

    def entry_kind(self, relpath: str) -> str | None:
        """What ``relpath`` is, not following a symlink at its end: ``"file"``, ``"dir"``,
        ``"symlink"``, ``"other"`` (FIFO, socket, device), or None when absent. A symlink *before* its
        end raises :class:`SymlinkRefused`."""
        parts = self._parts(relpath)
        if not parts:
            return "dir"
        fd = self._open_dir(parts[:-1])
        if fd is None:
            return None
        try:
            return _kind(fd, parts[-1])
        finally:
            os.close(fd)

    def entries(self, relpath: str) -> list[tuple[str, str]]:
        """``(name, kind)`` of each entry directly in folder ``relpath``, sorted by name, kinds as
        :meth:`entry_kind` (symlinks are reported, never followed); ``[]`` when the folder does not
        exist. ``.git`` is never listed. Raises :class:`SymlinkRefused` when ``relpath`` is or goes
        through a symlink, ``Conflict`` when it is a file."""
        parts = self._parts(relpath)
        fd = self._open_dir(parts)
        if fd is None:
            return []
        try:
            out = []
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.name == ".git":
                        continue
                    if entry.is_symlink():
                        kind = "symlink"
                    elif entry.is_dir(follow_symlinks=False):
                        kind = "dir"
                    elif entry.is_file(follow_symlinks=False):
                        kind = "file"
                    else:
                        kind = "other"
                    out.append((entry.name, kind))
            return sorted(out)
        finally:
            os.close(fd)

    def list_dir(self, relpath: str) -> list[str]:
        """Sorted names of the entries (files, folders, symlinks) directly in worktree folder
        ``relpath``; ``[]`` if it does not exist. ``.git`` is never listed. Raises as :meth:`entries`."""
        return [name for name, _ in self.entries(relpath)]

    def resolve(self, relpath: str) -> str:
        """The path, inside the worktree, that ``relpath`` names once every symlink in it is
        resolved (as ``filepath.EvalSymlinks``), without ever leaving the worktree: a link whose
        target is absolute, climbs above the root, enters ``.git``, dangles or loops (more than 40
        links, as Linux) raises :class:`SymlinkRefused`. Nothing is opened through a link: each
        link is read with ``readlink`` and its target walked again from the root."""
        pending = self._parts(relpath)
        done: list[str] = []
        hops = 0
        while pending:
            name = pending.pop(0)
            fd = self._open_dir(done)
            if fd is None:
                raise SymlinkRefused(relpath, "points to a path that does not exist")
            try:
                kind = _kind(fd, name)
                target = os.readlink(name, dir_fd=fd) if kind == "symlink" else None
            finally:
                os.close(fd)
            if kind is None:
                raise SymlinkRefused(relpath, "points to a path that does not exist")
            if target is None:
                done.append(name)
                if pending and kind != "dir":
                    raise SymlinkRefused(relpath, "points through a file")
                continue
            hops += 1
            if hops > 40:
                raise SymlinkRefused(relpath, "is a loop of symbolic links")
            if target.startswith("/"):
                raise SymlinkRefused(relpath, "points outside the repository (absolute target)")
            joined = posixpath.normpath(posixpath.join(*done, target) if done else target)
            if joined == ".." or joined.startswith("../"):
                raise SymlinkRefused(relpath, "points outside the repository")
            parts = [] if joined == "." else joined.split("/")
            if ".git" in parts:
                raise SymlinkRefused(relpath, "points into .git")
            pending = parts + pending
            done = []
        return "/".join(done)

    def read_file(self, relpath: str, *, max_bytes: int = MAX_FILE_BYTES, resolve_links: bool = False) -> bytes | None:
        """Bytes of the worktree file at ``relpath``, or None when there is no such file (or it is a
        folder). A symlink anywhere in ``relpath`` raises :class:`SymlinkRefused`, unless
        ``resolve_links``: then it is resolved inside the worktree (:meth:`resolve`; Flux's secure
        file system does the same for the kustomization walk) and a link to a folder is refused too.
        A file over ``max_bytes`` raises :class:`FileTooLarge` (nothing beyond the limit is read)."""
        if resolve_links:
            resolved = self.resolve(relpath)
            if self.entry_kind(resolved) == "dir":
                if resolved != "/".join(self._parts(relpath)):
                    raise SymlinkRefused(relpath, "points to a folder")
                return None
            return self._read(resolved, relpath, max_bytes)
        return self._read(relpath, relpath, max_bytes)

    def _read(self, relpath: str, shown: str, max_bytes: int) -> bytes | None:
        parts = self._parts(relpath)
        if not parts:
            return None
        dfd = self._open_dir(parts[:-1])
        if dfd is None:
            return None
        try:
            try:
                # O_NONBLOCK: a FIFO must not block the run (git cannot make one, but be sure)
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except IsADirectoryError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise SymlinkRefused(shown) from None
                raise
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as f:
            if st.st_size > max_bytes:
                raise FileTooLarge(shown, st.st_size, max_bytes)
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise FileTooLarge(shown, len(data), max_bytes)
        return data

    def write_file(self, relpath: str, data: bytes) -> None:
        """Write ``data`` to the worktree file ``relpath``, creating parent folders, without following
        a symlink: a symlink on the way or at ``relpath`` raises :class:`SymlinkRefused`, a folder at
        ``relpath`` (or a file where a folder is needed) ``Conflict``; nothing is written then. An
        existing file keeps its permission bits (git's executable bit)."""
        if not isinstance(data, bytes | bytearray):
            raise TypeError("data must be bytes")
        parts = self._parts(relpath)
        if not parts:
            raise errors.InvalidInput("path", "must name a file")
        shown = "/".join(parts)
        # nothing is created before the whole path is known to be free of symlinks and files in the way
        self._check_writable(parts)
        dfd = self._open_dir(parts[:-1], create=True)
        try:
            name = parts[-1]
            kind = _kind(dfd, name)
            mode = 0o666
            if kind == "file":
                mode = stat.S_IMODE(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
            elif kind is not None:
                _refuse_entry(dfd, name, shown, want="file")
            tmp = f".{name}.flux-write-{os.getpid()}-{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    if kind == "file":
                        os.fchmod(f.fileno(), mode)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
        finally:
            os.close(dfd)

    def _check_writable(self, parts: list[str]) -> None:
        """Raise before anything is created when a component of ``parts`` is a symlink or a file
        where a folder is needed, or the last one is a symlink or a folder."""
        for i in range(1, len(parts) + 1):
            kind = self.entry_kind("/".join(parts[:i]))
            if kind is None:
                return
            if i < len(parts) and kind != "dir":
                self._refuse_kind(kind, "/".join(parts[:i]), "folder")
            if i == len(parts) and kind != "file":
                self._refuse_kind(kind, "/".join(parts[:i]), "file")

    @staticmethod
    def _refuse_kind(kind: str, shown: str, want: str) -> None:
        if kind == "symlink":
            raise SymlinkRefused(shown)
        article = "a folder" if kind == "dir" else ("a file" if kind == "file" else "not a regular file")
        raise errors.Conflict(f"{shown} is {article}, not a {want}; nothing was written")

    def head(self) -> str | None:
        """The sha (40 hex) HEAD points to, or None before the first commit."""
        try:
            return self._repo.refs[b"HEAD"].decode("ascii")
        except KeyError:
            return None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether commit ``ancestor`` is ``descendant`` or one of its ancestors (both 40 hex). A
        ``descendant`` this clone does not have yet is fetched first: the branch's new commits, from
        the same remote with the same credential and policy (e.g. another cluster of a shared branch
        pushed after us, and a controller reports that later commit). False when the remote's branch
        does not hold it either. Raises ``GitAuthError``/``GitError`` as :meth:`clone`."""
        from dulwich.graph import can_fast_forward

        if not all(isinstance(s, str) and re.fullmatch(r"[0-9a-f]{40}", s) for s in (ancestor, descendant)):
            return False
        if ancestor == descendant:
            return True
        repo = self._repo
        want = descendant.encode("ascii")
        if want not in repo.object_store:
            def determine_wants(refs, depth=None):
                sha = refs.get(self._ref)
                return [sha] if sha is not None and sha not in repo.object_store else []

            with _client(self.url, self._auth, self._policy) as (client, path), _translate(self.url, self._auth, "git fetch of"):
                client.fetch(path, repo, determine_wants=determine_wants)
            if want not in repo.object_store:
                return False
        try:
            return can_fast_forward(repo, ancestor.encode("ascii"), want)
        except KeyError:
            return False

    # -- commit -------------------------------------------------------------------------------
    def _changed_paths(self) -> list[bytes]:
        """Worktree paths (bytes, ``/``-separated) that differ from the index: new, modified, deleted.

        Every file is hashed (no stat shortcut: racy same-size rewrites within the mtime granularity
        must not be missed). Untracked files matching ``.gitignore`` are skipped, as go-git's status.
        """
        from dulwich.ignore import IgnoreFilterManager
        from dulwich.index import blob_from_path_and_stat, cleanup_mode

        repo = self._repo
        index = repo.open_index()
        ignore = IgnoreFilterManager.from_repo(repo)
        root = os.fsencode(self.path)
        seen: set[bytes] = set()
        changed: list[bytes] = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = b"" if rel_dir == b"." else rel_dir.replace(os.sep.encode(), b"/") + b"/"
            if not rel_dir:
                dirnames[:] = [d for d in dirnames if d != b".git"]
            kept = []
            for d in dirnames:
                rel = rel_dir + d
                if os.path.islink(os.path.join(dirpath, d)):
                    filenames.append(d)  # a symlink to a folder is a file for git
                elif not ignore.is_ignored(os.fsdecode(rel) + "/") or any(
                    k.startswith(rel + b"/") for k in index.paths()
                ):
                    kept.append(d)
            dirnames[:] = kept
            for name in filenames:
                rel = rel_dir + name
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                tracked = rel in index
                if not tracked and ignore.is_ignored(os.fsdecode(rel)):
                    continue
                seen.add(rel)
                if tracked:
                    entry = index[rel]
                    blob = blob_from_path_and_stat(full, st)
                    if blob.id == entry.sha and cleanup_mode(st.st_mode) == entry.mode:
                        continue
                changed.append(rel)
        changed.extend(p for p in index.paths() if p not in seen)
        return changed

    def commit(self, message: str, author: str = DEFAULT_AUTHOR) -> str | None:
        """Stage every change in the worktree (adds, modifications, deletions) and commit it.

        ``author`` (``"Name <email>"``, e.g. ``"Flux <>"``) is used byte-for-byte as both author and
        committer; time is now, UTC. ``message`` is stored as given (no newline appended), as go-git.
        Returns the new commit sha (40 hex), or None when the tree equals HEAD's (no commit made;
        go-git's ``ErrNoStagedFiles``). Raises ``InvalidInput("author", ...)`` for a malformed identity.
        """
        from dulwich.repo import InvalidUserIdentity, check_user_identity

        identity = author.encode("utf-8")
        try:
            check_user_identity(identity)
        except InvalidUserIdentity:
            raise errors.InvalidInput("author", f"{author!r} is not of the form 'Name <email>'") from None
        repo = self._repo
        config = _own_config(repo)
        with _translate(self.url, self._auth, "commit in clone of"):
            worktree = repo.get_worktree()
            changed = self._changed_paths()
            if changed:
                worktree.stage([os.fsdecode(p) for p in changed], config=config)
            tree = repo.open_index().commit(repo.object_store)
            head = self.head()
            if head is None:
                if not len(repo.open_index()):
                    return None
            elif repo[head.encode()].tree == tree:
                return None
            sha = worktree.commit(
                message=message.encode("utf-8"),
                author=identity,
                committer=identity,
                commit_timezone=0,
                author_timezone=0,
                tree=tree,
                no_verify=True,
                sign=False,
                signoff=False,
                config=config,
            )
        return sha.decode("ascii")

    # -- push ---------------------------------------------------------------------------------
    def push(self) -> None:
        """Push HEAD to ``refs/heads/<branch>`` of ``origin``.

        Client-side fast-forward check as git/go-git: the remote branch must be absent or an ancestor
        of HEAD. Raises ``NonFastForward`` (remote moved; also when the server refuses with
        non-fast-forward), ``GitAuthError`` (401/403), ``GitError`` (other, incl. no commit to push).
        A push whose remote branch already equals HEAD sends nothing.
        """
        from dulwich.graph import can_fast_forward

        head = self.head()
        if head is None:
            raise GitError(f"nothing to push to {self.url}: branch {self.branch!r} has no commit")
        head_b = head.encode("ascii")
        repo = self._repo
        ref = self._ref
        moved: list[bytes] = []

        def update_refs(remote_refs):
            old = remote_refs.get(ref)
            if old is not None and old != head_b:
                if old not in repo.object_store or not can_fast_forward(repo, old, head_b):
                    moved.append(old)
                    # no ref to update; not None: dulwich's SSH client (1.2.21) calls .items() on it
                    return {}
            return {ref: head_b}

        try:
            with _client(self.url, self._auth, self._policy) as (client, path), _translate(self.url, self._auth, "git push to"):
                result = client.send_pack(path, update_refs, generate_pack_data=repo.generate_pack_data)
        except GitError as exc:
            left = _left(self._auth.deadline)
            if left is not None and left <= _DEADLINE_SLACK_S and exc.transient:  # capped at the deadline
                raise GitTimeout(f"git push to {self.url} got no answer before the deadline") from None
            raise
        if moved:
            raise NonFastForward(
                f"push to {self.url} rejected: branch {self.branch!r} moved on the remote (non-fast-forward)"
            )
        for name, err in (result.ref_status or {}).items():
            if err is None:
                continue
            text = _mask(str(err), self._auth)
            if any(m in text for m in _MOVED):
                raise NonFastForward(f"push to {self.url} rejected: {name.decode(errors='replace')} {text}")
            raise GitError(f"push to {self.url} rejected: {name.decode(errors='replace')} {text}")
        repo.refs[b"refs/remotes/origin/" + ref[len(b"refs/heads/"):]] = head_b


def ls_remote(url: str, auth: GitAuth, *, allow_insecure_http: bool = False, policy=None) -> dict[str, str]:
    """The remote's refs, ``{"refs/heads/main": "<40 hex>", ...}`` (``HEAD`` included when the server
    advertises it; peeled tags as ``<tag>^{}``). ``{}`` for an empty repository. Doubles as a
    credential check (PAT rotation): raises ``GitAuthError`` on 401/403, ``RepositoryNotFound`` on
    404, ``InvalidInput`` for a bad or refused URL (``policy``: as :meth:`Repository.clone`),
    ``GitError`` otherwise.
    """
    from shared.trust import GitPolicy

    policy = policy or GitPolicy.from_settings()
    clean = _clean_url(url, allow_insecure_http, auth, policy)
    with _client(clean, auth, policy) as (client, path), _translate(clean, auth, "git ls-remote of"):
        result = client.get_refs(path)
    return {k.decode("utf-8"): v.decode("ascii") for k, v in result.refs.items() if v is not None}


# -- helpers ------------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(dir_fd: int, name: str) -> str | None:
    """``"file"``/``"dir"``/``"symlink"``/``"other"`` of entry ``name`` of folder ``dir_fd`` (lstat), or None."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _refuse_entry(dir_fd: int, name: str, shown: str, *, want: str) -> None:
    Repository._refuse_kind(_kind(dir_fd, name) or "other", shown, want)


def _own_config(repo):
    """The repository's own config only, so a user's global gitconfig (autocrlf, gpgsign, hooks
    path, identity) cannot change what gets committed."""
    from dulwich.config import StackedConfig

    own = repo.get_config()
    return StackedConfig([own], writable=own)


def _wipe(workdir: pathlib.Path) -> None:
    """Remove what a failed clone left in ``workdir`` (the folder itself stays)."""
    if not workdir.exists():
        return
    for child in workdir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
