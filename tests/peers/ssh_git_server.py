"""Git over SSH test peer with Azure DevOps' SSH behaviour (asyncssh), on 127.0.0.1.

``AzureDevOpsSshServer`` serves the bare repositories of an ``AzureDevOpsGitServer`` root
(``root/{org}/{project}/{repo}``), so one repository can be reached over HTTPS and over SSH, as in
Azure DevOps. What it reproduces (``docs/test-peers.md`` §3; Azure DevOps' SSH documentation and
announcements):

* paths ``v3/{org}/{project}/{repo}`` (a leading ``/``, as an ``ssh://`` URL sends it, is
  stripped); ``git-upload-pack`` and ``git-receive-pack`` only; any user name (Azure DevOps' is
  ``git``); an unknown repository fails with Azure DevOps' TF401019 text;
* host key algorithms ``rsa-sha2-512`` and ``rsa-sha2-256`` only (an RSA host key; no SHA-1
  ``ssh-rsa``, no other key type), so a client that accepts only ``ssh-rsa`` host keys cannot
  negotiate;
* client keys: RSA public keys only. :meth:`authorize` (adding a key in *User settings → SSH public
  keys*) refuses any other type with the dialog's text (``Invalid key: Valid keys will start with
  "ssh-rsa".``), so an ed25519 or ECDSA key is never authorised and its authentication fails; an
  RSA key that signs with SHA-1 (``ssh-rsa``) authenticates, but every command is then refused
  with the text Azure DevOps sends since its SSH-RSA deprecation (:data:`SSH_RSA_REFUSED`), as
  Azure DevOps does;
* non-fast-forward pushes are refused (the bare repositories' ``receive.denyNonFastForwards``).

``requests`` records every authentication attempt and command (:class:`SshRecord`), so tests can
assert what reached the server; ``connections`` counts every TCP connection accepted (a host key scan
authenticates nothing, so only this shows it). The host key can be replaced (:meth:`replace_host_key`) on the same
port, as a server whose key changed between two runs.

Fixtures: ``ado_ssh_server`` (started, serving ``ado_git_server``'s root).
"""

from __future__ import annotations

import asyncio
import shlex
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.peers.git_server import GIT, _git_env

HOST_KEY_ALGS = ("rsa-sha2-512", "rsa-sha2-256")
#: What Azure DevOps answers a command over a session authenticated with a SHA-1 ``ssh-rsa``
#: signature (libgit2/pygit2#1305, quoting Azure DevOps; https://aka.ms/ado-ssh-rsa-deprecation).
SSH_RSA_REFUSED = (
    "Command {command}: You\u2019re using ssh-rsa that is about to be deprecated and your request has been blocked "
    "intentionally. Any SSH session using SSH-RSA is subject to brown out (failure during random time periods). "
    "Please use rsa-sha2-256 or rsa-sha2-512 instead. For more details see https://aka.ms/ado-ssh-rsa-deprecation.\n"
    "ERROR_SSH_UNSUPPORTED_CIPHER (7)\n"
)
#: Azure DevOps' "Add SSH public key" dialog for a key that is not RSA
#: (MicrosoftDocs/azure-devops-docs#7352).
INVALID_KEY = 'Invalid key: Valid keys will start with "ssh-rsa".'
_TF401019 = ("TF401019: The Git repository with name or identifier {repo} does not exist or you do not have "
             "permissions for the operation you are attempting.\n")


class SshRecord(NamedTuple):
    """One event: ``kind`` ``auth`` (``detail``: the signature algorithm, or ``refused <key type>``)
    or ``exec`` (``detail``: the command line; ``status``: its exit status)."""

    kind: str
    user: str | None
    detail: str
    status: int | None = None


def _generate_host_key():
    import asyncssh

    return asyncssh.generate_private_key("ssh-rsa", key_size=2048)


def _host_keypair(key):
    """``key`` as a server host key pair offered for the SHA-2 algorithms only (asyncssh would offer
    an RSA key as ``ssh-rsa`` too)."""
    import asyncssh

    keypair = asyncssh.load_keypairs([key])[0]
    keypair.host_key_algorithms = [alg.encode() for alg in HOST_KEY_ALGS]
    return keypair


def _linger(sock, timeout: float = 10) -> None:
    """Read ``sock`` until the peer closes it (at most ``timeout`` seconds), then close it."""
    try:
        sock.settimeout(timeout)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


class AzureDevOpsSshServer:
    """The SSH side of Azure DevOps for the repositories under ``root``; use as a context manager."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[SshRecord] = []
        self.connections = 0
        self._authorized: set[bytes] = set()
        self._host_key = _generate_host_key()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor = None
        self._connections: set = set()  # the Server of each open connection
        self.port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "AzureDevOpsSshServer":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ado-ssh-server", daemon=True)
        self._thread.start()
        self._acceptor = self._call(self._listen())
        self.port = self._acceptor.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._acceptor is not None:
            acceptor = self._acceptor

            async def close():
                acceptor.close()
                await acceptor.wait_closed()
                # connections whose client has not hung up (or whose close is not processed yet)
                for server in list(self._connections):
                    server.conn.abort()
                for _ in range(10):  # the aborts complete in callbacks of the next loop iterations
                    await asyncio.sleep(0)
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = self._thread = self._acceptor = None

    def __enter__(self) -> "AzureDevOpsSshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self):
        import asyncssh

        owner = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn):
                with owner._lock:
                    owner.connections += 1
                self.sig_alg = None
                check = conn.validate_public_key

                async def validate(username, key_data, msg, signature):
                    ok = await check(username, key_data, msg, signature)
                    if ok and signature:
                        from asyncssh.packet import SSHPacket

                        self.sig_alg = SSHPacket(signature).get_string().decode("ascii", "replace")
                        owner._record(SshRecord("auth", username, self.sig_alg))
                    return ok

                # asyncssh gives the server the key but not the signature algorithm; this
                # connection's check is wrapped to see it (Azure DevOps refuses SHA-1 sessions).
                conn.validate_public_key = validate
                conn.set_extra_info(ado_server=self)
                sock = conn.get_extra_info("socket")
                self.sock = sock.dup() if sock is not None else None  # for connection_lost
                self.conn = conn
                owner._connections.add(self)

            def connection_lost(self, exc):
                owner._connections.discard(self)
                sock, self.sock = self.sock, None
                if sock is None:
                    return
                if exc is None:
                    sock.close()
                    return
                # A refusal (a failed key exchange, say) sends DISCONNECT, then asyncssh closes the
                # socket at once. An asyncssh client still busy with the previous packet (its async
                # KEXINIT handler) holds the DISCONNECT in its buffer, and the FIN behind it ends the
                # connection as "Connection lost" before the refusal is read: a race that a loaded
                # machine lost about once in 20. Through this second handle the server keeps its side
                # open until the client hangs up, so the client always reads the DISCONNECT first.
                threading.Thread(target=_linger, args=(sock,), name="ado-ssh-linger", daemon=True).start()

            def begin_auth(self, username):
                return True

            def public_key_auth_supported(self):
                return True

            def validate_public_key(self, username, key):
                allowed = key.get_algorithm() == "ssh-rsa" and key.public_data in owner._authorized
                if not allowed:
                    owner._record(SshRecord("auth", username, f"refused {key.get_algorithm()}"))
                return allowed

        return await asyncssh.listen(
            "127.0.0.1", 0, server_factory=Server, server_host_keys=[_host_keypair(self._host_key)],
            # Accepted signatures: SHA-2, and SHA-1 ssh-rsa so that its session can be refused as
            # Azure DevOps refuses it (with a message, at the command).
            signature_algs=["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            encoding=None, process_factory=self._process, allow_scp=False, agent_forwarding=False,
            x11_forwarding=False, keepalive_interval=0, login_timeout=30)

    async def _process(self, process) -> None:
        server = process.get_extra_info("ado_server")
        user = process.get_extra_info("username")
        command = (process.command or b"").decode("utf-8", "replace") if isinstance(process.command, bytes) else (process.command or "")
        status = None
        try:
            status = await self._run(process, server, command)
        finally:
            self._record(SshRecord("exec", user, command, status))
        try:
            process.exit(status)
            await process.wait_closed()  # runs asyncssh's cleanup (its stream queues)
        except (OSError, RuntimeError, asyncio.CancelledError):  # the client has gone already, or the server stops
            pass

    async def _run(self, process, server, command: str) -> int:
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = []
        if len(argv) != 2 or argv[0] not in ("git-upload-pack", "git-receive-pack"):
            process.stderr.write(b"Unsupported command\n")
            return 128
        if server is None or server.sig_alg not in HOST_KEY_ALGS:
            process.stderr.write(SSH_RSA_REFUSED.format(command=argv[0]).encode())
            return 7
        parts = argv[1].lstrip("/").split("/")
        if len(parts) != 4 or parts[0] != "v3" or any(p in ("", ".", "..") for p in parts):
            process.stderr.write(_TF401019.format(repo=argv[1]).encode())
            return 128
        _, org, project, repo = parts
        bare = self.root / org / project / repo
        if not (bare / "HEAD").is_file():
            process.stderr.write(_TF401019.format(repo=repo).encode())
            return 128
        proc = await asyncio.create_subprocess_exec(
            GIT, argv[0][len("git-"):], str(bare), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=_git_env())
        await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
        return await proc.wait()

    def _record(self, record: SshRecord) -> None:
        with self._lock:
            self.requests.append(record)

    # -- what a user does in Azure DevOps -------------------------------------------------------
    def authorize(self, public_key: str) -> None:
        """Add an SSH public key (``ssh-rsa AAAA... [comment]``), as *User settings → SSH public keys
        → Add*. Raises ValueError with Azure DevOps' text for a key that is not RSA."""
        import asyncssh

        if not public_key.strip().startswith("ssh-rsa "):
            raise ValueError(INVALID_KEY)
        key = asyncssh.import_public_key(public_key.strip())
        with self._lock:
            self._authorized.add(key.public_data)

    def revoke_all(self) -> None:
        with self._lock:
            self._authorized.clear()

    # -- addresses and keys ----------------------------------------------------------------------
    def url(self, org: str, project: str, repo: str, user: str = "git") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}/v3/{org}/{project}/{repo}"

    @property
    def host_key_base64(self) -> str:
        return self._host_key.export_public_key("openssh").split()[1].decode()

    @property
    def known_hosts_line(self) -> str:
        """The server's key as Flux writes it into ``known_hosts`` (``[host]:port ssh-rsa AAAA...``)."""
        return f"[127.0.0.1]:{self.port} ssh-rsa {self.host_key_base64}"

    def replace_host_key(self) -> None:
        """Serve a new host key on the same port (a server reinstalled, or an impostor)."""
        self._host_key = _generate_host_key()
        self._acceptor.update(server_host_keys=[_host_keypair(self._host_key)])


@pytest.fixture
def ado_ssh_server(ado_git_server):
    """An ``AzureDevOpsSshServer`` over the repositories of ``ado_git_server`` (``127.0.0.1`` is in
    ``GIT_ALLOWED_HOSTS`` already)."""
    with AzureDevOpsSshServer(ado_git_server.root) as server:
        yield server
