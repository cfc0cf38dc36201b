"""A raw TCP listener on 127.0.0.1 that records every connection and every byte it receives.

It stands in for an attacker's endpoint (or the metadata service) in the trust-boundary tests: the
attack names it, and the test asserts that nothing connected to it, or that a connection made
before a check refused it carried no byte (:attr:`RawListener.received`). It never answers, so a
client that does send something blocks until its own timeout; :meth:`close` ends everything.

Fixture: ``raw_listener`` (a fresh started listener per test).
"""

from __future__ import annotations

import socket
import threading

import pytest


class RawListener:
    """``port``, ``connections`` (how many were accepted), ``received`` (all bytes, concatenated)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name=f"raw-listener:{self.port}", daemon=True)
        self._thread.start()

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.connections += 1
                self._clients.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._data.extend(chunk)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            for c in self._clients:
                try:
                    c.close()
                except OSError:
                    pass
        self._sock.close()


@pytest.fixture
def raw_listener():
    """A started :class:`RawListener` on 127.0.0.1."""
    listener = RawListener()
    try:
        yield listener
    finally:
        listener.close()
