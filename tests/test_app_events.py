"""The app's own events (issue 15): built from rotation and bootstrap results, published through the real
``EventHubProducerClient`` to the Event Hubs AMQP test peer, then fed, as the Functions host would, to the
indexed Event Hub trigger, which routes them to the recording Teams and Slack targets.

Peers on 127.0.0.1: the AMQP 1.0 Event Hubs peer (CBS, ``$management``, sender links), Azurite (dedupe and
dead letters), the Key Vault test server (webhook URLs, PATs, kubeconfigs), the Kubernetes API test
servers, the Azure DevOps-style git server and the notification-target server.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest

from shared import rotation, services
from shared.notify import app_events
from shared.notify.events import parse_event
from shared.notify.routing import RoutingConfigError, parse_routing
from shared.ports.azure.eventhub import EventHubPublisher, PublishResult
from shared.rotation import RotationSettings
from shared.rotation.registry import ClusterRecord
from tests.peers.entra_tokens import JwtTestCredential
from tests.peers.local_notify import seed_secrets, unwire, wire
from tests.test_eventhub_publish import HUB, WrongAudience, publisher_for
from tests.test_bootstrap_e2e import cluster_registry, env  # noqa: F401 - fixtures
from tests.test_rotation import fleet, gitrepo_crd, new_pat_version  # noqa: F401 - fixtures

FAST = RotationSettings(concurrency=4)

ROUTING = """\
dedupeWindow: 5m
targets:
  - name: teams-ops
    type: msteams
    urlSecret: teams-ops-webhook
    eventSeverity: error
    eventSources: [{kind: FleetCluster, name: "*"}]
    timeout: 1.5
  - name: slack-prod
    type: slack
    urlSecret: slack-prod-webhook
    channel: "#fleet"
    eventSources: [{kind: FleetCluster, name: "*"}]
    timeout: 1.5
  - {name: ado-fleet, type: azuredevops, organization: contoso, project: platform, repository: fleet,
     patSecret: ado-status-pat, baseUrl: "{base}", timeout: 1.5}
"""


@pytest.fixture
def wired_publisher(eventhub_peer):
    services.set_eventhub_publisher_factory(lambda: publisher_for(eventhub_peer))
    yield eventhub_peer
    services.set_eventhub_publisher_factory(None)


@pytest.fixture
def forwarder_env(functions_by_name, azurite_storage, notify_names, keyvault_server, keyvault, http_targets,
                  tmp_path, monkeypatch):
    """The forwarder on local peers with :data:`ROUTING`; ``feed(peer)`` hands what the peer recorded since
    the last feed to the indexed ``flux_events_eventhub`` function, one invocation per partition."""
    seed_secrets(keyvault_server, http_targets.url)
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING.replace("{base}", http_targets.url))
    settings: dict = {}
    wire(settings, routing_file=str(routing), storage=azurite_storage, vault=keyvault, table=notify_names["table"],
         container=notify_names["container"], NOTIFY_BACKOFF_BASE_SECONDS="0.01", NOTIFY_MAX_ATTEMPTS="2")
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    fed = {"n": 0}

    def feed(peer):
        fn = functions_by_name["flux_events_eventhub"].get_user_function()
        with peer._lock:
            new = peer.received[fed["n"]:]
            fed["n"] = len(peer.received)
        saved = peer.received
        peer.received = new  # trigger_batches of the new events only
        try:
            batches = peer.trigger_batches(HUB)
        finally:
            peer.received = saved
        for batch in batches:
            fn(batch)
        return sum(len(b) for b in batches)

    yield type("ForwarderEnv", (), {"targets": http_targets, "feed": staticmethod(feed)})
    unwire()


def decoded(peer) -> list[dict]:
    return [json.loads(b) for b in peer.bodies(HUB)]


# --- the events ---------------------------------------------------------------------------------------


def test_app_events_are_flux_events_routed_by_fleetcluster_sources():
    ev = app_events.event("aks-weu-1", "PATExpiringSoon", "PAT ... expires", severity="error",
                          namespace="flux-system", metadata={"secret": "fleet-pat"})
    parsed = parse_event(ev)
    assert (parsed.kind, parsed.name, parsed.namespace, parsed.cluster) == ("FleetCluster", "aks-weu-1",
                                                                         "flux-system", "aks-weu-1")
    assert parsed.reporting_controller == "flux-aks-functions" and parsed.metadata["secret"] == "fleet-pat"
    assert datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).tzinfo is not None

    cfg = parse_routing(ROUTING.replace("{base}", "https://dev.azure.com") + """\
  - name: flux-only
    type: generic
    urlSecret: hook
    eventSources: [{kind: Kustomization, name: "*"}]
""")
    assert [t.name for t in cfg.route(parsed)] == ["teams-ops", "slack-prod"]  # ADO: no commit to mark
    bootstrap_failed = parse_event(app_events.event("aks-weu-1", "BootstrapFailed", "x", severity="error",
                                                    metadata={"revision": "main@sha1:" + "a" * 40}))
    assert "ado-fleet" in [t.name for t in cfg.route(bootstrap_failed)]
    with pytest.raises(RoutingConfigError) as err:
        parse_routing("targets: [{name: t, type: generic, urlSecret: h, eventSources: [{kind: FleetClusters}]}]")
    assert err.value.field == "targets[0].eventSources[0].kind" and "FleetCluster" in str(err.value)
    fleet_op = app_events.fleet_operation("UpgradeWave", succeeded=False, message="wave 2 of 3: 2 cluster(s) failed",
                                          wave="2")
    assert (fleet_op["reason"], fleet_op["severity"], fleet_op["metadata"]) == (
        "UpgradeWaveFailed", "error", {"wave": "2", "operation": "UpgradeWave", "cluster": "fleet"})


def test_a_bad_setting_is_reported_by_publish_never_raised():
    base = {"NOTIFY_EVENTHUB__fullyQualifiedNamespace": "fleet-events.servicebus.windows.net"}  # no hub name
    services.set_eventhub_publisher_factory(lambda: EventHubPublisher.from_settings(base))
    try:
        result = app_events.publish([app_events.event("c0", "RotationFailed", "x", severity="error")])
    finally:
        services.set_eventhub_publisher_factory(None)
    assert isinstance(result, PublishResult) and result.failed == 1 and "NOTIFY_EVENTHUB_NAME" in result.error


# --- rotation: the whole loop ------------------------------------------------------------------------


def test_pat_near_expiry_reaches_teams_and_slack_once_then_dedupe_keeps_the_next_run_quiet(
        fleet, keyvault_server, keyvault, ado_git_server, wired_publisher, forwarder_env, caplog):
    caplog.set_level(logging.INFO)
    peer, t = wired_publisher, forwarder_env.targets
    expires = datetime.now(timezone.utc) + timedelta(days=3, hours=2)
    pat = new_pat_version(keyvault_server, ado_git_server, expires_on=expires)
    m = fleet.members[0]
    records = [fleet.record(m)]

    summary = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=FAST)

    assert summary.clusters[0].status == "updated" and len(summary.clusters[0].warnings) == 1
    [ev] = decoded(peer)
    assert ev["involvedObject"] == {"kind": "FleetCluster", "name": m.name, "namespace": m.namespace}
    assert (ev["reason"], ev["severity"], ev["reportingController"]) == ("PATExpiringSoon", "error",
                                                                         "flux-aks-functions")
    version = keyvault_server.versions("fleet-pat")[-1]
    assert ev["metadata"] == {"cluster": m.name, "secret": "fleet-pat", "secretVersion": version,
                              "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:00Z")}
    assert f"expires on {expires:%Y-%m-%d %H:%M} UTC, in 3 days" in ev["message"]
    assert "rotation events: 1 event(s) published" in caplog.text
    assert forwarder_env.feed(peer) == 1
    [card] = t.delivered("/teams/")
    items = card.json()["attachments"][0]["content"]["body"][0]["items"]
    assert items[0]["text"] == f"fleetcluster/{m.name}.{m.namespace}" and "expires on" in items[1]["text"]
    [slack] = t.delivered("/slack/")
    assert slack.json()["channel"] == "#fleet" and "fleet-pat" in slack.json()["attachments"][0]["text"]
    assert t.received("/contoso/") == []  # no commit to put a status on

    # the next run, within the dedupe window: the same event is published, and dropped as a duplicate
    rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=FAST)
    assert len(peer.bodies(HUB)) == 2 and forwarder_env.feed(peer) == 1
    assert len(t.delivered("/teams/")) == 1 and len(t.delivered("/slack/")) == 1
    for body in peer.bodies(HUB):
        assert pat.encode() not in body and fleet.old_pat.encode() not in body


def test_failures_give_one_event_per_cluster_and_a_run_summary_in_one_batch(
        fleet, keyvault_server, keyvault, ado_git_server, wired_publisher):
    peer = wired_publisher
    now = datetime.now(timezone.utc)
    expired = new_pat_version(keyvault_server, ado_git_server, expires_on=now - timedelta(days=2))
    records = [fleet.record(m) for m in fleet.members[:2]]
    records.append(ClusterRecord(name="lost", kubeconfig_secret="lost-kubeconfig", pat_secret="fleet-pat",
                                 git_url=fleet.url, allow_insecure_http=True).validate())

    summary = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=FAST)

    assert summary.failed == 3
    events = decoded(peer)
    by = {(e["reason"], e["involvedObject"]["name"]) for e in events}
    assert by == {("PATExpired", "c0"), ("PATExpired", "c1"), ("RotationFailed", "lost"),
                  ("RotationRunFailed", "fleet")}
    run = next(e for e in events if e["reason"] == "RotationRunFailed")
    assert run["message"] == ("credential rotation: 3 of 3 cluster(s) failed: c0, c1, lost; "
                              "they are tried again next run")
    assert run["metadata"] == {"cluster": "fleet", "checked": "3", "failed": "3", "updated": "0"}
    lost = next(e for e in events if e["reason"] == "RotationFailed")
    assert "lost-kubeconfig" in lost["message"] and lost["severity"] == "error"
    pat_ev = next(e for e in events if e["reason"] == "PATExpired")
    assert "expired on" in pat_ev["message"] and " ago" not in pat_ev["message"]  # stable across runs
    got = peer.received
    assert all(r.batched for r in got) and len({(r.connection, r.partition) for r in got}) == 1  # one batch
    assert all(expired.encode() not in r.body and fleet.old_pat.encode() not in r.body for r in got)


def test_an_all_well_run_publishes_nothing(fleet, keyvault_server, keyvault, ado_git_server, wired_publisher):
    new_pat_version(keyvault_server, ado_git_server)
    summary = rotation.rotate([fleet.record(m) for m in fleet.members], keyvault=keyvault,
                              credential=JwtTestCredential(), settings=FAST)
    assert summary.failed == 0 and wired_publisher.connections == 0


def test_a_dead_hub_costs_the_rotation_nothing_but_a_logged_failure(fleet, keyvault_server, keyvault, ado_git_server,
                                                                   caplog):
    from tests.peers.eventhub_amqp import EventHubPeer

    with EventHubPeer() as gone:  # a port where a hub was and is no more
        dead = publisher_for(gone, NOTIFY_PUBLISH_TIMEOUT_SECONDS="3")
    services.set_eventhub_publisher_factory(lambda: dead)
    before = app_events.stats()
    new = new_pat_version(keyvault_server, ado_git_server, expires_on=datetime.now(timezone.utc) + timedelta(days=2))
    records = [fleet.record(m) for m in fleet.members]
    try:
        with caplog.at_level(logging.INFO):
            t0 = time.monotonic()
            summary = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=FAST)
            took = time.monotonic() - t0
    finally:
        services.set_eventhub_publisher_factory(None)
    d = summary.to_dict()
    assert (d["checked"], d["updated"], d["failed"], d["warnings"]) == (3, 3, 0, 3)
    for m in fleet.members:
        from shared.rotation import digest

        assert digest(m.secret()["password"]) == digest(new)
    [warning] = [r for r in caplog.records if "publish failed" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "3 of 3 event(s) not sent (PATExpiringSoon)" in warning.getMessage()
    assert f"hub {HUB} in {gone.namespace}" in warning.getMessage()
    after = app_events.stats()
    assert after["failed"] - before["failed"] == 3 and after["failedPublishes"] - before["failedPublishes"] == 1
    assert took < 15


# --- bootstrap --------------------------------------------------------------------------------------------


def test_bootstrap_success_and_failure_are_published(functions_by_name, env, wired_publisher):
    from tests.test_bootstrap_e2e import call, request

    peer = wired_publisher
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    [ok] = decoded(peer)
    assert (ok["reason"], ok["severity"], ok["involvedObject"]) == (
        "BootstrapSucceeded", "info", {"kind": "FleetCluster", "name": "aks-weu-1", "namespace": "flux-system"})
    assert ok["metadata"]["revision"] == "main@sha1:" + body["repository"]["head"]
    assert ok["metadata"]["version"] == "v2.9.2" and ok["metadata"]["path"] == "./clusters/aks-weu-1"
    assert ok["message"].startswith(f"bootstrap of {env['url']} branch main path ./clusters/aks-weu-1 succeeded: "
                                    "Flux v2.9.2, 2 commit(s) pushed")

    # the same cluster asked to sync another path: 409, and its team hears of it
    status, body = call(functions_by_name, request(env, path="clusters/other", clusterName="aks-weu-1"))
    assert status == 409, body
    failed = decoded(peer)[1]
    assert (failed["reason"], failed["severity"], failed["involvedObject"]["name"]) == ("BootstrapFailed", "error",
                                                                                       "aks-weu-1")
    assert failed["message"].startswith(f"bootstrap of {env['url']} branch main path ./clusters/other failed: "
                                        'sync path configuration ("./clusters/other") would overwrite')

    # bad input is the caller's to fix (the 400 says what), and a body naming no cluster concerns no one
    assert call(functions_by_name, request(env, passwordSecret="no-such-pat"))[0] == 400
    assert call(functions_by_name, {"url": 1})[0] == 400
    assert len(peer.received) == 2
    assert env["pat"].encode() not in b"".join(peer.bodies())


# --- python -m shared.notify send ----------------------------------------------------------------------


def test_cli_send_publishes_a_file_end_to_end(wired_publisher, forwarder_env, tmp_path, capsys):
    from shared.notify.__main__ import main

    peer = wired_publisher
    ev = app_events.event("prod-weu-1", "RotationFailed", "credential rotation failed: test from the CLI",
                          severity="error", namespace="flux-system")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(ev))
    assert main(["send", "--file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"✔ 1 event(s) sent to Event Hub {HUB} in {peer.namespace}"
    assert decoded(peer) == [ev]
    assert forwarder_env.feed(peer) == 1
    assert len(forwarder_env.targets.delivered("/teams/")) == 1 and len(forwarder_env.targets.delivered("/slack/")) == 1

    path.write_text(json.dumps([ev, {**ev, "severity": "warning"}]))
    assert main(["send", "--file", str(path)]) == 1
    assert capsys.readouterr().err.strip() == (f"✗ --file: {path}: [1].severity: 'warning' is not one of "
                                               "info, error, trace")
    assert main(["send", "--file", str(tmp_path / "missing.json")]) == 1
    assert "✗ --file: cannot read" in capsys.readouterr().err
    assert len(peer.received) == 1

    services.set_eventhub_publisher_factory(lambda: EventHubPublisher.from_settings({}))
    path.write_text(json.dumps(ev))
    assert main(["send", "--file", str(path)]) == 1
    assert capsys.readouterr().err.startswith("✗ NOTIFY_EVENTHUB__fullyQualifiedNamespace: app setting is missing")
    services.set_eventhub_publisher_factory(lambda: publisher_for(peer, WrongAudience()))
    assert main(["send", "--file", str(path)]) == 1
    assert "✗ 1 event(s) not sent" in capsys.readouterr().err and len(peer.received) == 1
