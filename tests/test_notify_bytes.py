"""Flux's bytes (issue #13, point 5): what each target receives equals what notification-controller sends.

The expected bytes are built here from Flux's Go struct definitions (field order, json tags, omitempty)
with a small encoder that follows Go's ``encoding/json`` rules character by character, written apart
from the app's own encoder (``shared.notify.gojson``), and compared byte for byte with the requests the
recording target server received. The generic-hmac signature is also checked against Flux's own test
vector (``internal/notifier/forwarder_test.go``: key ``7152fed3…``, ``sha256=65b01854…``). And Go itself
marshals the same event with Flux's struct shapes (tests/fixtures/notify/flux_payloads.go, ``go run``):
the targets' bodies are Go's bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from shared.notify.targets import hmac_signature
from tests.peers.local_notify import AUDIT_HMAC, flux_event, routing_yaml
from tests.test_notify_forward import notify_env, notify_functions  # noqa: F401  (fixtures)


# --- Go's encoding/json, character by character (encode.go appendString with escapeHTML) -------------

def go_string(text: str) -> str:
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif o < 0x20 or ch in "<>&" or o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:  # Go's decoder turned an escaped lone surrogate into U+FFFD
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out) + '"'


def go(value) -> str:
    """``value``: str, bool, list, ``Map`` (sorted keys) or ``Struct`` (fields in order, omitempty)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go(v) for v in value) + "]"
    if isinstance(value, Map):
        return "{" + ",".join(go_string(k) + ":" + go(value.items[k]) for k in sorted(value.items)) + "}"
    if isinstance(value, Struct):
        parts = []
        for name, val, omitempty in value.fields:
            if omitempty and (val in ("", False, None) or (isinstance(val, (list, Map)) and not len(val))):
                continue
            parts.append(go_string(name) + ":" + go(val))
        return "{" + ",".join(parts) + "}"
    raise TypeError(type(value))


class Map:
    def __init__(self, items: dict):
        self.items = items

    def __len__(self):
        return len(self.items)


class Struct:
    def __init__(self, *fields):
        self.fields = fields  # (json name, value, omitempty)


def event_struct(ev: dict) -> Struct:
    """fluxcd/pkg apis/event/v1beta1 ``Event`` with k8s ``ObjectReference`` (all omitempty)."""
    obj = ev["involvedObject"]
    ref = Struct(*[(k, obj.get(k, ""), True) for k in
                   ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")])
    return Struct(("involvedObject", ref, False), ("severity", ev["severity"], False),
                  ("timestamp", ev["timestamp"], False), ("message", ev["message"], False),
                  ("reason", ev["reason"], False), ("metadata", Map(ev.get("metadata") or {}), True),
                  ("reportingController", ev.get("reportingController", ""), False),
                  ("reportingInstance", ev.get("reportingInstance", ""), True))


def text_block(text="", size="", weight="", color="", wrap=False) -> Struct:
    return Struct(("type", "TextBlock", False), ("text", text, True), ("size", size, True),
                  ("weight", weight, True), ("color", color, True), ("wrap", wrap, True))


def adaptive_card(ev: dict) -> Struct:
    """teams.go ``msAdaptiveCardMessage`` as ``buildMSTeamsAdaptiveCardPayload`` fills it."""
    obj = f"{ev['involvedObject']['kind'].lower()}/{ev['involvedObject']['name']}.{ev['involvedObject']['namespace']}"
    meta = dict(ev.get("metadata") or {})
    facts = ([Struct(("title", "summary", False), ("value", meta.pop("summary"), False))] if "summary" in meta else [])
    facts += [Struct(("title", k, False), ("value", meta[k], False)) for k in sorted(meta)]
    body = Struct(("type", "Container", False), ("items", [
        text_block(obj, "large", "bolder", wrap=True),
        text_block(ev["message"], color="attention" if ev["severity"] == "error" else "", wrap=True),
        Struct(("type", "FactSet", False), ("facts", facts, True))], True))
    content = Struct(("$schema", "http://adaptivecards.io/schemas/adaptive-card.json", False),
                     ("type", "AdaptiveCard", False), ("version", "1.4", False), ("body", [body], False),
                     ("msteams", Struct(("width", "Full", True)), False))
    return Struct(("type", "message", False), ("attachments", [Struct(
        ("contentType", "application/vnd.microsoft.card.adaptive", False), ("content", content, False))], False))


def slack_message(ev: dict, channel: str) -> Struct:
    """slack.go ``SlackPayload`` / ``SlackAttachment`` / ``SlackField``."""
    obj = f"{ev['involvedObject']['kind'].lower()}/{ev['involvedObject']['name']}.{ev['involvedObject']['namespace']}"
    meta = ev.get("metadata") or {}
    attachment = Struct(("fallback", f"{obj}: {ev['message'].split(chr(10))[0]}", False),
                        ("color", "danger" if ev["severity"] == "error" else "good", False),
                        ("author_name", obj, False), ("text", ev["message"], False), ("mrkdwn_in", ["text"], False),
                        ("fields", [Struct(("title", k, False), ("value", meta[k], False), ("short", False, False))
                                    for k in sorted(meta)], False))
    return Struct(("channel", channel, False), ("token", "", True), ("username", ev["reportingController"], False),
                  ("icon_url", "", False), ("icon_emoji", "", False), ("text", "", True),
                  ("attachments", [attachment], True))


# an event as a cluster might write it: keys out of Flux's order, unsorted metadata, HTML characters,
# U+2028, a control character, raw non-ASCII, an escaped lone surrogate, an unknown field, a fraction
TRICKY = (b'{"reportingController":"kustomize-controller","metadata":{"zeta":"z","cluster":"prod-weu-1",'
          b'"revision":"main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1","summary":"<b>prod</b> & co"},'
          b'"severity":"error","message":"Health check failed: <deployment/web> & \\u2028 \\u0007 '
          b'\xc3\xa9t\xc3\xa9 \\ud800 \\"quoted\\"\\nline two","reason":"HealthCheckFailed",'
          b'"timestamp":"2026-08-07T12:00:00.123456789+02:00","extra":{"ignored":true},'
          b'"involvedObject":{"uid":"7d0cdc51-ddcf-4743-b223-83ca5c699632","name":"apps","kind":"Kustomization",'
          b'"namespace":"flux-system","apiVersion":"kustomize.toolkit.fluxcd.io/v1","resourceVersion":"123"},'
          b'"reportingInstance":"kustomize-controller-7c7b47f5f-8bhrp"}')


def decoded_as_go() -> dict:
    """What Flux holds after decoding TRICKY: the known fields, U+FFFD for the lone surrogate, the time
    as metav1.Time marshals it (UTC, seconds)."""
    ev = json.loads(TRICKY)
    ev["message"] = ev["message"].replace("\ud800", "\ufffd")
    ev["timestamp"] = "2026-08-07T10:00:00Z"
    return ev


def test_flux_forwarder_test_vector_signature(notify_env):
    # internal/notifier/forwarder_test.go: testEvent() at time.Unix(1664520029, 0), this key, this signature
    key = "7152fed34dd6149a7c75a276c510da27cb6f82b0"
    notify_env.vault.seed("audit-hmac", key)
    notify_env.rewire(routing_yaml(notify_env.targets.url, timeout=1.5).replace(
        "defaultCluster: unknown", "defaultCluster: gitops"))
    event = {"metadata": {"test": "metadata"}, "reportingInstance": "source-controller-xyz",
             "involvedObject": {"namespace": "gitops-system", "name": "webapp", "kind": "GitRepository"},
             "severity": "info", "timestamp": "2022-09-30T06:40:29Z", "message": "message", "reason": "reason",
             "reportingController": "source-controller"}
    notify_env.eventhub([event])
    [got] = notify_env.targets.delivered("/hook/audit")
    assert got.headers["x-signature"] == "sha256=65b018549b1254e7226d1c08f9567ee45bc9de0fc4e7b1a40253f9a018b08be7"
    assert got.headers["gotk-component"] == "source-controller"


def test_generic_hmac_body_is_the_event_as_go_marshals_it(notify_env):
    notify_env.eventhub([TRICKY])
    [got] = notify_env.targets.delivered("/hook/audit")
    expected = go(event_struct(decoded_as_go())).encode("utf-8")
    assert got.body == expected
    assert got.headers["x-signature"] == hmac_signature(expected, AUDIT_HMAC)
    assert b"\\u003cdeployment/web\\u003e \\u0026 \\u2028 \\u0007 \xc3\xa9t\xc3\xa9 \xef\xbf\xbd" in got.body
    assert b'"extra"' not in got.body and b'": ' not in got.body


def test_gotk_component_is_sent_even_when_empty(notify_env):
    notify_env.eventhub([{**flux_event(), "reportingController": ""}])
    [got] = notify_env.targets.delivered("/hook/audit")
    assert "gotk-component" in got.headers and got.headers["gotk-component"] == ""


def test_teams_and_slack_bodies_are_flux_bytes(notify_env):
    notify_env.eventhub([TRICKY])
    [card] = notify_env.targets.delivered("/teams/")
    [slack] = notify_env.targets.delivered("/slack/")
    ev = decoded_as_go()
    assert card.body == go(adaptive_card(ev)).encode("utf-8")
    assert slack.body == go(slack_message(ev, "#flux-prod")).encode("utf-8")
    for body in (card.body, slack.body):  # compact, raw UTF-8
        assert b'": ' not in body and b"\xc3\xa9t\xc3\xa9" in body and b"\\u00e9" not in body


# --- and by Go itself --------------------------------------------------------------------------------

GO_PAYLOADS = Path(__file__).resolve().parent / "fixtures" / "notify" / "flux_payloads.go"


def go_marshalled(event: bytes, channel: str) -> list[bytes]:
    """The generic-hmac, msteams and slack bodies of ``event`` as Go's encoding/json marshals Flux's
    structs (tests/fixtures/notify/flux_payloads.go, run with Debian's golang-go from .ci/setup)."""
    go_bin = shutil.which("go")
    assert go_bin, "the go command is missing: run bash .ci/setup (it installs Debian's golang-go)"
    env = {**os.environ, "GO111MODULE": "off", "TZ": "UTC",  # one file, the standard library only
           "GOCACHE": os.environ.get("GOCACHE") or str(Path(tempfile.gettempdir()) / "flux-aks-go-cache")}
    out = subprocess.run([go_bin, "run", str(GO_PAYLOADS), channel], input=event, capture_output=True, env=env,
                         timeout=300, check=True).stdout
    lines = out.split(b"\n")
    assert len(lines) == 4 and lines[3] == b"", out
    return lines[:3]


def test_every_body_is_what_go_marshals_for_fluxs_structs(notify_env):
    """The same tricky event through the app, and through Go's encoding/json with Flux's struct shapes:
    the generic-hmac, Teams and Slack bodies the targets received are Go's bytes, and so is the
    signature."""
    hmac_body, card_body, slack_body = go_marshalled(TRICKY, "#flux-prod")
    notify_env.eventhub([TRICKY])
    [audit] = notify_env.targets.delivered("/hook/audit")
    [card] = notify_env.targets.delivered("/teams/")
    [slack] = notify_env.targets.delivered("/slack/")
    assert audit.body == hmac_body
    assert audit.headers["x-signature"] == hmac_signature(hmac_body, AUDIT_HMAC)
    assert card.body == card_body
    assert slack.body == slack_body
