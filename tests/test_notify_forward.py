"""End to end: Flux events through the indexed Event Hub and HTTP functions to Azure DevOps, Teams, Slack
and webhooks, with Azurite (Table + Blob), the Key Vault test server and the target server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace

import azure.functions as func
import pytest

from shared import notify
from shared.notify.delivery import Message
from shared.notify.routing import RoutingConfigError
from shared.notify.targets import hmac_signature
from tests.peers.local_notify import (AUDIT_HMAC, HTTP_HMAC, PAT, SHA, eventhub_batch, flux_event, now_rfc3339,
                                      routing_yaml, seed_secrets, unwire, wire)

FAST = {"NOTIFY_BACKOFF_BASE_SECONDS": "0.01", "NOTIFY_BACKOFF_MAX_SECONDS": "0.05", "NOTIFY_MAX_ATTEMPTS": "4",
        "NOTIFY_BATCH_BUDGET_SECONDS": "20"}


@pytest.fixture(scope="session")
def notify_functions(functions_by_name):
    return functions_by_name


@pytest.fixture
def notify_env(notify_functions, azurite_storage, notify_names, keyvault_server, keyvault, http_targets,
               tmp_path, monkeypatch):
    secrets = seed_secrets(keyvault_server, http_targets.url)
    http_targets.allow_pat(PAT)
    routing = tmp_path / "routing.yaml"
    # Long enough that a loaded CI machine does not turn a slow answer into a resend (delivery is
    # at least once: a timed-out request may have arrived), short enough for the timeout tests.
    routing.write_text(routing_yaml(http_targets.url, timeout=1.5))
    env: dict = {}

    def rewire(text: str | None = None, **settings):
        if text is not None:
            routing.write_text(text)
        wire(env, routing_file=str(routing), storage=azurite_storage, vault=keyvault,
             table=notify_names["table"], container=notify_names["container"], **{**FAST, **settings})
        for k, v in env.items():
            monkeypatch.setenv(k, v)

    rewire()

    def eventhub(bodies, **kw):
        return notify_functions["flux_events_eventhub"].get_user_function()(eventhub_batch(bodies, **kw))

    def http(cluster: str, body: bytes, signature: str | None):
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Signature"] = signature
        req = func.HttpRequest("POST", f"http://localhost/api/flux/events/{cluster}", body=body, headers=headers,
                               route_params={"cluster": cluster})
        resp = notify_functions["flux_events_http"].get_user_function()(req)
        return resp.status_code, json.loads(resp.get_body() or b"{}")

    def dead_letters(prefix: str = "") -> list[dict]:
        store = notify.forwarder().deadletters
        return [store.get(n) | {"_name": n} for n in store.names(prefix)]

    yield SimpleNamespace(fns=notify_functions, targets=http_targets, vault=keyvault_server, secrets=secrets,
                          routing=routing, rewire=rewire, eventhub=eventhub, http=http, dead_letters=dead_letters,
                          storage=azurite_storage, names=notify_names)
    unwire()


def statuses(t, sha=SHA):
    return t.ado_statuses("contoso", "platform", "fleet", sha)


# --- wiring -------------------------------------------------------------------------------------

def test_event_hub_binding_is_many_with_settings_and_unbounded_retry(notify_functions):
    fn = notify_functions["flux_events_eventhub"]
    [trigger] = json.loads(fn.get_function_json())["bindings"]  # what the host reads
    assert trigger["type"] == "eventHubTrigger" and trigger["cardinality"] == "MANY"
    assert trigger["connection"] == "NOTIFY_EVENTHUB"
    assert trigger["eventHubName"] == "%NOTIFY_EVENTHUB_NAME%"
    assert trigger["consumerGroup"] == "%NOTIFY_EVENTHUB_CONSUMER_GROUP%"
    retry = fn.get_settings_dict("retry_policy")
    assert retry["strategy"] == "exponential_backoff" and retry["max_retry_count"] == "-1"
    http = notify_functions["flux_events_http"].get_trigger()
    assert http.route == "flux/events/{cluster}" and http.auth_level == func.AuthLevel.ANONYMOUS  # HMAC only
    assert notify_functions["flux_deadletters_replay"].get_trigger().auth_level == func.AuthLevel.ADMIN
    assert notify_functions["flux_deadletters_list"].get_trigger().auth_level == func.AuthLevel.ADMIN


# --- the happy path: what each target receives ------------------------------------------------------

def test_batch_reaches_each_target_in_its_format(notify_env):
    t = notify_env.targets
    notify_env.eventhub([flux_event(summary="prod-weu"),
                         flux_event("Helm upgrade succeeded", severity="info", reason="UpgradeSucceeded",
                                    kind="HelmRelease", name="podinfo", namespace="apps", cluster="dev-weu-1")])
    # Azure DevOps: listed first, then one error status named with the cluster
    ado = t.received("/contoso/")
    assert [r.method for r in ado] == ["GET", "POST"]
    assert ado[0].query == {"api-version": "7.1"}
    [status] = statuses(t)
    assert status["state"] == "error" and status["description"] == "health check failed"
    assert status["context"] == {"name": "kustomization/apps/7d0cdc51/prod-weu-1", "genre": "fluxcd:prod-weu"}
    # Teams: the error only (eventSeverity: error), as an Adaptive Card
    [card] = t.delivered("/teams/")
    content = card.json()["attachments"][0]["content"]
    assert content["type"] == "AdaptiveCard" and "Health check failed" in content["body"][0]["items"][1]["text"]
    # Slack: prod clusters only
    [slack] = t.delivered("/slack/")
    assert slack.json()["channel"] == "#flux-prod" and slack.json()["attachments"][0]["color"] == "danger"
    # generic-hmac: the event JSON, signed with the audit key, both events
    audit = t.delivered("/hook/audit")
    assert len(audit) == 2
    for r in audit:
        assert r.headers["x-signature"] == hmac_signature(r.body, AUDIT_HMAC)
        assert r.headers["gotk-component"] == "kustomize-controller"
    assert {r.json()["reason"] for r in audit} == {"HealthCheckFailed", "UpgradeSucceeded"}


def test_same_error_from_two_clusters_gives_two_ado_statuses_and_unchanged_status_is_not_reposted(notify_env):
    t = notify_env.targets
    notify_env.eventhub([flux_event(cluster="prod-weu-1"), flux_event(cluster="prod-neu-1")])
    assert sorted(s["context"]["name"] for s in statuses(t)) == [
        "kustomization/apps/7d0cdc51/prod-neu-1", "kustomization/apps/7d0cdc51/prod-weu-1"]
    # another message with the same reason: a new event for Teams, but the same ADO status → no POST
    notify_env.eventhub([flux_event("Health check failed after 45s", cluster="prod-weu-1")], first_sequence=10)
    assert len(statuses(t)) == 2
    assert len(t.delivered("/teams/")) == 3


def test_ado_with_managed_identity_sends_a_bearer_token(notify_env):
    class Credential:
        scopes: list = []

        def get_token(self, *scopes, **kw):
            from azure.core.credentials import AccessToken

            Credential.scopes.extend(scopes)
            return AccessToken("mi-token-for-tests", int(time.time()) + 3600)

    notify_env.targets.allow_bearer("mi-token-for-tests")
    text = notify_env.routing.read_text().replace("patSecret: ado-status-pat", "managedIdentity: true")
    from shared import services

    services.set_devops_credential_factory(lambda: Credential())
    notify_env.rewire(text)
    notify_env.eventhub([flux_event()])
    assert len(statuses(notify_env.targets)) == 1
    assert notify_env.targets.received("/contoso/", "POST")[0].headers["authorization"] == "Bearer mi-token-for-tests"
    assert Credential.scopes == ["499b84ac-1321-427f-aa17-267ca6975798/.default"] * len(Credential.scopes)


# --- input: malformed and HTTP ------------------------------------------------------------------------

def test_malformed_message_is_dead_lettered_and_the_rest_of_the_batch_goes_on(notify_env):
    notify_env.eventhub([b"{oops", flux_event(), {"involvedObject": {"kind": "Kustomization"}}], first_sequence=41)
    assert len(notify_env.targets.delivered("/hook/audit")) == 1
    rejected = notify_env.dead_letters("rejected/")
    assert len(rejected) == 2
    by_seq = {r["source"]["sequenceNumber"]: r for r in rejected}
    assert by_seq[41]["body"] == "{oops" and "body: is not JSON" in by_seq[41]["error"]
    assert by_seq[43]["source"]["partition"] == "0" and "involvedObject" in by_seq[43]["error"]


def test_http_success_event_reaches_ado_as_succeeded_and_only_generic_targets(notify_env):
    t = notify_env.targets
    body = json.dumps(flux_event("Reconciliation finished in 2s, next run in 10m", severity="info",
                                 reason="ReconciliationSucceeded", commit_status="update", cluster=None,
                                 timestamp=now_rfc3339())).encode()
    code, answer = notify_env.http("prod-weu-1", body, hmac_signature(body, HTTP_HMAC))
    assert code == 200 and answer["result"]["delivered"] == 2
    [status] = statuses(t)
    assert status["state"] == "succeeded" and status["context"]["name"].endswith("/prod-weu-1")
    assert len(t.delivered("/hook/audit")) == 1
    assert t.delivered("/teams/") == [] and t.delivered("/slack/") == []


def test_http_unsigned_or_badly_signed_event_is_refused_and_dead_lettered(notify_env):
    body = json.dumps(flux_event(timestamp=now_rfc3339())).encode()
    assert notify_env.http("prod-weu-1", body, None)[0] == 401
    assert notify_env.http("prod-weu-1", body, hmac_signature(body, "wrong-key"))[0] == 401
    assert notify_env.http("unknown-cluster", body, hmac_signature(body, HTTP_HMAC))[0] == 401  # no key in vault
    assert notify_env.targets.requests == []
    rejected = notify_env.dead_letters("rejected/")
    # one letter per refused body and cluster: the two refusals of the same body for prod-weu-1 share it
    assert sorted(r["cluster"] for r in rejected) == ["prod-weu-1", "unknown-cluster"]
    assert all("X-Signature" in r["error"] and r["replayable"] is False for r in rejected)
    code, answer = notify_env.http("prod-weu-1", b"{}", hmac_signature(b"{}", HTTP_HMAC))
    assert code == 400 and answer["error"]["field"] == "involvedObject"
    assert len(notify_env.dead_letters("rejected/")) == 3


# --- dedupe ----------------------------------------------------------------------------------------

def test_same_event_is_forwarded_once_across_batches_and_within_a_batch(notify_env):
    notify_env.eventhub([flux_event(), flux_event()], first_sequence=1)
    notify_env.eventhub([flux_event()], partition="3", first_sequence=1)
    assert len(notify_env.targets.delivered("/hook/audit")) == 1
    assert len(notify_env.targets.delivered("/teams/")) == 1


def test_same_event_is_forwarded_once_across_instances(notify_env):
    # two hosts (separate forwarders, same Table) get the same event at the same time
    notify.reset_forwarder()
    first = notify.build_forwarder()
    second = notify.build_forwarder()
    barrier = threading.Barrier(2)
    body = json.dumps(flux_event()).encode()

    def run(fwd, owner):
        barrier.wait()
        fwd.forward([Message(body=body, owner=owner, source={"trigger": "test"})])

    threads = [threading.Thread(target=run, args=(f, o)) for f, o in ((first, "hub/0/1"), (second, "hub/1/7"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    first.close(), second.close()
    assert len(notify_env.targets.delivered("/hook/audit")) == 1
    assert len(notify_env.targets.delivered("/teams/")) == 1


def _dev_info(i: int) -> dict:  # an event only the audit webhook takes
    return flux_event(f"event {i}: applied", severity="info", reason="ReconciliationSucceeded", cluster="dev-weu-1",
                      revision=f"main@sha1:{i:040x}")


def test_redelivered_batch_sends_nothing_twice_and_loses_nothing(notify_env):
    audit = lambda: notify_env.targets.delivered("/hook/audit")  # noqa: E731
    events = [_dev_info(i) for i in range(150)]  # two claim transactions
    notify_env.eventhub(events, first_sequence=1)
    assert len(audit()) == 150
    # Event Hub redelivers the same batch (the invocation failed after delivering): nothing goes out again
    notify_env.eventhub(events, first_sequence=1)
    assert len(audit()) == 150
    # an instance crashed after claiming events 150-151 and before sending them: the redelivered batch
    # (same partition and sequence numbers, so the same owners) reclaims and sends them; event 152 was
    # claimed by another message still in flight elsewhere, so it is left to that one
    fwd = notify.forwarder()
    more = [_dev_info(i) for i in range(150, 153)]
    keys = [fwd.parse(Message(body=json.dumps(e).encode())).dedupe_key() for e in more]
    assert fwd.dedupe.claim_many("audit", [(keys[0], "flux-events/0/151"), (keys[1], "flux-events/0/152"),
                                           (keys[2], "flux-events/1/9")]) == [True, True, True]
    notify_env.eventhub(events + more, first_sequence=1)
    assert sorted(r.json()["message"] for r in audit()[150:]) == ["event 150: applied", "event 151: applied"]


def test_expired_dedupe_rows_are_purged_after_a_batch(notify_env):
    store = notify.forwarder().dedupe
    long_ago = time.time() - 3600  # past the 5 m window and the 10 m lease
    for i, state in enumerate(["delivered", "claimed"]):
        store.table.create_entity({"PartitionKey": "audit", "RowKey": f"{i:064x}", "state": state, "at": long_ago,
                                   "owner": "flux-events/0/1"})
    notify_env.eventhub([flux_event()])  # a process purges after its first batch, then once a minute
    rows = {(e["PartitionKey"], e["state"]) for e in store.table.list_entities()}
    assert rows == {(t, "delivered") for t in ("ado-fleet", "teams-ops", "slack-prod", "audit")}


def test_purge_is_bounded_and_resumes_where_it_stopped(notify_env):
    from shared.notify.dedupe import TableDedupeStore

    table = notify_env.storage.table_client(notify_env.names["table"] + "p")
    table.create_table()
    now = [1_000_000.0]
    store = TableDedupeStore(table, window=300, clock=lambda: now[0])
    store.claim_many("t", [(f"{i:064x}", "o") for i in range(250)])
    now[0] += 300  # within the lease: nothing expired yet
    assert store.purge() == 0
    now[0] += 301
    assert store.purge(budget=0) == 100  # one page per call when the budget is spent
    assert store.purge(budget=0) == 100
    assert store.purge(budget=0) == 50 and list(table.list_entities()) == []


def test_dedupe_window_is_configurable_and_expires(notify_env):
    notify_env.rewire(notify_env.routing.read_text().replace("dedupeWindow: 5m", "dedupeWindow: 1s"))
    notify_env.eventhub([flux_event()])
    notify_env.eventhub([flux_event()], first_sequence=5)
    assert len(notify_env.targets.delivered("/hook/audit")) == 1
    time.sleep(1.1)
    notify_env.eventhub([flux_event()], first_sequence=9)
    assert len(notify_env.targets.delivered("/hook/audit")) == 2


# --- retries and dead letters ---------------------------------------------------------------------

def test_429_and_5xx_are_retried_honouring_retry_after(notify_env):
    t = notify_env.targets
    t.fail("/hook/audit", (429, {"Retry-After": "1"}), 503)
    t.fail("/teams/", "reset", "timeout")
    started = time.monotonic()
    notify_env.eventhub([flux_event()])
    assert time.monotonic() - started >= 1.0  # waited the Retry-After
    assert [r.status for r in t.received("/hook/audit")] == [429, 503, 200]
    assert [r.status for r in t.received("/teams/")] == ["reset", "timeout", 202]
    assert notify_env.dead_letters() == []


def test_permanent_failure_is_dead_lettered_with_target_error_attempts_and_no_secret(notify_env, caplog):
    t = notify_env.targets
    t.fail("/slack/", 404)
    t.fail("/teams/", 500, 500, 500, 500)  # NOTIFY_MAX_ATTEMPTS=4
    with caplog.at_level(logging.DEBUG):
        notify_env.eventhub([flux_event()])
    letters = {r["target"]: r for r in notify_env.dead_letters("undeliverable/")}
    assert set(letters) == {"slack-prod", "teams-ops"}
    assert letters["slack-prod"]["attempts"] == 1 and "HTTP 404" in letters["slack-prod"]["error"]
    assert letters["teams-ops"]["attempts"] == 4 and "HTTP 500" in letters["teams-ops"]["error"]
    assert letters["teams-ops"]["event"]["message"] == "Health check failed after 30s"
    assert letters["teams-ops"]["cluster"] == "prod-weu-1"
    # delivered elsewhere exactly once
    assert len(t.delivered("/hook/audit")) == 1 and len(statuses(t)) == 1
    # no secret anywhere: not in dead letters, not in logs
    blobs = json.dumps(notify_env.dead_letters())
    for value in list(notify_env.secrets.values()) + ["secretpath", "ops-7f3a9c"]:
        assert value not in blobs and value not in caplog.text


def test_unreachable_target_is_dead_lettered_without_its_url(notify_env, keyvault_server):
    keyvault_server.seed("audit-webhook", "http://127.0.0.1:9/hidden-token-path")  # port 9: refused
    notify_env.eventhub([flux_event()])
    [letter] = notify_env.dead_letters("undeliverable/")
    assert letter["target"] == "audit" and letter["attempts"] == 4 and "ConnectionError" in letter["error"]
    assert "hidden-token-path" not in json.dumps(letter)


def test_ado_401_is_not_retried_and_names_the_permission(notify_env, keyvault_server):
    keyvault_server.seed("ado-status-pat", "revoked-pat")
    notify_env.eventhub([flux_event()])
    [letter] = [r for r in notify_env.dead_letters("undeliverable/") if r["target"] == "ado-fleet"]
    assert letter["attempts"] == 1 and "HTTP 401" in letter["error"] and "revoked-pat" not in json.dumps(letter)


def test_replay_delivers_dead_letters_once_the_target_is_back(notify_env):
    t = notify_env.targets
    t.fail("/teams/", *([503] * 4))
    notify_env.eventhub([flux_event()])
    [letter] = notify_env.dead_letters("undeliverable/")
    req = func.HttpRequest("POST", "http://localhost/api/flux/deadletters/replay",
                           body=json.dumps({"prefix": "undeliverable/"}).encode())
    resp = notify_env.fns["flux_deadletters_replay"].get_user_function()(req)
    report = json.loads(resp.get_body())
    assert resp.status_code == 200 and report["results"] == [{"name": letter["_name"], "outcome": "delivered"}]
    assert (report["delivered"], report["skipped"], report["failed"]) == (1, 0, 0)
    assert len(t.delivered("/teams/")) == 1 and notify_env.dead_letters() == []
    # delivered by replay → the dedupe record is set: a late copy of the event is a duplicate
    notify_env.eventhub([flux_event()], first_sequence=50)
    assert len(t.delivered("/teams/")) == 1
    # and listing works through the admin function
    lst = notify_env.fns["flux_deadletters_list"].get_user_function()(
        func.HttpRequest("GET", "http://localhost/api/flux/deadletters", body=b""))
    assert json.loads(lst.get_body()) == {"names": []}


def test_replay_never_forwards_a_post_refused_for_its_signature(notify_env):
    body = json.dumps(flux_event(timestamp=now_rfc3339())).encode()
    assert notify_env.http("prod-weu-1", body, hmac_signature(body, "forged-key"))[0] == 401
    report = notify.forwarder().replay(prefix="rejected/")
    assert report["delivered"] == 0 and report["invalid"] == 1
    assert "authenticated" in report["results"][0]["reason"]
    assert notify_env.targets.requests == [] and len(notify_env.dead_letters("rejected/")) == 1


def test_a_webhook_secret_that_is_no_url_is_dead_lettered_at_once_without_its_value(notify_env, keyvault_server,
                                                                                    caplog):
    keyvault_server.seed("teams-ops-webhook", "teams.example.com/not-a-url-4c7e91")
    notify_env.eventhub([flux_event()])
    [letter] = notify_env.dead_letters("undeliverable/")
    assert letter["target"] == "teams-ops" and letter["attempts"] == 1
    assert "Key Vault secret 'teams-ops-webhook' is not an http(s) URL" in letter["error"]
    assert "4c7e91" not in json.dumps(letter) and "4c7e91" not in caplog.text


def test_retries_stop_at_the_batch_budget(notify_env):
    notify_env.rewire(NOTIFY_BATCH_BUDGET_SECONDS="1", NOTIFY_MAX_ATTEMPTS="100")
    notify_env.targets.fail("/teams/", *[(429, {"Retry-After": "0.4"})] * 100)
    started = time.monotonic()
    notify_env.eventhub([flux_event()])
    assert time.monotonic() - started < 2.5
    [letter] = notify_env.dead_letters("undeliverable/")
    assert "budget" in letter["error"] and 2 <= letter["attempts"] <= 4


# --- storage outage, bad configuration -----------------------------------------------------------------

def test_storage_outage_fails_the_invocation_so_the_batch_is_retried(notify_env):
    from shared.notify.dedupe import StorageUnavailable
    from shared.notify.storage import Storage
    from tests.peers.azurite import start_or_fail

    own = start_or_fail()  # a private Azurite we can take down
    try:
        notify_env.storage.__dict__.update(Storage(connection_string=own.connection_string).__dict__)
        notify_env.rewire()
        notify.forwarder()  # table and container created while storage is up
        own.stop()
        with pytest.raises(StorageUnavailable):
            notify_env.eventhub([flux_event(), b"not json"])
        body = json.dumps(flux_event(timestamp=now_rfc3339())).encode()
        code, answer = notify_env.http("prod-weu-1", body, hmac_signature(body, HTTP_HMAC))
        assert code == 503 and answer["error"]["code"] == "StorageUnavailable"  # Flux retries 5xx
        notify.reset_forwarder()  # a new instance starting during the outage
        assert notify_env.http("prod-weu-1", body, hmac_signature(body, HTTP_HMAC))[0] == 503
    finally:
        own.stop()


def test_invalid_routing_fails_loudly_naming_the_entry(notify_env, caplog):
    notify_env.rewire(notify_env.routing.read_text().replace("exclusionList: [\"^Dependencies do not meet\"]",
                                                            "exclusionList: [\"(\"]"))
    with pytest.raises(RoutingConfigError) as err:
        notify_env.eventhub([flux_event()])
    assert err.value.field == "targets[2].exclusionList[0]"
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "targets[2].exclusionList[0]: invalid regular expression" in logged.getMessage()
    assert notify_env.targets.requests == []
    code, answer = notify_env.http("prod-weu-1", b"{}", None)
    assert code == 500 and answer["error"]["field"] == "targets[2].exclusionList[0]"


def test_routing_file_can_live_in_a_blob(notify_env, azurite_storage):
    container = azurite_storage.container_client("routing-" + notify_env.names["table"][-10:])
    container.create_container()
    container.upload_blob("routing.yaml", notify_env.routing.read_bytes())
    notify_env.rewire(NOTIFY_ROUTING=f"blob:{container.container_name}/routing.yaml")
    notify_env.eventhub([flux_event()])
    assert len(notify_env.targets.delivered("/hook/audit")) == 1


def test_cli_lists_and_replays_dead_letters(notify_env, capsys):
    from shared.notify.__main__ import main

    notify_env.targets.fail("/slack/", 400)
    notify_env.eventhub([flux_event()])
    assert main(["list", "--prefix", "undeliverable/"]) == 0
    [name] = capsys.readouterr().out.split()
    assert "/slack-prod/" in name
    assert main(["replay", "--name", name]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == [{"name": name, "outcome": "delivered"}]
    assert len(notify_env.targets.delivered("/slack/")) == 1 and notify_env.dead_letters() == []
