"""Kubernetes API test servers held in a child process for the benchmarks (bench/rotation_bench.py,
bench/fleet_bench.py), so that their accept and poll threads do not compete with the measured run for
the GIL."""

from __future__ import annotations

from collections import Counter


def serve(conn, n: int, prepare=None) -> None:
    """Start ``n`` :class:`tests.peers.kube_api.KubeApiServer`, run ``prepare(servers)`` if given, send
    their kubeconfigs over ``conn``, then answer commands until ``("stop",)``:
    ``("delay", seconds)`` sets every server's answer latency; every command (``("counts",)`` too)
    answers ``{method: requests}`` since the previous one."""
    from tests.peers.kube_api import KubeApiServer

    servers = [KubeApiServer().start() for _ in range(n)]
    try:
        if prepare is not None:
            prepare(servers)
        conn.send([s.kubeconfig() for s in servers])
        while True:
            cmd = conn.recv()
            counts = Counter(r.method for s in servers for r in s.request_log)
            for s in servers:
                s.request_log.clear()
            if cmd[0] == "delay":
                for s in servers:
                    s.latency = cmd[1]
            conn.send(dict(counts))
            if cmd[0] == "stop":
                return
    finally:
        for s in servers:
            s.stop()
