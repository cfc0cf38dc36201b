"""The deployment (issue #9): ``azure.yaml``, ``infra/`` (Bicep) and ``.funcignore``, checked without
Azure and without a Bicep compiler:

- every ``.bicep`` file parses (pycep-parser), and Checkov (its own venv, made by ``.ci/setup``)
  scans ``infra/`` with no failed check and a reason on every inline skip;
- every app setting the code reads is set by ``infra/app/api.bicep``. The settings are collected from
  the code itself: an AST scan of the modules ``function_app.py`` imports (``os.environ[...]``,
  ``environ.get(...)``, ``getenv(...)``, helpers called as ``f(environ, "NAME")``, ``%NAME%``
  binding expressions, ``connection="NAME"`` identity-based connections);
- no setting, parameter or output holds a secret; the roles are the issue's, each its own
  ``roleAssignments`` resource named with ``guid()``, scoped to the resource it grants;
- the resources have the properties the issue asks for (Flex FC1, identity-only storage, vault with
  RBAC + soft delete + purge protection, Event Hubs without local auth, Entra-only telemetry);
- ``.funcignore`` leaves only the app in the package.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from tests.app_settings import LIBRARY_SETTINGS, NOT_IN_AZURE, app_modules, code_settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SHARED_DOCS = ROOT.parent / "shared" / "docs"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# --------------------------------------------------------------------------------------------------
# Bicep, as pycep-parser's JSON
# --------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def bicep(rel: str) -> dict:
    from pycep import BicepParser

    return BicepParser().parse(file_path=INFRA / rel)


def unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def body(resource_or_module: dict) -> dict:
    """The ``{...}`` of a resource/module, under its ``if (...)`` or ``[for ...]`` wrapper if any."""
    conf = resource_or_module["config"]
    return conf["config"] if "loop_type" in conf or "condition" in conf else conf


def fn(expr, name: str) -> dict | None:
    if isinstance(expr, dict) and isinstance(expr.get("function"), dict) and expr["function"]["type"] == name:
        return expr["function"]["parameters"]
    return None


def accessor(expr) -> list[str] | None:
    """``a.b.c`` → ``["a", "b", "c"]`` (property accessors only)."""
    if isinstance(expr, str):
        return [expr]
    op = expr.get("operator") if isinstance(expr, dict) else None
    if op and op["type"] == "property_accessor":
        rest = accessor(op["operands"]["operand_2"])
        return [op["operands"]["operand_1"], *rest] if rest else None
    return None


class Ctx:
    """Name resolution within one file (params, vars), and through the module call that passes a
    param in from ``parent`` (``module <name> '<file>' = {params: ...}`` in the caller)."""

    def __init__(self, rel: str, parent: "Ctx | None" = None, module: str | None = None):
        self.rel, self.doc, self.parent, self.module = rel, bicep(rel), parent, module

    def literal(self, expr):
        """The string an expression always has, or None when it depends on the deployment."""
        if isinstance(expr, bool) or isinstance(expr, int):
            return str(expr).lower() if isinstance(expr, bool) else str(expr)
        if not isinstance(expr, str):
            return None
        if IDENT.match(expr):
            if expr in self.doc.get("variables", {}):
                return self.literal(self.doc["variables"][expr]["value"])
            if expr in self.doc.get("parameters", {}):
                if self.parent and self.module:
                    passed = body(self.parent.doc["modules"][self.module]).get("params", {})
                    if expr in passed:
                        return self.parent.literal(passed[expr])
                default = self.doc["parameters"][expr].get("default")
                return self.literal(default) if default is not None else None
        if "${" in expr:
            parts = re.split(r"\$\{([^}]*)\}", expr)
            out = []
            for i, part in enumerate(parts):
                if i % 2:
                    value = self.literal(part) if IDENT.match(part) else None
                    if value is None:
                        return None
                    out.append(value)
                else:
                    out.append(part)
            return "".join(out)
        return expr

    def objects(self, expr) -> dict:
        """The keys an object expression may have (``union``, ``a ? {...} : {...}``, variables)."""
        if isinstance(expr, dict) and "operator" not in expr and "function" not in expr:
            return {unquote(k): v for k, v in expr.items()}
        if isinstance(expr, str) and expr in self.doc.get("variables", {}):
            return self.objects(self.doc["variables"][expr]["value"])
        union = fn(expr, "union")
        if union is not None:
            out: dict = {}
            for arg in union.values():
                out.update(self.objects(arg))
            return out
        op = expr.get("operator") if isinstance(expr, dict) else None
        if op and op["type"] == "conditional":
            return {**self.objects(op["operands"]["false_value"]), **self.objects(op["operands"]["true_value"])}
        raise AssertionError(f"{self.rel}: cannot read object expression {expr!r}")

    def literal_list(self, param: str) -> list:
        """The values of an array param as the caller passes them."""
        passed = body(self.parent.doc["modules"][self.module])["params"][param]
        return [self.parent.literal(item) for item in passed]


MAIN = Ctx("main.bicep")
API = Ctx("app/api.bicep", MAIN, "api")
STORAGE = Ctx("core/storage/storage-account.bicep", MAIN, "storage")


def site() -> dict:
    sites = [r for r in API.doc["resources"].values() if r["type"] == "Microsoft.Web/sites" and not r["existing"]]
    assert len(sites) == 1
    return body(sites[0])


@lru_cache(maxsize=None)
def app_settings() -> dict:
    """``{name: value expression}`` of the Function App's settings: the object its ``appsettings``
    config child resource sets (``properties: <object variable>``)."""
    configs = [r for r in API.doc["resources"].values() if r["type"] == "Microsoft.Web/sites/config"
               and body(r)["name"] == "appsettings"]
    assert len(configs) == 1 and body(configs[0])["depends_on"] == ["site"], configs
    assert "appSettings" not in site()["properties"]["siteConfig"]  # one place only: config replaces the list
    return API.objects(body(configs[0])["properties"])


def _acc(a: str, b: str) -> dict:
    return {"operator": {"type": "property_accessor", "operands": {"operand_1": a, "operand_2": b}}}


def test_the_scan_finds_the_code_and_its_settings():
    """The scan itself: it follows function_app's (lazy) imports and sees each kind of read."""
    mods = {str(p.relative_to(ROOT)) for p in app_modules()}
    assert {"function_app.py", "functions/rotation.py", "shared/notify/storage.py", "shared/settings.py",
            "shared/ports/azure/keyvault.py", "shared/rotation/registry.py"} <= mods
    assert "shared/cli.py" not in mods and not any(m.startswith(("tests/", "bench/")) for m in mods)
    settings, connections, _ = code_settings()
    assert {"ROTATION_SCHEDULE", "NOTIFY_EVENTHUB_NAME",  # %...% in decorators
            "NOTIFY_MAX_ATTEMPTS",  # number(environ, "...")
            "KEY_VAULT_URL", "REGISTRY_TABLE"} <= set(settings)  # environ.get("...")
    assert "NOTIFY_EVENTHUB" in connections


def test_every_setting_the_code_reads_is_set_by_the_template():
    settings, connections, dynamic = code_settings()
    assert not dynamic, "app settings read by a computed name cannot be checked; read them by literal name:\n" + "\n".join(dynamic)
    bicep_settings = app_settings()
    missing = {name: where for name, where in settings.items()
               if name not in bicep_settings and name not in NOT_IN_AZURE and name not in connections}
    assert not missing, (f"app settings read by the code but not set in infra/app/api.bicep: {missing}; "
                         "add them there (with the default of local.settings.json.example)")


def test_connection_strings_are_not_set_and_each_exception_is_still_read():
    settings, _, _ = code_settings()
    for name, why in NOT_IN_AZURE.items():
        assert name in settings, f"{name} is no longer read by the code: drop it from NOT_IN_AZURE"
        assert name not in app_settings(), f"{name} must not be set in Azure: {why}"


def test_connections_are_identity_based():
    _, connections, _ = code_settings()
    s = app_settings()
    client_id = "identityClientId"
    for prefix in ["AzureWebJobsStorage", *connections]:
        assert prefix not in s, f"{prefix}: the connection-string form must not be set"
        assert API.literal(s[f"{prefix}__credential"]) == "managedidentity", prefix
        assert s[f"{prefix}__clientId"] == client_id, prefix
    for service in ("blob", "queue", "table"):
        assert accessor(s[f"AzureWebJobsStorage__{service}ServiceUri"]) == ["stg", "properties", "primaryEndpoints", service]
    assert accessor(s["AzureWebJobsStorage__accountName"]) == ["stg", "name"]
    assert API.literal(s["NOTIFY_EVENTHUB__fullyQualifiedNamespace"]) is None  # from the namespace name
    assert s["NOTIFY_EVENTHUB__fullyQualifiedNamespace"] == "${eventHubNamespaceName}.servicebus.windows.net"
    assert s["AZURE_CLIENT_ID"] == client_id
    assert API.literal(s["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]) is None
    assert s["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert set(LIBRARY_SETTINGS) <= set(s)
    # main.bicep wires the one identity in
    passed = body(MAIN.doc["modules"]["api"])["params"]
    assert accessor(passed["identityClientId"]) == ["identity", "outputs", "clientId"]
    assert accessor(passed["identityId"]) == ["identity", "outputs", "resourceId"]


def test_settings_have_the_defaults_of_local_settings_example():
    example = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    # The one deliberate difference: Azure gets the app's own consumer group (created by the template).
    differs = {"NOTIFY_EVENTHUB_CONSUMER_GROUP": "flux-notify",
               "AUTH_REQUIRED_ROLE": "Flux.Admin"}  # empty locally (master key); set with authClientId
    checked = 0
    for name, expr in app_settings().items():
        value = API.literal(expr)
        if name not in example or value is None or "<" in example[name]:
            continue
        assert value == differs.get(name, example[name]), f"{name}: {value!r} in Bicep, {example[name]!r} in the example"
        checked += 1
    assert checked >= 15


def test_tables_containers_and_queues_named_by_settings_exist():
    created = {"TABLE": STORAGE.literal_list("tables"), "CONTAINER": STORAGE.literal_list("containers"),
               "QUEUE": STORAGE.literal_list("queues")}
    s = app_settings()
    for name, expr in s.items():
        kind = name.rpartition("_")[2]
        if kind in created:
            assert API.literal(expr) in created[kind], f"{name}={API.literal(expr)!r} is not created by the storage module"
    routing = API.literal(s["NOTIFY_ROUTING"])
    assert routing == "blob:flux-config/routing.yaml" and "flux-config" in created["CONTAINER"]
    assert {"fluxclusters", "fluxnotifydedupe"} <= set(created["TABLE"])
    assert "flux-notify-deadletter" in created["CONTAINER"]
    deployment = body(MAIN.doc["modules"]["storage"])["params"]["containers"][0]
    assert deployment == "deploymentStorageContainerName"


def test_auth_required_role_is_set_only_with_auth_client_id():
    s = app_settings()
    assert "AUTH_REQUIRED_ROLE" in s
    auth_var = json.dumps(API.doc["variables"]["authSettings"]["value"])
    assert '"item_to_test": "authClientId"' in auth_var and '"AUTH_REQUIRED_ROLE": "authRequiredRole"' in auth_var
    module = API.doc["modules"]["auth"]["config"]
    assert json.dumps(module["condition"]).count("authClientId") == 1
    assert module["config"]["params"]["clientId"] == "authClientId"
    auth = bicep("app/auth.bicep")["resources"]["authSettingsV2"]["config"]
    assert auth["name"] == "authsettingsV2"
    aad = auth["properties"]["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True and aad["registration"]["clientId"] == "clientId"
    assert "clientSecretSettingName" not in json.dumps(auth)  # validates tokens only: no secret
    # the generic-hmac receiver must stay reachable for Flux: Easy Auth lets anonymous calls through
    assert auth["properties"]["globalValidation"]["unauthenticatedClientAction"] == "AllowAnonymous"


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------

SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessKey|SharedAccessSignature|[?&]sig=|password=|-----BEGIN|eyJ[A-Za-z0-9_-]{10,}", re.I)
SECRET_WORD = re.compile(r"(primary|secondary|instrumentation|access|account|shared|client)?"
                         r"(keys?|connectionstrings?|password|secret|sas|sastoken|token)", re.I)
# App Insights' connection string names the ingestion endpoint; with local auth disabled on the
# component its instrumentation key cannot send anything: telemetry needs the identity's Entra token.
SECRET_LIKE_ALLOWED = {"APPLICATIONINSIGHTS_CONNECTION_STRING": ["applicationInsights", "properties", "ConnectionString"]}


def _names(expr) -> list[str]:
    """Every identifier and property name in an expression (also inside '${...}' strings)."""
    out: list[str] = []
    if isinstance(expr, str):
        out.extend(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr))
    elif isinstance(expr, dict):
        for k, v in expr.items():
            out.extend(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(k)))
            out.extend(_names(v))
    elif isinstance(expr, list):
        for v in expr:
            out.extend(_names(v))
    return out


def test_no_setting_holds_a_secret():
    for name, expr in app_settings().items():
        if name in SECRET_LIKE_ALLOWED:
            assert accessor(expr) == SECRET_LIKE_ALLOWED[name], name
            continue
        value = API.literal(expr)
        if value is not None:
            assert not SECRET_VALUE.search(value), f"{name} holds a secret-like value"
        for word in _names(expr):
            assert not SECRET_WORD.fullmatch(word), f"{name} reads {word!r}"


def test_no_secret_parameter_output_or_list_call_in_infra():
    for path in BICEP_FILES:
        text = path.read_text()
        rel = str(path.relative_to(INFRA))
        assert not re.search(r"\blist[A-Z]\w*\s*\(|\.list\(", text), f"{rel}: listKeys-style call returns secrets"
        assert "@secure()" not in text, f"{rel}: the template takes no secret parameter"
        for name, out in bicep(rel).get("outputs", {}).items():
            assert not re.search(r"SECRET|PASSWORD|ACCOUNT_KEY|CONNECTION_STRING|TOKEN|SAS", name, re.I), f"{rel}: output {name}"
            for word in _names(out["value"]):
                assert not SECRET_WORD.fullmatch(word), f"{rel}: output {name} reads {word!r}"


# --------------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------------

APP = "identityPrincipalId"
# (role, GUID, file, scope resource type, principal, principal type); the list, plus Data
# Sender for the app (its own events and the Event Hub JWT that rotation mints with its identity) and
# the optional ones of the deploying person.
ROLES = [
    ("Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "app/rbac.bicep", "Microsoft.Storage/storageAccounts", APP),
    ("Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "app/rbac.bicep", "Microsoft.Storage/storageAccounts", APP),
    ("Storage Queue Data Contributor", "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "app/rbac.bicep", "Microsoft.Storage/storageAccounts", APP),
    ("Key Vault Secrets User", "4633458b-17de-408a-b874-0445c86b69e6", "app/rbac.bicep", "Microsoft.KeyVault/vaults", APP),
    # only with sshKeyGeneration: the SSH key an SSH bootstrap generates into Key Vault (issue 11)
    ("Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "app/rbac.bicep", "Microsoft.KeyVault/vaults", APP),
    ("Azure Event Hubs Data Receiver", "a638d3c7-ab3a-418d-83e6-5f17a39d4fde", "app/rbac.bicep", "Microsoft.EventHub/namespaces/eventhubs", APP),
    ("Azure Event Hubs Data Sender", "2b629674-e913-4c01-ae53-ef4638d8f975", "app/rbac.bicep", "Microsoft.EventHub/namespaces/eventhubs", APP),
    ("Monitoring Metrics Publisher", "3913510d-42f4-4e42-8a64-420c390055eb", "app/rbac.bicep", "Microsoft.Insights/components", APP),
    ("Azure Event Hubs Data Sender", "2b629674-e913-4c01-ae53-ef4638d8f975", "app/rbac.bicep", "Microsoft.EventHub/namespaces/eventhubs", "for clusterIdentityPrincipalIds"),
    ("Azure Kubernetes Service Cluster User Role", "4abbcc35-e782-43d8-92c5-2d3f1bd2253f", "app/aks-access.bicep", "Microsoft.ContainerService/managedClusters", APP),
    ("Azure Kubernetes Service RBAC Cluster Admin", "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b", "app/aks-access.bicep", "Microsoft.ContainerService/managedClusters", APP),
    ("Managed Identity Contributor", "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59", "app/identity-access.bicep", "Microsoft.ManagedIdentity/userAssignedIdentities", APP),
    ("Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "app/rbac.bicep", "Microsoft.KeyVault/vaults", "userPrincipalId"),
    ("Storage Blob Data Contributor", "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "app/rbac.bicep", "Microsoft.Storage/storageAccounts", "userPrincipalId"),
    ("Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "app/rbac.bicep", "Microsoft.Storage/storageAccounts", "userPrincipalId"),
]


def _role_assignments() -> list[tuple[str, str, dict]]:
    out = []
    for path in BICEP_FILES:
        rel = str(path.relative_to(INFRA))
        for name, res in bicep(rel).get("resources", {}).items():
            if res["type"] == "Microsoft.Authorization/roleAssignments":
                out.append((rel, name, res))
    return out


def _resolve_guid(doc: dict, expr) -> str:
    path = accessor(expr)
    if path and len(path) == 2 and path[0] in doc.get("variables", {}):
        return doc["variables"][path[0]]["value"][path[1]]
    return expr


def test_role_guids_are_the_documented_built_in_roles():
    table = (SHARED_DOCS / "functions-platform.md").read_text()
    documented = dict(re.findall(r"^\| ([A-Za-z ]+?) \| `([0-9a-f-]{36})` \|", table, re.M))
    for role, guid, *_ in ROLES:
        if role in documented:
            assert documented[role] == guid, role
    assert sum(role in documented for role, *_ in ROLES) >= 11


def test_each_role_is_assigned_with_its_guid_and_scope():
    found = []
    for rel, name, res in _role_assignments():
        doc = bicep(rel)
        conf = res["config"]
        b = body(res)
        props = b["properties"]
        rdef = fn(props["roleDefinitionId"], "subscription_resource_id")
        assert rdef and rdef["resource_type"] == "Microsoft.Authorization/roleDefinitions", f"{rel} {name}"
        guid = _resolve_guid(doc, rdef["resource_name_1"])
        scope = b["scope"]
        assert isinstance(scope, str) and scope in doc["resources"], f"{rel} {name}: scope must be the granted resource"
        scope_type = doc["resources"][scope]["type"]
        # name: guid(<scope>.id, <principal>, <role>) — deterministic, unique per scope, principal and role
        g = fn(b["name"], "guid")
        assert g is not None, f"{rel} {name}: name must be guid(...)"
        assert accessor(g["base_string"]) == [scope, "id"], f"{rel} {name}"
        principal = props["principalId"]
        assert g["extra_string_1"] == principal and _resolve_guid(doc, g["extra_string_2"]) == guid, f"{rel} {name}"
        if "loop_type" in conf:
            assert conf["loop_type"]["detail"]["item_name"] == principal
            principal = f"for {conf['loop_type']['detail']['array_name']}"
        if principal in (APP, "for clusterIdentityPrincipalIds"):
            assert props["principalType"] == "ServicePrincipal", f"{rel} {name}"
        if principal == "userPrincipalId":
            assert "userPrincipalId" in json.dumps(conf["condition"]), f"{rel} {name}: only when given"
        if principal == APP and guid == "b86a8fe4-44ce-4948-aee5-eccb2c155cd7":  # writes secrets: only for SSH key generation
            assert "sshKeyGeneration" in json.dumps(conf.get("condition")), f"{rel} {name}: only with sshKeyGeneration"
        found.append((guid, rel, scope_type, principal))
    expected = [(guid, rel, scope_type, principal) for _, guid, rel, scope_type, principal in ROLES]
    assert sorted(found) == sorted(expected)


def test_scopes_are_the_app_resources_and_each_cluster():
    rbac = bicep("app/rbac.bicep")["resources"]
    assert rbac["eventHub"]["config"]["parent"] == "eventHubNamespace"
    assert rbac["eventHub"]["config"]["name"] == "eventHubName"
    passed = body(MAIN.doc["modules"]["rbac"])["params"]
    assert accessor(passed["identityPrincipalId"]) == ["identity", "outputs", "principalId"]
    assert accessor(passed["eventHubName"]) == ["eventHubs", "outputs", "eventHubName"]
    assert passed["clusterIdentityPrincipalIds"] == "clusterIdentityPrincipalIds"
    # one deployment per cluster ID, at the cluster's own subscription and resource group
    aks = MAIN.doc["modules"]["aksAccess"]["config"]
    assert aks["loop_type"]["detail"]["array_name"] == "aksClusterIds"
    item = aks["loop_type"]["detail"]["item_name"]
    scope = fn(aks["config"]["scope"], "resource_group")
    split = {"function": {"type": "split", "parameters": {"input_string": item, "delimiter": "/"}}}
    index = lambda i: {"operator": {"type": "index_accessor", "operands": {"operand_1": split, "operand_2": i}}}  # noqa: E731
    assert scope == {"subscription_id": index(2), "resource_group_name": index(4)}
    assert aks["config"]["params"]["clusterName"] == {"function": {"type": "last", "parameters": {"arg_1": split}}}
    assert accessor(aks["config"]["params"]["identityPrincipalId"]) == ["identity", "outputs", "principalId"]
    assert bicep("app/aks-access.bicep")["resources"]["cluster"]["existing"] is True
    assert MAIN.doc["parameters"]["aksClusterIds"]["type"] == "array"
    assert MAIN.doc["parameters"]["clusterIdentityPrincipalIds"]["type"] == "array"


def test_the_app_federates_only_the_workload_identities_it_is_given():
    """workloadIdentity.federate writes federated identity credentials (shared.ports.azure.msi): Managed Identity
    Contributor on each identity of workloadIdentityIds, by a deployment at that identity's own resource group."""
    from shared.ports.azure.msi import MANAGED_IDENTITY_CONTRIBUTOR

    mod = MAIN.doc["modules"]["identityAccess"]["config"]
    assert mod["loop_type"]["detail"]["array_name"] == "workloadIdentityIds"
    item = mod["loop_type"]["detail"]["item_name"]
    split = {"function": {"type": "split", "parameters": {"input_string": item, "delimiter": "/"}}}
    index = lambda i: {"operator": {"type": "index_accessor", "operands": {"operand_1": split, "operand_2": i}}}  # noqa: E731
    assert fn(mod["config"]["scope"], "resource_group") == {"subscription_id": index(2), "resource_group_name": index(4)}
    assert mod["config"]["params"]["identityName"] == {"function": {"type": "last", "parameters": {"arg_1": split}}}
    assert accessor(mod["config"]["params"]["identityPrincipalId"]) == ["identity", "outputs", "principalId"]
    access = bicep("app/identity-access.bicep")
    assert access["resources"]["workloadIdentity"]["existing"] is True
    assert access["variables"]["roles"]["value"] == {"managedIdentityContributor": MANAGED_IDENTITY_CONTRIBUTOR.id}
    assert MAIN.doc["parameters"]["workloadIdentityIds"]["type"] == "array"
    assert MAIN.doc["parameters"]["workloadIdentityIds"]["default"] == []
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["workloadIdentityIds"]["value"] == "${WORKLOAD_IDENTITY_IDS=[]}"


# --------------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------------

def _resource(rel: str, rtype: str) -> dict:
    matches = [r for r in bicep(rel)["resources"].values() if r["type"] == rtype and not r["existing"]]
    assert len(matches) == 1, (rel, rtype)
    return body(matches[0])


def test_function_app_is_flex_consumption_python_311_with_one_user_assigned_identity():
    plan = _resource("app/api.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"} and plan["properties"]["reserved"] is True
    s = site()
    assert s["kind"] == "functionapp,linux" and s["properties"]["httpsOnly"] is True
    assert s["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"'${identityId}'": {}}}
    flex = s["properties"]["functionAppConfig"]
    assert flex["runtime"] == {"name": "python", "version": "3.11"}
    assert flex["deployment"]["storage"]["authentication"] == {
        "type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert flex["deployment"]["storage"]["value"] == "${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}"
    # Flex replaces these; setting them is an error there
    assert not {"FUNCTIONS_WORKER_RUNTIME", "WEBSITE_CONTENTSHARE", "SCM_DO_BUILD_DURING_DEPLOYMENT",
                "WEBSITE_RUN_FROM_PACKAGE"} & set(app_settings())


def test_vnet_integration_subnet_is_optional_and_routes_outbound_traffic():
    assert MAIN.doc["parameters"]["vnetIntegrationSubnetId"]["default"] == ""
    assert body(MAIN.doc["modules"]["api"])["params"]["vnetIntegrationSubnetId"] == "vnetIntegrationSubnetId"
    props = site()["properties"]
    subnet = props["virtualNetworkSubnetId"]["operator"]["operands"]
    assert fn(subnet["condition"], "empty") == {"item_to_test": "vnetIntegrationSubnetId"}
    assert subnet["true_value"] is None and subnet["false_value"] == "vnetIntegrationSubnetId"
    # As Azure's Flex Consumption samples: the subnet alone (no vnetRouteAllEnabled, a site setting of the
    # other plans; infra/app/vnet.bicep of functions-quickstart-python-http-azd sets none either).
    assert "vnetRouteAllEnabled" not in props["siteConfig"]


def _for_arrays(node, found: list) -> list:
    """The array expressions of every for-expression in a pycep tree (``loop_type.detail.array_name``)."""
    if isinstance(node, dict):
        detail = (node.get("loop_type") or {}).get("detail") if isinstance(node.get("loop_type"), dict) else None
        if isinstance(detail, dict) and "array_name" in detail:
            found.append(detail["array_name"])
        for value in node.values():
            _for_arrays(value, found)
    elif isinstance(node, list):
        for value in node:
            _for_arrays(value, found)
    return found


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_no_for_expression_iterates_over_values_known_only_during_the_deployment(path):
    """Bicep's BCP178: a for-expression's array must be known at the start of the deployment, so it
    may not depend (directly or through variables) on a resource's ``properties``, a module's
    ``outputs`` or ``reference()``/``list*()``; pycep and Checkov do not check this, the compiler does."""
    rel = str(path.relative_to(INFRA))
    doc = bicep(rel)
    variables = doc.get("variables") or {}

    def runtime(expr, seen=()) -> str | None:
        text = json.dumps(expr, default=str)
        if any(mark in text for mark in ('"properties"', '"outputs"', '"reference"', '"listKeys"', '"list"')):
            return text[:200]
        for name, var in variables.items():
            if name not in seen and f'"{name}"' in text:
                hit = runtime(var.get("value", var), (*seen, name))
                if hit:
                    return f"{name} -> {hit}"
        return None

    bad = [hit for array in _for_arrays({k: v for k, v in doc.items() if k != "variables"}, []) if (hit := runtime(array))]
    assert not bad, f"{rel}: for-expression over values known only during the deployment: {bad}"


def test_storage_is_identity_only():
    props = _resource("core/storage/storage-account.bicep", "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False and props["allowBlobPublicAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True and props["minimumTlsVersion"] == "TLS1_2"


def test_key_vault_uses_rbac_soft_delete_and_purge_protection():
    props = _resource("core/security/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True and props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True and "accessPolicies" not in props
    assert accessor(body(MAIN.doc["modules"]["api"])["params"]["keyVaultUri"]) == ["keyVault", "outputs", "uri"]


def test_event_hubs_without_local_auth_with_the_hub_and_the_apps_consumer_group():
    rel = "app/eventhubs.bicep"
    ns = _resource(rel, "Microsoft.EventHub/namespaces")
    assert ns["properties"]["disableLocalAuth"] is True and ns["sku"]["name"] == "Standard"
    hub = _resource(rel, "Microsoft.EventHub/namespaces/eventhubs")
    group = _resource(rel, "Microsoft.EventHub/namespaces/eventhubs/consumergroups")
    assert hub["parent"] == "namespace" and group["parent"] == "eventHub"
    # the trigger reads the hub and the consumer group that this module creates
    s = app_settings()
    assert (s["NOTIFY_EVENTHUB_NAME"], s["NOTIFY_EVENTHUB_CONSUMER_GROUP"]) == ("eventHubName", "eventHubConsumerGroupName")
    passed = body(MAIN.doc["modules"]["api"])["params"]
    assert accessor(passed["eventHubName"]) == ["eventHubs", "outputs", "eventHubName"]
    assert accessor(passed["eventHubConsumerGroupName"]) == ["eventHubs", "outputs", "consumerGroupName"]
    outputs = bicep(rel)["outputs"]
    assert accessor(outputs["eventHubName"]["value"]) == ["eventHub", "name"]
    assert accessor(outputs["consumerGroupName"]["value"]) == ["consumerGroup", "name"]
    created = body(MAIN.doc["modules"]["eventHubs"])["params"]
    assert MAIN.literal(created["eventHubName"]) == "flux-events"
    assert MAIN.literal(created["consumerGroupName"]) == "flux-notify"
    assert not any(r["type"].endswith("/authorizationrules") for r in bicep(rel)["resources"].values())


def test_telemetry_uses_entra_auth_only():
    rel = "core/monitor/monitoring.bicep"
    assert _resource(rel, "Microsoft.Insights/components")["properties"]["DisableLocalAuth"] is True
    assert _resource(rel, "Microsoft.OperationalInsights/workspaces")["properties"]["features"]["disableLocalAuth"] is True


# type@version → the sample or Azure doc it comes from (there is no Bicep compiler here to check a
# version; only versions used by the quickstarts or the template reference are allowed)
API_VERSIONS = {
    "Microsoft.Resources/resourceGroups@2021-04-01": "Azure-Samples/functions-quickstart-python-http-azd infra/main.bicep",
    "Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31": "Azure-Samples/function-eventhub-vnet infra/core/security/userAssignedIdentity.bicep",
    "Microsoft.Storage/storageAccounts@2023-01-01": "Azure-Samples/functions-quickstart-dotnet-azd infra/core/storage/storage-account.bicep",
    "Microsoft.Storage/storageAccounts/blobServices@2023-01-01": "same (child of the account)",
    "Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01": "same",
    "Microsoft.Storage/storageAccounts/tableServices@2023-01-01": "same",
    "Microsoft.Storage/storageAccounts/tableServices/tables@2023-01-01": "same",
    "Microsoft.Storage/storageAccounts/queueServices@2023-01-01": "same",
    "Microsoft.Storage/storageAccounts/queueServices/queues@2023-01-01": "same",
    "Microsoft.KeyVault/vaults@2022-07-01": "Azure-Samples/function-eventhub-vnet infra/core/security/keyvault.bicep",
    "Microsoft.EventHub/namespaces@2023-01-01-preview": "MadhuraBharadwaj-MSFT/functions-quickstart-python-azd-evhub infra/app/eventhubs.bicep",
    "Microsoft.EventHub/namespaces/eventhubs@2023-01-01-preview": "same",
    "Microsoft.EventHub/namespaces/eventhubs/consumergroups@2023-01-01-preview": "same API version (child of the hub)",
    "Microsoft.Insights/components@2020-02-02": "Azure-Samples/functions-quickstart-python-http-azd infra/core/host/functions-flexconsumption.bicep",
    "Microsoft.OperationalInsights/workspaces@2025-02-01": "Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/core/monitor/loganalytics.bicep",
    "Microsoft.Web/serverfarms@2024-04-01": "Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/core/host/function.bicep",
    "Microsoft.Web/sites@2024-04-01": "same",
    "Microsoft.Web/sites/config@2024-04-01": "same API version as the site",
    "Microsoft.Authorization/roleAssignments@2022-04-01": "Azure-Samples quickstarts infra/app/rbac.bicep",
    "Microsoft.ContainerService/managedClusters@2024-02-01": "learn.microsoft.com/azure/templates/microsoft.containerservice/2024-02-01/managedclusters",
}


def test_only_cited_api_versions_are_used():
    used = {f"{r['type']}@{r['api_version']}" for p in BICEP_FILES
            for r in bicep(str(p.relative_to(INFRA))).get("resources", {}).values()}
    assert used - set(API_VERSIONS) == set(), "cite each new type@version in API_VERSIONS"


def test_main_parameters_file_and_azure_yaml():
    import yaml

    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = MAIN.doc["parameters"]
    assert set(params) <= set(declared)
    required = {n for n, p in declared.items() if "default" not in p}
    assert required <= set(params), required - set(params)
    assert params["aksClusterIds"]["value"] == "${AKS_CLUSTER_IDS=[]}"
    azure = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert azure["infra"] == {"provider": "bicep", "path": "infra"}
    assert azure["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert site()["tags"]["function"]["parameters"]["arg_2"] == {"'azd-service-name'": "serviceName"}
    assert API.literal("serviceName") == "api"


# --------------------------------------------------------------------------------------------------
# Parsing and Checkov
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path):
    doc = bicep(str(path.relative_to(INFRA)))
    assert doc.get("resources") or doc.get("modules")


def test_every_module_file_exists():
    for path in BICEP_FILES:
        for name, module in bicep(str(path.relative_to(INFRA))).get("modules", {}).items():
            assert module["type"] == "local", f"{path.name} {name}: registry modules cannot be checked here"
            assert (path.parent / module["detail"]["path"]).is_file(), f"{path.name} {name}"


@pytest.fixture(scope="module")
def checkov_report():
    assert CHECKOV.exists(), "Checkov is missing: run bash .ci/setup (it installs .venv-checkov)"
    proc = subprocess.run(
        [str(CHECKOV), "--directory", str(INFRA), "--framework", "bicep", "--output", "json",
         "--skip-download", "--compact"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_no_failed_check(checkov_report):
    summary = checkov_report["summary"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in checkov_report["results"]["failed_checks"]]
    assert failed == [] and summary["parsing_errors"] == 0, failed
    passed = {(c["check_id"], c["file_path"]) for c in checkov_report["results"]["passed_checks"]}
    # the checks that matter most here ran (and passed) on the files that hold those resources
    assert {("CKV_AZURE_110", "/core/security/keyvault.bicep"), ("CKV_AZURE_111", "/core/security/keyvault.bicep"),
            ("CKV_AZURE_44", "/core/storage/storage-account.bicep"), ("CKV_AZURE_223", "/app/eventhubs.bicep"),
            ("CKV_AZURE_70", "/app/api.bicep"), ("CKV_AZURE_78", "/app/api.bicep"),
            ("CKV_AZURE_70", "/app/auth.bicep")} <= passed


def test_checkov_skips_are_inline_with_a_reason(checkov_report):
    inline = {}
    for path in BICEP_FILES:
        for m in re.finditer(r"//\s*checkov:skip=(CKV2?_AZURE_\d+):\s*(.*)", path.read_text()):
            assert len(m.group(2).split()) >= 6, f"{path.name} {m.group(1)}: give the reason"
            inline.setdefault(f"/{path.relative_to(INFRA)}", set()).add(m.group(1))
    skipped = {}
    for c in checkov_report["results"]["skipped_checks"]:
        assert c["check_result"].get("suppress_comment"), c["check_id"]
        skipped.setdefault(c["file_path"], set()).add(c["check_id"])
    assert skipped == inline, "every skip is inline and used"


# --------------------------------------------------------------------------------------------------
# .funcignore
# --------------------------------------------------------------------------------------------------

def test_funcignore_leaves_only_the_app_in_the_package():
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    # plus what a working copy has that git ignores (venvs, caches, Azurite, azd's .azure/)
    extra = [".venv/bin/python", ".venv-checkov/bin/checkov", ".azurite/node_modules/azurite/package.json",
             "shared/__pycache__/x.cpython-311.pyc", ".pytest_cache/v/cache/nodeids", ".azure/dev/.env",
             "local.settings.json", ".python_packages/lib/site-packages/x.py"]
    package = sorted(f for f in files + extra if not spec.match_file(f))
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(package)
    assert {str(p.relative_to(ROOT)) for p in app_modules()} <= set(package)
    outside = [f for f in package if not (f in ("function_app.py", "host.json", "requirements.txt")
                                          or re.match(r"(functions|shared)/[\w/]+\.(py|yaml|json|html)$", f))]
    assert outside == [], f"not part of the app, add to .funcignore: {outside}"
