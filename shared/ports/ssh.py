"""SSH for git: the host key scan and a dulwich SSH vendor on paramiko.

* :func:`scan_host_key` connects to an SSH server offering only the configured host key
  algorithms (``sshHostkeyAlgos``: for Azure DevOps ``rsa-sha2-512,rsa-sha2-256``) and returns the
  one key it presents, as fluxcd/pkg ``ssh.ScanHostKey`` does for the source Secret's
  ``known_hosts`` (``fluxcd/flux2`` ``pkg/manifestgen/sourcesecret``).
* :class:`PinnedSSHVendor` is the ``dulwich.client.SSHVendor`` the git port clones and pushes
  with: every connection must present the host key pinned for the run (paramiko's
  ``RejectPolicy`` with that one key: any other key is :class:`HostKeyMismatch`), authenticates
  with the private key only (no agent, no ``~/.ssh``, no password), and reads the channel through
  ``makefile("rb")`` so that dulwich's pkt-line reads get exactly the bytes they ask for.

SHA-1 ``ssh-rsa`` is never used (:data:`DISABLED_ALGORITHMS`): not as a host key signature, not as
the client's signature; an RSA key then signs with ``rsa-sha2-512`` or ``rsa-sha2-256``, which is
all Azure DevOps accepts. Every connection is made by this module, after
:meth:`shared.trust.GitPolicy.check_connection_host`, and the address actually connected passes
:meth:`shared.trust.GitPolicy.check_peer` before the SSH banner is sent (DNS rebinding), as for
HTTPS. paramiko is imported inside functions (Functions cold start).
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass, field

from shared import errors

#: paramiko ``disabled_algorithms``: no SHA-1 ``ssh-rsa`` host key nor client signature.
DISABLED_ALGORITHMS = {"pubkeys": ["ssh-rsa"], "keys": ["ssh-rsa"]}
#: Host key algorithms the client can be limited to (paramiko's, less SHA-1 ``ssh-rsa``).
HOST_KEY_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519", "ecdsa-sha2-nistp256",
                       "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
#: Connect, handshake and channel timeout, seconds (Flux scans with 30 s).
SSH_TIMEOUT_S = 30.0


class HostKeyMismatch(errors.Conflict):
    """The server presented another host key than the one pinned for it (409)."""


class SSHError(errors.UpstreamError):
    """The SSH connection failed (refused, timed out, no algorithm in common...)."""


@dataclass(frozen=True)
class HostKey:
    """The host key an SSH server presented: ``host`` (lower-case), ``port``, ``key_type`` (the
    key's type, ``ssh-rsa`` for an RSA key whatever SHA-2 signature was negotiated) and ``key``
    (base64 of the key blob, as in ``known_hosts``)."""

    host: str
    port: int
    key_type: str
    key: str

    @property
    def known_hosts(self) -> str:
        """The ``known_hosts`` line Flux writes (:func:`shared.flux.sourcesecret.known_hosts_line`)."""
        from shared.flux.sourcesecret import known_hosts_line

        return known_hosts_line(self.host, self.port, self.key_type, self.key)


def fingerprint(key_b64: str) -> str:
    """The key's fingerprint as OpenSSH prints it (``ssh-keygen -lf``, the host key prompt):
    ``SHA256:<base64 of the SHA-256 of the key blob, unpadded>``, from ``key_b64`` (the base64 blob
    of a ``known_hosts`` line). Unlike a prefix of the blob, it differs between RSA keys."""
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(key_b64)).digest()).decode("ascii").rstrip("=")


def check_algorithms(algos, field: str = "sshHostkeyAlgos") -> tuple[str, ...]:
    """``algos`` if every name is one the client can offer (:data:`HOST_KEY_ALGORITHMS`); SHA-1
    ``ssh-rsa`` is refused. Raises InvalidInput(``field``)."""
    names = tuple(algos)
    if "ssh-rsa" in names:
        raise errors.InvalidInput(field, "ssh-rsa (SHA-1) is never used, Azure DevOps refuses it too; use rsa-sha2-512,rsa-sha2-256")
    unknown = [a for a in names if a not in HOST_KEY_ALGORITHMS]
    if unknown:
        raise errors.InvalidInput(field, f"{errors.shown(unknown[0])} is not a host key algorithm the app supports "
                                         f"({', '.join(HOST_KEY_ALGORITHMS)})")
    return names


def _connect(host: str, port: int, policy, field: str, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` that ``policy`` allows, checked on the connected address."""
    policy.check_connection_host(host, port, field=field)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SSHError(f"cannot connect to {host}:{port} over SSH: {exc.strerror or type(exc).__name__}") from None
    try:
        policy.check_peer(host, port, sock.getpeername()[0], field=field)
    except BaseException:
        sock.close()
        raise
    return sock


def _transport(sock: socket.socket, algos: tuple[str, ...], where: str, timeout: float):
    """A paramiko client transport on ``sock``, limited to host key algorithms ``algos``,
    handshake done. Raises SSHError naming ``where``."""
    import paramiko

    transport = paramiko.Transport(sock, disabled_algorithms=DISABLED_ALGORITHMS)
    transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
    try:
        if algos:
            transport.get_security_options().key_types = algos
        transport.start_client(timeout=timeout)
    except paramiko.SSHException as exc:
        transport.close()
        text = str(exc)
        if "no acceptable host key" in text.lower() or "incompatible" in text.lower():
            raise SSHError(f"{where}: the SSH server offers no host key algorithm of {', '.join(algos) or 'the client'} "
                           f"(sshHostkeyAlgos); it said: {text}") from None
        raise SSHError(f"{where}: SSH handshake failed: {text}") from None
    except (OSError, EOFError) as exc:
        transport.close()
        raise SSHError(f"{where}: SSH handshake failed: {type(exc).__name__}: {exc}") from None
    return transport


def _host_key(transport, host: str, port: int) -> HostKey:
    key = transport.get_remote_server_key()
    return HostKey(host=host, port=port, key_type=key.get_name(), key=base64.b64encode(key.asbytes()).decode("ascii"))


def scan_host_key(host: str, port: int, algos: tuple[str, ...], *, policy, field: str = "url",
                  timeout: float = SSH_TIMEOUT_S) -> HostKey:
    """The host key ``host:port`` presents when offered ``algos`` only (all of the client's when
    empty), without authenticating. Raises DestinationRefused (``field``; ``policy`` refused the
    host or the address connected), SSHError."""
    sock = _connect(host, port, policy, field, timeout)
    transport = _transport(sock, algos, f"ssh://{host}:{port}", timeout)
    try:
        return _host_key(transport, host, port)
    finally:
        transport.close()


@dataclass(frozen=True)
class SSHIdentity:
    """What the git client authenticates with: ``pkey`` (a paramiko RSA key, its private part never
    shown), the server's pinned ``host_key`` and the host key algorithms ``algos`` to offer."""

    pkey: object = field(repr=False)
    host_key: HostKey
    algos: tuple[str, ...] = ()


class _Channel:
    """dulwich's view of one remote git command: ``read`` (exact reads), ``write``, ``can_read``,
    ``close`` and ``stderr``."""

    def __init__(self, transport, channel):
        self._transport, self._channel = transport, channel
        self.read = channel.makefile("rb").read  # exact-length reads; recv() gives short ones
        self.write = channel.sendall
        self.stderr = channel.makefile_stderr("rb")

    def can_read(self) -> bool:
        return self._channel.recv_ready()

    def close(self) -> None:
        try:
            self._channel.close()
        finally:
            self._transport.close()


class PinnedSSHVendor:
    """A ``dulwich.client.SSHVendor`` on paramiko for one run: connections go only where ``policy``
    (:class:`shared.trust.GitPolicy`) allows, must present ``identity.host_key``, and authenticate
    with ``identity.pkey`` as the URL's user. Errors: DestinationRefused, :class:`HostKeyMismatch`,
    SSHError, and :class:`shared.ports.git.GitAuthError` when the server refuses the key."""

    def __init__(self, identity: SSHIdentity, policy, *, timeout: float = SSH_TIMEOUT_S):
        self.identity, self.policy, self.timeout = identity, policy, timeout

    def run_command(self, host, command, username=None, port=None, password=None, key_filename=None,
                    ssh_command=None, protocol_version=None):
        import paramiko

        from shared.ports.git import GitAuthError

        # password, key_filename and ssh_command (dulwich's default "ssh") are ignored: the key is
        # the run's, and no program is run.
        host = (host or "").strip("[]").lower()
        port = int(port or 22)
        where = f"ssh://{host}:{port}"
        pinned = self.identity.host_key
        sock = _connect(host, port, self.policy, "url", self.timeout)
        transport = _transport(sock, self.identity.algos, where, self.timeout)
        try:
            seen = _host_key(transport, host, port)
            if (seen.host, seen.port) != (pinned.host, pinned.port) or (seen.key_type, seen.key) != (pinned.key_type, pinned.key):
                raise HostKeyMismatch(f"{where} presented host key {seen.key_type} {fingerprint(seen.key)}, not the one "
                                      f"pinned for this run ({pinned.key_type} {fingerprint(pinned.key)}); nothing was sent")
            try:
                transport.auth_publickey(username or "git", self.identity.pkey)
            except paramiko.AuthenticationException:
                raise GitAuthError(f"the SSH server {where} refused the SSH key (publickey) for user "
                                   f"{username or 'git'!r}") from None
            channel = transport.open_session(timeout=self.timeout)
            channel.exec_command(command if isinstance(command, bytes) else command.encode("utf-8"))
            return _Channel(transport, channel)
        except paramiko.SSHException as exc:  # after the handshake: channel refused, connection lost
            transport.close()
            raise SSHError(f"{where}: {exc}") from None
        except BaseException:
            transport.close()
            raise
