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
import uuid
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
from tests.test_rotation import fleet, gitrepo_crd, new_pat_version, wired  # noqa: F401 - fixtures

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
def fleet_table(azurite):
    """A fresh fleet table on Azurite as :func:`shared.services.fleet_store` (where PAT warnings are remembered)."""
    from shared.fleet.store import OperationStore

    store = OperationStore.from_connection_string(azurite.connection_string, f"fleet{uuid.uuid4().hex[:10]}")
    services.set_fleet_store_factory(lambda: store)
    yield store
    services.set_fleet_store_factory(None)
    store.close()


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


def timer_run(functions_by_name) -> None:
    from azure.functions.timer import TimerRequest

    assert functions_by_name["rotate_credentials"].get_user_function()(TimerRequest(past_due=False)) is None


def test_a_pat_near_expiry_warns_once_per_version_and_interval_through_the_timer(
        functions_by_name, wired, fleet_table, fleet, keyvault_server, ado_git_server, wired_publisher, forwarder_env,
        caplog):
    """50 clusters sharing a PAT used to send 50 cards every 10 minutes: now one event per secret version,
    naming its clusters, at most once per ROTATION_PAT_WARNING_INTERVAL (24h), remembered in the fleet table."""
    caplog.set_level(logging.INFO)
    registry, _ = wired
    peer, t = wired_publisher, forwarder_env.targets
    for m in fleet.members:
        registry.upsert(fleet.record(m))
    expires = datetime.now(timezone.utc) + timedelta(days=3, hours=2)
    pat = new_pat_version(keyvault_server, ado_git_server, expires_on=expires)
    version = keyvault_server.versions("fleet-pat")[-1]

    timer_run(functions_by_name)

    [ev] = decoded(peer)  # one event for the version, not one per cluster
    assert ev["involvedObject"] == {"kind": "FleetCluster", "name": "fleet"}
    assert (ev["reason"], ev["severity"], ev["reportingController"]) == ("PATExpiringSoon", "error",
                                                                         "flux-aks-functions")
    assert ev["metadata"] == {"cluster": "fleet", "secret": "fleet-pat", "secretVersion": version,
                              "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:00Z"), "clusters": "c0, c1, c2",
                              "clusterCount": "3"}
    assert ev["message"] == (f"PAT in Key Vault secret fleet-pat (version {version}) expires on "
                             f"{expires:%Y-%m-%d %H:%M} UTC, in 3 days; used by 3 cluster(s): c0, c1, c2; create a "
                             "new PAT in Azure DevOps and store it as a new version of the secret")
    assert "rotation events: 1 event(s) published" in caplog.text
    assert set(fleet_table.pat_warning("fleet-pat", version)) == {"PATExpiringSoon"}
    assert forwarder_env.feed(peer) == 1
    [card] = t.delivered("/teams/")
    items = card.json()["attachments"][0]["content"]["body"][0]["items"]
    # Flux's card title is kind/name.namespace; the fleet has no namespace
    assert items[0]["text"] == "fleetcluster/fleet." and "used by 3 cluster(s): c0, c1, c2" in items[1]["text"]
    [slack] = t.delivered("/slack/")
    assert slack.json()["channel"] == "#fleet" and "fleet-pat" in slack.json()["attachments"][0]["text"]
    assert t.received("/contoso/") == []  # no commit to put a status on

    # the next timer runs, within the interval: nothing is published (the result still warns)
    caplog.clear()
    timer_run(functions_by_name)
    timer_run(functions_by_name)
    assert len(peer.received) == 1
    assert "rotation events: 2 held back" not in caplog.text  # one per run
    assert caplog.text.count("rotation events: 1 held back (PATExpiringSoon): already sent within "
                             "ROTATION_PAT_WARNING_INTERVAL (24h)") == 2
    assert "rotation: cluster c0: PAT in Key Vault secret fleet-pat" in caplog.text

    # a day later (the stored time moved back 25 h): the reminder goes out again, once
    fleet_table.set_pat_warning("fleet-pat", version, "PATExpiringSoon",
                                datetime.now(timezone.utc) - timedelta(hours=25))
    timer_run(functions_by_name)
    timer_run(functions_by_name)
    assert [e["metadata"]["secretVersion"] for e in decoded(peer)] == [version, version]
    assert fleet_table.pat_warning("fleet-pat", version)["PATExpiringSoon"] > datetime.now(timezone.utc) - timedelta(minutes=5)

    # a new PAT version, also near its expiry: warned at once, whatever the old version's time
    expires2 = datetime.now(timezone.utc) + timedelta(days=5, hours=1)
    new = new_pat_version(keyvault_server, ado_git_server, expires_on=expires2)
    version2 = keyvault_server.versions("fleet-pat")[-1]
    timer_run(functions_by_name)
    timer_run(functions_by_name)
    assert [e["metadata"]["secretVersion"] for e in decoded(peer)] == [version, version, version2]
    assert "in 5 days" in decoded(peer)[-1]["message"]
    for body in peer.bodies(HUB):
        assert all(v.encode() not in body for v in (pat, new, fleet.old_pat))


def test_failures_give_one_event_per_cluster_and_a_run_summary_in_one_batch(
        fleet, keyvault_server, keyvault, ado_git_server, wired_publisher):
    peer = wired_publisher
    now = datetime.now(timezone.utc)
    expired = new_pat_version(keyvault_server, ado_git_server, expires_on=now - timedelta(days=2))
    records = [fleet.record(m) for m in fleet.members[:2]]
    records.append(ClusterRecord(name="lost", kubeconfig_secret="lost-kubeconfig", pat_secret="fleet-pat",
                                 git_url=fleet.url, allow_insecure_http=True).validate())

    summary = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=FAST)

    assert summary.failed == 3 and summary.to_dict()["events"] == {"published": 3, "failed": 0}
    events = decoded(peer)
    by = [(e["reason"], e["involvedObject"]["name"]) for e in events]
    assert by == [("PATExpired", "fleet"), ("RotationFailed", "lost"), ("RotationRunFailed", "fleet")]
    run = next(e for e in events if e["reason"] == "RotationRunFailed")
    assert run["message"] == ("credential rotation: 3 of 3 cluster(s) failed: c0, c1, lost; "
                              "they are tried again next run")
    assert run["metadata"] == {"cluster": "fleet", "checked": "3", "failed": "3", "updated": "0"}
    lost = next(e for e in events if e["reason"] == "RotationFailed")
    assert "lost-kubeconfig" in lost["message"] and lost["severity"] == "error"
    pat_ev = next(e for e in events if e["reason"] == "PATExpired")
    assert "expired on" in pat_ev["message"] and " ago" not in pat_ev["message"]  # stable across runs
    assert "used by 2 cluster(s): c0, c1; nothing written" in pat_ev["message"]
    assert (pat_ev["metadata"]["clusters"], pat_ev["metadata"]["clusterCount"]) == ("c0, c1", "2")
    got = peer.received
    assert all(r.batched for r in got) and len({(r.connection, r.partition) for r in got}) == 1  # one batch
    assert all(expired.encode() not in r.body and fleet.old_pat.encode() not in r.body for r in got)


def test_an_expired_pat_is_reported_once_per_interval_not_every_run(fleet, keyvault_server, keyvault, ado_git_server,
                                                                     wired_publisher, fleet_table, caplog):
    """A run whose only failures are an expired PAT already reported within the interval publishes nothing:
    neither PATExpired nor the run summary; a cluster failing for another reason is reported as before."""
    peer = wired_publisher
    now = datetime.now(timezone.utc)
    new_pat_version(keyvault_server, ado_git_server, expires_on=now - timedelta(hours=3))
    records = [fleet.record(m) for m in fleet.members[:2]]
    day = RotationSettings(concurrency=4)  # the default interval: 24h

    first = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=day)
    assert [e["reason"] for e in decoded(peer)] == ["PATExpired", "RotationRunFailed"]
    assert first.to_dict()["events"] == {"published": 2, "failed": 0}
    caplog.set_level(logging.INFO)
    second = rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=day)
    assert second.failed == 2 and len(peer.received) == 2
    assert second.to_dict()["events"] == {"published": 0, "failed": 0}
    assert "rotation events: 2 held back (PATExpired, RotationRunFailed)" in caplog.text

    lost = ClusterRecord(name="lost", kubeconfig_secret="lost-kubeconfig", pat_secret="fleet-pat",
                         git_url=fleet.url, allow_insecure_http=True).validate()
    rotation.rotate(records + [lost], keyvault=keyvault, credential=JwtTestCredential(), settings=day)
    assert [e["reason"] for e in decoded(peer)[2:]] == ["RotationFailed", "RotationRunFailed"]
    assert "3 of 3 cluster(s) failed: c0, c1, lost" in decoded(peer)[-1]["message"]

    # ROTATION_PAT_WARNING_INTERVAL=0: every run warns (the forwarder's dedupe still applies)
    every = RotationSettings.from_settings({"ROTATION_PAT_WARNING_INTERVAL": "0"})
    rotation.rotate(records, keyvault=keyvault, credential=JwtTestCredential(), settings=every)
    assert [e["reason"] for e in decoded(peer)[4:]] == ["PATExpired", "RotationRunFailed"]


@pytest.mark.parametrize("value, seconds", [("", 86400), ("24h", 86400), ("1h30m", 5400), ("45s", 45), ("600", 600),
                                            ("0", 0)])
def test_the_warning_interval_setting(value, seconds):
    assert RotationSettings.from_settings({"ROTATION_PAT_WARNING_INTERVAL": value}).pat_warning_interval == \
        timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["1d", "-5", "soon", "721h"])
def test_a_bad_warning_interval_is_a_setting_error(value):
    from shared.errors import SettingError

    with pytest.raises(SettingError) as err:
        RotationSettings.from_settings({"ROTATION_PAT_WARNING_INTERVAL": value})
    assert err.value.field == "ROTATION_PAT_WARNING_INTERVAL"


def test_an_all_well_run_publishes_nothing(fleet, keyvault_server, keyvault, ado_git_server, wired_publisher):
    new_pat_version(keyvault_server, ado_git_server)
    summary = rotation.rotate([fleet.record(m) for m in fleet.members], keyvault=keyvault,
                              credential=JwtTestCredential(), settings=FAST)
    assert summary.failed == 0 and wired_publisher.connections == 0


def test_a_dead_hub_costs_the_rotation_nothing_but_a_logged_failure(fleet, keyvault_server, keyvault, ado_git_server,
                                                                   fleet_table, caplog):
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
    assert d["events"] == {"published": 0, "failed": 1}  # one event for the PAT version the three share
    for m in fleet.members:
        from shared.rotation import digest

        assert digest(m.secret()["password"]) == digest(new)
    [warning] = [r for r in caplog.records if "publish failed" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "1 of 1 event(s) not sent (PATExpiringSoon)" in warning.getMessage()
    assert f"hub {HUB} in {gone.namespace}" in warning.getMessage()
    after = app_events.stats()
    assert after["failed"] - before["failed"] == 1 and after["failedPublishes"] - before["failedPublishes"] == 1
    assert took < 15
    # not sent, so not remembered: the next run (with a hub) warns
    assert fleet_table.pat_warning("fleet-pat", keyvault_server.versions("fleet-pat")[-1]) == {}


# --- bootstrap --------------------------------------------------------------------------------------------


def test_bootstrap_success_and_failure_are_published(functions_by_name, env, wired_publisher):
    from tests.test_bootstrap_e2e import call, request

    peer = wired_publisher
    status, body = call(functions_by_name, request(env))
    assert status == 200, body
    assert body["events"] == {"published": 1, "failed": 0}
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
    assert body["events"] == {"published": 1, "failed": 0}
    failed = decoded(peer)[1]
    assert (failed["reason"], failed["severity"], failed["involvedObject"]["name"]) == ("BootstrapFailed", "error",
                                                                                       "aks-weu-1")
    assert failed["message"].startswith(f"bootstrap of {env['url']} branch main path ./clusters/other failed: "
                                        'sync path configuration ("./clusters/other") would overwrite')

    # bad input is the caller's to fix (the 400 says what), and a body naming no cluster concerns no one
    status, body = call(functions_by_name, request(env, passwordSecret="no-such-pat"))
    assert status == 400 and "events" not in body
    assert call(functions_by_name, {"url": 1})[0] == 400
    assert len(peer.received) == 2
    assert env["pat"].encode() not in b"".join(peer.bodies())


def test_a_dead_hub_costs_a_bootstrap_at_most_the_publish_timeout_and_the_answer_says_so(functions_by_name, env,
                                                                                        raw_listener, caplog):
    """A hub that takes the connection and never answers (the worst case: no quick refusal) costs the
    bootstrap NOTIFY_PUBLISH_TIMEOUT_SECONDS, and the answer counts the event as failed."""
    from azure.eventhub import TransportType

    from tests.test_bootstrap_e2e import call, request

    dead = EventHubPublisher.from_settings(
        {"NOTIFY_EVENTHUB__fullyQualifiedNamespace": "fleet-events.servicebus.windows.net", "NOTIFY_EVENTHUB_NAME": HUB,
         "NOTIFY_PUBLISH_TIMEOUT_SECONDS": "2"}, credential=JwtTestCredential(),
        custom_endpoint_address=f"sb://127.0.0.1:{raw_listener.port}", transport_type=TransportType.Amqp,
        use_tls=False)
    spent: list[float] = []
    real = dead.publish

    def timed(bodies):  # the real publish, timed
        t0 = time.monotonic()
        try:
            return real(bodies)
        finally:
            spent.append(time.monotonic() - t0)

    dead.publish = timed
    services.set_eventhub_publisher_factory(lambda: dead)
    try:
        with caplog.at_level(logging.INFO):
            status, body = call(functions_by_name, request(env))
    finally:
        services.set_eventhub_publisher_factory(None)
    assert status == 200, body  # the bootstrap's result stands
    assert body["events"] == {"published": 0, "failed": 1} and body["repository"]["head"]
    assert raw_listener.connections >= 1 and len(spent) == 1 and 1.9 < spent[0] < 2.8, spent
    [warning] = [r for r in caplog.records if "publish failed" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "bootstrap event: publish failed, 1 of 1 event(s) not sent (BootstrapSucceeded)" in warning.getMessage()
    assert "within 2 s" in warning.getMessage()
    assert env["pat"] not in caplog.text


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


@pytest.mark.parametrize("argv, line", [
    (["replay", "--prefix", "rejected/", "--forse"], "✗ --forse: unknown flag; did you mean --force? (run "
                                                     "'.venv/bin/python -m shared.notify replay --help' for the flags)"),
    (["send"], "✗ --file: is required; run '.venv/bin/python -m shared.notify send --help' for the flags"),
    (["list", "--limit", "many"], "✗ --limit: invalid int value: 'many'"),
    (["sned"], "✗ .venv/bin/python -m shared.notify: unknown command: 'sned' (choose from 'check', 'list', 'replay', "
               "'secret-name', 'send'); run '.venv/bin/python -m shared.notify --help' for the flags"),
])
def test_cli_mistakes_are_one_line_naming_the_flag_and_exit_1(argv, line):
    """As the project's CLI rule (shared.cli.Parser): no usage dump, no exit 2."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-m", "shared.notify", *argv], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert (done.returncode, done.stdout, done.stderr) == (1, "", line + "\n")
