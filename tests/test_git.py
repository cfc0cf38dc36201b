"""shared.ports.git against the real git smart-HTTP peer (tests/peers/git_server.py): no mocks."""

from __future__ import annotations

import os
import socket
import time
import traceback

import pytest

from shared import errors
from shared.ports import git as g
from shared.ports.git import BranchNotFound, GitAuth, GitAuthError, GitError, NonFastForward, Repository, ls_remote
from tests.peers.git_server import log, read_tree, seed

ORG, PROJECT, REPO = "contoso", "Fleet Ops", "fleet-infra"


@pytest.fixture
def remote(ado_git_server):
    """(server, bare path, URL) of a fresh empty repository."""
    bare = ado_git_server.create_repo(ORG, PROJECT, REPO)
    return ado_git_server, bare, ado_git_server.url(ORG, PROJECT, REPO)


@pytest.fixture
def auth(git_pat):
    return GitAuth(password=git_pat)


@pytest.fixture
def clone(tmp_path):
    """clone(url, branch, auth, **kw) into a fresh work dir; closes the repositories afterwards."""
    opened: list[Repository] = []

    def _clone(url, branch, auth, **kw):
        kw.setdefault("allow_insecure_http", url.startswith("http://"))
        repo = Repository.clone(url, branch, auth, tmp_path / f"work{len(opened)}", **kw)
        opened.append(repo)
        return repo

    yield _clone
    for repo in opened:
        repo.close()


def _posts(server, service):
    return [r for r in server.requests if r.method == "POST" and r.path.endswith(service)]


def test_clone_empty_repo_then_commit_and_push(remote, auth, clone):
    server, bare, url = remote
    big = os.urandom(150_000).hex().encode()  # 300 KB, like gotk-components.yaml
    started = time.monotonic()
    repo = clone(url, "main", auth)
    assert repo.head() is None
    assert repo.list_dir("") == []
    repo.write_file("clusters/prod/flux-system/gotk-components.yaml", big)
    repo.write_file("./clusters/prod/flux-system/gotk-sync.yaml", b"kind: GitRepository\n")
    sha = repo.commit("Add Flux v2.9.2 component manifests")
    repo.push()
    elapsed = time.monotonic() - started

    assert sha is not None and len(sha) == 40 and repo.head() == sha
    assert read_tree(bare) == {
        "clusters/prod/flux-system/gotk-components.yaml": big,
        "clusters/prod/flux-system/gotk-sync.yaml": b"kind: GitRepository\n",
    }
    [entry] = log(bare)
    assert entry == {
        "sha": sha,
        "message": "Add Flux v2.9.2 component manifests",
        "author": "Flux <>",
        "committer": "Flux <>",
        "parents": [],
    }
    assert repo.list_dir("clusters/prod/flux-system") == ["gotk-components.yaml", "gotk-sync.yaml"]
    assert repo.read_file("clusters/prod/flux-system/gotk-sync.yaml") == b"kind: GitRepository\n"
    assert repo.read_file("clusters/prod/missing.yaml") is None
    assert len(_posts(server, "/git-receive-pack")) == 1
    assert elapsed < 2.0, f"clone+commit+push of 300 KB took {elapsed:.2f} s"


def test_commit_without_changes_returns_none_and_push_sends_nothing(remote, auth, clone):
    server, bare, url = remote
    repo = clone(url, "main", auth)
    repo.write_file("a.yaml", b"a: 1\n")
    first = repo.commit("Add Flux sync manifests")
    repo.push()
    receive_posts = len(_posts(server, "/git-receive-pack"))

    repo.write_file("a.yaml", b"a: 1\n")  # same bytes rewritten: still no change
    assert repo.commit("Add Flux sync manifests") is None
    assert repo.head() == first
    repo.push()
    assert len(_posts(server, "/git-receive-pack")) == receive_posts
    assert [e["sha"] for e in log(bare)] == [first]


def test_commit_on_empty_clone_without_files_makes_no_commit(remote, auth, clone):
    _, bare, url = remote
    repo = clone(url, "main", auth)
    assert repo.commit("nothing") is None
    assert repo.head() is None
    with pytest.raises(GitError):
        repo.push()
    assert log(bare) == []


def test_clone_existing_branch_and_commit_adds_modifies_deletes(remote, auth, clone):
    _, bare, url = remote
    seeded = seed(bare, {"keep.yaml": b"keep\n", "change.yaml": b"old\n", "dir/gone.yaml": b"x\n"})
    seed(bare, {"other.yaml": b"dev only\n"}, branch="dev", start_from="main")

    repo = clone(url, "main", auth)
    assert repo.head() == seeded
    assert repo.read_file("change.yaml") == b"old\n"
    assert repo.list_dir("") == ["change.yaml", "dir", "keep.yaml"]
    assert repo.list_dir("dir") == ["gone.yaml"]
    assert repo.list_dir("nope") == []

    repo.write_file("change.yaml", b"new\n")
    os.remove(repo.path / "dir" / "gone.yaml")
    repo.write_file("added/new.yaml", b"added\n")
    sha = repo.commit("second", author="Jane Doe <jane@example.com>")
    repo.push()

    assert read_tree(bare) == {"keep.yaml": b"keep\n", "change.yaml": b"new\n", "added/new.yaml": b"added\n"}
    newest, oldest = log(bare)
    assert newest["sha"] == sha and newest["parents"] == [seeded] and oldest["sha"] == seeded
    assert newest["author"] == newest["committer"] == "Jane Doe <jane@example.com>"
    assert read_tree(bare, "dev") == {"keep.yaml": b"keep\n", "change.yaml": b"old\n",
                                      "dir/gone.yaml": b"x\n", "other.yaml": b"dev only\n"}


def test_clone_non_default_branch(remote, auth, clone):
    _, bare, url = remote
    seed(bare, {"main.yaml": b"m\n"})
    dev = seed(bare, {"dev.yaml": b"d\n"}, branch="dev", start_from="main")
    repo = clone(url, "dev", auth)
    assert repo.branch == "dev" and repo.head() == dev
    assert repo.list_dir("") == ["dev.yaml", "main.yaml"]
    repo.write_file("dev.yaml", b"d2\n")
    repo.commit("on dev")
    repo.push()
    assert read_tree(bare, "dev")["dev.yaml"] == b"d2\n"
    assert read_tree(bare, "main") == {"main.yaml": b"m\n"}


def test_missing_branch_in_non_empty_repo(remote, auth, tmp_path):
    _, bare, url = remote
    seed(bare, {"a": b"a"})
    with pytest.raises(BranchNotFound, match="'flux'") as info:
        Repository.clone(url, "flux", auth, tmp_path / "w", allow_insecure_http=True)
    assert isinstance(info.value, errors.NotFound)
    assert list((tmp_path / "w").iterdir()) == []  # nothing left behind


def test_empty_repo_clone_targets_requested_branch(remote, auth, clone):
    _, bare, url = remote
    repo = clone(url, "flux", auth)
    repo.write_file("a", b"a")
    repo.commit("first")
    repo.push()
    assert read_tree(bare, "flux") == {"a": b"a"}
    assert read_tree(bare, "main") == {}


def test_wrong_pat_is_auth_error_without_secret(remote, git_pat, tmp_path):
    server, _, url = remote
    wrong = "wrong-" + git_pat[::-1]
    bad = GitAuth(username="me", password=wrong)
    with pytest.raises(GitAuthError) as info:
        Repository.clone(url, "main", bad, tmp_path / "w", allow_insecure_http=True)
    message = str(info.value)
    assert message == f"git server rejected the credentials for {url} (HTTP 401)"
    assert wrong not in message and wrong not in repr(bad)
    assert info.value.__suppress_context__  # raised "from None": dulwich's exception is not chained
    assert wrong not in "".join(traceback.format_exception(info.value))
    assert isinstance(info.value, errors.AuthenticationFailed)
    assert server.requests[-1].status == 401


def test_pat_rotation_push_fails_then_ls_remote_with_new_pat(remote, auth, clone):
    server, _, url = remote
    repo = clone(url, "main", auth)
    repo.write_file("a", b"a")
    repo.commit("a")
    server.pat = "rotated-pat-value"
    with pytest.raises(GitAuthError, match=r"\(HTTP 401\)") as info:
        repo.push()
    assert auth.password not in str(info.value)
    with pytest.raises(GitAuthError):
        ls_remote(url, auth, allow_insecure_http=True)
    assert ls_remote(url, GitAuth(password="rotated-pat-value"), allow_insecure_http=True) == {}


def test_refused_and_failed_requests_close_their_connections(remote, auth, clone, tmp_path):
    """A 401 (the rotation's PAT check, every run), a 404 or a failed clone must close its socket, not leave
    it to the garbage collector (dulwich raises without releasing the unread response)."""
    import gc
    import warnings

    server, _, url = remote
    repo = clone(url, "main", auth)
    repo.write_file("a", b"a")
    repo.commit("a")
    repo.push()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            with pytest.raises(GitAuthError):
                ls_remote(url, GitAuth(password="not-the-pat"), allow_insecure_http=True)
            with pytest.raises(g.RepositoryNotFound):
                ls_remote(url + "-gone", auth, allow_insecure_http=True)
            with pytest.raises(GitAuthError):
                Repository.clone(url, "main", GitAuth(password="not-the-pat"), tmp_path / "refused",
                                 allow_insecure_http=True)
            assert ls_remote(url, auth, allow_insecure_http=True)["refs/heads/main"] == repo.head()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_bearer_token(remote, clone, entra_git_hosts):
    server, bare, url = remote
    token = "eyJ0eXAiOiJKV1Qi.entra.token"
    server.bearer_tokens.add(token)
    repo = clone(url, "main", GitAuth(bearer_token=token))
    repo.write_file("a", b"a")
    repo.commit("via bearer")
    repo.push()
    assert read_tree(bare) == {"a": b"a"}
    assert {r.user for r in server.requests} == {"<bearer>"}
    assert token not in repr(GitAuth(bearer_token=token))
    with pytest.raises(GitAuthError) as info:
        ls_remote(url, GitAuth(bearer_token="not-" + token), allow_insecure_http=True)
    assert token not in str(info.value)


def test_https_with_trustme_ca(ado_git_server_tls, auth, clone, tmp_path):
    server = ado_git_server_tls
    bare = server.create_repo(ORG, PROJECT, REPO)
    url = server.url(ORG, PROJECT, REPO)
    assert url.startswith("https://127.0.0.1:")
    tls_auth = GitAuth(password=auth.password, ca_file=server.ca_file)
    repo = clone(url, "main", tls_auth)
    repo.write_file("a", b"tls")
    repo.commit("over https")
    repo.push()
    assert read_tree(bare) == {"a": b"tls"}

    with pytest.raises(GitError, match="CERTIFICATE_VERIFY_FAILED") as info:
        ls_remote(url, auth)  # system trust store: the test CA is unknown
    assert not isinstance(info.value, GitAuthError)


def test_http_url_needs_allow_insecure_http(remote, auth, tmp_path):
    server, _, url = remote
    with pytest.raises(errors.InvalidInput) as info:
        Repository.clone(url, "main", auth, tmp_path / "w")
    assert info.value.field == "url" and "allowInsecureHttp" in str(info.value)
    with pytest.raises(errors.InvalidInput):
        ls_remote(url, auth)
    with pytest.raises(errors.InvalidInput):
        ls_remote(url.replace("http://", "ssh://"), auth, allow_insecure_http=True)
    assert server.requests == []


def test_user_info_in_url_is_dropped(remote, auth, clone, tmp_path):
    server, _, url = remote
    repo = clone(url.replace("http://", "http://contoso@"), "main", auth)
    assert repo.url == url
    config = (repo.path / ".git" / "config").read_text()
    assert "contoso@" not in config and auth.password not in config
    assert {r.user for r in server.requests if r.status == 200} == {"git"}
    # a password in the URL is refused, never used nor repeated
    server.requests.clear()
    with pytest.raises(errors.InvalidInput) as info:
        Repository.clone(url.replace("http://", "http://contoso:leaked-secret@"), "main", auth, tmp_path / "w2",
                         allow_insecure_http=True)
    assert info.value.field == "url" and "leaked-secret" not in str(info.value)
    assert server.requests == []


def test_unknown_repository_is_not_found(ado_git_server, auth, tmp_path):
    url = ado_git_server.url(ORG, PROJECT, "no-such-repo")
    with pytest.raises(g.RepositoryNotFound, match="not found"):
        Repository.clone(url, "main", auth, tmp_path / "w", allow_insecure_http=True)


def test_push_after_remote_moved_is_non_fast_forward(remote, auth, clone):
    _, bare, url = remote
    seed(bare, {"a": b"1"})
    repo = clone(url, "main", auth)
    moved = seed(bare, {"b": b"someone else"})
    repo.write_file("a", b"2")
    repo.commit("ours")
    with pytest.raises(NonFastForward) as info:
        repo.push()
    assert isinstance(info.value, GitError)
    assert log(bare)[0]["sha"] == moved

    fresh = clone(url, "main", auth)  # what Flux does: re-clone and redo the step
    fresh.write_file("a", b"2")
    sha = fresh.commit("ours again")
    fresh.push()
    assert [e["sha"] for e in log(bare)][:2] == [sha, moved]


def test_ls_remote(remote, auth, clone):
    _, bare, url = remote
    assert ls_remote(url, auth, allow_insecure_http=True) == {}
    main = seed(bare, {"a": b"a"})
    dev = seed(bare, {"b": b"b"}, branch="dev")
    refs = ls_remote(url, auth, allow_insecure_http=True)
    assert refs["refs/heads/main"] == main and refs["refs/heads/dev"] == dev
    assert set(refs) <= {"HEAD", "refs/heads/main", "refs/heads/dev"}


def test_connection_refused_retries_once_then_git_error(auth, tmp_path, monkeypatch, git_allowed_local):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(g, "CLONE_RETRY_DELAY_S", 0.3)
    started = time.monotonic()
    with pytest.raises(GitError) as info:
        Repository.clone(f"http://127.0.0.1:{port}/o/p/_git/r", "main", auth, tmp_path / "w",
                         allow_insecure_http=True)
    assert time.monotonic() - started >= 0.3  # slept once before the retry
    assert info.value.transient
    assert auth.password not in str(info.value)
    assert list((tmp_path / "w").iterdir()) == []


def test_paths_outside_the_worktree_are_refused(remote, auth, clone):
    _, _, url = remote
    repo = clone(url, "main", auth)
    for bad in ("../escape", "/etc/passwd", ".git/config", "a/../../b"):
        with pytest.raises(errors.InvalidInput):
            repo.write_file(bad, b"x")
        with pytest.raises(errors.InvalidInput):
            repo.read_file(bad)
    assert repo.list_dir(".") == []


# -- the clone is untrusted content: symlinks are never followed --------------------------------------


@pytest.fixture
def outside(tmp_path):
    """A folder and a file outside every clone, to prove nothing reaches them."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.txt").write_bytes(b"original\n")
    return folder


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_writes_never_go_through_a_symlinked_folder(remote, auth, clone, outside):
    from shared.ports.git import SymlinkRefused
    from tests.peers.git_server import Symlink

    server, bare, url = remote
    # relative (climbing out of the clone) and absolute targets
    seed(bare, {"clusters/rel": Symlink("../../outside"), "clusters/abs": Symlink(str(outside)), "README.md": b"x\n"})
    repo = clone(url, "main", auth)
    assert (repo.path / "clusters" / "rel").is_symlink()
    assert os.path.realpath(repo.path / "clusters" / "rel") == str(outside)  # the trap is real
    before = _snapshot(outside)
    for name in ("rel", "abs"):
        for target in (f"clusters/{name}/flux-system/gotk-sync.yaml", f"clusters/{name}/victim.txt", f"clusters/{name}"):
            with pytest.raises(SymlinkRefused) as err:
                repo.write_file(target, b"pwned\n")
            assert err.value.path == f"clusters/{name}" and err.value.status == 409
        with pytest.raises(SymlinkRefused):
            repo.read_file(f"clusters/{name}/victim.txt")
        with pytest.raises(SymlinkRefused):
            repo.list_dir(f"clusters/{name}")
    assert _snapshot(outside) == before and sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert repo.entries("clusters") == [("abs", "symlink"), ("rel", "symlink")]
    assert repo.commit("nothing") is None  # the refused writes left nothing behind


def test_writes_never_go_through_a_symlinked_file(remote, auth, clone, outside):
    from shared.ports.git import SymlinkRefused
    from tests.peers.git_server import Symlink

    server, bare, url = remote
    seed(bare, {
        "clusters/x/flux-system/gotk-sync.yaml": Symlink("../../../.git/config"),
        "clusters/x/flux-system/gotk-components.yaml": Symlink(str(outside / "victim.txt")),
    })
    repo = clone(url, "main", auth)
    git_config = (repo.path / ".git" / "config").read_bytes()
    for name in ("gotk-sync.yaml", "gotk-components.yaml"):
        path = f"clusters/x/flux-system/{name}"
        with pytest.raises(SymlinkRefused) as err:
            repo.write_file(path, b"pwned\n")
        assert err.value.path == path
        with pytest.raises(SymlinkRefused):
            repo.read_file(path)
        assert repo.entry_kind(path) == "symlink"
    assert (repo.path / ".git" / "config").read_bytes() == git_config
    assert (outside / "victim.txt").read_bytes() == b"original\n"
    assert sorted(os.listdir(repo.path / "clusters" / "x" / "flux-system")) == ["gotk-components.yaml", "gotk-sync.yaml"]


def test_resolve_stays_inside_the_clone(remote, auth, clone, outside):
    from shared.ports.git import SymlinkRefused
    from tests.peers.git_server import Symlink

    server, bare, url = remote
    seed(bare, {
        "base/app.yaml": b"kind: ConfigMap\n",
        "x/inside.yaml": Symlink("../base/app.yaml"),
        "x/dir": Symlink("../base"),
        "x/via-dir.yaml": Symlink("dir/app.yaml"),
        "x/abs.yaml": Symlink(str(outside / "victim.txt")),
        "x/up.yaml": Symlink("../../victim.txt"),
        "x/git.yaml": Symlink("../.git/config"),
        "x/loop-a": Symlink("loop-b"),
        "x/loop-b": Symlink("loop-a"),
        "x/self": Symlink("."),
        "x/dangling.yaml": Symlink("nowhere.yaml"),
    })
    repo = clone(url, "main", auth)
    assert repo.resolve("x/inside.yaml") == "base/app.yaml"
    assert repo.resolve("x/via-dir.yaml") == "base/app.yaml"
    assert repo.read_file("x/inside.yaml", resolve_links=True) == b"kind: ConfigMap\n"
    with pytest.raises(SymlinkRefused):
        repo.read_file("x/inside.yaml")  # not resolved unless asked
    for path, why in (("x/abs.yaml", "outside"), ("x/up.yaml", "outside"), ("x/git.yaml", ".git"),
                      ("x/loop-a", "loop"), ("x/dangling.yaml", "does not exist"), ("x/dir", "folder")):
        with pytest.raises(SymlinkRefused) as err:
            repo.read_file(path, resolve_links=True)
        assert why in str(err.value), (path, str(err.value))
    assert repo.resolve("x/self") == "x"


def test_reads_are_bounded_and_writes_keep_the_mode(remote, auth, clone):
    from shared import errors as e
    from shared.ports.git import FileTooLarge

    server, bare, url = remote
    seed(bare, {"big.yaml": b"a" * 2000, "tool.sh": b"#!/bin/sh\n"})
    repo = clone(url, "main", auth)
    with pytest.raises(FileTooLarge) as err:
        repo.read_file("big.yaml", max_bytes=1000)
    assert err.value.status == 409 and "big.yaml is 2000 bytes" in str(err.value)
    assert repo.read_file("big.yaml", max_bytes=2000) == b"a" * 2000
    os.chmod(repo.path / "tool.sh", 0o755)
    repo.write_file("tool.sh", b"#!/bin/sh\necho hi\n")
    assert os.stat(repo.path / "tool.sh").st_mode & 0o777 == 0o755
    repo.write_file("a/b/c.yaml", b"x\n")
    with pytest.raises(e.Conflict):
        repo.write_file("a/b", b"x\n")  # a folder is there
    with pytest.raises(e.Conflict):
        repo.write_file("a/b/c.yaml/d", b"x\n")  # a file is in the way
    assert repo.read_file("a") is None and repo.entry_kind("a") == "dir"
    assert sorted(os.listdir(repo.path / "a" / "b")) == ["c.yaml"]  # no temporary file left behind
