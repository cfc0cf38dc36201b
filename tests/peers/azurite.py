"""Azurite (npm ``azurite`` 3.37.0): real Azure Blob, Queue and Table storage APIs on 127.0.0.1.

Installed by ``.ci/setup`` into ``.azurite/`` (``npm install --prefix .azurite azurite@3.37.0``). The
tests start it themselves: ``--inMemoryPersistence``, every service on port 0 (the OS picks free
ports; Azurite prints the ones it bound; the server is ready once all three services listen),
``--skipApiVersionCheck`` (newer SDK api-versions). If it is not installed, the fixtures FAIL with the
install command; they never skip.

Fixtures: ``azurite`` (one server per test session), ``azurite_storage`` (a
``shared.notify.storage.Storage`` on it) and ``notify_names`` (a fresh table and container name per
test, so tests do not see each other's rows). :class:`AzuriteServer` can also be started per test
(``stop()`` makes a storage outage).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AZURITE_BIN = os.path.join(ROOT, ".azurite", "node_modules", ".bin", "azurite")
INSTALL_HINT = "install it with: bash .ci/setup   (or: npm install --prefix .azurite --no-save azurite@3.37.0)"
# Azurite's documented well-known development account (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTEN_RE = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://127\.0\.0\.1:(\d+)")


class AzuriteNotInstalled(RuntimeError):
    pass


class AzuriteServer:
    """One Azurite process (blob + table + queue) on loopback with in-memory persistence."""

    def __init__(self, binary: str = AZURITE_BIN):
        self.binary = binary
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self._lines: list[str] = []
        self._pump: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> "AzuriteServer":
        if not os.access(self.binary, os.X_OK):
            node = shutil.which("node")
            raise AzuriteNotInstalled(f"Azurite is not installed at {self.binary}"
                                      + ("" if node else " (and node is not on PATH)") + "; " + INSTALL_HINT)
        cmd = [self.binary, "--inMemoryPersistence", "--skipApiVersionCheck", "--disableProductStyleUrl",
               "--blobHost", "127.0.0.1", "--blobPort", "0", "--tableHost", "127.0.0.1", "--tablePort", "0",
               "--queueHost", "127.0.0.1", "--queuePort", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        ready = threading.Event()

        def pump():
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self._lines.append(line.rstrip())
                m = _LISTEN_RE.search(line)
                if m:
                    self.ports[m.group(1).lower()] = int(m.group(2))
                    if {"blob", "queue", "table"} <= set(self.ports):
                        ready.set()

        self._pump = threading.Thread(target=pump, name="azurite-stdout", daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = "\n".join(self._lines[-20:])
                self.stop()
                raise RuntimeError(f"Azurite did not start:\n{out}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                # Azurite waits for clients' keep-alive connections on SIGTERM; in-memory data needs no flush
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            # the pump reads to the end of the output of the exited process; then the pipe is closed
            if self._pump is not None:
                self._pump.join(timeout=5)
            self.proc.stdout.close()
        self.proc = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['blob']}/{ACCOUNT}"

    @property
    def table_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['table']}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['queue']}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};"
                f"TableEndpoint={self.table_endpoint};")

    def __enter__(self) -> "AzuriteServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_or_fail() -> AzuriteServer:
    try:
        return AzuriteServer().start()
    except AzuriteNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def azurite():
    """A started :class:`AzuriteServer` shared by the session (fails, never skips, if not installed)."""
    server = start_or_fail()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azurite_storage(azurite):
    """``shared.notify.storage.Storage`` on the session's Azurite."""
    from shared.notify.storage import Storage

    return Storage(connection_string=azurite.connection_string, pool_size=32)


@pytest.fixture
def notify_names():
    """Fresh dedupe table and dead-letter container names for one test."""
    suffix = uuid.uuid4().hex[:10]
    return {"table": f"dedupe{suffix}", "container": f"deadletter-{suffix}"}
