"""Property-based fuzzing of every HTTP function (issue 7): whatever a caller sends, the answer is
JSON of the documented shape with a 2xx/4xx or a typed 5xx status, never a traceback; a 4xx wrote
nothing to git, Key Vault, the cluster or storage; and no secret value the app holds (plain,
URL-encoded or base64) appears in any response or log line.

Every HTTP function of the indexed app is fuzzed, found from ``app.get_functions()`` rather than
listed by hand, so a new endpoint is covered the day it is added. For the functions whose bodies
have a schema, hypothesis mutates a valid request (one or more fields replaced by hostile values,
unknown fields added); every function also gets arbitrary JSON, raw bytes, deep nesting, hostile
route and query values.

The peers are the real ones: the git smart-HTTP server (its request log: no ``git-receive-pack``),
the Kubernetes API test server (its request log: no write other than a server-side dry run), the
Key Vault test server through the real ``SecretClient`` (no PUT, PATCH, POST or DELETE) and an
Azurite of this module's own (every table and container snapshotted around each call).

``FUZZ_EXAMPLES`` sets the number of examples per function (default 120 in CI);
``bench/fuzz_http.py`` runs many more.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import urllib.parse

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.notify.targets import hmac_signature
from tests.peers.azurite import start_or_fail
from tests.peers.local_notify import HTTP_HMAC, flux_event, now_rfc3339
from tests.test_bootstrap_e2e import cluster_registry, env  # noqa: F401 - fixtures
from tests.test_bootstrap_e2e import request as bootstrap_request
from tests.test_notify_forward import notify_env, notify_functions  # noqa: F401 - fixtures

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
#: Statuses an HTTP function may answer. 500 is not among them: with valid app settings it would
#: be a bug (the generic "internal error" answer), whatever the input.
ALLOWED = {200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 410, 412, 413, 415, 422, 429, 502, 503, 504}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}

pytestmark = pytest.mark.skipif(bool(os.environ.get("TEST_KUBECONFIG")),
                                reason="reads the Kubernetes API test server's request log")


@pytest.fixture(scope="module")
def azurite():
    """An Azurite of this module's own, so that a snapshot of every table and container is cheap
    (overrides the session's for the fixtures this module uses)."""
    server = start_or_fail()
    try:
        yield server
    finally:
        server.stop()


# -- hostile values -------------------------------------------------------------------------------

ANY_CHAR = st.characters(exclude_categories=())  # surrogates and control characters included
NASTY_TEXT = st.sampled_from([
    "", " ", "\n", "x\n", "\ud800", "a\udfffb", "é", "ü" * 300, "\x00", "../../etc/passwd", "/etc/passwd",
    "http://127.0.0.1/o/p/_git/r", "https://localhost/o/p/_git/r", "https://[::ffff:127.0.0.1]/o/p/_git/r",
    "https://2130706433/o/p/_git/r", "https://0x7f000001/o/p/_git/r", "http://169.254.169.254/latest/meta-data",
    "https://user:pw@dev.azure.com/o/p/_git/r", "ssh://git@ssh.dev.azure.com/v3/o/p/r", "git@ssh.dev.azure.com:v3/o/p/r",
    "file:///etc/passwd", "kube-system", "default", "true", "yes", "on", "1", "010", "0x1f", "null", "~",
    "ghcr.io/evil", "evil.example/fluxcd", "ghcr.io/fluxcd\n", "-" * 64, "a" * 5000, "${HOME}", "%2e%2e/", "*",
    "prod.weu-1", "prod_weu_1", "x--prod-dweu-h1", "0s", "-1s", "9999h", "1e400", "NaN",
])
TEXT = st.one_of(NASTY_TEXT, st.text(ANY_CHAR, max_size=40))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
RAW = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", b"[]", b"\xff\xfe", b'"\\ud800"', b"[" * 3000 + b"]" * 3000,
                     b'{"a":' * 3000 + b"1" + b"}" * 3000, b"1" * 5000, b'{"url": NaN}', b"\x00" * 10]),
)
ROUTE = st.one_of(st.sampled_from(["prod-weu-1", "fuzz-1", "aks-weu-1"]), NASTY_TEXT, st.text(ANY_CHAR, max_size=30))
SIGN = "<sign with the cluster's key>"


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


def mutated(template: dict) -> st.SearchStrategy[bytes]:
    """``template`` with one or more fields replaced by hostile values, removed, or joined by an
    unknown field, as JSON bytes."""
    keys = sorted(template)

    @st.composite
    def build(draw):
        body = dict(template)
        for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
            action = draw(st.sampled_from(["replace", "replace", "replace", "drop"]))
            if action == "drop":
                body.pop(key, None)
            else:
                body[key] = draw(JSON)
        if draw(st.booleans()) and draw(st.booleans()):
            body[draw(TEXT)] = draw(JSON)
        return _dumps(body)

    return build()


def bodies(template: dict | None) -> st.SearchStrategy[bytes]:
    generic = st.one_of(JSON.map(_dumps), RAW)
    if not template:
        return generic
    return st.one_of(st.just(_dumps(template)), mutated(template), mutated(template), generic)


# -- what each function gets ----------------------------------------------------------------------


def _route(fn) -> tuple[str, list[str]]:
    trigger = fn.get_trigger().get_dict_repr()
    return trigger.get("route") or fn.get_function_name(), [str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or ["GET", "POST"]]


def templates(env, notify_env) -> dict[str, dict]:
    """Valid bodies (or None) per HTTP function whose body has a schema."""
    return {
        "bootstrap": bootstrap_request(env, clusterName="fuzz-1"),
        "registry_cluster": {"kubeconfigSecret": "aks-weu-1-kubeconfig", "patSecret": "fleet-pat",
                             "gitUrl": env["url"], "allowInsecureHttp": True},
        "flux_deadletters_replay": {"prefix": "undeliverable/", "limit": 10},
        "flux_events_http": flux_event(timestamp=now_rfc3339()),
    }


# -- observing the peers --------------------------------------------------------------------------


def storage_snapshot(azurite) -> dict:
    """Every entity of every table and every blob (name, etag) of every container of the module's
    Azurite."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    out: dict = {}
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    for table in tables.list_tables():
        client = tables.get_table_client(table.name)
        out[f"table:{table.name}"] = sorted((e["PartitionKey"], e["RowKey"], e.metadata.get("etag")) for e in client.list_entities())
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in blobs.list_containers():
        client = blobs.get_container_client(container.name)
        out[f"blob:{container.name}"] = sorted((b.name, b.etag) for b in client.list_blobs())
    return out


def storage_writes(before: dict, after: dict, allowed_prefixes: tuple[str, ...]) -> list[str]:
    """Names of what changed between two snapshots, minus blobs under ``allowed_prefixes``
    (``container/prefix``)."""
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = set(before.get(key, [])), set(after.get(key, []))
        for item in sorted(old ^ new, key=repr):
            name = f"{key.split(':', 1)[1]}/{item[0] if key.startswith('blob:') else item[:2]}"
            if not name.startswith(allowed_prefixes):
                changed.append(f"{key} {item[:2]}")
    return changed


def secrets_of(env, notify_env) -> list[str]:
    """Every secret value the peers hold, in the spellings a leak would take."""
    import yaml

    values = {env["pat"], HTTP_HMAC, *notify_env.secrets.values()}
    kube = yaml.safe_load(env["kubeconfig"])
    for user in kube.get("users") or []:
        for key in ("token", "client-key-data", "password"):
            if (user.get("user") or {}).get(key):
                values.add(user["user"][key])
    spellings = set()
    for v in values:
        if len(v) < 8 or v.startswith("http"):
            continue  # webhook URLs are also secrets, but their test host part is everywhere
        spellings |= {v, urllib.parse.quote(v, safe=""), base64.b64encode(v.encode()).decode()}
    return sorted(spellings)


# -- the property ---------------------------------------------------------------------------------


def http_functions(functions_by_name) -> list[str]:
    return sorted(name for name, fn in functions_by_name.items() if fn.is_http_function())


def test_every_http_function_is_fuzzed(functions_by_name):
    names = http_functions(functions_by_name)
    assert {"bootstrap", "flux_events_http", "flux_deadletters_replay", "registry_cluster"} <= set(names)


@pytest.mark.parametrize("name", ["bootstrap", "flux_events_http", "flux_deadletters_list", "flux_deadletters_replay",
                                  "rotate_cluster_now", "registry_list", "registry_cluster", "*others*"])
def test_fuzzed_requests_get_documented_answers_and_4xx_writes_nothing(
        name, functions_by_name, env, notify_env, azurite, kube_server, caplog, request, monkeypatch):
    all_names = http_functions(functions_by_name)
    if name == "*others*":
        targets = [n for n in all_names if n not in {"bootstrap", "flux_events_http", "flux_deadletters_list",
                                                      "flux_deadletters_replay", "rotate_cluster_now",
                                                      "registry_list", "registry_cluster"}]
    else:
        assert name in all_names
        targets = [name]
    # every app setting valid: the host's own storage is this module's Azurite
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    git, vault = env["git"], env["vault"]
    known = templates(env, notify_env)
    secrets = secrets_of(env, notify_env)
    caplog.set_level(logging.DEBUG)
    seen: dict[int, int] = {}
    request.node.user_properties.append(("statuses", seen))  # read by bench/fuzz_http.py

    for target in targets:
        fn = functions_by_name[target]
        route, methods = _route(fn)
        params = re.findall(r"{(\w+)(?::[^}]*)?}", route)
        # a refused generic-hmac post is kept as evidence (its first bytes, in the dead-letter
        # container) under a per-cluster rate bound (a counter row in the dedupe table): the only
        # storage writes a 4xx may make, and only there
        evidence = (f"{os.environ['NOTIFY_DEADLETTER_CONTAINER']}/",
                    f"{os.environ['NOTIFY_DEDUPE_TABLE']}/('refused'") if target == "flux_events_http" else ()

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(method=st.sampled_from(methods), body=bodies(known.get(target)),
               route_params=st.fixed_dictionaries({p: ROUTE for p in params}),
               query=st.dictionaries(st.sampled_from(["prefix", "limit", "cluster", "code", "x"]), TEXT, max_size=2),
               signature=st.one_of(st.none(), TEXT, st.just("sha256=" + "0" * 64), st.just(SIGN)))
        def one(method, body, route_params, query, signature):
            headers = {"Content-Type": "application/json"}
            if signature == SIGN:
                headers["X-Signature"] = hmac_signature(body, HTTP_HMAC)
            elif signature is not None:
                headers["X-Signature"] = signature
            url = "http://localhost/api/" + route
            req = func.HttpRequest(method, url, headers=headers, params=query, route_params=route_params, body=body)
            git_before, vault_before, kube_before = len(git.requests), len(vault.request_log), len(kube_server.received)
            store_before = storage_snapshot(azurite)

            resp = fn.get_user_function()(req)

            status = resp.status_code
            seen[status] = seen.get(status, 0) + 1
            raw = resp.get_body() or b""
            assert status in ALLOWED, (target, status, raw[:300])
            text = raw.decode("utf-8")
            assert "Traceback" not in text
            for secret in secrets:
                assert secret not in text, (target, "secret value in the response")
            if status == 204 and not raw:
                return
            assert (resp.mimetype or "").startswith(("application/json", "text/html")), (target, resp.mimetype)
            if resp.mimetype.startswith("text/html"):
                return
            answer = json.loads(text)
            assert isinstance(answer, dict), (target, text[:200])
            if status >= 400:
                error = answer.get("error")
                assert isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str), \
                    (target, status, text[:300])
                assert error["code"] != "InternalError", (target, text[:300])
            if 400 <= status < 500:
                pushes = [r for r in git.requests[git_before:] if r.method == "POST" and "git-receive-pack" in r.path]
                assert not pushes, (target, status, "pushed to git on a 4xx")
                vault_writes = [r for r in vault.request_log[vault_before:] if r.method in WRITES]
                assert not vault_writes, (target, status, "wrote to Key Vault on a 4xx")
                kube_writes = [r for r in kube_server.received[kube_before:]
                               if r.method in WRITES and "dryRun=All" not in r.path]
                assert not kube_writes, (target, status, "wrote to the cluster on a 4xx", kube_writes[:1])
                assert not storage_writes(store_before, storage_snapshot(azurite), evidence), (target, status, text[:200])

        one()

    logged = caplog.text
    for secret in secrets:
        assert secret not in logged, "a secret value was logged"
    if name not in ("registry_list", "*others*"):  # registry_list takes no input at all
        assert any(400 <= s < 500 for s in seen), seen  # the fuzzing reached the validation it is meant to test
