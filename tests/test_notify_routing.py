"""Routing, event decoding and payload rules of the notification forwarder (no peers needed)."""

from __future__ import annotations

import json

import pytest

from shared.ports.azure.devops import retry_after_seconds
from shared.notify.events import InvalidEvent, commit_sha, parse_event
from shared.notify.routing import RoutingConfigError, parse_routing
from shared.notify.targets import (ADO_MAX_DESCRIPTION, ADO_MAX_SUMMARY, Skip, commit_status_for, hmac_signature,
                                   slack_payload, split_camel_case, teams_payload, verify_signature)
from tests.peers.local_notify import SHA, flux_event, routing_yaml


def ev(**kw):
    return parse_event(json.dumps(flux_event(**kw)).encode(), default_cluster="unknown")


ROUTING = parse_routing(routing_yaml("https://dev.azure.com"))


def routed(event) -> list[str]:
    return [t.name for t in ROUTING.route(event)]


# --- routing semantics (Flux Alerts) ------------------------------------------------------------

def test_error_event_of_a_prod_kustomization_goes_everywhere():
    assert routed(ev()) == ["ado-fleet", "teams-ops", "slack-prod", "audit"]


def test_event_severity_error_drops_info_events_and_ado_takes_no_plain_info():
    info = ev(severity="info", reason="ReconciliationSucceeded", message="Applied revision")
    # teams is eventSeverity: error; ADO takes info only with commit_status=update or commit (Flux NC v1.9)
    assert routed(info) == ["slack-prod", "audit"]


def test_cluster_selector_event_sources_and_exclusion_list():
    assert "slack-prod" not in routed(ev(cluster="dev-weu-1"))
    assert "slack-prod" not in routed(ev(kind="GitRepository", name="flux-system"))
    assert "slack-prod" in routed(ev(kind="HelmRelease", name="podinfo", namespace="apps"))
    assert "slack-prod" not in routed(ev(kind="HelmRelease", name="podinfo", namespace="other"))
    assert "slack-prod" not in routed(ev(message="Dependencies do not meet ready condition"))


def test_inclusion_list_and_name_wildcard():
    cfg = parse_routing("""
targets:
  - name: t
    type: generic
    urlSecret: u
    eventSources: [{kind: kustomization, name: "app-*"}]
    inclusionList: ["failed", "timeout"]
""")
    t = cfg.targets[0]
    assert t.accepts(ev(name="app-web", message="health check failed"))
    assert not t.accepts(ev(name="app-web", message="all good"))
    assert not t.accepts(ev(name="infra", message="health check failed"))


def test_commit_status_update_goes_only_to_ado_and_generic_targets():
    success = ev(severity="info", reason="ReconciliationSucceeded", commit_status="update",
                 message="Reconciliation finished in 2s, next run in 10m")
    assert routed(success) == ["ado-fleet", "audit"]


def test_event_without_cluster_metadata_falls_back_to_default_cluster():
    event = parse_event(json.dumps(flux_event(cluster=None)).encode(), default_cluster="unknown")
    assert event.cluster == "unknown"
    with pytest.raises(InvalidEvent) as err:
        parse_event(json.dumps(flux_event(cluster=None)).encode())
    assert err.value.field == "metadata.cluster"


# --- configuration errors name the entry ------------------------------------------------------

@pytest.mark.parametrize("doc, field", [
    ("targets: []", "targets"),
    ("targets: [{name: a, type: pagerduty}]", "targets[0].type"),
    ("targets: [{name: a, type: msteams}]", "targets[0].urlSecret"),
    ("targets: [{name: a, type: msteams, urlSecret: 'https://x.webhook.office.com/abc'}]", "targets[0].urlSecret"),
    ("targets: [{name: a, type: generic, urlSecret: u}, {name: a, type: generic, urlSecret: u}]", "targets[1].name"),
    ("targets: [{name: a, type: generic, urlSecret: u, inclusionList: ['ok', '(unclosed']}]",
     "targets[0].inclusionList[1]"),
    ("targets: [{name: a, type: generic, urlSecret: u, eventSources: [{kind: Pod}]}]", "targets[0].eventSources[0].kind"),
    ("targets: [{name: a, type: generic, urlSecret: u, eventSources: [{kind: Kustomization, name: '*', "
     "matchLabels: {a: b}}]}]", "targets[0].eventSources[0].matchLabels"),
    ("targets: [{name: a, type: generic, urlSecret: u, eventSeverity: warning}]", "targets[0].eventSeverity"),
    ("targets: [{name: a, type: azuredevops, organization: o, project: p, repository: r}]", "targets[0].patSecret"),
    ("targets: [{name: a, type: generic-hmac, urlSecret: u}]", "targets[0].hmacSecret"),
    ("targets: [{name: a, type: generic, urlSecret: u, colour: red}]", "targets[0].colour"),
    ("dedupeWindow: soon\ntargets: [{name: a, type: generic, urlSecret: u}]", "dedupeWindow"),
])
def test_invalid_routing_fails_naming_the_bad_entry(doc, field):
    with pytest.raises(RoutingConfigError) as err:
        parse_routing(doc)
    assert err.value.field == field, str(err.value)
    assert str(err.value).startswith(field)


def test_dedupe_window_is_configurable():
    assert parse_routing("dedupeWindow: 90s\ntargets: [{name: a, type: generic, urlSecret: u}]").dedupe_window == 90
    assert ROUTING.dedupe_window == 300


# --- events ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    (b"\xff\xfe", "body"), (b"{not json", "body"), (b"[1]", "body"),
    (json.dumps({**flux_event(), "involvedObject": {"name": "x"}}).encode(), "involvedObject.kind"),
    (json.dumps({**flux_event(), "severity": "warning"}).encode(), "severity"),
    (json.dumps({**flux_event(), "timestamp": "yesterday"}).encode(), "timestamp"),
    (json.dumps({**flux_event(), "metadata": {"revision": 1}}).encode(), "metadata.revision"),
])
def test_malformed_events_are_rejected_naming_the_field(body, field):
    with pytest.raises(InvalidEvent) as err:
        parse_event(body, default_cluster="c")
    assert err.value.field == field


def test_dedupe_key_covers_object_message_revision_and_cluster():
    a = ev()
    assert a.dedupe_key() == ev().dedupe_key()
    assert a.dedupe_key() != ev(message="other").dedupe_key()
    assert a.dedupe_key() != ev(revision="main@sha1:" + "b" * 40).dedupe_key()
    assert a.dedupe_key() != ev(cluster="prod-neu-1").dedupe_key()
    assert a.dedupe_key() != ev(name="other").dedupe_key()


@pytest.mark.parametrize("rev", [f"main@sha1:{SHA}", f"sha1:{SHA}", f"main/{SHA}", f"HEAD/{SHA}", SHA,
                                 f"feature/x@sha1:{SHA.upper()}"])
def test_commit_sha_accepts_flux_revision_forms(rev):
    assert commit_sha(rev) == SHA


@pytest.mark.parametrize("rev", ["sha256:" + "a" * 64, "main@sha1:abc", "v1.0.0"])
def test_commit_sha_rejects_non_commits(rev):
    with pytest.raises(InvalidEvent):
        commit_sha(rev)


# --- payloads ----------------------------------------------------------------------------------------

def test_ado_status_as_flux_with_cluster_in_name_and_summary_in_genre():
    sha, status = commit_status_for(ev(summary="prod-weu"))
    assert sha == SHA
    assert status.to_json() == {"state": "error", "description": "health check failed",
                                "context": {"name": "kustomization/apps/7d0cdc51/prod-weu-1", "genre": "fluxcd:prod-weu"}}
    assert isinstance(commit_status_for(ev(reason="Progressing", severity="info")), Skip)
    _, ok = commit_status_for(ev(severity="info", reason="ReconciliationSucceeded", commit="main@sha1:" + SHA))
    assert (ok.state, ok.description, ok.genre) == ("succeeded", "reconciliation succeeded", "fluxcd")


@pytest.mark.parametrize("reason, words", [
    ("ReconciliationSucceeded", ["Reconciliation", "Succeeded"]),
    ("HealthCheckFailed", ["Health", "Check", "Failed"]),
    ("TLSHandshakeFailed", ["TLS", "Handshake", "Failed"]),  # upper run, then its last letter starts a word
    ("OCI2Failed", ["OCI", "2", "Failed"]),  # digits are their own word
    ("Build_Failed", ["Build", "_", "Failed"]),
])
def test_ado_description_splits_the_reason_as_flux_split_camelcase(reason, words):
    assert split_camel_case(reason) == words
    _, status = commit_status_for(ev(reason=reason))
    assert status.description == " ".join(words).lower()


def test_ado_description_and_summary_over_their_caps_are_cut_with_the_marker():
    reason = "Health" + "CheckFailed" * 120  # "health check failed check failed …": 2,406 characters
    summary = "prod-weu " * 40  # 360 characters
    _, status = commit_status_for(ev(reason=reason, summary=summary))
    words = " ".join(split_camel_case(reason)).lower()
    assert len(words) > ADO_MAX_DESCRIPTION and len(status.description) <= ADO_MAX_DESCRIPTION
    kept, marker = status.description.split(" … [cut to fit Azure DevOps: ")
    assert words.startswith(kept) and len(kept) > ADO_MAX_DESCRIPTION - 60
    assert marker == f"{len(kept):,} of {len(words):,} characters]" and "\n" not in status.description
    genre = status.genre.removeprefix("fluxcd:")
    assert len(genre) <= ADO_MAX_SUMMARY and status.to_json()["context"]["genre"] == status.genre
    kept, marker = genre.split(" … [cut to fit Azure DevOps: ")
    assert summary.startswith(kept) and marker == f"{len(kept):,} of {len(summary):,} characters]"
    # within the caps: whole
    _, whole = commit_status_for(ev(summary="s" * ADO_MAX_SUMMARY))
    assert whole.genre == "fluxcd:" + "s" * ADO_MAX_SUMMARY


def test_ado_status_name_without_uid():
    _, status = commit_status_for(ev(uid=""))
    assert status.name == "kustomization/apps/prod-weu-1"


@pytest.mark.parametrize("revision, why", [
    ("sha256:" + "a" * 64, "is not a Git commit"),  # an OCI digest
    ("6.7.1", "is not a Git commit"),  # a chart version
    ("latest@sha256:" + "b" * 64, "is not a Git commit"),
])
def test_ado_skips_events_without_a_commit_as_flux_does(revision, why):
    skip = commit_status_for(ev(revision=revision))
    assert isinstance(skip, Skip) and why in skip.reason
    no_revision = {**flux_event(), "metadata": {"cluster": "prod-weu-1"}}
    assert "no commit" in commit_status_for(parse_event(json.dumps(no_revision))).reason


def test_teams_adaptive_card_and_legacy_message_card():
    card = teams_payload(ev(summary="prod"), "https://prod-00.westeurope.logic.azure.com/workflows/x")
    content = card["attachments"][0]["content"]
    assert card["type"] == "message" and content["type"] == "AdaptiveCard" and content["version"] == "1.4"
    items = content["body"][0]["items"]
    assert items[0]["text"] == "kustomization/apps.flux-system"
    assert items[1]["color"] == "attention"
    assert [f["title"] for f in items[2]["facts"]] == ["summary", "cluster", "revision"]
    legacy = teams_payload(ev(), "https://contoso.webhook.office.com/webhookb2/abc")
    assert legacy["@type"] == "MessageCard" and legacy["themeColor"] == "FF0000"
    # no metadata: Flux's FactSet has no "facts" key (omitempty), an info message no color
    bare = {k: v for k, v in flux_event(severity="info", reason="Info").items() if k != "metadata"}
    items = teams_payload(parse_event(json.dumps(bare), default_cluster="c"), "https://x.logic.azure.com/w")[
        "attachments"][0]["content"]["body"][0]["items"]
    assert items[2] == {"type": "FactSet"} and "color" not in items[1]


def test_slack_payload_as_flux():
    body = slack_payload(ev(message="line one\nline two"), ROUTING.target("slack-prod"))
    att = body["attachments"][0]
    assert body["channel"] == "#flux-prod" and body["username"] == "kustomize-controller"
    assert att["color"] == "danger" and att["fallback"] == "kustomization/apps.flux-system: line one"


def test_hmac_signature_round_trip_and_constant_time_check():
    sig = hmac_signature(b"{}", "k")
    assert sig.startswith("sha256=") and verify_signature(b"{}", sig, "k")
    assert not verify_signature(b"{ }", sig, "k")
    assert not verify_signature(b"{}", sig, "other")
    assert not verify_signature(b"{}", None, "k") and not verify_signature(b"{}", "md5=00", "k")


def test_retry_after_seconds_and_http_date():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_cli_check_accepts_a_good_file_and_names_the_bad_entry(tmp_path, capsys):
    from shared.notify.__main__ import main

    good = tmp_path / "routing.yaml"
    good.write_text(routing_yaml("https://dev.azure.com"))
    assert main(["check", str(good)]) == 0
    assert "4 target(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(routing_yaml("https://dev.azure.com").replace("urlSecret: audit-webhook", "urlSecret: https://x"))
    assert main(["check", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("✗ targets[3].urlSecret:")
