"""Benchmark: 10,000 Flux events through routing, dedupe and delivery to local webhooks answering after 20 ms.

    .venv/bin/python -m bench.notify_bench [--events 10000] [--delay 0.02] [--targets 2]
                                           [--concurrency 32] [--store table|memory]

The batch goes through the real :class:`shared.notify.delivery.Forwarder` (the Event Hub function's
core): decode, route (``--targets`` generic webhooks plus one that filters everything out), dedupe
(``table``: Azure Table storage on Azurite from ``.azurite/``, the production store; ``memory``: in
process) and delivery over one pooled transport with ``--concurrency`` workers per target (as
``NOTIFY_CONCURRENCY``). The targets run in a child process. Prints events/s, deliveries/s, p50/p99 of the
delivery latency (first send attempt → 2xx) and of the time from the batch start to each delivery, and
the forwarder's CPU time in all and per event. With 20 ms targets, serial delivery would cap at 50
deliveries/s per target and ``--concurrency`` 32 at 1,600/s per target. The goal on a 2-CPU machine
(issue #13): at least 700 events/s and at most 1.2 ms of forwarder CPU per event.
Exit code 1 if any delivery failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class _Vault:
    def __init__(self, values):
        self.values = values

    def get_secret(self, name, field="name"):
        from shared.ports.azure.keyvault import SecretValue

        return SecretValue(name, self.values[name], None, None, None)


def _serve_targets(delay: float, conn) -> None:
    """Child process: the target server (own interpreter, so it does not share the forwarder's GIL)."""
    from tests.peers.http_targets import TargetServer

    server = TargetServer(delay=delay).start()
    conn.send(server.url)
    conn.recv()  # any message: report and stop
    conn.send(len(server.delivered("/hook/")))
    server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--delay", type=float, default=0.02, help="target answer delay, seconds")
    ap.add_argument("--targets", type=int, default=2, help="webhook targets taking every event")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--store", choices=("table", "memory"), default="table")
    args = ap.parse_args(argv)

    from shared.notify.deadletter import MemoryDeadLetterStore
    from shared.notify.dedupe import MemoryDedupeStore, TableDedupeStore
    from shared.notify.delivery import DeliverySettings, Forwarder, Message
    from shared.notify.routing import parse_routing
    from shared.notify.storage import Storage, _session
    from shared.notify.targets import SecretCache, Sender
    from tests.peers.local_notify import flux_event
    import multiprocessing

    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_serve_targets, args=(args.delay, child), daemon=True)
    proc.start()
    targets_url = parent.recv()
    azurite = None
    try:
        names = [f"hook-{i}" for i in range(args.targets)]
        vault = _Vault({f"url-{n}": f"{targets_url}/hook/{n}" for n in names} | {"url-none": targets_url + "/none"})
        doc = {"dedupeWindow": "5m", "targets": [{"name": n, "type": "generic", "urlSecret": f"url-{n}"} for n in names]
               + [{"name": "none", "type": "generic", "urlSecret": "url-none", "clusters": ["nowhere"]}]}
        config = parse_routing(json.dumps(doc))
        settings = DeliverySettings(concurrency=args.concurrency, batch_budget=600)
        if args.store == "table":
            from tests.peers.azurite import AzuriteNotInstalled, AzuriteServer

            try:
                azurite = AzuriteServer().start()
            except AzuriteNotInstalled as exc:
                print(f"✗ {exc} (or run with --store memory)", file=sys.stderr)
                return 1
            storage = Storage(connection_string=azurite.connection_string, pool_size=args.concurrency)
            dedupe = TableDedupeStore(storage.table_client("benchdedupe"), window=config.dedupe_window)
            dedupe.ensure_table()
        else:
            dedupe = MemoryDedupeStore(window=config.dedupe_window)
        sender = Sender(_session(args.concurrency), SecretCache(lambda: vault), pool_size=args.concurrency)
        fwd = Forwarder(config, sender, dedupe, MemoryDeadLetterStore(), settings)
        messages = [Message(body=json.dumps(flux_event(f"event {i}", revision=f"main@sha1:{i:040x}")).encode(),
                            owner=f"bench/0/{i}", source={"trigger": "bench"}) for i in range(args.events)]
        fwd.forward(messages[:10])  # warm up: secrets, pools, table
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = fwd.forward(messages[10:])
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        fwd.close()
        delivered = [d for d in result.deliveries if d.outcome == "delivered"]
        n_events = len(messages) - 10
        parent.send("report")
        received = parent.recv()
        print(f"events            {n_events} in {elapsed:.2f} s, {args.targets} webhook targets answering after "
              f"{args.delay * 1000:.0f} ms, concurrency {args.concurrency}, dedupe store {args.store}")
        print(f"throughput        {n_events / elapsed:,.0f} events/s, {len(delivered) / elapsed:,.0f} deliveries/s "
              f"(serial at this latency: {1 / max(args.delay, 1e-9):,.0f}/s per target; {args.concurrency} workers "
              f"per target: {args.concurrency / max(args.delay, 1e-9):,.0f}/s per target)")
        lat = [d.latency * 1000 for d in delivered]
        fin = [d.finished * 1000 for d in delivered]
        print(f"delivery latency  p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, mean {statistics.mean(lat):.1f} ms"
              "  (first send attempt → 2xx)")
        print(f"time to delivery  p50 {pct(fin, 50):.0f} ms, p99 {pct(fin, 99):.0f} ms  (from the batch start)")
        print(f"forwarder CPU     {cpu:.1f} s in {elapsed:.1f} s, {cpu / n_events * 1000:.2f} ms per event "
              f"({os.cpu_count()} CPUs on this machine)")
        print(f"outcomes          {result.summary()}; webhook requests answered 2xx: {received}")
        ok = len(delivered) == n_events * args.targets and not result.dead_letters
        return 0 if ok else 1
    finally:
        proc.terminate()
        proc.join(5)
        if azurite is not None:
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
