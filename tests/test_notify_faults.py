"""Fault test: 1,000 events while every target fails at random (500/503/429/connection reset/timeout).

Every (event, target) pair the routing selects must end either delivered exactly once (one 2xx-answered
request; for Azure DevOps one status on the event's commit) or in the dead-letter container, never both
and never neither; and the Event Hub function must return normally (so the checkpoint moves on).

Delivery over HTTP is at least once: a request the target answers after the client gave up is sent again.
The client timeout here (2 s) is far above what the local server takes even on a loaded machine, so
such a late answer is not what this test measures; the "timeout" fault holds past it.
"""

from __future__ import annotations

import collections
import time

from tests.test_notify_forward import notify_env, notify_functions  # noqa: F401  (fixtures)
from tests.peers.local_notify import flux_event, routing_yaml

N = 1000


def _sha(i: int) -> str:
    return f"{i:040x}"


def test_thousand_events_with_random_target_failures_are_delivered_once_or_dead_lettered(notify_env):
    t = notify_env.targets
    t.timeout_hold = 2.5  # a "timeout" holds the request past the targets' 2 s client timeout
    notify_env.rewire(routing_yaml(t.url, timeout=2.0), NOTIFY_MAX_ATTEMPTS="3", NOTIFY_BATCH_BUDGET_SECONDS="50",
                      NOTIFY_CONCURRENCY="32")
    answers = (500, 503, (429, {"Retry-After": "0"}), "reset", 502, 500, 503, "timeout")
    for prefix, seed in (("/contoso/", 1), ("/teams/", 2), ("/slack/", 3), ("/hook/", 4)):
        t.fail_randomly(prefix, rate=0.25, answers=answers, seed=seed)
    # even events are errors of prod clusters (all four targets); odd ones info events of dev clusters
    # (audit only: teams is errors only, slack prod only, ADO takes no plain info events)
    events = [flux_event(f"event {i}: health check failed", revision=f"main@sha1:{_sha(i)}")
              if i % 2 == 0 else
              flux_event(f"event {i}: applied", severity="info", reason="ReconciliationSucceeded",
                         cluster="dev-weu-1", revision=f"main@sha1:{_sha(i)}")
              for i in range(N)]
    started = time.monotonic()
    notify_env.eventhub(events)  # returns normally: everything delivered or dead-lettered
    elapsed = time.monotonic() - started

    delivered = collections.Counter()
    for prefix, target in (("/teams/", "teams-ops"), ("/slack/", "slack-prod"), ("/hook/", "audit")):
        for r in t.delivered(prefix):
            body = r.json()
            if target == "teams-ops":
                text = body["attachments"][0]["content"]["body"][0]["items"][1]["text"]
            elif target == "slack-prod":
                text = body["attachments"][0]["text"]
            else:
                text = body["message"]
            delivered[(int(text.split(":")[0].split()[1]), target)] += 1
    for i in range(0, N, 2):
        n = len(t.ado_statuses("contoso", "platform", "fleet", _sha(i)))
        if n:
            delivered[(i, "ado-fleet")] += n
    dead = collections.Counter()
    for record in notify_env.dead_letters("undeliverable/"):
        dead[(int(record["event"]["message"].split(":")[0].split()[1]), record["target"])] += 1
        assert 1 <= record["attempts"] <= 3 and record["error"]

    expected = {(i, tg) for i in range(N)
                for tg in (("ado-fleet", "teams-ops", "slack-prod", "audit") if i % 2 == 0 else ("audit",))}
    assert set(delivered) | set(dead) == expected  # nothing lost, nothing sent where it should not go
    twice = {k: v for k, v in delivered.items() if v != 1}
    assert not twice, f"delivered more than once: {list(twice.items())[:5]}"
    assert not {k for k, v in dead.items() if v != 1}
    both = set(delivered) & set(dead)
    assert not both, f"delivered and dead-lettered: {sorted(both)[:5]}"
    # the faults really happened and were mostly absorbed by retries
    failed_answers = [r for r in t.requests if r.status not in (200, 201, 202)]
    assert len(failed_answers) > 500
    assert 0 < sum(dead.values()) < 0.05 * len(expected)
    assert elapsed < 50
