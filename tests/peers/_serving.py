"""Start and stop a ``socketserver`` server on a daemon thread (shared by the HTTP test peers)."""

from __future__ import annotations

import threading


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
