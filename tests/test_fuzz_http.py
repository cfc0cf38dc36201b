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
Azurite of this module's own (every table, container and queue snapshotted around each call: the
entities, the blobs, the queues' message counts, so a 4xx that queued fleet work fails).

``FUZZ_EXAMPLES`` sets the number of examples per function (default 300 in CI);
``bench/fuzz_http.py`` runs many more. Most of an example's time is the storage snapshot, so its
clients are built once per test and each snapshot after a call is the next call's "before".
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import re
import urllib.parse
import uuid

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import services
from shared.notify.targets import hmac_signature
from tests.peers.azurite import start_or_fail
from tests.peers.local_notify import HTTP_HMAC, flux_event, now_rfc3339
from tests.test_bootstrap_e2e import cluster_registry, env  # noqa: F401 - fixtures
from tests.test_bootstrap_e2e import request as bootstrap_request
from tests.test_notify_forward import notify_env, notify_functions  # noqa: F401 - fixtures

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
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


def _paths(template: dict) -> list[tuple]:
    """Where a field can be mutated: every top-level key, and inside a list value (a fleet's
    ``clusters``) every index and every key of a dict there, so per-cluster validation is reached."""
    out: list[tuple] = [(key,) for key in sorted(template)]
    for key in sorted(template):
        if isinstance(template[key], list):
            for i, item in enumerate(template[key]):
                out.append((key, i))
                if isinstance(item, dict):
                    out += [(key, i, sub) for sub in sorted(item)]
    return out


def mutated(template: dict) -> st.SearchStrategy[bytes]:
    """``template`` with one or more fields (top-level, or of an entry of a list such as
    ``clusters``) replaced by hostile values, removed, or joined by an unknown field, as JSON bytes."""
    paths = _paths(template)
    entries = [p for p in paths if len(p) == 2 and isinstance(template[p[0]][p[1]], dict)]

    @st.composite
    def build(draw):
        body = copy.deepcopy(template)
        for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
            parent = body
            for step in path[:-1]:  # an earlier mutation may have replaced or dropped the container
                ok = (isinstance(parent, dict) and step in parent) or \
                     (isinstance(parent, list) and isinstance(step, int) and step < len(parent))
                parent = parent[step] if ok else None
            last = path[-1]
            if not (isinstance(parent, dict) or (isinstance(parent, list) and isinstance(last, int) and last < len(parent))):
                continue  # a dict key, or an index into a list that still has it
            if draw(st.sampled_from(["replace", "replace", "replace", "drop"])) == "drop":
                if isinstance(parent, dict):
                    parent.pop(last, None)
                else:
                    del parent[last]
            else:
                parent[last] = draw(JSON)
        if draw(st.booleans()) and draw(st.booleans()):
            where = body
            if entries and draw(st.booleans()):
                key, i = draw(st.sampled_from(entries))
                item = body.get(key)[i] if isinstance(body.get(key), list) and i < len(body[key]) else None
                where = item if isinstance(item, dict) else body
            where[draw(TEXT)] = draw(JSON)
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
    """Valid bodies (or None) per HTTP function whose body has a schema. The fleet's reach their
    per-cluster checks: a fleet bootstrap of two clusters, an upgrade of the registered ``fuzz-1``
    (:func:`registered_for_upgrade`)."""
    return {
        "bootstrap": bootstrap_request(env, clusterName="fuzz-1"),
        "registry_cluster": {"kubeconfigSecret": "aks-weu-1-kubeconfig", "patSecret": "fleet-pat",
                             "gitUrl": env["url"], "allowInsecureHttp": True},
        "flux_deadletters_replay": {"prefix": "undeliverable/", "limit": 10},
        "flux_events_http": flux_event(timestamp=now_rfc3339()),
        "fleet_bootstrap": {"url": env["url"], "branch": "main", "allowInsecureHttp": True, "passwordSecret": "fleet-pat",
                            "timeout": "0s", "clusters": [
                                {"path": "clusters/fuzz-2", "kubeconfigSecret": "aks-weu-1-kubeconfig"},
                                {"path": "clusters/fuzz-3", "kubeconfigSecret": "aks-weu-1-kubeconfig",
                                 "clusterName": "fuzz-3"}]},
        "fleet_upgrade": {"version": "v2.9.2", "clusters": ["fuzz-1", "fuzz-*"], "timeout": "1m"},
    }


def registered_for_upgrade(env) -> None:
    """Registry records a fleet upgrade can name: ``fuzz-1`` as a bootstrap records it (its install
    options), and ``hand-1`` registered by hand (no install options: an upgrade matching it is a 400
    naming the pattern)."""
    from shared.rotation.registry import ClusterRecord

    common = dict(kubeconfig_secret="aks-weu-1-kubeconfig", pat_secret="fleet-pat", git_url=env["url"],
                  allow_insecure_http=True)
    env["registry"].upsert(ClusterRecord(name="fuzz-1", install={"version": "v2.9.2", "branch": "main",
                                                                 "path": "./clusters/fuzz-1"}, **common).validate())
    env["registry"].upsert(ClusterRecord(name="hand-1", **common).validate())


# -- observing the peers --------------------------------------------------------------------------


class StorageWatch:
    """Snapshots of the module's Azurite: every entity of every table, every blob (name, etag) of
    every container, and the message count of every queue (the fleet's work queue among them). The
    service clients (and their connections) are built once per test, not per snapshot."""

    def __init__(self, azurite):
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        conn = azurite.connection_string
        self.tables = TableServiceClient.from_connection_string(conn)
        self.blobs = BlobServiceClient.from_connection_string(conn)
        self.queues = QueueServiceClient.from_connection_string(conn)
        self._clients: dict = {}

    def _client(self, kind: str, name: str):
        key = (kind, name)
        if key not in self._clients:
            self._clients[key] = {"table": self.tables.get_table_client, "blob": self.blobs.get_container_client,
                                  "queue": self.queues.get_queue_client}[kind](name)
        return self._clients[key]

    def snapshot(self) -> dict:
        out: dict = {}
        for table in self.tables.list_tables():
            out[f"table:{table.name}"] = sorted((e["PartitionKey"], e["RowKey"], e.metadata.get("etag"))
                                                for e in self._client("table", table.name).list_entities())
        for container in self.blobs.list_containers():
            out[f"blob:{container.name}"] = sorted((b.name, b.etag) for b in self._client("blob", container.name).list_blobs())
        for queue in self.queues.list_queues():
            count = self._client("queue", queue.name).get_queue_properties().approximate_message_count
            out[f"queue:{queue.name}"] = [("messages", count)]
        return out

    def clear(self) -> None:
        """Delete every table, container and queue: a test's storage does not weigh on the next
        one's snapshots (every fixture here names its tables, containers and queues afresh)."""
        for table in list(self.tables.list_tables()):
            self.tables.delete_table(table.name)
        for container in list(self.blobs.list_containers()):
            self.blobs.delete_container(container.name)
        for queue in list(self.queues.list_queues()):
            self.queues.delete_queue(queue.name)

    def close(self) -> None:
        for client in (*self._clients.values(), self.tables, self.blobs, self.queues):
            client.close()


def storage_writes(before: dict, after: dict, allowed_prefixes: tuple[str, ...]) -> list[str]:
    """Names of what changed between two snapshots (an entity, a blob, a queue's message count),
    minus blobs under ``allowed_prefixes`` (``container/prefix``)."""
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


#: HTTP functions fuzzed one per test; ``*others*`` takes every other one (an endpoint added later)
NAMED = ["bootstrap", "flux_events_http", "flux_deadletters_list", "flux_deadletters_replay", "rotate_cluster_now",
         "registry_list", "registry_cluster", "fleet_bootstrap", "fleet_upgrade", "operation_status", "operations_list",
         "fleet_status", "fleet_page"]
#: functions that take no input at all: no 4xx to expect
NO_INPUT = {"registry_list", "fleet_page"}
#: functions whose valid template must be accepted (202) and whose per-cluster checks must be reached
#: (a 400 naming ``clusters[i]...``)
PER_CLUSTER = {"fleet_bootstrap", "fleet_upgrade"}


def test_every_http_function_is_fuzzed(functions_by_name):
    names = http_functions(functions_by_name)
    assert set(NAMED) <= set(names)
    assert {"bootstrap", "flux_events_http", "flux_deadletters_replay", "registry_cluster"} <= set(names)


@pytest.mark.parametrize("name", [*NAMED, "*others*"])
def test_fuzzed_requests_get_documented_answers_and_4xx_writes_nothing(
        name, functions_by_name, env, notify_env, azurite, kube_server, caplog, request, monkeypatch):
    all_names = http_functions(functions_by_name)
    if name == "*others*":
        targets = [n for n in all_names if n not in NAMED]
    else:
        assert name in all_names
        targets = [name]
    # every app setting valid: the host's own storage is this module's Azurite, and so are the fleet's
    # table and work queue (this test's own, built again from the settings, not kept from an earlier test)
    suffix = uuid.uuid4().hex[:10]
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("FLEET_TABLE", f"fleet{suffix}")
    monkeypatch.setenv("FLEET_QUEUE", f"fleet-{suffix}")
    services.set_fleet_store_factory(None)
    services.set_work_queue_factory(None)
    if "fleet_upgrade" in targets:
        registered_for_upgrade(env)
    git, vault = env["git"], env["vault"]
    known = templates(env, notify_env)
    secrets = secrets_of(env, notify_env)
    caplog.set_level(logging.DEBUG)
    seen: dict[int, int] = {}
    fields: set[str] = set()  # the fields named by the 400s
    request.node.user_properties.append(("statuses", seen))  # read by bench/fuzz_http.py
    watch = StorageWatch(azurite)
    request.addfinalizer(watch.close)
    request.addfinalizer(watch.clear)
    request.addfinalizer(lambda: (services.set_fleet_store_factory(None), services.set_work_queue_factory(None)))

    for target in targets:
        fn = functions_by_name[target]
        route, methods = _route(fn)
        params = re.findall(r"{(\w+)(?::[^}]*)?}", route)
        # a refused generic-hmac post is kept as evidence (its first bytes, in the dead-letter
        # container) under a per-cluster rate bound (a counter row in the dedupe table): the only
        # storage writes a 4xx may make, and only there
        evidence = (f"{os.environ['NOTIFY_DEADLETTER_CONTAINER']}/",
                    f"{os.environ['NOTIFY_DEDUPE_TABLE']}/('refused'") if target == "flux_events_http" else ()
        state = {"store": watch.snapshot()}  # the storage as it is before the next call

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(method=st.sampled_from(methods), body=bodies(known.get(target)),
               route_params=st.fixed_dictionaries({p: ROUTE for p in params}),
               query=st.dictionaries(st.sampled_from(["prefix", "limit", "names", "cluster", "code", "x"]), TEXT, max_size=2),
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
            store_before = state["store"]

            resp = fn.get_user_function()(req)
            # taken before any assertion, so that it is the next example's "before" even when this one fails
            store_after = state["store"] = watch.snapshot()

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
                if status == 400 and isinstance(error.get("field"), str):
                    fields.add(error["field"])
            if 400 <= status < 500:
                pushes = [r for r in git.requests[git_before:] if r.method == "POST" and "git-receive-pack" in r.path]
                assert not pushes, (target, status, "pushed to git on a 4xx")
                vault_writes = [r for r in vault.request_log[vault_before:] if r.method in WRITES]
                assert not vault_writes, (target, status, "wrote to Key Vault on a 4xx")
                kube_writes = [r for r in kube_server.received[kube_before:]
                               if r.method in WRITES and "dryRun=All" not in r.path]
                assert not kube_writes, (target, status, "wrote to the cluster on a 4xx", kube_writes[:1])
                assert not storage_writes(store_before, store_after, evidence), (target, status, text[:200])

        one()

    logged = caplog.text
    for secret in secrets:
        assert secret not in logged, "a secret value was logged"
    if name != "*others*" and name not in NO_INPUT:
        assert any(400 <= s < 500 for s in seen), seen  # the fuzzing reached the validation it is meant to test
    if name in PER_CLUSTER:
        assert seen.get(202), seen  # the valid request is accepted: the checks below it are reached
        assert any(f.startswith("clusters[") for f in fields), sorted(fields)  # and so are the per-cluster checks
