"""Authentication levels of the operation endpoints (issue #7 item 7): master key by default, or
App Service Authentication (Entra ID) with an app role when ``AUTH_REQUIRED_ROLE`` is set.

The functions are indexed the way the worker does it (``FunctionApp.get_functions()``); the Entra mode
indexes fresh copies of every blueprint module ``function_app.py`` registers with the app setting in
place, since the auth level is fixed at indexing. The operation endpoints are not listed by hand: they
are every HTTP function of the indexed app but the anonymous generic-hmac receiver, so an endpoint
added later at another auth level, or without the operator check, fails here. Requests are real ``func.HttpRequest`` objects carrying the
``X-MS-CLIENT-PRINCIPAL`` header as Easy Auth sends it (base64 JSON with ``auth_typ``, ``claims``,
``name_typ``, ``role_typ``)."""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import logging
import os
import re
import uuid

import azure.functions as func
import pytest

from functions import _auth
from tests.test_notify_forward import notify_env, notify_functions  # noqa: F401  (fixtures)
from tests.test_registry import registry  # noqa: F401  (fixture: a cluster registry on Azurite)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLE = "Flux.Admin"
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
#: HTTP functions that are not operation endpoints: the generic-hmac receiver, anonymous at the host and
#: authenticated by each cluster's HMAC key alone
HMAC_RECEIVERS = {"flux_events_http"}
#: the operation endpoints the README lists today (a floor: the derived list must hold at least these)
DOCUMENTED = {"bootstrap", "fleet_bootstrap", "fleet_upgrade", "operation_status", "operations_list", "fleet_status",
              "fleet_page", "registry_list", "registry_cluster", "rotate_cluster_now", "flux_deadletters_list",
              "flux_deadletters_replay"}
_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")


def operations(fns) -> dict[str, tuple[list[str], str, dict]]:
    """Every operation endpoint of the indexed ``fns``: every HTTP function but :data:`HMAC_RECEIVERS`,
    as ``{name: (methods, route with its parameters filled in, route params)}``."""
    out = {}
    for name, fn in fns.items():
        if not fn.is_http_function() or name in HMAC_RECEIVERS:
            continue
        trigger = fn.get_trigger().get_dict_repr()
        route = trigger.get("route") or name
        methods = [str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or ["GET", "POST"]]
        params = {p: "aks-weu-1" for p in _PARAM.findall(route)}
        out[name] = (methods, _PARAM.sub(lambda m: params[m.group(1)], route), params)
    return out


def blueprint_modules() -> list[str]:
    """The ``functions`` modules whose blueprints ``function_app.py`` registers (read from its imports)."""
    with open(os.path.join(ROOT, "function_app.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return sorted(node.module.split(".", 1)[1] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("functions.")
                  and any(a.name == "bp" for a in node.names))


def principal(*roles: str, auth_typ: str = "aad", role_typ: str = ROLE_URI, role_claim: str = "roles",
              name: str = "alice@contoso.com") -> str:
    """``X-MS-CLIENT-PRINCIPAL`` as Easy Auth builds it for an Entra ID v2 access token."""
    claims = [{"typ": "aud", "val": "api://flux-fleet"},
              {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
               "val": "4f0c2e6a-0000-4000-8000-00000000a11c"},
              {"typ": "preferred_username", "val": name}]
    claims += [{"typ": role_claim, "val": r} for r in roles]
    doc = {"auth_typ": auth_typ, "claims": claims,
           "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "role_typ": role_typ}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def call(fns, name: str, *, headers=None, body: bytes = b"", method=None, params=None):
    methods, route, route_params = operations(fns)[name]
    req = func.HttpRequest(method or methods[0], f"http://localhost/api/{route}", body=body, headers=headers or {},
                           route_params=params or route_params)
    resp = fns[name].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body() or b"{}")


def auth_level(fn) -> str:
    [trigger] = [b for b in json.loads(fn.get_function_json())["bindings"] if b["type"] == "httpTrigger"]
    return trigger["authLevel"]


@pytest.fixture
def entra(monkeypatch):
    """The app indexed with ``AUTH_REQUIRED_ROLE`` set and App Service Authentication on, as in Azure."""
    monkeypatch.setenv("AUTH_REQUIRED_ROLE", ROLE)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setattr(_auth, "_indexed_anonymous", False)  # restored afterwards
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for module in blueprint_modules():
        spec = importlib.util.spec_from_file_location(f"_entra_{module}_{uuid.uuid4().hex[:6]}",
                                                      os.path.join(ROOT, "functions", f"{module}.py"))
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        app.register_functions(loaded.bp)
    return {f.get_function_name(): f for f in app.get_functions()}


def test_the_operation_endpoints_are_every_http_function_but_the_hmac_receiver(functions_by_name, entra):
    assert DOCUMENTED <= set(operations(functions_by_name)), sorted(DOCUMENTED - set(operations(functions_by_name)))
    assert set(entra) == set(functions_by_name)  # the Entra mode indexed every blueprint of the app
    assert set(operations(entra)) == set(operations(functions_by_name))


def test_operation_endpoints_are_admin_level_by_default(functions_by_name):
    for name in operations(functions_by_name):
        assert auth_level(functions_by_name[name]) == "ADMIN", name
    for name in HMAC_RECEIVERS:
        assert auth_level(functions_by_name[name]) == "ANONYMOUS", name


def test_with_auth_required_role_operation_endpoints_are_anonymous_at_the_host(entra):
    for name in operations(entra):
        assert auth_level(entra[name]) == "ANONYMOUS", name


def test_without_a_principal_every_operation_endpoint_answers_401_and_does_nothing(entra, registry):
    for name, (methods, _, _) in operations(entra).items():
        for method in methods:
            code, answer = call(entra, name, method=method, body=b"{}")
            assert code == 401, (name, method, code, answer)
            assert answer["error"]["code"] == "Unauthorized" and "X-MS-CLIENT-PRINCIPAL" in answer["error"]["message"]
            # signed in with Entra ID, but without the app role
            code, answer = call(entra, name, method=method, body=b"{}", headers={"X-MS-CLIENT-PRINCIPAL": principal("Flux.Reader")})
            assert code == 403 and answer["error"]["code"] == "Forbidden", (name, method, code, answer)
    # bootstrap's body would be a 400 (no url): the check comes before the body is read
    assert call(entra, "bootstrap", body=b'{"url": 1}')[0] == 401
    assert registry.scan() == ([], [])


@pytest.mark.parametrize("header, status", [
    ("not base64!", 401),
    (base64.b64encode(b"not json").decode(), 401),
    (base64.b64encode(b'{"auth_typ": "aad"}').decode(), 401),  # no claims
    (base64.b64encode(b'{"auth_typ": "aad", "claims": [{"typ": 1, "val": "x"}]}').decode(), 401),
    (base64.b64encode(b"[" * 20_000 + b"]" * 20_000).decode(), 401),  # nesting: RecursionError
    ("A" * 70_000, 401),  # over the size bound
    (principal(), 403),  # signed in, no role
    (principal("Flux.Reader"), 403),  # another role
    (principal(ROLE.lower()), 403),  # roles are compared exactly
    (principal(ROLE, role_claim="groups"), 403),  # a group object id is no app role
    (principal(ROLE, auth_typ="github"), 403),  # another identity provider
])
def test_forged_or_insufficient_principals_are_refused_and_nothing_is_written(entra, registry, header, status):
    record = json.dumps({"kubeconfigSecret": "aks-weu-1-kubeconfig", "patSecret": "fleet-pat",
                         "gitUrl": "https://dev.azure.com/contoso/platform/_git/fleet"}).encode()
    code, answer = call(entra, "registry_cluster", method="PUT", body=record,
                        headers={"X-MS-CLIENT-PRINCIPAL": header})
    assert code == status
    assert answer["error"]["code"] == ("Unauthorized" if status == 401 else "Forbidden")
    assert registry.scan() == ([], [])


def test_the_app_role_opens_the_endpoint(entra, registry, caplog):
    record = json.dumps({"kubeconfigSecret": "aks-weu-1-kubeconfig", "patSecret": "fleet-pat",
                         "gitUrl": "https://dev.azure.com/contoso/platform/_git/fleet"}).encode()
    header = principal("Flux.Reader", ROLE)
    with caplog.at_level(logging.INFO, logger="functions.auth"):
        code, answer = call(entra, "registry_cluster", method="PUT", body=record,
                            headers={"X-MS-CLIENT-PRINCIPAL": header})
    assert code == 201 and answer["name"] == "aks-weu-1"
    assert [r.name for r in registry.scan()[0]] == ["aks-weu-1"]
    assert "called by alice@contoso.com (object id 4f0c2e6a-0000-4000-8000-00000000a11c)" in caplog.text
    assert header not in caplog.text
    # the role also counts under role_typ's claim type (older claim mapping), and for an application
    app_header = principal(ROLE, role_claim=ROLE_URI, name="ci-pipeline")
    code, answer = call(entra, "registry_list", headers={"X-MS-CLIENT-PRINCIPAL": app_header})
    assert code == 200 and [c["name"] for c in answer["clusters"]] == ["aks-weu-1"]
    # bootstrap: past the check, the body is validated as usual
    code, answer = call(entra, "bootstrap", body=b"[]", headers={"X-MS-CLIENT-PRINCIPAL": header})
    assert code == 400 and answer["error"]["field"] == "body"


def test_dead_letter_endpoints_take_the_role(entra, notify_env):
    header = {"X-MS-CLIENT-PRINCIPAL": principal(ROLE)}
    assert call(entra, "flux_deadletters_list", headers=header) == (200, {"names": []})
    code, report = call(entra, "flux_deadletters_replay", headers=header, body=b'{"prefix": "undeliverable/"}')
    assert code == 200 and report["delivered"] == 0 and report["results"] == []
    assert call(entra, "flux_deadletters_replay", body=b'{"prefix": "undeliverable/"}')[0] == 401


def test_without_app_service_authentication_the_header_is_not_trusted(entra, registry, monkeypatch):
    # Easy Auth off: anyone could send X-MS-CLIENT-PRINCIPAL, so the app refuses rather than trust it
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    code, answer = call(entra, "registry_list", headers={"X-MS-CLIENT-PRINCIPAL": principal(ROLE)})
    assert code == 500 and answer["error"]["code"] == "InvalidSetting"
    assert "WEBSITE_AUTH_ENABLED" in answer["error"]["message"]


def test_emptying_the_setting_after_indexing_does_not_open_anonymous_endpoints(entra, registry, monkeypatch):
    monkeypatch.setenv("AUTH_REQUIRED_ROLE", " ")
    code, answer = call(entra, "registry_list")
    assert code == 500 and "AUTH_REQUIRED_ROLE" in answer["error"]["message"]
