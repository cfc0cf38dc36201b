"""User-assigned identities and federated identity credentials through the real ``ManagedServiceIdentityClient``
(azure-mgmt-msi) against the ARM test server: what the app writes, what it leaves alone, and the errors."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from shared import errors
from shared.ports.azure.msi import (AUDIENCE, MAX_FEDERATED_CREDENTIALS, FederatedCredential, IdentityResourceId,
                                    MsiClient, plan)

ISSUER = "https://westeurope.oic.prod-aks.azure.com/72f988bf-0000-4000-8000-00000000c0de/0b8a1c5e/"


@pytest.fixture
def msi(arm_server, arm_credential):
    client = MsiClient(arm_credential, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    yield client
    client.close()


def rid_of(identity) -> IdentityResourceId:
    return IdentityResourceId.parse(identity.id)


def wanted(*controllers: str, issuer: str = ISSUER) -> list[FederatedCredential]:
    return [FederatedCredential(f"flux-aks-weu-1-{c}", issuer, f"system:serviceaccount:flux-system:{c}") for c in controllers]


def writes(arm_server) -> list:
    return [(r.method, r.action, r.status) for r in arm_server.request_log if r.action in ("fic-write", "fic-delete")]


def test_identity_resource_id_is_parsed_case_insensitively():
    rid = IdentityResourceId.parse("/subscriptions/00000000-0000-0000-0000-0000000000A1/resourcegroups/rg-id/providers/"
                                   "microsoft.managedidentity/userAssignedIdentities/id-flux")
    assert str(rid) == ("/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/rg-id/providers/"
                        "Microsoft.ManagedIdentity/userAssignedIdentities/id-flux")
    assert rid == IdentityResourceId.parse(str(rid).upper().replace("SUBSCRIPTIONS/00000000-0000-0000-0000-0000000000A1",
                                                                    "subscriptions/00000000-0000-0000-0000-0000000000a1"))
    for bad in (None, "", "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a",
                "/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/rg/providers/"
                "Microsoft.ContainerService/managedClusters/aks", "x" * 500):
        with pytest.raises(errors.InvalidInput) as err:
            IdentityResourceId.parse(bad)
        assert err.value.field == "workloadIdentity.identityResourceId"


def test_identity_is_read(arm_server, msi):
    identity = arm_server.add_identity("id-flux")
    info = msi.identity(rid_of(identity))
    assert (info.client_id, info.principal_id, info.location) == (identity.client_id, identity.principal_id, "westeurope")
    assert [r.action for r in arm_server.request_log] == ["identity-read"]


def test_ensure_creates_one_credential_each_and_a_rerun_writes_nothing(arm_server, msi):
    identity = arm_server.add_identity("id-flux")
    done = msi.ensure(rid_of(identity), wanted("source-controller", "kustomize-controller"))
    assert [(e.credential.name, e.action) for e in done] == [
        ("flux-aks-weu-1-source-controller", "created"), ("flux-aks-weu-1-kustomize-controller", "created")]
    assert identity.credentials() == [
        {"name": "flux-aks-weu-1-source-controller", "issuer": ISSUER,
         "subject": "system:serviceaccount:flux-system:source-controller", "audiences": [AUDIENCE]},
        {"name": "flux-aks-weu-1-kustomize-controller", "issuer": ISSUER,
         "subject": "system:serviceaccount:flux-system:kustomize-controller", "audiences": [AUDIENCE]}]
    assert writes(arm_server) == [("PUT", "fic-write", 201), ("PUT", "fic-write", 201)]

    arm_server.request_log.clear()
    again = msi.ensure(rid_of(identity), wanted("source-controller", "kustomize-controller"))
    assert [e.action for e in again] == ["unchanged", "unchanged"]
    assert writes(arm_server) == [] and [r.action for r in arm_server.request_log] == ["fic-list"]


def test_ensure_updates_a_credential_whose_issuer_moved(arm_server, msi):
    identity = arm_server.add_identity("id-flux")
    msi.ensure(rid_of(identity), wanted("source-controller", issuer="https://old.example/issuer/"))
    arm_server.request_log.clear()
    done = msi.ensure(rid_of(identity), wanted("source-controller"))
    assert [e.action for e in done] == ["updated"]
    assert writes(arm_server) == [("PUT", "fic-write", 200)]
    assert identity.credentials()[0]["issuer"] == ISSUER


def test_ensure_keeps_a_credential_of_another_name_for_the_same_service_account(arm_server, msi):
    """Someone federated source-controller by hand (`az identity federated-credential create --name flux-src`): the
    service allows an issuer and subject pair once, so that credential is kept, not doubled."""
    identity = arm_server.add_identity("id-flux")
    msi.ensure(rid_of(identity), [FederatedCredential("flux-src", ISSUER, "system:serviceaccount:flux-system:source-controller")])
    arm_server.request_log.clear()
    done = msi.ensure(rid_of(identity), wanted("source-controller"))
    assert [(e.credential.name, e.action) for e in done] == [("flux-src", "unchanged")]
    assert writes(arm_server) == [] and len(identity.credentials()) == 1


def test_too_many_credentials_is_a_conflict_before_any_write(arm_server, msi):
    identity = arm_server.add_identity("id-flux")
    msi.ensure(rid_of(identity), [FederatedCredential(f"other-{i:02d}", ISSUER, f"system:serviceaccount:apps:sa{i}")
                                  for i in range(MAX_FEDERATED_CREDENTIALS - 1)])
    arm_server.request_log.clear()
    with pytest.raises(errors.Conflict) as err:
        msi.ensure(rid_of(identity), wanted("source-controller", "kustomize-controller"))
    assert "at most 20" in str(err.value) and err.value.field == "workloadIdentity.identityResourceId"
    assert writes(arm_server) == []
    # a name the service would refuse never gets as far as a call
    with pytest.raises(ValueError):
        plan([FederatedCredential("x", ISSUER, "s")], [])


def test_forbidden_write_names_managed_identity_contributor(arm_server, msi):
    identity = arm_server.add_identity("id-flux")
    arm_server.forbid(identity, "fic-write")
    with pytest.raises(errors.AuthenticationFailed) as err:
        msi.ensure(rid_of(identity), wanted("source-controller"))
    assert err.value.status == 502 and err.value.field == "workloadIdentity.identityResourceId"
    assert "Managed Identity Contributor (e40ec5ca-96e0-45a2-b4ff-59039f2c2b59) role on the identity" in str(err.value)
    assert "federatedIdentityCredentials/write" in str(err.value)
    arm_server.forbid(identity, "identity-read")
    with pytest.raises(errors.AuthenticationFailed, match="Managed Identity Contributor"):
        msi.identity(rid_of(identity))


def test_missing_identity_is_invalid_input(arm_server, msi):
    arm_server.add_resource_group(arm_server.subscription, "rg-identities")
    rid = IdentityResourceId.parse(f"/subscriptions/{arm_server.subscription}/resourceGroups/rg-identities/providers/"
                                   "Microsoft.ManagedIdentity/userAssignedIdentities/id-missing")
    with pytest.raises(errors.InvalidInput) as err:
        msi.identity(rid)
    assert err.value.field == "workloadIdentity.identityResourceId" and "not found" in str(err.value)


def test_concurrent_writers_on_one_identity_are_serialised_by_retries(arm_server, arm_credential, msi):
    """The service refuses a write to an identity while another is in flight; two bootstraps federating their
    clusters with one identity at once both succeed (the refused write waits and tries again)."""
    identity = arm_server.add_identity("id-flux", write_delay=1.0)  # wide enough for the two to overlap
    other = MsiClient(arm_credential, base_url=arm_server.url, connection_verify=arm_server.ca_file)
    failures: list = []

    def run(client, cluster):
        try:
            client.ensure(rid_of(identity), [FederatedCredential(f"flux-{cluster}-source-controller", f"https://{cluster}.example/",
                                                                 "system:serviceaccount:flux-system:source-controller")])
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(c, n)) for c, n in ((msi, "aks-a"), (other, "aks-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    other.close()
    assert failures == []
    assert sorted(c["name"] for c in identity.credentials()) == ["flux-aks-a-source-controller", "flux-aks-b-source-controller"]
    refused = [r for r in arm_server.request_log if r.action == "fic-write" and r.status == 409]
    assert refused, "the peer should have refused the overlapping write"


def test_peer_validates_credentials_as_the_service_does(arm_server, arm_credential):
    identity = arm_server.add_identity("id-flux")
    token = arm_credential.get_token("https://management.azure.com/.default").token

    def put(name: str, props: dict) -> tuple[int, dict]:
        req = urllib.request.Request(f"{arm_server.url}{identity.id}/federatedIdentityCredentials/{name}?api-version=2024-11-30",
                                     data=json.dumps({"properties": props}).encode(), method="PUT",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        import ssl

        ctx = ssl.create_default_context(cafile=arm_server.ca_file)
        try:
            with urllib.request.urlopen(req, context=ctx) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    ok = {"issuer": ISSUER, "subject": "system:serviceaccount:flux-system:source-controller", "audiences": [AUDIENCE]}
    assert put("a", ok)[0] == 400  # names have 3 to 120 characters
    assert put("fic-1", {**ok, "issuer": "http://insecure/"})[0] == 400
    assert put("fic-1", {**ok, "audiences": [AUDIENCE, "x"]})[0] == 400
    assert put("fic-1", ok)[0] == 201
    status, body = put("fic-2", ok)
    assert status == 400 and "same issuer and subject" in body["error"]["message"]
    assert put("fic-1", {**ok, "subject": "system:serviceaccount:flux-system:kustomize-controller"})[0] == 200
