"""``python -m shared.notify``: check a routing file, list and replay dead letters.

    python -m shared.notify check routing.yaml      # or blob:<container>/<name>
    python -m shared.notify list [--prefix undeliverable/] [--limit 100]
    python -m shared.notify replay [--prefix undeliverable/ | --name BLOB ...] [--limit 100] [--force]
    python -m shared.notify secret-name prod.weu-1 [--template flux-hmac-{cluster}]
    python -m shared.notify send --file event.json     # publish Flux event(s) to the hub, end to end

``list``/``replay`` use the same app settings as the Functions (``NOTIFY_ROUTING``, storage,
``KEY_VAULT_URL``); ``send`` the hub's (``NOTIFY_EVENTHUB__fullyQualifiedNamespace``, ``NOTIFY_EVENTHUB_NAME``).
Exit codes: 0 done, 1 invalid input (a bad flag too: one ``✗ <flag>: …`` line, as :mod:`shared.cli`) or
something still failing, 2 storage unavailable.
"""

from __future__ import annotations

import json
import sys

PROG = ".venv/bin/python -m shared.notify"


def build_parser():
    """The command line on :class:`shared.cli.Parser`: a bad flag, value or command raises
    :class:`shared.cli.UsageError` naming it instead of printing the usage and exiting 2."""
    from shared.cli import Parser

    ap = Parser(prog=PROG, description="Check a routing file, list and replay dead letters, send the app's own events.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="command", parser_class=Parser)
    check = sub.add_parser("check", help="validate a routing file")
    check.add_argument("file", help="a path, or blob:<container>/<name> in the forwarder's storage")
    for name in ("list", "replay"):
        p = sub.add_parser(name, help=f"{name} dead letters")
        p.add_argument("--prefix", default=None)
        p.add_argument("--limit", type=int, default=100)
        if name == "replay":
            p.add_argument("--name", action="append", default=None, help="a dead-letter blob name (repeatable)")
            p.add_argument("--force", action="store_true", help="resend pairs already delivered")
    secret = sub.add_parser("secret-name", help="the Key Vault secret holding a cluster's generic-hmac key")
    secret.add_argument("cluster")
    secret.add_argument("--template", default="flux-hmac-{cluster}", help="the routing file's http.hmacSecret")
    send = sub.add_parser("send", help="publish Flux event(s) from a JSON file to the Event Hub")
    send.add_argument("--file", required=True, help="one Flux event (JSON object) or an array of them")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (0, 1, or 2 when storage is unavailable)."""
    from shared.cli import UsageError

    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    if args.cmd == "send":
        from .app_events import send_file

        return send_file(args.file)
    if args.cmd == "secret-name":
        from .events import is_cluster_name
        from .routing import RoutingConfig

        if not is_cluster_name(args.cluster):
            print("✗ cluster: not a cluster name (1-63 lower-case letters, digits, '.', '_' or '-')", file=sys.stderr)
            return 1
        try:
            print(RoutingConfig(targets=(), hmac_secret_template=args.template).hmac_secret_name(args.cluster))
        except ValueError as exc:
            print(f"✗ --template: {exc}", file=sys.stderr)
            return 1
        return 0

    from shared.errors import FluxOpsError

    from .dedupe import StorageUnavailable

    try:
        if args.cmd == "check":
            from .routing import load_routing

            reader = None
            if args.file.startswith("blob:"):  # the storage of the app settings
                from shared import services

                reader = services.storage().read_blob
            cfg = load_routing(args.file, blob_reader=reader)
            print(f"✔ {args.file}: {len(cfg.targets)} target(s): "
                  + ", ".join(f"{t.name} ({t.type})" for t in cfg.targets))
            return 0
        from . import forwarder

        if args.cmd == "list":
            for name in forwarder().deadletters.names(args.prefix, args.limit):
                print(name)
            return 0
        report = forwarder().replay(names=args.name, prefix=args.prefix, limit=args.limit, force=args.force)
        print(json.dumps(report, indent=2))
        return 1 if report["failed"] or report["invalid"] else 0
    except StorageUnavailable as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 2
    except FluxOpsError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
