"""Issue #13's gaps and issue #7's attacks on the notification endpoints, each against the real peers
(Azurite, the Key Vault test server, the recording target server) through the indexed functions."""

from __future__ import annotations

import json
import logging

import azure.functions as func
import pytest

from shared import notify
from shared.notify.targets import SLACK_MAX_TEXT, TEAMS_MAX_BYTES, hmac_signature
from tests.peers.local_notify import HTTP_HMAC, flux_event, now_rfc3339
from tests.test_notify_forward import notify_env, notify_functions  # noqa: F401  (fixtures)


def signed(event: dict) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    return body, hmac_signature(body, HTTP_HMAC)


def replay_call(env, body) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = func.HttpRequest("POST", "http://localhost/api/flux/deadletters/replay", body=raw)
    resp = env.fns["flux_deadletters_replay"].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body())


# --- issue 13.1: provider limits ---------------------------------------------------------------------

def test_a_39_kb_unicode_event_is_delivered_to_teams_under_28_kb_and_to_slack_whole(notify_env):
    lines = [f"line {i}: ресурс не готов — 資源未就緒，等待健康檢查 ✗" for i in range(1000)]
    message = "\n".join(lines)[:20_000]  # 20,000 characters, about 39 KB of UTF-8
    assert 38_000 < len(message.encode()) < 40_000
    notify_env.eventhub([flux_event(message)])
    [card] = notify_env.targets.delivered("/teams/")
    assert len(card.body) <= TEAMS_MAX_BYTES and notify_env.dead_letters() == []
    text = card.json()["attachments"][0]["content"]["body"][0]["items"][1]["text"]
    kept, _, marker = text.rpartition("\n… [cut to fit Teams: ")
    assert message.startswith(kept) and kept.endswith(lines[len(kept.splitlines()) - 1])  # whole first lines
    assert marker.endswith(f" of {len(message):,} characters]")
    [slack] = notify_env.targets.delivered("/slack/")
    assert slack.json()["attachments"][0]["text"] == message  # within 40,000 characters: whole


def test_slack_text_is_cut_to_40000_utf16_units(notify_env):
    message = "😀" * 25_000  # 25,000 characters, 50,000 UTF-16 code units
    notify_env.eventhub([flux_event(message)])
    [slack] = notify_env.targets.delivered("/slack/")
    text = slack.json()["attachments"][0]["text"]
    assert len(text.encode("utf-16-le")) // 2 <= SLACK_MAX_TEXT and text.startswith("😀" * 19_000)
    assert "cut to fit Slack" in text


# --- 13.4: skip what Azure DevOps cannot take ----------------------------------------------------------

@pytest.mark.parametrize("revision", ["sha256:" + "a" * 64, "6.7.1", None])
def test_ado_events_without_a_commit_are_skipped_not_dead_lettered(notify_env, revision, caplog):
    event = flux_event(kind="HelmRelease", name="podinfo", namespace="apps")
    if revision is None:
        del event["metadata"]["revision"]
    else:
        event["metadata"]["revision"] = revision
    for seq in (1, 2):  # every delivery: skipped, never a dead letter
        caplog.clear()
        with caplog.at_level("INFO"):
            notify_env.eventhub([event], first_sequence=seq)
        [skip] = [r for r in caplog.records if "azuredevops target ado-fleet skips HelmRelease/podinfo" in r.getMessage()]
        assert skip.levelno == logging.INFO  # as Flux logs it: not a warning, nothing to fix
        # one dict argument: logging keeps it as the record's args
        [batch] = [r.args for r in caplog.records if r.getMessage().startswith("flux events from Event Hub:")]
        assert batch["skipped"] == 1 and batch["deadLettered"] == 0 and batch["received"] == 1, batch
    assert notify_env.targets.received("/contoso/") == [] and notify_env.dead_letters() == []
    assert len(notify_env.targets.delivered("/hook/audit")) == 1  # the other targets as usual


# --- 13.3: idempotent dead letters -------------------------------------------------------------------

def test_three_deliveries_of_seven_problems_write_seven_dead_letters(notify_env):
    t = notify_env.targets
    t.fail("/slack/", *([404] * 30))  # slack refuses everything: 2 events → 2 undeliverable pairs
    batch = [b"{oops", b"[1]", {"involvedObject": {"kind": "Kustomization"}}, b"\xff", b"[" * 5000 + b"]" * 5000,
             flux_event("first"), flux_event("second")]
    for _ in range(3):
        notify_env.eventhub(batch, first_sequence=100)
    letters = notify_env.dead_letters()
    assert len(letters) == 7, [r["_name"] for r in letters]
    assert sorted(r["kind"] for r in letters) == ["rejected"] * 5 + ["undeliverable"] * 2
    assert "nested too deeply" in json.dumps(letters)


def test_the_same_rejected_body_redelivered_another_day_writes_one_letter(notify_env):
    """Issue 13.3, "or the same body": another sequence number and an enqueued time on another day."""
    from datetime import datetime, timedelta, timezone

    body = b'{"involvedObject": "not an object"'
    today = datetime.now(timezone.utc)
    for seq, when in ((40, today - timedelta(days=2)), (9041, today)):
        notify_env.eventhub([body], first_sequence=seq, enqueued_time=when)
    [letter] = notify_env.dead_letters("rejected/")
    assert letter["body"] == body.decode() and letter["source"]["sequenceNumber"] == 40  # the first one kept
    new_name = letter["_name"]
    assert new_name == f"rejected/-/{letter['id']}.json"

    # a letter written before rejected names lost their day is still a name replay takes
    old_name = f"rejected/2026/08/07/-/{'e' * 32}.json"
    notify.forwarder().deadletters.put({**letter, "id": "e" * 32}, old_name)
    assert sorted(r["_name"] for r in notify_env.dead_letters("rejected/")) == sorted([old_name, new_name])
    code, report = replay_call(notify_env, {"names": [old_name, new_name]})
    assert code == 200, report
    assert [r["name"] for r in report["results"]] == [old_name, new_name]
    assert [r["reason"].split(" (")[0] for r in report["results"]] == ["body: is not JSON"] * 2  # read, both


# --- 13.2: replay respects dedupe --------------------------------------------------------------------

def test_replay_skips_a_pair_delivered_by_a_redelivery_and_force_resends(notify_env):
    t = notify_env.targets
    t.fail("/teams/", *(["timeout"] * 4))  # times out: dead-lettered
    notify_env.eventhub([flux_event()], first_sequence=7)
    [letter] = notify_env.dead_letters("undeliverable/")
    assert len(t.delivered("/teams/")) == 0
    notify_env.eventhub([flux_event()], first_sequence=7)  # Event Hub redelivers the batch: delivered now
    assert len(t.delivered("/teams/")) == 1
    assert notify_env.dead_letters("undeliverable/")[0]["resolved"]["reason"].startswith("delivered")
    code, report = replay_call(notify_env, {"prefix": "undeliverable/"})
    assert code == 200 and (report["delivered"], report["skipped"], report["failed"]) == (0, 1, 0)
    assert len(t.delivered("/teams/")) == 1  # not sent twice
    code, report = replay_call(notify_env, {"names": [letter["_name"]], "force": True})
    assert (report["delivered"], report["skipped"]) == (1, 0) and len(t.delivered("/teams/")) == 2


def test_replay_skips_a_pair_whose_dedupe_row_says_delivered(notify_env):
    t = notify_env.targets
    t.fail("/teams/", *([503] * 4))
    notify_env.eventhub([flux_event()])
    [letter] = notify_env.dead_letters("undeliverable/")
    fwd = notify.forwarder()
    fwd.dedupe.delivered("teams-ops", letter["dedupeKey"])  # delivered by another path meanwhile
    report = fwd.replay(prefix="undeliverable/")
    assert report["skipped"] == 1 and t.delivered("/teams/") == []
    assert fwd.deadletters.get(letter["_name"])["resolved"]["reason"] == "already delivered"


@pytest.mark.parametrize("body, field", [
    ({"names": ["../../etc/passwd"]}, "names[0]"),
    ({"names": ["undeliverable/2026/08/07/teams-ops/\ud800.json"]}, "names[0]"),
    ({"names": "x"}, "names"),
    ({"prefix": "a" * 300}, "prefix"),
    ({"prefix": "under\ndeliverable"}, "prefix"),
    ({"limit": 0}, "limit"),
    ({"limit": True}, "limit"),
    ({"force": "yes"}, "force"),
    ({"colour": 1}, "colour"),
    (b"[" * 100_000, "body"),
    (b"\xff", "body"),
])
def test_dead_letter_endpoint_mistakes_are_400_naming_the_field(notify_env, body, field):
    code, answer = replay_call(notify_env, body)
    assert code == 400 and answer["error"]["field"] == field


def test_dead_letter_list_mistakes_are_400(notify_env):
    fn = notify_env.fns["flux_deadletters_list"].get_user_function()
    for params, field in (({"limit": "many"}, "limit"), ({"limit": "99999999999"}, "limit"),
                          ({"prefix": "\ud800"}, "prefix")):
        resp = fn(func.HttpRequest("GET", "http://localhost/api/flux/deadletters", body=b"", params=params))
        assert resp.status_code == 400 and json.loads(resp.get_body())["error"]["field"] == field


# --- issue 7: the generic-hmac receiver -----------------------------------------------------------------

def test_a_signed_event_replayed_is_refused_across_instances(notify_env):
    body, sig = signed(flux_event(timestamp=now_rfc3339()))
    assert notify_env.http("prod-weu-1", body, sig)[0] == 200
    notify.reset_forwarder()  # another instance: the digest is in Table storage
    code, answer = notify_env.http("prod-weu-1", body, sig)
    assert code == 409 and answer["error"]["code"] == "Replay"
    assert len(notify_env.targets.delivered("/hook/audit")) == 1


@pytest.mark.parametrize("offset", [-301, 3600, -86400])
def test_signed_events_outside_the_dedupe_window_are_refused(notify_env, offset):
    body, sig = signed(flux_event(timestamp=now_rfc3339(offset)))
    code, answer = notify_env.http("prod-weu-1", body, sig)
    assert code == 400 and answer["error"]["field"] == "timestamp"
    assert notify_env.targets.requests == []


def test_cluster_names_map_to_distinct_keys(notify_env):
    keys = {"prod.weu-1": "key-dot", "prod_weu_1": "key-underscore", "prod-weu-1": "key-dash"}
    names = {"prod.weu-1": "flux-hmac-x--prod-dweu-h1", "prod_weu_1": "flux-hmac-x--prod-uweu-u1",
             "prod-weu-1": "flux-hmac-prod-weu-1"}
    for cluster, key in keys.items():
        notify_env.vault.seed(names[cluster], key)
    for cluster, key in keys.items():
        body = json.dumps(flux_event(f"from {cluster}", timestamp=now_rfc3339(), cluster=None)).encode()
        for other, other_key in keys.items():  # only the cluster's own key opens its route
            code, _ = notify_env.http(cluster, body, hmac_signature(body, other_key))
            assert code == (200 if other == cluster else 401), (cluster, other)
    assert sorted(r.json()["message"] for r in notify_env.targets.delivered("/hook/audit")) == sorted(
        f"from {c}" for c in keys)


@pytest.mark.parametrize("cluster", ["prod-weu-1\n", "prod\ud800", "Prod", "-x", "a" * 64, "a/b", ""])
def test_route_names_that_are_no_cluster_are_400_and_store_nothing(notify_env, cluster):
    body, sig = signed(flux_event(timestamp=now_rfc3339()))
    code, answer = notify_env.http(cluster, body, sig)
    assert code == 400 and answer["error"]["field"] == "cluster"
    assert notify_env.dead_letters() == [] and notify_env.targets.requests == []


def test_bodies_over_256_kib_are_413(notify_env):
    body = json.dumps(flux_event("x" * 300_000, timestamp=now_rfc3339())).encode()
    code, answer = notify_env.http("prod-weu-1", body, hmac_signature(body, HTTP_HMAC))
    assert code == 413 and notify_env.targets.requests == []
    [letter] = notify_env.dead_letters()
    assert len(letter["body"].encode()) <= 4096 and letter["bodyBytes"] == len(body)


def test_unsigned_posts_keep_only_first_bytes_and_are_bounded_per_cluster(notify_env):
    for i in range(30):
        body = json.dumps({"i": i, "junk": "y" * 10_000}).encode()
        assert notify_env.http("prod-weu-1", body, None)[0] == 401
        assert notify_env.http(f"nokey-{i}", body, "sha256=00")[0] == 401  # clusters without a key share a bound
    letters = notify_env.dead_letters()
    assert sorted({r["cluster"] == "prod-weu-1" for r in letters}) == [False, True]
    assert sum(r["cluster"] == "prod-weu-1" for r in letters) == 20
    assert sum(r["cluster"] != "prod-weu-1" for r in letters) == 20
    assert all(r["bodyTruncated"] and len(r["body"].encode()) <= 4096 and r["replayable"] is False for r in letters)


def test_deeply_nested_signed_body_is_400(notify_env):
    body = b"[" * 100_000 + b"]" * 100_000
    body = body[:200_000]
    code, answer = notify_env.http("prod-weu-1", body, hmac_signature(body, HTTP_HMAC))
    assert code == 400 and answer["error"]["field"] == "body" and "nested" in answer["error"]["message"]


def test_no_function_key_is_needed_by_a_cluster(notify_env, functions_by_name):
    [trigger] = [b for b in json.loads(functions_by_name["flux_events_http"].get_function_json())["bindings"]
                 if b["type"] == "httpTrigger"]
    assert trigger["authLevel"] == "ANONYMOUS"
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "/api/flux/events/prod-weu-1?code=" not in readme
