"""Send a sample batch of Flux events through the forwarder locally and show what each target received.

    .venv/bin/python -m tests.peers.local_notify

Starts Azurite (Table + Blob), the Key Vault test server and the notification-target server on 127.0.0.1,
writes a routing file, seeds Key Vault with the webhook URLs, the Azure DevOps PAT and the HMAC keys,
then calls the indexed Event Hub function (``flux_events_eventhub``) with a real ``func.EventHubEvent``
batch built by the library's converter, and the HTTP function (``flux_events_http``) with a signed
``generic-hmac`` success event. Prints each target's requests and the dead letters.

Also the helpers the tests share: :func:`flux_event`, :func:`eventhub_batch`, :func:`routing_yaml`,
:func:`wire` (app settings + ``shared.services`` on local peers).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types
from datetime import datetime, timedelta, timezone

SHA = "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"
UID = "7d0cdc51-ddcf-4743-b223-83ca5c699632"
PAT = "ado-pat-" + "x" * 20  # test value, a stand-in for a real PAT
HTTP_HMAC = "cluster-hmac-key-for-tests"
AUDIT_HMAC = "audit-hmac-key-for-tests"


def flux_event(message: str = "Health check failed after 30s", *, severity: str = "error",
               reason: str = "HealthCheckFailed", kind: str = "Kustomization", name: str = "apps",
               namespace: str = "flux-system", cluster: str | None = "prod-weu-1", revision: str | None = None,
               uid: str = UID, timestamp: str = "2026-08-07T10:00:00Z", **metadata: str) -> dict:
    """A Flux event as notification-controller posts it to Event Hub (unprefixed metadata)."""
    meta = dict(metadata)
    meta["revision"] = revision or f"main@sha1:{SHA}"
    if cluster is not None:
        meta["cluster"] = cluster
    return {"involvedObject": {"kind": kind, "namespace": namespace, "name": name, "uid": uid,
                               "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "resourceVersion": "123"},
            "severity": severity, "timestamp": timestamp, "message": message, "reason": reason,
            "metadata": meta, "reportingController": "kustomize-controller",
            "reportingInstance": "kustomize-controller-7c7b47f5f-8bhrp"}


def now_rfc3339(offset: float = 0.0) -> str:
    """Now (plus ``offset`` seconds) as notification-controller writes event timestamps (UTC, seconds)."""
    return (datetime.now(timezone.utc) + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def eventhub_batch(bodies: list, *, partition: str = "0", first_sequence: int = 1, hub: str = "flux-events",
                   enqueued_time: datetime | None = None):
    """``list[func.EventHubEvent]`` as the worker hands it to a ``cardinality=many`` function, decoded by
    the library's own ``EventHubTriggerConverter`` (functions-platform.md §1.2); the first message was
    enqueued at ``enqueued_time`` (default 2026-08-07 10:00 UTC), the next ones 1 ms apart."""
    from azure.functions import meta
    from azure.functions.eventhub import EventHubTriggerConverter

    raw = [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]
    start = enqueued_time or datetime(2026, 8, 7, 10, 0, 0, tzinfo=timezone.utc)
    system = [{"EnqueuedTimeUtc": (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
               "SequenceNumber": first_sequence + i, "Offset": str(1000 + i), "PartitionKey": None}
              for i in range(len(raw))]
    trigger_metadata = {
        "SystemPropertiesArray": meta.Datum(type="json", value=json.dumps(system)),
        "PartitionContext": meta.Datum(type="json", value=json.dumps(
            {"PartitionId": partition, "EventHubName": hub, "ConsumerGroup": "forwarder",
             "FullyQualifiedNamespace": "fleet.servicebus.windows.net"})),
        "PropertiesArray": meta.Datum(type="json", value=json.dumps([{} for _ in raw])),
    }
    data = meta.Datum(type="collection_bytes", value=types.SimpleNamespace(bytes=raw))
    return EventHubTriggerConverter.decode(data, trigger_metadata=trigger_metadata)


def routing_yaml(ado_base_url: str, *, dedupe_window: str = "5m", timeout: float = 2.0) -> str:
    return f"""\
# Which targets take which Flux events (semantics of Flux Alerts).
defaultCluster: unknown
clusterMetadataKey: cluster
dedupeWindow: {dedupe_window}
http:
  hmacSecret: flux-hmac-{{cluster}}
targets:
  - name: ado-fleet
    type: azuredevops
    organization: contoso
    project: platform
    repository: fleet
    patSecret: ado-status-pat
    baseUrl: {ado_base_url}
    timeout: {timeout}
  - name: teams-ops
    type: msteams
    urlSecret: teams-ops-webhook
    eventSeverity: error
    timeout: {timeout}
  - name: slack-prod
    type: slack
    urlSecret: slack-prod-webhook
    channel: "#flux-prod"
    clusters: ["prod-*"]
    eventSources:
      - kind: Kustomization
        name: "*"
      - kind: HelmRelease
        name: "*"
        namespace: apps
    exclusionList: ["^Dependencies do not meet"]
    timeout: {timeout}
  - name: audit
    type: generic-hmac
    urlSecret: audit-webhook
    hmacSecret: audit-hmac
    timeout: {timeout}
"""


def seed_secrets(vault_server, targets_url: str, clusters=("prod-weu-1", "prod-neu-1", "dev-weu-1")) -> dict:
    """Key Vault content for :func:`routing_yaml`; returns name → value."""
    values = {"ado-status-pat": PAT, "teams-ops-webhook": f"{targets_url}/teams/ops-7f3a9c",
              "slack-prod-webhook": f"{targets_url}/slack/T000/B000/secretpath", "audit-webhook": f"{targets_url}/hook/audit",
              "audit-hmac": AUDIT_HMAC}
    for c in clusters:
        values[f"flux-hmac-{c}"] = HTTP_HMAC
    for k, v in values.items():
        vault_server.seed(k, v)
    return values


def wire(environ: dict, *, routing_file: str, storage, vault, table: str, container: str,
         devops_credential=None, **settings: str) -> None:
    """Point app settings and ``shared.services`` at local peers and drop the cached forwarder."""
    from shared import notify, services

    environ.update({"NOTIFY_ROUTING": routing_file, "NOTIFY_DEDUPE_TABLE": table,
                    "NOTIFY_DEADLETTER_CONTAINER": container, "NOTIFY_EVENTHUB_NAME": "flux-events",
                    "NOTIFY_EVENTHUB_CONSUMER_GROUP": "forwarder"})
    environ.update(settings)
    services.set_storage_factory(lambda: storage)
    services.set_keyvault_factory(lambda: vault)
    if devops_credential is not None:
        services.set_devops_credential_factory(lambda: devops_credential)
    notify.reset_forwarder()


def unwire() -> None:
    from shared import notify, services

    notify.reset_forwarder()
    services.set_storage_factory(None)
    services.set_keyvault_factory(None)
    services.set_devops_credential_factory(None)


def indexed_functions() -> dict:
    """``function_app`` indexed as the worker does, by name, without tripping the non-idempotent name
    check of ``get_functions()`` when another module already indexed the same app."""
    from function_app import app

    saved = app.functions_bindings
    app.functions_bindings = {}
    try:
        return {f.get_function_name(): f for f in app.get_functions()}
    finally:
        app.functions_bindings = saved


def main() -> int:
    import azure.functions as func

    from shared.ports.azure.keyvault import KeyVault
    from shared.notify import forwarder
    from shared.notify.storage import Storage
    from shared.notify.targets import hmac_signature
    from tests.peers.azurite import AzuriteNotInstalled, AzuriteServer
    from tests.peers.http_targets import TargetServer
    from tests.peers.keyvault import KeyVaultServer

    import logging

    fns = indexed_functions()
    shown = logging.StreamHandler(sys.stdout)
    shown.setFormatter(logging.Formatter("  %(message)s"))
    fn_log = logging.getLogger("functions.notifications")  # the functions' batch summaries
    fn_log.addHandler(shown)
    fn_log.setLevel(logging.INFO)
    try:
        azurite = AzuriteServer().start()
    except AzuriteNotInstalled as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    with KeyVaultServer() as kv_server, TargetServer() as targets, tempfile.TemporaryDirectory() as tmp:
        try:
            seed_secrets(kv_server, targets.url)
            targets.allow_pat(PAT)
            routing = os.path.join(tmp, "routing.yaml")
            with open(routing, "w") as fh:
                fh.write(routing_yaml(targets.url))
            vault = KeyVault(kv_server.vault_url, kv_server.credential(), connection_verify=kv_server.ca_file,
                             verify_challenge_resource=False)
            wire(os.environ, routing_file=routing, storage=Storage(connection_string=azurite.connection_string),
                 vault=vault, table="fluxnotifydedupe", container="flux-notify-deadletter")
            print(f"► routing file {routing}:\n{routing_yaml(targets.url)}")
            batch = [
                flux_event("Health check failed after 30s: deployment/web not ready"),
                flux_event("Health check failed after 30s: deployment/web not ready"),  # duplicate
                flux_event("Dependencies do not meet ready condition", reason="DependencyNotReady",
                           cluster="prod-neu-1"),
                flux_event("Helm upgrade succeeded", severity="info", reason="UpgradeSucceeded", kind="HelmRelease",
                           name="podinfo", namespace="apps", cluster="dev-weu-1"),
                b'{"involvedObject": "not an object"}',  # malformed: dead-lettered
            ]
            print(f"► Event Hub batch of {len(batch)} messages → flux_events_eventhub")
            fns["flux_events_eventhub"].get_user_function()(eventhub_batch(batch))
            success = json.dumps(flux_event("Reconciliation finished in 2s, next run in 10m", severity="info",
                                            reason="ReconciliationSucceeded", commit_status="update",
                                            timestamp=now_rfc3339())).encode()
            req = func.HttpRequest("POST", "http://localhost/api/flux/events/prod-weu-1", body=success,
                                   headers={"X-Signature": hmac_signature(success, HTTP_HMAC)},
                                   route_params={"cluster": "prod-weu-1"})
            resp = fns["flux_events_http"].get_user_function()(req)
            print(f"► generic-hmac success event → POST /api/flux/events/prod-weu-1: {resp.status_code} "
                  f"{resp.get_body().decode()}")
            print("\n► what each target received")
            for label, prefix in (("Teams (teams-ops)", "/teams/"), ("Slack (slack-prod)", "/slack/"),
                                  ("webhook (audit, generic-hmac)", "/hook/")):
                got = targets.delivered(prefix)
                print(f"  {label}: {len(got)} request(s)")
                for r in got:
                    body = r.json()
                    if prefix == "/teams/":
                        items = body["attachments"][0]["content"]["body"][0]["items"]
                        print(f"    card: {items[0]['text']} | {items[1]['text']}")
                    elif prefix == "/slack/":
                        print(f"    {body['channel']}: {body['attachments'][0]['fallback']}")
                    else:
                        print(f"    {body['involvedObject']['kind']}/{body['involvedObject']['name']} "
                              f"{body['reason']} (X-Signature {r.headers.get('x-signature', '')[:20]}…)")
            statuses = targets.ado_statuses("contoso", "platform", "fleet", SHA)
            print(f"  Azure DevOps commit {SHA[:12]}: {len(statuses)} status(es)")
            for s in statuses:
                print(f"    {s['context']['genre']} {s['context']['name']}: {s['state']} ({s['description']})")
            dead = list(forwarder().deadletters.names())
            print(f"\n► dead letters: {len(dead)}")
            for name in dead:
                rec = forwarder().deadletters.get(name)
                print(f"  {name}: {rec['error']}")
        finally:
            unwire()
            azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
